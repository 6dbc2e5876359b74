//! Row-major f32 GEMM on the CPU, through the `gemm` crate (packed SIMD microkernels,
//! rayon-parallel). Transposes are expressed as strides, never copied.

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    No,
    Yes,
}

/// `c = op(a) · op(b)` (or `c += …` when `accumulate`), with `op(a)` of shape m×k,
/// `op(b)` of shape k×n and `c` of shape m×n, all row-major.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f32],
    a: &[f32],
    ta: Transpose,
    b: &[f32],
    tb: Transpose,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    assert_eq!(a.len(), m * k, "matmul: lhs length");
    assert_eq!(b.len(), k * n, "matmul: rhs length");
    assert_eq!(c.len(), m * n, "matmul: dst length");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    // (row stride, column stride) of each operand as used.
    let (a_rs, a_cs) = match ta {
        Transpose::No => (k as isize, 1),
        Transpose::Yes => (1, m as isize),
    };
    let (b_rs, b_cs) = match tb {
        Transpose::No => (n as isize, 1),
        Transpose::Yes => (1, k as isize),
    };
    let parallelism = if m * n * k < 32 * 32 * 32 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    };
    // SAFETY: the asserts above bound every index the strides can reach, and `c`
    // does not alias `a` or `b` (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        a: &[f32],
        ta: Transpose,
        b: &[f32],
        tb: Transpose,
        m: usize,
        n: usize,
        k: usize,
    ) -> Vec<f32> {
        let at = |i: usize, p: usize| {
            if ta == Transpose::No {
                a[i * k + p]
            } else {
                a[p * m + i]
            }
        };
        let bt = |p: usize, j: usize| {
            if tb == Transpose::No {
                b[p * n + j]
            } else {
                b[j * k + p]
            }
        };
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| at(i, p) as f64 * bt(p, j) as f64)
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn matches_naive_for_every_transpose_and_accumulate() {
        let (m, n, k) = (37, 53, 71);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 97) as f32 / 97.0 - 0.5)
            .collect();
        for ta in [Transpose::No, Transpose::Yes] {
            for tb in [Transpose::No, Transpose::Yes] {
                let want = naive(&a, ta, &b, tb, m, n, k);
                let mut c = vec![1.0; m * n];
                matmul(&mut c, &a, ta, &b, tb, (m, n, k), true);
                for (x, w) in c.iter().zip(&want) {
                    assert!(
                        (x - (w + 1.0)).abs() < 1e-4,
                        "{ta:?} {tb:?}: {x} vs {}",
                        w + 1.0
                    );
                }
                matmul(&mut c, &a, ta, &b, tb, (m, n, k), false);
                for (x, w) in c.iter().zip(&want) {
                    assert!((x - w).abs() < 1e-4);
                }
            }
        }
    }
}
