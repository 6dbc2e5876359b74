//! A batch of token rows as the model sees it: ids, per-token positions and, for packed
//! rows, per-token segment ids so sequences sharing a row never attend to each other.

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Batch {
    pub batch_size: usize,
    pub seq_len: usize,
    /// `batch_size * seq_len` token ids, row-major.
    pub input_ids: Vec<u32>,
    /// Position of each token within its own sequence (restarts at 0 in packed rows).
    pub positions: Vec<u32>,
    /// Segment of each token; `None` means one sequence per row.
    pub segments: Option<Vec<u32>>,
}

impl Batch {
    /// One sequence per row, positions 0..seq_len.
    pub fn new(input_ids: Vec<u32>, batch_size: usize, seq_len: usize) -> Result<Self> {
        let positions = (0..batch_size).flat_map(|_| 0..seq_len as u32).collect();
        Self::packed(input_ids, batch_size, seq_len, positions, None)
    }

    /// Rows with explicit positions and (optionally) segment ids.
    pub fn packed(
        input_ids: Vec<u32>,
        batch_size: usize,
        seq_len: usize,
        positions: Vec<u32>,
        segments: Option<Vec<u32>>,
    ) -> Result<Self> {
        let n = batch_size * seq_len;
        let check = |what: &str, len: usize| {
            if len == n {
                Ok(())
            } else {
                Err(Error::shape(
                    "batch",
                    format!("{what} has {len} entries, expected batch_size*seq_len = {batch_size}*{seq_len} = {n}"),
                ))
            }
        };
        check("input_ids", input_ids.len())?;
        check("positions", positions.len())?;
        if let Some(s) = &segments {
            check("segments", s.len())?;
        }
        Ok(Batch {
            batch_size,
            seq_len,
            input_ids,
            positions,
            segments,
        })
    }

    pub fn num_tokens(&self) -> usize {
        self.batch_size * self.seq_len
    }
}
