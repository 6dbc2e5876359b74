//! The tape. Every recorded op leaves a `Node` on its output tensor (the op's backward
//! and its inputs), so the tensors reachable from a loss form the tape; `backward`
//! walks it in reverse topological order and accumulates gradients.
//!
//! Ops are coarse (one RMSNorm, one attention, one fused cross-entropy), so the tape of
//! a whole Qwen2 forward is a few hundred nodes.

mod gradcheck;

pub use gradcheck::{gradcheck, GradcheckConfig};

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use crate::tensor::TensorId;
use crate::{Error, Result, Tensor};

/// The backward half of an op. Ops save whatever they need from the forward in the
/// struct that implements this.
pub trait Backward: Send + Sync {
    fn name(&self) -> &'static str;

    /// Gradients with respect to each input, in input order; `None` where an input
    /// gets none (integer-like inputs, inputs that do not require grad).
    fn backward(&self, inputs: &[Tensor], grad_output: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

/// One recorded op: how to differentiate it, and what it was applied to.
pub struct Node {
    pub op: Box<dyn Backward>,
    pub inputs: Vec<Tensor>,
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops run now are recorded for backward.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Turns recording off until dropped (inference, and the backward pass itself).
pub struct NoGradGuard {
    previous: bool,
}

pub fn no_grad() -> NoGradGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard { previous }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Gradients of the parameters, keyed by tensor identity.
#[derive(Default)]
pub struct Gradients(HashMap<TensorId, Tensor>);

impl Gradients {
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }

    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.0.remove(&t.id())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `grad` to the gradient held for `id` (or stores it).
    fn accumulate(&mut self, id: TensorId, grad: Tensor) -> Result<()> {
        match self.0.remove(&id) {
            None => {
                self.0.insert(id, grad);
            }
            Some(existing) => {
                let sum = add_f32(&existing, &grad)?;
                self.0.insert(id, sum);
            }
        }
        Ok(())
    }

    /// Multiplies every gradient by `factor` (gradient clipping). Each gradient is
    /// replaced by a scaled copy rather than scaled in place: a backward may hand the
    /// same storage to several tensors, which must not be scaled twice.
    pub fn scale(&mut self, factor: f32) -> Result<()> {
        for g in self.0.values_mut() {
            let scaled: Vec<f32> = g.read_f32()?.iter().map(|x| x * factor).collect();
            *g = Tensor::from_vec(scaled, g.shape().clone())?;
        }
        Ok(())
    }

    /// Adds every gradient of `other` into this one (gradient accumulation over
    /// micro-batches).
    pub fn add_from(&mut self, other: Gradients) -> Result<()> {
        for (id, g) in other.0 {
            self.accumulate(id, g)?;
        }
        Ok(())
    }
}

fn add_f32(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(Error::Autograd(format!(
            "gradient shapes disagree: {} vs {}",
            a.shape(),
            b.shape()
        )));
    }
    let sum: Vec<f32> = a
        .read_f32()?
        .iter()
        .zip(b.read_f32()?.iter())
        .map(|(x, y)| x + y)
        .collect();
    Tensor::from_vec(sum, a.shape().clone())
}

/// Tensors reachable from `root` through recorded nodes, each after all its inputs.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    // Iterative post-order DFS: (tensor, inputs already pushed?)
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = t.node() {
            for input in &node.inputs {
                if input.requires_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

pub(crate) fn backward(root: &Tensor, seed: Tensor) -> Result<Gradients> {
    if seed.shape() != root.shape() {
        return Err(Error::Autograd(format!(
            "seed gradient has shape {}, output has {}",
            seed.shape(),
            root.shape()
        )));
    }
    if !root.requires_grad() {
        return Err(Error::Autograd(
            "the output was not recorded on the tape: no parameter reaches it, or it was computed under no_grad"
                .into(),
        ));
    }
    let _guard = no_grad();
    let mut grads = Gradients::default();
    grads.accumulate(root.id(), seed)?;
    for t in topological_order(root).iter().rev() {
        let Some(node) = t.node() else { continue };
        // Interior gradients are dropped as soon as they are consumed.
        let Some(grad) = grads.0.remove(&t.id()) else {
            continue;
        };
        let input_grads = node.op.backward(&node.inputs, &grad)?;
        if input_grads.len() != node.inputs.len() {
            return Err(Error::Autograd(format!(
                "{} returned {} gradients for {} inputs",
                node.op.name(),
                input_grads.len(),
                node.inputs.len()
            )));
        }
        for (input, g) in node.inputs.iter().zip(input_grads) {
            let Some(g) = g else { continue };
            if !input.requires_grad() {
                continue;
            }
            if g.shape() != input.shape() {
                return Err(Error::Autograd(format!(
                    "{} produced a gradient of shape {} for an input of shape {}",
                    node.op.name(),
                    g.shape(),
                    input.shape()
                )));
            }
            grads.accumulate(input.id(), g)?;
        }
    }
    Ok(grads)
}
