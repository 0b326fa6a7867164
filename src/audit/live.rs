//! The live view: every audit record, as it is recorded, becomes an event
//! that `GET /v1/events` streams (see `admin::events`).
//!
//! Events are numbered; the last [`RING`] stay in a ring, so that a reader
//! that reconnects with `Last-Event-ID` gets what it missed. Readers follow
//! a broadcast channel of [`READER_BUFFER`] events: a reader that falls
//! further behind loses the oldest and is told how many, and the data plane
//! never waits for it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::AuditRecord;

/// Events kept for readers that resume.
pub const RING: usize = 10_000;
/// Events a reader may fall behind before it loses the oldest.
pub const READER_BUFFER: usize = 1024;

/// One event of the live view. No bodies, no headers: what was decided,
/// for whom, by which policies.
///
/// The text fields that name one of a fixed set (`verdict`, `error`,
/// `approval_status`) are `Cow`s: borrowed from the record for this
/// replica's events, owned for those another replica relayed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveEvent {
    /// This replica's number for the event, which readers resume from.
    #[serde(skip)]
    pub id: u64,
    /// `decision`, `approval.<verdict>` or `override.<verdict>`.
    #[serde(skip)]
    pub kind: Cow<'static, str>,
    /// Whether another replica recorded it (it came through the store).
    #[serde(skip)]
    pub relayed: bool,
    pub time: String,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Arc<str>>,
    pub verdict: Cow<'static, str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "is_zero")]
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_status: Option<Cow<'static, str>>,
    /// Who decided an approval, or paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The groups an approval's gates name: an approver sees an approval
    /// event only when it names one of theirs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approver_groups: Vec<String>,
    /// A human's reasons (an approval's, an operator's); a call's reasons
    /// are the policies'.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl LiveEvent {
    /// The event for `rec`, or `None` for records that are follow-ups of
    /// an event already shown (a held stream's end, a cut response). Takes
    /// the record, whose line is already written, so that its text moves
    /// here instead of being copied.
    #[inline]
    fn of(rec: AuditRecord) -> Option<LiveEvent> {
        let kind = match rec.event {
            "decision" => Cow::Borrowed("decision"),
            "approval" | "override" => Cow::Owned(format!("{}.{}", rec.event, rec.verdict)),
            "review" => Cow::Borrowed("review.completed"),
            _ => return None,
        };
        let human = rec.event != "decision";
        Some(LiveEvent {
            id: 0,
            kind,
            relayed: false,
            time: rec.time,
            request_id: rec.request_id,
            agent: rec.agent,
            route: rec.route,
            action: rec.action,
            resource: rec.resource,
            verdict: Cow::Borrowed(rec.verdict),
            policies: rec.policies,
            error: rec.error.map(Cow::Borrowed),
            status: rec.status,
            approval_id: rec.approval_id,
            approval_status: rec.approval_status.map(Cow::Borrowed),
            by: rec.approver,
            approver_groups: rec.approver_groups,
            reasons: if human { rec.reasons } else { Vec::new() },
            extra: if human { rec.extra } else { None },
        })
    }

    /// Whether an approver of `groups` may see this event: any event but an
    /// approval's, and an approval's that names one of their groups.
    pub fn visible_to_groups(&self, groups: &[String]) -> bool {
        !self.kind.starts_with("approval.")
            || self.approver_groups.iter().any(|g| groups.contains(g))
    }
}

/// What a reader gets when it subscribes: the events it missed, then the
/// live ones.
pub struct Subscription {
    /// Events after the reader's last one, oldest first.
    pub backlog: Vec<Arc<LiveEvent>>,
    /// Events the reader asked to resume from that the ring no longer has.
    pub missed: u64,
    pub live: broadcast::Receiver<Arc<LiveEvent>>,
}

/// The ring and the channel every reader follows.
pub struct LiveFeed {
    // A std Mutex: held only to number, push and send one event (or to copy
    // the backlog for a new reader, or to pick an agent's recent calls),
    // never across an await. Publishing and
    // subscribing under one lock means a new reader's backlog and its live
    // events neither overlap nor leave a gap.
    ring: Mutex<Ring>,
    // broadcast: every reader gets every event, and a send never waits; a
    // reader more than READER_BUFFER behind loses the oldest and learns how
    // many (`RecvError::Lagged`).
    tx: broadcast::Sender<Arc<LiveEvent>>,
}

struct Ring {
    next_id: u64,
    events: VecDeque<Arc<LiveEvent>>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        LiveFeed::new(READER_BUFFER)
    }
}

impl LiveFeed {
    pub fn new(reader_buffer: usize) -> LiveFeed {
        let (tx, _) = broadcast::channel(reader_buffer.max(1));
        LiveFeed {
            ring: Mutex::new(Ring {
                next_id: 1,
                events: VecDeque::with_capacity(RING),
            }),
            tx,
        }
    }

