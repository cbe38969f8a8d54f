"""Weight precision: fp32, bf16, fp16, int8 or int4 weights, applied once right after loading.

    precision = resolve_precision("int8", torch.device("cpu"))   # Precision(name="int8", ...)
    model = apply_precision(model, precision)                    # in place, returns the model

- fp32 / bf16 / fp16: the whole model in that dtype; on CPU, fp32 linears run oneDNN's
  packed kernel where it pays (packed.py: row-invariant, ~1.6x faster per step here).
- int8: weight-only int8 (per-row scales) on every nn.Linear, the lm_head included, through
  PyTorch's own CPU kernel (`aten._weight_int8pack_mm`, bf16 activations into it). Not
  `quantize_dynamic` (faster, but batch-dependent: it breaks lossless verification, see
  Int8Linear) and not torchao's Int8WeightOnlyConfig / Int8DynamicActivationInt8WeightConfig
  (10x slower per step here without torch.compile). Embeddings and norms stay fp32.
- int4: weight-only int4 in groups of 32 with a scale and a zero per group, through
  PyTorch's own CPU kernel (`aten._weight_int4pack_mm_for_cpu`, bf16 in, fp32 around it);
  the lm_head gets int8 as above (the GGUF stores it as Q8_0, not Q4). Our GGUF's Q4_1
  blocks use the full 0..15 range in every block, so min/max group quantisation of the
  de-quantised weights gives back exactly their q's; only the scale/zero are rounded to
  bf16 (the kernel's fp32 path, which would keep them exact, is ~7x slower). CPU only;
  refused elsewhere and when this torch build lacks the kernel.
- int4a8: the same GGUF Q4_1 weights (q, d and m fp16 per block of 32, exactly), the lm_head
  as Q8_0 blocks, and the activations quantised to int8 per row and block of 32 inside
  ChatNexus' own AVX-512 VNNI / AVX2 kernels (kernels/q4a8.cpp: llama.cpp's Q4_1 x Q8_1 arithmetic,
  exact integer dot products). ~2-4x aten's int4 kernel per call, and closer to fp32 than
  int4 (whose bf16 activations and scales lose more). Its models also run attention rows,
  rotary and each RMSNorm (fused into the next linear) in that C++ (lean.py). CPU with
  AVX2 (AVX-512 VNNI where present) and a C++ compiler only; refused elsewhere (EngineError), where `auto` picks
  among the others.
- q/k/v and gate/up at int8/int4/int4a8 are each quantised as one linear over their stacked rows
  (`fuse_shared_input_linears`): quantisation is per row, so the weights are the same, and
  each output column is computed as before (bit-identical logits, tested) with 4 kernel
  calls per layer instead of 7.
- Prompts (prefill) at int8/int4: a weight-only kernel re-expands its weights for every
  row block and runs at ~150 GFLOP/s on a 2-core Zen 4, where a bf16 GEMM with native
  AVX512_BF16 runs at ~400. Where a one-off measurement (`dense_prefill_pays`) shows bf16
  GEMMs that much faster, each quantised decoder linear also keeps its de-quantised weight
  in bf16 (2 bytes per weight) and prompt forwards (inside `attention.prompt_pass()`) use it. Decode and
  verify steps always use the quantised kernel (row invariance), and plain and
  speculative decoding prefill alike, so speculation stays lossless.

Defaults (DEFAULT_PRECISION): fp32 on CPU and on CUDA — see the note there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import ROWS_PREFILL, in_prompt_pass, use_row_invariant_attention
from .errors import EngineError
from .packed import (PackedLinear, best_seconds, env_switch, pack_fp32_linears, packed_mm, row_invariant,
                     rows_alone_match_batches)
from .packed import wanted as packed_wanted

# name -> dtype of activations and of every weight that is not quantised
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                  "int8": torch.float32, "int4": torch.float32, "int4a8": torch.float32}
QUANTIZED = ("int8", "int4", "int4a8")
PRECISIONS = tuple(COMPUTE_DTYPES)
# device type -> default precision for Engine() and the CLI (measured: docs/cpu-speed.md); the
# worker's default is "auto" (precision_probe.py: int4 where it stays faithful and is fastest).
# CUDA is fp32: on an H100, bf16 greedy replies with lookup or a draft
# model left the bf16 target's own reply on 2 of 3 prompts (cuBLAS rounds a (k+1)-row
# verify differently from a 1-row step), fp32 ones matched on every prompt (docs/gpu.md).
DEFAULT_PRECISION = {"cpu": "fp32", "cuda": "fp32"}
INT4_GROUP_SIZE = 32  # the GGUF Q4_0/Q4_1 block size
# precisions whose CPU linears are row-invariant (tests/engine/test_row_invariance.py), so
# row-invariant attention makes the whole forward so; fp32 linears are where they run on
# oneDNN's packed kernel (packed.py; probed per shape), not on MKL's (stock F.linear). int8/int4
# use aten's own one-row-at-a-time kernels; bf16/fp16 matmuls are row-invariant on CPUs
# without native bf16 (AVX2, AVX-512F) but not where oneDNN uses AVX512_BF16/AMX kernels
# for every shape (seen on an AMD EPYC Zen 4: the 576x1536 down projection differs from 5 rows
# on), so they are probed per shape once per process (cpu_row_invariant).
ROW_INVARIANT = ("fp32", "bf16", "fp16", "int8", "int4", "int4a8")
_row_invariant_probe: dict[tuple, bool] = {}
BUNDLED_SHAPES = ((576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576))  # (out, in) of SmolLM2-135M


def cpu_row_invariant(name: str, shapes=BUNDLED_SHAPES, packed: bool = False) -> bool:
    """Does this CPU compute each row of a `name`-precision linear the same alone as in a batch,
    for every (out, in) shape given and verify widths up to 33? fp32: only through the packed
    oneDNN kernel (`packed`), never through MKL's."""
    if name not in ROW_INVARIANT or (name == "fp32" and not packed):
        return False
    if name in QUANTIZED:
        return True
    if name == "fp32":  # packed.py checks its own kernel, padding of lone rows included
        return all(row_invariant(n, k) for n, k in set(shapes))
    dtype = COMPUTE_DTYPES[name]
    for n, k in sorted(set(shapes)):
        key = (name, n, k, torch.get_num_threads())
        if key not in _row_invariant_probe:
            gen = torch.Generator().manual_seed(0)
            weight = torch.randn(n, k, generator=gen).to(dtype)
            x = torch.randn(33, k, generator=gen).to(dtype)
            with torch.inference_mode():
                _row_invariant_probe[key] = rows_alone_match_batches(
                    lambda rows: torch.nn.functional.linear(rows, weight), x)
        if not _row_invariant_probe[key]:
            return False
    return True


