"""fp32 on CPU through oneDNN's packed kernel (inference/engine/packed.py).

The packed linears must compute what nn.Linear computes (to fp32 rounding), look like an
nn.Linear to code that reads weights or state dicts, and give every row the same bits at
every row count — so that, with the row-invariant attention, the bundled model verifies
k+1 tokens bit for bit like k+1 decode steps, where stock transformers does not
(tests/engine/test_row_invariance.py).
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from torch import nn

from inference.engine import Engine, EngineError, load_model
from inference.engine import packed
from inference.engine.loading import BUNDLED_TARGET
from inference.engine.packed import PackedLinear, one_row_differs, pack_fp32_linears, packed_mm
from inference.engine.precision import BUNDLED_SHAPES


def test_a_packed_linear_computes_what_nn_linear_computes_and_saves_like_one():
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=True)
    layer = PackedLinear(linear)
    x = torch.randn(3, 7, 96)  # any leading shape
    with torch.inference_mode():
        assert torch.allclose(layer(x), linear(x), atol=1e-5)
        assert layer(x).shape == (3, 7, 40)
    assert torch.equal(layer.weight, linear.weight.detach())
    state = layer.state_dict()
    assert set(state) == {"weight", "bias"} and torch.equal(state["weight"], linear.weight.detach())
    fresh = nn.Linear(96, 40)
    fresh.load_state_dict(state)  # a draft built from a packed model's state dict gets the real weights
    clone = copy.deepcopy(layer)
    assert clone.packed is not layer.packed and torch.equal(clone.weight, layer.weight)


def test_every_row_gets_the_same_bits_at_every_row_count_at_the_bundled_shapes():
    """The linears' share of the contract, padding of single rows included where a shape needs it."""
    gen = torch.Generator().manual_seed(1)
    for n, k in BUNDLED_SHAPES:
        weight = packed.pack_weight(torch.randn(n, k, generator=gen))
        pad = one_row_differs(n, k)
        x = torch.randn(17, k, generator=gen)
        with torch.inference_mode():
            alone = torch.cat([packed_mm(x[i:i + 1], weight, None, pad) for i in range(17)])
            for rows in (2, 5, 17):
                assert torch.equal(packed_mm(x[:rows], weight, None, pad), alone[:rows]), (n, k, rows)


def test_one_row_differs_is_what_the_kernel_does():
    """Where the check says a lone row rounds differently, it really does (so the padding is needed)
    — and where it says not, a lone row already matches."""
    gen = torch.Generator().manual_seed(2)
    for n, k in BUNDLED_SHAPES:
        weight = packed.pack_weight(torch.randn(n, k, generator=gen))
        x = torch.randn(9, k, generator=gen)
        with torch.inference_mode():
            batch = packed_mm(x, weight, None)
            raw_rows_match = all(torch.equal(packed_mm(x[i:i + 1], weight, None), batch[i:i + 1]) for i in range(9))
        assert raw_rows_match is not one_row_differs(n, k), (n, k)


def test_the_packed_model_gives_the_stock_models_logits_to_rounding():
    model, tokenizer = load_model(BUNDLED_TARGET, device="cpu", dtype="fp32")
    stock, _ = load_model(BUNDLED_TARGET, device="cpu", dtype="fp32", stock=True)
    ids = tokenizer("Our shop opens at nine and closes at six on weekdays.", return_tensors="pt").input_ids
    with torch.inference_mode():
        ours, theirs = model(input_ids=ids).logits, stock(input_ids=ids).logits
    assert (ours - theirs).abs().max().item() < 1e-3
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_speculation_at_packed_fp32_is_token_identical_to_plain_decoding():
    engine = Engine(target=BUNDLED_TARGET, drafter="none", device="cpu", dtype="fp32")
    ids = engine.encode([{"role": "user", "content": "Repeat after me: the blue bike costs 300 dollars, "
                                                    "the red bike costs 300 dollars."}])
    plain, _ = engine.generate_ids(ids, max_new_tokens=40)
    for drafter in ("lookup", "suffix"):
        ours, stats = engine.generate_ids(ids, max_new_tokens=40, drafter=drafter)
        assert ours == plain, drafter
        assert stats.target_forwards < stats.new_tokens, drafter  # drafts were accepted: not vacuous


def test_the_kernel_setting(monkeypatch):
    monkeypatch.setenv("CHATNEXUS_FP32_KERNEL", "stock")
    assert not packed.wanted()
    monkeypatch.setenv("CHATNEXUS_FP32_KERNEL", "packed")
    assert packed.wanted() is packed.available()
    monkeypatch.setenv("CHATNEXUS_FP32_KERNEL", "auto")
    assert packed.wanted() is (packed.available() and packed.pays())


def test_a_misspelt_kernel_setting_is_an_error_naming_it_not_auto(monkeypatch):
    """It meant auto without a word (chatnexus/settings.py refuses it at the platform's start)."""
    monkeypatch.setenv("CHATNEXUS_FP32_KERNEL", "packd")
    with pytest.raises(EngineError, match=r"CHATNEXUS_FP32_KERNEL='packd': expected one of auto, packed, .*stock"):
        packed.wanted()
    for value, meaning in (("PACKED", True), (" Stock ", False), ("off", False), ("", None), ("Auto", None)):
        monkeypatch.setenv("CHATNEXUS_FP32_KERNEL", value)
        assert packed.env_switch("CHATNEXUS_FP32_KERNEL", on=("packed",), off=("stock",)) is meaning, value


def test_the_cli_says_which_kernel_setting_it_cannot_read(tiny_target_dir, tmp_path, monkeypatch, capsys):
    """`python -m inference` runs without Django settings: the engine itself refuses the value."""
    from inference.cli import EXIT_USAGE, main

    target = shutil.copytree(tiny_target_dir, tmp_path / "target")  # a model no test loaded (load_model caches)
    monkeypatch.setenv("CHATNEXUS_FP32_KERNEL", "packd")
    code = main(["generate", "--prompt", "Hi", "--target", str(target), "--device", "cpu", "--dtype", "fp32",
                 "--max-new-tokens", "2"])
    assert code == EXIT_USAGE
    assert "error: CHATNEXUS_FP32_KERNEL='packd': expected one of auto, packed" in capsys.readouterr().err


def test_pack_fp32_linears_leaves_other_dtypes_and_the_embedding_alone():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.Linear(8, 4).to(torch.bfloat16))
    pack_fp32_linears(model)
    assert type(model[0]) is nn.Embedding and isinstance(model[1], PackedLinear) and type(model[2]) is nn.Linear


def test_there_is_no_stock_form_of_a_quantised_precision(tiny_target_dir):
    with pytest.raises(EngineError, match="no stock int8"):
        load_model(tiny_target_dir, device="cpu", dtype="int8", stock=True)
