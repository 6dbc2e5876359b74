// Token choice on the device, one block per row of logits: greedy (the first argmax), or a
// draw from p_i = exp((l_i - max) / T) cut to the top-k and then the top-p of what is
// left, with the row's uniform draw given by the host. Only ids < vocab_limit take part.
// src/ops/sampling/cpu.rs is the reference; the two agree except where a float rounding
// falls on a threshold or on the draw's boundary between two ids.
//
// A sampled row: (1) the max, by the argmax pass every row makes; (2) p written to a scratch
// row (f32; NaN logits give 0); (3) the top-k threshold t_k, the largest f32 bit pattern b
// with count(p >= b) >= k, built bit by bit from the MSB: non-negative floats order as
// their bits do, so each pass sets one bit of b if the count stays >= k; (4) the top-p
// threshold the same way with mass(kept p >= b) >= top_p * mass(kept p) as the test;
// (5) the draw: each thread owns a contiguous chunk of ids, a block scan of the chunk
// masses finds the chunk holding uniform * mass, and its thread walks the chunk in id
// order. Every sum adds in an order fixed by the ids and the block size alone (no float
// atomics), so a row gives the same id on every run. p is at most 1 (exp of a value <= 0),
// below 2.0 = 0x40000000, so bits 31 and 30 of a threshold are 0: 30 passes, not 32.
//
// Bytes (Qwen2.5, vocab V = 151,936, 64 rows, bf16 logits: 19.4 MB): greedy reads the logits
// once, 19.4 MB, 6 us at the H100's measured 3025 GB/s copy rate. A sampled row reads its
// logits twice (the max, then p), writes p (4V) and reads it back per pass (4V each: the
// kept mass, 30 bits, the chunk masses): top-p alone 2 + 2 + 4 + 4 * 32 = 136 bytes per id
// (1.3 GB for 64 rows), top-k and top-p 256 (2.5 GB). The scratch of 64 rows (38.9 MB) fits the 50 MB L2, so the passes run at L2
// rather than HBM speed: at a rough 6 TB/s of L2, with 31 to 61 block reductions of ~1 us,
// about 0.25 ms for top-p and 0.45 ms for both (estimates; gpu-bench measures the greedy and
// top-p rows). A Qwen2.5-0.5B decode step of 64 rows reads its ~1 GB of bf16 weights, ~0.33
// ms at 3 TB/s: greedy costs ~2% of a step, a top-p draw about as much as the step itself.
// Copying the logits to the host instead moves the same 19.4 MB over PCIe (~0.8 ms) before
// any host work. One block per row leaves SMs idle at 64 rows (the H200 has 132).
//
// Launch: grid = rows, 1024 threads (SAMPLING_THREADS); rules holds four doubles per row:
// uniform, temperature, top_p, top_k (0 or >= vocab_limit: off).
#include "common.cuh"

#define SAMPLING_THREADS 1024

// The ids kept are those whose p's bits are at least `kept_from`, which starts at the bits of
// the smallest positive float: every id with p > 0, none whose p underflowed to 0.
#define SMALLEST_POSITIVE_BITS 1u

static __device__ __forceinline__ bool sampling_is_nan(float x) {
  return (__float_as_uint(x) & 0x7fffffffu) > 0x7f800000u;
}

static __device__ __forceinline__ bool sampling_is_finite(float x) {
  return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}

// A logit and its id; `sampling_better` orders by value, then the lower id (torch.argmax's
// first index), a total order since NaN never enters.
struct SamplingBest {
  float value;
  int id;
};

static __device__ __forceinline__ SamplingBest sampling_better(SamplingBest a, SamplingBest b) {
  return (b.value > a.value || (b.value == a.value && b.id < a.id)) ? b : a;
}

// The best (value, id) of the block, returned to every thread.
static __device__ SamplingBest block_best(SamplingBest v) {
  __shared__ SamplingBest partial[32];
  unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int offset = 16; offset > 0; offset >>= 1) {
    SamplingBest other = {__shfl_xor_sync(0xffffffffu, v.value, offset),
                          __shfl_xor_sync(0xffffffffu, v.id, offset)};
    v = sampling_better(v, other);
  }
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = partial[lane < warps ? lane : 0];
  for (int offset = 16; offset > 0; offset >>= 1) {
    SamplingBest other = {__shfl_xor_sync(0xffffffffu, v.value, offset),
                          __shfl_xor_sync(0xffffffffu, v.id, offset)};
    v = sampling_better(v, other);
  }
  return v;
}

