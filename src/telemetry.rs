//! Metrics (Prometheus text on the admin listener) and log setup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    pub verdict: String,
}

/// Every metric Airlock exports. The types are atomics inside, so updates
/// on the request path take no lock.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<VerdictLabels, Counter>,
    pub decision_seconds: Histogram,
    pub decisions_memoized: Counter,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub shadow_differences: Family<ShadowLabels, Counter>,
    pub audit_backpressure: Counter,
    pub holds_pending: Gauge,
    pub webhook_deliveries: Family<ResultLabels, Counter>,
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
        let decision_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 20));
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
        Metrics {
            registry,
            requests,
            decision_seconds,
            decisions_memoized,
            policy_reloads,
            shadow_differences,
            audit_backpressure,
            holds_pending,
            webhook_deliveries,
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
