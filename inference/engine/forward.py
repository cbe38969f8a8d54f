"""Forward passes over a KV cache: `prefill` the prompt once, then `extend` by a few tokens.

Positions are passed explicitly (`position_ids` = cache length onward), so they stay
right after `cache.crop(n)` rolls the cache back to n tokens.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache


def cache_argument(model) -> str:
    """transformers >= 5.x calls it `cache`, older releases `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_cache(model) -> DynamicCache:
    return DynamicCache(config=model.config)


def extend(model, cache_arg: str, cache: DynamicCache, input_ids: torch.Tensor, start: int, keep: int) -> torch.Tensor:
    """Append input_ids [1, T] at positions start..start+T-1; return logits [1, keep, V] of the last `keep`."""
    positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)[None]  # [1, T]
    out = model(input_ids=input_ids, position_ids=positions, use_cache=True, logits_to_keep=keep,
                **{cache_arg: cache})
    return out.logits


def prefill(model, cache_arg: str, cache: DynamicCache, prompt_ids: torch.Tensor) -> torch.Tensor:
    """prompt_ids: [1, S] -> logits of the last position: [1, 1, V]. The prompt is encoded once."""
    return extend(model, cache_arg, cache, prompt_ids, start=0, keep=1)


def crop(cache: DynamicCache, length: int) -> None:
    """Roll the cache back to its first `length` positions (drop rejected draft tokens).

    A negative argument means "remove that many tokens" in every transformers release.
    """
    remove = cache.get_seq_length() - length
    if remove > 0:
        cache.crop(-remove)
