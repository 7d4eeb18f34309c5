//! Checks of each fused kernel against the candle op sequence it replaces, on a GPU (CI has none:
//! the device machine, which has no cargo, runs them through `generate_speed --check-kernels`;
//! with cargo and a GPU, `cargo test --features cuda -- --ignored fused_kernels`).
//!
//! Inputs are deterministic pseudo-random values; each kernel runs in f32, f16 and bf16 and is
//! compared with the candle ops in the same dtype (f32: 1e-5; half precision: two units in the
//! last place of the dtype, relative to `1 + |reference|`). Attention in half precision is also
//! compared with the f32 reference of the same inputs, since candle rounds the scores to the dtype
//! and the kernel does not.

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};
use crate::models::layers::attention::{attend, Scores};

/// Runs every check on `device`; one line per check, or the first mismatch as an error. The fast
/// paths must be on ([`super::set_enabled`]), or each check reports its kernel missing.
pub fn run(device: &Device) -> Result<Vec<String>> {
    let mut report = Vec::new();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        // A few rows, one block a row: 1, 4 and 12 elements a thread; a prompt's rows, a warp a
        // row holding 4 or 16 chunks of 16 bytes (or one block a row past that).
        for (rows, dim) in [
            (3, 896),
            (3, 4096),
            (3, 12288),
            (300, 896),
            (300, 2000),
            (300, 4096),
        ] {
            report.push(add_rms_norm(device, dtype, rows, dim)?);
        }
        // 16 bytes a thread, and one element a thread (37 features are no multiple of 16 bytes).
        for (rows, inter) in [(2, 4864), (300, 4864), (3, 37)] {
            report.push(swiglu(device, dtype, rows, inter)?);
        }
        // Every row count the kernel is built for, whatever the products take it for now.
        let before = super::set_gemv_max_rows(super::GEMV_MAX_ROWS);
        let lines: Result<Vec<String>> = (1..=super::GEMV_MAX_ROWS)
            .flat_map(|rows| {
                // 6144 columns: a little more than one wave of the 8-load one-row kernel on an
                // H100, where the 4-load one is taken.
                [
                    (1152, 896, true),
                    (37, 1000, false),
                    (300, 4096, true),
                    (6144, 256, false),
                ]
                .map(|(n, k, bias)| gemv(device, dtype, rows, n, k, bias))
            })
            .collect();
        super::set_gemv_max_rows(before);
        report.extend(lines?);
        // The step-fusing launches, whatever the process runs with.
        let fuse = super::set_fuse_steps(true);
        let fused = fused_steps(device, dtype);
        super::set_fuse_steps(fuse);
        report.extend(fused?);
        // Both decode attention kernels, whatever the process runs with.
        for mode in [super::Grouped::Always, super::Grouped::Never] {
            let before = super::set_grouped(mode);
            let lines = attention_checks(device, dtype);
            super::set_grouped(before);
            for line in lines? {
                report.push(format!("{line} [{mode:?}]"));
            }
        }
        // Both bodies of the flash kernels (half-precision heads of 64, 96 and 128 take the
        // tensor-core one unless it is off), whatever the process runs with.
        for mma in [true, false] {
            let before = super::set_flash_mma(mma);
            let lines = flash_checks(device, dtype);
            super::set_flash_mma(before);
            let body = if mma {
                "tensor-core body"
            } else {
                "shared-memory body"
            };
            for line in lines? {
                report.push(format!("{line} [{body}]"));
            }
        }
        // The whole-layer kernel, in every launch mode, whatever the process runs with.
        for mode in [
            super::LayerMode::Cooperative,
            super::LayerMode::Plain,
            super::LayerMode::Dependent,
        ] {
            let before = super::set_layer_mode(mode);
            let lines = decode_layer_checks(device, dtype);
            super::set_layer_mode(before);
            for line in lines? {
                report.push(format!("{line} [{mode:?}]"));
            }
        }
        report.push(greedy_logprob(device, dtype)?);
        for rows in [1, 3, super::Q8_MAX_ROWS] {
            for (n, k) in [(1152, 896), (300, 4096), (37, 1024)] {
                report.push(gemv_q8(device, dtype, rows, n, k)?);
            }
        }
        report.push(dequant_q8(device, dtype)?);
    }
    Ok(report)
}

/// Q8_0 blocks (ggml's 34-byte layout) of a `[n, k]` weight with deterministic scales and quants,
/// and the weight they stand for, `q * d` in f32 (exact: an 8-bit integer times an f16).
fn q8_blocks(n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let v = values(n * k + n * k / 32, seed);
    let (mut bytes, mut weight) = (Vec::new(), Vec::with_capacity(n * k));
    for b in 0..n * k / 32 {
        let d = half::f16::from_f32(0.002 + 0.01 * v[n * k + b].abs());
        bytes.extend_from_slice(&d.to_le_bytes());
        for i in 0..32 {
            let q = (v[b * 32 + i] * 63.9).round() as i8;
            bytes.push(q as u8);
            weight.push(q as f32 * d.to_f32());
        }
    }
    (bytes, weight)
}

/// The Q8_0 decode product against the exact sums (f64 on the host) of the activations times the
/// blocks' weights: within the worst-case error of an f32 sum of `k` products and one rounding to
/// `dtype`, as [`gemv`].
fn gemv_q8(device: &Device, dtype: DType, rows: usize, n: usize, k: usize) -> Result<String> {
    let (bytes, weight) = q8_blocks(n, k, 21);
    let w = super::DeviceQ8::new(&bytes, n, k, device)?.ok_or_else(|| missing("gemv_q8"))?;
    let x = tensor(&[1, rows, k], 22, dtype, device)?;
    let got = w.forward(&x)?;
    let xs: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let gs: Vec<f32> = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let what = format!("gemv_q8 {dtype:?} [{rows}, {k}] x [{n}, {k}]^T");
    let worst = within_sum_bound(
        &what,
        dtype,
        [rows, n, k],
        [&xs, &weight, &vec![0.0; n]],
        &gs,
    )?;
    Ok(format!(
        "ok gemv_q8 {dtype:?} [{rows}, {k}] x [{n}, {k}]^T: worst error {worst:.3} of the bound"
    ))
}

