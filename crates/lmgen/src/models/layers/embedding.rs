//! `nn.Embedding` for token ids: a `[vocab, hidden]` table, dense in the compute dtype, or in a
//! quantized block format (a GGUF file's `token_embd`, or `--quantize`), as llama.cpp keeps it.
//!
//! A quantized table holds its blocks only: a lookup dequantizes the rows it gathers. A tied LM
//! head ([`Embedding::tied_head`]) runs its product over the same blocks, so the model holds the
//! table once.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::linear::Linear;
use super::LoadContext;
use crate::error::Result;
use crate::models::quantize::QuantizedWeight;

/// A token embedding table.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Table,
    dtype: DType,
    device: Device,
}

#[derive(Debug, Clone)]
enum Table {
    /// `[vocab, hidden]` in the compute dtype.
    Dense(candle_nn::Embedding),
    /// `[vocab, hidden]` in blocks.
    Quantized(Arc<QuantizedWeight>),
}

impl Embedding {
    /// Loads `name` `[vocab, hidden]`: blocks that a GGUF file stores stay as they are; with
    /// `--quantize` the table is quantized like the linear layers (where its rows split into the
    /// format's blocks); otherwise it is dense in the compute dtype.
    pub fn load(ctx: &LoadContext<'_>, name: &str, vocab: usize, hidden: usize) -> Result<Self> {
        let table = if let Some(q) = ctx.stored_quantized(name, &[vocab, hidden])? {
            Table::Quantized(Arc::new(q))
        } else {
            match ctx.quantize {
                Some(q) if hidden.is_multiple_of(q.format_for(hidden).block_size()) => {
                    Table::Quantized(Arc::new(ctx.quantized_tensor(name, [vocab, hidden], q)?))
                }
                _ => Table::Dense(candle_nn::Embedding::new(
                    ctx.weight(name, &[vocab, hidden])?,
                    hidden,
                )),
            }
        };
        Ok(Self {
            table,
            dtype: ctx.dtype,
            device: ctx.device.clone(),
        })
    }

    /// `ids [b, t] -> [b, t, hidden]` in the compute dtype.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
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
        }
    }

    /// The LM head tied to this table (`lm_head.weight` = the embedding matrix): over the same
    /// blocks when the table is quantized, else over the dense table (quantized on its own if the
    /// load options ask for it).
    pub fn tied_head(&self, ctx: &LoadContext<'_>) -> Result<Linear> {
        match &self.table {
            Table::Quantized(q) => Ok(Linear::from_quantized(q.clone())),
            Table::Dense(e) => {
                Linear::from_weight(ctx, "lm_head.weight", e.embeddings().clone(), None)
            }
        }
    }
}
