//! Launchers of kernels/embedding.cu: row gather forward; backward grouped by id on the
//! host, so each distinct id's gradient row is one deterministic sum.

use crate::backend::cuda::{expect_len, Gpu, GpuBuffer, GpuFloat, KernelArg, LaunchConfig};
use crate::{Error, Result};

const THREADS: u32 = 128;

/// Rows `ids` of `weight` ([vocab, dim]).
pub fn embedding_forward<T: GpuFloat>(
    gpu: &Gpu,
    weight: &GpuBuffer<T>,
    dim: usize,
    ids: &[u32],
) -> Result<GpuBuffer<T>> {
    let vocab = check(weight, dim, ids)?;
    let mut out = gpu.zeros::<T>(ids.len() * dim)?;
    if ids.is_empty() {
        return Ok(out);
    }
    let ids_on_gpu = gpu.upload(&as_i32(ids, vocab)?)?;
    let args = [
        KernelArg::output(&mut out),
        KernelArg::input(weight),
        KernelArg::input(&ids_on_gpu),
        KernelArg::int(dim)?,
    ];
    let cfg = LaunchConfig::linear(grid(ids.len())?, THREADS, 0);
    // SAFETY: out holds ids.len() rows of dim, every id is below vocab (checked).
    unsafe { gpu.launch(&format!("embedding_forward_{}", T::SUFFIX), cfg, &args) }?;
    Ok(out)
}

/// Writes (or, with `accumulate`, adds) the weight gradient into `dweight` ([vocab, dim],
/// f32); rows of ids that do not occur are left as they are (zeroed first when not
/// accumulating).
pub fn embedding_backward<T: GpuFloat>(
    gpu: &Gpu,
    grad: &GpuBuffer<T>,
    ids: &[u32],
    dim: usize,
    dweight: &mut GpuBuffer<f32>,
    accumulate: bool,
) -> Result<()> {
    let vocab = check(dweight, dim, ids)?;
    expect_len("embedding_backward", "the gradient", grad, ids.len() * dim)?;
    if !accumulate {
        *dweight = gpu.zeros(vocab * dim)?;
    }
    if ids.is_empty() {
        return Ok(());
    }
    let (distinct, start, order) = group_by_id(&as_i32(ids, vocab)?);
    let (distinct_gpu, start_gpu, order_gpu) = (
        gpu.upload(&distinct)?,
        gpu.upload(&start)?,
        gpu.upload(&order)?,
    );
    let args = [
        KernelArg::output(dweight),
        KernelArg::input(grad),
        KernelArg::input(&distinct_gpu),
        KernelArg::input(&start_gpu),
        KernelArg::input(&order_gpu),
        KernelArg::int(dim)?,
        KernelArg::I32(1),
    ];
    let cfg = LaunchConfig::linear(grid(distinct.len())?, THREADS, 0);
    // SAFETY: one block per distinct id, each id below vocab; start has one more entry
    // than distinct and indexes order, whose entries are token indices below ids.len().
    unsafe { gpu.launch(&format!("embedding_backward_{}", T::SUFFIX), cfg, &args) }
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

/// The vocabulary size of `table` ([vocab, dim]).
fn check<T: GpuFloat>(table: &GpuBuffer<T>, dim: usize, ids: &[u32]) -> Result<usize> {
    if dim == 0 || !table.len().is_multiple_of(dim) {
        return Err(Error::shape(
            "embedding",
            format!(
                "a table of {} elements is not rows of width {dim}",
                table.len()
            ),
        ));
    }
    i32::try_from(ids.len()).map_err(|_| Error::shape("embedding", "too many tokens"))?;
    Ok(table.len() / dim)
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
            let w = gpu.upload(&weight).unwrap();
            let out = embedding_forward(&gpu, &w, dim, &ids).unwrap();
            assert_eq!(gpu.download(&out).unwrap(), out_ref);
            let mut dw = gpu.upload(&vec![9.0f32; vocab * dim]).unwrap();
            embedding_backward(&gpu, &gpu.upload(&grad).unwrap(), &ids, dim, &mut dw, false)
                .unwrap();
            assert_close_abs(&gpu.download(&dw).unwrap(), &dw_ref, 1e-5);
            embedding_backward(&gpu, &gpu.upload(&grad).unwrap(), &ids, dim, &mut dw, true)
                .unwrap();
            let twice: Vec<f32> = dw_ref.iter().map(|g| 2.0 * g).collect();
            assert_close_abs(&gpu.download(&dw).unwrap(), &twice, 1e-5);

            let w16: Vec<bf16> = weight.iter().map(|&v| bf16::from_f32(v)).collect();
            let out16 = embedding_forward(&gpu, &gpu.upload(&w16).unwrap(), dim, &ids).unwrap();
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
        let w = gpu.zeros::<f32>(4 * 3).unwrap();
        let err = embedding_forward(&gpu, &w, 3, &[1, 4]).unwrap_err();
        assert!(err.to_string().contains("token id 4"), "{err}");
    }
}
