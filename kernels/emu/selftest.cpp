// Kernels that test the emulator itself: compiled into the emulator library only, never
// for a GPU (they are not kernels/*.cu files).
#include "common.cuh"

// order[t] = the rank at which thread t of the block reached the atomic: which order the
// emulator ran the block's threads in.
extern "C" __global__ void emu_arrival_order(int* order) {
  __shared__ int next;
  if (threadIdx.x == 0) next = 0;
  __syncthreads();
  order[threadIdx.x] = atomicAdd(&next, 1);
}

SCOTD_EXPORT(emu_arrival_order);
