"""Prompt lookup drafting: copy what followed the last time the current n-gram appeared.

Chat replies quote the system prompt, retrieved knowledge and the history a lot, so the
tokens after an earlier occurrence of the last n tokens are a free, often right, draft.
n goes from `max_ngram` down to 1; the most recent earlier occurrence wins.

The index is incremental: for every n it maps an n-gram to the position right after its
latest occurrence that already has a follower, updated only for tokens appended since the
last call — O(new tokens) dictionary work per step, never a scan over the whole context.
"""

from __future__ import annotations

import torch

from ..errors import EngineError
from .base import Drafter


class PromptLookupDrafter(Drafter):
    name = "lookup"

    def __init__(self, max_ngram: int = 3):
        self.max_ngram = max_ngram  # longest n-gram matched; shorter ones are the fallback
        self.begin(torch.empty(1, 0, dtype=torch.long))

    @classmethod
    def from_spec(cls, arg: str, target_model, tokenizer, device: torch.device, dtype: torch.dtype):
        if arg and not (arg.isdigit() and 1 <= int(arg) <= 16):
            raise EngineError(f"lookup drafter option {arg!r}: use the longest n-gram to match, 1 to 16 (e.g. lookup:4)")
        return cls(max_ngram=int(arg) if arg else 3)  # "lookup:4" matches up to 4-grams

    def begin(self, prompt_ids, sampling=None, generator=None) -> None:
        self.tokens: list[int] = []
        # index[n][ngram] = position just after the latest occurrence of ngram that has a follower
        self.index: list[dict[tuple[int, ...], int]] = [{} for _ in range(self.max_ngram + 1)]

    def _extend(self, ids: torch.Tensor) -> None:
        """Index tokens appended since the last call (accepted ids only ever grow)."""
        new = ids[0, len(self.tokens):].tolist()
        tokens = self.tokens
        for token in new:
            end = len(tokens)  # the n-grams ending here now get `token` as their follower
            for n in range(1, min(self.max_ngram, end) + 1):
                self.index[n][tuple(tokens[end - n:end])] = end
            tokens.append(token)

    def propose(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, None]:
        self._extend(ids)
        tokens = self.tokens
        for n in range(min(self.max_ngram, len(tokens)), 0, -1):
            start = self.index[n].get(tuple(tokens[-n:]))
            if start is not None:
                return torch.tensor(tokens[start:start + k], dtype=torch.long, device=ids.device), None
        return ids[0, :0], None  # no match: a plain step
