//! Device backends: the primitives ops are built from.

pub mod cpu;
