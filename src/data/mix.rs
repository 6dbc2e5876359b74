//! Weighted, deterministic interleaving of several datasets (e.g. GSM8K traces 0.7, Alpaca
//! 0.3), with a small state that a checkpoint saves for exact resume.

use crate::rng::Rng;
use crate::tokenizer::Message;
use crate::{Error, Result};

use super::formats::Row;

/// One dataset to mix: its rows and its share of the draws (weights need not sum to 1).
#[derive(Clone, Debug)]
pub struct DatasetSource {
    pub name: String,
    pub rows: Vec<Row>,
    pub weight: f64,
}

/// Deterministic weighted interleaving: each draw picks a dataset with probability ∝
/// weight (from an Rng seeded by `seed`), then that dataset's next row in an order that
/// is reshuffled at every epoch of that dataset; for a row with alternatives, one reply is
/// chosen uniformly at random each time it is drawn.
///
/// The order of a dataset's epoch is a function of (seed, dataset, epoch) alone, so the
/// state to save is only the draw generator and each dataset's epoch and position.
pub struct Mixer {
    sources: Vec<DatasetSource>,
    seed: u64,
    /// Running sums of the weights: a uniform draw in [0, total) falls in one dataset's span.
    cumulative: Vec<f64>,
    rng: Rng,
    cursors: Vec<Cursor>,
}

/// Where a dataset is in its current epoch.
struct Cursor {
    epoch: u64,
    position: usize,
    order: Vec<usize>,
}

/// Everything that decides a mixer's future draws, plus what identifies its datasets so
/// that a state cannot be restored onto different data by mistake.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MixerState {
    pub seed: u64,
    pub rng: [u64; 4],
    pub sources: Vec<SourceState>,
}

impl MixerState {
    /// Rows drawn so far, over every dataset and epoch of it.
    pub fn draws(&self) -> u64 {
        self.sources
            .iter()
            .map(|s| s.epoch * s.rows as u64 + s.position as u64)
            .sum()
    }

    /// The rows of all datasets together: the draws of one epoch of the mix.
    pub fn rows(&self) -> u64 {
        self.sources.iter().map(|s| s.rows as u64).sum()
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceState {
    pub name: String,
    pub rows: usize,
    pub weight: f64,
    pub epoch: u64,
    /// Rows of the current epoch already drawn.
    pub position: usize,
}

impl Mixer {
    pub fn new(sources: Vec<DatasetSource>, seed: u64) -> Result<Self> {
        let cumulative = check_sources(&sources)?;
        let cursors = (0..sources.len())
            .map(|source| Cursor::at(seed, source, sources[source].rows.len(), 0, 0))
            .collect();
        Ok(Mixer {
            sources,
            seed,
            cumulative,
            rng: Rng::new(seed),
            cursors,
        })
    }

    pub fn sources(&self) -> &[DatasetSource] {
        &self.sources
    }

    /// The next conversation and the index of the dataset it came from.
    pub fn next_row(&mut self) -> (usize, Vec<Message>) {
        let source = self.draw_source();
        let index = self.cursors[source].next(self.seed, source);
        let row = &self.sources[source].rows[index];
        let choice = if row.alternatives.is_empty() {
            0
        } else {
            self.rng.below(row.reply_count())
        };
        (source, row.with_reply(choice))
    }

    pub fn state(&self) -> MixerState {
        let sources = self
            .sources
            .iter()
            .zip(&self.cursors)
            .map(|(source, cursor)| SourceState {
                name: source.name.clone(),
                rows: source.rows.len(),
                weight: source.weight,
                epoch: cursor.epoch,
                position: cursor.position,
            })
            .collect();
        MixerState {
            seed: self.seed,
            rng: self.rng.state(),
            sources,
        }
    }

    /// Continues from a saved state: the following draws are exactly those that followed
    /// it. The datasets must be the same (names, row counts, weights) as when it was saved.
    pub fn restore(&mut self, state: &MixerState) -> Result<()> {
        self.check_same_sources(state)?;
        let rng = Rng::from_state(state.rng)
            .ok_or_else(|| state_error("rng", "the all-zero generator state is not valid"))?;
        let cursors = state
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| Cursor::at(state.seed, i, s.rows, s.epoch, s.position))
            .collect();
        self.seed = state.seed;
        self.rng = rng;
        self.cursors = cursors;
        Ok(())
    }

    fn check_same_sources(&self, state: &MixerState) -> Result<()> {
        let ours = self.state().sources;
        let describe = |sources: &[SourceState]| {
            let parts: Vec<String> = sources
                .iter()
                .map(|s| format!("{} ({} rows, weight {})", s.name, s.rows, s.weight))
                .collect();
            parts.join(", ")
        };
        let same = |a: &SourceState, b: &SourceState| {
            (&a.name, a.rows, a.weight) == (&b.name, b.rows, b.weight)
        };
        if ours.len() != state.sources.len()
            || !ours.iter().zip(&state.sources).all(|(a, b)| same(a, b))
        {
            return Err(state_error(
                "sources",
                format!(
                    "the saved state is for [{}], this run mixes [{}]",
                    describe(&state.sources),
                    describe(&ours)
                ),
            ));
        }
        if let Some(s) = state.sources.iter().find(|s| s.position > s.rows) {
            return Err(state_error(
                "sources",
                format!(
                    "{}: position {} is past its {} rows",
                    s.name, s.position, s.rows
                ),
            ));
        }
        Ok(())
    }

    fn draw_source(&mut self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or_default();
        let x = self.rng.uniform() * total;
        // x < total in exact arithmetic; rounding may put it at the very end, which belongs
        // to the last dataset with a positive weight.
        self.cumulative
            .iter()
            .position(|&c| x < c)
            .or_else(|| self.sources.iter().rposition(|s| s.weight > 0.0))
            .unwrap_or_default()
    }
}

impl Cursor {
    fn at(seed: u64, source: usize, rows: usize, epoch: u64, position: usize) -> Self {
        Cursor {
            epoch,
            position,
            order: shuffled(rows, seed, source, epoch),
        }
    }