struct SamplingSum {
  __device__ int operator()(int a, int b) const { return a + b; }
};
struct SamplingMax {
  __device__ int operator()(int a, int b) const { return a > b ? a : b; }
};

// `combine` of `v` over the block, returned to every thread; `identity` pads the warps
// the block lacks.
template <class Combine>
static __device__ int block_reduce_int(int v, Combine combine, int identity) {
  __shared__ int partial[32];
  unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int offset = 16; offset > 0; offset >>= 1)
    v = combine(v, __shfl_xor_sync(0xffffffffu, v, offset));
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : identity;
  for (int offset = 16; offset > 0; offset >>= 1)
    v = combine(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// The inclusive prefix sum of `v` over the warp's lanes, one lane at a time: each lane's
// sum is the previous lane's plus its own value, so that sums of non-negative values never
// decrease even rounded (a tree scan's can, which would let an empty chunk claim a draw).
static __device__ float warp_running_sum(float v) {
  unsigned lane = threadIdx.x % 32;
  float sum = v;
  for (unsigned i = 1; i < 32; ++i) {
    float before = __shfl_sync(0xffffffffu, sum, i - 1);
    if (lane == i) sum = before + v;
  }
  return sum;
}

// The inclusive prefix sum of `v` (non-negative) in thread order into ends[thread]. The
// last end of a warp is the next warp's start, so the ends never decrease: the intervals
// [ends[t - 1], ends[t]) cover [0, total) once, and an empty chunk's is empty.
static __device__ void block_running_sum(float v, float* ends) {
  __shared__ float warp_starts[32];
  unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float sum = warp_running_sum(v);
  if (lane == 31) warp_starts[warp] = sum;  // the warp's total, until warp 0 puts its start
  __syncthreads();
  if (warp == 0) {
    float running = warp_running_sum(lane < warps ? warp_starts[lane] : 0.0f);
    float before = __shfl_sync(0xffffffffu, running, lane > 0 ? lane - 1 : 0);
    if (lane < warps) warp_starts[lane] = lane > 0 ? before : 0.0f;
  }
  __syncthreads();
  ends[threadIdx.x] = warp_starts[warp] + sum;
  __syncthreads();
}

// The k-th largest p's bits: the largest b with count(bits(p) >= b) >= k.
static __device__ unsigned kth_largest_bits(const unsigned* p_bits, int n, int k) {
  unsigned threshold = 0;
  for (int bit = 29; bit >= 0; --bit) {
    unsigned candidate = threshold | (1u << bit);
    int count = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) count += p_bits[j] >= candidate;
    if (block_reduce_int(count, SamplingSum(), 0) >= k) threshold = candidate;
  }
  return threshold;
}

// The mass of the ids whose p's bits are at least `kept_from`, summed in a fixed order.
static __device__ float mass_at_least(const float* p, int n, unsigned kept_from) {
  float mass = 0.0f;
  for (int j = threadIdx.x; j < n; j += blockDim.x)
    if (__float_as_uint(p[j]) >= kept_from) mass += p[j];
  return block_sum(mass);
}

// The top-p threshold's bits: the largest b with mass(p >= max(b, kept_from)) >= top_p * the
// mass kept by `kept_from`.
static __device__ unsigned top_p_bits(const float* p, int n, unsigned kept_from, float top_p) {
  float needed = top_p * mass_at_least(p, n, kept_from);
  unsigned threshold = 0;
  for (int bit = 29; bit >= 0; --bit) {
    unsigned candidate = threshold | (1u << bit);
    // Up to kept_from the test would sum all that is kept, which is >= needed.
    if (candidate <= kept_from || mass_at_least(p, n, candidate) >= needed) threshold = candidate;
  }
  return threshold;
}

