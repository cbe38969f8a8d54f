// int4 / int8 weights x int8 activations on AVX-512 VNNI (or AVX2), one row at a time (row-invariant).
//
// The arithmetic of llama.cpp's Q4_1 x Q8_1 and Q8_0 x Q8_0 dot products: activations are
// quantised per row in blocks of 32 (d = max|x| / 127, a = round(x / d)), each block's integer
// dot product is exact (vpdpbusd), and blocks are summed in fp32 in order:
//   int4: y[n] = sum_b  d_w[n,b] * d_a[b] * sum_i q[n,i] a[i]   +   m_w[n,b] * d_a[b] * sum_i a[i]
//   int8: y[n] = sum_b  d_w[n,b] * d_a[b] * sum_i q[n,i] a[i]
// Lanes are 16 outputs; each row's instructions are the same whatever the other rows (and the
// thread split is over outputs only), so a row's result never depends on the batch around it:
// the property lossless verification needs (tests/engine/test_q4a8.py).
//
// Weight layout (packed once by precision.py), per tile of 16 outputs t and block of 32 inputs b:
//   int4: 256 bytes = 4 x [16 outputs][4 bytes]; in group i, output j's byte r holds
//         q[16t+j, 32b+8i+r] in its low nibble and q[16t+j, 32b+8i+4+r] in its high one;
//         scales: [16 x fp16 d][16 x fp16 m]
//   int8: 512 bytes = 8 x [16 outputs][4 bytes], q + 128 as uint8 (vpdpbusd multiplies unsigned
//         by signed bytes; the +128 is taken back with 128 * sum(a)); scales: [16 x fp16 d].
//
// Two instruction sets, chosen once per process (kernel_isa): AVX-512 VNNI (namespace v512,
// compiled for it with a target pragma) and AVX2 + FMA + F16C (v256, the file's base flags).
// The AVX2 linears take each tile's 16 outputs as two halves of 8 and emulate vpdpbusd with
// vpmaddubsw + vpmaddwd (exact: no int16 sum can saturate here); every output's integer dot
// products and fp32 operations are the same, so both give the same bits (tested). Attention and
// the fused norm sum their lanes in another order on AVX2: close, not bit for bit.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <immintrin.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kTile = 16;
constexpr int64_t kRows = 8;  // rows sharing one pass over a tile's weights
// Tiles of outputs whose weights stay in cache while every block of rows passes over them: the
// weights are read from memory once per call, not once per block of rows (a 9-row verify, or a
// prompt chunk, would otherwise stream them again for each block). Per output the arithmetic does
// not depend on the order, so the bits do not change.
constexpr int64_t kPanel = 4;

struct QuantRows {
  const int8_t* q;  // [M, K]
  const float* d;   // [M, B]: each block's scale
  const float* s;   // [M, B]: d * sum(a)
  const int32_t* isum;  // [M, B]: sum(a)
};

// Where both instruction sets' quantize_rows write: buffers of the calling thread, reused call
// after call (no allocation per linear); the worker threads of one call only read them.
struct RowsScratch {
  int8_t* q;
  float* d;
  float* s;
  int32_t* isum;
};

RowsScratch rows_scratch(int64_t m, int64_t k) {
  const int64_t blocks = k / kBlock;
  thread_local std::vector<float> floats;
  thread_local std::vector<int32_t> ints;
  thread_local std::vector<int8_t> bytes;
  floats.resize(static_cast<size_t>(2 * m * blocks));
  ints.resize(static_cast<size_t>(m * blocks));
  bytes.resize(static_cast<size_t>(m * k));
  return RowsScratch{bytes.data(), floats.data(), floats.data() + m * blocks, ints.data()};
}

// the fused RMSNorm's output, likewise
float* norm_scratch(int64_t m, int64_t k) {
  thread_local std::vector<float> normed;
  normed.resize(static_cast<size_t>(m * k));
  return normed.data();
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")
namespace v512 {

QuantRows quantize_rows(const float* xp, int64_t m, int64_t k) {
  const int64_t blocks = k / kBlock;
  const RowsScratch out = rows_scratch(m, k);
  int8_t* qp = out.q;
  float* dp = out.d;
  float* sp = out.s;
  int32_t* ip = out.isum;
  for (int64_t i = 0; i < m * blocks; ++i) {
    const float* xb = xp + i * kBlock;
    const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127.0f;
    const __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv));  // round half to even
    const __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qp + i * kBlock), _mm512_cvtsepi32_epi8(i0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qp + i * kBlock + 16), _mm512_cvtsepi32_epi8(i1));
    const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    dp[i] = d;
    sp[i] = d * static_cast<float>(sum);
    ip[i] = sum;
  }
  return QuantRows{out.q, out.d, out.s, out.isum};
}

