"""Draft-model drafting: a small causal LM from the target's family proposes k tokens.

The draft keeps its own KV cache across steps. After verification, `update` crops it back
to the tokens that survived; the next `propose` first feeds the tokens it has not seen
(the target's correction/bonus token, or its own last draft token) — one forward — and
then drafts k tokens one by one. Draft probabilities q are shaped with the same sampling
settings as the target's p, which speculative sampling needs to stay lossless.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..forward import cache_argument, crop, extend, new_cache, track_rollback
from ..loading import check_same_vocabulary, load_model, max_positions
from ..sampling import SamplingParams, probs_from_logits, sample
from .base import Drafter


class ModelDrafter(Drafter):
    def __init__(self, model, spec: str, target_vocab_size: int):
        self.model = model
        self.name = f"model:{spec}"
        self.cache_arg = cache_argument(model)
        self.target_vocab_size = target_vocab_size  # q must be [k, V_target]; embeddings may be padded
        self.max_positions = max_positions(model) or 1 << 30
        self.begin(torch.empty(1, 0, dtype=torch.long))

    @classmethod
    def from_spec(cls, arg: str, target_model, tokenizer, device: torch.device, dtype: torch.dtype):
        draft_model, draft_tokenizer = load_model(arg, device=device, dtype=dtype)
        check_same_vocabulary(target_model, tokenizer, draft_model, draft_tokenizer, arg)
        return cls(draft_model, arg, target_model.get_output_embeddings().weight.shape[0])

    def begin(self, prompt_ids, sampling: SamplingParams = SamplingParams(), generator=None) -> None:
        self.cache = new_cache(self.model)
        self.cached = 0  # tokens held in self.cache
        self.proposed_from = 0  # length of the ids the last proposal continued
        self.sampling = sampling
        self.generator = generator

    def propose(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = ids.shape[1]
        k = max(0, min(k, self.max_positions - n))
        self.proposed_from = n
        if k == 0:
            return torch.empty(0, dtype=torch.long, device=ids.device), None
        logits = self._logits(ids[:, self.cached:], self.cached)  # [1, V]
        if self.cached == 0:  # the prompt is in: drafts get cropped from now on (sliding windows record their past)
            track_rollback(self.cache)
        self.cached = n
        tokens, probs = [], []
        for i in range(k):
            if self.sampling.greedy:
                token = logits.argmax(dim=-1)  # [1]
            else:
                q = self._match_vocab(probs_from_logits(logits, self.sampling))  # [1, V]
                token = sample(q, self.generator)  # [1]
                probs.append(q)
            tokens.append(token)
            if i < k - 1:
                logits = self._logits(token[None], self.cached)
                self.cached += 1
        draft_ids = torch.cat(tokens)  # [k]
        return draft_ids, (torch.cat(probs) if probs else None)  # None at T=0: greedy ignores q

    def update(self, num_accepted: int, ids_after: torch.Tensor) -> None:
        # the cache holds ids + d_1..d_{k-1}; only ids + the accepted drafts are still valid
        valid = self.proposed_from + num_accepted
        if self.cached >= valid:  # even when nothing is dropped: crop trims sliding windows back
            crop(self.cache, valid)
            self.cached = valid

    def _logits(self, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        """The draft's next-token logits after input_ids [1, T]: [1, V], cut to the target's rows.
        Rows past them are padding: never a draft (the target has no embedding for them), and no
        share of q either (softmax then spreads q over real tokens only, as p is)."""
        logits = extend(self.model, self.cache_arg, self.cache, input_ids, start, keep=1)[0]  # [1, V_draft]
        return logits[..., :self.target_vocab_size]

    def _match_vocab(self, q: torch.Tensor) -> torch.Tensor:
        """q: [1, V_draft] -> [1, V_target]; the target's extra rows are padding, never real tokens."""
        extra = self.target_vocab_size - q.shape[-1]
        return F.pad(q, (0, extra)) if extra > 0 else q
