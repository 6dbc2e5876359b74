//! One decoder layer on the GPU: its forward, keeping what the backward reads, and its
//! backward, adding the layer's weight gradients into the flat gradient buffer.

use super::layout::{LayerRanges, LinearRanges};
use super::{view, view_mut, ComputeType, DeviceBatch};
use crate::backend::cuda::{Gpu, GpuBuffer};
use crate::model::ModelConfig;
use crate::ops::add::cuda::add_assign;
use crate::ops::attention::cuda::{attention_backward, attention_forward};
use crate::ops::linear::cuda::{bias_grad, linear_backward, linear_forward};
use crate::ops::rmsnorm::cuda::{rmsnorm_backward, rmsnorm_forward};
use crate::ops::rope::cuda::rope_in_place;
use crate::ops::swiglu::cuda::{swiglu_backward, swiglu_forward};
use crate::Result;

/// A layer's parameters, as ranges of the flat buffers.
pub(super) struct GpuLayer<'a> {
    pub config: &'a ModelConfig,
    pub ranges: &'a LayerRanges,
}

/// What the backward reads of one layer's forward: everything, or (recomputing) only the
/// layer's input.
pub enum Saved<T: ComputeType> {
    Input(GpuBuffer<T>),
    Full(Box<Activations<T>>),
}

/// A layer's forward, tensor by tensor, for `n` tokens.
pub struct Activations<T: ComputeType> {
    /// The input [n, hidden], its norm and the norm's 1/rms.
    x: GpuBuffer<T>,
    h1: GpuBuffer<T>,
    rstd1: GpuBuffer<f32>,
    /// Rotated q [n, Hq, Dh] and k [n, Hkv, Dh]; v [n, Hkv, Dh].
    q: GpuBuffer<T>,
    k: GpuBuffer<T>,
    v: GpuBuffer<T>,
    /// The attention's output [n, Hq·Dh] and the log-sum-exp of its score rows.
    attention: GpuBuffer<T>,
    lse: GpuBuffer<f32>,
    /// The residual after attention, its norm and 1/rms.
    x1: GpuBuffer<T>,
    h2: GpuBuffer<T>,
    rstd2: GpuBuffer<f32>,
    gate: GpuBuffer<T>,
    up: GpuBuffer<T>,
    /// silu(gate) · up.
    act: GpuBuffer<T>,
}

/// Widths of a layer's tensors: hidden, q (Hq·Dh), k and v (Hkv·Dh), MLP.
struct Widths {
    hidden: usize,
    q: usize,
    kv: usize,
    mlp: usize,
}

