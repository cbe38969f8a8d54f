"""The lean Llama forward (inference/engine/lean.py) computes exactly what transformers' forward does.

Every engine forward (prefill, decode steps, verify steps) goes through it for Llama-family
models, so it must give the model's own logits and KV cache bit for bit: at every precision,
with fused (int8/int4) and separate (fp32/bf16) q/k/v and gate/up linears, over a prompt
(dense bf16 prefill under int4), one-token steps and verify widths up to 33, a rolled-back cache
and a reused prefix. Models it does not know keep transformers' forward.
"""

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from inference.engine.attention import prompt_pass
from inference.engine.forward import PREFILL_CHUNK, cache_argument, crop, extend, new_cache, prefill
from inference.engine.kernels import missing_cpu_flags
from inference.engine.lean import LeanLlama, lean_forward
from inference.engine.loading import BUNDLED_TARGET, load_model
from inference.engine.precision import apply_precision, resolve_precision

WIDTHS = (1, 5, 1, 33, 2, 1, 17)


def hf_extend(model, cache, ids, start, keep):
    """What forward.extend did before lean.py: the model's own forward."""
    positions = torch.arange(start, start + ids.shape[1])[None]
    return model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=keep,
                 **{cache_argument(model): cache}).logits


def run(model, step, seed=0):
    """Prompt + decode/verify steps (with a rollback after each verify), via `step`; logits and final KV."""
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(100, 20000, (1, 120), generator=gen)
    cache = new_cache(model, 400)
    with torch.inference_mode():
        with prompt_pass():
            outputs = [step(model, cache, prompt, 0, 1)]
        length = prompt.shape[1]
        for width in WIDTHS:
            x = torch.randint(100, 20000, (1, width), generator=gen)
            outputs.append(step(model, cache, x, length, width))
            length += width
            if width > 1:  # a verify whose last drafts were rejected
                length -= width // 2
                crop(cache, length)
    keys = torch.cat([layer.keys for layer in cache.layers])
    return outputs, keys


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "int4"])
def test_the_bundled_model_gets_its_own_logits_bit_for_bit(precision):
    model, _ = load_model(BUNDLED_TARGET, device="cpu", dtype=precision)
    runner = lean_forward(model)
    assert isinstance(runner, LeanLlama)
    fused = runner.layers[False][0].qkv is not None
    assert fused == (precision in ("int8", "int4"))  # both code paths of a layer are covered
    lean_logits, lean_keys = run(model, lambda m, c, x, s, k: extend(m, cache_argument(m), c, x, s, k))
    hf_logits, hf_keys = run(model, hf_extend)
    assert len(lean_logits) == len(hf_logits) == len(WIDTHS) + 1
    for ours, theirs in zip(lean_logits, hf_logits):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        assert torch.equal(ours, theirs)
    assert torch.equal(lean_keys, hf_keys)


@pytest.mark.skipif(bool(missing_cpu_flags()), reason=f"this CPU lacks {missing_cpu_flags()}")
def test_int4a8_fuses_each_norm_into_its_kernel_call_and_stays_close():
    """int4a8's lean forward runs norm + q/k/v, norm + gate/up and the final norm + lm_head as one
    kernel call each (the kernel's own fp32 RMSNorm): close to the model's own forward, not bit
    for bit. Plain and speculative decoding both run the lean forward, so speculation stays lossless
    (test_precision.py, test_row_invariance.py)."""
    model, _ = load_model(BUNDLED_TARGET, device="cpu", dtype="int4a8")
    runner = lean_forward(model)
    layer = runner.layers[False][0]
    assert layer.norm_qkv is not None and layer.norm_gate_up is not None and runner.norm_head is not None
    assert runner.rotary_kernel
    lean_logits, _ = run(model, lambda m, c, x, s, k: extend(m, cache_argument(m), c, x, s, k))
    hf_logits, _ = run(model, hf_extend)
    agree = total = 0
    for ours, theirs in zip(lean_logits, hf_logits):
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max() < 0.05 * theirs.abs().max()
        agree, total = agree + int((ours.argmax(-1) == theirs.argmax(-1)).sum()), total + ours.shape[-2]
    assert agree >= 0.75 * total  # random tokens: flat distributions, near-ties flip


def test_a_reused_prefix_and_prefill_from_an_offset_match_too():
    model, _ = load_model(BUNDLED_TARGET, device="cpu", dtype="int4")
    arg = cache_argument(model)
    gen = torch.Generator().manual_seed(3)
    prompt = torch.randint(100, 20000, (1, PREFILL_CHUNK + 50), generator=gen)
    with torch.inference_mode():
        shared = new_cache(model, 300)
        prefill(model, arg, shared, prompt[:, :PREFILL_CHUNK])
        ours = prefill(model, arg, copy.deepcopy(shared), prompt[:, PREFILL_CHUNK:], start=PREFILL_CHUNK)
        with prompt_pass():  # what prefill enters; the tail is one chunk
            theirs = hf_extend(model, copy.deepcopy(shared), prompt[:, PREFILL_CHUNK:], PREFILL_CHUNK, 1)
    assert torch.equal(ours, theirs)


def test_the_lean_forward_is_what_the_engine_uses_and_it_matters(tiny_target_dir):
    """extend() goes through lean.py for a Llama; a deliberately wrong lean runner shows up."""
    model, _ = load_model(tiny_target_dir, device="cpu", dtype="fp32")
    runner = lean_forward(model)
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        good = extend(model, cache_argument(model), new_cache(model), x, 0, 4)
        runner.layers[False][0].act = torch.nn.functional.relu  # not this model's activation
        try:
            bad = extend(model, cache_argument(model), new_cache(model), x, 0, 4)
        finally:
            runner.layers[False][0].act = model.model.layers[0].mlp.act_fn
        again = extend(model, cache_argument(model), new_cache(model), x, 0, 4)
    assert not torch.equal(good, bad)
    assert torch.equal(good, again)


def test_models_it_does_not_know_keep_their_own_forward():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=100, n_positions=64)).eval()
    assert lean_forward(gpt2) is None
    cache = new_cache(gpt2)
    with torch.inference_mode():
        logits = extend(gpt2, cache_argument(gpt2), cache, torch.tensor([[1, 2, 3]]), 0, 3)
    assert logits.shape == (1, 3, 100)

    class CustomLlama(LlamaForCausalLM):  # a subclass may change the maths: not ours to assume
        pass

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    assert lean_forward(CustomLlama(config).eval()) is None
    training = LlamaForCausalLM(config).train()
    assert lean_forward(training) is None  # attention dropout is transformers' business
    assert isinstance(lean_forward(training.eval()), LeanLlama)


def test_requantising_a_model_rebuilds_its_lean_forward():
    """The runner looks weights up once; apply_precision swaps modules, so it must start afresh."""
    # transformers' own linears, as loaded (the engine's fp32 copy has packed ones), not the shared copy
    model = copy.deepcopy(load_model(BUNDLED_TARGET, device="cpu", dtype="fp32", stock=True)[0])
    before = lean_forward(model)
    apply_precision(model, resolve_precision("int8", torch.device("cpu")))
    after = lean_forward(model)
    assert after is not before and after.layers[False][0].qkv is not None
    ours, _ = run(model, lambda m, c, x, s, k: extend(m, cache_argument(m), c, x, s, k), seed=5)
    theirs, _ = run(model, hf_extend, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
