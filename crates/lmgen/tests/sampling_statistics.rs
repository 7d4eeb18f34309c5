//! Sampling draws from softmax of the processed scores: chi-square goodness of fit over many
//! seeded draws (deterministic: fixed seed) for each sampling warper, and filtered tokens never drawn.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use lmgen::generation::config::UnknownFields;
use lmgen::generation::logits::{LogitsProcessorList, ProcessorContext, Scores};
use lmgen::generation::sampler::{softmax, Sampler};
use lmgen::GenerationConfig;
use serde_json::json;

const VOCAB: usize = 40;
const DRAWS: usize = 20_000;

/// Fixed, uneven scores.
fn scores() -> Vec<f32> {
    (0..VOCAB)
        .map(|i| ((i * 7919) % 97) as f32 / 20.0 - 2.0)
        .collect()
}

/// Upper 0.1% point of chi-square with `df` degrees of freedom (Wilson-Hilferty).
fn critical(df: usize) -> f64 {
    let d = df as f64;
    let z = 3.09;
    d * (1.0 - 2.0 / (9.0 * d) + z * (2.0 / (9.0 * d)).sqrt()).powi(3)
}

fn check(overrides: serde_json::Value) {
    let mut config =
        GenerationConfig::from_json(&json!({"do_sample": true}), UnknownFields::Reject).unwrap();
    config.update(&GenerationConfig::from_json(&overrides, UnknownFields::Reject).unwrap());
    let ids = vec![vec![1u32, 2, 3]];
    let list = LogitsProcessorList::from_config(&config, ProcessorContext::new(3, 0, 20)).unwrap();
    let mut processed = Scores::new(scores(), 1, VOCAB);
    list.process(&ids, &mut processed).unwrap();
    let probs = softmax(processed.row(0)).unwrap();
    let kept = probs.iter().filter(|&&p| p > 0.0).count();
    assert!(
        kept >= 2,
        "{overrides}: the test needs a distribution, kept {kept}"
    );

    let mut sampler = Sampler::multinomial(Some(1234));
    let mut counts = vec![0usize; VOCAB];
    for _ in 0..DRAWS {
        counts[sampler.select(&processed).unwrap()[0] as usize] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        assert!(
            probs[i] > 0.0 || c == 0,
            "{overrides}: token {i} was filtered out but drawn {c} times"
        );
    }
    // Pool categories with small expected counts so every bin expects at least 5.
    let (mut chi2, mut bins, mut pool_obs, mut pool_exp) = (0.0, 0, 0.0, 0.0);
    for (i, &p) in probs.iter().enumerate().filter(|(_, &p)| p > 0.0) {
        let exp = p * DRAWS as f64;
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
        "{overrides}: chi-square {chi2:.1} >= {crit:.1} over {bins} bins"
    );
}

#[test]
fn plain_sampling_matches_softmax() {
    check(json!({}));
}

#[test]
fn temperature() {
    check(json!({"temperature": 0.7}));
}

#[test]
fn top_k() {
    check(json!({"top_k": 5}));
}

#[test]
fn top_p() {
    check(json!({"top_p": 0.8}));
}

#[test]
fn min_p() {
    check(json!({"min_p": 0.1}));
}

#[test]
fn typical_p() {
    check(json!({"typical_p": 0.7}));
}

#[test]
fn a_wrong_distribution_is_detected() {
    // The statistic has power: draws from softmax(scores) do not fit softmax(scores / 0.5).
    let probs = softmax(&scores().iter().map(|s| s / 0.5).collect::<Vec<_>>()).unwrap();
    let processed = Scores::new(scores(), 1, VOCAB);
    let mut sampler = Sampler::multinomial(Some(1234));
    let mut counts = vec![0usize; VOCAB];
    for _ in 0..DRAWS {
        counts[sampler.select(&processed).unwrap()[0] as usize] += 1;
    }
    let chi2: f64 = probs
        .iter()
        .zip(&counts)
        .filter(|(p, _)| **p * DRAWS as f64 >= 5.0)
        .map(|(p, &c)| (c as f64 - p * DRAWS as f64).powi(2) / (p * DRAWS as f64))
        .sum();
    assert!(
        chi2 > critical(VOCAB - 1),
        "chi-square {chi2} should reject the wrong distribution"
    );
}
