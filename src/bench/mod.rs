//! Benchmarks of the library's whole paths on a device, with random weights of a real
//! model's shape (no download): `generate` is `scotd bench generate`. The training
//! step's benchmark is [`crate::train::bench`], the kernels' [`crate::backend::cuda::bench`].

pub mod generate;
