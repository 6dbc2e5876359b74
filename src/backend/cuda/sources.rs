//! The kernel sources, embedded in the binary so that a GPU machine needs nothing but the
//! binary: NVRTC compiles them there, and the emulator compiles them here.

/// (path under kernels/, text) of every file: the shared headers, the emulator's files,
/// then one file per op family.
pub const SOURCES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../../../kernels/common.cuh")),
    (
        "elementwise.cuh",
        include_str!("../../../kernels/elementwise.cuh"),
    ),
    (
        "emu/cuda_emu.h",
        include_str!("../../../kernels/emu/cuda_emu.h"),
    ),
    (
        "emu/runtime.cpp",
        include_str!("../../../kernels/emu/runtime.cpp"),
    ),
    (
        "emu/selftest.cpp",
        include_str!("../../../kernels/emu/selftest.cpp"),
    ),
    ("mma.cuh", include_str!("../../../kernels/mma.cuh")),
    (
        "attention.cu",
        include_str!("../../../kernels/attention.cu"),
    ),
    (
        "paged_attention.cu",
        include_str!("../../../kernels/paged_attention.cu"),
    ),
    (
        "flash_attention.cu",
        include_str!("../../../kernels/flash_attention.cu"),
    ),
    (
        "cross_entropy.cu",
        include_str!("../../../kernels/cross_entropy.cu"),
    ),
    (
        "embedding.cu",
        include_str!("../../../kernels/embedding.cu"),
    ),
    ("rmsnorm.cu", include_str!("../../../kernels/rmsnorm.cu")),
    ("rope.cu", include_str!("../../../kernels/rope.cu")),
    ("add.cu", include_str!("../../../kernels/add.cu")),
    ("swiglu.cu", include_str!("../../../kernels/swiglu.cu")),
    ("cast.cu", include_str!("../../../kernels/cast.cu")),
    (
        "grad_norm.cu",
        include_str!("../../../kernels/grad_norm.cu"),
    ),
    ("adamw.cu", include_str!("../../../kernels/adamw.cu")),
    ("scale.cu", include_str!("../../../kernels/scale.cu")),
    ("sampling.cu", include_str!("../../../kernels/sampling.cu")),
];

/// The kernel files (`.cu`), each one compilation unit.
pub fn kernel_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    SOURCES
        .iter()
        .copied()
        .filter(|(name, _)| name.ends_with(".cu"))
}

/// A stable fingerprint of every source, naming the compiled cache entry.
pub fn fingerprint(extra: &str) -> String {
    let bytes = SOURCES
        .iter()
        .flat_map(|(name, text)| name.bytes().chain(text.bytes()))
        .chain(extra.bytes());
    let h = crate::rng::fnv1a(bytes);
    format!("{h:016x}")
}
