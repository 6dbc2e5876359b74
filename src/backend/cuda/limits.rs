//! The launch limits of the cards we ship for, checked by [`Gpu::launch`](super::Gpu::launch)
//! before anything runs. The emulator would run any shape, and a device reports a bad one
//! only as an opaque driver error, so both refuse it here with the kernel and the limit
//! named.
//!
//! Shared memory: a block gets 48 KB (static plus dynamic) unless its launcher opted in
//! with [`Gpu::allow_dynamic_shared`](super::Gpu::allow_dynamic_shared), and at most the
//! architecture's maximum with it ([`SHARED_OPT_IN`]; the emulator enforces the smallest).
//! Static shared memory and registers come from the driver on a device, and from ptxas'
//! report on the emulator when NVRTC is available ([`super::emulator`]).

use super::LaunchConfig;
use crate::{Error, Result};

/// Threads of a block along x, y and z.
pub const MAX_BLOCK: [u32; 3] = [1024, 1024, 64];
pub const MAX_THREADS_PER_BLOCK: u64 = 1024;
/// Blocks of a grid along x, y and z.
pub const MAX_GRID: [u32; 3] = [i32::MAX as u32, 65_535, 65_535];
/// Shared memory of a block whose kernel did not opt in to more.
pub const DEFAULT_SHARED_BYTES: usize = 49_152;
/// Registers of one SM, which a block's threads must fit in.
pub const REGISTERS_PER_BLOCK: u64 = 65_536;

/// Per architecture we build for (the list of `nvrtc::ARCHITECTURES`), the most shared
/// memory one block may use after opting in: A100 163 KB, H100 227 KB.
pub const SHARED_OPT_IN: &[(&str, usize)] = &[("sm_80", 166_912), ("sm_90", 232_448)];

/// The smallest opt-in maximum of the architectures we ship, and its architecture: what the
/// emulator enforces, so a launch it accepts runs on every one of them.
pub fn strictest_shared_opt_in() -> (&'static str, usize) {
    SHARED_OPT_IN
        .iter()
        .copied()
        .min_by_key(|&(_, bytes)| bytes)
        .expect("at least one architecture")
}

/// What the compiler gave a kernel, which bounds how it may be launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Bytes of the `__shared__` arrays declared in the kernel.
    pub static_shared: usize,
    pub registers: u32,
    /// Threads a block may have: the driver's CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK on a
    /// device (it counts `__launch_bounds__`), 1024 from ptxas' report.
    pub max_threads: u64,
}

/// Registers a block of `threads` threads takes: the hardware hands them out per warp, in
/// units of 256 (compute capability 8.x and 9.x).
pub fn registers_per_block(registers: u32, threads: u64) -> u64 {
    let per_warp = (registers as u64 * 32).div_ceil(256) * 256;
    threads.div_ceil(32) * per_warp
}

/// Fails, naming `kernel` and the limit, when `cfg` is a launch no card we ship runs:
/// `footprint` is the kernel's (None when unknown: then grid, block and dynamic shared
/// memory alone are checked), `opted_in` the dynamic shared bytes its launcher opted in to.
pub fn check(
    kernel: &str,
    cfg: &LaunchConfig,
    footprint: Option<&Footprint>,
    opted_in: Option<usize>,
) -> Result<()> {
    let fail = |why: String| Err(Error::Gpu(format!("launching {kernel}: {why}")));
    for (axis, (&g, &max)) in ["x", "y", "z"].iter().zip(cfg.grid.iter().zip(&MAX_GRID)) {
        if g == 0 || g > max {
            return fail(format!(
                "grid {axis} of {g} blocks (grid {:?}); a grid has 1 to {max} blocks along {axis}",
                cfg.grid
            ));
        }
    }
    for (axis, (&b, &max)) in ["x", "y", "z"].iter().zip(cfg.block.iter().zip(&MAX_BLOCK)) {
        if b == 0 || b > max {
            return fail(format!(
                "block {axis} of {b} threads (block {:?}); a block has 1 to {max} threads along {axis}",
                cfg.block
            ));
        }
    }
    let threads: u64 = cfg.block.iter().map(|&b| b as u64).product();
    if threads > MAX_THREADS_PER_BLOCK {
        return fail(format!(
            "{threads} threads a block (block {:?}), above the limit of {MAX_THREADS_PER_BLOCK}",
            cfg.block
        ));
    }
    let static_shared = footprint.map_or(0, |f| f.static_shared);
    if let Some(f) = footprint {
        if threads > f.max_threads {
            return fail(format!(
                "{threads} threads a block, above the {} this kernel can run a block with",
                f.max_threads
            ));
        }
        let needed = registers_per_block(f.registers, threads);
        if needed > REGISTERS_PER_BLOCK {
            return fail(format!(
                "{threads} threads of {} registers take {needed} registers a block, above the \
                 {REGISTERS_PER_BLOCK} registers of an SM",
                f.registers
            ));
        }
    }
    let dynamic = cfg.shared_bytes;
    match opted_in {
        None if static_shared + dynamic > DEFAULT_SHARED_BYTES => fail(format!(
            "{dynamic} bytes of dynamic and {static_shared} of static shared memory, above the \
             48 KB ({DEFAULT_SHARED_BYTES} bytes) a block has without an opt-in \
             (Gpu::allow_dynamic_shared)"
        )),
        Some(allowed) if dynamic > allowed => fail(format!(
            "{dynamic} bytes of dynamic shared memory, above the {allowed} bytes its \
             launcher opted in to (Gpu::allow_dynamic_shared)"
        )),
        _ => Ok(()),
    }
}

