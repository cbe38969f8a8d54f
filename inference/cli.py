"""Command line for the speculative decoding engine: chat, generate, bench, shrink, distill.

    python -m inference chat                                   # interactive, streams tokens
    python -m inference generate --prompt "When are you open?" --drafter lookup
    python -m inference generate --prompts inference/data/support_prompts.jsonl --json
    python -m inference bench --out bench-out/engine --draft var/drafts/smollm2-L6
    python -m inference bench --replay inference/data/replay_support.jsonl --out bench-out/replay
    python -m inference shrink --layers 6 --out var/drafts/smollm2-L6
    python -m inference distill --layers 2 --out var/drafts/distilled-L2 --minutes 25   # docs/distill.md
    python -m inference distill --out var/drafts/distilled-L2 --resume --minutes 40

Prompt files are JSONL: one {"id": str, "messages": [{"role", "content"}, ...]} per line.
Engine errors (missing model, vocabulary mismatch, ...) print one line and exit with 2.
Heavy imports (torch, transformers) happen inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

SHIPPED_PROMPTS = Path(__file__).parent / "data" / "support_prompts.jsonl"
EXIT_USAGE = 2  # same code argparse uses for bad arguments
MAX_SEED = 2 ** 64 - 1  # torch.Generator.manual_seed's largest
THREADS_PER_CPU = 4  # --threads refused above this many per logical CPU
MAX_BATCH = 1024  # distill --batch: sequences per optimizer step (the shipped prompts are 194)


# ----------------------------------------------------------------------------- arguments


def number(value: str, kind: type):
    """`kind(value)`, or None where it is no such number (the callers then refuse it in words)."""
    try:
        return kind(value)
    except ValueError:
        return None


def int_at_least(value: str, low: int, expected: str) -> int:
    n = number(value, int)
    if n is None or n < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
    return n


def positive_int(value: str) -> int:
    return int_at_least(value, 1, "a positive integer")


def positive_float(value: str) -> float:
    """A finite number > 0: an inf --lr trains the draft into nan, an inf --minutes is no budget, and
    distill.json would store either as Infinity, which is no JSON."""
    x = number(value, float)
    if x is None or not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {value!r}")
    return x


def non_negative_int(value: str) -> int:
    return int_at_least(value, 0, "an integer >= 0")


def temperature(value: str) -> float:
    """A finite number >= 0: a negative one would silently mean greedy, nan or inf no distribution at all."""
    x = number(value, float)
    if x is None or not (math.isfinite(x) and x >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0 (0 = greedy), got {value!r}")
    return x


def top_p(value: str) -> float:
    x = number(value, float)
    if x is None or not 0 < x <= 1:  # nan fails the comparison too
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] (1 = off), got {value!r}")
    return x


def seed(value: str) -> int:
    """0 .. MAX_SEED, what torch's generators take (a larger one overflows once sampling starts)."""
    n = number(value, int)
    if n is None or not 0 <= n <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, got {value!r}")
    return n


def thread_count(value: str) -> int:
    """1 .. THREADS_PER_CPU per logical CPU: far more threads than CPUs only contend, and
    thousands of them exhaust the process (torch crashes with a segfault)."""
    n = positive_int(value)
    most = THREADS_PER_CPU * (os.cpu_count() or 1)
    if n > most:
        raise argparse.ArgumentTypeError(f"expected at most {most} threads ({THREADS_PER_CPU} per logical CPU "
                                         f"of this machine's {os.cpu_count() or 1}), got {value!r}")
    return n


def batch_size(value: str) -> int:
    """1 .. MAX_BATCH: a step runs all its sequences before --minutes is looked at again, so a
    huge batch is a step that never ends."""
    n = positive_int(value)
    if n > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_BATCH} sequences per step, got {value!r}")
    return n


def model_spec(value: str) -> str:
    if not value.strip():  # Path("") is ".", the current folder: it would be loaded as a model
        raise argparse.ArgumentTypeError("the model is empty: pass a model folder, a .gguf file, a Hugging Face "
                                         "id or bundled:<name>")
    return value


def draft_length(value: str) -> int | None:
    """`adaptive` -> None (the engine adapts it), else a positive int."""
    if value == "adaptive":
        return None
    try:
        return positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'adaptive', got {value!r}")


