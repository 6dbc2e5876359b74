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
//!
//! Both refuse, before it runs, a launch that a card we ship would not run ([`limits`]),
//! and both record every launch in the kernel profile ([`profile`]).

pub mod bench;
pub mod cast;
#[cfg(feature = "cuda")]
mod device;
mod emulator;
pub mod limits;
#[cfg(feature = "cuda")]
pub mod nvrtc;
pub mod profile;
pub mod sources;

use std::collections::HashMap;
use std::sync::Mutex;

use bytemuck::Pod;

use super::cpu::{matmul, Transpose};
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
    /// A pointer the kernel only reads: a buffer, or a view of part of one.
    pub fn input<'a, T: Pod + 'a>(source: impl Into<GpuView<'a, T>>) -> Self {
        KernelArg::Ptr(source.into().address())
    }

    /// A pointer the kernel writes through: a buffer, or a view of part of one.
    pub fn output<'a, T: Pod + 'a>(target: impl Into<GpuViewMut<'a, T>>) -> Self {
        KernelArg::Ptr(target.into().address_mut())
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
    memory: Memory<T>,
}

enum Memory<T> {
    /// The emulator's memory is the host's.
    Host(Vec<T>),
    #[cfg(feature = "cuda")]
    Device {
        slice: cudarc::driver::CudaSlice<u8>,
        address: u64,
        len: usize,
    },
}

impl<T: Pod> std::fmt::Debug for GpuBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuBuffer<{}>[{}]",
            std::any::type_name::<T>(),
            self.len()
        )
    }
}

