//! Training data for the SFT trainer: datasets read into conversations, mixed, tokenized
//! with loss masks and batched.
//!
//! The path of one example:
//!
//! 1. [`read_rows`] reads a file (JSONL, a JSON array or parquet) in one of the
//!    [`DataFormat`]s (GSM8K, Alpaca, `messages`, or the [`TraceRecord`] lines that
//!    `scotd sample` writes) into [`Row`]s: one
//!    conversation each, ending with the assistant's reply, plus alternative replies when
//!    a question has several correct traces. Bad records are skipped or fatal
//!    ([`BadLines`]) and listed in the [`ReadReport`] with their file and line.
//! 2. A [`Mixer`] interleaves several datasets by weight, deterministically from a seed,
//!    reshuffling each dataset at every one of its epochs and picking one of a row's
//!    replies at random each time the row is drawn (SCoTD's rule). Its [`MixerState`] is
//!    saved with a checkpoint for exact resume.
//! 3. [`tokenize_row`] renders the conversation with the student's chat template and
//!    returns an [`Example`]: token ids and already-shifted targets, supervised only on
//!    the assistant's tokens and its end-of-turn token.
//! 4. A [`BatchBuilder`] packs examples into rows (positions restarting per example, one
//!    attention segment each) or pads one example per row, pulling them from an
//!    [`ExampleSource`]; [`MixedExamples`] is the source that chains steps 2 and 3.
//!
//! Resume: the builder holds nothing between batches (it only consumes an example once it
//! has placed it), so [`MixedExamples::state`] is the whole data position of a run.

mod alpaca;
mod batch;
mod foreign;
mod formats;
mod gsm8k;
mod messages;
mod mix;
mod parquet_rows;
mod questions;
mod records;
mod stream;
mod tokenize;
mod traces;

pub use batch::{BatchBuilder, BatchStats, ExampleSource, Overlong, Packing};
pub use foreign::{gsm8k_by_question, question_key, read_foreign_rows, ForeignFields, ForeignRow};
pub use formats::{
    detect, read_rows, BadLines, DataFormat, ReadReport, ReasoningFormat, Row, Skipped,
};
pub use gsm8k::{read_gsm8k_examples, read_gsm8k_solutions, split_gsm8k_answer, Gsm8kAnswer};
pub use mix::{DatasetSource, Mixer, MixerState, SourceState};
pub use questions::{read_questions, Question};
pub use records::{read_values, Location};
pub use stream::MixedExamples;
pub use tokenize::{tokenize_row, Example};
pub use traces::{TraceId, TraceRecord};
