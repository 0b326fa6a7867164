//! The demo CRM as a tiny MCP server (Streamable HTTP, JSON answers), so
//! the quickstart can show tool-level policies: `lookup_customer`,
//! `issue_refund` and `delete_customer`.
//!
//! It speaks the handshake revision only (`initialize`); clients of the
//! newest revision fall back to it, as they do with any such server.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub async fn handle(body: axum::body::Bytes) -> Response {
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(Value::Null, -32700, "parse error");
    };
    let id = msg.get("id").cloned();
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    let Some(id) = id else {
        // Notifications (and client responses) need no answer.
        return StatusCode::ACCEPTED.into_response();
    };
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    let result = match method {
        "initialize" => json!({
            "protocolVersion": params.get("protocolVersion").and_then(Value::as_str).unwrap_or("2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "airlock-demo-crm", "version": env!("CARGO_PKG_VERSION")},
        }),
        "ping" => json!({}),
        "tools/list" => json!({"tools": tools()}),
        "tools/call" => call(&params),
        _ => return rpc_error(id, -32601, &format!("method `{method}` not found")),
    };
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

fn tools() -> Value {
    let customer = json!({"type": "string", "description": "the customer's id, e.g. c-1"});
    json!([
        {
            "name": "lookup_customer",
            "description": "Look a customer up by id.",
            "inputSchema": {"type": "object", "properties": {"customer_id": customer}, "required": ["customer_id"]},
        },
        {
            "name": "issue_refund",
            "description": "Issue a refund to a customer.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "customer_id": customer,
                    "amount": {"type": "integer", "description": "whole currency units"},
                    "reason": {"type": "string"},
                },
                "required": ["customer_id", "amount"],
            },
        },
        {
            "name": "delete_customer",
            "description": "Delete a customer for good.",
            "inputSchema": {"type": "object", "properties": {"customer_id": customer}, "required": ["customer_id"]},
        },
    ])
}

fn call(params: &Value) -> Value {
    let args = params.get("arguments").cloned().unwrap_or(json!({}));
    let customer = args
        .get("customer_id")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let text = match params.get("name").and_then(Value::as_str).unwrap_or("") {
        "lookup_customer" => format!("customer {customer}: Ada Lovelace, plan pro"),
        "issue_refund" => format!(
            "refund of {} issued to {customer}",
            args.get("amount").unwrap_or(&Value::Null)
        ),
        "delete_customer" => format!("customer {customer} deleted"),
        other => {
            return json!({"content": [{"type": "text", "text": format!("no tool `{other}`")}], "isError": true})
        }
    };
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

fn rpc_error(id: Value, code: i64, message: &str) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
        .into_response()
}
