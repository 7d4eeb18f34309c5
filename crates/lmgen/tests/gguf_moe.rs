//! Mixture-of-experts GGUF files: llama.cpp stacks each projection of every expert of a layer into
//! one `[n_expert, out, in]` tensor (`blk.N.ffn_{gate,up,down}_exps`) beside the router
//! (`blk.N.ffn_gate_inp`). Files are written here from the golden-arch checkpoints as
//! `convert_hf_to_gguf.py` writes them (`Qwen3MoeModel` as `qwen3moe`, `MixtralModel` as `llama`
//! with `llama.expert_count`, q and k permuted), then loaded and compared with the safetensors
//! model: logits within 1e-5, the same greedy tokens. gpt-oss files are refused by name.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value as Meta};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, LoadOptions};
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::Value;

fn golden_arch_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden-arch/models")
        .join(name)
}

/// `LlamaModel.permute`: per head, HF's two halves of rows become interleaved pairs.
fn permute(w: &Tensor, n_head: usize) -> Tensor {
    let rows = w.dims()[0];
    let half = rows / n_head / 2;
    // GGUF row (head h, index j, half s) is HF row (head h, half s, index j).
    let idx: Vec<u32> = (0..rows)
        .map(|r| {
            let (h, j, s) = (r / (2 * half), (r / 2) % half, r % 2);
            (h * 2 * half + s * half + j) as u32
        })
        .collect();
    w.index_select(&Tensor::new(idx, &Device::Cpu).unwrap(), 0)
        .unwrap()
}

/// How the converter writes one MoE checkpoint.
struct Layout {
    arch: &'static str,
    /// HF module of the experts and of the router, and the gate/up/down names in an expert.
    experts: &'static str,
    router: &'static str,
    projections: [&'static str; 3],
    /// q and k permuted (Llama).
    permuted: bool,
}

const QWEN3MOE: Layout = Layout {
    arch: "qwen3moe",
    experts: "mlp.experts",
    router: "mlp.gate",
    projections: ["gate_proj", "up_proj", "down_proj"],
    permuted: false,
};

const MIXTRAL: Layout = Layout {
    arch: "llama",
    experts: "block_sparse_moe.experts",
    router: "block_sparse_moe.gate",
    projections: ["w1", "w3", "w2"],
    permuted: true,
};

/// The GGUF file of checkpoint `model`, f32, with `metadata` (keys without the arch prefix).
fn write_gguf(dir: &Path, model: &str, layout: &Layout, metadata: &[(&str, Meta)]) -> PathBuf {
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(golden_arch_model(model).join("config.json")).unwrap(),
    )
    .unwrap();
    let n_head = config["num_attention_heads"].as_u64().unwrap() as usize;
    let n_kv_head = config["num_key_value_heads"].as_u64().unwrap() as usize;
    let layers = config["num_hidden_layers"].as_u64().unwrap() as usize;
    let n_expert = config["num_local_experts"].as_u64().unwrap() as usize;
    let hf = candle_core::safetensors::load(
        golden_arch_model(model).join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    let top = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    for (h, g) in top {
        tensors.insert(g.into(), hf[h].clone());
    }
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        let mut per_layer = vec![
            ("input_layernorm", "attn_norm"),
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("post_attention_layernorm", "ffn_norm"),
            (layout.router, "ffn_gate_inp"),
        ];
        if hf.contains_key(&format!("{p}.self_attn.q_norm.weight")) {
            per_layer.push(("self_attn.q_norm", "attn_q_norm"));
            per_layer.push(("self_attn.k_norm", "attn_k_norm"));
        }
        for (h, g) in per_layer {
            let mut w = hf[&format!("{p}.{h}.weight")].clone();
            if layout.permuted && h == "self_attn.q_proj" {
                w = permute(&w, n_head);
            }
            if layout.permuted && h == "self_attn.k_proj" {
                w = permute(&w, n_kv_head);
            }
            tensors.insert(format!("blk.{i}.{g}.weight"), w);
        }
        for (proj, g) in
            layout
                .projections
                .iter()
                .zip(["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"])
        {
            let experts: Vec<Tensor> = (0..n_expert)
                .map(|e| hf[&format!("{p}.{}.{e}.{proj}.weight", layout.experts)].clone())
                .collect();
            // [n_expert, out, in]
            tensors.insert(
                format!("blk.{i}.{g}.weight"),
                Tensor::stack(&experts, 0).unwrap(),
            );
        }
    }
    let mut meta: Vec<(String, Meta)> = vec![(
        "general.architecture".into(),
        Meta::String(layout.arch.into()),
    )];
    for (k, v) in metadata {
        let key = if k.starts_with("tokenizer.") {
            (*k).to_string()
        } else {
            format!("{}.{k}", layout.arch)
        };
        meta.push((key, v.clone()));
    }
    let q: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), QTensor::quantize(t, GgmlDType::F32).unwrap()))
        .collect();
    let path = dir.join(format!("{model}-f32.gguf"));
    let mut w = File::create(&path).unwrap();
    let meta: Vec<(&str, &Meta)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &meta, &ts).unwrap();
    path
}

