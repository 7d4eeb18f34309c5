//! Decode steps of a packed batch on the CPU: every sequence has one new token and attends to all
//! of its cached tokens. Instead of a gather of each sequence's keys and values and five candle
//! ops per sequence and layer, the new keys and values go into their slots in one in-place pass,
//! and attention reads the store where the tokens lie, all sequences and heads in parallel.
//!
//! The arithmetic is `eager_attention_forward`'s in f32: `s_j = (q . k_j) * scale`, `p =
//! softmax(s)`, `o = sum_j p_j v_j`, for each query head over its key/value head (grouped-query
//! heads read the same rows).

use candle_core::{CpuStorage, InplaceOp1, Layout, Storage, Tensor};
use rayon::prelude::*;

use super::store::KvStore;
use crate::error::Result;
use crate::models::layers::attention::decode_cpu::attend_one;

/// Writes token `tokens[i]`'s row `[kv_heads, d]` of `rows` (`[kv_heads, T, d]`, flat) into
/// slot `slots[i]` of a store tensor `[kv_heads, slot_count, d]`.
struct WriteSlots<'a> {
    rows: &'a [f32],
    tokens: &'a [usize],
    slots: &'a [u32],
    kv_heads: usize,
    head_dim: usize,
}

impl InplaceOp1 for WriteSlots<'_> {
    fn name(&self) -> &'static str {
        "lmgen-paged-write-slots"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("paged decode: the store is not f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("paged decode: the store is not contiguous");
        };
        let data = &mut data[start..end];
        let d = self.head_dim;
        let total = self.rows.len() / (self.kv_heads * d);
        let slot_count = data.len() / (self.kv_heads * d);
        for h in 0..self.kv_heads {
            for (&t, &slot) in self.tokens.iter().zip(self.slots) {
                let from = &self.rows[(h * total + t) * d..][..d];
                data[(h * slot_count + slot as usize) * d..][..d].copy_from_slice(from);
            }
        }
        Ok(())
    }
}

/// The f32 values of a contiguous CPU storage under `layout`, borrowed, or `None`.
fn f32_slice<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    let Storage::Cpu(CpuStorage::F32(v)) = storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    Some(&v[start..end])
}

