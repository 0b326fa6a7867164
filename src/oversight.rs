//! Operators stepping in: pauses of an agent, a route, a tool or
//! everything ([`Overrides`]), the in-memory [`PauseBoard`] the data plane
//! reads, and the per-agent [`CallTally`] that `GET /v1/agents` shows.
//!
//! A pause is stored first (so it is durable), then put on the board (so
//! every call judged after the pause request is answered sees it), then
//! announced: audit record (`"event": "override"`), webhooks in the same
//! store transaction, metric. Pauses live in the store only, never in a
//! policy or config file, so no reload can lift one.

mod tally;

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::approval::Approvals;
use crate::audit::{AuditRecord, AuditSink};
use crate::clock::{ms_to_rfc3339, now_ms, rfc3339};
use crate::config::Config;
use crate::store::{ApprovalStore, HoldRecord, NewDelivery, StoreError, StoreEvent};
// The pause records as the store keeps them; the data plane names them
// through this module.
pub use crate::store::{PauseMode, PauseRecord, PauseScope};
use crate::telemetry::{Metrics, OverrideLabels};
pub use tally::{AgentCalls, CallTally, VERDICTS};

/// How often a replica on a shared store reads the pauses again, whatever
/// the hints say: a pause set on another replica is in force here within
/// this long even when its hint was lost.
const PAUSE_REREAD: std::time::Duration = std::time::Duration::from_secs(1);

/// The gate a `hold` pause puts on every call it holds.
pub const PAUSED_GATE: &str = "airlock:paused";

/// The pauses in force, as the data plane reads them.
#[derive(Default)]
pub struct PauseBoard {
    // An ArcSwap: every call reads it and operators rarely change it, so a
    // read takes no lock, and a call with nothing paused costs one load
    // and one length check.
    pauses: ArcSwap<Vec<PauseRecord>>,
}

impl PauseBoard {
    pub fn new(pauses: Vec<PauseRecord>) -> PauseBoard {
        PauseBoard {
            pauses: ArcSwap::from_pointee(pauses),
        }
    }

    /// The pause a call by `agent` on `route` (to `tool`) falls under: a
    /// `deny` pause before a `hold` one, since it is the stricter.
    pub fn lookup(&self, agent: &str, route: &str, tool: Option<&str>) -> Option<PauseRecord> {
        let pauses = self.pauses.load();
        if pauses.is_empty() {
            return None;
        }
        pauses
            .iter()
            .filter(|p| p.scope.covers(agent, route, tool))
            .max_by_key(|p| p.mode == PauseMode::Deny)
            .cloned()
    }

    /// Every pause in force, for the admin API.
    pub fn all(&self) -> Arc<Vec<PauseRecord>> {
        self.pauses.load_full()
    }

    fn put(&self, pause: PauseRecord) {
        self.pauses.rcu(|old| {
            let mut next: Vec<PauseRecord> = old
                .iter()
                .filter(|p| p.scope != pause.scope)
                .cloned()
                .collect();
            next.push(pause.clone());
            next
        });
    }

    /// Replaces every pause with `pauses`, as the store has them.
    fn replace(&self, pauses: Vec<PauseRecord>) {
        self.pauses.store(Arc::new(pauses));
    }

    fn remove(&self, scope: &PauseScope) {
        self.pauses.rcu(|old| {
            old.iter()
                .filter(|p| &p.scope != scope)
                .cloned()
                .collect::<Vec<_>>()
        });
    }
}

/// What a pause covers, as a person reads it.
pub fn describe(scope: &PauseScope) -> String {
    match scope {
        PauseScope::All => "every agent".into(),
        PauseScope::Agent { agent } => format!("agent `{agent}`"),
        PauseScope::Route { route } => format!("route `{route}`"),
        PauseScope::Tool { route, tool } => format!("tool `{tool}` of route `{route}`"),
    }
}

/// Whether held call `hold` falls under `scope`.
fn covers_hold(scope: &PauseScope, hold: &HoldRecord) -> bool {
    // A stored tool call names its resource `Tool::"<route>/<tool>"`.
    let tool = hold
        .resource
        .strip_prefix("Tool::\"")
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|r| r.strip_prefix(hold.route.as_str()))
        .and_then(|r| r.strip_prefix('/'));
    scope.covers(&hold.agent, &hold.route, tool)
}

/// A pause as set: the record and how many pending holds it voided.
#[derive(Debug)]
pub struct Paused {
    pub pause: PauseRecord,
    pub voided: usize,
}

