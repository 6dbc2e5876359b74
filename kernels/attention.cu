// Causal grouped-query attention, forward and backward: the simple, correct kernels; and,
// at the end, the forward of new queries over a key/value cache, for generation.
// The fast ones are flash_attention.cu (bf16, head dims 64 and 128, tensor cores); these
// run every other case (f32, other head dims) and are the reference the fast ones are
// checked against on the device.
//
// Layout: q, out [B, T, Hq, D]; k, v [B, T, Hkv, D]; query head h reads kv head
// h / (Hq / Hkv). Position i sees key j iff j <= i and, with packed sequences, both carry
// the same segment id. lse [B, Hq, T] is saved by the forward for the backward.
//
// Work: O(T^2 D) per head, as any exact attention; these kernels keep a row of scores in
// shared memory instead of tiling K/V through it, so they read K and V once per query row
// (B Hq T^2 D bf16 reads: 16 x 14 x 1024^2 x 64 x 2 x 2 bytes = 60 GB for the forward at
// Qwen2.5-0.5B shapes, about 20 ms from L2/HBM) where a tiled kernel reads them once per
// tile of rows. Correctness first; the table in benches/RESULTS.md says how far they are.
//
// Launch: forward and dq, one block of 128 threads per (b, h, i), dynamic shared memory T
// floats (scores); dk/dv, one block per (b, kv head, j), 2T + 2D floats. T is limited by
// shared memory (48 KB: T <= 12k forward, about 6k backward; the launcher checks).
#include "common.cuh"

struct Dims {
  int batch, seq, q_heads, kv_heads, head_dim;
  float scale;
};

__device__ __forceinline__ bool visible(const int* segments, int row_start, int i, int j) {
  return j <= i && (segments == nullptr || segments[row_start + i] == segments[row_start + j]);
}

template <class T>
__device__ __forceinline__ float dot(const T* a, const T* b, int n) {
  float s = 0.0f;
  for (int c = 0; c < n; ++c) s += to_float(a[c]) * to_float(b[c]);
  return s;
}

// Element offsets of row (b, position) head h in a [B, T, H, D] tensor.
__device__ __forceinline__ size_t at(const Dims& d, int b, int pos, int heads, int h) {
  return (((size_t)b * d.seq + pos) * heads + h) * d.head_dim;
}

template <class T>
__device__ void attention_forward(T* out, float* lse, const T* q, const T* k, const T* v,
                                  const int* segments, Dims d) {
  SCOTD_DYNAMIC_SHARED(float, scores);
  int i = blockIdx.x % d.seq, h = (blockIdx.x / d.seq) % d.q_heads;
  int b = blockIdx.x / (d.seq * d.q_heads), g = h / (d.q_heads / d.kv_heads);
  const T* qi = q + at(d, b, i, d.q_heads, h);
  float local_max = neg_infinity();
  for (int j = threadIdx.x; j <= i; j += blockDim.x) {
    float s = visible(segments, b * d.seq, i, j)
                  ? dot(qi, k + at(d, b, j, d.kv_heads, g), d.head_dim) * d.scale
                  : neg_infinity();
    scores[j] = s;
    local_max = fmaxf(local_max, s);
  }
  float max = block_max(local_max);
  float local_sum = 0.0f;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) local_sum += expf(scores[j] - max);
  float row_lse = max + logf(block_sum(local_sum));
  T* oi = out + at(d, b, i, d.q_heads, h);
  for (int c = threadIdx.x; c < d.head_dim; c += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j <= i; ++j)
      acc += expf(scores[j] - row_lse) * to_float(v[at(d, b, j, d.kv_heads, g) + c]);
    oi[c] = from_float<T>(acc);
  }
  if (threadIdx.x == 0) lse[((size_t)b * d.q_heads + h) * d.seq + i] = row_lse;
}

// dq, and delta = dout . out per query row (for the dk/dv kernel).
template <class T>
__device__ void attention_backward_dq(T* dq, float* delta, const T* q, const T* k, const T* v,
                                      const T* out, const T* dout, const float* lse,
                                      const int* segments, Dims d) {
  SCOTD_DYNAMIC_SHARED(float, ds);
  int i = blockIdx.x % d.seq, h = (blockIdx.x / d.seq) % d.q_heads;
  int b = blockIdx.x / (d.seq * d.q_heads), g = h / (d.q_heads / d.kv_heads);
  size_t row = at(d, b, i, d.q_heads, h), stat = ((size_t)b * d.q_heads + h) * d.seq + i;
  float local = 0.0f;
  for (int c = threadIdx.x; c < d.head_dim; c += blockDim.x)
    local += to_float(dout[row + c]) * to_float(out[row + c]);
  float row_delta = block_sum(local);
  for (int j = threadIdx.x; j <= i; j += blockDim.x) {
    float value = 0.0f;
    if (visible(segments, b * d.seq, i, j)) {
      size_t kv = at(d, b, j, d.kv_heads, g);
      float p = expf(dot(q + row, k + kv, d.head_dim) * d.scale - lse[stat]);
      value = p * (dot(dout + row, v + kv, d.head_dim) - row_delta);
    }
    ds[j] = value;
  }
  __syncthreads();
  for (int c = threadIdx.x; c < d.head_dim; c += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j <= i; ++j) acc += ds[j] * to_float(k[at(d, b, j, d.kv_heads, g) + c]);
    dq[row + c] = from_float<T>(acc * d.scale);
  }
  if (threadIdx.x == 0) delta[stat] = row_delta;
}

