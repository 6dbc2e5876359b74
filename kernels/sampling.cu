// Token choice on the device, one block per row of logits: greedy (the first argmax), or a
// draw from p_i = exp((l_i - max) / T) cut to the top-k and then the top-p of what is
// left, with the row's uniform draw given by the host. Only ids < vocab_limit take part.
// src/ops/sampling/cpu.rs is the reference; the two agree except where a float rounding
// falls on a threshold or on the draw's boundary between two ids.
//
// A sampled row: (1) the max, by the argmax pass every row makes; (2) p written to a scratch
// row (f32; NaN logits give 0); (3) the top-k threshold t_k, the k-th largest f32 bit
// pattern of p (non-negative floats order as their bits do), by a radix select: four passes
// of an integer 256-bin histogram of one 8-bit digit; (4) the top-p threshold, the largest
// bit pattern b with mass(kept p >= b) >= top_p * mass(kept p), built bit by bit from the
// MSB, one pass per bit; (5) the draw: each thread owns a contiguous chunk of ids, a block
// scan of the chunk masses finds the chunk holding uniform * mass, and its thread walks the
// chunk in id order. Every float sum adds in an order fixed by the ids and the block size
// alone (no float atomics), so a row gives the same id on every run. p is at most 1 (exp
// of a value <= 0), below 2.0 = 0x40000000, so bits 31 and 30 of a threshold are 0: 30
// top-p passes, not 32.
//
// Loads in flight: every loop issues several independent loads before it uses the first.
// The passes whose order does not matter (the argmax: a total order on (value, id); p; the
// top-k counts) read 16-byte vectors, SAMPLING_VECTORS = 4 per thread per step (4 x 8 bf16
// or 4 x 4 f32), when the row starts on 16 bytes (a bf16 vocabulary that is a multiple of 8,
// as Qwen's 151,936 is; the scratch rows are padded to 32 floats), else 8 scalar loads per
// step. The float sums (top-p masses, chunk masses) keep the thread-to-id map and the order
// of their adds, so they read 8 scalars ahead (coalesced 128-byte lines for the masses) and
// add them in the same order as one load at a time would: the ids chosen are bit for bit
// those of the one-load-at-a-time kernel.
//
// Cost (ESTIMATES from bytes and latency, not measured: no GPU here; gpu-bench times the
// greedy and top-p rows). Qwen2.5, vocab V = 151,936, 64 rows, bf16 logits: 19.4 MB.
// Greedy: one pass over the logits, 2 bytes per id, max and first index together:
// 19.4 MB, about 6-8 us at the H100's ~3 TB/s if 64 SMs with 64 KB in flight each reach
// it (one block per row leaves 68 of the H200's 132 SMs idle). A sampled row: the argmax
// pass (2V), the p pass (2V read, 4V written), then 4V per pass over p: top-p alone is 1
// kept-mass pass + 30 bit passes + 1 chunk pass = 32 passes, 2 + 2 + 4 + 4 * 32 = 136 bytes
// per id (1.3 GB for 64 rows); top-k alone 4 histogram passes + the chunk pass, 2 + 2 + 4 +
// 4 * 5 = 28 bytes per id (0.27 GB); both 4 + 32 = 36 passes, 152 bytes per id (1.5 GB; 61
// passes and 256 bytes per id before the radix select). The scratch of 64 rows (38.9 MB)
// fits the 50 MB L2, so the passes run at L2 rather than HBM speed: at a rough 5-6 TB/s
// of L2, ~6-7 us a pass plus ~1 us of block reduction, about 0.25 ms for top-p, 0.05 ms for
// top-k alone and 0.28 ms for both. A Qwen2.5-0.5B decode step of 64 rows reads its ~1 GB of
// bf16 weights, ~0.33 ms at 3 TB/s: greedy costs ~2% of a step, a top-p draw still about as
// much as the step itself (its 30 one-bit mass passes are what is left to cut). Copying the
// logits to the host instead moves the same 19.4 MB over PCIe (~0.8 ms) before any host work.
//
// Launch: grid = rows, 1024 threads (SAMPLING_THREADS); rules holds four doubles per row:
// uniform, temperature, top_p, top_k (0 or >= vocab_limit: off); scratch holds
// scratch_stride(vocab_limit) floats per row (vocab_limit rounded up to 32).
#include "common.cuh"

#define SAMPLING_THREADS 1024
// Loads a thread issues before it uses the first of them: 16-byte vectors in the passes
// that may take the row in any order, 4-byte floats in those whose sums keep their order.
#define SAMPLING_VECTORS 4
#define SAMPLING_SCALARS 8
// The top-k select's histogram: 256 bins of one 8-bit digit, one copy per lane (rows of
// 257 ints, so that lanes adding to the same bin of their own copies use distinct banks).
#define SAMPLING_BINS 256
#define SAMPLING_COPY_STRIDE 257

