"""Drafter behaviour in isolation: prompt lookup matching and the draft-length policy."""

from __future__ import annotations

import torch

from inference.engine import DRAFTERS, make_drafter
from inference.engine.draft_length import DraftLength
from inference.engine.drafters import PromptLookupDrafter


def propose(drafter, ids: list[int], k: int) -> list[int]:
    draft, probs = drafter.propose(torch.tensor([ids]), k)
    assert probs is None  # deterministic drafter
    return draft.tolist()


def test_lookup_copies_what_followed_the_most_recent_longest_match():
    drafter = PromptLookupDrafter(max_ngram=3)
    drafter.begin(torch.tensor([[1]]))
    #          0  1  2  3  4  5  6  7  8  9 10 11
    ids = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert propose(drafter, ids, 3) == [7, 8, 5]  # the later "1 2 3" wins
    assert propose(drafter, ids + [7, 8, 5, 4], 2) == []  # "5 4", "4" never seen before
    assert propose(drafter, ids + [7, 8, 5, 4, 8], 4) == [5, 4, 8]  # falls back to the 1-gram "8", capped by the end


def test_lookup_index_grows_incrementally_and_resets_per_request():
    drafter = PromptLookupDrafter()
    drafter.begin(torch.tensor([[4, 5, 6]]))
    assert propose(drafter, [4, 5, 6, 4, 5], 2) == [6, 4]
    assert len(drafter.tokens) == 5
    drafter.begin(torch.tensor([[9]]))
    assert propose(drafter, [9, 4, 5], 2) == []  # the previous request is forgotten


def test_the_registry_builds_every_kind(tiny_engine, tiny_draft_dir):
    assert {"none", "lookup", "model"} <= set(DRAFTERS)
    for spec in ("none", "lookup", f"model:{tiny_draft_dir}"):
        drafter = make_drafter(spec, tiny_engine.model, tiny_engine.tokenizer, "cpu", torch.float32)
        assert drafter.name == spec


def test_adaptive_draft_length_grows_on_streaks_and_shrinks_on_rejection():
    policy = DraftLength()
    assert policy.next() == 4
    policy.update(drafted=4, accepted=4)
    assert policy.next() == 6
    for _ in range(10):
        policy.update(drafted=policy.next(), accepted=policy.next())
    assert policy.next() == 16
    policy.update(drafted=16, accepted=2)
    assert policy.next() == 3
    policy.update(drafted=3, accepted=0)
    assert policy.next() == 1


def test_fixed_draft_length_never_moves():
    policy = DraftLength(fixed=5)
    policy.update(drafted=5, accepted=0)
    policy.update(drafted=5, accepted=5)
    assert policy.next() == 5