impl GpuLayer<'_> {
    fn widths(&self) -> Widths {
        let c = self.config;
        Widths {
            hidden: c.hidden_size,
            q: c.num_attention_heads * c.head_dim,
            kv: c.num_key_value_heads * c.head_dim,
            mlp: c.intermediate_size,
        }
    }

    /// The layer's output for input `x`, and what its backward needs.
    pub fn forward<T: ComputeType>(
        &self,
        gpu: &Gpu,
        w: &GpuBuffer<T>,
        batch: &DeviceBatch,
        x: GpuBuffer<T>,
        recompute: bool,
    ) -> Result<(GpuBuffer<T>, Saved<T>)> {
        let (a, mut out) = self.activations(gpu, w, batch, x)?;
        add_assign(gpu, &mut out, &a.x1)?;
        let saved = if recompute {
            Saved::Input(a.x)
        } else {
            Saved::Full(Box::new(a))
        };
        Ok((out, saved))
    }

    /// Every activation of the layer, and the MLP's output (before the residual add).
    fn activations<T: ComputeType>(
        &self,
        gpu: &Gpu,
        w: &GpuBuffer<T>,
        batch: &DeviceBatch,
        x: GpuBuffer<T>,
    ) -> Result<(Activations<T>, GpuBuffer<T>)> {
        let (c, r, wd) = (self.config, self.ranges, self.widths());
        let n = batch.tokens();
        let eps = c.rms_norm_eps;
        let ln1 = view(w, &r.input_layernorm)?;
        let (h1, rstd1) = rmsnorm_forward(gpu, &x, ln1, wd.hidden, eps)?;
        let mut q = linear(gpu, &h1, w, &r.q_proj, (n, wd.hidden, wd.q))?;
        let mut k = linear(gpu, &h1, w, &r.k_proj, (n, wd.hidden, wd.kv))?;
        let v = linear(gpu, &h1, w, &r.v_proj, (n, wd.hidden, wd.kv))?;
        let heads = (c.num_attention_heads, c.num_key_value_heads);
        rope_in_place(gpu, (&mut q, &mut k), heads, &batch.rope, false)?;
        let segments = batch.segments.as_ref();
        let (attention, lse) = attention_forward(gpu, (&q, &k, &v), segments, batch.dims)?;
        let mut x1 = linear(gpu, &attention, w, &r.o_proj, (n, wd.q, wd.hidden))?;
        add_assign(gpu, &mut x1, &x)?;
        let ln2 = view(w, &r.post_attention_layernorm)?;
        let (h2, rstd2) = rmsnorm_forward(gpu, &x1, ln2, wd.hidden, eps)?;
        let mlp_in = (n, wd.hidden, wd.mlp);
        let gate = linear_forward(gpu, &h2, view(w, &r.gate_proj)?, None, mlp_in)?;
        let up = linear_forward(gpu, &h2, view(w, &r.up_proj)?, None, mlp_in)?;
        let act = swiglu_forward(gpu, &gate, &up)?;
        let down = view(w, &r.down_proj)?;
        let out = linear_forward(gpu, &act, down, None, (n, wd.mlp, wd.hidden))?;
        let a = Activations {
            x,
            h1,
            rstd1,
            q,
            k,
            v,
            attention,
            lse,
            x1,
            h2,
            rstd2,
            gate,
            up,
            act,
        };
        Ok((a, out))
    }

    /// The gradient of the layer's input from `dout`, its output's gradient; adds the
    /// layer's weight gradients into `grads`.
    pub fn backward<T: ComputeType>(
        &self,
        gpu: &Gpu,
        w: &GpuBuffer<T>,
        grads: &mut GpuBuffer<f32>,
        batch: &DeviceBatch,
        saved: Saved<T>,
        dout: GpuBuffer<T>,
    ) -> Result<GpuBuffer<T>> {
        let a = match saved {
            Saved::Full(a) => *a,
            Saved::Input(x) => self.activations(gpu, w, batch, x)?.0,
        };
        let dx1 = self.mlp_backward(gpu, w, grads, batch, &a, dout)?;
        self.attention_backward(gpu, w, grads, batch, &a, dx1)
    }

    /// The gradient of x1 (the residual after attention) from the layer output's.
    fn mlp_backward<T: ComputeType>(
        &self,
        gpu: &Gpu,
        w: &GpuBuffer<T>,
        grads: &mut GpuBuffer<f32>,
        batch: &DeviceBatch,
        a: &Activations<T>,
        dout: GpuBuffer<T>,
    ) -> Result<GpuBuffer<T>> {
        let (r, wd, n) = (self.ranges, self.widths(), batch.tokens());
        let down = (n, wd.mlp, wd.hidden);
        let dact = weight_backward(gpu, (&dout, &a.act), w, grads, &r.down_proj, down)?;
        let (dgate, dup) = swiglu_backward(gpu, &dact, &a.gate, &a.up)?;
        let mlp_in = (n, wd.hidden, wd.mlp);
        let mut dh2 = weight_backward(gpu, (&dgate, &a.h2), w, grads, &r.gate_proj, mlp_in)?;
        let dh2_up = weight_backward(gpu, (&dup, &a.h2), w, grads, &r.up_proj, mlp_in)?;
        add_assign(gpu, &mut dh2, &dh2_up)?;
        let ln = &r.post_attention_layernorm;
        self.norm_backward(gpu, (w, grads), (&dh2, &a.x1, &a.rstd2), ln, &dout)
    }

    /// The gradient of the layer's input x from x1's.
    fn attention_backward<T: ComputeType>(
        &self,
        gpu: &Gpu,
        w: &GpuBuffer<T>,
        grads: &mut GpuBuffer<f32>,
        batch: &DeviceBatch,
        a: &Activations<T>,
        dx1: GpuBuffer<T>,
    ) -> Result<GpuBuffer<T>> {
        let (c, r, wd, n) = (self.config, self.ranges, self.widths(), batch.tokens());
        let o_dims = (n, wd.q, wd.hidden);
        let dattention = linear_grads(gpu, (&dx1, &a.attention), w, grads, &r.o_proj, o_dims)?;
        let (mut dq, mut dk, dv) = attention_backward(
            gpu,
            (&a.q, &a.k, &a.v),
            (&a.attention, &a.lse, &dattention),
            batch.segments.as_ref(),
            batch.dims,
        )?;
        let heads = (c.num_attention_heads, c.num_key_value_heads);
        rope_in_place(gpu, (&mut dq, &mut dk), heads, &batch.rope, true)?;
        let (q_dims, kv_dims) = ((n, wd.hidden, wd.q), (n, wd.hidden, wd.kv));
        let mut dh1 = linear_grads(gpu, (&dq, &a.h1), w, grads, &r.q_proj, q_dims)?;
        for (dy, proj) in [(&dk, &r.k_proj), (&dv, &r.v_proj)] {
            let part = linear_grads(gpu, (dy, &a.h1), w, grads, proj, kv_dims)?;
            add_assign(gpu, &mut dh1, &part)?;
        }
        let ln = &r.input_layernorm;
        self.norm_backward(gpu, (w, grads), (&dh1, &a.x, &a.rstd1), ln, &dx1)
    }

    /// The gradient of a residual stream x from that of its norm h (with the norm's
    /// saved 1/rms) plus `skip`, the gradient reaching x past the block; adds the norm
    /// weight's gradient into `grads`.
    fn norm_backward<T: ComputeType>(
        &self,
        gpu: &Gpu,
        (w, grads): (&GpuBuffer<T>, &mut GpuBuffer<f32>),
        (dh, x, rstd): (&GpuBuffer<T>, &GpuBuffer<T>, &GpuBuffer<f32>),
        norm: &std::ops::Range<usize>,
        skip: &GpuBuffer<T>,
    ) -> Result<GpuBuffer<T>> {
        let (weight, dweight) = (view(w, norm)?, view_mut(grads, norm)?);
        let hidden = self.config.hidden_size;
        let mut dx = rmsnorm_backward(gpu, dh, x, weight, rstd, hidden, dweight, true)?;
        add_assign(gpu, &mut dx, skip)?;
        Ok(dx)
    }
}

