//! The tape. Every recorded op leaves a `Node` on its output tensor: the op's backward
//! (holding what it saved of the forward) and, for each input, only what the tape needs
//! to route gradients (its identity, shape and producing node), never its data. The nodes
//! reachable from a loss form the tape; `backward` walks them in reverse topological
//! order, runs each op's backward once and drops what it saved as it goes, and adds each
//! parameter's gradient into the parameter's gradient buffer (or returns it).
//!
//! Ops are coarse (one RMSNorm, one attention, one fused LM head + cross-entropy), so the
//! tape of a whole Qwen2 forward is a few hundred nodes. [`checkpoint`] trades compute for
//! memory: a checkpointed block keeps only its inputs and re-runs its forward inside the
//! backward.

mod gradcheck;

pub use gradcheck::{gradcheck, GradcheckConfig};

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::tensor::TensorId;
use crate::{Error, Result, Shape, Tensor};

/// The backward half of an op. Ops save whatever they need from the forward (inputs
/// included) in the struct that implements this; the tape keeps nothing else alive.
pub trait Backward: Send + Sync {
    fn name(&self) -> &'static str;

    /// Gradients with respect to each input, in input order; `None` where an input gets
    /// none (it does not require one: [`Input::requires_grad`]). An op may add a
    /// parameter's gradient straight into the parameter's gradient buffer
    /// ([`Input::grad_buffer`]) and return `None` for it.
    fn backward(&self, grad_output: &Tensor, inputs: &[Input]) -> Result<Vec<Option<Tensor>>>;
}

/// What the tape knows of an op's input.
pub struct Input {
    id: TensorId,
    shape: Shape,
    node: Option<Arc<Node>>,
    is_param: bool,
    grad_buffer: Option<Tensor>,
}

impl Input {
    fn of(t: &Tensor) -> Input {
        Input {
            id: t.id(),
            shape: t.shape().clone(),
            node: t.node().cloned(),
            is_param: t.is_param(),
            grad_buffer: t.grad_buffer().cloned(),
        }
    }

    pub fn requires_grad(&self) -> bool {
        self.is_param || self.node.is_some()
    }