// The ids kept are those whose p's bits are at least `kept_from`, which starts at the bits of
// the smallest positive float: every id with p > 0, none whose p underflowed to 0.
#define SMALLEST_POSITIVE_BITS 1u

static __device__ __forceinline__ bool sampling_is_nan(float x) {
  return (__float_as_uint(x) & 0x7fffffffu) > 0x7f800000u;
}

static __device__ __forceinline__ bool sampling_is_finite(float x) {
  return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}

// 16 bytes of a row: 4 f32 or 8 bf16 values.
struct alignas(16) SamplingVec {
  unsigned w[4];
};

static __device__ __forceinline__ bool sampling_aligned(const void* p) {
  return reinterpret_cast<size_t>(p) % 16 == 0;
}

static __device__ __forceinline__ SamplingVec sampling_load(const void* p) {
#ifdef SCOTD_EMULATION
  SamplingVec v;
  memcpy(&v, p, sizeof v);  // the emulator's C++ may not read floats through a struct
  return v;
#else
  return *reinterpret_cast<const SamplingVec*>(p);
#endif
}

static __device__ __forceinline__ void sampling_store(void* p, SamplingVec v) {
#ifdef SCOTD_EMULATION
  memcpy(p, &v, sizeof v);
#else
  *reinterpret_cast<SamplingVec*>(p) = v;
#endif
}

// Value `i` of a vector of the row's type.
static __device__ __forceinline__ float sampling_lane(const SamplingVec& v, int i, const float*) {
  return __uint_as_float(v.w[i]);
}
static __device__ __forceinline__ float sampling_lane(const SamplingVec& v, int i, const bf16*) {
  unsigned w = v.w[i / 2];  // little-endian: the lower id in the low half
  return __uint_as_float(i % 2 ? w & 0xffff0000u : w << 16);
}

// Calls f(j, value of row[j]) for the ids j < n of this thread, in ascending order; every id
// of the row once over the block. 16-byte vectors, SAMPLING_VECTORS of them loaded before use,
// when the row starts on 16 bytes (thread t takes vectors t, t + blockDim.x, ...); then the
// rest, or all of a row that does not start there, SAMPLING_SCALARS values at a time.
template <class T, class F>
static __device__ __forceinline__ void sampling_visit(const T* row, int n, F f) {
  constexpr int lanes = 16 / sizeof(T);
  const int thread = threadIdx.x, stride = blockDim.x;
  int j = thread;
  if (sampling_aligned(row)) {
    const int vectors = n / lanes;
    int v = thread;
    for (; v + (SAMPLING_VECTORS - 1) * stride < vectors; v += SAMPLING_VECTORS * stride) {
      SamplingVec x[SAMPLING_VECTORS];
#pragma unroll
      for (int u = 0; u < SAMPLING_VECTORS; ++u)
        x[u] = sampling_load(row + (size_t)(v + u * stride) * lanes);
#pragma unroll
      for (int u = 0; u < SAMPLING_VECTORS; ++u)
#pragma unroll
        for (int i = 0; i < lanes; ++i) f((v + u * stride) * lanes + i, sampling_lane(x[u], i, row));
    }
    for (; v < vectors; v += stride) {
      SamplingVec x = sampling_load(row + (size_t)v * lanes);
#pragma unroll
      for (int i = 0; i < lanes; ++i) f(v * lanes + i, sampling_lane(x, i, row));
    }
    j = vectors * lanes + thread;
  }
  for (; j + (SAMPLING_SCALARS - 1) * stride < n; j += SAMPLING_SCALARS * stride) {
    float x[SAMPLING_SCALARS];
#pragma unroll
    for (int u = 0; u < SAMPLING_SCALARS; ++u) x[u] = to_float(row[j + u * stride]);
#pragma unroll
    for (int u = 0; u < SAMPLING_SCALARS; ++u) f(j + u * stride, x[u]);
  }
  for (; j < n; j += stride) f(j, to_float(row[j]));
}

