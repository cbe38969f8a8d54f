"""fp32 linears on CPU through oneDNN, with each weight packed once into the kernel's blocked layout.

    if wanted():                  # oneDNN present and no slower than stock here (measured once)
        pack_fp32_linears(model)  # in place: every fp32 nn.Linear -> PackedLinear
    y = layer(x)                  # x @ W.T + b in fp32, each row's bits the same at every row count

Why: `torch.nn.functional.linear` on fp32 CPU tensors calls MKL's sgemm/sgemv, which packs
the weight matrix again on every call and picks a different path for 1, 2 or many rows.
On the 2-core development machine (AMD EPYC Zen 4) the bundled 135M model's decode step
spent ~58 ms that way, and a forward over 2 tokens cost 1.6 steps — so verifying a single
draft token cost more than verifying three. oneDNN's linear with the weight reordered once
(`torch.ops.mkldnn._reorder_linear_weight`, the op PyTorch's own inductor uses when it
freezes a CPU model) streams the packed weight straight into its GEMM kernel: ~36 ms a
step, and a forward over 4-16 tokens costs 1.0-1.5 steps (docs/cpu-speed.md). The maths is
fp32 throughout; only the order of the additions differs from MKL's.

Row invariance: oneDNN's kernel computes every row of a GEMM the same way whatever the
number of rows, except that on the development machine a one-row call with a long
reduction (K > 1024: the MLP's down projection) adds in another order. Where a one-off
check per shape finds that (`one_row_differs`), `packed_mm` runs one row as two (the row
twice, a stride-0 view) and keeps the first — ~10 % slower for that linear, so only there.
Every width then gives each row the same bits, and with the row-invariant attention
(attention.py) a (k+1)-token verify forward gives each token exactly the logits of a
1-token step: speculation at fp32 is lossless by construction, as below fp32
(precision.cpu_row_invariant checks the whole contract per shape on this CPU).

Replies stay what stock transformers gives at fp32 except where two tokens' logits tie to
within ~1e-6 (the benchmarks count identical replies against stock `generate`). Opt out
with CHATNEXUS_FP32_KERNEL=stock; "auto" (the default) packs where oneDNN is available and
a one-off measurement shows the packed kernel no slower than stock at 1 and 8 rows.
"""

from __future__ import annotations

import copy
import os
import time

import torch
from torch import nn

from .errors import EngineError

PACK_ROWS_HINT = 16  # the row count the layout is chosen for: verify widths are 1-33
_pays: dict[int, bool] = {}
_row_checks: dict[tuple[int, int, int], tuple[bool, bool]] = {}  # (out, in, threads) -> _row_check


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") \
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def env_switch(name: str, on: tuple[str, ...] = (), off: tuple[str, ...] = ()) -> bool | None:
    """A kernel setting from the environment: True (``on``'s words, 1, true, yes, on), False (``off``'s,
    0, false, no, off) or None, auto (unset, empty, "auto"), in any case. Anything else is an
    EngineError naming the variable: a misspelt one used to mean auto without a word.
    chatnexus/settings.py refuses the same values when the platform starts."""
    on, off = (*on, "1", "true", "yes", "on"), (*off, "0", "false", "no", "off")
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in on + off:
        raise EngineError(f"{name}={os.environ[name]!r}: expected one of auto, {', '.join(on + off)}")
    return value in on


