//! The scheduler: iteration-level (continuous) batching over one ONNX decoder.
//!
//! One engine thread owns the model and every sequence's KV cache. Each iteration it
//! 1. takes newly submitted requests into its waiting queue (bounded: a full queue is refused at
//!    submission, so callers answer 503 at once);
//! 2. admits waiting requests, first come first served, while the KV budget can reserve what each
//!    may grow to (prompt + `max_tokens`) — the cache can never exceed its bound;
//! 3. prefills each admitted request (reusing the longest cached prompt prefix) and samples its
//!    first token;
//! 4. runs one decode step for *all* running sequences as a single batch, samples, streams each
//!    new token to its requester, and retires sequences that finished — or whose requester went
//!    away (a dropped receiver cancels the sequence and frees its KV at the next step).
//!
//! New requests therefore join between decode steps instead of waiting for the batch to drain.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenizers::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::kv::{KvBudget, PrefixCache, SeqKv};
use crate::metrics::WorkerMetrics;
use crate::model::{DecodeSeq, Model};
use crate::sampler::{Sampler, SamplingParams};

/// One generation request.
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Alternatives to report per token (0 = none); `logprobs` reports the chosen token's.
    pub logprobs: bool,
    pub top_logprobs: usize,
    /// Keep generating past end-of-text (vLLM's `ignore_eos`; for benchmarks and tests that need
    /// exact lengths).
    pub ignore_eos: bool,
    pub events: UnboundedSender<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What the engine streams back for a request.
#[derive(Debug, Clone)]
pub enum Event {
    Token {
        /// New text since the previous event (may be empty while a multi-byte character or a
        /// possible stop string is incomplete).
        text: String,
        token: u32,
        logprob: f32,
        top: Vec<(u32, f32)>,
    },
    Done {
        finish_reason: FinishReason,
        /// Text held back until the end (possible stop-string prefix).
        text: String,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error(String),
}

/// Why a submission was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    QueueFull,
    /// Prompt + max_tokens can never fit the context or the KV budget.
    TooLong {
        needed: usize,
        limit: usize,
    },
    Stopped,
}

/// Engine limits.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub kv_budget_bytes: usize,
    pub prefix_cache_bytes: usize,
    pub max_waiting: usize,
    pub max_batch: usize,
}

/// Live counters shared with the HTTP side.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    pub kv_reserved: AtomicUsize,
    pub kv_peak: AtomicUsize,
    pub prefix_hits: AtomicU64,
    pub prefix_lookups: AtomicU64,
}

/// The submitting side of the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<GenRequest>,
    pub stats: Arc<EngineStats>,
    max_waiting: usize,
    max_tokens_total: usize,
    kv_limit_tokens: usize,
}

impl EngineHandle {
    pub fn submit(&self, req: GenRequest) -> Result<(), SubmitError> {
        let needed = req.prompt.len().saturating_add(req.max_tokens);
        let limit = self.max_tokens_total.min(self.kv_limit_tokens);
        if needed > limit {
            return Err(SubmitError::TooLong { needed, limit });
        }
        // Count first so concurrent submitters cannot overshoot the bound.
        if self.stats.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull);
        }
        match self.tx.try_send(req) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(SubmitError::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(SubmitError::Stopped)
            }
        }
    }

    /// The largest prompt + max_tokens a request may ask for.
    pub fn max_total_tokens(&self) -> usize {
        self.max_tokens_total.min(self.kv_limit_tokens)
    }
}

struct Seq {
    id: u64,
    req: GenRequest,
    /// The cache (stale while the model keeps it resident; see `Model::decode`).
    kv: SeqKv,
    /// Positions in the cache: prompt plus tokens fed so far.
    kv_len: usize,
    reserved: usize,
    generated: Vec<u32>,
    /// The token to feed at the next decode step.
    next: u32,
    sampler: Sampler,
    /// Decoded text so far (complete characters only).
    text: String,
    /// Incremental detokenisation offsets into `generated` (see `Engine::detokenize`).
    prefix_offset: usize,
    read_offset: usize,
    /// Bytes of `text` already sent.
    sent: usize,
    last_token_at: Instant,
}

