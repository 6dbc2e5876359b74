//! The one thread that owns the model: it takes jobs from every connection over a
//! channel and decodes them together in one [`Decoder`] (continuous batching), sending
//! each job's tokens back on the job's own channel as they are chosen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use scotd::model::Model;
use scotd::sample::{Decoder, Event, RequestSettings, StopReason};

/// One sequence to decode, from a connection.
pub struct Job {
    pub prompt: Vec<u32>,
    pub settings: RequestSettings,
    /// The choice of its request this sequence is (n > 1 asks for several).
    pub choice: usize,
    pub replies: Sender<(usize, Reply)>,
    /// Set by the connection when it needs no more tokens (a stop string, a client gone).
    pub cancelled: Arc<AtomicBool>,
}

/// What the decoder sends back about one choice.
#[derive(Debug)]
pub enum Reply {
    Token(u32),
    Finished(StopReason),
    Failed(String),
}

/// How the decoder thread is set up.
pub struct WorkerConfig {
    pub eos_ids: Vec<u32>,
    pub pool_tokens: usize,
    pub batch_size: usize,
    pub vocab_limit: usize,
}

/// Runs until every sender of `jobs` is gone.
pub fn run(model: Model, config: WorkerConfig, jobs: Receiver<Job>) {
    let new_decoder = || {
        Decoder::new(
            &model,
            &config.eos_ids,
            config.pool_tokens,
            config.batch_size,
            Some(config.vocab_limit),
        )
    };
    let mut decoder = match new_decoder() {
        Ok(d) => d,
        Err(e) => return fail_all_jobs(&jobs, &format!("the decoder could not start: {e}")),
    };
    let mut routes: HashMap<usize, Job> = HashMap::new();
    let mut next_id = 0usize;
    loop {
        if decoder.is_idle() {
            match jobs.recv() {
                Ok(job) => submit(&mut decoder, &mut routes, &mut next_id, job),
                Err(_) => return,
            }
        }
        while let Ok(job) = jobs.try_recv() {
            submit(&mut decoder, &mut routes, &mut next_id, job);
        }
        routes.retain(|&id, job| {
            let keep = !job.cancelled.load(Ordering::Relaxed);
            if !keep {
                decoder.cancel(id);
            }
            keep
        });
        let mut gone = Vec::new();
        let stepped = decoder.step(|event| {
            let (id, reply) = match event {
                Event::Token { request, id } => (request, Reply::Token(id)),
                Event::Finished { request, result } => (request, Reply::Finished(result.stop)),
            };
            let finished = matches!(reply, Reply::Finished(_));
            if let Some(job) = routes.get(&id) {
                if job.replies.send((job.choice, reply)).is_err() || finished {
                    gone.push((id, !finished));
                }
            }
            Ok(())
        });
        for (id, still_decoding) in gone {
            routes.remove(&id);
            if still_decoding {
                decoder.cancel(id);
            }
        }
        if let Err(e) = stepped {
            // The cache may be half-written: fail what was running and start afresh.
            let message = format!("decoding failed: {e}");
            for (_, job) in routes.drain() {
                let _ = job
                    .replies
                    .send((job.choice, Reply::Failed(message.clone())));
            }
            decoder = match new_decoder() {
                Ok(d) => d,
                Err(e) => {
                    return fail_all_jobs(&jobs, &format!("the decoder could not restart: {e}"))
                }
            };
        }
    }
}

fn submit(
    decoder: &mut Decoder,
    routes: &mut HashMap<usize, Job>,
    next_id: &mut usize,
    mut job: Job,
) {
    let id = *next_id;
    *next_id += 1;
    match decoder.submit(id, std::mem::take(&mut job.prompt), job.settings) {
        Ok(()) => {
            routes.insert(id, job);
        }
        Err(e) => {
            let _ = job.replies.send((job.choice, Reply::Failed(e.to_string())));
        }
    }
}

/// Answers every job still to come with `message`, so no connection waits forever.
fn fail_all_jobs(jobs: &Receiver<Job>, message: &str) {
    eprintln!("scotd serve: {message}");
    for job in jobs.iter() {
        let _ = job
            .replies
            .send((job.choice, Reply::Failed(message.to_string())));
    }
}
