"""A lean forward for Llama-family decoders: transformers' own maths, without its per-call plumbing.

    forward = lean_forward(model)        # None where the model is not one it serves exactly
    logits = forward(cache, input_ids, positions, keep)   # == model(...).logits[:, -keep:], bit for bit

Why: on a 2-core CPU a decode step of the bundled 135M model at int4 spends about half its
time outside the matmul kernels — ~40 small tensor ops and a dozen module calls per layer,
30 layers, every step. transformers' modules add keyword plumbing, deprecation and
output-recording wrappers and per-layer member lookups on top. This runs the same tensor
operations in the same order with less Python around them:

- every layer is one plain Python function call: no nn.Module __call__ for the decoder layer,
  attention, MLP and norms (the norms' formula is inlined, op for op as LlamaRMSNorm);
- rotary embedding is applied to the queries and keys together (they sit side by side in the
  fused q/k/v output): the same elementwise ops on one tensor instead of two, so the same bits;
- the linears are direct kernel calls looked up once per model (precision.direct_linear:
  the int4/int8 kernel, the bf16 copy inside a prompt pass, or F.linear), and q/k/v and
  gate/up run as the one fused quantised linear they already are (SharedInputGroup),
  without the per-member hand-off;
- the causal mask and rotary cos/sin are built once per forward (as transformers does), the
  attention function is the one the model is configured with (row-invariant attention under
  int8/int4: speculation stays lossless).

At int4a8 (this engine's own kernels, precision.py) it goes further: each RMSNorm runs inside
the kernel call of the linear after it (norm + q/k/v, norm + gate/up, final norm + lm_head),
q and k are rotated in one C++ call (bit-identical to the formula above) and attention rows
run in C++ (attention.py). The fused norm is the kernel's own fp32 loop, so int4a8 logits are
close to, not bit for bit, the model's own forward; plain and speculative decoding both run
this forward, so speculation stays lossless.

Saves 20-25 % of an int4 decode step and 8-14 % of an fp32 one on the bundled model (2-core
Xeon, docs/cpu-speed.md). The result is
bit-identical to the model's own forward (tests/engine/test_lean_forward.py checks every
precision), so faithfulness and losslessness are unchanged. Models it does not know (any
architecture but LlamaForCausalLM with the stock layer classes) keep transformers' forward.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from transformers.masking_utils import create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama import modeling_llama as llama

from .attention import NAME as ROW_INVARIANT
from .attention import ATTEND_ROWS, in_prompt_pass
from .precision import SharedInputMember, direct_linear, direct_norm_linear

_runners: "weakref.WeakKeyDictionary[torch.nn.Module, LeanLlama | None]" = weakref.WeakKeyDictionary()


def lean_forward(model) -> "LeanLlama | None":
    """The lean forward for `model` (built once per model), or None: use model(...) (also in
    training mode: attention dropout is not implemented here)."""
    if model.training:
        return None
    if model not in _runners:
        _runners[model] = LeanLlama(model) if LeanLlama.serves(model) else None
    return _runners[model]


def forget(model) -> None:
    """Drop `model`'s lean forward: its modules changed (apply_precision swaps the linears)."""
    _runners.pop(model, None)