/// Start the engine thread. It runs until every handle is dropped.
pub fn start(
    model: Model,
    tokenizer: Arc<Tokenizer>,
    cfg: EngineConfig,
    metrics: Arc<WorkerMetrics>,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(cfg.max_waiting.max(1));
    let stats = Arc::new(EngineStats::default());
    let per_token = model.shape.kv_bytes_per_token().max(1);
    let handle = EngineHandle {
        tx,
        stats: stats.clone(),
        max_waiting: cfg.max_waiting,
        max_tokens_total: model.shape.max_positions,
        kv_limit_tokens: cfg.kv_budget_bytes / per_token,
    };
    let thread = std::thread::Builder::new()
        .name("warden-engine".into())
        .spawn(move || Engine::new(model, tokenizer, cfg, stats, metrics).run(rx))?;
    Ok((handle, thread))
}

struct Engine {
    model: Model,
    tokenizer: Arc<Tokenizer>,
    cfg: EngineConfig,
    stats: Arc<EngineStats>,
    metrics: Arc<WorkerMetrics>,
    budget: KvBudget,
    prefix: PrefixCache,
    waiting: VecDeque<(GenRequest, Instant)>,
    running: Vec<Seq>,
    next_id: u64,
}

impl Engine {
    fn new(
        model: Model,
        tokenizer: Arc<Tokenizer>,
        cfg: EngineConfig,
        stats: Arc<EngineStats>,
        metrics: Arc<WorkerMetrics>,
    ) -> Self {
        Self {
            budget: KvBudget::new(cfg.kv_budget_bytes),
            prefix: PrefixCache::new(cfg.prefix_cache_bytes),
            model,
            tokenizer,
            cfg,
            stats,
            metrics,
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
        }
    }

