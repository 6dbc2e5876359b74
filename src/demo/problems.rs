//! Generated arithmetic word problems in GSM8K's shape, for the demo's closed world.
//!
//! A problem follows one person's count of one kind of object through 1-3 operations
//! (buying more, giving some away, buying boxes of several each), and its answer is
//! written as GSM8K writes answers: one line per step with calculator notes, then
//! `#### N`:
//!
//! ```text
//! Mia has 12 apples. She buys 5 more apples. Then she gives 3 apples to Leo. How many
//! apples does Mia have now?
//!
//! After buying 5 more, Mia has 12 + 5 = <<12+5=17>>17 apples.
//! After giving 3 to Leo, Mia has 17 - 3 = <<17-3=14>>14 apples.
//! #### 14
//! ```
//!
//! So the GSM8K reader turns them into `<think>steps</think> \boxed{N}` replies and the
//! verifier reads their gold answers, both unchanged. Every count stays at 2 or more, so
//! every noun is plural.

use std::collections::HashSet;
use std::path::Path;

use crate::io::write_atomic;
use crate::rng::Rng;
use crate::{Error, Result};

/// People, with the pronoun their sentences use.
const PEOPLE: [(&str, &str); 20] = [
    ("Mia", "She"),
    ("Leo", "He"),
    ("Ava", "She"),
    ("Sam", "He"),
    ("Zoe", "She"),
    ("Max", "He"),
    ("Lily", "She"),
    ("Ben", "He"),
    ("Emma", "She"),
    ("Noah", "He"),
    ("Ruby", "She"),
    ("Omar", "He"),
    ("Nina", "She"),
    ("Jack", "He"),
    ("Ella", "She"),
    ("Theo", "He"),
    ("Iris", "She"),
    ("Finn", "He"),
    ("Rosa", "She"),
    ("Ivan", "He"),
];

const OBJECTS: [&str; 14] = [
    "apples", "pencils", "stickers", "marbles", "cookies", "books", "shells", "cards", "coins",
    "flowers", "eggs", "balloons", "crayons", "toys",
];

const CONTAINERS: [&str; 5] = ["boxes", "bags", "packs", "jars", "baskets"];

/// Verbs that add to the count: (as in the question, as in the solution).
const GAIN_VERBS: [(&str, &str); 4] = [
    ("buys", "buying"),
    ("finds", "finding"),
    ("picks up", "picking up"),
    ("gets", "getting"),
];

/// Verbs that take from the count: (as in the question, as in the solution).
const LOSS_VERBS: [(&str, &str); 4] = [
    ("gives away", "giving away"),
    ("loses", "losing"),
    ("sells", "selling"),
    ("uses", "using"),
];

/// Most operations one problem can have.
pub const MAX_STEPS: usize = 3;
/// The smallest `max_number` that leaves room for a subtraction that keeps 2 or more.
const MIN_MAX_NUMBER: u32 = 4;
/// Boxes bought or owned at once, and objects in each, are at most these.
const MAX_CONTAINERS: u32 = 5;
const MAX_PER_CONTAINER: u32 = 10;

/// How hard the generated problems are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Difficulty {
    /// Each problem has between 1 and this many operations (at most [`MAX_STEPS`]).
    pub max_steps: usize,
    /// The largest number a question states (at least 4).
    pub max_number: u32,
}

impl Difficulty {
    pub fn validate(&self) -> Result<()> {
        let err = |field: &str, msg: String| Err(Error::format("demo problems", field, msg));
        if !(1..=MAX_STEPS).contains(&self.max_steps) {
            return err(
                "max_steps",
                format!("must be 1 to {MAX_STEPS}, got {}", self.max_steps),
            );
        }
        if self.max_number < MIN_MAX_NUMBER {
            return err(
                "max_number",
                format!("must be at least {MIN_MAX_NUMBER}, got {}", self.max_number),
            );
        }
        Ok(())
    }
}

/// One problem: a GSM8K record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub id: String,
    pub question: String,
    /// The worked solution with calculator notes, then `#### N`.
    pub answer: String,
}

/// A problem as it is built: the question's sentences, the solution's lines and the
/// running count.
struct Draft {
    person: (&'static str, &'static str),
    objects: &'static str,
    question: Vec<String>,
    solution: Vec<String>,
    count: u32,
    steps: usize,
}

/// What a problem's next sentence does to the count.
#[derive(Clone, Copy)]
enum Event {
    Gain,
    Loss,
    GiveTo,
    /// Buying boxes of several each: a multiplication, then an addition.
    GainBoxes,
}

