"""Benchmark harness: the same prompts through Hugging Face and our engine, side by side.

Run it through the CLI (see `python -m inference bench --help`):

    python -m inference bench --out bench-out/engine
    python -m inference bench --draft var/drafts/smollm2-L6 --limit 4 --max-new-tokens 32

Methods, all greedy, all in one process, all on the same prompts:

    hf_plain          target alone, HF `model.generate` on the stock transformers model --
                      the reference for speed and tokens
    hf_assisted       HF assisted generation, `--draft` as `assistant_model`
    hf_prompt_lookup  HF prompt lookup decoding, `prompt_lookup_num_tokens=10`
    none              our decode loop without a drafter
    lookup            our loop, prompt-lookup drafter, adaptive draft length
    lookup_k<N>       our loop, prompt-lookup drafter, fixed draft length N (e.g. lookup_k4)
    draft             our loop, `--draft` as draft model

Every method gets one warm-up generation that is not timed. Prompts then run prompt-major
(every method on prompt 1, then every method on prompt 2, ...) so that load from other
processes on shared cores spreads evenly over the methods. tokens/s = total new tokens /
total wall time; a greedy output is "identical" when its token ids equal hf_plain's.

Writes `DIR/results.json` and `DIR/speedup.png`, and returns a printable table.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from inference.engine import Engine, load_model
from inference.engine.decode import context_budget
from inference.engine.precision import QUANTIZED
from inference.engine.precision_probe import AUTO
from inference.engine.threads import cpu_features, cpu_name

HF_METHODS = ("hf_plain", "hf_assisted", "hf_prompt_lookup")
DEFAULT_METHODS = ("hf_plain", "hf_assisted", "hf_prompt_lookup",
                   "none", "lookup", "lookup_k4", "lookup_k8", "draft")
NEEDS_DRAFT = ("hf_assisted", "draft")
PROMPT_LOOKUP_TOKENS = 10  # HF's documented example value for prompt_lookup_num_tokens


class BenchError(ValueError):
    """A bad benchmark request (unknown method, draft method without a draft, ...)."""


class PromptFileError(BenchError):
    """A prompt file line is not `{"id": str, "messages": [{"role", "content"}, ...]}`."""


# ---------------------------------------------------------------------------
# prompts


def jsonl_rows(path: str | os.PathLike, error: type[Exception]):
    """``(where, value)`` for each non-blank line of a JSONL file, ``where`` its "path:line";
    ``error`` naming the line when it is not UTF-8 text or not JSON."""
    with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is named, like bad JSON
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                value = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                raise error(f"{where}: not UTF-8 text (save the file as UTF-8)") from None
            except json.JSONDecodeError as e:
                raise error(f"{where}: not valid JSON ({e.msg})") from None
            yield where, value


def load_prompts(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL prompt file: one {"id", "messages"} object per line, other keys ignored.

    Blank lines are skipped. Raises PromptFileError naming the file and line number.
    """
    prompts, seen = [], set()
    for where, obj in jsonl_rows(path, PromptFileError):
        if not isinstance(obj, dict):
            raise PromptFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        pid, messages = obj.get("id"), obj.get("messages")
        if not isinstance(pid, str) or not pid:
            raise PromptFileError(f'{where}: "id" must be a non-empty string')
        if pid in seen:
            raise PromptFileError(f'{where}: duplicate id "{pid}"')
        if not isinstance(messages, list) or not messages:
            raise PromptFileError(f'{where}: "messages" must be a non-empty list')
        for i, m in enumerate(messages):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                    and isinstance(m.get("content"), str)):
                raise PromptFileError(
                    f'{where}: messages[{i}] must be {{"role": str, "content": str}}')
        seen.add(pid)
        prompts.append({"id": pid, "messages": [
            {"role": m["role"], "content": m["content"]} for m in messages]})
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in file")
    return prompts


def machine_description(device: torch.device) -> str:
    """CPU model and core count, torch version, and the device the models run on."""
    flags = cpu_features()
    desc = (f"{cpu_name()}{f' [{flags}]' if flags else ''}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), device {device}")
    if device.type == "cuda":
        desc += f" ({torch.cuda.get_device_name(device)})"
    return desc


# ---------------------------------------------------------------------------
# methods: each one turns input ids [1, S] into (new token ids, our stats or None)


@dataclass
class Method:
    name: str
    run: Callable[[torch.Tensor], tuple[list[int], object | None]]  # input_ids [1, S]


def reference_model(target: str, device, dtype):
    """The model Hugging Face's methods run: the stock transformers model (`load_model(...,
    stock=True)`: MKL's F.linear, transformers' attention) — the target alone as a plain
    transformers user runs it, not the engine's packed kernels. Quantised precisions have no
    stock form: there HF runs on the engine's quantised model."""
    from inference.engine.precision import resolve_precision
    from inference.engine.loading import resolve_device

    stock = not resolve_precision(dtype, resolve_device(device)).quantized
    return load_model(target, device=device, dtype=dtype, stock=stock)[0]


