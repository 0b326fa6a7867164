//! Take-over: a human answers in the tool's place. The answer is stored
//! with the decision (`pending → responded`, one compare-and-set like any
//! decision), so the waiting agent and every retry of the call get that
//! answer, and the tool is never called.
//!
//! No policy re-check runs: nothing is forwarded, so there is no call for
//! the policies to judge. The decider must still be in every gate's group.

use serde_json::Value;

use super::{ApprovalError, CallChecker, HoldRecord, HumanAnswer};

/// Checks a take-over of `hold` before it is stored.
pub(super) fn check(
    hold: &HoldRecord,
    edit: Option<&Value>,
    answer: &HumanAnswer,
    checker: &dyn CallChecker,
) -> Result<(), ApprovalError> {
    if edit.is_some() {
        return Err(ApprovalError::Invalid(
            "`respond` answers in the tool's place, so it takes no edited `body` or `arguments`; send the answer as `status` and `body` (REST) or `result` (MCP)".into(),
        ));
    }
    if let HumanAnswer::Http { status, .. } = answer {
        if !(200..=599).contains(status) {
            return Err(ApprovalError::Invalid(format!(
                "`status` must be an HTTP status from 200 to 599, not `{status}`"
            )));
        }
    }
    checker
        .check_answer(hold, answer)
        .map_err(ApprovalError::Invalid)
}