inline __m512i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// y[r, 16 t .. 16 t + 15] = acc[t][r] for a block of rows and tiles (row stride n)
template <int R, int T>
inline void store_tiles(const __m512 (&acc)[T][R], float* y, int64_t n) {
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(y + r * n + t * kTile, acc[t][r]);
}

// R rows x T tiles of 16 outputs at once: T > 1 gives a single row independent chains to
// overlap (a block's eight vpdpbusd into one accumulator would wait on each other), and each
// block's integer dot product is split over two accumulators (even and odd groups), summed
// exactly before the fp32 part. Per output the fp32 arithmetic is the same whatever R and T.
template <int R, int T>
void int4_tiles(const uint8_t* w, const uint16_t* sc, int64_t tile_bytes, int64_t tile_scales, int64_t blocks,
                int64_t k, const QuantRows& a, int64_t row, float* y, int64_t n) {
  const int8_t* aq = a.q + row * k;
  const float* ad = a.d + row * blocks;
  const float* as = a.s + row * blocks;
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 acc[T][R] = {};  // zeros
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i even[T][R] = {}, odd[T][R] = {};  // zeros
    for (int i = 0; i < 4; ++i) {
      for (int t = 0; t < T; ++t) {
        const __m512i packed = _mm512_loadu_si512(w + t * tile_bytes + b * 256 + 64 * i);
        const __m512i lo = _mm512_and_si512(packed, low);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low);
        for (int r = 0; r < R; ++r) {
          const int8_t* ab = aq + r * k + b * kBlock + 8 * i;
          even[t][r] = _mm512_dpbusd_epi32(even[t][r], lo, broadcast4(ab));
          odd[t][r] = _mm512_dpbusd_epi32(odd[t][r], hi, broadcast4(ab + 4));
        }
      }
    }
    for (int t = 0; t < T; ++t) {
      const uint16_t* st = sc + t * tile_scales + b * 32;
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(st)));
      const __m512 mn = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(st + 16)));
      for (int r = 0; r < R; ++r) {
        const __m512i dot = _mm512_add_epi32(even[t][r], odd[t][r]);
        acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, _mm512_set1_ps(ad[r * blocks + b])),
                                    acc[t][r]);
        acc[t][r] = _mm512_fmadd_ps(mn, _mm512_set1_ps(as[r * blocks + b]), acc[t][r]);
      }
    }
  }
  store_tiles(acc, y, n);
}

template <int R, int T>
void int8_tiles(const uint8_t* w, const uint16_t* sc, int64_t tile_bytes, int64_t tile_scales, int64_t blocks,
                int64_t k, const QuantRows& a, int64_t row, float* y, int64_t n) {
  const int8_t* aq = a.q + row * k;
  const float* ad = a.d + row * blocks;
  const int32_t* ai = a.isum + row * blocks;
  __m512 acc[T][R] = {};  // zeros
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i even[T][R] = {}, odd[T][R] = {};  // zeros
    for (int j = 0; j < 8; j += 2) {
      for (int t = 0; t < T; ++t) {
        const uint8_t* wb = w + t * tile_bytes + b * 512 + 64 * j;
        const __m512i w0 = _mm512_loadu_si512(wb), w1 = _mm512_loadu_si512(wb + 64);
        for (int r = 0; r < R; ++r) {
          const int8_t* ab = aq + r * k + b * kBlock + 4 * j;
          even[t][r] = _mm512_dpbusd_epi32(even[t][r], w0, broadcast4(ab));
          odd[t][r] = _mm512_dpbusd_epi32(odd[t][r], w1, broadcast4(ab + 4));
        }
      }
    }
    for (int t = 0; t < T; ++t) {
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc + t * tile_scales + b * 16)));
      for (int r = 0; r < R; ++r) {
        const __m512i dot = _mm512_add_epi32(even[t][r], odd[t][r]);
        const __m512i exact = _mm512_sub_epi32(dot, _mm512_set1_epi32(128 * ai[r * blocks + b]));
        acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(d, _mm512_set1_ps(ad[r * blocks + b])),
                                    acc[t][r]);
      }
    }
  }
  store_tiles(acc, y, n);
}

