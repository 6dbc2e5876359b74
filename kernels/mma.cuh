// Tensor cores through one small portable API: the warp-wide bf16 product
// D[16x8] += A[16x16] · B[16x8] (f32 accumulation) of PTX's mma.sync.m16n8k16, with the
// per-lane fragment layouts of the PTX ISA, and loaders that build fragments from
// row-major tiles. On a GPU it is the instruction; in the emulator the same function
// gathers the warp's fragments and computes what the instruction computes, so a layout
// mistake in a kernel fails the CPU tests exactly as it would fail on the device.
//
// Layouts (g = lane / 4, t = lane % 4; a register holds two bf16, the lower column or
// row in its low half):
//   A register r: row g + 8 (r & 1),   columns 2t + 8 (r >> 1) + {0, 1}
//   B register r: rows (k) 2t + 8 r + {0, 1}, column (n) g
//   C element i:  row g + 8 (i >> 1),  column 2t + (i & 1)
#pragma once
#include "common.cuh"

struct FragA {
  unsigned r[4];
};
struct FragB {
  unsigned r[2];
};
struct FragC {
  float x[4];
};

__device__ __forceinline__ unsigned pack_bf16(bf16 lo, bf16 hi) {
  return unsigned(lo.bits) | (unsigned(hi.bits) << 16);
}

__device__ __forceinline__ float bf16_lo(unsigned v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_hi(unsigned v) { return __uint_as_float(v & 0xffff0000u); }

#ifdef SCOTD_EMULATION
__device__ inline void mma_bf16(FragC& d, const FragA& a, const FragB& b) {
  struct Lane {
    FragA a;
    FragB b;
  } mine{a, b}, all[32];
  scotd_emu::warp_gather(&mine, sizeof(Lane), all);
  unsigned g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
  for (int i = 0; i < 4; ++i) {
    int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
    float acc = d.x[i];
    for (int k = 0; k < 16; ++k) {
      // A[row][k]: held by lane (row % 8) * 4 + (k % 8) / 2, register (row / 8) + 2 (k / 8).
      unsigned av = all[(row % 8) * 4 + (k % 8) / 2].a.r[(row / 8) + 2 * (k / 8)];
      // B[k][col]: held by lane col * 4 + (k % 8) / 2, register k / 8.
      unsigned bv = all[col * 4 + (k % 8) / 2].b.r[k / 8];
      acc += (k % 2 ? bf16_hi(av) : bf16_lo(av)) * (k % 2 ? bf16_hi(bv) : bf16_lo(bv));
    }
    d.x[i] = acc;
  }
}
#else
__device__ __forceinline__ void mma_bf16(FragC& d, const FragA& a, const FragB& b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d.x[0]), "+f"(d.x[1]), "+f"(d.x[2]), "+f"(d.x[3])
      : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}
#endif

// A = M[row0 .. row0 + 16][col0 .. col0 + 16] of a row-major bf16 matrix with stride ld.
__device__ __forceinline__ FragA load_a(const bf16* m, int ld, int row0, int col0) {
  unsigned g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
  FragA a;
  for (int r = 0; r < 4; ++r) {
    const bf16* p = m + (size_t)(row0 + g + 8 * (r & 1)) * ld + col0 + 2 * t + 8 * (r >> 1);
    a.r[r] = pack_bf16(p[0], p[1]);
  }
  return a;
}

// B[k][n] = M[n0 + n][k0 + k]: the transpose of a row-major tile (K in Q · Kᵀ).
__device__ __forceinline__ FragB load_b_transposed(const bf16* m, int ld, int n0, int k0) {
  unsigned g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
  FragB b;
  for (int r = 0; r < 2; ++r) {
    const bf16* p = m + (size_t)(n0 + g) * ld + k0 + 2 * t + 8 * r;
    b.r[r] = pack_bf16(p[0], p[1]);
  }
  return b;
}

// B[k][n] = M[k0 + k][n0 + n]: a row-major tile as it is (V in P · V).
__device__ __forceinline__ FragB load_b(const bf16* m, int ld, int k0, int n0) {
  unsigned g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
  FragB b;
  for (int r = 0; r < 2; ++r) {
    const bf16* p = m + (size_t)(k0 + 2 * t + 8 * r) * ld + n0 + g;
    b.r[r] = pack_bf16(p[0], p[ld]);
  }
  return b;
}

// A = Mᵀ[row0 .. row0 + 16][col0 .. col0 + 16], i.e. A[r][c] = M[col0 + c][row0 + r], of a
// row-major bf16 matrix with stride ld (Pᵀ from a stored P).
__device__ __forceinline__ FragA load_a_transposed(const bf16* m, int ld, int row0, int col0) {
  unsigned g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
  FragA a;
  for (int r = 0; r < 4; ++r) {
    const bf16* p = m + (size_t)(col0 + 2 * t + 8 * (r >> 1)) * ld + row0 + g + 8 * (r & 1);
    a.r[r] = pack_bf16(p[0], p[ld]);
  }
  return a;
}

// The A fragment of columns 16 kk .. 16 kk + 16 of a 16-row product held as C fragments
// c[0 .. 2 kk + 1] (8 columns each), rounded to bf16: how P = softmax(S) feeds P · V.
template <int N>
__device__ __forceinline__ FragA c_to_a(const FragC (&c)[N], int kk) {
  FragA a;
  for (int r = 0; r < 4; ++r) {
    const FragC& part = c[2 * kk + (r >> 1)];
    int i = 2 * (r & 1);
    a.r[r] = pack_bf16(from_float<bf16>(part.x[i]), from_float<bf16>(part.x[i + 1]));
  }
  return a;
}
