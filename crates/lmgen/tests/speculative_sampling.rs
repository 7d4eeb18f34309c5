//! Speculative sampling keeps the target's distribution (Leviathan et al. 2023, theorem 1), with a
//! draft that often disagrees with the target: chi-square goodness of fit over many seeded draws
//! (deterministic: fixed seeds), for the rule alone on fixed distributions and end to end through
//! `generate()` with the golden llama and its `llama-draft` assistant.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};

use lmgen::generation::config::UnknownFields;
use lmgen::generation::logits::Scores;
use lmgen::generation::sampler::{softmax, Sampler};
use lmgen::generation::strategies::assisted::speculative_sampling;
use lmgen::generation::GenerateOptions;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::json;

/// Upper 0.1% point of chi-square with `df` degrees of freedom (Wilson-Hilferty).
fn critical(df: usize) -> f64 {
    let d = df as f64;
    let z = 3.09;
    d * (1.0 - 2.0 / (9.0 * d) + z * (2.0 / (9.0 * d)).sqrt()).powi(3)
}

/// Chi-square of `counts` against `probs` (bins expecting fewer than 5 pooled); panics past the
/// 0.1% critical value, and when a zero-probability token was drawn.
fn assert_fits(what: &str, counts: &[usize], probs: &[f64]) {
    let n: usize = counts.iter().sum();
    let (mut chi2, mut bins, mut pool_obs, mut pool_exp) = (0.0, 0, 0.0, 0.0);
    for (i, &p) in probs.iter().enumerate() {
        assert!(
            p > 0.0 || counts[i] == 0,
            "{what}: token {i} has probability 0 but was drawn {} times",
            counts[i]
        );
        if p == 0.0 {
            continue;
        }
        let exp = p * n as f64;
        if exp < 5.0 {
            pool_obs += counts[i] as f64;
            pool_exp += exp;
            continue;
        }
        chi2 += (counts[i] as f64 - exp).powi(2) / exp;
        bins += 1;
    }
    if pool_exp > 0.0 {
        chi2 += (pool_obs - pool_exp).powi(2) / pool_exp;
        bins += 1;
    }
    let crit = critical(bins.max(2) - 1);
    assert!(
        chi2 < crit,
        "{what}: chi-square {chi2:.1} >= {crit:.1} over {bins} bins ({n} draws)"
    );
}

const VOCAB: usize = 12;

/// Fixed uneven scores; `shift` moves the mass elsewhere (a draft that disagrees).
fn scores(shift: usize, sharp: f32) -> Vec<f32> {
    (0..VOCAB)
        .map(|i| (((i + shift) * 7) % VOCAB) as f32 * sharp)
        .collect()
}

#[test]
fn the_rule_alone_keeps_the_target_distribution_at_every_position() {
    const DRAWS: usize = 40_000;
    // Target p_i and a draft q_i that puts its mass on other tokens; one token filtered (-inf).
    let mut target: Vec<f32> = [
        scores(0, 0.4),
        scores(3, 0.3),
        scores(5, 0.5),
        scores(1, 0.2),
    ]
    .concat();
    target[2] = f32::NEG_INFINITY; // p_0 gives token 2 no mass
    let draft: Vec<f32> = [scores(6, 0.5), scores(8, 0.4), scores(2, 0.6)].concat();
    let target = Scores::new(target, 4, VOCAB);
    let draft = Scores::new(draft, 3, VOCAB);
    let p: Vec<Vec<f64>> = (0..4).map(|i| softmax(target.row(i)).unwrap()).collect();

    let mut draft_sampler = Sampler::multinomial(Some(7));
    let mut sampler = Sampler::multinomial(Some(11));
    let mut counts = vec![vec![0usize; VOCAB]; 4];
    let (mut drafted, mut accepted) = (0, 0);
    for _ in 0..DRAWS {
        // The draft draws its candidates from q, as the draft model does.
        let candidates: Vec<u32> = (0..3)
            .map(|i| {
                let row = Scores::new(draft.row(i).to_vec(), 1, VOCAB);
                draft_sampler.select(&row).unwrap()[0]
            })
            .collect();
        let (tokens, n) = speculative_sampling(&candidates, &draft, &target, &mut sampler).unwrap();
        assert_eq!(tokens.len(), n + 1);
        assert_eq!(&tokens[..n], &candidates[..n]);
        drafted += 3;
        accepted += n;
        // Position i's token, whenever the output reaches it, is a draw from p_i (the rows here do
        // not depend on the earlier tokens, so no conditioning is needed).
        for (i, &t) in tokens.iter().enumerate() {
            counts[i][t as usize] += 1;
        }
    }
    let rate = accepted as f64 / drafted as f64;
    assert!(
        rate < 0.5,
        "the draft should disagree often; acceptance {rate:.2}"
    );
    for i in 0..4 {
        assert!(
            counts[i].iter().sum::<usize>() > 500,
            "position {i} reached too rarely"
        );
        assert_fits(&format!("position {i}"), &counts[i], &p[i]);
    }
}

