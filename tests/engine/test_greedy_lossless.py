"""Greedy speculative decoding is token-identical to transformers' greedy `generate`."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EOS = [2]
DRAFTERS = ["none", "lookup", "model"]


def drafter_spec(name: str, engine) -> str:
    return engine.drafter_spec if name == "model" else name


@st.composite
def repetitive_prompts(draw) -> list[int]:
    """A few motifs repeated with noise in between, so prompt lookup finds n-gram matches."""
    motif = draw(st.lists(st.integers(3, 258), min_size=2, max_size=6))
    noise = st.lists(st.integers(3, 258), max_size=4)
    ids = draw(noise)
    for _ in range(draw(st.integers(1, 4))):
        ids += motif + draw(noise)
    return ids or [5]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=repetitive_prompts(), drafter=st.sampled_from(DRAFTERS), k=st.sampled_from([None, 1, 3, 7]),
       max_new_tokens=st.integers(1, 40))
def test_it_matches_hf_greedy_for_every_drafter_and_draft_length(tiny_engine, hf_greedy, prompt, drafter, k, max_new_tokens):
    input_ids = torch.tensor([prompt])
    tiny_engine.draft_length = k
    try:
        ours, stats = tiny_engine.generate_ids(input_ids, max_new_tokens=max_new_tokens,
                                               drafter=drafter_spec(drafter, tiny_engine), eos_token_ids=EOS)
    finally:
        tiny_engine.draft_length = None
    assert ours == hf_greedy(tiny_engine.model, input_ids, max_new_tokens, EOS)
    assert stats.new_tokens == len(ours) <= max_new_tokens


def test_it_accepts_drafts_and_saves_forwards_while_staying_identical(tiny_engine, hf_greedy):
    """Guards the property test against passing vacuously: drafts are accepted here."""
    input_ids = torch.tensor([[10, 11, 12, 13, 14, 10, 11, 12, 13, 14, 10, 11, 12, 13, 14, 10, 11]])
    reference = hf_greedy(tiny_engine.model, input_ids, 40, EOS)
    for drafter in ("lookup", tiny_engine.drafter_spec):
        ours, stats = tiny_engine.generate_ids(input_ids, max_new_tokens=40, drafter=drafter, eos_token_ids=EOS)
        assert ours == reference
        assert stats.accepted > 0, drafter
        assert stats.target_forwards < stats.new_tokens, drafter
        assert sum(n * count for n, count in enumerate(stats.accepted_hist)) == stats.accepted


def test_it_never_exceeds_max_new_tokens_when_a_step_accepts_many(tiny_engine):
    input_ids = torch.tensor([[10, 11, 12, 13, 14, 10, 11, 12, 13, 14, 10, 11, 12, 13, 14, 10, 11]])
    tiny_engine.draft_length = 12
    try:
        for budget in (1, 2, 5, 9):
            ours, stats = tiny_engine.generate_ids(input_ids, max_new_tokens=budget, drafter="lookup", eos_token_ids=[])
            assert len(ours) == budget
            assert stats.stop_reason == "length"
    finally:
        tiny_engine.draft_length = None
