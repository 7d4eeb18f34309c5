//! The assistant's confidence threshold (`assistant_confidence_threshold`): HF `ConfidenceCriteria`
//! (`stopping_criteria.py`) stops drafting after a token whose draft probability is below it, and
//! `AssistedCandidateGenerator.update_candidate_strategy` (`candidate_generator.py`) moves it after
//! each round to the point of the ROC curve of (draft probability, accepted?) that minimises
//! `fpr + 3 * fnr` (false positives cost 25%, false negatives 75%).
//!
//! transformers adapts the threshold only when scikit-learn is installed (it calls
//! `sklearn.metrics.roc_curve`) and only for a separate draft model with the same tokenizer; lmgen
//! always adapts it in that case, with `roc_curve`'s semantics (`drop_intermediate=True`, a first
//! threshold of `+inf`).

/// The threshold and, when it adapts, the history it learns from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfidenceThreshold {
    threshold: f32,
    adapt: bool,
    /// Draft probability of every drafted token still on record.
    probs: Vec<f32>,
    /// Whether each recorded token was accepted (1) or the first rejected one (0).
    matches: Vec<u8>,
}

impl ConfidenceThreshold {
    /// `threshold <= 0` never stops drafting (transformers builds no `ConfidenceCriteria` then).
    pub fn new(threshold: f32, adapt: bool) -> Self {
        Self {
            threshold,
            adapt: adapt && threshold > 0.0,
            probs: Vec::new(),
            matches: Vec::new(),
        }
    }

    /// The current threshold.
    #[cfg(test)]
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// HF `ConfidenceCriteria.__call__`: stop drafting after a token drafted with probability `p`.
    pub fn stops(&self, p: f32) -> bool {
        self.threshold > 0.0 && p < self.threshold
    }

    /// Records the draft probabilities of one round's tokens (HF `_generate_candidates`).
    pub fn record(&mut self, probs: &[f32]) {
        if self.adapt {
            self.probs.extend_from_slice(probs);
        }
    }

    /// HF `update_candidate_strategy`, second half: label the recorded tokens and refit.
    pub fn update(&mut self, num_matches: usize) {
        if !self.adapt {
            return;
        }
        self.matches.extend(std::iter::repeat_n(1, num_matches));
        if self.probs.len() > self.matches.len() {
            self.matches.push(0);
        }
        self.probs.truncate(self.matches.len());
        let has_both = self.matches.contains(&0) && self.matches.contains(&1);
        if self.probs.len() > 5 && has_both {
            if let Some(t) = best_threshold(&self.matches, &self.probs) {
                self.threshold = t;
            }
        }
    }
}

/// `thresholds[argmin(fpr + 3 * (1 - tpr))]` over `sklearn.metrics.roc_curve(labels, scores)`.
fn best_threshold(labels: &[u8], scores: &[f32]) -> Option<f32> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // One point per distinct score (descending): cumulative true and false positives.
    let (mut tps, mut fps, mut thresholds) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tp, mut fp) = (0u64, 0u64);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] == 1 {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_value = order
            .get(k + 1)
            .is_none_or(|&next| scores[next] != scores[i]);
        if last_of_value {
            tps.push(tp);
            fps.push(fp);
            thresholds.push(scores[i]);
        }
    }
    // `drop_intermediate`: keep the ends and the points where the curve bends.
    let n = tps.len();
    let keep: Vec<usize> = (0..n)
        .filter(|&i| {
            if n <= 2 || i == 0 || i + 1 == n {
                return true;
            }
            let bend = |v: &[u64]| v[i - 1] as i64 - 2 * v[i] as i64 + v[i + 1] as i64 != 0;
            bend(&fps) || bend(&tps)
        })
        .collect();
    let (p, f) = (*tps.last()? as f64, *fps.last()? as f64);
    if p == 0.0 || f == 0.0 {
        return None;
    }
    // The prepended point (0, 0) at threshold +inf costs 3, more than the last point (1, 1) costs.
    let mut best = (3.0f64, f32::INFINITY);
    for &i in &keep {
        let cost = fps[i] as f64 / f + 3.0 * (1.0 - tps[i] as f64 / p);
        if cost < best.0 {
            best = (cost, thresholds[i]);
        }
    }
    Some(best.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_stops_below_and_zero_disables() {
        let c = ConfidenceThreshold::new(0.4, false);
        assert!(c.stops(0.39));
        assert!(!c.stops(0.4));
        assert!(!ConfidenceThreshold::new(0.0, true).stops(0.0001));
    }

    #[test]
    fn roc_threshold_matches_sklearn() {
        // sklearn: roc_curve([1,1,0,1,0,0], [0.9,0.8,0.7,0.6,0.5,0.3]) keeps the thresholds
        // [inf, .9, .8, .7, .6, .3] (0.5 is collinear), fpr [0,0,0,1/3,1/3,1], tpr [0,1/3,2/3,2/3,1,1];
        // fpr + 3 fnr = [3, 2, 1, 4/3, 1/3, 1] -> 0.6.
        let t = best_threshold(&[1, 1, 0, 1, 0, 0], &[0.9, 0.8, 0.7, 0.6, 0.5, 0.3]);
        assert_eq!(t, Some(0.6));
        // All accepted at high confidence, rejected at low: the threshold separates them.
        let t = best_threshold(&[1, 1, 1, 0, 0, 0], &[0.9, 0.8, 0.7, 0.2, 0.1, 0.05]);
        assert_eq!(t, Some(0.7));
    }

    #[test]
    fn update_labels_the_first_rejected_token_and_drops_the_rest() {
        let mut c = ConfidenceThreshold::new(0.4, true);
        c.record(&[0.9, 0.8, 0.3]);
        c.update(1); // 0.9 accepted, 0.8 rejected, 0.3 never verified
        assert_eq!(c.matches, vec![1, 0]);
        assert_eq!(c.probs, vec![0.9, 0.8]);
        c.record(&[0.95, 0.7, 0.6, 0.5]);
        c.update(4);
        assert_eq!(c.probs.len(), 6);
        // labels [1,0,1,1,1,1] scores [.9,.8,.95,.7,.6,.5]: fp only at 0.8.
        assert!(c.threshold() <= 0.5, "{}", c.threshold());
    }
}
