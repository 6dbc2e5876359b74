//! The demo's conversational data: short instruction/reply pairs (greetings, capitals,
//! colours, animals, opposites, simple facts, jokes), hand-written or filled in from small
//! tables, written in the Alpaca schema so the Alpaca reader loads them as it loads any
//! chat dataset. The student is trained on them 30/70 with the reasoning traces, and the
//! evaluator's chat probes come from them, to show what distillation keeps.

use std::path::Path;

use crate::io::write_atomic;
use crate::Result;

/// The chat probes of the student's evaluations: requests it learned to answer before
/// distillation, to show whether distillation made it forget them.
pub const CHAT_PROBES: [&str; 6] = [
    "Hello!",
    "What is the capital of France?",
    "Tell me a joke.",
    "What colour is the sky?",
    "How many legs does a spider have?",
    "What sound does a cow make?",
];

/// One Alpaca record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatExample {
    pub instruction: String,
    pub input: String,
    pub output: String,
}

/// Written as they are: (instruction, input, output).
const HAND_WRITTEN: [(&str, &str, &str); 30] = [
    ("Hello!", "", "Hello! How can I help you today?"),
    ("Hi there.", "", "Hi! What would you like to talk about?"),
    (
        "Good morning!",
        "",
        "Good morning! I hope you have a nice day.",
    ),
    (
        "How are you?",
        "",
        "I am doing well, thank you. How are you?",
    ),
    (
        "What is your name?",
        "",
        "I am a small assistant trained in this demo.",
    ),
    ("Thank you!", "", "You are welcome!"),
    ("Goodbye!", "", "Goodbye! Have a great day."),
    (
        "Tell me a joke.",
        "",
        "Why did the cat sit on the computer? To keep an eye on the mouse.",
    ),
    (
        "Tell me another joke.",
        "",
        "What do you call a bear with no teeth? A gummy bear.",
    ),
    (
        "Tell me a joke about numbers.",
        "",
        "Why was six afraid of seven? Because seven ate nine.",
    ),
    (
        "How many days are in a week?",
        "",
        "There are seven days in a week.",
    ),
    (
        "How many months are in a year?",
        "",
        "There are twelve months in a year.",
    ),
    (
        "How many legs does a spider have?",
        "",
        "A spider has eight legs.",
    ),
    ("How many legs does a dog have?", "", "A dog has four legs."),
    ("What do bees make?", "", "Bees make honey."),
    (
        "Where do fish live?",
        "",
        "Fish live in water, in rivers, lakes and the sea.",
    ),
    (
        "What do plants need to grow?",
        "",
        "Plants need water, light and air to grow.",
    ),
    (
        "What is the biggest planet?",
        "",
        "Jupiter is the biggest planet in our solar system.",
    ),
    (
        "What is the closest star to Earth?",
        "",
        "The Sun is the closest star to Earth.",
    ),
    (
        "Which season comes after winter?",
        "",
        "Spring comes after winter.",
    ),
    (
        "What do you use to write?",
        "",
        "You can write with a pen or a pencil.",
    ),
    (
        "Name three fruits.",
        "",
        "Apples, bananas and oranges are fruits.",
    ),
    (
        "Name three colours.",
        "",
        "Red, green and blue are colours.",
    ),
    (
        "Give me a word that rhymes with cat.",
        "",
        "Hat rhymes with cat.",
    ),
    (
        "Say something kind.",
        "",
        "You are doing a great job, keep going!",
    ),
    (
        "Write a short greeting for a friend.",
        "",
        "Hi friend, I hope you are well!",
    ),
    ("Repeat this word.", "banana", "banana"),
    (
        "Make this sentence polite.",
        "Give me the book.",
        "Could you please give me the book?",
    ),
    (
        "What is the first letter of this word?",
        "apple",
        "The first letter of apple is a.",
    ),
    (
        "Put these words in order: sun, the, is, hot.",
        "",
        "The sun is hot.",
    ),
];

