//! Tensors on a GPU (or its emulator): their storage is one buffer of the device, and the
//! process keeps one [`Gpu`] per device so that every tensor of a device shares its
//! context, stream and kernels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use half::bf16;

use super::{DType, Device};
use crate::backend::cuda::{Gpu, GpuBuffer, GpuFloat};
use crate::{Error, Result};

/// The one [`Gpu`] of `device` in this process, opened on first use.
pub fn gpu_of(device: Device) -> Result<Arc<Gpu>> {
    static EMULATOR: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();
    static CUDA: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    match device {
        Device::Cpu => Err(Error::Device(device, "the CPU has no GPU context".into())),
        Device::Emulator => EMULATOR
            .get_or_init(|| Gpu::emulated().map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| Error::Device(device, e)),
        Device::Cuda(ordinal) => {
            let mut open = CUDA
                .get_or_init(Default::default)
                .lock()
                .expect("the device table lock is never poisoned");
            if let Some(gpu) = open.get(&ordinal) {
                return Ok(gpu.clone());
            }
            let gpu = Arc::new(open_cuda(device, ordinal)?);
            open.insert(ordinal, gpu.clone());
            Ok(gpu)
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(device: Device, ordinal: usize) -> Result<Gpu> {
    Gpu::cuda(ordinal).map_err(|e| Error::Device(device, e.to_string()))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(device: Device, _ordinal: usize) -> Result<Gpu> {
    Err(Error::Device(
        device,
        "this scotd was built without CUDA: rebuild with `--features cuda` (or use the emulator: --device emulator)".into(),
    ))
}

/// A GPU tensor's bytes: one device buffer of its dtype.
pub enum GpuData {
    F32(GpuBuffer<f32>),
    BF16(GpuBuffer<bf16>),
}

impl GpuData {
    pub fn dtype(&self) -> DType {
        match self {
            GpuData::F32(_) => DType::F32,
            GpuData::BF16(_) => DType::BF16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            GpuData::F32(b) => b.len(),
            GpuData::BF16(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A buffer on a device, with the device's context.
pub struct GpuStorage {
    pub device: Device,
    pub gpu: Arc<Gpu>,
    pub data: GpuData,
}

/// The element types tensors hold on a GPU.
pub trait GpuElement: GpuFloat {
    const DTYPE: DType;
    fn buffer(data: &GpuData) -> Option<&GpuBuffer<Self>>;
    fn buffer_mut(data: &mut GpuData) -> Option<&mut GpuBuffer<Self>>;
    fn wrap(buffer: GpuBuffer<Self>) -> GpuData;
}

impl GpuElement for f32 {
    const DTYPE: DType = DType::F32;
    fn buffer(data: &GpuData) -> Option<&GpuBuffer<f32>> {
        match data {
            GpuData::F32(b) => Some(b),
            GpuData::BF16(_) => None,
        }
    }
    fn buffer_mut(data: &mut GpuData) -> Option<&mut GpuBuffer<f32>> {
        match data {
            GpuData::F32(b) => Some(b),
            GpuData::BF16(_) => None,
        }
    }
    fn wrap(buffer: GpuBuffer<f32>) -> GpuData {
        GpuData::F32(buffer)
    }
}

impl GpuElement for bf16 {
    const DTYPE: DType = DType::BF16;
    fn buffer(data: &GpuData) -> Option<&GpuBuffer<bf16>> {
        match data {
            GpuData::BF16(b) => Some(b),
            GpuData::F32(_) => None,
        }
    }
    fn buffer_mut(data: &mut GpuData) -> Option<&mut GpuBuffer<bf16>> {
        match data {
            GpuData::BF16(b) => Some(b),
            GpuData::F32(_) => None,
        }
    }
    fn wrap(buffer: GpuBuffer<bf16>) -> GpuData {
        GpuData::BF16(buffer)
    }
}