using TileFn = void (*)(const uint8_t*, const uint16_t*, int64_t, int64_t, int64_t, int64_t, const QuantRows&, int64_t,
                        float*, int64_t);
constexpr int kGroup[] = {0, 4, 4, 2, 2, 1, 1, 1, 1};  // tiles taken together for 1..8 rows


// x * rsqrt(mean(x^2) + eps) * weight per row (RMSNorm), in fp32, before the kernel quantises it
const float* rms_norm(const float* xp, int64_t m, int64_t k, const float* wp, double eps) {
  float* op = norm_scratch(m, k);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = xp + r * k;
    __m512 squares = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 16) {
      const __m512 v = _mm512_loadu_ps(row + i);
      squares = _mm512_fmadd_ps(v, v, squares);
    }
    const float scale = 1.0f / std::sqrt(_mm512_reduce_add_ps(squares) / static_cast<float>(k) + static_cast<float>(eps));
    const __m512 s = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < k; i += 16)
      _mm512_storeu_ps(op + r * k + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(row + i), s), _mm512_loadu_ps(wp + i)));
  }
  return op;
}

void linear(const float* xp, int64_t m, int64_t k, int64_t n, bool int4, const uint8_t* wp, const uint16_t* sp,
            float* yp) {
  const int64_t blocks = k / kBlock, tiles = n / kTile;
  const int64_t tile_bytes = blocks * (int4 ? 256 : 512), tile_scales = blocks * (int4 ? 32 : 16);
  const QuantRows a = quantize_rows(xp, m, k);
  // [rows - 1][0]: one tile at a time; [rows - 1][1]: kGroup[rows] tiles at a time
  static const TileFn int4_fns[][2] = {
      {int4_tiles<1, 1>, int4_tiles<1, 4>}, {int4_tiles<2, 1>, int4_tiles<2, 4>}, {int4_tiles<3, 1>, int4_tiles<3, 2>},
      {int4_tiles<4, 1>, int4_tiles<4, 2>}, {int4_tiles<5, 1>, int4_tiles<5, 1>}, {int4_tiles<6, 1>, int4_tiles<6, 1>},
      {int4_tiles<7, 1>, int4_tiles<7, 1>}, {int4_tiles<8, 1>, int4_tiles<8, 1>}};
  static const TileFn int8_fns[][2] = {
      {int8_tiles<1, 1>, int8_tiles<1, 4>}, {int8_tiles<2, 1>, int8_tiles<2, 4>}, {int8_tiles<3, 1>, int8_tiles<3, 2>},
      {int8_tiles<4, 1>, int8_tiles<4, 2>}, {int8_tiles<5, 1>, int8_tiles<5, 1>}, {int8_tiles<6, 1>, int8_tiles<6, 1>},
      {int8_tiles<7, 1>, int8_tiles<7, 1>}, {int8_tiles<8, 1>, int8_tiles<8, 1>}};
  const auto& fns = int4 ? int4_fns : int8_fns;
  at::parallel_for(0, tiles, kPanel, [&](int64_t begin, int64_t end) {
    for (int64_t panel = begin; panel < end; panel += kPanel) {
      const int64_t stop = std::min(end, panel + kPanel);
      for (int64_t row = 0; row < m; row += kRows) {
        const int64_t rows = std::min(kRows, m - row), group = kGroup[rows];
        for (int64_t t = panel; t < stop;) {
          const bool grouped = group > 1 && t + group <= stop;
          fns[rows - 1][grouped](wp + t * tile_bytes, sp + t * tile_scales, tile_bytes, tile_scales, blocks, k, a,
                                 row, yp + row * n + t * kTile, n);
          t += grouped ? group : 1;
        }
      }
    }
  });
}

}  // namespace v512
#pragma GCC pop_options

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA + F16C: the same layouts and arithmetic, 8 lanes at a time.
namespace v256 {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

QuantRows quantize_rows(const float* xp, int64_t m, int64_t k) {
  const int64_t blocks = k / kBlock;
  const RowsScratch out = rows_scratch(m, k);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < m * blocks; ++i) {
    const float* xb = xp + i * kBlock;
    __m256 v[4], top = _mm256_setzero_ps();
    for (int c = 0; c < 4; ++c) {
      v[c] = _mm256_loadu_ps(xb + 8 * c);
      top = _mm256_max_ps(top, _mm256_andnot_ps(sign, v[c]));
    }
    const float amax = hmax(top);
    const float d = amax / 127.0f;
    const __m256 inv = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    alignas(32) int32_t q[32];
    for (int c = 0; c < 4; ++c)
      _mm256_store_si256(reinterpret_cast<__m256i*>(q + 8 * c), _mm256_cvtps_epi32(_mm256_mul_ps(v[c], inv)));
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) {
      out.q[i * kBlock + j] = static_cast<int8_t>(q[j]);  // |q| <= 127
      sum += q[j];
    }
    out.d[i] = d;
    out.s[i] = d * static_cast<float>(sum);
    out.isum[i] = sum;
  }
  return QuantRows{out.q, out.d, out.s, out.isum};
}

