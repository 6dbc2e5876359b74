//! CPU primitives: f32 compute, rayon for parallel loops, GEMM through the `gemm` crate.

mod matmul;

pub use matmul::{matmul, Transpose};
