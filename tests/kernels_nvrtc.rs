//! Every kernel file compiles with NVRTC for every architecture we ship, with no warning
//! and no register spill; prints each kernel's registers and static shared memory. Needs the `cuda` feature and
//! libnvrtc on the library path (tools/fetch-nvrtc.sh; tools/test.sh sets it up and sets
//! SCOTD_REQUIRE_NVRTC=1, so CI fails rather than skips when it is missing).
#![cfg(feature = "cuda")]

use scotd::backend::cuda::nvrtc::{self, ARCHITECTURES};
use scotd::backend::cuda::sources::kernel_files;

#[test]
fn every_kernel_compiles_for_every_architecture_without_warnings_or_spills() {
    if !nvrtc::available() {
        assert!(
            std::env::var_os("SCOTD_REQUIRE_NVRTC").is_none(),
            "libnvrtc is not on the library path: run eval \"$(tools/fetch-nvrtc.sh --print-env)\""
        );
        eprintln!("skipped: libnvrtc not found (tools/fetch-nvrtc.sh)");
        return;
    }
    let mut problems = Vec::new();
    println!("| file | arch | kernel | registers | static shared | spill stores | spill loads |");
    println!("|---|---|---|--:|--:|--:|--:|");
    for (file, _) in kernel_files() {
        for arch in ARCHITECTURES {
            let compiled = match nvrtc::compile(file, arch) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            assert!(!compiled.cubin.is_empty());
            if compiled.log.to_lowercase().contains("warning") {
                problems.push(format!("{file} {arch} warns:\n{}", compiled.log));
            }
            let kernels = nvrtc::resources(&compiled.log);
            if kernels.is_empty() {
                problems.push(format!(
                    "{file} {arch}: no ptxas report in the log:\n{}",
                    compiled.log
                ));
            }
            for k in kernels {
                println!(
                    "| {file} | {arch} | {} | {} | {} | {} | {} |",
                    k.kernel, k.registers, k.static_shared, k.spill_stores, k.spill_loads
                );
                if k.spill_stores + k.spill_loads > 0 {
                    problems.push(format!("{file} {arch} {} spills registers", k.kernel));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
