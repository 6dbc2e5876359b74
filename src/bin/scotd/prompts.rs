//! What generate and chat share: loading a model with its tokenizer, choosing the chat
//! template, and turning a prompt into token ids.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use scotd::model::Model;
use scotd::sample::SamplingConfig;
use scotd::tokenizer::{ChatTemplate, Message, Tokenizer};

/// The model every generating command runs, and how it decodes.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json).
    #[arg(long, visible_alias = "teacher")]
    pub model: PathBuf,
    #[command(flatten)]
    pub decoding: DecodingArgs,
}

/// Prompting and decoding options.
#[derive(clap::Args, Clone, Debug)]
pub struct DecodingArgs {
    /// Chat template: the model's own by default; or chatml, deepseek, raw, or a .jinja file.
    #[arg(long)]
    pub template: Option<String>,
    /// A system message put before the user's.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

impl DecodingArgs {
    pub fn sampling(&self) -> SamplingConfig {
        SamplingConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            batch_size: self.batch_size,
            ..SamplingConfig::default()
        }
    }
}

pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

/// The model for inference (matrices kept in their stored dtype) and its tokenizer.
pub fn load_model(dir: &Path) -> Result<(Model, Tokenizer)> {
    let model = Model::load_for_inference(dir)
        .with_context(|| format!("loading the model from {}", dir.display()))?;
    let tokenizer = Tokenizer::from_dir(dir)?;
    Ok((model, tokenizer))
}

pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let (model, tokenizer) = load_model(&args.model)?;
    let template = tokenizer.resolve_chat_template(args.decoding.template.as_deref())?;
    Ok(Loaded {
        model,
        tokenizer,
        template,
    })
}

/// A conversation of an optional system message and the turns given.
pub fn conversation(system: Option<&str>, turns: &[Message]) -> Vec<Message> {
    let system = system.map(|s| Message {
        role: "system".into(),
        content: s.into(),
    });
    system.into_iter().chain(turns.iter().cloned()).collect()
}

impl Loaded {
    /// Token ids of a conversation rendered through the template, ready for the reply.
    pub fn chat_ids(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = self.template.render(messages, true)?;
        Ok(self
            .tokenizer
            .encode(&text, self.template.add_special_tokens())?)
    }
}
