//! Tensor: a shape, a dtype, a device and contiguous row-major storage, plus the
//! autograd node that made it (if any). Cloning a Tensor is cheap (an Arc).
//!
//! A tensor may be a view of part of a larger storage (an offset and its own element
//! count): a model's parameters, their gradients and the optimizer's moments each live
//! in one flat buffer, and each parameter is a view of its range. Views are made
//! explicitly ([`Tensor::view_of_flat`]); every op writes a new contiguous tensor.

mod dtype;
pub mod gpu;
mod shape;
mod storage;

use std::ops::{Deref, DerefMut, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use dtype::{DType, Device};
pub use gpu::{gpu_of, GpuElement};
pub use shape::Shape;
pub use storage::Storage;

use crate::autograd::{self, Backward, Node};
use crate::backend::cuda::cast::{cast_bf16_to_f32, cast_f32_to_bf16};
use crate::backend::cuda::{Gpu, GpuBuffer, GpuView, GpuViewMut};
use crate::{Error, Result};
use gpu::{GpuData, GpuStorage};

/// Identity of a tensor, used to key gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    pub(crate) fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

/// Where a tensor's bytes are.
pub(crate) enum Data {
    Host(Storage),
    Gpu(GpuStorage),
}

impl Data {
    fn dtype(&self) -> DType {
        match self {
            Data::Host(s) => s.dtype(),
            Data::Gpu(g) => g.data.dtype(),
        }
    }
}

/// A leaf whose gradient is wanted, and the buffer its gradient is added into when it has
/// one (a view of a flat gradient buffer); without one, `backward` returns its gradient.
struct Param {
    grad: Option<Tensor>,
}

struct Inner {
    id: TensorId,
    shape: Shape,
    device: Device,
    /// Shared between views (reshape, views of a flat buffer) of the same data.
    storage: Arc<RwLock<Data>>,
    /// The first element of this tensor in its storage.
    offset: usize,
    /// The op that produced this tensor, when it was recorded on the tape.
    node: Option<Arc<Node>>,
    param: Option<Param>,
}

#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(id={}, shape={}, dtype={:?}, device={}{})",
            self.0.id.0,
            self.0.shape,
            self.dtype(),
            self.0.device,
            match &self.0.node {
                Some(n) => format!(", op={}", n.name()),
                None if self.is_param() => ", param".to_string(),
                None => String::new(),
            }
        )
    }
}

/// Read access to an f32 CPU tensor's elements.
pub struct F32Read<'a> {
    guard: RwLockReadGuard<'a, Data>,
    range: Range<usize>,
}

impl Deref for F32Read<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.guard {
            Data::Host(Storage::F32(v)) => &v[self.range.clone()],
            _ => unreachable!("F32Read is only built over f32 host storage"),
        }
    }
}

/// An f32 tensor's elements on the host: read in place on the CPU, downloaded from a GPU.
pub enum HostF32<'a> {
    Cpu(F32Read<'a>),
    Downloaded(Vec<f32>),
}

impl Deref for HostF32<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            HostF32::Cpu(read) => read,
            HostF32::Downloaded(v) => v,
        }
    }
}

/// Write access to an f32 CPU tensor's elements (optimizer updates, gradient buffers).
pub struct F32Write<'a> {
    guard: RwLockWriteGuard<'a, Data>,
    range: Range<usize>,
}

impl Deref for F32Write<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.guard {
            Data::Host(Storage::F32(v)) => &v[self.range.clone()],
            _ => unreachable!("F32Write is only built over f32 host storage"),
        }
    }
}

impl DerefMut for F32Write<'_> {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut *self.guard {
            Data::Host(Storage::F32(v)) => &mut v[self.range.clone()],
            _ => unreachable!("F32Write is only built over f32 host storage"),
        }
    }
}

/// Read access to a CPU tensor's elements as stored, whatever their dtype.
pub struct HostRead<'a> {
    guard: RwLockReadGuard<'a, Data>,
    range: Range<usize>,
}

impl HostRead<'_> {
    /// The whole storage and this tensor's range of it.
    pub fn storage(&self) -> (&Storage, Range<usize>) {
        match &*self.guard {
            Data::Host(s) => (s, self.range.clone()),
            Data::Gpu(_) => unreachable!("HostRead is only built over host storage"),
        }
    }
}

