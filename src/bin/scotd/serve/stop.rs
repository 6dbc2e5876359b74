//! OpenAI's `stop` strings over text that arrives in pieces: a piece is passed on only
//! once no stop string can begin in it, so a stream never shows text a later piece
//! would cut, and the reply ends just before the first stop string it holds.

pub struct StopMatcher {
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` already passed on; no stop string begins before this.
    emitted: usize,
}

/// What a piece of text gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Matched {
    /// Text that is safe to pass on (possibly empty); no stop string yet.
    Text(String),
    /// A stop string was found: the text before it, and the reply ends.
    Stopped(String),
}

impl StopMatcher {
    /// Empty strings stop nothing and are dropped.
    pub fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            text: String::new(),
            emitted: 0,
        }
    }

    pub fn push(&mut self, piece: &str) -> Matched {
        self.text.push_str(piece);
        let unsent = &self.text[self.emitted..];
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| unsent.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            let before = unsent[..at].to_string();
            self.emitted = self.text.len();
            return Matched::Stopped(before);
        }
        let safe = self.text.len() - self.held_back();
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        Matched::Text(out)
    }

    /// What is left once the reply ended without a stop string.
    pub fn finish(&mut self) -> String {
        let rest = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        rest
    }

    /// Bytes at the end of the unsent text that may be the start of a stop string.
    fn held_back(&self) -> usize {
        let unsent = &self.text[self.emitted..];
        self.stops
            .iter()
            .flat_map(|stop| {
                stop.char_indices()
                    .map(|(i, _)| i)
                    .filter(|&i| i > 0 && unsent.ends_with(&stop[..i]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<Matched>, String) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let out: Vec<Matched> = pieces.iter().map(|p| m.push(p)).collect();
        (out, m.finish())
    }

    #[test]
    fn a_stop_split_over_pieces_is_held_back_then_cut() {
        let (out, rest) = run(&["\n\nQ:"], &["Four", ".\n", "\nQ", ": next"]);
        assert_eq!(
            out,
            vec![
                Matched::Text("Four".into()),
                Matched::Text(".".into()),
                Matched::Text("".into()),
                Matched::Stopped("".into()),
            ]
        );
        assert_eq!(rest, "");
    }

    #[test]
    fn a_false_start_is_released_and_the_earliest_stop_wins() {
        let (out, rest) = run(&["ab", "xyz"], &["a", "c", " xy", "z ab"]);
        assert_eq!(
            out,
            vec![
                Matched::Text("".into()),
                Matched::Text("ac".into()),
                Matched::Text(" ".into()),
                Matched::Stopped("".into()),
            ]
        );
        assert_eq!(rest, "");
        let (out, rest) = run(&["é!", "!"], &["café", "?"]);
        assert_eq!(
            out,
            vec![Matched::Text("caf".into()), Matched::Text("é?".into())]
        );
        assert_eq!(rest, "");
    }

    #[test]
    fn without_stops_everything_passes_and_empty_stops_are_ignored() {
        let (out, rest) = run(&[""], &["a", "b"]);
        assert_eq!(
            out,
            vec![Matched::Text("a".into()), Matched::Text("b".into())]
        );
        assert_eq!(rest, "");
        let (out, rest) = run(&["END"], &["the E"]);
        assert_eq!(out, vec![Matched::Text("the ".into())]);
        assert_eq!(rest, "E");
    }
}
