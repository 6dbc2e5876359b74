//! Launchers of kernels/embedding.cu: row gather forward; backward grouped by id on the
//! host, so each distinct id's gradient row is one deterministic sum.

use super::EmbeddingBackward;
use crate::autograd::Input;
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuSlice, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::ops::{gpu_dtype_of, on_gpu_dtype, weight_grad_on_gpu};
use crate::{Error, Result, Tensor};

const THREADS: u32 = 128;

/// A batch's token ids on the device, with the grouping by id the backward needs: built
/// once per batch (the grouping is a host sort) and used by the forward and the backward.
pub struct DeviceTokens {
    ids: GpuBuffer<i32>,
    distinct: GpuBuffer<i32>,
    start: GpuBuffer<i32>,
    order: GpuBuffer<i32>,
    distinct_count: usize,
    vocab: usize,
}

impl DeviceTokens {
    /// Fails when an id is not below `vocab`.
    pub fn new(gpu: &Gpu, ids: &[u32], vocab: usize) -> Result<DeviceTokens> {
        i32::try_from(ids.len()).map_err(|_| Error::shape("embedding", "too many tokens"))?;
        let ids = as_i32(ids, vocab)?;
        let (distinct, start, order) = group_by_id(&ids);
        Ok(DeviceTokens {
            ids: gpu.upload(&ids)?,
            distinct: gpu.upload(&distinct)?,
            start: gpu.upload(&start)?,
            order: gpu.upload(&order)?,
            distinct_count: distinct.len(),
            vocab,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Rows `tokens` of `weight` ([vocab, dim]).
pub fn embedding_forward<'w, T: GpuFloat + 'w>(
    gpu: &Gpu,
    weight: impl Into<GpuView<'w, T>>,
    dim: usize,
    tokens: &DeviceTokens,
) -> Result<GpuBuffer<T>> {
    let weight = weight.into();
    check(&weight, dim, tokens)?;
    let mut out = gpu.alloc::<T>(tokens.len() * dim)?;
    if tokens.is_empty() {
        return Ok(out);
    }
    let args = [
        KernelArg::output(&mut out),
        KernelArg::input(weight),
        KernelArg::input(&tokens.ids),
        KernelArg::int(dim)?,
    ];
    let cfg = LaunchConfig::linear(grid(tokens.len())?, THREADS, 0);
    // SAFETY: out holds tokens.len() rows of dim, every id is below vocab (checked).
    unsafe { gpu.launch(&format!("embedding_forward_{}", T::SUFFIX), cfg, &args) }?;
    Ok(out)
}

/// Writes (or, with `accumulate`, adds) the weight gradient into `dweight` ([vocab, dim],
/// f32); rows of ids that do not occur are left as they are (zeroed first when not
/// accumulating).
pub fn embedding_backward<'g, 'd, T: GpuFloat + 'g>(
    gpu: &Gpu,
    grad: impl Into<GpuView<'g, T>>,
    tokens: &DeviceTokens,
    dim: usize,
    dweight: impl Into<GpuViewMut<'d, f32>>,
    accumulate: bool,
) -> Result<()> {
    let (grad, mut dweight) = (grad.into(), dweight.into());
    check(&dweight, dim, tokens)?;
    expect_len(
        "embedding_backward",
        "the gradient",
        &grad,
        tokens.len() * dim,
    )?;
    if !accumulate {
        gpu.fill_zero(&mut dweight)?;
    }
    if tokens.is_empty() {
        return Ok(());
    }
    let args = [
        KernelArg::output(dweight),
        KernelArg::input(grad),
        KernelArg::input(&tokens.distinct),
        KernelArg::input(&tokens.start),
        KernelArg::input(&tokens.order),
        KernelArg::int(dim)?,
        KernelArg::I32(1),
    ];
    let cfg = LaunchConfig::linear(grid(tokens.distinct_count)?, THREADS, 0);
    // SAFETY: one block per distinct id, each id below vocab; start has one more entry
    // than distinct and indexes order, whose entries are token indices below ids.len().
    unsafe { gpu.launch(&format!("embedding_backward_{}", T::SUFFIX), cfg, &args) }
}

/// [`super::embedding`] of a GPU weight: the rows in the weight's dtype.
pub(super) fn embedding(weight: &Tensor, ids: &[u32]) -> Result<Tensor> {
    const OP: &str = "embedding";
    let (vocab, dim) = (weight.dims()[0], weight.dims()[1]);
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[weight])?, T => {
        let rw = weight.read_gpu(OP)?;
        let gpu = rw.gpu().clone();
        let tokens = DeviceTokens::new(&gpu, ids, vocab)?;
        let out = embedding_forward::<T>(&gpu, rw.view(OP)?, dim, &tokens)?;
        let on = (rw.device(), &gpu);
        let shape = [ids.len(), dim];
        Ok(Tensor::from_gpu_op(on, out, shape, &[weight], EmbeddingBackward::Gpu(Box::new(tokens))))
    })
}

/// The weight's gradient (f32) from the output's: into its buffer, or returned.
pub(super) fn embedding_backward_on_gpu(
    tokens: &DeviceTokens,
    grad: &Tensor,
    weight: &Input,
) -> Result<Option<Tensor>> {
    const OP: &str = "embedding backward";
    let dim = weight.shape().dims()[1];
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[grad])?, T => {
        let rg = grad.read_gpu(OP)?;
        let gpu = rg.gpu().clone();
        let on = (rg.device(), &gpu);
        let ((), dweight) = weight_grad_on_gpu(OP, weight, on, |dw, accumulate| {
            embedding_backward::<T>(&gpu, rg.view::<T>(OP)?, tokens, dim, dw, accumulate)
        })?;
        Ok(dweight)
    })
}

