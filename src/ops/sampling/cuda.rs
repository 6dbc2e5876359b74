//! Launcher of kernels/sampling.cu: the rows' choices uploaded as four f64 each, one block
//! per row, the chosen ids (4 bytes a row) the only download.

use super::{TokenChoice, OP};
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::ops::{gpu_dtype_of, on_gpu_dtype};
use crate::{Error, Result, Tensor};

/// SAMPLING_THREADS of the kernel, whose scan keeps one float per thread.
const THREADS: u32 = 1024;

/// The floats of one row's probabilities in the kernel's scratch (scratch_stride of the
/// kernel): vocab_limit rounded up to 32, so that every row starts on 128 bytes as the
/// first does and the kernel's 16-byte loads and stores apply to all rows.
fn scratch_stride(vocab_limit: usize) -> usize {
    vocab_limit.div_ceil(32) * 32
}

/// The rows' choices as the kernel reads them: per row the uniform, temperature, top_p and
/// top_k (capped at vocab_limit), four f64 that hold each exactly.
pub struct DeviceChoices {
    rules: GpuBuffer<f64>,
    rows: usize,
    vocab_limit: usize,
    any_sampled: bool,
}

impl DeviceChoices {
    /// The choices of rows restricted to ids below `vocab_limit`; fails on a choice that
    /// [`super::choose_tokens`] refuses.
    pub fn new(gpu: &Gpu, choices: &[TokenChoice], vocab_limit: usize) -> Result<DeviceChoices> {
        super::check_choices(choices)?;
        if vocab_limit == 0 {
            return Err(Error::shape(OP, "vocab_limit must be at least 1"));
        }
        let rules: Vec<f64> = choices
            .iter()
            .flat_map(|c| {
                let top_k = c.top_k.min(vocab_limit) as f64;
                [c.uniform, c.temperature as f64, c.top_p as f64, top_k]
            })
            .collect();
        Ok(DeviceChoices {
            rules: gpu.upload(&rules)?,
            rows: choices.len(),
            vocab_limit,
            any_sampled: choices.iter().any(TokenChoice::samples),
        })
    }
}

/// Writes the chosen id of each row of `logits` ([rows, vocab], rows as in `choices`) into
/// `ids`; nothing is read back.
pub fn choose_tokens_into<'l, 'i, T: GpuFloat + 'l>(
    gpu: &Gpu,
    logits: impl Into<GpuView<'l, T>>,
    vocab: usize,
    choices: &DeviceChoices,
    ids: impl Into<GpuViewMut<'i, u32>>,
) -> Result<()> {
    let (logits, ids) = (logits.into(), ids.into());
    let rows = choices.rows;
    expect_len(OP, "the logits", &logits, rows * vocab)?;
    expect_len(OP, "the ids", &ids, rows)?;
    if choices.vocab_limit > vocab {
        return Err(Error::shape(
            OP,
            format!(
                "vocab_limit {} is past the vocabulary of {vocab}",
                choices.vocab_limit
            ),
        ));
    }
    if rows == 0 {
        return Ok(());
    }
    // A sampled row writes its probabilities there; a greedy one never touches it.
    let scratch_len = if choices.any_sampled {
        rows * scratch_stride(choices.vocab_limit)
    } else {
        1
    };
    let mut scratch = gpu.alloc::<f32>(scratch_len)?;
    let args = [
        KernelArg::output(ids),
        KernelArg::output(&mut scratch),
        KernelArg::input(logits),
        KernelArg::input(&choices.rules),
        KernelArg::int(vocab)?,
        KernelArg::int(choices.vocab_limit)?,
    ];
    let blocks = u32::try_from(rows).map_err(|_| Error::shape(OP, "too many rows"))?;
    let cfg = LaunchConfig::linear(blocks, THREADS, 0);
    // SAFETY: one block per row of `vocab` logits, ids and rules of `rows` entries; the
    // scratch holds scratch_stride(vocab_limit) floats per row whenever a row samples.
    unsafe { gpu.launch(&format!("choose_tokens_{}", T::SUFFIX), cfg, &args) }
}

/// [`super::choose_tokens`] of a GPU tensor (its shape checked by the caller).
pub(super) fn choose_tokens(
    logits: &Tensor,
    choices: &[TokenChoice],
    vocab_limit: usize,
) -> Result<Vec<u32>> {
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[logits])?, T => {
        let read = logits.read_gpu(OP)?;
        let gpu = read.gpu().clone();
        let device_choices = DeviceChoices::new(&gpu, choices, vocab_limit)?;
        let mut ids = gpu.alloc::<u32>(choices.len())?;
        let vocab = logits.dims()[1];
        choose_tokens_into::<T>(&gpu, read.view(OP)?, vocab, &device_choices, &mut ids)?;
        gpu.download(&ids)
    })
}
