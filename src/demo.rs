//! A small demo tool server, so the quickstart has something to call.
//!
//! Started by `airlock serve` when the configuration has `demo.listen`. It
//! pretends to be a CRM: list and read customers, issue refunds, delete
//! customers. Every answer echoes what reached it, so you can see exactly
//! what Airlock forwarded (and that the agent's key never arrives).

use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

mod mcp;

pub fn router() -> Router {
    Router::new()
        .route("/mcp", post(mcp::handle))
        .route("/customers", get(customers))
        .route("/customers/{id}", get(customer).delete(delete_customer))
        .route("/refunds", post(refund))
        .fallback(echo)
}

async fn customers() -> Json<Value> {
    Json(json!({"customers": [
        {"id": "c-1", "name": "Ada Lovelace", "plan": "pro"},
        {"id": "c-2", "name": "Grace Hopper", "plan": "team"},
    ]}))
}

async fn customer(Path(id): Path<String>) -> Response {
    match id.as_str() {
        "c-1" => Json(json!({"id": "c-1", "name": "Ada Lovelace", "plan": "pro"})).into_response(),
        "c-2" => Json(json!({"id": "c-2", "name": "Grace Hopper", "plan": "team"})).into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such customer"})),
        )
            .into_response(),
    }
}

async fn delete_customer(Path(id): Path<String>) -> Json<Value> {
    Json(json!({"deleted": id}))
}

async fn refund(req: Request) -> Response {
    let body = axum::body::to_bytes(req.into_body(), 1024 * 1024)
        .await
        .unwrap_or_default();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (
        StatusCode::CREATED,
        Json(json!({"refund": "issued", "request": parsed})),
    )
        .into_response()
}

async fn echo(req: Request) -> Json<Value> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(v.to_str().unwrap_or("<binary>").to_string()),
            )
        })
        .collect();
    Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}
