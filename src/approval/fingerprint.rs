//! The identity of a call: what an approval is bound to.
//!
//! SHA-256 over a canonical JSON array `[protocol, method, route, path,
//! query, body]`, where a JSON body is written with sorted keys and no
//! spaces, so `{"b":1,"a":2}` and `{ "a": 2, "b": 1 }` are the same call,
//! and any other body is its base64. An MCP call passes its tool name as
//! `path` and its canonical arguments as the body.

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The hex SHA-256 fingerprint of a call.
pub fn fingerprint(
    protocol: &str,
    method: &str,
    route: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> String {
    let body = canonical_body(body);
    let parts = Value::Array(vec![
        Value::String(protocol.into()),
        Value::String(method.into()),
        Value::String(route.into()),
        Value::String(path.into()),
        query.map_or(Value::Null, |q| Value::String(q.into())),
        Value::String(body),
    ]);
    hex::encode(Sha256::digest(parts.to_string().as_bytes()))
}

/// Canonical JSON text for a JSON body; `b64:` and the bytes otherwise.
pub fn canonical_body(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => canonical_json(&v),
        Err(_) if body.is_empty() => String::new(),
        Err(_) => format!(
            "b64:{}",
            base64::engine::general_purpose::STANDARD.encode(body)
        ),
    }
}

/// JSON with object keys sorted at every level.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_spacing_do_not_matter_but_values_do() {
        let post = |path: &str, body: &[u8]| fingerprint("http", "POST", "crm", path, None, body);
        let a = post("/crm/refunds", br#"{"b":1,"a":{"y":2,"x":3}}"#);
        let b = post("/crm/refunds", br#"{ "a": {"x":3, "y":2}, "b": 1 }"#);
        let c = post("/crm/refunds", br#"{"b":2,"a":{"y":2,"x":3}}"#);
        let d = post("/crm/other", br#"{"b":1,"a":{"y":2,"x":3}}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