# generate() fills every option left unset from the checkpoint's generation_config, which often
# asks for penalties (repetition_penalty 1.1, ...): set plain greedy decoding's values explicitly
PLAIN_GREEDY = {"do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                "min_length": 0, "min_new_tokens": 0}


def hf_generate_runner(model, max_new_tokens: int, eos_ids: list[int], assistant=None, **extra):
    """Greedy HF `model.generate` (with `assistant` as assistant_model, or `extra` generation
    options): run(input_ids [1, S]) -> (new token ids, None: HF gives no decoding stats)."""
    from transformers import GenerationConfig

    config = GenerationConfig(**{**PLAIN_GREEDY, "eos_token_id": eos_ids, "pad_token_id": eos_ids[0], **extra})
    kwargs = {"assistant_model": assistant} if assistant is not None else {}

    def run(input_ids):
        # clipped to the context as the engine clips it: HF would run past it (a huge value overflows)
        budget = context_budget(model, input_ids.shape[1], max_new_tokens)
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config,
                             max_new_tokens=budget, **kwargs)
        return out[0, input_ids.shape[1]:].tolist(), None
    return run


def build_methods(names, *, target, draft, device, dtype, max_new_tokens, seed):
    """Construct the selected methods; models are loaded once (load_model caches them).

    Every method stops on the same end-of-sequence ids: the engine's (tokenizer EOS,
    generation-config EOS and chat end-of-turn tokens). HF methods run the stock model
    (reference_model). Our engines prefill every prompt from scratch, as `generate` does
    (no prompt prefix reuse: the replay and precision benchmarks measure that).
    """
    def engine(drafter, **extra):
        return Engine(target=target, drafter=drafter, device=device, dtype=dtype, prefix_cache=False, **extra)

    base = engine("none")
    eos_ids = list(base.eos_token_ids)
    model = reference_model(target, device, dtype) if any(n in HF_METHODS for n in names) else None
    draft_model = reference_model(draft, device, dtype) if "hf_assisted" in names else None

    def hf(assistant=None, **extra):
        return hf_generate_runner(model, max_new_tokens, eos_ids, assistant, **extra)

    def ours(engine):
        def run(input_ids):
            return engine.generate_ids(input_ids, max_new_tokens=max_new_tokens, temperature=0.0,
                                       seed=seed, eos_token_ids=eos_ids)
        return run

    methods = []
    for name in names:
        if name == "hf_plain":
            run = hf()
        elif name == "hf_assisted":
            run = hf(assistant=draft_model)
        elif name == "hf_prompt_lookup":
            run = hf(prompt_lookup_num_tokens=PROMPT_LOOKUP_TOKENS)
        elif name == "none":
            run = ours(base)
        elif name == "lookup":
            run = ours(engine("lookup"))
        elif m := re.fullmatch(r"lookup_k(\d+)", name):
            run = ours(engine("lookup", draft_length=int(m.group(1))))
        elif name == "draft":
            run = ours(engine(f"model:{draft}"))
        else:
            raise ValueError(f"unknown method {name!r}")
        methods.append(Method(name, run))
    return base, methods


def check_method_names(names, draft) -> None:
    """Raise BenchError for an unknown method, or a draft method without --draft."""
    for name in names:
        known = name in DEFAULT_METHODS or re.fullmatch(r"lookup_k[1-9]\d*", name)
        if not known:
            raise BenchError(f"unknown method {name!r}; choose from "
                             f"{', '.join(DEFAULT_METHODS)} or lookup_k<N>")
        if name in NEEDS_DRAFT and not draft:
            raise BenchError(f"method {name!r} needs --draft")


# ---------------------------------------------------------------------------
# the run