/// Read access to a GPU tensor's elements.
pub struct GpuRead<'a> {
    guard: RwLockReadGuard<'a, Data>,
    range: Range<usize>,
}

impl GpuRead<'_> {
    fn storage(&self) -> &GpuStorage {
        match &*self.guard {
            Data::Gpu(g) => g,
            Data::Host(_) => unreachable!("GpuRead is only built over GPU storage"),
        }
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.storage().gpu
    }

    pub fn device(&self) -> Device {
        self.storage().device
    }

    pub fn dtype(&self) -> DType {
        self.storage().data.dtype()
    }

    /// The elements as a view of `T`; an error naming `op` when they are of another type.
    pub fn view<T: GpuElement>(&self, op: &'static str) -> Result<GpuView<'_, T>> {
        let got = self.dtype();
        let buffer = T::buffer(&self.storage().data).ok_or(Error::DType {
            op,
            got,
            expected: expected_gpu_dtype::<T>(),
        })?;
        buffer.view(self.range.clone())
    }
}

/// Write access to a GPU tensor's elements, in place.
pub struct GpuWrite<'a> {
    guard: RwLockWriteGuard<'a, Data>,
    range: Range<usize>,
}

impl GpuWrite<'_> {
    fn storage(&mut self) -> &mut GpuStorage {
        match &mut *self.guard {
            Data::Gpu(g) => g,
            Data::Host(_) => unreachable!("GpuWrite is only built over GPU storage"),
        }
    }

    pub fn gpu(&mut self) -> Arc<Gpu> {
        self.storage().gpu.clone()
    }

    pub fn view_mut<T: GpuElement>(&mut self, op: &'static str) -> Result<GpuViewMut<'_, T>> {
        let range = self.range.clone();
        let storage = self.storage();
        let got = storage.data.dtype();
        match T::buffer_mut(&mut storage.data) {
            Some(buffer) => buffer.view_mut(range),
            None => Err(Error::DType {
                op,
                got,
                expected: expected_gpu_dtype::<T>(),
            }),
        }
    }
}

fn expected_gpu_dtype<T: GpuElement>() -> &'static str {
    match T::DTYPE {
        DType::BF16 => "BF16 (a GPU op's tensors share one dtype)",
        _ => "F32 (a GPU op's tensors share one dtype)",
    }
}

impl Tensor {
    fn build(
        data: Arc<RwLock<Data>>,
        (shape, offset): (Shape, usize),
        node: Option<Arc<Node>>,
        param: Option<Param>,
    ) -> Tensor {
        let device = match &*data.read().expect("tensor storage lock poisoned") {
            Data::Host(_) => Device::Cpu,
            Data::Gpu(g) => g.device,
        };
        Tensor(Arc::new(Inner {
            id: node.as_ref().map_or_else(TensorId::next, |n| n.output()),
            shape,
            device,
            storage: data,
            offset,
            node,
            param,
        }))
    }

    fn new_data(data: Data, shape: Shape, node: Option<Arc<Node>>) -> Tensor {
        Tensor::build(Arc::new(RwLock::new(data)), (shape, 0), node, None)
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
        Ok(Tensor::new_data(Data::Host(storage), shape, None))
    }

    pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
        Tensor::from_storage(Storage::F32(data), shape)
    }

    /// Zeros on the CPU.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> Tensor {
        let shape = shape.into();
        let storage = Storage::zeros(dtype, shape.elem_count());
        Tensor::new_data(Data::Host(storage), shape, None)
    }

    /// Zeros on `device` (f32 or bf16 on a GPU).
    pub fn zeros_on(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        if device == Device::Cpu {
            return Ok(Tensor::zeros(shape, dtype));
        }
        let gpu = gpu_of(device)?;
        let n = shape.elem_count();
        let data = match dtype {
            DType::F32 => GpuData::F32(gpu.zeros(n)?),
            DType::BF16 => GpuData::BF16(gpu.zeros(n)?),
            DType::F16 => return Err(no_f16_on_gpu("zeros_on")),
        };
        Ok(Tensor::new_data(
            Data::Gpu(GpuStorage { device, gpu, data }),
            shape,
            None,
        ))
    }

    pub fn scalar(v: f32) -> Tensor {
        Tensor::new_data(Data::Host(Storage::F32(vec![v])), Shape::from(()), None)
    }

    /// A GPU buffer of `device` as a tensor; the buffer length must match the shape.
    pub(crate) fn from_gpu<T: GpuElement>(
        (device, gpu): (Device, &Arc<Gpu>),
        buffer: GpuBuffer<T>,
        shape: impl Into<Shape>,
    ) -> Tensor {
        Tensor::gpu_result((device, gpu), buffer, shape.into(), None)
    }

    /// A GPU op's output buffer as a tensor with tape node `node`.
    fn gpu_result<T: GpuElement>(
        (device, gpu): (Device, &Arc<Gpu>),
        buffer: GpuBuffer<T>,
        shape: Shape,
        node: Option<Arc<Node>>,
    ) -> Tensor {
        debug_assert_eq!(buffer.len(), shape.elem_count());
        let data = Data::Gpu(GpuStorage {
            device,
            gpu: gpu.clone(),
            data: T::wrap(buffer),
        });
        Tensor::new_data(data, shape, node)
    }

    /// The result of an op: records `op` on the tape when gradients are being recorded
    /// and any input needs a gradient.
    pub fn from_op(
        storage: Storage,
        shape: Shape,
        inputs: &[&Tensor],
        op: impl Backward + 'static,
    ) -> Tensor {
        debug_assert_eq!(storage.len(), shape.elem_count());
        Tensor::new_data(Data::Host(storage), shape, autograd::record(inputs, op))
    }

    /// [`from_op`](Self::from_op) for a GPU op's output buffer.
    pub(crate) fn from_gpu_op<T: GpuElement>(
        (device, gpu): (Device, &Arc<Gpu>),
        buffer: GpuBuffer<T>,
        shape: impl Into<Shape>,
        inputs: &[&Tensor],
        op: impl Backward + 'static,
    ) -> Tensor {
        let node = autograd::record(inputs, op);
        Tensor::gpu_result((device, gpu), buffer, shape.into(), node)
    }

    /// This tensor's data as the output of `node` (an op recorded after its output was
    /// made: an op that saves its own output without its node, a checkpointed block).
    pub(crate) fn with_node(&self, node: Option<Arc<Node>>) -> Tensor {
        let placed = (self.0.shape.clone(), self.0.offset);
        Tensor::build(self.0.storage.clone(), placed, node, None)
    }

    /// This tensor's data as the result of `op` applied to `inputs`, recorded on the tape
    /// as [`from_op`](Self::from_op) records.
    pub(crate) fn with_op(&self, inputs: &[&Tensor], op: impl Backward + 'static) -> Tensor {
        self.with_node(autograd::record(inputs, op))
    }

    /// This tensor's data as a new leaf whose gradient backward() will return: a parameter.
    pub fn into_param(self) -> Tensor {
        let shape = (self.0.shape.clone(), self.0.offset);
        Tensor::build(
            self.0.storage.clone(),
            shape,
            None,
            Some(Param { grad: None }),
        )
    }

    /// This tensor's data as a parameter whose gradient backward() adds into `grad` (f32,
    /// of this shape and device; typically a view of one flat gradient buffer) instead of
    /// returning it. Gradients of several backward calls (micro-batches) add up there.
    pub fn into_param_with_grad(self, grad: Tensor) -> Result<Tensor> {
        if grad.shape() != self.shape() || grad.device() != self.device() {
            return Err(Error::shape(
                "into_param_with_grad",
                format!(
                    "the gradient buffer {grad:?} does not match the parameter {self:?} in shape and device"
                ),
            ));
        }
        if grad.dtype() != DType::F32 {
            return Err(Error::DType {
                op: "into_param_with_grad",
                got: grad.dtype(),
                expected: "F32 (gradients accumulate in f32)",
            });
        }
        let shape = (self.0.shape.clone(), self.0.offset);
        let param = Param {
            grad: Some(grad.detach()),
        };
        Ok(Tensor::build(
            self.0.storage.clone(),
            shape,
            None,
            Some(param),
        ))
    }

    /// The same data cut off from the tape (no gradient flows through it).
    pub fn detach(&self) -> Tensor {
        let shape = (self.0.shape.clone(), self.0.offset);
        Tensor::build(self.0.storage.clone(), shape, None, None)
    }

    /// Elements `start..start + shape.elem_count()` of this (contiguous) tensor as a tensor
    /// of `shape` sharing its storage: a parameter's range of a flat buffer. Not on the
    /// tape, like any way of building a leaf.
    pub fn view_of_flat(&self, start: usize, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        let end = start + shape.elem_count();
        if end > self.elem_count() {
            return Err(Error::shape(
                "view_of_flat",
                format!(
                    "elements {start}..{end} are outside a tensor of {} elements",
                    self.elem_count()
                ),
            ));
        }
        let placed = (shape, self.0.offset + start);
        Ok(Tensor::build(self.0.storage.clone(), placed, None, None))
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
        self.lock_read().dtype()
    }

    pub fn is_param(&self) -> bool {
        self.0.param.is_some()
    }

    /// The buffer a parameter's gradient is added into, when it has one.
    pub fn grad_buffer(&self) -> Option<&Tensor> {
        self.0.param.as_ref().and_then(|p| p.grad.as_ref())
    }

    /// Whether a gradient flows back through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.is_param() || self.0.node.is_some()
    }

    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.0.node.as_ref()
    }

    /// Whether two tensors share the same storage (views of one another).
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    fn range(&self) -> Range<usize> {
        self.0.offset..self.0.offset + self.elem_count()
    }

    fn lock_read(&self) -> RwLockReadGuard<'_, Data> {
        self.0.storage.read().expect("tensor storage lock poisoned")
    }

    fn lock_write(&self) -> RwLockWriteGuard<'_, Data> {
        self.0
            .storage
            .write()
            .expect("tensor storage lock poisoned")
    }

    fn cpu_only(&self, op: &'static str) -> Error {
        Error::Device(
            self.device(),
            format!("{op} reads host memory: copy the tensor with .to(Device::Cpu) first"),
        )
    }

    /// Read access to the elements of an f32 CPU tensor.
    pub fn read_f32(&self) -> Result<F32Read<'_>> {
        let guard = self.lock_read();
        match &*guard {
            Data::Host(Storage::F32(_)) => Ok(F32Read {
                guard,
                range: self.range(),
            }),
            Data::Host(other) => Err(Error::DType {
                op: "read_f32",
                got: other.dtype(),
                expected: "F32",
            }),
            Data::Gpu(_) => Err(self.cpu_only("read_f32")),
        }
    }

    /// The elements of an f32 tensor on any device, as host memory: no copy on the CPU, a
    /// download from a GPU (results a host reads: a decode step's logits).
    pub fn read_f32_on_host(&self) -> Result<HostF32<'_>> {
        if self.device() == Device::Cpu {
            return Ok(HostF32::Cpu(self.read_f32()?));
        }
        Ok(HostF32::Downloaded(self.to_vec_f32()?))
    }

    /// Write access to the elements of an f32 CPU tensor, in place: for optimizers.
    /// Views of this tensor (and the graphs that saved it) see the change.
    pub fn write_f32(&self) -> Result<F32Write<'_>> {
        let range = self.range();
        let guard = self.lock_write();
        match &*guard {
            Data::Host(Storage::F32(_)) => Ok(F32Write { guard, range }),
            Data::Host(other) => Err(Error::DType {
                op: "write_f32",
                got: other.dtype(),
                expected: "F32",
            }),
            Data::Gpu(_) => Err(self.cpu_only("write_f32")),
        }
    }

    /// Read access to a CPU tensor's storage as it is, whatever its dtype (ops that take
    /// bf16 weights read them without a conversion).
    pub(crate) fn read_host(&self, op: &'static str) -> Result<HostRead<'_>> {
        let guard = self.lock_read();
        match &*guard {
            Data::Host(_) => Ok(HostRead {
                guard,
                range: self.range(),
            }),
            Data::Gpu(_) => Err(self.cpu_only(op)),
        }
    }

    /// Read access to a GPU tensor's buffer.
    pub(crate) fn read_gpu(&self, op: &'static str) -> Result<GpuRead<'_>> {
        let guard = self.lock_read();
        match &*guard {
            Data::Gpu(_) => Ok(GpuRead {
                guard,
                range: self.range(),
            }),
            Data::Host(_) => Err(Error::Device(
                Device::Cpu,
                format!("{op}: expected a tensor on a GPU"),
            )),
        }
    }

    /// Write access to a GPU tensor's buffer, in place.
    pub(crate) fn write_gpu(&self, op: &'static str) -> Result<GpuWrite<'_>> {
        let range = self.range();
        let guard = self.lock_write();
        match &*guard {
            Data::Gpu(_) => Ok(GpuWrite { guard, range }),
            Data::Host(_) => Err(Error::Device(
                Device::Cpu,
                format!("{op}: expected a tensor on a GPU"),
            )),
        }
    }

    /// A copy of the elements as they are stored, in host memory (a download from a GPU).
    pub fn host_storage(&self) -> Result<Storage> {
        let guard = self.lock_read();
        let range = self.range();
        match &*guard {
            Data::Host(s) => Ok(s.slice(range)),
            Data::Gpu(g) => match &g.data {
                GpuData::F32(b) => Ok(Storage::F32(g.gpu.download_view(b.view(range)?)?)),
                GpuData::BF16(b) => Ok(Storage::BF16(g.gpu.download_view(b.view(range)?)?)),
            },
        }
    }

    /// A copy of the elements, converted to f32 (downloaded from a GPU).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        if let Data::Host(Storage::F32(v)) = &*self.lock_read() {
            return Ok(v[self.range()].to_vec());
        }
        Ok(self.host_storage()?.to_f32_vec())
    }

    /// The single value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f32> {
        if self.elem_count() != 1 {
            return Err(Error::shape(
                "to_scalar",
                format!("shape {} is not a scalar", self.shape()),
            ));
        }
        Ok(self.to_vec_f32()?[0])
    }

    /// Overwrites this tensor's elements with `source`'s (same element count), converted to
    /// this tensor's dtype and moved to its device: loading a checkpoint into parameter
    /// views, rewriting a bf16 copy of master weights. Not recorded on the tape.
    pub fn copy_from(&self, source: &Tensor) -> Result<()> {
        if source.elem_count() != self.elem_count() {
            return Err(Error::shape(
                "copy_from",
                format!("{source:?} into {self:?}: element counts differ"),
            ));
        }
        let source = if source.dtype() == self.dtype() {
            source.clone()
        } else {
            source.to_dtype(self.dtype())?
        };
        let source = source.to(self.device())?;
        if source.same_storage(self) {
            return Err(Error::shape("copy_from", "source and target share storage"));
        }
        let from = source.lock_read();
        let range = self.range();
        let mut to = self.lock_write();
        match (&mut *to, &*from) {
            (Data::Host(t), Data::Host(f)) => t.copy_range_from(range, &f.slice(source.range())),
            (Data::Gpu(t), Data::Gpu(f)) => match (&mut t.data, &f.data) {
                (GpuData::F32(tb), GpuData::F32(fb)) => {
                    t.gpu.copy(tb.view_mut(range)?, fb.view(source.range())?)
                }
                (GpuData::BF16(tb), GpuData::BF16(fb)) => {
                    t.gpu.copy(tb.view_mut(range)?, fb.view(source.range())?)
                }
                _ => unreachable!("the source was converted to the target's dtype"),
            },
            _ => unreachable!("the source was moved to the target's device"),
        }
    }

    /// Sets every element to zero, in place (a step's gradient buffer).
    pub fn fill_zero(&self) -> Result<()> {
        let range = self.range();
        let mut data = self.lock_write();
        match &mut *data {
            Data::Host(s) => {
                let zeros = Storage::zeros(s.dtype(), range.len());
                s.copy_range_from(range, &zeros)
            }
            Data::Gpu(g) => match &mut g.data {
                GpuData::F32(b) => g.gpu.fill_zero(b.view_mut(range)?),
                GpuData::BF16(b) => g.gpu.fill_zero(b.view_mut(range)?),
            },
        }
    }

    /// A copy on `device` (the same tensor when it is there already). Not recorded on the
    /// tape: moves sit at the boundary (loading a model, reading results), not inside
    /// differentiated code. The GPU holds f32 and bf16; f16 is widened to f32 on the way.
    pub fn to(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        if device == Device::Cpu {
            return Tensor::from_storage(self.host_storage()?, self.shape().clone());
        }
        let gpu = gpu_of(device)?;
        let data = match self.device() {
            // Uploaded from the storage in place: a checkpoint loaded onto a GPU tensor by
            // tensor never holds a second host copy of one.
            Device::Cpu => match &*self.lock_read() {
                Data::Host(host) => upload(&gpu, host, self.range())?,
                Data::Gpu(_) => unreachable!("a CPU tensor's data is on the host"),
            },
            _ => {
                let host = self.host_storage()?;
                upload(&gpu, &host, 0..host.len())?
            }
        };
        let storage = Data::Gpu(GpuStorage { device, gpu, data });
        Ok(Tensor::new_data(storage, self.shape().clone(), None))
    }

    /// A converted copy, on the same device. Not recorded on the tape: casts sit at the
    /// boundary (loading weights, saving checkpoints), not inside differentiated code.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        let guard = self.lock_read();
        let range = self.range();
        let data = match &*guard {
            Data::Host(s) => Data::Host(s.slice(range).to_dtype(dtype)),
            Data::Gpu(g) => Data::Gpu(GpuStorage {
                device: g.device,
                gpu: g.gpu.clone(),
                data: cast_on_gpu(&g.gpu, &g.data, range, dtype)?,
            }),
        };
        Ok(Tensor::new_data(data, self.shape().clone(), None))
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
        let node = autograd::record(
            &[self],
            ReshapeBackward {
                input_shape: self.shape().clone(),
            },
        );
        let placed = (shape, self.0.offset);
        Ok(Tensor::build(self.0.storage.clone(), placed, node, None))
    }

    /// Runs backward from a scalar loss; returns the gradient of every parameter it
    /// reaches that has no gradient buffer of its own.
    pub fn backward(&self) -> Result<autograd::Gradients> {
        if self.elem_count() != 1 {
            return Err(Error::Autograd(format!(
                "backward() needs a scalar loss, got shape {}",
                self.shape()
            )));
        }
        let one = Tensor::from_vec(vec![1.0], self.shape().clone())?;
        self.backward_with(one.to(self.device())?.to_dtype(self.dtype())?)
    }

    /// Runs backward seeded with `grad` (same shape and device as self).
    pub fn backward_with(&self, grad: Tensor) -> Result<autograd::Gradients> {
        autograd::backward(self, grad)
    }
}

