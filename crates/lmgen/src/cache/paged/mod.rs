//! The paged KV cache (vLLM's PagedAttention memory layout, transformers' `PagedAttentionCache`):
//! a fixed pool of blocks bounded by a memory budget, per-sequence block tables, and full blocks
//! shared between sequences with the same prefix.
//!
//! - `allocator`: the block pool, reference counts, prefix cache and eviction.
//! - `block_table`: which blocks hold a sequence's tokens.
//! - `prefix_cache`: chained hashes of full blocks.
//! - `store`: the preallocated key/value tensors of every layer.
//! - `batch`: the [`crate::cache::KvCache`] over a packed batch of sequences.
//! - `decode`: decode steps' attention read from the store in place (CPU).
//! - `cross`: encoder-decoder sequences' cross-attention keys and values in the pool's blocks.

pub(crate) mod allocator;
pub(crate) mod batch;
pub(crate) mod block_table;
pub(crate) mod cross;
pub(crate) mod decode;
pub(crate) mod prefix_cache;
pub(crate) mod store;

use candle_core::DType;

use crate::error::{Error, Result};
use crate::models::ModelConfig;

pub(crate) use allocator::BlockAllocator;
pub(crate) use batch::PagedBatch;
pub(crate) use block_table::BlockTable;
pub(crate) use cross::CrossSlots;
pub(crate) use store::{KvStore, StoreShape};

/// Index of a block in the pool.
pub(crate) type BlockId = u32;

/// Default tokens per block (vLLM's and transformers' default is 16 on GPU; 16 here too).
pub(crate) const DEFAULT_BLOCK_SIZE: usize = 16;

/// How big the pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedCacheConfig {
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks in the pool.
    pub num_blocks: usize,
}

impl PagedCacheConfig {
    /// Bytes of keys and values one token takes over all layers.
    pub(crate) fn bytes_per_token(model: &ModelConfig, dtype: DType) -> usize {
        model.kv_elements_per_token() * dtype.size_in_bytes()
    }

    /// As many blocks as fit in `bytes` of memory (`--kv-cache-gb`).
    pub fn from_memory(
        bytes: u64,
        block_size: usize,
        model: &ModelConfig,
        dtype: DType,
    ) -> Result<Self> {
        let per_block = (Self::bytes_per_token(model, dtype) * block_size.max(1)) as u64;
        let num_blocks = usize::try_from(bytes / per_block.max(1)).unwrap_or(usize::MAX);
        Self::checked(block_size, num_blocks, || {
            format!("a KV-cache budget of {bytes} bytes holds no block of {block_size} tokens ({per_block} bytes each)")
        })
    }

    /// Room for `tokens` tokens (rounded up to whole blocks).
    pub fn from_tokens(tokens: usize, block_size: usize) -> Result<Self> {
        Self::checked(block_size, tokens.div_ceil(block_size.max(1)), || {
            format!("a KV-cache budget of {tokens} tokens holds no block")
        })
    }

    fn checked(block_size: usize, num_blocks: usize, empty: impl Fn() -> String) -> Result<Self> {
        if block_size == 0 {
            return Err(Error::input("`block_size` must be at least 1"));
        }
        if num_blocks == 0 {
            return Err(Error::input(empty()));
        }
        Ok(Self {
            block_size,
            num_blocks,
        })
    }

    /// Token slots in the pool.
    pub(crate) fn capacity_tokens(&self) -> usize {
        self.block_size * self.num_blocks
    }
}