// out[j] = g(row[j]) for every j < n, in 16-byte vectors when both rows start on 16 bytes.
template <class T, class G>
static __device__ __forceinline__ void sampling_map(const T* row, float* out, int n, G g) {
  constexpr int lanes = 16 / sizeof(T);
  const int thread = threadIdx.x, stride = blockDim.x;
  int j = thread;
  if (sampling_aligned(row) && sampling_aligned(out)) {
    const int vectors = n / lanes;
    int v = thread;
    for (; v + (SAMPLING_VECTORS - 1) * stride < vectors; v += SAMPLING_VECTORS * stride) {
      SamplingVec x[SAMPLING_VECTORS];
#pragma unroll
      for (int u = 0; u < SAMPLING_VECTORS; ++u)
        x[u] = sampling_load(row + (size_t)(v + u * stride) * lanes);
#pragma unroll
      for (int u = 0; u < SAMPLING_VECTORS; ++u) {
        float* to = out + (size_t)(v + u * stride) * lanes;
#pragma unroll
        for (int h = 0; h < lanes / 4; ++h) {
          SamplingVec y;
#pragma unroll
          for (int i = 0; i < 4; ++i) y.w[i] = __float_as_uint(g(sampling_lane(x[u], 4 * h + i, row)));
          sampling_store(to + 4 * h, y);
        }
      }
    }
    for (; v < vectors; v += stride) {
      SamplingVec x = sampling_load(row + (size_t)v * lanes);
      float* to = out + (size_t)v * lanes;
#pragma unroll
      for (int h = 0; h < lanes / 4; ++h) {
        SamplingVec y;
#pragma unroll
        for (int i = 0; i < 4; ++i) y.w[i] = __float_as_uint(g(sampling_lane(x, 4 * h + i, row)));
        sampling_store(to + 4 * h, y);
      }
    }
    j = vectors * lanes + thread;
  }
  for (; j + (SAMPLING_SCALARS - 1) * stride < n; j += SAMPLING_SCALARS * stride) {
    float x[SAMPLING_SCALARS];
#pragma unroll
    for (int u = 0; u < SAMPLING_SCALARS; ++u) x[u] = to_float(row[j + u * stride]);
#pragma unroll
    for (int u = 0; u < SAMPLING_SCALARS; ++u) out[j + u * stride] = g(x[u]);
  }
  for (; j < n; j += stride) out[j] = g(to_float(row[j]));
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

// The k-th largest p's bits (1 <= k <= n): the largest b with count(bits(p) >= b) >= k, by
// a radix select over four 8-bit digits from the top. Each pass counts, in a 256-bin
// histogram, the digit of the ids whose higher digits equal those chosen so far, then picks
// the bin where the count from the top reaches the rank still sought. The counts are
// integers, so the order of the adds changes nothing: the same b as 30 one-bit passes.
static __device__ unsigned kth_largest_bits(const float* p, int n, int k) {
  __shared__ int copies[32 * SAMPLING_COPY_STRIDE];
  __shared__ int bins[SAMPLING_BINS];
  __shared__ unsigned chosen_prefix;
  __shared__ int chosen_rank;
  const int thread = threadIdx.x, stride = blockDim.x, lane = thread % 32;
  int* mine = copies + lane * SAMPLING_COPY_STRIDE;
  unsigned prefix = 0;
  int rank = k;  // among the ids that match the prefix
  for (int shift = 24; shift >= 0; shift -= 8) {
    const unsigned high = shift == 24 ? 0u : ~0u << (shift + 8);
    for (int i = thread; i < 32 * SAMPLING_COPY_STRIDE; i += stride) copies[i] = 0;
    __syncthreads();
    sampling_visit(p, n, [&](int, float q) {
      unsigned b = __float_as_uint(q);
      if (((b ^ prefix) & high) == 0) atomicAdd(&mine[(b >> shift) & 255u], 1);
    });
    __syncthreads();
    if (thread < SAMPLING_BINS) {
      int count = 0;
      for (int c = 0; c < 32; ++c) count += copies[c * SAMPLING_COPY_STRIDE + thread];
      bins[thread] = count;
    }
    __syncthreads();
    if (thread < 32) {
      // Lane l holds bins 255 - 8l down to 248 - 8l; the counts above them by a scan.
      const int top = SAMPLING_BINS - 1 - 8 * lane;
      int own = 0;
      for (int i = 0; i < 8; ++i) own += bins[top - i];
      int through = own;
      for (int offset = 1; offset < 32; offset <<= 1) {
        int other = __shfl_sync(0xffffffffu, through, lane >= offset ? lane - offset : lane);
        if (lane >= offset) through += other;
      }
      int above = through - own;
      if (above < rank && rank <= through) {
        for (int i = 0; i < 8; ++i) {
          int count = bins[top - i];
          if (above + count >= rank) {
            chosen_prefix = prefix | (unsigned)(top - i) << shift;
            chosen_rank = rank - above;
            break;
          }
          above += count;
        }
      }
    }
    __syncthreads();
    prefix = chosen_prefix;
    rank = chosen_rank;
  }
  return prefix;
}

// The mass of the ids whose p's bits are at least `kept_from`. Thread t adds p[t],
// p[t + blockDim.x], ... in that order (SAMPLING_SCALARS loads ahead), then the block sum:
// an order fixed by the ids and the block size.
static __device__ float mass_at_least(const float* p, int n, unsigned kept_from) {
  const int stride = blockDim.x;
  float mass = 0.0f;
  int j = threadIdx.x;
  for (; j + (SAMPLING_SCALARS - 1) * stride < n; j += SAMPLING_SCALARS * stride) {
    float q[SAMPLING_SCALARS];
#pragma unroll
    for (int u = 0; u < SAMPLING_SCALARS; ++u) q[u] = p[j + u * stride];
#pragma unroll
    for (int u = 0; u < SAMPLING_SCALARS; ++u)
      if (__float_as_uint(q[u]) >= kept_from) mass += q[u];
  }
  for (; j < n; j += stride)
    if (__float_as_uint(p[j]) >= kept_from) mass += p[j];
  return block_sum(mass);
}

// The top-p threshold's bits: the largest b with mass(p >= max(b, kept_from)) >= top_p * the
// mass kept by `kept_from`. The masses are floats, whose sums depend on their order, so this
// select stays one bit per pass (a histogram of masses would need float atomics).
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
// the last kept id when rounding leaves the target past the end. Each thread's chunk is read
// SAMPLING_SCALARS loads ahead and added in id order.
static __device__ int draw(const float* p, int n, unsigned kept_from, double uniform) {
  __shared__ float ends[SAMPLING_THREADS];
  int thread = threadIdx.x, chunk = (n + blockDim.x - 1) / blockDim.x;
  int begin = min(n, thread * chunk), end = min(n, begin + chunk);
  float chunk_mass = 0.0f;
  int last_kept = -1;
  int j = begin;
  for (; j + SAMPLING_SCALARS <= end; j += SAMPLING_SCALARS) {
    float q[SAMPLING_SCALARS];
#pragma unroll
    for (int u = 0; u < SAMPLING_SCALARS; ++u) q[u] = p[j + u];
#pragma unroll
    for (int u = 0; u < SAMPLING_SCALARS; ++u) {
      if (__float_as_uint(q[u]) >= kept_from) {
        chunk_mass += q[u];
        last_kept = j + u;
      }
    }
  }
  for (; j < end; ++j) {
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
    int pick = -1;
    for (int from = begin; from < end && pick < 0; from += SAMPLING_SCALARS) {
      float q[SAMPLING_SCALARS];
#pragma unroll
      for (int u = 0; u < SAMPLING_SCALARS; ++u) q[u] = from + u < end ? p[from + u] : 0.0f;
#pragma unroll
      for (int u = 0; u < SAMPLING_SCALARS; ++u) {
        if (pick >= 0 || from + u >= end || __float_as_uint(q[u]) < kept_from) continue;
        if (left < q[u])
          pick = from + u;
        else
          left -= q[u];
      }
    }
    chosen = pick >= 0 ? pick : last_kept;
  }
  __syncthreads();
  return chosen >= 0 ? chosen : block_reduce_int(last_kept, SamplingMax(), -1);
}

// The floats of a row's scratch: vocab_limit rounded up to 32 (128 bytes), so that every row
// starts where the first does (src/ops/sampling/cuda.rs allocates rows * this).
static __device__ __forceinline__ size_t scratch_stride(int vocab_limit) {
  return ((size_t)vocab_limit + 31) / 32 * 32;
}

template <class T>
static __device__ void choose_tokens(unsigned* ids, float* scratch, const T* logits,
                                     const double* rules, int vocab, int vocab_limit) {
  const T* row = logits + (size_t)blockIdx.x * vocab;
  const double* rule = rules + 4 * (size_t)blockIdx.x;
  float temperature = (float)rule[1];
  // The one pass of a greedy row. NaN compares false: it is never the best, as if it were
  // -inf. Each thread sees its ids in ascending order, so it keeps the first of its ties.
  SamplingBest best = {neg_infinity(), vocab_limit};
  sampling_visit(row, vocab_limit, [&](int j, float v) {
    if (v > best.value) best = {v, j};
  });
  best = block_best(best);
  // Greedy, and rows with no finite max (all NaN or -inf: id 0; a +inf: the first one).
  if (temperature == 0.0f || !sampling_is_finite(best.value)) {
    if (threadIdx.x == 0) ids[blockIdx.x] = best.id < vocab_limit ? best.id : 0;
    return;
  }
  float* p = scratch + (size_t)blockIdx.x * scratch_stride(vocab_limit);
  const float max = best.value;
  sampling_map(row, p, vocab_limit, [&](float v) {
    return sampling_is_nan(v) ? 0.0f : expf((v - max) / temperature);
  });
  __syncthreads();
  unsigned kept_from = SMALLEST_POSITIVE_BITS;
  int top_k = (int)rule[3];
  if (top_k > 0 && top_k < vocab_limit) {
    unsigned t = kth_largest_bits(p, vocab_limit, top_k);
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