def wanted() -> bool:
    """CHATNEXUS_FP32_KERNEL: "stock" (or "0") keeps transformers' F.linear, "packed" (or "1")
    always packs where oneDNN exists, "auto" (default) packs where it is no slower (pays())."""
    choice = env_switch("CHATNEXUS_FP32_KERNEL", on=("packed",), off=("stock",))
    if choice is False or not available():
        return False
    return choice or pays()


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """[N, K] fp32 -> oneDNN's blocked layout (an opaque mkldnn tensor; .to_dense() gives it back)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().float().contiguous(), PACK_ROWS_HINT)


def packed_mm(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, pad_one_row: bool = False
              ) -> torch.Tensor:
    """x [..., K] fp32 -> [..., N]; with `pad_one_row`, one row runs as two so it takes the
    many-row kernel (see above)."""
    rows = x.reshape(-1, x.shape[-1])
    if pad_one_row and rows.shape[0] == 1:
        y = torch.ops.mkldnn._linear_pointwise(rows.expand(2, -1), packed, bias, "none", [], "")[:1]
    else:
        y = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")
    return y.reshape(*x.shape[:-1], y.shape[-1])


def one_row_differs(out_features: int, in_features: int) -> bool:
    """Does a one-row call of an [out, in] packed linear round differently from the same row in
    a batch on this CPU? (`_row_check`, once per shape and thread count.)"""
    return _row_check(out_features, in_features)[0]


def row_invariant(out_features: int, in_features: int) -> bool:
    """With that padding, does every row of an [out, in] packed linear get the same bits alone
    as in a batch of 2, 5, 17 or 33 rows? (precision.cpu_row_invariant asks this for fp32.)"""
    return _row_check(out_features, in_features)[1]


def _row_check(out_features: int, in_features: int) -> tuple[bool, bool]:
    """(one_row_differs, row_invariant) for one shape, from one random packed weight (a few ms,
    ~0.2 s for a 49152-row lm_head), cached per shape and thread count."""
    key = (out_features, in_features, torch.get_num_threads())
    if key not in _row_checks:
        gen = torch.Generator().manual_seed(0)
        packed = pack_weight(torch.randn(out_features, in_features, generator=gen))
        x = torch.randn(33, in_features, generator=gen)
        with torch.inference_mode():
            batch = packed_mm(x[:5], packed, None)
            differs = any(not torch.equal(packed_mm(x[i:i + 1], packed, None), batch[i:i + 1]) for i in range(5))
            invariant = rows_alone_match_batches(lambda rows: packed_mm(rows, packed, None, differs), x)
        _row_checks[key] = (differs, invariant)
    return _row_checks[key]


def rows_alone_match_batches(linear, x: torch.Tensor) -> bool:
    """x [33, in]: does linear(rows) give each row the same bits alone as in the batches of its
    first 2, 5, 17 and 33 rows (the widths a verify step spans)?"""
    alone = torch.cat([linear(x[i:i + 1]) for i in range(x.shape[0])])
    return all(torch.equal(linear(x[:m]), alone[:m]) for m in (2, 5, 17, 33))


def pays(shape: tuple[int, int] = (1536, 576), matrices: int = 12) -> bool:
    """Is the packed kernel no slower than F.linear at 1 and at 8 rows on this CPU? Timed over
    `matrices` weights (42 MB, more than a CPU's last-level cache: a model's step streams its
    weights from memory), the best of 6 passes; ~0.1 s once per process and thread count."""
    threads = torch.get_num_threads()
    if threads not in _pays:
        gen = torch.Generator().manual_seed(0)
        weights = [torch.randn(shape, generator=gen) for _ in range(matrices)]
        packed = [pack_weight(w) for w in weights]

        with torch.inference_mode():
            ratios = []
            for rows in (1, 8):
                x = torch.randn(rows, shape[1], generator=gen)
                ours = best_seconds(lambda: [packed_mm(x, p, None) for p in packed], runs=6, warm_up=1)
                stock = best_seconds(lambda: [torch.nn.functional.linear(x, w) for w in weights], runs=6, warm_up=1)
                ratios.append(ours / stock)
        _pays[threads] = max(ratios) <= 1.0
    return _pays[threads]


def best_seconds(fn, runs: int = 5, warm_up: int = 0) -> float:
    """The fastest of `runs` timed calls of fn(), after `warm_up` untimed ones (one-off kernel probes)."""
    for _ in range(warm_up):
        fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


class PackedLinear(nn.Module):
    """nn.Linear at fp32 with its weight kept only in oneDNN's packed layout (same memory)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = pack_weight(linear.weight)  # a plain attribute: mkldnn tensors do not go into state dicts
        self.pad_one_row = one_row_differs(self.out_features, self.in_features)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        """The weight [N, K] in the usual layout (a copy; for code that reads it, not per step)."""
        return self.packed.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_mm(x, self.packed, self.bias, self.pad_one_row)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # the keys and layout of an nn.Linear
        destination[prefix + "weight"] = self.weight
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias.detach()

    def __deepcopy__(self, memo):  # mkldnn tensors have no storage for copy.deepcopy to copy
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            clone.__dict__[key] = value.clone() if key == "packed" else copy.deepcopy(value, memo)
        return clone

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, oneDNN"


def pack_fp32_linears(model: nn.Module) -> nn.Module:
    """Every fp32 nn.Linear of a CPU model -> PackedLinear, in place (a tied lm_head gets its own
    packed copy; the embedding keeps its table)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.float32 and child.weight.device.type == "cpu":
                setattr(parent, name, PackedLinear(child))
    return model
