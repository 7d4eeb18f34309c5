//! Choosing the next token from processed scores: greedy (`argmax`) or multinomial sampling
//! (HF `_sample`: `probs = softmax(scores)`, `torch.multinomial(probs, 1)`).
//!
//! Randomness comes only from the RNG owned by the sampler, seeded explicitly: the same seed
//! gives the same tokens. Bit-exact parity with torch's RNG is out of scope; sampling is tested
//! statistically (chi-square) against the processed distribution.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::generation::logits::Scores;
use crate::TokenId;

/// Index of the first maximum (NaN counts as the maximum, as `torch.argmax`).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x.is_nan() {
            return i;
        }
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// `softmax(row)` in f64 (an all `-inf` row has no distribution: `None`).
pub fn softmax(row: &[f32]) -> Option<Vec<f64>> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let exps: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    Some(exps.into_iter().map(|e| e / sum).collect())
}

/// How the next token is picked.
#[derive(Debug)]
pub enum Sampler {
    /// `argmax` of the processed scores; ties to the lowest id.
    Greedy,
    /// A draw from `softmax(scores)`.
    Multinomial {
        /// The generator every draw comes from.
        rng: Box<StdRng>,
        /// The seed `rng` started from.
        seed: u64,
    },
}

impl Sampler {
    /// Multinomial sampling seeded with `seed`, or with a fresh seed from the OS when `None`.
    pub fn multinomial(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| StdRng::from_os_rng().random());
        tracing::debug!(seed, "multinomial sampler");
        Sampler::Multinomial {
            rng: Box::new(StdRng::seed_from_u64(seed)),
            seed,
        }
    }

    /// One token per row of `scores`.
    pub fn select(&mut self, scores: &Scores) -> Result<Vec<TokenId>> {
        (0..scores.batch)
            .map(|i| self.select_row(scores.row(i)).map(|t| t as TokenId))
            .collect()
    }

    /// A uniform draw in [0, 1) (speculative sampling's acceptance test, HF `torch.rand_like`).
    /// Greedy decoding has no randomness: an error.
    pub(crate) fn uniform(&mut self) -> Result<f64> {
        match self {
            Sampler::Greedy => Err(Error::input(
                "internal: a random draw was asked of the greedy sampler",
            )),
            Sampler::Multinomial { rng, .. } => Ok(rng.random::<f64>()),
        }
    }

    /// A draw from the distribution `probs` (HF `torch.multinomial(probs, 1)`); greedy takes the
    /// most likely index.
    pub(crate) fn draw_from(&mut self, probs: &[f64]) -> Result<usize> {
        match self {
            Sampler::Greedy => {
                Ok(probs
                    .iter()
                    .enumerate()
                    .fold(0, |best, (i, &p)| if p > probs[best] { i } else { best }))
            }
            Sampler::Multinomial { rng, .. } => Ok(draw(probs, rng.random::<f64>())),
        }
    }

    fn select_row(&mut self, row: &[f32]) -> Result<usize> {
        match self {
            Sampler::Greedy => Ok(argmax(row)),
            Sampler::Multinomial { rng, .. } => {
                if row.iter().any(|x| x.is_nan() || *x == f32::INFINITY) {
                    return Err(Error::input(
                        "the processed scores contain NaN or +inf, so there is no distribution to sample from; set `remove_invalid_values: true`",
                    ));
                }
                let probs = softmax(row).ok_or_else(|| {
                    Error::input(
                        "every token was filtered out (all scores are -inf), so nothing can be sampled; relax the logits processors",
                    )
                })?;
                Ok(draw(&probs, rng.random::<f64>()))
            }
        }
    }
}

/// The index whose cumulative probability first exceeds `u` in [0, 1); never a zero-probability index.
pub(crate) fn draw(probs: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p <= 0.0 {
            continue;
        }
        acc += p;
        last = i;
        if u < acc {
            return i;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn draw_skips_zero_probability_tokens() {
        assert_eq!(draw(&[0.0, 0.5, 0.0, 0.5], 0.0), 1);
        assert_eq!(draw(&[0.0, 0.5, 0.0, 0.5], 0.7), 3);
        assert_eq!(draw(&[0.0, 0.5, 0.0, 0.5], 0.999_999_999), 3);
    }

    #[test]
    fn same_seed_same_tokens() {
        let scores = Scores::new((0..50).map(|i| (i % 7) as f32).collect(), 1, 50);
        let run = |seed| {
            let mut s = Sampler::multinomial(Some(seed));
            (0..20)
                .map(|_| s.select(&scores).unwrap()[0])
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn all_filtered_is_an_error_not_a_panic() {
        let scores = Scores::new(vec![f32::NEG_INFINITY; 4], 1, 4);
        let err = Sampler::multinomial(Some(0)).select(&scores).unwrap_err();
        assert!(err.to_string().contains("-inf"));
    }
}
