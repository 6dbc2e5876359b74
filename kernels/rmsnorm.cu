// RMSNorm, forward and backward: y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps)
// per row, as Hugging Face's Qwen2RMSNorm (f32 math whatever the storage type).
//
// Bytes (T = bf16, 2 bytes; rows n, width d, B backward blocks): forward reads x and
// writes y (4nd) plus rstd (4n); backward reads dy, x (4nd) and rstd (4n), writes dx (2nd)
// and B rows of dW partials (4Bd), which rmsnorm_dw_reduce reads back (4Bd) to write dW
// (4d, 8d when accumulating). Qwen2.5-0.5B, n = 16384, d = 896, B = 264: 58.7 MB forward,
// 88 MB + 1.9 MB backward; at the H100's measured 3025 GB/s copy rate, 19 us and 30 us.
// Llama-7B, d = 4096: the partials are 8.7 MB beside 403 MB. FLOPs are negligible: these
// kernels are memory-bound.
//
// Launch: one warp per row, 256 threads (8 rows) per block. Forward: grid ceil(n / 8).
// Backward: a grid of at most a few blocks per SM, each block taking rows in rounds of one
// row per warp. In a round each warp reduces its row to the mean(g * xhat) that dx needs,
// then the whole block walks the round's rows in order, thread t owning columns t,
// t + 256, ...: it writes their dx and adds dy * xhat to its columns of the block's dW row
// (d floats of dynamic shared memory: 4d bytes, 32 KB at d = 8192, under the 48 KB every
// card gives; the launcher opts in above). The second read of a row comes from L1 or L2,
// the block having read it just before. Each dW column is summed by one thread in row
// order, and the partials by rmsnorm_dw_reduce in block order, so dW is the same bits on
// every run; shared atomics would add in whatever order the warps reach them.
#include "common.cuh"

template <class T>
__device__ void rmsnorm_forward(T* y, float* rstd, const T* x, const T* w, int rows, int d,
                                float eps) {
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* xr = x + (size_t)row * d;
  float sum_sq = 0.0f;
  for (int j = lane; j < d; j += 32) {
    float v = to_float(xr[j]);
    sum_sq += v * v;
  }
  float r = rsqrtf(warp_sum(sum_sq) / d + eps);
  T* yr = y + (size_t)row * d;
  for (int j = lane; j < d; j += 32) yr[j] = from_float<T>(to_float(xr[j]) * r * to_float(w[j]));
  if (lane == 0) rstd[row] = r;
}

template <class T>
__device__ void rmsnorm_backward(T* dx, float* dw_partial, const T* dy, const T* x, const T* w,
                                 const float* rstd, int rows, int d) {
  SCOTD_DYNAMIC_SHARED(float, dw);
  // Each round's per-row mean and rstd, double-buffered so that the next round's warps may
  // write theirs while slower threads still read this round's: one barrier a round.
  __shared__ float round_mean[2][32], round_rstd[2][32];
  for (int j = threadIdx.x; j < d; j += blockDim.x) dw[j] = 0.0f;
  int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int buffer = 0;
  for (int first = blockIdx.x * warps; first < rows; first += gridDim.x * warps) {
    int row = first + warp;
    if (row < rows) {
      const T* dyr = dy + (size_t)row * d;
      const T* xr = x + (size_t)row * d;
      float r = rstd[row];
      // dx = r * (g - xhat * mean(g * xhat)) with g = w * dy and xhat = x * r.
      float dot = 0.0f;
      for (int j = lane; j < d; j += 32) {
        float g = to_float(w[j]) * to_float(dyr[j]);
        dot += g * to_float(xr[j]) * r;
      }
      float mean = warp_sum(dot) / d;
      if (lane == 0) {
        round_mean[buffer][warp] = mean;
        round_rstd[buffer][warp] = r;
      }
    }
    __syncthreads();
    int count = min(warps, rows - first);
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      float wj = to_float(w[j]);
      float sum = dw[j];
      for (int i = 0; i < count; ++i) {
        size_t at = (size_t)(first + i) * d + j;
        float r = round_rstd[buffer][i];
        float xhat = to_float(x[at]) * r;
        float g_dy = to_float(dy[at]);
        dx[at] = from_float<T>(r * (wj * g_dy - xhat * round_mean[buffer][i]));
        sum += g_dy * xhat;
      }
      dw[j] = sum;
    }
    buffer ^= 1;
  }
  // Every thread wrote only its own columns of dw, and writes them out itself.
  for (int j = threadIdx.x; j < d; j += blockDim.x) dw_partial[(size_t)blockIdx.x * d + j] = dw[j];
}

// dw[j] (+)= sum over blocks of partial[b][j]; f32, as every gradient.
extern "C" __global__ void rmsnorm_dw_reduce(float* dw, const float* partial, int blocks, int d,
                                             int accumulate) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= d) return;
  float sum = 0.0f;
  for (int b = 0; b < blocks; ++b) sum += partial[(size_t)b * d + j];
  dw[j] = accumulate ? dw[j] + sum : sum;
}

extern "C" __global__ void rmsnorm_forward_f32(float* y, float* rstd, const float* x,
                                               const float* w, int rows, int d, float eps) {
  rmsnorm_forward(y, rstd, x, w, rows, d, eps);
}
extern "C" __global__ void rmsnorm_forward_bf16(bf16* y, float* rstd, const bf16* x, const bf16* w,
                                                int rows, int d, float eps) {
  rmsnorm_forward(y, rstd, x, w, rows, d, eps);
}
extern "C" __global__ void rmsnorm_backward_f32(float* dx, float* dw_partial, const float* dy,
                                                const float* x, const float* w, const float* rstd,
                                                int rows, int d) {
  rmsnorm_backward(dx, dw_partial, dy, x, w, rstd, rows, d);
}
extern "C" __global__ void rmsnorm_backward_bf16(bf16* dx, float* dw_partial, const bf16* dy,
                                                 const bf16* x, const bf16* w, const float* rstd,
                                                 int rows, int d) {
  rmsnorm_backward(dx, dw_partial, dy, x, w, rstd, rows, d);
}

SCOTD_EXPORT(rmsnorm_forward_f32);
SCOTD_EXPORT(rmsnorm_forward_bf16);
SCOTD_EXPORT(rmsnorm_backward_f32);
SCOTD_EXPORT(rmsnorm_backward_bf16);
SCOTD_EXPORT(rmsnorm_dw_reduce);
