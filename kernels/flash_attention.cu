// Causal grouped-query attention on tensor cores, flash-attention style (bf16 in and
// out, f32 accumulation): the forward streams K/V tiles through shared memory with an
// online softmax and keeps only the output and the log-sum-exp; the backward recomputes
// the probabilities from them. Same layout and masking as attention.cu (the simple
// kernels, which stay the reference on the device): q, out [B, T, Hq, D]; k, v
// [B, T, Hkv, D]; lse [B, Hq, T] in scaled-score units; query head h reads kv head
// h / (Hq / Hkv); position i sees key j iff j <= i and, with packed sequences, both carry
// the same segment id.
//
// Work at Qwen2.5-0.5B shapes (B16 T1024 Hq14 Hkv2 D64), counting the causal half:
// forward 4·B·Hq·T²·D/2 = 30 GFLOP, backward 2.5× that (75 GFLOP). At the H100's measured
// 695 TFLOP/s bf16 GEMM rate that is 43 µs and 108 µs; the bytes (q, k, v, out, lse,
// and their gradients, about 120 MB) take 40 µs at 3025 GB/s, so both are bound by the
// tensor cores and the softmax around them. PyTorch's SDPA takes 98 µs / 344 µs
// (benches/RESULTS.md): the goal is forward + backward within 1.5× of that.
//
// Kernels, all with warps of 16 query (or key) rows on m16n8k16 products (mma.cuh):
//   flash_attention_forward   4 warps = 64 queries a block; K/V tiles of 64 keys
//   flash_attention_delta     delta = rowsum(dout · out), one warp per row
//   flash_attention_dq        2 warps = 32 queries a block; K/V tiles of 32 keys
//   flash_attention_dkv       2 warps = 32 keys a block, over the query heads of the group
//                             and the query tiles of 32 at or after the keys: dK and dV
//                             are summed in registers, so no atomics, deterministic
// Shared memory: rows padded to D + 8 elements; forward 2·64 rows, backward 4·32 rows
// (34.8 KB at D = 128), and dK/dV's P and dS tiles (5 KB): under the 48 KB every
// architecture gives without opting in.
#include "mma.cuh"

constexpr int kPad = 8;

struct FlashDims {
  int batch, seq, q_heads, kv_heads;
  float scale;
};

// Element offset of row `pos` of head h in a [B, T, H, D] tensor.
template <int D>
__device__ __forceinline__ size_t row_at(const FlashDims& d, int b, int pos, int heads, int h) {
  return (((size_t)b * d.seq + pos) * heads + h) * D;
}

// Copies rows first .. first + ROWS of head h into a padded shared tile, zeros past the end,
// as bf16 pairs in 32-bit words (so src must be 4-byte aligned: the launchers check).
template <int D, int ROWS, int THREADS>
__device__ void load_rows(bf16* tile, const bf16* src, const FlashDims& d, int b, int first, int heads,
                          int h) {
  constexpr int kPairs = D / 2;
  for (int e = threadIdx.x; e < ROWS * kPairs; e += THREADS) {
    int row = e / kPairs, pair = e % kPairs, pos = first + row;
    unsigned value = 0;
    if (pos < d.seq) value = *reinterpret_cast<const unsigned*>(src + row_at<D>(d, b, pos, heads, h) + 2 * pair);
    *reinterpret_cast<unsigned*>(tile + row * (D + kPad) + 2 * pair) = value;
  }
}

__device__ __forceinline__ bool visible(const int* segments, int row_start, int seq, int i, int j) {
  return j <= i && i < seq && (segments == nullptr || segments[row_start + i] == segments[row_start + j]);
}

// The lane's query (or key) row of C element i within a warp's 16 rows.
__device__ __forceinline__ int c_row(int i) { return threadIdx.x % 32 / 4 + 8 * (i >> 1); }
// The column of C element i of the 8-column fragment n.
__device__ __forceinline__ int c_col(int n, int i) { return 8 * n + 2 * (threadIdx.x % 4) + (i & 1); }

// A sum over the 4 lanes that share a C row.
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// S = Q_w · K_tileᵀ for a warp's 16 query rows (fragments in registers) against `KEYS`
// keys of a shared tile.
template <int D, int KEYS>
__device__ __forceinline__ void scores(FragC (&s)[KEYS / 8], const FragA (&q)[D / 16], const bf16* k_tile) {
  for (int n = 0; n < KEYS / 8; ++n) {
    s[n] = FragC{{0.0f, 0.0f, 0.0f, 0.0f}};
    for (int kk = 0; kk < D / 16; ++kk) mma_bf16(s[n], q[kk], load_b_transposed(k_tile, D + kPad, 8 * n, 16 * kk));
  }
}