impl<T: Pod> GpuBuffer<T> {
    pub fn len(&self) -> usize {
        match &self.memory {
            Memory::Host(data) => data.len(),
            #[cfg(feature = "cuda")]
            Memory::Device { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn address(&self) -> u64 {
        match &self.memory {
            Memory::Host(data) => data.as_ptr() as u64,
            #[cfg(feature = "cuda")]
            Memory::Device { address, .. } => *address,
        }
    }

    fn address_mut(&mut self) -> u64 {
        match &mut self.memory {
            Memory::Host(data) => data.as_mut_ptr() as u64,
            #[cfg(feature = "cuda")]
            Memory::Device { address, .. } => *address,
        }
    }
}

/// A GPU to run kernels on: the emulator or a CUDA device.
pub struct Gpu {
    backend: Backend,
    /// Dynamic shared bytes each kernel's launcher opted in to (allow_dynamic_shared).
    shared_opt_in: Mutex<HashMap<String, usize>>,
}

enum Backend {
    /// `schedule` 0 runs each block's threads in thread order; any other value in an order
    /// drawn from it (Gpu::emulated_shuffled).
    Emulated {
        emulator: &'static emulator::Emulator,
        schedule: u64,
    },
    #[cfg(feature = "cuda")]
    Cuda(device::CudaGpu),
}

impl Gpu {
    fn new(backend: Backend) -> Gpu {
        Gpu {
            backend,
            shared_opt_in: Mutex::new(HashMap::new()),
        }
    }

    /// The CPU emulator; compiles the kernels on first use in a process (cached on disk).
    pub fn emulated() -> Result<Gpu> {
        Gpu::emulated_shuffled(0)
    }

    /// The CPU emulator, running each block's ready threads in an order drawn from
    /// `schedule` at every step instead of in thread order (0: thread order). CUDA promises
    /// no order between barriers, so a kernel whose result depends on it (float atomics
    /// racing, a missing `__syncthreads`) gives different bits under different schedules,
    /// as it would from run to run on a device.
    pub fn emulated_shuffled(schedule: u64) -> Result<Gpu> {
        Ok(Gpu::new(Backend::Emulated {
            emulator: emulator::Emulator::get()?,
            schedule,
        }))
    }

    /// CUDA device `ordinal`: an error (not a panic) without a driver or a device.
    #[cfg(feature = "cuda")]
    pub fn cuda(ordinal: usize) -> Result<Gpu> {
        Ok(Gpu::new(Backend::Cuda(device::CudaGpu::new(ordinal)?)))
    }

    /// What this GPU is, for reports: "CPU emulator" (with its schedule when shuffled) or
    /// the device's name and architecture.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Emulated { schedule: 0, .. } => "CPU emulator".to_string(),
            Backend::Emulated { schedule, .. } => format!("CPU emulator (schedule {schedule})"),
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => format!("{} ({})", d.name, d.arch),
        }
    }

    pub fn upload<T: Pod>(&self, data: &[T]) -> Result<GpuBuffer<T>> {
        let memory = match &self.backend {
            Backend::Emulated { .. } => Memory::Host(data.to_vec()),
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => {
                let (slice, address) = d.upload(bytemuck::cast_slice(data))?;
                Memory::Device {
                    slice,
                    address,
                    len: data.len(),
                }
            }
        };
        Ok(GpuBuffer { memory })
    }

    /// `len` elements for a kernel to write every one of before anything reads them: on
    /// a device, memory as the pool hands it out (no memset pass); on the emulator, every
    /// byte 0xFF (a NaN in the float types, -1 in the integers), so a test sees an element
    /// that was never written.
    pub fn alloc<T: Pod>(&self, len: usize) -> Result<GpuBuffer<T>> {
        let memory = match &self.backend {
            Backend::Emulated { .. } => {
                let mut data = vec![T::zeroed(); len];
                bytemuck::cast_slice_mut::<T, u8>(&mut data).fill(0xFF);
                Memory::Host(data)
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => {
                let (slice, address) = d.alloc(len * std::mem::size_of::<T>())?;
                Memory::Device {
                    slice,
                    address,
                    len,
                }
            }
        };
        Ok(GpuBuffer { memory })
    }

    pub fn zeros<T: Pod>(&self, len: usize) -> Result<GpuBuffer<T>> {
        let memory = match &self.backend {
            Backend::Emulated { .. } => Memory::Host(vec![T::zeroed(); len]),
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => {
                let (slice, address) = d.zeros(len * std::mem::size_of::<T>())?;
                Memory::Device {
                    slice,
                    address,
                    len,
                }
            }
        };
        Ok(GpuBuffer { memory })
    }

    /// The buffer's contents (waits for the kernels writing it).
    pub fn download<T: Pod>(&self, buffer: &GpuBuffer<T>) -> Result<Vec<T>> {
        match (&self.backend, &buffer.memory) {
            (Backend::Emulated { .. }, Memory::Host(data)) => Ok(data.clone()),
            #[cfg(feature = "cuda")]
            (Backend::Cuda(d), Memory::Device { slice, len, .. }) => {
                let bytes = d.download(slice, len * std::mem::size_of::<T>())?;
                Ok(bytemuck::pod_collect_to_vec(&bytes))
            }
            #[cfg(feature = "cuda")]
            _ => Err(Error::Gpu("the buffer belongs to another GPU".into())),
        }
    }

    /// A view's elements (waits for the kernels writing them).
    pub fn download_view<'a, T: Pod + 'a>(
        &self,
        view: impl Into<GpuView<'a, T>>,
    ) -> Result<Vec<T>> {
        let view = view.into();
        match (&self.backend, &view.buffer.memory) {
            (Backend::Emulated { .. }, Memory::Host(data)) => {
                Ok(data[view.offset..view.offset + view.len].to_vec())
            }
            #[cfg(feature = "cuda")]
            (Backend::Cuda(d), Memory::Device { .. }) => {
                let bytes =
                    d.download_range(view.address(), view.len * std::mem::size_of::<T>())?;
                Ok(bytemuck::pod_collect_to_vec(&bytes))
            }
            #[cfg(feature = "cuda")]
            _ => Err(Error::Gpu("the buffer belongs to another GPU".into())),
        }
    }

    /// Copies `source` into `target` (of the same length), in stream order.
    pub fn copy<'t, 's, T: Pod + 't + 's>(
        &self,
        target: impl Into<GpuViewMut<'t, T>>,
        source: impl Into<GpuView<'s, T>>,
    ) -> Result<()> {
        #[allow(unused_mut)] // mutated only by the emulator arm
        let (mut target, source) = (target.into(), source.into());
        expect_len("copy", "the source", &source, target.len)?;
        match &self.backend {
            Backend::Emulated { .. } => {
                let from: Vec<T> = self.download_view(source)?;
                host_mut(target)?.copy_from_slice(&from);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => d.copy_bytes(
                target.address(),
                source.address(),
                source.len * std::mem::size_of::<T>(),
            ),
        }
    }

    /// A new buffer holding a copy of `source`'s elements.
    pub fn copy_of<'s, T: Pod + 's>(
        &self,
        source: impl Into<GpuView<'s, T>>,
    ) -> Result<GpuBuffer<T>> {
        let source = source.into();
        let mut out = self.alloc::<T>(source.len)?;
        self.copy(&mut out, source)?;
        Ok(out)
    }

    /// Writes host `data` into `target` (of the same length).
    pub fn upload_into<'t, T: Pod + 't>(
        &self,
        target: impl Into<GpuViewMut<'t, T>>,
        data: &[T],
    ) -> Result<()> {
        #[allow(unused_mut)] // mutated only by the emulator arm
        let mut target = target.into();
        if data.len() != target.len {
            return Err(Error::shape(
                "upload_into",
                format!("{} elements for a view of {}", data.len(), target.len),
            ));
        }
        match &self.backend {
            Backend::Emulated { .. } => {
                host_mut(target)?.copy_from_slice(data);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => d.upload_to(target.address(), bytemuck::cast_slice(data)),
        }
    }

    /// Sets every element of `target` to zero (bit pattern 0: 0.0 for the float types).
    pub fn fill_zero<'a, T: Pod + 'a>(&self, target: impl Into<GpuViewMut<'a, T>>) -> Result<()> {
        #[allow(unused_mut)] // mutated only by the CUDA arm
        let mut view = target.into();
        match &self.backend {
            Backend::Emulated { .. } => {
                host_mut(view)?.fill(T::zeroed());
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => {
                d.zero_bytes(view.address_mut(), view.len * std::mem::size_of::<T>())
            }
        }
    }

    /// Peak bytes of device memory in use since [`reset_peak_memory`](Self::reset_peak_memory)
    /// (the driver pool's high-water mark); `None` on the emulator.
    pub fn peak_memory(&self) -> Option<u64> {
        match &self.backend {
            Backend::Emulated { .. } => None,
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => d.peak_memory(),
        }
    }

    /// Free and total bytes of device memory as the driver counts them (blocks the memory
    /// pool keeps for reuse count as used); `None` on the emulator.
    pub fn memory_info(&self) -> Result<Option<(u64, u64)>> {
        match &self.backend {
            Backend::Emulated { .. } => Ok(None),
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => d.memory_info().map(Some),
        }
    }

    pub fn reset_peak_memory(&self) -> Result<()> {
        match &self.backend {
            Backend::Emulated { .. } => Ok(()),
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => d.reset_peak_memory(),
        }
    }

    /// Waits for every kernel launched so far.
    pub fn synchronize(&self) -> Result<()> {
        match &self.backend {
            Backend::Emulated { .. } => Ok(()),
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => d.synchronize(),
        }
    }

    /// Milliseconds each of `runs` calls of `work` took on the GPU: CUDA events around each
    /// call on a device, wall time in the emulator.
    pub fn time_ms(&self, runs: usize, mut work: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
        match &self.backend {
            Backend::Emulated { .. } => (0..runs)
                .map(|_| {
                    let start = std::time::Instant::now();
                    work()?;
                    Ok(start.elapsed().as_secs_f64() * 1e3)
                })
                .collect(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => d.time_ms(runs, work),
        }
    }

    /// Launches `kernel` (its extern "C" name).
    ///
    /// # Safety
    /// `args` must match the kernel's parameters in number and type, and every pointer
    /// must address a live buffer of this GPU, as large as the kernel will index.
    pub unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
        self.check_launch(kernel, &cfg)?;
        self.profiled(
            || kernel.to_string(),
            || match &self.backend {
                Backend::Emulated { emulator, schedule } => {
                    emulator.launch(kernel, cfg, args, *schedule)
                }
                #[cfg(feature = "cuda")]
                Backend::Cuda(d) => d.launch(kernel, cfg, args),
            },
        )
    }

    /// Fails, naming the kernel and the limit, when `cfg` is a launch of `kernel` that a
    /// card we ship would refuse ([`limits`]): what [`launch`](Self::launch) checks first.
    /// Registers and static shared memory are the driver's on a device, ptxas' (the most of
    /// every architecture we ship) on the emulator when NVRTC is available, unchecked
    /// without.
    pub fn check_launch(&self, kernel: &str, cfg: &LaunchConfig) -> Result<()> {
        let footprint = self.footprint(kernel)?;
        let static_shared = footprint.map_or(0, |f| f.static_shared);
        let opted_in = if static_shared + cfg.shared_bytes > limits::DEFAULT_SHARED_BYTES {
            self.opted_in(kernel)
        } else {
            None
        };
        limits::check(kernel, cfg, footprint.as_ref(), opted_in)
    }

    /// Lets launches of `kernel` use up to `bytes` of dynamic shared memory, past the 48 KB
    /// (static and dynamic together) a block has by default: on a device, sets the kernel's
    /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; on the emulator, records it for
    /// the launch check. Does nothing when the 48 KB suffice, so a launcher may call it
    /// before every launch of a size only known then; a later call with fewer bytes keeps
    /// the larger allowance. Fails above the architecture's maximum (on the emulator, the
    /// smallest of the architectures we ship).
    pub fn allow_dynamic_shared(&self, kernel: &str, bytes: usize) -> Result<()> {
        let static_shared = self.footprint(kernel)?.map_or(0, |f| f.static_shared);
        if static_shared + bytes <= limits::DEFAULT_SHARED_BYTES {
            return Ok(());
        }
        let maximum = match &self.backend {
            Backend::Emulated { .. } => limits::strictest_shared_opt_in(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => (d.arch.as_str(), d.max_shared_opt_in),
        };
        limits::check_opt_in(kernel, bytes, static_shared, maximum)?;
        let mut opted = self.shared_opt_in.lock().expect("opt-in table lock");
        if opted.get(kernel).is_some_and(|&b| b >= bytes) {
            return Ok(());
        }
        #[cfg(feature = "cuda")]
        if let Backend::Cuda(d) = &self.backend {
            d.allow_dynamic_shared(kernel, bytes)?;
        }
        opted.insert(kernel.to_string(), bytes);
        Ok(())
    }

    fn opted_in(&self, kernel: &str) -> Option<usize> {
        let opted = self.shared_opt_in.lock().expect("opt-in table lock");
        opted.get(kernel).copied()
    }

    /// The kernel's registers and static shared memory, when known.
    fn footprint(&self, kernel: &str) -> Result<Option<limits::Footprint>> {
        match &self.backend {
            Backend::Emulated { .. } => emulator::footprint(kernel),
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => d.footprint(kernel).map(Some),
        }
    }

    /// Runs `work` (one launch) and records it under `name()` in the profile, timed
    /// between events when the process-wide profile is on and this is a device.
    fn profiled(
        &self,
        name: impl FnOnce() -> String,
        work: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if !profile::recording() {
            return work();
        }
        let timing = match &self.backend {
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) if profile::is_enabled() => Some(d.timed(work)?),
            _ => {
                work()?;
                None
            }
        };
        profile::record(&name(), || self.describe(), timing);
        Ok(())
    }

    /// `c = op(a) op(b)` (`c +=` when `accumulate`), row-major, `op(a)` m x k and `op(b)`
    /// k x n: cuBLAS with f32 accumulation on a device, the CPU GEMM in the emulator. The
    /// inputs share a type; `c` may be wider (bf16 inputs, f32 gradient). Operands are
    /// whole buffers or views of a range of one.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm<'c, 'a, 'b, T: GpuFloat + 'a + 'b, C: GpuFloat + 'c>(
        &self,
        c: impl Into<GpuViewMut<'c, C>>,
        a: impl Into<GpuView<'a, T>>,
        transpose_a: bool,
        b: impl Into<GpuView<'b, T>>,
        transpose_b: bool,
        (m, n, k): (usize, usize, usize),
        accumulate: bool,
    ) -> Result<()> {
        let (c, a, b) = (c.into(), a.into(), b.into());
        for (name, len, want) in [
            ("a", a.len, m * k),
            ("b", b.len, k * n),
            ("c", c.len, m * n),
        ] {
            if len != want {
                return Err(Error::shape(
                    "gemm",
                    format!("{name} holds {len} elements, expected {want}"),
                ));
            }
        }
        let name = || format!("gemm_{}_{}", T::SUFFIX, C::SUFFIX);
        self.profiled(name, || match &self.backend {
            Backend::Emulated { .. } => {
                let c_data = host_mut(c)?;
                let mut out: Vec<f32> = c_data.iter().map(|e| e.to_f32()).collect();
                let op = |t: bool| if t { Transpose::Yes } else { Transpose::No };
                let (a, b) = (host_f32(&a)?, host_f32(&b)?);
                matmul(
                    &mut out,
                    &a,
                    op(transpose_a),
                    &b,
                    op(transpose_b),
                    (m, n, k),
                    accumulate,
                );
                for (dst, v) in c_data.iter_mut().zip(out) {
                    *dst = C::from_f32(v);
                }
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(d) => d.gemm(
                c.address(),
                a.address(),
                transpose_a,
                b.address(),
                transpose_b,
                (m, n, k),
                if accumulate { 1.0 } else { 0.0 },
                (T::CUDA_TYPE, C::CUDA_TYPE),
            ),
        })
    }
}

/// Elements `offset..offset + len` of a buffer, read.
#[derive(Clone, Copy)]
pub struct GpuView<'a, T: Pod> {
    buffer: &'a GpuBuffer<T>,
    offset: usize,
    len: usize,
}

/// Elements `offset..offset + len` of a buffer, written.
pub struct GpuViewMut<'a, T: Pod> {
    buffer: &'a mut GpuBuffer<T>,
    offset: usize,
    len: usize,
}

impl<T: Pod> GpuViewMut<'_, T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a, T: Pod> From<&'a GpuBuffer<T>> for GpuView<'a, T> {
    fn from(buffer: &'a GpuBuffer<T>) -> Self {
        let len = buffer.len();
        GpuView {
            buffer,
            offset: 0,
            len,
        }
    }
}

impl<'a, T: Pod> From<&'a mut GpuViewMut<'_, T>> for GpuViewMut<'a, T> {
    /// A reborrow, so a view can be handed to a launcher and used again after it.
    fn from(view: &'a mut GpuViewMut<'_, T>) -> Self {
        GpuViewMut {
            buffer: &mut *view.buffer,
            offset: view.offset,
            len: view.len,
        }
    }
}

impl<'a, T: Pod> From<&'a mut GpuBuffer<T>> for GpuViewMut<'a, T> {
    fn from(buffer: &'a mut GpuBuffer<T>) -> Self {
        let len = buffer.len();
        GpuViewMut {
            buffer,
            offset: 0,
            len,
        }
    }
}

impl<T: Pod> GpuBuffer<T> {
    /// Elements `range` of the buffer.
    pub fn view(&self, range: std::ops::Range<usize>) -> Result<GpuView<'_, T>> {
        check_range(self.len(), &range)?;
        Ok(GpuView {
            buffer: self,
            offset: range.start,
            len: range.len(),
        })
    }