    /// The buffer this parameter's gradient is added into, when it has one.
    pub fn grad_buffer(&self) -> Option<&Tensor> {
        self.grad_buffer.as_ref()
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
}

/// One recorded op: how to differentiate it, and what it was applied to.
pub struct Node {
    output: TensorId,
    name: &'static str,
    /// Taken when the backward runs, so that what the op saved is freed right after.
    op: Mutex<Option<Box<dyn Backward>>>,
    inputs: Vec<Input>,
}

impl Node {
    /// The identity of the tensor this node made.
    pub(crate) fn output(&self) -> TensorId {
        self.output
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The node of an op applied to `inputs`, when gradients are being recorded and an input
/// needs one.
pub(crate) fn record(inputs: &[&Tensor], op: impl Backward + 'static) -> Option<Arc<Node>> {
    if !is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
        return None;
    }
    Some(Arc::new(Node {
        output: TensorId::next(),
        name: op.name(),
        op: Mutex::new(Some(Box::new(op))),
        inputs: inputs.iter().map(|t| Input::of(t)).collect(),
    }))
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops run now are recorded for backward.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous recording state when dropped.
pub struct GradModeGuard {
    previous: bool,
}

/// Turns recording off until dropped (inference, and the backward pass itself).
pub fn no_grad() -> GradModeGuard {
    set_grad_enabled(false)
}

/// Turns recording on until dropped (a checkpointed block re-running its forward inside
/// the backward).
pub fn enable_grad() -> GradModeGuard {
    set_grad_enabled(true)
}

fn set_grad_enabled(on: bool) -> GradModeGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(on));
    GradModeGuard { previous }
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Gradients of the parameters without a gradient buffer, keyed by tensor identity.
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
        let sum = match self.0.remove(&id) {
            None => grad,
            Some(existing) => crate::ops::add::sum(&existing, &grad)?,
        };
        self.0.insert(id, sum);
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

/// The nodes reachable from `root`, each after every node it reads.
fn topological_order(root: &Arc<Node>) -> Vec<Arc<Node>> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    // Iterative post-order DFS: (node, inputs already pushed?)
    let mut stack = vec![(root.clone(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !visited.insert(node.output) {
            continue;
        }
        stack.push((node.clone(), true));
        for input in &node.inputs {
            if let Some(n) = &input.node {
                if !visited.contains(&n.output) {
                    stack.push((n.clone(), false));
                }
            }
        }
    }
    order
}

pub(crate) fn backward(root: &Tensor, seed: Tensor) -> Result<Gradients> {
    if seed.shape() != root.shape() || seed.device() != root.device() {
        return Err(Error::Autograd(format!(
            "the seed gradient {seed:?} does not match the output {root:?} in shape and device"
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
    let Some(root_node) = root.node() else {
        // The loss is a parameter itself.
        deliver(&mut grads, &Input::of(root), seed)?;
        return Ok(grads);
    };
    grads.0.insert(root.id(), seed);
    for node in topological_order(root_node).iter().rev() {
        // Interior gradients are dropped as soon as they are consumed.
        let Some(grad) = grads.0.remove(&node.output) else {
            continue;
        };
        let op = node
            .op
            .lock()
            .expect("a node's lock is never poisoned")
            .take()
            .ok_or_else(|| {
                Error::Autograd(format!(
                    "{}: this graph was differentiated already (backward frees what the forward saved as it goes): run the forward again",
                    node.name
                ))
            })?;
        let input_grads = op.backward(&grad, &node.inputs)?;
        drop(op);
        if input_grads.len() != node.inputs.len() {
            return Err(Error::Autograd(format!(
                "{} returned {} gradients for {} inputs",
                node.name,
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
                    node.name,
                    g.shape(),
                    input.shape()
                )));
            }
            deliver(&mut grads, input, g)?;
        }
    }
    Ok(grads)
}

/// Adds an input's gradient where it goes: its gradient buffer, or the map.
fn deliver(grads: &mut Gradients, input: &Input, g: Tensor) -> Result<()> {
    match &input.grad_buffer {
        Some(buffer) => crate::ops::add::add_into(buffer, &g),
        None => grads.accumulate(input.id, g),
    }
}

/// The block `f` applied to `inputs` with its activations recomputed in the backward
/// instead of kept: the forward runs without recording (only `inputs` are saved), and
/// the backward re-runs `f` with recording on and differentiates through that second
/// run. `f` must compute the same thing each time (our kernels are deterministic), and
/// every tensor it differentiates must be among `inputs` (a layer's activations and its
/// parameters): parameters with a gradient buffer get their gradient there.
pub fn checkpoint<F>(inputs: &[Tensor], f: F) -> Result<Tensor>
where
    F: Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
{
    let out = {
        let _off = no_grad();
        f(inputs)?
    };
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let backward = CheckpointBackward {
        inputs: inputs.to_vec(),
        f: Box::new(f),
    };
    Ok(out.with_node(record(&refs, backward)))
}

struct CheckpointBackward {
    inputs: Vec<Tensor>,
    #[allow(clippy::type_complexity)]
    f: Box<dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync>,
}

impl Backward for CheckpointBackward {
    fn name(&self) -> &'static str {
        "checkpoint"
    }

    fn backward(&self, grad_output: &Tensor, inputs: &[Input]) -> Result<Vec<Option<Tensor>>> {
        let leaves = self
            .inputs
            .iter()
            .zip(inputs)
            .map(
                |(t, meta)| match (meta.requires_grad(), meta.grad_buffer()) {
                    (false, _) => Ok(t.detach()),
                    (true, Some(buffer)) => t.detach().into_param_with_grad(buffer.clone()),
                    (true, None) => Ok(t.detach().into_param()),
                },
            )
            .collect::<Result<Vec<_>>>()?;
        let out = {
            let _on = enable_grad();
            (self.f)(&leaves)?
        };
        let mut grads = out.backward_with(grad_output.clone())?;
        Ok(leaves.iter().map(|l| grads.remove(l)).collect())
    }
}
