//! Metrics (Prometheus text on the admin listener) and log setup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    // Shared and static: counting a request copies no string.
    pub route: std::sync::Arc<str>,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// An operator's pause or resume: `action` is `pause` or `resume`, `scope`
/// `agent`, `route`, `tool` or `all`, `mode` `hold` or `deny` (a resume
/// names the mode it lifted).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverrideLabels {
    pub action: &'static str,
    pub scope: &'static str,
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    pub verdict: String,
}

/// A reviewer's verdict on a sampled call: `ok`, `bad` or `policy_gap`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub verdict: &'static str,
}

/// Every metric Airlock exports. Counters and the decision histogram are
/// atomics inside; a family takes a read lock to find its series, so the
/// request path keeps the series it uses (see `AgentConnection`).
pub struct Metrics {
    registry: Registry,
    pub requests: Family<VerdictLabels, Counter>,
    pub decision_seconds: DecisionHistogram,
    pub decisions_memoized: Counter,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub shadow_differences: Family<ShadowLabels, Counter>,
    pub audit_backpressure: Counter,
    pub audit_write_errors: Counter,
    pub audit_dropped: Counter,
    pub audit_buffered: Gauge,
    pub holds_pending: Gauge,
    pub webhook_deliveries: Family<ResultLabels, Counter>,
    pub overrides: Family<OverrideLabels, Counter>,
    pub pauses_active: Gauge,
    pub reviews: Family<ReviewLabels, Counter>,
    pub reviews_sampled: Counter,
    pub reviews_dropped: Counter,
    pub counter_flush_failures: Counter,
}

/// Decision times in buckets of 1 µs, 2 µs, 4 µs ... 2^19 µs (about half a
/// second) and above. prometheus-client's histogram takes a write lock for
/// every observation, and every worker thread decides: this one counts with
/// atomics only.
#[derive(Clone, Debug, Default)]
pub struct DecisionHistogram {
    inner: Arc<DecisionBuckets>,
}

#[derive(Debug, Default)]
struct DecisionBuckets {
    /// Observations per bucket (not cumulative); the last is above 2^19 µs.
    counts: [AtomicU64; DECISION_BUCKETS + 1],
    sum_micros: AtomicU64,
}

const DECISION_BUCKETS: usize = 20;

// === impl DecisionHistogram ===

impl DecisionHistogram {
    pub fn observe_micros(&self, micros: u64) {
        // The first bucket whose bound 2^i µs is at least `micros`.
        let i = match micros {
            0 | 1 => 0,
            n => (u64::BITS - (n - 1).leading_zeros()) as usize,
        };
        let b = &self.inner;
        // Relaxed: each is a count read only when metrics are scraped.
        b.counts[i.min(DECISION_BUCKETS)].fetch_add(1, Ordering::Relaxed);
        b.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

impl TypedMetric for DecisionHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DecisionHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let b = &self.inner;
        let buckets: Vec<(f64, u64)> = b
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let bound = if i < DECISION_BUCKETS {
                    (1u64 << i) as f64 / 1e6
                } else {
                    f64::MAX
                };
                (bound, n.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = b.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("airlock");
        let requests = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "requests",
            "Agent calls by route and verdict",
            requests.clone(),
        );
        let decision_seconds = DecisionHistogram::default();
        registry.register(
            "decision_seconds",
            "Time to decide a call (mapping, entities, Cedar, verdict)",
            decision_seconds.clone(),
        );
        let decisions_memoized = Counter::default();
        registry.register(
            "decisions_memoized",
            "Decisions answered from the decision memo, without running Cedar",
            decisions_memoized.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy and config reloads by result",
            policy_reloads.clone(),
        );
        let shadow_differences = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "shadow_differences",
            "Calls where shadow policies would have changed the verdict",
            shadow_differences.clone(),
        );
        let audit_backpressure = Counter::default();
        registry.register(
            "audit_backpressure",
            "Times a request waited for room in the audit queue",
            audit_backpressure.clone(),
        );
        let audit_write_errors = Counter::default();
        registry.register(
            "audit_write_errors",
            "Failed attempts to hand audit records to the sink (each is retried)",
            audit_write_errors.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped",
            "Audit records that were not kept (audit.on_failure: continue with a full buffer, shutdown with the sink failing, a record the sink refused for good)",
            audit_dropped.clone(),
        );
        let audit_buffered = Gauge::default();
        registry.register(
            "audit_buffered",
            "Audit records waiting for the sink",
            audit_buffered.clone(),
        );
        let holds_pending = Gauge::default();
        registry.register(
            "holds_pending",
            "Approvals waiting for a human",
            holds_pending.clone(),
        );
        let webhook_deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Outgoing webhook attempts by result",
            webhook_deliveries.clone(),
        );
        let overrides = Family::<OverrideLabels, Counter>::default();
        registry.register(
            "overrides",
            "Operators' pauses and resumes by scope and mode",
            overrides.clone(),
        );
        let pauses_active = Gauge::default();
        registry.register(
            "pauses_active",
            "Pauses in force (agents, routes, tools, everything)",
            pauses_active.clone(),
        );
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "reviews",
            "Reviewers' verdicts on sampled calls",
            reviews.clone(),
        );
        let reviews_sampled = Counter::default();
        registry.register(
            "reviews_sampled",
            "Sampled calls queued for the store as review items",
            reviews_sampled.clone(),
        );
        let reviews_dropped = Counter::default();
        registry.register(
            "reviews_dropped",
            "Sampled calls not kept: the review queue was full or the store refused them",
            reviews_dropped.clone(),
        );
        let counter_flush_failures = Counter::default();
        registry.register(
            "counter_flush_failures",
            "Failed attempts to store the daily counters (the sums stay in memory and are retried)",
            counter_flush_failures.clone(),
        );
        Metrics {
            reviews,
            reviews_sampled,
            reviews_dropped,
            registry,
            requests,
            decision_seconds,
            decisions_memoized,
            policy_reloads,
            shadow_differences,
            audit_backpressure,
            audit_write_errors,
            audit_dropped,
            audit_buffered,
            holds_pending,
            webhook_deliveries,
            overrides,
            pauses_active,
            counter_flush_failures,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Logs go to stderr (stdout may carry the audit stream). `RUST_LOG`
/// overrides the default level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("airlock=info,warn"));
    // Colour only for a person at a terminal: escape codes in a log file or
    // a journal are noise.
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_times_land_in_cumulative_power_of_two_buckets() {
        let metrics = Metrics::new();
        for micros in [0, 1, 2, 3, 4, 5, 1_000, 600_000] {
            metrics.decision_seconds.observe_micros(micros);
        }
        let text = metrics.encode();
        let bucket = |le: &str| {
            let prefix = format!("airlock_decision_seconds_bucket{{le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no bucket {le} in:\n{text}"))
                .to_string()
        };
        // 0 and 1 µs; then 2; then 3 and 4; 5 by 8 µs; 1 ms by 1.024 ms.
        assert_eq!(bucket("0.000001"), "2");
        assert_eq!(bucket("0.000002"), "3");
        assert_eq!(bucket("0.000004"), "5");
        assert_eq!(bucket("0.000008"), "6");
        assert_eq!(bucket("0.001024"), "7");
        assert_eq!(bucket("+Inf"), "8");
        assert!(text.contains("airlock_decision_seconds_count 8"), "{text}");
        assert!(
            text.contains("airlock_decision_seconds_sum 0.601015"),
            "{text}"
        );
    }
}
