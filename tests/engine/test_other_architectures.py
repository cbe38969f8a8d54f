"""Architectures other than Llama: sliding windows (Mistral), soft-capping (Gemma-2), chat
templates with thinking or without a system role, multimodal configs, padded draft vocabularies.

Every model is a tiny random one built offline and saved with the byte tokenizer (conftest.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache, Gemma2Config, Gemma3Config, Gemma2ForCausalLM, MistralConfig, MistralForCausalLM
from transformers.cache_utils import LinearAttentionLayer

from inference.engine import Engine
from inference.engine.bench import hf_generate_runner
from inference.engine.decode import context_budget
from inference.engine.distill import generate_replies
from inference.engine.errors import EngineError
from inference.engine.forward import track_rollback
from inference.engine.precision_probe import calibration_sequences
from inference.engine.sampling import SamplingParams

from tests.engine.conftest import CHAT_TEMPLATE, byte_tokenizer, save, tiny_llama

# a repetitive prompt: prompt lookup drafts from it every step, and many drafts get rejected
REPETITIVE = [ord(c) + 3 for c in "abcabcabdabcabcabdabcabcabdabc"]  # 30 bytes


def tiny_mistral(sliding_window: int, seed: int = 0, layers: int = 2) -> MistralForCausalLM:
    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=len(byte_tokenizer()), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, sliding_window=sliding_window,
        initializer_range=0.1, tie_word_embeddings=False, bos_token_id=0, eos_token_id=2, pad_token_id=0,
    )
    return MistralForCausalLM(config).eval()


@pytest.fixture(scope="module")
def sliding_dir(tmp_path_factory) -> str:
    return save(tiny_mistral(sliding_window=8), byte_tokenizer(), tmp_path_factory.mktemp("mistral_sw8"))


def test_it_rolls_back_a_sliding_window_cache_past_the_window(sliding_dir, hf_greedy):
    engine = Engine(target=sliding_dir, drafter="lookup", device="cpu", dtype="fp32", prefix_cache=False)
    engine.draft_length = 4  # fixed k: drafts every step, so rejections come past the window
    prompt = torch.tensor([REPETITIVE])
    truth = hf_greedy(engine.model, prompt, 24, [])
    plain, _ = engine.generate_ids(prompt, max_new_tokens=24, drafter="none", eos_token_ids=[])
    drafted, stats = engine.generate_ids(prompt, max_new_tokens=24, drafter="lookup", eos_token_ids=[])
    assert stats.drafted > stats.accepted  # some drafts were rejected (crop past the window)
    assert drafted == plain == truth


@pytest.fixture(scope="module")
def sliding_draft_dir(tmp_path_factory) -> str:
    draft = tiny_mistral(sliding_window=8, seed=1, layers=1)
    return save(draft, byte_tokenizer(), tmp_path_factory.mktemp("mistral_draft"))


def test_it_rolls_back_a_sliding_window_draft_model(sliding_dir, sliding_draft_dir, hf_greedy):
    # adaptive k (the verify cost is timed on a cache rolled back past the window) and a draft
    # model whose own sliding-window cache is cropped after every rejection
    engine = Engine(target=sliding_dir, drafter=f"model:{sliding_draft_dir}", device="cpu", dtype="fp32",
                    prefix_cache=False)
    prompt = torch.tensor([REPETITIVE])
    truth = hf_greedy(engine.model, prompt, 24, [])
    drafted, stats = engine.generate_ids(prompt, max_new_tokens=24, eos_token_ids=[])
    assert stats.drafted > stats.accepted
    assert drafted == truth


def test_it_refuses_to_draft_on_a_cache_with_recurrent_state():
    layer = LinearAttentionLayer()
    layer.is_recurrent_states_initialized[0] = True  # a linear-attention layer after its first forward
    cache = DynamicCache()
    cache.layers = [layer]
    with pytest.raises(EngineError, match="recurrent state.*drafter 'none'"):
        track_rollback(cache)


# ---------------------------------------------------------------------------- soft-capped attention


def tiny_gemma2(seed: int = 0) -> Gemma2ForCausalLM:
    torch.manual_seed(seed)
    config = Gemma2Config(
        vocab_size=len(byte_tokenizer()), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512, sliding_window=8,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, initializer_range=0.1,
        bos_token_id=0, eos_token_id=2, pad_token_id=0,
    )
    return Gemma2ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def gemma2_dir(tmp_path_factory) -> str:
    return save(tiny_gemma2(), byte_tokenizer(), tmp_path_factory.mktemp("gemma2"))


@pytest.mark.parametrize("dtype", ["int8", "int4", "int4a8", "fp32"])
def test_it_decodes_a_soft_capped_model_at_quantised_precision(gemma2_dir, dtype):
    engine = Engine(target=gemma2_dir, drafter="lookup", device="cpu", dtype=dtype, prefix_cache=False)
    engine.draft_length = 4
    prompt = torch.tensor([REPETITIVE])
    plain, _ = engine.generate_ids(prompt, max_new_tokens=20, drafter="none", eos_token_ids=[])
    drafted, stats = engine.generate_ids(prompt, max_new_tokens=20, drafter="lookup", eos_token_ids=[])
    assert stats.drafted > 0
    assert drafted == plain


# ---------------------------------------------------------------------------- chat templates

# Qwen3's switch: thinking is on unless the template is told enable_thinking=false, which writes
# an empty thinking block so the reply starts with the answer
THINKING_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
# Gemma-2-it's, Mistral-7B-Instruct-v0.1's: no system role
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
REFUSING_TEMPLATE = "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def chat_engine(tmp_path_factory) -> Engine:
    tokenizer = byte_tokenizer()
    folder = save(tiny_llama(len(tokenizer), layers=1, hidden=32, seed=3), tokenizer, tmp_path_factory.mktemp("chat"))
    return Engine(target=folder, drafter="none", device="cpu", dtype="fp32", prefix_cache=False)


@pytest.fixture
def template(chat_engine):
    """template(text): the chat engine's tokenizer renders with `text` for this test."""
    original = chat_engine.tokenizer.chat_template

    def use(text):
        chat_engine.tokenizer.chat_template = text
        return chat_engine.tokenizer
    yield use
    chat_engine.tokenizer.chat_template = original