// The id drawn at uniform * (mass of p >= kept_from), walking the kept ids in ascending order;
// the last kept id when rounding leaves the target past the end.
static __device__ int draw(const float* p, int n, unsigned kept_from, double uniform) {
  __shared__ float ends[SAMPLING_THREADS];
  int thread = threadIdx.x, chunk = (n + blockDim.x - 1) / blockDim.x;
  int begin = min(n, thread * chunk), end = min(n, begin + chunk);
  float chunk_mass = 0.0f;
  int last_kept = -1;
  for (int j = begin; j < end; ++j) {
    if (__float_as_uint(p[j]) >= kept_from) {
      chunk_mass += p[j];
      last_kept = j;
    }
  }
  __shared__ int chosen;
  if (thread == 0) chosen = -1;  // published by the scan's barriers
  block_running_sum(chunk_mass, ends);
  float start = thread > 0 ? ends[thread - 1] : 0.0f;
  float target = (float)(uniform * (double)ends[blockDim.x - 1]);
  // The one chunk whose interval holds the target, if the target is below the total.
  if (start <= target && target < ends[thread]) {
    float left = target - start;
    int pick = last_kept;
    for (int j = begin; j < end; ++j) {
      float q = p[j];
      if (__float_as_uint(q) < kept_from) continue;
      if (left < q) {
        pick = j;
        break;
      }
      left -= q;
    }
    chosen = pick;
  }
  __syncthreads();
  return chosen >= 0 ? chosen : block_reduce_int(last_kept, SamplingMax(), -1);
}

template <class T>
static __device__ void choose_tokens(unsigned* ids, float* scratch, const T* logits,
                                     const double* rules, int vocab, int vocab_limit) {
  const T* row = logits + (size_t)blockIdx.x * vocab;
  const double* rule = rules + 4 * (size_t)blockIdx.x;
  float temperature = (float)rule[1];
  // NaN compares false: it is never the best, as if it were -inf.
  SamplingBest best = {neg_infinity(), vocab_limit};
  for (int j = threadIdx.x; j < vocab_limit; j += blockDim.x) {
    float v = to_float(row[j]);
    if (v > best.value) best = {v, j};
  }
  best = block_best(best);
  // Greedy, and rows with no finite max (all NaN or -inf: id 0; a +inf: the first one).
  if (temperature == 0.0f || !sampling_is_finite(best.value)) {
    if (threadIdx.x == 0) ids[blockIdx.x] = best.id < vocab_limit ? best.id : 0;
    return;
  }
  float* p = scratch + (size_t)blockIdx.x * vocab_limit;
  for (int j = threadIdx.x; j < vocab_limit; j += blockDim.x) {
    float v = to_float(row[j]);
    p[j] = sampling_is_nan(v) ? 0.0f : expf((v - best.value) / temperature);
  }
  __syncthreads();
  unsigned kept_from = SMALLEST_POSITIVE_BITS;
  int top_k = (int)rule[3];
  if (top_k > 0 && top_k < vocab_limit) {
    unsigned t = kth_largest_bits(reinterpret_cast<const unsigned*>(p), vocab_limit, top_k);
    if (t > kept_from) kept_from = t;
  }
  float top_p = (float)rule[2];
  if (top_p < 1.0f) {
    unsigned t = top_p_bits(p, vocab_limit, kept_from, top_p);
    if (t > kept_from) kept_from = t;
  }
  int chosen = draw(p, vocab_limit, kept_from, rule[0]);
  if (threadIdx.x == 0) ids[blockIdx.x] = chosen;
}

extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS)
    choose_tokens_f32(unsigned* ids, float* scratch, const float* logits, const double* rules,
                      int vocab, int vocab_limit) {
  choose_tokens(ids, scratch, logits, rules, vocab, vocab_limit);
}
extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS)
    choose_tokens_bf16(unsigned* ids, float* scratch, const bf16* logits, const double* rules,
                       int vocab, int vocab_limit) {
  choose_tokens(ids, scratch, logits, rules, vocab, vocab_limit);
}

SCOTD_EXPORT(choose_tokens_f32);
SCOTD_EXPORT(choose_tokens_bf16);
