//! Small-m GEMM for inference: `y[m, n] = x[m, k] · W[n, k]ᵀ` with W as a checkpoint
//! stores it (Hugging Face's [out, in], row-major, f32 or bf16) and m a decode step's few
//! rows. The `gemm` crate packs W into panels on every call, which at m ≤ 16 costs more
//! than the product itself; here every row of W is streamed from memory once and dotted
//! with all m rows of x, so a decode step reads each weight once, and a bf16 W is
//! widened in registers (exactly) rather than copied to f32. Accumulation is f32.
//!
//! Work is split over rayon in blocks of W rows (output columns). The result is built
//! column-major (one contiguous run of m values per W row, so tasks own disjoint slices)
//! and transposed into y at the end, which at m = 1 is the identity.

use std::borrow::Cow;
use std::sync::OnceLock;

use half::bf16;
use rayon::prelude::*;

/// A weight matrix [n, k], row-major, in its stored element type.
#[derive(Clone, Copy, Debug)]
pub enum WeightRows<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

impl<'a> WeightRows<'a> {
    pub fn len(&self) -> usize {
        match self {
            WeightRows::F32(w) => w.len(),
            WeightRows::Bf16(w) => w.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `rows` of the matrix, whose rows have `k` elements.
    fn rows(&self, rows: std::ops::Range<usize>, k: usize) -> WeightRows<'a> {
        let elems = rows.start * k..rows.end * k;
        match *self {
            WeightRows::F32(w) => WeightRows::F32(&w[elems]),
            WeightRows::Bf16(w) => WeightRows::Bf16(&w[elems]),
        }
    }

    /// The elements as f32: borrowed when they are, widened (exactly) when bf16.
    pub fn to_f32(&self) -> Cow<'a, [f32]> {
        match *self {
            WeightRows::F32(w) => Cow::Borrowed(w),
            WeightRows::Bf16(w) => Cow::Owned(w.par_iter().map(|v| v.to_f32()).collect()),
        }
    }
}

/// The instruction set a product runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 (F, BW, VL): 16-wide FMAs, masked loads for the tail of k.
    Avx512,
    /// Plain Rust, for every other CPU; equal to the SIMD kernels up to rounding.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs, detected once.
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            if Kernel::Avx512.is_supported() {
                Kernel::Avx512
            } else {
                Kernel::Portable
            }
        })
    }

    /// Every kernel this CPU can run (the portable one always).
    pub fn available() -> Vec<Kernel> {
        [Kernel::Portable, Kernel::Avx512]
            .into_iter()
            .filter(|k| k.is_supported())
            .collect()
    }

    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 => false,
        }
    }
}

/// Products below this many multiply-adds run on the calling thread: splitting them
/// costs more than it saves.
const SERIAL_MACS: usize = 1 << 16;

/// Parallel tasks per thread: several, so that work stealing evens out a busy core.
const TASKS_PER_THREAD: usize = 4;

/// One product of a [`skinny_matmuls`] call: `y = x · Wᵀ` (y overwritten), W [n, k]
/// and y [m, n] row-major.
pub struct SkinnyProduct<'a> {
    pub w: WeightRows<'a>,
    pub y: &'a mut [f32],
}

/// `y = x · Wᵀ` (y overwritten): x is [m, k], W is [n, k], y is [m, n], all row-major.
pub fn skinny_matmul(y: &mut [f32], x: &[f32], w: WeightRows, (m, n, k): (usize, usize, usize)) {
    assert_eq!(y.len(), m * n, "skinny_matmul: y length");
    skinny_matmuls(x, (m, k), &mut [SkinnyProduct { w, y }])
}

/// Several products of the same x [m, k] (the q, k and v projections of one input, say)
/// in one parallel pass, whose tasks are fewer and larger than separate calls' would be.
pub fn skinny_matmuls(x: &[f32], dims: (usize, usize), products: &mut [SkinnyProduct]) {
    skinny_matmuls_with(Kernel::best(), x, dims, products)
}

