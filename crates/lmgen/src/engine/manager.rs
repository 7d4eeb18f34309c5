//! The handle to the engine thread (transformers' `ContinuousBatchingManager`): add requests,
//! cancel them, read results or stream them, start, stop, join.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::request::{GenerationOutput, OutputSink, Request, RequestUpdate};
use super::sequence::Sequence;
use super::worker::{Command, Worker};
use super::{EngineConfig, EngineStats};
use crate::error::{Error, Result};
use crate::generation::stop_strings::CleanTokenizerVocab;
use crate::models::{CausalLM, DType};
use crate::tokenizer::Tokenizer;

/// Finished outputs of non-streaming requests, in completion order.
#[derive(Debug, Default)]
struct ResultStore {
    done: HashMap<String, GenerationOutput>,
    order: VecDeque<String>,
}

type Results = Arc<(Mutex<ResultStore>, Condvar)>;

/// Runs a continuous batching engine on its own thread.
pub struct ContinuousBatchingManager {
    model: Arc<dyn CausalLM>,
    config: EngineConfig,
    dtype: DType,
    stop_vocab: Option<CleanTokenizerVocab>,
    sender: Mutex<Sender<Command>>,
    receiver: Mutex<Option<Receiver<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    next_id: AtomicU64,
    results: Results,
    streams: Mutex<HashMap<String, Receiver<RequestUpdate>>>,
    stats: Arc<Mutex<EngineStats>>,
    /// Rank 0's channel to the other ranks of a split model ([`Self::with_ranks`]).
    ranks: Option<super::tensor_parallel::StepBroadcast>,
    /// Tests: every fitting decode step through the step graphs' padded path, op by op, on any
    /// device ([`super::step_graph::StepGraphs::uncaptured`]).
    #[cfg(test)]
    uncaptured_step_graphs: bool,
}

