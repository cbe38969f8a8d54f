"""Precision benchmark: tokens/s and faithfulness per weight precision x drafter, side by side.

    python -m inference bench --precisions fp32,bf16,int8,int4 --drafters none,lookup --out bench-out/cpu

Rows, all greedy, one process, the same prompts, interleaved prompt-major (every row on
prompt 1, then every row on prompt 2, ...) so load from other processes spreads evenly:

    hf_plain/fp32        transformers `generate` on the stock model, fp32 — the reference for
                         speed (issue 5) and for faithfulness
    <drafter>/<precision> our engine at that precision with that drafter
    llamacpp             llama-cpp-python on the GGUF file itself (`--llamacpp`; needs the
                         optional `llama-cpp-python`, built from source. Our 0.3.36 build
                         with GGML_NATIVE segfaults in llama_decode on this CPU, see
                         docs/cpu-speed.md, hence opt-in rather than automatic)

Faithfulness, per row, against stock transformers' fp32 reply of the same prompt (hf_plain/fp32;
without it, our fp32 `none` reply, which runs oneDNN's packed fp32 kernel on CPU):
    identical   replies token-identical to fp32 (n/N)
    fp32_ll     mean log-likelihood per reply token under the fp32 model (higher is better;
                fp32's own replies set the bar)
    lossless    replies identical to `none` at the same precision — speculation must not
                change a greedy reply (n/N)
One warm-up generation per row is not timed. Writes DIR/results.json; returns the results.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import torch

from .bench import _until_eos, _write_json, hf_generate_runner, machine_description, reference_model, write_progress
from .engine import Engine
from .loading import BUNDLED_TARGET, _bundled_gguf_path
from .prefix_cache import PrefixCache


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def _gguf_path(target: str) -> str | None:
    if target.startswith("bundled:"):
        return str(_bundled_gguf_path(target))
    return target if target.endswith(".gguf") else None


def make_llamacpp_runner(target: str, max_new_tokens: int, eos_ids: list[int], threads: int, reuse: bool = False):
    """input_ids [1, S] -> new ids, greedy, from llama.cpp on the same GGUF (same tokens in).

    reuse=False: every prompt from scratch. reuse=True: the context is kept between calls and
    llama-cpp-python skips the longest common prefix with the previous call's tokens.
    `run.forget()` empties the context."""
    import llama_cpp

    path = _gguf_path(target)
    if path is None:
        return None
    llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_threads=threads, n_batch=512, verbose=False)

    def run(input_ids):
        if not reuse:
            llm.reset()
        out = []
        for token in llm.generate(input_ids[0].tolist(), top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            if token in eos_ids:
                break
            out.append(token)
            if len(out) >= max_new_tokens:
                break
        return out
    run.forget = llm.reset
    return run


@torch.inference_mode()
def mean_log_likelihood(model, prompt_ids: torch.Tensor, reply: list[int]) -> float | None:
    """Mean log p(reply token | everything before) under `model`; None for an empty reply."""
    if not reply:
        return None
    ids = torch.cat((prompt_ids[0], torch.tensor(reply, dtype=torch.long, device=prompt_ids.device)))[None]
    logits = model(input_ids=ids).logits[0, prompt_ids.shape[1] - 1:-1].float()  # [R, V]
    logp = torch.log_softmax(logits, dim=-1)
    return logp[torch.arange(len(reply)), torch.tensor(reply)].mean().item()


def run_precision_bench(prompts, *, target=BUNDLED_TARGET, precisions=("fp32", "int8"), drafters=("none", "lookup"),
                        max_new_tokens=96, seed=0, device="cpu", out_dir, hf_plain=True, llamacpp=False,
                        reuse=False, progress=True) -> dict:
    """Every precision x drafter, interleaved prompt by prompt. Rows prefill every prompt from
    scratch, like HF `generate`; with `reuse`, each row also runs as "<row>/reuse" with its own
    PrefixCache (prefix_cache.py: exact, the engine's default),
    and llama.cpp as "llamacpp/reuse" keeping its context between calls (llama-cpp-python
    reuses the longest common prefix with its previous prompt)."""
    from tqdm import tqdm

    precisions = list(dict.fromkeys(["fp32", *precisions]))  # fp32 is the reference
    drafters = list(dict.fromkeys(["none", *drafters]))
    engines = {p: Engine(target=target, drafter="none", device=device, dtype=p, prefix_cache=False)
               for p in precisions}
    ref_engine = engines["fp32"]
    eos_ids = list(ref_engine.eos_token_ids)
    inputs = [ref_engine.encode(p["messages"]) for p in prompts]  # [1, S] each

    rows: dict[str, callable] = {}
    if hf_plain:
        rows["hf_plain/fp32"] = hf_generate_runner(reference_model(target, device, "fp32"), max_new_tokens, eos_ids)
    prefix_caches: list[PrefixCache] = []
    for p in precisions:
        for d in drafters:
            for prefixes in (None, PrefixCache.for_model(engines[p].model)) if reuse else (None,):
                def ours(input_ids, engine=engines[p], drafter=d, prefixes=prefixes):
                    engine.prefixes = prefixes  # one engine per precision, one prefix cache per row
                    return engine.generate_ids(input_ids, max_new_tokens=max_new_tokens, seed=seed, drafter=drafter,
                                               eos_token_ids=eos_ids)
                rows[f"{_label(d)}/{p}" + ("/reuse" if prefixes is not None else "")] = ours
                prefix_caches += [prefixes] if prefixes is not None else []
    llamacpp_runners = []
    if llamacpp and llama_cpp_available():
        for keep in (False, True) if reuse else (False,):
            runner = make_llamacpp_runner(target, max_new_tokens, eos_ids, torch.get_num_threads(), reuse=keep)
            if runner is not None:
                rows["llamacpp" + ("/reuse" if keep else "")] = lambda ids, runner=runner: (runner(ids), None)
                llamacpp_runners.append(runner)

    for run in rows.values():  # warm-up, not timed (also measures c_verify for adaptive k)
        run(inputs[0])
    for prefixes in prefix_caches:  # nothing carried from the warm-up into the timed runs
        prefixes.clear()
    for runner in llamacpp_runners:
        runner.forget()
    records = {name: [] for name in rows}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.partial.json"  # rewritten after every prompt: a run cut short keeps what it did
    bar = tqdm(total=len(prompts) * len(rows), desc="precision bench", unit="gen", disable=not progress)
    for done, input_ids in enumerate(inputs, 1):
        for name, run in rows.items():
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            ids, stats = run(input_ids)
            records[name].append({"ids": _until_eos(list(ids), eos_ids), "seconds": time.perf_counter() - t0,
                                  "stats": stats})
            bar.update()
        write_progress(partial, done, len(inputs), records)
    bar.close()

    reference = records.get("hf_plain/fp32", records["none/fp32"])  # stock transformers' fp32 replies
    ll = {name: [mean_log_likelihood(ref_engine.model, x, r["ids"]) for x, r in zip(inputs, rs)]
          for name, rs in records.items()}
    methods = []
    hf_tps = None
    for name, rs in records.items():
        tokens, seconds = sum(len(r["ids"]) for r in rs), sum(r["seconds"] for r in rs)
        tps = tokens / seconds if seconds else 0.0
        hf_tps = tps if name == "hf_plain/fp32" else hf_tps
        precision = name.split("/")[1] if "/" in name else None
        same_precision_plain = records.get(f"none/{precision}" + ("/reuse" if name.endswith("/reuse") else ""))
        stats = [r["stats"] for r in rs if r["stats"] is not None]
        drafted, accepted = sum(s.drafted for s in stats), sum(s.accepted for s in stats)
        forwards = sum(s.target_forwards for s in stats)
        lls = [v for v in ll[name] if v is not None]
        methods.append({
            "name": name,
            "precision": precision,
            "tokens_per_s": round(tps, 3),
            "speedup_vs_hf_fp32": None,
            "identical_to_fp32": sum(r["ids"] == ref["ids"] for r, ref in zip(rs, reference)),
            "lossless": (None if same_precision_plain is None else
                         sum(r["ids"] == ref["ids"] for r, ref in zip(rs, same_precision_plain))),
            "fp32_mean_log_likelihood": round(sum(lls) / len(lls), 4) if lls else None,
            "acceptance_rate": round(accepted / drafted, 4) if drafted else None,
            "mean_tokens_per_forward": round(tokens / forwards, 3) if forwards else None,
            "prompt_tokens_reused": (round(sum(s.prefix_reused for s in stats) / sum(s.prompt_tokens for s in stats), 3)
                                     if stats else None),  # share of prompt tokens not prefilled (prefix_cache.py)
            "prompts": len(rs),
            "new_tokens": tokens,
            "total_s": round(seconds, 3),
        })
    for m in methods:
        if hf_tps:
            m["speedup_vs_hf_fp32"] = round(m["tokens_per_s"] / hf_tps, 3)
    from .verify_cost import verify_cost
    cost_models = {p: e.model for p, e in engines.items()}
    if hf_plain:  # the same costs for transformers' own fp32 model: what the engine's kernels change
        cost_models["fp32-stock"] = reference_model(target, device, "fp32")
    results = {
        "target": target,
        "machine": machine_description(torch.device(device)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "max_new_tokens": max_new_tokens,
        "drafters": drafters,
        "verify_cost": {p: _cost(verify_cost(model)) for p, model in cost_models.items()},
        "methods": methods,
    }
    _write_json(out / "results.json", results)
    partial.unlink(missing_ok=True)
    return results


def _cost(cost) -> dict:
    return {"step_ms": round(1000 * cost.step_s, 2), "c_verify": dict(zip(cost.ks, (round(c, 3) for c in cost.relative)))}


def _label(drafter: str) -> str:
    """A row's drafter name: a draft model's path would hide the row's precision ("model:a/b" -> "draft")."""
    head, sep, _ = drafter.partition("model:")
    return head + "draft" if sep else drafter


def format_precision_table(results: dict) -> str:
    lines = [f"target {results['target']}  max_new_tokens {results['max_new_tokens']}",
             f"machine {results['machine']}", ""]
    width = max([18] + [len(m["name"]) + 1 for m in results["methods"]])
    header = (f"{'drafter/precision':<{width}}{'tok/s':>8}{'vs hf fp32':>11}{'accept':>8}{'tok/fwd':>8}"
              f"{'=fp32':>8}{'fp32 LL':>9}{'lossless':>10}")
    lines += [header, "-" * len(header)]
    for m in results["methods"]:
        n = m["prompts"]
        lines.append(
            f"{m['name']:<{width}} {m['tokens_per_s']:>7.1f}"
            f"{'-' if m['speedup_vs_hf_fp32'] is None else format(m['speedup_vs_hf_fp32'], '.2f') + 'x':>11}"
            f"{'-' if m['acceptance_rate'] is None else format(100 * m['acceptance_rate'], '.0f') + '%':>8}"
            f"{'-' if m['mean_tokens_per_forward'] is None else format(m['mean_tokens_per_forward'], '.2f'):>8}"
            f"{str(m['identical_to_fp32']) + '/' + str(n):>8}"
            f"{'-' if m['fp32_mean_log_likelihood'] is None else format(m['fp32_mean_log_likelihood'], '.3f'):>9}"
            f"{'-' if m['lossless'] is None else str(m['lossless']) + '/' + str(n):>10}")
    lines += ["", "c_verify(k) = forward over k drafts + 1 / one decode step:"]
    for p, v in results["verify_cost"].items():
        lines.append(f"  {p:<10} step {v['step_ms']:.1f} ms  " +
                     "  ".join(f"c({k})={c:.2f}" for k, c in v["c_verify"].items() if int(k) > 0))
    return "\n".join(lines)
