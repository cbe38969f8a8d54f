"""A tiny random Llama with a byte-level tokenizer, saved once per test session.

Big enough to exercise every code path (chat template, KV cache, drafting), small enough
that a whole benchmark on it takes a few seconds on a CPU.
"""

import json

import pytest
import torch

# One thread: the test machines' cores are shared, and oversubscribed torch threads crawl.
torch.set_num_threads(1)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer():
    """Byte-level BPE without merges: one token per byte, plus the chat specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = make_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def prompt_file(tmp_path):
    """Three short support conversations that repeat facts (so lookup has n-grams to copy)."""
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"id": "a", "messages": [{"role": "system", "content": "Open 9-5. Tune-up $79."},
                                 {"role": "user", "content": "When are you open?"}]},
        {"id": "b", "messages": [{"role": "user", "content": "Price of a tune-up?"}]},
        {"id": "c", "extra": "ignored",
         "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": "refund policy?"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
