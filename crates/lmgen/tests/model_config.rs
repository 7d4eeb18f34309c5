//! config.json in both layouts real checkpoints use, and each architecture's defaults.

use std::path::Path;

use lmgen::models::config::{
    LayerType, ModelConfig, MoeLayout, ProjectionLayout, QkNorm, RopeScaling,
};
use lmgen::models::Architecture;
use serde_json::json;

fn parse(v: serde_json::Value) -> lmgen::Result<ModelConfig> {
    ModelConfig::from_json(&v, Path::new("config.json"))
}

fn llama(extra: serde_json::Value) -> serde_json::Value {
    let mut base = json!({"model_type": "llama", "vocab_size": 32, "hidden_size": 16,
        "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4});
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            base[k] = v;
        }
    }
    base
}

#[test]
fn transformers4_and_5_rope_layouts_agree() {
    let v4 = parse(llama(
        json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3",
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}}),
    ))
    .unwrap();
    let v5 = parse(llama(
        json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3",
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}}),
    ))
    .unwrap();
    assert_eq!(v4.rope, v5.rope);
    assert_eq!(v4.rope.as_ref().unwrap().theta, 500000.0);
}

#[test]
fn legacy_type_key_and_scalings() {
    let lin = parse(llama(
        json!({"rope_scaling": {"type": "linear", "factor": 2.0}}),
    ))
    .unwrap();
    assert_eq!(
        lin.rope.unwrap().scaling,
        RopeScaling::Linear { factor: 2.0 }
    );
    let dynamic = parse(llama(
        json!({"rope_scaling": {"type": "dynamic", "factor": 4.0}}),
    ))
    .unwrap();
    assert_eq!(
        dynamic.rope.unwrap().scaling,
        RopeScaling::Dynamic { factor: 4.0 }
    );
    let err = parse(llama(json!({"rope_scaling": {"type": "linear"}})))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rope_scaling.factor"), "{err}");
}

#[test]
fn llama_defaults() {
    let c = parse(llama(json!({}))).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!((c.num_key_value_heads, c.head_dim), (4, 4));
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.rope.unwrap().theta, 10000.0);
    assert_eq!(c.layer_types, vec![LayerType::FullAttention; 2]);
}

#[test]
fn sliding_window_rules_per_architecture() {
    let mut m = llama(json!({"sliding_window": 8}));
    m["model_type"] = json!("mistral");
    assert_eq!(
        parse(m).unwrap().layer_types,
        vec![LayerType::SlidingAttention; 2]
    );
    let mut g = llama(json!({"sliding_window": 8}));
    g["model_type"] = json!("gemma2");
    let g = parse(g).unwrap();
    assert_eq!(
        g.layer_types,
        vec![LayerType::SlidingAttention, LayerType::FullAttention]
    );
    assert!(g.tie_word_embeddings);
    // Qwen2 without use_sliding_window: full attention even with a window set.
    let mut q = llama(json!({"sliding_window": 8, "use_sliding_window": false}));
    q["model_type"] = json!("qwen2");
    let q = parse(q).unwrap();
    assert_eq!(q.layer_types, vec![LayerType::FullAttention; 2]);
    assert!(q.qkv_bias && !q.o_bias);
}

fn real(name: &str) -> ModelConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real-configs")
        .join(name)
        .join("config.json");
    let text = std::fs::read_to_string(&path).expect("real config");
    let value = serde_json::from_str(&text).expect("JSON");
    ModelConfig::from_json(&value, &path).expect("parses")
}

