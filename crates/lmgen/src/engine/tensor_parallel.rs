//! The engine over a model split across ranks (tensor parallelism): rank 0's engine plans every
//! step and broadcasts it ([`StepBroadcast`]); every other rank runs [`follow`], the same packed
//! forward over its own part of the weights and its own KV store (its key/value heads at the slots
//! rank 0's allocator chose), joining the collectives of rank 0's forward. Only rank 0 samples:
//! the split LM head's logits are gathered on every rank, so rank 0 holds the whole row.
//!
//! A step goes out as two u32 tensors through [`Communicator::broadcast`]: a header
//! `[kind, tokens, sequences, slots]` (kind 1: a step, 0: stop), then
//! `[ids (tokens) | positions (tokens) | past, new (2 per sequence) | slot count (1 per sequence)
//! | slots]`.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::EngineConfig;
use crate::cache::paged::{KvStore, PagedBatch, StoreShape};
use crate::cache::SequenceSpan;
use crate::error::{Error, Result};
use crate::models::{CausalLM, DType, ForwardInput, ModelConfig};
use crate::parallel::{Communicator, Shard};

const STEP: u32 = 1;
const STOP: u32 = 0;

/// Rank 0's end: sends each step's packed inputs to the other ranks.
#[derive(Debug, Clone)]
pub(crate) struct StepBroadcast {
    comm: Arc<dyn Communicator>,
}

impl StepBroadcast {
    /// For rank 0 of `comm`'s group.
    pub fn new(comm: Arc<dyn Communicator>) -> Result<Self> {
        if comm.rank() != 0 {
            return Err(Error::input(format!(
                "the engine runs on rank 0; rank {} follows it (`engine::follow`)",
                comm.rank()
            )));
        }
        Ok(Self { comm })
    }

    /// The step's inputs: `ids` and `positions` of its `[1, T]` input, and per sequence its span
    /// and the slots of its `past + new` tokens.
    pub fn send(
        &self,
        ids: &[u32],
        positions: &[u32],
        spans: &[SequenceSpan],
        slots: &[Vec<u32>],
    ) -> Result<()> {
        let n_slots: usize = slots.iter().map(Vec::len).sum();
        let header = [STEP, ids.len() as u32, spans.len() as u32, n_slots as u32];
        self.comm
            .broadcast(&Tensor::new(&header, &Device::Cpu)?, 0)?;
        let mut body = Vec::with_capacity(2 * ids.len() + 3 * spans.len() + n_slots);
        body.extend_from_slice(ids);
        body.extend_from_slice(positions);
        body.extend(spans.iter().flat_map(|s| [s.past as u32, s.new as u32]));
        body.extend(slots.iter().map(|s| s.len() as u32));
        body.extend(slots.iter().flatten());
        let len = body.len();
        self.comm
            .broadcast(&Tensor::from_vec(body, len, &Device::Cpu)?, 0)?;
        Ok(())
    }

    /// The group as a [`Shard`] (how rank 0's part of the weights and heads was split).
    pub fn shard(&self) -> Shard {
        Shard::new(self.comm.clone())
    }

    /// Tells the other ranks to return from [`follow`].
    pub fn stop(&self) -> Result<()> {
        let header = [STOP, 0, 0, 0];
        self.comm
            .broadcast(&Tensor::new(&header, &Device::Cpu)?, 0)?;
        Ok(())
    }
}

/// What rank 0's engine cannot run split: a model whose sequences keep recurrent state or
/// cross-attend to an encoder output (their per-sequence state is not mirrored on the other
/// ranks yet).
pub(crate) fn check_model(model: &dyn CausalLM) -> Result<()> {
    let recurrent = model.config().layer_types.iter().any(|l| !l.is_attention());
    let what = if recurrent {
        "a model with recurrent layers"
    } else if model.encoder().is_some() {
        "an encoder-decoder model"
    } else {
        return Ok(());
    };
    Err(Error::unsupported(format!(
        "the engine over tensor-parallel ranks runs attention-only decoder models; {what} \
         keeps per-sequence state the other ranks do not mirror yet"
    )))
}

/// The KV store's shape on `shard`'s rank: each attention layer's key/value heads split (or
/// replicated) as the model's attention splits them, at `slots` token slots.
pub(crate) fn store_shape(
    config: &ModelConfig,
    shard: Option<&Shard>,
    slots: usize,
) -> Result<StoreShape> {
    let layers = (0..config.num_hidden_layers)
        .map(|i| {
            let (heads, d) = config.kv_shape(i);
            match shard {
                Some(s) if heads > 0 && s.world_size() > 1 => {
                    let local = s.split_shared(
                        heads,
                        "num_key_value_heads",
                        (config.num_attention_heads, "num_attention_heads"),
                    )?;
                    Ok((local.len(), d))
                }
                _ => Ok((heads, d)),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StoreShape { layers, slots })
}

/// Runs rank `comm.rank()` (> 0) of a tensor-parallel engine: the packed forward of every step
/// rank 0 broadcasts, over `model` (this rank's part, loaded with
/// [`crate::models::load_model_sharded`]) and a KV store of `config`'s size, until rank 0 says
/// stop. Returns the error that ended it otherwise (rank 0 gone, a forward failing).
pub fn follow(
    model: Arc<dyn CausalLM>,
    config: &EngineConfig,
    dtype: DType,
    comm: Arc<dyn Communicator>,
) -> Result<()> {
    if comm.rank() == 0 {
        return Err(Error::input(
            "rank 0 runs the engine (`ContinuousBatchingManager::with_ranks`); the other ranks follow",
        ));
    }
    check_model(model.as_ref())?;
    config.validate()?;
    let shard = Shard::new(comm.clone());
    let shape = store_shape(model.config(), Some(&shard), config.cache.capacity_tokens())?;
    let device = model.device().clone();
    let store = KvStore::new(shape, dtype, &device)?;
    loop {
        let header =
            comm.broadcast(&Tensor::zeros(4, candle_core::DType::U32, &Device::Cpu)?, 0)?;
        let [kind, tokens, seqs, n_slots]: [u32; 4] = header
            .to_vec1::<u32>()?
            .try_into()
            .map_err(|_| shard.error("a step header of 4 numbers".into()))?;
        if kind == STOP {
            return Ok(());
        }
        let (t, n) = (tokens as usize, seqs as usize);
        let len = 2 * t + 3 * n + n_slots as usize;
        let body = comm
            .broadcast(
                &Tensor::zeros(len, candle_core::DType::U32, &Device::Cpu)?,
                0,
            )?
            .to_vec1::<u32>()?;
        let (ids, rest) = body.split_at(t);
        let (positions, rest) = rest.split_at(t);
        let (span_words, rest) = rest.split_at(2 * n);
        let (counts, mut rest) = rest.split_at(n);
        let spans: Vec<SequenceSpan> = span_words
            .chunks(2)
            .map(|w| SequenceSpan {
                past: w[0] as usize,
                new: w[1] as usize,
            })
            .collect();
        let mut slots = Vec::with_capacity(n);
        for &c in counts {
            let (s, r) = rest.split_at(c as usize);
            slots.push(s.to_vec());
            rest = r;
        }
        let input_ids = Tensor::from_slice(ids, (1, t), &device)?; // [1, T]
        let position_ids = Tensor::from_slice(positions, (1, t), &device)?; // [1, T]
        let mut cache = PagedBatch::new(&store, spans, slots, &device)?;
        model.forward(&ForwardInput::last(&input_ids, &position_ids), &mut cache)?;
    }
}
