//! Prefix hashes of full blocks: block `i` of a sequence is identified by the hash of all its
//! tokens up to and including that block (chained: the parent block's hash and the block's own
//! tokens), so two sequences share block `i` only when their first `(i + 1) * block_size` tokens
//! are identical.

use std::hash::{Hash, Hasher};

use crate::TokenId;

/// The hash of a block's token prefix.
pub type BlockHash = u64;

/// The hash of a block holding `tokens` after the prefix hashed as `parent` (`None` for the first
/// block).
pub fn block_hash(parent: Option<BlockHash>, tokens: &[TokenId]) -> BlockHash {
    // SipHash with fixed keys: deterministic within and across runs.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// The chained hashes of every full block of `tokens`.
#[cfg(test)]
pub fn prefix_hashes(tokens: &[TokenId], block_size: usize) -> Vec<BlockHash> {
    let mut parent = None;
    tokens
        .chunks_exact(block_size)
        .map(|block| {
            let h = block_hash(parent, block);
            parent = Some(h);
            h
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_the_whole_prefix() {
        let a = prefix_hashes(&[1, 2, 3, 4, 5], 2);
        let b = prefix_hashes(&[9, 2, 3, 4], 2);
        assert_eq!(a.len(), 2);
        assert_eq!(b.len(), 2);
        assert_ne!(a[1], b[1], "same block tokens, different prefix");
        assert_eq!(a, prefix_hashes(&[1, 2, 3, 4], 2));
    }
}