def add_model_options(p: argparse.ArgumentParser) -> None:
    from_engine = "bundled:smollm2-135m-instruct"  # == inference.engine.BUNDLED_TARGET, kept import-free
    p.add_argument("--target", type=model_spec, default=from_engine,
                   help=f"target model: HF id, local folder, GGUF file or bundled:<name> (default {from_engine})")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16", "int8", "int4", "int4a8", "auto"],
                   help="weight precision (int8/int4: weight-only, CPU); auto: the fastest precision that "
                        "stays faithful to fp32 on this machine, measured once and cached (the worker's default); "
                        "default: fp32 (docs/cpu-speed.md, docs/gpu.md)")
    p.add_argument("--seed", type=seed, default=0, help=f"random seed, 0 to {MAX_SEED} (default 0)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help=f"torch CPU threads, at most {THREADS_PER_CPU} per logical CPU (default: one per physical core)")
    p.add_argument("--max-new-tokens", type=positive_int, default=None,
                   help="new tokens per reply (default 256; bench: 128)")


def add_decoding_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drafter", default="suffix",
                   help="none | lookup | suffix | recycle | model:<spec>, or joined by '+' e.g. suffix+lookup "
                        "(default suffix)")
    p.add_argument("--draft-length", type=draft_length, default=None, metavar="N|adaptive",
                   help="draft tokens per step (default adaptive)")
    p.add_argument("--temperature", type=temperature, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=non_negative_int, default=0, help="0 = off")
    p.add_argument("--top-p", type=top_p, default=1.0, help="in (0, 1]; 1.0 = off")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="stop string; repeat for several")
    p.add_argument("--system", default=None, help="system prompt for --prompt and chat")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("chat", help="interactive chat, streaming, with stats after each reply")
    add_model_options(p)
    add_decoding_options(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("generate", help="answer one prompt or a JSONL file of conversations")
    add_model_options(p)
    add_decoding_options(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one user message")
    src.add_argument("--prompts", type=Path, help="JSONL file of conversations")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt: id, text, stats")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("bench", help="HF vs our decoding, side by side; writes results.json + speedup.png")
    add_model_options(p)
    p.add_argument("--prompts", type=Path, default=SHIPPED_PROMPTS, help="JSONL file (default: shipped set)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--draft", default=None,
                   help="draft model spec (folder, HF id, GGUF); enables hf_assisted and draft")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset, e.g. hf_plain,none,lookup,lookup_k4")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="only the first N prompts (--replay: the first N user messages)")
    p.add_argument("--replay", type=Path, default=None, metavar="FILE.jsonl",
                   help="traffic replay: conversations tagged with a bot id, replayed in order, drafters "
                        "learning from each bot's earlier replies (methods default: hf_plain,none/fresh,none,lookup,"
                        "suffix,suffix+lookup; e.g. inference/data/replay_support.jsonl)")
    p.add_argument("--precisions", default=None, metavar="fp32,bf16,int8,int4",
                   help="precision benchmark: each precision x --drafters, tokens/s and faithfulness to fp32 "
                        "(docs/cpu-speed.md)")
    p.add_argument("--drafters", default="none,lookup", help="with --precisions (default none,lookup)")
    p.add_argument("--llamacpp", action="store_true",
                   help="with --precisions: add llama.cpp on the same GGUF (needs llama-cpp-python)")
    p.add_argument("--reuse", action="store_true",
                   help="with --precisions: also run every row (llama.cpp's too) reusing the KV of earlier "
                        "prompts' common prefix, as '<row>/reuse'")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("shrink", help="save the target's first N layers as a same-vocabulary draft")
    add_model_options(p)
    p.add_argument("--layers", type=positive_int, required=True, help="decoder layers to keep")
    p.add_argument("--out", type=Path, required=True, help="output folder (load it as model:<folder>)")
    p.set_defaults(func=cmd_shrink)

    p = sub.add_parser("distill", help="train a same-vocabulary draft on the target's own replies (docs/distill.md)",
                       description="Distil a draft from the target's first --layers layers on replies the target "
                                   "writes itself (--max-new-tokens defaults to 64 here). docs/distill.md")
    add_model_options(p)
    p.add_argument("--out", type=Path, required=True,
                   help="draft folder (load it as model:<folder>); holds checkpoint/ and distill.json")
    p.add_argument("--layers", type=positive_int, default=2, help="decoder layers the draft starts from (default 2)")
    p.add_argument("--data", type=Path, default=None, metavar="FILE.jsonl",
                   help="extra conversations (same JSONL as --prompts); the target writes the replies")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="only the first N conversations (--data first, then the shipped distill prompts)")
    p.add_argument("--steps", type=positive_int, default=None, help="optimizer steps in total, across resumes")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="wall-clock budget in total (data + training, across resumes); stops cleanly, "
                        "then saves and evaluates (default 30 when --steps is not given)")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="AdamW peak learning rate (default 2e-3)")
    p.add_argument("--batch", type=batch_size, default=4,
                   help=f"sequences per optimizer step, at most {MAX_BATCH} (default 4)")
    p.add_argument("--gen-batch", type=positive_int, default=8,
                   help="prompts the target answers at once while generating the data (default 8)")
    p.add_argument("--top-k", type=positive_int, default=32,
                   help="teacher log-probs stored per reply position (default 32)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.set_defaults(func=cmd_distill)
    return parser


# ----------------------------------------------------------------------------- helpers


def make_engine(args):
    from inference.engine import Engine

    return Engine(target=args.target, drafter=args.drafter, device=args.device, dtype=args.dtype,
                  draft_length=args.draft_length)


def decoding_kwargs(args) -> dict:
    return dict(max_new_tokens=args.max_new_tokens or 256, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop)


def stats_line(stats) -> str:
    """One human line: tokens, speed, acceptance, tokens per target forward, ttft."""
    accept = "-" if not stats.drafted else f"{stats.acceptance_rate:.0%}"
    return (f"[{stats.new_tokens} tokens in {stats.total_s:.2f}s, {stats.tokens_per_s:.1f} tok/s, "
            f"accepted {stats.accepted}/{stats.drafted} ({accept}), "
            f"{stats.mean_tokens_per_forward:.2f} tok/forward, ttft {1000 * stats.ttft_s:.0f} ms, "
            f"drafter {stats.drafter}, stop {stats.stop_reason}]")


def user_messages(args, text: str) -> list[dict]:
    system = [{"role": "system", "content": args.system}] if args.system else []
    return system + [{"role": "user", "content": text}]


# ----------------------------------------------------------------------------- commands


def cmd_chat(args) -> int:
    engine = make_engine(args)
    history = [{"role": "system", "content": args.system}] if args.system else []
    print(f"chatting with {args.target} (drafter {args.drafter}); /quit or Ctrl-D to leave",
          file=sys.stderr)
    while True:
        try:
            text = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if text.strip() in ("/quit", "/exit"):
            return 0
        if not text.strip():
            continue
        history.append({"role": "user", "content": text})
        history = fit_context(engine, history, decoding_kwargs(args)["max_new_tokens"])
        reply = []
        print("bot> ", end="", flush=True)
        for delta in engine.stream(history, **decoding_kwargs(args)):
            reply.append(delta)
            print(delta, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(reply)})
        print(stats_line(engine.last_stats), file=sys.stderr, flush=True)


