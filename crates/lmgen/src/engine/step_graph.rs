//! The engine's decode-only steps as CUDA graphs, one per batch bucket: a step whose sequences
//! each add one token is padded to the smallest bucket that holds it and runs as that bucket's
//! graph, replayed every step after its capture, so the host launches one graph instead of the
//! forward's ~15 ops a layer: on the H100 a 64-sequence decode step of the Qwen2.5-0.5B shape
//! queues in 0.34 ms instead of 4.96 (p50) and takes 5.46 ms instead of 6.18, the rest being the
//! GPU's own work (BENCHMARKS.md).
//!
//! A graph replays the device work it was captured from, so everything that changes from step to
//! step lives in device buffers of the bucket, written before each replay: the tokens and
//! positions (`[2, bucket]` u32: RoPE angles are rows of a device table,
//! [`crate::models::layers::rotary::RotaryEmbedding::cos_sin_at`]) and the paged index of every
//! sequence's slots ([`PagedIndex::with_capacity`], up to `max_len` keys a sequence), through
//! which each layer writes the new keys and values and attends over the store in place. Padding
//! rows (token 0 at position 0) write their keys and values to a scratch slot of the store kept
//! outside the pool and attend only to it: no sequence's blocks are touched, and each real row's
//! arithmetic is its own.
//!
//! Each bucket's first step runs op by op through the same device-buffer path (recording the
//! constants candle uploads, as [`crate::cuda::graph`] does), its second is captured and
//! launched, every later one replayed. A step that does not fit (a prompt chunk, a sequence longer
//! than `max_len`, more sequences than the largest bucket) runs eagerly, as does every step of a
//! bucket whose capture failed: outputs never depend on whether a graph ran, up to the padding
//! rows' share of the batch (products over more rows may add up in another order). On by
//! default; `LMGEN_CUDA_ENGINE_GRAPHS=0` turns them off, `LMGEN_CUDA_GRAPHS=0` turns them off with
//! the decode graphs.

use candle_core::{DType, Device, Tensor};

use crate::cache::paged::{BlockTable, KvStore, PagedBatch};
use crate::cache::SequenceSpan;
use crate::cuda::graph::capture;
use crate::cuda::PagedIndex;
use crate::error::Result;
use crate::models::{CausalLM, ForwardInput};

/// One sequence of a decode-only step: its new token, that token's position (the keys it holds
/// before it), and its blocks.
pub(crate) struct DecodeRow<'a> {
    pub token: u32,
    pub position: u32,
    pub table: &'a BlockTable,
}

/// Which steps of one engine run as graphs: made with the engine, its graphs made and run on the
/// engine thread ([`StepGraphs::start`]; a CUDA graph is not to be shared between threads).
#[derive(Debug, Clone)]
pub(crate) struct StepGraphs {
    /// Bucket sizes, ascending (the last is the engine's `max_running`); empty when off.
    sizes: Vec<usize>,
    /// Keys a sequence may hold for its step to run through a graph.
    max_len: usize,
    /// The store's slot where padding rows write (one past the pool's).
    scratch: u32,
    /// Capture graphs (CUDA); else every fitting step stays op by op (the CPU tests).
    capture: bool,
}

/// The step graphs on the engine thread: each bucket's buffers and graph.
pub(crate) struct GraphedSteps {
    plan: StepGraphs,
    /// Per size: `None` until its first step, `Some(None)` once it is off.
    buckets: Vec<Option<Option<Bucket>>>,
    /// What the last step did, for the engine's debug log.
    last: &'static str,
}

impl StepGraphs {
    /// Graphs for an engine of `max_running` sequences over a pool of `pool_slots` slots: on for
    /// a model on a CUDA device whose one-token steps read their positions on the device
    /// ([`CausalLM::takes_device_positions`]; attention-only models without sinks, softcapping
    /// or windows shorter than the graphs' keys), decoder-only, unsplit, with graphs on.
    pub fn new(model: &dyn CausalLM, max_running: usize, pool_slots: usize, split: bool) -> Self {
        let on = model.device().is_cuda() && enabled() && model.encoder().is_none() && !split;
        Self::build(model, max_running, pool_slots, on, true)
    }

