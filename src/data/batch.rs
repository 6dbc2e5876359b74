//! Micro-batches of tokenized examples: packed several to a row (positions restart at 0
//! per example, each example its own attention segment) or padded one to a row, with
//! overlong examples truncated or dropped.
//!
//! The builder holds nothing over between batches: it looks at the next example through
//! [`ExampleSource::peek`] and consumes it only once it has a place in this batch. An
//! example that does not fit stays in the source for the next batch, so the source's
//! position is the whole resume state.

use std::collections::VecDeque;

use super::tokenize::Example;
use crate::model::Batch;
use crate::ops::IGNORE_INDEX;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Packing {
    Pack,
    Pad,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlong {
    /// Keep the first `seq_len` tokens.
    Truncate,
    Drop,
}

/// Examples, one at a time, that can be looked at before being taken.
pub trait ExampleSource {
    /// The next example, not yet consumed (peeking twice gives the same one); `None` when
    /// the source is exhausted.
    fn peek(&mut self) -> Result<Option<&Example>>;
    /// Consumes the example the last `peek` returned.
    fn consume(&mut self);
}

/// A finite list of examples (tests, evaluation sets).
impl ExampleSource for VecDeque<Example> {
    fn peek(&mut self) -> Result<Option<&Example>> {
        Ok(self.front())
    }

    fn consume(&mut self) {
        self.pop_front();
    }
}

/// What one batch took: for the training log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Examples placed in the batch.
    pub examples: usize,
    /// Placed examples that were cut to `seq_len`.
    pub truncated: usize,
    /// Examples consumed but left out: too long under `Overlong::Drop`, or nothing to learn
    /// within the first `seq_len` tokens.
    pub dropped: usize,
    pub supervised_tokens: usize,
    pub padding_tokens: usize,
}

impl std::ops::AddAssign for BatchStats {
    fn add_assign(&mut self, other: Self) {
        self.examples += other.examples;
        self.truncated += other.truncated;
        self.dropped += other.dropped;
        self.supervised_tokens += other.supervised_tokens;
        self.padding_tokens += other.padding_tokens;
    }
}

/// How many examples in a row may be dropped before the builder gives up: a source whose
/// every example is dropped would otherwise keep it looping forever.
const MAX_DROPPED_IN_A_ROW: usize = 1000;

pub struct BatchBuilder {
    rows: usize,
    seq_len: usize,
    packing: Packing,
    overlong: Overlong,
    pad_id: u32,
}

/// One row being filled.
#[derive(Default)]
struct RowFill {
    input_ids: Vec<u32>,
    targets: Vec<i64>,
    positions: Vec<u32>,
    segments: Vec<u32>,
    examples: u32,
}

impl BatchBuilder {
    pub fn new(
        rows: usize,
        seq_len: usize,
        packing: Packing,
        overlong: Overlong,
        pad_id: u32,
    ) -> Self {
        BatchBuilder {
            rows,
            seq_len,
            packing,
            overlong,
            pad_id,
        }
    }

    /// Takes examples from `source` until the next one fits in no row (Pack: greedy
    /// first-fit of whole examples; Pad: one example per row) or the source ends. Returns
    /// the batch, its targets (`rows * seq_len`, [`IGNORE_INDEX`] on padding) and stats.
    /// An exhausted source with nothing placed is an error.
    pub fn build(&self, source: &mut dyn ExampleSource) -> Result<(Batch, Vec<i64>, BatchStats)> {
        if self.rows == 0 || self.seq_len == 0 {
            return Err(batch_error(format!(
                "rows ({}) and seq_len ({}) must be positive",
                self.rows, self.seq_len
            )));
        }
        let mut fills: Vec<RowFill> = (0..self.rows).map(|_| RowFill::default()).collect();
        let mut stats = BatchStats::default();
        let mut dropped_in_a_row = 0;
        while let Some(example) = source.peek()? {
            if example.targets.len() != example.len() {
                return Err(batch_error(format!(
                    "an example has {} token ids but {} targets",
                    example.len(),
                    example.targets.len()
                )));
            }
            let Some(kept) = self.kept_length(example) else {
                source.consume();
                stats.dropped += 1;
                dropped_in_a_row += 1;
                if dropped_in_a_row >= MAX_DROPPED_IN_A_ROW {
                    return Err(self.all_dropped_error());
                }
                continue;
            };
            let Some(row) = fills.iter().position(|fill| self.fits(fill, kept)) else {
                break;
            };
            fills[row].push(example, kept);
            stats.examples += 1;
            stats.truncated += usize::from(kept < example.len());
            dropped_in_a_row = 0;
            source.consume();
        }
        if stats.examples == 0 {
            return Err(batch_error("the example source is exhausted".to_string()));
        }
        self.finish(fills, stats)
    }