// The same with the 16 rows read from a shared tile (from row row0) one k-step at a time,
// so the backward holds no row fragments beside its accumulators.
template <int D, int KEYS>
__device__ __forceinline__ void scores_from_tile(FragC (&s)[KEYS / 8], const bf16* rows, int row0,
                                                 const bf16* k_tile) {
  for (int n = 0; n < KEYS / 8; ++n) s[n] = FragC{{0.0f, 0.0f, 0.0f, 0.0f}};
  for (int kk = 0; kk < D / 16; ++kk) {
    FragA a = load_a(rows, D + kPad, row0, 16 * kk);
    for (int n = 0; n < KEYS / 8; ++n) mma_bf16(s[n], a, load_b_transposed(k_tile, D + kPad, 8 * n, 16 * kk));
  }
}

constexpr int kForwardWarps = 4, kForwardKeys = 64;

template <int D>
__device__ void flash_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                              const int* segments, FlashDims d) {
  __shared__ bf16 k_tile[kForwardKeys * (D + kPad)];
  __shared__ bf16 v_tile[kForwardKeys * (D + kPad)];
  int h = blockIdx.y % d.q_heads, b = blockIdx.y / d.q_heads, g = h / (d.q_heads / d.kv_heads);
  int warp = threadIdx.x / 32, first = blockIdx.x * 16 * kForwardWarps + 16 * warp;
  const bf16* q_rows = q + row_at<D>(d, b, 0, d.q_heads, h);
  FragA qf[D / 16];
  for (int kk = 0; kk < D / 16; ++kk) {
    FragA a;
    unsigned gr = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    for (int r = 0; r < 4; ++r) {
      int pos = first + gr + 8 * (r & 1), col = 16 * kk + 2 * t + 8 * (r >> 1);
      a.r[r] = pos < d.seq ? *reinterpret_cast<const unsigned*>(q_rows + (size_t)pos * d.q_heads * D + col) : 0u;
    }
    qf[kk] = a;
  }
  FragC o[D / 8];
  for (int n = 0; n < D / 8; ++n) o[n] = FragC{{0.0f, 0.0f, 0.0f, 0.0f}};
  float row_max[2] = {neg_infinity(), neg_infinity()}, row_sum[2] = {0.0f, 0.0f};
  int block_end = min(d.seq, (int)(blockIdx.x + 1) * 16 * kForwardWarps);
  for (int k0 = 0; k0 < block_end; k0 += kForwardKeys) {
    __syncthreads();
    load_rows<D, kForwardKeys, 32 * kForwardWarps>(k_tile, k, d, b, k0, d.kv_heads, g);
    load_rows<D, kForwardKeys, 32 * kForwardWarps>(v_tile, v, d, b, k0, d.kv_heads, g);
    __syncthreads();
    FragC s[kForwardKeys / 8];
    scores<D, kForwardKeys>(s, qf, k_tile);
    float tile_max[2] = {neg_infinity(), neg_infinity()};
    for (int n = 0; n < kForwardKeys / 8; ++n)
      for (int i = 0; i < 4; ++i) {
        int row = first + c_row(i), key = k0 + c_col(n, i);
        float x = visible(segments, b * d.seq, d.seq, row, key) ? s[n].x[i] * d.scale : neg_infinity();
        s[n].x[i] = x;
        tile_max[i >> 1] = fmaxf(tile_max[i >> 1], x);
      }
    float rescale[2], reference[2], tile_sum[2] = {0.0f, 0.0f};
    for (int r = 0; r < 2; ++r) {
      float m = fmaxf(row_max[r], quad_max(tile_max[r]));
      reference[r] = m == neg_infinity() ? 0.0f : m;  // a row with nothing visible yet
      rescale[r] = expf(row_max[r] - reference[r]);
      row_max[r] = m;
    }
    for (int n = 0; n < kForwardKeys / 8; ++n)
      for (int i = 0; i < 4; ++i) {
        s[n].x[i] = expf(s[n].x[i] - reference[i >> 1]);
        tile_sum[i >> 1] += s[n].x[i];
      }
    for (int r = 0; r < 2; ++r) row_sum[r] = row_sum[r] * rescale[r] + quad_sum(tile_sum[r]);
    for (int n = 0; n < D / 8; ++n)
      for (int i = 0; i < 4; ++i) o[n].x[i] *= rescale[i >> 1];
    for (int kk = 0; kk < kForwardKeys / 16; ++kk) {
      FragA p = c_to_a(s, kk);
      for (int n = 0; n < D / 8; ++n) mma_bf16(o[n], p, load_b(v_tile, D + kPad, 16 * kk, 8 * n));
    }
  }
  for (int n = 0; n < D / 8; ++n)
    for (int i = 0; i < 4; ++i) {
      int row = first + c_row(i);
      if (row < d.seq) out[row_at<D>(d, b, row, d.q_heads, h) + c_col(n, i)] = from_float<bf16>(o[n].x[i] / row_sum[i >> 1]);
    }
  for (int r = 0; r < 2; ++r) {
    int row = first + c_row(2 * r);
    if (threadIdx.x % 4 == 0 && row < d.seq)
      lse[((size_t)b * d.q_heads + h) * d.seq + row] = row_max[r] + logf(row_sum[r]);
  }
}