    /// Elements `range` of the buffer, to be written.
    pub fn view_mut(&mut self, range: std::ops::Range<usize>) -> Result<GpuViewMut<'_, T>> {
        check_range(self.len(), &range)?;
        Ok(GpuViewMut {
            buffer: self,
            offset: range.start,
            len: range.len(),
        })
    }
}

fn check_range(len: usize, range: &std::ops::Range<usize>) -> Result<()> {
    if range.start > range.end || range.end > len {
        return Err(Error::shape(
            "view",
            format!("range {range:?} of a buffer of {len} elements"),
        ));
    }
    Ok(())
}

impl<'a, T: Pod> GpuView<'a, T> {
    /// Elements `range` of this view.
    pub fn sub(&self, range: std::ops::Range<usize>) -> Result<GpuView<'a, T>> {
        check_range(self.len, &range)?;
        Ok(GpuView {
            buffer: self.buffer,
            offset: self.offset + range.start,
            len: range.len(),
        })
    }
}

impl<T: Pod> GpuViewMut<'_, T> {
    /// Elements `range` of this view, to be written.
    pub fn sub_mut(&mut self, range: std::ops::Range<usize>) -> Result<GpuViewMut<'_, T>> {
        check_range(self.len, &range)?;
        Ok(GpuViewMut {
            buffer: &mut *self.buffer,
            offset: self.offset + range.start,
            len: range.len(),
        })
    }
}

