//! An approval lifts the gates it was asked about, and nothing more.
//!
//! Before an approved call runs, it is judged again by the current
//! policies: a deny settles it as denied; a gate (a policy, or the group it
//! names) that no recorded approval lifted holds it again for that gate
//! alone; an approval whose `expires_at` passed expires. Only then is the
//! one execution claimed.

use super::{trail, ApprovalError, Approvals, CallChecker, Decider, Recheck};
use crate::clock::now_ms;
use crate::config::Config;
use crate::notify::payload;
use crate::store::{DecisionFields, HoldRecord, HoldState, LiftedGate, StoredGate};

/// What became of an approved call asked to run.
#[derive(Debug)]
pub enum Claim {
    /// This caller won the one execution of the call: forward it.
    Run(HoldRecord),
    /// The call may not run as approved; the hold as it now stands
    /// (denied, expired, or pending again).
    Settled(HoldRecord),
    /// Another caller moved the hold first; wait on it again.
    Lost,
}

/// The gates in `gates` that no entry of `lifted` lifted: a gate counts as
/// lifted only for the same policy naming the same approver group.
pub fn uncovered(gates: &[StoredGate], lifted: &[LiftedGate]) -> Vec<StoredGate> {
    gates
        .iter()
        .filter(|g| {
            !lifted
                .iter()
                .any(|l| l.policy == g.policy && l.approvers == g.approvers)
        })
        .cloned()
        .collect()
}

/// The approver groups `gates` name, sorted, once each.
pub fn groups_of(gates: &[StoredGate]) -> Vec<String> {
    let mut groups: Vec<String> = gates.iter().filter_map(|g| g.approvers.clone()).collect();
    groups.sort();
    groups.dedup();
    groups
}

/// `gates` as lifted by `by`, after the `prior` lifts, each gate once.
pub fn lift(prior: &[LiftedGate], gates: &[StoredGate], by: &str) -> Vec<LiftedGate> {
    let mut out = prior.to_vec();
    for g in uncovered(gates, prior) {
        if !out
            .iter()
            .any(|l| l.policy == g.policy && l.approvers == g.approvers)
        {
            out.push(LiftedGate {
                policy: g.policy,
                approvers: g.approvers,
                by: by.to_string(),
            });
        }
    }
    out
}

/// Whether `who` may list and read `hold`: the admin token always; an
/// approver when the hold names one of their groups. A hold that names no
/// group (a gate without `@approvers`) is the admin's alone.
pub fn visible_to(who: &Decider, hold: &HoldRecord) -> bool {
    who.any_group || hold.approver_groups.iter().any(|g| who.groups.contains(g))
}

// === impl Approvals ===

impl Approvals {
    /// Judges approved `hold` again by the current policies and, if it may
    /// still run as approved, claims its one execution.
    pub async fn claim_checked(
        &self,
        cfg: &Config,
        hold: HoldRecord,
        checker: &dyn CallChecker,
    ) -> Result<Claim, ApprovalError> {
        if hold.state != HoldState::Approved {
            return Ok(Claim::Lost);
        }
        if hold.expires_ms <= now_ms() {
            self.expire(cfg, &hold).await?;
            return self.settled(&hold.id).await;
        }
        let now = checker.recheck(&hold, hold.body_to_forward());
        let missing = match now {
            Err(e) => {
                self.settle_denied(cfg, &hold, "policy", e).await?;
                return self.settled(&hold.id).await;
            }
            Ok(Recheck::Deny { reasons }) => {
                self.settle_denied(cfg, &hold, "policy", reasons.join("; "))
                    .await?;
                return self.settled(&hold.id).await;
            }
            Ok(Recheck::Hold { gates }) => uncovered(&gates, &hold.lifted),
            Ok(Recheck::Allow) => Vec::new(),
        };
        if !missing.is_empty() {
            self.hold_again(cfg, &hold, missing).await?;
            return self.settled(&hold.id).await;
        }
        if self.claim(&hold.id).await? {
            Ok(Claim::Run(hold))
        } else {
            Ok(Claim::Lost)
        }
    }

    async fn settled(&self, id: &str) -> Result<Claim, ApprovalError> {
        let hold = self
            .store()
            .get(id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        Ok(match hold.state {
            HoldState::Approved => Claim::Lost,
            _ => Claim::Settled(hold),
        })
    }

    /// Moves approved `hold` back to pending, held for the `missing` gates
    /// only (the gates already lifted stay in `lifted`), and announces it
    /// like a new hold.
    async fn hold_again(
        &self,
        cfg: &Config,
        hold: &HoldRecord,
        missing: Vec<StoredGate>,
    ) -> Result<(), ApprovalError> {
        let groups = groups_of(&missing);
        let mut after = hold.clone();
        after.state = HoldState::Pending;
        after.gates = missing.clone();
        after.approver_groups = groups.clone();
        after.decided_by = None;
        after.decided_ms = None;
        after.reason = None;
        let deliveries = super::deliveries(cfg, payload::REQUESTED, &after);
        let queued = !deliveries.is_empty();
        let fields = DecisionFields {
            gates: Some((missing, groups)),
            ..DecisionFields::default()
        };
        let moved = self
            .store()
            .transition(
                &hold.id,
                HoldState::Approved,
                HoldState::Pending,
                now_ms(),
                fields,
                deliveries,
            )
            .await?;
        if moved {
            self.metrics.holds_pending.inc();
            let mut rec = trail::record(&after, "hold");
            rec.approval_status = Some(HoldState::Pending.as_str());
            rec.reasons = vec![format!(
                "held again: the current policies put gates on the approved call that its approval did not lift ({})",
                after
                    .gates
                    .iter()
                    .map(|g| format!("`{}`", g.policy))
                    .collect::<Vec<_>>()
                    .join(", ")
            )];
            self.audit.record(rec).await;
            self.waiters.wake(&hold.id);
            if queued {
                self.outbox_wake.notify_one();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(policy: &str, group: Option<&str>) -> StoredGate {
        StoredGate {
            policy: policy.into(),
            reason: "why".into(),
            approvers: group.map(str::to_string),
        }
    }

    #[test]
    fn a_gate_is_lifted_only_for_its_policy_and_group() {
        let lifted = lift(&[], &[gate("refunds", Some("finance"))], "alice");
        assert!(uncovered(&[gate("refunds", Some("finance"))], &lifted).is_empty());
        // A new policy, even for the same group, was not approved.
        assert_eq!(
            uncovered(&[gate("legal-review", Some("finance"))], &lifted).len(),
            1
        );
        // The same policy now naming another group was not approved either.
        assert_eq!(
            uncovered(&[gate("refunds", Some("legal"))], &lifted).len(),
            1
        );
        let both = lift(&lifted, &[gate("legal-review", Some("legal"))], "carol");
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].by, "alice");
        assert_eq!(both[1].by, "carol");
    }

    #[test]
    fn holds_without_groups_are_the_admins_alone() {
        let mut h = crate::store::test_hold("h");
        let alice = Decider {
            id: "alice".into(),
            groups: vec!["finance".into()],
            any_group: false,
        };
        let admin = Decider {
            id: "admin".into(),
            groups: vec![],
            any_group: true,
        };
        assert!(!visible_to(&alice, &h));
        assert!(visible_to(&admin, &h));
        h.approver_groups = vec!["finance".into(), "legal".into()];
        assert!(visible_to(&alice, &h));
        h.approver_groups = vec!["legal".into()];
        assert!(!visible_to(&alice, &h));
    }
}
