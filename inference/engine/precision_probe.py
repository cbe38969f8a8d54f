"""`auto` precision: on this machine, the fastest weight precision that stays faithful to fp32.

    precision = choose_precision("bundled:smollm2-135m-instruct", torch.device("cpu"))
    Engine(dtype="auto")            # the same, through the engine (CHATNEXUS_DTYPE=auto, --dtype auto)

On CPU, once per (target, CPU model, torch version, thread count), and cached as JSON under
`$CHATNEXUS_MODEL_CACHE/precision-probe/` (default `~/.cache/chatnexus/models/precision-probe/`):

1. fp32 answers the shipped calibration prompts (inference/data/support_prompts.jsonl, the
   first `prompts`, greedy, `reply_tokens` each) — the reference replies.
2. Each candidate (int4a8, int4, int8; fp32 is the reference) is built from a copy of the fp32
   model and reads the prompts + reference replies in one forward each (teacher forcing):
   - agreement: how often its argmax is the token fp32 chose — the chance a greedy reply
     continues exactly as fp32's would, token by token;
   - kl: mean KL(p_fp32 || p_candidate) over the reply positions, nats per token.
   It is faithful when agreement >= `min_agreement` and kl <= `max_kl`.
3. Every precision's decode step is timed, fp32's too: the best of 7, in interleaved
   rounds (`verify_cost.step_times`), so load from another process while the probe runs
   slows every precision alike instead of whichever was being timed (a compile running
   beside a worker's first start once made int8 look faster than int4 here).
The fastest faithful precision wins; fp32 is always faithful, so there is always an answer.
Elsewhere (CUDA) `auto` is the device's default (fp32, the lossless one there: docs/gpu.md): nothing to measure.

The thresholds are a policy: KL measures how far the next-token distributions moved, and
agreement guards against a precision that moves little on average but flips many choices.
Most flips are near-ties (two tokens fp32 itself rates almost equally), so agreement alone
would reject precisions that change nothing a reader would notice; but the first flip does
change the rest of a greedy reply, so "faithful" does not mean "identical to fp32" (the
precision benchmark reports both). Measured on the bundled model, 8 prompts x 32 tokens,
AMD EPYC 2 cores, 2026-11-26: int4 agreement 0.973, KL 0.0018, step 18.7 ms; int8 0.969,
0.0053, 22.3 ms; fp32 61.3 ms -> int4. Speculation stays lossless relative to whichever
precision is chosen.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import torch

from .chat import chat_ids
from .errors import EngineError
from .forward import cache_argument, extend, new_cache
from .loading import max_positions
from .precision import DEFAULT_PRECISION, Precision, apply_precision, resolve_precision
from .threads import cpu_features, cpu_name

AUTO = "auto"
CANDIDATES = ("int4a8", "int4", "int8")  # besides fp32, the reference (int4a8 where its kernels build)
MIN_AGREEMENT = 0.95
MAX_KL = 0.01
PROBE_VERSION = 6  # bump when what a step costs, or how it is timed, changes (2: in-place KV cache, dense prefill; 3: lean forward; 4: interleaved timing; 5: packed fp32; 6: int4a8)
CALIBRATION_PROMPTS = Path(__file__).resolve().parent.parent / "data" / "support_prompts.jsonl"


def cache_dir() -> Path:
    from .loading import model_cache_dir

    return model_cache_dir("precision-probe")


def machine_key(target: str, candidates, prompts: int, reply_tokens: int) -> str:
    """What the choice depends on: the model, this CPU (name and vector extensions: "AMD EPYC"
    covers several generations), this torch, its threads, the probe's settings and version."""
    parts = [target, cpu_name(), cpu_features(), torch.__version__, str(torch.get_num_threads()),
             ",".join(candidates), str(prompts), str(reply_tokens), str(MIN_AGREEMENT), str(MAX_KL),
             str(PROBE_VERSION)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def choose_precision(target: str, device: torch.device, *, candidates=CANDIDATES, prompts: int = 8,
                     reply_tokens: int = 32, use_cache: bool = True) -> Precision:
    """The fastest faithful precision for `target` on `device` (see the module docstring)."""
    if device.type != "cpu":
        return resolve_precision(DEFAULT_PRECISION.get(device.type, "fp32"), device)
    report = probe(target, device, candidates=candidates, prompts=prompts, reply_tokens=reply_tokens,
                   use_cache=use_cache)
    return resolve_precision(report["chosen"], device)


def probe(target: str, device: torch.device, *, candidates=CANDIDATES, prompts: int = 8, reply_tokens: int = 32,
          use_cache: bool = True) -> dict:
    """Measure (or read back) every candidate; returns the report that is cached as JSON."""
    path = cache_dir() / f"{machine_key(target, candidates, prompts, reply_tokens)}.json"
    if use_cache and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # unreadable: measure again
    report = measure(target, device, candidates=candidates, prompts=prompts, reply_tokens=reply_tokens)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache: measure again next time
    return report


@torch.inference_mode()
def measure(target: str, device: torch.device, *, candidates=CANDIDATES, prompts: int = 8,
            reply_tokens: int = 32, min_agreement: float = MIN_AGREEMENT, max_kl: float = MAX_KL) -> dict:
    from .loading import load_model, release_model
    from .verify_cost import step_times

    started = time.perf_counter()
    # stock fp32 (transformers' own kernels) is the reference and what the candidates are quantised
    # from; fp32 is timed as the engine serves it (oneDNN's packed kernel where it pays)
    reference, tokenizer = load_model(target, device=device, dtype="fp32", stock=True)
    sequences = calibration_sequences(reference, tokenizer, prompts, reply_tokens)  # [(ids [1, S], reply start)]
    ref_logprobs = [reply_logprobs(reference, ids, start) for ids, start in sequences]
    results = {"fp32": {"agreement": 1.0, "kl": 0.0}}
    # quantised copies are kept for the timing: 1/4 (int8), 1/8 (int4) of fp32's size
    timed = {"fp32": load_model(target, device=device, dtype="fp32")[0]}
    for name in candidates:
        try:
            # no bf16 prompt copies: the probe times decode steps and scores teacher-forced
            # passes, which run on the quantised kernels a reply's decode steps use
            model = apply_precision(copy.deepcopy(reference), resolve_precision(name, device), dense_copies=False)
        except EngineError as e:  # e.g. no int4 kernel in this torch build
            results[name] = {"error": str(e)}
            continue
        agree = total = 0
        kl = 0.0
        for (ids, start), ref in zip(sequences, ref_logprobs):
            logprobs = reply_logprobs(model, ids, start)  # [R, V]
            reply = ids[0, start:]  # [R], fp32's greedy choices
            agree += int((logprobs.argmax(-1) == reply).sum())
            total += reply.numel()
            kl += float((ref.exp() * (ref - logprobs)).sum())
        results[name] = {"agreement": round(agree / total, 4), "kl": round(kl / total, 4)}
        timed[name] = model
    for name, seconds in step_times(timed).items():
        results[name]["step_ms"] = round(1000 * seconds, 2)
    del timed
    release_model(target, device, "fp32", stock=True)  # the reference served its purpose: free its memory
    for name, r in results.items():  # fp32 is the reference: faithful by definition
        r["faithful"] = name == "fp32" or ("error" not in r and r["agreement"] >= min_agreement and r["kl"] <= max_kl)
    chosen = min((n for n, r in results.items() if r["faithful"]), key=lambda n: results[n]["step_ms"])
    if chosen != "fp32":  # a worker serving int4 need not keep an fp32 copy (4 bytes per weight) around
        release_model(target, device, "fp32")
    return {"target": target, "chosen": chosen, "results": results, "min_agreement": min_agreement,
            "max_kl": max_kl, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "probe_s": round(time.perf_counter() - started, 1)}


def calibration_sequences(model, tokenizer, prompts: int, reply_tokens: int) -> list[tuple[torch.Tensor, int]]:
    """The first `prompts` calibration chats, each + fp32's greedy reply: [(ids [1, S + R], S)]."""
    device = next(model.parameters()).device
    context = int(max_positions(model) or 2048)
    out = []
    with open(CALIBRATION_PROMPTS) as f:
        chats = [json.loads(line)["messages"] for line, _ in zip(f, range(prompts))]
    for messages in chats:
        # [1, S], as the engine renders chats; EngineError where the model cannot chat (no template)
        ids = torch.tensor([chat_ids(tokenizer, messages)], device=device)
        ids = ids[:, -max(1, context - reply_tokens):]  # a short-context model reads the end of the chat
        out.append((torch.cat((ids, greedy(model, ids, reply_tokens)), dim=1), ids.shape[1]))
    return out


def greedy(model, ids: torch.Tensor, n: int) -> torch.Tensor:
    """ids [1, S] -> the model's next n greedy tokens [1, n] (no EOS stop: a fixed-length probe)."""
    cache_arg, cache = cache_argument(model), new_cache(model)
    logits = extend(model, cache_arg, cache, ids, start=0, keep=1)
    tokens = [int(logits[0, -1].argmax())]
    for i in range(n - 1):
        step = torch.tensor([[tokens[-1]]], device=ids.device)
        tokens.append(int(extend(model, cache_arg, cache, step, start=ids.shape[1] + i, keep=1)[0, -1].argmax()))
    return torch.tensor([tokens], device=ids.device)


def reply_logprobs(model, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Log-probabilities the model gives each reply position (teacher forcing): [S + R] -> [R, V]."""
    logits = model(input_ids=ids, use_cache=False).logits[0, start - 1:-1].float()  # [R, V]
    return torch.log_softmax(logits, dim=-1)
