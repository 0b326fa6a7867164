//! The daily counters as the data plane and the approvals count them, in
//! memory, until [`DailyCounters::flush`] adds them to the store.
//!
//! Each data-plane worker counts into a shard of its own, so no two
//! workers ever touch the same lock or cache line; the control plane
//! (decisions, expiries, reviews) shares one more shard. The flusher takes
//! each shard's sums in turn, which is the only other hand on its lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::counters::{day_of_ms, CounterKind, CounterRow, CounterStore, COUNTER_KINDS};
use crate::store::StoreError;
use crate::telemetry::Metrics;

/// How often the sums in memory are added to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

type Counts = [u64; COUNTER_KINDS];
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One day's counts: target, then policy, each looked up by `&str` so that
/// counting a call copies no string once its counter exists.
type DayCounts = FastMap<Box<str>, FastMap<Box<str>, Counts>>;

/// One shard: the days it holds counts for (one, or two around midnight).
#[derive(Default)]
struct Shard {
    days: Vec<(i64, DayCounts)>,
}

impl Shard {
    fn add(&mut self, day: i64, policy: &str, target: &str, kind: CounterKind, n: u64) {
        let at = match self.days.iter().position(|(d, _)| *d == day) {
            Some(i) => i,
            None => {
                self.days.push((day, DayCounts::default()));
                self.days.len() - 1
            }
        };
        let by_target = &mut self.days[at].1;
        let by_policy = match by_target.get_mut(target) {
            Some(m) => m,
            None => by_target.entry(target.into()).or_default(),
        };
        let counts = match by_policy.get_mut(policy) {
            Some(c) => c,
            None => by_policy.entry(policy.into()).or_insert([0; COUNTER_KINDS]),
        };
        counts[kind.index()] = counts[kind.index()].saturating_add(n);
    }
}

/// Sums taken from the shards and not yet stored.
type Unflushed = HashMap<(i64, String, String), Counts>;

/// Why the last flush failed, for `/healthz`.
#[derive(Debug, Clone)]
pub struct FlushTrouble {
    pub since_ms: i64,
    pub error: String,
    /// Counts kept in memory for the next try.
    pub kept: u64,
}

/// Daily counters, in memory until flushed.
pub struct DailyCounters {
    // A std mutex per shard: its worker is the only one counting into it,
    // so it is never contended but for the flusher's brief take, and
    // nothing awaits under it.
    shards: Box<[Mutex<Shard>]>,
    // A tokio mutex: held across the store write, so that the periodic
    // flush and the one at shutdown never send the same sums twice.
    unflushed: tokio::sync::Mutex<Unflushed>,
    // A std mutex: read by `/healthz`, written after a flush; never held
    // across an await.
    trouble: Mutex<Option<FlushTrouble>>,
    metrics: Arc<Metrics>,
}

impl DailyCounters {
    /// Counters for `workers` data-plane workers (and the control plane).
    pub fn new(workers: usize, metrics: Arc<Metrics>) -> DailyCounters {
        DailyCounters {
            shards: (0..=workers).map(|_| Mutex::default()).collect(),
            unflushed: tokio::sync::Mutex::default(),
            trouble: Mutex::new(None),
            metrics,
        }
    }

    fn add(&self, now_ms: i64, policies: &[String], target: &str, kind: CounterKind, n: u64) {
        let last = self.shards.len() - 1;
        let i = crate::workers::worker_index().map_or(last, |w| w.min(last));
        let day = day_of_ms(now_ms);
        // A poisoned shard only means a panic elsewhere mid-count: the
        // counts are still sums, so keep counting.
        let mut shard = self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if policies.is_empty() {
            shard.add(day, "", target, kind, n);
        }
        for p in policies {
            shard.add(day, p, target, kind, n);
        }
    }

    /// Counts a call judged `verdict` (`allow`, `deny` or `hold`; anything
    /// else is not a verdict of the policies and is not counted) by
    /// `policies` (the determining ones) on `target` (the route, or
    /// `route/tool`).
    pub fn count_call(&self, now_ms: i64, policies: &[String], target: &str, verdict: &str) {
        let kind = match verdict {
            "allow" => CounterKind::Allowed,
            "deny" => CounterKind::Denied,
            "hold" => CounterKind::Held,
            _ => return,
        };
        self.add(now_ms, policies, target, kind, 1);
    }