/// Decode tokens of a packed batch: `[q, k, v]`, `q` `[1, nh, T, d]`, `k`, `v` `[1, nkv, T, d]`
/// (the whole input); for each selected sequence `i`, `tokens[i]` is the position of its one new token in
/// the input and `slots[i]` the slots of its cached tokens and that new one (last). Writes their
/// new keys and values, then returns their attention output `[1, nh, n, d]` (`n` selected, in
/// order); `None` when the store or the inputs are not contiguous f32 CPU tensors (the caller
/// gathers instead).
pub fn decode_attention(
    store: &KvStore,
    layer: usize,
    tokens: &[usize],
    slots: &[&[u32]],
    [q, k, v]: [&Tensor; 3],
    scale: f64,
) -> Result<Option<Tensor>> {
    let (sk, sv) = store.layer(layer)?;
    let (_, nh, total, d) = q.dims4()?;
    let nkv = k.dim(1)?;
    let n = tokens.len();
    if slots.len() != n || nkv == 0 || nh % nkv != 0 || tokens.iter().any(|&t| t >= total) {
        return Ok(None);
    }
    // q, k and v are read in place (their storage is not the store's); the store is checked
    // before anything is written to it.
    let ((qg, ql), (kg, kl), (vg, vl)) = (
        q.storage_and_layout(),
        k.storage_and_layout(),
        v.storage_and_layout(),
    );
    let (Some(qs), Some(ks), Some(vs)) =
        (f32_slice(&qg, ql), f32_slice(&kg, kl), f32_slice(&vg, vl))
    else {
        return Ok(None);
    };
    let f32_store = |t: &Tensor| {
        let (storage, layout) = t.storage_and_layout();
        f32_slice(&storage, layout).is_some()
    };
    if !f32_store(sk) || !f32_store(sv) {
        return Ok(None);
    }
    let new_slots: Vec<u32> = slots.iter().filter_map(|s| s.last().copied()).collect();
    if new_slots.len() != n {
        return Ok(None);
    }
    for (rows, store_t) in [(ks, sk), (vs, sv)] {
        store_t.inplace_op1(&WriteSlots {
            rows,
            tokens,
            slots: &new_slots,
            kv_heads: nkv,
            head_dim: d,
        })?;
    }
    let ((k_guard, k_layout), (v_guard, v_layout)) =
        (sk.storage_and_layout(), sv.storage_and_layout());
    let (Some(kd), Some(vd)) = (f32_slice(&k_guard, k_layout), f32_slice(&v_guard, v_layout))
    else {
        return Ok(None);
    };
    let slot_count = kd.len() / (nkv * d);
    let n_rep = nh / nkv;
    let scale = scale as f32;
    // One task per (sequence, key/value head): its n_rep query heads, `[n_rep, d]`.
    let outs: Vec<Vec<f32>> = (0..n * nkv)
        .into_par_iter()
        .map(|task| {
            let (i, g) = (task / nkv, task % nkv);
            let seq = slots[i];
            let start = |slot: u32| (g * slot_count + slot as usize) * d;
            let mut out = vec![0f32; n_rep * d];
            let mut scores = vec![0f32; seq.len()];
            for (r, o) in out.chunks_exact_mut(d).enumerate() {
                let h = g * n_rep + r;
                let qh = &qs[(h * total + tokens[i]) * d..][..d];
                let key = |j: usize| &kd[start(seq[j])..][..d];
                let value = |j: usize| &vd[start(seq[j])..][..d];
                attend_one(qh, key, value, scale, &mut scores, o);
            }
            out
        })
        .collect();
    drop((k_guard, v_guard, qg, kg, vg));
    // [n, nkv, n_rep, d] -> [nh, n, d]
    let mut flat = vec![0f32; nh * n * d];
    for (task, out) in outs.iter().enumerate() {
        let (i, g) = (task / nkv, task % nkv);
        for r in 0..n_rep {
            let h = g * n_rep + r;
            flat[(h * n + i) * d..][..d].copy_from_slice(&out[r * d..][..d]);
        }
    }
    Ok(Some(Tensor::from_vec(flat, (1, nh, n, d), q.device())?))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, D};

    use super::*;
    use crate::cache::paged::StoreShape;

    /// Three sequences of 6, 1 and 18 tokens on scattered slots, their decode tokens at scattered
    /// input positions, four query heads over two key/value heads: the in-place pass gives the gather-and-matmul attention within f32
    /// rounding, and writes the new keys and values where a gather finds them.
    #[test]
    fn decode_attention_equals_the_gathered_attention() -> Result<()> {
        let dev = Device::Cpu;
        let (nh, nkv, d, slot_count) = (4, 2, 8, 64);
        let shape = StoreShape {
            layers: vec![(nkv, d)],
            slots: slot_count,
        };
        let store = KvStore::new(shape, DType::F32, &dev)?;
        let slots: Vec<Vec<u32>> = vec![
            vec![40, 41, 42, 43, 3, 9],
            vec![60],
            (0..18).map(|i| 10 + (i * 7) % 18).collect(), // 10..=27, scattered
        ];
        // No slot is used twice.
        let mut all: Vec<u32> = slots.concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), slots.iter().map(Vec::len).sum::<usize>());
        for s in &slots {
            let past = &s[..s.len() - 1];
            if past.is_empty() {
                continue;
            }
            let k = Tensor::randn(0f32, 1.0, (1, nkv, past.len(), d), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (1, nkv, past.len(), d), &dev)?;
            store.write(0, past, &k, &v)?;
        }
        // Five input tokens; the three sequences' decode tokens are at 4, 0 and 2 (the others
        // would be another sequence's prompt).
        let (total, tokens) = (5, [4usize, 0, 2]);
        let q = Tensor::randn(0f32, 1.0, (1, nh, total, d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (1, nkv, total, d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (1, nkv, total, d), &dev)?;
        let scale = 0.35;
        let views: Vec<&[u32]> = slots.iter().map(Vec::as_slice).collect();
        let Some(fast) = decode_attention(&store, 0, &tokens, &views, [&q, &k, &v], scale)? else {
            panic!("an f32 CPU store takes the in-place path");
        };
        assert_eq!(fast.dims4()?, (1, nh, 3, d));
        for (i, s) in slots.iter().enumerate() {
            let at = tokens[i];
            let idx = Tensor::new(s.as_slice(), &dev)?;
            let (ks, vs) = store.gather(0, &idx)?; // [1, nkv, len, d]
                                                   // The new token's keys and values are in its slot.
            let last = |t: &Tensor| t.narrow(2, s.len() - 1, 1);
            let diff = (last(&ks)? - k.narrow(2, at, 1)?)?.abs()?.max_all()?;
            assert_eq!(diff.to_scalar::<f32>()?, 0.0);
            let diff = (last(&vs)? - v.narrow(2, at, 1)?)?.abs()?.max_all()?;
            assert_eq!(diff.to_scalar::<f32>()?, 0.0);
            // [nkv, n_rep, d] x [nkv, d, len] -> softmax -> x [nkv, len, d]
            let qi = q
                .narrow(2, at, 1)?
                .contiguous()?
                .reshape((nkv, nh / nkv, d))?;
            let scores = (qi.matmul(&ks.squeeze(0)?.t()?)? * scale)?;
            let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let want = probs
                .matmul(&vs.squeeze(0)?.contiguous()?)?
                .reshape((nh, d))?;
            let got = fast.narrow(2, i, 1)?.reshape((nh, d))?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "sequence {i}: {diff}");
        }
        Ok(())
    }

    /// A store in another dtype is left to the gathering path.
    #[test]
    fn other_dtypes_fall_back() -> Result<()> {
        let dev = Device::Cpu;
        let shape = StoreShape {
            layers: vec![(1, 4)],
            slots: 8,
        };
        let store = KvStore::new(shape, DType::F16, &dev)?;
        let x = Tensor::zeros((1, 1, 1, 4), DType::F32, &dev)?;
        let out = decode_attention(&store, 0, &[0], &[&[0]], [&x, &x, &x], 1.0)?;
        assert!(out.is_none());
        Ok(())
    }
}
