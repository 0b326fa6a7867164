//! The endpoints that read the store (approvals, webhook deliveries)
//! answer within `admin.store_timeout`: a store locked by another process
//! turns into a 503 the caller can retry, never a request that hangs.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::{error, AdminState};

/// Runs the request, or answers 503 `store_unavailable` when it is not
/// done within `admin.store_timeout`. A decision cut off this way may
/// still be stored; the caller reads the approval to find out.
pub async fn within_store_timeout(
    State(state): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.live.load().config.admin.store_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!(
                    "the approval store did not answer within {}s (it may be locked by another process); try again shortly, and read the approval before deciding again: a decision sent may still be stored",
                    limit.as_secs_f64()
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}
