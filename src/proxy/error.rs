//! Every way a call can fail, whose fault it is, and how the agent hears of
//! it. [`ProxyError::status`] is the one exhaustive match from error to
//! HTTP status; the audit record takes [`ProxyError::kind`] and
//! [`ProxyError::fault`] from the same value.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

pub use crate::audit::Fault;

/// `Retry-After` for an agent at its cap of pending holds: a hold leaves
/// the count only when a human decides or it expires, so sooner is no use.
pub const TOO_MANY_PENDING_RETRY_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("missing or unknown agent key: send `Authorization: Bearer <key>`")]
    Unauthenticated,
    #[error("no route matches `{0}`")]
    NoRoute(String),
    #[error("{message}")]
    BadRequest { kind: &'static str, message: String },
    #[error("method `{0}` is not accepted: Airlock is a reverse proxy, not an open proxy")]
    MethodNotAllowed(String),
    #[error("method `{method}` is refused: {why}")]
    MethodRefused { method: String, why: &'static str },
    #[error("origin `{0}` is not allowed on this MCP route (its `allowed_origins`)")]
    OriginRefused(String),
    #[error("the request body is over the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the agent took too long to send the request")]
    RequestTimeout,
    /// A body that cannot be read one way only (see `proxy::body`).
    #[error("the request body is not judged: {0}")]
    UnsupportedBody(String),
    #[error("denied by policy: {}", reasons.join("; "))]
    Denied {
        reasons: Vec<String>,
        policies: Vec<String>,
    },
    #[error("this call needs human approval: {}", reasons.join("; "))]
    ApprovalRequired {
        reasons: Vec<String>,
        policies: Vec<String>,
    },
    #[error("approval `{id}` was denied by `{by}`: {reason}")]
    ApprovalDenied {
        id: String,
        by: String,
        reason: String,
    },
    /// An operator paused the agent, route or tool (`what`) in `deny` mode.
    #[error("{what} is paused by `{by}`: {reason}; the call was not made")]
    Paused {
        what: String,
        by: String,
        reason: String,
    },
    #[error("approval `{0}` expired before the call was made; the call was not made")]
    ApprovalExpired(String),
    #[error(
        "agent `{agent}` already has {cap} calls awaiting approval; retry when some are decided"
    )]
    TooManyPending { agent: String, cap: u32 },
    #[error("no approval `{0}`")]
    UnknownApproval(String),
    #[error("approval `{0}` belongs to a different call; send the call it was requested for")]
    ApprovalMismatch(String),
    #[error("upstream `{route}` did not answer within {seconds}s")]
    UpstreamTimeout { route: String, seconds: u64 },
    /// `connected: false` when no connection was made (refused, TLS
    /// handshake failed): the request provably never left Airlock.
    #[error("upstream `{route}` is unreachable: {detail}")]
    UpstreamUnavailable {
        route: String,
        detail: String,
        connected: bool,
    },
    /// An approved call whose upstream could not be reached: nothing was
    /// sent, so the approval still stands and the next retry runs it.
    #[error("upstream `{route}` is unreachable: {detail}; the approved call was not sent and approval `{id}` still stands: send the same call again to run it (you may retry)")]
    ApprovedCallNotSent {
        id: String,
        route: String,
        detail: String,
    },
    /// An approved call is being executed, or its outcome is still being
    /// recorded: the retry gets the outcome once it is stored.
    #[error("approval `{0}` is executing; its outcome is not recorded yet: send the same call again after the `Retry-After` seconds")]
    ApprovalExecuting(String),
    /// The approval store did not take a read or write (locked by another
    /// process, for instance); nothing was sent upstream.
    #[error(
        "the approval store is unavailable ({0}); the call was not sent: send it again shortly"
    )]
    StoreUnavailable(String),
    #[error("the audit trail cannot record calls right now, so none are served; see `/healthz` on the admin listener")]
    AuditUnavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn bad_request(kind: &'static str, message: impl Into<String>) -> Self {
        ProxyError::BadRequest {
            kind,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed(_) | ProxyError::MethodRefused { .. } => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ProxyError::OriginRefused(_) => StatusCode::FORBIDDEN,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UnsupportedBody(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::Denied { .. }
            | ProxyError::ApprovalRequired { .. }
            | ProxyError::ApprovalDenied { .. }
            | ProxyError::ApprovalExpired(_)
            | ProxyError::Paused { .. } => StatusCode::FORBIDDEN,
            ProxyError::UnknownApproval(_) => StatusCode::NOT_FOUND,
            ProxyError::ApprovalMismatch(_) | ProxyError::ApprovalExecuting(_) => {
                StatusCode::CONFLICT
            }
            ProxyError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamUnavailable { .. } | ProxyError::ApprovedCallNotSent { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::StoreUnavailable(_) | ProxyError::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Unauthenticated => "unauthenticated",
            ProxyError::NoRoute(_) => "no_route",
            ProxyError::BadRequest { kind, .. } => kind,
            ProxyError::MethodNotAllowed(_) => "method_not_allowed",
            ProxyError::MethodRefused { .. } => "method_refused",
            ProxyError::OriginRefused(_) => "origin_not_allowed",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::RequestTimeout => "request_timeout",
            ProxyError::UnsupportedBody(_) => "unsupported_body",
            ProxyError::Denied { .. } => "denied",
            ProxyError::ApprovalRequired { .. } => "approval_required",
            ProxyError::ApprovalDenied { .. } => "approval_denied",
            ProxyError::ApprovalExpired(_) => "approval_expired",
            ProxyError::Paused { .. } => "paused",
            ProxyError::UnknownApproval(_) => "unknown_approval",
            ProxyError::ApprovalMismatch(_) => "approval_mismatch",
            ProxyError::TooManyPending { .. } => "too_many_pending",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::UpstreamUnavailable { .. } | ProxyError::ApprovedCallNotSent { .. } => {
                "upstream_unavailable"
            }
            ProxyError::ApprovalExecuting(_) => "executing",
            ProxyError::StoreUnavailable(_) => "store_unavailable",
            ProxyError::AuditUnavailable => crate::audit::UNAVAILABLE,
            ProxyError::Internal(_) => "internal",
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::Unauthenticated
            | ProxyError::NoRoute(_)
            | ProxyError::BadRequest { .. }
            | ProxyError::MethodNotAllowed(_)
            | ProxyError::MethodRefused { .. }
            | ProxyError::OriginRefused(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::RequestTimeout
            | ProxyError::UnsupportedBody(_)
            | ProxyError::UnknownApproval(_)
            | ProxyError::ApprovalMismatch(_)
            | ProxyError::TooManyPending { .. } => Fault::Agent,
            ProxyError::Denied { .. }
            | ProxyError::ApprovalRequired { .. }
            | ProxyError::ApprovalDenied { .. }
            | ProxyError::ApprovalExpired(_)
            | ProxyError::Paused { .. } => Fault::Policy,
            ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamUnavailable { .. }
            | ProxyError::ApprovedCallNotSent { .. } => Fault::Upstream,
            ProxyError::ApprovalExecuting(_)
            | ProxyError::StoreUnavailable(_)
            | ProxyError::AuditUnavailable
            | ProxyError::Internal(_) => Fault::Internal,
        }
    }

    pub fn policies(&self) -> Option<&[String]> {
        match self {
            ProxyError::Denied { policies, .. } | ProxyError::ApprovalRequired { policies, .. } => {
                Some(policies)
            }
            _ => None,
        }
    }

    /// Seconds after which the same call may succeed, for `Retry-After`.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::ApprovalExecuting(_) => Some(2),
            ProxyError::ApprovedCallNotSent { .. } | ProxyError::StoreUnavailable(_) => Some(1),
            _ => None,
        }
    }

    fn reasons(&self) -> Option<&[String]> {
        match self {
            ProxyError::Denied { reasons, .. } | ProxyError::ApprovalRequired { reasons, .. } => {
                Some(reasons.as_slice())
            }
            _ => None,
        }
    }

    /// The approval an error is about, if any.
    fn approval_id(&self) -> Option<&str> {
        match self {
            ProxyError::ApprovalDenied { id, .. }
            | ProxyError::ApprovalExpired(id)
            | ProxyError::UnknownApproval(id)
            | ProxyError::ApprovalMismatch(id)
            | ProxyError::ApprovalExecuting(id)
            | ProxyError::ApprovedCallNotSent { id, .. } => Some(id.as_str()),
            _ => None,
        }
    }

    /// The reasons shown to the agent: the policies', or the approver's.
    fn shown_reasons(&self) -> Option<Vec<String>> {
        match self {
            ProxyError::ApprovalDenied { reason, .. } | ProxyError::Paused { reason, .. } => {
                Some(vec![reason.clone()])
            }
            other => other.reasons().map(<[String]>::to_vec),
        }
    }

    /// The JSON-RPC error code an MCP route answers this error with (see
    /// docs/mcp.md).
    pub fn jsonrpc_code(&self) -> i64 {
        use crate::mcp::jsonrpc;
        match self {
            ProxyError::Unauthenticated => jsonrpc::UNAUTHENTICATED,
            ProxyError::NoRoute(_)
            | ProxyError::BadRequest { .. }
            | ProxyError::MethodNotAllowed(_)
            | ProxyError::MethodRefused { .. }
            | ProxyError::OriginRefused(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::RequestTimeout
            | ProxyError::UnsupportedBody(_)
            | ProxyError::UnknownApproval(_)
            | ProxyError::ApprovalMismatch(_)
            | ProxyError::TooManyPending { .. } => jsonrpc::INVALID_REQUEST,
            ProxyError::Denied { .. }
            | ProxyError::ApprovalDenied { .. }
            | ProxyError::ApprovalExpired(_) => jsonrpc::DENIED,
            ProxyError::ApprovalRequired { .. } => jsonrpc::APPROVAL_REQUIRED,
            ProxyError::Paused { .. } => jsonrpc::PAUSED,
            ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamUnavailable { .. }
            | ProxyError::ApprovedCallNotSent { .. } => jsonrpc::UPSTREAM_FAILED,
            ProxyError::ApprovalExecuting(_)
            | ProxyError::StoreUnavailable(_)
            | ProxyError::AuditUnavailable => jsonrpc::UNAVAILABLE,
            ProxyError::Internal(_) => jsonrpc::INTERNAL_ERROR,
        }
    }

    /// The JSON error body every agent-facing error carries on a REST
    /// route.
    pub fn to_response(&self, request_id: &str) -> Response<Full<Bytes>> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: String,
            request_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            policies: Option<&'a [String]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reasons: Option<Vec<String>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            approval_id: Option<&'a str>,
        }
        let body = Body {
            error: self.kind(),
            message: self.to_string(),
            request_id,
            policies: self.policies(),
            reasons: self.shown_reasons(),
            approval_id: self.approval_id(),
        };
        let bytes =
            serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
        self.respond_with(bytes, request_id)
    }

    /// The same error as a JSON-RPC error object, as an MCP route answers
    /// it: MCP SDKs show a JSON-RPC error's message (the Python SDK reads
    /// one at any status), where a bare JSON body shows as a generic
    /// failure. The HTTP status is the REST one. The id is null: the error
    /// is about the HTTP request, which may carry several messages, or none
    /// that could be read.
    pub fn to_jsonrpc_response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let mut data = serde_json::Map::new();
        data.insert("error".into(), self.kind().into());
        data.insert("fault".into(), serde_json::json!(self.fault()));
        data.insert("requestId".into(), request_id.into());
        if let Some(p) = self.policies() {
            data.insert("policies".into(), serde_json::json!(p));
        }
        if let Some(r) = self.shown_reasons() {
            data.insert("reasons".into(), serde_json::json!(r));
        }
        if let Some(id) = self.approval_id() {
            data.insert("approvalId".into(), id.into());
        }
        let answer = crate::mcp::jsonrpc::error(
            &serde_json::Value::Null,
            self.jsonrpc_code(),
            &self.to_string(),
            Some(serde_json::Value::Object(data)),
        );
        let bytes = serde_json::to_vec(&answer).unwrap_or_default();
        self.respond_with(bytes, request_id)
    }

    /// `bytes` as this error's answer: its status, and the headers that go
    /// with it (`Retry-After`, `WWW-Authenticate`).
    fn respond_with(&self, bytes: Vec<u8>, request_id: &str) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(Bytes::from(bytes)));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = HeaderValue::from_str(request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ProxyError::Unauthenticated) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, ProxyError::TooManyPending { .. }) {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(TOO_MANY_PENDING_RETRY_SECS),
            );
        }
        resp
    }
}