def test_it_asks_thinking_templates_for_no_thinking(chat_engine, template):
    template(THINKING_TEMPLATE)
    text = chat_engine.tokenizer.decode(chat_engine.chat_ids(CHAT))
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_the_precision_probe_asks_thinking_templates_for_no_thinking(chat_engine, template):
    tokenizer = template(THINKING_TEMPLATE)
    [(ids, start)] = calibration_sequences(chat_engine.model, tokenizer, prompts=1, reply_tokens=2)
    assert tokenizer.decode(ids[0, :start]).endswith("assistant\n<think>\n\n</think>\n\n")


@pytest.mark.parametrize("text", [None, REFUSING_TEMPLATE])
def test_the_precision_probe_says_when_a_model_cannot_chat(chat_engine, template, text):
    tokenizer = template(text)
    with pytest.raises(EngineError, match="chat"):
        calibration_sequences(chat_engine.model, tokenizer, prompts=1, reply_tokens=2)


def test_it_merges_the_system_turn_into_the_first_user_turn_where_the_template_has_no_system_role(
        chat_engine, template):
    template(NO_SYSTEM_TEMPLATE)
    text = chat_engine.tokenizer.decode(chat_engine.chat_ids(CHAT + [{"role": "assistant", "content": "Hello"},
                                                                     {"role": "user", "content": "Bye"}]))
    assert text == ("<|im_start|>user\nBe brief.\n\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
                    "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")


def test_it_says_when_a_template_refuses_the_conversation_even_merged(chat_engine, template):
    template(REFUSING_TEMPLATE)
    with pytest.raises(EngineError, match="chat template cannot write this conversation"):
        chat_engine.chat_ids(CHAT)


# ---------------------------------------------------------------------------- multimodal configs


