"""Traffic-replay benchmark: support conversations replayed in order, drafters learning as they go.

    python -m inference bench --replay inference/data/replay_support.jsonl --out bench-out/replay
    python -m inference bench --replay inference/data/replay_support.jsonl --out /tmp/r --limit 12 \\
        --max-new-tokens 32 --methods hf_plain,lookup,suffix,suffix+lookup

A workload line is one conversation of one bot (`make_replay.py` writes the shipped one):
    {"id": "c0001", "bot": "bikeshop", "system": "...", "turns": ["user message", ...]}
Turns are answered one by one; each method's own reply goes into its conversation history
(greedy and lossless, they are all the target's reply). After every reply the engine is
taught it (`engine.remember(f"bot-{bot}", reply, question)`), so a drafter may use earlier
replies of the same bot, never later ones and never another bot's. `--limit N` replays
the first N user messages. A prompt-file line ({"id", "messages"}, as `bench --prompts`
reads) is one fresh conversation: its messages are the history, the last one the turn,
and its id its bot — so `--replay inference/data/support_prompts.jsonl` measures fresh
prompts, with nothing to learn from.

Methods: hf_plain (target alone: HF `generate` on the stock transformers model, greedy: the
reference), none (our decoding loop, no drafts), lookup, lookup_k<N>, suffix, suffix_k<N> (up to N tokens, no cost-aware
cut), suffix+lookup, any other drafter spec (e.g. suffix+lookup+model:<dir>), and with
--draft: draft (= model:<draft>) and suffix+lookup+draft. Our methods reuse the KV of
earlier prompts' whole prefill chunks (prefix_cache.py: exact, the engine's default, as in
the worker); "<method>/fresh" prefills every prompt from scratch instead. Warm-up excluded,
seeded, message-major (every method on message 1, then on message 2, ...) so load from
other processes spreads evenly.

The reference (speedup 1.00x, "identical" counts against it) is hf_plain when it runs, else
the first method: `--methods none,suffix --dtype int4` measures drafts against our own plain
int4 loop (HF `generate` does not prefill through the int4 model's bf16 prompt copies, so its
int4 replies need not be the engine's).

Beside each result: the Leviathan et al. (2023) bound S = (1 - a^(g+1)) / ((1 - a)(g c + 1))
from the measured acceptance a, mean draft length g (drafted tokens / steps that drafted)
and c, the measured extra cost of one draft token: a verify step of g draft tokens (plus
the drafter's own time per step) costs (g c + 1) plain steps — timed on the target here.
Under the table, the drafting headroom (headroom.py): each drafter replayed offline against
the recorded replies with verification free (tokens per forward, exact for greedy), and the
bound no copy drafter can pass — what a machine whose verify costs nothing (a GPU) could gain.
Writes DIR/results.json and DIR/speedup_by_history.png (speedup vs the number of the bot's
earlier replies), returns the results; `format_replay_table` prints them.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import statistics
import time
from pathlib import Path

import torch

from .bench import (BenchError, _sum_hists, _sync, _until_eos, hf_generate_runner, hist_lines, jsonl_rows,
                    machine_description, reference_model, write_progress)
from .engine import Engine
from .forward import cache_argument, crop, extend, new_cache, prefill, track_rollback
from .headroom import format_headroom, headroom
from .prefix_cache import PrefixCache

DEFAULT_METHODS = ("hf_plain", "none/fresh", "none", "lookup", "suffix", "suffix+lookup")
FRESH = "/fresh"  # method suffix: the engine without prompt prefix reuse
HISTORY_BUCKETS = ((0, 0), (1, 2), (3, 5), (6, 10), (11, 20), (21, 40), (41, 80), (81, 10 ** 9))


class ReplayFileError(BenchError):
    """A workload line is not {"id", "bot", "system", "turns": [str, ...]}."""


# ---------------------------------------------------------------------------- workload


def load_replay(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """Conversations in file order; with `limit`, only the first `limit` user messages."""
    conversations, seen, total = [], set(), 0
    rows = jsonl_rows(path, ReplayFileError)
    for where, row in rows:
        if isinstance(row, dict) and "turns" not in row and isinstance(row.get("messages"), list):
            row = _fresh_conversation(row, where)
        if not (isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("bot"), str)
                and isinstance(row.get("system", ""), str) and isinstance(row.get("turns"), list)
                and row["turns"] and all(isinstance(t, str) for t in row["turns"])):
            raise ReplayFileError(f'{where}: expected {{"id": str, "bot": str, "system": str, '
                                  f'"turns": [str, ...]}}')
        if not _chat_messages(row.get("history", [])):
            raise ReplayFileError(f'{where}: "history" must be [{{"role", "content"}}, ...]')
        if row["id"] in seen:
            raise ReplayFileError(f'{where}: duplicate id "{row["id"]}"')
        seen.add(row["id"])
        turns = row["turns"][:None if limit is None else limit - total]
        if not turns:
            break
        total += len(turns)
        conversations.append({"id": row["id"], "bot": row["bot"], "system": row.get("system", ""),
                              "history": row.get("history", []), "turns": turns})
    rows.close()  # stopped at `limit`: the file closes now
    if not conversations:
        raise ReplayFileError(f"{path}: no conversations in file")
    return conversations


def _chat_messages(messages) -> bool:
    """Whether `messages` is a list of {"role": str, "content": str}."""
    return isinstance(messages, list) and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                              and isinstance(m.get("content"), str) for m in messages)


def _fresh_conversation(row: dict, where: str) -> dict:
    """{"id", "messages": [...]} -> a one-turn conversation of its own bot (nothing to learn)."""
    messages = row["messages"]
    if not (messages and _chat_messages(messages) and messages[-1]["role"] == "user"):
        raise ReplayFileError(f'{where}: "messages" must be [{{"role", "content"}}, ...] ending with a user message')
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    history = [{"role": m["role"], "content": m["content"]} for m in messages[1 if system else 0:-1]]
    return {"id": row.get("id"), "bot": row.get("id"), "system": system, "history": history,
            "turns": [messages[-1]["content"]]}


# ---------------------------------------------------------------------------- methods


def drafter_for(name: str, draft: str | None) -> tuple[str, int | None]:
    """Method name (without "/fresh") -> (drafter spec, fixed draft length or None)."""
    if m := re.fullmatch(r"(lookup|suffix)_k([1-9]\d*)", name):  # suffix_k32: up to 32, no cost-aware cut
        return m.group(1), int(m.group(2))
    if "draft" in name.split("+"):
        if not draft:
            raise BenchError(f"method {name!r} needs --draft")
        return "+".join(f"model:{draft}" if p == "draft" else p for p in name.split("+")), None
    return name, None


# ---------------------------------------------------------------------------- the run


def run_replay(conversations: list[dict], *, target: str, draft: str | None = None, methods=None,
               max_new_tokens: int = 128, seed: int = 0, device=None, dtype=None, out_dir,
               progress: bool = True, workload: str = "") -> dict:
    from tqdm import tqdm

    names = list(methods or DEFAULT_METHODS)
    base = Engine(target=target, drafter="none", device=device, dtype=dtype)
    eos_ids = list(base.eos_token_ids)
    runners, engines = {}, {}
    for name in names:
        if name == "hf_plain":
            hf = hf_generate_runner(reference_model(target, device, dtype), max_new_tokens, eos_ids)
            runners[name] = lambda input_ids, namespace, hf=hf: hf(input_ids)  # HF knows no namespaces
            continue
        fresh = name.endswith(FRESH)  # prefill every prompt from scratch, like HF `generate`
        spec, fixed = drafter_for(name.removesuffix(FRESH), draft)
        try:
            engine = Engine(target=target, drafter=spec, device=device, dtype=dtype, draft_length=fixed,
                            prefix_cache=False)
        except ValueError as e:  # unknown drafter spec
            raise BenchError(f"unknown method {name!r}: {e}") from None
        # its own prompt cache (not the model's shared one): a method never finds another one's prefills
        engine.prefixes = None if fresh else PrefixCache.for_model(engine.model)
        engines[name] = engine  # its own suffix memory: methods never learn from each other

        def run(input_ids, namespace, engine=engine):
            return engine.generate_ids(input_ids, max_new_tokens=max_new_tokens, temperature=0.0, seed=seed,
                                       eos_token_ids=eos_ids, namespace=namespace)
        runners[name] = run

    first = conversations[0]
    warm_ids = base.encode([{"role": "system", "content": first["system"]}, {"role": "user", "content": "Hi"}])
    for run in runners.values():  # warm-up, not timed, no namespace: nothing learnt
        run(warm_ids, None)

    histories = {name: {} for name in names}  # method -> conversation id -> messages so far
    records = {name: [] for name in names}
    reference = "hf_plain" if "hf_plain" in names else names[0]  # as reference_name() will say
    recorded: list[dict] = []  # the reference's prompts and replies, for the drafting headroom
    seen: dict[str, int] = {}  # bot -> replies so far (identical for every method)
    total = sum(len(c["turns"]) for c in conversations)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.partial.json"  # rewritten after every message: a run cut short keeps what it did
    bar = tqdm(total=total * len(names), desc="replay", unit="gen", disable=not progress)
    for conv in conversations:
        namespace = f"bot-{conv['bot']}"
        for turn in conv["turns"]:
            history_size = seen.get(conv["bot"], 0)
            for name in names:
                messages = histories[name].setdefault(
                    conv["id"], [{"role": "system", "content": conv["system"]}] * bool(conv["system"]) + conv["history"])
                messages.append({"role": "user", "content": turn})
                input_ids = base.encode(messages)
                torch.manual_seed(seed)
                _sync(base.device)
                t0 = time.perf_counter()
                new_ids, stats = runners[name](input_ids, namespace)
                _sync(base.device)
                seconds = time.perf_counter() - t0
                reply = _until_eos(list(new_ids), eos_ids)
                messages.append({"role": "assistant",
                                 "content": base.tokenizer.decode(reply, skip_special_tokens=True)})
                if name in engines:
                    engines[name].remember(namespace, list(new_ids), question=turn)
                records[name].append({"conversation": conv["id"], "bot": conv["bot"], "history": history_size,
                                      "ids": reply, "seconds": seconds, "stats": stats})
                if name == reference:
                    recorded.append({"bot": conv["bot"], "prompt": input_ids[0].tolist(),
                                     "reply": reply + list(new_ids)[len(reply):len(reply) + 1],  # + its EOS
                                     "question": base.question_ids(turn)})
                bar.update()
            seen[conv["bot"]] = history_size + 1
            write_progress(partial, len(records[names[0]]), total, records)
    bar.close()

    summary = _summarize(records, base, conversations[0])
    results = {
        "target": target,
        "draft": draft,
        "machine": machine_description(base.device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "max_new_tokens": max_new_tokens,
        "workload": workload,
        "conversations": len(conversations),
        "messages": total,
        "bots": sorted({c["bot"] for c in conversations}),
        "reference": reference_name(records),
        "methods": summary,
        "by_history": _by_history(records),
        # tokens per forward if verifying were free, and what any copy drafter could reach (headroom.py)
        "headroom": headroom(recorded, names, max_new_tokens),
        # the reference replies, to see how repetitive the traffic really is
        "replies": [{"conversation": r["conversation"], "bot": r["bot"], "history": r["history"],
                     "text": base.tokenizer.decode(r["ids"], skip_special_tokens=True)}
                    for r in next(iter(records.values()))],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    partial.unlink(missing_ok=True)
    plot_by_history(results, out / "speedup_by_history.png")
    return results


# ---------------------------------------------------------------------------- cost of a verify step


@torch.inference_mode()
def step_times(model, context_ids: torch.Tensor, draft_tokens: int, repeats: int = 5) -> tuple[float, float]:
    """Seconds of a plain 1-token target step and of a verify step over 1 + draft_tokens tokens,
    both after `context_ids` [1, S] (medians of `repeats`)."""
    cache_arg, cache = cache_argument(model), new_cache(model)
    prefill(model, cache_arg, cache, context_ids)
    track_rollback(cache)
    n = context_ids.shape[1]

    def timed(width: int) -> float:
        times = []
        for _ in range(repeats):
            x = context_ids[:, -width:] if width <= n else context_ids[:, :1].repeat(1, width)
            _sync(context_ids.device)
            t0 = time.perf_counter()
            extend(model, cache_arg, cache, x, n, keep=width)
            _sync(context_ids.device)
            times.append(time.perf_counter() - t0)
            crop(cache, n)
        return statistics.median(times)

    timed(1)  # warm
    return timed(1), timed(1 + draft_tokens)


def leviathan_bound(alpha: float, gamma: float, c: float) -> float:
    """Expected speedup S = (1 - a^(g+1)) / ((1 - a)(g c + 1)) (Leviathan et al. 2023, Theorem 3.8)."""
    if gamma <= 0:
        return 1.0
    tokens = gamma + 1 if alpha >= 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
    return tokens / (gamma * c + 1)


def reference_name(records: dict[str, list[dict]]) -> str:
    """What speedups and "identical" are measured against: hf_plain if it ran, else the first method."""
    return "hf_plain" if "hf_plain" in records else next(iter(records))


def _summarize(records: dict[str, list[dict]], base: Engine, sample_conv: dict) -> list[dict]:
    reference_method = reference_name(records)
    reference = records[reference_method]
    plain_tps = None
    context = base.encode([{"role": "system", "content": sample_conv["system"]},
                           {"role": "user", "content": sample_conv["turns"][0]}])
    costs: dict[int, tuple[float, float]] = {}  # draft width -> (plain step s, verify step s)
    summary = []
    for name, rows in records.items():
        new_tokens = sum(len(r["ids"]) for r in rows)
        total_s = sum(r["seconds"] for r in rows)
        tps = new_tokens / total_s if total_s > 0 else 0.0
        if name == reference_method:
            plain_tps = tps
        row = {"name": name, "tokens_per_s": round(tps, 3), "speedup": None, "acceptance_rate": None,
               "mean_tokens_per_forward": None,
               "identical": sum(r["ids"] == ref["ids"] for r, ref in zip(rows, reference)),
               "prompts": len(rows), "new_tokens": new_tokens, "total_s": round(total_s, 3),
               "gamma": None, "c": None, "leviathan_bound": None, "accepted_hist": None, "ttft_ms": None}
        stats = [r["stats"] for r in rows if r["stats"] is not None]
        if stats:  # mean time to the first token: the prompt's prefill (what prefix reuse saves) + one step
            row["ttft_ms"] = round(1000 * statistics.fmean(s.ttft_s for s in stats), 1)
            drafted = sum(s.drafted for s in stats)
            accepted = sum(s.accepted for s in stats)
            forwards = sum(s.target_forwards for s in stats)
            hist = _sum_hists([list(s.accepted_hist) for s in stats])
            draft_steps = sum(hist)
            prompt_tokens = sum(s.prompt_tokens for s in stats)
            row.update(acceptance_rate=round(accepted / drafted, 4) if drafted else None,
                       mean_tokens_per_forward=round(new_tokens / forwards, 4) if forwards else None,
                       target_forwards=forwards, accepted_hist=hist,
                       # share of prompt tokens taken from earlier prompts' cache instead of prefilled
                       prompt_tokens_reused=round(sum(s.prefix_reused for s in stats) / prompt_tokens, 3)
                       if prompt_tokens else None)
            if draft_steps:
                alpha, gamma = accepted / drafted, drafted / draft_steps
                width = max(1, round(gamma))
                if width not in costs:
                    costs[width] = step_times(base.model, context, width)
                plain_s, verify_s = costs[width]
                draft_per_step = sum(s.draft_s for s in stats) / max(1, forwards - len(stats))  # prefills excluded
                c = max(0.0, ((verify_s + draft_per_step) / plain_s - 1) / gamma)
                row.update(gamma=round(gamma, 3), c=round(c, 4),
                           leviathan_bound=round(leviathan_bound(alpha, gamma, c), 3))
        summary.append(row)
    for row in summary:
        if plain_tps:
            row["speedup"] = round(row["tokens_per_s"] / plain_tps, 3)
    return summary


def _by_history(records: dict[str, list[dict]]) -> dict:
    """Speedup over the reference per bucket of the bot's earlier replies (0, 1-2, 3-5, ...)."""
    reference = records[reference_name(records)]
    buckets = [b for b in HISTORY_BUCKETS if any(b[0] <= r["history"] <= b[1] for r in next(iter(records.values())))]
    labels = [str(lo) if lo == hi else (f"{lo}+" if hi >= 10 ** 9 else f"{lo}-{hi}") for lo, hi in buckets]
    out = {"buckets": labels, "messages": [], "speedup": {}}

    def tps(rows):
        s = sum(r["seconds"] for r in rows)
        return sum(len(r["ids"]) for r in rows) / s if s > 0 else 0.0

    for lo, hi in buckets:
        out["messages"].append(sum(lo <= r["history"] <= hi for r in next(iter(records.values()))))
    for name, rows in records.items():
        out["speedup"][name] = []
        for lo, hi in buckets:
            mine = [r for r in rows if lo <= r["history"] <= hi]
            ref = [r for r in reference if lo <= r["history"] <= hi]
            out["speedup"][name].append(round(tps(mine) / tps(ref), 3) if tps(ref) else None)
    return out


