// AdamW over every parameter in one launch, as src/optim/adamw.rs (and torch.optim.AdamW)
// compute it, element by element in the same order of operations:
//   w <- w * (1 - lr * wd)                      decoupled decay (wd = 0 where not decayed)
//   m <- lerp(m, g, 1 - beta1)                  torch's two-sided lerp
//   v <- v * beta2 + (1 - beta2) * g * g
//   w <- w - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), step_size = lr / (1 - beta1^t)
// with f32 master weights w, moments m and v and gradients g, and the bf16 compute copy
// of w written in the same pass (round to nearest even). The host works out the scalars
// from the step count exactly as the CPU optimizer does (f64, rounded to f32) and passes
// them as arguments. The gradient is multiplied by the clip factor that grad_norm.cu left
// in device memory as it is read (the same single f32 product as scaling the gradients in
// place first); when that norm is not finite the kernel changes nothing, as the trainer
// skips such a step. On the GPU the compiler may fuse a multiply and an add into an FMA,
// so an element can differ from the CPU's in the last bit; the emulator matches it exactly.
//
// Layout: every parameter lives in one flat f32 buffer (and its gradient, m, v and bf16
// copy in flat buffers of the same length, at the same offset), and the launch gets a
// table of chunks, one per block: (offset, len <= the launcher's chunk size, decay flag).
// Why flat buffers and a chunk table rather than a table of per-tensor pointers:
// - one offset addresses all five arrays, so a table row is 16 bytes, not five pointers;
// - flat gradients make the global norm one pass over one buffer (grad_norm.cu), zeroing
//   them one memset and saving the moments one copy;
// - the table depends only on the layout, which never changes: it is uploaded once and a
//   step passes only scalars (torch's multi_tensor_apply repacks pointers into the 4 KB
//   of kernel arguments at every launch, in several launches for a large model);
// - a block reads its row and knows its range, no search; chunks split large tensors into
//   equal work and a chunk never spans two parameters, so decay is per block;
// - parameters that are not trained are simply left out of the table.
//
// Bytes: reads w, g, m, v (16) and writes w, m, v (12) and the bf16 copy (2): 30 bytes a
// parameter, 14.8 GB for Qwen2.5-0.5B's 494M, 4.9 ms at the H100's measured 3025 GB/s
// copy rate (the 16-byte table rows, 480 KB at 16384-element chunks, are noise).
// About 15 FLOPs a parameter with a sqrt and a division: memory-bound.
//
// Launch: one block of 256 threads per chunk; threads stride over packs of 4 elements
// (16 bytes of f32, 8 of bf16) when the chunk's addresses are aligned to them (offsets
// that are multiples of 4 elements), then over the tail element by element.
#include "elementwise.cuh"

// One block's share: `len` consecutive elements of the flat buffers from `offset`.
// src/optim/cuda.rs's AdamwChunk has this layout (16 bytes, no padding).
struct AdamwChunk {
  unsigned long long offset;
  unsigned len;
  unsigned decay;
};

// The step's scalars, the same for every element.
struct AdamwScalars {
  float one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size;
  float decay_factor, grad_scale;
};

// torch's lerp: anchored at whichever end the weight is nearer.
static __device__ __forceinline__ float adamw_lerp(float start, float end, float weight) {
  return fabsf(weight) < 0.5f ? start + weight * (end - start)
                              : end - (end - start) * (1.0f - weight);
}

static __device__ __forceinline__ void adamw_element(float& w, float& m, float& v, float g,
                                                     const AdamwScalars& s) {
  g = g * s.grad_scale;
  w = w * s.decay_factor;
  m = adamw_lerp(m, g, s.one_minus_beta1);
  v = v * s.beta2 + s.one_minus_beta2 * g * g;
  float denom = sqrtf(v) / s.bias_correction2_sqrt + s.eps;
  w = w + s.neg_step_size * m / denom;
}

// `clip` is grad_norm_finalize's output ([norm, factor]) or null for no clipping;
// `params_bf16` is null when the model computes in f32 (no copy to keep).
extern "C" __global__ void adamw_update(float* params, bf16* params_bf16, float* exp_avg,
                                        float* exp_avg_sq, const float* grads,
                                        const AdamwChunk* chunks, const float* clip,
                                        float one_minus_beta1, float beta2,
                                        float one_minus_beta2, float bias_correction2_sqrt,
                                        float eps, float neg_step_size, float decay_factor) {
  AdamwChunk chunk = chunks[blockIdx.x];
  AdamwScalars s{one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
                 neg_step_size, chunk.decay ? decay_factor : 1.0f, 1.0f};
  if (clip != nullptr) {
    if (!is_finite(clip[0])) return;
    s.grad_scale = clip[1];
  }
  float* w = params + chunk.offset;
  bf16* wb = params_bf16 == nullptr ? nullptr : params_bf16 + chunk.offset;
  float* m = exp_avg + chunk.offset;
  float* v = exp_avg_sq + chunk.offset;
  const float* g = grads + chunk.offset;
  unsigned packs = all_aligned(16, w, m, v, g) && all_aligned(8, wb) ? chunk.len / 4 : 0;
  // Two copies of the loops, so the f32-only case has no branch inside them.
  if (wb == nullptr) {
    for (unsigned p = threadIdx.x; p < packs; p += blockDim.x) {
      Pack<float> pw = load_pack<4>(w + p * 4), pm = load_pack<4>(m + p * 4);
      Pack<float> pv = load_pack<4>(v + p * 4), pg = load_pack<4>(g + p * 4);
      for (int k = 0; k < 4; ++k) adamw_element(pw.v[k], pm.v[k], pv.v[k], pg.v[k], s);
      store_pack(w + p * 4, pw);
      store_pack(m + p * 4, pm);
      store_pack(v + p * 4, pv);
    }
    for (unsigned i = packs * 4 + threadIdx.x; i < chunk.len; i += blockDim.x)
      adamw_element(w[i], m[i], v[i], g[i], s);
    return;
  }
  for (unsigned p = threadIdx.x; p < packs; p += blockDim.x) {
    Pack<float> pw = load_pack<4>(w + p * 4), pm = load_pack<4>(m + p * 4);
    Pack<float> pv = load_pack<4>(v + p * 4), pg = load_pack<4>(g + p * 4);
    Pack<bf16, 4> pb;
    for (int k = 0; k < 4; ++k) {
      adamw_element(pw.v[k], pm.v[k], pv.v[k], pg.v[k], s);
      pb.v[k] = from_float<bf16>(pw.v[k]);
    }
    store_pack(w + p * 4, pw);
    store_pack(m + p * 4, pm);
    store_pack(v + p * 4, pv);
    store_pack(wb + p * 4, pb);
  }
  for (unsigned i = packs * 4 + threadIdx.x; i < chunk.len; i += blockDim.x) {
    float wi = w[i], mi = m[i], vi = v[i];
    adamw_element(wi, mi, vi, g[i], s);
    w[i] = wi;
    m[i] = mi;
    v[i] = vi;
    wb[i] = from_float<bf16>(wi);
  }
}

SCOTD_EXPORT(adamw_update);