// delta[b, h, i] = dout[b, i, h] · out[b, i, h]: one warp per row.
template <int D>
__device__ void flash_delta(float* delta, const bf16* out, const bf16* dout, FlashDims d) {
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // over B·T·Hq, in q's order
  if (row >= d.batch * d.seq * d.q_heads) return;
  float sum = 0.0f;
  for (int c = threadIdx.x % 32; c < D; c += 32)
    sum += to_float(out[(size_t)row * D + c]) * to_float(dout[(size_t)row * D + c]);
  sum = warp_sum(sum);
  int h = row % d.q_heads, pos = row / d.q_heads % d.seq, b = row / (d.q_heads * d.seq);
  if (threadIdx.x % 32 == 0) delta[((size_t)b * d.q_heads + h) * d.seq + pos] = sum;
}

constexpr int kBackwardWarps = 2, kBackwardRows = 16 * kBackwardWarps;

// The lse (stats[0]) and delta (stats[1]) of the lane's two query rows of the warp's 16
// from `first`; rows past the end read the last row's (their probabilities are masked).
__device__ __forceinline__ void load_row_stats(float (&stats)[2][2], const float* lse, const float* delta,
                                               int b, int h, int first, const FlashDims& d) {
  for (int r = 0; r < 2; ++r) {
    int row = min(first + c_row(2 * r), d.seq - 1);
    size_t at = ((size_t)b * d.q_heads + h) * d.seq + row;
    stats[0][r] = lse[at];
    stats[1][r] = delta[at];
  }
}

// The tiles one backward step reads: 32 queries with their output gradients, 32 keys
// with their values, each [row][D] padded.
struct BackwardTiles {
  const bf16 *q, *dout, *k, *v;
};

// The probabilities P and dS = P ∘ (dP − delta) of the warp's 16 query rows (from row
// `row0` of the query tiles; `first` in the sequence) against the 32 keys from `k0`, in C
// layout. `stats` holds the rows' lse and delta.
template <int D>
__device__ __forceinline__ void probabilities_and_ds(FragC (&p)[4], FragC (&ds)[4], BackwardTiles tiles,
                                                     int row0, const float (&stats)[2][2],
                                                     const int* segments, int b, int first, int k0,
                                                     const FlashDims& d) {
  scores_from_tile<D, kBackwardRows>(p, tiles.q, row0, tiles.k);
  scores_from_tile<D, kBackwardRows>(ds, tiles.dout, row0, tiles.v);  // dP = dO · Vᵀ
  for (int n = 0; n < 4; ++n)
    for (int i = 0; i < 4; ++i) {
      int row = first + c_row(i), key = k0 + c_col(n, i);
      float prob = visible(segments, b * d.seq, d.seq, row, key)
                       ? expf(p[n].x[i] * d.scale - stats[0][i >> 1])
                       : 0.0f;
      p[n].x[i] = prob;
      ds[n].x[i] = prob * (ds[n].x[i] - stats[1][i >> 1]);
    }
}

