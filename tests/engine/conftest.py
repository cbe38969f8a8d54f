"""Fixtures for the engine tests: tiny seeded Llama models with a byte-level tokenizer.

- `tiny_target`: 2 layers, hidden 64, vocab 259 (256 bytes + 3 chat specials).
- `tiny_draft`: 1 layer, the target's embeddings, first layer and head — a correlated draft
  that shares the vocabulary, so drafts really get accepted.
- `tiny_other_vocab`: a model with a different tokenizer, for the mismatch error.
- `tree_attention`: `tiny_engine` with an attention that honours draft trees' masks (sdpa).
- `bundled_engine`: the real bundled SmolLM2-135M, loaded once per session.
All models are saved to folders and loaded through `load_model`, like real checkpoints.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from inference.engine import BUNDLED_TARGET, Engine

torch.set_num_threads(1)  # 2 shared cores: oversubscribed threads make tiny models crawl

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer(extra_specials: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """One token per byte (multi-byte characters span several tokens) plus chat specials."""
    specials = SPECIALS + list(extra_specials)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(vocab_size: int, layers: int, hidden: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        initializer_range=0.1, bos_token_id=0, eos_token_id=2, pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def save(model, tokenizer, folder) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_target_dir(tmp_path_factory) -> str:
    tokenizer = byte_tokenizer()
    return save(tiny_llama(len(tokenizer), layers=2, hidden=64, seed=0), tokenizer, tmp_path_factory.mktemp("target"))


@pytest.fixture(scope="session")
def tiny_draft_dir(tmp_path_factory, tiny_target_dir) -> str:
    tokenizer = byte_tokenizer()
    target = LlamaForCausalLM.from_pretrained(tiny_target_dir)
    draft = tiny_llama(len(tokenizer), layers=1, hidden=64, seed=1)
    # keep embeddings, layer 0, final norm and head: a cheap, correlated approximation of the target
    draft.load_state_dict({k: v for k, v in target.state_dict().items() if ".layers.1." not in k})
    return save(draft, tokenizer, tmp_path_factory.mktemp("draft"))


@pytest.fixture(scope="session")
def tiny_other_vocab_dir(tmp_path_factory) -> str:
    tokenizer = byte_tokenizer(extra_specials=("<|user|>", "<|assistant|>", "<|system|>"))
    return save(tiny_llama(len(tokenizer), layers=1, hidden=32, seed=2), tokenizer, tmp_path_factory.mktemp("other"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_target_dir, tiny_draft_dir) -> Engine:
    """Target + draft model drafter; per-request drafter overrides give none/lookup."""
    return Engine(target=tiny_target_dir, drafter=f"model:{tiny_draft_dir}", device="cpu", dtype="fp32")


@pytest.fixture
def tree_attention(tiny_engine):
    """The tiny target with an attention that honours tree masks (whatever a test before left)."""
    from inference.engine.forward import tree_supported

    model = tiny_engine.model
    before = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    assert tree_supported(model)
    yield tiny_engine
    model.set_attn_implementation(before)


@pytest.fixture(scope="session")
def bundled_engine() -> Engine:
    return Engine(target=BUNDLED_TARGET, drafter="lookup", device="cpu", dtype="fp32")


def _hf_greedy(model, input_ids: torch.Tensor, max_new_tokens: int, eos_token_ids: list[int]) -> list[int]:
    """Reference: transformers' own greedy decoding."""
    with torch.inference_mode():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eos_token_ids, pad_token_id=0)
    return out[0, input_ids.shape[1]:].tolist()


@pytest.fixture(scope="session")
def hf_greedy():
    """hf_greedy(model, input_ids [1, S], max_new_tokens, eos_token_ids) -> new ids from `model.generate`."""
    return _hf_greedy