#[test]
fn real_2026_configs_parse() {
    let q = real("Qwen3-0.6B");
    assert_eq!(q.architecture, Architecture::Qwen3);
    assert_eq!((q.head_dim, q.num_key_value_heads), (128, 8));
    assert_eq!(q.qk_norm, Some(QkNorm::PerHead));
    assert!(q.tie_word_embeddings && !q.qkv_bias && !q.o_bias);
    // `use_sliding_window: false`: no window although `sliding_window` is set.
    assert_eq!(q.sliding_window, None);
    assert_eq!(q.rope.as_ref().unwrap().theta, 1_000_000.0);
    assert!(!real("Qwen3-4B").qkv_bias);

    // Gemma 3 1B, transformers 4 layout: rope_theta + rope_local_base_freq + sliding_window_pattern.
    let g = real("gemma-3-1b-it");
    assert_eq!(g.architecture, Architecture::Gemma3);
    assert_eq!(g.rope.as_ref().unwrap().theta, 1_000_000.0);
    assert_eq!(g.rope_local.as_ref().unwrap().theta, 10_000.0);
    let full: Vec<usize> = (0..26)
        .filter(|&i| g.layer_types[i] == LayerType::FullAttention)
        .collect();
    assert_eq!(full, vec![5, 11, 17, 23]);
    assert_eq!(g.rope_for_layer(0).unwrap().theta, 10_000.0);
    assert_eq!(g.rope_for_layer(5).unwrap().theta, 1_000_000.0);
    assert_eq!(g.attention_scaling, 256f64.powf(-0.5));
    assert_eq!(g.final_logit_softcapping, None);
    assert_eq!(g.sliding_window, Some(512));

    // SmolLM3-3B: every fourth layer without RoPE.
    let s = real("SmolLM3-3B");
    assert_eq!(s.architecture, Architecture::SmolLM3);
    assert_eq!(
        &s.rope_layers[..8],
        &[true, true, true, false, true, true, true, false]
    );
    assert!(s.rope_for_layer(3).is_none() && s.rope_for_layer(4).is_some());

    // Devstral (Mistral Small 3.1's text model as `mistral`).
    let d = real("Devstral-Small-2507");
    assert_eq!(d.architecture, Architecture::Mistral);
}

#[test]
fn real_moe_configs_parse() {
    // Qwen3-30B-A3B: `num_experts` (not `num_local_experts`), normalised top 8 of 128.
    let q = real("Qwen3-30B-A3B");
    assert_eq!(q.architecture, Architecture::Qwen3Moe);
    let moe = q.moe.as_ref().unwrap();
    assert_eq!((moe.num_experts, moe.num_experts_per_tok), (128, 8));
    assert_eq!(moe.moe_intermediate_size, 768);
    assert!(moe.norm_topk_prob && moe.sparse_layers.iter().all(|&s| s));
    assert_eq!(moe.layout, MoeLayout::Qwen);

    // Mixtral 8x7B: experts of `intermediate_size`, full attention (`sliding_window: null`).
    let m = real("Mixtral-8x7B-v0.1");
    assert_eq!(m.architecture, Architecture::Mixtral);
    let moe = m.moe.as_ref().unwrap();
    assert_eq!((moe.num_experts, moe.num_experts_per_tok), (8, 2));
    assert_eq!(moe.moe_intermediate_size, 14336);
    assert_eq!(m.layer_types, vec![LayerType::FullAttention; 32]);

    // gpt-oss-20b: YaRN in `rope_scaling` without truncation, alternating windows, sinks.
    let g = real("gpt-oss-20b");
    assert_eq!(g.architecture, Architecture::GptOss);
    assert!(g.attention_sinks && g.qkv_bias && g.o_bias);
    assert_eq!(g.sliding_window, Some(128));
    assert_eq!(g.layer_types[0], LayerType::SlidingAttention);
    assert_eq!(g.layer_types[1], LayerType::FullAttention);
    let rope = g.rope.as_ref().unwrap();
    assert_eq!(rope.theta, 150_000.0);
    assert!(
        matches!(rope.scaling, RopeScaling::Yarn { factor, truncate: false, .. } if factor == 32.0),
        "{rope:?}"
    );
    let moe = g.moe.as_ref().unwrap();
    assert_eq!((moe.num_experts, moe.num_experts_per_tok), (32, 4));
    assert_eq!(moe.layout, MoeLayout::GptOss);
}