    /// Publishes `rec` as an event, if it is one, and returns the event.
    ///
    /// Inlined, as [`LiveEvent::of`] is, so that the record's fields move
    /// once, into the event's allocation, rather than the whole record
    /// being copied from frame to frame on every call.
    #[inline]
    pub fn publish(&self, rec: AuditRecord) -> Option<Arc<LiveEvent>> {
        let event = LiveEvent::of(rec)?;
        Some(self.publish_shared(Arc::new(event)))
    }

    /// Publishes `event` (another replica's, or this one's) with the next
    /// number.
    pub fn publish_event(&self, event: LiveEvent) {
        self.publish_shared(Arc::new(event));
    }

    fn publish_shared(&self, mut event: Arc<LiveEvent>) -> Arc<LiveEvent> {
        let Ok(mut ring) = self.ring.lock() else {
            return event;
        };
        // INVARIANT: `event` is a fresh `Arc` nobody else holds yet, so
        // `make_mut` numbers it in place and never clones.
        Arc::make_mut(&mut event).id = ring.next_id;
        ring.next_id += 1;
        if ring.events.len() == RING {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // No reader is not an error: the ring keeps the event.
        let _ = self.tx.send(event.clone());
        event
    }

    /// The newest `limit` events of the ring that `keep` accepts, newest
    /// first: what the inbox shows of an agent's recent calls. The scan
    /// holds the ring's lock, as a publish does, for at most [`RING`]
    /// cheap checks.
    pub fn recent(&self, limit: usize, keep: impl Fn(&LiveEvent) -> bool) -> Vec<Arc<LiveEvent>> {
        let ring = match self.ring.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        ring.events
            .iter()
            .rev()
            .filter(|e| keep(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Subscribes a reader that last saw event `after` (0: none; it gets
    /// no backlog when `None`).
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let ring = match self.ring.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let live = self.tx.subscribe();
        let Some(after) = after else {
            return Subscription {
                backlog: Vec::new(),
                missed: 0,
                live,
            };
        };
        let oldest = ring.events.front().map_or(ring.next_id, |e| e.id);
        let missed = oldest.saturating_sub(after.saturating_add(1));
        let backlog = ring
            .events
            .iter()
            .filter(|e| e.id > after)
            .cloned()
            .collect();
        Subscription {
            backlog,
            missed,
            live,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(agent: &str, verdict: &'static str) -> AuditRecord {
        AuditRecord {
            event: "decision",
            agent: Some(agent.into()),
            verdict,
            ..AuditRecord::default()
        }
    }

    #[test]
    fn a_reader_resumes_after_the_last_event_it_saw() {
        let feed = LiveFeed::default();
        for v in ["allow", "deny", "hold"] {
            feed.publish(decision("bot", v));
        }
        let sub = feed.subscribe(Some(1));
        let ids: Vec<u64> = sub.backlog.iter().map(|e| e.id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(sub.missed, 0);
        assert!(feed.subscribe(None).backlog.is_empty());
    }

    #[test]
    fn recent_events_are_the_newest_that_match_newest_first() {
        let feed = LiveFeed::default();
        for (agent, verdict) in [
            ("bot", "allow"),
            ("other", "deny"),
            ("bot", "deny"),
            ("bot", "hold"),
        ] {
            feed.publish(decision(agent, verdict));
        }
        let bots = feed.recent(2, |e| e.agent.as_deref() == Some("bot"));
        let verdicts: Vec<&str> = bots.iter().map(|e| e.verdict.as_ref()).collect();
        assert_eq!(verdicts, ["hold", "deny"]);
        assert!(feed
            .recent(10, |e| e.agent.as_deref() == Some("nobody"))
            .is_empty());
    }

    #[test]
    fn a_reader_behind_the_ring_is_told_how_many_it_missed() {
        let feed = LiveFeed::default();
        for _ in 0..RING + 5 {
            feed.publish(decision("bot", "allow"));
        }
        let sub = feed.subscribe(Some(0));
        assert_eq!(sub.missed, 5);
        assert_eq!(sub.backlog.len(), RING);
        assert_eq!(sub.backlog[0].id, 6);
    }

    #[tokio::test]
    async fn a_stalled_reader_loses_the_oldest_and_publishing_never_waits() {
        let feed = LiveFeed::new(4);
        let mut sub = feed.subscribe(None);
        for _ in 0..10 {
            feed.publish(decision("bot", "allow"));
        }
        match sub.live.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 6),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(sub.live.recv().await.unwrap().id, 7);
    }

    #[test]
    fn follow_up_records_are_not_events_and_approvals_name_their_kind() {
        let feed = LiveFeed::default();
        feed.publish(AuditRecord {
            event: "held_stream",
            ..AuditRecord::default()
        });
        feed.publish(AuditRecord {
            event: "approval",
            verdict: "approve",
            approver_groups: vec!["finance".into()],
            ..AuditRecord::default()
        });
        let sub = feed.subscribe(Some(0));
        assert_eq!(sub.backlog.len(), 1);
        let e = &sub.backlog[0];
        assert_eq!(e.kind, "approval.approve");
        assert!(e.visible_to_groups(&["finance".into()]));
        assert!(!e.visible_to_groups(&["legal".into()]));
    }
}
