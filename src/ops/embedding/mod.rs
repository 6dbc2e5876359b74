//! Token embedding: gathers one row of the `[vocab, dim]` table per token id.

mod cpu;
pub mod cuda;

use crate::autograd::{Backward, Input};
use crate::backend::cpu::WeightRows;
use crate::tensor::Storage;
use crate::{Error, Result, Shape, Tensor};

/// Rows `ids` of `weight` (`[V, D]`): shape `[ids.len(), D]`, f32 on the CPU (from f32
/// or bf16 weights), the weight's dtype on a GPU. Every id must be below V.
pub fn embedding(weight: &Tensor, ids: &[u32]) -> Result<Tensor> {
    super::expect_rank("embedding", "weight", weight, 2)?;
    let (vocab, dim) = (weight.dims()[0], weight.dims()[1]);
    check_ids(ids, vocab)?;
    if weight.device().is_gpu() {
        return cuda::embedding(weight, ids);
    }
    let out = {
        let stored = weight.read_host("embedding")?;
        match super::weight_rows("embedding", stored.storage())? {
            WeightRows::F32(w) => cpu::embedding_forward(w, dim, ids),
            WeightRows::Bf16(w) => cpu::embedding_forward(w, dim, ids),
        }
    };
    Ok(Tensor::from_op(
        Storage::F32(out),
        Shape::from([ids.len(), dim]),
        &[weight],
        EmbeddingBackward::Cpu { ids: ids.to_vec() },
    ))
}

fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        None => Ok(()),
        Some(pos) => Err(Error::shape(
            "embedding",
            format!(
                "id {} at position {pos} is out of range for a weight of {vocab} rows (ids must be < {vocab})",
                ids[pos]
            ),
        )),
    }
}

/// Keeps the ids (the integer input, which gets no gradient): on the host, or on the
/// device grouped by id as the GPU backward reads them.
pub(super) enum EmbeddingBackward {
    Cpu { ids: Vec<u32> },
    Gpu(Box<cuda::DeviceTokens>),
}

impl Backward for EmbeddingBackward {
    fn name(&self) -> &'static str {
        "embedding"
    }

    fn backward(&self, grad_output: &Tensor, inputs: &[Input]) -> Result<Vec<Option<Tensor>>> {
        let weight = &inputs[0];
        let (vocab, dim) = (weight.shape().dims()[0], weight.shape().dims()[1]);
        match self {
            EmbeddingBackward::Cpu { ids } => {
                let dweight = cpu::embedding_weight_grad(&grad_output.read_f32()?, ids, vocab, dim);
                Ok(vec![Some(Tensor::from_vec(
                    dweight,
                    weight.shape().clone(),
                )?)])
            }
            EmbeddingBackward::Gpu(tokens) => Ok(vec![cuda::embedding_backward_on_gpu(
                tokens,
                grad_output,
                weight,
            )?]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{gradcheck, GradcheckConfig};
    use crate::ops::test_util::check_bf16_against_cpu;
    use crate::rng::Rng;
    use crate::DType;

    /// Weight whose element [v, d] is 100·v + d, so every gathered value names its source.
    fn labelled_weight(vocab: usize, dim: usize) -> Tensor {
        let data = (0..vocab * dim)
            .map(|i| (100 * (i / dim) + i % dim) as f32)
            .collect();
        Tensor::from_vec(data, [vocab, dim]).unwrap()
    }

    #[test]
    fn forward_gathers_the_rows_of_the_ids() {
        let ids = [4, 0, 10, 4];
        let out = embedding(&labelled_weight(11, 3), &ids).unwrap();
        assert_eq!(out.dims(), &[4, 3]);
        assert_eq!(
            out.to_vec_f32().unwrap(),
            vec![400.0, 401.0, 402.0, 0.0, 1.0, 2.0, 1000.0, 1001.0, 1002.0, 400.0, 401.0, 402.0]
        );
    }

    #[test]
    fn repeated_ids_accumulate_their_gradients() {
        let weight = labelled_weight(5, 2).into_param();
        let ids = [3, 1, 3, 3];
        let upstream = vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0];
        let grads = embedding(&weight, &ids)
            .unwrap()
            .backward_with(Tensor::from_vec(upstream, [4, 2]).unwrap())
            .unwrap();
        assert_eq!(
            grads.get(&weight).unwrap().to_vec_f32().unwrap(),
            vec![0.0, 0.0, 2.0, 20.0, 0.0, 0.0, 8.0, 80.0, 0.0, 0.0]
        );
    }

    crate::device_tests! {
        fn gradcheck_with_repeated_ids(device: Device) {
            let mut rng = Rng::new(13);
            let weight = Tensor::from_vec(rng.normal_vec(11 * 13, 1.0), [11, 13]).unwrap();
            let ids = [4, 0, 10, 4, 7, 4, 2, 0, 9];
            gradcheck(
                &[weight],
                |t| embedding(&t[0], &ids),
                &GradcheckConfig { device, ..Default::default() },
            )
            .unwrap();
        }
    }

    #[test]
    fn no_ids_give_an_empty_output() {
        let out = embedding(&labelled_weight(11, 13), &[]).unwrap();
        assert_eq!(out.dims(), &[0, 13]);
    }

    #[test]
    fn id_out_of_range_names_the_id_its_position_and_the_vocabulary() {
        let err = embedding(&labelled_weight(11, 13), &[3, 10, 11, 12])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("id 11") && err.contains("position 2") && err.contains("11 rows"),
            "{err}"
        );
    }

    #[test]
    fn weight_of_rank_1_is_an_error() {
        let weight = Tensor::zeros([11], DType::F32);
        let err = embedding(&weight, &[0]).unwrap_err().to_string();
        assert!(err.contains("weight") && err.contains("[11]"), "{err}");
    }

    #[test]
    fn bf16_weight_gathers_widened_rows() {
        // Integers below 256 are exact in bf16.
        let data = (0..11 * 3).map(|i| (i * 7) as f32).collect();
        let weight = Tensor::from_vec(data, [11, 3])
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let out = embedding(&weight, &[10, 2]).unwrap();
        assert_eq!(out.dtype(), DType::F32);
        assert_eq!(
            out.to_vec_f32().unwrap(),
            vec![210.0, 217.0, 224.0, 42.0, 49.0, 56.0]
        );
    }

    #[test]
    fn f16_weight_is_an_error() {
        let weight = Tensor::zeros([11, 13], DType::F16);
        let err = embedding(&weight, &[0]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DType {
                    op: "embedding",
                    got: DType::F16,
                    ..
                }
            ),
            "{err}"
        );
    }

    crate::gpu_tests! {
        fn bf16_matches_the_f32_cpu_op_within_rounding(device: Device) {
            let ids = [4, 0, 10, 4, 7, 4, 2, 0, 9];
            let f = |t: &[Tensor]| embedding(&t[0], &ids);
            check_bf16_against_cpu(device, &[&[11, 130]], f, 2e-2);
        }
    }
}
