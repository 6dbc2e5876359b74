//! `scotd plot`: training curves (loss, eval loss, learning rate) from a metrics JSONL
//! file into a PNG.

use std::path::PathBuf;

use anyhow::Result;
use scotd::train::plot::{plot_metrics, read_metrics};

#[derive(clap::Args)]
pub struct Args {
    /// The trainer's metrics file: one JSON object per line with `step` and any of
    /// `loss`, `lr`, `eval_loss`.
    metrics: PathBuf,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1000)]
    width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 800)]
    height: u32,
}

pub fn run(args: Args) -> Result<()> {
    let metrics = read_metrics(&args.metrics)?;
    plot_metrics(&metrics, &args.out, (args.width, args.height))?;
    eprintln!(
        "wrote {} ({} loss, {} eval loss, {} lr points)",
        args.out.display(),
        metrics.loss.len(),
        metrics.eval_loss.len(),
        metrics.lr.len()
    );
    Ok(())
}
