// Generation's attention over a paged key/value cache, and the write that fills it.
//
// The cache of one layer is a pool of blocks, k and v [blocks, block_size, Hkv, D]; a
// sequence's positions live in the blocks its table lists, in order, so sequences of any
// lengths share one pool with no padding and a finished one hands its blocks back.
// Query row r sits at position pos[r] of sequence seq[r] and sees its positions
// 0..=pos[r]: decode (one query per sequence), or queries whose keys are already cached
// (a continued conversation). Fresh prompts go through flash attention instead.
//
// Bytes: memory-bound. A decode step must read every cached row once: per layer
// Σ_r (pos[r]+1)·Hkv·D·2 elements. At the sampling job's shape (DeepSeek-math-7B, MHA
// 32 heads × 128, bf16, 64 sequences at a mean 512 positions) that is 64·512·32·128·2·2 B
// = 537 MB a layer, 16 GB a step over 30 layers: 5.3 ms at 3.0 TB/s, beside 13.8 GB of
// weights (4.6 ms). So the kernel must run at the copy bandwidth: each block reads its
// rows once, coalesced (a warp per row, lanes along D), and the query heads of a GQA
// group share every read (a block holds up to 8 of them).
//
// Work split (flash-decoding): a block per (query row, kv head, chunk of <= 8 query
// heads, part of the keys). A long context is cut into parts of PAGED_SPLIT_KEYS keys so
// that even batch 1 fills the SMs (7B, 1,024 positions, 256-key parts: 32·4 = 128 blocks a
// layer); each part writes its unnormalised output with its max and sum, and
// paged_attention_combine merges the parts. The part size is a constant of the kernel,
// never a function of the batch, so a row's arithmetic does not depend on its
// neighbours. With one part in the grid the block writes the final output itself, in
// the same operations the combine would do (o / sum).
//
// Each warp keeps PAGED_KEYS_IN_FLIGHT rows' loads in flight before it reduces any, and
// the part's pool rows are looked up once into shared memory, so no row load waits on a
// table load (a review of the first version's machine code found one row in flight a
// warp, about 1–1.5 TB/s at best; this one is unmeasured too: no GPU has run it).
//
// Launch: grid (rows·Hkv·chunks, parts), W warps; dynamic shared memory
// (G·D + G·PAGED_SPLIT_KEYS + W·G·D) floats, G = min(8, Hq/Hkv).

#include "common.cuh"

#define PAGED_MAX_HEADS 8    // query heads a block serves: 8 × 4 accumulators a lane
#define PAGED_MAX_COLS 4     // head_dim <= 128: a lane holds columns lane, lane+32, ...
#define PAGED_SPLIT_KEYS 256  // keys of one part (the launcher's SPLIT_KEYS)
#define PAGED_KEYS_IN_FLIGHT 4  // rows a warp loads before it reduces any: loads overlap

struct PagedDims {
  int rows, q_heads, kv_heads, head_dim, block_size, table_width;
  float scale;
};

// One K or V row's columns of this lane; zeros for a key past the part.
template <class T>
__device__ __forceinline__ void load_lane_columns(float* cols, const T* row, bool valid,
                                                  int lane, int head_dim) {
#pragma unroll
  for (int t = 0; t < PAGED_MAX_COLS; ++t) {
    int c = lane + 32 * t;
    cols[t] = valid && c < head_dim ? to_float(row[c]) : 0.0f;
  }
}

