//! `GET /metrics` in Prometheus' text format: requests, queue depth, running sequences, KV blocks,
//! tokens in and out, time to first token and inter-token latency.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use lmgen::engine::EngineStats;

/// The labels of `lmgen_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: String,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub prompt_tokens: Counter,
    pub generation_tokens: Counter,
    pub client_disconnects: Counter,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    queue_depth: Gauge,
    running: Gauge,
    kv_blocks_used: Gauge,
    kv_blocks_total: Gauge,
    preemptions: Gauge,
    cancelled: Gauge,
    prefix_cache_hits: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers everything under the `lmgen_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lmgen");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP generation requests by endpoint and status",
            requests.clone(),
        );
        let prompt_tokens = Counter::default();
        registry.register(
            "prompt_tokens",
            "Prompt tokens received",
            prompt_tokens.clone(),
        );
        let generation_tokens = Counter::default();
        registry.register(
            "generation_tokens",
            "Tokens generated",
            generation_tokens.clone(),
        );
        let client_disconnects = Counter::default();
        registry.register(
            "client_disconnects",
            "Requests cancelled because the client went away",
            client_disconnects.clone(),
        );
        let time_to_first_token = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register(
            "time_to_first_token_seconds",
            "Time from request to first generated token",
            time_to_first_token.clone(),
        );
        let inter_token_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        registry.register(
            "inter_token_latency_seconds",
            "Time between consecutive tokens of a sequence",
            inter_token_latency.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let queue_depth = gauge(
            &mut registry,
            "queue_depth",
            "Requests waiting for the engine",
        );
        let running = gauge(
            &mut registry,
            "running_sequences",
            "Sequences in the running batch",
        );
        let kv_blocks_used = gauge(
            &mut registry,
            "kv_blocks_used",
            "KV-cache blocks referenced by a sequence",
        );
        let kv_blocks_total = gauge(
            &mut registry,
            "kv_blocks_total",
            "KV-cache blocks in the pool",
        );
        let preemptions = gauge(
            &mut registry,
            "preemptions",
            "Sequences preempted (recomputed) so far",
        );
        let cancelled = gauge(
            &mut registry,
            "engine_cancelled_requests",
            "Engine requests cancelled so far (client gone, stop sequence seen, shutdown)",
        );
        let prefix_cache_hits = gauge(
            &mut registry,
            "prefix_cache_hit_blocks",
            "Prompt blocks served from the prefix cache so far",
        );
        Self {
            registry,
            requests,
            prompt_tokens,
            generation_tokens,
            client_disconnects,
            time_to_first_token,
            inter_token_latency,
            queue_depth,
            running,
            kv_blocks_used,
            kv_blocks_total,
            preemptions,
            cancelled,
            prefix_cache_hits,
        }
    }

    /// The text exposition, with the engine's gauges as of now.
    pub fn render(&self, stats: &EngineStats) -> String {
        self.queue_depth.set(stats.waiting as i64);
        self.running.set(stats.running as i64);
        self.kv_blocks_used.set(stats.blocks_used as i64);
        self.kv_blocks_total.set(stats.blocks_total as i64);
        self.preemptions.set(stats.preemptions as i64);
        self.cancelled.set(stats.cancelled as i64);
        self.prefix_cache_hits.set(stats.prefix_hits as i64);
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
