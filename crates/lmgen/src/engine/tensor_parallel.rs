//! The engine over a model split across ranks (tensor parallelism): rank 0's engine plans every
//! step and broadcasts it ([`StepBroadcast`]); every other rank runs [`follow`], the same packed
//! forward over its own part of the weights and its own KV store (its key/value heads at the slots
//! rank 0's allocator chose), joining the collectives of rank 0's forward. Only rank 0 samples:
//! the split LM head's logits are gathered on every rank, so rank 0 holds the whole row. A model
//! with recurrent layers keeps each sequence's state (its part of the heads or channels) on every
//! rank, by the sequence's arrival number: a sequence starting over (`past` 0: new, or
//! recomputed after preemption) starts from an empty state, and states of sequences no longer
//! running are dropped.
//!
//! A step goes out as two u32 tensors through [`Communicator::broadcast`]: a header
//! `[kind, tokens, sequences, slots, running]` (kind 1: a step, 0: stop), then
//! `[ids (tokens) | positions (tokens) | past, new (2 per sequence) | slot count (1 per sequence)
//! | slots | arrival (2 per sequence) | arrival of every running sequence (2 each)]`, arrival
//! numbers as low and high words.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::EngineConfig;
use crate::cache::paged::{KvStore, PagedBatch, StoreShape};
use crate::cache::{LayerStates, SequenceSpan};
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

    /// The step's inputs: `ids` and `positions` of its `[1, T]` input, and per sequence its span,
    /// the slots of its `past + new` tokens and its arrival number; `running`: the arrival
    /// numbers of every running sequence (the states the other ranks keep).
    pub fn send(
        &self,
        (ids, positions): (&[u32], &[u32]),
        spans: &[SequenceSpan],
        slots: &[Vec<u32>],
        (arrivals, running): (&[u64], &[u64]),
    ) -> Result<()> {
        let n_slots: usize = slots.iter().map(Vec::len).sum();
        let counts = [ids.len(), spans.len(), n_slots, running.len()];
        let header = [
            STEP,
            counts[0] as u32,
            counts[1] as u32,
            counts[2] as u32,
            counts[3] as u32,
        ];
        self.comm
            .broadcast(&Tensor::new(&header, &Device::Cpu)?, 0)?;
        let mut body =
            Vec::with_capacity(2 * counts[0] + 5 * counts[1] + counts[2] + 2 * counts[3]);
        body.extend_from_slice(ids);
        body.extend_from_slice(positions);
        body.extend(spans.iter().flat_map(|s| [s.past as u32, s.new as u32]));
        body.extend(slots.iter().map(|s| s.len() as u32));
        body.extend(slots.iter().flatten());
        let words = |a: &u64| [*a as u32, (*a >> 32) as u32];
        body.extend(arrivals.iter().flat_map(words));
        body.extend(running.iter().flat_map(words));
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
        let header = [STOP, 0, 0, 0, 0];
        self.comm
            .broadcast(&Tensor::new(&header, &Device::Cpu)?, 0)?;
        Ok(())
    }
}

/// What rank 0's engine cannot run split: an encoder-decoder model (each sequence's encoder
/// output and cross-attention blocks are not mirrored on the other ranks yet).
pub(crate) fn check_model(model: &dyn CausalLM) -> Result<()> {
    if model.encoder().is_none() {
        return Ok(());
    }
    Err(Error::unsupported(
        "the engine over tensor-parallel ranks runs decoder-only models; an encoder-decoder \
         model keeps per-sequence encoder outputs the other ranks do not mirror yet",
    ))
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
    // Each running sequence's recurrent states on this rank, by arrival number.
    let mut states: HashMap<u64, LayerStates> = HashMap::new();
    loop {
        let header =
            comm.broadcast(&Tensor::zeros(5, candle_core::DType::U32, &Device::Cpu)?, 0)?;
        let [kind, tokens, seqs, n_slots, n_running]: [u32; 5] = header
            .to_vec1::<u32>()?
            .try_into()
            .map_err(|_| shard.error("a step header of 5 numbers".into()))?;
        if kind == STOP {
            return Ok(());
        }
        let (t, n) = (tokens as usize, seqs as usize);
        let len = 2 * t + 5 * n + n_slots as usize + 2 * n_running as usize;
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
        // The slot counts must add up to the header's: a step from another build (or not from
        // rank 0 at all) is an error, not a panic.
        let malformed = || shard.error(format!("a step whose slot counts do not add to {n_slots}"));
        let mut slots = Vec::with_capacity(n);
        for &c in counts {
            let (s, r) = rest.split_at_checked(c as usize).ok_or_else(malformed)?;
            slots.push(s.to_vec());
            rest = r;
        }
        let (arrival_words, running_words) = rest.split_at_checked(2 * n).ok_or_else(malformed)?;
        if running_words.len() != 2 * n_running as usize {
            return Err(malformed());
        }
        let number = |w: &[u32]| u64::from(w[0]) | (u64::from(w[1]) << 32);
        let arrivals: Vec<u64> = arrival_words.chunks(2).map(number).collect();
        let step_states = arrivals
            .iter()
            .zip(&spans)
            .map(|(a, span)| match span.past {
                0 => LayerStates::default(),
                _ => states.remove(a).unwrap_or_default(),
            })
            .collect();
        let input_ids = Tensor::from_slice(ids, (1, t), &device)?; // [1, T]
        let position_ids = Tensor::from_slice(positions, (1, t), &device)?; // [1, T]
        let mut cache = PagedBatch::new(&store, spans, slots, &device)?.with_states(step_states)?;
        model.forward(&ForwardInput::last(&input_ids, &position_ids), &mut cache)?;
        states.extend(arrivals.into_iter().zip(cache.into_states()));
        let running: HashSet<u64> = running_words.chunks(2).map(number).collect();
        states.retain(|a, s| running.contains(a) && !s.is_empty());
    }
}
