"""Row-invariant attention: a verify forward over W tokens computes each token's attention
exactly as a 1-token decode step at that position would, bit for bit.

Why: lossless greedy speculation needs the target's logits for token j of a (k+1)-token
verify forward to equal those of plain decoding at that position. With stock fp32 kernels
they differ by ~1e-6 between widths (MKL GEMM vs GEMV, SDPA), which almost never flips an
argmax. The engine's CPU linears are row-invariant — fp32 through oneDNN's packed kernel
(packed.py), int8/int4 through aten's pack kernels, which compute each row alone
(tests/engine/test_row_invariance.py) — but attention over several rows at once is not,
and at int8/int4 the bf16 activation casts amplify its width-dependent rounding into
flipped argmaxes. Computing attention row by row, each query over exactly its causal
prefix of keys, makes the whole forward row-invariant, so speculation at fp32 (packed),
int8 and int4 is lossless by construction.

    row_invariant_attention(module, q [B,H,W,D], k [B,Hkv,L,D], v, mask, scaling=...)
        for j in 0..W-1: out_j = SDPA(q[:, :, j:j+1], k[:, :, :L-W+j+1], v[...])   # no mask needed

Draft trees (a 4-D boolean mask from forward.extend_tree: row j sees the cache and its own
ancestors in the block) keep the same guarantee: row j's path — its ancestors' keys/values,
root first — is written into the slots right after the cache, so it sees exactly the contiguous
keys the chain forward of that path would have in the same place, and the block's own
keys/values are put back afterwards. A row whose path already sits there (every row of a
chain) copies nothing.

Grouped-query heads read their shared key/value head in place (`enable_gqa`, no repeat_kv copy).
Cost: W small SDPA calls per layer instead of one (verify widths are <= 33). Prompts take
the fused SDPA path at any width (inside `prompt_pass()`, which forward.prefill enters; and
any forward wider than MAX_ROWS): plain and speculative decoding prefill a prompt
identically, so the prompt's cache is the same either way. The same flag has quantised
linears use their bf16 copies (precision.py: dense prefill). int4a8 models (ROWS_PREFILL)
encode prompts through this row loop instead, MAX_ROWS rows a forward (forward.rows_prefill).

`use_row_invariant_attention(model)` registers it under "row_invariant" and switches the
model to it; calls it cannot serve exactly (batch > 1, padding masks, sliding windows) fall
back to SDPA, the model's own attention. Models whose attention is not SDPA's maths (classes
that do not support SDPA: Gemma-2's soft-capping, gpt-oss's attention sinks) keep their own
attention and are not switched. SDPA's mask function is registered
for it too, so transformers builds a padded batch's mask (model.generate over prompts of
different lengths); the engine's lean forward (one sequence) builds none, as before.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.integrations.sdpa_attention import sdpa_attention_forward

NAME = "row_invariant"
MAX_ROWS = 64  # wider forwards (prompts) use fused SDPA; verify steps are at most 33 wide
# kwargs that change the maths in ways the row loop does not implement
_UNSUPPORTED = ("sliding_window", "s_aux", "softcap", "position_bias")
_PROMPT = ContextVar("chatnexus_prompt_pass", default=False)
# an attention module with this attribute set runs its rows through kernels/q4a8.cpp's attend_rows
# (precision.py sets it on int4a8 models: that precision's kernels, built and loaded by then)
ATTEND_ROWS = "chatnexus_attend_rows"
# a model with this attribute set encodes prompts through its decode path (forward.rows_prefill)
ROWS_PREFILL = "chatnexus_rows_prefill"


@contextmanager
def prompt_pass():
    """Inside, forwards encode a prompt: attention is fused SDPA at every width (prompt chunks
    need no row invariance) and quantised linears use their bf16 copies where they have them."""
    token = _PROMPT.set(True)
    try:
        yield
    finally:
        _PROMPT.reset(token)


def in_prompt_pass() -> bool:
    """Are we inside prompt_pass()?"""
    return _PROMPT.get()


def row_invariant_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, dropout: float = 0.0,
                            scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    # query: [B, H, W, D]; key/value: [B, Hkv, L, D], the cache included: the W queries are the last W positions
    batch, heads, width, _ = query.shape
    length = key.shape[2]
    if (batch != 1 or width > MAX_ROWS or _PROMPT.get() or dropout or length < width
            or any(kwargs.get(name) is not None for name in _UNSUPPORTED)
            or (attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.all()))):
        if attention_mask is None and width > 1 and length > width:
            # transformers hands a registered attention function no mask, and SDPA's own
            # is_causal aligns top-left: with a cache in front (a reused prompt prefix) query j
            # would see keys 0..j only. Spell out the causal mask, aligned bottom-right.
            attention_mask = torch.ones(width, length, dtype=torch.bool, device=query.device).tril(
                diagonal=length - width)[None, None]  # [1, 1, W, L]
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    gqa = heads != key.shape[1]  # grouped-query heads share key/value heads: no repeat_kv copy of the cache
    paths = None  # a chain: row j sees the block's rows 0..j
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.dtype == torch.bool:
        paths = _block_paths(attention_mask, length - width)  # a draft tree's (forward.tree_layout)
        if paths is None:  # the cache in front not wholly visible: not a mask the row loop serves
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, **kwargs)
    fast = getattr(module, ATTEND_ROWS, False) and query.dtype == torch.float32 and query.shape[-1] % 16 == 0 \
        and query.shape[-1] <= 256
    return _attend_rows(query, key, value, query.shape[-1] ** -0.5 if scaling is None else scaling, gqa, paths, fast)


# (a weak reference to the last tree mask seen, its rows' paths): every layer of a forward gets the
# same mask object, so it is read once per forward, not once per layer
_last_paths: tuple = (lambda: None, None)


def _block_paths(mask: torch.Tensor, start: int) -> list[list[int]] | None:
    """For a [1, 1, W, L] boolean mask whose rows all see the cache (keys 0..start-1): each row's
    visible rows of the block, ascending (its ancestors and itself); None for any other mask."""
    global _last_paths
    seen, paths = _last_paths
    if seen() is not mask:
        allowed = mask[0, 0]
        paths = ([[i for i, visible in enumerate(row) if visible] for row in allowed[:, start:].tolist()]
                 if bool(allowed[:, :start].all()) else None)
        _last_paths = (weakref.ref(mask), paths)
    return paths


# (the last tree's paths object, its [W, W] index and [W] depths): built once per forward, not per layer
_last_path_tensors: tuple = (None, None, None)


def _path_tensors(paths: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    global _last_path_tensors
    seen, index, depths = _last_path_tensors
    if seen is not paths:
        index = torch.zeros(width, width, dtype=torch.long)
        for j, path in enumerate(paths):
            index[j, :len(path)] = torch.tensor(path)
        depths = torch.tensor([len(path) for path in paths])
        _last_path_tensors = (paths, index, depths)
    return index, depths


def _attend_rows(query, key, value, scaling, gqa, paths=None, fast=False):
    """Each query row alone over its keys: the whole cache, then the block's rows paths[j]
    (ascending; None: a chain, rows 0..j). A tree row's path is first copied into the slots right
    after the cache, where its chain would have it; the block is put back at the end. `fast`:
    all rows in one C++ call (kernels/q4a8.cpp, attend_rows), a tree row reading its path's keys
    in place, in its chain's order — no copying."""
    width, start = query.shape[2], key.shape[2] - query.shape[2]
    if fast:  # every row in one C++ call; a tree row reads its path's keys where they are
        if paths is None:
            return torch.ops.chatnexus.attend_rows(query, key, value, scaling), None  # [B, W, H, D]
        index, depths = _path_tensors(paths, width)
        return torch.ops.chatnexus.attend_rows(query, key, value, scaling, index, depths), None
    held = list(range(width))  # which block row's keys/values sit in slot start + i now
    saved = None
    rows = []
    for j in range(width):
        depth = j + 1 if paths is None else len(paths[j])
        if paths is not None and held[:depth] != paths[j]:
            if saved is None:  # the block as the forward wrote it, to copy paths from and put back
                saved = key[:, :, start:].clone(), value[:, :, start:].clone()
            index = torch.tensor(paths[j], device=key.device)
            key[:, :, start:start + depth] = saved[0][:, :, index]
            value[:, :, start:start + depth] = saved[1][:, :, index]
            held[:depth] = paths[j]
        end = start + depth  # query j sees keys 0..end-1
        rows.append(F.scaled_dot_product_attention(query[:, :, j:j + 1], key[:, :, :end], value[:, :, :end],
                                                   scale=scaling, enable_gqa=gqa))  # [B, H, 1, D]
    if saved is not None:
        key[:, :, start:], value[:, :, start:] = saved
    out = rows[0] if width == 1 else torch.cat(rows, dim=2)  # [B, H, W, D]
    return out.transpose(1, 2).contiguous(), None  # [B, W, H, D], as HF attention functions return


AttentionInterface.register(NAME, row_invariant_attention)
# The masks SDPA takes, so a padded batch (model.generate over prompts of different lengths)
# reaches the fallback above with its padding mask; without a mask function registered,
# transformers builds none for this attention and padded rows would attend to the padding.
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_row_invariant_attention(model, attend_rows: bool = False) -> bool:
    """Switch every attention layer of `model` to row_invariant_attention (in place); `attend_rows`:
    its rows through the C++ loop (the int4a8 kernels must be loaded). Returns False, leaving the
    model as it is, where its class does not support SDPA: its attention takes arguments
    (softcap, s_aux) that neither the row loop nor the SDPA fallback implements."""
    if not getattr(model, "_supports_sdpa", False):
        return False
    model.set_attn_implementation(NAME)
    for module in model.modules():
        if hasattr(module, "num_key_value_groups"):
            setattr(module, ATTEND_ROWS, attend_rows)
    return True