    #[cfg(test)]
    /// Every fitting step through the padded device-buffer path, never captured: what a graph
    /// replays, op by op on any device.
    pub fn uncaptured(model: &dyn CausalLM, max_running: usize, pool_slots: usize) -> Self {
        Self::build(model, max_running, pool_slots, true, false)
    }

    fn build(
        model: &dyn CausalLM,
        max_running: usize,
        pool_slots: usize,
        on: bool,
        capture: bool,
    ) -> Self {
        // The longest cache the paged kernel takes, shortened to what the model reads on the
        // device (a sliding window, a RoPE table).
        let max_len = [8192, 4096, 2048, 1024, 512]
            .into_iter()
            .filter(|&l| l <= crate::cuda::PAGED_DECODE_MAX_KEYS)
            .find(|&l| model.takes_device_positions(l));
        let sizes = match (on, max_len, u32::try_from(pool_slots)) {
            (true, Some(_), Ok(_)) => bucket_sizes(max_running),
            _ => Vec::new(),
        };
        Self {
            sizes,
            max_len: max_len.unwrap_or(0),
            scratch: pool_slots as u32,
            capture,
        }
    }

    /// Slots the store needs beyond the pool's: the padding rows' scratch slot, when on.
    pub fn extra_slots(&self) -> usize {
        usize::from(!self.sizes.is_empty())
    }

    /// The graphs' state, for the engine thread.
    pub fn start(&self) -> GraphedSteps {
        GraphedSteps {
            plan: self.clone(),
            buckets: self.sizes.iter().map(|_| None).collect(),
            last: "off",
        }
    }
}

impl GraphedSteps {
    /// Whether a decode-only step of `rows` sequences, the longest holding `longest` keys with
    /// its new token, runs through a bucket's graph.
    pub fn fits(&self, rows: usize, longest: usize) -> bool {
        rows > 0
            && longest <= self.plan.max_len
            && self
                .bucket_of(rows)
                .is_some_and(|b| !matches!(self.buckets[b], Some(None)))
    }

    /// What the last step did: `"replay"`, `"capture"`, `"warmup"`, or `"off"` (eager).
    pub fn last(&self) -> &'static str {
        self.last
    }

    fn bucket_of(&self, rows: usize) -> Option<usize> {
        self.plan.sizes.iter().position(|&s| s >= rows)
    }

    /// The logits `[1, rows.len(), vocab]` f32 of a decode-only step ([`StepGraphs::fits`])
    /// through its bucket's graph, or `None` where it failed to run that way (the bucket is off
    /// from then on; the caller runs the step eagerly: nothing it wrote is read before the
    /// eager step writes it again). The logits of a captured bucket are a view of its graph's
    /// buffer, overwritten by the bucket's next step: read them before the next forward.
    pub fn forward(
        &mut self,
        model: &dyn CausalLM,
        store: &KvStore,
        rows: Vec<DecodeRow<'_>>,
        block_size: usize,
    ) -> Option<Tensor> {
        self.last = "off";
        let real = rows.len();
        let b = self.bucket_of(real)?;
        let size = self.plan.sizes[b];
        let step = Padded::new(rows, size, self.plan.scratch, block_size);
        let device = model.device().clone();
        let made = match self.buckets[b].take() {
            Some(Some(bucket)) => Ok(bucket),
            Some(None) => return None,
            None => Bucket::new(size, self.plan.max_len, &device),
        };
        let out = made.and_then(|mut bucket| {
            let out = bucket.step(model, store, &step, self.plan.capture);
            if out.is_ok() {
                self.buckets[b] = Some(Some(bucket));
            }
            let (logits, ran) = out?;
            self.last = ran;
            Ok(logits.narrow(1, 0, real)?)
        });
        match out {
            Ok(logits) => Some(logits),
            Err(err) => {
                tracing::debug!(%err, size, "engine step graph off for this bucket; its steps run eagerly");
                self.buckets[b] = Some(None);
                None
            }
        }
    }
}

/// Whether the engine's step graphs are on: with the decode graphs ([`crate::cuda::graph`]), and
/// `LMGEN_CUDA_ENGINE_GRAPHS` not `0`.
fn enabled() -> bool {
    crate::cuda::graph::enabled()
        && std::env::var("LMGEN_CUDA_ENGINE_GRAPHS").map_or(DEFAULT_ON, |v| v != "0")
}