    /// How many tokens of the example go into a row, or None to drop it.
    fn kept_length(&self, example: &Example) -> Option<usize> {
        if example.len() > self.seq_len && self.overlong == Overlong::Drop {
            return None;
        }
        let kept = example.len().min(self.seq_len);
        let learns_something = example.targets[..kept].iter().any(|&t| t != IGNORE_INDEX);
        learns_something.then_some(kept)
    }

    fn fits(&self, fill: &RowFill, length: usize) -> bool {
        match self.packing {
            Packing::Pack => fill.input_ids.len() + length <= self.seq_len,
            Packing::Pad => fill.input_ids.is_empty(),
        }
    }

    /// Pads every row to `seq_len` and assembles the batch.
    fn finish(
        &self,
        fills: Vec<RowFill>,
        mut stats: BatchStats,
    ) -> Result<(Batch, Vec<i64>, BatchStats)> {
        let n = self.rows * self.seq_len;
        let mut input_ids = Vec::with_capacity(n);
        let mut targets = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut segments = Vec::with_capacity(n);
        for mut fill in fills {
            stats.padding_tokens += fill.pad_to(self.seq_len, self.pad_id, self.packing);
            input_ids.extend(fill.input_ids);
            targets.extend(fill.targets);
            positions.extend(fill.positions);
            segments.extend(fill.segments);
        }
        stats.supervised_tokens = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
        let segments = (self.packing == Packing::Pack).then_some(segments);
        let batch = Batch::packed(input_ids, self.rows, self.seq_len, positions, segments)?;
        Ok((batch, targets, stats))
    }

    fn all_dropped_error(&self) -> Error {
        batch_error(format!(
            "{MAX_DROPPED_IN_A_ROW} examples in a row were dropped (longer than seq_len {} with \
             overlong = {:?}, or nothing supervised within their first {} tokens): raise seq_len",
            self.seq_len, self.overlong, self.seq_len
        ))
    }
}

impl RowFill {
    /// Appends the first `kept` tokens of the example as a new segment, positions from 0.
    fn push(&mut self, example: &Example, kept: usize) {
        let segment = self.examples;
        self.input_ids.extend_from_slice(&example.input_ids[..kept]);
        self.targets.extend_from_slice(&example.targets[..kept]);
        self.positions.extend(0..kept as u32);
        self.segments.extend(std::iter::repeat_n(segment, kept));
        self.examples += 1;
    }

    /// Fills the rest of the row with padding and returns how many tokens that took.
    /// Packed rows give the padding a segment and positions of its own, so it attends to
    /// nothing real; padded rows continue the positions after their single example.
    fn pad_to(&mut self, seq_len: usize, pad_id: u32, packing: Packing) -> usize {
        let used = self.input_ids.len();
        let padding = seq_len - used;
        self.input_ids.resize(seq_len, pad_id);
        self.targets.resize(seq_len, IGNORE_INDEX);
        match packing {
            Packing::Pack => self.positions.extend(0..padding as u32),
            Packing::Pad => self.positions.extend(used as u32..seq_len as u32),
        }
        self.segments.resize(seq_len, self.examples);
        padding
    }
}

fn batch_error(msg: String) -> Error {
    Error::format("batch", "examples", msg)
}