// meta: [rows] sequence index, [rows] position, [rows] pool row of that position (the
// writes' slots), then the tables [seqs][table_width].
// part_stats: (max, sum) of each (row, head, part); part_out: its unnormalised output.
template <class T>
__device__ void paged_attention_decode(T* out, float* part_out, float* part_stats, const T* q,
                                       const T* k_pool, const T* v_pool, const int* meta,
                                       PagedDims d) {
  SCOTD_DYNAMIC_SHARED(float, shared);
  __shared__ float head_max[PAGED_MAX_HEADS], head_sum[PAGED_MAX_HEADS];
  __shared__ int key_rows[PAGED_SPLIT_KEYS];  // the part's keys' pool rows
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int group = d.q_heads / d.kv_heads;
  const int stride = min(PAGED_MAX_HEADS, group);  // heads a block's shared layout holds
  const int chunks = (group + PAGED_MAX_HEADS - 1) / PAGED_MAX_HEADS;
  const int r = blockIdx.x / (d.kv_heads * chunks);
  const int g = (blockIdx.x / chunks) % d.kv_heads;
  const int chunk = blockIdx.x % chunks;
  const int head0 = g * group + chunk * PAGED_MAX_HEADS;
  const int heads = min(PAGED_MAX_HEADS, group - chunk * PAGED_MAX_HEADS);
  const int part = blockIdx.y, parts = gridDim.y;
  const int* table = meta + 3 * d.rows + meta[r] * d.table_width;
  const int k0 = part * PAGED_SPLIT_KEYS;
  const int n = min(meta[d.rows + r] + 1 - k0, PAGED_SPLIT_KEYS);  // this part's keys
  const size_t first_slot = (size_t)r * d.q_heads + head0;
  if (n <= 0) {  // a part past this row's context: nothing to merge
    if ((int)threadIdx.x < heads) {
      float* stats = part_stats + ((first_slot + threadIdx.x) * parts + part) * 2;
      stats[0] = neg_infinity();
      stats[1] = 0.0f;
    }
    return;
  }
  float* qs = shared;                                  // [stride][D], pre-scaled
  float* scores = qs + stride * d.head_dim;            // [stride][PAGED_SPLIT_KEYS]
  float* partial = scores + stride * PAGED_SPLIT_KEYS;  // [warps][stride][D]
  for (int i = threadIdx.x; i < heads * d.head_dim; i += blockDim.x)
    qs[i] = to_float(q[first_slot * d.head_dim + i]) * d.scale;
  // The table lookups once, so the row loads below depend on no global load.
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    int p = k0 + j;
    key_rows[j] = table[p / d.block_size] * d.block_size + p % d.block_size;
  }
  __syncthreads();
  auto row_of = [&](const T* pool, int j) {
    return pool + ((size_t)key_rows[j] * d.kv_heads + g) * d.head_dim;
  };
  // Scores: a warp per key row, read once for all the chunk's heads, several rows in flight.
  for (int j0 = warp * PAGED_KEYS_IN_FLIGHT; j0 < n; j0 += warps * PAGED_KEYS_IN_FLIGHT) {
    float cols[PAGED_KEYS_IN_FLIGHT][PAGED_MAX_COLS];
#pragma unroll
    for (int u = 0; u < PAGED_KEYS_IN_FLIGHT; ++u)
      load_lane_columns(cols[u], row_of(k_pool, min(j0 + u, n - 1)), j0 + u < n, lane, d.head_dim);
    for (int h = 0; h < heads; ++h) {
#pragma unroll
      for (int u = 0; u < PAGED_KEYS_IN_FLIGHT; ++u) {
        float s = 0.0f;
#pragma unroll
        for (int t = 0; t < PAGED_MAX_COLS; ++t) {
          int c = lane + 32 * t;
          if (c < d.head_dim) s += qs[h * d.head_dim + c] * cols[u][t];
        }
        s = warp_sum(s);
        if (lane == 0 && j0 + u < n) scores[h * PAGED_SPLIT_KEYS + j0 + u] = s;
      }
    }
  }
  __syncthreads();
  // Softmax numerators of the part, a warp per head.
  for (int h = warp; h < heads; h += warps) {
    float* s = scores + h * PAGED_SPLIT_KEYS;
    float m = neg_infinity();
    for (int j = lane; j < n; j += 32) m = fmaxf(m, s[j]);
    m = warp_max(m);
    float sum = 0.0f;
    for (int j = lane; j < n; j += 32) {
      float e = expf(s[j] - m);
      s[j] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      head_max[h] = m;
      head_sum[h] = sum;
    }
  }
  __syncthreads();
  // p·V: a warp per value row, read once, several in flight; each lane accumulates its
  // columns of every head.
  float acc[PAGED_MAX_HEADS][PAGED_MAX_COLS] = {};
  for (int j0 = warp * PAGED_KEYS_IN_FLIGHT; j0 < n; j0 += warps * PAGED_KEYS_IN_FLIGHT) {
    float cols[PAGED_KEYS_IN_FLIGHT][PAGED_MAX_COLS];
#pragma unroll
    for (int u = 0; u < PAGED_KEYS_IN_FLIGHT; ++u)
      load_lane_columns(cols[u], row_of(v_pool, min(j0 + u, n - 1)), j0 + u < n, lane, d.head_dim);
#pragma unroll
    for (int h = 0; h < PAGED_MAX_HEADS; ++h) {
      if (h >= heads) break;
#pragma unroll
      for (int u = 0; u < PAGED_KEYS_IN_FLIGHT; ++u) {
        float w = j0 + u < n ? scores[h * PAGED_SPLIT_KEYS + j0 + u] : 0.0f;
#pragma unroll
        for (int t = 0; t < PAGED_MAX_COLS; ++t) acc[h][t] += w * cols[u][t];
      }
    }
  }
  for (int h = 0; h < heads; ++h)
    for (int t = 0; t < PAGED_MAX_COLS; ++t) {
      int c = lane + 32 * t;
      if (c < d.head_dim) partial[(warp * stride + h) * d.head_dim + c] = acc[h][t];
    }
  __syncthreads();
  for (int i = threadIdx.x; i < heads * d.head_dim; i += blockDim.x) {
    int h = i / d.head_dim, c = i % d.head_dim;
    float o = 0.0f;
    for (int w = 0; w < warps; ++w) o += partial[(w * stride + h) * d.head_dim + c];
    size_t slot = first_slot + h;
    if (parts == 1) {
      out[slot * d.head_dim + c] = from_float<T>(o / head_sum[h]);
    } else {
      part_out[(slot * parts + part) * d.head_dim + c] = o;
      if (c == 0) {
        part_stats[(slot * parts + part) * 2] = head_max[h];
        part_stats[(slot * parts + part) * 2 + 1] = head_sum[h];
      }
    }
  }
}