def fit_context(engine, history: list[dict], max_new_tokens: int) -> list[dict]:
    """The conversation with its oldest exchanges dropped (the system prompt and the new message
    kept) until it and the reply fit the model's context: a long chat goes on instead of ending
    on "prompt has N tokens". The reply's share is capped at half the context (the engine cuts
    a reply at the context's end anyway, as `generate` does): a --max-new-tokens as large as
    the context would otherwise leave no room and drop every earlier turn."""
    room = engine.context_length - min(max_new_tokens, engine.context_length // 2)
    system = history[:1] if history and history[0]["role"] == "system" else []
    turns = history[len(system):]
    while len(turns) > 1 and engine.encode(system + turns).shape[1] > room:
        turns = turns[2:] if len(turns) > 2 else turns[1:]  # a user message and its reply
    return system + turns


def cmd_generate(args) -> int:
    from inference.engine.bench import load_prompts

    if args.prompt is not None:
        prompts = [{"id": "prompt", "messages": user_messages(args, args.prompt)}]
    else:
        prompts = load_prompts(args.prompts)
    engine = make_engine(args)
    for p in prompts:
        result = engine.generate(p["messages"], **decoding_kwargs(args))
        if args.json:
            print(json.dumps({"id": p["id"], "text": result.text, "stats": result.stats.as_dict()}),
                  flush=True)
        else:
            if len(prompts) > 1:
                print(f"### {p['id']}")
            print(result.text, flush=True)
            print(stats_line(result.stats), file=sys.stderr, flush=True)
    return 0


def cmd_bench(args) -> int:
    from inference.engine.bench import format_table, load_prompts, run_bench

    if args.replay is not None:
        return cmd_replay(args)
    if args.precisions:
        return cmd_precision_bench(args)

    prompts = load_prompts(args.prompts)[: args.limit]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    results = run_bench(prompts, target=args.target, draft=args.draft, methods=methods,
                        max_new_tokens=args.max_new_tokens or 128, seed=args.seed,
                        device=args.device, dtype=args.dtype, out_dir=args.out,
                        progress=not args.no_progress)
    print(format_table(results))
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'speedup.png'}")
    return 0


