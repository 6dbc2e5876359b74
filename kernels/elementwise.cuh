// Vector memory access for the elementwise kernels (add, swiglu, cast, adamw, grad_norm):
// a Pack is N consecutive elements moved by one load or store (16 bytes by default, one
// LDG.128 / STG.128 on the GPU), and grid-stride loop indices in size_t.
//
// The pattern every elementwise kernel follows: when all its pointers are aligned to the
// pack size, threads stride over whole packs; then they stride over the remaining elements
// (the tail, n % N of them) one by one. A misaligned pointer makes the pack count 0, so the
// element-by-element loop does everything: any length and any alignment are correct, and
// the tests exercise both loops (every odd length has a tail).
#pragma once

#include "common.cuh"

template <class T, int N = int(16 / sizeof(T))>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Whether every pointer is a multiple of `bytes`.
template <class... P>
__device__ __forceinline__ bool all_aligned(unsigned bytes, const P*... p) {
  return ((reinterpret_cast<unsigned long long>(p) % bytes == 0) && ...);
}

template <int N, class T>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
#ifdef SCOTD_EMULATION
  // memcpy: the bytes were written as T, and reading them through the struct type would
  // break C++'s aliasing rules; it compiles to one unaligned vector load.
  Pack<T, N> out;
  std::memcpy(&out, p, sizeof(out));
  return out;
#else
  return *reinterpret_cast<const Pack<T, N>*>(p);
#endif
}

template <int N, class T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& value) {
#ifdef SCOTD_EMULATION
  std::memcpy(p, &value, sizeof(value));
#else
  *reinterpret_cast<Pack<T, N>*>(p) = value;
#endif
}

// This thread's index in the grid and the grid's thread count (x dimension), for
// grid-stride loops; size_t so that index + stride never overflows.
__device__ __forceinline__ size_t grid_thread() {
  return size_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ size_t grid_threads() { return size_t(gridDim.x) * blockDim.x; }

// Whether x is neither infinite nor NaN, from the bits (no CUDA header needed).
__device__ __forceinline__ bool is_finite(float x) {
  return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}
