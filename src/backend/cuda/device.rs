//! The CUDA device (feature `cuda`): a context and one stream, the driver's stream-ordered
//! memory pool as the caching allocator (freed blocks stay in the pool for the next
//! allocation instead of going back to the driver), the kernels compiled by NVRTC for the
//! device's architecture at first use and cached on disk as cubins, and cuBLAS for GEMMs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{self, CudaBlas};
use cudarc::driver::{
    sys, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
};
use cudarc::nvrtc::Ptx;

use super::limits::Footprint;
use super::profile::Timing;
use super::sources::{fingerprint, kernel_files};
use super::{nvrtc, KernelArg, LaunchConfig};
use crate::{Error, Result};

pub struct CudaGpu {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    modules: Vec<Arc<CudaModule>>,
    /// Each kernel launched so far, with what the driver says bounds its launches.
    functions: Mutex<HashMap<String, (CudaFunction, Footprint)>>,
    pub arch: String,
    pub name: String,
    /// The most shared memory a block may have after opting in.
    pub max_shared_opt_in: usize,
}

fn driver_error(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Gpu(format!("{what}: {e:?}"))
}

impl CudaGpu {
    /// Device `ordinal`; fails (never panics) without a driver or a device.
    pub fn new(ordinal: usize) -> Result<CudaGpu> {
        // SAFETY: only tries to open the libraries.
        let present = unsafe { sys::is_culib_present() && cublas::sys::is_culib_present() };
        if !present {
            return Err(Error::Gpu(
                "libcuda or libcublas was not found on the library path".into(),
            ));
        }
        let context = CudaContext::new(ordinal).map_err(driver_error("opening the CUDA device"))?;
        // One stream: ordering is the stream's, so per-buffer events are not needed.
        // SAFETY: called before any buffer exists.
        unsafe { context.disable_event_tracking() };
        keep_freed_memory_pooled(&context)?;
        let (major, minor) = context
            .compute_capability()
            .map_err(driver_error("reading the compute capability"))?;
        let arch = format!("sm_{major}{minor}");
        let name = context
            .name()
            .map_err(driver_error("reading the device name"))?;
        let max_shared_opt_in = context
            .attribute(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .map_err(driver_error("reading the shared memory limit"))?
            as usize;
        let stream = context.default_stream();
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| Error::Gpu(format!("cuBLAS: {e:?}")))?;
        let modules = kernel_files()
            .map(|(file, _)| load_module(&context, file, &arch))
            .collect::<Result<Vec<_>>>()?;
        Ok(CudaGpu {
            context,
            stream,
            blas,
            modules,
            functions: Mutex::new(HashMap::new()),
            arch,
            name,
            max_shared_opt_in,
        })
    }

    pub fn zeros(&self, bytes: usize) -> Result<(CudaSlice<u8>, u64)> {
        let slice = self
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(driver_error("allocating device memory"))?;
        let address = slice.device_ptr(&self.stream).0;
        Ok((slice, address))
    }

    /// `bytes` bytes whose contents are unspecified (no memset).
    pub fn alloc(&self, bytes: usize) -> Result<(CudaSlice<u8>, u64)> {
        // SAFETY: u8 has no invalid bit patterns; callers write before they read (see
        // `Gpu::alloc`).
        let slice = unsafe { self.stream.alloc::<u8>(bytes.max(1)) }
            .map_err(driver_error("allocating device memory"))?;
        let address = slice.device_ptr(&self.stream).0;
        Ok((slice, address))
    }

    pub fn upload(&self, bytes: &[u8]) -> Result<(CudaSlice<u8>, u64)> {
        let (mut slice, address) = self.zeros(bytes.len())?;
        if !bytes.is_empty() {
            self.stream
                .memcpy_htod(bytes, &mut slice)
                .map_err(driver_error("copying to the device"))?;
        }
        Ok((slice, address))
    }

