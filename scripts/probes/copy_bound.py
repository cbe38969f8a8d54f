"""Probe: how many tokens per target forward can copy-based drafting reach on the replay workload?

    .venv/bin/python scripts/probes/copy_bound.py --out var/probes/copy   # ~1 minute on a 2-core CPU

Not a benchmark of record (no model forwards are timed): greedy output does not depend on the
drafter, so the drafters are replayed offline against the target's fixed greedy replies (the
`replies` a `bench --replay` run stored, default: docs/bench/replay160-epyc-trie/results.json),
in workload order, each bot's index learning from its earlier replies only — as `bench --replay`
does, with the engine's real drafter classes. A step drafts, the "target" accepts the longest
prefix (for a tree: the longest root path) that equals its reply, and emits one token more.

Reported per drafter: tokens per forward, and tokens per unit of verify cost under two cost
curves — `measured` (c(n) of the loaded model, timed now on this machine: a 2-core CPU's verify
of n drafts costs c(n) decode steps) and `free` (c(n) = 1: a GPU's, where verifying 16 drafts
costs one step). The `oracle` row copies, each step, the longest next piece of the reply that
occurs anywhere in the bot's earlier replies or the conversation: what a drafter that always
knew where to copy from would get.

Trees (`suffix:tree`, `suffix:wide`) are scored as trees under both curves; the engine verifies
them as trees only where the attention honours a tree mask (CUDA, `CHATNEXUS_FP32_KERNEL=stock`),
so on the default CPU kernels their `measured` column is what they *would* do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from inference.engine import Engine  # noqa: E402
from inference.engine.draft_length import DraftLength  # noqa: E402
from inference.engine.drafters import make_drafter  # noqa: E402
from inference.engine.drafters.suffix import SuffixMemory  # noqa: E402
from inference.engine.replay import load_replay  # noqa: E402
from inference.engine.verify_cost import verify_cost  # noqa: E402

DRAFTERS = ("lookup", "suffix", "suffix+lookup", "suffix:tree", "suffix:8,wide", "suffix:16,wide", "suffix:wide")


def workload(engine: Engine, replay: str, replies: str) -> list[tuple[str, list[int], list[int], list[int]]]:
    """(bot, prompt ids, reply ids, question ids as `Engine.remember` tokenizes them), in order."""
    texts = [r["text"] for r in json.loads(Path(replies).read_text())["replies"]]
    items, i = [], 0
    for conv in load_replay(replay):
        messages = [{"role": "system", "content": conv["system"]}] * bool(conv["system"]) + conv["history"]
        for turn in conv["turns"]:
            messages.append({"role": "user", "content": turn})
            prompt = engine.encode(messages)[0].tolist()
            reply = engine.tokenizer(texts[i], add_special_tokens=False).input_ids
            question = engine.tokenizer(turn + engine._question_suffix(), add_special_tokens=False).input_ids
            items.append((conv["bot"], prompt, reply, question))
            messages.append({"role": "assistant", "content": texts[i]})
            i += 1
    return items


def start_reply(drafter, memory: SuffixMemory, bot: str, prompt: list[int], cost) -> DraftLength:
    """Point the drafter at the bot's index and the cost curve, begin a reply after ``prompt``;
    the draft length policy to use (the drafter's own pace, else adaptive under ``cost``)."""
    if hasattr(drafter, "set_index"):
        drafter.set_index(memory.get(f"bot-{bot}"))
    if hasattr(drafter, "set_cost"):
        drafter.set_cost(cost)
    pace = getattr(drafter, "max_draft_length", None)
    drafter.begin(torch.tensor([prompt]))
    return DraftLength(fixed=pace) if pace else DraftLength(cost=cost)


def replay(items, spec: str, cost) -> dict:
    drafter = make_drafter(spec, None, None, torch.device("cpu"), torch.float32)
    memory = SuffixMemory()
    trees = drafter.drafts_trees
    tokens = forwards = drafted = accepted = 0
    spent = 0.0
    started = time.perf_counter()
    for bot, prompt, reply, question in items:
        length = start_reply(drafter, memory, bot, prompt, cost)
        seq, pos = list(prompt), 0
        while pos < len(reply):
            k = length.next()
            if trees:
                draft, parents = drafter.propose_tree(torch.tensor([seq]), k)
            else:
                draft, _ = drafter.propose(torch.tensor([seq]), k)
                parents = list(range(-1, len(draft) - 1))
            draft = draft.tolist()
            a, node = 0, -1  # follow the tree (a chain is one) along the reply
            while pos + a < len(reply):
                node = next((i for i, p in enumerate(parents) if p == node and draft[i] == reply[pos + a]), None)
                if node is None:
                    break
                a += 1
            emitted = min(a + 1, len(reply) - pos)
            seq += reply[pos:pos + emitted]
            pos += emitted
            forwards, drafted, accepted = forwards + 1, drafted + len(draft), accepted + a
            spent += cost(len(draft))
            drafter.update(a, torch.tensor([seq]))
            length.update(len(draft), a)
        tokens += len(reply)
        memory.remember(f"bot-{bot}", reply, question)
    return {"tokens_per_forward": tokens / forwards, "tokens_per_cost": tokens / spent,
            "acceptance": accepted / max(drafted, 1), "drafted_per_step": drafted / forwards,
            "drafting_ms_per_step": 1000 * (time.perf_counter() - started) / forwards}


def oracle(items, cost) -> dict:
    """Each step copies the longest next piece of the reply found in the bot's earlier replies
    (each after its question) or the conversation so far."""
    text = lambda ids: "".join(chr(t + 0x1000) for t in ids)  # token ids as one str: substring search
    history: dict[str, str] = defaultdict(str)
    tokens = forwards = 0
    spent = 0.0
    for bot, prompt, reply, question in items:
        r, p, pos = text(reply), text(prompt), 0
        while pos < len(r):
            haystack = history[bot] + "\uffff" + p + r[:pos]
            n = 0
            while pos + n < len(r) and r[pos:pos + n + 1] in haystack:
                n += 1
            n = min(n, len(r) - pos - 1)
            pos, forwards, spent = pos + n + 1, forwards + 1, spent + cost(n)
        tokens += len(r)
        history[bot] += "\uffff" + text(question) + r
    return {"tokens_per_forward": tokens / forwards, "tokens_per_cost": tokens / spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay", default="inference/data/replay_support.jsonl")
    parser.add_argument("--replies", default="docs/bench/replay160-epyc-trie/results.json")
    parser.add_argument("--target", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--drafters", nargs="+", default=list(DRAFTERS), help="drafter specs, space-separated")
    parser.add_argument("--out", default="var/probes/copy")
    args = parser.parse_args()
    engine = Engine(target=args.target, drafter="none", device="cpu", dtype="fp32", prefix_cache=False)
    measured = verify_cost(engine.model)
    curves = {"measured": measured, "free": lambda n: 1.0}
    items = workload(engine, args.replay, args.replies)
    rows = {"oracle": {name: oracle(items, c) for name, c in curves.items()}}
    for spec in args.drafters:
        rows[spec] = {name: replay(items, spec, c) for name, c in curves.items()}
    lookup = rows.get("lookup")
    lines = [f"{len(items)} messages, {sum(len(i[2]) for i in items)} reply tokens; measured c(n): "
             + ", ".join(f"c({n})={measured(n):.2f}" for n in (1, 3, 7, 15, 31)),
             f"{'drafter':<16}{'tok/fwd':>9}{'(free)':>9}{'tok/cost':>10}{'vs lookup':>11}"
             f"{'free tok/cost':>15}{'vs lookup':>11}{'nodes/step':>12}"]
    for spec, row in rows.items():
        m, f = row["measured"], row["free"]
        ratio = lambda curve: (f"{row[curve]['tokens_per_cost'] / lookup[curve]['tokens_per_cost']:.2f}x"
                               if lookup else "-")
        lines.append(f"{spec:<16}{m['tokens_per_forward']:>9.2f}{f['tokens_per_forward']:>9.2f}"
                     f"{m['tokens_per_cost']:>10.2f}{ratio('measured'):>11}{f['tokens_per_cost']:>15.2f}"
                     f"{ratio('free'):>11}{format(f['drafted_per_step'], '.1f') if 'drafted_per_step' in f else '-':>12}")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(table + "\n")
    (out / "result.json").write_text(json.dumps({"measured_cost": {n: measured(n) for n in range(33)},
                                                 "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
