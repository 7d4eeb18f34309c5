//! `lmgen::load` on good and bad checkpoint directories: every bad file is an `Error`, never a
//! panic, and the message names the file and the problem.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use half::{bf16, f16};
use lmgen::load::{resolve_model_in, Checkpoint};
use lmgen::Error;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Serialises `(name, dtype, shape, bytes)` tensors into a safetensors buffer.
fn safetensors_bytes(tensors: &[(&str, Dtype, &[usize], Vec<u8>)]) -> Result<Vec<u8>> {
    // Like every file transformers writes, with a `__metadata__` entry.
    let metadata = [("format".to_string(), "pt".to_string())].into();
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            Ok((*name, TensorView::new(*dtype, shape.to_vec(), data)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(safetensors::serialize(views, Some(metadata))?)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A checkpoint with config.json and one `model.safetensors` holding f32 `a` [2, 3] and `b` [4].
fn single_file_checkpoint(dir: &Path) -> Result<Vec<u8>> {
    fs::write(
        dir.join("config.json"),
        r#"{"model_type": "llama", "torch_dtype": "float32"}"#,
    )?;
    let bytes = safetensors_bytes(&[
        (
            "a",
            Dtype::F32,
            &[2, 3],
            f32_bytes(&[0., 1., 2., 3., 4., 5.]),
        ),
        ("b", Dtype::F32, &[4], f32_bytes(&[1., 2., 3., 4.])),
    ])?;
    fs::write(dir.join("model.safetensors"), &bytes)?;
    Ok(bytes)
}

/// The message of a `Weights` error (any other variant fails the test).
fn weights_error(result: lmgen::Result<Checkpoint>) -> String {
    match result {
        Err(err @ Error::Weights { .. }) => err.to_string(),
        Err(other) => panic!("expected Error::Weights, got {other:?}"),
        Ok(_) => panic!("expected Error::Weights, got a checkpoint"),
    }
}

/// Overwrites model.safetensors with a hand-made header and `data_len` zero bytes of data.
fn write_raw(dir: &Path, header: &str, data_len: usize) -> Result<()> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    fs::write(dir.join("model.safetensors"), bytes)?;
    Ok(())
}

#[test]
fn single_file_loads_and_checks_shapes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    single_file_checkpoint(tmp.path())?;
    let ckpt = Checkpoint::open(tmp.path())?;
    assert_eq!(ckpt.config["model_type"], "llama");
    assert_eq!(ckpt.config_dtype(), Some(DType::F32));
    let w = &ckpt.weights;
    let a = w.get("a", &[2, 3], DType::F32, &Device::Cpu)?;
    assert_eq!(
        a.to_vec2::<f32>()?,
        vec![vec![0., 1., 2.], vec![3., 4., 5.]]
    );
    assert!(w.contains("b") && !w.contains("c"));
    let mut names: Vec<&str> = w.names().collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(w.shape("a"), Some(&[2, 3][..]));
    assert_eq!(w.disk_dtype("b"), Some(DType::F32));
    assert_eq!(
        w.get_unchecked_shape("b", DType::F32, &Device::Cpu)?.dims(),
        &[4]
    );

    let err = w
        .get("a", &[3, 2], DType::F32, &Device::Cpu)
        .expect_err("shape");
    assert!(
        err.to_string()
            .contains("tensor `a` has shape [2, 3] but config.json implies [3, 2]"),
        "{err}"
    );
    let err = w
        .get("model.norm.weight", &[4], DType::F32, &Device::Cpu)
        .expect_err("missing");
    assert!(
        err.to_string()
            .contains("tensor `model.norm.weight` not found in model.safetensors"),
        "{err}"
    );
    Ok(())
}

#[test]
fn converts_half_precision_to_f32_and_rejects_integers() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    fs::write(tmp.path().join("config.json"), "{}")?;
    let values = [0.5f32, -1.25, 3.0, 1024.0];
    let halfs: Vec<u8> = values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    let brains: Vec<u8> = values
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect();
    let bytes = safetensors_bytes(&[
        ("h", Dtype::F16, &[4], halfs),
        ("ids", Dtype::I64, &[2], vec![0; 16]),
        // One byte shifts `h` and `b` off their natural alignment in the file.
        ("odd", Dtype::U8, &[1], vec![7]),
        ("b", Dtype::BF16, &[4], brains),
    ])?;
    fs::write(tmp.path().join("model.safetensors"), bytes)?;
    let w = Checkpoint::open(tmp.path())?.weights;
    for name in ["h", "b"] {
        let t = w.get(name, &[4], DType::F32, &Device::Cpu)?;
        assert_eq!(t.to_vec1::<f32>()?, values, "{name}");
    }
    assert_eq!(w.disk_dtype("h"), Some(DType::F16));
    assert_eq!(w.disk_dtype("b"), Some(DType::BF16));
    assert_eq!(w.disk_dtype("ids"), None);
    // f32 -> bf16 on request too.
    let b = w.get("b", &[4], DType::BF16, &Device::Cpu)?;
    assert_eq!(b.dtype(), DType::BF16);
    let err = w
        .get("ids", &[2], DType::F32, &Device::Cpu)
        .expect_err("i64");
    assert!(
        err.to_string().contains("tensor `ids` is stored as I64"),
        "{err}"
    );
    Ok(())
}