// Merges the parts of each (row, head): out = Σ e^(m_s - M)·o_s / Σ e^(m_s - M)·sum_s.
// A block per (row, head); parts past the row's context (max -inf) are skipped, so a
// row with one part gets o / sum, as when the grid has one part.
template <class T>
__device__ void paged_attention_combine(T* out, const float* part_out, const float* part_stats,
                                        int parts, int head_dim) {
  const size_t slot = blockIdx.x;
  const float* stats = part_stats + slot * parts * 2;
  float m = neg_infinity();
  for (int s = 0; s < parts; ++s) m = fmaxf(m, stats[2 * s]);
  for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < parts; ++s) {
      if (stats[2 * s] == neg_infinity()) continue;
      float w = expf(stats[2 * s] - m);
      num += w * part_out[(slot * parts + s) * head_dim + c];
      den += w * stats[2 * s + 1];
    }
    out[slot * head_dim + c] = from_float<T>(num / den);
  }
}

// New keys and values k, v [rows, width] into the pools at rows slots[r] (width = Hkv·D).
// Bytes: 2·rows·width elements read and written; a step's few rows are far under a launch.
template <class T>
__device__ void kv_cache_write(T* k_pool, T* v_pool, const T* k, const T* v, const int* slots,
                               int rows, int width) {
  size_t total = (size_t)rows * width;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    size_t target = (size_t)slots[i / width] * width + i % width;
    k_pool[target] = k[i];
    v_pool[target] = v[i];
  }
}

#define PAGED_DIMS_PARAMS                                                                  \
  int rows, int q_heads, int kv_heads, int head_dim, int block_size, int table_width,     \
      float scale
#define PAGED_DIMS PagedDims{rows, q_heads, kv_heads, head_dim, block_size, table_width, scale}
#define PAGED_KERNELS(T, SUFFIX)                                                           \
  extern "C" __global__ void paged_attention_decode_##SUFFIX(                             \
      T* out, float* part_out, float* part_stats, const T* q, const T* k_pool,             \
      const T* v_pool, const int* meta, PAGED_DIMS_PARAMS) {                               \
    paged_attention_decode(out, part_out, part_stats, q, k_pool, v_pool, meta, PAGED_DIMS); \
  }                                                                                        \
  extern "C" __global__ void paged_attention_combine_##SUFFIX(                            \
      T* out, const float* part_out, const float* part_stats, int parts, int head_dim) {   \
    paged_attention_combine(out, part_out, part_stats, parts, head_dim);                   \
  }                                                                                        \
  extern "C" __global__ void kv_cache_write_##SUFFIX(T* k_pool, T* v_pool, const T* k,    \
                                                      const T* v, const int* slots,        \
                                                      int rows, int width) {               \
    kv_cache_write(k_pool, v_pool, k, v, slots, rows, width);                              \
  }

PAGED_KERNELS(float, f32)
PAGED_KERNELS(bf16, bf16)

SCOTD_EXPORT(paged_attention_decode_f32);
SCOTD_EXPORT(paged_attention_decode_bf16);
SCOTD_EXPORT(paged_attention_combine_f32);
SCOTD_EXPORT(paged_attention_combine_bf16);
SCOTD_EXPORT(kv_cache_write_f32);
SCOTD_EXPORT(kv_cache_write_bf16);
