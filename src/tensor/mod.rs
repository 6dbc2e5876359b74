//! Tensor: a shape, a dtype, a device and contiguous row-major storage, plus the
//! autograd node that made it (if any). Cloning a Tensor is cheap (an Arc).

mod dtype;
mod shape;
mod storage;

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use dtype::{DType, Device};
pub use shape::Shape;
pub use storage::Storage;

use crate::autograd::{self, Backward, Node};
use crate::{Error, Result};

/// Identity of a tensor, used to key gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

struct Inner {
    id: TensorId,
    shape: Shape,
    device: Device,
    /// Shared between views (reshape) of the same data.
    storage: Arc<RwLock<Storage>>,
    /// The op that produced this tensor, when it was recorded on the tape.
    node: Option<Arc<Node>>,
    /// A leaf whose gradient is wanted (a parameter).
    is_param: bool,
}

#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(id={}, shape={}, dtype={:?}, device={:?}{})",
            self.0.id.0,
            self.0.shape,
            self.dtype(),
            self.0.device,
            match &self.0.node {
                Some(n) => format!(", op={}", n.op.name()),
                None if self.0.is_param => ", param".to_string(),
                None => String::new(),
            }
        )
    }
}

/// Read access to an f32 tensor's elements.
pub struct F32Read<'a>(RwLockReadGuard<'a, Storage>);

impl Deref for F32Read<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.0 {
            Storage::F32(v) => v,
            _ => unreachable!("F32Read is only built over f32 storage"),
        }
    }
}

/// Write access to an f32 tensor's elements (optimizer updates).
pub struct F32Write<'a>(RwLockWriteGuard<'a, Storage>);

impl Deref for F32Write<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.0 {
            Storage::F32(v) => v,
            _ => unreachable!("F32Write is only built over f32 storage"),
        }
    }
}

impl DerefMut for F32Write<'_> {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut *self.0 {
            Storage::F32(v) => v,
            _ => unreachable!("F32Write is only built over f32 storage"),
        }
    }
}

impl Tensor {
    fn build(
        storage: Arc<RwLock<Storage>>,
        shape: Shape,
        node: Option<Arc<Node>>,
        is_param: bool,
    ) -> Tensor {
        Tensor(Arc::new(Inner {
            id: TensorId::next(),
            shape,
            device: Device::Cpu,
            storage,
            node,
            is_param,
        }))
    }

