"""The int4a8 kernels (inference/engine/kernels/q4a8.cpp): the arithmetic they promise, row by row.

Each output is checked against the same arithmetic written out in float64 with torch ops
(activations quantised per row and block of 32, exact integer block dot products, fp32
scales), the packed weights against the Q4_1 / Q8_0 values they came from, and every row
of a batch against that row computed alone, bit for bit — the property lossless
speculation at int4a8 rests on.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inference.engine import kernels
from inference.engine.errors import EngineError
from inference.engine.precision import Int4A8Linear, Int8A8Linear, resolve_precision
from inference.engine.threads import cpu_features

needs_kernels = pytest.mark.skipif(bool(kernels.missing_cpu_flags()),
                                   reason=f"this CPU lacks {kernels.missing_cpu_flags()} (the int4a8 kernels need AVX2)")


def has_avx512() -> bool:
    return not kernels.missing_cpu_flags() and "avx512_vnni" in cpu_features() and "avx512bw" in cpu_features()


@pytest.fixture(params=["avx512", "avx2"])
def isa(request):
    """Runs a test on each instruction set this CPU has (AVX2 everywhere the kernels run)."""
    if request.param == "avx512" and not has_avx512():
        pytest.skip("this CPU has no AVX-512 VNNI")
    kernels.load()
    before = torch.ops.chatnexus.kernel_isa()
    torch.ops.chatnexus.kernel_isa(request.param)
    yield request.param
    torch.ops.chatnexus.kernel_isa(before)


def quantised_activations(x: torch.Tensor):
    """What the kernel does to x [M, K]: per row and block of 32, d = max|x| / 127, a = round(x / d)."""
    blocks = x.reshape(x.shape[0], -1, 32)
    amax = blocks.abs().amax(-1)
    inverse = torch.where(amax > 0, 127 / amax, torch.zeros_like(amax))
    return torch.round(blocks * inverse[..., None]), amax / 127  # [M, B, 32], [M, B]


def reference(x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """sum_b d_w d_a (q . a) + m_w d_a sum(a), in float64. q [N, K], d and m [N, B]."""
    a, da = quantised_activations(x)
    qb = q.reshape(q.shape[0], -1, 32).double()
    dots = torch.einsum("mbi,nbi->mnb", a.double(), qb)  # exact: integers
    y = dots * d.double()[None] * da.double()[:, None]
    if m is not None:
        y = y + m.double()[None] * (da.double() * a.double().sum(-1))[:, None]
    return y.sum(-1)


def q4_1_linear(n: int, k: int, seed: int):
    """A linear whose weights are exactly Q4_1 blocks: d * q + m with fp16 d and m, each block's
    q spanning 0..15 (Q4_1 sets m to the block's minimum and d to its range / 15)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen)
    q.reshape(n, -1, 32)[..., 0], q.reshape(n, -1, 32)[..., 1] = 0, 15
    d = (torch.rand(n, k // 32, generator=gen) * 0.02 + 1e-3).half().float()
    m = (-torch.rand(n, k // 32, generator=gen) * 0.15).half().float()
    linear = nn.Linear(k, n, bias=False)
    linear.weight.data = (q.reshape(n, -1, 32) * d[..., None] + m[..., None]).reshape(n, k)
    return linear, q, d, m


def q8_0_linear(n: int, k: int, seed: int):
    """A linear whose weights are exactly Q8_0 blocks: d * q with fp16 d, max |q| = 127 per block."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (n, k), generator=gen)
    q.reshape(n, -1, 32)[..., 0] = 127  # a Q8_0 block's largest |q| is 127 by construction
    d = (torch.rand(n, k // 32, generator=gen) * 0.001 + 1e-4).half().float()
    linear = nn.Linear(k, n, bias=False)
    linear.weight.data = (q.reshape(n, -1, 32) * d[..., None]).reshape(n, k).float()
    return linear, q, d


@needs_kernels
@pytest.mark.parametrize("n,k", [(16, 32), (960, 576), (576, 1536), (48, 96)])
def test_int4a8_computes_q4_1_times_q8_blocks(n, k, isa):
    linear, q, d, m = q4_1_linear(n, k, seed=n + k)
    layer = Int4A8Linear(linear)
    assert torch.equal(layer.weight, linear.weight)  # the packed q, d and m are the Q4_1 ones, exactly
    x = torch.randn(7, k, generator=torch.Generator().manual_seed(1)) * 3
    y = layer(x)
    expected = reference(x, q, d, m)
    assert y.dtype == torch.float32 and y.shape == (7, n)
    assert torch.allclose(y.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    # and the int8 activations are what makes it differ from the float product
    assert not torch.allclose(y, x @ linear.weight.T, rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("n,k", [(16, 32), (49152 // 64, 576)])
def test_int8a8_computes_q8_0_times_q8_blocks(n, k, isa):
    linear, q, d = q8_0_linear(n, k, seed=k)
    layer = Int8A8Linear(linear)
    assert torch.equal(layer.weight, linear.weight)
    x = torch.randn(5, k, generator=torch.Generator().manual_seed(2))
    expected = reference(x, q, d, None)
    assert torch.allclose(layer(x).double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@needs_kernels
@pytest.mark.parametrize("make", [Int4A8Linear, Int8A8Linear], ids=["int4a8", "int8a8"])
def test_each_row_is_computed_alone(make, isa):
    """Rows 0..32 of a batch == the same rows one at a time (the kernel takes rows 8 at a time with
    AVX-512, 2 with AVX2, block after block over each panel of 4 tiles)."""
    torch.manual_seed(0)
    for n, k in ((1536, 576), (576, 1536)):
        layer = make(nn.Linear(k, n, bias=False))
        x = torch.randn(33, k)
        alone = torch.cat([layer(x[i:i + 1]) for i in range(33)])
        for width in (1, 2, 3, 4, 5, 9, 17, 33):
            assert torch.equal(layer(x[:width]), alone[:width]), (n, k, width)


@needs_kernels
def test_zero_rows_blocks_and_odd_inputs(isa):
    linear, _, _, _ = q4_1_linear(32, 64, seed=3)
    layer = Int4A8Linear(linear)
    assert layer(torch.zeros(0, 64)).shape == (0, 32)
    x = torch.zeros(2, 64)
    x[1, :32] = 1.0  # a block of zeros gives d = 0: no division by zero, nothing from that block
    y = layer(x)
    assert torch.equal(y[0], torch.zeros(32))
    expected = linear.weight[:, :32].sum(-1)
    assert torch.allclose(y[1], expected, atol=1e-5)
    assert layer(x.double()).dtype == torch.float64  # x's dtype comes back
    with pytest.raises(RuntimeError, match="multiple of 32"):
        torch.ops.chatnexus.int4a8_linear(torch.zeros(1, 48), layer.packed, layer.scales, 32)


@needs_kernels
@pytest.mark.parametrize("make", [Int4A8Linear, Int8A8Linear], ids=["int4a8", "int8a8"])
def test_constant_and_zero_blocks_stay_exact(make, isa):
    """A block whose weights are all equal (d = 0) or all zero: no division by zero, no NaN."""
    linear = nn.Linear(64, 16, bias=False)
    with torch.no_grad():
        linear.weight[:, :32] = 0.0
        linear.weight[:8, 32:] = 0.25 if make is Int4A8Linear else 0.0
    layer = make(linear)
    if make is Int4A8Linear:
        assert torch.equal(layer.weight[:, :32], linear.weight[:, :32])
        assert torch.equal(layer.weight[:8, 32:], linear.weight[:8, 32:])
    else:
        assert torch.equal(layer.weight[:8], linear.weight[:8])
    y = layer(torch.randn(3, 64))
    assert torch.isfinite(y).all()


@needs_kernels
def test_int4a8_is_a_cpu_precision():
    with pytest.raises(EngineError, match="CPU precision"):
        resolve_precision("int4a8", torch.device("cuda"))
    assert resolve_precision("int4a8", torch.device("cpu")).quantized


@needs_kernels
def test_the_fused_norm_is_rmsnorm_then_the_kernel(isa):
    linear, _, _, _ = q4_1_linear(64, 96, seed=4)
    layer = Int4A8Linear(linear)
    gen = torch.Generator().manual_seed(5)
    x, weight = torch.randn(3, 96, generator=gen) * 4, torch.rand(96, generator=gen) + 0.5
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight
    fused = torch.ops.chatnexus.int4a8_linear(x, layer.packed, layer.scales, 64, weight, 1e-5)
    apart = layer(normed)
    assert not torch.allclose(layer(x), apart, atol=1e-3)  # the norm changes the result...
    assert torch.allclose(fused, apart, rtol=1e-4, atol=1e-4)  # ...and the fused call is that norm


@needs_kernels
def test_the_rotary_kernel_gives_the_bits_of_transformers_formula():
    from inference.engine.lean import _rotate

    gen = torch.Generator().manual_seed(6)
    width, heads, dim = 5, 12, 64
    qkv = torch.randn(1, width, (heads + 3) * dim, generator=gen)  # 12 rotated heads, then 3 value heads
    angles = torch.rand(width, dim // 2, generator=gen) * 30
    cos = torch.cat((angles.cos(), angles.cos()), -1)[None, None]  # [1, 1, T, D]
    sin = torch.cat((angles.sin(), angles.sin()), -1)[None, None]
    ours = torch.ops.chatnexus.rotary_qk(qkv, cos, sin, heads * dim, dim)
    theirs = _rotate(qkv[..., :heads * dim].view(1, width, heads, dim).transpose(1, 2), cos, sin)
    assert torch.equal(ours, theirs)


@needs_kernels
def test_attend_rows_is_causal_attention_row_by_row(isa):
    gen = torch.Generator().manual_seed(7)
    heads, kv_heads, width, length, dim = 9, 3, 6, 70, 64
    query = torch.randn(1, heads, width, dim, generator=gen)
    keys = torch.randn(1, kv_heads, 128, dim, generator=gen)[:, :, :length]  # a view into a longer cache
    values = torch.randn(1, kv_heads, 128, dim, generator=gen)[:, :, :length]
    out = torch.ops.chatnexus.attend_rows(query, keys, values, 0.125)  # [1, W, H, D]
    mask = torch.ones(width, length, dtype=torch.bool).tril(diagonal=length - width)
    expected = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=0.125,
                                                                enable_gqa=True).transpose(1, 2)
    assert torch.allclose(out, expected, atol=2e-6)
    for j in range(width):  # row j alone over its keys: the same bits
        end = length - width + j + 1
        alone = torch.ops.chatnexus.attend_rows(query[:, :, j:j + 1], keys[:, :, :end], values[:, :, :end], 0.125)
        assert torch.equal(alone[:, 0], out[:, j])


@pytest.mark.parametrize("machine,flags,expected", [
    ("x86_64", "", "lacks avx2, fma, f16c: use int4 or int8"),
    ("x86_64", "avx2,f16c", "need AVX2, FMA and F16C; this CPU lacks fma"),
    ("aarch64", "asimd,i8mm", "written for x86-64 with AVX2 or AVX-512 (this is aarch64)"),
    ("x86_64", "avx2,f16c,fma", None),
    ("x86_64", "avx2,avx512_vnni,avx512bw,avx512f,f16c,fma", None),
])
def test_cpus_without_avx2_are_told_why_and_what_to_use(machine, flags, expected):
    reason = kernels.unsupported_reason(machine, flags)
    assert reason == expected if expected is None else expected in reason



@needs_kernels
def test_attend_rows_reads_a_tree_rows_path_in_place_like_its_chain(isa):
    """A draft tree's row j sees the cache and its path's block rows: the same bits as the row of a
    chain whose keys are that path, laid out one after the other."""
    gen = torch.Generator().manual_seed(8)
    heads, kv_heads, dim, start = 9, 3, 64, 40
    paths = [[0], [0, 1], [0, 2], [0, 1, 3], [0, 2, 4]]  # two branches after row 0
    width = len(paths)
    query = torch.randn(1, heads, width, dim, generator=gen)
    keys = torch.randn(1, kv_heads, start + width, dim, generator=gen)
    values = torch.randn(1, kv_heads, start + width, dim, generator=gen)
    index = torch.zeros(width, width, dtype=torch.long)
    for j, path in enumerate(paths):
        index[j, :len(path)] = torch.tensor(path)
    depths = torch.tensor([len(path) for path in paths])
    tree = torch.ops.chatnexus.attend_rows(query, keys, values, 0.125, index, depths)
    for j, path in enumerate(paths):
        rows = torch.cat((torch.arange(start), start + torch.tensor(path)))
        chain = torch.ops.chatnexus.attend_rows(query[:, :, j:j + 1], keys[:, :, rows], values[:, :, rows], 0.125)
        assert torch.equal(tree[:, j], chain[:, 0]), j
    with pytest.raises(RuntimeError, match="path row out of range"):
        torch.ops.chatnexus.attend_rows(query, keys, values, 0.125, index + width, depths)


@needs_kernels
@pytest.mark.skipif(not has_avx512(), reason="this CPU has no AVX-512 VNNI to compare with")
@pytest.mark.parametrize("make", [Int4A8Linear, Int8A8Linear], ids=["int4a8", "int8a8"])
def test_avx2_and_avx512_linears_give_the_same_bits(make):
    """Same integer dot products, same fp32 operations per output: a model's linears do not depend
    on which of the two instruction sets ran them."""
    torch.manual_seed(1)
    layer = make(nn.Linear(576, 960, bias=False))
    x = torch.randn(11, 576)
    ops = torch.ops.chatnexus
    kernels.load()
    before = ops.kernel_isa()
    try:
        ops.kernel_isa("avx512")
        wide = layer(x)
        ops.kernel_isa("avx2")
        narrow = layer(x)
    finally:
        ops.kernel_isa(before)
    assert torch.equal(wide, narrow)

