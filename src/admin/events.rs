//! `GET /v1/events`: the live view as server-sent events, for the admin
//! and approvers (a bearer token, or the inbox's session cookie).
//!
//! Every audited call is a `decision` event (agent, route or tool,
//! verdict, policies, request id; never a body), and what happens to
//! approvals and pauses is an `approval.*` or `override.*` event. An
//! approver sees approval events only for gates that name one of their
//! groups. `?agent=`, `?route=` and `?verdict=` filter. A reader resumes
//! with `Last-Event-ID`; one that falls behind gets a `lagged` event naming
//! how many events it missed, and never slows the data plane (see
//! `audit::live`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio_stream::{Stream, StreamExt};

use super::approvals::require_reader;
use super::bearer;
use super::inbox::session_reader;
use super::refusal::Refusal;
use super::AdminState;
use crate::approval::Decider;
use crate::audit::live::LiveEvent;

/// The comment sent while nothing happens, so proxies keep the stream open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// How often a reader takes what was published since its last look.
const POLL: Duration = Duration::from_millis(50);

/// Events a reader takes in one look; the rest wait for the next.
const TAKE: usize = 1024;

#[derive(Debug, Default, Deserialize)]
pub struct EventFilter {
    agent: Option<String>,
    route: Option<String>,
    verdict: Option<String>,
}

/// Who reads, and what they asked to see.
struct Reader {
    who: Decider,
    filter: EventFilter,
}

impl Reader {
    fn wants(&self, e: &LiveEvent) -> bool {
        let matches = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| got == Some(w))
        };
        (self.who.any_group || e.visible_to_groups(&self.who.groups))
            && matches(&self.filter.agent, e.agent.as_deref())
            && matches(&self.filter.route, e.route.as_deref())
            && matches(&self.filter.verdict, Some(&*e.verdict))
    }
}

pub async fn events(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Query(filter): Query<EventFilter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Refusal> {
    // The inbox's script reads with its session cookie; a bearer token,
    // when sent, decides alone.
    let who = match require_reader(&state, &headers) {
        Ok(who) => who,
        Err(refusal) => match (bearer(&headers), session_reader(&state, &headers)) {
            (None, Some((_, who))) => who,
            _ => return Err(refusal),
        },
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let sub = state.audit.live().subscribe(last);
    let reader = Arc::new(Reader { who, filter });
    let lagged = (sub.missed > 0).then(|| Ok(lagged_event(sub.missed)));
    let backlog = {
        let reader = reader.clone();
        tokio_stream::iter(sub.backlog)
            .filter(move |e| reader.wants(e))
            .map(|e| Ok(event(&e)))
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = Polled {
        rx: sub.live,
        tick,
        ready: VecDeque::new(),
        reader,
        closed: false,
    };
    let stream = tokio_stream::iter(lagged).chain(backlog).chain(live);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
}

fn event(e: &LiveEvent) -> Event {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(e.id.to_string())
        .event(&*e.kind)
        .data(data)
}

/// A reader's live events, taken every [`POLL`] rather than as each is
/// published: a reader waiting in `recv` would be woken by every publish,
/// and that wake-up (a cross-thread unpark) would be paid on the data
/// plane's thread for every call. Polled, a publish finds nobody to wake,
/// and the reader writes what it took in one go.
struct Polled {
    rx: broadcast::Receiver<Arc<LiveEvent>>,
    // Delay, not Burst: a reader that fell behind takes what is there at
    // its next look, not a run of looks at once.
    tick: tokio::time::Interval,
    ready: VecDeque<Event>,
    reader: Arc<Reader>,
    closed: bool,
}

impl Polled {
    /// Takes up to [`TAKE`] events published since the last look.
    fn take_published(&mut self) {
        for _ in 0..TAKE {
            match self.rx.try_recv() {
                Ok(e) => {
                    if self.reader.wants(&e) {
                        self.ready.push_back(event(&e));
                    }
                }
                Err(TryRecvError::Lagged(n)) => self.ready.push_back(lagged_event(n)),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Closed) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }
}

impl Stream for Polled {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Bounded: each round either yields, ends, or waits on the timer.
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(e)));
            }
            if self.closed {
                return Poll::Ready(None);
            }
            match self.tick.poll_tick(cx) {
                Poll::Ready(_) => self.take_published(),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Told to a reader that missed `n` events: it fell behind, or resumed
/// from an event the ring no longer holds.
fn lagged_event(n: u64) -> Event {
    Event::default()
        .event("lagged")
        .data(serde_json::json!({ "missed": n }).to_string())
}
