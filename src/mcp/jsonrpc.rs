//! JSON-RPC 2.0 as MCP uses it: parsing a POST body into messages, and the
//! answers Airlock writes itself.
//!
//! Parsing is total: any byte string yields messages or a [`ParseError`],
//! never a panic. Objects with duplicate keys are refused, since the policy
//! and the server could read different copies.

use serde_json::{json, Map, Value};

use crate::policy::value::parse_json_strict;

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// An `Mcp-Method` or `Mcp-Name` header disagrees with the body (the code
/// the MCP SDKs use for the same check).
pub const HEADER_MISMATCH: i64 = -32020;
/// Airlock's policy denied the request.
pub const DENIED: i64 = -32001;
/// The request waits for a human's approval.
pub const APPROVAL_REQUIRED: i64 = -32002;
/// Not forwarded because another message of the same batch was refused.
pub const BATCH_REFUSED: i64 = -32003;
/// The agent's key is missing or unknown.
pub const UNAUTHENTICATED: i64 = -32004;
/// The MCP server could not be reached, or did not answer in time.
pub const UPSTREAM_FAILED: i64 = -32005;
/// Airlock cannot serve calls right now (its store or audit trail); the
/// same call may succeed later.
pub const UNAVAILABLE: i64 = -32006;
/// An error inside Airlock.
pub const INTERNAL_ERROR: i64 = -32603;
/// Refused because an operator paused the agent, route or tool.
pub const PAUSED: i64 = -32007;

/// The `_meta` key that marks a request of the 2026-07-28 revision or later.
pub const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// One JSON-RPC message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// The client's answer to a server request (sampling, elicitation...).
    Response { id: Value },
}

impl Message {
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } => None,
        }
    }

    pub fn params(&self) -> Option<&Value> {
        match self {
            Message::Request { params, .. } | Message::Notification { params, .. } => {
                params.as_ref()
            }
            Message::Response { .. } => None,
        }
    }

    /// The id an answer to this message carries; `None` for notifications
    /// and responses, which get no answer.
    pub fn request_id(&self) -> Option<&Value> {
        match self {
            Message::Request { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether the message speaks the 2026-07-28 revision (self-contained
    /// requests with the protocol version in `params._meta`).
    pub fn is_modern(&self) -> bool {
        self.params()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(PROTOCOL_VERSION_META))
            .is_some()
    }
}

/// A message that is JSON but not JSON-RPC.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidMessage {
    /// The id, when one could be read, so the error can name it.
    pub id: Value,
    pub message: String,
}

/// A POST body: one message, or a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub batch: bool,
    pub messages: Vec<Result<Message, InvalidMessage>>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("a JSON-RPC batch must not be empty")]
    EmptyBatch,
}

impl ParseError {
    pub fn code(&self) -> i64 {
        match self {
            ParseError::NotJson(_) => PARSE_ERROR,
            ParseError::EmptyBatch => INVALID_REQUEST,
        }
    }
}

/// Parses a POST body.
pub fn parse(body: &[u8]) -> Result<Body, ParseError> {
    let value = parse_json_strict(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    match value {
        Value::Array(items) if items.is_empty() => Err(ParseError::EmptyBatch),
        Value::Array(items) => Ok(Body {
            batch: true,
            messages: items.into_iter().map(message).collect(),
        }),
        other => Ok(Body {
            batch: false,
            messages: vec![message(other)],
        }),
    }
}

fn message(v: Value) -> Result<Message, InvalidMessage> {
    let invalid = |id: Value, message: &str| InvalidMessage {
        id,
        message: message.to_string(),
    };
    let Value::Object(mut obj) = v else {
        return Err(invalid(Value::Null, "a JSON-RPC message must be an object"));
    };
    let id = obj.remove("id");
    let id_ok = matches!(id, None | Some(Value::String(_)) | Some(Value::Number(_)));
    let shown_id = if id_ok {
        id.clone().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(shown_id, "`jsonrpc` must be \"2.0\""));
    }
    if !id_ok {
        return Err(invalid(shown_id, "`id` must be a string or a number"));
    }
    let params = obj.remove("params");
    if params
        .as_ref()
        .is_some_and(|p| !p.is_object() && !p.is_array())
    {
        return Err(invalid(shown_id, "`params` must be an object or an array"));
    }
    match (obj.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => Ok(Message::Request { id, method, params }),
        (Some(Value::String(method)), None) => Ok(Message::Notification { method, params }),
        (Some(_), _) => Err(invalid(shown_id, "`method` must be a string")),
        (None, Some(id)) if obj.contains_key("result") || obj.contains_key("error") => {
            Ok(Message::Response { id })
        }
        (None, _) => Err(invalid(shown_id, "a JSON-RPC message needs a `method`")),
    }
}

/// A JSON-RPC error answer.
pub fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut err = Map::new();
    err.insert("code".into(), json!(code));
    err.insert("message".into(), json!(message));
    if let Some(d) = data {
        err.insert("data".into(), d);
    }
    json!({"jsonrpc": "2.0", "id": id, "error": Value::Object(err)})
}

/// A successful `tools/call` answer that reports a failure to the model: a
/// tool error (`isError: true`) with `text`, where the model reads it.
pub fn tool_error(id: &Value, text: &str, modern: bool, meta: Value) -> Value {
    let mut result = json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
        "_meta": meta,
    });
    if modern {
        result["resultType"] = json!("complete");
    }
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_parse_or_fail_without_panicking() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"[1,2]",
            b"null",
            b"{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"x\"}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"id\":2}",
            b"\xff\xfe",
        ] {
            let _ = parse(body);
        }
        assert_eq!(parse(b"{").unwrap_err().code(), PARSE_ERROR);
        assert_eq!(parse(b"[]").unwrap_err().code(), INVALID_REQUEST);
        assert!(parse(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"id\":2}").is_err());
    }

    #[test]
    fn messages_are_classified() {
        let b = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"s1","result":{}},{"jsonrpc":"1.0","id":7,"method":"x"},{"jsonrpc":"2.0","id":[1],"method":"x"}]"#).unwrap();
        assert!(b.batch);
        assert!(matches!(b.messages[0], Ok(Message::Request { .. })));
        assert!(matches!(b.messages[1], Ok(Message::Notification { .. })));
        assert!(matches!(b.messages[2], Ok(Message::Response { .. })));
        assert_eq!(b.messages[3].as_ref().unwrap_err().id, json!(7));
        assert_eq!(b.messages[4].as_ref().unwrap_err().id, Value::Null);
    }
}
