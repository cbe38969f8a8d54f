"""Forward passes over a KV cache: `prefill` the prompt once, then `extend` by a few tokens.

Positions are passed explicitly (`position_ids` = cache length onward), so they stay
right after `cache.crop(n)` rolls the cache back to n tokens.

Layers other than full attention (sliding-window: Mistral, Gemma-2/3, Phi-3) keep only the
window's keys, so they can roll back only what was appended while they recorded their past:
`track_rollback` turns that on once the prompt is in (as transformers' assisted generation
does), and `crop` then trims them back to the window after every step. A cache that cannot
roll back at all (recurrent state: linear attention, Mamba) refuses drafting.

The cache's full-attention layers are `PreallocatedLayer`s: keys and values live in a
buffer with room to grow, so a decode step writes its token in place instead of
`torch.cat`-ing the whole cache into a new tensor (DynamicLayer's way: O(length) copying
per layer per step), and rolling back rejected draft tokens is free.

Prompts are encoded in chunks that end at fixed positions (multiples of PREFILL_CHUNK), so
the keys and values of every full chunk are computed by exactly the same operations on
exactly the same inputs whichever prompt they belong to and wherever its prefill started:
a prompt prefilled on top of a stored prefix of whole chunks (prefix_cache.py) gets, bit
for bit, the cache and logits a fresh prefill gives it.

Models whose decode path is fast enough for prompts too (int4a8: `rows_prefill`) encode them
through it instead, ROW_PREFILL_WIDTH rows a forward: every kernel of that path computes each
row alone (row-invariant, the property lossless speculation rests on), so a prompt's keys and
values are those of decoding it token by token, however it is cut — a stored prefix can end
anywhere (prefix_cache.py then stores REUSE_CHUNK-token pieces), not only at a multiple of 128.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .attention import ROWS_PREFILL, prompt_pass
from .errors import EngineError
from .lean import lean_forward

# Prompt chunk width. Fresh prompts pay for the chunks (measured on the bundled model, 2-core
# EPYC, ~280-token prompts: +6% prefill time at fp32, +24% at int4 against one pass; 64-wide
# chunks +23% / +57%), reused prefixes are whole chunks: a bot's ~270-token system prompt
# reuses 256 tokens. docs/cpu-speed.md, "Prompt prefix reuse".
PREFILL_CHUNK = 128
# Row-by-row prompts (rows_prefill models): rows per forward (row-invariant attention serves at
# most attention.MAX_ROWS), and the prefix cache's piece. On the Xeon measured, 64-row forwards
# of an int4a8 model prefill 40/150/300/440-token prompts in 30/109/216/352 ms, against
# 54/135/238/365 ms for the bf16 prompt pass (docs/cpu-speed.md).
ROW_PREFILL_WIDTH = 64
REUSE_CHUNK = 16


def rows_prefill(model) -> bool:
    """Does `model` encode prompts through its row-invariant decode path (module docstring)?"""
    return bool(getattr(model, ROWS_PREFILL, False))


def reuse_chunk(model) -> int:
    """The prefix granularity at which `model`'s prompt caches are exact (prefix_cache.py)."""
    return REUSE_CHUNK if rows_prefill(model) else PREFILL_CHUNK


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


# set by track_rollback on a cache with layers other than PreallocatedLayers: crop() trims them every step
_TRIMS = "chatnexus_trims"


def new_cache(model, capacity: int = 0) -> DynamicCache:
    """A cache for `model`; `capacity` (prompt + reply + a draft, when known) sizes the buffers once."""
    cache = DynamicCache(config=model.config)
    cache.layers = [PreallocatedLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    reserve(cache, capacity)
    return cache


def track_rollback(cache: DynamicCache) -> None:
    """Make `crop` able to drop what later forwards append (call it after the prompt's prefill:
    before, a sliding-window layer would hold the whole prompt). Raises EngineError where a layer
    cannot be rolled back (transformers' `is_croppable`: a recurrent state has no past to return to)."""
    if all(type(layer) is PreallocatedLayer for layer in cache.layers):
        return  # full attention only: PreallocatedLayer.crop is always exact
    stuck = sorted({type(layer).__name__ for layer in cache.layers if not layer.is_croppable})
    if stuck:
        raise EngineError(f"this model's cache ({', '.join(stuck)}) keeps a recurrent state that cannot be rolled "
                          "back after a rejected draft; use drafter 'none'")
    cache.activate_past_recording()
    setattr(cache, _TRIMS, True)


def reserve(cache: DynamicCache, capacity: int) -> None:
    """Let the cache's buffers grow straight to `capacity` positions on their next allocation."""
    for layer in cache.layers:
        if isinstance(layer, PreallocatedLayer):
            layer.capacity_hint = capacity


def extend(model, cache_arg: str, cache: DynamicCache, input_ids: torch.Tensor, start: int,
           keep: int) -> torch.Tensor | None:
    """Append input_ids [1, T] at positions start..start+T-1; return logits [1, keep, V] of the
    last `keep` (keep=0: only fill the cache, return None)."""
    positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)[None]  # [1, T]
    lean = lean_forward(model) if input_ids.shape[0] == 1 else None
    if lean is not None:  # Llama-family: the same maths with less Python per layer (lean.py)
        return lean(cache, input_ids, positions, keep)
    out = model(input_ids=input_ids, position_ids=positions, use_cache=True, logits_to_keep=max(keep, 1),
                **{cache_arg: cache})
    return out.logits if keep else None


