//! One error type for the library. Every variant that comes from user data names the
//! file, the field (or tensor) and what was expected.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op got tensors whose shapes do not fit together.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },

    /// An op got a dtype it does not support on this device.
    #[error("{op}: dtype {got:?} is not supported here, expected {expected}")]
    DType {
        op: &'static str,
        got: crate::DType,
        expected: &'static str,
    },

    /// The requested device is not available in this build or on this machine.
    #[error("device {0} is not available: {1}")]
    Device(crate::Device, String),

    /// An op got tensors on different devices (or a host tensor where a GPU one belongs).
    #[error("{op}: {msg}")]
    DeviceMismatch { op: &'static str, msg: String },

    /// A file could not be read or written. The OS error is part of the message (not a
    /// `source`), so a report of the error chain does not print it twice.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A file's content is wrong: which file, which field or tensor, what was expected.
    #[error("{}: {field}: {msg}", path.display())]
    Format {
        path: PathBuf,
        field: String,
        msg: String,
    },

    /// A GPU kernel failed to compile or launch (on the device or the CPU emulator).
    #[error("gpu: {0}")]
    Gpu(String),

    /// Autograd misuse (backward from a non-scalar, a tensor with no graph, ...).
    #[error("autograd: {0}")]
    Autograd(String),
}

impl Error {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    pub fn format(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Format {
            path: path.into(),
            field: field.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
