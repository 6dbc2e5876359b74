//! Device backends: the primitives ops are built from.

pub mod cpu;
pub mod cuda;
