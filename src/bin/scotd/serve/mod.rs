//! `scotd serve`: an OpenAI-compatible HTTP server. Connections are handled on their own
//! threads, which render and encode prompts and decode replies; one worker thread owns
//! the model and decodes every connection's requests together (continuous batching over
//! the paged KV cache of `scotd generate`).

mod api;
mod handler;
mod http;
mod stop;
mod worker;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use scotd::model::KvCache;

use crate::prompts::{load, parse_byte_size, ModelArgs};
use handler::Server;

#[derive(clap::Args)]
pub struct Args {
    /// The model, and the defaults of requests that leave a setting out (--max-new-tokens
    /// for max_tokens, --temperature, --top-p, --top-k); --batch-size sequences are
    /// decoded together, in a KV cache of --kv-budget bytes [default: --batch-size times
    /// --max-context positions].
    #[command(flatten)]
    model: ModelArgs,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port to listen on; 0 picks a free one (the address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model's name in the API (/v1/models, the `model` field) [default: the --model
    /// argument as given].
    #[arg(long)]
    served_model_name: Option<String>,
    /// Positions (prompt and reply) one request may fill at most, within the model's
    /// context and the KV cache.
    #[arg(long, default_value_t = 2048)]
    max_context: usize,
    /// The largest request body accepted (bytes or a size such as 1MiB).
    #[arg(long, default_value = "8MiB", value_parser = parse_byte_size)]
    max_body: u64,
    /// Connections served at once; more are answered 503.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = load(&args.model)?;
    let model = loaded.model;
    let decoding = &args.model.decoding;
    let per_token = KvCache::bytes_per_token(&model.config, model.activation_dtype()) as u64;
    let batch_size = decoding.batch_size;
    if batch_size == 0 {
        bail!("--batch-size must be at least 1 (sequences decoded together)");
    }
    let model_context = model.config.max_position_embeddings.unwrap_or(usize::MAX);
    let wanted_context = args.max_context.min(model_context);
    let pool_tokens = match decoding.kv_budget {
        Some(budget) => (budget / per_token) as usize,
        None => batch_size.saturating_mul(wanted_context),
    };
    let context = wanted_context.min(pool_tokens);
    if context < 2 {
        bail!(
            "the KV budget holds {pool_tokens} positions ({per_token} bytes each): too few for a prompt and a reply"
        );
    }
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    let (jobs, job_queue) = mpsc::channel();
    let config = worker::WorkerConfig {
        eos_ids: loaded.tokenizer.eos_ids().to_vec(),
        pool_tokens,
        batch_size,
        vocab_limit: loaded.tokenizer.vocab_size(),
    };
    std::thread::Builder::new()
        .name("decoder".into())
        .spawn(move || worker::run(model, config, job_queue))?;
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| args.model.model.display().to_string());
    let defaults = decoding.sampling(&loaded.tokenizer);
    let server = Arc::new(Server {
        model_name: name.clone(),
        tokenizer: loaded.tokenizer,
        template: loaded.template,
        system: decoding.system.clone(),
        defaults,
        context,
        max_body: args.max_body.min(usize::MAX as u64) as usize,
        jobs,
    });
    println!("scotd serve: listening on http://{address}");
    println!(
        "scotd serve: model {name:?}, {batch_size} sequences a step, KV cache of {pool_tokens} positions, context {context}"
    );
    accept_loop(listener, server, args.max_connections)
}

fn accept_loop(listener: TcpListener, server: Arc<Server>, max_connections: usize) -> Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if open.load(Ordering::Relaxed) >= max_connections {
            let busy = api::ApiError::new(503, "too many connections: try again later");
            http::write_json(&mut stream, busy.status, &busy.body());
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (server, still_open) = (server.clone(), open.clone());
        let spawned = std::thread::Builder::new().spawn(move || {
            serve_connection(&server, stream);
            still_open.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn serve_connection(server: &Server, mut stream: TcpStream) {
    // A client that stops sending (or reading) does not hold its thread for ever.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_nodelay(true);
    match http::read_request(&mut stream, server.max_body) {
        Ok(request) => handler::handle(server, &request, &mut stream),
        Err(e) => {
            let error = api::ApiError::new(e.status, e.message);
            http::write_json(&mut stream, error.status, &error.body());
            http::discard_unread(&mut stream);
        }
    }
}
