//! The one-token decode step as one CUDA graph, captured once per generate call and replayed
//! every step after: the host launches a single graph instead of every op of every layer
//! (small models are bound by those launches, not by memory), and waits only for the token ids.
//!
//! A graph replays the device work of the step it was captured from, so nothing that changes
//! between steps may be baked into it on the host. The step reads its token ids and positions
//! from a device buffer written before each replay ([`ForwardInput::device_positions`]): RoPE
//! angles are rows of a device table ([`crate::models::layers::rotary::RotaryEmbedding::cos_sin_at`])
//! and the cache writes and attends at slots read by the kernels ([`KvCache::decode_at`]) in
//! buffers reserved for the whole call ([`KvCache::reserve`]), so their addresses never move.
//! Only models that say every op of their step is of that kind
//! ([`CausalLM::takes_device_positions`]) are captured; others, and steps the graph does not
//! fit (padding masks, returned hidden states, a different row count), run eagerly.
//!
//! The first eligible step runs eagerly through the same device-position path, which also
//! uploads every constant the ops need (candle's parameter cache for graph capture); the second
//! is captured and launched; every later one is replayed. The logits are copied out of the
//! graph's buffer so a caller can keep them past the next step. Any failure to capture (an op
//! that copies to or from the host while capturing) turns the graph off for the call, undoes
//! what the failed step appended to the cache, and runs the step eagerly: outputs never depend
//! on whether a graph ran. On by default with the fused kernels (a GPU run gave transformers'
//! tokens on every golden case with graphs, and measured them: BENCHMARKS.md);
//! `LMGEN_CUDA_GRAPHS=0` turns them off. [`DecodeGraph::uncaptured`] runs the same
//! device-position step op by op on any device, which is how the CPU tests check it against the
//! plain step.

use candle_core::{DType, Device, Tensor};

use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::generation::strategies::{forward_step, StepInput};
use crate::models::{CausalLM, ForwardInput, LogitsToKeep, ModelOutput};

/// Whether decode graphs are on: with the fused kernels ([`super::enabled`]), whose device-slot
/// kernels the graphed step runs, unless `LMGEN_CUDA_GRAPHS=0`.
pub(crate) fn enabled() -> bool {
    super::enabled() && std::env::var("LMGEN_CUDA_GRAPHS").map_or(true, |v| v != "0")
}

/// The decode steps of one generate call: eagerly, or through a captured graph.
pub(crate) struct DecodeGraph {
    /// `None`: every step runs eagerly ([`forward_step`]).
    runner: Option<Runner>,
}

impl DecodeGraph {
    /// The runner for a call whose cache will hold `max_len` tokens a row: on for a model on a
    /// CUDA device that takes device positions up to `max_len`
    /// ([`CausalLM::takes_device_positions`]), with graphs on; off otherwise.
    pub fn new(model: &dyn CausalLM, max_len: usize) -> Self {
        let on = model.device().is_cuda()
            && enabled()
            && max_len <= super::DECODE_MAX_KEYS
            && model.takes_device_positions(max_len);
        Self {
            runner: on.then(|| Runner::new(max_len, true)),
        }
    }

    #[cfg(test)]
    /// Every fitting step through the device-position path, never captured: what a graph
    /// replays, run op by op on any device (the CPU tests compare it with the plain step).
    pub fn uncaptured(model: &dyn CausalLM, max_len: usize) -> Self {
        let on = model.takes_device_positions(max_len);
        Self {
            runner: on.then(|| Runner::new(max_len, false)),
        }
    }

    #[cfg(test)]
    /// Whether steps may still go through the device-position path (not turned off by a
    /// failure, and the model took it).
    pub fn is_on(&self) -> bool {
        self.runner
            .as_ref()
            .is_some_and(|r| !matches!(r.phase, Phase::Off))
    }