// sum of 4 adjacent u8 x s8 products per int32 lane, as vpdpbusd without the accumulate
inline __m256i dot4(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

inline __m256i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// R rows of one tile: halves h = 0, 1 hold outputs 0-7 and 8-15
template <int R>
void int4_tile(const uint8_t* w, const uint16_t* sc, int64_t blocks, int64_t k, const QuantRows& a, int64_t row,
               float* y, int64_t n) {
  const int8_t* aq = a.q + row * k;
  const float* ad = a.d + row * blocks;
  const float* as = a.s + row * blocks;
  const __m256i low = _mm256_set1_epi8(0x0F);
  __m256 acc[2][R] = {};
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i dot[2][R] = {};
    for (int i = 0; i < 4; ++i) {
      for (int h = 0; h < 2; ++h) {
        const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + b * 256 + 64 * i + 32 * h));
        const __m256i lo = _mm256_and_si256(packed, low);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
        for (int r = 0; r < R; ++r) {
          const int8_t* ab = aq + r * k + b * kBlock + 8 * i;
          dot[h][r] = _mm256_add_epi32(dot[h][r], _mm256_add_epi32(dot4(lo, broadcast4(ab)), dot4(hi, broadcast4(ab + 4))));
        }
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + b * 32 + 8 * h)));
      const __m256 mn = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + b * 32 + 16 + 8 * h)));
      for (int r = 0; r < R; ++r) {
        acc[h][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[h][r]), _mm256_mul_ps(d, _mm256_set1_ps(ad[r * blocks + b])),
                                    acc[h][r]);
        acc[h][r] = _mm256_fmadd_ps(mn, _mm256_set1_ps(as[r * blocks + b]), acc[h][r]);
      }
    }
  }
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * n + 8 * h, acc[h][r]);
}

// int8 weights: stored as q + 128; q's sign moves onto the activation (vpsignb) so that the
// unsigned operand is |q| <= 127 and no int16 pair sum saturates
template <int R>
void int8_tile(const uint8_t* w, const uint16_t* sc, int64_t blocks, int64_t k, const QuantRows& a, int64_t row,
               float* y, int64_t n) {
  const int8_t* aq = a.q + row * k;
  const float* ad = a.d + row * blocks;
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  __m256 acc[2][R] = {};
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i dot[2][R] = {};
    for (int j = 0; j < 8; ++j) {
      for (int h = 0; h < 2; ++h) {
        const __m256i q = _mm256_xor_si256(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + b * 512 + 64 * j + 32 * h)), flip);  // q as int8
        const __m256i magnitude = _mm256_sign_epi8(q, q);
        for (int r = 0; r < R; ++r)
          dot[h][r] = _mm256_add_epi32(dot[h][r],
                                       dot4(magnitude, _mm256_sign_epi8(broadcast4(aq + r * k + b * kBlock + 4 * j), q)));
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + b * 16 + 8 * h)));
      for (int r = 0; r < R; ++r)
        acc[h][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[h][r]), _mm256_mul_ps(d, _mm256_set1_ps(ad[r * blocks + b])),
                                    acc[h][r]);
    }
  }
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * n + 8 * h, acc[h][r]);
}