    /// Counts what became of a hold under `gates` on `target`: one of the
    /// hold outcomes, and for a human's decision the time it took.
    pub fn count_hold_outcome(
        &self,
        now_ms: i64,
        gates: &[String],
        target: &str,
        outcome: CounterKind,
        decided_after_ms: Option<i64>,
    ) {
        self.add(now_ms, gates, target, outcome, 1);
        if let Some(ms) = decided_after_ms {
            self.add(now_ms, gates, target, CounterKind::decided_after_ms(ms), 1);
        }
    }

    /// Counts a reviewer's verdict (`ok`, `bad` or `policy_gap`) on a
    /// sampled call to `target` allowed by `policies`; false (and nothing
    /// counted) for any other verdict.
    pub fn count_review(
        &self,
        now_ms: i64,
        policies: &[String],
        target: &str,
        verdict: &str,
    ) -> bool {
        let kind = match verdict {
            "ok" => CounterKind::ReviewOk,
            "bad" => CounterKind::ReviewBad,
            "policy_gap" => CounterKind::ReviewPolicyGap,
            _ => return false,
        };
        self.add(now_ms, policies, target, kind, 1);
        true
    }

    /// Moves every shard's sums into `into`.
    fn take_shards(&self, into: &mut Unflushed) {
        for shard in self.shards.iter() {
            let days = {
                let mut s = shard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                std::mem::take(&mut s.days)
            };
            for (day, targets) in days {
                for (target, policies) in targets {
                    for (policy, counts) in policies {
                        let sum = into
                            .entry((day, policy.into(), target.to_string()))
                            .or_insert([0; COUNTER_KINDS]);
                        for (s, c) in sum.iter_mut().zip(counts) {
                            *s = s.saturating_add(c);
                        }
                    }
                }
            }
        }
    }

    /// Adds the sums counted so far to `store`; on failure keeps them for
    /// the next flush, counts the failure and reports it on `/healthz`.
    /// Returns how many counter rows were stored.
    pub async fn flush(&self, store: &dyn CounterStore) -> Result<usize, StoreError> {
        let mut unflushed = self.unflushed.lock().await;
        self.take_shards(&mut unflushed);
        let rows = rows_of(&unflushed);
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        match store.add_counts(rows).await {
            Ok(()) => {
                unflushed.clear();
                *self.trouble_slot() = None;
                Ok(n)
            }
            Err(e) => {
                self.metrics.counter_flush_failures.inc();
                let kept = unflushed.values().flat_map(|c| c.iter()).sum();
                let mut trouble = self.trouble_slot();
                let since_ms = trouble
                    .as_ref()
                    .map_or_else(crate::clock::now_ms, |t| t.since_ms);
                *trouble = Some(FlushTrouble {
                    since_ms,
                    error: e.to_string(),
                    kept,
                });
                Err(e)
            }
        }
    }

    fn trouble_slot(&self) -> std::sync::MutexGuard<'_, Option<FlushTrouble>> {
        self.trouble
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Why the counters could not be stored, while they cannot.
    pub fn trouble(&self) -> Option<FlushTrouble> {
        self.trouble_slot().clone()
    }

    /// Flushes every [`FLUSH_EVERY`] until the task is aborted.
    pub fn spawn_flusher(
        self: &Arc<Self>,
        store: Arc<dyn CounterStore>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = me.flush(store.as_ref()).await {
                    tracing::warn!("daily counters kept in memory, not stored: {e}");
                }
            }
        })
    }
}

fn rows_of(sums: &Unflushed) -> Vec<CounterRow> {
    let mut rows = Vec::new();
    for ((day, policy, target), counts) in sums {
        for (i, n) in counts.iter().enumerate() {
            if let (Some(kind), true) = (CounterKind::from_index(i), *n > 0) {
                rows.push(CounterRow {
                    day: *day,
                    policy: policy.clone(),
                    target: target.clone(),
                    kind,
                    count: *n,
                });
            }
        }
    }
    rows
}

