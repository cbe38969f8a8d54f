"""Row invariance: a (k+1)-token verify forward gives each token the logits of a 1-token step.

This is what makes speculation lossless by construction (inference/engine/attention.py): the
bundled model at fp32 (oneDNN's packed kernel) and bf16/int8/int4 must match bit for bit, and with fused SDPA it must not
(otherwise the row loop would be dead weight and this test would prove nothing).
"""

import pytest
import torch
from torch import nn

from inference.engine.attention import NAME, row_invariant_attention
from inference.engine.forward import cache_argument, crop, extend, new_cache, prefill
from inference.engine.loading import BUNDLED_TARGET, load_model
from inference.engine.packed import PackedLinear
from inference.engine.kernels import missing_cpu_flags
from inference.engine.precision import Int4Linear, Int8Linear, cpu_row_invariant

needs_kernels = pytest.mark.skipif(bool(missing_cpu_flags()), reason=f"this CPU lacks {missing_cpu_flags()}")


def verify_vs_steps(model, widths=(2, 5, 17, 33)) -> float:
    """Largest |logit| difference between one W-token forward and W one-token steps, after a prompt."""
    cache_arg = cache_argument(model)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 20000, (1, 90), generator=gen)
    worst = 0.0
    with torch.inference_mode():
        cache = new_cache(model)
        prefill(model, cache_arg, cache, prompt)
        for width in widths:
            x = torch.randint(100, 20000, (1, width), generator=gen)
            together = extend(model, cache_arg, cache, x, 90, keep=width)[0]  # [W, V]
            crop(cache, 90)
            one_by_one = torch.cat([extend(model, cache_arg, cache, x[:, j:j + 1], 90 + j, keep=1)[0]
                                    for j in range(width)])
            crop(cache, 90)
            worst = max(worst, (together - one_by_one).abs().max().item())
    return worst


@pytest.mark.parametrize("precision", ["bf16", "int8", "int4", pytest.param("int4a8", marks=needs_kernels)])
def test_the_bundled_model_verifies_bit_for_bit_like_it_decodes(precision):
    model, _ = load_model(BUNDLED_TARGET, device="cpu", dtype=precision)
    if cpu_row_invariant(precision):
        assert model.config._attn_implementation == NAME
        assert verify_vs_steps(model) == 0.0
    else:  # bf16 where oneDNN's native-bf16 matmuls are not row-invariant: no row loop, and no claim
        assert precision == "bf16" and model.config._attn_implementation != NAME
        assert verify_vs_steps(model) > 0.0  # the probe was right: this CPU's bf16 is not row-invariant


def test_the_bundled_model_at_fp32_verifies_bit_for_bit_like_it_decodes_and_stock_does_not():
    model, _ = load_model(BUNDLED_TARGET, device="cpu", dtype="fp32")
    stock, _ = load_model(BUNDLED_TARGET, device="cpu", dtype="fp32", stock=True)
    assert isinstance(model.lm_head, PackedLinear) and model.config._attn_implementation == NAME
    assert type(stock.lm_head) is nn.Linear and stock.config._attn_implementation != NAME
    assert cpu_row_invariant("fp32", packed=True)
    assert verify_vs_steps(model) == 0.0
    assert verify_vs_steps(stock) > 0.0  # MKL + fused SDPA: why stock fp32 speculation is only nearly lossless


def test_int8_and_int4_are_row_invariant_on_every_cpu():
    assert cpu_row_invariant("int8") and cpu_row_invariant("int4") and cpu_row_invariant("int4a8")
    assert not cpu_row_invariant("fp32")


def test_fused_attention_would_differ_at_int8():
    """The reason for the row loop: with SDPA over all rows at once, int8 logits move by ~0.1-0.4."""
    model, _ = load_model(BUNDLED_TARGET, device="cpu", dtype="int8")
    try:
        model.set_attn_implementation("sdpa")
        assert verify_vs_steps(model, widths=(5, 17)) > 0.0
    finally:
        model.set_attn_implementation(NAME)


@pytest.mark.parametrize("make", [Int8Linear, Int4Linear], ids=["int8", "int4"])
def test_quantised_linears_at_real_shapes_are_row_invariant(make):
    """The linears' share of the contract, at the bundled model's widest shapes (MLP, lm_head)."""
    torch.manual_seed(0)
    for n, k in ((1536, 576), (576, 1536)):
        layer = make(torch.nn.Linear(k, n, bias=False))
        x = torch.randn(17, k)
        assert torch.equal(layer(x), torch.cat([layer(x[i:i + 1]) for i in range(17)]))


def test_row_invariant_attention_equals_causal_sdpa_up_to_rounding():
    """Same maths as causal attention over a cache: only the rounding may differ."""
    torch.manual_seed(0)
    q = torch.randn(1, 4, 5, 16)  # [B, H, W, D]: the last 5 of 12 positions
    k, v = torch.randn(1, 2, 12, 16), torch.randn(1, 2, 12, 16)  # [B, Hkv, L, D], 2 query heads per kv head

    class Module:
        num_key_value_groups = 2
        is_causal = True
        training = False

    out, _ = row_invariant_attention(Module(), q, k, v, None, scaling=0.25)  # [B, W, H, D]
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    mask = torch.ones(5, 12, dtype=torch.bool).tril(diagonal=7)  # row j sees keys 0..7+j
    expected = torch.nn.functional.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, scale=0.25)
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-6)
    assert out.shape == (1, 5, 4, 16)


def test_a_padded_batch_on_the_engines_model_gives_each_prompt_its_own_reply(tiny_target_dir):
    """model.generate over left-padded prompts of different lengths (what distill's data step
    does) must answer each prompt as the engine does alone: the row-invariant attention falls
    back to SDPA for batches, which needs the padding mask transformers only builds for an
    attention with a registered mask function."""
    from inference.engine import Engine
    from inference.engine.distill import generate_replies

    engine = Engine(target=tiny_target_dir, drafter="none", device="cpu", dtype="fp32", prefix_cache=False)
    assert engine.model.config._attn_implementation == "row_invariant"
    prompts = [engine.encode([{"role": "user", "content": text}])[0]
               for text in ("Hi", "Where is my parcel? It was due on Monday.", "Do you fix e-bikes?")]
    assert len({len(p) for p in prompts}) == 3
    pad = engine.eos_token_ids[0]
    batched = generate_replies(engine.model, prompts, 12, list(engine.eos_token_ids), pad)
    for prompt, reply in zip(prompts, batched):
        alone, _ = engine.generate_ids(prompt[None], max_new_tokens=12)
        assert reply == alone


@needs_kernels
def test_the_bundled_model_at_int4a8_verifies_bit_for_bit_on_avx2_too():
    """int4a8's AVX2 path (CPUs without AVX-512 VNNI; pinned here) is row-invariant as well."""
    model, _ = load_model(BUNDLED_TARGET, device="cpu", dtype="int4a8")
    before = torch.ops.chatnexus.kernel_isa()
    try:
        torch.ops.chatnexus.kernel_isa("avx2")
        assert verify_vs_steps(model) == 0.0
    finally:
        torch.ops.chatnexus.kernel_isa(before)