#[test]
fn sharded_checkpoint_via_index() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    fs::write(dir.join("config.json"), "{}")?;
    let shard1 = safetensors_bytes(&[("a", Dtype::F32, &[2], f32_bytes(&[1., 2.]))])?;
    let shard2 = safetensors_bytes(&[("b", Dtype::F32, &[1], f32_bytes(&[3.]))])?;
    fs::write(dir.join("model-00001-of-00002.safetensors"), &shard1)?;
    fs::write(dir.join("model-00002-of-00002.safetensors"), shard2)?;
    let index = r#"{"metadata": {"total_size": 12}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
    fs::write(dir.join("model.safetensors.index.json"), index)?;
    let w = Checkpoint::open(dir)?.weights;
    assert_eq!(
        w.get("a", &[2], DType::F32, &Device::Cpu)?
            .to_vec1::<f32>()?,
        [1., 2.]
    );
    assert_eq!(
        w.get("b", &[1], DType::F32, &Device::Cpu)?
            .to_vec1::<f32>()?,
        [3.]
    );
    let err = w
        .get("c", &[1], DType::F32, &Device::Cpu)
        .expect_err("missing");
    let msg = err.to_string();
    assert!(msg.contains("model.safetensors.index.json"), "{msg}");
    assert!(
        msg.contains("model-00001-of-00002.safetensors, model-00002-of-00002"),
        "{msg}"
    );

    // The same tensor in two shards.
    let twice = safetensors_bytes(&[
        ("a2", Dtype::F32, &[1], f32_bytes(&[0.])),
        ("b", Dtype::F32, &[1], f32_bytes(&[3.])),
    ])?;
    fs::write(dir.join("model-00001-of-00002.safetensors"), twice)?;
    let msg = weights_error(Checkpoint::open(dir));
    assert!(msg.contains("tensor `b` is also in"), "{msg}");
    fs::write(dir.join("model-00001-of-00002.safetensors"), shard1)?;

    // The index maps a tensor to the wrong shard.
    let wrong = index.replace(r#""b": "model-00002"#, r#""b": "model-00001"#);
    fs::write(dir.join("model.safetensors.index.json"), wrong)?;
    let msg = weights_error(Checkpoint::open(dir));
    assert!(
        msg.contains("puts tensor `b` in `model-00001-of-00002.safetensors`"),
        "{msg}"
    );

    // A shard named in the index is missing.
    let missing = index.replace("00002-of-00002", "00003-of-00003");
    fs::write(dir.join("model.safetensors.index.json"), missing)?;
    let msg = weights_error(Checkpoint::open(dir));
    assert!(
        msg.contains("names shard `model-00003-of-00003.safetensors`"),
        "{msg}"
    );
    assert!(msg.contains("does not exist"), "{msg}");

    // Path traversal in the index.
    let escape = index.replace("model-00002-of-00002", "../model-00002-of-00002");
    fs::write(dir.join("model.safetensors.index.json"), escape)?;
    let msg = weights_error(Checkpoint::open(dir));
    assert!(
        msg.contains("not a file name inside the checkpoint directory"),
        "{msg}"
    );

    // The index is not JSON.
    fs::write(dir.join("model.safetensors.index.json"), "{weight_map")?;
    let err = Checkpoint::open(dir).expect_err("bad index");
    assert!(matches!(err, Error::Json { .. }), "{err}");
    Ok(())
}

