"""Forward passes over a KV cache: `prefill` the prompt once, then `extend` by a few tokens.

Positions are passed explicitly (`position_ids` = cache length onward), so they stay
right after `cache.crop(n)` rolls the cache back to n tokens.

The cache's full-attention layers are `PreallocatedLayer`s: keys and values live in a
buffer with room to grow, so a decode step writes its token in place instead of
`torch.cat`-ing the whole cache into a new tensor (DynamicLayer's way: O(length) copying
per layer per step), and rolling back rejected draft tokens is free.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .lean import lean_forward
from .precision import dense_prefill


def cache_argument(model) -> str:
    """transformers >= 5.x calls it `cache`, older releases `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class PreallocatedLayer(DynamicLayer):
    """A DynamicLayer whose keys/values [B, H, n, D] are views of a buffer [B, H, capacity, D].

    `update` writes the new positions in place (growing the buffer by doubling when full);
    `crop` just shortens the views — later updates overwrite what was dropped. Deep copies
    (the prefix cache's snapshots) hold only the live positions.
    """

    def __init__(self, capacity: int = 0):
        super().__init__()
        self.capacity_hint = capacity  # positions to allocate on first use (grows past it if needed)
        self._key_buffer = self._value_buffer = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        if self._key_buffer is None or end > self._key_buffer.shape[-2]:
            self._grow(key_states, value_states, length, end)
        self._key_buffer[..., length:end, :] = key_states
        self._value_buffer[..., length:end, :] = value_states
        self.keys, self.values = self._key_buffer[..., :end, :], self._value_buffer[..., :end, :]
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, length: int, end: int) -> None:
        size = max(end, self.capacity_hint, 2 * (0 if self._key_buffer is None else self._key_buffer.shape[-2]))
        buffers = []
        for old, new in ((self.keys, key_states), (self.values, value_states)):
            buffer = new.new_empty(*new.shape[:-2], size, new.shape[-1])  # [B, H, size, D]
            if length:
                buffer[..., :length, :] = old[..., :length, :]
            buffers.append(buffer)
        self._key_buffer, self._value_buffer = buffers

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()

    def __deepcopy__(self, memo):
        copy = PreallocatedLayer(self.capacity_hint)
        if self.is_initialized and self.keys is not None:
            copy.lazy_initialization(self.keys, self.values)
            copy._key_buffer, copy._value_buffer = self.keys.clone(), self.values.clone()  # live positions only
            copy.keys, copy.values = copy._key_buffer, copy._value_buffer
        return copy


def new_cache(model, capacity: int = 0) -> DynamicCache:
    """A cache for `model`; `capacity` (prompt + reply + a draft, when known) sizes the buffers once."""
    cache = DynamicCache(config=model.config)
    cache.layers = [PreallocatedLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    reserve(cache, capacity)
    return cache


def reserve(cache: DynamicCache, capacity: int) -> None:
    """Let the cache's buffers grow straight to `capacity` positions on their next allocation."""
    for layer in cache.layers:
        if isinstance(layer, PreallocatedLayer):
            layer.capacity_hint = capacity


def extend(model, cache_arg: str, cache: DynamicCache, input_ids: torch.Tensor, start: int, keep: int) -> torch.Tensor:
    """Append input_ids [1, T] at positions start..start+T-1; return logits [1, keep, V] of the last `keep`."""
    positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)[None]  # [1, T]
    lean = lean_forward(model) if input_ids.shape[0] == 1 else None
    if lean is not None:  # Llama-family: the same maths with less Python per layer (lean.py)
        return lean(cache, input_ids, positions, keep)
    out = model(input_ids=input_ids, position_ids=positions, use_cache=True, logits_to_keep=keep,
                **{cache_arg: cache})
    return out.logits


def prefill(model, cache_arg: str, cache: DynamicCache, prompt_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
    """prompt_ids: [1, S] (positions start.. onward; the cache holds the first `start`) -> logits
    of the last position: [1, 1, V]. The prompt is encoded once, with the quantised linears'
    bf16 copies where they have them (precision.py: dense_prefill)."""
    with dense_prefill():
        return extend(model, cache_arg, cache, prompt_ids, start=start, keep=1)


def crop(cache: DynamicCache, length: int) -> None:
    """Roll the cache back to its first `length` positions (drop rejected draft tokens).

    A negative argument means "remove that many tokens" in every transformers release.
    """
    remove = cache.get_seq_length() - length
    if remove > 0:
        cache.crop(-remove)
