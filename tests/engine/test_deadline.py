"""A deadline stops generation between target forwards; what was said is a prefix of the reply.

The clock decode.py reads is replaced by one that moves a second per read (it reads it once per
target forward), so "the deadline passes after n forwards" is exact, whatever the machine's speed.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from inference.engine import decode

PROMPT = torch.tensor([[10, 11, 12, 13, 14, 10, 11, 12, 13, 14, 10, 11]])
CHAT = [{"role": "user", "content": "Tell me about bicycles."}]


@pytest.fixture
def clock(monkeypatch):
    """decode.py's clock: 1.0, 2.0, 3.0, ... one second per read."""
    reads = []

    def monotonic():
        reads.append(None)
        return float(len(reads))

    monkeypatch.setattr(decode, "time", SimpleNamespace(perf_counter=time.perf_counter, monotonic=monotonic))
    return reads


def after_forwards(n: int) -> float:
    """A deadline that lets exactly n target forwards start (the n+1-th read is past it)."""
    return n + 0.5


@pytest.mark.parametrize("drafter", ["none", "lookup", "model"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_a_deadline_stops_the_reply_after_the_forwards_it_allows(tiny_engine, clock, drafter, temperature):
    spec = tiny_engine.drafter_spec if drafter == "model" else drafter
    kwargs = dict(max_new_tokens=40, temperature=temperature, seed=7, drafter=spec, eos_token_ids=[])
    full, full_stats = tiny_engine.generate_ids(PROMPT, **kwargs)
    assert len(full) == 40 and full_stats.stop_reason == "length"
    for forwards in (1, 2, 3):
        clock.clear()
        cut, stats = tiny_engine.generate_ids(PROMPT, deadline=after_forwards(forwards), **kwargs)
        assert stats.target_forwards == forwards and stats.stop_reason == "time"
        assert 0 < len(cut) < len(full) and cut == full[:len(cut)]
        assert stats.new_tokens == len(cut)


def test_a_deadline_passed_before_the_prompt_is_read_says_nothing(tiny_engine):
    ids, stats = tiny_engine.generate_ids(PROMPT, max_new_tokens=40, deadline=time.monotonic(), eos_token_ids=[])
    assert ids == [] and stats.stop_reason == "time" and stats.target_forwards == 0


def test_a_deadline_that_does_not_pass_changes_no_token(tiny_engine, hf_greedy):
    for drafter in ("none", "lookup", tiny_engine.drafter_spec):
        ids, stats = tiny_engine.generate_ids(PROMPT, max_new_tokens=40, drafter=drafter, eos_token_ids=[2],
                                              deadline=time.monotonic() + 3600)
        assert ids == hf_greedy(tiny_engine.model, PROMPT, 40, [2])
        assert stats.stop_reason != "time"


def test_the_streamed_reply_stops_at_the_deadline_too(tiny_engine, clock):
    full = tiny_engine.generate(CHAT, max_new_tokens=40, drafter="none")
    assert len(full.token_ids) > 5, full.token_ids  # the random model did not end at once
    clock.clear()
    cut = tiny_engine.generate(CHAT, max_new_tokens=40, drafter="none", deadline=after_forwards(5))
    assert cut.stats.stop_reason == "time" and cut.token_ids == full.token_ids[:5]  # one token per forward
    clock.clear()
    assert "".join(tiny_engine.stream(CHAT, max_new_tokens=40, drafter="none", deadline=after_forwards(5))) == cut.text
