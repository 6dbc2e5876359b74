//! Global gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_` does it.

use rayon::prelude::*;

use crate::autograd::Gradients;
use crate::{Result, Tensor};

/// Elements per parallel chunk of the sum of squares. Fixed, so the sum is always added
/// up in the same order: a resumed run must reproduce the norm bit for bit.
const CHUNK: usize = 1 << 16;

/// The L2 norm of all the parameters' gradients taken as one vector, accumulated in f64
/// in parameter order. When it exceeds `max_norm`, every gradient is multiplied by
/// `max_norm / (norm + 1e-6)`, torch's coefficient (so, like torch, a norm within 1e-6
/// above `max_norm` is scaled by a factor a hair under 1). Returns the norm before
/// clipping. A non-finite norm is returned without scaling anything: torch would
/// multiply every gradient by NaN; the trainer should skip the step instead.
pub fn clip_grad_norm(
    params: &[(String, Tensor)],
    grads: &mut Gradients,
    max_norm: f32,
) -> Result<f32> {
    let norm = global_norm(params, grads)?;
    if !norm.is_finite() {
        return Ok(norm);
    }
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        grads.scale(coefficient)?;
    }
    Ok(norm)
}

fn global_norm(params: &[(String, Tensor)], grads: &Gradients) -> Result<f32> {
    let mut sum_of_squares = 0.0f64;
    for (_, p) in params {
        if let Some(g) = grads.get(p) {
            sum_of_squares += squares(&g.read_f32()?);
        }
    }
    Ok(sum_of_squares.sqrt() as f32)
}

fn squares(values: &[f32]) -> f64 {
    let chunk_sums: Vec<f64> = values
        .par_chunks(CHUNK)
        .map(|chunk| chunk.iter().map(|&x| x as f64 * x as f64).sum())
        .collect();
    chunk_sums.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gradients equal to `values` for fresh parameters of the same shapes.
    fn params_with_grads(values: &[Vec<f32>]) -> (Vec<(String, Tensor)>, Gradients) {
        let mut grads = Gradients::default();
        let mut params = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let p = Tensor::zeros([v.len()], crate::DType::F32).into_param();
            let seed = Tensor::from_vec(v.clone(), [v.len()]).unwrap();
            let viewed = p.reshape([v.len()]).unwrap();
            grads.add_from(viewed.backward_with(seed).unwrap()).unwrap();
            params.push((format!("p{i}"), p));
        }
        (params, grads)
    }

    fn grad_of(grads: &Gradients, p: &Tensor) -> Vec<f32> {
        grads.get(p).unwrap().to_vec_f32()
    }

    #[test]
    fn a_norm_above_the_limit_is_scaled_down_to_it() {
        // |(3, 4, 12)| = 13
        let (params, mut grads) = params_with_grads(&[vec![3.0, 4.0], vec![12.0]]);
        let norm = clip_grad_norm(&params, &mut grads, 1.0).unwrap();
        assert_eq!(norm, 13.0);
        let coefficient = 1.0f32 / (13.0 + 1e-6);
        assert_eq!(
            grad_of(&grads, &params[0].1),
            [3.0 * coefficient, 4.0 * coefficient]
        );
        assert_eq!(grad_of(&grads, &params[1].1), [12.0 * coefficient]);
    }

    #[test]
    fn clipping_leaves_tensors_that_share_a_gradient_storage_alone() {
        let p = Tensor::zeros([2], crate::DType::F32).into_param();
        let seed = Tensor::from_vec(vec![30.0, 40.0], [2]).unwrap();
        // Reshape's backward hands back a view of the seed itself.
        let mut grads = p.reshape([2]).unwrap().backward_with(seed.clone()).unwrap();
        assert!(grads.get(&p).unwrap().same_storage(&seed));
        let params = vec![("p".to_string(), p.clone())];
        clip_grad_norm(&params, &mut grads, 5.0).unwrap();
        assert_eq!(seed.to_vec_f32(), [30.0, 40.0]);
        assert!((grad_of(&grads, &p)[0] - 3.0).abs() < 1e-5);
    }

    #[test]
    fn a_norm_below_the_limit_leaves_gradients_alone() {
        let (params, mut grads) = params_with_grads(&[vec![0.3, 0.4]]);
        let norm = clip_grad_norm(&params, &mut grads, 1.0).unwrap();
        assert!((norm - 0.5).abs() < 1e-7);
        assert_eq!(grad_of(&grads, &params[0].1), [0.3, 0.4]);
    }

    #[test]
    fn a_non_finite_norm_is_reported_and_nothing_is_scaled() {
        let (params, mut grads) = params_with_grads(&[vec![1.0, f32::NAN], vec![5.0]]);
        assert!(clip_grad_norm(&params, &mut grads, 1.0).unwrap().is_nan());
        assert_eq!(grad_of(&grads, &params[1].1), [5.0]);

        let (params, mut grads) = params_with_grads(&[vec![f32::INFINITY, 2.0]]);
        assert_eq!(
            clip_grad_norm(&params, &mut grads, 1.0).unwrap(),
            f32::INFINITY
        );
        assert_eq!(grad_of(&grads, &params[0].1)[1], 2.0);
    }

    #[test]
    fn the_norm_does_not_overflow_where_f32_squares_would() {
        let (params, mut grads) = params_with_grads(&[vec![3e20, 4e20]]);
        let norm = clip_grad_norm(&params, &mut grads, 1.0).unwrap();
        assert!((norm / 5e20 - 1.0).abs() < 1e-6, "{norm}");
    }
}