def linear_shapes(model: nn.Module) -> set[tuple[int, int]]:
    return {(m.out_features, m.in_features) for m in model.modules() if isinstance(m, (nn.Linear, PackedLinear))}


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" | "bf16" | "fp16" | "int8" | "int4" | "int4a8"
    dtype: torch.dtype  # activations, embeddings, norms (and all weights unless quantised)

    @property
    def quantized(self) -> bool:
        return self.name in QUANTIZED


def resolve_precision(value: str | torch.dtype | Precision | None, device: torch.device) -> Precision:
    """None -> the device's default; a name from PRECISIONS; or a float torch.dtype."""
    if isinstance(value, Precision):
        return value
    if value is None:
        value = DEFAULT_PRECISION.get(device.type, "fp32")
    if isinstance(value, torch.dtype):
        names = {dt: name for name, dt in COMPUTE_DTYPES.items() if name not in QUANTIZED}
        if value not in names:
            raise EngineError(f"unsupported dtype {value}; use one of {list(PRECISIONS)}")
        value = names[value]
    if value not in COMPUTE_DTYPES:
        raise EngineError(f"unknown dtype/precision {value!r}; use one of {list(PRECISIONS)}")
    if value == "int4":
        check_int4_supported(device)
    elif value == "int4a8":
        check_int4a8_supported(device)
    return Precision(value, COMPUTE_DTYPES[value])