def _until_eos(ids: list[int], eos_ids: list[int]) -> list[int]:
    """Cut at the first end-of-sequence token (excluded), so HF and ours compare alike."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[:i]
    return ids


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(prompts, *, target, draft=None, methods=None, max_new_tokens=128, seed=0,
              device=None, dtype=None, out_dir, progress=True) -> dict:
    """Run every method on every prompt; write results.json and speedup.png into out_dir."""
    from tqdm import tqdm

    names = list(methods) if methods else [m for m in DEFAULT_METHODS
                                           if draft or m not in NEEDS_DRAFT]
    check_method_names(names, draft)
    base, built = build_methods(names, target=target, draft=draft, device=device, dtype=dtype,
                                max_new_tokens=max_new_tokens, seed=seed)
    dev, eos_ids = base.device, list(base.eos_token_ids)
    inputs = [base.encode(p["messages"]) for p in prompts]  # each [1, S], as the engine renders it
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.partial.json"  # rewritten after every prompt, removed at the end

    # HF gives no decoding stats; count its target forwards with a hook instead.
    forwards = [0]
    hook = base.model.register_forward_pre_hook(lambda module, args: forwards.__setitem__(0, forwards[0] + 1))
    try:
        for m in built:  # warm-up, not timed
            torch.manual_seed(seed)
            m.run(inputs[0])
        _sync(dev)

        records = {m.name: [] for m in built}
        bar = tqdm(total=len(prompts) * len(built), desc="bench", unit="gen", disable=not progress)
        for p, input_ids in zip(prompts, inputs):
            for m in built:
                torch.manual_seed(seed)
                forwards_before = forwards[0]
                _sync(dev)
                t0 = time.perf_counter()
                new_ids, stats = m.run(input_ids)
                _sync(dev)
                seconds = time.perf_counter() - t0
                records[m.name].append({
                    "id": p["id"], "ids": _until_eos(list(new_ids), eos_ids), "seconds": seconds,
                    "stats": stats, "forwards": forwards[0] - forwards_before})
                bar.update()
            # A long run that dies early still leaves the prompts it finished.
            _write_json(partial, _results(records, target, draft, dev, max_new_tokens))
        bar.close()
    finally:
        hook.remove()

    results = _results(records, target, draft, dev, max_new_tokens)
    _write_json(out / "results.json", results)
    partial.unlink(missing_ok=True)
    plot_speedup(results, out / "speedup.png")
    return results


def _results(records, target, draft, device, max_new_tokens) -> dict:
    return {
        "target": target,
        "draft": draft,
        "machine": machine_description(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "max_new_tokens": max_new_tokens,
        "methods": _summarize(records),
    }


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def write_progress(path: Path, done: int, total: int, records: dict) -> None:
    """What a run has finished so far, per method (new tokens, seconds): rewritten as it goes,
    so a run cut short by a time limit still leaves its numbers."""
    _write_json(path, {"done": done, "total": total, "rows": {
        name: {"new_tokens": sum(len(r["ids"]) for r in rs), "seconds": round(sum(r["seconds"] for r in rs), 3)}
        for name, rs in records.items()}})


def _summarize(records: dict[str, list[dict]]) -> list[dict]:
    reference = records.get("hf_plain")
    plain_tps = None
    summary = []
    for name, rows in records.items():
        new_tokens = sum(len(r["ids"]) for r in rows)
        total_s = sum(r["seconds"] for r in rows)
        tps = new_tokens / total_s if total_s > 0 else 0.0
        if name == "hf_plain":
            plain_tps = tps
        identical = None
        if reference is not None:
            identical = sum(r["ids"] == ref["ids"] for r, ref in zip(rows, reference))
        stats = [r["stats"] for r in rows if r["stats"] is not None]
        acceptance = tpf = hist = forwards = None
        if stats:
            drafted = sum(s.drafted for s in stats)
            accepted = sum(s.accepted for s in stats)
            forwards = sum(s.target_forwards for s in stats)
            acceptance = accepted / drafted if drafted else None
            hist = _sum_hists([list(s.accepted_hist) for s in stats])
        else:
            forwards = sum(r["forwards"] for r in rows)
        if forwards:
            tpf = new_tokens / forwards
        summary.append({
            "name": name,
            "tokens_per_s": round(tps, 3),
            "speedup": None,  # filled below, once hf_plain is known
            "acceptance_rate": None if acceptance is None else round(acceptance, 4),
            "mean_tokens_per_forward": None if tpf is None else round(tpf, 4),
            "identical": identical,
            "prompts": len(rows),
            "new_tokens": new_tokens,
            "total_s": round(total_s, 3),
            "target_forwards": forwards,
            "accepted_hist": hist,
            "per_prompt": [{"id": r["id"], "new_tokens": len(r["ids"]),
                            "seconds": round(r["seconds"], 4),
                            "identical": None if reference is None else r["ids"] == ref["ids"]}
                           for r, ref in zip(rows, reference or [None] * len(rows))],
        })
    for m in summary:
        if plain_tps:
            m["speedup"] = round(m["tokens_per_s"] / plain_tps, 3)
    return summary


def _sum_hists(hists: list[list[int]]) -> list[int]:
    total = [0] * max((len(h) for h in hists), default=0)
    for h in hists:
        for n, count in enumerate(h):
            total[n] += count
    return total


# ---------------------------------------------------------------------------
# reporting


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_hist(hist: list[int] | None, width: int = 9) -> str:
    """'mean 1.72 | 0:41% 1:12% ... 8+:9%' -- share of steps accepting n draft tokens."""
    if not hist or not sum(hist):
        return "-"
    steps = sum(hist)
    mean = sum(n * c for n, c in enumerate(hist)) / steps
    shown = hist[:width - 1] + ([sum(hist[width - 1:])] if len(hist) >= width else [])
    parts = [f"{n}{'+' if n == width - 1 and len(hist) > width else ''}:{100 * c / steps:.0f}%"
             for n, c in enumerate(shown)]
    return f"mean {mean:.2f} | " + " ".join(parts)


def hist_lines(methods: list[dict], width: int = 16) -> list[str]:
    """The table's closing block: each method's accepted-drafts histogram (methods that drafted)."""
    hists = [(m["name"], m.get("accepted_hist")) for m in methods if m.get("accepted_hist") and sum(m["accepted_hist"])]
    if not hists:
        return []
    return ["", "accepted draft tokens per verify step (share of steps):"] + [
        f"  {name:<{width}}{format_hist(hist)}" for name, hist in hists]


def format_table(results: dict) -> str:
    """A readable table of one run, then the accepted-length histograms."""
    lines = [f"target {results['target']}  draft {results['draft'] or '-'}  "
             f"max_new_tokens {results['max_new_tokens']}",
             f"machine {results['machine']}", ""]
    header = f"{'method':<18}{'tok/s':>9}{'speedup':>9}{'accept':>8}{'tok/fwd':>9}{'identical':>11}"
    lines += [header, "-" * len(header)]
    for m in results["methods"]:
        lines.append(f"{m['name']:<18}{m['tokens_per_s']:>9.1f}"
                     f"{_fmt(m['speedup'], '.2f', 'x'):>9}"
                     f"{_fmt(None if m['acceptance_rate'] is None else 100 * m['acceptance_rate'], '.0f', '%'):>8}"
                     f"{_fmt(m['mean_tokens_per_forward'], '.2f'):>9}"
                     f"{_fmt(m['identical'], 'd') + '/' + str(m['prompts']):>11}")
    return "\n".join(lines + hist_lines(results["methods"]))


def plot_speedup(results: dict, path: str | os.PathLike) -> None:
    """Bar chart of tokens/s per method, labelled with the speedup over hf_plain."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    names = [m["name"] for m in methods]
    tps = [m["tokens_per_s"] for m in methods]
    colors = ["#9aa5b1" if n in HF_METHODS else "#2f7ed8" for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4.2))
    bars = ax.bar(names, tps, color=colors)
    for bar, m in zip(bars, methods):
        label = f"{m['tokens_per_s']:.1f}"
        if m["speedup"] is not None:
            label += f"\n{m['speedup']:.2f}x"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("tokens / s (greedy)")
    ax.set_title(f"{results['target']}, {results['max_new_tokens']} new tokens, "
                 f"{methods[0]['prompts'] if methods else 0} prompts\n"
                 f"grey: Hugging Face, blue: ours; label: tok/s and speedup over hf_plain",
                 fontsize=9)
    ax.set_ylim(0, max(tps + [1.0]) * 1.25)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------