# ---------------------------------------------------------------------------- draft trees

# attention functions that honour a tree's 4-D mask: any mask (sdpa, eager), or the row-invariant
# one (fp32 packed, int8, int4: attention.py), which lays each row's path out as its chain would
TREE_ATTENTION = ("sdpa", "eager", "row_invariant")


def tree_supported(model) -> bool:
    """Can `model` verify a draft tree in one forward? It needs the lean forward (which takes
    positions and a mask as given) and an attention function that honours a tree's mask."""
    return lean_forward(model) is not None and model.config._attn_implementation in TREE_ATTENTION


def tree_layout(parents: list[int], start: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A draft tree flattened after the last token (row 0): node i is row i + 1, parents[i] < i its
    parent node (-1: the last token). Returns (positions [1, T], allowed [T, start + T] bool: row r
    sees the cache and its own ancestors in the tree, itself included)."""
    rows = len(parents) + 1
    depth = [0] * rows
    ancestors = [[0]]  # rows each row sees inside the block
    for i, parent in enumerate(parents, 1):
        depth[i] = depth[parent + 1] + 1
        ancestors.append(ancestors[parent + 1] + [i])
    block = torch.zeros(rows, rows, dtype=torch.bool)
    for row, seen in enumerate(ancestors):
        block[row, seen] = True
    allowed = torch.cat((torch.ones(rows, start, dtype=torch.bool), block), dim=1).to(device)
    positions = (start + torch.tensor(depth))[None].to(device)
    return positions, allowed


def extend_tree(model, cache: DynamicCache, input_ids: torch.Tensor, start: int, parents: list[int]) -> torch.Tensor:
    """Verify a draft tree in one forward: input_ids [1, T] = the last token then the tree's nodes
    (`parents` as in tree_layout), appended at cache positions start..start+T-1, each at the
    position of its depth and attending to the cache and its ancestors only. Returns logits
    [1, T, V]: row r is what the target predicts after the path to row r. Call keep_path next."""
    positions, allowed = tree_layout(parents, start, input_ids.device)
    if model.config._attn_implementation == "eager":  # an additive mask
        dtype = model.get_input_embeddings().weight.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
    else:
        mask = allowed
    return lean_forward(model)(cache, input_ids, positions, input_ids.shape[1], mask=mask[None, None])


def keep_path(cache: DynamicCache, start: int, path: list[int]) -> None:
    """After extend_tree: move the keys/values of the accepted nodes `path` (node indices, root
    first) to positions start+1.. so the cache reads as if the path alone had been verified;
    crop() then drops the rest. Node indices grow along a path, so copying in order is safe."""
    moves = [(start + 1 + j, start + 1 + node) for j, node in enumerate(path) if node != j]
    if not moves:
        return
    device = cache.layers[0].keys.device
    dst = torch.tensor([d for d, _ in moves], device=device)
    src = torch.tensor([s for _, s in moves], device=device)
    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):  # [B, H, n, D] (views of the preallocated buffers)
            tensor[..., dst, :] = tensor[..., src, :]


def prefill(model, cache_arg: str, cache: DynamicCache, prompt_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
    """prompt_ids: [1, S] (positions start.. onward; the cache holds the first `start`) -> logits
    of the last position: [1, 1, V]. Encoded chunk by chunk, each ending at the next multiple of
    PREFILL_CHUNK (or at the prompt's end), in a prompt pass (attention.prompt_pass: fused
    attention, the quantised linears' bf16 copies where they have them). `start` a multiple of
    PREFILL_CHUNK (0, or what PrefixCache.load returns) gives the fresh prefill's bits. A
    rows_prefill model encodes it through its decode path instead, from any `start`."""
    end = start + prompt_ids.shape[1]
    rows = rows_prefill(model)  # the decode path, ROW_PREFILL_WIDTH rows at a time: exact from any start
    with nullcontext() if rows else prompt_pass():
        position = start
        while True:
            stop = min(end, position + ROW_PREFILL_WIDTH if rows else (position // PREFILL_CHUNK + 1) * PREFILL_CHUNK)
            logits = extend(model, cache_arg, cache, prompt_ids[:, position - start:stop - start], start=position,
                            keep=1 if stop == end else 0)  # logits of the prompt's last position only
            if stop == end:
                return logits
            position = stop


def crop(cache: DynamicCache, length: int) -> None:
    """Roll the cache back to its first `length` positions (drop rejected draft tokens).

    A negative argument means "remove that many tokens" in every transformers release. Layers
    that record their past (track_rollback) are cropped every step, even by 0: that trims a
    sliding window's layer back to the window.
    """
    remove = cache.get_seq_length() - length
    if remove > 0 or (remove == 0 and getattr(cache, _TRIMS, False)):
        cache.crop(-remove)