    /// The next row index, starting a freshly shuffled epoch when this one is used up.
    fn next(&mut self, seed: u64, source: usize) -> usize {
        if self.position >= self.order.len() {
            self.epoch += 1;
            self.position = 0;
            self.order = shuffled(self.order.len(), seed, source, self.epoch);
        }
        self.position += 1;
        self.order[self.position - 1]
    }
}

/// A permutation of 0..rows (Fisher-Yates) from a generator of its own per (seed, dataset,
/// epoch), so it can be recomputed from the state instead of saved.
fn shuffled(rows: usize, seed: u64, source: usize, epoch: u64) -> Vec<usize> {
    // Nonzero and distinct for every (dataset, epoch), and a bijective mix of it never
    // gives 0, so no epoch's generator coincides with the draw generator Rng::new(seed).
    let stream = ((source as u64 + 1) << 40) ^ epoch;
    let mut rng = Rng::new(seed ^ mix64(stream));
    let mut order: Vec<usize> = (0..rows).collect();
    for i in (1..rows).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// SplitMix64's finalizer: a bijection on u64 that spreads nearby inputs apart.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checks the datasets and returns the running sums of their weights.
fn check_sources(sources: &[DatasetSource]) -> Result<Vec<f64>> {
    if sources.is_empty() {
        return Err(mix_error("datasets", "no dataset to mix".to_string()));
    }
    for source in sources {
        if !source.weight.is_finite() || source.weight < 0.0 {
            return Err(mix_error(
                &format!("{}.weight", source.name),
                format!("must be a finite number >= 0, got {}", source.weight),
            ));
        }
        if source.rows.is_empty() {
            return Err(mix_error(
                &source.name,
                "the dataset has no rows".to_string(),
            ));
        }
    }
    let cumulative: Vec<f64> = sources
        .iter()
        .scan(0.0, |sum, s| {
            *sum += s.weight;
            Some(*sum)
        })
        .collect();
    let total = cumulative.last().copied().unwrap_or_default();
    if !(total > 0.0 && total.is_finite()) {
        return Err(mix_error(
            "weights",
            format!("must sum to a positive finite number, got {total}"),
        ));
    }
    Ok(cumulative)
}

fn mix_error(field: &str, msg: String) -> Error {
    Error::format("data mix", field, msg)
}

fn state_error(field: &str, msg: impl Into<String>) -> Error {
    Error::format("data mix state", field, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_permutation_of_its_own() {
        let first = shuffled(50, 7, 0, 0);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(first, shuffled(50, 7, 0, 1), "epochs reshuffle");
        assert_ne!(first, shuffled(50, 7, 1, 0), "datasets differ");
        assert_eq!(
            first,
            shuffled(50, 7, 0, 0),
            "a pure function of its inputs"
        );
    }
}