# ----------------------------------------------------------------------------- quantisation


def apply_precision(model: nn.Module, precision: Precision, dense_copies: bool | None = None,
                    stock: bool = False) -> nn.Module:
    """Cast to the compute dtype (fp32 for int8/int4), then quantise the linear layers if asked.

    On CPU, fp32 linears move to oneDNN's packed kernel where it pays (packed.py). Where the
    linears are row-invariant (fp32 packed, int8/int4, bf16 where the CPU allows) the attention
    becomes row-invariant too (attention.py): a (k+1)-token verify forward then gives every
    token bit for bit the logits of a 1-token step — lossless speculation by construction.
    `dense_copies`: keep bf16 copies of quantised weights for prompts (None: as
    CHATNEXUS_DENSE_PREFILL and the machine say; the precision probe, which reads no prompts
    through them that matter, passes False). `stock`: only the cast — transformers' own
    kernels and attention, the model a plain transformers user runs (the benchmarks' reference)."""
    from .lean import forget  # lean.py reads this module's linears

    forget(model)  # its lean forward (if one was built) looked up the linears replaced below
    if stock and precision.quantized:
        raise EngineError(f"{precision.name} weights are this engine's own kernels: there is no stock {precision.name}")
    model = model.to(dtype=precision.dtype)
    if stock:
        return model
    shapes = linear_shapes(model)
    if precision.name == "int8":
        model = quantize_int8(model)
    elif precision.name == "int4":
        model = quantize_int4(model)
    elif precision.name == "int4a8":
        model = quantize_int4a8(model)
    if precision.quantized and (dense_prefill_wanted(precision.name) if dense_copies is None else dense_copies):
        keep_dense_weights(model)
    on_cpu = model.device.type == "cpu"
    packed = on_cpu and precision.name == "fp32" and packed_wanted()
    if packed:
        pack_fp32_linears(model)
    if on_cpu and cpu_row_invariant(precision.name, shapes, packed=packed) and \
            use_row_invariant_attention(model, attend_rows=precision.name == "int4a8"):
        # int4a8 prompts go through the decode path (forward.rows_prefill) unless bf16 copies were kept for them
        setattr(model, ROWS_PREFILL, precision.name == "int4a8" and not has_dense_weights(model))
    return model


def has_dense_weights(model: nn.Module) -> bool:
    """Does any linear keep a bf16 copy for prompts (keep_dense_weights)?"""
    return any(getattr(module, "dense", None) is not None for module in model.modules())


# ----------------------------------------------------------------------------- dense prefill

_dense_pays: dict[tuple[int, str], bool] = {}
DENSE_PREFILL_GAIN = 1.3  # keep bf16 copies only where a prompt-wide bf16 GEMM is this much faster


def dense_prefill_wanted(precision: str = "int4") -> bool:
    """CHATNEXUS_DENSE_PREFILL: "0" never keeps bf16 copies (saves 2 bytes per quantised weight,
    prompts then run on the quantised kernel), "1" always, "auto" (the default) where they pay."""
    choice = env_switch("CHATNEXUS_DENSE_PREFILL")
    if choice is not None:
        return choice
    if precision == "int4a8":  # its prompts go row by row through its own kernels (forward.rows_prefill)
        return False
    return dense_prefill_pays(kernel="int4")