template <int D>
__device__ void flash_dq(bf16* dq, const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                         const float* lse, const float* delta, const int* segments, FlashDims d) {
  __shared__ bf16 q_tile[kBackwardRows * (D + kPad)], do_tile[kBackwardRows * (D + kPad)];
  __shared__ bf16 k_tile[kBackwardRows * (D + kPad)], v_tile[kBackwardRows * (D + kPad)];
  int h = blockIdx.y % d.q_heads, b = blockIdx.y / d.q_heads, g = h / (d.q_heads / d.kv_heads);
  int warp = threadIdx.x / 32, q0 = blockIdx.x * kBackwardRows, first = q0 + 16 * warp;
  load_rows<D, kBackwardRows, 32 * kBackwardWarps>(q_tile, q, d, b, q0, d.q_heads, h);
  load_rows<D, kBackwardRows, 32 * kBackwardWarps>(do_tile, dout, d, b, q0, d.q_heads, h);
  float stats[2][2];
  load_row_stats(stats, lse, delta, b, h, first, d);
  FragC acc[D / 8];
  for (int n = 0; n < D / 8; ++n) acc[n] = FragC{{0.0f, 0.0f, 0.0f, 0.0f}};
  int end = min(d.seq, q0 + kBackwardRows);
  for (int k0 = 0; k0 < end; k0 += kBackwardRows) {
    __syncthreads();
    load_rows<D, kBackwardRows, 32 * kBackwardWarps>(k_tile, k, d, b, k0, d.kv_heads, g);
    load_rows<D, kBackwardRows, 32 * kBackwardWarps>(v_tile, v, d, b, k0, d.kv_heads, g);
    __syncthreads();
    FragC p[4], ds[4];
    BackwardTiles tiles{q_tile, do_tile, k_tile, v_tile};
    probabilities_and_ds<D>(p, ds, tiles, 16 * warp, stats, segments, b, first, k0, d);
    for (int kk = 0; kk < 2; ++kk) {
      FragA a = c_to_a(ds, kk);
      for (int n = 0; n < D / 8; ++n) mma_bf16(acc[n], a, load_b(k_tile, D + kPad, 16 * kk, 8 * n));
    }
  }
  for (int n = 0; n < D / 8; ++n)
    for (int i = 0; i < 4; ++i) {
      int row = first + c_row(i);
      if (row < d.seq) dq[row_at<D>(d, b, row, d.q_heads, h) + c_col(n, i)] = from_float<bf16>(acc[n].x[i] * d.scale);
    }
}

// Writes the C fragments of a warp's 16 rows into a padded shared tile as bf16: the
// transpose trick for dK and dV, whose products need Pᵀ and dSᵀ as A operands.
template <int N>
__device__ __forceinline__ void store_c(bf16* tile, int ld, const FragC (&c)[N]) {
  int warp = threadIdx.x / 32;
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < 4; ++i) tile[(16 * warp + c_row(i)) * ld + c_col(n, i)] = from_float<bf16>(c[n].x[i]);
}