impl<T: Pod> GpuView<'_, T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn address(&self) -> u64 {
        self.buffer.address() + (self.offset * std::mem::size_of::<T>()) as u64
    }
}

impl<T: Pod> GpuViewMut<'_, T> {
    /// Device memory is addressed by number, so no mutable borrow is needed to name it.
    #[cfg(feature = "cuda")]
    fn address(&self) -> u64 {
        self.buffer.address() + (self.offset * std::mem::size_of::<T>()) as u64
    }

    /// The address to write through (the emulator's memory is a Vec, borrowed mutably).
    fn address_mut(&mut self) -> u64 {
        self.buffer.address_mut() + (self.offset * std::mem::size_of::<T>()) as u64
    }
}

/// A run of elements in GPU memory: a buffer or a view of one.
pub trait GpuSlice {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Pod> GpuSlice for GpuBuffer<T> {
    fn len(&self) -> usize {
        GpuBuffer::len(self)
    }
}

impl<T: Pod> GpuSlice for GpuView<'_, T> {
    fn len(&self) -> usize {
        self.len
    }
}

impl<T: Pod> GpuSlice for GpuViewMut<'_, T> {
    fn len(&self) -> usize {
        self.len
    }
}

/// An emulator view's elements as f32.
fn host_f32<T: GpuFloat>(view: &GpuView<T>) -> Result<Vec<f32>> {
    match &view.buffer.memory {
        Memory::Host(v) => Ok(v[view.offset..view.offset + view.len]
            .iter()
            .map(|e| e.to_f32())
            .collect()),
        #[cfg(feature = "cuda")]
        Memory::Device { .. } => Err(Error::Gpu("the buffer belongs to another GPU".into())),
    }
}