/// Sets and lifts pauses; shared by the admin API.
pub struct Overrides {
    pub board: Arc<PauseBoard>,
    // A tokio Mutex, held across the store call: a store write and the
    // board change that follows it, and a re-read of the store and the
    // board it replaces, never interleave, so a re-read that began before
    // a pause was stored cannot take it off the board after it was put on.
    // Only operators' requests and the re-reads take it; calls read the
    // board without it.
    writing: tokio::sync::Mutex<()>,
    store: Arc<dyn ApprovalStore>,
    approvals: Arc<Approvals>,
    audit: AuditSink,
    metrics: Arc<Metrics>,
}

impl Overrides {
    /// The service with the stored pauses on its board (at start-up).
    pub async fn load(
        store: Arc<dyn ApprovalStore>,
        approvals: Arc<Approvals>,
        audit: AuditSink,
        metrics: Arc<Metrics>,
    ) -> Result<Overrides, StoreError> {
        let pauses = store.list_pauses().await?;
        metrics
            .pauses_active
            .set(i64::try_from(pauses.len()).unwrap_or(i64::MAX));
        Ok(Overrides {
            board: Arc::new(PauseBoard::new(pauses)),
            writing: tokio::sync::Mutex::new(()),
            store,
            approvals,
            audit,
            metrics,
        })
    }

    /// Pauses `scope` (replacing a pause of the same scope), then voids the
    /// pending holds it covers when `mode` is `deny`. The board is updated
    /// before this returns, so every call judged afterwards sees it.
    pub async fn pause(
        &self,
        cfg: &Config,
        scope: PauseScope,
        mode: PauseMode,
        reason: String,
        by: String,
    ) -> Result<Paused, StoreError> {
        let pause = PauseRecord {
            scope,
            mode,
            reason,
            by,
            since_ms: now_ms(),
        };
        let event = format!("{}.paused", pause.scope.kind());
        let deliveries = deliveries(cfg, &event, &pause);
        let queued = !deliveries.is_empty();
        {
            let _writing = self.writing.lock().await;
            self.store.put_pause(pause.clone(), deliveries).await?;
            self.board.put(pause.clone());
        }
        self.count("pause", &pause);
        let voided = match mode {
            PauseMode::Deny => {
                let scope = pause.scope.clone();
                let reason = format!("{} is paused: {}", describe(&scope), pause.reason);
                self.approvals
                    .void_pending(cfg, |h| covers_hold(&scope, h), &pause.by, &reason)
                    .await?
            }
            PauseMode::Hold => 0,
        };
        self.audit
            .record(record(&pause, "pause", &pause.by, &pause.reason))
            .await;
        if queued {
            self.approvals.wake_outbox();
        }
        Ok(Paused { pause, voided })
    }

    /// Lifts the pause of `scope`; `None` when there was none.
    pub async fn resume(
        &self,
        cfg: &Config,
        scope: &PauseScope,
        by: &str,
        reason: &str,
    ) -> Result<Option<PauseRecord>, StoreError> {
        let Some(stored) = self
            .store
            .list_pauses()
            .await?
            .into_iter()
            .find(|p| &p.scope == scope)
        else {
            return Ok(None);
        };
        let event = format!("{}.resumed", scope.kind());
        let mut lifted = stored.clone();
        lifted.by = by.to_string();
        lifted.reason = reason.to_string();
        let deliveries = deliveries(cfg, &event, &lifted);
        let queued = !deliveries.is_empty();
        let removed = {
            let _writing = self.writing.lock().await;
            let removed = self.store.delete_pause(scope, deliveries).await?;
            self.board.remove(scope);
            removed
        };
        let Some(removed) = removed else {
            return Ok(None);
        };
        self.count("resume", &removed);
        self.audit
            .record(record(&removed, "resume", by, reason))
            .await;
        if queued {
            self.approvals.wake_outbox();
        }
        Ok(Some(removed))
    }