/// [`skinny_matmuls`] with a chosen kernel, which must be one of [`Kernel::available`].
pub fn skinny_matmuls_with(
    kernel: Kernel,
    x: &[f32],
    (m, k): (usize, usize),
    products: &mut [SkinnyProduct],
) {
    assert!(
        kernel.is_supported(),
        "skinny_matmul: {kernel:?} is not supported by this CPU"
    );
    assert_eq!(x.len(), m * k, "skinny_matmul: x length");
    if m == 0 {
        return;
    }
    for p in products.iter() {
        assert_eq!(p.y.len() % m, 0, "skinny_matmul: y length");
        assert_eq!(p.w.len(), p.y.len() / m * k, "skinny_matmul: weight length");
    }
    let weights: Vec<WeightRows> = products.iter().map(|p| p.w).collect();
    if m == 1 {
        // A single row is its own transpose: the column-major result is y.
        let outs = products.iter_mut().map(|p| &mut *p.y).collect();
        return columns(kernel, x, (m, k), &weights, outs);
    }
    let mut transposed: Vec<Vec<f32>> = products.iter().map(|p| vec![0.0; p.y.len()]).collect();
    let outs = transposed.iter_mut().map(Vec::as_mut_slice).collect();
    columns(kernel, x, (m, k), &weights, outs);
    for (p, y_t) in products.iter_mut().zip(&transposed) {
        let n = y_t.len() / m;
        for (j, col) in y_t.chunks_exact(m).enumerate() {
            for (r, &v) in col.iter().enumerate() {
                p.y[r * n + j] = v;
            }
        }
    }
}

/// Fills each `outs[i]` [n_i, m] (column-major x · W_iᵀ), splitting the rows of all the
/// weights over rayon in tasks of equal size.
fn columns(
    kernel: Kernel,
    x: &[f32],
    (m, k): (usize, usize),
    weights: &[WeightRows],
    outs: Vec<&mut [f32]>,
) {
    let total_rows: usize = outs.iter().map(|o| o.len() / m).sum();
    if total_rows == 0 {
        return;
    }
    let serial = m * total_rows * k < SERIAL_MACS;
    let rows_per_task = if serial {
        total_rows
    } else {
        let tasks = TASKS_PER_THREAD * rayon::current_num_threads();
        total_rows.div_ceil(tasks).next_multiple_of(TILE_ROWS)
    };
    let tasks: Vec<(WeightRows, &mut [f32])> = weights
        .iter()
        .zip(outs)
        .flat_map(|(&w, out)| {
            out.chunks_mut(rows_per_task * m)
                .enumerate()
                .map(move |(i, chunk)| {
                    let first = i * rows_per_task;
                    (w.rows(first..first + chunk.len() / m, k), chunk)
                })
        })
        .collect();
    let run = |(w, out): (WeightRows, &mut [f32])| match w {
        WeightRows::F32(w) => block(kernel, out, x, w, m, k),
        WeightRows::Bf16(w) => block(kernel, out, x, w, m, k),
    };
    if serial {
        tasks.into_iter().for_each(run);
    } else {
        tasks.into_par_iter().for_each(run);
    }
}

/// W rows dotted together by one SIMD tile (sharing each load of an x chunk).
const TILE_ROWS: usize = 4;

/// x rows dotted together by one SIMD tile (sharing each widened W chunk). With
/// TILE_ROWS accumulators per x row this keeps 16 accumulators, the 4 W chunks and an
/// x chunk in AVX-512's 32 registers.
const TILE_X_ROWS: usize = 4;

/// One task's share: out [rows of w, m] = (x · wᵀ)ᵀ.
fn block<T: Element>(kernel: Kernel, out: &mut [f32], x: &[f32], w: &[T], m: usize, k: usize) {
    if k == 0 {
        return out.fill(0.0);
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: skinny_matmuls_with checked that the CPU runs this kernel.
        Kernel::Avx512 => unsafe { avx512::block(out, x, w, m, k) },
        _ => portable_block(out, x, w, m, k),
    }
}

