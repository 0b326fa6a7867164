//! What the requests of one agent connection share: its upstream lane, the
//! digest of the key it last authenticated with, the policy plan it last
//! used and the request counter it last counted on.
//!
//! All live exactly as long as the agent's connection, so none outlives
//! what the agent itself keeps open.

use std::sync::{Arc, Mutex, Weak};

use prometheus_client::metrics::counter::Counter;

use crate::policy::{CallRequest, DecideError, DecisionPlan, Resource};
use crate::snapshot::GatewaySnapshot;
use crate::telemetry::{Metrics, VerdictLabels};
use crate::upstream::paired::PairedUpstream;

/// One agent connection's state, shared by its requests.
#[derive(Default)]
pub struct AgentConnection {
    /// Its own upstream connection (HTTP/1.1 agents, plain-HTTP tools).
    pub lane: PairedUpstream,
    // A std Mutex, only ever `try_lock`ed and never held across an await:
    // on HTTP/1.1 the requests of a connection come one at a time; on
    // HTTP/2 a stream that finds it busy simply hashes the key itself.
    last_key: Mutex<Option<KnownKey>>,
    // As `last_key`: `try_lock`ed only, never held across an await.
    last_plan: Mutex<Option<KnownPlan>>,
    // As `last_key`.
    last_counter: Mutex<Option<(VerdictLabels, Counter)>>,
}

/// The plan of a connection's last call and what it was made for.
struct KnownPlan {
    // Weak, so that after a reload an idle connection keeps only its
    // plan's slice of the old policies alive, not the whole snapshot; it
    // still keeps the allocation, so no later snapshot can reuse its
    // address and pass for it.
    snapshot: Weak<GatewaySnapshot>,
    agent: String,
    action: String,
    resource: Resource,
    plan: DecisionPlan,
}

/// A bearer key and its SHA-256. An agent sends the same key on every
/// request of a connection, and hashing it cost more than the decision
/// itself once decisions were memoized. The raw key is kept only for as
/// long as the connection that carries it is open.
struct KnownKey {
    key: Box<[u8]>,
    sha256: [u8; 32],
}

impl AgentConnection {
    pub fn new() -> Self {
        Self::default()
    }

    /// The SHA-256 of `key`, computed once per key per connection.
    pub fn key_sha256(&self, key: &[u8]) -> [u8; 32] {
        if let Ok(last) = self.last_key.try_lock() {
            if let Some(known) = last.as_ref().filter(|k| *k.key == *key) {
                return known.sha256;
            }
        }
        let sha256 = crate::config::sha256(key);
        if let Ok(mut last) = self.last_key.try_lock() {
            *last = Some(KnownKey {
                key: key.into(),
                sha256,
            });
        }
        sha256
    }

    /// The policy plan for `call` under `snap`. A connection's calls
    /// nearly always have the same agent, action and resource, and a plan
    /// depends on nothing else within a snapshot, so the last one is
    /// reused: no slice lookup (a lock shared by every worker thread and a
    /// hash) per request.
    pub fn plan(
        &self,
        snap: &Arc<GatewaySnapshot>,
        call: &CallRequest,
    ) -> Result<DecisionPlan, DecideError> {
        if let Ok(last) = self.last_plan.try_lock() {
            let known = last.as_ref().filter(|k| {
                std::ptr::eq(k.snapshot.as_ptr(), Arc::as_ptr(snap))
                    && k.agent == call.agent
                    && k.action == call.action
                    && k.resource == call.resource
            });
            if let Some(k) = known {
                return Ok(k.plan.reused());
            }
        }
        let plan = snap.policy.plan(call)?;
        if let Ok(mut last) = self.last_plan.try_lock() {
            *last = Some(KnownPlan {
                snapshot: Arc::downgrade(snap),
                agent: call.agent.clone(),
                action: call.action.clone(),
                resource: call.resource.clone(),
                plan: plan.reused(),
            });
        }
        Ok(plan)
    }

    /// Counts one request under `labels`. A connection's requests nearly
    /// always go to one route with one verdict, so the counter found last
    /// is kept: counting then takes neither the metric family's lock
    /// (shared by every worker thread) nor a hash of the labels.
    pub fn count_request(&self, metrics: &Metrics, labels: VerdictLabels) {
        let Ok(mut last) = self.last_counter.try_lock() else {
            metrics.requests.get_or_create(&labels).inc();
            return;
        };
        // The route name is shared with the snapshot: the same pointer is
        // the same route, and a reload only costs one lookup.
        if let Some((known, counter)) = last.as_ref() {
            if Arc::ptr_eq(&known.route, &labels.route) && known.verdict == labels.verdict {
                counter.inc();
                return;
            }
        }
        let counter = metrics.requests.get_or_create(&labels).clone();
        counter.inc();
        *last = Some((labels, counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_key_is_hashed_again() {
        let conn = AgentConnection::new();
        let a = conn.key_sha256(b"key-a");
        assert_eq!(a, crate::config::sha256(b"key-a"));
        assert_eq!(conn.key_sha256(b"key-a"), a);
        let b = conn.key_sha256(b"key-b");
        assert_eq!(b, crate::config::sha256(b"key-b"));
        assert_ne!(a, b);
        assert_eq!(conn.key_sha256(b"key-a"), a);
    }

    #[test]
    fn requests_are_counted_under_their_own_labels_whatever_was_counted_last() {
        let metrics = Metrics::new();
        let conn = AgentConnection::new();
        let crm: Arc<str> = "crm".into();
        let labels = |route: &Arc<str>, verdict| VerdictLabels {
            route: route.clone(),
            verdict,
        };
        conn.count_request(&metrics, labels(&crm, "allow"));
        conn.count_request(&metrics, labels(&crm, "allow"));
        conn.count_request(&metrics, labels(&crm, "deny"));
        // A reload's route of the same name: another pointer, same series.
        conn.count_request(&metrics, labels(&"crm".into(), "allow"));
        let count = |route: &str, verdict| {
            metrics
                .requests
                .get_or_create(&labels(&route.into(), verdict))
                .get()
        };
        assert_eq!(count("crm", "allow"), 3);
        assert_eq!(count("crm", "deny"), 1);
    }
}