    fn run(mut self, rx: Receiver<GenRequest>) {
        loop {
            // Block only when idle.
            if self.running.is_empty() && self.waiting.is_empty() {
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(r) => self.waiting.push_back((r, Instant::now())),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while let Ok(r) = rx.try_recv() {
                self.waiting.push_back((r, Instant::now()));
            }
            self.admit();
            self.decode_step();
            self.publish();
        }
    }

    fn per_token(&self) -> usize {
        self.model.shape.kv_bytes_per_token()
    }

    /// Admit waiting requests in order while their worst-case KV fits.
    fn admit(&mut self) {
        // Requests whose client hung up while waiting give their queue slot back at once, not
        // only when they reach the head of the queue.
        let before = self.waiting.len();
        self.waiting.retain(|(r, _)| !r.events.is_closed());
        let gone = before - self.waiting.len();
        if gone > 0 {
            self.stats.waiting.fetch_sub(gone, Ordering::SeqCst);
            self.metrics.cancelled.inc_by(gone as u64);
        }
        while self.running.len() < self.cfg.max_batch {
            let Some((req, _)) = self.waiting.front() else {
                break;
            };
            let need = (req.prompt.len() + req.max_tokens) * self.per_token();
            if !self.budget.try_reserve(need) {
                break;
            }
            let Some((req, queued_at)) = self.waiting.pop_front() else {
                break;
            };
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            self.metrics
                .queue_time
                .observe(queued_at.elapsed().as_secs_f64());
            if let Err(e) = self.prefill(req, need, queued_at) {
                tracing::error!(error = %e, "prefill failed");
            }
        }
    }

    fn prefill(
        &mut self,
        req: GenRequest,
        reserved: usize,
        arrived: Instant,
    ) -> Result<(), crate::model::ModelError> {
        let cached = self.prefix.lookup(&req.prompt);
        let past = cached.unwrap_or_else(|| self.model.shape.empty_cache());
        let start = past.len;
        let first = match self.model.prefill(&req.prompt[start..], past) {
            Ok(out) => out,
            Err(e) => {
                self.budget.release(reserved);
                let _ = req.events.send(Event::Error(e.to_string()));
                return Err(e);
            }
        };
        self.metrics
            .prompt_tokens
            .inc_by((req.prompt.len() - start) as u64);
        self.next_id += 1;
        let mut seq = Seq {
            id: self.next_id,
            sampler: Sampler::new(req.sampling),
            kv_len: first.len,
            req,
            // Filled from the prefill's tensors right after the first token is sent.
            kv: self.model.shape.empty_cache(),
            reserved,
            generated: Vec::new(),
            next: 0,
            text: String::new(),
            prefix_offset: 0,
            read_offset: 0,
            sent: 0,
            last_token_at: Instant::now(),
        };
        self.metrics.ttft.observe(arrived.elapsed().as_secs_f64());
        let continues = self.accept_token(&mut seq, &first.logits);
        // The first token is out; now copy the cache and remember the prompt's blocks.
        match self.model.cache_of(&first) {
            Ok(kv) => {
                self.prefix.insert(&seq.req.prompt, &kv);
                seq.kv = kv;
            }
            Err(e) => {
                self.budget.release(seq.reserved);
                let _ = seq.req.events.send(Event::Error(e.to_string()));
                return Err(e);
            }
        }
        if continues {
            self.running.push(seq);
        } else {
            self.budget.release(seq.reserved);
        }
        Ok(())
    }

    /// One batched decode step for every running sequence.
    fn decode_step(&mut self) {
        if self.running.is_empty() {
            return;
        }
        // Drop sequences whose requester went away before spending compute on them.
        let before = self.running.len();
        let budget = &mut self.budget;
        self.running.retain(|s| {
            let open = !s.req.events.is_closed();
            if !open {
                budget.release(s.reserved);
            }
            open
        });
        self.metrics
            .cancelled
            .inc_by((before - self.running.len()) as u64);
        if self.running.is_empty() {
            return;
        }
        let mut batch: Vec<DecodeSeq<'_>> = self
            .running
            .iter_mut()
            .map(|s| DecodeSeq {
                id: s.id,
                token: s.next,
                kv: &mut s.kv,
            })
            .collect();
        let started = Instant::now();
        let result = self.model.decode(&mut batch);
        drop(batch);
        let outputs = match result {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "decode step failed; failing the batch");
                self.model.reset();
                for s in self.running.drain(..) {
                    self.budget.release(s.reserved);
                    let _ = s.req.events.send(Event::Error(e.to_string()));
                }
                return;
            }
        };
        self.metrics.batch_size.observe(outputs.len() as f64);
        self.metrics
            .step_time
            .observe(started.elapsed().as_secs_f64());
        let mut running = std::mem::take(&mut self.running);
        let mut keep = Vec::with_capacity(running.len());
        for (mut seq, logits) in running.drain(..).zip(outputs) {
            seq.kv_len += 1;
            // The cache now lives in the model's resident batch; the old copy is stale and would
            // only double the memory (it is rebuilt from the batch when the batch changes).
            seq.kv = self.model.shape.empty_cache();
            self.metrics
                .tpot
                .observe(seq.last_token_at.elapsed().as_secs_f64());
            if self.accept_token(&mut seq, &logits) {
                keep.push(seq);
            } else {
                self.budget.release(seq.reserved);
            }
        }
        self.running = keep;
    }

    /// Sample from `logits`, stream the token, and say whether the sequence continues.
    fn accept_token(&mut self, seq: &mut Seq, logits: &[f32]) -> bool {
        let top_k = if seq.req.logprobs {
            seq.req.top_logprobs
        } else {
            0
        };
        let choice = seq.sampler.sample(logits, top_k, seq.req.logprobs);
        seq.last_token_at = Instant::now();
        self.metrics.generation_tokens.inc();
        let eos = !seq.req.ignore_eos && self.model.shape.eos_token_ids.contains(&choice.token);
        if !eos {
            seq.generated.push(choice.token);
        }
        self.detokenize(seq, false);
        let at_limit = seq.generated.len() >= seq.req.max_tokens
            || seq.kv_len + 1 >= self.model.shape.max_positions;
        if eos || at_limit {
            self.detokenize(seq, true);
        }
        let text = &seq.text;
        // A stop string ends the text where it starts.
        let stop_at = seq
            .req
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                text[seq.sent.min(text.len())..]
                    .find(s.as_str())
                    .map(|i| i + seq.sent)
            })
            .min();
        let finish = if stop_at.is_some() || eos {
            Some(FinishReason::Stop)
        } else if at_limit {
            Some(FinishReason::Length)
        } else {
            None
        };
        let end = stop_at.unwrap_or(text.len());
        // Hold back an incomplete UTF-8 character and anything that could begin a stop string.
        let hold = if finish.is_some() {
            0
        } else {
            let longest_stop = seq.req.stop.iter().map(String::len).max().unwrap_or(1);
            longest_stop.saturating_sub(1)
        };
        let mut safe = end.saturating_sub(hold).max(seq.sent);
        while safe > seq.sent && !text.is_char_boundary(safe) {
            safe -= 1;
        }
        let delta = text.get(seq.sent..safe).unwrap_or("").to_string();
        seq.sent = safe;
        let sent = if eos && delta.is_empty() {
            true
        } else {
            seq.req
                .events
                .send(Event::Token {
                    text: delta,
                    token: choice.token,
                    logprob: choice.logprob,
                    top: choice.top,
                })
                .is_ok()
        };
        if !sent {
            self.metrics.cancelled.inc();
            return false;
        }
        seq.next = choice.token;
        match finish {
            None => true,
            Some(reason) => {
                let rest = seq.text.get(seq.sent..end).unwrap_or("").to_string();
                let _ = seq.req.events.send(Event::Done {
                    finish_reason: reason,
                    text: rest,
                    prompt_tokens: seq.req.prompt.len(),
                    completion_tokens: seq.generated.len(),
                });
                false
            }
        }
    }

    /// Append the text of newly generated tokens to `seq.text` in O(1) per token: decode only
    /// the last few tokens, and compare with the decoding of those before the newest (the offsets
    /// technique vLLM uses). A token that ends mid-character waits for the next one; `flush`
    /// appends whatever is left (lossily) at the end.
    fn detokenize(&self, seq: &mut Seq, flush: bool) {
        let tok = &self.tokenizer;
        let prev = tok
            .decode(&seq.generated[seq.prefix_offset..seq.read_offset], true)
            .unwrap_or_default();
        let new = tok
            .decode(&seq.generated[seq.prefix_offset..], true)
            .unwrap_or_default();
        let complete = !new.ends_with('\u{FFFD}');
        if (complete || flush) && new.len() > prev.len() {
            if let Some(delta) = new.get(prev.len()..) {
                seq.text.push_str(delta);
            }
            seq.prefix_offset = seq.read_offset;
            seq.read_offset = seq.generated.len();
        }
    }

    fn publish(&self) {
        let s = &self.stats;
        s.running.store(self.running.len(), Ordering::Relaxed);
        s.kv_reserved.store(self.budget.reserved, Ordering::Relaxed);
        s.kv_peak.store(self.budget.peak, Ordering::Relaxed);
        s.prefix_hits.store(self.prefix.hits, Ordering::Relaxed);
        s.prefix_lookups
            .store(self.prefix.lookups, Ordering::Relaxed);
        self.metrics
            .update(s, self.budget.usage(), self.prefix.hit_ratio());
    }
}