    /// A CPU tensor from storage; the storage length must match the shape.
    pub fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if storage.len() != shape.elem_count() {
            return Err(Error::shape(
                "tensor",
                format!("{} elements do not fill shape {}", storage.len(), shape),
            ));
        }
        Ok(Tensor::build(
            Arc::new(RwLock::new(storage)),
            shape,
            None,
            false,
        ))
    }

    pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
        Tensor::from_storage(Storage::F32(data), shape)
    }

    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> Tensor {
        let shape = shape.into();
        let storage = Storage::zeros(dtype, shape.elem_count());
        Tensor::build(Arc::new(RwLock::new(storage)), shape, None, false)
    }

    pub fn scalar(v: f32) -> Tensor {
        Tensor::build(
            Arc::new(RwLock::new(Storage::F32(vec![v]))),
            Shape::from(()),
            None,
            false,
        )
    }

    /// The result of an op: records `op` on the tape when gradients are being
    /// recorded and any input needs a gradient.
    pub fn from_op(
        storage: Storage,
        shape: Shape,
        inputs: &[&Tensor],
        op: impl Backward + 'static,
    ) -> Tensor {
        debug_assert_eq!(storage.len(), shape.elem_count());
        let node = if autograd::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
            Some(Arc::new(Node {
                op: Box::new(op),
                inputs: inputs.iter().map(|t| (*t).clone()).collect(),
            }))
        } else {
            None
        };
        Tensor::build(Arc::new(RwLock::new(storage)), shape, node, false)
    }

    /// This tensor's data as a new leaf whose gradient backward() will return: a parameter.
    pub fn into_param(self) -> Tensor {
        Tensor::build(self.0.storage.clone(), self.0.shape.clone(), None, true)
    }

    /// The same data cut off from the tape (no gradient flows through it).
    pub fn detach(&self) -> Tensor {
        Tensor::build(self.0.storage.clone(), self.0.shape.clone(), None, false)
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }

    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }

    pub fn elem_count(&self) -> usize {
        self.0.shape.elem_count()
    }

    pub fn device(&self) -> Device {
        self.0.device
    }

    pub fn dtype(&self) -> DType {
        self.0
            .storage
            .read()
            .expect("tensor storage lock poisoned")
            .dtype()
    }

    pub fn is_param(&self) -> bool {
        self.0.is_param
    }

    /// Whether a gradient flows back through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.is_param || self.0.node.is_some()
    }

    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.0.node.as_ref()
    }

    /// Whether two tensors share the same storage (views of one another).
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// Read access to the elements of an f32 tensor.
    pub fn read_f32(&self) -> Result<F32Read<'_>> {
        let guard = self.0.storage.read().expect("tensor storage lock poisoned");
        match &*guard {
            Storage::F32(_) => Ok(F32Read(guard)),
            other => Err(Error::DType {
                op: "read_f32",
                got: other.dtype(),
                expected: "F32",
            }),
        }
    }

    /// Read access to the storage as it is, whatever its dtype (ops that take bf16
    /// weights read them without a conversion).
    pub(crate) fn read_storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().expect("tensor storage lock poisoned")
    }

    /// Write access to the elements of an f32 tensor, in place: for optimizers.
    /// Views of this tensor (and the graphs that saved it) see the change.
    pub fn write_f32(&self) -> Result<F32Write<'_>> {
        let guard = self
            .0
            .storage
            .write()
            .expect("tensor storage lock poisoned");
        match &*guard {
            Storage::F32(_) => Ok(F32Write(guard)),
            other => Err(Error::DType {
                op: "write_f32",
                got: other.dtype(),
                expected: "F32",
            }),
        }
    }

    /// A copy of the elements, converted to f32.
    pub fn to_vec_f32(&self) -> Vec<f32> {
        self.0
            .storage
            .read()
            .expect("tensor storage lock poisoned")
            .to_f32_vec()
    }

    /// The single value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f32> {
        if self.elem_count() != 1 {
            return Err(Error::shape(
                "to_scalar",
                format!("shape {} is not a scalar", self.shape()),
            ));
        }
        Ok(self.to_vec_f32()[0])
    }

    /// A copy of the storage (any dtype).
    pub fn storage_clone(&self) -> Storage {
        self.0
            .storage
            .read()
            .expect("tensor storage lock poisoned")
            .clone()
    }

    /// A converted copy. Not recorded on the tape: casts sit at the boundary
    /// (loading weights, saving checkpoints), not inside differentiated code.
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        let storage = self
            .0
            .storage
            .read()
            .expect("tensor storage lock poisoned")
            .to_dtype(dtype);
        Tensor::build(
            Arc::new(RwLock::new(storage)),
            self.0.shape.clone(),
            None,
            false,
        )
    }

    /// The same data seen with another shape of the same element count. Free (a view),
    /// and differentiable.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {} as {}", self.shape(), shape),
            ));
        }
        let node = if autograd::is_grad_enabled() && self.requires_grad() {
            Some(Arc::new(Node {
                op: Box::new(ReshapeBackward),
                inputs: vec![self.clone()],
            }))
        } else {
            None
        };
        Ok(Tensor::build(self.0.storage.clone(), shape, node, false))
    }

    /// Runs backward from a scalar loss; returns the gradient of every parameter it reaches.
    pub fn backward(&self) -> Result<autograd::Gradients> {
        if self.elem_count() != 1 {
            return Err(Error::Autograd(format!(
                "backward() needs a scalar loss, got shape {}",
                self.shape()
            )));
        }
        self.backward_with(Tensor::from_vec(vec![1.0], self.shape().clone())?)
    }

    /// Runs backward seeded with `grad` (same shape as self).
    pub fn backward_with(&self, grad: Tensor) -> Result<autograd::Gradients> {
        autograd::backward(self, grad)
    }
}

/// Reshape's gradient is the output gradient seen with the input's shape.
struct ReshapeBackward;

impl Backward for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn backward(&self, inputs: &[Tensor], grad_output: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad_output.reshape(inputs[0].shape().clone())?)])
    }
}