using TileFn = void (*)(const uint8_t*, const uint16_t*, int64_t, int64_t, const QuantRows&, int64_t, float*, int64_t);
constexpr int64_t kRows = 2;  // 16 ymm registers: two rows of a tile at a time

void linear(const float* xp, int64_t m, int64_t k, int64_t n, bool int4, const uint8_t* wp, const uint16_t* sp,
            float* yp) {
  const int64_t blocks = k / kBlock, tiles = n / kTile;
  const int64_t tile_bytes = blocks * (int4 ? 256 : 512), tile_scales = blocks * (int4 ? 32 : 16);
  const QuantRows a = quantize_rows(xp, m, k);
  static const TileFn int4_fns[] = {int4_tile<1>, int4_tile<2>};
  static const TileFn int8_fns[] = {int8_tile<1>, int8_tile<2>};
  const TileFn* fns = int4 ? int4_fns : int8_fns;
  at::parallel_for(0, tiles, kPanel, [&](int64_t begin, int64_t end) {
    for (int64_t panel = begin; panel < end; panel += kPanel) {
      const int64_t stop = std::min(end, panel + kPanel);
      for (int64_t row = 0; row < m; row += kRows) {
        const int64_t rows = std::min(kRows, m - row);
        for (int64_t t = panel; t < stop; ++t)
          fns[rows - 1](wp + t * tile_bytes, sp + t * tile_scales, blocks, k, a, row, yp + row * n + t * kTile, n);
      }
    }
  });
}

const float* rms_norm(const float* xp, int64_t m, int64_t k, const float* wp, double eps) {
  float* op = norm_scratch(m, k);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = xp + r * k;
    __m256 squares = _mm256_setzero_ps();
    for (int64_t i = 0; i < k; i += 8) {
      const __m256 v = _mm256_loadu_ps(row + i);
      squares = _mm256_fmadd_ps(v, v, squares);
    }
    const float scale = 1.0f / std::sqrt(hsum(squares) / static_cast<float>(k) + static_cast<float>(eps));
    const __m256 s = _mm256_set1_ps(scale);
    for (int64_t i = 0; i < k; i += 8)
      _mm256_storeu_ps(op + r * k + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(row + i), s), _mm256_loadu_ps(wp + i)));
  }
  return op;
}

// e^x for x <= 0, as v512's (2^n built from its exponent bits: n >= -126 after the clamp)
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i power = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(power));
}

void attend_one(const float* q, const float* k, const float* v, int64_t k_stride, int64_t v_stride, int64_t keys,
                int64_t start, const int64_t* path, int64_t dim, float scale, float* scores, float* out) {
  auto position = [&](int64_t t) { return t < start || path == nullptr ? t : start + path[t - start]; };
  const int64_t chunks = dim / 8;
  __m256 qv[32];
  for (int64_t c = 0; c < chunks; ++c) qv[c] = _mm256_mul_ps(_mm256_loadu_ps(q + 8 * c), _mm256_set1_ps(scale));
  float best = -INFINITY;
  for (int64_t t = 0; t < keys; ++t) {
    const float* kt = k + position(t) * k_stride;
    __m256 acc = _mm256_mul_ps(qv[0], _mm256_loadu_ps(kt));
    for (int64_t c = 1; c < chunks; ++c) acc = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(kt + 8 * c), acc);
    const float s = hsum(acc);
    scores[t] = s;
    best = s > best ? s : best;
  }
  const __m256 top = _mm256_set1_ps(best);
  __m256 total = _mm256_setzero_ps();
  int64_t t = 0;
  for (; t + 8 <= keys; t += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + t), top));
    _mm256_storeu_ps(scores + t, e);
    total = _mm256_add_ps(total, e);
  }
  for (; t < keys; ++t) {  // the tail, one key at a time through the same polynomial
    const float e = _mm256_cvtss_f32(exp_nonpositive(_mm256_set1_ps(scores[t] - best)));
    scores[t] = e;
    total = _mm256_add_ps(total, _mm256_setr_ps(e, 0, 0, 0, 0, 0, 0, 0));
  }
  const float inverse = 1.0f / hsum(total);
  __m256 acc[32];
  for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t u = 0; u < keys; ++u) {
    const __m256 p = _mm256_set1_ps(scores[u]);
    const float* vt = v + position(u) * v_stride;
    for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vt + 8 * c), acc[c]);
  }
  for (int64_t c = 0; c < chunks; ++c) _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(acc[c], _mm256_set1_ps(inverse)));
}

}  // namespace v256

