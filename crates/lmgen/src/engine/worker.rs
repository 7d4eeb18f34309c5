//! The engine thread: takes commands, plans a step, runs one packed forward over every scheduled
//! sequence, samples, streams updates, frees what finished.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use rayon::prelude::*;

use super::request::{RequestStatus, RequestUpdate};
use super::scheduler::{schedule, Limits, Plan};
use super::sequence::Sequence;
use super::step_graph::{DecodeRow, GraphedSteps, StepGraphs};
use super::tensor_parallel::{self, StepBroadcast};
use super::{EngineConfig, EngineStats};
use crate::cache::paged::{BlockAllocator, KvStore, PagedBatch};
use crate::cache::SequenceSpan;
use crate::error::{Error, Result};
use crate::models::{CausalLM, DType, ForwardInput};
use crate::readback;
use crate::TokenId;

/// What the manager tells the engine thread.
pub(crate) enum Command {
    Add(Box<Sequence>),
    Cancel(String),
    /// Finish the current step, end every request (cancelled) and exit.
    Stop,
}

/// The engine thread's state.
pub(crate) struct Worker {
    model: Arc<dyn CausalLM>,
    store: KvStore,
    alloc: BlockAllocator,
    limits: Limits,
    running: Vec<Sequence>,
    waiting: VecDeque<Sequence>,
    commands: Receiver<Command>,
    stats: Arc<Mutex<EngineStats>>,
    /// Requests ended as cancelled so far.
    cancelled: u64,
    /// With a model split across ranks, rank 0's channel to the others
    /// ([`super::tensor_parallel`]): each step is sent before it runs.
    ranks: Option<StepBroadcast>,
    /// Which decode-only steps run as CUDA graphs ([`super::step_graph`]; the graphs
    /// themselves live on the engine thread, [`Worker::run`]).
    graphs: StepGraphs,
}

impl Worker {
    /// Allocates the KV pool for `config` (and the scratch slot of `graphs`, which decode steps
    /// run as CUDA graphs); with `ranks`, rank 0's part of it (its key/value heads) for a model
    /// split across ranks.
    pub fn new(
        model: Arc<dyn CausalLM>,
        config: &EngineConfig,
        dtype: DType,
        commands: Receiver<Command>,
        stats: Arc<Mutex<EngineStats>>,
        ranks: Option<StepBroadcast>,
        graphs: StepGraphs,
    ) -> Result<Self> {
        let m = model.config();
        if ranks.is_some() {
            tensor_parallel::check_model(model.as_ref())?;
        }
        let recurrent = m.layer_types.iter().any(|l| !l.is_attention());
        let encoder_decoder = model.encoder().is_some();
        if encoder_decoder && config.prefix_caching {
            tracing::info!("prefix caching is off: an encoder-decoder model's decoder keys depend on the encoder's input");
        }
        if recurrent {
            let per_sequence = m.state_bytes_per_sequence(dtype.size_in_bytes());
            // Outside the KV pool: each running sequence holds one.
            tracing::info!(
                per_sequence,
                max_running = config.max_running,
                at_most = per_sequence * config.max_running,
                "recurrent state per running sequence (bytes), beside the KV pool"
            );
            if config.prefix_caching {
                tracing::info!("prefix caching is off: this model keeps a recurrent state");
            }
        }
        let shard = ranks.as_ref().map(StepBroadcast::shard);
        let pool = config.cache.capacity_tokens();
        // The pool's slots, and the step graphs' scratch slot after them.
        let shape = tensor_parallel::store_shape(m, shard.as_ref(), pool + graphs.extra_slots())?;
        let store = KvStore::new(shape, dtype, model.device())?;
        Ok(Self {
            store,
            alloc: BlockAllocator::new(config.cache.num_blocks, config.cache.block_size),
            limits: Limits {
                policy: config.scheduler,
                max_batch_tokens: config.max_batch_tokens,
                max_running: config.max_running,
                // A shared prefix skips its tokens, which a recurrent state must see; an
                // encoder-decoder model's decoder keys and values depend on its encoder input.
                prefix_caching: config.prefix_caching && !recurrent && !encoder_decoder,
            },
            model,
            running: Vec::new(),
            waiting: VecDeque::new(),
            commands,
            stats,
            cancelled: 0,
            ranks,
            graphs,
        })
    }

