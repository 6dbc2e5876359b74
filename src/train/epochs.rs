//! Epochs of a mixed, packed dataset. An epoch is as many draws from the mix as its
//! datasets hold training rows together (with weights unlike their sizes, a small dataset
//! repeats within it and a large one is not finished). Its optimizer steps are counted by
//! running the batch builder over the run's own first epoch of examples (tokenized as the
//! run will see them, so packing is counted exactly), then rewinding the source.

use crate::data::{BatchBuilder, Example, ExampleSource, MixedExamples};
use crate::Result;

/// Steps to consume one epoch: micro-batches of `builder` over the first epoch of
/// `examples`, `grad_accum` to a step, the last step possibly partial (at least 1).
/// `examples` is left where it was.
pub fn steps_per_epoch(
    examples: &mut MixedExamples,
    builder: &BatchBuilder,
    grad_accum: usize,
) -> Result<u64> {
    let start = examples.state();
    let draws = start.rows();
    let counted = count_micro_batches(examples, builder, draws);
    examples.restore(&start)?;
    Ok(counted?.div_ceil(grad_accum as u64).max(1))
}

fn count_micro_batches(
    examples: &mut MixedExamples,
    builder: &BatchBuilder,
    draws: u64,
) -> Result<u64> {
    let mut epoch = FirstDraws {
        source: examples,
        left: draws,
    };
    let mut micro_batches = 0;
    while epoch.left > 0 {
        match builder.build(&mut epoch) {
            Ok(_) => micro_batches += 1,
            // The epoch's last examples were all dropped (too long, or nothing to learn).
            Err(_) if epoch.left == 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(micro_batches)
}

/// The first `left` examples of a source.
struct FirstDraws<'s, 'a> {
    source: &'s mut MixedExamples<'a>,
    left: u64,
}

impl ExampleSource for FirstDraws<'_, '_> {
    fn peek(&mut self) -> Result<Option<&Example>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.source.peek()
    }

    fn consume(&mut self) {
        self.source.consume();
        self.left -= 1;
    }
}