def dense_prefill_pays(rows: int = 256, shape: tuple[int, int] = (1536, 576), kernel: str = "int4") -> bool:
    """Is a prompt-wide bf16 GEMM >= DENSE_PREFILL_GAIN x faster than the quantised kernel (aten's
    int4 one, or int4a8's) on this CPU? Measured once per process, thread count and kernel
    (~50 ms): on CPUs without native bf16 it is slower, and int4a8's VNNI kernel is faster than
    bf16 without AMX (docs/cpu-speed.md)."""
    key = (torch.get_num_threads(), kernel)
    if key not in _dense_pays:
        n, k = shape
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(rows, k, generator=gen)
        weight = torch.randn(n, k, generator=gen).to(torch.bfloat16)
        if kernel == "int4a8":
            layer = Int4A8Linear(nn.Linear(k, n, bias=False))
            run_quantised = lambda: layer(x)  # noqa: E731
        else:
            q = torch.randint(0, 16, (n, k), dtype=torch.int32, generator=gen)
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
            scales = torch.rand(k // INT4_GROUP_SIZE, n, 2, generator=gen).to(torch.bfloat16)
            x16 = x.to(torch.bfloat16)
            run_quantised = lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x16, packed,  # noqa: E731
                                                                               INT4_GROUP_SIZE, scales)
        with torch.inference_mode():
            dense = best_seconds(lambda: torch.nn.functional.linear(x.to(torch.bfloat16), weight))
            quantised = best_seconds(run_quantised)
        _dense_pays[key] = quantised >= DENSE_PREFILL_GAIN * dense
    return _dense_pays[key]


def keep_dense_weights(model: nn.Module) -> None:
    """Give every quantised decoder linear (not the lm_head: a prompt needs 1 row of logits) its bf16 weight."""
    head = model.get_output_embeddings()
    for module in model.modules():
        if isinstance(module, DENSE_COPY_LINEARS) and module is not head:
            module.dense = module.weight.to(torch.bfloat16)


def direct_linear(module: nn.Module, dense: bool):
    """A plain function computing module(x) bit for bit (inside attention.prompt_pass() when `dense`),
    with the kernel call and nothing else: no nn.Module dispatch, no per-call checks. For the
    lean forward (lean.py), built once per model; modules it does not know are called as is."""
    weight_dense = getattr(module, "dense", None) if dense else None
    bias = getattr(module, "bias", None)
    if isinstance(module, DENSE_COPY_LINEARS) and weight_dense is not None:
        def run(x):
            return _with_bias(_dense_mm(x, weight_dense), bias)
    elif isinstance(module, VnniLinear):
        return _vnni_function(module)
    elif isinstance(module, Int4Linear):
        packed, scales, group, n = module.packed, module.scales_and_zeros, module.group_size, module.out_features

        def run(x):
            return _with_bias(_int4_mm(x, packed, group, scales, n), bias)
    elif isinstance(module, Int8Linear):
        weight, scales, n = module.weight_int8, module.scales, module.out_features

        def run(x):
            return _with_bias(_int8_mm(x, weight, scales, n), bias)
    elif isinstance(module, PackedLinear):
        packed, pad = module.packed, module.pad_one_row

        def run(x):
            return packed_mm(x, packed, bias, pad)
    elif type(module) is nn.Linear:
        weight = module.weight

        def run(x):
            return torch.nn.functional.linear(x, weight, bias)
    else:
        return module
    return run


def _dense_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """y from the bf16 copy inside a prompt pass, else None (use the quantised kernel)."""
    if module.dense is None or not in_prompt_pass():
        return None
    return _dense_mm(x, module.dense)


# The kernel calls of the quantised linears, shared by their forward() and direct_linear():
# x [..., K] in, y [..., N] out in x's dtype (the kernels' fast paths want bf16 activations).

def _dense_mm(x: torch.Tensor, weight_bf16: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.linear(x.to(torch.bfloat16), weight_bf16).to(x.dtype)


def _int8_mm(x: torch.Tensor, weight_int8: torch.Tensor, scales: torch.Tensor, n: int) -> torch.Tensor:
    y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]).to(torch.bfloat16), weight_int8, scales)
    return y.reshape(*x.shape[:-1], n).to(x.dtype)


def _int4_mm(x: torch.Tensor, packed: torch.Tensor, group: int, scales_and_zeros: torch.Tensor, n: int) -> torch.Tensor:
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, x.shape[-1]).to(torch.bfloat16), packed, group,
                                                    scales_and_zeros)
    return y.reshape(*x.shape[:-1], n).to(x.dtype)


