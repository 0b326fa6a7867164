//! What a decision says: the verdict (allow, deny, or hold with its
//! gates), the policies behind it and what shadow policies would change.
//! Plain data, with no Cedar type in it, for the proxy, the audit record and
//! `explain`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// A `@hold` forbid that determined a held call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gate {
    pub policy: String,
    pub reason: String,
    pub approvers: Option<String>,
    #[serde(serialize_with = "ser_opt_duration")]
    pub timeout: Option<Duration>,
    /// `@elicit("url")`: the agent's MCP client is sent the approval's page.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub elicit: bool,
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

/// The outcome of a decision, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny { reasons: Vec<String> },
    Hold { gates: Vec<Gate> },
}

/// How a `@hold` gate reads to an agent or an approver.
pub fn gate_text(policy: &str, reason: &str) -> String {
    format!("`{policy}` requires human approval: {reason}")
}

impl Gate {
    pub fn describe(&self) -> String {
        gate_text(&self.policy, &self.reason)
    }
}

impl Verdict {
    /// What the verdict tells the agent: deny reasons, or the gates of a hold.
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Verdict::Allow => Vec::new(),
            Verdict::Deny { reasons } => reasons.clone(),
            Verdict::Hold { gates } => gates.iter().map(Gate::describe).collect(),
        }
    }

    /// The gates of a hold; empty otherwise.
    pub fn gates(&self) -> &[Gate] {
        match self {
            Verdict::Hold { gates } => gates,
            _ => &[],
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny { .. } => "deny",
            Verdict::Hold { .. } => "hold",
        }
    }
}

/// What shadow policies would have changed.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowOutcome {
    pub verdict: &'static str,
    pub policies: Vec<String>,
}

/// A verdict with everything the audit record and `explain` need.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The determining policies (for a deny from errors: the failing ones).
    pub policies: Vec<String>,
    /// Evaluation errors; non-empty means the call was denied for them.
    pub errors: Vec<String>,
    /// Set when shadow policies would have given another verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowOutcome>,
    pub snapshot: Arc<str>,
    pub eval_micros: u64,
    /// Answered from the decision memo, without running Cedar.
    #[serde(skip)]
    pub memoized: bool,
}

/// Why a request could not even be put to Cedar.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("agent `{0}` is not in the policy snapshot")]
    UnknownAgent(String),
    #[error("cannot build the Cedar request: {0}")]
    Request(String),
}