template <int D>
__device__ void flash_dkv(bf16* dk, bf16* dv, const bf16* q, const bf16* k, const bf16* v,
                          const bf16* dout, const float* lse, const float* delta, const int* segments,
                          FlashDims d) {
  __shared__ bf16 q_tile[kBackwardRows * (D + kPad)], do_tile[kBackwardRows * (D + kPad)];
  __shared__ bf16 k_tile[kBackwardRows * (D + kPad)], v_tile[kBackwardRows * (D + kPad)];
  // P and dS of the current query tile against the block's keys: [query][key].
  __shared__ bf16 p_tile[kBackwardRows * (kBackwardRows + kPad)];
  __shared__ bf16 ds_tile[kBackwardRows * (kBackwardRows + kPad)];
  constexpr int kLd = kBackwardRows + kPad;
  int g = blockIdx.y % d.kv_heads, b = blockIdx.y / d.kv_heads, group = d.q_heads / d.kv_heads;
  int warp = threadIdx.x / 32, k0 = blockIdx.x * kBackwardRows;
  load_rows<D, kBackwardRows, 32 * kBackwardWarps>(k_tile, k, d, b, k0, d.kv_heads, g);
  load_rows<D, kBackwardRows, 32 * kBackwardWarps>(v_tile, v, d, b, k0, d.kv_heads, g);
  FragC dk_acc[D / 8], dv_acc[D / 8];
  for (int n = 0; n < D / 8; ++n) dk_acc[n] = dv_acc[n] = FragC{{0.0f, 0.0f, 0.0f, 0.0f}};
  for (int h = g * group; h < (g + 1) * group; ++h)
    for (int q0 = k0; q0 < d.seq; q0 += kBackwardRows) {
      __syncthreads();
      load_rows<D, kBackwardRows, 32 * kBackwardWarps>(q_tile, q, d, b, q0, d.q_heads, h);
      load_rows<D, kBackwardRows, 32 * kBackwardWarps>(do_tile, dout, d, b, q0, d.q_heads, h);
      __syncthreads();
      // Each warp takes 16 of the tile's queries against all 32 keys of the block ...
      int first = q0 + 16 * warp;
      float stats[2][2];
      load_row_stats(stats, lse, delta, b, h, first, d);
      FragC p[4], ds[4];
      BackwardTiles tiles{q_tile, do_tile, k_tile, v_tile};
      probabilities_and_ds<D>(p, ds, tiles, 16 * warp, stats, segments, b, first, k0, d);
      // ... stores P and dS as [query][key] tiles, then reads them back transposed ...
      store_c(p_tile, kLd, p);
      store_c(ds_tile, kLd, ds);
      __syncthreads();
      // ... and each warp accumulates its own 16 keys: dV += Pᵀ · dO, dK += dSᵀ · Q.
      for (int kk = 0; kk < kBackwardRows / 16; ++kk) {
        FragA pa = load_a_transposed(p_tile, kLd, 16 * warp, 16 * kk);
        FragA da = load_a_transposed(ds_tile, kLd, 16 * warp, 16 * kk);
        for (int n = 0; n < D / 8; ++n) {
          mma_bf16(dv_acc[n], pa, load_b(do_tile, D + kPad, 16 * kk, 8 * n));
          mma_bf16(dk_acc[n], da, load_b(q_tile, D + kPad, 16 * kk, 8 * n));
        }
      }
    }
  for (int n = 0; n < D / 8; ++n)
    for (int i = 0; i < 4; ++i) {
      int key = k0 + 16 * warp + c_row(i);
      if (key >= d.seq) continue;
      size_t at = row_at<D>(d, b, key, d.kv_heads, g) + c_col(n, i);
      dk[at] = from_float<bf16>(dk_acc[n].x[i] * d.scale);
      dv[at] = from_float<bf16>(dv_acc[n].x[i]);
    }
}

#define FLASH_PARAMS int batch, int seq, int q_heads, int kv_heads, float scale
#define FLASH_DIMS FlashDims{batch, seq, q_heads, kv_heads, scale}
#define FLASH_KERNELS(D)                                                                           \
  extern "C" __global__ void flash_attention_forward_d##D(bf16* out, float* lse, const bf16* q,    \
                                                          const bf16* k, const bf16* v,            \
                                                          const int* segments, FLASH_PARAMS) {     \
    flash_forward<D>(out, lse, q, k, v, segments, FLASH_DIMS);                                     \
  }                                                                                                \
  extern "C" __global__ void flash_attention_delta_d##D(float* delta, const bf16* out,             \
                                                        const bf16* dout, FLASH_PARAMS) {          \
    flash_delta<D>(delta, out, dout, FLASH_DIMS);                                                  \
  }                                                                                                \
  extern "C" __global__ void flash_attention_dq_d##D(                                              \
      bf16* dq, const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse,   \
      const float* delta, const int* segments, FLASH_PARAMS) {                                     \
    flash_dq<D>(dq, q, k, v, dout, lse, delta, segments, FLASH_DIMS);                              \
  }                                                                                                \
  extern "C" __global__ void flash_attention_dkv_d##D(                                             \
      bf16* dk, bf16* dv, const bf16* q, const bf16* k, const bf16* v, const bf16* dout,           \
      const float* lse, const float* delta, const int* segments, FLASH_PARAMS) {                   \
    flash_dkv<D>(dk, dv, q, k, v, dout, lse, delta, segments, FLASH_DIMS);                         \
  }

FLASH_KERNELS(64)
FLASH_KERNELS(128)

SCOTD_EXPORT(flash_attention_forward_d64);
SCOTD_EXPORT(flash_attention_forward_d128);
SCOTD_EXPORT(flash_attention_delta_d64);
SCOTD_EXPORT(flash_attention_delta_d128);
SCOTD_EXPORT(flash_attention_dq_d64);
SCOTD_EXPORT(flash_attention_dq_d128);
SCOTD_EXPORT(flash_attention_dkv_d64);
SCOTD_EXPORT(flash_attention_dkv_d128);