def _with_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return y if bias is None else y + bias


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored as symmetric int8, one scale per output row (weight-only).

    Runs aten's `_weight_int8pack_mm` on bf16 activations (its fast CPU path; fp32 inputs
    take a slow one). Activations are never quantised, so each row's result is independent
    of the other rows in the batch — the property lossless verification needs. PyTorch's
    dynamic quantization (`quantize_dynamic`) fails it: its per-tensor activation scale
    makes token i's logits depend on the k draft tokens verified beside it.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()  # [N, K]
        scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-8)  # [N]
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scale.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        self.dense: torch.Tensor | None = None  # bf16 weight for prompts (keep_dense_weights)

    @property
    def weight(self) -> torch.Tensor:
        """The de-quantised weight [N, K], for code that reads a head's shape or values (rare, not per step)."""
        return self.weight_int8.float() * self.scales.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., K] -> [..., N] in x's dtype
        y = _dense_forward(self, x)
        if y is None:
            y = _int8_mm(x, self.weight_int8, self.scales, self.out_features)
        return _with_bias(y, self.bias)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Every nn.Linear (lm_head included) -> Int8Linear, in place; a tied head gets its own copy."""
    if model.device.type != "cpu":
        raise EngineError("int8 weights use PyTorch's CPU kernel here (aten._weight_int8pack_mm); on CUDA use bf16")
    _untie_lm_head(model)
    fuse_shared_input_linears(model, Int8Linear)
    _replace_linears(model, lambda linear: Int8Linear(linear))
    return model


def _replace_linears(model: nn.Module, make) -> None:
    """parent.name = make(linear) for every nn.Linear where make returns a module (None: keep)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                new = make(child)
                if new is not None:
                    setattr(parent, name, new)


def _untie_lm_head(model: nn.Module) -> None:
    """Quantising a tied head must not touch the embedding table the input side reads."""
    head = model.get_output_embeddings()
    if head is not None and head.weight is model.get_input_embeddings().weight:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)


# ----------------------------------------------------------------------------- int4


def check_int4_supported(device: torch.device) -> None:
    """int4 weight-only needs aten's CPU int4 kernel; refuse clearly anywhere else."""
    if device.type != "cpu":
        raise EngineError(f"int4 weights are implemented for CPU only here (asked for {device}); use bf16 "
                          "on CUDA")
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        raise EngineError(f"this torch build ({torch.__version__}) has no CPU int4 kernel "
                          "(aten._weight_int4pack_mm_for_cpu); use int8")


class Int4Linear(nn.Module):
    """y = x W^T + b with W stored as asymmetric int4 in groups of `group_size` along the input.

    Per group g of row n: W[n, g] ≈ (q - 8) * scale + zero, q in 0..15 — the affine form of
    GGUF's Q4_1 (d * q + m) with zero = m + 8 * d. The kernel's fast path wants bf16
    activations, scales and zeros (fp32 ones take a path ~7x slower), so inputs are cast to
    bf16 and back; the q's match Q4_1's exactly, the bf16 scales round Q4_1's fp16 d's.
    """

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP_SIZE):
        super().__init__()
        weight = linear.weight.detach().float()  # [N, K]
        n, k = weight.shape
        if k % group_size:
            raise EngineError(f"int4: in_features {k} is not a multiple of the group size {group_size}")
        groups = weight.reshape(n, k // group_size, group_size)  # [N, G, gs]
        lo, hi = groups.amin(-1), groups.amax(-1)  # [N, G]
        scale = ((hi - lo) / 15).clamp(min=1e-8)  # [N, G]
        q = ((groups - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)  # [N, G, gs]
        zero = lo + 8 * scale  # dequant: (q - 8) * scale + zero == q * scale + lo
        self.in_features, self.out_features, self.group_size = k, n, group_size
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.reshape(n, k), 1))
        # [G, N, 2]: scale and zero, the layout the kernel wants
        self.register_buffer("scales_and_zeros", torch.stack((scale, zero), -1).transpose(0, 1).contiguous()
                             .to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        self.dense: torch.Tensor | None = None  # bf16 weight for prompts (keep_dense_weights)

    @property
    def weight(self) -> torch.Tensor:
        """The de-quantised weight [N, K] as the kernel sees it: (q - 8) * scale + zero (not per step)."""
        n, k = self.out_features, self.in_features
        eye = torch.eye(k, dtype=torch.bfloat16)  # the kernel applied to the identity gives W^T, exactly in bf16
        return torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed, self.group_size,
                                                          self.scales_and_zeros).float().T.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., K] -> [..., N]
        y = _dense_forward(self, x)
        if y is None:
            y = _int4_mm(x, self.packed, self.group_size, self.scales_and_zeros, self.out_features)
        return _with_bias(y, self.bias)


