"""The bundled SmolLM2-135M: speculative greedy output equals transformers' greedy generate."""

from __future__ import annotations

import pytest

PROMPTS = [
    [{"role": "system", "content": "You answer for Acme. Facts: the Acme Widget Pro costs $49 and ships in 3 days. "
                                   "Refunds are accepted within 30 days."},
     {"role": "user", "content": "How much is the Acme Widget Pro and how fast does it ship?"}],
    [{"role": "user", "content": "What is the capital of France?"}],
]


@pytest.mark.parametrize("prompt", PROMPTS, ids=["knowledge", "short"])
def test_lookup_and_none_match_hf_generate(bundled_engine, hf_greedy, prompt):
    input_ids = bundled_engine.encode(prompt)
    reference = hf_greedy(bundled_engine.model, input_ids, 32, bundled_engine.eos_token_ids)
    for drafter in ("none", "lookup"):
        ids, stats = bundled_engine.generate_ids(input_ids, max_new_tokens=32, drafter=drafter)
        assert ids == reference, drafter
        assert stats.drafter == drafter


def test_lookup_accepts_drafts_when_the_reply_quotes_the_prompt(bundled_engine):
    _, stats = bundled_engine.generate_ids(bundled_engine.encode(PROMPTS[0]), max_new_tokens=32, drafter="lookup")
    assert stats.accepted > 0
    assert stats.target_forwards < stats.new_tokens
    assert stats.as_dict()["accepted_hist"] == stats.accepted_hist
