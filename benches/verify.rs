//! Answer-verifier throughput on one thread (issue 5 asks for 100k answers/s on one core):
//!
//!     cargo bench --bench verify
//!
//! `corpus`: every (gold, output) pair of tests/fixtures/verify/cases.jsonl, repeated to
//! 100k checks. `long_traces`: 10k replies of 1–2 KB, half Qwen-style (reasoning inside
//! `<think>…</think>`), half DeepSeek-math-style (reasoning in the open), built from the
//! corpus's GSM8K solutions repeated as a model re-checks its work, with the answer at
//! the end as `\boxed{N}`, "the answer is: N" or `#### N`; each is checked against the
//! full GSM8K gold answer, as `scotd verify --filter` sees sampled traces. Criterion's
//! "elem/s" is answers per second.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scotd::verify::is_correct;
use serde_json::Value;

const CORPUS: &str = include_str!("../tests/fixtures/verify/cases.jsonl");
const CORPUS_CHECKS: usize = 100_000;
const LONG_TRACES: usize = 10_000;

/// (gold, output) pairs of the corpus.
fn corpus() -> Vec<(String, String)> {
    CORPUS
        .lines()
        .map(|line| {
            let case: Value = serde_json::from_str(line).expect("corpus line is JSON");
            let field = |name: &str| case[name].as_str().expect("string field").to_string();
            (field("gold"), field("output"))
        })
        .collect()
}

/// Replies of 1–2 KB built from the corpus's full GSM8K golds: the solution's lines,
/// repeated as a model re-checks its work, inside `<think>`, then a short final answer.
fn long_traces(corpus: &[(String, String)]) -> Vec<(String, String)> {
    let gsm8k: Vec<&String> = corpus
        .iter()
        .map(|(gold, _)| gold)
        .filter(|gold| gold.contains("####"))
        .collect();
    assert!(!gsm8k.is_empty(), "the corpus has no GSM8K golds");
    (0..LONG_TRACES)
        .map(|i| {
            let gold = gsm8k[i % gsm8k.len()];
            (gold.clone(), long_reply(gold, i))
        })
        .collect()
}

fn long_reply(gold: &str, i: usize) -> String {
    let (solution, answer) = gold.rsplit_once("####").expect("a GSM8K gold");
    let answer = answer.trim();
    let target = 1024 + (i * 97) % 1024;
    // Qwen-style replies think inside tags; DeepSeek-math-style ones reason in the open.
    let think = i.is_multiple_of(2);
    let mut reply = String::from(if think { "<think>\n" } else { "" });
    reply.push_str("Okay, let me work through this step by step.\n");
    while reply.len() < target {
        reply.push_str(solution);
        reply.push_str("\nWait, let me double-check that computation.\n");
    }
    if think {
        reply.push_str("</think>\n\n");
    }
    let (lead, close) = match i % 3 {
        0 => ("Putting it together, the final answer is $\\boxed{", "}$."),
        1 => ("So the answer is: ", ""),
        _ => ("The total is therefore\n#### ", ""),
    };
    reply.push_str(lead);
    reply.push_str(answer);
    reply.push_str(close);
    reply
}

/// Checks every pair; returns how many were correct so the work is not optimised away.
fn check_all(pairs: &[(String, String)]) -> usize {
    pairs
        .iter()
        .filter(|(gold, output)| is_correct(black_box(gold), black_box(output)))
        .count()
}

fn bench_verify(c: &mut Criterion) {
    let corpus = corpus();
    let repeated: Vec<(String, String)> =
        corpus.iter().cycle().take(CORPUS_CHECKS).cloned().collect();
    let traces = long_traces(&corpus);
    assert!(
        traces.iter().all(|(gold, output)| is_correct(gold, output)),
        "every long trace ends in its gold answer"
    );

    let mut group = c.benchmark_group("verify");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, pairs) in [("corpus", &repeated), ("long_traces", &traces)] {
        group.throughput(Throughput::Elements(pairs.len() as u64));
        group.bench_function(name, |b| b.iter(|| check_all(pairs)));
    }
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