impl Event {
    fn steps(self) -> usize {
        match self {
            Event::GainBoxes => 2,
            _ => 1,
        }
    }
}

/// One random problem (its id left empty).
pub fn generate(rng: &mut Rng, difficulty: Difficulty) -> Problem {
    let steps = 1 + rng.below(difficulty.max_steps);
    let mut draft = Draft::start(rng, difficulty, steps);
    while draft.steps < steps {
        let event = draft.next_event(rng, steps - draft.steps);
        draft.apply(rng, difficulty, event);
    }
    draft.finish()
}

impl Draft {
    /// The first sentence: a plain count, or (when there is room for more than one step)
    /// sometimes boxes of several each, which is a multiplication.
    fn start(rng: &mut Rng, difficulty: Difficulty, steps: usize) -> Draft {
        let person = pick(rng, &PEOPLE);
        let objects = pick(rng, &OBJECTS);
        let mut draft = Draft {
            person,
            objects,
            question: Vec::new(),
            solution: Vec::new(),
            count: 0,
            steps: 0,
        };
        let name = person.0;
        if steps > 1 && rng.below(3) == 0 {
            let (boxes, each) = draw_boxes(rng, difficulty);
            let container = pick(rng, &CONTAINERS);
            draft.question.push(format!(
                "{name} has {boxes} {container} with {each} {objects} in each."
            ));
            draft.count = boxes * each;
            draft.solution.push(format!(
                "{name} has {} {objects}.",
                calculation(boxes, '*', each)
            ));
            draft.steps = 1;
        } else {
            draft.count = draw(rng, 2, difficulty.max_number);
            draft
                .question
                .push(format!("{name} has {} {objects}.", draft.count));
        }
        draft
    }

    /// An event that fits in the steps left; a loss only when the count can spare 2 and
    /// keep 2.
    fn next_event(&self, rng: &mut Rng, steps_left: usize) -> Event {
        let mut events = vec![Event::Gain];
        if self.count >= 4 {
            events.extend([Event::Loss, Event::GiveTo]);
        }
        if steps_left >= 2 {
            events.push(Event::GainBoxes);
        }
        events[rng.below(events.len())]
    }

    /// Adds the event's sentence (after "Then " from the third sentence on) and its
    /// solution line.
    fn apply(&mut self, rng: &mut Rng, difficulty: Difficulty, event: Event) {
        let pronoun = self.person.1;
        let (opener, subject) = if self.question.len() > 1 {
            ("Then ", pronoun.to_lowercase())
        } else {
            ("", pronoun.to_string())
        };
        let (action, line) = match event {
            Event::Gain => self.gain(rng, difficulty),
            Event::Loss => self.loss(rng, difficulty),
            Event::GiveTo => self.give_to(rng, difficulty),
            Event::GainBoxes => self.gain_boxes(rng, difficulty),
        };
        self.question.push(format!("{opener}{subject} {action}"));
        self.solution.push(line);
        self.steps += event.steps();
    }

    /// Each event changes the count and returns its sentence without the subject, and its
    /// solution line.
    fn gain(&mut self, rng: &mut Rng, difficulty: Difficulty) -> (String, String) {
        let (name, objects, before) = (self.person.0, self.objects, self.count);
        let (verb, doing) = pick(rng, &GAIN_VERBS);
        let n = draw(rng, 2, difficulty.max_number);
        self.count += n;
        let result = calculation(before, '+', n);
        (
            format!("{verb} {n} more {objects}."),
            format!("After {doing} {n} more, {name} has {result} {objects}."),
        )
    }

    fn loss(&mut self, rng: &mut Rng, difficulty: Difficulty) -> (String, String) {
        let (name, objects, before) = (self.person.0, self.objects, self.count);
        let n = self.draw_loss(rng, difficulty);
        let (verb, doing) = pick(rng, &LOSS_VERBS);
        let result = calculation(before, '-', n);
        (
            format!("{verb} {n} {objects}."),
            format!("After {doing} {n}, {name} has {result} {objects}."),
        )
    }

    fn give_to(&mut self, rng: &mut Rng, difficulty: Difficulty) -> (String, String) {
        let (name, objects, before) = (self.person.0, self.objects, self.count);
        let n = self.draw_loss(rng, difficulty);
        let other = self.someone_else(rng);
        let result = calculation(before, '-', n);
        (
            format!("gives {n} {objects} to {other}."),
            format!("After giving {n} to {other}, {name} has {result} {objects}."),
        )
    }

