//! The live view across replicas. On a shared store each replica passes the
//! events it records to the others as notes (`NOTIFY airlock_events`), and
//! publishes theirs into its own live feed, so that `GET /v1/events` on any
//! replica shows what every replica decided.
//!
//! A note carries as many events as fit in one notification (events have
//! no bodies); the events recorded while one note is sent go out together
//! in the next. Like every notification, a note sent while a replica's
//! listener reconnects is lost to it: the live view across replicas is
//! best effort, while each replica's own events reach its own readers
//! always, and the audit trail of each replica is complete.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::audit::live::{LiveEvent, LiveFeed};
use crate::store::{ApprovalStore, StoreEvent, NOTE_MAX};

/// Events gathered into one round of notes at most.
const BATCH: usize = 256;
/// How often the events recorded since are passed on.
const TICK: Duration = Duration::from_millis(50);
const WARN_EVERY: Duration = Duration::from_secs(60);

/// An event as it travels: its kind, which readers filter on, and the
/// event itself.
#[derive(Serialize)]
struct Outgoing<'a> {
    kind: &'a str,
    #[serde(flatten)]
    event: &'a LiveEvent,
}

#[derive(Deserialize)]
struct Incoming {
    kind: String,
    #[serde(flatten)]
    event: LiveEvent,
}

/// One note: which replica sent it, and its events.
#[derive(Deserialize)]
struct Note {
    from: String,
    events: Vec<Incoming>,
}

/// Starts relaying, if `store` is shared by several replicas.
pub fn start(store: &Arc<dyn ApprovalStore>, feed: &Arc<LiveFeed>) {
    let Some(changes) = store.changes() else {
        return;
    };
    // Tells this replica's own notes apart, since a replica hears its own
    // notifications too.
    let replica = uuid::Uuid::now_v7().simple().to_string();
    let local = feed.subscribe(None).live;
    tokio::spawn(send_local(store.clone(), local, replica.clone()));
    tokio::spawn(publish_others(changes, feed.clone(), replica));
}

/// Sends this replica's events as notes until the feed closes.
async fn send_local(
    store: Arc<dyn ApprovalStore>,
    mut local: broadcast::Receiver<Arc<LiveEvent>>,
    replica: String,
) {
    // At most one warning a minute: a replica that falls behind under load
    // would otherwise log on every batch.
    let mut warned: Option<Instant> = None;
    // Taken every tick rather than awaited one by one: a receiver waiting
    // in `recv` is woken by every publish, and that wake-up would be paid
    // on the data plane's thread for every call (see `admin::events`).
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Bounded: each batch takes what the channel holds, which is at
        // most its capacity.
        for _ in 0..64 {
            let Some(batch) = take_batch(&mut local, &mut warned) else {
                return;
            };
            let full = batch.len() == BATCH;
            let ours: Vec<_> = batch.into_iter().filter(|e| !e.relayed).collect();
            for note in notes(&replica, &ours) {
                if let Err(e) = store.send_note(note).await {
                    if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        warned = Some(Instant::now());
                        tracing::warn!(error = %e, "cannot pass events to the other replicas");
                    }
                }
            }
            if !full {
                break;
            }
        }
    }
}

/// Up to [`BATCH`] events published since the last look; `None` once the
/// feed has closed.
fn take_batch(
    local: &mut broadcast::Receiver<Arc<LiveEvent>>,
    warned: &mut Option<Instant>,
) -> Option<Vec<Arc<LiveEvent>>> {
    let mut batch = Vec::new();
    while batch.len() < BATCH {
        match local.try_recv() {
            Ok(event) => batch.push(event),
            Err(TryRecvError::Lagged(n)) => {
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    *warned = Some(Instant::now());
                    tracing::warn!(missed = n, "events were recorded faster than they could be passed to the other replicas; these were not");
                }
            }
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Closed) => return None,
        }
    }
    Some(batch)
}

/// `events` as notes of at most [`NOTE_MAX`] bytes each; an event too
/// large for a note of its own is left out.
fn notes(replica: &str, events: &[Arc<LiveEvent>]) -> Vec<String> {
    let head = format!("{{\"from\":\"{replica}\",\"events\":[");
    let tail = "]}";
    let mut out = Vec::new();
    let mut note = head.clone();
    for event in events {
        let Ok(text) = serde_json::to_string(&Outgoing {
            kind: &event.kind,
            event,
        }) else {
            continue;
        };
        if head.len() + text.len() + tail.len() > NOTE_MAX {
            tracing::debug!(kind = %event.kind, "an event too large for a note is not passed on");
            continue;
        }
        if note.len() + 1 + text.len() + tail.len() > NOTE_MAX {
            note.push_str(tail);
            out.push(std::mem::replace(&mut note, head.clone()));
        }
        if note.len() > head.len() {
            note.push(',');
        }
        note.push_str(&text);
    }
    if note.len() > head.len() {
        note.push_str(tail);
        out.push(note);
    }
    out
}

/// Publishes the other replicas' events into this replica's feed.
async fn publish_others(
    mut changes: broadcast::Receiver<StoreEvent>,
    feed: Arc<LiveFeed>,
    replica: String,
) {
    loop {
        match changes.recv().await {
            Ok(StoreEvent::Note(text)) => {
                let Ok(note) = serde_json::from_str::<Note>(&text) else {
                    tracing::debug!("a note from another replica does not parse");
                    continue;
                };
                if note.from == replica {
                    continue;
                }
                for Incoming { kind, mut event } in note.events {
                    event.kind = kind.into();
                    event.relayed = true;
                    feed.publish_event(event);
                }
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, reason: &str) -> Arc<LiveEvent> {
        Arc::new(LiveEvent {
            kind: kind.to_string().into(),
            request_id: "r1".into(),
            verdict: "allow".into(),
            reasons: vec![reason.into()],
            ..LiveEvent::default()
        })
    }

    #[test]
    fn notes_stay_under_the_limit_and_read_back_as_sent() {
        let events: Vec<_> = (0..100)
            .map(|i| event("decision", &"x".repeat(i * 10)))
            .collect();
        let notes = notes("r", &events);
        assert!(notes.len() > 1);
        let mut back = Vec::new();
        for text in &notes {
            assert!(text.len() <= NOTE_MAX);
            let note: Note = serde_json::from_str(text).unwrap();
            assert_eq!(note.from, "r");
            back.extend(note.events);
        }
        assert_eq!(back.len(), 100);
        assert_eq!(back[7].kind, "decision");
        assert_eq!(back[7].event.reasons, events[7].reasons);
        assert_eq!(back[7].event.verdict, "allow");
    }

    #[test]
    fn an_event_too_large_for_a_note_is_left_out() {
        let events = [
            event("decision", &"x".repeat(NOTE_MAX)),
            event("decision", "ok"),
        ];
        let notes = notes("r", &events);
        assert_eq!(notes.len(), 1);
        let note: Note = serde_json::from_str(&notes[0]).unwrap();
        assert_eq!(note.events.len(), 1);
    }
}
