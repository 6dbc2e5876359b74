//! The CPU emulator's side in Rust: compiles every kernel file as C++ (with
//! `-DSCOTD_EMULATION`, which makes common.cuh include emu/cuda_emu.h) into one shared
//! library, cached on disk under the sources' fingerprint, loads it, and launches kernels
//! by name through its `scotd_emu_launch`.
//!
//! The emulator runs any launch shape; the limits of real cards are checked before
//! (super::limits), with each kernel's registers and static shared memory from ptxas'
//! report when NVRTC is available ([`footprint`]).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::limits::Footprint;
use super::sources::{fingerprint, kernel_files, SOURCES};
use super::{KernelArg, LaunchConfig};
use crate::{Error, Result};

const FLAGS: &[&str] = &[
    "-std=c++20",
    "-O2",
    "-fPIC",
    "-shared",
    "-Wall",
    "-Werror",
    // CUDA's `#pragma unroll` is unknown to g++, and -Wall -Werror would reject every
    // kernel that uses it (add.cu does). The header cannot silence it: GCC before 13
    // ignores `#pragma GCC diagnostic` for this preprocessor warning (GCC bug 53431).
    // NVRTC still warns on a misspelt pragma, which fails tests/kernels_nvrtc.rs.
    "-Wno-unknown-pragmas",
    "-DSCOTD_EMULATION",
];

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    usize,
    u64,
    *mut *mut c_void,
) -> c_int;

pub struct Emulator {
    // Kept so the library stays loaded for the process's life.
    _library: libloading::Library,
    launch: LaunchFn,
}

static EMULATOR: OnceLock<std::result::Result<Emulator, String>> = OnceLock::new();

impl Emulator {
    /// The process's emulator, compiled (or found in the cache) on first use.
    pub fn get() -> Result<&'static Emulator> {
        EMULATOR
            .get_or_init(|| Emulator::load().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Gpu(e.clone()))
    }

    fn load() -> Result<Emulator> {
        let library_path = compiled_library()?;
        // SAFETY: the library is ours, built from the embedded sources; loading it runs
        // only the static initialisers that register its kernels.
        let library = unsafe { libloading::Library::new(&library_path) }
            .map_err(|e| Error::Gpu(format!("loading {}: {e}", library_path.display())))?;
        // SAFETY: runtime.cpp defines scotd_emu_launch with exactly LaunchFn's signature.
        let launch = unsafe { library.get::<LaunchFn>(b"scotd_emu_launch\0") }
            .map(|symbol| *symbol)
            .map_err(|e| Error::Gpu(format!("{}: {e}", library_path.display())))?;
        Ok(Emulator {
            _library: library,
            launch,
        })
    }

    /// Runs a kernel to completion, each block's threads in thread order when `schedule` is
    /// 0, else in an order drawn from it at every step (Gpu::emulated_shuffled).
    ///
    /// # Safety
    /// As [`super::Gpu::launch`].
    pub unsafe fn launch(
        &self,
        kernel: &str,
        cfg: LaunchConfig,
        args: &[KernelArg],
        schedule: u64,
    ) -> Result<()> {
        let mut values: Vec<u64> = args.iter().map(arg_bits).collect();
        let mut pointers: Vec<*mut c_void> = values
            .iter_mut()
            .map(|v| v as *mut u64 as *mut c_void)
            .collect();
        let name =
            CString::new(kernel).map_err(|_| Error::Gpu(format!("bad kernel name {kernel:?}")))?;
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        let status = (self.launch)(
            name.as_ptr(),
            gx,
            gy,
            gz,
            bx,
            by,
            bz,
            cfg.shared_bytes,
            schedule,
            pointers.as_mut_ptr(),
        );
        match status {
            0 => Ok(()),
            _ => Err(Error::Gpu(format!(
                "no kernel named {kernel} in kernels/*.cu"
            ))),
        }
    }
}

/// An argument's bits, at the start of an 8-byte slot: the kernel reads its parameter's
/// own type from there (little-endian, so a 4-byte value sits in the low half).
pub(super) fn arg_bits(arg: &KernelArg) -> u64 {
    match *arg {
        KernelArg::Ptr(address) => address,
        KernelArg::I32(v) => v as u32 as u64,
        KernelArg::F32(v) => v.to_bits() as u64,
    }
}

/// `kernel`'s registers and static shared memory, the most of every architecture we ship,
/// from ptxas' report; None without NVRTC (a build without feature `cuda`, or no libnvrtc
/// on the library path) and for a name no kernel file defines.
pub(super) fn footprint(kernel: &str) -> Result<Option<Footprint>> {
    Ok(footprints()?.and_then(|table| table.get(kernel).copied()))
}

/// Every kernel's footprint (see [`footprint`]), read once per process.
#[cfg(feature = "cuda")]
pub(super) fn footprints() -> Result<Option<&'static HashMap<String, Footprint>>> {
    type Table = std::result::Result<Option<HashMap<String, Footprint>>, String>;
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE
        .get_or_init(|| ptxas_footprints().map_err(|e| e.to_string()))
        .as_ref()
        .map(Option::as_ref)
        .map_err(|e| Error::Gpu(e.clone()))
}