/// The Q8_0 weight dequantized on the device (the prompt path, then cuBLAS) and rows looked up
/// from it (an embedding table) equal to the bit to `q * d` rounded to `dtype` on the host, and
/// a product of more rows than the kernel takes equal to candle's matmul over that weight.
fn dequant_q8(device: &Device, dtype: DType) -> Result<String> {
    let (n, k) = (300, 1024);
    let (bytes, weight) = q8_blocks(n, k, 23);
    let w = super::DeviceQ8::new(&bytes, n, k, device)?.ok_or_else(|| missing("dequant_q8"))?;
    let want = Tensor::from_vec(weight, (n, k), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?;
    let got = w.dequantize(dtype)?;
    compare(
        &format!("dequant_q8 {dtype:?} [{n}, {k}]"),
        &got,
        &want,
        0.0,
    )?;
    let ids = Tensor::new(&[[7u32, 299, 0], [7, 150, 3]], device)?;
    let rows = w.rows(&ids, dtype)?;
    let want_rows = want
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((2, 3, k))?;
    compare(&format!("q8 rows {dtype:?} [2, 3]"), &rows, &want_rows, 0.0)?;
    let m = super::Q8_MAX_ROWS + 1;
    let x = tensor(&[1, m, k], 24, dtype, device)?;
    let product = w.forward(&x)?;
    let expected = x.broadcast_matmul(&want.t()?)?;
    compare(
        &format!("q8 product {dtype:?} [{m}, {k}] x [{n}, {k}]^T (dequantized, cuBLAS)"),
        &product,
        &expected,
        0.0,
    )
}

/// The greedy pick against the host's `argmax` and `log_sum_exp` over the same (rounded)
/// values: ids equal (first maximum on a tie, first NaN, 0 for an all -inf row), log-probabilities
/// within f32 summation error.
fn greedy_logprob(device: &Device, dtype: DType) -> Result<String> {
    use crate::generation::log_sum_exp;
    use crate::generation::sampler::argmax;
    let vocab = 151_936;
    let mut rows: Vec<Vec<f32>> = (0..3).map(|r| values(vocab, 40 + r)).collect();
    rows[1][100] = 9.0; // a tie: the first wins
    rows[1][70_000] = 9.0;
    rows[2][5_000] = f32::NAN;
    rows[2][90_000] = f32::NAN;
    rows.push(vec![f32::NEG_INFINITY; vocab]);
    let mut sparse = vec![f32::NEG_INFINITY; vocab];
    sparse[151_000] = -3.0;
    sparse[7] = -4.0;
    rows.push(sparse);
    let n = rows.len();
    let flat: Vec<f32> = rows.concat();
    let logits = Tensor::from_vec(flat, (n, vocab), &Device::Cpu)?.to_dtype(dtype)?;
    let host: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
    let picked = super::greedy_logprob(&logits.to_device(device)?)?
        .ok_or_else(|| missing("greedy_logprob"))?
        .to_vec2::<f32>()?;
    let mut worst = 0f32;
    for (r, (row, got)) in host.iter().zip(&picked).enumerate() {
        let id = argmax(row);
        if got[0] as usize != id {
            return Err(mismatch(format!(
                "greedy_logprob {dtype:?} row {r}: id {}, expected {id}",
                got[0]
            )));
        }
        let want = row[id] - log_sum_exp(row);
        if want.is_nan() || got[1].is_nan() {
            if want.is_nan() != got[1].is_nan() {
                return Err(mismatch(format!(
                    "greedy_logprob {dtype:?} row {r}: log-probability {}, expected {want}",
                    got[1]
                )));
            }
            continue;
        }
        worst = worst.max((got[1] - want).abs() / (1.0 + want.abs()));
    }
    let tol = 1e-5;
    if worst > tol {
        return Err(mismatch(format!(
            "greedy_logprob {dtype:?}: log-probability error {worst:e} over {tol:e}"
        )));
    }
    Ok(format!(
        "ok greedy_logprob {dtype:?} [{n}, {vocab}]: ids equal, log-probability error {worst:e} (tolerance {tol:e})"
    ))
}

/// The prompt attention checks: [`FLASH_CASES`] (half precision: the heads it takes, multiples
/// of 16) and the paged engine's packed steps.
fn flash_checks(device: &Device, dtype: DType) -> Result<Vec<String>> {
    let mut report = Vec::new();
    for case in FLASH_CASES {
        if case.d.is_multiple_of(16) || dtype == DType::F32 {
            report.push(flash_attention(device, dtype, case)?);
        }
    }
    report.push(paged_flash(device, dtype, None, false)?);
    report.push(paged_flash(device, dtype, Some(50), true)?);
    Ok(report)
}

/// A prompt's attention for [`flash_attention`]: `t` queries after `s - t` cached keys.
#[derive(Debug, Clone, Copy)]
struct FlashCase {
    b: usize,
    nh: usize,
    nkv: usize,
    t: usize,
    s: usize,
    d: usize,
    window: Option<usize>,
    softcap: Option<f64>,
    sinks: bool,
}

const fn case(b: usize, nh: usize, nkv: usize, t: usize, s: usize, d: usize) -> FlashCase {
    FlashCase {
        b,
        nh,
        nkv,
        t,
        s,
        d,
        window: None,
        softcap: None,
        sinks: false,
    }
}

/// Prompts with and without cached keys, partial tiles, grouped-query heads, head sizes from 64
/// to 256 (96: Phi-3; 72, f32 only: half precision takes multiples of 16), sliding windows
/// (Gemma 2), softcapping, sinks (gpt-oss), one decode token under a window, and long prompts.
const FLASH_CASES: [FlashCase; 11] = [
    case(2, 14, 2, 37, 37, 64),
    case(1, 14, 2, 300, 377, 64),
    case(2, 32, 8, 130, 130, 128),
    FlashCase {
        window: Some(64),
        softcap: Some(50.0),
        ..case(1, 8, 4, 200, 200, 256)
    },
    FlashCase {
        window: Some(32),
        sinks: true,
        ..case(1, 8, 8, 100, 100, 64)
    },
    FlashCase {
        sinks: true,
        ..case(2, 6, 2, 65, 90, 64)
    },
    case(1, 4, 4, 70, 70, 80),
    case(1, 4, 2, 50, 60, 72),
    FlashCase {
        window: Some(100),
        ..case(2, 8, 4, 1, 300, 64)
    },
    // Phi-3's heads of 96 over many tiles, a window that starts inside a tile, softcapping.
    FlashCase {
        window: Some(200),
        softcap: Some(30.0),
        ..case(1, 4, 2, 700, 760, 96)
    },
    // A long prompt of 128-wide grouped heads with sinks: 17 key tiles, the last one partial.
    FlashCase {
        sinks: true,
        ..case(1, 8, 2, 1050, 1050, 128)
    },
];

/// [`super::flash_attention`] against [`attend`] with the mask [`crate::models::layers::mask`]
/// builds for the same positions: in f32 within 1e-5; in half precision within a few units of
/// the dtype of candle's ops (which round the scores to the dtype) and within its rounding of the
/// f32 reference (the kernel rounds only the probabilities, for the product with the values).
fn flash_attention(device: &Device, dtype: DType, c: FlashCase) -> Result<String> {
    use crate::models::layers::mask::{build, MaskSpec};
    let scale = (c.d as f64).powf(-0.5);
    let q = tensor(&[c.b, c.nh, c.t, c.d], 11, dtype, device)?;
    // Views of a larger cache, as the KV cache hands them out.
    let k_cache = tensor(&[c.b, c.nkv, c.s + 5, c.d], 12, dtype, device)?;
    let v_cache = tensor(&[c.b, c.nkv, c.s + 5, c.d], 13, dtype, device)?;
    let (k, v) = (k_cache.narrow(2, 0, c.s)?, v_cache.narrow(2, 0, c.s)?);
    let sinks = match c.sinks {
        true => Some(tensor(&[c.nh], 14, DType::F32, device)?),
        false => None,
    };
    let scores = Scores {
        scale,
        softcap: c.softcap,
        sinks: sinks.as_ref(),
    };
    let got = super::flash_attention(&q, &k, &v, c.window, scores)?
        .ok_or_else(|| missing("flash_attention"))?;
    let spec = MaskSpec {
        padding: None,
        batch: c.b,
        q_len: c.t,
        kv_len: c.s,
    };
    let what = format!("flash_attention {dtype:?} {c:?}");
    let want = attend(
        &q,
        &k,
        &v,
        build(&spec, c.window, dtype, device)?.as_ref(),
        scores,
    )?;
    if dtype == DType::F32 {
        return compare(&what, &got, &want, tolerance(dtype));
    }
    compare(
        &format!("{what} vs candle"),
        &got,
        &want,
        4.0 * tolerance(dtype),
    )?;
    let f32 = |t: &Tensor| t.to_dtype(DType::F32);
    let mask = build(&spec, c.window, DType::F32, device)?;
    let exact = attend(&f32(&q)?, &f32(&k)?, &f32(&v)?, mask.as_ref(), scores)?;
    compare(&format!("{what} vs f32"), &got, &exact, tolerance(dtype))
}

/// [`super::gemv_swiglu`] and [`super::rope_kv_write`] against the launches they replace.
fn fused_steps(device: &Device, dtype: DType) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (inter, k, bias) in [(4864, 896, false), (37, 1000, true)] {
        lines.push(gemv_swiglu(device, dtype, inter, k, bias)?);
    }
    // (nh, nkv, d, rotated features (None: no rope), per-head norms)
    for (nh, nkv, d, r, norms) in [
        (14, 2, 64, Some(64), false),
        (32, 8, 128, Some(128), true),
        (8, 4, 64, Some(32), false),
        (4, 2, 80, None, true),
    ] {
        lines.push(rope_kv_write(device, dtype, (nh, nkv, d), r, norms)?);
    }
    // (b, t, nh, nkv, d, rotated features, per-head norms, bias)
    for case in [
        (1, 37, 14, 2, 64, Some(64), false, true),
        (2, 20, 32, 8, 128, Some(128), true, false),
        (2, 9, 8, 4, 64, Some(32), false, true),
        (1, 5, 4, 2, 80, None, true, true),
        (1, 3, 8, 4, 256, Some(256), true, false),
    ] {
        lines.push(qkv_heads(device, dtype, case)?);
    }
    Ok(lines)
}

