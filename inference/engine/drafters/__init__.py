"""Drafters and their one registry: spec "none" | "lookup" | "suffix" | "recycle" | "model:<model spec>",
or several joined by "+" ("suffix+lookup"): the best proposal of each step wins."""

from __future__ import annotations

import torch

from ..errors import EngineError
from .base import Drafter
from .combined import CombinedDrafter
from .lookup import PromptLookupDrafter
from .model import ModelDrafter
from .none import NoDrafter
from .recycle import RecycleDrafter, RecycleMemory, RecycleTable
from .suffix import SuffixDrafter, SuffixIndex, SuffixMemory

# spec prefix (before ":") -> class with from_spec(arg, target_model, tokenizer, device, dtype)
DRAFTERS: dict[str, type[Drafter]] = {
    "none": NoDrafter,
    "lookup": PromptLookupDrafter,
    "model": ModelDrafter,
    "suffix": SuffixDrafter,
    "recycle": RecycleDrafter,
}


def split_combined(spec: str) -> list[str]:
    """"suffix+lookup+model:<spec>" -> ["suffix", "lookup", "model:<spec>"]; a model spec may hold "+"."""
    head, sep, model = spec.partition("model:")
    parts = [p for p in head.split("+") if p]
    return parts + [sep + model] if sep else parts


def make_drafter(spec: str, target_model, tokenizer, device: torch.device | str | None,
                 dtype: torch.dtype | str | None) -> Drafter:
    """Build a drafter from its spec, e.g. "lookup", "suffix+lookup" or "model:HuggingFaceTB/SmolLM2-135M-Instruct".

    `dtype` goes to a draft model's `load_model`: a precision (name or object) or a torch dtype,
    so the draft runs at the target's precision by default."""
    if "+" in spec.partition("model:")[0]:
        return CombinedDrafter([make_drafter(part, target_model, tokenizer, device, dtype)
                                for part in split_combined(spec)])
    kind, _, arg = spec.partition(":")
    if kind not in DRAFTERS:
        raise EngineError(f"unknown drafter {spec!r}; use one of {sorted(DRAFTERS)} (model as 'model:<spec>')")
    if kind == "model" and not arg:
        raise EngineError("drafter 'model' needs a model spec: 'model:<HF id | folder | .gguf path>'")
    device = torch.device(device) if device is not None else target_model.device
    dtype = dtype or target_model.dtype
    return DRAFTERS[kind].from_spec(arg, target_model, tokenizer, device, dtype)


__all__ = ["DRAFTERS", "CombinedDrafter", "Drafter", "ModelDrafter", "NoDrafter", "PromptLookupDrafter",
           "RecycleDrafter", "RecycleMemory", "RecycleTable", "SuffixDrafter", "SuffixIndex", "SuffixMemory",
           "make_drafter"]
