//! `scotd plot`: training curves (loss, eval loss, learning rate) from a metrics JSONL
//! file into a PNG; several files: their runs side by side.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use scotd::train::plot::{plot_metrics, plot_runs, read_metrics};

#[derive(clap::Args)]
pub struct Args {
    /// The trainer's metrics file: one JSON object per line with `step` and any of
    /// `loss`, `lr`, `eval_loss`, `eval_loss_by_dataset`. Several files: their training
    /// and held-out losses side by side.
    #[arg(required = true)]
    metrics: Vec<PathBuf>,
    /// A name per metrics file, in order, for the legend (default: each file's folder).
    #[arg(long)]
    label: Vec<String>,
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
    let size = (args.width, args.height);
    if let [metrics] = &args.metrics[..] {
        let metrics = read_metrics(metrics)?;
        plot_metrics(&metrics, &args.out, size)?;
        eprintln!(
            "wrote {} ({} loss, {} eval loss, {} lr points)",
            args.out.display(),
            metrics.loss.len(),
            metrics.eval_loss.len(),
            metrics.lr.len()
        );
        return Ok(());
    }
    if !args.label.is_empty() && args.label.len() != args.metrics.len() {
        bail!(
            "{} --label for {} metrics files: give one per file, or none",
            args.label.len(),
            args.metrics.len()
        );
    }
    let runs = args
        .metrics
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let label = args
                .label
                .get(i)
                .cloned()
                .unwrap_or_else(|| folder_name(path));
            Ok((label, read_metrics(path)?))
        })
        .collect::<Result<Vec<_>>>()?;
    plot_runs(&runs, &args.out, size)?;
    eprintln!("wrote {} ({} runs)", args.out.display(), runs.len());
    Ok(())
}

/// The name of the folder holding a metrics file (a run's output folder).
fn folder_name(path: &Path) -> String {
    path.parent().and_then(Path::file_name).map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