/// The target a hold's resource (`Route::"crm"`, `Tool::"crm/lookup"`)
/// names: the route, or `route/tool`.
pub fn target_of_resource(resource: &str) -> &str {
    resource
        .split_once("::\"")
        .map_or(resource, |(_, rest)| rest.strip_suffix('"').unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    const DAY: i64 = 86_400_000;

    fn sorted(mut rows: Vec<CounterRow>) -> Vec<(i64, String, String, String, u64)> {
        rows.sort_by_key(|r| (r.day, r.policy.clone(), r.target.clone(), r.kind.index()));
        rows.into_iter()
            .map(|r| (r.day, r.policy, r.target, r.kind.as_str(), r.count))
            .collect()
    }

    #[tokio::test]
    async fn sums_reach_the_store_once_per_day_policy_and_target() {
        let c = DailyCounters::new(2, Arc::new(Metrics::new()));
        let store = SqliteStore::in_memory().unwrap();
        let p = vec!["permit-crm".to_string()];
        c.count_call(5, &p, "crm", "allow");
        c.count_call(6, &p, "crm", "allow");
        c.count_call(DAY + 1, &p, "crm", "deny");
        c.count_call(7, &[], "crm", "deny");
        c.count_call(8, &p, "crm", "error");
        c.count_hold_outcome(9, &p, "crm/lookup", CounterKind::Approved, Some(12_000));
        assert!(c.count_review(9, &p, "crm/lookup", "bad"));
        assert!(!c.count_review(9, &p, "crm/lookup", "meh"));
        assert_eq!(c.flush(&store).await.unwrap(), 6);
        assert_eq!(c.flush(&store).await.unwrap(), 0);
        c.count_call(5, &p, "crm", "allow");
        c.flush(&store).await.unwrap();
        let got = sorted(store.counts_since(0).await.unwrap());
        let s = |d: i64, p: &str, t: &str, k: &str, n: u64| (d, p.into(), t.into(), k.into(), n);
        assert_eq!(
            got,
            vec![
                s(0, "", "crm", "denied", 1),
                s(0, "permit-crm", "crm", "allowed", 3),
                s(0, "permit-crm", "crm/lookup", "hold_approved", 1),
                s(0, "permit-crm", "crm/lookup", "review_bad", 1),
                s(0, "permit-crm", "crm/lookup", "decided_le_30s", 1),
                s(1, "permit-crm", "crm", "denied", 1),
            ]
        );
        assert_eq!(store.counts_since(1).await.unwrap().len(), 1);
    }

    /// A store whose writes fail until told otherwise.
    struct Flaky {
        inner: SqliteStore,
        failing: std::sync::atomic::AtomicBool,
    }

    impl CounterStore for Flaky {
        fn add_counts(&self, rows: Vec<CounterRow>) -> crate::store::StoreFuture<'_, ()> {
            if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
                return Box::pin(async { Err(StoreError::Backend("disk full".into())) });
            }
            self.inner.add_counts(rows)
        }

        fn counts_since(&self, day: i64) -> crate::store::StoreFuture<'_, Vec<CounterRow>> {
            self.inner.counts_since(day)
        }

        fn first_day(&self) -> crate::store::StoreFuture<'_, Option<i64>> {
            self.inner.first_day()
        }
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_the_sums_counts_the_failure_and_retries() {
        let metrics = Arc::new(Metrics::new());
        let c = DailyCounters::new(1, metrics.clone());
        let store = Flaky {
            inner: SqliteStore::in_memory().unwrap(),
            failing: true.into(),
        };
        let p = vec!["gate".to_string()];
        c.count_call(1, &p, "crm", "hold");
        assert!(c.flush(&store).await.is_err());
        c.count_call(2, &p, "crm", "hold");
        assert!(c.flush(&store).await.is_err());
        let trouble = c.trouble().unwrap();
        assert_eq!(trouble.kept, 2);
        assert!(trouble.error.contains("disk full"), "{}", trouble.error);
        assert_eq!(metrics.counter_flush_failures.get(), 2);
        store
            .failing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(c.flush(&store).await.unwrap(), 1);
        assert!(c.trouble().is_none());
        let rows = store.counts_since(0).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].kind, rows[0].count), (CounterKind::Held, 2));
    }

    #[test]
    fn a_resource_names_its_route_or_tool() {
        assert_eq!(target_of_resource("Route::\"crm\""), "crm");
        assert_eq!(target_of_resource("Tool::\"crm/lookup\""), "crm/lookup");
        assert_eq!(target_of_resource("crm"), "crm");
    }
}