/// On by default: a GPU run gave the CPU engine's tokens with them and measured them
/// (BENCHMARKS.md).
const DEFAULT_ON: bool = true;

/// 1, 2, 4, 8, every multiple of 8 up to 64, then every multiple of 32, up to `max_running` (the
/// last bucket). Each captured graph keeps its own intermediates (the `[size, vocab]` f32 logits
/// the largest of them, 39 MB for 64 rows of a 152k vocabulary) and its bucket a logits buffer
/// and an index of `size * 8192` slots; past 64 rows a step's weights and attention outweigh a
/// few padding rows, so the buckets thin out there (256 running sequences: 17 buckets, not 35).
fn bucket_sizes(max_running: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = [1, 2, 4]
        .into_iter()
        .chain((8..=64).step_by(8))
        .chain((96..).step_by(32))
        .take_while(|&s| s < max_running)
        .collect();
    sizes.push(max_running.max(1));
    sizes
}

/// A step padded to its bucket: host values to upload, its sequences' spans, and their blocks.
struct Padded<'a> {
    /// `[tokens..., positions...]`, `2 * size`.
    inputs: Vec<u32>,
    spans: Vec<SequenceSpan>,
    rows: Vec<DecodeRow<'a>>,
    /// Slots a row: its cached tokens and the new one (1 for a padding row).
    lens: Vec<usize>,
    scratch: u32,
    block_size: usize,
}

impl<'a> Padded<'a> {
    fn new(rows: Vec<DecodeRow<'a>>, size: usize, scratch: u32, block_size: usize) -> Self {
        let mut inputs = vec![0u32; 2 * size];
        for (i, row) in rows.iter().enumerate() {
            inputs[i] = row.token;
            inputs[size + i] = row.position;
        }
        // Padding: token 0 at position 0, its one key at the scratch slot.
        let lens: Vec<usize> = (0..size)
            .map(|i| rows.get(i).map_or(1, |r| r.position as usize + 1))
            .collect();
        let spans = lens
            .iter()
            .map(|&len| SequenceSpan {
                past: len - 1,
                new: 1,
            })
            .collect();
        Self {
            inputs,
            spans,
            rows,
            lens,
            scratch,
            block_size,
        }
    }

    /// Appends row `i`'s slots.
    fn push_slots(&self, i: usize, index: &mut Vec<u32>) {
        match self.rows.get(i) {
            Some(row) => row.table.extend_slots(self.lens[i], self.block_size, index),
            None => index.push(self.scratch),
        }
    }

    /// Each row's slots as a list (what a forward's packed batch holds; a replay needs none).
    fn slot_lists(&self) -> Vec<Vec<u32>> {
        (0..self.lens.len())
            .map(|i| {
                let mut slots = Vec::with_capacity(self.lens[i]);
                self.push_slots(i, &mut slots);
                slots
            })
            .collect()
    }

    /// The index the paged kernels read: sequence `i`'s token at input position `i`, its slots
    /// straight from its block table.
    fn refill(&self, index: &PagedIndex) -> Result<()> {
        index.refill_in_order(&self.lens, |i, out| self.push_slots(i, out))
    }
}

enum Phase {
    /// The next step runs op by op through the device buffers.
    Warmup,
    /// The next step is captured, then launched.
    Capture,
    /// Every step replays the graph.
    Replay(capture::Captured),
}

/// One bucket's buffers and graph.
struct Bucket {
    size: usize,
    phase: Phase,
    /// `[2, size]` u32: the step's tokens, then their positions.
    inputs: Tensor,
    index: PagedIndex,
    /// `[1, size, vocab]` f32: where the graph leaves the logits.
    logits: Option<Tensor>,
}