#[test]
fn real_gemma4_config_parses() {
    // Gemma 4 26B-A4B as published: `Gemma4ForConditionalGeneration` around `gemma4_text`, full
    // layers shaped by `global_head_dim` and `num_global_key_value_heads` (no `per_layer_config`),
    // values = keys on full layers, a MoE beside every dense MLP, no per-layer inputs.
    let g = real("gemma-4-26B-A4B");
    assert_eq!(g.architecture, Architecture::Gemma4);
    assert_eq!(g.torch_dtype.as_deref(), Some("bfloat16"));
    assert!(g.tie_word_embeddings);
    assert_eq!(g.sliding_window, Some(1024));
    assert_eq!(g.final_logit_softcapping, Some(30.0));
    assert_eq!(g.attention_scaling, 1.0);
    let full: Vec<usize> = (0..30)
        .filter(|&i| g.layer_types[i] == LayerType::FullAttention)
        .collect();
    assert_eq!(full, vec![5, 11, 17, 23, 29]);
    let rope = g.rope.as_ref().unwrap();
    assert_eq!(rope.theta, 1_000_000.0);
    assert_eq!(rope.scaling, RopeScaling::Proportional { factor: 1.0 });
    assert_eq!(rope.partial_rotary_factor, 0.25);
    assert_eq!(g.rope_local.as_ref().unwrap().theta, 10_000.0);
    let spec = g.gemma4.as_ref().unwrap();
    let (s, f) = (spec.layers[0], spec.layers[5]);
    assert_eq!(
        (s.head_dim, s.num_key_value_heads, s.values_are_keys),
        (256, 8, false)
    );
    assert_eq!(
        (f.head_dim, f.num_key_value_heads, f.values_are_keys),
        (512, 2, true)
    );
    assert!(spec
        .layers
        .iter()
        .all(|l| l.kv_source.is_none() && !l.kv_shared));
    assert!(spec.layers.iter().all(|l| l.intermediate_size == 2112));
    assert_eq!(spec.per_layer_input, None);
    let moe = spec.moe.unwrap();
    assert_eq!(
        (moe.num_experts, moe.top_k, moe.intermediate_size),
        (128, 8, 704)
    );
}

#[test]
fn gemma4_shared_kv_layers_read_the_last_earlier_layer_of_their_type() {
    let text = json!({"model_type": "gemma4_text", "vocab_size": 32, "hidden_size": 16,
        "intermediate_size": 32, "num_hidden_layers": 6, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 8, "sliding_window": 4,
        "hidden_size_per_layer_input": 4, "vocab_size_per_layer_input": 32,
        "num_kv_shared_layers": 3, "use_double_wide_mlp": true,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention",
            "sliding_attention", "sliding_attention", "sliding_attention"],
        "per_layer_config": {"2": {"head_dim": 16}, "5": {"head_dim": 16}}});
    let g = parse(json!({"model_type": "gemma4", "text_config": text})).unwrap();
    let spec = g.gemma4.as_ref().unwrap();
    // The last layer is always full (`Gemma4TextConfig.__post_init__`).
    assert_eq!(g.layer_types[5], LayerType::FullAttention);
    let sources: Vec<Option<usize>> = spec.layers.iter().map(|l| l.kv_source).collect();
    assert_eq!(sources, vec![None, None, None, Some(1), Some(1), Some(2)]);
    let stores: Vec<bool> = spec.layers.iter().map(|l| l.kv_shared).collect();
    assert_eq!(stores, vec![false, true, true, false, false, false]);
    let widths: Vec<usize> = spec.layers.iter().map(|l| l.intermediate_size).collect();
    assert_eq!(widths, vec![32, 32, 32, 64, 64, 64]);
    assert_eq!(spec.layers[5].head_dim, 16);
    let pl = spec.per_layer_input.unwrap();
    assert_eq!((pl.hidden_size, pl.vocab_size), (4, 32));

    // Refused, naming the field: an encoder, a per-layer override lmgen does not read, and a
    // shared layer with no earlier layer of its type.
    let mut bad = text.clone();
    bad["use_bidirectional_attention"] = json!("all");
    let err = parse(bad).unwrap_err().to_string();
    assert!(err.contains("use_bidirectional_attention"), "{err}");
    let mut bad = text.clone();
    bad["per_layer_config"] = json!({"1": {"sliding_window": 8}});
    let err = parse(bad).unwrap_err().to_string();
    assert!(err.contains("`per_layer_config.1.sliding_window`"), "{err}");
    let mut bad = text.clone();
    bad["num_kv_shared_layers"] = json!(1);
    bad["per_layer_config"] = json!({"5": {"head_dim": 16}});
    bad["layer_types"] = json!([
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention"
    ]);
    let err = parse(bad).unwrap_err().to_string();
    assert!(err.contains("no earlier layer"), "{err}");
}

#[test]
fn unsupported_2026_model_types_are_named() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real-configs/granite-3.1-1b-a400m-instruct/config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let err = ModelConfig::from_json(&serde_json::from_str(&text).unwrap(), &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown model_type `granitemoe`"), "{err}");
    assert!(
        err.contains("qwen3") && err.contains("gemma3_text") && err.contains("phi3"),
        "{err}"
    );
}

