//! The trainer's example source: rows drawn by a [`Mixer`], tokenized with the student's
//! chat template. Its state is the mixer's state as of the first example not yet consumed,
//! so a checkpoint taken between batches resumes on exactly the same examples.

use super::batch::ExampleSource;
use super::mix::{Mixer, MixerState};
use super::tokenize::{tokenize_row, Example};
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::{Error, Result};

pub struct MixedExamples<'a> {
    mixer: Mixer,
    tokenizer: &'a Tokenizer,
    template: &'a ChatTemplate,
    peeked: Option<Peeked>,
}

/// An example drawn but not consumed, and the mixer's state from before its draw.
struct Peeked {
    before: MixerState,
    example: Example,
}

impl<'a> MixedExamples<'a> {
    pub fn new(mixer: Mixer, tokenizer: &'a Tokenizer, template: &'a ChatTemplate) -> Self {
        MixedExamples {
            mixer,
            tokenizer,
            template,
            peeked: None,
        }
    }

    pub fn mixer(&self) -> &Mixer {
        &self.mixer
    }

    /// Where the next unconsumed example will come from: save it with a checkpoint.
    pub fn state(&self) -> MixerState {
        match &self.peeked {
            Some(peeked) => peeked.before.clone(),
            None => self.mixer.state(),
        }
    }

    pub fn restore(&mut self, state: &MixerState) -> Result<()> {
        self.mixer.restore(state)?;
        self.peeked = None;
        Ok(())
    }
}

impl ExampleSource for MixedExamples<'_> {
    /// Never `None`: the mixer cycles through its datasets forever. A row that fails to
    /// tokenize leaves the mixer where it was, so the state stays that of the failing row.
    fn peek(&mut self) -> Result<Option<&Example>> {
        if self.peeked.is_none() {
            let before = self.mixer.state();
            let (source, messages) = self.mixer.next_row();
            match tokenize_row(self.tokenizer, self.template, &messages) {
                Ok(example) => self.peeked = Some(Peeked { before, example }),
                Err(e) => {
                    self.mixer.restore(&before)?;
                    let dataset = &self.mixer.sources()[source].name;
                    return Err(Error::format(
                        format!("dataset {dataset}"),
                        "row",
                        e.to_string(),
                    ));
                }
            }
        }
        Ok(self.peeked.as_ref().map(|p| &p.example))
    }

    fn consume(&mut self) {
        self.peeked = None;
    }
}
