use half::{bf16, f16};

use super::DType;

/// The bytes behind a CPU tensor (a GPU tensor's are a device buffer: `gpu::GpuData`).
#[derive(Clone, Debug)]
pub enum Storage {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::BF16(_) => DType::BF16,
            Storage::F16(_) => DType::F16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::BF16(v) => v.len(),
            Storage::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn zeros(dtype: DType, len: usize) -> Self {
        match dtype {
            DType::F32 => Storage::F32(vec![0.0; len]),
            DType::BF16 => Storage::BF16(vec![bf16::ZERO; len]),
            DType::F16 => Storage::F16(vec![f16::ZERO; len]),
        }
    }

    /// Decodes little-endian raw bytes (as in a safetensors file) of the given dtype.
    /// The caller checks that the length is a multiple of the element size.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Self {
        match dtype {
            DType::F32 => Storage::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DType::BF16 => Storage::BF16(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            DType::F16 => Storage::F16(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
        }
    }

    /// Raw little-endian bytes, for writing safetensors.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Storage::F32(v) => bytemuck::cast_slice(v).to_vec(),
            Storage::BF16(v) => bytemuck::cast_slice(v).to_vec(),
            Storage::F16(v) => bytemuck::cast_slice(v).to_vec(),
        }
    }

    /// Elements `range`, copied.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Storage {
        match self {
            Storage::F32(v) => Storage::F32(v[range].to_vec()),
            Storage::BF16(v) => Storage::BF16(v[range].to_vec()),
            Storage::F16(v) => Storage::F16(v[range].to_vec()),
        }
    }

    /// Overwrites elements `range` with `source` (same dtype and length).
    pub fn copy_range_from(
        &mut self,
        range: std::ops::Range<usize>,
        source: &Storage,
    ) -> crate::Result<()> {
        match (self, source) {
            (Storage::F32(t), Storage::F32(s)) => t[range].copy_from_slice(s),
            (Storage::BF16(t), Storage::BF16(s)) => t[range].copy_from_slice(s),
            (Storage::F16(t), Storage::F16(s)) => t[range].copy_from_slice(s),
            (t, s) => {
                return Err(crate::Error::DType {
                    op: "copy_range_from",
                    got: s.dtype(),
                    expected: t.dtype().safetensors_name(),
                })
            }
        }
        Ok(())
    }

    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            Storage::F32(v) => v.clone(),
            Storage::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Storage::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    pub fn to_dtype(&self, dtype: DType) -> Storage {
        if dtype == self.dtype() {
            return self.clone();
        }
        let f = self.to_f32_vec();
        match dtype {
            DType::F32 => Storage::F32(f),
            DType::BF16 => Storage::BF16(f.iter().map(|&x| bf16::from_f32(x)).collect()),
            DType::F16 => Storage::F16(f.iter().map(|&x| f16::from_f32(x)).collect()),
        }
    }
}