#[test]
fn a_wrong_rule_would_be_detected() {
    // Power check: keeping every candidate (no rejection) gives the draft's distribution, which the
    // test rejects.
    const DRAWS: usize = 20_000;
    let target = Scores::new(scores(0, 0.4), 1, VOCAB);
    let draft = Scores::new(scores(6, 0.5), 1, VOCAB);
    let p = softmax(target.row(0)).unwrap();
    let mut draft_sampler = Sampler::multinomial(Some(7));
    let mut counts = vec![0usize; VOCAB];
    for _ in 0..DRAWS {
        counts[draft_sampler.select(&draft).unwrap()[0] as usize] += 1;
    }
    let result = std::panic::catch_unwind(|| assert_fits("draft", &counts, &p));
    assert!(
        result.is_err(),
        "draws from the draft must not fit the target"
    );
}

fn golden(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/models")
        .join(model)
}

#[test]
fn generate_with_a_disagreeing_draft_samples_the_targets_distribution() {
    const DRAWS: usize = 3_000;
    let target = Pipeline::from_pretrained(golden("llama").to_str().unwrap()).unwrap();
    let draft = Pipeline::from_pretrained(golden("llama-draft").to_str().unwrap()).unwrap();
    let input = GenerateInput::single(vec![1, 420, 311, 659, 706, 278, 341, 451, 617, 325]);
    let fields = json!({"do_sample": true, "temperature": 1.5, "top_k": 40, "max_new_tokens": 2,
                        "num_assistant_tokens": 1, "assistant_confidence_threshold": 0.0});
    let config = GenerationConfig::from_json(&fields, UnknownFields::Reject).unwrap();

    // The target's processed distribution of the first new token, from the plain sampling loop.
    let mut plain = config.clone();
    plain.output_scores = Some(true);
    plain.return_dict_in_generate = Some(true);
    let out = target.generate(&input, &plain).unwrap();
    let p = softmax(out.scores.unwrap()[0].row(0)).unwrap();

    let mut counts = vec![0usize; p.len()];
    let (mut drafted, mut accepted) = (0, 0);
    for seed in 0..DRAWS as u64 {
        let options = GenerateOptions {
            seed: Some(seed),
            ..target.assisted_by(&draft)
        };
        let out = target.generate_with(&input, &config, options).unwrap();
        let stats = out.assisted.unwrap();
        drafted += stats.drafted;
        accepted += stats.accepted;
        counts[out.generated(0)[0] as usize] += 1;
    }
    let rate = accepted as f64 / drafted as f64;
    assert!(drafted >= DRAWS, "one candidate per call: {drafted}");
    assert!(
        rate > 0.02 && rate < 0.7,
        "the draft should disagree often but not always; acceptance {rate:.3}"
    );
    assert_fits("first new token", &counts, &p);
}