# ----------------------------------------------------------------------------- shared-input fusion

# sibling linears that read the same input: one kernel call for each group instead of one per linear
SHARED_INPUT_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class SharedInputGroup:
    """Runs one fused quantised linear for its members and hands each its slice of the output.

    The first member called with an input computes all outputs; the others, called with
    the very same tensor object, take their slice (transformers' attention and MLP blocks
    pass one tensor to all of them and do not modify it in place in between; inference
    tensors carry no version counter to check that).
    Any other input is computed afresh, so a model calling its members differently stays
    correct — it only loses the saving. Each output column is computed exactly as the
    member's own linear would (the kernels work column block by column block).
    """

    def __init__(self, fused: nn.Module, sizes: list[int]):
        self.fused, self.sizes = fused, sizes
        self._input: torch.Tensor | None = None  # the input the pending outputs were computed from
        self._outputs: list[torch.Tensor | None] = []  # one per member until that member took it

    def output(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self._input is not x or self._outputs[index] is None:
            self._outputs = list(self.fused(x).split(self.sizes, dim=-1))
            self._input = x
        out, self._outputs[index] = self._outputs[index], None
        if all(o is None for o in self._outputs):
            self._input, self._outputs = None, []  # every member served: hold nothing between forwards
        return out


class SharedInputMember(nn.Module):
    """Stands in for one linear of a SharedInputGroup (the first member owns the fused module)."""

    def __init__(self, group: SharedInputGroup, index: int, in_features: int, out_features: int):
        super().__init__()
        if index == 0:
            self.fused = group.fused  # registered once, so .to() and state_dict() see the weights
        self.group, self.index = group, index
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.output(self.index, x)


def fuse_shared_input_linears(model: nn.Module, make) -> None:
    """Each SHARED_INPUT_GROUPS set of sibling nn.Linears (same input size, no bias) becomes
    make(one nn.Linear holding their rows in order) shared through SharedInputMembers, where
    `make` accepts it (returns a module). Quantisation is per output row (per row group for
    int4), so the fused weights are exactly the members' own."""
    for parent in list(model.modules()):
        for names in SHARED_INPUT_GROUPS:
            members = [getattr(parent, name, None) for name in names]
            if not all(type(m) is nn.Linear and m.bias is None for m in members) \
                    or len({m.in_features for m in members}) != 1:
                continue
            weight = torch.cat([m.weight.detach() for m in members])  # [sum N, K]
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype,
                               device=weight.device)
            linear.weight = nn.Parameter(weight, requires_grad=False)
            quantised = make(linear)
            if quantised is None:
                continue
            group = SharedInputGroup(quantised, [m.out_features for m in members])
            for index, (name, member) in enumerate(zip(names, members)):
                setattr(parent, name, SharedInputMember(group, index, member.in_features, member.out_features))


def quantize_int4(model: nn.Module) -> nn.Module:
    """Decoder linears -> Int4Linear (where the kernel's shape rules allow; q/k/v and gate/up
    fused), lm_head -> Int8Linear."""
    head = model.get_output_embeddings()

    def make(linear: nn.Linear) -> Int4Linear | None:
        fits = linear.in_features % INT4_GROUP_SIZE == 0 and linear.out_features % 16 == 0  # packing: N % 16
        return Int4Linear(linear) if fits and linear is not head else None

    fuse_shared_input_linears(model, make)
    _replace_linears(model, make)
    return quantize_int8(model)


# ----------------------------------------------------------------------------- int4a8


def check_int4a8_supported(device: torch.device) -> None:
    """int4a8 runs ChatNexus' own AVX-512 VNNI / AVX2 kernels (kernels/q4a8.cpp), built once per machine."""
    if device.type != "cpu":
        raise EngineError(f"int4a8 is a CPU precision (asked for {device}); use bf16 or fp32 on CUDA")
    from . import kernels

    kernels.load()


