"""Prompt prefix reuse: a stored prompt's KV serves a later prompt that starts the same way,
the reused cache is the right one (same next-token distribution as a fresh prefill), and
speculation with reuse equals plain decoding with reuse, token for token."""

from __future__ import annotations

import pytest
import torch

from inference.engine import Engine
from inference.engine.forward import cache_argument, extend, new_cache
from inference.engine.prefix_cache import PrefixCache, cache_bytes

SYSTEM = "You are Sprocket, the support assistant of a bike shop. Hours: 10-19. Tune-up: $79. " * 2


@pytest.fixture(scope="module")
def int8_engine(tiny_target_dir, tiny_draft_dir) -> Engine:
    return Engine(target=tiny_target_dir, drafter="suffix", device="cpu", dtype="int8", prefix_cache=True)


def prompt(engine, question):
    return engine.encode([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])


def prefilled(engine, ids):
    cache = new_cache(engine.model)
    extend(engine.model, cache_argument(engine.model), cache, ids, start=0, keep=1)
    return cache


def test_it_is_opt_in(int8_engine, tiny_engine):
    assert int8_engine.prefixes is not None and tiny_engine.prefixes is None  # tiny_engine: the default


def test_it_reuses_the_longest_common_prefix_and_hands_out_private_copies(int8_engine):
    prefixes = PrefixCache(min_reuse=8)
    first, second = prompt(int8_engine, "When are you open?"), prompt(int8_engine, "How much is a tune-up?")
    shared = int((first[0, :second.shape[1]] != second[0, :first.shape[1]]).nonzero()[0])
    assert prefixes.lookup(second) == (None, 0)
    prefixes.store(first, prefilled(int8_engine, first))
    cache, reused = prefixes.lookup(second)
    assert reused == shared > len(SYSTEM) // 2 and cache.get_seq_length() == reused
    cache.crop(-(reused - 3))  # the caller's copy: the stored entry is untouched
    again, reused_again = prefixes.lookup(second)
    assert reused_again == shared and again.get_seq_length() == shared
    whole, n = prefixes.lookup(first)  # the same prompt again: all but its last token
    assert n == first.shape[1] - 1
    assert prefixes.lookup(torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13]])) == (None, 0)  # nothing in common


@pytest.mark.parametrize("question", ["How much is a tune-up?", "Tell me everything about tune-ups: " + "price, " * 20],
                         ids=["short tail", "tail wider than the attention row loop"])
def test_a_reused_prefix_gives_the_fresh_prefills_next_token_distribution(int8_engine, question):
    prefixes = PrefixCache(min_reuse=8)
    first, second = prompt(int8_engine, "When are you open?"), prompt(int8_engine, question)
    prefixes.store(first, prefilled(int8_engine, first))
    cache, reused = prefixes.lookup(second)
    model, arg = int8_engine.model, cache_argument(int8_engine.model)
    with torch.inference_mode():
        reused_logits = extend(model, arg, cache, second[:, reused:], start=reused, keep=1)[0, -1]
        fresh_logits = extend(model, arg, new_cache(model), second, start=0, keep=1)[0, -1]
    assert second.shape[1] - reused > 64 or "tune-ups" not in question  # the wide case takes the SDPA path
    assert torch.allclose(reused_logits, fresh_logits, atol=2e-2, rtol=0)  # bf16 activations: ~1e-3 apart
    assert reused_logits.argmax() == fresh_logits.argmax()


def test_the_engine_reuses_prompts_and_stays_lossless(int8_engine):
    int8_engine.prefixes.clear()
    first, second = prompt(int8_engine, "When are you open?"), prompt(int8_engine, "How much is a tune-up?")
    int8_engine.generate_ids(first, max_new_tokens=16, drafter="none")
    plain, plain_stats = int8_engine.generate_ids(second, max_new_tokens=24, drafter="none")
    assert plain_stats.prefix_reused > 0
    for drafter in ("lookup", "suffix"):
        drafted, stats = int8_engine.generate_ids(second, max_new_tokens=24, drafter=drafter)
        assert drafted == plain, drafter
        assert stats.prefix_reused == second.shape[1] - 1  # the very same prompt: all but one token
    assert int8_engine.prefixes.hits >= 3


def test_it_stays_within_its_byte_bound(int8_engine):
    first = prompt(int8_engine, "When are you open?")
    one = cache_bytes(prefilled(int8_engine, first))
    prefixes = PrefixCache(max_bytes=int(2.5 * one), min_reuse=8)
    for i in range(6):
        ids = prompt(int8_engine, f"Question number {i}: do you sell {'bikes ' * i}?")
        prefixes.store(ids, prefilled(int8_engine, ids))
        assert prefixes.bytes <= prefixes.max_bytes
    assert 1 <= len(prefixes) <= 2


def test_a_longer_prompt_replaces_the_entry_it_extends(int8_engine):
    prefixes = PrefixCache(min_reuse=8)
    turn1 = prompt(int8_engine, "When are you open?")
    turn2 = torch.cat((turn1, prompt(int8_engine, "And on Sunday?")[:, -12:]), dim=1)  # turn1, then more
    other = prompt(int8_engine, "Do you repair e-bikes?")
    prefixes.store(turn1, prefilled(int8_engine, turn1))
    prefixes.store(other, prefilled(int8_engine, other))
    prefixes.store(turn2, prefilled(int8_engine, turn2))
    assert len(prefixes) == 2  # turn1 is subsumed by turn2; other stays
    assert prefixes.lookup(turn2)[1] == turn2.shape[1] - 1