const CAPITALS: [(&str, &str); 12] = [
    ("France", "Paris"),
    ("Spain", "Madrid"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Greece", "Athens"),
    ("Norway", "Oslo"),
    ("Portugal", "Lisbon"),
];

const COLOURS: [(&str, &str); 8] = [
    ("the sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("a banana", "yellow"),
    ("a strawberry", "red"),
    ("coal", "black"),
    ("an orange", "orange"),
    ("a carrot", "orange"),
];

const ANIMAL_SOUNDS: [(&str, &str); 8] = [
    ("cow", "moo"),
    ("dog", "woof"),
    ("cat", "meow"),
    ("duck", "quack"),
    ("sheep", "baa"),
    ("owl", "hoot"),
    ("lion", "roar"),
    ("frog", "ribbit"),
];

const OPPOSITES: [(&str, &str); 8] = [
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("fast", "slow"),
    ("day", "night"),
    ("happy", "sad"),
    ("open", "closed"),
    ("old", "new"),
];

/// Every example, hand-written ones first, in a fixed order.
pub fn chat_examples() -> Vec<ChatExample> {
    let example = |instruction: String, input: &str, output: String| ChatExample {
        instruction,
        input: input.to_string(),
        output,
    };
    let hand_written = HAND_WRITTEN
        .iter()
        .map(|&(i, input, o)| example(i.into(), input, o.into()));
    let capitals = CAPITALS.iter().map(|(country, city)| {
        example(
            format!("What is the capital of {country}?"),
            "",
            format!("The capital of {country} is {city}."),
        )
    });
    let colours = COLOURS.iter().map(|(thing, colour)| {
        let sentence = capitalised(thing);
        example(
            format!("What colour is {thing}?"),
            "",
            format!("{sentence} is {colour}."),
        )
    });
    let sounds = ANIMAL_SOUNDS.iter().map(|(animal, sound)| {
        example(
            format!("What sound does a {animal} make?"),
            "",
            format!("A {animal} says {sound}."),
        )
    });
    let opposites = OPPOSITES.iter().map(|(word, opposite)| {
        example(
            format!("What is the opposite of {word}?"),
            "",
            format!("The opposite of {word} is {opposite}."),
        )
    });
    hand_written
        .chain(capitals)
        .chain(colours)
        .chain(sounds)
        .chain(opposites)
        .collect()
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Writes the examples as Alpaca JSONL (one record a line), atomically.
pub fn write_alpaca_jsonl(path: &Path, examples: &[ChatExample]) -> Result<()> {
    let mut text = String::new();
    for example in examples {
        text.push_str(&serde_json::to_string(example).expect("strings serialise"));
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{read_rows, BadLines, DataFormat, ReasoningFormat};

    #[test]
    fn the_alpaca_reader_loads_every_example() {
        let examples = chat_examples();
        assert_eq!(examples.len(), 66);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.jsonl");
        write_alpaca_jsonl(&path, &examples).unwrap();
        let (rows, report) = read_rows(
            &path,
            DataFormat::Alpaca,
            &ReasoningFormat::default(),
            None,
            BadLines::Fail,
        )
        .unwrap();
        assert_eq!(report.rows, examples.len());
        assert_eq!(rows[0].messages[0].content, "Hello!");
        let with_input = rows
            .iter()
            .find(|r| r.messages[0].content.contains("banana"));
        assert_eq!(
            with_input.unwrap().messages[0].content,
            "Repeat this word.\n\nbanana"
        );
        assert_eq!(
            rows[31].messages[1].content,
            "The capital of Spain is Madrid."
        );
    }

    #[test]
    fn every_probe_is_a_chat_example() {
        let examples = chat_examples();
        for probe in CHAT_PROBES {
            assert!(
                examples
                    .iter()
                    .any(|e| e.instruction == probe && e.input.is_empty()),
                "{probe}"
            );
        }
    }

    #[test]
    fn instructions_are_unique() {
        let examples = chat_examples();
        let mut seen = std::collections::HashSet::new();
        for e in &examples {
            assert!(seen.insert((&e.instruction, &e.input)), "{e:?}");
        }
    }
}