class VnniLinear(nn.Module):
    """y = x W^T + b on kernels/q4a8.cpp: W quantised in blocks of 32 along the input, x quantised
    to int8 per row and block of 32 inside the kernel (llama.cpp's Q4_1 x Q8_1 / Q8_0 x Q8_0
    arithmetic). Each row is computed alone (row-invariant), so speculation stays lossless."""

    kernel = ""  # the torch.ops.chatnexus op

    def _finish(self, linear: nn.Linear, packed: torch.Tensor, scales: torch.Tensor) -> None:
        from . import kernels

        kernels.load()  # EngineError where they cannot run: better at load time than at the first reply
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        self.dense: torch.Tensor | None = None  # bf16 weight for prompts (keep_dense_weights)

    @staticmethod
    def fits(linear: nn.Linear) -> bool:
        return linear.in_features % INT4_GROUP_SIZE == 0 and linear.out_features % 16 == 0

    @property
    def weight(self) -> torch.Tensor:
        """The de-quantised weight [N, K] (not per step)."""
        return self.dequantized()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _dense_forward(self, x)
        if y is None:
            y = _vnni_mm(self.kernel, x, self.packed, self.scales, self.out_features)
        return _with_bias(y, self.bias)


def _vnni_mm(kernel: str, x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, n: int,
             norm: torch.Tensor | None = None, eps: float = 0.0) -> torch.Tensor:
    """x [..., K] -> [..., N]; with `norm`, RMSNorm(x) with that weight and eps first, in the same call."""
    y = getattr(torch.ops.chatnexus, kernel)(x.reshape(-1, x.shape[-1]), packed, scales, n, norm, eps)
    return y.reshape(*x.shape[:-1], n).to(x.dtype)


def direct_norm_linear(norm_weight: torch.Tensor, eps: float, module: nn.Module, dense: bool):
    """For the lean forward: a function computing module(RMSNorm(x)) in one kernel call where
    `module` runs the int4a8 kernels (not inside a prompt pass with bf16 copies); else None.
    The norm is the kernel's own fp32 loop (not bit for bit LlamaRMSNorm: int4a8 is this engine's
    own precision, and plain and speculative decoding run the same call)."""
    if not isinstance(module, VnniLinear) or (dense and module.dense is not None):
        return None
    return _vnni_function(module, norm_weight, eps)


def _vnni_function(module: "VnniLinear", norm_weight: torch.Tensor | None = None, eps: float = 0.0):
    """module(x), or module(RMSNorm(x)) with `norm_weight`, as one kernel call with nothing around it."""
    kernel, packed, scales, n, bias = module.kernel, module.packed, module.scales, module.out_features, module.bias

    def run(x):
        return _with_bias(_vnni_mm(kernel, x, packed, scales, n, norm_weight, eps), bias)
    return run


