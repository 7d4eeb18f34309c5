//! `nn.Embedding` for token ids: a `[vocab, hidden]` table, dense in the compute dtype, or in a
//! quantized block format (a GGUF file's `token_embd`, or `--quantize`), as llama.cpp keeps it.
//!
//! A quantized table holds its blocks only: a lookup dequantizes the rows it gathers. A tied LM
//! head ([`Embedding::tied_head`]) runs its product over the same blocks, so the model holds the
//! table once.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::linear::Linear;
use super::{LoadContext, Placed};
use crate::error::{Error, Result};
use crate::models::quantize::QuantizedWeight;
use crate::parallel::{Communicator, Shard};

/// A token embedding table.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Table,
    dtype: DType,
    device: Device,
    /// Split across tensor-parallel ranks by vocabulary: this rank's rows (`None`: the whole
    /// table).
    part: Option<VocabPart>,
}

/// A rank's rows of a table split by vocabulary (Megatron-LM's `VocabParallelEmbedding`).
#[derive(Debug, Clone)]
struct VocabPart {
    /// The ids of this rank's rows.
    rows: Range<usize>,
    /// The whole table's rows.
    vocab: usize,
    comm: Arc<dyn Communicator>,
}

#[derive(Debug, Clone)]
enum Table {
    /// `[vocab, hidden]` in the compute dtype.
    Dense(candle_nn::Embedding),
    /// `[vocab, hidden]` in blocks.
    Quantized(Arc<QuantizedWeight>),
    /// `[vocab, hidden]` Q8_0 in device memory: rows looked up on the device.
    DeviceQ8(Arc<crate::cuda::DeviceQ8>),
}

impl Table {
    /// A quantized table placed for `ctx`'s device ([`LoadContext::place_quantized`]).
    fn quantized(ctx: &LoadContext<'_>, q: QuantizedWeight, hidden: usize) -> Result<Self> {
        Ok(match ctx.place_quantized(Arc::new(q))? {
            Placed::Host(q) => Table::Quantized(q),
            Placed::DeviceQ8(q) => Table::DeviceQ8(q),
            Placed::Dense(w) => Table::Dense(candle_nn::Embedding::new(w, hidden)),
        })
    }
}

impl Embedding {
    /// Loads `name` `[vocab, hidden]`: blocks that a GGUF file stores stay as they are; with
    /// `--quantize` the table is quantized like the linear layers (where its rows split into the
    /// format's blocks); otherwise it is dense in the compute dtype.
    pub fn load(ctx: &LoadContext<'_>, name: &str, vocab: usize, hidden: usize) -> Result<Self> {
        if let Some(shard) = ctx.shard {
            return Self::load_part(ctx, name, (vocab, "vocab_size"), hidden, shard);
        }
        let table = if let Some(q) = ctx.stored_quantized(name, &[vocab, hidden])? {
            Table::quantized(ctx, q, hidden)?
        } else {
            match ctx.quantize {
                Some(q) if hidden.is_multiple_of(q.format_for(hidden).block_size()) => {
                    Table::quantized(ctx, ctx.quantized_tensor(name, [vocab, hidden], q)?, hidden)?
                }
                // Aligned: a tied LM head multiplies by this table.
                _ => Table::Dense(candle_nn::Embedding::new(
                    super::aligned::aligned(ctx.weight(name, &[vocab, hidden])?)?,
                    hidden,
                )),
            }
        };
        Ok(Self {
            table,
            dtype: ctx.dtype,
            device: ctx.device.clone(),
            part: None,
        })
    }

    /// This rank's rows of a table split by vocabulary across tensor-parallel ranks (`field`:
    /// the config field of `vocab`, for errors).
    pub fn load_part(
        ctx: &LoadContext<'_>,
        name: &str,
        (vocab, field): (usize, &str),
        hidden: usize,
        shard: &Shard,
    ) -> Result<Self> {
        let rows = shard.split_vocab(vocab, field)?;
        let table = ctx.tensor_rows(name, [vocab, hidden], rows.clone())?;
        Ok(Self {
            table: Table::Dense(candle_nn::Embedding::new(table, hidden)),
            dtype: ctx.dtype,
            device: ctx.device.clone(),
            part: Some(VocabPart {
                rows,
                vocab,
                comm: shard.comm().clone(),
            }),
        })
    }