    pub fn download(&self, slice: &CudaSlice<u8>, bytes: usize) -> Result<Vec<u8>> {
        let mut out = self
            .stream
            .clone_dtoh(slice)
            .map_err(driver_error("copying from the device"))?;
        out.truncate(bytes);
        Ok(out)
    }

    /// `bytes` bytes from `address` (waits for the stream's work so far).
    pub fn download_range(&self, address: u64, bytes: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; bytes];
        if bytes == 0 {
            return Ok(out);
        }
        self.context
            .bind_to_thread()
            .map_err(driver_error("binding the context"))?;
        // SAFETY: `address` is inside one of this device's allocations with `bytes` after
        // it (the caller's view), and `out` holds `bytes` bytes; the sync below keeps `out`
        // alive until the copy is done.
        unsafe {
            sys::cuMemcpyDtoHAsync_v2(
                out.as_mut_ptr() as *mut _,
                address,
                bytes,
                self.stream.cu_stream(),
            )
        }
        .result()
        .map_err(driver_error("copying from the device"))?;
        self.synchronize()?;
        Ok(out)
    }

    /// Copies `bytes` bytes from `source` to `target` on the device, in stream order.
    pub fn copy_bytes(&self, target: u64, source: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.context
            .bind_to_thread()
            .map_err(driver_error("binding the context"))?;
        // SAFETY: both ranges lie inside this device's allocations (the caller's views).
        unsafe { sys::cuMemcpyDtoDAsync_v2(target, source, bytes, self.stream.cu_stream()) }
            .result()
            .map_err(driver_error("copying on the device"))
    }

    /// Writes host `bytes` to `target`, in stream order.
    pub fn upload_to(&self, target: u64, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.context
            .bind_to_thread()
            .map_err(driver_error("binding the context"))?;
        // SAFETY: the target range lies inside this device's allocation (the caller's
        // view); a copy from pageable memory is staged before the call returns, so the host
        // bytes may go as soon as it does.
        unsafe {
            sys::cuMemcpyHtoDAsync_v2(
                target,
                bytes.as_ptr() as *const _,
                bytes.len(),
                self.stream.cu_stream(),
            )
        }
        .result()
        .map_err(driver_error("copying to the device"))
    }

    /// Sets `bytes` bytes from `address` to zero, in stream order.
    pub fn zero_bytes(&self, address: u64, bytes: usize) -> Result<()> {
        // SAFETY: the caller passes a range inside one of this device's allocations.
        unsafe { sys::cuMemsetD8Async(address, 0, bytes, self.stream.cu_stream()) }
            .result()
            .map_err(driver_error("zeroing device memory"))
    }

    /// Free and total bytes of the device's memory.
    pub fn memory_info(&self) -> Result<(u64, u64)> {
        let (free, total) = self
            .context
            .mem_get_info()
            .map_err(driver_error("reading the free device memory"))?;
        Ok((free as u64, total as u64))
    }

    /// The most bytes the memory pool has had in use since the last
    /// [`reset_peak_memory`](Self::reset_peak_memory); `None` without pool support.
    pub fn peak_memory(&self) -> Option<u64> {
        let pool = default_pool(&self.context)?;
        let mut high = 0u64;
        // SAFETY: a valid pool handle and a u64 out-parameter, as the attribute takes.
        let got = unsafe {
            sys::cuMemPoolGetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut high as *mut u64 as *mut _,
            )
        };
        (got == sys::CUresult::CUDA_SUCCESS).then_some(high)
    }

    /// Starts a new peak: the pool's high-water mark drops to what is in use now.
    pub fn reset_peak_memory(&self) -> Result<()> {
        let Some(pool) = default_pool(&self.context) else {
            return Ok(());
        };
        let mut zero = 0u64;
        // SAFETY: as above; the driver only accepts 0 for this attribute.
        unsafe {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut zero as *mut u64 as *mut _,
            )
        }
        .result()
        .map_err(driver_error("resetting the memory pool's peak"))
    }

    /// Waits for every launch so far (errors of asynchronous launches surface here).
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(driver_error("synchronizing the stream"))
    }

    /// Milliseconds of each of `runs` calls of `work`, between CUDA events on the stream.
    pub fn time_ms(&self, runs: usize, mut work: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let events = self.between_events(&mut work)?;
            events
                .end
                .synchronize()
                .map_err(driver_error("waiting for an event"))?;
            times.push(events.elapsed_ms()?);
        }
        Ok(times)
    }

    /// # Safety
    /// As [`super::Gpu::launch`].
    pub unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
        let (function, _) = self.function(kernel)?;
        let mut values: Vec<u64> = args.iter().map(super::emulator::arg_bits).collect();
        let mut params: Vec<*mut std::ffi::c_void> = values
            .iter_mut()
            .map(|v| v as *mut u64 as *mut std::ffi::c_void)
            .collect();
        let shared = u32::try_from(cfg.shared_bytes).map_err(|_| {
            Error::Gpu(format!(
                "{kernel}: {} bytes of shared memory",
                cfg.shared_bytes
            ))
        })?;
        self.context
            .bind_to_thread()
            .map_err(driver_error("binding the context"))?;
        cudarc::driver::result::launch_kernel(
            function.cu_function(),
            (cfg.grid[0], cfg.grid[1], cfg.grid[2]),
            (cfg.block[0], cfg.block[1], cfg.block[2]),
            shared,
            self.stream.cu_stream(),
            &mut params,
        )
        .map_err(driver_error(kernel))
    }

    /// `work` (one launch) between two timing events on the stream, which are read later.
    pub fn timed(&self, work: impl FnOnce() -> Result<()>) -> Result<Box<dyn Timing>> {
        Ok(Box::new(self.between_events(work)?))
    }

    /// `work` between two timing events recorded on the stream.
    fn between_events(&self, work: impl FnOnce() -> Result<()>) -> Result<EventPair> {
        let timed = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self
            .stream
            .record_event(timed)
            .map_err(driver_error("recording an event"))?;
        work()?;
        let end = self
            .stream
            .record_event(timed)
            .map_err(driver_error("recording an event"))?;
        Ok(EventPair { start, end })
    }

    /// The kernel's registers, static shared memory and most threads a block, as the driver
    /// reports them for this device.
    pub fn footprint(&self, kernel: &str) -> Result<Footprint> {
        self.function(kernel).map(|(_, footprint)| footprint)
    }

    /// Raises the kernel's CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES to `bytes`.
    pub fn allow_dynamic_shared(&self, kernel: &str, bytes: usize) -> Result<()> {
        let (function, _) = self.function(kernel)?;
        let bytes = i32::try_from(bytes)
            .map_err(|_| Error::Gpu(format!("{kernel}: {bytes} bytes of shared memory")))?;
        self.context
            .bind_to_thread()
            .map_err(driver_error("binding the context"))?;
        function
            .set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes,
            )
            .map_err(driver_error(kernel))
    }

    fn function(&self, kernel: &str) -> Result<(CudaFunction, Footprint)> {
        let mut functions = self.functions.lock().expect("kernel table lock");
        if let Some(found) = functions.get(kernel) {
            return Ok(found.clone());
        }
        let function = self
            .modules
            .iter()
            .find_map(|m| m.load_function(kernel).ok())
            .ok_or_else(|| Error::Gpu(format!("no kernel named {kernel} in kernels/*.cu")))?;
        let attribute = |what, value: std::result::Result<i32, _>| {
            value
                .map_err(driver_error(&format!("reading {what} of {kernel}")))
                .map(|v| v.max(0) as u32)
        };
        let footprint = Footprint {
            static_shared: attribute("the static shared memory", function.shared_size_bytes())?
                as usize,
            registers: attribute("the registers", function.num_regs())?,
            max_threads: attribute("the most threads a block", function.max_threads_per_block())?
                as u64,
        };
        functions.insert(kernel.to_string(), (function.clone(), footprint));
        Ok((function, footprint))
    }

    /// `c = alpha op(a) op(b) + beta c`, row-major, through cublasGemmEx with f32
    /// accumulation; `types` are the cuBLAS data types of a/b and of c.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        c: u64,
        a: u64,
        transpose_a: bool,
        b: u64,
        transpose_b: bool,
        (m, n, k): (usize, usize, usize),
        beta: f32,
        types: (cublas::sys::cudaDataType, cublas::sys::cudaDataType),
    ) -> Result<()> {
        use cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        let int =
            |v: usize| i32::try_from(v).map_err(|_| Error::Gpu(format!("GEMM size {v} too large")));
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
        let (op_b, ldb) = if transpose_b {
            (CUBLAS_OP_T, k)
        } else {
            (CUBLAS_OP_N, n)
        };
        let (op_a, lda) = if transpose_a {
            (CUBLAS_OP_T, m)
        } else {
            (CUBLAS_OP_N, k)
        };
        let alpha = 1.0f32;
        // SAFETY: the addresses are live buffers of this device sized by the caller's checks.
        unsafe {
            cublas::result::gemm_ex(
                *self.blas.handle(),
                op_b,
                op_a,
                int(n)?,
                int(m)?,
                int(k)?,
                &alpha as *const f32 as *const _,
                b as *const _,
                types.0,
                int(ldb)?,
                a as *const _,
                types.0,
                int(lda)?,
                &beta as *const f32 as *const _,
                c as *mut _,
                types.1,
                int(n)?,
                cublas::sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas::sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Gpu(format!("cublasGemmEx: {e:?}")))
    }
}

