//! TensorBoard event files: TFRecord framing (length, masked CRC-32C of the length, the
//! record, masked CRC-32C of the record) around `Event` protocol buffers, each holding
//! one step's scalars as `Summary.Value.simple_value`, which is what PyTorch's
//! `SummaryWriter.add_scalar` writes and TensorBoard reads. Written by hand: the two
//! messages take a few dozen lines, and the crates that do it are unmaintained.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// The file's name; TensorBoard reads every file whose name contains "tfevents".
pub const EVENTS_FILE: &str = "events.out.tfevents.scotd";

/// The first event of every file, naming the format's version.
const FILE_VERSION: &str = "brain.Event:2";

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) by bytes, as TFRecord uses it.
const CRC32C_TABLE: [u32; 256] = crc32c_table();

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

pub fn crc32c(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        CRC32C_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8)
    })
}

/// TFRecord's mask, so that a CRC of data holding CRCs stays a good check.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// One TFRecord: `u64` length, its masked CRC, the data, the data's masked CRC (all
/// little-endian).
fn tfrecord(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut record = Vec::with_capacity(data.len() + 16);
    record.extend_from_slice(&length);
    record.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    record.extend_from_slice(data);
    record.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    record
}

/// Protocol-buffer wire encoding: the few field kinds an `Event` needs.
mod wire {
    pub fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
        varint(out, u64::from(field) << 3 | u64::from(wire_type));
    }

    pub fn double(out: &mut Vec<u8>, field: u32, value: f64) {
        key(out, field, 1);
        out.extend_from_slice(&value.to_le_bytes());
    }

    pub fn float(out: &mut Vec<u8>, field: u32, value: f32) {
        key(out, field, 5);
        out.extend_from_slice(&value.to_le_bytes());
    }

    pub fn int(out: &mut Vec<u8>, field: u32, value: u64) {
        key(out, field, 0);
        varint(out, value);
    }

    pub fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
        key(out, field, 2);
        varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }
}

/// `Event { wall_time = 1; step = 2; file_version = 3 | summary = 5 }`, where
/// `Summary { repeated Value value = 1 }` and `Value { tag = 1; simple_value = 2 }`.
fn event(wall_time: f64, step: u64, what: EventBody) -> Vec<u8> {
    let mut out = Vec::new();
    wire::double(&mut out, 1, wall_time);
    wire::int(&mut out, 2, step);
    match what {
        EventBody::FileVersion => wire::bytes(&mut out, 3, FILE_VERSION.as_bytes()),
        EventBody::Scalars(scalars) => {
            let mut summary = Vec::new();
            for (tag, value) in scalars {
                let mut entry = Vec::new();
                wire::bytes(&mut entry, 1, tag.as_bytes());
                wire::float(&mut entry, 2, *value);
                wire::bytes(&mut summary, 1, &entry);
            }
            wire::bytes(&mut out, 5, &summary);
        }
    }
    out
}

enum EventBody<'a> {
    FileVersion,
    Scalars(&'a [(String, f32)]),
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Appends events to `dir/`[`EVENTS_FILE`], each flushed as written.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Starts the file afresh with `earlier` steps' scalars (what metrics.jsonl kept of an
    /// earlier run), written atomically, then opens it for appending.
    pub fn create(dir: &Path, earlier: &[(u64, Vec<(String, f32)>)]) -> Result<Self> {
        let path = dir.join(EVENTS_FILE);
        let wall_time = now();
        let mut content = tfrecord(&event(wall_time, 0, EventBody::FileVersion));
        for (step, scalars) in earlier {
            content.extend(tfrecord(&event(
                wall_time,
                *step,
                EventBody::Scalars(scalars),
            )));
        }
        crate::io::write_atomic(&path, &content)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(EventWriter { path, file })
    }

    /// One event holding `scalars` (tag, value) at `step`.
    pub fn write(&mut self, step: u64, scalars: &[(String, f32)]) -> Result<()> {
        let record = tfrecord(&event(now(), step, EventBody::Scalars(scalars)));
        self.file
            .write_all(&record)
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check values of CRC-32C (RFC 3720's and the catalogue's "123456789").
    #[test]
    fn crc32c_matches_the_published_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn a_varint_takes_seven_bits_a_byte() {
        let mut out = Vec::new();
        wire::varint(&mut out, 300);
        assert_eq!(out, [0xAC, 0x02]);
    }
}
