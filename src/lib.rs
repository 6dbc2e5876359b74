//! scotd: a from-scratch tensor and autograd engine for the Qwen2/Llama architecture,
//! with a reasoning-distillation pipeline on top. See README.md and DESIGN.md.

pub mod autograd;
pub mod backend;
pub mod bench;
pub mod data;
pub mod demo;
pub mod error;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod io;
pub mod model;
pub mod ops;
pub mod optim;
pub mod probe;
pub mod rng;
pub mod sample;
pub mod tensor;
#[doc(hidden)]
pub mod testing;
pub mod tokenizer;
pub mod train;
pub mod verify;

pub use error::{Error, Result};
pub use tensor::{DType, Device, Shape, Tensor};
