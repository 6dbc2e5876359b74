// Rotary position embeddings in Hugging Face's half-split ("rotate_half") convention: for
// each token, head and i < D/2, the pair (x[i], x[i + D/2]) is rotated by the token's
// angle i, into y (y may be x: each pair is read, then written, by one thread). The
// backward is the rotation by the opposite angle (the transpose), so it is the same
// kernel with sin negated.
//
// The cos/sin table ([distinct positions, D/2] f32) and each token's row in it are made
// on the host exactly as the CPU reference makes them (src/ops/rope/cpu.rs: f32 angles,
// cos and sin rounded from f64), so the device rotates by bit-identical factors.
//
// Bytes (T = bf16): x read and y written once, 4 T H D per token: at Qwen2.5-0.5B shapes
// (16384 tokens, q 14 heads and k 2 heads of 64, one launch each) 67 MB, 22 us at
// 3025 GB/s; the table (1024 x 32 x 8 bytes) stays in L2.
//
// Launch: one thread per rotated pair, 256 threads a block, a grid-stride loop.
#include "common.cuh"

template <class T>
__device__ void rope_rotate(T* y, const T* x, const float* cos_table, const float* sin_table,
                            const int* row_of_token, int tokens, int heads, int half,
                            float sin_sign) {
  size_t pairs = (size_t)tokens * heads * half;
  for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < pairs;
       p += (size_t)gridDim.x * blockDim.x) {
    int i = p % half;
    size_t row = p / half, token = row / heads, at = row * 2 * half;
    size_t angle = (size_t)row_of_token[token] * half + i;
    float c = cos_table[angle], s = sin_sign * sin_table[angle];
    float x1 = to_float(x[at + i]), x2 = to_float(x[at + i + half]);
    y[at + i] = from_float<T>(x1 * c - x2 * s);
    y[at + i + half] = from_float<T>(x2 * c + x1 * s);
  }
}

#define ROPE_KERNELS(T, SUFFIX)                                                                \
  extern "C" __global__ void rope_forward_##SUFFIX(T* y, const T* x, const float* cos_table,  \
                                                    const float* sin_table,                    \
                                                    const int* row_of_token, int tokens,       \
                                                    int heads, int half) {                     \
    rope_rotate(y, x, cos_table, sin_table, row_of_token, tokens, heads, half, 1.0f);         \
  }                                                                                            \
  extern "C" __global__ void rope_backward_##SUFFIX(T* y, const T* x, const float* cos_table, \
                                                     const float* sin_table,                   \
                                                     const int* row_of_token, int tokens,      \
                                                     int heads, int half) {                    \
    rope_rotate(y, x, cos_table, sin_table, row_of_token, tokens, heads, half, -1.0f);        \
  }

ROPE_KERNELS(float, f32)
ROPE_KERNELS(bf16, bf16)

SCOTD_EXPORT(rope_forward_f32);
SCOTD_EXPORT(rope_forward_bf16);
SCOTD_EXPORT(rope_backward_f32);
SCOTD_EXPORT(rope_backward_bf16);
