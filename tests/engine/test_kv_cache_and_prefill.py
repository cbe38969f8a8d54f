"""The preallocated KV cache (forward.PreallocatedLayer), the dense bf16 prefill of
quantised linears (inside attention.prompt_pass) and the fused q/k/v and gate/up linears
(precision.fuse_shared_input_linears): same keys, values and tokens as the simple way,
without its copies and calls."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from inference.engine import Engine, EngineError
from inference.engine.attention import prompt_pass
from inference.engine.forward import PreallocatedLayer, cache_argument, crop, extend, new_cache, prefill
from inference.engine.loading import release_model
from inference.engine import precision as precision_module
from inference.engine.precision import (Int4Linear, Int8Linear, SharedInputMember, apply_precision,
                                        keep_dense_weights, resolve_precision)

GEN = torch.Generator().manual_seed(3)
PROMPT = torch.randint(3, 259, (1, 40), generator=GEN)
STEPS = torch.randint(3, 259, (1, 30), generator=GEN)


def run(model, cache) -> tuple[list[torch.Tensor], DynamicCache]:
    """Prefill PROMPT, then a mix of verify-like forwards and roll-backs; the logits of each."""
    arg = cache_argument(model)
    logits = [extend(model, arg, cache, PROMPT, 0, keep=1)]
    length = PROMPT.shape[1]
    for width, keep_tokens in ((1, 1), (5, 2), (1, 1), (9, 9), (3, 0), (7, 4)):
        x = STEPS[:, :width]
        logits.append(extend(model, arg, cache, x, length, keep=width))
        length += keep_tokens
        crop(cache, length)
    return logits, cache


@pytest.fixture(scope="module")
def tiny_model(tiny_target_dir):
    return Engine(target=tiny_target_dir, drafter="none", device="cpu", dtype="fp32").model


@pytest.mark.parametrize("capacity", [0, 8, 200], ids=["grow-from-empty", "grow-by-doubling", "one-allocation"])
def test_the_preallocated_cache_holds_what_a_dynamic_cache_holds(tiny_model, capacity):
    with torch.inference_mode():
        expected_logits, expected = run(tiny_model, DynamicCache(config=tiny_model.config))
        logits, cache = run(tiny_model, new_cache(tiny_model, capacity))
    assert all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)
    assert cache.get_seq_length() == expected.get_seq_length() == PROMPT.shape[1] + 17
    for ours, theirs in zip(cache.layers, expected.layers):
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
    for ours, theirs in zip(logits, expected_logits):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_decode_steps_write_in_place_without_reallocating(tiny_model):
    arg = cache_argument(tiny_model)
    cache = new_cache(tiny_model, capacity=100)
    with torch.inference_mode():
        prefill(tiny_model, arg, cache, PROMPT)
        layer = cache.layers[0]
        buffer = layer._key_buffer.data_ptr()
        length = PROMPT.shape[1]
        for j in range(20):
            extend(tiny_model, arg, cache, STEPS[:, j:j + 1], length, keep=1)
            length += 1
            assert layer.keys.data_ptr() == buffer  # a view of the same buffer, not a new tensor
        crop(cache, length - 5)
        assert layer.keys.shape[-2] == length - 5 and layer._key_buffer.data_ptr() == buffer
        extend(tiny_model, arg, cache, STEPS.repeat(1, 3)[:, :70], length - 5, keep=1)  # past capacity: grows
    assert layer._key_buffer.shape[-2] >= length - 5 + 70 and layer.keys.shape[-2] == length - 5 + 70


def test_a_deep_copy_keeps_only_the_live_positions_and_is_private(tiny_model):
    arg = cache_argument(tiny_model)
    cache = new_cache(tiny_model, capacity=500)
    with torch.inference_mode():
        prefill(tiny_model, arg, cache, PROMPT)
        snapshot = copy.deepcopy(cache)
        before = snapshot.layers[0].keys.clone()
        extend(tiny_model, arg, cache, STEPS[:, :4], PROMPT.shape[1], keep=1)
        crop(cache, 10)
        extend(tiny_model, arg, cache, STEPS[:, :30], 10, keep=1)  # overwrites positions 10.. of the original
    layer = snapshot.layers[0]
    assert layer._key_buffer.shape[-2] == PROMPT.shape[1]  # not the 500-position buffer
    assert torch.equal(layer.keys, before)


# ----------------------------------------------------------------------------- dense prefill


@pytest.fixture(scope="module")
def int4_engine(tiny_target_dir) -> Engine:
    """An int4 engine with bf16 copies, on a model of its own. load_model hands one model per precision
    to the whole process: once test_precision.py's int4 engine had run it (where the copies do not pay:
    none kept), its lean forward (lean.py) had looked its linears up without copies, and those added
    here went unused."""
    release_model(tiny_target_dir, device="cpu", dtype="int4")
    engine = Engine(target=tiny_target_dir, drafter="lookup", device="cpu", dtype="int4")
    keep_dense_weights(engine.model)  # whether or not this CPU's bf16 GEMMs pay, exercise the path
    yield engine
    release_model(tiny_target_dir, device="cpu", dtype="int4")  # nor do later modules get this one


def test_quantised_linears_keep_their_kernels_weights_in_bf16(int4_engine):
    linears = [m for m in int4_engine.model.modules() if isinstance(m, (Int4Linear, Int8Linear))]
    head = int4_engine.model.get_output_embeddings()
    assert head.dense is None  # a prompt needs one row of logits: no bf16 copy of the head
    body = [m for m in linears if m is not head]
    assert body and all(m.dense is not None and m.dense.dtype == torch.bfloat16 for m in body)
    x = torch.randn(50, body[0].in_features, generator=GEN)
    with torch.inference_mode():
        kernel = body[0](x)
        with prompt_pass():
            dense = body[0](x)
    assert torch.equal(dense, torch.nn.functional.linear(x.bfloat16(), body[0].dense).float())
    torch.testing.assert_close(dense, kernel, rtol=0.05, atol=0.05)  # the same weights, other rounding
    assert not torch.equal(dense, kernel)  # so the test can tell which path ran


@pytest.mark.parametrize("setting, kept", [("0", False), ("1", True)])
def test_chatnexus_dense_prefill_turns_the_bf16_copies_off_or_on(tiny_target_dir, monkeypatch, setting, kept):
    monkeypatch.setenv("CHATNEXUS_DENSE_PREFILL", setting)
    model = apply_precision(AutoModelForCausalLM.from_pretrained(tiny_target_dir).eval(),
                            resolve_precision("int4", torch.device("cpu")))
    body = [m for m in model.modules() if isinstance(m, Int4Linear)]
    assert body and all((m.dense is not None) == kept for m in body)


def test_a_misspelt_dense_prefill_setting_is_an_error_naming_it_not_auto(tiny_target_dir, monkeypatch):
    """It meant auto without a word (chatnexus/settings.py refuses it at the platform's start)."""
    monkeypatch.setenv("CHATNEXUS_DENSE_PREFILL", "maybe")
    with pytest.raises(EngineError, match=r"CHATNEXUS_DENSE_PREFILL='maybe': expected one of auto, 1, .*off"):
        apply_precision(AutoModelForCausalLM.from_pretrained(tiny_target_dir).eval(),
                        resolve_precision("int4", torch.device("cpu")))


def test_prefill_uses_the_dense_weights_and_steps_the_kernel(int4_engine):
    model = int4_engine.model
    arg = cache_argument(model)
    with torch.inference_mode():
        dense = prefill(model, arg, new_cache(model), PROMPT)
        kernel = extend(model, arg, new_cache(model), PROMPT, 0, keep=1)
        with prompt_pass():  # what prefill enters (one chunk: the prompt is short)
            assert torch.equal(extend(model, arg, new_cache(model), PROMPT, 0, keep=1), dense)
    assert not torch.equal(dense, kernel)


@pytest.mark.parametrize("prompt", ["Hello there, how are you today? Hello there, how", "abcabcabcabc"])
def test_speculation_stays_lossless_with_a_dense_prefill(int4_engine, prompt):
    ids = int4_engine.encode(prompt)
    plain, _ = int4_engine.generate_ids(ids, max_new_tokens=40, drafter="none")
    for k in (None, 3, 8):
        int4_engine.draft_length = k
        try:
            drafted, stats = int4_engine.generate_ids(ids, max_new_tokens=40, drafter="lookup")
        finally:
            int4_engine.draft_length = None
        assert drafted == plain
    assert stats.drafted > 0


# ----------------------------------------------------------------------------- fused q/k/v and gate/up


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_linears_sharing_an_input_run_as_one_with_the_same_results(tiny_target_dir, precision):
    """q/k/v and gate/up become one quantised linear each; every output equals the member's own."""
    fused = Engine(target=tiny_target_dir, drafter="none", device="cpu", dtype=precision).model
    attention = fused.model.layers[0].self_attn
    mlp = fused.model.layers[0].mlp
    assert all(isinstance(getattr(attention, n), SharedInputMember) for n in ("q_proj", "k_proj", "v_proj"))
    assert all(isinstance(getattr(mlp, n), SharedInputMember) for n in ("gate_proj", "up_proj"))
    assert isinstance(attention.o_proj, (Int4Linear, Int8Linear)) and isinstance(mlp.down_proj, (Int4Linear, Int8Linear))
    reference = AutoModelForCausalLM.from_pretrained(tiny_target_dir).eval()
    saved = precision_module.SHARED_INPUT_GROUPS
    precision_module.SHARED_INPUT_GROUPS = ()  # the same quantisation, one linear per projection
    try:
        apply_precision(reference, resolve_precision(precision, torch.device("cpu")))
    finally:
        precision_module.SHARED_INPUT_GROUPS = saved
    x = torch.randn(1, 7, attention.q_proj.in_features, generator=GEN)
    ref_attention = reference.model.layers[0].self_attn
    with torch.inference_mode():
        for name in ("k_proj", "q_proj", "v_proj"):  # any order, same input object
            assert torch.equal(getattr(attention, name)(x), getattr(ref_attention, name)(x))
        assert getattr(attention.q_proj.group, "_input") is None  # all served: nothing held
        y = x.clone()
        assert torch.equal(attention.q_proj(x), ref_attention.q_proj(x))
        assert torch.equal(attention.k_proj(y), ref_attention.k_proj(y))  # another tensor: computed afresh
        arg = cache_argument(reference)
        assert torch.equal(extend(fused, arg, new_cache(fused), PROMPT, 0, keep=5),
                           extend(reference, arg, new_cache(reference), PROMPT, 0, keep=5))