impl Bucket {
    fn new(size: usize, max_len: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            size,
            phase: Phase::Warmup,
            inputs: Tensor::zeros((2, size), DType::U32, device)?,
            index: PagedIndex::with_capacity(size, max_len, device)?,
            logits: None,
        })
    }

    /// One step (its inputs written first): op by op, captured and launched, or replayed, and
    /// which of these it was. A failure leaves the bucket unusable (the caller drops it).
    fn step(
        &mut self,
        model: &dyn CausalLM,
        store: &KvStore,
        step: &Padded<'_>,
        capture_on: bool,
    ) -> Result<(Tensor, &'static str)> {
        crate::cuda::upload::write_u32(&self.inputs, &step.inputs)?;
        step.refill(&self.index)?;
        match std::mem::replace(&mut self.phase, Phase::Warmup) {
            Phase::Warmup => Ok((self.warmup(model, store, step, capture_on)?, "warmup")),
            Phase::Capture => Ok((self.capture(model, store, step)?, "capture")),
            Phase::Replay(captured) => Ok((self.replay(captured)?, "replay")),
        }
    }

    /// The forward of a padded step reading its tokens, positions and slots from the bucket's
    /// buffers: `[1, size, vocab]` f32.
    fn forward(&self, model: &dyn CausalLM, store: &KvStore, step: &Padded<'_>) -> Result<Tensor> {
        let ids = self.inputs.narrow(0, 0, 1)?; // [1, size]
        let positions = self.inputs.narrow(0, 1, 1)?; // [1, size]
        let host_positions =
            Tensor::from_slice(&step.inputs[self.size..], (1, self.size), &Device::Cpu)?;
        let mut cache =
            PagedBatch::new(store, step.spans.clone(), step.slot_lists(), model.device())?
                .with_fixed_index(&self.index);
        let out = model.forward(
            &ForwardInput {
                device_positions: Some(&positions),
                ..ForwardInput::last(&ids, &host_positions)
            },
            &mut cache,
        )?;
        Ok(out.logits.to_dtype(DType::F32)?)
    }

    fn warmup(
        &mut self,
        model: &dyn CausalLM,
        store: &KvStore,
        step: &Padded<'_>,
        capture_on: bool,
    ) -> Result<Tensor> {
        let device = model.device().clone();
        let _constants = capture::record_constants(&device, capture_on);
        let logits = self.forward(model, store, step)?;
        if capture_on {
            self.logits = Some(Tensor::zeros(logits.shape(), DType::F32, &device)?);
            self.phase = Phase::Capture;
        } else {
            self.phase = Phase::Warmup;
        }
        Ok(logits)
    }

    fn capture(
        &mut self,
        model: &dyn CausalLM,
        store: &KvStore,
        step: &Padded<'_>,
    ) -> Result<Tensor> {
        let logits = self
            .logits
            .clone()
            .ok_or_else(|| crate::error::Error::unsupported("no logits buffer"))?;
        let captured = capture::capture(model.device(), self.size, || {
            let out = self.forward(model, store, step)?;
            logits.slice_set(&out, 0, 0)?;
            Ok(())
        })?;
        captured.launch()?;
        self.phase = Phase::Replay(captured);
        Ok(logits)
    }

    fn replay(&mut self, captured: capture::Captured) -> Result<Tensor> {
        let logits = self
            .logits
            .clone()
            .ok_or_else(|| crate::error::Error::unsupported("no logits buffer"))?;
        captured.launch()?;
        self.phase = Phase::Replay(captured);
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::models::fixture_model as model;

    /// Sequence `i` owns slots `[64 i, 64 (i + 1))` of a 256-slot pool: block `i` of 64 slots.
    const POOL: usize = 256;

    fn tables() -> Vec<crate::cache::paged::BlockTable> {
        (0..4)
            .map(|i| {
                let mut t = crate::cache::paged::BlockTable::new();
                t.push(i);
                t
            })
            .collect()
    }

    fn slots_of(seq: usize, len: usize) -> Vec<u32> {
        (0..len as u32).map(|p| seq as u32 * 64 + p).collect()
    }

    fn argmax_rows(logits: &Tensor) -> Vec<u32> {
        let rows: Vec<Vec<f32>> = logits.squeeze(0).unwrap().to_vec2().unwrap();
        rows.iter()
            .map(|r| crate::generation::sampler::argmax(r) as u32)
            .collect()
    }

    fn bits(logits: &Tensor) -> Vec<u32> {
        let rows: Vec<Vec<f32>> = logits.squeeze(0).unwrap().to_vec2().unwrap();
        rows.iter().flatten().map(|x| x.to_bits()).collect()
    }

    /// Four prompts prefilled into two stores, then decode steps over changing sets of them:
    /// the plain packed forward on one store, the step graphs' padded path on the other.
    #[test]
    fn padded_device_buffer_steps_give_the_plain_steps_logits_and_cache_to_the_bit() {
        for dir in [
            "golden/models/llama",
            "golden/models/qwen2",
            "golden-arch/models/qwen3",
        ] {
            let model = model(dir);
            let cfg = model.config();
            let vocab = cfg.vocab_size as u32;
            let device = model.device().clone();
            let shape = |slots| super::super::tensor_parallel::store_shape(cfg, None, slots);
            let plain_store = KvStore::new(shape(POOL).unwrap(), model.dtype(), &device).unwrap();
            let plan = StepGraphs::uncaptured(&*model, 4, POOL);
            assert_eq!(plan.extra_slots(), 1, "{dir}");
            let mut graphs = plan.start();
            let graph_store =
                KvStore::new(shape(POOL + 1).unwrap(), model.dtype(), &device).unwrap();
            let mut seqs: Vec<Vec<u32>> = (0..4u32)
                .map(|i| {
                    (0..3 + 2 * i)
                        .map(|t| (7 * t + 3 * i + 1) % vocab)
                        .collect()
                })
                .collect();
            for (i, prompt) in seqs.clone().iter().enumerate() {
                let n = prompt.len();
                let ids = Tensor::new(prompt.as_slice(), &device)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let pos: Vec<u32> = (0..n as u32).collect();
                let pos = Tensor::new(pos.as_slice(), &device)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let mut next = 0;
                for store in [&plain_store, &graph_store] {
                    let spans = vec![SequenceSpan { past: 0, new: n }];
                    let mut cache =
                        PagedBatch::new(store, spans, vec![slots_of(i, n)], &device).unwrap();
                    let out = model
                        .forward(&ForwardInput::last(&ids, &pos), &mut cache)
                        .unwrap();
                    next = argmax_rows(&out.logits)[0];
                }
                seqs[i].push(next);
            }
            // Which sequences step together: every bucket (1, 2, 4), and 3 rows padded to 4.
            let tables = tables();
            let plans: [&[usize]; 6] = [&[0, 1, 2], &[3], &[1, 3], &[0, 1, 2, 3], &[2, 0, 3], &[1]];
            for plan in plans {
                let rows: Vec<(usize, u32, u32, Vec<u32>)> = plan
                    .iter()
                    .map(|&i| {
                        let len = seqs[i].len();
                        let token = seqs[i][len - 1];
                        (i, token, len as u32 - 1, slots_of(i, len))
                    })
                    .collect();
                let ids: Vec<u32> = rows.iter().map(|r| r.1).collect();
                let pos: Vec<u32> = rows.iter().map(|r| r.2).collect();
                let spans = rows
                    .iter()
                    .map(|r| SequenceSpan {
                        past: r.3.len() - 1,
                        new: 1,
                    })
                    .collect();
                let slots = rows.iter().map(|r| r.3.clone()).collect();
                let ids_t = Tensor::new(ids.as_slice(), &device)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let pos_t = Tensor::new(pos.as_slice(), &device)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let mut cache = PagedBatch::new(&plain_store, spans, slots, &device).unwrap();
                let plain = model
                    .forward(&ForwardInput::last(&ids_t, &pos_t), &mut cache)
                    .unwrap()
                    .logits;
                assert!(graphs.fits(rows.len(), rows.iter().map(|r| r.3.len()).max().unwrap()));
                let decode_rows = rows
                    .iter()
                    .map(|r| DecodeRow {
                        token: r.1,
                        position: r.2,
                        table: &tables[r.0],
                    })
                    .collect();
                let got = graphs
                    .forward(&*model, &graph_store, decode_rows, 64)
                    .unwrap_or_else(|| panic!("{dir} {plan:?}: the padded path turned itself off"));
                assert_eq!(graphs.last(), "warmup");
                assert_eq!(got.dims(), plain.dims(), "{dir} {plan:?}");
                assert_eq!(bits(&got), bits(&plain), "{dir} {plan:?}");
                for (r, next) in rows.iter().zip(argmax_rows(&plain)) {
                    seqs[r.0].push(next);
                }
            }
            // Every pool slot holds the same keys and values; padding wrote only the scratch.
            let pool = Tensor::new((0..POOL as u32).collect::<Vec<_>>(), &device).unwrap();
            for layer in 0..cfg.num_hidden_layers {
                let (pk, pv) = plain_store.gather(layer, &pool).unwrap();
                let (gk, gv) = graph_store.gather(layer, &pool).unwrap();
                let flat = |t: &Tensor| -> Vec<u32> {
                    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                    v.iter().map(|x| x.to_bits()).collect()
                };
                assert_eq!(flat(&pk), flat(&gk), "{dir}: layer {layer} keys");
                assert_eq!(flat(&pv), flat(&gv), "{dir}: layer {layer} values");
            }
        }
    }

    /// The whole engine, every fitting decode step through the padded path (four running
    /// sequences at most, six requests of different lengths: buckets of 1, 2 and 4, three rows
    /// padded to four, prompt chunks eager between them): the plain engine's tokens.
    #[test]
    fn the_engine_gives_the_same_tokens_through_the_padded_steps() {
        use std::sync::Arc;
        use std::time::Duration;

        use crate::engine::{ContinuousBatchingManager, EngineConfig, Request};
        use crate::generation::GenerationConfig;

        let model: Arc<dyn CausalLM> = Arc::from(model("golden/models/llama"));
        let vocab = model.config().vocab_size as u32;
        let prompts: Vec<Vec<u32>> = (0..6u32)
            .map(|i| (0..2 + 3 * i).map(|t| (5 * t + i + 1) % vocab).collect())
            .collect();
        let config = GenerationConfig {
            max_new_tokens: Some(8),
            ..Default::default()
        };
        let run = |graphs: bool| -> (Vec<Vec<u32>>, u64) {
            let engine = EngineConfig {
                max_running: 4,
                ..Default::default()
            };
            let mut manager =
                ContinuousBatchingManager::new(model.clone(), engine, DType::F32, None).unwrap();
            if graphs {
                manager = manager.with_uncaptured_step_graphs();
            }
            manager.start().unwrap();
            let ids: Vec<String> = prompts
                .iter()
                .map(|p| {
                    manager
                        .add_request(Request::new(p.clone(), config.clone()))
                        .unwrap()
                })
                .collect();
            let outs = ids
                .iter()
                .map(|id| manager.get_result(Some(id), None).unwrap().generated_tokens)
                .collect();
            let graph_steps = manager.stats().graph_steps;
            manager.stop(true, Some(Duration::from_secs(10)));
            (outs, graph_steps)
        };
        let (plain, none) = run(false);
        assert_eq!(none, 0, "the CPU engine runs no step graph of its own");
        let (got, graphed) = run(true);
        assert!(graphed >= 8, "{graphed} steps through the padded path");
        assert_eq!(got, plain);
        assert!(plain.iter().all(|t| !t.is_empty()));
    }

    #[test]
    fn steps_the_graphs_do_not_take() {
        let llama = model("golden/models/llama");
        let plan = StepGraphs::uncaptured(&*llama, 64, POOL);
        assert_eq!(plan.sizes, [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]);
        let graphs = plan.start();
        assert!(graphs.fits(64, plan.max_len));
        assert!(!graphs.fits(65, 10), "more rows than the largest bucket");
        assert!(!graphs.fits(0, 1));
        assert!(
            !graphs.fits(3, plan.max_len + 1),
            "a sequence past the graphs' keys"
        );
        assert_eq!(bucket_sizes(5), [1, 2, 4, 5]);
        assert_eq!(bucket_sizes(1), [1]);
        assert_eq!(bucket_sizes(20), [1, 2, 4, 8, 16, 20]);
        let many = bucket_sizes(256);
        assert_eq!(&many[11..], [96, 128, 160, 192, 224, 256]);
        assert_eq!(many.len(), 17);
        assert_eq!(bucket_sizes(100)[11..], [96, 100]);
        // Soft-capped attention and learned positions read the host: never graphed, and the
        // store needs no scratch slot.
        for dir in ["golden/models/gemma2", "golden/models/gpt2"] {
            let plan = StepGraphs::uncaptured(&*model(dir), 4, POOL);
            assert!(!plan.start().fits(1, 2), "{dir}");
            assert_eq!(plan.extra_slots(), 0, "{dir}");
        }
        // The CPU never captures: the engine's graphs are off there.
        assert_eq!(StepGraphs::new(&*llama, 4, POOL, false).extra_slots(), 0);
    }
}
