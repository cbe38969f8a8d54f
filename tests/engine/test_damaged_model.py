"""A model file cut short (an interrupted download or copy, a full disk) is a BadModelFileError naming
the model, like a missing one is a ModelNotFoundError: `serve` says it cannot load the model, a bot's
drafter falls back to the default, and a damaged copy in the GGUF model cache is converted again."""

from __future__ import annotations

import shutil

import gguf
import numpy as np
import pytest
import safetensors

from inference.engine import load_model
from inference.engine.errors import BadModelFileError
from inference.engine.loading import model_cache_dir, release_model

from tests.engine.conftest import CHAT_TEMPLATE, SPECIALS, byte_tokenizer, tiny_llama


def cut_short(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def damaged_copy(tiny_target_dir, tmp_path):
    """A copy of the tiny target; the test cuts one of its files short."""
    return shutil.copytree(tiny_target_dir, tmp_path / "target-copy")


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json"])
def test_a_file_cut_short_is_reported_with_the_model(damaged_copy, name):
    cut_short(damaged_copy / name)
    with pytest.raises(BadModelFileError, match="cut short") as info:
        load_model(str(damaged_copy), device="cpu", dtype="fp32")
    assert str(damaged_copy) in str(info.value)


def test_a_drafter_cut_short_falls_back_to_the_default(damaged_copy, tiny_target_dir, settings):
    """An operator-listed `model:` drafter whose file is damaged: the bot answers with the default drafter."""
    from inference.tasks import _engine

    cut_short(damaged_copy / "model.safetensors")
    drafter = f"model:{damaged_copy}"
    settings.CHATNEXUS_TARGET, settings.CHATNEXUS_DTYPE, settings.CHATNEXUS_DEVICE = tiny_target_dir, "fp32", "cpu"
    settings.CHATNEXUS_DRAFTER, settings.CHATNEXUS_BOT_DRAFTERS = "none", [drafter]
    assert _engine(drafter).drafter.name == "none"


# ----------------------------------------------------------------------------- the GGUF model cache


def write_tiny_gguf(path) -> None:
    """The tiny Llama and its byte tokenizer as a float32 GGUF file (what llama.cpp's converter writes)."""
    tokenizer = byte_tokenizer()
    model = tiny_llama(len(tokenizer), layers=1, hidden=32, seed=3)
    config, vocab = model.config, tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in SPECIALS else 1 for token in tokens])  # 3: control
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_merges([])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight",)), tensor.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_damaged_model_cache_is_converted_again(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATNEXUS_MODEL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.F32.gguf"
    write_tiny_gguf(path)
    first, _ = load_model(str(path), device="cpu", dtype="fp32")
    [cached] = (tmp_path / "cache").iterdir()
    assert cached == model_cache_dir(cached.name) and (cached / "config.json").is_file()
    cut_short(cached / "model.safetensors")
    release_model(str(path), device="cpu", dtype="fp32")

    again, _ = load_model(str(path), device="cpu", dtype="fp32")
    assert again is not first  # loaded anew, from the GGUF file: the cache's weights did not read
    for name, tensor in first.state_dict().items():
        assert again.state_dict()[name].equal(tensor), name
    with safetensors.safe_open(cached / "model.safetensors", "pt") as rebuilt:  # written whole again
        assert set(rebuilt.keys()) >= {"model.embed_tokens.weight", "lm_head.weight"}
    release_model(str(path), device="cpu", dtype="fp32")



def test_running_out_of_memory_is_not_called_a_damaged_file():
    """torch's CPU allocator says so in a RuntimeError: called a file cut short, the advice was to
    download it again, and a converted GGUF cache was deleted for it."""
    import torch

    from inference.engine.loading import _out_of_memory

    with pytest.raises(RuntimeError) as refused:
        torch.empty(2 ** 50)  # eight petabytes
    assert _out_of_memory(refused.value)
    assert not _out_of_memory(RuntimeError("Error while deserializing header: incomplete metadata"))