// ---------------------------------------------------------------------------------------------
// Which instruction set the ops use: AVX-512 VNNI where the CPU has it, else AVX2; kernel_isa()
// can pin either (tests run both on a machine with AVX-512).
std::atomic<int> isa_choice{0};  // 0: not chosen yet, 1: avx2, 2: avx512

bool use_avx512() {
  int choice = isa_choice.load(std::memory_order_relaxed);
  if (choice == 0) {
    __builtin_cpu_init();
    const bool wide = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    choice = wide ? 2 : 1;
    isa_choice.store(choice, std::memory_order_relaxed);
  }
  return choice == 2;
}

std::string kernel_isa(std::optional<std::string> pin) {
  if (pin.has_value()) {
    TORCH_CHECK(*pin == "avx2" || *pin == "avx512", "kernel_isa: avx2 or avx512");
    if (*pin == "avx512") {
      isa_choice.store(0);
      TORCH_CHECK(use_avx512(), "this CPU has no AVX-512 VNNI");
    }
    isa_choice.store(*pin == "avx512" ? 2 : 1);
  }
  return use_avx512() ? "avx512" : "avx2";
}

at::Tensor run(const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor& scales, int64_t n, bool int4,
               const std::optional<at::Tensor>& norm, double eps) {
  TORCH_CHECK(x_in.dim() == 2, "x must be [M, K]");
  TORCH_CHECK(weight.scalar_type() == at::kByte && weight.is_contiguous(), "weight must be packed uint8");
  TORCH_CHECK(scales.scalar_type() == at::kHalf && scales.is_contiguous(), "scales must be packed fp16");
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t m = x.size(0), k = x.size(1);
  TORCH_CHECK(k % kBlock == 0 && n % kTile == 0, "K must be a multiple of 32 and N of 16");
  const int64_t blocks = k / kBlock, tiles = n / kTile;
  TORCH_CHECK(weight.numel() == tiles * blocks * (int4 ? 256 : 512) && scales.numel() == tiles * blocks * (int4 ? 32 : 16),
              "packed weight/scales do not match N and K");
  at::Tensor y = at::empty({m, n}, at::kFloat);
  if (m == 0) return y;
  at::Tensor norm_weight;
  if (norm.has_value()) {
    TORCH_CHECK(norm->numel() == k, "norm weight must have K values");
    norm_weight = norm->to(at::kFloat).contiguous();
  }
  const bool wide = use_avx512();
  const float* xp = x.data_ptr<float>();
  if (norm.has_value())
    xp = wide ? v512::rms_norm(xp, m, k, norm_weight.data_ptr<float>(), eps)
              : v256::rms_norm(xp, m, k, norm_weight.data_ptr<float>(), eps);
  const uint8_t* wp = weight.data_ptr<uint8_t>();
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>());
  (wide ? v512::linear : v256::linear)(xp, m, k, n, int4, wp, sp, y.data_ptr<float>());
  return y;
}

at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales, int64_t n,
                       const std::optional<at::Tensor>& norm, double eps) {
  return run(x, weight, scales, n, true, norm, eps);
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales, int64_t n,
                       const std::optional<at::Tensor>& norm, double eps) {
  return run(x, weight, scales, n, false, norm, eps);
}