def _rms_norm(norm: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm.forward, op for op."""
    return _rms(hidden, norm.weight, norm.variance_epsilon)


def _rms(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = hidden.dtype
    if dtype != torch.float32:  # .to() to the same dtype returns the tensor itself: skip the call
        hidden = hidden.to(torch.float32)
    variance = hidden.pow(2).mean(-1, keepdim=True)
    hidden = hidden * torch.rsqrt(variance + eps)
    return weight * (hidden if dtype == torch.float32 else hidden.to(dtype))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """apply_rotary_pos_emb for one tensor [1, H, T, D] (cos, sin: [1, 1, T, D]), op for op."""
    half = x.shape[-1] // 2
    return (x * cos) + (torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin)


def _linears(members: list[torch.nn.Module], dense: bool):
    """Sibling linears (q/k/v or gate/up) -> (one function computing all their outputs side by
    side, their sizes) where precision.py fused them, else None and a function per member."""
    first = members[0]
    if isinstance(first, SharedInputMember):
        return direct_linear(first.group.fused, dense), first.group.sizes
    return None, [direct_linear(m, dense) for m in members]


def _norm_linear(norm: torch.nn.Module, first: torch.nn.Module, dense: bool):
    """norm + the fused linear `first` belongs to, as one kernel call where precision.py offers it."""
    if not isinstance(first, SharedInputMember):
        return None
    return direct_norm_linear(norm.weight, norm.variance_epsilon, first.group.fused, dense)


@dataclass
class _Layer:
    """One decoder layer's weights and linears, looked up once."""
    attention: torch.nn.Module
    norm1: torch.Tensor
    norm2: torch.Tensor
    eps1: float
    eps2: float
    qkv: object  # fused function or None
    qkv_split: list  # sizes (fused) or [q, k, v] functions
    o_proj: object
    gate_up: object
    gate_up_split: list
    down: object
    act: object
    norm_qkv: object = None  # norm1 + fused q/k/v in one kernel call (int4a8), or None
    norm_gate_up: object = None  # norm2 + fused gate/up likewise


class LeanLlama:
    """model(input_ids, position_ids, cache, logits_to_keep).logits for a LlamaForCausalLM."""

    @staticmethod
    def serves(model) -> bool:
        inner = getattr(model, "model", None)
        if type(model) is not llama.LlamaForCausalLM or inner is None:
            return False
        return all(type(layer) is llama.LlamaDecoderLayer and type(layer.self_attn) is llama.LlamaAttention
                   and type(layer.mlp) is llama.LlamaMLP
                   and type(layer.input_layernorm) is type(layer.post_attention_layernorm) is llama.LlamaRMSNorm
                   for layer in inner.layers[:model.config.num_hidden_layers]) \
            and type(inner.norm) is llama.LlamaRMSNorm

    def __init__(self, model):
        self.model = weakref.proxy(model)  # the runner lives in a dict keyed by the model
        self.layers = {dense: [self._plan(layer, dense) for layer in model.model.layers[:model.config.num_hidden_layers]]
                       for dense in (False, True)}
        attention = model.model.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.query_heads = model.config.num_attention_heads
        self.rotated = (model.config.num_attention_heads + model.config.num_key_value_heads) * self.head_dim
        # int4a8 models (their kernels loaded, fp32 activations) rotate q and k in one C++ call
        self.rotary_kernel = bool(getattr(attention, ATTEND_ROWS, False)) and model.dtype == torch.float32
        self.norm_head = direct_norm_linear(model.model.norm.weight, model.model.norm.variance_epsilon,
                                            model.lm_head, False)

    @staticmethod
    def _plan(layer, dense: bool) -> _Layer:
        attention, mlp = layer.self_attn, layer.mlp
        qkv, qkv_split = _linears([attention.q_proj, attention.k_proj, attention.v_proj], dense)
        gate_up, gate_up_split = _linears([mlp.gate_proj, mlp.up_proj], dense)
        norm1, norm2 = layer.input_layernorm, layer.post_attention_layernorm
        return _Layer(attention, norm1.weight, norm2.weight, norm1.variance_epsilon, norm2.variance_epsilon,
                      qkv, qkv_split, direct_linear(attention.o_proj, dense), gate_up, gate_up_split,
                      direct_linear(mlp.down_proj, dense), mlp.act_fn,
                      _norm_linear(norm1, attention.q_proj, dense), _norm_linear(norm2, mlp.gate_proj, dense))

    def __call__(self, cache, input_ids: torch.Tensor, positions: torch.Tensor, keep: int,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, positions: [1, T] -> logits [1, keep, V] of the last `keep` positions (None for 0).
        `mask`: the attention mask [1, 1, T, cache + T] to use instead of the causal one (a draft
        tree's, forward.tree_mask), in the form the model's attention function takes."""
        model = self.model
        inner, config = model.model, model.config
        hidden = inner.embed_tokens(input_ids)  # [1, T, hidden]
        if mask is None and config._attn_implementation != ROW_INVARIANT:  # it needs no mask for one sequence
            mask = create_causal_mask(config=config, inputs_embeds=hidden, attention_mask=None, cache=cache,
                                      position_ids=positions)
        cos, sin = inner.rotary_emb(hidden, position_ids=positions)  # [1, T, D]
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [1, 1, T, D]: broadcast over heads
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation,
                                                       llama.eager_attention_forward)
        for index, layer in enumerate(self.layers[in_prompt_pass()]):
            hidden = self._layer(layer, index, hidden, positions, cos, sin, mask, cache, attend)
        if keep == 0:  # a prompt chunk before the last: only its keys and values are wanted
            return None
        if self.norm_head is not None:
            return self.norm_head(hidden[:, -keep:])
        hidden = _rms_norm(inner.norm, hidden[:, -keep:])  # per row: norming only the kept rows is the same
        return model.lm_head(hidden)

    def _layer(self, layer: _Layer, index: int, hidden: torch.Tensor, positions, cos, sin, mask, cache,
               attend) -> torch.Tensor:
        width, head_dim = hidden.shape[1], self.head_dim
        if layer.qkv is not None:  # [1, T, (Hq + 2 Hkv) D]: rotate q and k in one go
            if layer.norm_qkv is not None:
                qkv = layer.norm_qkv(hidden)
            else:
                qkv = layer.qkv(_rms(hidden, layer.norm1, layer.eps1))
            if self.rotary_kernel:  # the same bits in one call (kernels/q4a8.cpp)
                qk = torch.ops.chatnexus.rotary_qk(qkv, cos, sin, self.rotated, head_dim)
            else:
                qk = qkv[..., :self.rotated].view(1, width, -1, head_dim).transpose(1, 2)  # [1, Hq + Hkv, T, D]
                qk = _rotate(qk, cos, sin)
            query, key = qk[:, :self.query_heads], qk[:, self.query_heads:]
            value = qkv[..., self.rotated:].view(1, width, -1, head_dim).transpose(1, 2)
        else:
            x = _rms(hidden, layer.norm1, layer.eps1)
            q_proj, k_proj, v_proj = layer.qkv_split
            query = q_proj(x).view(1, width, -1, head_dim).transpose(1, 2)
            key = k_proj(x).view(1, width, -1, head_dim).transpose(1, 2)
            value = v_proj(x).view(1, width, -1, head_dim).transpose(1, 2)
            query, key = _rotate(query, cos, sin), _rotate(key, cos, sin)
        key, value = cache.update(key, value, index)
        out, _ = attend(layer.attention, query, key, value, mask, dropout=0.0, scaling=layer.attention.scaling,
                        position_ids=positions)
        hidden = hidden + layer.o_proj(out.reshape(1, width, -1).contiguous())
        if layer.norm_gate_up is not None:
            gate, up = layer.norm_gate_up(hidden).split(layer.gate_up_split, dim=-1)
        elif layer.gate_up is not None:
            gate, up = layer.gate_up(_rms(hidden, layer.norm2, layer.eps2)).split(layer.gate_up_split, dim=-1)
        else:
            x = _rms(hidden, layer.norm2, layer.eps2)
            gate_proj, up_proj = layer.gate_up_split
            gate, up = gate_proj(x), up_proj(x)
        return hidden + layer.down(layer.act(gate) * up)