    /// Keeps the board in step with the pauses other replicas set and lift
    /// on a shared store: read again on each hint, after the store's
    /// listener reconnects, and every [`PAUSE_REREAD`] in case a hint was
    /// lost. A no-op for a store only this process writes.
    pub fn follow_store_changes(self: &Arc<Self>) {
        let Some(mut changes) = self.store.changes() else {
            return;
        };
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PAUSE_REREAD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                let reread = tokio::select! {
                    event = changes.recv() => match event {
                        Ok(StoreEvent::PausesChanged | StoreEvent::Resync)
                        | Err(RecvError::Lagged(_)) => true,
                        Ok(StoreEvent::Changed(_) | StoreEvent::Note(_)) => false,
                        Err(RecvError::Closed) => return,
                    },
                    _ = tick.tick() => true,
                };
                let Some(me) = me.upgrade() else {
                    return;
                };
                if !reread {
                    continue;
                }
                // Told once per outage, not on every second of it.
                match me.reread().await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot read the pauses again; the board keeps the pauses it has");
                    }
                    Err(_) => {}
                }
            }
        });
    }

    /// Replaces the board with the pauses in the store.
    async fn reread(&self) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        let pauses = self.store.list_pauses().await?;
        self.metrics
            .pauses_active
            .set(i64::try_from(pauses.len()).unwrap_or(i64::MAX));
        self.board.replace(pauses);
        Ok(())
    }

    fn count(&self, action: &'static str, pause: &PauseRecord) {
        self.metrics
            .overrides
            .get_or_create(&OverrideLabels {
                action,
                scope: pause.scope.kind(),
                mode: pause.mode.as_str(),
            })
            .inc();
        self.metrics
            .pauses_active
            .set(i64::try_from(self.board.all().len()).unwrap_or(i64::MAX));
    }
}

/// The audit record of a pause or resume: who, why, and what it covers.
fn record(pause: &PauseRecord, verdict: &'static str, by: &str, reason: &str) -> AuditRecord {
    let (agent, route, resource) = match &pause.scope {
        PauseScope::All => (None, None, None),
        PauseScope::Agent { agent } => (Some(agent.clone()), None, None),
        PauseScope::Route { route } => (None, Some(route.as_str().into()), None),
        PauseScope::Tool { route, tool } => (
            None,
            Some(route.as_str().into()),
            Some(format!("Tool::\"{route}/{tool}\"").into()),
        ),
    };
    AuditRecord {
        time: rfc3339(std::time::SystemTime::now()),
        request_id: uuid::Uuid::now_v7().to_string(),
        event: "override",
        agent,
        route,
        resource,
        verdict,
        approver: Some(by.to_string()),
        reasons: vec![reason.to_string()],
        extra: Some(json!({"scope": pause.scope.kind(), "mode": pause.mode.as_str()})),
        ..AuditRecord::default()
    }
}

/// One delivery per configured webhook that wants `event`.
fn deliveries(cfg: &Config, event: &str, pause: &PauseRecord) -> Vec<NewDelivery> {
    crate::notify::deliveries(cfg, event, || {
        json!({
            "type": event,
            "timestamp": rfc3339(std::time::SystemTime::now()),
            "data": {
                "scope": pause.scope,
                "mode": pause.mode,
                "reason": pause.reason,
                "by": pause.by,
                "since": ms_to_rfc3339(pause.since_ms),
            }
        })
        .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(scope: PauseScope, mode: PauseMode) -> PauseRecord {
        PauseRecord {
            scope,
            mode,
            reason: "r".into(),
            by: "admin".into(),
            since_ms: 1,
        }
    }

    #[test]
    fn the_board_finds_the_strictest_covering_pause() {
        let board = PauseBoard::default();
        assert!(board.lookup("a", "crm", None).is_none());
        board.put(pause(PauseScope::All, PauseMode::Hold));
        board.put(pause(
            PauseScope::Agent { agent: "a".into() },
            PauseMode::Deny,
        ));
        assert_eq!(
            board.lookup("a", "crm", None).unwrap().mode,
            PauseMode::Deny
        );
        assert_eq!(
            board.lookup("b", "crm", None).unwrap().mode,
            PauseMode::Hold
        );
        board.remove(&PauseScope::All);
        assert!(board.lookup("b", "crm", None).is_none());
        // Putting the same scope again replaces it.
        board.put(pause(
            PauseScope::Agent { agent: "a".into() },
            PauseMode::Hold,
        ));
        assert_eq!(board.all().len(), 1);
    }

    #[test]
    fn a_stored_tool_call_is_covered_by_its_tool_pause() {
        let mut h = crate::store::test_hold("h1");
        h.route = "mcp".into();
        h.resource = "Tool::\"mcp/delete\"".into();
        let tool = |t: &str| PauseScope::Tool {
            route: "mcp".into(),
            tool: t.into(),
        };
        assert!(covers_hold(&tool("delete"), &h));
        assert!(!covers_hold(&tool("read"), &h));
        assert!(covers_hold(
            &PauseScope::Route {
                route: "mcp".into()
            },
            &h
        ));
    }
}