/// The distinct ids (ascending), where each one's tokens start in `order`, and the token
/// indices ordered by id (ties in token order, so sums are in token order).
fn group_by_id(ids: &[i32]) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let mut order: Vec<i32> = (0..ids.len() as i32).collect();
    order.sort_by_key(|&t| (ids[t as usize], t));
    let mut distinct = Vec::new();
    let mut start = Vec::new();
    for (i, &t) in order.iter().enumerate() {
        let id = ids[t as usize];
        if distinct.last() != Some(&id) {
            distinct.push(id);
            start.push(i as i32);
        }
    }
    start.push(order.len() as i32);
    (distinct, start, order)
}

/// Fails unless `table` holds `tokens.vocab` rows of `dim`.
fn check(table: &impl GpuSlice, dim: usize, tokens: &DeviceTokens) -> Result<()> {
    if dim == 0 || table.len() != tokens.vocab * dim {
        return Err(Error::shape(
            "embedding",
            format!(
                "a table of {} elements is not {} rows of width {dim}",
                table.len(),
                tokens.vocab
            ),
        ));
    }
    Ok(())
}

fn as_i32(ids: &[u32], vocab: usize) -> Result<Vec<i32>> {
    ids.iter()
        .map(|&id| {
            if (id as usize) < vocab {
                Ok(id as i32)
            } else {
                Err(Error::shape(
                    "embedding",
                    format!("token id {id} is past the vocabulary of {vocab}"),
                ))
            }
        })
        .collect()
}

fn grid(blocks: usize) -> Result<u32> {
    u32::try_from(blocks).map_err(|_| Error::shape("embedding", "too many blocks"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::ops::test_util::assert_close_abs;
    use crate::rng::Rng;
    use half::bf16;

    #[test]
    fn kernels_match_the_cpu_reference() {
        let (vocab, dim) = (37, 150);
        let mut rng = Rng::new(4);
        // Repeated ids (7 three times) and ids that never occur.
        let ids: Vec<u32> = vec![7, 3, 7, 36, 0, 7, 12, 3, 5, 19, 1];
        let weight = rng.normal_vec(vocab * dim, 1.0);
        let grad = rng.normal_vec(ids.len() * dim, 1.0);
        let out_ref = super::super::cpu::embedding_forward(&weight, dim, &ids);
        let dw_ref = super::super::cpu::embedding_weight_grad(&grad, &ids, vocab, dim);
        for gpu in test_gpus() {
            let tokens = DeviceTokens::new(&gpu, &ids, vocab).unwrap();
            let w = gpu.upload(&weight).unwrap();
            let out = embedding_forward(&gpu, &w, dim, &tokens).unwrap();
            assert_eq!(gpu.download(&out).unwrap(), out_ref);
            // Written over the 9s first, then added to.
            let mut dw = gpu.upload(&vec![9.0f32; vocab * dim]).unwrap();
            let grad_gpu = gpu.upload(&grad).unwrap();
            for (accumulate, times) in [(false, 1.0), (true, 2.0)] {
                embedding_backward(&gpu, &grad_gpu, &tokens, dim, &mut dw, accumulate).unwrap();
                let want: Vec<f32> = dw_ref.iter().map(|g| times * g).collect();
                assert_close_abs(&gpu.download(&dw).unwrap(), &want, 1e-5);
            }

            let w16: Vec<bf16> = weight.iter().map(|&v| bf16::from_f32(v)).collect();
            let out16 = embedding_forward(&gpu, &gpu.upload(&w16).unwrap(), dim, &tokens).unwrap();
            let widened: Vec<f32> = gpu
                .download(&out16)
                .unwrap()
                .iter()
                .map(|h| h.to_f32())
                .collect();
            let w16_f32: Vec<f32> = w16.iter().map(|h| h.to_f32()).collect();
            assert_eq!(
                widened,
                super::super::cpu::embedding_forward(&w16_f32, dim, &ids)
            );
        }
    }

    #[test]
    fn ids_past_the_vocabulary_are_errors() {
        let gpu = Gpu::emulated().unwrap();
        let err = DeviceTokens::new(&gpu, &[1, 4], 4).err().unwrap();
        assert!(err.to_string().contains("token id 4"), "{err}");
        let tokens = DeviceTokens::new(&gpu, &[1, 3], 4).unwrap();
        let w = gpu.zeros::<f32>(5 * 3).unwrap();
        let err = embedding_forward(&gpu, &w, 3, &tokens).unwrap_err();
        assert!(err.to_string().contains("not 4 rows"), "{err}");
    }
}
