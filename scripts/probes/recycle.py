"""Probe: would the target's own earlier predictions (Token Recycling) add to suffix drafting?

    .venv/bin/python scripts/probes/recycle.py [REPLIES.json]   # a few minutes on a 2-core CPU

Token Recycling (Luo et al., 2024, "Turning Trash into Treasure") keeps, per token t, the
target's top-k next tokens from the last forward whose input held t (an adjacency matrix
V x k, overwritten every step), and drafts a tree from it. It needs no training and covers
what a copy drafter cannot: a context never seen before whose single last token the target has
already predicted after.

Offline like `copy_bound.py`: the target's fixed greedy replies to the replay's 160 messages
(REPLIES.json: a replay's results.json, default the seventh session's fp32 run), one stock fp32
forward over each prompt + reply for the target's top-k at every position (the logits a verify
would produce at the positions that turn out right; the rejected draft positions' logits, which
the real method also recycles, are left out). Drafters are replayed with a free verify (drafts
never cut) and the table gives tokens per target forward, drafted nodes per step, and tokens per
unit of verify cost under this CPU's int4a8 c(n) (measured in the run; past 31 nodes extrapolated
linearly; the drafts are not cut to it, and drafting time and the top-k per verify are left out).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "probes"))

from copy_bound import workload  # noqa: E402
from inference.engine import Engine  # noqa: E402
from inference.engine.drafters import make_drafter  # noqa: E402
from inference.engine.drafters.suffix import SuffixMemory  # noqa: E402
from inference.engine.verify import accepted_length  # noqa: E402

TOP = 8


def predictions(engine: Engine, items) -> list[torch.Tensor]:
    """Per message: ([len(prompt) + len(reply), TOP] the target's top-k after each position, their probabilities)."""
    model = engine.model
    out = []
    with torch.inference_mode():
        for _, prompt, reply, _ in items:
            ids = torch.tensor([prompt + reply])
            logits = model(input_ids=ids).logits[0]
            top = logits.float().softmax(-1).topk(TOP, dim=-1)
            out.append((top.indices, top.values))
    return out


def recycle_tree(adjacency: dict, last: int, widths: list[int]) -> tuple[list[int], list[int]]:
    """Breadth-first from `last`: depth d's nodes each take the first widths[d] of their token's row."""
    draft, parents, frontier = [], [], [(-1, last)]
    for width in widths:
        nxt = []
        for node, token in frontier:
            for child in adjacency.get(token, [])[:width]:
                draft.append(child)
                parents.append(node)
                nxt.append((len(draft) - 1, child))
        frontier = nxt
        if not frontier:
            break
    return draft, parents


def replay(items, tops, spec: str | None, widths: list[int] | None, prompt_rows: bool,
           fallback_only: bool = True, scope: str = "global", cost=None) -> dict:
    drafter = make_drafter(spec, None, None, torch.device("cpu"), torch.float32) if spec else None
    memory = SuffixMemory()
    tables: dict = {}
    buckets = [[0, 0] for _ in range(10)]  # stored top-1 probability of the first recycled token -> [right, drafted]
    spent = 0.0
    tokens = forwards = nodes = recycled_steps = recycled_accepted = 0
    for (bot, prompt, reply, question), (top, prob) in zip(items, tops):
        adjacency = tables.setdefault({"global": None, "bot": bot, "request": len(tables)}[scope], {})
        confidence = tables.setdefault(("p", {"global": None, "bot": bot, "request": len(tables)}[scope]), {})
        if prompt_rows:  # the prefill's logits recycled too
            for p in range(len(prompt) - 1):
                adjacency[prompt[p]] = top[p].tolist()
                confidence[prompt[p]] = float(prob[p, 0])
        adjacency[prompt[-1]] = top[len(prompt) - 1].tolist()
        confidence[prompt[-1]] = float(prob[len(prompt) - 1, 0])
        if drafter is not None:
            if hasattr(drafter, "set_index"):
                drafter.set_index(memory.get(f"bot-{bot}"))
            if hasattr(drafter, "set_cost"):
                drafter.set_cost(None)
            drafter.begin(torch.tensor([prompt]))
        seq, produced = list(prompt) + reply[:1], 1
        forwards += 1
        spent += 1.0
        while produced < len(reply):
            draft, parents = [], []
            if drafter is not None:
                draft = drafter.propose(torch.tensor([seq]), 32)[0].tolist()
                parents = list(range(-1, len(draft) - 1))
            used = False
            if widths and (not draft or not fallback_only):
                extra, extra_parents = recycle_tree(adjacency, seq[-1], widths)
                offset = len(draft)
                draft += extra
                parents += [p + offset if p >= 0 else -1 for p in extra_parents]
                used = bool(extra)
                if extra and offset == 0:
                    b = min(int(confidence[seq[-1]] * 10), 9)
                    buckets[b][1] += 1
                    buckets[b][0] += extra[0] == reply[produced]
            a = accepted_length(draft, parents, reply[produced:])
            if used:
                recycled_steps += 1
                recycled_accepted += a
            nodes += len(draft)
            spent += cost(len(draft)) if cost else 1.0
            emitted = min(a + 1, len(reply) - produced)
            # the verify's logits at the positions that turned out right: the last token and the accepted ones
            for q in range(len(prompt) + produced - 1, len(prompt) + produced - 1 + emitted):
                adjacency[(prompt + reply)[q]] = top[q].tolist()
                confidence[(prompt + reply)[q]] = float(prob[q, 0])
            seq += reply[produced:produced + emitted]
            produced += emitted
            forwards += 1
            if drafter is not None:
                drafter.update(a, torch.tensor([seq]))
        tokens += len(reply)
        memory.remember(f"bot-{bot}", reply, question)
    return {"tokens_per_forward": round(tokens / forwards, 3), "nodes_per_step": round(nodes / forwards, 2),
            "tokens_per_cost": round(tokens / spent, 3),
            "recycled_steps": recycled_steps, "recycled_accepted_per_step":
            round(recycled_accepted / max(recycled_steps, 1), 3),
            "by_confidence": [f"{r / max(d, 1):.2f}/{d}" for r, d in buckets]}


VARIANTS = [  # label, drafter spec, recycled tree widths per depth, prompt rows recycled, only where spec drafts nothing, table scope
    ("lookup", "lookup", None, False, True, "global"),
    ("suffix", "suffix", None, False, True, "global"),
    ("recycle chain 8", None, [1] * 8, True, True, "global"),
    ("recycle tree 8,4,2,1x5", None, [8, 4, 2, 1, 1, 1, 1, 1], True, True, "global"),
    ("suffix, else recycle chain 1", "suffix", [1], True, True, "global"),
    ("suffix, else recycle chain 1, per bot", "suffix", [1], True, True, "bot"),
    ("suffix, else recycle chain 1, per request", "suffix", [1], True, True, "request"),
    ("suffix, else recycle chain 2, per bot", "suffix", [1, 1], True, True, "bot"),
    ("suffix, else recycle tree 2,1, per bot", "suffix", [2, 1], True, True, "bot"),
    ("suffix + recycle tree 8,4,2,1x5", "suffix", [8, 4, 2, 1, 1, 1, 1, 1], True, False, "global"),
    ("suffix + recycle tree 8,4,2,1x5, per bot", "suffix", [8, 4, 2, 1, 1, 1, 1, 1], True, False, "bot"),
]


def main() -> None:
    from inference.engine.verify_cost import measure_verify_cost

    replies = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "docs/bench/replay160-epyc-trie/results.json")
    torch.set_num_threads(2)
    engine = Engine(drafter="none", dtype="fp32")
    items = workload(engine, str(ROOT / "inference/data/replay_support.jsonl"), replies)
    tops = predictions(engine, items)
    # this CPU's int4a8 verify cost, for tokens per unit of verify cost (drafting time and top-k left out)
    cost = measure_verify_cost(Engine(drafter="none", dtype="int4a8").model, ks=(0, 1, 2, 3, 7, 15, 31))
    print("c_verify int4a8:", dict(zip(cost.ks, (round(c, 3) for c in cost.relative))))
    print(f"{'drafter':<44}{'tok/fwd':>8}{'nodes':>8}{'tok/cost':>9}{'recycled':>9}{'acc/rec':>8}  first recycled token right, by stored p")
    rows = []
    for label, spec, widths, prompt_rows, fallback, scope in VARIANTS:
        result = replay(items, tops, spec, widths, prompt_rows, fallback, scope, cost)
        rows.append({"drafter": label, **result})
        print(f"{label:<44}{result['tokens_per_forward']:>8.3f}{result['nodes_per_step']:>8.2f}"
              f"{result['tokens_per_cost']:>9.3f}{result['recycled_steps']:>9}{result['recycled_accepted_per_step']:>8.3f}"
              f"  {' '.join(result['by_confidence'])}", flush=True)
    print(json.dumps({"c_verify_int4a8": dict(zip(cost.ks, cost.relative)), "rows": rows}))


if __name__ == "__main__":
    main()
