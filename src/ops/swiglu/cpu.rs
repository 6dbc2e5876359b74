//! CPU reference for swiglu, elementwise in f32. The loops are written over plain
//! slices, one rayon task per block, with a branch-free sigmoid over a polynomial exp so
//! that they vectorise: libm's scalar `expf` behind a branch made this op 10× slower
//! than PyTorch's (benches/RESULTS.md).

use rayon::prelude::*;

/// Elements per rayon task.
const BLOCK: usize = 4096;

/// e^x for x in f32 range, within about 2 ulp: x = n·ln2 + r with |r| ≤ ln2/2, then a
/// degree-7 Taylor polynomial for e^r (truncation below 1e-8 relative) scaled by 2^n
/// through the exponent bits. Outside the range of normal results it gives 0 or +inf,
/// as libm does (so sigmoid reaches exactly 0 and 1).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let v = exp_normal_range(x);
    if x > 88.5 {
        f32::INFINITY
    } else if x < -87.0 {
        0.0
    } else {
        v
    }
}

/// e^x for x clamped to [-87, 88.5], branch-free so that it vectorises.
#[inline(always)]
fn exp_normal_range(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and removing 1.5·2^23 rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.5);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The logistic function: 1/(1 + inf) = 0 for very negative g, never NaN.
#[inline(always)]
fn sigmoid(g: f32) -> f32 {
    1.0 / (1.0 + exp(-g))
}

/// `silu(gate) * up`, in Hugging Face's order (the activation first).
pub fn swiglu_forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    apply(Map::Forward, gate, up, &[])
}

/// The three elementwise maps of this op, over equal-length slices.
#[derive(Clone, Copy)]
enum Map {
    /// silu(gate)·up
    Forward,
    /// grad·up·silu'(gate)
    GateGrad,
    /// grad·silu(gate)
    UpGrad,
}

/// `out[i] = map(gate[i], other[i], grad[i])` (unused operands may be empty), in
/// parallel blocks.
fn apply(map: Map, gate: &[f32], other: &[f32], grad: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; gate.len()];
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, out)| {
        let r = b * BLOCK..b * BLOCK + out.len();
        apply_block(
            map,
            out,
            &gate[r.clone()],
            block(other, &r),
            block(grad, &r),
        );
    });
    out
}

/// The block `r` of an operand, or nothing for an unused (empty) one.
fn block<'a>(s: &'a [f32], r: &std::ops::Range<usize>) -> &'a [f32] {
    if s.is_empty() {
        s
    } else {
        &s[r.clone()]
    }
}

fn apply_block(map: Map, out: &mut [f32], g: &[f32], o: &[f32], dy: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { apply_block_avx2(map, out, g, o, dy) };
        }
    }
    apply_block_portable(map, out, g, o, dy)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn apply_block_avx2(map: Map, out: &mut [f32], g: &[f32], o: &[f32], dy: &[f32]) {
    // The same loops, compiled for AVX2/FMA so that LLVM vectorises them 8 wide.
    apply_block_portable(map, out, g, o, dy)
}

#[inline(always)]
fn apply_block_portable(map: Map, out: &mut [f32], g: &[f32], o: &[f32], dy: &[f32]) {
    match map {
        Map::Forward => {
            for ((y, &g), &u) in out.iter_mut().zip(g).zip(o) {
                *y = g * sigmoid(g) * u;
            }
        }
        Map::GateGrad => {
            for (((d, &g), &u), &dy) in out.iter_mut().zip(g).zip(o).zip(dy) {
                let s = sigmoid(g);
                *d = dy * u * (s * (1.0 + g * (1.0 - s)));
            }
        }
        Map::UpGrad => {
            for ((d, &g), &dy) in out.iter_mut().zip(g).zip(dy) {
                *d = dy * g * sigmoid(g);
            }
        }
    }
}

/// `d/dgate = grad · up · silu'(gate)`, with `silu'(g) = s·(1 + g·(1 − s))` and
/// `s = sigmoid(g)`: both factors stay finite for any finite g.
pub fn swiglu_gate_grad(gate: &[f32], up: &[f32], grad: &[f32]) -> Vec<f32> {
    apply(Map::GateGrad, gate, up, grad)
}

/// `d/dup = grad · silu(gate)`.
pub fn swiglu_up_grad(gate: &[f32], grad: &[f32]) -> Vec<f32> {
    apply(Map::UpGrad, gate, &[], grad)
}

#[cfg(test)]
mod tests {
    use super::exp;

    #[test]
    fn polynomial_exp_is_within_a_few_ulp_of_libm() {
        let mut worst = 0.0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!((exp(-1e4), exp(1e4)), (0.0, f32::INFINITY));
    }
}