// ---------------------------------------------------------------------------------------------
// Attention of W query rows over a cache, each row alone: row j of [1, H, W, D] sees keys
// 0 .. L - W + j (the cache, then the block's rows up to itself). Same code for every row
// whatever W, and threads split (row, head) pairs only: row-invariant like the linears.
// Replaces one SDPA call per row (~30 us of set-up each for a single query row) in
// attention.py's row loop for int4a8 models.

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")
namespace v512 {

// e^x for x <= 0 (softmax after subtracting the max): Cody-Waite range reduction, degree-6
// polynomial, relative error ~2e-7.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// One query row over `keys` keys: the cache's first `start` rows, then block rows path[0..] (a
// draft tree's ancestors and the row itself, ascending) or, without a path, the next rows in
// order (a chain). A tree row thus sees the very key sequence its path's chain row would.
void attend_one(const float* q, const float* k, const float* v, int64_t k_stride, int64_t v_stride, int64_t keys,
                int64_t start, const int64_t* path, int64_t dim, float scale, float* scores, float* out) {
  auto position = [&](int64_t t) { return t < start || path == nullptr ? t : start + path[t - start]; };
  const int64_t chunks = dim / 16;
  __m512 qv[16];
  for (int64_t c = 0; c < chunks; ++c) qv[c] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * c), _mm512_set1_ps(scale));
  float best = -INFINITY;
  for (int64_t t = 0; t < keys; ++t) {
    const float* kt = k + position(t) * k_stride;
    __m512 acc = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kt));
    for (int64_t c = 1; c < chunks; ++c) acc = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(kt + 16 * c), acc);
    const float s = _mm512_reduce_add_ps(acc);
    scores[t] = s;
    best = s > best ? s : best;
  }
  const __m512 top = _mm512_set1_ps(best);
  __m512 total = _mm512_setzero_ps();
  int64_t t = 0;
  for (; t + 16 <= keys; t += 16) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(scores + t), top));
    _mm512_storeu_ps(scores + t, e);
    total = _mm512_add_ps(total, e);
  }
  if (t < keys) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (keys - t)) - 1);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, scores + t), top));
    _mm512_mask_storeu_ps(scores + t, tail, e);
    total = _mm512_add_ps(total, _mm512_maskz_mov_ps(tail, e));
  }
  const float inverse = 1.0f / _mm512_reduce_add_ps(total);
  __m512 acc[16];
  for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t u = 0; u < keys; ++u) {
    const __m512 p = _mm512_set1_ps(scores[u]);
    const float* vt = v + position(u) * v_stride;
    for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vt + 16 * c), acc[c]);
  }
  for (int64_t c = 0; c < chunks; ++c) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[c], _mm512_set1_ps(inverse)));
}

}  // namespace v512
#pragma GCC pop_options

using AttendOne = void (*)(const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                           const int64_t*, int64_t, float, float*, float*);

// every (row, head) pair through one instruction set's attend_one, threads splitting the pairs
void attend_all(AttendOne attend_one, const float* qp, const float* kp, const float* vp, int64_t k_head, int64_t v_head,
                int64_t k_row, int64_t v_row, int64_t heads, int64_t width, int64_t group, int64_t start,
                int64_t length, int64_t dim, float scale, const int64_t* pp, const int64_t* dp, float* op) {
  at::parallel_for(0, width * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(length) + 16);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t row = i / heads, head = i % heads, kv = head / group;
      const int64_t keys = start + (dp ? dp[row] : row + 1);
      attend_one(qp + (head * width + row) * dim, kp + kv * k_head, vp + kv * v_head, k_row, v_row, keys, start,
                 pp ? pp + row * width : nullptr, dim, scale, scores.data(), op + (row * heads + head) * dim);
    }
  });
}

// paths (optional, a draft tree's): int64 [W, W], row j's block rows in its first depths[j] entries
at::Tensor attend_rows(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, double scale,
                       const std::optional<at::Tensor>& paths_in, const std::optional<at::Tensor>& depths_in) {
  TORCH_CHECK(query.dim() == 4 && key.dim() == 4 && value.dim() == 4 && query.size(0) == 1, "[1, H, W, D] tensors");
  TORCH_CHECK(query.scalar_type() == at::kFloat && key.scalar_type() == at::kFloat && value.scalar_type() == at::kFloat,
              "fp32 query, key and value");
  const int64_t heads = query.size(1), width = query.size(2), dim = query.size(3);
  const int64_t kv_heads = key.size(1), length = key.size(2);
  TORCH_CHECK(dim % 16 == 0 && dim <= 256, "head size must be a multiple of 16, at most 256");
  TORCH_CHECK(heads % kv_heads == 0 && length >= width && value.size(2) == length, "shapes do not match");
  TORCH_CHECK(key.stride(3) == 1 && value.stride(3) == 1, "key and value rows must be contiguous");
  const at::Tensor q = query.contiguous();
  at::Tensor out = at::empty({1, width, heads, dim}, at::kFloat);
  const float* qp = q.data_ptr<float>();
  const float* kp = key.data_ptr<float>();
  const float* vp = value.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t group = heads / kv_heads, start = length - width;
  at::Tensor paths, depths;
  if (paths_in.has_value()) {
    TORCH_CHECK(depths_in.has_value(), "paths need depths");
    paths = paths_in->to(at::kLong).contiguous();
    depths = depths_in->to(at::kLong).contiguous();
    TORCH_CHECK(paths.dim() == 2 && paths.size(0) == width && paths.size(1) == width && depths.numel() == width,
                "paths must be [W, W] and depths [W]");
    const int64_t* pp = paths.data_ptr<int64_t>();
    const int64_t* dp = depths.data_ptr<int64_t>();
    for (int64_t j = 0; j < width; ++j) {
      TORCH_CHECK(dp[j] >= 1 && dp[j] <= width, "a path holds 1..W rows");
      for (int64_t i = 0; i < dp[j]; ++i) TORCH_CHECK(pp[j * width + i] >= 0 && pp[j * width + i] < width, "path row out of range");
    }
  }
  const int64_t* pp = paths.defined() ? paths.data_ptr<int64_t>() : nullptr;
  const int64_t* dp = depths.defined() ? depths.data_ptr<int64_t>() : nullptr;
  attend_all(use_avx512() ? v512::attend_one : v256::attend_one, qp, kp, vp, key.stride(1), value.stride(1),
             key.stride(2), value.stride(2), heads, width, group, start, length, dim, static_cast<float>(scale), pp, dp,
             op);
  return out;
}

