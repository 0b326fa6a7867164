//! What the requests of one agent connection share: its upstream lane, the
//! digest of the key it last authenticated with, the policy plan it last
//! used and the request counter it last counted on.
//!
//! All live exactly as long as the agent's connection, so none outlives
//! what the agent itself keeps open.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

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
    /// What the upstream is told of the agent's hop; `None` when unknown.
    pub hop: Option<Hop>,
    last_key: Last<KnownKey>,
    last_plan: Last<KnownPlan>,
    last_counter: Last<(VerdictLabels, Counter)>,
}

/// One value a connection's last request worked out, for the next to reuse.
struct Last<T>(
    // A std Mutex, only ever `try_lock`ed and never held across an await:
    // on HTTP/1.1 the requests of a connection come one at a time; on
    // HTTP/2 a stream that finds it busy simply works the value out itself.
    Mutex<Option<T>>,
);

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
/// request of a connection, and hashing it can cost more than a memoized
/// decision. The raw key is kept only for as
/// long as the connection that carries it is open.
struct KnownKey {
    key: Box<[u8]>,
    sha256: [u8; 32],
}

/// The `X-Forwarded-*` values of one agent connection, made once for all
/// its requests.
pub struct Hop {
    forwarded_for: HeaderValue,
    proto: HeaderValue,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

impl Hop {
    /// The hop of an agent at `peer`, over TLS or not.
    pub fn new(peer: SocketAddr, tls: bool) -> Hop {
        let ip = Bytes::from(peer.ip().to_string());
        Hop {
            // An IP address's text is always a valid header value.
            forwarded_for: HeaderValue::from_maybe_shared(ip)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }

    /// Sets Airlock's own `X-Forwarded-For`, `-Proto` and (the `Host` the
    /// agent sent, when it sent one) `-Host` on a request to the upstream,
    /// whose agent's copies are already gone.
    pub(super) fn set_forwarded(&self, headers: &mut HeaderMap, agent_host: Option<HeaderValue>) {
        headers.insert(X_FORWARDED_FOR, self.forwarded_for.clone());
        headers.insert(X_FORWARDED_PROTO, self.proto.clone());
        if let Some(host) = agent_host {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

// === impl Last ===

impl<T> Default for Last<T> {
    fn default() -> Self {
        Last(Mutex::new(None))
    }
}

impl<T> Last<T> {
    /// What `f` makes of the kept value; `None` when there is none, `f`
    /// finds it does not fit, or another request is using it.
    fn find<R>(&self, f: impl FnOnce(&T) -> Option<R>) -> Option<R> {
        self.0.try_lock().ok()?.as_ref().and_then(f)
    }

    /// Keeps `value` for the next request, unless another is using the
    /// kept one.
    fn keep(&self, value: T) {
        if let Ok(mut last) = self.0.try_lock() {
            *last = Some(value);
        }
    }
}

// === impl AgentConnection ===

impl AgentConnection {
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection from an agent at `peer`, over TLS or not.
    pub fn from_peer(peer: SocketAddr, tls: bool) -> Self {
        AgentConnection {
            hop: Some(Hop::new(peer, tls)),
            ..Self::default()
        }
    }

    /// The SHA-256 of `key`, computed once per key per connection.
    pub fn key_sha256(&self, key: &[u8]) -> [u8; 32] {
        if let Some(sha256) = self.last_key.find(|k| (*k.key == *key).then_some(k.sha256)) {
            return sha256;
        }
        let sha256 = crate::config::sha256(key);
        self.last_key.keep(KnownKey {
            key: key.into(),
            sha256,
        });
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
        let known = self.last_plan.find(|k| {
            let same = std::ptr::eq(k.snapshot.as_ptr(), Arc::as_ptr(snap))
                && k.agent == call.agent
                && k.action == call.action
                && k.resource == call.resource;
            same.then(|| k.plan.reused())
        });
        if let Some(plan) = known {
            return Ok(plan);
        }
        let plan = snap.policy.plan(call)?;
        self.last_plan.keep(KnownPlan {
            snapshot: Arc::downgrade(snap),
            agent: call.agent.clone(),
            action: call.action.clone(),
            resource: call.resource.clone(),
            plan: plan.reused(),
        });
        Ok(plan)
    }

    /// Counts one request under `labels`. A connection's requests nearly
    /// always go to one route with one verdict, so the counter found last
    /// is kept: counting then takes neither the metric family's lock
    /// (shared by every worker thread) nor a hash of the labels.
    pub fn count_request(&self, metrics: &Metrics, labels: VerdictLabels) {
        // The route name is shared with the snapshot: the same pointer is
        // the same route, and a reload only costs one lookup.
        let counted = self.last_counter.find(|(known, counter)| {
            let same = Arc::ptr_eq(&known.route, &labels.route) && known.verdict == labels.verdict;
            same.then(|| counter.inc())
        });
        if counted.is_some() {
            return;
        }
        let counter = metrics.requests.get_or_create(&labels).clone();
        counter.inc();
        self.last_counter.keep((labels, counter));
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
