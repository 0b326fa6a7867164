//! A refused approval request: its status, its error kind and the message
//! the caller gets, in one type, so that a refusal is answered and audited
//! from the same facts.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error;
use crate::approval::ApprovalError;

#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub kind: &'static str,
    /// What the caller is told.
    pub message: String,
    /// What the audit log keeps instead of `message`, when the message
    /// echoes the caller's input (which may hold a pasted secret).
    pub logged: Option<String>,
}

impl Refusal {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            kind,
            message: message.into(),
            logged: None,
        }
    }

    pub fn unauthenticated() -> Refusal {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send `Authorization: Bearer <approver or admin token>`",
        )
    }

    pub fn agent_key() -> Refusal {
        Refusal::new(
            StatusCode::FORBIDDEN,
            "agent_cannot_decide",
            "an agent's key can never read or decide approvals",
        )
    }

    pub fn bad_request(kind: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, kind, message)
    }

    /// The reason as the audit log keeps it.
    pub fn audit_reason(&self) -> &str {
        self.logged.as_deref().unwrap_or(&self.message)
    }
}

/// The one mapping from approval errors to HTTP answers; exhaustive, so a
/// new error cannot go unanswered (or unaudited).
impl From<&ApprovalError> for Refusal {
    fn from(e: &ApprovalError) -> Refusal {
        let (status, kind) = match e {
            ApprovalError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApprovalError::Mismatch { .. } => (StatusCode::CONFLICT, "mismatch"),
            ApprovalError::AlreadyDecided { .. } => (StatusCode::CONFLICT, "already_decided"),
            ApprovalError::WrongGroup { .. } => (StatusCode::FORBIDDEN, "wrong_group"),
            ApprovalError::AdminOnly { .. } => (StatusCode::FORBIDDEN, "admin_only"),
            ApprovalError::TooManyPending { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_pending")
            }
            ApprovalError::EditDenied { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "edit_denied"),
            ApprovalError::NowDenied { .. } => (StatusCode::CONFLICT, "now_denied"),
            ApprovalError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_decision"),
            ApprovalError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        };
        Refusal::new(status, kind, e.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, self.kind, self.message)
    }
}