impl std::fmt::Debug for ContinuousBatchingManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinuousBatchingManager")
            .field("config", &self.config)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl ContinuousBatchingManager {
    /// A manager for `model` (keys and values in `dtype`, the model's compute dtype). `tokenizer`
    /// is needed for requests with `stop_strings`. Call [`Self::start`] to run it.
    pub fn new(
        model: Arc<dyn CausalLM>,
        config: EngineConfig,
        dtype: DType,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<Self> {
        config.validate()?;
        let stop_vocab = tokenizer.map(CleanTokenizerVocab::new).transpose()?;
        let (sender, receiver) = mpsc::channel();
        let stats = EngineStats {
            blocks_total: config.cache.num_blocks,
            ..EngineStats::default()
        };
        Ok(Self {
            model,
            config,
            dtype,
            stop_vocab,
            sender: Mutex::new(sender),
            receiver: Mutex::new(Some(receiver)),
            thread: Mutex::new(None),
            next_id: AtomicU64::new(0),
            results: Arc::new((Mutex::new(ResultStore::default()), Condvar::new())),
            streams: Mutex::new(HashMap::new()),
            stats: Arc::new(Mutex::new(stats)),
            ranks: None,
            #[cfg(test)]
            uncaptured_step_graphs: false,
        })
    }

    #[cfg(test)]
    /// Every fitting decode step through the step graphs' padded path, op by op (what a graph
    /// replays), on any device.
    pub(crate) fn with_uncaptured_step_graphs(mut self) -> Self {
        self.uncaptured_step_graphs = true;
        self
    }

    /// Which of the engine's decode steps run as CUDA graphs.
    fn step_graphs(&self) -> super::step_graph::StepGraphs {
        use super::step_graph::StepGraphs;
        let (model, running) = (self.model.as_ref(), self.config.max_running);
        let pool = self.config.cache.capacity_tokens();
        #[cfg(test)]
        if self.uncaptured_step_graphs {
            return StepGraphs::uncaptured(model, running, pool);
        }
        StepGraphs::new(model, running, pool, self.ranks.is_some())
    }

    /// For rank 0 of a model split across `comm`'s ranks (loaded with
    /// [`crate::models::load_model_sharded`]): every step is broadcast to the other ranks, which
    /// run [`super::follow`] with the same configuration; stopping the engine stops them.
    /// Decoder-only models (an encoder-decoder one is refused at [`Self::start`]).
    pub fn with_ranks(mut self, comm: Arc<dyn crate::parallel::Communicator>) -> Result<Self> {
        self.ranks = Some(super::tensor_parallel::StepBroadcast::new(comm)?);
        Ok(self)
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Starts the engine thread (allocating the KV pool). Requests added before are served then.
    pub fn start(&self) -> Result<()> {
        let receiver = lock(&self.receiver)?
            .take()
            .ok_or_else(|| Error::input("the engine was already started"))?;
        let worker = Worker::new(
            self.model.clone(),
            &self.config,
            self.dtype,
            receiver,
            self.stats.clone(),
            self.ranks.clone(),
            self.step_graphs(),
        )?;
        let handle = std::thread::Builder::new()
            .name("lmgen-engine".into())
            .spawn(move || worker.run())
            .map_err(|source| Error::Io {
                path: "lmgen-engine thread".into(),
                source,
            })?;
        *lock(&self.thread)? = Some(handle);
        Ok(())
    }

    /// Whether the engine thread is alive.
    pub fn is_running(&self) -> bool {
        self.thread
            .lock()
            .map(|t| t.as_ref().is_some_and(|h| !h.is_finished()))
            .unwrap_or(false)
    }

    /// Adds a request whose result [`Self::get_result`] returns; returns its id.
    pub fn add_request(&self, request: Request) -> Result<String> {
        let results = self.results.clone();
        let id = self.request_id(&request);
        let mut output = GenerationOutput::new(id.clone(), request.input_ids.clone());
        let sink = move |update: RequestUpdate| {
            let done = update.status.is_final();
            output.apply(update);
            if done {
                let (store, ready) = &*results;
                if let Ok(mut store) = store.lock() {
                    store.order.push_back(output.request_id.clone());
                    store.done.insert(output.request_id.clone(), output.clone());
                }
                ready.notify_all();
            }
            true
        };
        self.submit(id, request, Box::new(sink))
    }

    /// Adds a request whose updates [`Self::request_id_iter`] streams; returns its id.
    pub fn add_streaming_request(&self, request: Request) -> Result<String> {
        let (tx, rx) = mpsc::channel();
        let id = self.request_id(&request);
        lock(&self.streams)?.insert(id.clone(), rx);
        self.submit(id.clone(), request, Box::new(tx))
            .inspect_err(|_| {
                if let Ok(mut s) = self.streams.lock() {
                    s.remove(&id);
                }
            })
    }

    /// Adds a request whose updates go to `sink` (on the engine thread; keep it quick).
    pub fn add_request_with_sink(
        &self,
        request: Request,
        sink: Box<dyn OutputSink>,
    ) -> Result<String> {
        let id = self.request_id(&request);
        self.submit(id, request, sink)
    }

    fn request_id(&self, request: &Request) -> String {
        request
            .request_id
            .clone()
            .unwrap_or_else(|| format!("req_{}", self.next_id.fetch_add(1, Ordering::Relaxed)))
    }

    fn submit(&self, id: String, request: Request, sink: Box<dyn OutputSink>) -> Result<String> {
        let arrival = self.next_id.fetch_add(1, Ordering::Relaxed);
        let seq = Sequence::new(
            id.clone(),
            arrival,
            request,
            self.model.as_ref(),
            self.stop_vocab.as_ref(),
            sink,
        )?;
        let blocks = seq.blocks_for(seq.max_length, self.config.cache.block_size);
        if blocks > self.config.cache.num_blocks {
            let encoder = seq.encoder.as_ref().map_or(0, |e| e.len());
            return Err(Error::input(format!(
                "the request needs up to {} tokens of KV cache{} but the pool holds {} ({} blocks of {}); \
                 lower `max_new_tokens` or raise the KV-cache budget",
                seq.max_length,
                if encoder > 0 {
                    format!(" and {encoder} encoder positions of cross-attention keys and values")
                } else {
                    String::new()
                },
                self.config.cache.capacity_tokens(),
                self.config.cache.num_blocks,
                self.config.cache.block_size
            )));
        }
        lock(&self.sender)?
            .send(Command::Add(Box::new(seq)))
            .map_err(|_| Error::EngineStopped)?;
        Ok(id)
    }

    /// Cancels a request (waiting or running); its blocks are freed. Unknown ids are ignored.
    pub fn cancel_request(&self, request_id: &str) {
        if let Ok(s) = self.sender.lock() {
            let _ = s.send(Command::Cancel(request_id.to_string()));
        }
    }

    /// The result of `request_id` (or, with `None`, of the next request to finish), waiting up
    /// to `timeout` (`None`: until it comes). `None` on timeout.
    pub fn get_result(
        &self,
        request_id: Option<&str>,
        timeout: Option<Duration>,
    ) -> Option<GenerationOutput> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let (store, ready) = &*self.results;
        let mut guard = store.lock().ok()?;
        loop {
            let found = match request_id {
                Some(id) => guard
                    .done
                    .remove(id)
                    .inspect(|_| guard.order.retain(|x| x != id)),
                None => guard
                    .order
                    .pop_front()
                    .and_then(|id| guard.done.remove(&id)),
            };
            if found.is_some() {
                return found;
            }
            if !self.is_running() && guard.done.is_empty() {
                return None;
            }
            let wait = match deadline {
                Some(d) => d.checked_duration_since(Instant::now())?,
                None => Duration::from_millis(200),
            };
            guard = ready
                .wait_timeout(guard, wait.min(Duration::from_millis(200)))
                .ok()?
                .0;
        }
    }

    /// The updates of a streaming request as they come, ending with its final one.
    pub fn request_id_iter(&self, request_id: &str) -> Result<impl Iterator<Item = RequestUpdate>> {
        let rx = lock(&self.streams)?.remove(request_id).ok_or_else(|| {
            Error::input(format!(
                "no streaming request `{request_id}` (add it with add_streaming_request; it can be iterated once)"
            ))
        })?;
        let mut ended = false;
        Ok(std::iter::from_fn(move || {
            if ended {
                return None;
            }
            let update = rx.recv().ok()?;
            ended = update.status.is_final();
            Some(update)
        }))
    }

    /// Counters and gauges of the engine.
    pub fn stats(&self) -> EngineStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Asks the engine thread to stop after its current step: requests still waiting or running
    /// end as cancelled. With `block`, waits for it (up to `timeout`).
    pub fn stop(&self, block: bool, timeout: Option<Duration>) {
        if let Ok(s) = self.sender.lock() {
            let _ = s.send(Command::Stop);
        }
        if block {
            self.join(timeout);
        }
    }

    /// Waits for the engine thread to end (up to `timeout`); `true` if it has.
    pub fn join(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let Ok(mut guard) = self.thread.lock() else {
                return false;
            };
            match guard.as_ref() {
                None => return true,
                Some(h) if h.is_finished() => {
                    if let Some(h) = guard.take() {
                        if h.join().is_err() {
                            tracing::error!("the engine thread panicked");
                        }
                    }
                    return true;
                }
                Some(_) => {}
            }
            drop(guard);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ContinuousBatchingManager {
    fn drop(&mut self) {
        self.stop(true, Some(Duration::from_secs(30)));
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::input("the engine's state is poisoned (a thread panicked)"))
}