/// `x · weightᵀ + bias` for a linear layer of the flat weights.
fn linear<T: ComputeType>(
    gpu: &Gpu,
    x: &GpuBuffer<T>,
    w: &GpuBuffer<T>,
    lin: &LinearRanges,
    dims: (usize, usize, usize),
) -> Result<GpuBuffer<T>> {
    let bias = lin.bias.as_ref().map(|b| view(w, b)).transpose()?;
    linear_forward(gpu, x, view(w, &lin.weight)?, bias, dims)
}

/// The input gradient of a linear layer without bias from its output's, `dy`; adds the
/// weight gradient into `grads`. `dims` as `linear_backward`'s: (rows, in, out).
fn weight_backward<T: ComputeType>(
    gpu: &Gpu,
    (dy, x): (&GpuBuffer<T>, &GpuBuffer<T>),
    w: &GpuBuffer<T>,
    grads: &mut GpuBuffer<f32>,
    weight: &std::ops::Range<usize>,
    dims: (usize, usize, usize),
) -> Result<GpuBuffer<T>> {
    let dweight = view_mut(grads, weight)?;
    linear_backward(gpu, dy, x, view(w, weight)?, dims, dweight, None, true)
}

/// As [`weight_backward`], adding the bias gradient too when the layer has one.
fn linear_grads<T: ComputeType>(
    gpu: &Gpu,
    (dy, x): (&GpuBuffer<T>, &GpuBuffer<T>),
    w: &GpuBuffer<T>,
    grads: &mut GpuBuffer<f32>,
    lin: &LinearRanges,
    dims: (usize, usize, usize),
) -> Result<GpuBuffer<T>> {
    let dx = weight_backward(gpu, (dy, x), w, grads, &lin.weight, dims)?;
    if let Some(b) = &lin.bias {
        bias_grad(gpu, dy, dims.2, view_mut(grads, b)?, true)?;
    }
    Ok(dx)
}
