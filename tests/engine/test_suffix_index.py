"""The suffix automaton, the per-namespace index and the suffix drafter's proposals (no model)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.engine.drafters.suffix import SEP, SuffixAutomaton, SuffixDrafter, SuffixIndex, SuffixMemory

QUESTION = [40, 41, 42, 43, 44, 2, 1, 50]  # "...?<|im_end|>\n<|im_start|>assistant\n", tokenised
REPLY = [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 2]
OTHER_REPLY = [90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 2]


def is_prefix(draft: list[int], of: list[int]) -> bool:
    return 0 < len(draft) and draft == of[:len(draft)]


def propose(drafter: SuffixDrafter, index: SuffixIndex | None, context: list[int], k: int = 32) -> list[int]:
    drafter.set_index(index)
    ids = torch.tensor([context])
    drafter.begin(ids)
    return drafter.propose(ids, k)[0].tolist()


@settings(max_examples=60, deadline=None)
@given(text=st.lists(st.integers(0, 3), max_size=40), pattern=st.lists(st.integers(0, 3), min_size=1, max_size=5))
def test_it_counts_every_substring_like_brute_force(text, pattern):
    sam = SuffixAutomaton(text)
    brute = sum(text[i:i + len(pattern)] == pattern for i in range(len(text) - len(pattern) + 1))
    state = sam.find(pattern)
    assert (state is None) == (brute == 0)
    if state is not None:
        assert sam.counts()[state] == brute
    assert sam.states <= max(2 * len(text), 1)


@settings(max_examples=60, deadline=None)
@given(text=st.lists(st.integers(0, 3), min_size=1, max_size=40), more=st.lists(st.integers(0, 3), max_size=12),
       slack=st.integers(0, 12))
def test_counts_with_slack_are_exact_once_the_text_outgrows_it(text, more, slack):
    """counts(slack) may reuse counts up to `slack` tokens old (new states counted once, every
    state has one), and recounts exactly past that; counts() is always exact."""
    sam = SuffixAutomaton(text)
    sam.counts()
    for token in more:
        sam.append(token)
    exact = SuffixAutomaton(text + more).counts()
    lazy = sam.counts(slack=slack)
    assert len(lazy) == sam.states and all(c >= 1 for c in lazy[1:])
    if len(more) > slack:
        assert lazy == exact
    assert sam.counts() == exact


@settings(max_examples=60, deadline=None)
@given(text=st.lists(st.integers(0, 3), max_size=30), context=st.lists(st.integers(0, 3), max_size=30))
def test_it_tracks_the_longest_suffix_of_the_context_that_occurs(text, context):
    sam = SuffixAutomaton(text)
    state, matched = 0, 0
    for i, token in enumerate(context):
        state, matched = sam.step(state, matched, token)
        seen = context[:i + 1]
        longest = max((n for n in range(len(seen) + 1)
                       if any(text[j:j + n] == seen[len(seen) - n:] for j in range(len(text) - n + 1))), default=0)
        assert matched == longest


def test_it_proposes_the_bots_earlier_reply_after_a_repeated_question():
    index = SuffixIndex()
    index.add(OTHER_REPLY, [30, 31, 2, 1, 50])
    index.add(REPLY, QUESTION)
    drafter = SuffixDrafter()
    context = [7, 8, 9] + QUESTION
    draft = propose(drafter, index, context)
    assert is_prefix(draft, REPLY) and len(draft) >= 8  # past the adaptive k of other drafters (4)
    context += draft  # all accepted: the match grows, so does the next draft
    more = drafter.propose(torch.tensor([context]), 32)[0].tolist()
    assert len(more) > len(draft) or draft + more == REPLY
    assert draft + more == REPLY  # the whole reply, EOS included, in two proposals


def test_it_follows_the_continuation_seen_most_often():
    index = SuffixIndex()
    for tail in ([70, 71, 72, 73], [80, 81, 82, 83], [70, 71, 72, 73]):
        index.add([60, 61, 62, 63] + tail)
    assert propose(SuffixDrafter(), index, [5, 60, 61, 62, 63]) == [70, 71, 72, 73]


def test_it_drafts_longer_as_the_match_grows_and_nothing_without_a_match():
    index = SuffixIndex()
    index.add(list(range(100, 160)))
    drafter = SuffixDrafter(min_match=2)
    assert propose(drafter, index, [1, 2, 3]) == []
    assert propose(drafter, index, [1, 100]) == []  # one token is no match
    short = propose(drafter, index, [1, 100, 101])
    long = propose(drafter, index, [1] + list(range(100, 110)))
    assert is_prefix(short, list(range(102, 160))) and len(short) <= 4
    assert is_prefix(long, list(range(110, 160))) and len(long) > 2 * len(short)


def test_it_cuts_drafts_where_verifying_more_stops_paying():
    index = SuffixIndex()
    for tail in ([70, 71, 72, 73, 74, 75], [80, 81, 82, 83, 84, 85], [70, 71, 72, 73, 74, 75]):
        index.add([60, 61, 62, 63] + tail)  # after 60..63: 70.. twice, 80.. once: P_i = 2/3 x 0.8^i
    context = [5, 60, 61, 62, 63]
    drafter = SuffixDrafter()
    full = propose(drafter, index, context)  # no cost known: as long as the walk's probability allows
    assert full == [70, 71, 72, 73]
    drafter.set_cost(lambda n: 1.0)  # verification free: nothing to cut
    assert propose(drafter, index, context) == full
    drafter.set_cost(lambda n: 1.0 + 0.3 * n)  # each draft token costs 0.3 of a step: P_i < ~0.3 does not pay
    assert propose(drafter, index, context) == full[:2]
    drafter.set_cost(lambda n: 1.0 + 2.0 * n)  # drafting never pays
    assert propose(drafter, index, context) == []


def test_it_drafts_from_the_conversation_itself_without_a_namespace():
    context = [9, 20, 21, 22, 23, 24, 25, 26, 8, 20, 21, 22]
    assert propose(SuffixDrafter(), None, context, k=4) == [23, 24, 25, 26]


def test_it_never_proposes_another_namespaces_text():
    memory = SuffixMemory()
    memory.remember("bot-a", REPLY, QUESTION)
    memory.remember("bot-b", OTHER_REPLY, QUESTION)
    drafter = SuffixDrafter()
    assert is_prefix(propose(drafter, memory.get("bot-a"), QUESTION), REPLY)
    assert is_prefix(propose(drafter, memory.get("bot-b"), QUESTION), OTHER_REPLY)
    assert propose(drafter, memory.get("bot-c"), QUESTION) == []
    assert set(memory.get("bot-a").automaton.tokens).isdisjoint(set(OTHER_REPLY) - {2})


def test_it_stays_within_its_memory_bound_and_evicts_the_oldest_replies():
    index = SuffixIndex(max_tokens=500)
    for i in range(200):
        index.add([1000 + i] * 3 + [i % 7, 2], [500 + i])
        assert index.tokens <= 500
        assert len(index.automaton) == index.tokens <= 500
        assert index.automaton.states <= 2 * index.tokens
    assert index.automaton.find([1000 + 199]) is not None  # the newest is kept
    assert index.automaton.find([1000]) is None  # the oldest went
    assert index.entries[-1][-1] == SEP


def test_it_forgets_least_recently_used_namespaces_beyond_its_bound():
    memory = SuffixMemory(max_namespaces=2)
    memory.remember("bot-1", REPLY)
    memory.remember("bot-2", REPLY)
    memory.get("bot-1")
    memory.remember("bot-3", REPLY)
    assert "bot-1" in memory and "bot-3" in memory and "bot-2" not in memory


def test_it_rebuilds_a_namespace_from_stored_pairs():
    memory = SuffixMemory()
    memory.remember("bot-a", OTHER_REPLY)
    memory.rebuild("bot-a", [(REPLY, QUESTION)])
    assert is_prefix(propose(SuffixDrafter(), memory.get("bot-a"), QUESTION), REPLY)
    assert memory.get("bot-a").replies == 1