def test_it_reads_the_context_of_a_multimodal_model_from_its_text_config():
    # Gemma3ForConditionalGeneration: max_position_embeddings lives on config.text_config only
    model = SimpleNamespace(config=Gemma3Config(text_config={"max_position_embeddings": 64}))
    engine = Engine.__new__(Engine)
    engine.model = model
    assert engine.context_length == 64
    assert context_budget(model, prompt_len=60, max_new_tokens=32) == 4
    with pytest.raises(EngineError, match="context is 64"):
        context_budget(model, prompt_len=64, max_new_tokens=32)


# ---------------------------------------------------------------------------- padded draft vocabularies


@pytest.fixture(scope="module")
def padded_draft_dir(tmp_path_factory) -> str:
    """A draft with 32 padding rows past the vocabulary, and a head that always prefers one of them."""
    tokenizer = byte_tokenizer()
    vocab = len(tokenizer)
    draft = tiny_llama(vocab, layers=1, hidden=64, seed=4)
    draft.resize_token_embeddings(vocab + 32)
    with torch.no_grad():
        head = draft.get_output_embeddings().weight  # [V + 32, hidden]
        head[:vocab] = 0  # every real token scores 0 ...
        head[vocab:] = torch.randn(32, head.shape[1])  # ... some padding row scores more
    return save(draft, tokenizer, tmp_path_factory.mktemp("padded_draft"))


def test_a_draft_with_padding_rows_never_proposes_them(tiny_target_dir, padded_draft_dir, hf_greedy):
    engine = Engine(target=tiny_target_dir, drafter=f"model:{padded_draft_dir}", device="cpu", dtype="fp32",
                    prefix_cache=False)
    engine.draft_length = 3
    prompt = torch.tensor([REPETITIVE])
    drafted, stats = engine.generate_ids(prompt, max_new_tokens=12, eos_token_ids=[])
    assert stats.drafted > 0
    assert drafted == hf_greedy(engine.model, prompt, 12, [])


def test_a_padded_draft_samples_from_a_distribution_over_the_target_vocabulary(tiny_target_dir, padded_draft_dir):
    engine = Engine(target=tiny_target_dir, drafter=f"model:{padded_draft_dir}", device="cpu", dtype="fp32",
                    prefix_cache=False)
    drafter, vocab = engine.drafter, engine.model.get_output_embeddings().weight.shape[0]
    drafter.begin(torch.tensor([REPETITIVE]), SamplingParams(temperature=1.0), torch.Generator().manual_seed(0))
    draft_ids, q = drafter.propose(torch.tensor([REPETITIVE]), 3)
    assert bool((draft_ids < vocab).all())
    assert q.shape == (3, vocab)
    torch.testing.assert_close(q.sum(-1), torch.ones(3))


# ---------------------------------------------------------------------------- HF references


@pytest.fixture(scope="module")
def penalised_engine(tmp_path_factory) -> Engine:
    """A checkpoint whose generation_config asks for sampling penalties (many instruct models ship one)."""
    tokenizer = byte_tokenizer()
    model = tiny_llama(len(tokenizer), layers=1, hidden=32, seed=5)
    model.generation_config.repetition_penalty = 2.0
    model.generation_config.no_repeat_ngram_size = 2
    folder = save(model, tokenizer, tmp_path_factory.mktemp("penalised"))
    return Engine(target=folder, drafter="none", device="cpu", dtype="fp32", prefix_cache=False)


def test_the_benchmark_reference_is_plain_greedy_whatever_the_generation_config(penalised_engine):
    prompt = torch.tensor([REPETITIVE])
    plain, _ = penalised_engine.generate_ids(prompt, max_new_tokens=16, eos_token_ids=[2])
    reference, _ = hf_generate_runner(penalised_engine.model, 16, [2])(prompt)
    assert reference == plain


def test_the_distillation_teacher_replies_are_plain_greedy_whatever_the_generation_config(penalised_engine):
    prompt = torch.tensor(REPETITIVE)
    plain, _ = penalised_engine.generate_ids(prompt[None], max_new_tokens=16, eos_token_ids=[2])
    [reply] = generate_replies(penalised_engine.model, [prompt], max_new_tokens=16, eos_ids=[2], pad_id=0)
    assert reply == plain
