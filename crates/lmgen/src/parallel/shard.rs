//! Which part of a model one rank holds: the rank and world size of its [`Communicator`], and
//! how a count of heads, channels, experts or vocabulary rows splits across the ranks. Resolved
//! once at load and carried in [`crate::models::layers::LoadContext`]; a model that cannot be
//! split is an error naming the config field.

use std::ops::Range;
use std::sync::Arc;

use super::comm::tp_error;
use super::Communicator;
use crate::error::{Error, Result};

/// One rank's part of a model split across `world_size` ranks.
#[derive(Debug, Clone)]
pub struct Shard {
    comm: Arc<dyn Communicator>,
}

impl Shard {
    /// The part of rank `comm.rank()` of `comm.world_size()`.
    pub fn new(comm: Arc<dyn Communicator>) -> Self {
        Self { comm }
    }

    /// This rank, in `0..world_size`.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// The number of ranks the model is split across.
    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    /// The group the rank exchanges activations with.
    pub fn comm(&self) -> &Arc<dyn Communicator> {
        &self.comm
    }

    /// This rank's equal, contiguous part of `n` items (the config's `field`), or an error when
    /// `n` does not divide by the world size.
    pub fn split(&self, n: usize, field: &str) -> Result<Range<usize>> {
        let ws = self.world_size();
        if !n.is_multiple_of(ws) {
            return Err(self.error(format!(
                "`{field}` = {n} does not divide into {ws} equal parts; pick a world size that \
                 divides it"
            )));
        }
        let part = n / ws;
        Ok(self.rank() * part..(self.rank() + 1) * part)
    }

    /// This rank's rows of a vocabulary of `n` ids (the config's `field`): `ceil(n / world_size)`
    /// rows each, fewer on the last ranks when the world size does not divide `n` (GPT-2's 50257
    /// ids). An error when a rank would get none.
    pub fn split_vocab(&self, n: usize, field: &str) -> Result<Range<usize>> {
        let ws = self.world_size();
        let part = n.div_ceil(ws);
        if part * (ws - 1) >= n {
            return Err(self.error(format!(
                "`{field}` = {n} leaves rank {} without rows in parts of {part}",
                ws - 1
            )));
        }
        let start = (self.rank() * part).min(n);
        Ok(start..((self.rank() + 1) * part).min(n))
    }

    /// This rank's part of `n` shared heads (`field`: key/value heads of grouped-query attention,
    /// key heads of a gated DeltaNet) whose users (`users`: query or value heads, `n` divides
    /// them) split evenly: `n / world_size` heads when the world size divides `n`, else, when
    /// `n` divides the world size, the one head this rank's users share (each head replicated on
    /// `world_size / n` ranks).
    pub fn split_shared(
        &self,
        n: usize,
        field: &str,
        users: (usize, &str),
    ) -> Result<Range<usize>> {
        let ws = self.world_size();
        let (users, users_field) = users;
        self.split(users, users_field)?;
        if n == 0 || users % n != 0 {
            return Err(self.error(format!(
                "`{field}` = {n} does not divide `{users_field}` = {users}"
            )));
        }
        if n.is_multiple_of(ws) {
            return self.split(n, field);
        }
        if !ws.is_multiple_of(n) {
            return Err(self.error(format!(
                "`{field}` = {n} neither divides into {ws} parts nor divides {ws}: its heads \
                 can be neither split nor replicated evenly"
            )));
        }
        let head = self.rank() / (ws / n);
        Ok(head..head + 1)
    }

    /// A model or layer kind this rank cannot split.
    pub fn unsupported(&self, what: &str) -> Error {
        self.error(format!("{what} cannot be split across ranks yet"))
    }

    /// An [`Error::TensorParallel`] for this group.
    pub fn error(&self, message: String) -> Error {
        tp_error(self.world_size(), message)
    }
}

/// `heads` of `width` rows each as a range of rows (`[heads.start * width, heads.end * width)`),
/// after `offset` rows.
pub fn rows(heads: &Range<usize>, width: usize, offset: usize) -> Range<usize> {
    offset + heads.start * width..offset + heads.end * width
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::LocalCommunicator;

    fn shards(n: usize) -> Vec<Shard> {
        LocalCommunicator::group(n)
            .expect("n > 0")
            .into_iter()
            .map(|c| Shard::new(Arc::new(c)))
            .collect()
    }

    #[test]
    fn heads_split_or_replicate_and_bad_counts_name_the_field() -> Result<()> {
        let four = shards(4);
        let kv: Vec<_> = four
            .iter()
            .map(|s| s.split_shared(2, "num_key_value_heads", (8, "num_attention_heads")))
            .collect::<Result<_>>()?;
        // Query heads 0..4 use kv head 0, 4..8 kv head 1: ranks 0, 1 and 2, 3 replicate them.
        assert_eq!(kv, vec![0..1, 0..1, 1..2, 1..2]);
        let q: Vec<_> = four
            .iter()
            .map(|s| s.split(8, "num_attention_heads"))
            .collect::<Result<_>>()?;
        assert_eq!(q, vec![0..2, 2..4, 4..6, 6..8]);
        let two = shards(2);
        assert_eq!(two[1].split_shared(4, "k", (8, "q"))?, 2..4);
        let err = four[0].split(6, "num_attention_heads").expect_err("6 % 4");
        assert!(
            err.to_string().contains("`num_attention_heads` = 6"),
            "{err}"
        );
        let err = shards(4)[0]
            .split_shared(3, "num_key_value_heads", (12, "num_attention_heads"))
            .expect_err("3 and 4");
        assert!(
            err.to_string().contains("`num_key_value_heads` = 3"),
            "{err}"
        );
        assert_eq!(rows(&(2..4), 3, 10), 16..22);
        let vocab: Vec<_> = four
            .iter()
            .map(|s| s.split_vocab(401, "vocab_size"))
            .collect::<Result<_>>()?;
        assert_eq!(vocab, vec![0..101, 101..202, 202..303, 303..401]);
        let err = four[3]
            .split_vocab(5, "vocab_size")
            .expect_err("5 ids, parts of 2");
        assert!(err.to_string().contains("`vocab_size` = 5"), "{err}");
        Ok(())
    }
}