#[cfg(not(feature = "cuda"))]
pub(super) fn footprints() -> Result<Option<&'static HashMap<String, Footprint>>> {
    Ok(None)
}

/// Every kernel's footprint from compiling every kernel file for every architecture we
/// ship (seconds), cached on disk under the sources' fingerprint and NVRTC's version.
#[cfg(feature = "cuda")]
fn ptxas_footprints() -> Result<Option<HashMap<String, Footprint>>> {
    use super::nvrtc::{self, ARCHITECTURES};
    use rayon::prelude::*;
    if !nvrtc::available() {
        return Ok(None);
    }
    let (major, minor) = nvrtc::version()?;
    let key = fingerprint(&format!("ptxas nvrtc {major}.{minor} {ARCHITECTURES:?}"));
    let path = cache_base()
        .join("kernels-footprint")
        .join(format!("{key}.tsv"));
    if let Some(table) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| parse_footprints(&text))
    {
        return Ok(Some(table));
    }
    let jobs: Vec<(&str, &str)> = kernel_files()
        .flat_map(|(file, _)| ARCHITECTURES.iter().map(move |&arch| (file, arch)))
        .collect();
    let reports = jobs
        .par_iter()
        .map(|&(file, arch)| nvrtc::compile(file, arch).map(|c| nvrtc::resources(&c.log)))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| Error::Gpu(format!("reading the kernels' registers from ptxas: {e}")))?;
    let mut table: HashMap<String, Footprint> = HashMap::new();
    for r in reports.into_iter().flatten() {
        let f = table.entry(r.kernel).or_insert(Footprint {
            static_shared: 0,
            registers: 0,
            max_threads: super::limits::MAX_THREADS_PER_BLOCK,
        });
        f.registers = f.registers.max(r.registers);
        f.static_shared = f.static_shared.max(r.static_shared as usize);
    }
    let text: String = table
        .iter()
        .map(|(k, f)| format!("{k}\t{}\t{}\n", f.registers, f.static_shared))
        .collect();
    crate::io::write_atomic(&path, text.as_bytes())?;
    Ok(Some(table))
}

/// The table as [`ptxas_footprints`] writes it: `kernel registers static_shared` lines.
#[cfg(feature = "cuda")]
fn parse_footprints(text: &str) -> Option<HashMap<String, Footprint>> {
    text.lines()
        .map(|line| {
            let mut fields = line.split('\t');
            let kernel = fields.next()?.to_string();
            let registers = fields.next()?.parse().ok()?;
            let static_shared = fields.next()?.parse().ok()?;
            let footprint = Footprint {
                static_shared,
                registers,
                max_threads: super::limits::MAX_THREADS_PER_BLOCK,
            };
            Some((kernel, footprint))
        })
        .collect()
}

/// The cached library for these sources, compiling it first if needed.
fn compiled_library() -> Result<PathBuf> {
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let dir = cache_base()
        .join("kernels-emu")
        .join(fingerprint(&format!("{compiler} {FLAGS:?}")));
    let library = dir.join("libscotd_kernels.so");
    if library.is_file() {
        return Ok(library);
    }
    // Sources in a folder of this process's own, compiled under a temporary name and
    // renamed: processes compiling at once never read each other's half-written files,
    // and a crash never leaves a torn library.
    let pid = std::process::id();
    let src = dir.join(format!("src.tmp{pid}"));
    for (name, text) in SOURCES {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().expect("a file in src/"))
            .map_err(|e| Error::io(&src, e))?;
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    let partial = dir.join(format!("libscotd_kernels.so.tmp{pid}"));
    let compiled = compile(&compiler, &src, &partial);
    let _ = std::fs::remove_dir_all(&src);
    compiled?;
    std::fs::rename(&partial, &library).map_err(|e| Error::io(&library, e))?;
    Ok(library)
}

fn compile(compiler: &str, src: &Path, out: &Path) -> Result<()> {
    let mut cmd = Command::new(compiler);
    cmd.args(FLAGS).arg("-I").arg(src).arg("-x").arg("c++");
    for (name, _) in kernel_files() {
        cmd.arg(src.join(name));
    }
    cmd.arg(src.join("emu/runtime.cpp"))
        .arg(src.join("emu/selftest.cpp"))
        .arg("-o")
        .arg(out);
    let output = cmd.output().map_err(|e| {
        Error::Gpu(format!(
            "running the C++ compiler {compiler:?} (set CXX): {e}"
        ))
    })?;
    if !output.status.success() {
        return Err(Error::Gpu(format!(
            "compiling the kernels for the CPU emulator failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

/// `$SCOTD_CACHE`, by default ~/.cache/scotd (the test models' cache): compiled kernels
/// live under it.
pub(super) fn cache_base() -> PathBuf {
    std::env::var_os("SCOTD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/scotd")))
        .unwrap_or_else(std::env::temp_dir)
}
