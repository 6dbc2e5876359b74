//! NVRTC: compiles a kernel file for one GPU architecture to a cubin, with ptxas' report
//! of each kernel's registers and spills. Needs only libnvrtc (no GPU, no driver), so CI
//! compiles every kernel for every architecture we ship.

use std::ffi::{c_char, CStr, CString};

use cudarc::nvrtc::sys;

use super::sources::SOURCES;
use crate::{Error, Result};

/// The architectures every kernel is built for: A100 and H100.
pub const ARCHITECTURES: &[&str] = &["sm_80", "sm_90"];

/// A compiled kernel file.
pub struct Compiled {
    pub cubin: Vec<u8>,
    /// NVRTC's log: warnings, and ptxas' per-kernel report.
    pub log: String,
}

/// One kernel's resources, from ptxas' report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelResources {
    pub kernel: String,
    pub registers: u32,
    /// Bytes of `__shared__` arrays declared in the kernel (not the launch's dynamic ones).
    pub static_shared: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// Whether libnvrtc can be loaded (it is looked for on the library path).
pub fn available() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's (major, minor) version: registers and spills depend on it.
pub fn version() -> Result<(i32, i32)> {
    if !available() {
        return Err(Error::Gpu(
            "libnvrtc was not found on the library path".into(),
        ));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two int out-parameters, as nvrtcVersion takes.
    let result = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    // SAFETY: a result code from NVRTC.
    unsafe { check(result, "libnvrtc", "version") }?;
    Ok((major, minor))
}

/// Compiles kernels/`file` for `arch` (e.g. "sm_90").
pub fn compile(file: &str, arch: &str) -> Result<Compiled> {
    if !available() {
        return Err(Error::Gpu(
            "libnvrtc was not found on the library path (tools/fetch-nvrtc.sh installs it; add its lib folder to LD_LIBRARY_PATH)".into(),
        ));
    }
    let source = CString::new(source_with_includes(file)?)
        .map_err(|_| Error::Gpu(format!("{file} holds a NUL byte")))?;
    let name = CString::new(file).expect("a file name without NUL");
    let options: Vec<CString> = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "--ptxas-options=--verbose".into(),
        "--generate-line-info".into(),
    ]
    .into_iter()
    .map(|o| CString::new(o).expect("options without NUL"))
    .collect();
    let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: every pointer is to a live NUL-terminated string; the program is destroyed
    // before returning.
    unsafe {
        let mut program = std::ptr::null_mut();
        let created = sys::nvrtcCreateProgram(
            &mut program,
            source.as_ptr(),
            name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        );
        check(created, file, "create")?;
        let compiled =
            sys::nvrtcCompileProgram(program, option_ptrs.len() as i32, option_ptrs.as_ptr());
        let log = program_log(program);
        let result = check(compiled, file, &format!("compile for {arch}:\n{log}"))
            .and_then(|()| cubin(program, file))
            .map(|cubin| Compiled { cubin, log });
        sys::nvrtcDestroyProgram(&mut program);
        result
    }
}

/// The file's text with `#include "x"` of our own headers replaced by their text, since
/// NVRTC has no file system to find them in. Each header is pasted once, at its first
/// include, as `#pragma once` would have it (which does nothing in pasted text): a file
/// may include both common.cuh and elementwise.cuh, which includes common.cuh too.
pub fn source_with_includes(file: &str) -> Result<String> {
    let mut out = String::new();
    inline_includes(file, &source, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn inline_includes(
    file: &str,
    source: &dyn Fn(&str) -> Result<&'static str>,
    pasted: &mut Vec<String>,
    out: &mut String,
) -> Result<()> {
    for line in source(file)?.lines() {
        match line
            .trim()
            .strip_prefix("#include \"")
            .and_then(|r| r.strip_suffix('"'))
        {
            Some(header) if header.ends_with(".cuh") => {
                if !pasted.iter().any(|p| p == header) {
                    pasted.push(header.to_string());
                    inline_includes(header, source, pasted, out)?;
                }
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(())
}

fn source(file: &str) -> Result<&'static str> {
    SOURCES
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, text)| *text)
        .ok_or_else(|| Error::Gpu(format!("no kernel source named {file}")))
}

/// Per-kernel registers, static shared memory and spills from ptxas' verbose report in an
/// NVRTC log.
pub fn resources(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            out.push(KernelResources {
                kernel: rest.split('\'').next().unwrap_or_default().to_string(),
                registers: 0,
                static_shared: 0,
                spill_stores: 0,
                spill_loads: 0,
            });
        } else if let Some(current) = out.last_mut() {
            if let Some(n) = number_before(line, " registers") {
                current.registers = n;
            }
            if let Some(n) = number_before(line, " bytes smem") {
                current.static_shared = n;
            }
            if let Some(n) = number_before(line, " bytes spill stores") {
                current.spill_stores = n;
            }
            if let Some(n) = number_before(line, " bytes spill loads") {
                current.spill_loads = n;
            }
        }
    }
    out
}

