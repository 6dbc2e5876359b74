// Shared by every kernel: the bf16 storage type and its conversions, warp and block sums,
// and the two macros that let a kernel file compile both with NVRTC for the GPU and as
// C++ for the CPU emulator (emu/cuda_emu.h): SCOTD_EXPORT registers a kernel with the
// emulator (nothing on the GPU), SCOTD_DYNAMIC_SHARED names the launch's dynamic shared
// memory.
#pragma once

#ifdef SCOTD_EMULATION
#include "emu/cuda_emu.h"
#else
#define SCOTD_EXPORT(kernel)
#define SCOTD_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

// bf16 as stored: the top half of an f32. Conversions are written out (round to nearest
// even, NaN kept a NaN) so no CUDA header is needed and the emulator rounds identically.
struct bf16 {
  unsigned short bits;
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __uint_as_float(unsigned(x.bits) << 16); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  unsigned u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{(unsigned short)((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{(unsigned short)(u >> 16)};
}

// -inf without math.h (which NVRTC does not have).
__device__ __forceinline__ float neg_infinity() { return __uint_as_float(0xff800000u); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// The max of `v` over the block, returned to every thread (blockDim.x a multiple of 32).
__device__ __forceinline__ float block_max(float v) {
  __shared__ float partial[32];
  unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : neg_infinity();
  return warp_max(v);
}

// The sum of `v` over the block, returned to every thread (blockDim.x a multiple of 32).
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : 0.0f;
  return warp_sum(v);
}

__device__ __forceinline__ double warp_sum_f64(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The f64 sum of `v` over the block, returned to every thread (blockDim.x a multiple of 32).
__device__ __forceinline__ double block_sum_f64(double v) {
  __shared__ double warp_sums[32];
  unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum_f64(v);
  __syncthreads();
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = lane < warps ? warp_sums[lane] : 0.0;
  return warp_sum_f64(v);
}
