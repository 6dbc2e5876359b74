//! CPU primitives: f32 compute, rayon for parallel loops, GEMM through the `gemm` crate,
//! and a small-m GEMM over stored (f32 or bf16) weights for decoding.

mod matmul;
mod skinny;

pub use matmul::{matmul, Transpose};
pub use skinny::{
    skinny_matmul, skinny_matmuls, skinny_matmuls_with, Element, Kernel, SkinnyProduct, WeightRows,
};