/// The fused bias + split + norms + rotation of a prompt's projection against candle's ops
/// (broadcast add, narrow and transpose, `rms_norm` per head, `rope` over the first `r`
/// features): queries, keys and values within the dtype's tolerance (the norm sums in another
/// order), the values equal to the bit.
#[allow(clippy::type_complexity)]
fn qkv_heads(
    device: &Device,
    dtype: DType,
    (b, t, nh, nkv, d, r, norms, bias): (
        usize,
        usize,
        usize,
        usize,
        usize,
        Option<usize>,
        bool,
        bool,
    ),
) -> Result<String> {
    let eps = 1e-6;
    let width = (nh + 2 * nkv) * d;
    let qkv = tensor(&[b, t, width], 23, dtype, device)?;
    let bias_t = tensor(&[width], 24, dtype, device)?;
    let half = r.unwrap_or(d) / 2;
    let cos = tensor(&[b, t, half], 25, dtype, device)?;
    let sin = tensor(&[b, t, half], 26, dtype, device)?;
    let qw = tensor(&[d], 27, dtype, device)?;
    let kw = tensor(&[d], 28, dtype, device)?;
    let biased = match bias {
        true => qkv.broadcast_add(&bias_t)?,
        false => qkv.clone(),
    };
    let norms_of = norms.then_some((&qw, &kw, eps));
    let (q, k, v) = split_heads(&biased, (nh, nkv, d), r.map(|_| (&cos, &sin)), norms_of)?;
    let fused = super::FusedQkv {
        qkv: &qkv,
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: d,
        rope: r.map(|_| (&cos, &sin)),
        norms: norms_of,
    };
    let (gq, gk, gv) =
        super::qkv_heads(&fused, bias.then_some(&bias_t))?.ok_or_else(|| missing("qkv_heads"))?;
    let what = format!(
        "qkv_heads {dtype:?} b {b} t {t} nh {nh} nkv {nkv} d {d}, rotated {r:?}, norms {norms}, \
         bias {bias}"
    );
    let tol = tolerance(dtype);
    compare(&format!("{what}: queries"), &gq, &q, tol)?;
    compare(&format!("{what}: keys"), &gk, &k, tol)?;
    compare(&format!("{what}: values"), &gv, &v, 0.0)
}

/// Queries `[b, nh, t, d]`, keys and values `[b, nkv, t, d]` of a fused projection `qkv`
/// `[b, t, (nh + 2 nkv) d]` through candle's ops, as the attention block splits them: narrow and
/// transpose, `rms_norm` per head, `rope` over the first features.
#[allow(clippy::type_complexity)]
fn split_heads(
    qkv: &Tensor,
    (nh, nkv, d): (usize, usize, usize),
    rope: Option<(&Tensor, &Tensor)>,
    norms: Option<(&Tensor, &Tensor, f32)>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, t, _) = qkv.dims3()?;
    // [b, t, n * d] -> [b, n, t, d]
    let heads = |offset: usize, n: usize| -> Result<Tensor> {
        Ok(qkv
            .narrow(D::Minus1, offset * d, n * d)?
            .reshape((b, t, n, d))?
            .transpose(1, 2)?
            .contiguous()?)
    };
    let (mut q, mut k, v) = (heads(0, nh)?, heads(nh, nkv)?, heads(nh + nkv, nkv)?);
    if let Some((qw, kw, eps)) = norms {
        q = candle_nn::ops::rms_norm(&q, qw, eps)?;
        k = candle_nn::ops::rms_norm(&k, kw, eps)?;
    }
    if let Some((cos, sin)) = rope {
        q = crate::models::layers::rotary::apply(&q, cos, sin)?;
        k = crate::models::layers::rotary::apply(&k, cos, sin)?;
    }
    Ok((q, k, v))
}