    /// Steps that went through the device-position path, and of those, replays of a graph.
    pub fn counts(&self) -> (usize, usize) {
        self.runner
            .as_ref()
            .map_or((0, 0), |r| (r.steps, r.replays))
    }

    /// One step of the loop: through the graph where it fits (see the [module](self) docs),
    /// else [`forward_step`]. The same logits either way.
    pub fn step(
        &mut self,
        model: &dyn CausalLM,
        step: StepInput<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        match self.runner.as_mut() {
            Some(runner) if !matches!(runner.phase, Phase::Off) && fits(&step, cache) => {
                runner.step(model, step, cache)
            }
            _ => forward_step(model, step, cache),
        }
    }
}

/// Whether a step is a plain decode step a graph runs: one token a row at each row's cache
/// length (no padding), only the last logits, nothing else returned, the rows' tokens on the
/// host.
fn fits(step: &StepInput<'_>, cache: &dyn KvCache) -> bool {
    let len = cache.seq_len();
    let one_token_at_len = step
        .positions
        .iter()
        .all(|row| row.len() == 1 && row[0] as usize == len);
    len > 0
        && one_token_at_len
        && step
            .mask
            .is_none_or(|m| m.iter().flatten().all(|&x| x != 0))
        && step.sequences.is_some()
        && !step.output_hidden_states
        && !step.output_attentions
        && matches!(step.logits_to_keep, LogitsToKeep::Last)
        && step.num_hidden_layers.is_none()
}

/// The step's `[ids..., positions...]`: each row's last token and its position.
fn inputs(step: &StepInput<'_>) -> Option<Vec<u32>> {
    let sequences = step.sequences?;
    let ids = sequences.iter().map(|s| s.last().copied());
    let positions = step.positions.iter().map(|p| p.first().copied());
    ids.chain(positions).collect()
}

enum Phase {
    /// The next fitting step runs op by op through the device-position path.
    Warmup,
    /// The next fitting step is captured, then launched.
    Capture,
    /// Every fitting step of this many rows replays the graph.
    Replay(capture::Captured),
    /// A step failed to run through device positions or to capture: eager to the end.
    Off,
}

struct Runner {
    phase: Phase,
    max_len: usize,
    /// Capture the step after the first (CUDA); else every fitting step stays op by op.
    capture: bool,
    /// The rows' fed ids were checked against their last tokens (once: a copy back).
    checked: bool,
    /// `[2, rows]` u32 on the device: the step's ids, then its positions, written before each
    /// step; a graph reads them.
    inputs: Option<Tensor>,
    /// `[rows, 1, vocab]` f32: where a graph leaves the logits.
    logits: Option<Tensor>,
    steps: usize,
    replays: usize,
}

impl Runner {
    fn new(max_len: usize, capture: bool) -> Self {
        Self {
            phase: Phase::Warmup,
            max_len,
            capture,
            checked: false,
            inputs: None,
            logits: None,
            steps: 0,
            replays: 0,
        }
    }

    fn step(
        &mut self,
        model: &dyn CausalLM,
        step: StepInput<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        let (Some(host), true) = (inputs(&step), cache.seq_len() < self.max_len) else {
            return forward_step(model, step, cache);
        };
        let rows = step.positions.len();
        let len = cache.seq_len();
        let result = match std::mem::replace(&mut self.phase, Phase::Off) {
            Phase::Warmup => self.op_by_op(model, &step, &host, rows, cache),
            Phase::Capture => self.capture(model, &host, rows, cache),
            Phase::Replay(captured) if captured.rows() == rows => {
                self.replay(captured, &host, cache)
            }
            Phase::Replay(captured) => {
                // Another row count: op by op, the graph kept.
                self.phase = Phase::Replay(captured);
                return forward_step(model, step, cache);
            }
            Phase::Off => Err(Error::unsupported("decode graph off")),
        };
        match result {
            Ok(out) => {
                self.steps += 1;
                Ok(out)
            }
            Err(err) => {
                tracing::debug!(%err, "decode graph off for this call; steps run eagerly");
                self.phase = Phase::Off;
                self.inputs = None;
                self.logits = None;
                cache.crop(len)?;
                forward_step(model, step, cache)
            }
        }
    }