#[test]
fn config_json_missing_or_invalid() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    single_file_checkpoint(tmp.path())?;
    let config = tmp.path().join("config.json");
    fs::remove_file(&config)?;
    let err = Checkpoint::open(tmp.path()).expect_err("missing config");
    assert!(
        matches!(&err, Error::Io { path, .. } if *path == config),
        "{err}"
    );
    fs::write(&config, "not json")?;
    let err = Checkpoint::open(tmp.path()).expect_err("bad config");
    assert!(
        matches!(&err, Error::Json { path, .. } if *path == config),
        "{err}"
    );
    fs::write(&config, "[1, 2]")?;
    let err = Checkpoint::open(tmp.path()).expect_err("array config");
    assert!(err.to_string().contains("JSON object"), "{err}");
    Ok(())
}

#[test]
fn missing_weights_file() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    fs::write(tmp.path().join("config.json"), "{}")?;
    fs::write(tmp.path().join("pytorch_model.bin"), "pickle")?;
    let msg = weights_error(Checkpoint::open(tmp.path()));
    assert!(
        msg.contains("neither model.safetensors nor model.safetensors.index.json"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn truncated_and_corrupt_files() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let bytes = single_file_checkpoint(dir)?;
    let file = dir.join("model.safetensors");

    // Cut off the end of the data, then most of the header, then everything but 3 bytes.
    fs::write(&file, &bytes[..bytes.len() - 5])?;
    let msg = weights_error(Checkpoint::open(dir));
    assert!(
        msg.contains("out of range") && msg.contains("truncated?"),
        "{msg}"
    );
    fs::write(&file, &bytes[..20])?;
    let msg = weights_error(Checkpoint::open(dir));
    assert!(
        msg.contains("bytes but the file has 20: truncated?"),
        "{msg}"
    );
    for len in [0, 3] {
        fs::write(&file, &bytes[..len])?;
        let msg = weights_error(Checkpoint::open(dir));
        assert!(
            msg.contains(&format!("file has {len} bytes, too few")),
            "{msg}"
        );
    }

    // Garbage header length, invalid JSON, trailing bytes.
    let mut garbage = bytes.clone();
    garbage[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    fs::write(&file, garbage)?;
    let msg = weights_error(Checkpoint::open(dir));
    assert!(
        msg.contains("over safetensors' limit of 100000000"),
        "{msg}"
    );
    write_raw(dir, "{\"a\": [1, 2", 0)?;
    assert!(weights_error(Checkpoint::open(dir)).contains("header is not valid JSON"));
    write_raw(dir, "[1, 2]", 0)?;
    assert!(weights_error(Checkpoint::open(dir)).contains("header is not valid JSON"));
    write_raw(
        dir,
        r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#,
        8,
    )?;
    assert!(weights_error(Checkpoint::open(dir)).contains("4 bytes after the last tensor"));
    write_raw(
        dir,
        r#"{"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}"#,
        4,
    )?;
    assert!(weights_error(Checkpoint::open(dir)).contains("tensor `a`: invalid header entry"));
    Ok(())
}

#[test]
fn hand_crafted_offsets() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    fs::write(dir.join("config.json"), "{}")?;
    let cases = [
        // Offsets past the end of the file.
        (
            r#"{"x": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}"#,
            16,
            "tensor `x`: data offsets 0..4096 out of range",
        ),
        // Size disagrees with dtype x shape.
        (
            r#"{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#,
            4,
            "F32 [2] needs 8 bytes but data offsets 0..4 disagree",
        ),
        // Reversed offsets.
        (
            r#"{"x": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}}"#,
            4,
            "data offsets 4..0 disagree",
        ),
        // Two tensors aliasing the same bytes.
        (
            r#"{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "y": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#,
            4,
            "overlap or leave a gap",
        ),
        // A gap before the first tensor.
        (
            r#"{"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
            8,
            "tensor `x`: data offsets 4..8 do not start",
        ),
        // A shape whose byte size overflows usize.
        (
            r#"{"x": {"dtype": "F32", "shape": [18446744073709551615, 2], "data_offsets": [0, 4]}}"#,
            4,
            "is too large",
        ),
        // A consistent but huge tensor (2^60 bytes) in a small file.
        (
            r#"{"x": {"dtype": "U8", "shape": [1152921504606846976], "data_offsets": [0, 1152921504606846976]}}"#,
            4,
            "out of range",
        ),
    ];
    for (header, data_len, expected) in cases {
        write_raw(dir, header, data_len)?;
        let msg = weights_error(Checkpoint::open(dir));
        assert!(msg.contains(expected), "{header}: {msg}");
        assert!(msg.contains("model.safetensors"), "{msg}");
    }
    Ok(())
}

#[test]
fn config_dtype_from_either_key() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    single_file_checkpoint(tmp.path())?;
    let cases = [
        (r#"{"torch_dtype": "bfloat16"}"#, Some(DType::BF16)),
        (
            r#"{"dtype": "float16", "torch_dtype": "float32"}"#,
            Some(DType::F16),
        ),
        (r#"{"dtype": "float32"}"#, Some(DType::F32)),
        (r#"{"dtype": "int8"}"#, None),
        ("{}", None),
    ];
    for (config, expected) in cases {
        fs::write(tmp.path().join("config.json"), config)?;
        assert_eq!(
            Checkpoint::open(tmp.path())?.config_dtype(),
            expected,
            "{config}"
        );
    }
    Ok(())
}

/// A fake `snapshots/<hash>` with a config.json; returns its directory.
fn snapshot(repo: &Path, hash: &str) -> Result<PathBuf> {
    let dir = repo.join("snapshots").join(hash);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("config.json"), "{}")?;
    Ok(dir)
}

#[test]
fn resolves_from_a_fake_hub_cache() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cache = tmp.path().join("hub");
    let repo = cache.join("models--org--tiny");
    let main = snapshot(&repo, "aaaa")?;
    let other = snapshot(&repo, "bbbb")?;
    fs::create_dir_all(repo.join("refs"))?;
    fs::write(repo.join("refs/main"), "aaaa\n")?;
    let caches = [tmp.path().join("empty"), cache];
    assert_eq!(resolve_model_in("org/tiny", &caches)?, main);
    assert_eq!(resolve_model_in("org/tiny@bbbb", &caches)?, other);
    // Without refs/main: the newest snapshot that has a config.json.
    fs::remove_file(repo.join("refs/main"))?;
    fs::remove_file(main.join("config.json"))?;
    assert_eq!(resolve_model_in("org/tiny", &caches)?, other);
    // A directory is used as is.
    let dir = other.to_str().context("utf-8")?;
    assert_eq!(resolve_model_in(dir, &[])?, other);
    Ok(())
}

#[test]
fn model_not_found_lists_every_place() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("models--org--tiny");
    fs::create_dir_all(repo.join("refs"))?;
    fs::write(repo.join("refs/v2"), "cccc")?;
    let caches = [tmp.path().to_path_buf()];
    let err = resolve_model_in("org/tiny@v2", &caches).expect_err("no snapshot");
    let msg = err.to_string();
    assert!(matches!(err, Error::ModelNotFound { .. }), "{msg}");
    assert!(msg.contains("`org/tiny@v2` (no such directory)"), "{msg}");
    assert!(
        msg.contains("models--org--tiny/snapshots/cccc` (no config.json)"),
        "{msg}"
    );
    let err = resolve_model_in("org/missing", &caches).expect_err("missing");
    assert!(
        err.to_string()
            .contains("models--org--missing/refs/main` (missing)"),
        "{err}"
    );
    let err = resolve_model_in("org/tiny@v3", &caches).expect_err("no such revision");
    assert!(
        err.to_string()
            .contains("models--org--tiny/refs/v3` (missing)"),
        "{err}"
    );
    for id in [
        "gpt2",
        "a/b/c",
        "../x",
        "org/",
        "o/n@",
        "o/n@../x",
        "o/n@a/../b",
    ] {
        let err = resolve_model_in(id, &caches).expect_err("not an id");
        assert!(err.to_string().contains("not a model id"), "{id}: {err}");
    }
    let with_pr = "org/tiny@refs/pr/1";
    let err = resolve_model_in(with_pr, &caches).expect_err("no such ref");
    assert!(
        err.to_string()
            .contains("models--org--tiny/refs/refs/pr/1` (missing)"),
        "{err}"
    );
    let err = resolve_model_in("no-such-dir", &caches).expect_err("not an id");
    assert!(
        err.to_string()
            .contains("`no-such-dir` (no such directory)"),
        "{err}"
    );
    assert!(err.to_string().contains("not a model id"), "{err}");
    // An existing directory without config.json names the file.
    let err = resolve_model_in(tmp.path().to_str().context("utf-8")?, &[]).expect_err("no config");
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("config.json")),
        "{err}"
    );
    Ok(())
}
