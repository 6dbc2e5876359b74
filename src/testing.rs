//! Test support shared by the library's and the integration tests: one test body run on
//! every device, each device its own named test, so that a failure says where.

/// `device_tests! { fn name(device: Device) { body } }` makes a module `name` with one
/// test per device: `name::cpu`, `name::emulator` and, in a build with `--features cuda`,
/// `name::cuda` (CUDA device 0), ignored unless asked for: `cargo test --features cuda --
/// --include-ignored cuda` on a GPU machine (tools/gpu-check.sh does).
#[macro_export]
macro_rules! device_tests {
    ($(#[$meta:meta])* fn $name:ident($device:ident: Device) $body:block) => {
        $crate::gpu_tests! {
            $(#[$meta])*
            fn $name($device: Device) $body
            #[test]
            fn cpu() {
                run($crate::Device::Cpu)
            }
        }
    };
}

/// As [`device_tests!`], for the GPU devices only (the emulator, and CUDA device 0):
/// checks of what only a GPU does (bf16 arithmetic, kernel choice).
#[macro_export]
macro_rules! gpu_tests {
    ($(#[$meta:meta])* fn $name:ident($device:ident: Device) $body:block $($more:item)*) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($device: $crate::Device) $body

            $($more)*

            #[test]
            fn emulator() {
                run($crate::Device::Emulator)
            }

            #[cfg(feature = "cuda")]
            #[test]
            #[ignore = "needs a GPU: run with --include-ignored on a CUDA machine"]
            fn cuda() {
                run($crate::Device::Cuda(0))
            }
        }
    };
}

/// The largest difference between `got` and `want` over the largest |want| (at least 1):
/// the error measure of bf16 results, whose rounding scales with the largest value.
pub fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(1.0f32, |m, w| m.max(w.abs()));
    let mut worst = 0.0f32;
    for (g, w) in got.iter().zip(want) {
        let d = (g - w).abs();
        if d.is_nan() {
            return f32::INFINITY;
        }
        worst = worst.max(d);
    }
    worst / scale
}
