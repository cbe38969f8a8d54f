"""Prompt prefix reuse: a stored prompt's KV serves a later prompt that starts the same way,
in whole prefill chunks, and is exact: the cache and logits after a reused prefix are a
fresh prefill's bit for bit, so replies never depend on which prompts came before."""

from __future__ import annotations

import random

import pytest
import torch

from inference.engine import Engine
from inference.engine.forward import PREFILL_CHUNK, cache_argument, extend, new_cache, prefill
from inference.engine.loading import BUNDLED_TARGET, load_model
from inference.engine.precision import dense_prefill
from inference.engine.prefix_cache import PrefixCache, cache_bytes

SYSTEM = "You are Sprocket, the support assistant of a bike shop. Hours: 10-19. Tune-up: $79. " * 2
QUESTIONS = ["When are you open?", "How much is a tune-up?", "Do you repair e-bikes?",
             "Tell me everything about tune-ups: " + "price, " * 20]


@pytest.fixture(scope="module")
def int8_engine(tiny_target_dir) -> Engine:
    return Engine(target=tiny_target_dir, drafter="suffix", device="cpu", dtype="int8")


def prompt(engine, question, system=SYSTEM):
    return engine.encode([{"role": "system", "content": system}, {"role": "user", "content": question}])


def prefilled(engine, ids):
    cache = new_cache(engine.model)
    with torch.inference_mode():
        prefill(engine.model, cache_argument(engine.model), cache, ids)
    return cache


def same_cache(a, b) -> bool:
    return a.get_seq_length() == b.get_seq_length() and all(
        torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values) for x, y in zip(a.layers, b.layers))


def test_it_is_on_by_default(int8_engine, tiny_target_dir):
    assert int8_engine.prefixes is not None
    assert Engine(target=tiny_target_dir, drafter="none", device="cpu", prefix_cache=False).prefixes is None


def test_it_reuses_whole_chunks_of_the_longest_common_prefix_as_private_copies(int8_engine):
    prefixes = PrefixCache()
    first, second = prompt(int8_engine, QUESTIONS[0]), prompt(int8_engine, QUESTIONS[1])
    shared = int((first[0, :second.shape[1]] != second[0, :first.shape[1]]).nonzero()[0])
    assert shared > PREFILL_CHUNK and shared % PREFILL_CHUNK  # the test needs a partial chunk to drop
    assert prefixes.lookup(second) == (None, 0)
    prefixes.store(first, prefilled(int8_engine, first))
    cache, reused = prefixes.lookup(second)
    assert reused == shared - shared % PREFILL_CHUNK and cache.get_seq_length() == reused
    cache.crop(-(reused - 3))  # the caller's copy: the stored entry is untouched
    again, reused_again = prefixes.lookup(second)
    assert reused_again == reused and again.get_seq_length() == reused
    short = torch.arange(5, 5 + PREFILL_CHUNK)[None]  # one chunk exactly: one token must be left to feed
    prefixes.store(short, prefilled(int8_engine, short))
    assert prefixes.lookup(short) == (None, 0)
    assert prefixes.lookup(torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13]])) == (None, 0)


@pytest.mark.parametrize("precision", ["fp32", "int8", "int4"])
def test_a_reused_prefix_gives_the_fresh_prefills_cache_and_logits_bit_for_bit(tiny_target_dir, precision):
    engine = Engine(target=tiny_target_dir, drafter="none", device="cpu", dtype=precision)
    model, arg = engine.model, cache_argument(engine.model)
    prefixes = PrefixCache()
    prefixes.store(prompt(engine, QUESTIONS[0]), prefilled(engine, prompt(engine, QUESTIONS[0])))
    for question in QUESTIONS[1:]:  # the last tail is wider than the verify row loop
        ids = prompt(engine, question)
        cache, reused = prefixes.lookup(ids)
        assert reused >= PREFILL_CHUNK
        with torch.inference_mode():
            reused_logits = prefill(model, arg, cache, ids[:, reused:], start=reused)
            fresh = new_cache(model)
            fresh_logits = prefill(model, arg, fresh, ids)
        assert torch.equal(reused_logits, fresh_logits) and same_cache(cache, fresh), question


