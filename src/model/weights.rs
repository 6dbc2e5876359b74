//! Reading Hugging Face weights: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`, memory-mapped. Every error names the file and the
//! tensor; nothing in a file can make this panic.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Metadata, SafeTensorError};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::tensor::Storage;
use crate::{DType, Error, Result, Tensor};

/// One memory-mapped safetensors file with its parsed header.
struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

impl SafetensorsFile {
    fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            // Mapping a folder fails with the OS's "No such device".
            return Err(Error::format(
                path,
                "(file)",
                "is a folder, expected a safetensors file",
            ));
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file changed underneath us while loading is
        // outside what any loader can defend against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| header_error(path, &mmap, e))?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            mmap,
            header_len,
            metadata,
        })
    }

    /// The tensor, widened to f32 unless `keep_bf16` and it is stored in bf16.
    fn read(&self, name: &str, expected: &[usize], keep_bf16: bool) -> Result<Tensor> {
        let err = |msg: String| Error::format(&self.path, name, msg);
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| err("tensor not found".into()))?;
        if info.shape != expected {
            return Err(err(format!(
                "shape {:?} disagrees with config.json, expected {:?}",
                info.shape, expected
            )));
        }
        let dtype = match info.dtype {
            Dtype::F32 => DType::F32,
            Dtype::BF16 => DType::BF16,
            Dtype::F16 => DType::F16,
            other => {
                return Err(err(format!(
                    "dtype {other:?} is not supported, expected F32, BF16 or F16"
                )))
            }
        };
        let (start, end) = info.data_offsets;
        let base = 8 + self.header_len;
        let bytes = self.mmap.get(base + start..base + end).ok_or_else(|| {
            err(format!(
                "data offsets {start}..{end} run past the end of the file"
            ))
        })?;
        let stored = Storage::from_le_bytes(dtype, bytes);
        let storage = if keep_bf16 && dtype == DType::BF16 {
            stored
        } else {
            stored.to_dtype(DType::F32)
        };
        Tensor::from_storage(storage, expected.to_vec())
    }
}

/// Turns the safetensors crate's header errors into ones naming the file and, where
/// the crate does not say, the tensor whose offsets disagree with its shape.
fn header_error(path: &Path, buffer: &[u8], e: SafeTensorError) -> Error {
    let field = match &e {
        SafeTensorError::InvalidOffset(name) | SafeTensorError::TensorNotFound(name) => {
            name.clone()
        }
        SafeTensorError::TensorInvalidInfo => {
            inconsistent_tensor(buffer).unwrap_or_else(|| "(header)".to_string())
        }
        _ => "(header)".to_string(),
    };
    let msg = match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            "the file is shorter or longer than its header says (truncated?)".to_string()
        }
        SafeTensorError::TensorInvalidInfo => {
            "data_offsets do not match the size of its shape and dtype".to_string()
        }
        other => format!("invalid safetensors header: {other}"),
    };
    Error::format(path, field, msg)
}

/// The first tensor whose byte range differs from shape × dtype size.
fn inconsistent_tensor(buffer: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(buffer.get(..8)?.try_into().ok()?) as usize;
    let header: Value = serde_json::from_slice(buffer.get(8..8usize.checked_add(n)?)?).ok()?;
    header
        .as_object()?
        .iter()
        .find(|(name, info)| *name != "__metadata__" && !byte_range_fits(info))
        .map(|(name, _)| name.clone())
}

/// Whether a header entry's data_offsets span exactly its shape × dtype size.
fn byte_range_fits(info: &Value) -> bool {
    let dtype_bytes = match info.get("dtype").and_then(Value::as_str) {
        Some("F64" | "I64" | "U64") => 8,
        Some("F32" | "I32" | "U32") => 4,
        Some("F16" | "BF16" | "I16" | "U16") => 2,
        _ => 1,
    };
    let elems: Option<u64> = info
        .get("shape")
        .and_then(Value::as_array)
        .map(|dims| dims.iter().filter_map(Value::as_u64).product());
    let offsets: Option<Vec<u64>> = info
        .get("data_offsets")
        .and_then(Value::as_array)
        .map(|o| o.iter().filter_map(Value::as_u64).collect());
    match (elems, offsets.as_deref()) {
        (Some(elems), Some(&[s, e])) => e >= s && e - s == elems * dtype_bytes,
        _ => false,
    }
}