    /// The `[2, rows]` input buffer, written with `host`.
    fn write_inputs(&mut self, device: &Device, host: &[u32], rows: usize) -> Result<Tensor> {
        let buf = match &self.inputs {
            Some(buf) if buf.dims() == [2, rows] => buf.clone(),
            _ => {
                let buf = Tensor::zeros((2, rows), DType::U32, device)?;
                self.inputs = Some(buf.clone());
                buf
            }
        };
        super::upload::write_u32(&buf, host)?;
        Ok(buf)
    }

    /// The forward of one step reading its ids and positions from `buf`.
    fn forward(
        model: &dyn CausalLM,
        buf: &Tensor,
        rows: usize,
        host: &[u32],
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        let ids = buf.narrow(0, 0, 1)?.reshape((rows, 1))?;
        let positions = buf.narrow(0, 1, 1)?.reshape((rows, 1))?;
        let host_positions: Vec<Vec<u32>> = host[rows..].iter().map(|&p| vec![p]).collect();
        let host_positions = Tensor::new(host_positions, &Device::Cpu)?;
        model.forward(
            &ForwardInput {
                device_positions: Some(&positions),
                ..ForwardInput::last(&ids, &host_positions)
            },
            cache,
        )
    }

    /// A step op by op through the device-position path. The first reserves the cache's
    /// slots, checks the fed ids, and (before a capture) uploads every constant the step's ops
    /// need while candle's parameter cache records them.
    fn op_by_op(
        &mut self,
        model: &dyn CausalLM,
        step: &StepInput<'_>,
        host: &[u32],
        rows: usize,
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        if !cache.reserve(self.max_len)? {
            return Err(Error::unsupported("the cache cannot reserve its slots"));
        }
        if !self.checked {
            let fed: Vec<Vec<u32>> = step.ids.to_vec2()?;
            if fed.iter().flatten().ne(host[..rows].iter()) {
                return Err(Error::unsupported(
                    "the fed ids are not the rows' last tokens",
                ));
            }
            self.checked = true;
        }
        let device = model.device().clone();
        let buf = self.write_inputs(&device, host, rows)?;
        let _params = capture::record_constants(&device, self.capture);
        let out = Self::forward(model, &buf, rows, host, cache)?;
        if self.capture {
            self.logits = Some(Tensor::zeros(out.logits.shape(), DType::F32, &device)?);
            self.phase = Phase::Capture;
        } else {
            self.phase = Phase::Warmup;
        }
        Ok(out)
    }

    fn capture(
        &mut self,
        model: &dyn CausalLM,
        host: &[u32],
        rows: usize,
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        let device = model.device().clone();
        let buf = self.write_inputs(&device, host, rows)?;
        let logits = self
            .logits
            .clone()
            .ok_or_else(|| Error::unsupported("no logits buffer"))?;
        let captured = capture::capture(&device, rows, || {
            let out = Self::forward(model, &buf, rows, host, cache)?;
            logits.slice_set(&out.logits.to_dtype(DType::F32)?, 0, 0)?;
            Ok(())
        })?;
        captured.launch()?;
        self.phase = Phase::Replay(captured);
        self.replays += 1;
        Ok(output(logits.copy()?))
    }

    fn replay(
        &mut self,
        captured: capture::Captured,
        host: &[u32],
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        let (Some(logits), Some(buf)) = (self.logits.clone(), self.inputs.clone()) else {
            return Err(Error::unsupported("no graph buffers"));
        };
        super::upload::write_u32(&buf, host)?;
        captured.launch()?;
        cache.advance(1)?;
        self.phase = Phase::Replay(captured);
        self.replays += 1;
        Ok(output(logits.copy()?))
    }
}