# ---------------------------------------------------------------------------- reporting


def format_replay_table(results: dict) -> str:
    def fmt(value, spec, suffix=""):
        return "-" if value is None else f"{value:{spec}}{suffix}"

    lines = [f"target {results['target']}  draft {results['draft'] or '-'}  max_new_tokens {results['max_new_tokens']}",
             f"workload {results['workload'] or '-'}: {results['messages']} messages, "
             f"{results['conversations']} conversations, bots {', '.join(results['bots'])}",
             f"machine {results['machine']}", ""]
    w = max([16] + [len(m["name"]) + 2 for m in results["methods"]])  # long names ("suffix+lookup+recycle") too
    header = (f"{'method':<{w}}{'tok/s':>8}{'speedup':>9}{'accept':>8}{'tok/fwd':>9}{'identical':>11}"
              f"   {'γ':>6}{'c':>7}{'S bound':>9}{'TTFT ms':>9}")
    lines += [header, "-" * len(header)]
    for m in results["methods"]:
        accept = None if m["acceptance_rate"] is None else 100 * m["acceptance_rate"]
        identical = fmt(m["identical"], "d") + "/" + str(m["prompts"])
        lines.append(f"{m['name']:<{w}}{m['tokens_per_s']:>8.1f}{fmt(m['speedup'], '.2f', 'x'):>9}"
                     f"{fmt(accept, '.0f', '%'):>8}{fmt(m['mean_tokens_per_forward'], '.2f'):>9}{identical:>11}"
                     f"   {fmt(m['gamma'], '.2f'):>6}{fmt(m['c'], '.3f'):>7}{fmt(m['leviathan_bound'], '.2f', 'x'):>9}"
                     f"{fmt(m.get('ttft_ms'), '.0f'):>9}")
    lines += ["", "S bound = (1 - α^(γ+1)) / ((1 - α)(γc + 1)), α = accept, γ = mean draft length, "
              "c = measured cost of a draft token in a verify step / a plain step; TTFT = mean time to a "
              "reply's first token (its prompt's prefill, less what prefix reuse saved)"]
    by = results["by_history"]
    if by["speedup"]:
        reference = results.get("reference", "hf_plain")
        lines += ["", f"speedup over {reference} by the bot's earlier replies:",
                  f"  {'replies':<{w - 2}}" + "".join(f"{b:>8}" for b in by["buckets"]),
                  f"  {'messages':<{w - 2}}" + "".join(f"{n:>8}" for n in by["messages"])]
        lines += [f"  {name:<{w - 2}}" + "".join(f"{fmt(s, '.2f'):>8}" for s in values)
                  for name, values in by["speedup"].items() if name != reference]
    if results.get("headroom"):
        measured = {m["name"]: m["mean_tokens_per_forward"] for m in results["methods"]}
        lines += ["", format_headroom(results["headroom"], measured)]
    return "\n".join(lines + hist_lines(results["methods"], w))


def plot_by_history(results: dict, path: str | os.PathLike) -> None:
    """Speedup over the reference vs the bot's earlier replies, one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = results["by_history"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = range(len(by["buckets"]))
    reference = results.get("reference", "hf_plain")
    for name, values in by["speedup"].items():
        if name == reference:
            continue
        ax.plot(x, [float("nan") if v is None else v for v in values], marker="o", label=name)
    ax.axhline(1.0, color="#9aa5b1", linestyle="--", linewidth=1)
    ax.set_xticks(list(x), [f"{b}\n({n} msg)" for b, n in zip(by["buckets"], by["messages"])], fontsize=8)
    ax.set_xlabel("the bot's earlier replies when the message arrives")
    ax.set_ylabel("speedup over target alone (HF generate)" if reference == "hf_plain"
                  else f"speedup over {reference} (target alone, our loop)")
    ax.set_title(f"traffic replay: {results['target']}, {results['messages']} messages, "
                 f"{results['max_new_tokens']} new tokens max", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
