"""KV caches roll back exactly on rejection; continuing matches a fresh prefill."""

from __future__ import annotations

import torch

from inference.engine.drafters.base import Drafter
from inference.engine.forward import cache_argument, crop, extend, new_cache, prefill
from inference.engine.verify import verify_greedy


def test_after_a_rejection_the_cache_holds_exactly_the_accepted_sequence(tiny_engine, hf_greedy):
    model = tiny_engine.model
    prompt = torch.tensor([[20, 21, 22, 23, 24, 25]])
    truth = hf_greedy(model, prompt, 6, [])  # g0..g5
    wrong = (truth[2] + 1) % 250 + 3
    arg = cache_argument(model)
    with torch.inference_mode():
        cache = new_cache(model)
        first = prefill(model, arg, cache, prompt)[0, -1].argmax().item()
        assert first == truth[0]
        draft = torch.tensor([truth[1], wrong, truth[3]])  # accept 1, reject at 2
        step_input = torch.cat([torch.tensor([first]), draft])[None]  # [1, 4]
        logits = extend(model, arg, cache, step_input, start=prompt.shape[1], keep=4)
        emitted = verify_greedy(draft, logits[0])
        assert emitted == [truth[1], truth[2]]
        length = prompt.shape[1] + 1 + len(emitted)  # prompt + first + emitted
        crop(cache, length - 1)  # everything but the newest token
        assert cache.get_seq_length() == length - 1
        # continue from the rolled-back cache ...
        cont = extend(model, arg, cache, torch.tensor([[emitted[-1]]]), start=length - 1, keep=1)[0, -1]
        # ... equals a fresh prefill of the same sequence
        fresh = model(torch.tensor([prompt[0].tolist() + [first] + emitted])).logits[0, -1]
    torch.testing.assert_close(cont, fresh, rtol=1e-4, atol=1e-4)
    assert cont.argmax().item() == truth[3]


class AdversarialDrafter(Drafter):
    """Proposes the true next token then garbage, to force a rejection every step."""

    name = "adversarial"

    def __init__(self, truth: list[int], prompt_len: int):
        self.truth, self.prompt_len = truth, prompt_len

    def propose(self, ids, k):
        done = ids.shape[1] - self.prompt_len
        good = self.truth[done:done + 1]
        return torch.tensor(good + [7, 8, 9][: max(0, k - len(good))], dtype=torch.long)[:k], None


def test_continuing_after_many_rejections_matches_plain_decoding(tiny_engine, hf_greedy):
    prompt = torch.tensor([[30, 31, 32, 33]])
    truth = hf_greedy(tiny_engine.model, prompt, 24, [])
    tiny_engine._drafters["adversarial"] = AdversarialDrafter(truth, prompt.shape[1])
    tiny_engine.draft_length = 3
    try:
        ids, stats = tiny_engine.generate_ids(prompt, max_new_tokens=24, drafter="adversarial", eos_token_ids=[])
    finally:
        tiny_engine.draft_length = None
        del tiny_engine._drafters["adversarial"]
    assert ids == truth
    assert stats.accepted > 0 and stats.accepted < stats.drafted  # accepted some, rejected others


def test_the_draft_model_cache_is_cropped_to_the_surviving_tokens(tiny_engine):
    drafter = tiny_engine.get_drafter(tiny_engine.drafter_spec)
    seen = []
    original = drafter.update

    def spy(num_accepted, ids_after):
        original(num_accepted, ids_after)
        seen.append((drafter.cache.get_seq_length(), drafter.cached, ids_after.shape[1]))

    drafter.update = spy
    try:
        tiny_engine.generate_ids(torch.tensor([[40, 41, 42, 43, 44]]), max_new_tokens=20, eos_token_ids=[])
    finally:
        del drafter.update
    assert seen
    for cache_len, cached, total in seen:
        assert cache_len == cached < total  # never holds a rejected token, never more than the sequence
