//! The block allocator: a fixed pool of KV blocks with reference counts and a prefix cache.
//!
//! A block is `block_size` token slots of every layer's keys and values. A block whose tokens are
//! all written ("full") can be registered under the hash of its token prefix
//! ([`super::prefix_cache::block_hash`]); a later sequence with the same prefix then takes a
//! reference to it instead of computing it again (vLLM's automatic prefix caching). A registered
//! block whose last reference goes stays cached but evictable (least recently freed first), so it
//! still counts as free: allocation reuses never-registered blocks first, then evicts.

use std::collections::{BTreeMap, HashMap};

use super::prefix_cache::BlockHash;
use super::BlockId;
use crate::TokenId;

/// What a registered block holds: its prefix hash and its own tokens (checked on lookup, so a
/// hash collision can never share the wrong keys and values).
#[derive(Debug, Clone)]
struct CachedKey {
    hash: BlockHash,
    tokens: Vec<TokenId>,
}

/// A pool of `num_blocks` KV blocks.
#[derive(Debug)]
pub struct BlockAllocator {
    block_size: usize,
    ref_counts: Vec<u32>,
    /// Blocks with no reference and no cached content.
    free: Vec<BlockId>,
    /// Content of registered blocks, by block.
    keys: Vec<Option<CachedKey>>,
    /// Registered blocks, by prefix hash.
    cached: HashMap<BlockHash, BlockId>,
    /// Registered blocks without a reference, by the tick they were released (LRU order).
    evictable: BTreeMap<u64, BlockId>,
    /// The tick under which each evictable block sits in `evictable`.
    released_at: Vec<u64>,
    tick: u64,
    /// Lookups and hits, for metrics.
    pub prefix_queries: u64,
    pub prefix_hits: u64,
}

impl BlockAllocator {
    /// A pool of `num_blocks` blocks of `block_size` tokens.
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        Self {
            block_size,
            ref_counts: vec![0; num_blocks],
            // Pop from the end: hand out low ids first.
            free: (0..num_blocks as BlockId).rev().collect(),
            keys: vec![None; num_blocks],
            cached: HashMap::new(),
            evictable: BTreeMap::new(),
            released_at: vec![0; num_blocks],
            tick: 0,
            prefix_queries: 0,
            prefix_hits: 0,
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    /// Blocks that can be allocated now (never used, or cached without a reference).
    pub fn num_free(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Blocks referenced by at least one sequence.
    pub fn num_used(&self) -> usize {
        self.num_blocks() - self.num_free()
    }

    /// Blocks kept in the prefix cache (referenced or not).
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    /// The reference count of `block`.
    #[cfg(test)]
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.ref_counts[block as usize]
    }

    /// A block with one reference, or `None` when every block is referenced. Evicts the least
    /// recently released cached block when no unused block is left.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let block = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.evictable.pop_first()?;
                if let Some(key) = self.keys[b as usize].take() {
                    self.cached.remove(&key.hash);
                }
                b
            }
        };
        self.ref_counts[block as usize] = 1;
        Some(block)
    }

    /// Drops one reference to `block`. Its last reference makes it free (or, if registered,
    /// evictable).
    pub fn release(&mut self, block: BlockId) {
        let i = block as usize;
        debug_assert!(self.ref_counts[i] > 0, "block {block} released twice");
        self.ref_counts[i] = self.ref_counts[i].saturating_sub(1);
        if self.ref_counts[i] == 0 {
            if self.keys[i].is_some() {
                self.tick += 1;
                self.released_at[i] = self.tick;
                self.evictable.insert(self.tick, block);
            } else {
                self.free.push(block);
            }
        }
    }

    /// Takes a reference to the cached block holding `tokens` after the prefix hashed as `hash`.
    pub fn lookup(&mut self, hash: BlockHash, tokens: &[TokenId]) -> Option<BlockId> {
        self.prefix_queries += 1;
        let &block = self.cached.get(&hash)?;
        let i = block as usize;
        if self.keys[i].as_ref().is_none_or(|k| k.tokens != tokens) {
            return None;
        }
        if self.ref_counts[i] == 0 {
            self.evictable.remove(&self.released_at[i]);
        }
        self.ref_counts[i] += 1;
        self.prefix_hits += 1;
        Some(block)
    }

    /// Registers the full `block` as holding `tokens` under `hash`, so that later prefixes can
    /// share it. A prefix already cached in another block keeps that one (this block stays
    /// private to its sequence).
    pub fn register(&mut self, block: BlockId, hash: BlockHash, tokens: &[TokenId]) {
        debug_assert_eq!(tokens.len(), self.block_size);
        let i = block as usize;
        if self.keys[i].is_some() || self.cached.contains_key(&hash) {
            return;
        }
        self.cached.insert(hash, block);
        self.keys[i] = Some(CachedKey {
            hash,
            tokens: tokens.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::paged::prefix_cache::block_hash;

    #[test]
    fn allocates_until_exhausted_and_reuses_released_blocks() {
        let mut a = BlockAllocator::new(3, 4);
        let b: Vec<_> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(b, vec![0, 1, 2]);
        assert_eq!(a.allocate(), None);
        assert_eq!(a.num_used(), 3);
        a.release(b[1]);
        assert_eq!(a.num_free(), 1);
        assert_eq!(a.allocate(), Some(1));
    }

    #[test]
    fn shared_block_is_freed_by_its_last_reference() {
        let mut a = BlockAllocator::new(2, 2);
        let b = a.allocate().unwrap();
        let h = block_hash(None, &[5, 6]);
        a.register(b, h, &[5, 6]);
        assert_eq!(a.lookup(h, &[5, 6]), Some(b));
        assert_eq!(a.ref_count(b), 2);
        a.release(b);
        assert_eq!(a.num_used(), 1);
        a.release(b);
        assert_eq!(a.num_used(), 0);
        // Cached but unreferenced: a lookup revives it.
        assert_eq!(a.lookup(h, &[5, 6]), Some(b));
        assert_eq!(a.ref_count(b), 1);
        assert_eq!(a.prefix_hits, 2);
    }

    #[test]
    fn lookup_checks_tokens_and_eviction_forgets_the_prefix() {
        let mut a = BlockAllocator::new(1, 2);
        let b = a.allocate().unwrap();
        let h = block_hash(None, &[1, 2]);
        a.register(b, h, &[1, 2]);
        assert_eq!(a.lookup(h, &[1, 3]), None, "same hash, other tokens");
        a.release(b);
        assert_eq!(a.num_cached(), 1);
        // The only block is evictable: allocation evicts it and the prefix is gone.
        assert_eq!(a.allocate(), Some(b));
        assert_eq!(a.num_cached(), 0);
        a.release(b);
        assert_eq!(a.lookup(h, &[1, 2]), None);
    }

    #[test]
    fn evicts_least_recently_released_first() {
        let mut a = BlockAllocator::new(2, 1);
        let (x, y) = (a.allocate().unwrap(), a.allocate().unwrap());
        a.register(x, block_hash(None, &[1]), &[1]);
        a.register(y, block_hash(None, &[2]), &[2]);
        a.release(y);
        a.release(x);
        assert_eq!(a.allocate(), Some(y));
        assert!(a.lookup(block_hash(None, &[1]), &[1]).is_some());
    }
}
