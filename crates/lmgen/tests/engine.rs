//! The continuous batching engine against static `generate()` and transformers' golden outputs:
//! greedy results are token-for-token equal whatever the interleaving, chunking, prefix sharing
//! or preemption; cancellation frees every block; seeded sampling does not depend on neighbours.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lmgen::cache::paged::PagedCacheConfig;
use lmgen::engine::{
    generate_batch, BatchOptions, ContinuousBatchingManager, EngineConfig, GenerationOutput,
    Request, RequestStatus, SchedulerPolicy,
};
use lmgen::generation::config::UnknownFields;
use lmgen::generation::{generate_seq2seq, EncoderInputs, Seq2SeqInput};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, DType, LoadOptions};
use lmgen::{generate, GenerateInput, GenerationConfig, Pipeline, TokenId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// A golden model, a golden-arch one (`arch/qwen3_5_text`) or an encoder-decoder one
/// (`seq2seq/t5`).
fn pipeline(model: &str) -> Pipeline {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = if let Some(m) = model.strip_prefix("arch/") {
        fixtures.join("golden-arch/models").join(m)
    } else if let Some(m) = model.strip_prefix("seq2seq/") {
        fixtures.join("golden-seq2seq/models").join(m)
    } else {
        golden().join("models").join(model)
    };
    Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap()
}

struct Setup {
    model: Arc<dyn CausalLM>,
    pipe: Pipeline,
}

fn setup(model: &str) -> Setup {
    Setup {
        model: Arc::from(pipeline(model).model),
        pipe: pipeline(model),
    }
}

fn engine_config(block_size: usize, num_blocks: usize, max_batch_tokens: usize) -> EngineConfig {
    EngineConfig {
        cache: PagedCacheConfig {
            block_size,
            num_blocks,
        },
        max_batch_tokens,
        ..EngineConfig::default()
    }
}

fn manager(s: &Setup, config: EngineConfig) -> ContinuousBatchingManager {
    let m = ContinuousBatchingManager::new(
        s.model.clone(),
        config,
        DType::F32,
        Some(&s.pipe.tokenizer),
    )
    .unwrap();
    m.start().unwrap();
    m
}

/// Static generate()'s new tokens for one unpadded prompt.
fn reference(s: &Setup, prompt: &[TokenId], config: &GenerationConfig) -> Vec<TokenId> {
    let out = generate(
        s.model.as_ref(),
        &GenerateInput::single(prompt.to_vec()),
        config,
    )
    .unwrap();
    out.generated(0).to_vec()
}

fn greedy(s: &Setup, max_new_tokens: usize) -> GenerationConfig {
    s.pipe.config_with(&GenerationConfig {
        max_new_tokens: Some(max_new_tokens),
        do_sample: Some(false),
        ..GenerationConfig::default()
    })
}

fn random_prompt(rng: &mut StdRng, len: usize, vocab: usize) -> Vec<TokenId> {
    (0..len)
        .map(|_| rng.random_range(3..vocab as TokenId))
        .collect()
}

fn wait_idle(m: &ContinuousBatchingManager) {
    for _ in 0..500 {
        let s = m.stats();
        if s.running == 0 && s.waiting == 0 && s.blocks_used == 0 && s.state_slots_used == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("engine not idle: {:?}", m.stats());
}

/// 20 requests of mixed lengths, added at random times while others run, with chunked prefill
/// under a small token budget: every greedy output equals static generate().
fn random_arrivals(model: &str, policy: SchedulerPolicy, seed: u64) {
    let s = setup(model);
    let mut config = engine_config(4, 256, 16);
    config.scheduler = policy;
    let m = manager(&s, config);
    let mut rng = StdRng::seed_from_u64(seed);
    let vocab = s.model.config().vocab_size;
    let mut submitted = Vec::new();
    for i in 0..20 {
        let len = rng.random_range(1..40);
        let prompt = random_prompt(&mut rng, len, vocab);
        let cfg = greedy(&s, rng.random_range(1..24));
        let mut req = Request::new(prompt.clone(), cfg.clone());
        req.request_id = Some(format!("r{i}"));
        let id = m.add_request(req).unwrap();
        submitted.push((id, prompt, cfg));
        std::thread::sleep(Duration::from_millis(rng.random_range(0..15)));
    }
    for (id, prompt, cfg) in &submitted {
        let out = m
            .get_result(Some(id), Some(Duration::from_secs(120)))
            .unwrap();
        assert_eq!(out.status, RequestStatus::Finished, "{id}: {:?}", out.error);
        assert_eq!(
            out.generated_tokens,
            reference(&s, prompt, cfg),
            "{model} {policy:?} request {id} (prompt of {} tokens)",
            prompt.len()
        );
    }
    wait_idle(&m);
}

#[test]
fn greedy_equals_generate_with_random_arrivals_fifo() {
    random_arrivals("llama", SchedulerPolicy::Fifo, 1);
}

#[test]
fn greedy_equals_generate_with_random_arrivals_prefill_first() {
    random_arrivals("qwen2", SchedulerPolicy::PrefillFirst, 2);
}

#[test]
fn greedy_equals_generate_on_other_architectures() {
    // gpt2: learned positions and fused qkv; gemma2: sliding-window layers and soft-capping;
    // mistral: sliding window on every layer.
    for (model, seed) in [("gpt2", 3), ("gemma2", 4), ("mistral", 5)] {
        random_arrivals(model, SchedulerPolicy::Fifo, seed);
    }
}

/// Hybrid models keep a recurrent state per sequence beside the paged KV: Qwen3.5 (gated
/// DeltaNet), Qwen3-Next (the same with a sparse MoE) and LFM2 (short convolutions).
#[test]
fn greedy_equals_generate_on_recurrent_state_models() {
    random_arrivals("arch/qwen3_5_text", SchedulerPolicy::Fifo, 6);
    random_arrivals("arch/lfm2", SchedulerPolicy::PrefillFirst, 7);
    random_arrivals("arch/qwen3_next", SchedulerPolicy::Fifo, 8);
}

/// Encoder-decoder models: each request's prompt is its encoder's input; every running
/// sequence's decoder step is in one packed forward, each cross-attending to its own encoder
/// output through its cross-attention blocks in the pool, which preemption frees and recomputes.
#[test]
fn greedy_equals_generate_on_encoder_decoder_models() {
    random_arrivals("seq2seq/t5", SchedulerPolicy::Fifo, 9);
    random_arrivals("seq2seq/flan_t5", SchedulerPolicy::PrefillFirst, 10);
    preemption_under_a_tiny_kv_budget(&setup("seq2seq/t5"), 12);
}

/// Requests of different encoder lengths (1 to 40) and decoder lengths (1 to 24), all queued
/// before the engine starts so that they decode in the same steps: every greedy output equals
/// per-request generate() on T5, Flan-T5, mT5 (T5's packed path), BART, mBART and Marian (BART's),
/// and no block or encoder output is left once they are done.
#[test]
fn encoder_decoder_requests_of_mixed_lengths_decode_together() {
    for (model, seed) in [
        ("seq2seq/t5", 20),
        ("seq2seq/flan_t5", 21),
        ("seq2seq/mt5", 22),
        ("seq2seq/bart", 23),
        ("seq2seq/mbart", 24),
        ("seq2seq/marian", 25),
    ] {
        // Marian's fixture has no tokenizer.json: the model and its generation config only.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/golden-seq2seq/models")
            .join(model.trim_start_matches("seq2seq/"));
        let loaded = load_model(&Checkpoint::open(&dir).unwrap(), &LoadOptions::default());
        let model_arc: Arc<dyn CausalLM> = Arc::from(loaded.unwrap());
        let base = GenerationConfig::from_pretrained(&dir).unwrap();
        let m = ContinuousBatchingManager::new(
            model_arc.clone(),
            engine_config(4, 256, 64),
            DType::F32,
            None,
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let vocab = model_arc.config().vocab_size;
        let mut submitted = Vec::new();
        for i in 0..10 {
            let len = [1, 40, 7, 23, 2, 31, 12, 5, 38, 16][i];
            let prompt = random_prompt(&mut rng, len, vocab);
            let mut cfg = base.clone();
            cfg.update(&GenerationConfig {
                max_new_tokens: Some(rng.random_range(1..25)),
                do_sample: Some(false),
                num_beams: Some(1), // Marian's checkpoint asks for beam search
                ..GenerationConfig::default()
            });
            let id = m
                .add_request(Request::new(prompt.clone(), cfg.clone()))
                .unwrap();
            submitted.push((id, prompt, cfg));
        }
        m.start().unwrap();
        for (id, prompt, cfg) in &submitted {
            let out = m
                .get_result(Some(id), Some(Duration::from_secs(120)))
                .unwrap();
            assert_eq!(out.status, RequestStatus::Finished, "{id}: {:?}", out.error);
            let want = generate(
                model_arc.as_ref(),
                &GenerateInput::single(prompt.clone()),
                cfg,
            )
            .unwrap();
            assert_eq!(
                out.generated_tokens,
                want.generated(0),
                "{model} request {id} (encoder input of {} tokens)",
                prompt.len()
            );
        }
        wait_idle(&m);
        assert_eq!(m.stats().encoder_bytes, 0, "{model}: {:?}", m.stats());
    }
}

/// Whisper: requests carry `input_features` and their own decoder prompts (1 to 4 tokens);
/// decoded together, each equals generate_seq2seq() with that prompt.
#[test]
fn whisper_requests_with_input_features_decode_together() {
    let s = setup("seq2seq/whisper");
    let inputs = candle_core::safetensors::load(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/golden-seq2seq/inputs.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let rows: Vec<candle_core::Tensor> = ["whisper_greedy_direct", "whisper_batch_direct"]
        .iter()
        .flat_map(|k| {
            let f = &inputs[&format!("{k}.input_features")]; // [b, n_mels, frames]
            (0..f.dim(0).unwrap()).map(|i| f.get(i).unwrap())
        })
        .collect();
    let prompts: [&[TokenId]; 4] = [
        &[301],
        &[301, 302, 311, 315],
        &[301, 304, 310, 315],
        &[301, 302],
    ];
    let m = ContinuousBatchingManager::new(
        s.model.clone(),
        engine_config(4, 256, 64),
        DType::F32,
        Some(&s.pipe.tokenizer),
    )
    .unwrap();
    let mut submitted = Vec::new();
    for i in 0..6 {
        let (features, prompt) = (rows[i % rows.len()].clone(), prompts[i % prompts.len()]);
        let cfg = greedy(&s, 4 + 3 * i);
        let mut req = Request::new(prompt.to_vec(), cfg.clone());
        req.input_features = Some(features.clone());
        submitted.push((m.add_request(req).unwrap(), features, prompt, cfg));
    }
    m.start().unwrap();
    for (id, features, prompt, cfg) in &submitted {
        let out = m
            .get_result(Some(id), Some(Duration::from_secs(120)))
            .unwrap();
        assert_eq!(out.status, RequestStatus::Finished, "{id}: {:?}", out.error);
        let input = Seq2SeqInput {
            encoder: EncoderInputs::Features(features.unsqueeze(0).unwrap()),
            decoder_input_ids: Some(vec![prompt.to_vec()]),
            decoder_attention_mask: None,
        };
        let want = generate_seq2seq(s.model.as_ref(), &input, cfg, Default::default()).unwrap();
        assert_eq!(
            out.generated_tokens,
            want.sequences[0][prompt.len()..],
            "{id}"
        );
    }
    wait_idle(&m);
}

/// An encoder-decoder request's cross-attention keys and values take blocks of the pool (one
/// slot per encoder position), so the admission check counts them: 45 encoder positions do not
/// fit in 12 blocks of 4 beside the decoder's tokens, 20 do.
#[test]
fn cross_attention_blocks_count_against_the_pool() {
    let s = setup("seq2seq/t5");
    let m = manager(&s, engine_config(4, 12, 64));
    let mut cfg = greedy(&s, 8);
    cfg.min_new_tokens = Some(8);
    let e = m
        .add_request(Request::new(vec![5; 45], cfg.clone()))
        .unwrap_err();
    assert!(e.to_string().contains("45 encoder positions"), "{e}");
    let id = m
        .add_request(Request::new(vec![5; 20], cfg.clone()))
        .unwrap();
    let out = m
        .get_result(Some(&id), Some(Duration::from_secs(120)))
        .unwrap();
    assert_eq!(out.generated_tokens, reference(&s, &[5; 20], &cfg));
    wait_idle(&m);
}

/// A recurrent model's state slots: one per started sequence, none once a sequence is
/// preempted (recomputed from its first token when it resumes), cancelled or done.
#[test]
fn recurrent_state_slots_are_freed_on_preemption_and_cancel() {
    let s = setup("arch/qwen3_5_text");
    let most = preemption_under_a_tiny_kv_budget(&s, 12);
    assert!(most >= 1, "no state slot seen while running");
    // Cancel: the running sequence holds one slot, then none.
    let m = manager(&s, engine_config(4, 64, 64));
    let mut cfg = greedy(&s, 200);
    cfg.min_new_tokens = Some(200);
    let id = m
        .add_streaming_request(Request::new(vec![5, 6, 7, 8, 9], cfg))
        .unwrap();
    let mut updates = m.request_id_iter(&id).unwrap();
    assert!(!updates.next().unwrap().new_tokens.is_empty());
    let stats = m.stats();
    assert_eq!(stats.state_slots_used, 1, "{stats:?}");
    assert!(stats.state_bytes > 0, "{stats:?}");
    m.cancel_request(&id);
    assert_eq!(updates.last().unwrap().status, RequestStatus::Cancelled);
    wait_idle(&m);
    assert_eq!(m.stats().state_bytes, 0);
}

/// Gemma 4 through the paged store: layers of two KV shapes (the golden checkpoint's sliding and
/// full layers), and shared KV layers reading their source layer's keys sequence by sequence in
/// packed batches (`gemma4-variants/shared_kv`), under chunked prefill.
#[test]
fn gemma4_greedy_equals_generate() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (dir, seed) in [
        ("golden-arch/models/gemma4_text", 6),
        ("gemma4-variants/shared_kv", 7),
    ] {
        let checkpoint = Checkpoint::open(&fixtures.join(dir)).unwrap();
        let model: Arc<dyn CausalLM> =
            Arc::from(load_model(&checkpoint, &LoadOptions::default()).unwrap());
        let m = ContinuousBatchingManager::new(
            model.clone(),
            engine_config(4, 256, 16),
            DType::F32,
            None,
        )
        .unwrap();
        m.start().unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let vocab = model.config().vocab_size;
        let mut submitted = Vec::new();
        for _ in 0..8 {
            let len = rng.random_range(1..20);
            let prompt = random_prompt(&mut rng, len, vocab);
            let cfg = GenerationConfig {
                max_new_tokens: Some(rng.random_range(1..12)),
                do_sample: Some(false),
                ..GenerationConfig::default()
            };
            let id = m
                .add_request(Request::new(prompt.clone(), cfg.clone()))
                .unwrap();
            submitted.push((id, prompt, cfg));
        }
        for (id, prompt, cfg) in &submitted {
            let out = m
                .get_result(Some(id), Some(Duration::from_secs(120)))
                .unwrap();
            assert_eq!(
                out.status,
                RequestStatus::Finished,
                "{dir} {id}: {:?}",
                out.error
            );
            let want = generate(model.as_ref(), &GenerateInput::single(prompt.clone()), cfg)
                .unwrap()
                .generated(0)
                .to_vec();
            assert_eq!(out.generated_tokens, want, "{dir} request {id}");
        }
        wait_idle(&m);
    }
}

/// The golden greedy cases of `generate.json` (unpadded rows, settings the engine takes), all
/// submitted at once per model: the engine's tokens equal transformers'.
#[test]
fn golden_greedy_cases_through_the_engine() {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(golden().join("generate.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    for model in ["gpt2", "llama", "qwen2", "gemma2", "mistral", "llama3"] {
        let s = setup(model);
        let m = manager(&s, engine_config(4, 512, 32));
        let mut pending: Vec<(String, String, Vec<TokenId>)> = Vec::new();
        for case in cases.iter().filter(|c| c["model"] == model) {
            let name = case["name"].as_str().unwrap();
            let gc = &case["generation_config"];
            let sampling = gc["do_sample"].as_bool().unwrap_or(false);
            let beams = gc["num_beams"].as_u64().unwrap_or(1) > 1;
            let padded = case["attention_mask"].as_array().is_some_and(|rows| {
                rows.iter()
                    .flat_map(|r| r.as_array().unwrap())
                    .any(|x| x == 0)
            });
            if sampling || beams || padded || case.get("assistant_model").is_some() {
                continue;
            }
            let overrides = GenerationConfig::from_json(gc, UnknownFields::Keep).unwrap();
            let config = s.pipe.config_with(&overrides);
            let rows: Vec<Vec<TokenId>> =
                serde_json::from_value(case["input_ids"].clone()).unwrap();
            let expected: Vec<Vec<TokenId>> =
                serde_json::from_value(case["expected"]["sequences"].clone()).unwrap();
            for (r, row) in rows.iter().enumerate() {
                let mut req = Request::new(row.clone(), config.clone());
                req.request_id = Some(format!("{name}/{r}"));
                match m.add_request(req) {
                    Ok(id) => pending.push((id, name.to_string(), expected[r].clone())),
                    Err(lmgen::Error::Unsupported { .. }) => break,
                    Err(e) => panic!("{name}: {e}"),
                }
            }
        }
        for (id, name, expected) in pending {
            let out = m
                .get_result(Some(&id), Some(Duration::from_secs(120)))
                .unwrap();
            assert_eq!(
                out.status,
                RequestStatus::Finished,
                "{name}: {:?}",
                out.error
            );
            let got: Vec<TokenId> = [out.prompt_ids.clone(), out.generated_tokens.clone()].concat();
            // A row of a batch that finished early is padded after its EOS in `sequences`.
            assert_eq!(got, expected[..got.len()], "{model} {name}");
            checked += 1;
        }
        wait_idle(&m);
    }
    assert!(checked >= 40, "only {checked} golden rows ran");
}

#[test]
fn prefix_blocks_are_shared_between_running_requests() {
    let s = setup("llama");
    let m = manager(&s, engine_config(4, 64, 64));
    let mut rng = StdRng::seed_from_u64(9);
    let prompt = random_prompt(&mut rng, 17, s.model.config().vocab_size);
    let mut cfg = greedy(&s, 40);
    cfg.min_new_tokens = Some(40); // keeps A running while B arrives
    let a = m
        .add_streaming_request(Request::new(prompt.clone(), cfg.clone()))
        .unwrap();
    let mut a_updates = m.request_id_iter(&a).unwrap();
    let first = a_updates.next().unwrap();
    assert_eq!(first.cached_prompt_tokens, 0);
    // A's 4 full prompt blocks are registered once its prompt is computed. The stats are
    // published at the end of the step that sent `first`: wait for them.
    let mut used_by_a = m.stats().blocks_used;
    for _ in 0..500 {
        if used_by_a >= 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        used_by_a = m.stats().blocks_used;
    }
    let b = m
        .add_streaming_request(Request::new(prompt.clone(), cfg.clone()))
        .unwrap();
    let b_updates: Vec<_> = m.request_id_iter(&b).unwrap().collect();
    assert_eq!(
        b_updates[0].cached_prompt_tokens, 16,
        "B reuses A's 4 full blocks"
    );
    let stats = m.stats();
    assert!(stats.prefix_hits >= 4, "{stats:?}");
    assert!(used_by_a >= 5);
    let b_tokens: Vec<TokenId> = b_updates
        .iter()
        .flat_map(|u| u.new_tokens.clone())
        .collect();
    let mut a_tokens = first.new_tokens.clone();
    a_tokens.extend(a_updates.flat_map(|u| u.new_tokens));
    let want = reference(&s, &prompt, &cfg);
    assert_eq!(a_tokens, want);
    assert_eq!(b_tokens, want);
    wait_idle(&m);
}

/// 8 requests of up to 36 tokens in 12 blocks of 4 (48 slots), never stopping early: sequences
/// are preempted, resume, and every greedy output equals static generate(). Returns the most
/// state slots seen in use while they ran.
fn preemption_under_a_tiny_kv_budget(s: &Setup, seed: u64) -> usize {
    let m = manager(s, engine_config(4, 12, 64));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut submitted = Vec::new();
    for i in 0..8 {
        let prompt = random_prompt(&mut rng, 8 + i, s.model.config().vocab_size);
        let mut cfg = greedy(s, 36 - prompt.len());
        cfg.min_new_tokens = cfg.max_new_tokens; // no early EOS: every request needs its blocks
        let id = m
            .add_request(Request::new(prompt.clone(), cfg.clone()))
            .unwrap();
        submitted.push((id, prompt, cfg));
    }
    let mut most = 0;
    for (id, prompt, cfg) in &submitted {
        most = most.max(m.stats().state_slots_used);
        let out = m
            .get_result(Some(id), Some(Duration::from_secs(120)))
            .unwrap();
        assert_eq!(out.status, RequestStatus::Finished, "{:?}", out.error);
        assert_eq!(out.generated_tokens, reference(s, prompt, cfg), "{id}");
    }
    assert!(m.stats().preemptions > 0, "{:?}", m.stats());
    wait_idle(&m);
    most
}

#[test]
fn preemption_under_a_tiny_kv_budget_completes_every_request() {
    preemption_under_a_tiny_kv_budget(&setup("llama"), 11);
}

#[test]
fn cancelling_frees_the_blocks() {
    let s = setup("llama");
    let m = manager(&s, engine_config(4, 64, 64));
    let mut cfg = greedy(&s, 200);
    cfg.min_new_tokens = Some(200);
    let id = m
        .add_streaming_request(Request::new(vec![5, 6, 7, 8, 9], cfg.clone()))
        .unwrap();
    let waiting = m.add_request(Request::new(vec![5; 200], cfg)).unwrap_err();
    assert!(waiting.to_string().contains("KV cache"), "{waiting}");
    let mut updates = m.request_id_iter(&id).unwrap();
    assert!(!updates.next().unwrap().new_tokens.is_empty());
    m.cancel_request(&id);
    let last = updates.last().unwrap();
    assert_eq!(last.status, RequestStatus::Cancelled);
    wait_idle(&m);
    assert_eq!(m.stats().blocks_used, 0);
    assert_eq!(m.stats().cancelled, 1);
}

#[test]
fn a_sink_whose_receiver_is_gone_cancels_its_request() {
    let s = setup("llama");
    let m = manager(&s, engine_config(4, 64, 64));
    let mut cfg = greedy(&s, 200);
    cfg.min_new_tokens = Some(200);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut received = 0;
    let sink = move |update: lmgen::engine::RequestUpdate| {
        received += update.new_tokens.len();
        // The listener reads three tokens, then goes away.
        received <= 3 && tx.send(update).is_ok()
    };
    m.add_request_with_sink(Request::new(vec![5, 6, 7, 8, 9], cfg), Box::new(sink))
        .unwrap();
    let got: Vec<_> = rx.iter().collect();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|u| !u.status.is_final()));
    wait_idle(&m);
    let stats = m.stats();
    assert_eq!((stats.blocks_used, stats.cancelled), (0, 1), "{stats:?}");
    assert_eq!(stats.generated_tokens, 4, "{stats:?}");
}

#[test]
fn seeded_sampling_does_not_depend_on_other_requests() {
    let s = setup("llama");
    let cfg = s.pipe.config_with(&GenerationConfig {
        max_new_tokens: Some(12),
        do_sample: Some(true),
        top_k: Some(50),
        temperature: Some(1.3),
        ..GenerationConfig::default()
    });
    let run = |others: usize| -> GenerationOutput {
        let m = manager(&s, engine_config(4, 128, 64));
        for i in 0..others {
            let mut r = Request::new(vec![10 + i as TokenId; 3 + i], cfg.clone());
            r.seed = Some(100 + i as u64);
            m.add_request(r).unwrap();
        }
        let mut r = Request::new(vec![4, 5, 6], cfg.clone());
        r.seed = Some(42);
        let id = m.add_request(r).unwrap();
        m.get_result(Some(&id), Some(Duration::from_secs(60)))
            .unwrap()
    };
    let alone = run(0);
    assert_eq!(alone.generated_tokens.len(), 12);
    assert_eq!(alone.generated_tokens, run(5).generated_tokens);
}

#[test]
fn logprobs_are_the_log_softmax_of_the_raw_logits() {
    let s = setup("llama");
    let m = manager(&s, engine_config(4, 64, 64));
    let cfg = greedy(&s, 6);
    let prompt = vec![3, 14, 15, 92, 65];
    let mut r = Request::new(prompt.clone(), cfg.clone());
    r.logprobs = Some(3);
    let id = m.add_request(r).unwrap();
    let out = m
        .get_result(Some(&id), Some(Duration::from_secs(60)))
        .unwrap();
    let mut with_logits = cfg.clone();
    with_logits.output_logits = Some(true);
    let reference = generate(
        s.model.as_ref(),
        &GenerateInput::single(prompt),
        &with_logits,
    )
    .unwrap();
    let logits = reference.logits.unwrap();
    assert_eq!(out.logprobs.len(), out.generated_tokens.len());
    for (step, lp) in out.logprobs.iter().enumerate() {
        let row = logits[step].row(0);
        let want = row[lp.token as usize] - lmgen::generation::log_sum_exp(row);
        assert!(
            (lp.logprob - want).abs() < 1e-4,
            "step {step}: {} vs {want}",
            lp.logprob
        );
        assert_eq!(lp.top.len(), 3);
        assert_eq!(lp.top[0].0, lp.token, "greedy picks the top token");
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}

#[test]
fn generate_batch_matches_generate() {
    let s = setup("qwen2");
    let cfg = greedy(&s, 10);
    let prompts: Vec<Vec<TokenId>> = vec![vec![3, 4, 5], vec![7; 9], vec![100, 200, 300, 400, 12]];
    let outs = generate_batch(
        s.model.clone(),
        &prompts,
        &cfg,
        BatchOptions {
            engine: engine_config(4, 64, 8),
            ..BatchOptions::default()
        },
    )
    .unwrap();
    for (p, out) in prompts.iter().zip(&outs) {
        assert_eq!(out.generated_tokens, reference(&s, p, &cfg));
    }
    assert_eq!(outs[1].request_id, "req_1");
}

#[test]
fn settings_the_engine_cannot_honour_are_errors() {
    let s = setup("llama");
    let m = manager(&s, engine_config(4, 64, 64));
    let mut cfg = greedy(&s, 4);
    cfg.num_beams = Some(2);
    assert!(m.add_request(Request::new(vec![4, 5], cfg)).is_err());
    let mut cfg = greedy(&s, 4);
    cfg.encoder_repetition_penalty = Some(1.2);
    let e = m.add_request(Request::new(vec![4, 5], cfg)).unwrap_err();
    assert!(e.to_string().contains("encoder_repetition_penalty"), "{e}");
    let mut cfg = greedy(&s, 4);
    cfg.token_healing = Some(true);
    let e = m.add_request(Request::new(vec![4, 5], cfg)).unwrap_err();
    assert!(e.to_string().contains("`token_healing`"), "{e}");
    let e = m
        .add_request(Request::new(vec![], greedy(&s, 4)))
        .unwrap_err();
    assert!(e.to_string().contains("no tokens"), "{e}");
    let e = m
        .add_request(Request::new(vec![100_000], greedy(&s, 4)))
        .unwrap_err();
    assert!(e.to_string().contains("vocabulary"), "{e}");
}

#[test]
fn a_stopped_engine_answers_engine_stopped() {
    let s = setup("llama");
    let m =
        ContinuousBatchingManager::new(s.model.clone(), engine_config(4, 64, 64), DType::F32, None)
            .unwrap();
    // Queued before the engine starts, then the stop: the engine thread sees both at once, so
    // the request is still held when it stops.
    let id = m
        .add_streaming_request(Request::new(vec![5, 6, 7], greedy(&s, 8)))
        .unwrap();
    m.stop(false, None);
    m.start().unwrap();
    let last = m.request_id_iter(&id).unwrap().last().unwrap();
    assert_eq!(last.status, RequestStatus::Cancelled);
    assert!(
        matches!(last.error.as_deref(), Some(lmgen::Error::EngineStopped)),
        "{:?}",
        last.error
    );
    assert!(m.join(Some(Duration::from_secs(30))));
    let e = m
        .add_request(Request::new(vec![5, 6, 7], greedy(&s, 8)))
        .unwrap_err();
    assert!(matches!(e, lmgen::Error::EngineStopped), "{e:?}");
}

/// A model whose device holds `budget` tokens of activations: a step over more fails as a GPU
/// out of memory does.
struct TinyMemory {
    model: Arc<dyn CausalLM>,
    budget: usize,
}

impl CausalLM for TinyMemory {
    fn forward(
        &self,
        input: &lmgen::models::ForwardInput<'_>,
        cache: &mut dyn lmgen::cache::KvCache,
    ) -> lmgen::Result<lmgen::models::ModelOutput> {
        let tokens = input.input_ids.elem_count();
        if tokens > self.budget {
            return Err(lmgen::Error::OutOfMemory {
                message: format!(
                    "a step of {tokens} tokens needs more than the {} that fit",
                    self.budget
                ),
            });
        }
        self.model.forward(input, cache)
    }
    fn lm_head(&self, hidden_states: &candle_core::Tensor) -> lmgen::Result<candle_core::Tensor> {
        self.model.lm_head(hidden_states)
    }
    fn config(&self) -> &lmgen::models::ModelConfig {
        self.model.config()
    }
    fn device(&self) -> &candle_core::Device {
        self.model.device()
    }
    fn dtype(&self) -> DType {
        self.model.dtype()
    }
}

#[test]
fn out_of_memory_in_a_step_reaches_the_request_typed() {
    let s = setup("llama");
    let model: Arc<dyn CausalLM> = Arc::new(TinyMemory {
        model: s.model.clone(),
        budget: 16,
    });
    let m =
        ContinuousBatchingManager::new(model, engine_config(4, 64, 64), DType::F32, None).unwrap();
    m.start().unwrap();
    let long = m
        .add_request(Request::new(vec![5; 40], greedy(&s, 4)))
        .unwrap();
    let out = m
        .get_result(Some(&long), Some(Duration::from_secs(120)))
        .unwrap();
    assert_eq!(out.status, RequestStatus::Failed);
    assert!(
        matches!(out.error.as_deref(), Some(lmgen::Error::OutOfMemory { .. })),
        "{:?}",
        out.error
    );
    // A smaller request still fits, and its blocks and the failed one's are free again.
    let short = m
        .add_request(Request::new(vec![5, 6, 7], greedy(&s, 4)))
        .unwrap();
    let out = m
        .get_result(Some(&short), Some(Duration::from_secs(120)))
        .unwrap();
    assert_eq!(out.status, RequestStatus::Finished, "{:?}", out.error);
    assert_eq!(
        out.generated_tokens,
        reference(&s, &[5, 6, 7], &greedy(&s, 4))
    );
    wait_idle(&m);
    assert_eq!(m.stats().blocks_used, 0);
}