/// The events recorded around one launch.
struct EventPair {
    start: CudaEvent,
    end: CudaEvent,
}

impl Timing for EventPair {
    fn finished(&self) -> bool {
        self.end.is_complete()
    }

    fn elapsed_ms(&self) -> Result<f64> {
        self.start
            .elapsed_ms(&self.end)
            .map(f64::from)
            .map_err(driver_error("timing a launch"))
    }
}

/// Freed device memory stays in the driver's pool (never trimmed back to the driver), so
/// the allocations of one training step reuse the previous step's.
fn keep_freed_memory_pooled(context: &CudaContext) -> Result<()> {
    let Some(pool) = default_pool(context) else {
        return Ok(()); // No pool support: plain allocations, still correct.
    };
    let mut threshold = u64::MAX;
    // SAFETY: the pool handle comes from the driver for this context's device.
    unsafe {
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut _,
        )
    }
    .result()
    .map_err(driver_error("configuring the memory pool"))
}

/// The device's default memory pool, which stream-ordered allocations come from.
fn default_pool(context: &CudaContext) -> Option<sys::CUmemoryPool> {
    let mut pool = std::ptr::null_mut();
    // SAFETY: the device handle is the context's; the driver writes the pool handle.
    let got = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, context.cu_device()) };
    (got == sys::CUresult::CUDA_SUCCESS).then_some(pool)
}

/// A kernel file's module: its cubin for `arch` from the disk cache, or compiled by NVRTC
/// and cached.
fn load_module(context: &Arc<CudaContext>, file: &str, arch: &str) -> Result<Arc<CudaModule>> {
    let path = cubin_cache()
        .join(format!("{}-{arch}", fingerprint(arch)))
        .join(format!("{file}.cubin"));
    let cubin = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(_) => {
            let compiled = nvrtc::compile(file, arch)?;
            crate::io::write_atomic(&path, &compiled.cubin)?;
            compiled.cubin
        }
    };
    context
        .load_module(Ptx::from_binary(cubin))
        .map_err(driver_error(file))
}

fn cubin_cache() -> PathBuf {
    super::emulator::cache_base().join("kernels-cubin")
}