/// An emulator view's elements, to be written.
fn host_mut<T: Pod>(view: GpuViewMut<'_, T>) -> Result<&mut [T]> {
    match &mut view.buffer.memory {
        Memory::Host(v) => Ok(&mut v[view.offset..view.offset + view.len]),
        #[cfg(feature = "cuda")]
        Memory::Device { .. } => Err(Error::Gpu("the buffer belongs to another GPU".into())),
    }
}

/// A storage type kernels are instantiated for; `SUFFIX` ends the kernel's name
/// (`rmsnorm_forward_bf16`).
pub trait GpuFloat: Pod {
    const SUFFIX: &'static str;
    #[cfg(feature = "cuda")]
    const CUDA_TYPE: cudarc::cublas::sys::cudaDataType;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl GpuFloat for f32 {
    const SUFFIX: &'static str = "f32";
    #[cfg(feature = "cuda")]
    const CUDA_TYPE: cudarc::cublas::sys::cudaDataType =
        cudarc::cublas::sys::cudaDataType::CUDA_R_32F;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl GpuFloat for half::bf16 {
    const SUFFIX: &'static str = "bf16";
    #[cfg(feature = "cuda")]
    const CUDA_TYPE: cudarc::cublas::sys::cudaDataType =
        cudarc::cublas::sys::cudaDataType::CUDA_R_16BF;
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

/// Fails unless `buffer` holds exactly `len` elements.
pub fn expect_len(
    op: &'static str,
    what: &str,
    buffer: &(impl GpuSlice + ?Sized),
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

/// The GPUs the kernel tests run their checks on: always the emulator, and CUDA device 0
/// when SCOTD_TEST_CUDA=1 (tools/gpu-check.sh sets it on a GPU machine), so every check
/// runs unchanged on both.
#[cfg(test)]
pub(crate) fn test_gpus() -> Vec<Gpu> {
    let emulator = Gpu::emulated().expect("the CPU emulator compiles");
    if std::env::var("SCOTD_TEST_CUDA").as_deref() != Ok("1") {
        return vec![emulator];
    }
    #[cfg(feature = "cuda")]
    return vec![
        emulator,
        Gpu::cuda(0).expect("SCOTD_TEST_CUDA=1 but no CUDA device"),
    ];
    #[cfg(not(feature = "cuda"))]
    panic!("SCOTD_TEST_CUDA=1 needs a build with --features cuda");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn gemm_matches_the_cpu_reference_in_every_layout() {
        let mut rng = Rng::new(3);
        let (m, n, k) = (5, 7, 9);
        let a = rng.normal_vec(m * k, 1.0);
        let b = rng.normal_vec(k * n, 1.0);
        let c0 = rng.normal_vec(m * n, 1.0);
        for gpu in test_gpus() {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for accumulate in [false, true] {
                    let mut expected = c0.clone();
                    let op = |t: bool| if t { Transpose::Yes } else { Transpose::No };
                    matmul(&mut expected, &a, op(ta), &b, op(tb), (m, n, k), accumulate);
                    let mut c = gpu.upload(&c0).unwrap();
                    let (ga, gb) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap());
                    gpu.gemm(&mut c, &ga, ta, &gb, tb, (m, n, k), accumulate)
                        .unwrap();
                    let got = gpu.download(&c).unwrap();
                    for (g, e) in got.iter().zip(&expected) {
                        assert!(
                            (g - e).abs() < 1e-4,
                            "{} ta={ta} tb={tb}: {g} vs {e}",
                            gpu.describe()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn unknown_kernels_and_wrong_sizes_are_errors() {
        let gpu = Gpu::emulated().unwrap();
        let cfg = LaunchConfig::linear(1, 32, 0);
        // SAFETY: no kernel has this name, so nothing runs.
        let err = unsafe { gpu.launch("no_such_kernel", cfg, &[]) }.unwrap_err();
        assert!(err.to_string().contains("no_such_kernel"), "{err}");
        let mut c = gpu.zeros::<f32>(4).unwrap();
        let a = gpu.zeros::<f32>(3).unwrap();
        let err = gpu
            .gemm(&mut c, &a, false, &a, false, (2, 2, 2), false)
            .unwrap_err();
        assert!(
            err.to_string().contains("holds 3 elements, expected 4"),
            "{err}"
        );
    }

    /// The rank at which each of `threads` threads of one block reached an atomic.
    fn arrival_order(gpu: &Gpu, threads: u32) -> Vec<i32> {
        let mut order = gpu.alloc::<i32>(threads as usize).unwrap();
        let cfg = LaunchConfig::linear(1, threads, 0);
        // SAFETY: emu_arrival_order writes one int per thread of its one block.
        unsafe { gpu.launch("emu_arrival_order", cfg, &[KernelArg::output(&mut order)]) }.unwrap();
        gpu.download(&order).unwrap()
    }

    #[test]
    fn a_shuffled_emulator_runs_threads_in_an_order_drawn_from_its_seed() {
        let in_order: Vec<i32> = (0..256).collect();
        assert_eq!(arrival_order(&Gpu::emulated().unwrap(), 256), in_order);
        let one = arrival_order(&Gpu::emulated_shuffled(1).unwrap(), 256);
        let mut sorted = one.clone();
        sorted.sort();
        assert_eq!(sorted, in_order, "every thread arrives once");
        assert_ne!(one, in_order);
        assert_eq!(arrival_order(&Gpu::emulated_shuffled(1).unwrap(), 256), one);
        assert_ne!(arrival_order(&Gpu::emulated_shuffled(2).unwrap(), 256), one);
    }
}