    fn gain_boxes(&mut self, rng: &mut Rng, difficulty: Difficulty) -> (String, String) {
        let (name, objects, before) = (self.person.0, self.objects, self.count);
        let (verb, _) = pick(rng, &GAIN_VERBS);
        let container = pick(rng, &CONTAINERS);
        let (boxes, each) = draw_boxes(rng, difficulty);
        let added = boxes * each;
        self.count += added;
        (
            format!("{verb} {boxes} {container} with {each} {objects} in each."),
            format!(
                "{name} {verb} {} more {objects}.\nThen {name} has {} {objects}.",
                calculation(boxes, '*', each),
                calculation(before, '+', added)
            ),
        )
    }

    /// How many a loss takes: at least 2, leaving at least 2.
    fn draw_loss(&mut self, rng: &mut Rng, difficulty: Difficulty) -> u32 {
        let n = draw(rng, 2, (self.count - 2).min(difficulty.max_number));
        self.count -= n;
        n
    }

    /// A name other than the problem's person.
    fn someone_else(&self, rng: &mut Rng) -> &'static str {
        loop {
            let (other, _) = pick(rng, &PEOPLE);
            if other != self.person.0 {
                return other;
            }
        }
    }

    fn finish(self) -> Problem {
        let (name, _) = self.person;
        let mut question = self.question.join(" ");
        question.push_str(&format!(" How many {} does {name} have now?", self.objects));
        Problem {
            id: String::new(),
            question,
            answer: format!("{}\n#### {}", self.solution.join("\n"), self.count),
        }
    }
}

/// `a op b = <<a op b=r>>r`, GSM8K's calculator-note form.
fn calculation(a: u32, op: char, b: u32) -> String {
    let result = match op {
        '+' => a + b,
        '-' => a - b,
        _ => a * b,
    };
    format!("{a} {op} {b} = <<{a}{op}{b}={result}>>{result}")
}

fn draw_boxes(rng: &mut Rng, difficulty: Difficulty) -> (u32, u32) {
    let boxes = draw(rng, 2, difficulty.max_number.min(MAX_CONTAINERS));
    let each = draw(rng, 2, difficulty.max_number.min(MAX_PER_CONTAINER));
    (boxes, each)
}

/// Uniform in [lo, hi].
fn draw(rng: &mut Rng, lo: u32, hi: u32) -> u32 {
    lo + rng.below((hi - lo + 1) as usize) as u32
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len())]
}

/// Draws without a new question in a row after which the difficulty is taken to have no
/// more to give.
const MAX_MISSES_IN_A_ROW: usize = 10_000;

/// Disjoint sets of problems, one per `(name, count)`, drawn from one seeded stream: no
/// question text appears twice, within a split or across splits. Ids are `name-index`.
/// Fails when the difficulty allows too few distinct questions for the counts asked.
pub fn generate_splits(
    seed: u64,
    difficulty: Difficulty,
    splits: &[(&str, usize)],
) -> Result<Vec<Vec<Problem>>> {
    difficulty.validate()?;
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(splits.len());
    for &(name, count) in splits {
        let mut split = Vec::with_capacity(count);
        let mut misses = 0;
        while split.len() < count {
            let mut problem = generate(&mut rng, difficulty);
            if !seen.insert(problem.question.clone()) {
                misses += 1;
                if misses == MAX_MISSES_IN_A_ROW {
                    return Err(too_few_problems(seen.len(), splits));
                }
                continue;
            }
            misses = 0;
            problem.id = format!("{name}-{}", split.len());
            split.push(problem);
        }
        out.push(split);
    }
    Ok(out)
}

fn too_few_problems(found: usize, splits: &[(&str, usize)]) -> Error {
    let wanted: usize = splits.iter().map(|(_, n)| n).sum();
    Error::format(
        "demo problems",
        "count",
        format!(
            "{wanted} distinct problems asked, but this difficulty gave only {found}: \
             ask for fewer or raise the difficulty"
        ),
    )
}

