// The global L2 norm of all gradients, for clipping, as src/optim/clip.rs computes it:
// sqrt of the sum of squares accumulated in f64 (the squares of f32 values are exact in
// f64, so no element can overflow the sum where f32 squares would: 3e20 squared is inf in
// f32), rounded to f32 at the end; and the clip coefficient, torch's
// max_norm / (norm + 1e-6) in f32, applied only when it is below 1 and the norm is finite.
//
// Two stages, deterministic: grad_norm_partial gives each block a fixed share of the
// elements (a grid-stride loop over a grid the launcher fixes from n alone, never from
// the device) and writes the block's f64 sum to partial[block]; grad_norm_finalize, one
// block, sums the partials in a fixed order and writes out[0] = norm, out[1] = the factor
// to multiply every gradient by (the coefficient, or 1 when there is nothing to clip).
// The same n always gives the same bits.
//
// The factor is not applied by a kernel of its own: AdamW (adamw.cu) reads it from device
// memory and multiplies each gradient as it loads it. A separate scale pass would read and
// write every gradient once more (494M x 8 bytes = 3.95 GB, 1.3 ms a step at 3025 GB/s)
// for the same result, and reading the factor on the device keeps the host from waiting
// for the norm between the two launches.
//
// Bytes: the gradients once, 4 an element: Qwen2.5-0.5B's 494M gradients are 1.98 GB,
// 653 us at the H100's measured 3025 GB/s copy rate. The f64 adds (one per element) are
// far below the FP64 rate of an A100 or H100, the GPUs this is built for.
//
// Launch: grad_norm_partial 256 threads, at most 4096 blocks, 16-byte packs of 4 floats
// when the buffer is aligned, then the tail; grad_norm_finalize one block of 256 threads.
#include "elementwise.cuh"

extern "C" __global__ void grad_norm_partial(double* partial, const float* grads, int n) {
  size_t packs = all_aligned(16, grads) ? size_t(n) / 4 : 0;
  double sum = 0.0;
  for (size_t p = grid_thread(); p < packs; p += grid_threads()) {
    Pack<float> g = load_pack<4>(grads + p * 4);
    for (int k = 0; k < 4; ++k) sum += double(g.v[k]) * double(g.v[k]);
  }
  for (size_t i = packs * 4 + grid_thread(); i < size_t(n); i += grid_threads())
    sum += double(grads[i]) * double(grads[i]);
  sum = block_sum_f64(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

extern "C" __global__ void grad_norm_finalize(float* out, const double* partial, int blocks,
                                              float max_norm) {
  double sum = 0.0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) sum += partial[b];
  sum = block_sum_f64(sum);
  if (threadIdx.x != 0) return;
  float norm = float(sqrt(sum));
  float coefficient = max_norm / (norm + 1e-6f);
  out[0] = norm;
  out[1] = is_finite(norm) && coefficient < 1.0f ? coefficient : 1.0f;
}

SCOTD_EXPORT(grad_norm_partial);
SCOTD_EXPORT(grad_norm_finalize);
