"""How far drafting could go on a replayed workload: tokens per target forward if verifying were free.

Greedy decoding makes this exact without running the target: its replies are fixed (the
replay recorded them), so a drafter can be replayed offline against them — propose, accept
the longest prefix of the draft (the deepest path of a tree) that the recorded reply
continues with, move on by that + 1 (the target's own token), one target forward per step,
as decode.py does. Free verification means drafts are never cut: every drafter drafts up to
32 tokens (tree nodes) a step, and what the real run measured beside it shows how much its
machine's verify cost took away.

Two bounds need no drafter at all. At every step, the longest run of the reply's next tokens
that occurs somewhere a copy drafter may read from:
    conversation  the prompt and the reply so far (all prompt lookup reads);
    memory        that, or the bot's memory (its earlier replies after their questions, the
                  suffix index's entries).
A drafter that copies (lookup; suffix chains, trees or wide trees: every draft path is a run
of its sources) accepts at most that much per step, so `memory` bounds all of them, however
they choose — a clairvoyant chooser reaches it.

    rows = headroom(messages, ["lookup", "suffix", "suffix:wide"])
    print(format_headroom(rows, measured={"lookup": 1.49, ...}))

`messages`: dicts {"bot", "prompt": [ids], "reply": [ids: what the target generated, EOS
included if it ended the reply], "question": [ids the engine remembers the reply after]},
in replay order. Draft models and `recycle` are not replayed (they would need the target's
forwards, and the draft's); their methods are skipped.
"""

from __future__ import annotations

import torch

from .drafters import make_drafter
from .drafters.suffix import SuffixAutomaton, SuffixMemory
from .verify import accepted_length

FREE_DRAFT = 32  # drafted tokens (tree nodes) per step when verifying costs nothing
BOUNDS = ("conversation", "memory")


def replayable(method: str) -> bool:
    """Methods whose drafts depend on nothing but the tokens (no draft model, no recycled
    predictions, no plain loop)."""
    spec = method.removesuffix("/fresh")
    parts = [part.partition(":")[0] for part in spec.partition("model:")[0].split("+")]
    return spec not in ("none", "hf_plain") and "model:" not in spec and not {"draft", "recycle"} & set(parts)


def free_tokens_per_forward(method: str, messages: list[dict], max_new_tokens: int) -> float:
    """Replay `method`'s drafter over the recorded replies, drafts never cut: new tokens per
    target forward, the prefill's forward included (as the replay's own count)."""
    memory = SuffixMemory()
    drafter = make_drafter(method.removesuffix("/fresh"), None, None, "cpu", torch.float32)
    tokens = forwards = 0
    for message in messages:
        prompt, reply = message["prompt"], message["reply"]
        namespace = f"bot-{message['bot']}"
        if hasattr(drafter, "set_index"):
            drafter.set_index(memory.get(namespace))
        if hasattr(drafter, "set_cost"):
            drafter.set_cost(None)  # nothing to weigh a draft against: keep every token
        ids = torch.tensor([prompt + reply])
        drafter.begin(ids[:, :len(prompt)])
        produced = 1  # the prefill's forward gives the first token
        forwards += 1
        while produced < len(reply):
            k = min(FREE_DRAFT, max_new_tokens - produced - 1)
            length = len(prompt) + produced
            if k <= 0:
                draft, parents = [], []
            elif drafter.drafts_trees:
                draft_ids, parents = drafter.propose_tree(ids[:, :length], k)
                draft, parents = draft_ids.tolist()[:k], parents[:k]
            else:
                draft = drafter.propose(ids[:, :length], k)[0].tolist()[:k]
                parents = list(range(-1, len(draft) - 1))
            accepted = accepted_length(draft, parents, reply[produced:])
            produced += accepted + 1
            drafter.update(accepted, ids[:, :min(len(prompt) + produced, ids.shape[1])])
            forwards += 1
        tokens += len(reply)
        memory.remember(namespace, reply, message["question"])
    return tokens / forwards if forwards else 0.0


def _longest_run(automaton: SuffixAutomaton, tokens: list[int]) -> int:
    """Length of the longest prefix of `tokens` that occurs in the automaton's text."""
    state, n = 0, 0
    for token in tokens:
        state = automaton.next[state].get(token)
        if state is None:
            break
        n += 1
    return n


def copy_bound(messages: list[dict], sources: str, max_new_tokens: int) -> float:
    """Tokens per forward of a clairvoyant copier (module docstring): each step copies the longest
    run of the reply's next tokens found in its sources, then the target adds one."""
    memory = SuffixMemory()
    tokens = forwards = 0
    for message in messages:
        prompt, reply = message["prompt"], message["reply"]
        namespace = f"bot-{message['bot']}"
        index = memory.get(namespace).automaton if sources == "memory" else None
        conversation = SuffixAutomaton(prompt + reply[:1])
        produced = 1
        forwards += 1
        while produced < len(reply):
            room = min(FREE_DRAFT, max_new_tokens - produced - 1, len(reply) - produced)
            ahead = reply[produced:produced + max(room, 0)]
            run = max(_longest_run(conversation, ahead), _longest_run(index, ahead) if index is not None else 0)
            for token in reply[produced:produced + run + 1]:
                conversation.append(token)
            produced += run + 1
            forwards += 1
        tokens += len(reply)
        memory.remember(namespace, reply, message["question"])
    return tokens / forwards if forwards else 0.0


def headroom(messages: list[dict], methods: list[str], max_new_tokens: int) -> dict:
    """{"free": {method: tokens per forward with free verification}, "bounds": {source: ...}}."""
    seen, free = set(), {}
    for method in methods:
        spec = method.removesuffix("/fresh")
        if replayable(method) and spec not in seen:
            seen.add(spec)
            free[spec] = round(free_tokens_per_forward(spec, messages, max_new_tokens), 4)
    bounds = {source: round(copy_bound(messages, source, max_new_tokens), 4) for source in BOUNDS}
    return {"free": free, "bounds": bounds, "max_draft": FREE_DRAFT}


def format_headroom(result: dict, measured: dict[str, float | None] | None = None) -> str:
    """The headroom as lines under the replay table; `measured`: the run's own tokens per forward."""
    measured = measured or {}
    lines = [f"drafting headroom: tokens per target forward if verifying were free (drafts up to "
             f"{result['max_draft']}, never cut; exact offline replay of the recorded replies)",
             f"  {'method':<16}{'measured':>10}{'free verify':>13}"]
    for method, value in result["free"].items():
        here = measured.get(method)
        lines.append(f"  {method:<16}{'-' if here is None else f'{here:.2f}':>10}{value:>13.2f}")
    bounds = result["bounds"]
    lines.append(f"  copy bound, conversation only (any lookup): {bounds['conversation']:.2f}; "
                 f"with the bot's memory (any copy drafter): {bounds['memory']:.2f}")
    base = result["free"].get("lookup")
    if base:
        best, value = max(result["free"].items(), key=lambda item: item[1])
        lines.append(f"  free verify, best / lookup: {value / base:.2f}x ({best}); "
                     f"the memory bound / lookup: {bounds['memory'] / base:.2f}x")
    return "\n".join(lines)
