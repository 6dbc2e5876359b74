//! The demo's stages so far, end to end on the reduced preset: the run folder's files,
//! numbers that the files themselves confirm, and a rerun that continues the run.

use std::path::Path;

use scotd::demo::{self, DemoConfig};
use scotd::tokenizer::Tokenizer;
use scotd::verify::is_correct;

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn the_reduced_demo_trains_a_teacher_and_its_files_confirm_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = DemoConfig::reduced();
    let summary = demo::run(&config, &out, false).unwrap();
    let teacher = &summary.teacher;

    let losses: Vec<f64> = json_lines(&teacher.metrics)
        .iter()
        .filter_map(|m| m["loss"].as_f64())
        .collect();
    assert_eq!(losses.len() as u64, config.teacher_training.steps);
    assert!(
        losses[losses.len() - 1] < 0.5 * losses[0],
        "the teacher's loss should fall: {losses:?}"
    );

    let answers = json_lines(&out.join("teacher/eval.jsonl"));
    assert_eq!(answers.len(), config.eval_problems);
    let correct = answers
        .iter()
        .filter(|a| is_correct(a["gold"].as_str().unwrap(), a["output"].as_str().unwrap()))
        .count();
    assert_eq!(correct, teacher.accuracy.correct);
    assert_eq!(teacher.accuracy.total, config.eval_problems);

    let eval_questions: Vec<_> = json_lines(&out.join("data/eval.jsonl"))
        .iter()
        .map(|p| p["question"].as_str().unwrap().to_string())
        .collect();
    let trained_on = std::fs::read_to_string(out.join("data/teacher-train.jsonl")).unwrap();
    for question in &eval_questions {
        let as_json = serde_json::to_string(question).unwrap();
        assert!(!trained_on.contains(&as_json), "{question} was trained on");
    }
    let tokenizer = Tokenizer::from_dir(&teacher.model_dir).unwrap();
    assert_eq!(tokenizer.eos_token(), Some("<|im_end|>"));

    let again = demo::run(&config, &out, false).unwrap();
    assert_eq!(again.teacher.accuracy, teacher.accuracy);
    let other = DemoConfig {
        seed: 1,
        ..config.clone()
    };
    let err = demo::run(&other, &out, false).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
}