/// Phi-4-mini's config.json as shipped (transformers 4 layout): LongRoPE in `rope_scaling`,
/// `partial_rotary_factor` and `original_max_position_embeddings` at the top.
fn phi4_mini() -> serde_json::Value {
    let short: Vec<f64> = (0..48).map(|i| 1.0 + i as f64 * 0.01).collect();
    let long: Vec<f64> = (0..48).map(|i| 1.0 + i as f64 * 0.5).collect();
    json!({"model_type": "phi3", "vocab_size": 200064, "hidden_size": 3072,
        "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 24,
        "num_key_value_heads": 8, "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096, "partial_rotary_factor": 0.75,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
        "sliding_window": 262144, "hidden_act": "silu",
        "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long}})
}

#[test]
fn phi4_mini_longrope_and_partial_rotary() {
    let c = parse(phi4_mini()).unwrap();
    assert_eq!(c.architecture, Architecture::Phi3);
    assert_eq!(c.projections, ProjectionLayout::Fused);
    let rope = c.rope.as_ref().unwrap();
    assert_eq!(rope.rotary_dim(c.head_dim), 96);
    let RopeScaling::LongRope {
        original_max_position_embeddings,
        attention_factor,
        ..
    } = rope.scaling
    else {
        panic!("{:?}", rope.scaling)
    };
    assert_eq!(original_max_position_embeddings, 4096);
    // factor = 131072 / 4096 = 32: sqrt(1 + ln 32 / ln 4096).
    let want = (1.0 + 32f64.ln() / 4096f64.ln()).sqrt();
    assert!((attention_factor - want).abs() < 1e-12);
    // A factor list of the wrong length is refused, naming the field.
    let mut bad = phi4_mini();
    bad["rope_scaling"]["short_factor"] = json!([1.0, 1.0]);
    let err = parse(bad).unwrap_err().to_string();
    assert!(
        err.contains("`rope_scaling.short_factor` has 2 entries"),
        "{err}"
    );
}

#[test]
fn layer_types_must_match_the_layer_count() {
    let mut q = llama(json!({"layer_types": ["full_attention"]}));
    q["model_type"] = json!("qwen3");
    let err = parse(q).unwrap_err().to_string();
    assert!(
        err.contains("`layer_types` has 1 entries but `num_hidden_layers` is 2"),
        "{err}"
    );
    let mut s = llama(json!({"no_rope_layers": [1, 1, 0]}));
    s["model_type"] = json!("smollm3");
    let err = parse(s).unwrap_err().to_string();
    assert!(err.contains("`no_rope_layers` has 3 entries"), "{err}");
    let mut g = llama(json!({"layer_types": ["full_attention", "chunked_attention"]}));
    g["model_type"] = json!("gemma3_text");
    let err = parse(g).unwrap_err().to_string();
    assert!(err.contains("\"chunked_attention\""), "{err}");
}

#[test]
fn vision_language_wrappers_read_text_config() {
    let text = llama(json!({"model_type": "gemma3_text", "sliding_window": 4}));
    let c = parse(json!({"model_type": "gemma3", "text_config": text,
        "tie_word_embeddings": true, "torch_dtype": "bfloat16"}))
    .unwrap();
    assert_eq!(c.architecture, Architecture::Gemma3);
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
    // Errors inside text_config name it.
    let mut bad = llama(json!({"model_type": "ministral3"}));
    bad["hidden_size"] = json!("big");
    let err = parse(json!({"model_type": "mistral3", "text_config": bad}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`text_config.hidden_size` must be a non-negative integer, got \"big\""),
        "{err}"
    );
    let err = parse(json!({"model_type": "mistral3"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`text_config` is missing"), "{err}");
}

#[test]
fn yarn_attention_factor_and_llama4_query_scaling() {
    let mut m = llama(
        json!({"rope_parameters": {"rope_type": "yarn", "factor": 16.0,
        "original_max_position_embeddings": 16384, "rope_theta": 1e6, "beta_fast": 32.0,
        "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}}),
    );
    m["model_type"] = json!("ministral3");
    let c = parse(m).unwrap();
    let rope = c.rope.as_ref().unwrap();
    assert_eq!(rope.attention_factor(), 1.0);
    let q = c.query_scaling.unwrap();
    assert_eq!(q.factor(16383), 1.0);
    assert!((q.factor(16384) - (1.0 + 0.1 * 2f32.ln())).abs() < 1e-7);
    // Without mscale: 0.1 * ln(factor) + 1.
    let y = parse(llama(
        json!({"rope_scaling": {"type": "yarn", "factor": 4.0,
        "original_max_position_embeddings": 2048}}),
    ))
    .unwrap();
    let want = 0.1 * 4f64.ln() + 1.0;
    assert!((y.rope.unwrap().attention_factor() - want).abs() < 1e-12);
}

/// `lmgen bench` and `benches/peers/compare.py` take these shapes: each must parse.
#[test]
fn every_bench_shape_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/configs");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let c = ModelConfig::from_json(&serde_json::from_str(&text).unwrap(), &path)
            .unwrap_or_else(|e| panic!("{e}"));
        seen.push((
            path.file_stem().unwrap().to_string_lossy().to_string(),
            c.architecture,
        ));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, arch) in [
        ("qwen3-0.6b", Architecture::Qwen3),
        ("qwen3-4b", Architecture::Qwen3),
        ("gemma3-1b", Architecture::Gemma3),
        ("phi4-mini", Architecture::Phi3),
    ] {
        assert!(seen.contains(&(name.to_string(), arch)), "{name}: {seen:?}");
    }
}

#[test]
fn real_recurrent_state_configs_parse() {
    // Qwen3.5-27B as published (`Qwen3_5ForConditionalGeneration`, nested `text_config`): three
    // gated DeltaNet layers per full-attention layer, gated attention, partial RoPE.
    let q = real("Qwen3.5-27B");
    assert_eq!(q.architecture, Architecture::Qwen3_5);
    assert_eq!(q.num_hidden_layers, 64);
    assert_eq!(
        q.layer_types[..4],
        [
            LayerType::LinearAttention,
            LayerType::LinearAttention,
            LayerType::LinearAttention,
            LayerType::FullAttention
        ]
    );
    assert!(q.attn_output_gate);
    let la = q.linear_attention.unwrap();
    assert_eq!(
        (la.num_key_heads, la.num_value_heads, la.key_head_dim),
        (16, 48, 128)
    );
    assert_eq!(q.rope.as_ref().unwrap().rotary_dim(q.head_dim), 64);
    // 48 DeltaNet layers, each 3 x 10240 conv inputs and 48 x 128 x 128 state values, in f32.
    assert_eq!(
        q.state_bytes_per_sequence(2),
        48 * 4 * (3 * 10240 + 48 * 128 * 128)
    );

    // Qwen3.5-35B-A3B: the same decoder with 256 experts, 8 per token and a shared expert.
    let m = real("Qwen3.5-35B-A3B");
    assert_eq!(m.architecture, Architecture::Qwen3_5Moe);
    let moe = m.moe.as_ref().unwrap();
    assert_eq!((moe.num_experts, moe.num_experts_per_tok), (256, 8));
    assert_eq!(moe.shared_expert_intermediate_size, Some(512));
    assert!(moe.norm_topk_prob && moe.sparse_layers.iter().all(|&s| s));

    // Qwen3-Next-80B-A3B: grouped DeltaNet projections, 512 experts, 10 per token.
    let n = real("Qwen3-Next-80B-A3B-Thinking");
    assert_eq!(n.architecture, Architecture::Qwen3Next);
    let moe = n.moe.as_ref().unwrap();
    assert_eq!((moe.num_experts, moe.num_experts_per_tok), (512, 10));
    assert_eq!(moe.shared_expert_intermediate_size, Some(512));
    assert_eq!(
        n.layer_types.iter().filter(|t| t.is_attention()).count(),
        12
    );

    // LFM2-1.2B: `block_ff_dim` adjusted to 2/3 and rounded to 256, attention at `full_attn_idxs`.
    let l = real("LFM2-1.2B");
    assert_eq!(l.architecture, Architecture::Lfm2);
    assert_eq!(l.intermediate_size, 8192);
    let attention: Vec<usize> = (0..l.num_hidden_layers)
        .filter(|&i| l.layer_types[i].is_attention())
        .collect();
    assert_eq!(attention, vec![2, 5, 8, 10, 12, 14]);
    assert_eq!(l.short_conv.unwrap().kernel, 3);
    assert_eq!(l.state_bytes_per_sequence(2), 10 * 2 * 2048 * 2);
    assert!(l.tie_word_embeddings);
}