/// All weights of a checkpoint folder, by tensor name.
pub struct Weights {
    files: Vec<SafetensorsFile>,
    /// Tensor name to index in `files`.
    location: HashMap<String, usize>,
}

impl Weights {
    /// Opens `dir/model.safetensors`, or the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let paths = if index.exists() {
            shard_paths(&index)?
        } else {
            vec![dir.join("model.safetensors")]
        };
        Self::open_files(&paths)
    }

    /// Opens one safetensors file.
    pub fn open_file(path: &Path) -> Result<Self> {
        Self::open_files(&[path.to_path_buf()])
    }

    fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut location = HashMap::new();
        for path in paths {
            let file = SafetensorsFile::open(path)?;
            for name in file.metadata.tensors().keys() {
                location.insert(name.clone(), files.len());
            }
            files.push(file);
        }
        Ok(Weights { files, location })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// The tensor `name` as f32, checked against the shape config.json implies.
    pub fn read(&self, name: &str, expected_shape: &[usize]) -> Result<Tensor> {
        self.read_keeping(name, expected_shape, false)
    }

    /// As [`Weights::read`], but a bf16 tensor stays bf16 (inference reads half the
    /// bytes; the ops widen it exactly as they compute). f16 is still widened to f32.
    pub fn read_for_inference(&self, name: &str, expected_shape: &[usize]) -> Result<Tensor> {
        self.read_keeping(name, expected_shape, true)
    }

    fn read_keeping(
        &self,
        name: &str,
        expected_shape: &[usize],
        keep_bf16: bool,
    ) -> Result<Tensor> {
        match self.location.get(name) {
            Some(&i) => self.files[i].read(name, expected_shape, keep_bf16),
            None => Err(Error::format(
                self.describe(),
                name,
                "tensor not found in the checkpoint",
            )),
        }
    }

    /// The tensor `name` as f32 with whatever shape the file gives it.
    pub fn read_as_stored(&self, name: &str) -> Result<Tensor> {
        let i = *self
            .location
            .get(name)
            .ok_or_else(|| Error::format(self.describe(), name, "tensor not found"))?;
        let shape = self.files[i]
            .metadata
            .info(name)
            .map(|info| info.shape.clone())
            .unwrap_or_default();
        self.read(name, &shape)
    }

    fn describe(&self) -> PathBuf {
        match self.files.as_slice() {
            [one] => one.path.clone(),
            many => PathBuf::from(format!(
                "{} (and {} other shards)",
                many.first()
                    .map(|f| f.path.display().to_string())
                    .unwrap_or_default(),
                many.len().saturating_sub(1)
            )),
        }
    }
}

/// The distinct shard files an index names, in first-seen order.
pub(crate) fn shard_paths(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| Error::format(index, "(json)", e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            Error::format(
                index,
                "weight_map",
                "missing or not an object of tensor name to file",
            )
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut paths: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::format(index, format!("weight_map.{name}"), "expected a file name")
        })?;
        let path = dir.join(file);
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// Writes tensors to a safetensors file atomically (a temporary file renamed into place).
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let data = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.host_storage()?, t.dims().to_vec())))
        .collect::<Result<Vec<(String, Storage, Vec<usize>)>>>()?;
    let bytes: Vec<Vec<u8>> = data.iter().map(|(_, s, _)| s.to_le_bytes()).collect();
    let views = data
        .iter()
        .zip(&bytes)
        .map(|((name, storage, shape), b)| {
            let dtype = match storage.dtype() {
                DType::F32 => Dtype::F32,
                DType::BF16 => Dtype::BF16,
                DType::F16 => Dtype::F16,
            };
            safetensors::tensor::TensorView::new(dtype, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::format(path, name.clone(), e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let serialized = safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| Error::format(path, "(serialize)", e.to_string()))?;
    crate::io::write_atomic(path, &serialized)
}