/// A stored weight element, widened to f32 for the product.
pub trait Element: Copy + Send + Sync + avx512::Load {
    fn widen(self) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// Partial sums per dot product in the portable kernel: independent chains that LLVM
/// can keep in one vector register.
const PORTABLE_LANES: usize = 16;

fn portable_block<T: Element>(out: &mut [f32], x: &[f32], w: &[T], m: usize, k: usize) {
    for (w_row, col) in w.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        for (x_row, y) in x.chunks_exact(k).zip(col.iter_mut()) {
            *y = portable_dot(x_row, w_row);
        }
    }
}

fn portable_dot<T: Element>(x: &[f32], w: &[T]) -> f32 {
    let mut lanes = [0.0f32; PORTABLE_LANES];
    let x_chunks = x.chunks_exact(PORTABLE_LANES);
    let w_chunks = w.chunks_exact(PORTABLE_LANES);
    let tail: f32 = x_chunks
        .remainder()
        .iter()
        .zip(w_chunks.remainder())
        .map(|(&a, &b)| a * b.widen())
        .sum();
    for (xc, wc) in x_chunks.zip(w_chunks) {
        for ((acc, &a), &b) in lanes.iter_mut().zip(xc).zip(wc) {
            *acc += a * b.widen();
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::bf16;

    use super::{Element, TILE_ROWS, TILE_X_ROWS};

    /// Loading 16 consecutive weights as f32 lanes (lanes outside `mask` are zero and
    /// not read).
    pub trait Load {
        /// # Safety
        /// The CPU supports AVX-512 F/BW/VL, and the lanes in `mask` are readable.
        unsafe fn load16(p: *const Self, mask: __mmask16) -> __m512;
    }

    impl Load for f32 {
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load16(p: *const f32, mask: __mmask16) -> __m512 {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }

    impl Load for bf16 {
        /// bf16 is the top half of an f32: zero-extend to 32 bits and shift up.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn load16(p: *const bf16, mask: __mmask16) -> __m512 {
            let halves = _mm256_maskz_loadu_epi16(mask, p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(halves)))
        }
    }

    /// out [rows of w, m] = (x · wᵀ)ᵀ, in tiles of TILE_ROWS W rows × up to TILE_X_ROWS x rows.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL; x is [m, k], w is [rows, k], out is [rows, m].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn block<T: Element>(out: &mut [f32], x: &[f32], w: &[T], m: usize, k: usize) {
        let rows = w.len() / k;
        let full = rows - rows % TILE_ROWS;
        for j in (0..full).step_by(TILE_ROWS) {
            tile_rows::<T, TILE_ROWS>(out, x, w, j, m, k);
        }
        for j in full..rows {
            tile_rows::<T, 1>(out, x, w, j, m, k);
        }
    }

    /// W rows j..j+NR against every row of x.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn tile_rows<T: Element, const NR: usize>(
        out: &mut [f32],
        x: &[f32],
        w: &[T],
        j: usize,
        m: usize,
        k: usize,
    ) {
        let wp = w.as_ptr().add(j * k);
        let mut r = 0;
        while r < m {
            let xp = x.as_ptr().add(r * k);
            let sums: [[f32; NR]; TILE_X_ROWS] = match m - r {
                1 => widen_rows(tile::<T, 1, NR>(xp, wp, k)),
                2 => widen_rows(tile::<T, 2, NR>(xp, wp, k)),
                3 => widen_rows(tile::<T, 3, NR>(xp, wp, k)),
                _ => tile::<T, TILE_X_ROWS, NR>(xp, wp, k),
            };
            let x_rows = (m - r).min(TILE_X_ROWS);
            for (c, col) in out[j * m..(j + NR) * m].chunks_exact_mut(m).enumerate() {
                for (dr, sum) in sums[..x_rows].iter().enumerate() {
                    col[r + dr] = sum[c];
                }
            }
            r += x_rows;
        }
    }

    /// A tile of fewer x rows, padded to TILE_X_ROWS (the padding is never read).
    #[inline(always)]
    fn widen_rows<const MR: usize, const NR: usize>(
        s: [[f32; NR]; MR],
    ) -> [[f32; NR]; TILE_X_ROWS] {
        let mut out = [[0.0; NR]; TILE_X_ROWS];
        out[..MR].copy_from_slice(&s);
        out
    }

    /// The MR × NR dot products of x rows [MR, k] (at xp) with W rows [NR, k] (at wp).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn tile<T: Element, const MR: usize, const NR: usize>(
        xp: *const f32,
        wp: *const T,
        k: usize,
    ) -> [[f32; NR]; MR] {
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        let mut p = 0;
        while p + 16 <= k {
            step::<T, MR, NR>(&mut acc, xp.add(p), wp.add(p), k, 0xFFFF);
            p += 16;
        }
        if p < k {
            let mask = (1u16 << (k - p)) - 1;
            step::<T, MR, NR>(&mut acc, xp.add(p), wp.add(p), k, mask);
        }
        let mut sums = [[0.0; NR]; MR];
        for (s, a) in sums.iter_mut().zip(&acc) {
            *s = reduce::<NR>(a);
        }
        sums
    }

    /// acc[r][c] += x[r, p..p+16] * W[c, p..p+16], lanes limited to `mask`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn step<T: Element, const MR: usize, const NR: usize>(
        acc: &mut [[__m512; NR]; MR],
        xp: *const f32,
        wp: *const T,
        k: usize,
        mask: __mmask16,
    ) {
        let mut wv = [_mm512_setzero_ps(); NR];
        for (c, v) in wv.iter_mut().enumerate() {
            *v = T::load16(wp.add(c * k), mask);
            // The same columns of the W rows PREFETCH_ROWS_AHEAD further on, so that
            // memory streams while this tile computes (past the end it is a no-op).
            let ahead = wp.wrapping_add((c + PREFETCH_ROWS_AHEAD) * k);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let xv = _mm512_maskz_loadu_ps(mask, xp.add(r * k));
            for (a, &v) in row.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, v, *a);
            }
        }
    }

    /// How far ahead (in W rows) the tiles prefetch.
    const PREFETCH_ROWS_AHEAD: usize = 2 * TILE_ROWS;

    /// The horizontal sum of each accumulator.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn reduce<const NR: usize>(acc: &[__m512; NR]) -> [f32; NR] {
        let mut out = [0.0; NR];
        if NR == TILE_ROWS {
            _mm_storeu_ps(out.as_mut_ptr(), sum4(acc[0], acc[1], acc[2], acc[3]));
        } else {
            for (o, &a) in out.iter_mut().zip(acc) {
                *o = _mm512_reduce_add_ps(a);
            }
        }
        out
    }

    /// The sums of a, b, c and d, reduced together: a transpose-and-add tree shares
    /// the shuffles that four separate horizontal sums would each do.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
        // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], and the same for c, d.
        let ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        let (ab, cd) = (_mm512_castps_pd(ab), _mm512_castps_pd(cd));
        // Per 128-bit lane: [a, b, c, d] partial sums.
        let lanes = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(ab, cd)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(ab, cd)),
        );
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(lanes)));
        let half = _mm256_add_ps(_mm512_castps512_ps256(lanes), high);
        _mm_add_ps(
            _mm256_castps256_ps128(half),
            _mm256_extractf128_ps::<1>(half),
        )
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    /// No SIMD kernels off x86-64: nothing to load.
    pub trait Load {}
    impl Load for f32 {}
    impl Load for half::bf16 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{matmul, Transpose};
    use crate::rng::Rng;

    /// The reference: the `gemm` crate's product against W widened to f32.
    fn reference(x: &[f32], w: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
        let mut y = vec![0.0; m * n];
        matmul(
            &mut y,
            x,
            Transpose::No,
            w,
            Transpose::Yes,
            (m, n, k),
            false,
        );
        y
    }

    fn assert_close(got: &[f32], want: &[f32], k: usize, what: &str) {
        // f32 sums of k products of unit normals: rounding grows like sqrt(k) ulps.
        let tol = 1e-6 * (k as f32).sqrt() * 8.0;
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{what}: element {i}: {g} vs {w}"
            );
        }
    }

    fn check(kernel: Kernel, dims: (usize, usize, usize), rng: &mut Rng) {
        let (m, n, k) = dims;
        let x = rng.normal_vec(m * k, 1.0);
        let w = rng.normal_vec(n * k, 1.0);
        let w_bf16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let w_widened: Vec<f32> = w_bf16.iter().map(|v| v.to_f32()).collect();
        let what = format!("{kernel:?} m={m} n={n} k={k}");

        let y = product(kernel, &x, WeightRows::F32(&w), dims);
        assert_close(&y, &reference(&x, &w, dims), k, &format!("{what} f32"));
        let y = product(kernel, &x, WeightRows::Bf16(&w_bf16), dims);
        let want = reference(&x, &w_widened, dims);
        assert_close(&y, &want, k, &format!("{what} bf16"));
    }

    fn product(kernel: Kernel, x: &[f32], w: WeightRows, dims: (usize, usize, usize)) -> Vec<f32> {
        let (m, n, k) = dims;
        let mut y = vec![f32::NAN; m * n];
        skinny_matmuls_with(kernel, x, (m, k), &mut [SkinnyProduct { w, y: &mut y }]);
        y
    }

    #[test]
    fn every_kernel_matches_the_gemm_on_odd_sizes() {
        let mut rng = Rng::new(5);
        for kernel in Kernel::available() {
            for m in 1..=9 {
                for (n, k) in [(1, 1), (3, 15), (7, 17), (13, 33), (37, 50), (5, 100)] {
                    check(kernel, (m, n, k), &mut rng);
                }
            }
        }
    }

    #[test]
    fn every_kernel_matches_the_gemm_on_parallel_sizes() {
        let mut rng = Rng::new(6);
        for kernel in Kernel::available() {
            for (m, n, k) in [
                (1, 1001, 203),
                (3, 517, 131),
                (8, 263, 577),
                (16, 130, 65),
                (33, 70, 100),
                (64, 41, 96),
            ] {
                check(kernel, (m, n, k), &mut rng);
            }
        }
    }

    /// Products of one x in one call, f32 and bf16 mixed, one of them empty, each equal
    /// to its own reference.
    #[test]
    fn several_products_in_one_pass() {
        let mut rng = Rng::new(7);
        let (k, ns) = (67, [301, 0, 45, 130]);
        let ws: Vec<Vec<f32>> = ns.iter().map(|&n| rng.normal_vec(n * k, 1.0)).collect();
        let w_bf16: Vec<bf16> = ws[2].iter().map(|&v| bf16::from_f32(v)).collect();
        let w_widened: Vec<f32> = w_bf16.iter().map(|v| v.to_f32()).collect();
        let stored = |i: usize| match i {
            2 => WeightRows::Bf16(&w_bf16),
            _ => WeightRows::F32(&ws[i]),
        };
        for kernel in Kernel::available() {
            for m in [1, 3, 8] {
                let x = rng.normal_vec(m * k, 1.0);
                let mut ys: Vec<Vec<f32>> = ns.iter().map(|&n| vec![f32::NAN; m * n]).collect();
                let mut products: Vec<SkinnyProduct> = ys
                    .iter_mut()
                    .enumerate()
                    .map(|(i, y)| SkinnyProduct { w: stored(i), y })
                    .collect();
                skinny_matmuls_with(kernel, &x, (m, k), &mut products);
                for (i, (y, &n)) in ys.iter().zip(&ns).enumerate() {
                    let w = if i == 2 { &w_widened } else { &ws[i] };
                    let what = format!("{kernel:?} m={m} product {i}");
                    assert_close(y, &reference(&x, w, (m, n, k)), k, &what);
                }
            }
        }
    }

    #[test]
    fn empty_products() {
        for kernel in Kernel::available() {
            let y = product(kernel, &[], WeightRows::F32(&[]), (2, 3, 0));
            assert_eq!(y, vec![0.0; 6]);
            assert!(product(kernel, &[1.0; 4], WeightRows::F32(&[]), (2, 0, 2)).is_empty());
            assert!(product(kernel, &[], WeightRows::F32(&[1.0; 4]), (0, 2, 2)).is_empty());
        }
    }
}