/// Writes problems as GSM8K JSONL (`id`, `question`, `answer` per line), atomically.
pub fn write_jsonl(path: &Path, problems: &[Problem]) -> Result<()> {
    let mut text = String::new();
    for problem in problems {
        text.push_str(&serde_json::to_string(problem).expect("strings serialise"));
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Every word the problems are made of, for building a vocabulary that covers them all.
pub fn lexicon() -> Vec<&'static str> {
    let verbs = GAIN_VERBS.iter().chain(&LOSS_VERBS);
    PEOPLE
        .iter()
        .flat_map(|&(name, pronoun)| [name, pronoun])
        .chain(OBJECTS)
        .chain(CONTAINERS)
        .chain(verbs.flat_map(|&(verb, doing)| [verb, doing]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split_gsm8k_answer;
    use crate::verify::{gold_answer, is_correct};

    const HARDEST: Difficulty = Difficulty {
        max_steps: 3,
        max_number: 20,
    };

    /// The count a question describes, worked out from its sentences alone.
    fn solve(question: &str) -> u32 {
        let numbers = |s: &str| -> Vec<u32> {
            s.split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect()
        };
        let loses =
            |s: &str| s.contains(" gives ") || LOSS_VERBS.iter().any(|(v, _)| s.contains(v));
        let mut count = 0;
        for sentence in question.split_inclusive('.') {
            let n = numbers(sentence);
            let amount = match n.as_slice() {
                [] => continue,
                [n] => *n,
                [boxes, each] => boxes * each,
                _ => panic!("unexpected sentence {sentence:?}"),
            };
            if sentence.contains(" has ") {
                count = amount;
            } else if loses(sentence) {
                count -= amount;
            } else {
                count += amount;
            }
        }
        count
    }

    /// Checks every `a op b = <<a op b=r>>r` of a solution.
    fn check_calculations(answer: &str) {
        for note in answer.split("<<").skip(1) {
            let note = note.split(">>").next().unwrap();
            let (expr, result) = note.split_once('=').unwrap();
            let op = expr.find(['+', '-', '*']).unwrap();
            let (a, b): (u32, u32) = (expr[..op].parse().unwrap(), expr[op + 1..].parse().unwrap());
            let expected = match &expr[op..op + 1] {
                "+" => a + b,
                "-" => a - b,
                _ => a * b,
            };
            assert_eq!(result.parse::<u32>().unwrap(), expected, "in {answer:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_problems_and_another_seed_others() {
        let splits = [("train", 50), ("test", 20)];
        let a = generate_splits(7, HARDEST, &splits).unwrap();
        assert_eq!(a, generate_splits(7, HARDEST, &splits).unwrap());
        assert_ne!(a, generate_splits(8, HARDEST, &splits).unwrap());
        assert_eq!(a[1][3].id, "test-3");
    }

    #[test]
    fn answers_are_right_and_read_by_the_gsm8k_reader_and_the_verifier() {
        let mut rng = Rng::new(1);
        for _ in 0..2000 {
            let p = generate(&mut rng, HARDEST);
            let expected = solve(&p.question);
            check_calculations(&p.answer);
            let split = split_gsm8k_answer(&p.answer).unwrap();
            assert_eq!(split.final_answer, expected.to_string(), "{p:?}");
            assert_eq!(gold_answer(&p.answer), Some(expected.to_string().as_str()));
            let reply = format!("<think>{}</think> \\boxed{{{expected}}}", split.reasoning);
            assert!(is_correct(&p.answer, &reply));
            assert!(!is_correct(
                &p.answer,
                &format!("\\boxed{{{}}}", expected + 1)
            ));
        }
    }

    #[test]
    fn difficulty_bounds_steps_and_numbers() {
        let easy = Difficulty {
            max_steps: 1,
            max_number: 9,
        };
        let mut rng = Rng::new(2);
        for _ in 0..500 {
            let p = generate(&mut rng, easy);
            assert_eq!(p.answer.matches("<<").count(), 1, "{p:?}");
            let largest = p
                .question
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse::<u32>().ok())
                .max()
                .unwrap();
            assert!(largest <= 9, "{p:?}");
        }
        let mut steps_seen = HashSet::new();
        for _ in 0..500 {
            steps_seen.insert(generate(&mut rng, HARDEST).answer.matches("<<").count());
        }
        assert_eq!(steps_seen, HashSet::from([1, 2, 3]));
    }

    #[test]
    fn splits_never_share_a_question() {
        let splits = generate_splits(3, HARDEST, &[("a", 3000), ("b", 500), ("c", 500)]).unwrap();
        let mut seen = HashSet::new();
        for problem in splits.iter().flatten() {
            assert!(seen.insert(&problem.question), "{problem:?}");
        }
        assert_eq!(seen.len(), 4000);
    }

    #[test]
    fn too_many_problems_for_the_difficulty_is_an_error() {
        let tiny = Difficulty {
            max_steps: 1,
            max_number: 4,
        };
        let err = generate_splits(0, tiny, &[("a", 1_000_000)]).unwrap_err();
        assert!(err.to_string().contains("gave only"), "{err}");
        let bad = Difficulty {
            max_steps: 4,
            max_number: 20,
        };
        assert!(generate_splits(0, bad, &[("a", 1)]).is_err());
    }
}