def cmd_precision_bench(args) -> int:
    from inference.engine.bench import load_prompts
    from inference.engine.precision_bench import format_precision_table, run_precision_bench

    results = run_precision_bench(load_prompts(args.prompts)[: args.limit], target=args.target,
                                  precisions=[p.strip() for p in args.precisions.split(",") if p.strip()],
                                  drafters=[d.strip() for d in args.drafters.split(",") if d.strip()],
                                  max_new_tokens=args.max_new_tokens or 96, seed=args.seed,
                                  device=args.device or "cpu", out_dir=args.out, llamacpp=args.llamacpp,
                                  reuse=args.reuse, progress=not args.no_progress)
    print(format_precision_table(results))
    print(f"\nwrote {args.out / 'results.json'}")
    return 0


def cmd_replay(args) -> int:
    from inference.engine.replay import format_replay_table, load_replay, run_replay

    conversations = load_replay(args.replay, limit=args.limit)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    results = run_replay(conversations, target=args.target, draft=args.draft, methods=methods,
                         max_new_tokens=args.max_new_tokens or 128, seed=args.seed, device=args.device,
                         dtype=args.dtype, out_dir=args.out, progress=not args.no_progress,
                         workload=str(args.replay))
    print(format_replay_table(results))
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'speedup_by_history.png'}")
    return 0


def cmd_shrink(args) -> int:
    from inference.engine.bench import make_layer_draft

    out = make_layer_draft(args.target, args.layers, args.out, device=args.device, dtype=args.dtype)
    print(f"saved a {args.layers}-layer draft of {args.target} to {out} (use --drafter model:{out})")
    return 0


def cmd_distill(args) -> int:
    from inference.engine.distill import DistillConfig, distill, format_report

    minutes = args.minutes if args.minutes is not None or args.steps is not None else 30.0
    cfg = DistillConfig(out=args.out, target=args.target, layers=args.layers, data=args.data, limit=args.limit,
                        max_new_tokens=args.max_new_tokens or 64, steps=args.steps, minutes=minutes, lr=args.lr,
                        batch=args.batch, gen_batch=args.gen_batch, top_k=args.top_k, seed=args.seed,
                        device=args.device, dtype=args.dtype, resume=args.resume, progress=not args.no_progress)
    result = distill(cfg)
    print(format_report(result))
    print(f"\nwrote {args.out} (use --drafter model:{args.out}) and {args.out / 'distill.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    from inference.engine import EngineError
    from inference.engine.bench import BenchError

    hf_logging.disable_progress_bar()  # no "Loading weights" bars between replies

    from inference.engine.threads import set_threads

    set_threads(args.threads)  # None: one per physical core
    try:
        return args.func(args)
    except (EngineError, BenchError, OSError) as e:  # OSError: a missing or unreadable file, a folder
        # Deliberate, explained failures: one line, no traceback.
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