fn output(logits: Tensor) -> ModelOutput {
    ModelOutput {
        logits,
        hidden_states: None,
        attentions: None,
    }
}

/// Stream capture: CUDA only.
#[cfg(not(feature = "cuda"))]
pub(crate) mod capture {
    use super::*;

    /// No graph exists without the `cuda` feature.
    pub enum Captured {}

    impl Captured {
        pub fn rows(&self) -> usize {
            match *self {}
        }
        pub fn launch(&self) -> Result<()> {
            match *self {}
        }
    }

    pub fn record_constants(_: &Device, _: bool) -> Option<()> {
        None
    }

    pub fn capture(_: &Device, _: usize, _: impl FnOnce() -> Result<()>) -> Result<Captured> {
        Err(Error::unsupported(
            "CUDA graphs need a build with the `cuda` feature",
        ))
    }
}

#[cfg(feature = "cuda")]
pub(crate) mod capture {
    use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph};
    use candle_core::cuda_backend::WrapErr;

    use super::*;

    /// An instantiated graph of one step over `rows` rows.
    pub struct Captured {
        graph: CudaGraph,
        rows: usize,
    }

    impl Captured {
        pub fn rows(&self) -> usize {
            self.rows
        }
        pub fn launch(&self) -> Result<()> {
            Ok(self.graph.launch().w()?)
        }
    }

    /// While the guard lives, candle keeps every small host-to-device upload (kernel
    /// parameters, scalar constants) on the device and hands the same buffer back, so a
    /// capture finds them there instead of copying (which a capture refuses).
    pub fn record_constants(device: &Device, on: bool) -> Option<impl Sized> {
        match device {
            Device::Cuda(d) if on => Some(d.enable_cuda_graph_htod_cache()),
            _ => None,
        }
    }

    /// Captures what `run` launches on the device's stream as one graph, without running it.
    pub fn capture(
        device: &Device,
        rows: usize,
        run: impl FnOnce() -> Result<()>,
    ) -> Result<Captured> {
        let Device::Cuda(dev) = device else {
            return Err(Error::unsupported("decode graphs run on CUDA devices"));
        };
        let stream = dev.cuda_stream();
        let _constants = dev.enable_cuda_graph_htod_cache();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .w()?;
        let ran = run();
        // Always end the capture, whatever happened inside it. No instantiate flag: a graph
        // allocation left unfreed makes the next launch fail loudly instead of freeing memory a
        // tensor still points to.
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        ran?;
        let graph = graph
            .w()?
            .ok_or_else(|| Error::unsupported("the capture recorded nothing"))?;
        Ok(Captured { graph, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CacheImplementation, DynamicCache};

    use crate::models::fixture_model as model;

    /// Greedy decoding of `rows` copies of a prompt for `steps` steps, each one-token step
    /// through `graph` (or the plain step): every step's logits, bit for bit.
    fn decode(
        model: &dyn CausalLM,
        cache: &mut dyn KvCache,
        mut graph: Option<&mut DecodeGraph>,
        rows: usize,
        steps: usize,
    ) -> Vec<Vec<u32>> {
        let vocab = model.config().vocab_size as u32;
        let prompt: Vec<u32> = [3u32, 17, 5, 40, 11].iter().map(|t| t % vocab).collect();
        // Different rows: a different first token each.
        let mut seqs: Vec<Vec<u32>> = (0..rows as u32)
            .map(|r| {
                let mut p = prompt.clone();
                p[0] = (p[0] + r) % vocab;
                p
            })
            .collect();
        let mut all = Vec::new();
        let mut ids = Tensor::new(seqs.clone(), &Device::Cpu).unwrap();
        for i in 0..=steps {
            let len = seqs[0].len();
            let positions: Vec<Vec<u32>> = if i == 0 {
                vec![(0..len as u32).collect(); rows]
            } else {
                vec![vec![len as u32 - 1]; rows]
            };
            let step = StepInput::last(&ids, &positions, None).with_sequences(&seqs);
            let out = match (i, graph.as_deref_mut()) {
                (1.., Some(g)) => g.step(model, step, cache),
                _ => forward_step(model, step, cache),
            }
            .unwrap();
            let logits: Vec<Vec<f32>> = out.logits.squeeze(1).unwrap().to_vec2().unwrap();
            let next: Vec<u32> = logits
                .iter()
                .map(|row| crate::generation::sampler::argmax(row) as u32)
                .collect();
            all.extend(
                logits
                    .iter()
                    .map(|r| r.iter().map(|x| x.to_bits()).collect()),
            );
            for (s, &t) in seqs.iter_mut().zip(&next) {
                s.push(t);
            }
            ids = Tensor::new(
                next.iter().map(|&t| vec![t]).collect::<Vec<_>>(),
                &Device::Cpu,
            )
            .unwrap();
        }
        all
    }

    #[test]
    fn device_position_steps_give_the_plain_steps_logits_to_the_bit() {
        let (steps, max_len) = (6, 12);
        for dir in [
            "golden/models/llama",
            "golden/models/llama3",
            "golden/models/qwen2",
            "golden/models/mistral",
            "golden-arch/models/qwen3",
            "golden-arch/models/olmo2",
            "golden-arch/models/granite",
            "golden-arch/models/smollm3",
            "golden-arch/models/phi3",
        ] {
            let model = model(dir);
            assert!(model.takes_device_positions(max_len), "{dir}");
            for rows in [1, 3] {
                for kind in [
                    CacheImplementation::Dynamic,
                    CacheImplementation::Static {
                        max_cache_len: max_len,
                    },
                ] {
                    let plain = decode(&*model, &mut *kind.build(), None, rows, steps);
                    let mut graph = DecodeGraph::uncaptured(&*model, max_len);
                    let mut cache = kind.build();
                    let got = decode(&*model, &mut *cache, Some(&mut graph), rows, steps);
                    assert!(graph.is_on(), "{dir} {kind:?}: the path turned itself off");
                    assert_eq!(graph.counts(), (steps, 0), "{dir} {kind:?}");
                    assert_eq!(got, plain, "{dir}, {rows} rows, {kind:?}");
                    assert_eq!(cache.seq_len(), 5 + steps);
                }
            }
        }
    }

    #[test]
    fn models_and_caches_that_need_the_host_are_not_taken() {
        // Gemma 2 soft-caps its attention; GPT-2 reads learned positions on the host; the
        // golden Mistral's sliding window (if any) must cover the call; gpt-oss has sinks.
        assert!(!model("golden/models/gemma2").takes_device_positions(12));
        assert!(!model("golden/models/gpt2").takes_device_positions(12));
        assert!(!model("golden-arch/models/gpt_oss").takes_device_positions(12));
        assert!(!model("golden-arch/models/qwen3_moe").takes_device_positions(12));
        assert!(!model("golden-arch/models/qwen3_next").takes_device_positions(12));
        let mistral = model("golden/models/mistral");
        let window = mistral.config().sliding_window.unwrap();
        assert!(mistral.takes_device_positions(window));
        assert!(!mistral.takes_device_positions(window + 1));
        let llama = model("golden/models/llama");
        let table = llama.config().max_position_embeddings;
        assert!(!llama.takes_device_positions(table + 1));
        // A cache that cannot reserve its slots turns the path off and the step runs plain.
        let mut graph = DecodeGraph::uncaptured(&*llama, 12);
        let mut cache = crate::cache::OffloadedCache::new(Box::new(DynamicCache::new()), None);
        let plain = decode(&*llama, &mut DynamicCache::new(), None, 1, 3);
        let got = decode(&*llama, &mut cache, Some(&mut graph), 1, 3);
        assert!(!graph.is_on());
        assert_eq!(graph.counts(), (0, 0));
        assert_eq!(got, plain);
    }
}