    /// Runs until stopped or until every manager handle is gone.
    pub fn run(mut self) {
        let mut graphs = self.graphs.start();
        loop {
            let idle = self.running.is_empty() && self.waiting.is_empty();
            let first = if idle {
                match self.commands.recv_timeout(Duration::from_millis(200)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                None
            };
            let mut stop = false;
            for command in first
                .into_iter()
                .chain(self.commands.try_iter().collect::<Vec<_>>())
            {
                match command {
                    Command::Add(seq) => self.waiting.push_back(*seq),
                    Command::Cancel(id) => self.cancel(&id),
                    Command::Stop => stop = true,
                }
            }
            if stop {
                self.cancel_all();
                self.publish(0);
                break;
            }
            let preemptions = self.step(&mut graphs);
            self.publish(preemptions);
        }
        if let Some(ranks) = &self.ranks {
            if let Err(e) = ranks.stop() {
                tracing::warn!(error = %e, "telling the other tensor-parallel ranks to stop");
            }
        }
    }

    fn cancel(&mut self, id: &str) {
        let alloc = &mut self.alloc;
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let mut seq = self.running.remove(i);
            seq.end(RequestStatus::Cancelled, None, alloc);
            self.cancelled += 1;
        } else if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            if let Some(mut seq) = self.waiting.remove(i) {
                seq.end(RequestStatus::Cancelled, None, alloc);
                self.cancelled += 1;
            }
        }
    }

    /// Ends every request: the engine is stopping.
    fn cancel_all(&mut self) {
        let why = Arc::new(Error::EngineStopped);
        for mut seq in self.running.drain(..).chain(self.waiting.drain(..)) {
            seq.end(RequestStatus::Cancelled, Some(why.clone()), &mut self.alloc);
            self.cancelled += 1;
        }
    }

    /// One step; returns the preemptions it made.
    fn step(&mut self, graphs: &mut GraphedSteps) -> usize {
        let Plan { batch, preemptions } = schedule(
            self.limits,
            &mut self.running,
            &mut self.waiting,
            &mut self.alloc,
        );
        if batch.is_empty() {
            return preemptions;
        }
        let started = Instant::now();
        let logits = match self.forward(&batch, graphs) {
            Ok(l) => l,
            Err(e) => {
                self.fail(&batch, e);
                return preemptions;
            }
        };
        // Publish the blocks this step holds before any of its updates is sent, so that a client
        // reading `stats()` after an update sees at least the state that produced it.
        self.publish(0);
        let (mut prompt_tokens, mut generated) = (0u64, 0u64);
        // The logits row of each running sequence that samples this step (its prompt done).
        let mut rows = vec![None; self.running.len()];
        for (k, &(i, n)) in batch.iter().enumerate() {
            let seq = &mut self.running[i];
            if seq.tokens.len() == seq.prompt_len {
                prompt_tokens += n as u64;
            }
            seq.computed += n;
            if self.limits.prefix_caching {
                seq.register_full_blocks(&mut self.alloc);
            }
            if seq.pending() == 0 {
                rows[i] = Some(k);
            }
        }
        let (forwarded, sampled) = match sample(&logits, &mut self.running, &rows) {
            Ok(read) => read,
            Err(e) => {
                self.fail(&batch, e);
                return preemptions;
            }
        };
        let mut done = Vec::new();
        for (i, update) in sampled {
            let seq = &mut self.running[i];
            let update = match update {
                Ok(u) => u,
                Err(e) => {
                    seq.end(RequestStatus::Failed, Some(Arc::new(e)), &mut self.alloc);
                    done.push(i);
                    continue;
                }
            };
            generated += 1;
            let finished = update.status.is_final();
            if !seq.send(update) {
                tracing::debug!(request = %seq.id, "receiver gone: cancelling");
                seq.end(RequestStatus::Cancelled, None, &mut self.alloc);
                self.cancelled += 1;
                done.push(i);
            } else if finished {
                seq.release(&mut self.alloc);
                done.push(i);
            }
        }
        tracing::debug!(
            sequences = batch.len(),
            tokens = batch.iter().map(|&(_, n)| n).sum::<usize>(),
            forward_ms = (forwarded - started).as_secs_f64() * 1e3,
            sample_ms = forwarded.elapsed().as_secs_f64() * 1e3,
            "engine step"
        );
        done.sort_unstable();
        for &i in done.iter().rev() {
            self.running.remove(i);
        }
        if let Ok(mut s) = self.stats.lock() {
            s.prompt_tokens += prompt_tokens;
            s.generated_tokens += generated;
            s.steps += 1;
        }
        preemptions
    }

    /// Ends every sequence of `batch` with the step's error.
    fn fail(&mut self, batch: &[(usize, usize)], e: Error) {
        tracing::error!(error = %e, "engine step failed");
        let e = Arc::new(e);
        let mut failed: Vec<usize> = batch.iter().map(|&(i, _)| i).collect();
        failed.sort_unstable();
        for &i in failed.iter().rev() {
            let mut seq = self.running.remove(i);
            seq.end(RequestStatus::Failed, Some(e.clone()), &mut self.alloc);
        }
    }

    /// The packed forward over `batch`, queued; the last position's logits of every scheduled
    /// sequence, `[1, sequences, vocab]` f32. An encoder-decoder model's sequences run in the same
    /// forward, each cross-attending to its own encoder output through its cross-attention blocks
    /// (projected and written on its first step since admission).
    fn forward(&mut self, batch: &[(usize, usize)], graphs: &mut GraphedSteps) -> Result<Tensor> {
        let started = Instant::now();
        let bs = self.alloc.block_size();
        let decode_only = batch.iter().all(|&(i, n)| {
            let seq = &self.running[i];
            n == 1 && seq.states.is_empty() && seq.encoder.is_none()
        });
        let longest = batch
            .iter()
            .map(|&(i, _)| self.running[i].computed + 1)
            .max()
            .unwrap_or(0);
        if self.ranks.is_none() && decode_only && graphs.fits(batch.len(), longest) {
            let rows = batch
                .iter()
                .map(|&(i, _)| {
                    let seq = &self.running[i];
                    DecodeRow {
                        token: seq.tokens[seq.computed],
                        position: seq.computed as u32,
                        table: &seq.table,
                    }
                })
                .collect();
            if let Some(logits) = graphs.forward(self.model.as_ref(), &self.store, rows, bs) {
                if let Ok(mut s) = self.stats.lock() {
                    s.graph_steps += 1;
                }
                tracing::debug!(
                    host_ms = started.elapsed().as_secs_f64() * 1e3,
                    graph = graphs.last(),
                    "engine forward"
                );
                return Ok(logits); // [1, sequences, vocab]
            }
        }
        let total: usize = batch.iter().map(|&(_, n)| n).sum();
        let mut ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(batch.len());
        let mut slots = Vec::with_capacity(batch.len());
        for &(i, n) in batch {
            let seq = &self.running[i];
            let past = seq.computed;
            ids.extend_from_slice(&seq.tokens[past..past + n]);
            positions.extend((past..past + n).map(|p| p as u32));
            spans.push(SequenceSpan { past, new: n });
            slots.push(seq.table.slots(past + n, bs));
        }
        if let Some(ranks) = &self.ranks {
            let arrivals: Vec<u64> = batch
                .iter()
                .map(|&(i, _)| self.running[i].arrival)
                .collect();
            let running: Vec<u64> = self.running.iter().map(|s| s.arrival).collect();
            ranks.send((&ids, &positions), &spans, &slots, (&arrivals, &running))?;
        }
        let device = self.model.device();
        let input_ids = Tensor::from_vec(ids, (1, total), device)?; // [1, T]
        let position_ids = Tensor::from_vec(positions, (1, total), device)?; // [1, T]
        let states = batch
            .iter()
            .map(|&(i, _)| std::mem::take(&mut self.running[i].states))
            .collect();
        let mut cache = PagedBatch::new(&self.store, spans, slots, device)?.with_states(states)?;
        if self.model.encoder().is_some() {
            let cross = batch
                .iter()
                .map(|&(i, _)| match &self.running[i].encoder {
                    Some(encoder) => encoder.slots(bs, device),
                    None => Err(Error::input(
                        "an encoder-decoder sequence has no encoder output",
                    )),
                })
                .collect::<Result<Vec<_>>>()?;
            cache = cache.with_cross_slots(cross)?;
        }
        let out = self
            .model
            .forward(&ForwardInput::last(&input_ids, &position_ids), &mut cache)?;
        let launched = Instant::now();
        for (&(i, _), states) in batch.iter().zip(cache.into_states()) {
            let seq = &mut self.running[i];
            seq.states = states;
            if let Some(encoder) = &mut seq.encoder {
                encoder.mark_written();
            }
        }
        // On a GPU the forward returns once its work is queued; reading the logits waits for it.
        tracing::debug!(
            host_ms = (launched - started).as_secs_f64() * 1e3,
            "engine forward"
        );
        Ok(out.logits.to_dtype(DType::F32)?) // [1, sequences, vocab]
    }

    fn publish(&self, preemptions: usize) {
        if let Ok(mut s) = self.stats.lock() {
            s.waiting = self.waiting.len();
            s.running = self.running.len();
            s.blocks_used = self.alloc.num_used();
            s.blocks_total = self.alloc.num_blocks();
            s.blocks_cached = self.alloc.num_cached();
            s.preemptions += preemptions as u64;
            s.cancelled = self.cancelled;
            s.prefix_queries = self.alloc.prefix_queries;
            s.prefix_hits = self.alloc.prefix_hits;
            let with_state = self.running.iter().filter(|q| !q.states.is_empty());
            s.state_slots_used = with_state.clone().count();
            s.state_bytes = with_state.map(|q| q.states.bytes()).sum();
            s.encoder_bytes = (self.running.iter().chain(&self.waiting))
                .filter_map(|q| q.encoder.as_ref())
                .map(|e| e.bytes())
                .sum();
        }
    }
}

