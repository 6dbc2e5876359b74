// A loss's reduction and its backward, with the scalar kept on the device so the host
// never waits inside a step: loss_sum adds up per-row losses (f64, in a fixed order) into
// one value divided by the normaliser; scale_by multiplies a saved gradient by the
// gradient of the loss (a one-element device tensor, 1 in a plain backward), and
// add_scaled adds it into a parameter's gradient buffer.
//
// Bytes: loss_sum reads the rows' losses once (16384 floats a step: nothing). scale_by
// reads and writes a gradient (T = bf16: 4 bytes an element; Qwen2.5-0.5B's dhidden
// [16384, 896] is 59 MB, 19 us at 3025 GB/s); add_scaled reads two f32 buffers and writes
// one (12 bytes an element; the [151936, 896] embedding gradient is 1.6 GB, 0.54 ms).
// Memory-bound.
//
// Launch: loss_sum one block of 256 threads; scale_by and add_scaled 256 threads, a
// grid-stride loop.
#include "elementwise.cuh"

extern "C" __global__ void loss_sum(float* out, const float* losses, int n, float divisor) {
  double sum = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) sum += double(losses[i]);
  sum = block_sum_f64(sum);
  if (threadIdx.x == 0) out[0] = float(sum / double(divisor));
}

template <class T>
__device__ void scale_by(T* y, const T* x, const float* factor, int n) {
  float f = factor[0];
  for (size_t i = grid_thread(); i < size_t(n); i += grid_threads())
    y[i] = from_float<T>(to_float(x[i]) * f);
}

extern "C" __global__ void scale_by_f32(float* y, const float* x, const float* factor, int n) {
  scale_by(y, x, factor, n);
}

extern "C" __global__ void scale_by_bf16(bf16* y, const bf16* x, const float* factor, int n) {
  scale_by(y, x, factor, n);
}

extern "C" __global__ void add_scaled(float* y, const float* x, const float* factor, int n) {
  float f = factor[0];
  for (size_t i = grid_thread(); i < size_t(n); i += grid_threads()) y[i] += x[i] * f;
}

SCOTD_EXPORT(loss_sum);
SCOTD_EXPORT(scale_by_f32);
SCOTD_EXPORT(scale_by_bf16);
SCOTD_EXPORT(add_scaled);
