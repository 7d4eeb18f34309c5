//! A sequence's block table: which pool blocks hold its tokens, in order. Token `p` lives in slot
//! `blocks[p / block_size] * block_size + p % block_size` of every layer's store.

use super::allocator::BlockAllocator;
use super::BlockId;

/// The blocks of one sequence.
#[derive(Debug, Clone, Default)]
pub struct BlockTable {
    blocks: Vec<BlockId>,
}

impl BlockTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The blocks, in token order.
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }

    /// The store slot of token `pos` (what [`BlockTable::extend_slots`] gives a block's run at
    /// a time).
    #[cfg(test)]
    pub fn slot(&self, pos: usize, block_size: usize) -> u32 {
        self.blocks[pos / block_size] * block_size as u32 + (pos % block_size) as u32
    }

    /// The store slots of tokens `0..len`.
    pub fn slots(&self, len: usize, block_size: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(len);
        self.extend_slots(len, block_size, &mut out);
        out
    }

    /// Appends the store slots of tokens `0..len` to `out`, a block's run at a time; `len` at
    /// most the tokens its blocks hold.
    pub fn extend_slots(&self, len: usize, block_size: usize, out: &mut Vec<u32>) {
        assert!(
            len <= self.blocks.len() * block_size,
            "{len} tokens past the table's {} blocks",
            self.blocks.len()
        );
        for (b, &block) in self.blocks.iter().enumerate() {
            let lo = b * block_size;
            if lo >= len {
                break;
            }
            let first = block * block_size as u32;
            out.extend(first..first + (len - lo).min(block_size) as u32);
        }
    }

    /// Blocks to allocate so that the table holds `tokens` tokens.
    pub fn blocks_needed(&self, tokens: usize, block_size: usize) -> usize {
        tokens
            .div_ceil(block_size)
            .saturating_sub(self.blocks.len())
    }

    /// Appends a block this sequence already holds a reference to (a shared prefix block).
    pub fn push(&mut self, block: BlockId) {
        self.blocks.push(block);
    }

    /// Grows the table to hold `tokens` tokens: all the blocks it needs, or none (`false`) when
    /// the pool has too few free blocks.
    pub fn grow(&mut self, tokens: usize, alloc: &mut BlockAllocator) -> bool {
        let need = self.blocks_needed(tokens, alloc.block_size());
        if need > alloc.num_free() {
            return false;
        }
        for _ in 0..need {
            match alloc.allocate() {
                Some(b) => self.blocks.push(b),
                None => return false,
            }
        }
        true
    }

    /// Drops this sequence's reference to every block and empties the table.
    pub fn release(&mut self, alloc: &mut BlockAllocator) {
        for b in self.blocks.drain(..) {
            alloc.release(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_all_or_nothing_and_maps_slots() {
        let mut alloc = BlockAllocator::new(3, 4);
        let mut t = BlockTable::new();
        assert!(t.grow(5, &mut alloc));
        assert_eq!(t.blocks(), &[0, 1]);
        assert_eq!(t.slot(5, 4), 5);
        let mut other = BlockTable::new();
        assert!(!other.grow(9, &mut alloc), "needs 3 blocks, 1 free");
        assert_eq!(alloc.num_free(), 1);
        assert!(other.grow(4, &mut alloc));
        assert_eq!(other.slots(2, 4), vec![8, 9]);
        // Across blocks (block 1 after block 0), as `slot` maps each token.
        let mut tail = vec![99];
        t.extend_slots(7, 4, &mut tail);
        assert_eq!(tail, [99, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(
            t.slots(7, 4),
            (0..7).map(|p| t.slot(p, 4)).collect::<Vec<_>>()
        );
        t.release(&mut alloc);
        other.release(&mut alloc);
        assert_eq!(alloc.num_free(), 3);
    }
}
