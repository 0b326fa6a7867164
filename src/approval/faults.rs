//! How an approved call survives faults: a forward that never left is
//! handed back to `approved`, an outcome the store cannot take yet is
//! written again until it can, a shutdown answers every waiting agent at
//! once instead of cutting it off, and a store that fails during a wait
//! answers the agent with the hold as last seen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{trail, ApprovalError, Approvals};
use crate::clock::now_ms;
use crate::store::{DecisionFields, HoldRecord, HoldState, Outcome, StoreError};

/// The first pause before an outcome write is tried again; it doubles up to
/// [`OUTCOME_RETRY_MAX`].
const OUTCOME_RETRY_FIRST: Duration = Duration::from_millis(100);
const OUTCOME_RETRY_MAX: Duration = Duration::from_secs(5);

/// How long the agent's answer waits for the first write of its outcome
/// before the write moves to the background: long enough for a healthy
/// store, so that a shutdown right after the answer finds it recorded.
const FIRST_WRITE: Duration = Duration::from_secs(1);

/// Rung once, on shutdown, for every wait in progress.
#[derive(Default)]
pub(super) struct StopBell {
    set: AtomicBool,
    bell: Notify,
}

impl StopBell {
    /// Create before checking [`StopBell::is_set`], so that a stop rung in
    /// between is not missed.
    pub(super) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.bell.notified()
    }

    pub(super) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    fn ring(&self) {
        self.set.store(true, Ordering::Release);
        self.bell.notify_waiters();
    }
}

impl Approvals {
    /// Ends every wait now and from now on: each waiting agent is answered
    /// with the hold as it stands (a pending one is durable, so the agent
    /// comes back for it).
    pub fn stop_waiting(&self) {
        self.stopping.ring();
    }

    /// Records that approved call `hold` is about to be sent; before the
    /// tool is called, so that a crash mid-call leaves its trace.
    pub async fn record_executing(&self, hold: &HoldRecord) {
        self.audit.record(trail::executing(hold)).await;
    }

    /// Hands a claimed execution back (`executing → approved`) when the
    /// call provably never left Airlock, so that the next retry runs it.
    pub async fn release(&self, id: &str) -> Result<bool, StoreError> {
        let moved = self
            .store
            .transition(
                id,
                HoldState::Executing,
                HoldState::Approved,
                now_ms(),
                DecisionFields::default(),
                Vec::new(),
            )
            .await?;
        self.waiters.wake(id);
        Ok(moved)
    }

    /// Records the outcome of an executed call: at once when the store is
    /// healthy, else in the background until it lands (see
    /// [`Approvals::finish_durably`]).
    pub async fn record_outcome(self: &Arc<Self>, id: &str, outcome: Outcome) {
        let first = tokio::time::timeout(FIRST_WRITE, self.finish(id, outcome.clone())).await;
        // A write cut off by the timeout may still land; the retries are
        // compare-and-set, so they then change nothing.
        if !matches!(first, Ok(Ok(_))) {
            let me = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                // The call is still this replica's while the write is due.
                let _lease = me.keep_lease(&id);
                me.finish_durably(&id, outcome).await;
            });
        }
    }

    /// Hands back an execution that never left: at once when the store is
    /// healthy, else in the background until it lands.
    pub async fn record_not_sent(self: &Arc<Self>, id: &str) {
        let first = tokio::time::timeout(FIRST_WRITE, self.release(id)).await;
        if !matches!(first, Ok(Ok(_))) {
            let me = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                let _lease = me.keep_lease(&id);
                me.release_durably(&id).await;
            });
        }
    }

    /// [`Approvals::finish`], tried again with backoff until the store takes
    /// it: the outcome is known, and a later start-up would otherwise
    /// settle the call as "outcome unknown". Meanwhile the hold stays
    /// `executing` and retries are told so.
    pub async fn finish_durably(&self, id: &str, outcome: Outcome) {
        let mut failures = 0u32;
        while let Err(e) = self.finish(id, outcome.clone()).await {
            failures = failures.saturating_add(1);
            tracing::warn!(error = %e, approval = %id, failures, "cannot record the outcome of an approved call yet; trying again");
            tokio::time::sleep(backoff(failures)).await;
        }
    }

    /// [`Approvals::release`], tried again with backoff until the store
    /// takes it.
    pub async fn release_durably(&self, id: &str) {
        let mut failures = 0u32;
        while let Err(e) = self.release(id).await {
            failures = failures.saturating_add(1);
            tracing::warn!(error = %e, approval = %id, failures, "cannot hand an unsent approved call back yet; trying again");
            tokio::time::sleep(backoff(failures)).await;
        }
    }
}

/// The pause after the `failures`th failed write: doubling from
/// [`OUTCOME_RETRY_FIRST`], at most [`OUTCOME_RETRY_MAX`].
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (OUTCOME_RETRY_FIRST * 2u32.pow(doublings)).min(OUTCOME_RETRY_MAX)
}

/// A waiting hold as kept through the wait: without the stored request's
/// body and headers, the largest part of a waiting call, which the store
/// has.
pub(super) fn slim(mut hold: HoldRecord) -> HoldRecord {
    hold.request.body = Vec::new();
    hold.request.headers = Vec::new();
    hold.edited_body = None;
    hold
}

/// The hold as last seen waiting, when the store failed after it was seen;
/// else the error.
pub(super) fn seen_or(
    e: ApprovalError,
    last_seen: Option<HoldRecord>,
) -> Result<HoldRecord, ApprovalError> {
    match (e, last_seen) {
        (ApprovalError::Store(e), Some(seen)) => {
            tracing::warn!(error = %e, approval = %seen.id, "the store cannot be read; the waiting agent is told the approval is still {}", seen.state.as_str());
            Ok(seen)
        }
        (e, _) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        assert_eq!(backoff(1), OUTCOME_RETRY_FIRST);
        assert_eq!(backoff(2), OUTCOME_RETRY_FIRST * 2);
        assert_eq!(backoff(40), OUTCOME_RETRY_MAX);
    }

    #[test]
    fn a_store_failure_mid_wait_answers_with_the_hold_as_last_seen() {
        let seen = slim(crate::store::test_hold("h1"));
        assert!(seen.request.body.is_empty() && seen.request.headers.is_empty());
        let down = || ApprovalError::Store(StoreError::Backend("connection refused".into()));
        let answered = seen_or(down(), Some(seen.clone())).map(|h| (h.id, h.state));
        assert_eq!(answered.ok(), Some(("h1".to_string(), HoldState::Pending)));
        // Before the hold was ever read there is nothing to answer with.
        assert!(matches!(
            seen_or(down(), None),
            Err(ApprovalError::Store(_))
        ));
        // Any other error stands.
        let gone = seen_or(ApprovalError::NotFound("h1".into()), Some(seen));
        assert!(matches!(gone, Err(ApprovalError::NotFound(_))));
    }
}