// dk and dv of key position j of kv head g: sums over the group's query heads and the
// query rows that see j, in a fixed order (deterministic, no atomics).
template <class T>
__device__ void attention_backward_dkv(T* dk, T* dv, const T* q, const T* k, const T* v,
                                       const T* dout, const float* lse, const float* delta,
                                       const int* segments, Dims d) {
  SCOTD_DYNAMIC_SHARED(float, shared);
  float* p = shared;
  float* ds = shared + d.seq;
  float* acc_k = shared + 2 * d.seq;
  float* acc_v = acc_k + d.head_dim;
  int j = blockIdx.x % d.seq, g = (blockIdx.x / d.seq) % d.kv_heads;
  int b = blockIdx.x / (d.seq * d.kv_heads), group = d.q_heads / d.kv_heads;
  size_t kv = at(d, b, j, d.kv_heads, g);
  for (int c = threadIdx.x; c < d.head_dim; c += blockDim.x) acc_k[c] = acc_v[c] = 0.0f;
  for (int h = g * group; h < (g + 1) * group; ++h) {
    for (int i = j + threadIdx.x; i < d.seq; i += blockDim.x) {
      size_t row = at(d, b, i, d.q_heads, h), stat = ((size_t)b * d.q_heads + h) * d.seq + i;
      float pi = 0.0f, dsi = 0.0f;
      if (visible(segments, b * d.seq, i, j)) {
        pi = expf(dot(q + row, k + kv, d.head_dim) * d.scale - lse[stat]);
        dsi = pi * (dot(dout + row, v + kv, d.head_dim) - delta[stat]);
      }
      p[i] = pi;
      ds[i] = dsi;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < d.head_dim; c += blockDim.x) {
      float sum_k = 0.0f, sum_v = 0.0f;
      for (int i = j; i < d.seq; ++i) {
        size_t row = at(d, b, i, d.q_heads, h);
        sum_k += ds[i] * to_float(q[row + c]);
        sum_v += p[i] * to_float(dout[row + c]);
      }
      acc_k[c] += sum_k;
      acc_v[c] += sum_v;
    }
    __syncthreads();
  }
  for (int c = threadIdx.x; c < d.head_dim; c += blockDim.x) {
    dk[kv + c] = from_float<T>(acc_k[c] * d.scale);
    dv[kv + c] = from_float<T>(acc_v[c]);
  }
}

// Parameters as separate ints (every launcher passes scalars the same way); Dims is
// assembled here.
#define DIMS_PARAMS int batch, int seq, int q_heads, int kv_heads, int head_dim, float scale
#define DIMS Dims{batch, seq, q_heads, kv_heads, head_dim, scale}
#define ATTENTION_KERNELS(T, SUFFIX)                                                           \
  extern "C" __global__ void attention_forward_##SUFFIX(T* out, float* lse, const T* q,       \
                                                         const T* k, const T* v,               \
                                                         const int* segments, DIMS_PARAMS) {   \
    attention_forward(out, lse, q, k, v, segments, DIMS);                                      \
  }                                                                                            \
  extern "C" __global__ void attention_backward_dq_##SUFFIX(                                  \
      T* dq, float* delta, const T* q, const T* k, const T* v, const T* out, const T* dout,   \
      const float* lse, const int* segments, DIMS_PARAMS) {                                    \
    attention_backward_dq(dq, delta, q, k, v, out, dout, lse, segments, DIMS);                 \
  }                                                                                            \
  extern "C" __global__ void attention_backward_dkv_##SUFFIX(                                 \
      T* dk, T* dv, const T* q, const T* k, const T* v, const T* dout, const float* lse,      \
      const float* delta, const int* segments, DIMS_PARAMS) {                                  \
    attention_backward_dkv(dk, dv, q, k, v, dout, lse, delta, segments, DIMS);                 \
  }

ATTENTION_KERNELS(float, f32)
ATTENTION_KERNELS(bf16, bf16)

SCOTD_EXPORT(attention_forward_f32);
SCOTD_EXPORT(attention_forward_bf16);
SCOTD_EXPORT(attention_backward_dq_f32);
SCOTD_EXPORT(attention_backward_dq_bf16);
SCOTD_EXPORT(attention_backward_dkv_f32);
SCOTD_EXPORT(attention_backward_dkv_bf16);