/// Fails unless `kernel`, with `static_shared` bytes of its own, may opt in to `dynamic`
/// bytes of dynamic shared memory on `arch`, whose blocks have at most `max` bytes.
pub fn check_opt_in(
    kernel: &str,
    dynamic: usize,
    static_shared: usize,
    (arch, max): (&str, usize),
) -> Result<()> {
    if static_shared + dynamic > max {
        return Err(Error::Gpu(format!(
            "{kernel}: {dynamic} bytes of dynamic and {static_shared} of static shared memory \
             are above the {max} bytes a block of {arch} may have, even with an opt-in"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(grid: [u32; 3], block: [u32; 3], shared_bytes: usize) -> LaunchConfig {
        LaunchConfig {
            grid,
            block,
            shared_bytes,
        }
    }

    fn refusal(c: LaunchConfig, footprint: Option<&Footprint>, opted: Option<usize>) -> String {
        check("k", &c, footprint, opted).unwrap_err().to_string()
    }

    #[test]
    fn every_largest_shape_passes_and_one_more_is_refused() {
        let ok = |c: LaunchConfig| check("k", &c, None, None).unwrap();
        ok(cfg([i32::MAX as u32, 65_535, 65_535], [1024, 1, 1], 0));
        ok(cfg([1, 1, 1], [1, 1024, 1], 0));
        ok(cfg([1, 1, 1], [16, 1, 64], DEFAULT_SHARED_BYTES));
        let e = refusal(cfg([1 << 31, 1, 1], [32, 1, 1], 0), None, None);
        assert!(
            e.contains("grid x of 2147483648") && e.contains("2147483647"),
            "{e}"
        );
        let e = refusal(cfg([1, 1, 65_536], [32, 1, 1], 0), None, None);
        assert!(e.contains("grid z of 65536") && e.contains("65535"), "{e}");
        let e = refusal(cfg([1, 1, 1], [1, 1, 65], 0), None, None);
        assert!(e.contains("block z of 65") && e.contains("1 to 64"), "{e}");
        let e = refusal(cfg([1, 1, 1], [32, 33, 1], 0), None, None);
        assert!(
            e.contains("1056 threads a block") && e.contains("1024"),
            "{e}"
        );
        let e = refusal(cfg([1, 0, 1], [32, 1, 1], 0), None, None);
        assert!(e.contains("grid y of 0"), "{e}");
    }

    #[test]
    fn static_shared_memory_counts_against_the_48_kb() {
        let f = Footprint {
            static_shared: 16_384,
            registers: 32,
            max_threads: 1024,
        };
        let at_limit = cfg([1, 1, 1], [128, 1, 1], DEFAULT_SHARED_BYTES - 16_384);
        check("k", &at_limit, Some(&f), None).unwrap();
        let over = LaunchConfig {
            shared_bytes: at_limit.shared_bytes + 1,
            ..at_limit
        };
        let e = refusal(over, Some(&f), None);
        assert!(
            e.contains("32769 bytes of dynamic and 16384 of static"),
            "{e}"
        );
        check("k", &over, Some(&f), Some(over.shared_bytes)).unwrap();
        let e = refusal(over, Some(&f), Some(over.shared_bytes - 1));
        assert!(e.contains("opted in to"), "{e}");
    }

    #[test]
    fn registers_are_counted_per_warp_in_units_of_256() {
        assert_eq!(registers_per_block(64, 1024), 65_536);
        // 85 registers round up to 88 a thread: 768 threads need 67,584 registers, not 65,280.
        assert_eq!(registers_per_block(85, 768), 67_584);
        // A partial warp takes a whole warp's registers.
        assert_eq!(registers_per_block(32, 33), 2 * 32 * 32);
        let f = Footprint {
            static_shared: 0,
            registers: 85,
            max_threads: 1024,
        };
        let e = refusal(cfg([1, 1, 1], [768, 1, 1], 0), Some(&f), None);
        assert!(
            e.contains("67584 registers a block") && e.contains("65536"),
            "{e}"
        );
        check("k", &cfg([1, 1, 1], [736, 1, 1], 0), Some(&f), None).unwrap();
        let bounded = Footprint {
            max_threads: 256,
            ..f
        };
        let e = refusal(cfg([1, 1, 1], [512, 1, 1], 0), Some(&bounded), None);
        assert!(e.contains("above the 256 this kernel"), "{e}");
    }

    #[test]
    fn the_emulator_enforces_the_smallest_opt_in_maximum() {
        assert_eq!(strictest_shared_opt_in(), ("sm_80", 166_912));
        check_opt_in("k", 166_912, 0, strictest_shared_opt_in()).unwrap();
        let e = check_opt_in("k", 166_913, 0, strictest_shared_opt_in())
            .unwrap_err()
            .to_string();
        assert!(e.contains("166912 bytes a block of sm_80"), "{e}");
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn every_architecture_we_build_for_has_its_shared_memory_maximum() {
        let listed: Vec<&str> = SHARED_OPT_IN.iter().map(|&(arch, _)| arch).collect();
        assert_eq!(listed, super::super::nvrtc::ARCHITECTURES);
    }
}

/// The limits as the emulator's launcher enforces them, through real launches.
#[cfg(test)]
mod launch_tests {
    use super::*;
    #[cfg(feature = "cuda")]
    use crate::backend::cuda::emulator;
    use crate::backend::cuda::{Gpu, GpuBuffer, KernelArg};

    /// rmsnorm_dw_reduce's arguments for d = 4 columns of one block's partials (it ignores
    /// dynamic shared memory, so any amount may be given to it).
    fn reduce_args(dw: &mut GpuBuffer<f32>, partial: &GpuBuffer<f32>) -> [KernelArg; 5] {
        [
            KernelArg::output(dw),
            KernelArg::input(partial),
            KernelArg::I32(1),
            KernelArg::I32(4),
            KernelArg::I32(0),
        ]
    }

    fn refused(gpu: &Gpu, cfg: LaunchConfig) -> String {
        // SAFETY: every launch given here is refused before anything runs.
        let err = unsafe { gpu.launch("rmsnorm_dw_reduce", cfg, &[]) }.unwrap_err();
        let message = err.to_string();
        assert!(message.contains("rmsnorm_dw_reduce"), "{message}");
        message
    }

    #[test]
    fn a_block_of_more_than_1024_threads_is_refused() {
        let gpu = Gpu::emulated().unwrap();
        let e = refused(&gpu, LaunchConfig::linear(1, 2048, 0));
        assert!(
            e.contains("block x of 2048") && e.contains("1 to 1024"),
            "{e}"
        );
        let e = refused(
            &gpu,
            LaunchConfig {
                block: [32, 32, 2],
                ..LaunchConfig::linear(1, 1, 0)
            },
        );
        assert!(
            e.contains("2048 threads a block") && e.contains("limit of 1024"),
            "{e}"
        );
    }

    #[test]
    fn a_grid_y_of_65536_blocks_is_refused() {
        let gpu = Gpu::emulated().unwrap();
        let cfg = LaunchConfig {
            grid: [1, 65_536, 1],
            ..LaunchConfig::linear(1, 32, 0)
        };
        let e = refused(&gpu, cfg);
        assert!(
            e.contains("grid y of 65536") && e.contains("1 to 65535"),
            "{e}"
        );
    }

    #[test]
    fn dynamic_shared_memory_of_48_kb_and_one_byte_is_refused_without_opt_in_and_runs_with() {
        let gpu = Gpu::emulated().unwrap();
        let partial = gpu.upload(&[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let mut dw = gpu.zeros::<f32>(4).unwrap();
        let cfg = LaunchConfig::linear(1, 32, DEFAULT_SHARED_BYTES);
        // SAFETY: the arguments match rmsnorm_dw_reduce's; partial and dw hold 4 floats.
        unsafe { gpu.launch("rmsnorm_dw_reduce", cfg, &reduce_args(&mut dw, &partial)) }.unwrap();
        let over = LaunchConfig::linear(1, 32, DEFAULT_SHARED_BYTES + 1);
        let e = refused(&gpu, over);
        assert!(
            e.contains("49153 bytes of dynamic") && e.contains("49152 bytes"),
            "{e}"
        );
        assert!(e.contains("allow_dynamic_shared"), "{e}");
        // An opt-in the 48 KB already cover changes nothing.
        gpu.allow_dynamic_shared("rmsnorm_dw_reduce", 1024).unwrap();
        refused(&gpu, over);
        gpu.allow_dynamic_shared("rmsnorm_dw_reduce", DEFAULT_SHARED_BYTES + 1)
            .unwrap();
        let mut dw = gpu.zeros::<f32>(4).unwrap();
        // SAFETY: as above.
        unsafe { gpu.launch("rmsnorm_dw_reduce", over, &reduce_args(&mut dw, &partial)) }.unwrap();
        assert_eq!(gpu.download(&dw).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        // The opt-in is the launcher's, on this GPU: another kernel, another GPU have none.
        // SAFETY: refused before anything runs.
        let e = unsafe { gpu.launch("rmsnorm_forward_f32", over, &[]) }.unwrap_err();
        assert!(e.to_string().contains("without an opt-in"), "{e}");
        refused(&Gpu::emulated().unwrap(), over);
    }

    #[test]
    fn shared_memory_above_the_architecture_maximum_is_refused_even_with_opt_in() {
        let gpu = Gpu::emulated().unwrap();
        let (arch, max) = strictest_shared_opt_in();
        let e = gpu
            .allow_dynamic_shared("rmsnorm_dw_reduce", max + 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rmsnorm_dw_reduce")
                && e.contains(&format!("{max} bytes a block of {arch}")),
            "{e}"
        );
        gpu.allow_dynamic_shared("rmsnorm_dw_reduce", max).unwrap();
        let e = refused(&gpu, LaunchConfig::linear(1, 32, max + 1));
        assert!(
            e.contains(&format!("above the {max} bytes its launcher opted in to")),
            "{e}"
        );
    }

    #[cfg(feature = "cuda")]
    /// The ptxas table, or None (skipping) without NVRTC unless SCOTD_REQUIRE_NVRTC is set.
    fn ptxas_table() -> Option<&'static std::collections::HashMap<String, Footprint>> {
        let table = emulator::footprints().unwrap();
        if table.is_none() {
            assert!(
                std::env::var_os("SCOTD_REQUIRE_NVRTC").is_none(),
                "libnvrtc is not on the library path: run eval \"$(tools/fetch-nvrtc.sh --print-env)\""
            );
            eprintln!("skipped: libnvrtc not found (tools/fetch-nvrtc.sh)");
        }
        table
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn registers_times_threads_above_65536_are_refused_with_ptxas_registers() {
        let Some(table) = ptxas_table() else { return };
        let (kernel, footprint) = table
            .iter()
            .max_by_key(|(name, f)| (f.registers, name.as_str()))
            .unwrap();
        // Only a kernel of more than 64 registers can overflow a block of 1024 threads.
        assert!(footprint.registers > 64, "{kernel}: {footprint:?}");
        let per_warp = registers_per_block(footprint.registers, 32);
        let warps = (REGISTERS_PER_BLOCK / per_warp + 1) as u32;
        let gpu = Gpu::emulated().unwrap();
        let fits = LaunchConfig::linear(1, 32 * (warps - 1), 0);
        gpu.check_launch(kernel, &fits).unwrap();
        let cfg = LaunchConfig::linear(1, 32 * warps, 0);
        // SAFETY: refused before anything runs.
        let e = unsafe { gpu.launch(kernel, cfg, &[]) }
            .unwrap_err()
            .to_string();
        let want = format!(
            "{} threads of {} registers",
            32 * warps,
            footprint.registers
        );
        assert!(
            e.contains(kernel.as_str()) && e.contains(&want) && e.contains("65536"),
            "{e}"
        );
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn static_shared_memory_from_ptxas_counts_against_the_48_kb() {
        let Some(table) = ptxas_table() else { return };
        let (kernel, footprint) = table
            .iter()
            .max_by_key(|(name, f)| (f.static_shared, name.as_str()))
            .unwrap();
        assert!(footprint.static_shared > 0, "{kernel}: {footprint:?}");
        let gpu = Gpu::emulated().unwrap();
        let room = DEFAULT_SHARED_BYTES - footprint.static_shared;
        gpu.check_launch(kernel, &LaunchConfig::linear(1, 32, room))
            .unwrap();
        let e = gpu
            .check_launch(kernel, &LaunchConfig::linear(1, 32, room + 1))
            .unwrap_err()
            .to_string();
        let want = format!("{} of static shared memory", footprint.static_shared);
        assert!(e.contains(kernel.as_str()) && e.contains(&want), "{e}");
    }
}
