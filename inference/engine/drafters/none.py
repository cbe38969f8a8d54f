"""The `none` drafter: proposes nothing, so the loop is plain decoding — the honest baseline."""

from __future__ import annotations

import torch

from .base import Drafter


class NoDrafter(Drafter):
    name = "none"

    @classmethod
    def from_spec(cls, arg: str, target_model, tokenizer, device: torch.device, dtype: torch.dtype) -> "NoDrafter":
        return cls()

    def propose(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, None]:
        return ids[0, :0], None  # [0], on the ids' device