    /// `ids [b, t] -> [b, t, hidden]` in the compute dtype.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if let Some(part) = &self.part {
            return self.forward_part(ids, part);
        }
        match &self.table {
            // The table is in the weight dtype (f16/bf16 on the CPU under f32 compute).
            Table::Dense(e) => Ok(candle_core::Module::forward(e, ids)?.to_dtype(self.dtype)?),
            Table::Quantized(q) => {
                let hidden = q.shape().1;
                let flat: Vec<u32> = ids.flatten_all()?.to_vec1()?;
                let mut dims = ids.dims().to_vec();
                dims.push(hidden);
                // An id outside the table is an error naming it (`gather_rows`).
                Ok(q.gather_rows(&flat)? // [b * t, hidden] f32 on the host
                    .reshape(dims)?
                    .to_dtype(self.dtype)?
                    .to_device(&self.device)?)
            }
            Table::DeviceQ8(q) => q.rows(ids, self.dtype),
        }
    }

    /// A table split by vocabulary: each rank looks up the ids in its rows (zeros for the
    /// others'), and the all-reduce of the ranks' lookups is the whole table's.
    fn forward_part(&self, ids: &Tensor, part: &VocabPart) -> Result<Tensor> {
        let flat: Vec<u32> = ids.flatten_all()?.to_vec1()?;
        if let Some(&bad) = flat.iter().find(|&&id| id as usize >= part.vocab) {
            return Err(Error::input(format!(
                "`input_ids`: token id {bad} is outside the vocabulary ({} ids)",
                part.vocab
            )));
        }
        let mine = |id: u32| part.rows.contains(&(id as usize));
        let local: Vec<u32> = flat
            .iter()
            .map(|&id| {
                if mine(id) {
                    id - part.rows.start as u32
                } else {
                    0
                }
            })
            .collect();
        let keep: Vec<f32> = flat
            .iter()
            .map(|&id| f32::from(u8::from(mine(id))))
            .collect();
        let mut dims = ids.dims().to_vec();
        let local = Tensor::from_vec(local, dims.clone(), ids.device())?; // [b, t]
        dims.push(1);
        let keep = Tensor::from_vec(keep, dims, ids.device())?.to_dtype(self.dtype)?; // [b, t, 1]
        let Table::Dense(e) = &self.table else {
            return Err(part.error("a quantized embedding table"));
        };
        let x = candle_core::Module::forward(e, &local)?.broadcast_mul(&keep)?; // [b, t, hidden]
        part.comm.all_reduce_sum(&x)
    }

    /// The LM head tied to this table (`lm_head.weight` = the embedding matrix): over the same
    /// blocks when the table is quantized, else over the dense table (quantized on its own if the
    /// load options ask for it). A table split by vocabulary gives a head split likewise, whose
    /// logits every rank gathers.
    pub fn tied_head(&self, ctx: &LoadContext<'_>) -> Result<Linear> {
        if let (Some(part), Table::Dense(e)) = (&self.part, &self.table) {
            let head = Linear::from_weight(ctx, "lm_head.weight", e.embeddings().clone(), None)?;
            let chunk = part.vocab.div_ceil(part.comm.world_size());
            return Ok(head.gathered(part.comm.clone(), (chunk, part.vocab)));
        }
        match &self.table {
            Table::Quantized(q) => Linear::from_quantized(ctx, q.clone()),
            Table::DeviceQ8(q) => Ok(Linear::from_device_q8(q.clone())),
            Table::Dense(e) => {
                Linear::from_weight(ctx, "lm_head.weight", e.embeddings().clone(), None)
            }
        }
    }
}

impl VocabPart {
    fn error(&self, what: &str) -> Error {
        crate::parallel::comm::tp_error(
            self.comm.world_size(),
            format!("{what} cannot be split across ranks yet"),
        )
    }
}