def _blocks(linear: nn.Linear) -> torch.Tensor:
    weight = linear.weight.detach().float()
    n, k = weight.shape
    return weight.reshape(n, k // INT4_GROUP_SIZE, INT4_GROUP_SIZE)  # [N, B, 32]


def _divisor(d: torch.Tensor) -> torch.Tensor:
    """d [N, B] as fp32 [N, B, 1] to divide a block by, 1 where d is 0 (or underflowed in fp16)."""
    d = d.float()
    return torch.where(d > 0, d, torch.ones_like(d))[..., None]


def _tiles(values: torch.Tensor) -> torch.Tensor:
    """[N, B] per-block values -> [N/16, B, 16]: a tile's 16 outputs side by side, block by block."""
    n, b = values.shape
    return values.reshape(n // 16, 16, b).permute(0, 2, 1)


class Int4A8Linear(VnniLinear):
    """int4 weights as GGUF's Q4_1: W[n, g] = d * q + m, q in 0..15, d and m fp16 per block of 32
    (the de-quantised Q4_1 weights give back exactly their q, d and m)."""

    kernel = "int4a8_linear"

    def __init__(self, linear: nn.Linear):
        super().__init__()
        groups = _blocks(linear)
        lo, hi = groups.amin(-1), groups.amax(-1)  # [N, B]
        d = ((hi - lo) / 15).half()  # 0 for a constant block (then every q is 0 and m is the value)
        m = lo.half()
        q = ((groups - m.float()[..., None]) / _divisor(d)).round().clamp(0, 15).to(torch.uint8)
        n, blocks = d.shape
        # k = 32 b + 8 i + 4 h + r  ->  [tile, b, i, output, r] bytes, h = 0 low nibble, 1 high
        v = q.reshape(n // 16, 16, blocks, 4, 2, 4).permute(0, 2, 3, 1, 5, 4)
        packed = (v[..., 0] | (v[..., 1] << 4)).contiguous().reshape(-1)
        scales = torch.stack((_tiles(d), _tiles(m)), 2).contiguous().reshape(-1)  # [tile, b, (d, m), 16]
        self._finish(linear, packed, scales)

    def dequantized(self) -> torch.Tensor:
        n, k = self.out_features, self.in_features
        tiles, blocks = n // 16, k // INT4_GROUP_SIZE
        v = self.packed.reshape(tiles, blocks, 4, 16, 4)
        q = torch.stack((v & 0x0F, v >> 4), -1)  # [tile, b, i, output, r, h]
        q = q.permute(0, 3, 1, 2, 5, 4).reshape(n, k).float()
        scales = self.scales.reshape(tiles, blocks, 2, 16).float()
        d, m = (scales[:, :, j].permute(0, 2, 1).reshape(n, blocks) for j in (0, 1))
        return (q.reshape(n, blocks, -1) * d[..., None] + m[..., None]).reshape(n, k)


class Int8A8Linear(VnniLinear):
    """int8 weights as GGUF's Q8_0: W[n, g] = d * q, q in -127..127, d fp16 per block of 32."""

    kernel = "int8a8_linear"

    def __init__(self, linear: nn.Linear):
        super().__init__()
        groups = _blocks(linear)
        d = (groups.abs().amax(-1) / 127).half()  # [N, B]; 0 for a block of zeros
        q = (groups / _divisor(d)).round().clamp(-127, 127).to(torch.int16)
        n, blocks = d.shape
        # k = 32 b + 4 j + r  ->  [tile, b, j, output, r], stored as q + 128
        v = (q + 128).to(torch.uint8).reshape(n // 16, 16, blocks, 8, 4).permute(0, 2, 3, 1, 4)
        self._finish(linear, v.contiguous().reshape(-1), _tiles(d).contiguous().reshape(-1))

    def dequantized(self) -> torch.Tensor:
        n, k = self.out_features, self.in_features
        tiles, blocks = n // 16, k // INT4_GROUP_SIZE
        q = self.packed.reshape(tiles, blocks, 8, 16, 4).permute(0, 3, 1, 2, 4).reshape(n, blocks, 32).float() - 128
        d = self.scales.reshape(tiles, blocks, 16).float().permute(0, 2, 1).reshape(n, blocks)
        return (q * d[..., None]).reshape(n, k)


def quantize_int4a8(model: nn.Module) -> nn.Module:
    """Decoder linears -> Int4A8Linear (q/k/v and gate/up fused), the lm_head -> Int8A8Linear (the GGUF
    stores it as Q8_0); any linear whose shape the kernels do not take -> Int8Linear."""
    if model.device.type != "cpu":
        raise EngineError("int4a8 is a CPU precision; use bf16 or fp32 on CUDA")
    _untie_lm_head(model)
    head = model.get_output_embeddings()

    def make(linear: nn.Linear) -> VnniLinear | None:
        if not VnniLinear.fits(linear):
            return None
        return Int8A8Linear(linear) if linear is head else Int4A8Linear(linear)

    fuse_shared_input_linears(model, make)
    _replace_linears(model, make)
    return quantize_int8(model)


DENSE_COPY_LINEARS = (Int8Linear, Int4Linear, VnniLinear)