/// `buf` `[b, nkv, cap, d]` with row `r`'s slot `slots[r]` replaced by `new` `[b, nkv, 1, d]`'s
/// row `r`, through candle's ops: what a cache write at device slots must give.
fn placed(buf: &Tensor, new: &Tensor, slots: &[u32]) -> Result<Tensor> {
    let cap = buf.dim(2)?;
    let rows = slots
        .iter()
        .enumerate()
        .map(|(r, &slot)| {
            let (row, tok) = (buf.narrow(0, r, 1)?, new.narrow(0, r, 1)?);
            let s = slot as usize;
            let mut parts = vec![row.narrow(2, 0, s)?, tok];
            if s + 1 < cap {
                parts.push(row.narrow(2, s + 1, cap - s - 1)?);
            }
            Ok(Tensor::cat(&parts, 2)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// `n` values in [-2, 2) from a fixed linear congruential sequence.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64, dtype: DType, device: &Device) -> Result<Tensor> {
    let n = shape.iter().product();
    Ok(Tensor::from_vec(values(n, seed), shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// The decode attention checks (dense, at device slots, a NaN key, paged), under the grouped
/// kernels' mode the caller set.
fn attention_checks(device: &Device, dtype: DType) -> Result<Vec<String>> {
    let mut report = Vec::new();
    for (nh, nkv, d, s) in [
        (14, 2, 64, 1),
        (14, 2, 64, 37),
        (14, 2, 64, 300),
        (32, 8, 128, 2000),
        (14, 2, 64, 9000),
        (4, 4, 80, 129),
        (16, 1, 128, 700),
        (28, 4, 128, 5000),
    ] {
        report.push(decode_attention(device, dtype, (nh, nkv, d, s))?);
    }
    report.push(decode_at_slots(device, dtype, 96, [40, 95])?);
    report.push(decode_at_slots(device, dtype, 3000, [40, 2500])?);
    report.push(nan_key(device, dtype)?);
    for (shape, long) in [
        ((14, 2, 64), false),
        ((14, 2, 64), true),
        ((16, 1, 128), true),
        ((8, 2, 96), true),
    ] {
        report.push(paged(device, dtype, shape, long)?);
    }
    Ok(report)
}

/// The tolerance of a comparison in `dtype`.
fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2.0 * 2f32.powi(-10),
        _ => 2.0 * 2f32.powi(-7),
    }
}

/// `max |got - want| / (1 + |want|)`, or an error naming `what` past `tol`.
fn compare(what: &str, got: &Tensor, want: &Tensor, tol: f32) -> Result<String> {
    let err = checked_error(what, got, want, tol)?;
    Ok(format!("ok {what}: error {err:e} (tolerance {tol:e})"))
}

/// [`compare`]'s error itself, or the same error past `tol`.
fn checked_error(what: &str, got: &Tensor, want: &Tensor, tol: f32) -> Result<f32> {
    if got.dims() != want.dims() {
        return Err(mismatch(format!(
            "{what}: shape {:?}, expected {:?}",
            got.dims(),
            want.dims()
        )));
    }
    let (g, w) = (got.to_dtype(DType::F32)?, want.to_dtype(DType::F32)?);
    let err = ((&g - &w)?.abs()? / (w.abs()? + 1.0)?)?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    if err.is_nan() || err > tol {
        return Err(mismatch(format!("{what}: error {err:e} over {tol:e}")));
    }
    Ok(err)
}

fn mismatch(msg: String) -> Error {
    Error::Tensor(candle_core::Error::Msg(format!(
        "fused kernel check failed: {msg}"
    )))
}

fn missing(what: &str) -> Error {
    mismatch(format!("{what}: the kernel did not apply"))
}

fn add_rms_norm(device: &Device, dtype: DType, rows: usize, dim: usize) -> Result<String> {
    let eps = 1e-6;
    let x = tensor(&[1, rows, dim], 1, dtype, device)?;
    let h = tensor(&[1, rows, dim], 2, dtype, device)?;
    let w = tensor(&[dim], 3, dtype, device)?;
    let (sum, normed) =
        super::add_rms_norm(&x, &h, &w, eps)?.ok_or_else(|| missing("add_rms_norm"))?;
    let want_sum = (&x + &h)?;
    let want = candle_nn::ops::rms_norm(&want_sum, &w, eps)?;
    let tol = tolerance(dtype);
    compare(
        &format!("add_rms_norm {dtype:?} [{rows}, {dim}] sum"),
        &sum,
        &want_sum,
        0.0,
    )?;
    compare(
        &format!("add_rms_norm {dtype:?} [{rows}, {dim}]"),
        &normed,
        &want,
        tol,
    )
}

/// Checks `got` `[rows, n]` of a product against the exact sums (f64) of `xs` `[rows, k]` times
/// `ws` `[n, k]` plus `bs` `[n]`: within the worst-case error of an f32 sum of `k` products in any
/// order (`(k + 1) * 2^-24 * sum |x w|`) and one rounding to `dtype`. The worst error as a
/// fraction of its bound, or an error naming `what`.
fn within_sum_bound(
    what: &str,
    dtype: DType,
    [rows, n, k]: [usize; 3],
    [xs, ws, bs]: [&[f32]; 3],
    got: &[f32],
) -> Result<f64> {
    let unit = match dtype {
        DType::F32 => 2f64.powi(-24),
        DType::F16 => 2f64.powi(-11),
        _ => 2f64.powi(-8),
    };
    let mut worst = 0f64;
    for r in 0..rows {
        for j in 0..n {
            let (xr, wr) = (&xs[r * k..(r + 1) * k], &ws[j * k..(j + 1) * k]);
            let exact: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
            let magnitude: f64 = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let exact = exact + bs[j] as f64;
            let bound = (k + 1) as f64 * 2f64.powi(-24) * (magnitude + (bs[j] as f64).abs())
                + unit * exact.abs();
            let err = (got[r * n + j] as f64 - exact).abs();
            if err.is_nan() || err > bound {
                return Err(mismatch(format!(
                    "{what}: row {r} column {j} is {}, the exact sum {exact} (error {err:e} over \
                     the bound {bound:e})",
                    got[r * n + j]
                )));
            }
            worst = worst.max(err / bound);
        }
    }
    Ok(worst)
}

/// The decode product against the exact sums (f64 on the host) of the same values: within the
/// worst-case error of an f32 sum of `k` products in any order (`k * 2^-24 * sum |x w|`) and one
/// rounding to `dtype`.
fn gemv(
    device: &Device,
    dtype: DType,
    rows: usize,
    n: usize,
    k: usize,
    bias: bool,
) -> Result<String> {
    let x = tensor(&[1, rows, k], 5, dtype, device)?;
    let w = tensor(&[n, k], 6, dtype, device)?;
    let b = tensor(&[n], 7, dtype, device)?;
    let b = bias.then_some(&b);
    let got = super::gemv(&x, &w, b)?.ok_or_else(|| missing("gemv"))?;
    let host = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let (xs, ws, gs) = (host(&x)?, host(&w)?, host(&got)?);
    let bs = match b {
        Some(b) => host(b)?,
        None => vec![0.0; n],
    };
    let what = format!("gemv {dtype:?} [{rows}, {k}] x [{n}, {k}]^T");
    let worst = within_sum_bound(&what, dtype, [rows, n, k], [&xs, &ws, &bs], &gs)?;
    Ok(format!(
        "ok gemv {dtype:?} [{rows}, {k}] x [{n}, {k}]^T, bias {bias}: worst error {worst:.3} of the bound"
    ))
}

/// The gate/up product with SwiGLU in its launch against [`super::gemv`] then [`super::swiglu`]
/// (the same sums in the same order: equal to the bit is expected, the dtype's tolerance
/// required).
fn gemv_swiglu(
    device: &Device,
    dtype: DType,
    inter: usize,
    k: usize,
    bias: bool,
) -> Result<String> {
    let x = tensor(&[1, 1, k], 13, dtype, device)?;
    let w = tensor(&[2 * inter, k], 14, dtype, device)?;
    let b = tensor(&[2 * inter], 15, dtype, device)?;
    let b = bias.then_some(&b);
    let before = super::set_gemv_max_rows(1);
    let got = super::gemv_swiglu(&x, &w, b);
    let gate_up = super::gemv(&x, &w, b);
    super::set_gemv_max_rows(before);
    let got = got?.ok_or_else(|| missing("gemv_swiglu"))?;
    let gate_up = gate_up?.ok_or_else(|| missing("gemv"))?;
    let want = super::swiglu(&gate_up, inter)?.ok_or_else(|| missing("swiglu"))?;
    let what = format!(
        "gemv_swiglu {dtype:?} [1, {k}] x [{}, {k}]^T, bias {bias}",
        2 * inter
    );
    let line = compare(&what, &got, &want, tolerance(dtype))?;
    let equal = compare(&what, &got, &want, 0.0).is_ok();
    Ok(format!("{line}; equal to the bit: {equal}"))
}

/// The fused norm + rotation + cache write of a decode token against candle's ops on the split
/// projection (`rms_norm` per head, `rope` over the first `r` features, the token placed at
/// each row's slot): queries and both whole caches, within the dtype's tolerance (the norm
/// sums in another order); the caches' other slots untouched.
fn rope_kv_write(
    device: &Device,
    dtype: DType,
    (nh, nkv, d): (usize, usize, usize),
    r: Option<usize>,
    norms: bool,
) -> Result<String> {
    let (b, cap, eps) = (2, 16, 1e-6);
    let slots = [5u32, 15];
    let qkv = tensor(&[b, 1, (nh + 2 * nkv) * d], 16, dtype, device)?;
    let half = r.unwrap_or(d) / 2;
    let cos = tensor(&[b, 1, half], 17, dtype, device)?;
    let sin = tensor(&[b, 1, half], 18, dtype, device)?;
    let qw = tensor(&[d], 19, dtype, device)?;
    let kw = tensor(&[d], 20, dtype, device)?;
    let k_cache = tensor(&[b, nkv, cap, d], 21, dtype, device)?;
    let v_cache = tensor(&[b, nkv, cap, d], 22, dtype, device)?;
    let norms_of = norms.then_some((&qw, &kw, eps));
    let (q, k, v) = split_heads(&qkv, (nh, nkv, d), r.map(|_| (&cos, &sin)), norms_of)?;
    let (k_want, v_want) = (placed(&k_cache, &k, &slots)?, placed(&v_cache, &v, &slots)?);
    let token = super::FusedQkv {
        qkv: &qkv,
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: d,
        rope: r.map(|_| (&cos, &sin)),
        norms: norms_of,
    };
    let slots_dev = Tensor::new(&slots[..], device)?;
    let got = super::rope_kv_write(&token, &k_cache, &v_cache, &slots_dev)?
        .ok_or_else(|| missing("rope_kv_write"))?;
    let what =
        format!("rope_kv_write {dtype:?} nh {nh} nkv {nkv} d {d}, rotated {r:?}, norms {norms}");
    let tol = tolerance(dtype);
    compare(&format!("{what}: queries"), &got, &q, tol)?;
    compare(&format!("{what}: key cache"), &k_cache, &k_want, tol)?;
    compare(&format!("{what}: value cache"), &v_cache, &v_want, 0.0)
}

/// [`decode_layer`]'s shapes: (hidden, heads, key/value heads, head size, intermediate size,
/// rotated features (None: no rope), biases on q/k/v and nowhere else (Qwen2) or on every
/// product, the previous layer's output to add (None: the first layer), cache capacity, slot).
type LayerCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    Option<usize>,
    bool,
    bool,
    usize,
    u32,
);

fn decode_layer_checks(device: &Device, dtype: DType) -> Result<Vec<String>> {
    let cases: [LayerCase; 5] = [
        // Qwen2.5-0.5B's layer: a few keys, a cache near the end, and a long one.
        (896, 14, 2, 64, 4864, Some(64), true, true, 16, 5),
        (896, 14, 2, 64, 4864, Some(64), true, true, 300, 299),
        (896, 14, 2, 64, 4864, Some(64), true, false, 5000, 3100),
        // Llama-3.2-1B's heads, a partial rotation, every bias; no rope, heads of 128.
        (2048, 32, 8, 64, 1024, Some(32), false, true, 40, 17),
        (256, 4, 2, 128, 296, None, false, true, 9, 0),
    ];
    cases
        .into_iter()
        .map(|case| decode_layer(device, dtype, case))
        .collect()
}

/// A `[rows, cols]` weight of [`values`] scaled by `1 / sqrt(cols)` (activations stay of order
/// one through the products, as in a trained model).
fn weight(rows: usize, cols: usize, seed: u64, dtype: DType, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = values(rows * cols, seed)
        .into_iter()
        .map(|x| x / (cols as f32).sqrt())
        .collect();
    Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// [`super::decode_layer`] against the launches it replaces, in their order (`add_rms_norm`,
/// `gemv`, `rope_kv_write`, `decode_attention_at`, `gemv`, `add_rms_norm`, `gemv_swiglu`,
/// `gemv`), each checked against candle above: the residual stream, the MLP's output and both
/// caches. The products sum in the same order; the norms' sums and the attention's splits
/// differ, so f32 agrees within f32 rounding and f16/bf16 within two units of the dtype.
fn decode_layer(device: &Device, dtype: DType, case: LayerCase) -> Result<String> {
    let (hidden, nh, nkv, d, inter, r, qkv_bias_only, pending, cap, slot) = case;
    let eps = 1e-6f32;
    let rows = (nh + 2 * nkv) * d;
    let x = tensor(&[1, 1, hidden], 40, dtype, device)?;
    let prev = tensor(&[1, 1, hidden], 41, dtype, device)?;
    let n1 = tensor(&[hidden], 42, dtype, device)?;
    let n2 = tensor(&[hidden], 43, dtype, device)?;
    let w_qkv = weight(rows, hidden, 44, dtype, device)?;
    let w_o = weight(hidden, nh * d, 45, dtype, device)?;
    let w_gu = weight(2 * inter, hidden, 46, dtype, device)?;
    let w_down = weight(hidden, inter, 47, dtype, device)?;
    let b_qkv = tensor(&[rows], 48, dtype, device)?;
    let b_o = tensor(&[hidden], 49, dtype, device)?;
    let b_gu = tensor(&[2 * inter], 50, dtype, device)?;
    let b_down = tensor(&[hidden], 51, dtype, device)?;
    let every = !qkv_bias_only;
    let half = r.unwrap_or(d) / 2;
    let cos = tensor(&[1, 1, half], 52, dtype, device)?;
    let sin = tensor(&[1, 1, half], 53, dtype, device)?;
    let rope = r.map(|_| (&cos, &sin));
    let scale = (d as f64).powf(-0.5);
    let slots = Tensor::new(&[slot], device)?;
    // Two copies of one cache: the layer's, and the chain's.
    let cache = |seed| -> Result<(Tensor, Tensor)> {
        let k = tensor(&[1, nkv, cap, d], seed, dtype, device)?;
        let v = tensor(&[1, nkv, cap, d], seed + 1, dtype, device)?;
        Ok((k.copy()?, v.copy()?))
    };
    let ((k_got, v_got), (k_want, v_want)) = (cache(54)?, cache(54)?);

    let (s1, h1) = match pending {
        true => super::add_rms_norm(&x, &prev, &n1, eps)?.ok_or_else(|| missing("add_rms_norm"))?,
        false => (x.clone(), candle_nn::ops::rms_norm(&x, &n1, eps)?),
    };
    let qkv = super::gemv(&h1, &w_qkv, Some(&b_qkv))?.ok_or_else(|| missing("gemv"))?;
    let token = super::FusedQkv {
        qkv: &qkv,
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: d,
        rope,
        norms: None,
    };
    let q = super::rope_kv_write(&token, &k_want, &v_want, &slots)?
        .ok_or_else(|| missing("rope_kv_write"))?;
    let attn = super::decode_attention_at(&q, &k_want, &v_want, &slots, scale)?
        .ok_or_else(|| missing("decode_attention_at"))?
        .reshape((1, 1, nh * d))?;
    let b = |bias: &Tensor| every.then_some(bias.clone());
    let o = super::gemv(&attn, &w_o, b(&b_o).as_ref())?.ok_or_else(|| missing("gemv"))?;
    let (s2, h2) =
        super::add_rms_norm(&s1, &o, &n2, eps)?.ok_or_else(|| missing("add_rms_norm"))?;
    let act =
        super::gemv_swiglu(&h2, &w_gu, b(&b_gu).as_ref())?.ok_or_else(|| missing("gemv_swiglu"))?;
    let mlp = super::gemv(&act, &w_down, b(&b_down).as_ref())?.ok_or_else(|| missing("gemv"))?;

    let (b_o, b_gu, b_down) = (b(&b_o), b(&b_gu), b(&b_down));
    let weights = super::LayerWeights {
        attn_norm: (&n1, eps),
        qkv: (&w_qkv, Some(&b_qkv)),
        heads: (nh, nkv, d),
        scale,
        o_proj: (&w_o, b_o.as_ref()),
        mlp_norm: (&n2, eps),
        gate_up: (&w_gu, b_gu.as_ref()),
        down: (&w_down, b_down.as_ref()),
    };
    let barrier = super::layer_barriers(&x, 1)?;
    let step = super::LayerStep {
        x: &x,
        pending: pending.then_some(&prev),
        rope,
        slots: &slots,
        barrier: &barrier,
    };
    let (sum, out) = super::decode_layer(&weights, &step, &k_got, &v_got)?
        .ok_or_else(|| missing("decode_layer"))?;
    let what = format!(
        "decode_layer {dtype:?} hidden {hidden} nh {nh} nkv {nkv} d {d} inter {inter} rotated \
         {r:?} biases {} pending {pending} cap {cap} slot {slot}",
        if every { "all" } else { "qkv" }
    );
    let tol = match dtype {
        DType::F32 => 1e-5,
        _ => 2.0 * tolerance(dtype),
    };
    compare(&format!("{what}: key cache"), &k_got, &k_want, tol)?;
    compare(&format!("{what}: value cache"), &v_got, &v_want, tol)?;
    compare(&format!("{what}: residual"), &sum, &s2, tol)?;
    compare(&format!("{what}: mlp"), &out, &mlp, tol)
}

fn swiglu(device: &Device, dtype: DType, rows: usize, inter: usize) -> Result<String> {
    let gate_up = tensor(&[1, rows, 2 * inter], 4, dtype, device)?;
    let got = super::swiglu(&gate_up, inter)?.ok_or_else(|| missing("swiglu"))?;
    let gate = candle_nn::ops::silu(&gate_up.narrow(D::Minus1, 0, inter)?)?;
    let want = (gate * gate_up.narrow(D::Minus1, inter, inter)?)?;
    compare(
        &format!("swiglu {dtype:?} [{rows}, {inter}]"),
        &got,
        &want,
        tolerance(dtype),
    )
}

fn decode_attention(
    device: &Device,
    dtype: DType,
    (nh, nkv, d, s): (usize, usize, usize, usize),
) -> Result<String> {
    let b = 2;
    let scale = (d as f64).powf(-0.5);
    let q = tensor(&[b, nh, 1, d], 5, dtype, device)?;
    // Views of a larger cache, as the KV cache hands them out: [b, nkv, s, d] of capacity s + 7.
    let k_cache = tensor(&[b, nkv, s + 7, d], 6, dtype, device)?;
    let v_cache = tensor(&[b, nkv, s + 7, d], 7, dtype, device)?;
    let (k, v) = (k_cache.narrow(2, 0, s)?, v_cache.narrow(2, 0, s)?);
    let got =
        super::decode_attention(&q, &k, &v, scale)?.ok_or_else(|| missing("decode_attention"))?;
    let scores = Scores {
        scale,
        softcap: None,
        sinks: None,
    };
    let what = format!("decode_attention {dtype:?} nh {nh} nkv {nkv} d {d} s {s}");
    let want = attend(&q, &k, &v, None, scores)?;
    if dtype == DType::F32 {
        return compare(&what, &got, &want, tolerance(dtype));
    }
    // candle rounds the scores to the dtype; the kernel keeps f32: within a few units of the
    // dtype of candle's result, and within its rounding of the f32 reference.
    compare(
        &format!("{what} vs candle"),
        &got,
        &want,
        4.0 * tolerance(dtype),
    )?;
    let f32 = |t: &Tensor| t.to_dtype(DType::F32);
    let exact = attend(&f32(&q)?, &f32(&k)?, &f32(&v)?, None, scores)?;
    compare(&format!("{what} vs f32"), &got, &exact, tolerance(dtype))
}

/// [`super::kv_write`] then [`super::decode_attention_at`] at a different slot per row (what a
/// captured decode step runs) against the buffer written on the host and
/// [`super::decode_attention`] over each row's own keys: equal to the bit (the same kernel body
/// over the same keys).
/// The `_at` kernel over a buffer of `cap` slots against the plain one over each row's keys:
/// equal to the bit where both take the keys in one pass, within the dtype's tolerance where
/// either splits them across blocks (at other boundaries).
fn decode_at_slots(device: &Device, dtype: DType, cap: usize, slots: [u32; 2]) -> Result<String> {
    let (nh, nkv, d) = (14, 2, 64);
    let b = slots.len();
    let scale = (d as f64).powf(-0.5);
    let q = tensor(&[b, nh, 1, d], 8, dtype, device)?;
    let k_new = tensor(&[b, nkv, 1, d], 9, dtype, device)?;
    let v_new = tensor(&[b, nkv, 1, d], 10, dtype, device)?;
    let k_buf = tensor(&[b, nkv, cap, d], 11, dtype, device)?;
    let v_buf = tensor(&[b, nkv, cap, d], 12, dtype, device)?;
    // The expected buffers: each row's token placed at its slot on the host side of candle.
    let (k_want, v_want) = (
        placed(&k_buf, &k_new, &slots)?,
        placed(&v_buf, &v_new, &slots)?,
    );
    let slots_dev = Tensor::new(&slots[..], device)?;
    super::kv_write(&k_buf, &k_new, &slots_dev)?;
    super::kv_write(&v_buf, &v_new, &slots_dev)?;
    let what = format!("kv_write + decode_attention_at {dtype:?} slots {slots:?} of {cap}");
    compare(&format!("{what}: keys"), &k_buf, &k_want, 0.0)?;
    compare(&format!("{what}: values"), &v_buf, &v_want, 0.0)?;
    let got = super::decode_attention_at(&q, &k_buf, &v_buf, &slots_dev, scale)?
        .ok_or_else(|| missing("decode_attention_at"))?;
    let one_pass = cap <= 512;
    let tol = if one_pass { 0.0 } else { tolerance(dtype) };
    for (r, &slot) in slots.iter().enumerate() {
        let s = slot as usize + 1;
        let row = |t: &Tensor| t.narrow(0, r, 1);
        let want = super::decode_attention(
            &row(&q)?,
            &row(&k_buf)?.narrow(2, 0, s)?,
            &row(&v_buf)?.narrow(2, 0, s)?,
            scale,
        )?
        .ok_or_else(|| missing("decode_attention"))?;
        compare(&format!("{what}: row {r}"), &row(&got)?, &want, tol)?;
    }
    Ok(match one_pass {
        true => format!("ok {what}: equal to the bit"),
        false => format!("ok {what}: every row within {tol:e}"),
    })
}

/// A NaN in one cached key of a long (split) cache: the query heads of that key's group give
/// NaN, as candle's ops and a single pass do, and the other group's heads stay finite.
fn nan_key(device: &Device, dtype: DType) -> Result<String> {
    let (nh, nkv, d, s) = (4, 2, 64, 9000);
    let q = tensor(&[1, nh, 1, d], 13, dtype, device)?;
    let k = tensor(&[1, nkv, s, d], 14, dtype, device)?;
    let v = tensor(&[1, nkv, s, d], 15, dtype, device)?;
    // Key 5000 of kv head 1 (query heads 2 and 3) made NaN.
    let mut flags = vec![0f32; nkv * s * d];
    flags[(s + 5000) * d] = f32::NAN;
    let k = k.broadcast_add(&Tensor::from_vec(flags, (1, nkv, s, d), device)?.to_dtype(dtype)?)?;
    let got = super::decode_attention(&q, &k, &v, 0.125)?
        .ok_or_else(|| missing("decode_attention"))?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let what = format!("decode_attention {dtype:?} with a NaN key among {s}");
    for (head, out) in got.chunks_exact(d).enumerate() {
        let nan = out.iter().all(|x| x.is_nan());
        let finite = out.iter().all(|x| x.is_finite());
        if (head >= 2 && !nan) || (head < 2 && !finite) {
            return Err(mismatch(format!(
                "{what}: head {head} gives {:?}..., expected {}",
                &out[..4],
                if head >= 2 { "NaN" } else { "finite values" }
            )));
        }
    }
    Ok(format!("ok {what}: NaN in its group's heads only"))
}

/// [`super::paged_decode_attention`] over the sequences of a packed step (scattered slots, one
/// of them a single token; with `long` a fourth of 600, several tiles of the grouped kernel)
/// against the store written on the host and [`super::decode_attention`] over each sequence's
/// gathered keys, within the dtype's tolerance (the grouped kernel adds in tiles and splits);
/// the same step through the engine's step graphs' fixed 8192-slot index (split for that
/// capacity) too. `nh, nkv, d`: 14, 2, 64 groups seven query heads; 16, 1, 128 two blocks of
/// eight; 8, 2, 96 (bf16 rows of 12 chunks) takes the kernel with a block per query head.
fn paged(
    device: &Device,
    dtype: DType,
    (nh, nkv, d): (usize, usize, usize),
    long: bool,
) -> Result<String> {
    let total = 9;
    let slot_count = if long { 800 } else { 160 };
    let scale = (d as f64).powf(-0.5);
    // Each sequence: its token's position in the step's input, and its slots (the new one last).
    let mut seq_slots: Vec<Vec<u32>> = vec![
        (0..40u32).map(|j| (j * 3 + 5) % 150).chain([151]).collect(),
        vec![152],
        (0..90u32).map(|j| 150 - j).chain([159]).collect(),
    ];
    let mut tokens = vec![2usize, 5, 6];
    if long {
        seq_slots.push(
            (0..599u32)
                .map(|j| 160 + (j * 7) % 599)
                .chain([799])
                .collect(),
        );
        tokens.push(8);
    }
    let q = tensor(&[1, nh, total, d], 13, dtype, device)?;
    let k_new = tensor(&[1, nkv, total, d], 14, dtype, device)?;
    let v_new = tensor(&[1, nkv, total, d], 15, dtype, device)?;
    let store = |seed| tensor(&[nkv, slot_count, d], seed, dtype, device);
    let (store_k, store_v) = (store(16)?, store(17)?);
    // The expected stores: each token's keys placed at its sequence's last slot on the host.
    let place = |store: &Tensor, new: &Tensor| -> Result<Tensor> {
        let mut host: Vec<f32> = store.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let new: Vec<f32> = new.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for (slots, &t) in seq_slots.iter().zip(&tokens) {
            let slot = *slots.last().expect("a slot") as usize;
            for g in 0..nkv {
                for c in 0..d {
                    host[(g * slot_count + slot) * d + c] = new[(g * total + t) * d + c];
                }
            }
        }
        Ok(Tensor::from_vec(host, (nkv, slot_count, d), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?)
    };
    let (k_want, v_want) = (place(&store_k, &k_new)?, place(&store_v, &v_new)?);
    let slot_refs: Vec<&[u32]> = seq_slots.iter().map(|s| s.as_slice()).collect();
    let index = super::PagedIndex::new(&tokens, &slot_refs, device)?;
    let got =
        super::paged_decode_attention(&store_k, &store_v, [&q, &k_new, &v_new], &index, scale)?
            .ok_or_else(|| missing("paged_decode_attention"))?;
    let what = format!(
        "paged_decode_attention {dtype:?} {nh}/{nkv} heads of {d}, {} sequences of {total} tokens",
        tokens.len()
    );
    compare(&format!("{what}: keys"), &store_k, &k_want, 0.0)?;
    compare(&format!("{what}: values"), &store_v, &v_want, 0.0)?;
    // The same step through an index of the engine's step graphs: a buffer for sequences of up
    // to 8192 slots, refilled in place (the kernels sized for 8192 keys).
    let fixed =
        super::PagedIndex::with_capacity(tokens.len(), super::PAGED_DECODE_MAX_KEYS, device)?;
    fixed.refill(&tokens, &slot_refs)?;
    let (fixed_k, fixed_v) = (store(16)?, store(17)?);
    let got_fixed =
        super::paged_decode_attention(&fixed_k, &fixed_v, [&q, &k_new, &v_new], &fixed, scale)?
            .ok_or_else(|| missing("paged_decode_attention (a fixed index)"))?;
    compare(
        &format!("{what}: keys, fixed index"),
        &fixed_k,
        &k_want,
        0.0,
    )?;
    compare(
        &format!("{what}: values, fixed index"),
        &fixed_v,
        &v_want,
        0.0,
    )?;
    let mut worst = 0f32;
    for (i, (slots, &t)) in seq_slots.iter().zip(&tokens).enumerate() {
        let idx = Tensor::new(slots.as_slice(), device)?;
        let (k, v) = (
            k_want.index_select(&idx, 1)?.unsqueeze(0)?,
            v_want.index_select(&idx, 1)?.unsqueeze(0)?,
        );
        let qi = q.narrow(2, t, 1)?.contiguous()?;
        let want = super::decode_attention(&qi, &k, &v, scale)?
            .ok_or_else(|| missing("decode_attention"))?;
        for (how, out) in [("exact index", &got), ("fixed index", &got_fixed)] {
            let err = checked_error(
                &format!("{what}: sequence {i}, {how}"),
                &out.narrow(2, i, 1)?,
                &want,
                tolerance(dtype),
            )?;
            worst = worst.max(err);
        }
    }
    Ok(format!(
        "ok {what}: within {:e} of decode_attention over the gathered keys (worst {worst:e}), \
         with an exact and a fixed 8192-slot index",
        tolerance(dtype)
    ))
}

/// [`super::paged_flash_attention`] over a packed step of three sequences (a prompt, a decode
/// token, a chunk after 100 cached tokens; scattered slots) against [`super::flash_attention`]
/// over each sequence's keys gathered from the store after the write: equal to the bit (the same
/// kernel body over the same keys); and the store holding each new token's keys and values at
/// its slot.
fn paged_flash(
    device: &Device,
    dtype: DType,
    window: Option<usize>,
    with_sinks: bool,
) -> Result<String> {
    let (nh, nkv, d) = (6, 2, 64);
    let seqs = [(0usize, 70usize), (40, 1), (100, 130)]; // (past, new)
    let total: usize = seqs.iter().map(|s| s.1).sum();
    let used: usize = seqs.iter().map(|(p, n)| p + n).sum();
    let slot_count = used + 9;
    // Each sequence's slots, in an order unlike the store's.
    let mut order: Vec<u32> = (0..slot_count as u32).collect();
    order.sort_by_key(|&x| (x as u64 * 7919) % slot_count as u64);
    let mut next = 0;
    let slots: Vec<Vec<u32>> = seqs
        .iter()
        .map(|(p, n)| {
            next += p + n;
            order[next - p - n..next].to_vec()
        })
        .collect();
    let store_k = tensor(&[nkv, slot_count, d], 21, dtype, device)?;
    let store_v = tensor(&[nkv, slot_count, d], 22, dtype, device)?;
    let q = tensor(&[1, nh, total, d], 23, dtype, device)?;
    let k_new = tensor(&[1, nkv, total, d], 24, dtype, device)?;
    let v_new = tensor(&[1, nkv, total, d], 25, dtype, device)?;
    let sinks = match with_sinks {
        true => Some(tensor(&[nh], 26, DType::F32, device)?),
        false => None,
    };
    let scores = Scores {
        scale: (d as f64).powf(-0.5),
        softcap: None,
        sinks: sinks.as_ref(),
    };
    let news: Vec<usize> = seqs.iter().map(|s| s.1).collect();
    let refs: Vec<&[u32]> = slots.iter().map(Vec::as_slice).collect();
    let step = super::PagedStep::new(&news, &refs, device)?;
    let got = super::paged_flash_attention(
        &store_k,
        &store_v,
        [&q, &k_new, &v_new],
        &step,
        window,
        scores,
    )?
    .ok_or_else(|| missing("paged_flash_attention"))?;
    let what = format!(
        "paged_flash_attention {dtype:?} sequences (past, new) {seqs:?}, window {window:?}, \
         sinks {with_sinks}"
    );
    let mut start = 0;
    for (i, &(past, new)) in seqs.iter().enumerate() {
        let idx = Tensor::new(slots[i].as_slice(), device)?;
        // [nkv, past + new, d] -> [1, nkv, past + new, d]
        let ks = store_k.index_select(&idx, 1)?.unsqueeze(0)?;
        let vs = store_v.index_select(&idx, 1)?.unsqueeze(0)?;
        let part = |t: &Tensor| t.narrow(2, start, new);
        compare(
            &format!("{what}: sequence {i}'s keys"),
            &ks.narrow(2, past, new)?,
            &part(&k_new)?,
            0.0,
        )?;
        compare(
            &format!("{what}: sequence {i}'s values"),
            &vs.narrow(2, past, new)?,
            &part(&v_new)?,
            0.0,
        )?;
        let want = super::flash_attention(&part(&q)?.contiguous()?, &ks, &vs, window, scores)?
            .ok_or_else(|| missing("flash_attention"))?;
        compare(&format!("{what}: sequence {i}"), &part(&got)?, &want, 0.0)?;
        start += new;
    }
    Ok(format!("ok {what}: equal to the bit"))
}

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::*;

    /// The same checks from `cargo test --features cuda -- --ignored` on a machine with a GPU.
    #[test]
    #[ignore = "needs a GPU"]
    fn fused_kernels_match_candle_ops() -> Result<()> {
        super::super::set_enabled(true);
        for line in run(&Device::new_cuda(0)?)? {
            assert!(line.starts_with("ok "), "{line}");
        }
        Ok(())
    }
}
