//! `scotd gpu-bench`: our kernels timed on the GPU at Qwen2.5-0.5B shapes, beside
//! PyTorch's numbers for the same card (tools/gpu-check.sh runs both).

use std::path::PathBuf;

use anyhow::{Context, Result};
use scotd::backend::cuda::bench::{bench_kernels, markdown, Scale, TorchBaselines};
use std::sync::Arc;

use scotd::backend::cuda::Gpu;
use scotd::Device;

#[derive(clap::Args)]
pub struct Args {
    /// Folder for kernels.json and kernels.md.
    #[arg(long)]
    out: PathBuf,
    /// PyTorch's numbers on the same card (torch_gpu.json from tools/bench_torch_gpu.py),
    /// for the limits and the ratio columns.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Tiny shapes and few runs (checks the command, not the card).
    #[arg(long)]
    smoke: bool,
    /// The GPU: cuda (device 0), cuda:N, or emulator (the CPU emulator: tiny shapes).
    #[arg(long, default_value = "cuda")]
    device: Device,
}

pub fn run(args: Args) -> Result<()> {
    let gpu = open(args.device)?;
    let scale = if args.smoke {
        Scale::Smoke
    } else {
        Scale::Qwen05B
    };
    let timings = bench_kernels(&gpu, scale)?;
    let torch = match &args.torch {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not torch_gpu.json", path.display()))?
        }
        None => TorchBaselines::default(),
    };
    let table = format!(
        "Kernels on {}\n\n{}",
        gpu.describe(),
        markdown(&timings, &torch)
    );
    scotd::io::write_atomic(
        &args.out.join("kernels.json"),
        &serde_json::to_vec_pretty(&timings)?,
    )?;
    scotd::io::write_atomic(&args.out.join("kernels.md"), table.as_bytes())?;
    println!("{table}");
    Ok(())
}

/// The GPU of `device`: the emulator, or a CUDA device.
pub fn open(device: Device) -> Result<Arc<Gpu>> {
    anyhow::ensure!(
        device.is_gpu(),
        "this benchmark runs on a GPU: --device emulator or cuda[:N]"
    );
    Ok(scotd::tensor::gpu_of(device)?)
}
