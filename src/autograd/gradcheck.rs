//! Finite-difference gradient checking, for every op's tests (and for anyone adding an
//! op). The function's output is contracted with a fixed random tensor `r`, so the
//! checked scalar is L = Σ f(x)·r; each input element is perturbed by ±eps and the
//! central difference of L (accumulated in f64) is compared with the gradient that
//! backward() produced.

use super::no_grad;
use crate::rng::Rng;
use crate::{Device, Error, Result, Tensor};

#[derive(Clone, Debug)]
pub struct GradcheckConfig {
    pub eps: f32,
    pub rtol: f32,
    pub atol: f32,
    /// Elements checked per input at most (spread evenly); bounds the cost on big inputs.
    pub max_elements_per_input: usize,
    pub seed: u64,
    /// Where `f` runs (in f32): the inputs are moved there before `f` sees them.
    pub device: Device,
}

impl Default for GradcheckConfig {
    fn default() -> Self {
        GradcheckConfig {
            eps: 1e-2,
            rtol: 1e-2,
            atol: 1e-3,
            max_elements_per_input: 400,
            seed: 0x5c07d,
            device: Device::Cpu,
        }
    }
}

fn contract(out: &Tensor, r: &[f32]) -> Result<f64> {
    let o = out.to_vec_f32()?;
    Ok(o.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum())
}

/// Checks the gradient of `f` with respect to every tensor in `inputs` (f32, any shape).
/// Inputs are moved to `cfg.device` and turned into parameters before `f` sees them.
pub fn gradcheck<F>(inputs: &[Tensor], f: F, cfg: &GradcheckConfig) -> Result<()>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let on_device = |t: Tensor| t.to(cfg.device);
    let params = inputs
        .iter()
        .map(|t| Ok(on_device(t.detach())?.into_param()))
        .collect::<Result<Vec<Tensor>>>()?;
    let out = f(&params)?;
    let mut rng = Rng::new(cfg.seed);
    let r = rng.uniform_vec(out.elem_count(), -1.0, 1.0);
    let seed = on_device(Tensor::from_vec(r.clone(), out.shape().clone())?)?;
    let grads = out.backward_with(seed)?;

    let _guard = no_grad();
    for (i, p) in params.iter().enumerate() {
        let analytic = match grads.get(p) {
            Some(g) => g.to_vec_f32()?,
            None => vec![0.0; p.elem_count()],
        };
        let base = p.to_vec_f32()?;
        let n = base.len();
        let step = n.div_ceil(cfg.max_elements_per_input.max(1)).max(1);
        for j in (0..n).step_by(step) {
            let eval = |delta: f32| -> Result<f64> {
                let mut x = base.clone();
                x[j] += delta;
                let mut args = params.clone();
                args[i] = on_device(Tensor::from_vec(x, p.shape().clone())?)?;
                contract(&f(&args)?, &r)
            };
            let numeric = ((eval(cfg.eps)? - eval(-cfg.eps)?) / (2.0 * cfg.eps as f64)) as f32;
            let a = analytic[j];
            let tol = cfg.atol + cfg.rtol * a.abs().max(numeric.abs());
            // Written so that a NaN on either side fails the check.
            if (a - numeric).abs().is_nan() || (a - numeric).abs() > tol {
                return Err(Error::Autograd(format!(
                    "gradcheck on {}: input {i} (shape {}), element {j}: backward gives {a}, finite difference gives {numeric}",
                    cfg.device,
                    p.shape()
                )));
            }
        }
    }
    Ok(())
}
