//! The GPU backend: our CUDA kernels (kernels/*.cu) behind one launcher interface with two
//! implementations, so that an op's launcher code is the same for both:
//!
//! - [`Gpu::emulated`]: the CPU emulator. The same sources are compiled as C++ against
//!   kernels/emu/cuda_emu.h (blocks, threads as fibers, shared memory, `__syncthreads`,
//!   warp shuffles, atomics) and run on the CPU. Slow, exact to the CUDA execution model
//!   the kernels rely on, and available everywhere: CI runs every kernel this way.
//! - The CUDA device (feature `cuda`): NVRTC compiles the sources for the device's
//!   architecture at first use; launches go through the driver API.
//!
//! Memory is a [`GpuBuffer`]; host memory in the emulator, device memory on a GPU.

pub mod cast;
mod emulator;
#[cfg(feature = "cuda")]
pub mod nvrtc;
pub mod sources;

use bytemuck::Pod;

use crate::{Error, Result};

/// Grid and block sizes and dynamic shared memory bytes of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: usize,
}

impl LaunchConfig {
    /// A one-dimensional launch.
    pub fn linear(grid: u32, block: u32, shared_bytes: usize) -> Self {
        LaunchConfig {
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            shared_bytes,
        }
    }

    /// A grid-stride elementwise kernel over `n` elements taken `per_thread` at a time
    /// (kernels/elementwise.cuh): 256 threads a block, enough blocks for one pass (one
    /// pack a thread), at most [`MAX_ELEMENTWISE_BLOCKS`] (the threads loop over the
    /// rest), at least one.
    pub fn elementwise(n: usize, per_thread: usize) -> Self {
        let threads = n.div_ceil(per_thread.max(1));
        let blocks = threads.div_ceil(ELEMENTWISE_THREADS as usize);
        LaunchConfig::linear(
            blocks.clamp(1, MAX_ELEMENTWISE_BLOCKS) as u32,
            ELEMENTWISE_THREADS,
            0,
        )
    }
}

/// Threads a block of an elementwise kernel.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Blocks an elementwise kernel launches at most. Not one wave sized to the GPU: how many
/// blocks an SM holds depends on each kernel's registers (8 of 256 threads at 32, 6 at 40),
/// and a grid a little over one wave takes two; tens of thousands of short blocks (the
/// MLP's 79.7M elements are 39K blocks of 8-element packs) leave the last wave a small
/// share whatever the occupancy.
pub const MAX_ELEMENTWISE_BLOCKS: usize = 65535;

/// One kernel argument, as the kernel's parameter list has it.
#[derive(Clone, Copy, Debug)]
pub enum KernelArg {
    /// A device address (a pointer parameter).
    Ptr(u64),
    I32(i32),
    F32(f32),
}

impl KernelArg {
    /// A pointer the kernel only reads.
    pub fn input<T: Pod>(buffer: &GpuBuffer<T>) -> Self {
        KernelArg::Ptr(buffer.address())
    }

    /// A pointer the kernel writes through.
    pub fn output<T: Pod>(buffer: &mut GpuBuffer<T>) -> Self {
        KernelArg::Ptr(buffer.address_mut())
    }

    /// A size or index parameter (`int`); fails when it does not fit.
    pub fn int(value: usize) -> Result<Self> {
        i32::try_from(value)
            .map(KernelArg::I32)
            .map_err(|_| Error::Gpu(format!("{value} does not fit a kernel's int parameter")))
    }
}

/// Elements of type `T` in GPU memory.
pub struct GpuBuffer<T: Pod> {
    data: Vec<T>,
}

impl<T: Pod> GpuBuffer<T> {
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn address(&self) -> u64 {
        self.data.as_ptr() as u64
    }

    fn address_mut(&mut self) -> u64 {
        self.data.as_mut_ptr() as u64
    }
}

/// A GPU to run kernels on.
pub struct Gpu {
    emulator: &'static emulator::Emulator,
}

impl Gpu {
    /// The CPU emulator; compiles the kernels on first use in a process (cached on disk).
    pub fn emulated() -> Result<Gpu> {
        Ok(Gpu {
            emulator: emulator::Emulator::get()?,
        })
    }

    pub fn upload<T: Pod>(&self, data: &[T]) -> Result<GpuBuffer<T>> {
        Ok(GpuBuffer {
            data: data.to_vec(),
        })
    }

    pub fn zeros<T: Pod>(&self, len: usize) -> Result<GpuBuffer<T>> {
        Ok(GpuBuffer {
            data: vec![T::zeroed(); len],
        })
    }

    pub fn download<T: Pod>(&self, buffer: &GpuBuffer<T>) -> Result<Vec<T>> {
        Ok(buffer.data.clone())
    }

    /// Launches `kernel` (its extern "C" name).
    ///
    /// # Safety
    /// `args` must match the kernel's parameters in number and type, and every pointer
    /// must address a live buffer of this GPU, as large as the kernel will index.
    pub unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
        check_launch(kernel, &cfg)?;
        self.emulator.launch(kernel, cfg, args)
    }
}

fn check_launch(kernel: &str, cfg: &LaunchConfig) -> Result<()> {
    let threads: u64 = cfg.block.iter().map(|&b| b as u64).product();
    if cfg.grid.contains(&0) || threads == 0 || threads > 1024 {
        return Err(Error::Gpu(format!(
            "{kernel}: bad launch shape, grid {:?} block {:?} (1 to 1024 threads a block)",
            cfg.grid, cfg.block
        )));
    }
    Ok(())
}

/// A storage type kernels are instantiated for; `SUFFIX` ends the kernel's name
/// (`rmsnorm_forward_bf16`).
pub trait GpuFloat: Pod {
    const SUFFIX: &'static str;
}

impl GpuFloat for f32 {
    const SUFFIX: &'static str = "f32";
}

impl GpuFloat for half::bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// Fails unless `buffer` holds exactly `len` elements.
pub fn expect_len<T: Pod>(
    op: &'static str,
    what: &str,
    buffer: &GpuBuffer<T>,
    len: usize,
) -> Result<()> {
    if buffer.len() != len {
        return Err(Error::shape(
            op,
            format!("{what} holds {} elements, expected {len}", buffer.len()),
        ));
    }
    Ok(())
}