/// `range` of host storage as a buffer of `gpu`; f16 is widened to f32 (the GPU holds
/// f32 and bf16).
fn upload(gpu: &Gpu, host: &Storage, range: Range<usize>) -> Result<GpuData> {
    Ok(match host {
        Storage::F32(v) => GpuData::F32(gpu.upload(&v[range])?),
        Storage::BF16(v) => GpuData::BF16(gpu.upload(&v[range])?),
        Storage::F16(v) => {
            let wide: Vec<f32> = v[range].iter().map(|x| x.to_f32()).collect();
            GpuData::F32(gpu.upload(&wide)?)
        }
    })
}

fn no_f16_on_gpu(op: &'static str) -> Error {
    Error::DType {
        op,
        got: DType::F16,
        expected: "F32 or BF16 on a GPU",
    }
}

/// Elements `range` of a GPU buffer converted to `dtype`, in a new buffer.
fn cast_on_gpu(gpu: &Gpu, data: &GpuData, range: Range<usize>, dtype: DType) -> Result<GpuData> {
    Ok(match (data, dtype) {
        (GpuData::F32(b), DType::F32) => GpuData::F32(gpu.copy_of(b.view(range)?)?),
        (GpuData::BF16(b), DType::BF16) => GpuData::BF16(gpu.copy_of(b.view(range)?)?),
        (GpuData::F32(b), DType::BF16) => GpuData::BF16(cast_f32_to_bf16(gpu, b.view(range)?)?),
        (GpuData::BF16(b), DType::F32) => GpuData::F32(cast_bf16_to_f32(gpu, b.view(range)?)?),
        (_, DType::F16) => return Err(no_f16_on_gpu("to_dtype")),
    })
}

/// Reshape's gradient is the output gradient seen with the input's shape.
struct ReshapeBackward {
    input_shape: Shape,
}

impl Backward for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn backward(&self, grad_output: &Tensor, _: &[autograd::Input]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad_output.reshape(self.input_shape.clone())?)])
    }
}
