"""Probe: does knowing which earlier question the new one resembles help drafting on the replay?

    .venv/bin/python scripts/probes/question_anchor.py   # ~1 minute on a 2-core CPU

Offline, as `copy_bound.py` (whose workload and fixed greedy replies it reuses; no forward is
timed, costs are the c(n) that probe measured, `docs/bench/copy-bound-epyc/result.json`). The
`anchored` drafter ranks the bot's earlier replies by how many question tokens their question
shares with the new one (Jaccard over token ids, the chat template's tail left out), keeps the
top K, and each step copies what followed the longest suffix of the reply so far in one of them
(the longest match wins, then the better-ranked reply; at the reply's start, the top reply's
beginning). `suffix+lookup, anchored fallback` asks the anchored candidates only where
suffix+lookup drafts nothing, and only for a match of at least 2 tokens.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "probes"))

from copy_bound import start_reply, workload  # noqa: E402
from inference.engine import Engine  # noqa: E402
from inference.engine.drafters import make_drafter  # noqa: E402
from inference.engine.drafters.suffix import SuffixMemory  # noqa: E402


def longest_match(candidate: list[int], done: list[int], pointer: int) -> tuple[int, int]:
    """(m, end): the longest suffix of `done` (at most 24 tokens) found in `candidate` with a
    token after it, preferring an occurrence ending at or after `pointer`; (0, 0) if none."""
    for m in range(min(24, len(done)), 0, -1):
        ends = [i + m for i in range(len(candidate) - m) if candidate[i:i + m] == done[-m:]]
        if ends:
            return m, next((e for e in ends if e >= pointer), ends[0])
    return 0, 0


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / max(1, len(a | b))


def replay(items, cost, spec: str | None, anchored: bool, top: int = 8, cap: int = 16, tail: int = 6) -> dict:
    drafter = make_drafter(spec, None, None, torch.device("cpu"), torch.float32) if spec else None
    memory, history = SuffixMemory(), defaultdict(list)
    tokens = forwards = anchored_steps = anchored_accepted = 0
    spent = 0.0
    for bot, prompt, reply, question in items:
        asked = question[:-tail]
        score: dict[tuple, float] = {}
        for earlier_question, earlier_reply in history[bot]:
            key = tuple(earlier_reply)
            score[key] = max(score.get(key, 0.0), jaccard(asked, earlier_question))
        candidates = [list(k) for k, _ in sorted(score.items(), key=lambda kv: -kv[1])][:top]
        pointers = [0] * len(candidates)
        length = start_reply(drafter, memory, bot, prompt, cost) if drafter is not None else None
        seq, pos = list(prompt), 0
        while pos < len(reply):
            draft = drafter.propose(torch.tensor([seq]), length.next())[0].tolist() if drafter else []
            chosen = None
            if anchored and not draft:
                best = None
                for i, candidate in enumerate(candidates):
                    m, end = (99, 0) if pos == 0 and drafter is None else longest_match(candidate, reply[:pos], pointers[i])
                    if m >= (1 if drafter is None else 2) and (best is None or (m, -i) > best[0]):
                        best = ((m, -i), i, end)
                if best:
                    chosen = best
                    draft = candidates[best[1]][best[2]:best[2] + cap]
            a = 0
            while a < len(draft) and pos + a < len(reply) and draft[a] == reply[pos + a]:
                a += 1
            if chosen:
                anchored_steps, anchored_accepted = anchored_steps + 1, anchored_accepted + a
                pointers[chosen[1]] = chosen[2] + a
            emitted = min(a + 1, len(reply) - pos)
            seq += reply[pos:pos + emitted]
            pos += emitted
            forwards, spent = forwards + 1, spent + cost(len(draft))
            if drafter is not None:
                drafter.update(a, torch.tensor([seq]))
                length.update(len(draft), a)
        tokens += len(reply)
        memory.remember(f"bot-{bot}", reply, question)
        history[bot].append((asked, reply))
    return {"tokens_per_forward": tokens / forwards, "tokens_per_cost": tokens / spent,
            "anchored_steps": anchored_steps, "anchored_accepted": anchored_accepted}


def main() -> None:
    measured = json.loads((ROOT / "docs/bench/copy-bound-epyc/result.json").read_text())["measured_cost"]
    cost = lambda n: 1.0 if n <= 0 else measured[str(min(n, 32))]  # noqa: E731
    engine = Engine(drafter="none", device="cpu", dtype="fp32", prefix_cache=False)  # the tokenizer
    items = workload(engine, str(ROOT / "inference/data/replay_support.jsonl"),
                     str(ROOT / "docs/bench/replay160-epyc-trie/results.json"))
    rows = {"lookup": replay(items, cost, "lookup", False),
            "suffix+lookup": replay(items, cost, "suffix+lookup", False),
            "anchored (top 8)": replay(items, cost, None, True),
            "anchored (top 32)": replay(items, cost, None, True, top=32),
            "suffix+lookup, anchored fallback": replay(items, cost, "suffix+lookup", True)}
    base = rows["lookup"]["tokens_per_cost"]
    print(f"{'drafter':<34}{'tok/fwd':>9}{'tok/cost':>10}{'vs lookup':>11}{'anchored steps':>16}{'accepted':>10}")
    for name, row in rows.items():
        print(f"{name:<34}{row['tokens_per_forward']:>9.2f}{row['tokens_per_cost']:>10.2f}"
              f"{row['tokens_per_cost'] / base:>10.2f}x{row['anchored_steps']:>16}{row['anchored_accepted']:>10}")


if __name__ == "__main__":
    main()