fn qwen3moe_gguf(dir: &Path) -> PathBuf {
    write_gguf(
        dir,
        "qwen3_moe",
        &QWEN3MOE,
        &[
            ("block_count", Meta::U32(3)),
            ("context_length", Meta::U32(512)),
            ("embedding_length", Meta::U32(48)),
            ("feed_forward_length", Meta::U32(96)),
            ("attention.head_count", Meta::U32(4)),
            ("attention.head_count_kv", Meta::U32(2)),
            ("attention.key_length", Meta::U32(12)),
            ("attention.value_length", Meta::U32(12)),
            ("rope.freq_base", Meta::F32(10_000.0)),
            ("attention.layer_norm_rms_epsilon", Meta::F32(1e-6)),
            ("expert_count", Meta::U32(4)),
            ("expert_used_count", Meta::U32(2)),
            ("expert_feed_forward_length", Meta::U32(24)),
            ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
            ("tokenizer.ggml.padding_token_id", Meta::U32(0)),
        ],
    )
}

fn mixtral_gguf(dir: &Path) -> PathBuf {
    write_gguf(
        dir,
        "mixtral",
        &MIXTRAL,
        &[
            ("block_count", Meta::U32(2)),
            ("context_length", Meta::U32(512)),
            ("embedding_length", Meta::U32(48)),
            ("feed_forward_length", Meta::U32(24)),
            ("attention.head_count", Meta::U32(4)),
            ("attention.head_count_kv", Meta::U32(2)),
            ("rope.dimension_count", Meta::U32(12)),
            ("rope.freq_base", Meta::F32(1_000_000.0)),
            ("attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
            ("expert_count", Meta::U32(4)),
            ("expert_used_count", Meta::U32(2)),
            ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
            ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
        ],
    )
}

/// A copy of checkpoint `model` with `config.json` fields replaced.
fn edited_checkpoint(dir: &Path, model: &str, fields: &[(&str, Value)]) -> PathBuf {
    let out = dir.join(format!("{model}-edited"));
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(golden_arch_model(model)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), out.join(entry.file_name())).unwrap();
    }
    let path = out.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in fields {
        config[*k] = v.clone();
    }
    std::fs::write(&path, config.to_string()).unwrap();
    out
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The GGUF model and the checkpoint `dir`'s: the same config, logits within 1e-5 and the same
/// greedy tokens.
fn same_model(dir: &Path, gguf: &Path) {
    let from_gguf = load_model(
        &Checkpoint::open_gguf(dir, gguf).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let from_safetensors =
        load_model(&Checkpoint::open(dir).unwrap(), &LoadOptions::default()).unwrap();
    let (a, b) = (from_gguf.config(), from_safetensors.config());
    assert_eq!(
        format!("{:?}", (a.architecture, &a.moe, a.vocab_size, a.head_dim)),
        format!("{:?}", (b.architecture, &b.moe, b.vocab_size, b.head_dim)),
    );
    let tokens = [1u32, 56, 386, 225, 462, 340, 79, 297, 3, 700];
    let diff = max_abs_diff(
        &common::all_logits(from_gguf.as_ref(), &tokens).unwrap(),
        &common::all_logits(from_safetensors.as_ref(), &tokens).unwrap(),
    );
    assert!(
        diff <= 1e-5,
        "{}: GGUF and safetensors differ by {diff}",
        gguf.display()
    );
    let greedy = |options: &LoadOptions| {
        let pipe = Pipeline::load(dir.to_str().unwrap(), options).unwrap();
        let input = GenerateInput {
            input_ids: vec![tokens[..5].to_vec()],
            attention_mask: None,
        };
        let overrides = GenerationConfig {
            max_new_tokens: Some(12),
            do_sample: Some(false),
            ..GenerationConfig::default()
        };
        pipe.generate(&input, &overrides).unwrap().sequences
    };
    let gguf_options = LoadOptions {
        gguf_file: Some(gguf.to_path_buf()),
        ..LoadOptions::default()
    };
    assert_eq!(greedy(&gguf_options), greedy(&LoadOptions::default()));
}

#[test]
fn qwen3moe_gguf_is_the_safetensors_model() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = qwen3moe_gguf(tmp.path());
    // llama.cpp always renormalises the top experts' probabilities (`norm_topk_prob`, which the
    // Qwen3 MoE checkpoints set; the tiny golden one does not).
    let dir = edited_checkpoint(
        tmp.path(),
        "qwen3_moe",
        &[("norm_topk_prob", Value::Bool(true))],
    );
    same_model(&dir, &gguf);
    // Against the checkpoint as it is (no renormalisation), the routing weights differ: the
    // setting is read, not ignored.
    let unnormalised = load_model(
        &Checkpoint::open(&golden_arch_model("qwen3_moe")).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let from_gguf = load_model(
        &Checkpoint::open_gguf(&dir, &gguf).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let tokens = [1u32, 56, 386, 225];
    let diff = max_abs_diff(
        &common::all_logits(from_gguf.as_ref(), &tokens).unwrap(),
        &common::all_logits(unnormalised.as_ref(), &tokens).unwrap(),
    );
    assert!(diff > 1e-3, "{diff}");
}

#[test]
fn mixtral_gguf_is_the_safetensors_model() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = mixtral_gguf(tmp.path());
    let dir = golden_arch_model("mixtral");
    same_model(&dir, &gguf);
    // And transformers' logits, as for the dense architectures (golden_arch.rs's tolerance).
    let golden =
        candle_core::safetensors::load(dir.join("../../forward.safetensors"), &Device::Cpu)
            .unwrap();
    let model = load_model(
        &Checkpoint::open_gguf(&dir, &gguf).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    for i in 0..2 {
        let ids: Vec<u32> = golden[&format!("mixtral.{i}.input_ids")]
            .to_dtype(DType::U32)
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = common::all_logits(model.as_ref(), &ids).unwrap();
        let diff = max_abs_diff(&got, &golden[&format!("mixtral.{i}.logits")]);
        assert!(
            diff <= 1e-4,
            "mixtral.{i}: max |logit difference| {diff} > 1e-4"
        );
    }
}

fn load_error(dir: &Path, gguf: &Path) -> String {
    match Checkpoint::open_gguf(dir, gguf).and_then(|c| load_model(&c, &LoadOptions::default())) {
        Ok(_) => panic!("{} loaded", gguf.display()),
        Err(e) => e.to_string(),
    }
}

/// `src` with its metadata and tensors edited, as `name`.
fn edited(
    src: &Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Meta)>, &mut Vec<(String, QTensor)>),
) -> PathBuf {
    let mut file = File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut meta: Vec<(String, Meta)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|n| {
            (
                n.clone(),
                content.tensor(&mut file, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    edit(&mut meta, &mut tensors);
    let out = src.with_file_name(name);
    let mut w = File::create(&out).unwrap();
    let meta: Vec<(&str, &Meta)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &meta, &ts).unwrap();
    out
}

#[test]
fn moe_files_lmgen_cannot_read_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let qwen = qwen3moe_gguf(tmp.path());
    let dir = golden_arch_model("qwen3_moe");

    // gpt-oss: named, with what is missing.
    let path = edited(&qwen, "gpt-oss.gguf", |meta, tensors| {
        for (k, v) in meta.iter_mut() {
            if k == "general.architecture" {
                *v = Meta::String("gpt-oss".into());
            }
        }
        let sinks = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        tensors.push((
            "blk.0.attn_sinks.weight".into(),
            QTensor::quantize(&sinks, GgmlDType::F32).unwrap(),
        ));
    });
    let msg = load_error(&dir, &path);
    assert!(
        msg.contains("not supported") && msg.contains("`gpt-oss`") && msg.contains("MXFP4"),
        "{msg}"
    );

    // The hybrid recurrent-state architectures llama.cpp writes: named, with what is missing.
    for arch in ["qwen3next", "qwen35", "qwen35moe", "lfm2"] {
        let path = edited(&qwen, &format!("{arch}.gguf"), |meta, _| {
            for (k, v) in meta.iter_mut() {
                if k == "general.architecture" {
                    *v = Meta::String(arch.into());
                }
            }
        });
        let msg = load_error(&dir, &path);
        assert!(
            msg.contains("not supported")
                && msg.contains(&format!("`{arch}`"))
                && msg.contains("hybrid"),
            "{msg}"
        );
    }

    // A dense architecture's name with experts.
    let path = edited(&qwen, "qwen3-experts.gguf", |meta, _| {
        for (k, v) in meta.iter_mut() {
            if k == "general.architecture" {
                *v = Meta::String("qwen3".into());
            }
            if let Some(rest) = k.strip_prefix("qwen3moe.") {
                *k = format!("qwen3.{rest}");
            }
        }
    });
    let msg = load_error(&dir, &path);
    assert!(
        msg.contains("`qwen3.expert_count` = 4") && msg.contains("not read"),
        "{msg}"
    );

    // A missing expert count, a missing stacked tensor, a stacked tensor of the wrong rank.
    let path = edited(&qwen, "no-count.gguf", |meta, _| {
        meta.retain(|(k, _)| k != "qwen3moe.expert_count");
    });
    assert!(
        load_error(&dir, &path).contains("`qwen3moe.expert_count` is missing"),
        "{}",
        load_error(&dir, &path)
    );
    let path = edited(&qwen, "no-up.gguf", |_, tensors| {
        tensors.retain(|(n, _)| n != "blk.1.ffn_up_exps.weight");
    });
    let msg = load_error(&dir, &path);
    assert!(
        msg.contains("`blk.1.ffn_up_exps.weight`") && msg.contains("not found"),
        "{msg}"
    );
    let path = edited(&qwen, "flat.gguf", |_, tensors| {
        for (n, t) in tensors.iter_mut() {
            if n == "blk.0.ffn_down_exps.weight" {
                let flat = Tensor::zeros((4 * 48, 24), DType::F32, &Device::Cpu).unwrap();
                *t = QTensor::quantize(&flat, GgmlDType::F32).unwrap();
            }
        }
    });
    let msg = load_error(&dir, &path);
    assert!(
        msg.contains("`blk.0.ffn_down_exps.weight`") && msg.contains("[experts, rows, columns]"),
        "{msg}"
    );
}
