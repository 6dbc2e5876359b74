//! `scotd eval`: a model's greedy answers to held-out questions, verified, plus the chat
//! probes; a Markdown and a JSON report. `--compare` puts earlier reports side by side.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use scotd::data::{read_gsm8k_examples, read_questions};
use scotd::eval::{
    compare_markdown, evaluate, paired_markdown, probes, probes_markdown, read_answers,
    read_chat_rows, EvalOptions, EvalReport, EvalTarget,
};
use scotd::sample::Prompter;

use crate::prompts::{load_model, DecodingArgs, DeviceArgs};

#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint folder to evaluate, or a Hub id (org/name[@revision]), as --model of
    /// `scotd generate`.
    #[arg(long, required_unless_present = "compare")]
    model: Option<PathBuf>,
    /// Questions with gold answers: GSM8K JSONL (`question`, `answer` ending in `#### N`)
    /// or rows with `question` and `gold`.
    #[arg(long, required_unless_present = "compare")]
    data: Option<PathBuf>,
    /// The report folder (answers.jsonl, report.json, report.md); an unfinished one is
    /// resumed. With --compare: the Markdown file to write (default: standard output).
    #[arg(long, required_unless_present = "compare")]
    out: Option<PathBuf>,
    /// Only the first this many questions.
    #[arg(long)]
    limit: Option<usize>,
    /// The user turn: plain (the question), deepseek-math, or a text file holding {question}.
    #[arg(long, default_value = "plain")]
    prompt: String,
    /// Chat probes, one per line, instead of the built-in ones; "none" for no probes.
    #[arg(long)]
    probes: Option<String>,
    /// Held-out chat rows (Alpaca JSON or `messages` JSONL) for the retention measures: the
    /// rate of replies with math or think tags, and the mean per-token loss of the rows'
    /// reference replies under the model.
    #[arg(long)]
    chat: Option<PathBuf>,
    /// Only the first this many chat rows.
    #[arg(long)]
    chat_limit: Option<usize>,
    /// The token limit of the replies to the chat rows.
    #[arg(long, default_value_t = 256)]
    chat_max_new_tokens: usize,
    /// Also score lm-evaluation-harness's gsm8k protocol (5-shot "Question: …\nAnswer:"
    /// completion prompt, greedy, exact_match under strict-match and flexible-extract),
    /// the examples the first five questions of this GSM8K file (its train split; lm-eval
    /// draws five from train with a seed instead).
    #[arg(long, value_name = "GSM8K_TRAIN")]
    lm_eval_fewshot: Option<PathBuf>,
    /// Put the reports of earlier evaluations (folders or report.json files) side by side;
    /// folders are also paired with the first, question by question (exact McNemar test).
    #[arg(long, num_args = 1.., conflicts_with_all = ["model", "data"])]
    compare: Vec<PathBuf>,
    #[command(flatten)]
    placement: DeviceArgs,
    #[command(flatten)]
    decoding: DecodingArgs,
}

pub fn run(args: Args) -> Result<()> {
    if !args.compare.is_empty() {
        return compare(&args.compare, args.out.as_deref());
    }
    let (Some(model_dir), Some(data), Some(out)) = (&args.model, &args.data, &args.out) else {
        bail!("--model, --data and --out are needed (or --compare REPORTS...)");
    };
    let mut questions = read_questions(data)?;
    questions.truncate(args.limit.unwrap_or(usize::MAX));
    let (model, tokenizer) = load_model(model_dir, &args.placement)?;
    let prompter = Prompter::new(
        &tokenizer,
        Some(&args.prompt),
        args.decoding.template.as_deref(),
        args.decoding.system.clone(),
    )?;
    let (model_name, data_name) = (model_dir.display().to_string(), data.display().to_string());
    let target = EvalTarget {
        model: &model,
        model_name: &model_name,
        tokenizer: &tokenizer,
        prompter: &prompter,
        data_name: &data_name,
    };
    let chat = match &args.chat {
        Some(path) => {
            let mut chat = read_chat_rows(path, prompter.system.as_deref())?;
            chat.rows.truncate(args.chat_limit.unwrap_or(usize::MAX));
            Some((chat, args.chat_max_new_tokens))
        }
        None => None,
    };
    let opts = EvalOptions {
        sampling: args.decoding.sampling(&tokenizer),
        probes: read_probes(args.probes.as_deref())?,
        chat,
        lm_eval_fewshot: match &args.lm_eval_fewshot {
            Some(path) => Some((read_gsm8k_examples(path)?, path.display().to_string())),
            None => None,
        },
    };
    let report = evaluate(&target, &questions, &opts, out, true)
        .with_context(|| format!("evaluating into {}", out.display()))?;
    println!("{}", compare_markdown(std::slice::from_ref(&report)));
    eprintln!("report: {}", out.join("report.md").display());
    Ok(())
}

fn read_probes(arg: Option<&str>) -> Result<Vec<String>> {
    Ok(match arg {
        None => probes::DEFAULT_PROBES
            .iter()
            .map(|p| p.to_string())
            .collect(),
        Some("none") => Vec::new(),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the probes from {path}"))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    })
}

fn compare(reports: &[PathBuf], out: Option<&Path>) -> Result<()> {
    let loaded = reports
        .iter()
        .map(|p| EvalReport::read(p))
        .collect::<scotd::Result<Vec<_>>>()?;
    let mut table = compare_markdown(&loaded);
    // Folders hold their answers too: each evaluation paired with the first.
    if reports.len() > 1 && reports.iter().all(|p| p.join("answers.jsonl").is_file()) {
        let answers = reports
            .iter()
            .map(|p| read_answers(p))
            .collect::<scotd::Result<Vec<_>>>()?;
        let names: Vec<String> = loaded.iter().map(|r| r.model.clone()).collect();
        table.push_str("\nPaired with the first, question by question:\n\n");
        table.push_str(&paired_markdown(&names, &answers));
    }
    if loaded.iter().any(|r| !r.probes.is_empty()) {
        table.push_str("\n### The chat probes' replies\n\n");
        table.push_str(&probes_markdown(&loaded));
    }
    match out {
        Some(path) => scotd::io::write_atomic(path, table.as_bytes())?,
        None => print!("{table}"),
    }
    Ok(())
}