# a cheap same-vocabulary draft


def make_layer_draft(target: str, layers: int, out_dir: str | os.PathLike,
                     device=None, dtype=None) -> Path:
    """Save the target's first `layers` decoder layers + embeddings, final norm and lm_head.

    Same tokenizer as the target, so the engine can load it as `model:<out_dir>`. Only
    useful to exercise the draft-model path: a truncated model drafts poorly. A quantised
    `dtype` (or auto, which may pick one) saves the fp32 weights: int8/int4 are the engine's
    own kernels, which no transformers model loads; the engine quantises the draft itself
    when it loads it.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():  # checked before the model loads: save_pretrained only warns
        raise BenchError(f"--out {str(out)!r} exists and is not a folder; the draft is saved as a folder")
    if dtype == AUTO or dtype in QUANTIZED:
        dtype = "fp32"
    model, tokenizer = load_model(target, device=device, dtype=dtype, stock=True)  # plain weights to copy
    small = layer_draft(model, layers, target)
    small.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def layer_draft(model, layers: int, name: str):
    """A new model of `model`'s class holding a copy of its first `layers` decoder layers,
    embeddings, final norm and lm_head (`name` is only for the error message)."""
    total = model.config.num_hidden_layers
    if not 1 <= layers < total:
        raise BenchError(f"--layers must be between 1 and {total - 1} for {name} "
                         f"({total} layers)")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:layers]
    small = type(model)(config).to(model.dtype)

    def keep(key: str) -> bool:  # "model.layers.<i>.…" for i < layers, everything else
        m = re.search(r"\.layers\.(\d+)\.", key)
        return m is None or int(m.group(1)) < layers

    small.load_state_dict({k: v for k, v in model.state_dict().items() if keep(k)}, strict=True)
    small.generation_config = copy.deepcopy(model.generation_config)
    return small
