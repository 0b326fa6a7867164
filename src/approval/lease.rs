//! Calls interrupted mid-forward, and the lease that tells them apart from
//! calls still in flight.
//!
//! Between the claim of an approved call and the record of its outcome, the
//! hold is `executing`. A process that dies in between leaves it so, and
//! whether the tool acted is unknown: the call is settled as executed with
//! an unknown outcome (502), and never run again. Who settles it depends on
//! the store:
//! - a store only this process writes: every `executing` hold found at
//!   start is one this process was forwarding when it stopped
//!   ([`Approvals::settle_interrupted`]);
//! - a shared store: an `executing` hold may be another replica's call in
//!   flight, so the claimant renews a lease while it forwards
//!   ([`Approvals::keep_lease`]); once a lease has run out, any replica's
//!   sweep settles the call ([`Approvals::settle_lapsed`]). Settling is a
//!   compare-and-set, so it is recorded once, whichever replica finds it.

use std::time::Duration;

use super::{ms, trail, Approvals};
use crate::clock::now_ms;
use crate::store::{HoldPageQuery, HoldRecord, HoldState, Outcome, StoreError};

/// How long a claim stays its replica's without a renewal. A live replica
/// renews it several times over; a dead one's call is settled this long
/// after its last renewal (plus a sweep).
const LEASE: Duration = Duration::from_secs(5);
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The end of a lease taken or renewed at `now_ms`.
pub(super) fn until(now_ms: i64) -> i64 {
    now_ms.saturating_add(ms(LEASE))
}

/// Renews the lease of one claimed call until dropped.
pub struct LeaseKeeper {
    renewing: Option<tokio::task::AbortHandle>,
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(task) = self.renewing.take() {
            task.abort();
        }
    }
}

impl Approvals {
    /// Keeps the lease of claimed call `id` for as long as the returned
    /// keeper lives: hold it across the forward and the outcome's record.
    pub fn keep_lease(&self, id: &str) -> LeaseKeeper {
        if !self.store.shared() {
            return LeaseKeeper { renewing: None };
        }
        let store = self.store.clone();
        let id = id.to_string();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW_EVERY);
            // The first tick is at once, and the claim has just set it.
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.renew_lease(&id, until(now_ms())).await {
                    Ok(true) => {}
                    // Settled: nothing left to keep.
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, approval = %id, "cannot renew the lease of an approved call in flight");
                    }
                }
            }
        });
        LeaseKeeper {
            renewing: Some(task.abort_handle()),
        }
    }

    /// Settles the calls a crash interrupted, at start: on a store only
    /// this process writes, every `executing` hold; on a shared one, those
    /// whose lease ran out.
    pub async fn settle_interrupted(&self) -> Result<usize, StoreError> {
        if self.store.shared() {
            return self.settle_lapsed().await;
        }
        let mut n = 0;
        // Bounded: each page settles the holds it lists, so the next first
        // page has moved on; 1000 pages of 500 is far beyond a real backlog.
        for _ in 0..1000 {
            let page = self
                .store
                .list(HoldPageQuery {
                    state: Some(HoldState::Executing),
                    after: None,
                    limit: 500,
                    groups: None,
                })
                .await?;
            if page.holds.is_empty() {
                break;
            }
            for hold in page.holds {
                if self.settle_unknown(&hold).await? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Settles the executions on a shared store whose lease ran out; run
    /// at start and by the sweep. A no-op for a store only this process
    /// writes.
    pub async fn settle_lapsed(&self) -> Result<usize, StoreError> {
        if !self.store.shared() {
            return Ok(0);
        }
        let mut n = 0;
        // Bounded as in `settle_interrupted`: each round moves what it read.
        for _ in 0..1000 {
            let lapsed = self.store.lapsed_executions(now_ms(), 256).await?;
            if lapsed.is_empty() {
                break;
            }
            for hold in &lapsed {
                if self.settle_unknown(hold).await? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Settles `hold` as executed with an unknown outcome; only the caller
    /// whose compare-and-set moves it writes the audit record.
    async fn settle_unknown(&self, hold: &HoldRecord) -> Result<bool, StoreError> {
        let outcome = Outcome {
            status: 502,
            reason: trail::INTERRUPTED.into(),
        };
        let moved = self.finish(&hold.id, outcome).await?;
        if moved {
            self.audit.record(trail::interrupted(hold)).await;
        }
        Ok(moved)
    }
}