def test_on_the_bundled_model_too_and_one_unchunked_pass_would_not_be():
    """The bundled target at int4 (bf16 prompt copies) and fp32: reuse at a chunk boundary is
    exact; encoding the same prompt in one pass instead is not (what the chunks are for)."""
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(100, 20000, (1, PREFILL_CHUNK * 2 + 37), generator=gen)
    for precision in ("int4", "fp32"):
        model, _ = load_model(BUNDLED_TARGET, device="cpu", dtype=precision)
        arg = cache_argument(model)
        with torch.inference_mode():
            fresh = new_cache(model)
            fresh_logits = prefill(model, arg, fresh, ids)
            shared = new_cache(model)
            prefill(model, arg, shared, ids[:, :PREFILL_CHUNK * 2])
            reused_logits = prefill(model, arg, shared, ids[:, PREFILL_CHUNK * 2:], start=PREFILL_CHUNK * 2)
            with dense_prefill():
                one_pass = extend(model, arg, new_cache(model), ids, start=0, keep=1)
        assert torch.equal(reused_logits, fresh_logits) and same_cache(shared, fresh), precision
        if precision == "int4":
            assert not torch.equal(one_pass, fresh_logits)


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_replies_do_not_depend_on_the_prompts_before_them(tiny_target_dir, precision):
    """Random orders of prompts sharing a system prompt (and a conversation's growing
    history), random drafters: every reply equals plain decoding without a prefix cache."""
    cold = Engine(target=tiny_target_dir, drafter="none", device="cpu", dtype=precision, prefix_cache=False)
    warm = Engine(target=tiny_target_dir, drafter="suffix", device="cpu", dtype=precision)
    turn = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[0]},
            {"role": "assistant", "content": "We open at ten and close at seven, every day but Sunday."},
            {"role": "user", "content": "And on Sunday?"}]
    prompts = [prompt(warm, q) for q in QUESTIONS] + [warm.encode(turn), prompt(warm, "Hi", system="Other shop.")]
    expected = [cold.generate_ids(ids, max_new_tokens=24)[0] for ids in prompts]
    rng = random.Random(precision)
    reused = 0
    for _ in range(3):
        order = rng.sample(range(len(prompts)), len(prompts))
        for i in order:
            drafter = rng.choice(["none", "lookup", "suffix"])
            reply, stats = warm.generate_ids(prompts[i], max_new_tokens=24, drafter=drafter)
            assert reply == expected[i], (i, drafter)
            reused += stats.prefix_reused
            warm.remember("bot-1", reply)
    assert reused > 0 and warm.prefixes.hits > 0


def test_it_stays_within_its_byte_bound(int8_engine):
    first = prompt(int8_engine, QUESTIONS[0])
    whole = first.shape[1] - first.shape[1] % PREFILL_CHUNK
    one = cache_bytes(prefilled(int8_engine, first[:, :whole]))
    prefixes = PrefixCache(max_bytes=int(2.5 * one))
    for i in range(6):
        ids = prompt(int8_engine, f"Question number {i}: do you sell {'bikes ' * i}?", system=f"Shop {i}. " + SYSTEM)
        prefixes.store(ids, prefilled(int8_engine, ids))
        assert prefixes.bytes <= prefixes.max_bytes
    assert 1 <= len(prefixes) <= 2


def test_a_longer_prompt_replaces_the_entry_it_extends(int8_engine):
    prefixes = PrefixCache()
    turn1 = prompt(int8_engine, QUESTIONS[0])
    turn2 = torch.cat((turn1, prompt(int8_engine, "And on Sunday? " * 10)[:, -PREFILL_CHUNK:]), dim=1)
    other = prompt(int8_engine, "Hi", system="Another shop entirely. " * 8)
    prefixes.store(turn1, prefilled(int8_engine, turn1))
    prefixes.store(other, prefilled(int8_engine, other))
    prefixes.store(turn2, prefilled(int8_engine, turn2))
    assert len(prefixes) == 2  # turn1 is subsumed by turn2; other stays
    n = turn2.shape[1] - 1
    assert prefixes.lookup(turn2)[1] == n - n % PREFILL_CHUNK > turn1.shape[1] - turn1.shape[1] % PREFILL_CHUNK
    assert prefixes.lookup(other)[1] == PREFILL_CHUNK  # still there
