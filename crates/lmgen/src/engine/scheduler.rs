//! Which sequences run in the next step, and how many of their tokens (transformers'
//! `FIFOScheduler` / `PrefillFirstScheduler`, vLLM's scheduler).
//!
//! Every step has a token budget. Running sequences are served first, in the policy's order, each
//! with its pending tokens (1 when decoding, a chunk of its prompt when prefilling: chunked
//! prefill); then waiting sequences are admitted in arrival order while budget, batch room and
//! blocks last. A running sequence that needs a block when none is free takes one from the most
//! recently arrived unscheduled sequence, which is preempted (blocks freed, recomputed later), or
//! is preempted itself if it is the most recent.

use std::collections::{HashMap, VecDeque};

use super::sequence::Sequence;
use super::SchedulerPolicy;
use crate::cache::paged::BlockAllocator;
use crate::engine::request::RequestStatus;

/// The scheduler's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub policy: SchedulerPolicy,
    /// Tokens per step (new tokens of all sequences together).
    pub max_batch_tokens: usize,
    /// Sequences per step.
    pub max_running: usize,
    pub prefix_caching: bool,
}

/// A step's plan: `(index in running, new tokens)`, in running order, and the preemptions made.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub batch: Vec<(usize, usize)>,
    pub preemptions: usize,
}

/// Plans one step; moves admitted sequences from `waiting` to `running` and preempted ones back.
pub(crate) fn schedule(
    limits: Limits,
    running: &mut Vec<Sequence>,
    waiting: &mut VecDeque<Sequence>,
    alloc: &mut BlockAllocator,
) -> Plan {
    let mut budget = limits.max_batch_tokens.max(1);
    let mut planned: Vec<Option<usize>> = vec![None; running.len()];
    let mut preempted = vec![false; running.len()];
    let mut preemptions = 0;
    let mut order: Vec<usize> = (0..running.len()).collect();
    match limits.policy {
        SchedulerPolicy::Fifo => order.sort_by_key(|&i| running[i].arrival),
        SchedulerPolicy::PrefillFirst => {
            order.sort_by_key(|&i| (running[i].pending() <= 1, running[i].arrival))
        }
    }
    for &i in &order {
        if budget == 0 {
            break;
        }
        if preempted[i] {
            continue;
        }
        let chunk = running[i].pending().min(budget);
        loop {
            let want = running[i].computed + chunk;
            let seq = &mut running[i];
            if seq.grow(want, alloc) {
                planned[i] = Some(chunk);
                budget -= chunk;
                break;
            }
            let victim = (0..planned.len())
                .filter(|&j| j != i && !preempted[j] && planned[j].is_none())
                .max_by_key(|&j| running[j].arrival)
                .filter(|&j| running[j].arrival > running[i].arrival);
            let j = victim.unwrap_or(i);
            tracing::debug!(request = %running[j].id, "preempted: out of KV blocks");
            running[j].preempt(alloc);
            preempted[j] = true;
            preemptions += 1;
            if j == i {
                break;
            }
        }
    }
    // Admit waiting sequences (not while preempting: the pool is full).
    let mut active = preempted.iter().filter(|&&p| !p).count();
    while preemptions == 0 && budget > 0 && active < limits.max_running {
        let Some(seq) = waiting.front_mut() else {
            break;
        };
        if limits.prefix_caching && seq.computed == 0 {
            let cached = seq.share_prefix(alloc);
            if seq.tokens.len() == seq.prompt_len {
                seq.cached_prompt_tokens = cached;
            }
        }
        let chunk = seq.pending().min(budget);
        // An encoder-decoder sequence also takes the blocks of its cross-attention keys and values.
        if !seq.grow(seq.computed + chunk, alloc) {
            seq.preempt(alloc); // gives back the shared prefix (and cross-attention) blocks
            break;
        }
        let Some(mut seq) = waiting.pop_front() else {
            break;
        };
        seq.status = RequestStatus::Prefilling;
        running.push(seq);
        planned.push(Some(chunk));
        preempted.push(false);
        budget -= chunk;
        active += 1;
    }
    // Preempted sequences go back to the queue, in arrival order, ahead of later arrivals.
    let mut kept = Vec::with_capacity(running.len());
    let mut plan_by_arrival = HashMap::new();
    for (i, seq) in std::mem::take(running).into_iter().enumerate() {
        if preempted[i] {
            waiting.push_back(seq);
        } else {
            if let Some(n) = planned[i] {
                plan_by_arrival.insert(seq.arrival, n);
            }
            kept.push(seq);
        }
    }
    if preemptions > 0 {
        waiting.make_contiguous().sort_by_key(|s| s.arrival);
    }
    *running = kept;
    let batch = running
        .iter()
        .enumerate()
        .filter_map(|(i, s)| plan_by_arrival.get(&s.arrival).map(|&n| (i, n)))
        .collect();
    Plan { batch, preemptions }
}