/// The integer just before `marker` in `line`.
fn number_before(line: &str, marker: &str) -> Option<u32> {
    let head = &line[..line.find(marker)?];
    head.rsplit(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

unsafe fn check(result: sys::nvrtcResult, file: &str, what: &str) -> Result<()> {
    if result == sys::nvrtcResult::NVRTC_SUCCESS {
        return Ok(());
    }
    let message = CStr::from_ptr(sys::nvrtcGetErrorString(result)).to_string_lossy();
    Err(Error::Gpu(format!("NVRTC {file}: {message}: {what}")))
}

unsafe fn program_log(program: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    if sys::nvrtcGetProgramLogSize(program, &mut size) != sys::nvrtcResult::NVRTC_SUCCESS {
        return String::new();
    }
    let mut log = vec![0u8; size];
    sys::nvrtcGetProgramLog(program, log.as_mut_ptr() as *mut c_char);
    String::from_utf8_lossy(&log)
        .trim_end_matches('\0')
        .to_string()
}

unsafe fn cubin(program: sys::nvrtcProgram, file: &str) -> Result<Vec<u8>> {
    let mut size = 0usize;
    check(
        sys::nvrtcGetCUBINSize(program, &mut size),
        file,
        "cubin size",
    )?;
    let mut cubin = vec![0u8; size];
    check(
        sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr() as *mut c_char),
        file,
        "cubin",
    )?;
    Ok(cubin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_reports_are_read_per_kernel() {
        let log = "ptxas info    : Compiling entry function 'rmsnorm_forward_f32' for 'sm_90'\n\
                   ptxas info    : Function properties for rmsnorm_forward_f32\n\
                   \x20   8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
                   ptxas info    : Used 26 registers, used 0 barriers, 400 bytes cmem[0]\n\
                   ptxas info    : Compiling entry function 'k2' for 'sm_90'\n\
                   ptxas info    : Used 8 registers, used 1 barriers, 2304 bytes smem, 400 bytes cmem[0]\n\
                   ptxas info    : Compiling entry function 'k3' for 'sm_90'\n\
                   ptxas info    : Used 8 registers\n";
        let r = resources(log);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            KernelResources {
                kernel: "rmsnorm_forward_f32".into(),
                registers: 26,
                static_shared: 0,
                spill_stores: 4,
                spill_loads: 12
            }
        );
        assert_eq!((r[1].registers, r[1].static_shared), (8, 2304));
        assert_eq!((r[2].registers, r[2].spill_stores), (8, 0));
    }

    #[test]
    fn our_headers_are_inlined() {
        let text = source_with_includes("rmsnorm.cu").unwrap();
        assert!(!text.contains("#include \"common.cuh\""));
        assert!(text.contains("struct bf16"));
    }

    #[test]
    fn a_header_included_twice_is_pasted_once() {
        let files = |name: &str| -> Result<&'static str> {
            Ok(match name {
                "k.cu" => "#include \"a.cuh\"\n#include \"b.cuh\"\nkernel\n",
                "a.cuh" => "#pragma once\nstruct A {};\n",
                "b.cuh" => "#pragma once\n#include \"a.cuh\"\nstruct B {};\n",
                _ => return Err(Error::Gpu(format!("no {name}"))),
            })
        };
        let mut out = String::new();
        inline_includes("k.cu", &files, &mut Vec::new(), &mut out).unwrap();
        assert_eq!(out.matches("struct A").count(), 1, "{out}");
        assert!(out.contains("struct B") && out.contains("kernel"), "{out}");
        let text = source_with_includes("add.cu").unwrap();
        assert_eq!(text.matches("struct bf16 {").count(), 1);
    }
}
