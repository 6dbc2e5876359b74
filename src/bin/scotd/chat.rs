//! `scotd chat`: an interactive conversation, the reply streamed token by token.

use std::io::{BufRead, Write};

use anyhow::Result;
use scotd::sample::generate;
use scotd::tokenizer::{Message, StreamDecoder};

use crate::prompts::{conversation, load, ModelArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = load(&args.model)?;
    let mut sampling = args.model.decoding.sampling(&loaded.tokenizer);
    sampling.batch_size = 1;
    let mut turns: Vec<Message> = Vec::new();
    eprintln!(
        "scotd chat: {} ({} layers). /reset starts over, /exit or end of input quits.",
        args.model.model.display(),
        loaded.model.config.num_hidden_layers
    );
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                turns.clear();
                continue;
            }
            _ => {}
        }
        turns.push(Message {
            role: "user".into(),
            content: line.into(),
        });
        let ids = loaded.chat_ids(&conversation(args.model.decoding.system.as_deref(), &turns))?;
        let mut stream = StreamDecoder::new(&loaded.tokenizer, true);
        let mut failure = None;
        let reply = generate(
            &loaded.model,
            &[ids],
            loaded.tokenizer.eos_ids(),
            &sampling,
            |_, id| match stream.push(id) {
                Ok(text) => {
                    print!("{text}");
                    let _ = stdout.flush();
                }
                Err(e) => failure = Some(e),
            },
        )?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        println!("{}", stream.finish()?);
        turns.push(Message {
            role: "assistant".into(),
            content: loaded.tokenizer.decode(&reply[0].ids, true)?,
        });
    }
    Ok(())
}
