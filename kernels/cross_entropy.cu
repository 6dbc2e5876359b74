// Fused softmax cross-entropy, forward and backward in one kernel over one chunk of rows:
// per row, the log-sum-exp by an online max/sum (one read of the logits), the loss
// lse - z[target], then dlogits = (softmax - onehot(target)) * grad_scale written over the
// logits in place (a second read and one write). Rows whose target is negative (the
// ignore index, -100) get loss 0 and a zero gradient.
//
// The caller computes logits chunk by chunk (src/ops/cross_entropy/cuda.rs), so no more
// than one chunk of logits ever exists: at Qwen's vocabulary of 151,936, full f32 logits
// of 16k tokens would be 10 GB.
//
// Bytes (T = bf16; rows r, vocab V): 2 reads + 1 write of the logits, 6rV. A step's 16,384
// rows: 14.9 GB, 4.9 ms at 3025 GB/s (PyTorch's F.cross_entropy fwd + bwd on 8192 rows
// took 7.2 ms on an H100; HF's f32 upcast, 20.8 ms). FLOPs: one exp per logit twice, far
// below the memory time.
//
// Launch: one block of 256 threads per row; threads stride over the vocabulary.
#include "common.cuh"

// Running (max, sum of exp(z - max)) of a set of logits, and their combination.
struct MaxSum {
  float max, sum;
};

__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  float m = fmaxf(a.max, b.max);
  if (m == neg_infinity()) return {m, 0.0f};
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

__device__ MaxSum block_max_sum(MaxSum v) {
  __shared__ MaxSum partial[32];
  for (int offset = 16; offset > 0; offset >>= 1) {
    MaxSum other = {__shfl_xor_sync(0xffffffffu, v.max, offset),
                    __shfl_xor_sync(0xffffffffu, v.sum, offset)};
    v = combine(v, other);
  }
  unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : MaxSum{neg_infinity(), 0.0f};
  for (int offset = 16; offset > 0; offset >>= 1) {
    MaxSum other = {__shfl_xor_sync(0xffffffffu, v.max, offset),
                    __shfl_xor_sync(0xffffffffu, v.sum, offset)};
    v = combine(v, other);
  }
  return v;
}

template <class T>
__device__ void cross_entropy_fused(T* logits, float* losses, const int* targets, int vocab,
                                    float grad_scale) {
  T* row = logits + (size_t)blockIdx.x * vocab;
  int target = targets[blockIdx.x];
  if (target < 0) {
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) row[j] = from_float<T>(0.0f);
    if (threadIdx.x == 0) losses[blockIdx.x] = 0.0f;
    return;
  }
  // One exp per logit: rescale the sum only when the max grows.
  MaxSum acc = {neg_infinity(), 0.0f};
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    float z = to_float(row[j]);
    if (z > acc.max) {
      acc.sum = acc.sum * expf(acc.max - z) + 1.0f;
      acc.max = z;
    } else {
      acc.sum += expf(z - acc.max);
    }
  }
  acc = block_max_sum(acc);
  float lse = acc.max + logf(acc.sum);
  float target_logit = to_float(row[target]);
  __syncthreads();  // every thread has read row[target] before it is overwritten
  if (threadIdx.x == 0) losses[blockIdx.x] = lse - target_logit;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    float p = expf(to_float(row[j]) - lse);
    row[j] = from_float<T>((p - (j == target ? 1.0f : 0.0f)) * grad_scale);
  }
}

extern "C" __global__ void cross_entropy_fused_f32(float* logits, float* losses, const int* targets,
                                                   int vocab, float grad_scale) {
  cross_entropy_fused(logits, losses, targets, vocab, grad_scale);
}
extern "C" __global__ void cross_entropy_fused_bf16(bf16* logits, float* losses, const int* targets,
                                                    int vocab, float grad_scale) {
  cross_entropy_fused(logits, losses, targets, vocab, grad_scale);
}

SCOTD_EXPORT(cross_entropy_fused_f32);
SCOTD_EXPORT(cross_entropy_fused_bf16);