// Rotary embedding of the query and key heads of a fused q/k/v output [1, T, C] (the first
// `rotated` columns), as transformers' apply_rotary_pos_emb: x * cos + rotate_half(x) * sin,
// with a multiply, a multiply and an add rounded separately (no fused multiply-add), so the
// bits are those of the torch ops. cos, sin: [T, D]. Returns [1, rotated / D, T, D].
at::Tensor rotary_qk(const at::Tensor& qkv_in, const at::Tensor& cos_in, const at::Tensor& sin_in, int64_t rotated,
                     int64_t dim) {
  TORCH_CHECK(qkv_in.dim() == 3 && qkv_in.size(0) == 1 && qkv_in.scalar_type() == at::kFloat, "fp32 [1, T, C] q/k/v");
  const at::Tensor qkv = qkv_in.contiguous(), cos = cos_in.contiguous(), sin = sin_in.contiguous();
  const int64_t width = qkv.size(1), columns = qkv.size(2), heads = rotated / dim, half = dim / 2;
  TORCH_CHECK(rotated % dim == 0 && rotated <= columns && dim % 2 == 0, "rotated columns must be whole heads");
  TORCH_CHECK(cos.numel() == width * dim && sin.numel() == width * dim && cos.scalar_type() == at::kFloat &&
              sin.scalar_type() == at::kFloat, "fp32 cos and sin of [T, D]");
  at::Tensor out = at::empty({1, heads, width, dim}, at::kFloat);
  const float* xp = qkv.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t t = 0; t < width; ++t) {
      const float* x = xp + t * columns + h * dim;
      const float* c = cp + t * dim;
      const float* s = sp + t * dim;
      float* o = op + (h * width + t) * dim;
      for (int64_t d = 0; d < dim; ++d) {
        const float turned = d < half ? -x[d + half] : x[d - half];
        const float a = x[d] * c[d];
        const float b = turned * s[d];
        o[d] = a + b;
      }
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(chatnexus, m) {
  // norm: RMSNorm weight applied to x first (with eps), in the same call
  m.def("int4a8_linear(Tensor x, Tensor weight, Tensor scales, int n, Tensor? norm=None, float eps=0.0) -> Tensor");
  m.def("int8a8_linear(Tensor x, Tensor weight, Tensor scales, int n, Tensor? norm=None, float eps=0.0) -> Tensor");
  m.def("attend_rows(Tensor query, Tensor key, Tensor value, float scale, Tensor? paths=None, Tensor? depths=None) "
        "-> Tensor");
  m.def("rotary_qk(Tensor qkv, Tensor cos, Tensor sin, int rotated, int dim) -> Tensor");
  // the instruction set the ops use ("avx512" or "avx2"); `isa` pins one
  m.def("kernel_isa(str? isa=None) -> str", kernel_isa);
}

TORCH_LIBRARY_IMPL(chatnexus, CPU, m) {
  m.impl("int4a8_linear", int4_linear);
  m.impl("int8a8_linear", int8_linear);
  m.impl("attend_rows", attend_rows);
  m.impl("rotary_qk", rotary_qk);
}