/// Each sampling sequence's index among the running ones and its step's update (or error).
type Sampled = Vec<(usize, Result<RequestUpdate>)>;

/// The next token of every sequence that samples this step (`rows[i]`: sequence `i`'s row of
/// `logits` `[1, sequences, vocab]` f32), and when the forward's results reached the host.
///
/// On a GPU the rows that only need their argmax ([`Sequence::greedy_only`]) are picked there
/// and read back as two numbers a row; the others' rows of logits are read back (gathered first
/// when some rows were picked on the device) and each sequence's processors and sampler run over
/// its own row, the sequences side by side (64 sequences over a 152k vocabulary on the H100's
/// host: the step's ITL p50 went from 34.9 to 20.7 ms; BENCHMARKS.md). Reading anything back
/// waits for the forward.
fn sample(
    logits: &Tensor,
    running: &mut [Sequence],
    rows: &[Option<usize>],
) -> Result<(Instant, Sampled)> {
    let logits = logits.squeeze(0)?; // [sequences, vocab]
    let mut on_device: Vec<(usize, usize)> = Vec::new();
    let mut on_host: Vec<(usize, usize)> = Vec::new();
    for (i, k) in rows.iter().enumerate() {
        let Some(k) = *k else { continue };
        if logits.device().is_cuda() && running[i].greedy_only() {
            on_device.push((i, k));
        } else {
            on_host.push((i, k));
        }
    }
    let mut sampled = Vec::with_capacity(on_device.len() + on_host.len());
    let mut forwarded = None;
    if !on_device.is_empty() {
        match crate::cuda::greedy_logprob(&logits)? {
            Some(picked) => {
                let picks = readback::to_host_f32(&picked)?; // [sequences, 2]
                forwarded = Some(Instant::now());
                for &(i, k) in &on_device {
                    let update = running[i].take_greedy(picks[2 * k] as TokenId, picks[2 * k + 1]);
                    sampled.push((i, Ok(update)));
                }
            }
            None => on_host.append(&mut on_device),
        }
    }
    if on_host.is_empty() {
        return Ok((forwarded.unwrap_or_else(Instant::now), sampled));
    }
    // The rows read back (all of them, or only the host-sampled ones gathered when some were
    // picked on the device), and each host-sampled sequence's row among them.
    let mut row_of = vec![None; running.len()];
    let host = if on_device.is_empty() {
        for &(i, k) in &on_host {
            row_of[i] = Some(k);
        }
        logits
    } else {
        for (j, &(i, _)) in on_host.iter().enumerate() {
            row_of[i] = Some(j);
        }
        let ks: Vec<u32> = on_host.iter().map(|&(_, k)| k as u32).collect();
        logits.index_select(&Tensor::new(ks, logits.device())?, 0)?
    };
    let vocab = host.dim(1)?;
    let (read, host_sampled) = readback::with_host_f32(&host, |logits| {
        let read = Instant::now();
        let sampled: Sampled = running
            .par_iter_mut()
            .enumerate()
            .filter_map(|(i, seq)| {
                let j = row_of[i]?;
                Some((i, seq.sample(logits[j * vocab..(j + 1) * vocab].to_vec())))
            })
            .collect();
        (read, sampled)
    })?;
    sampled.extend(host_sampled);
    Ok((forwarded.unwrap_or(read), sampled))
}
