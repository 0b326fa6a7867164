//! What of a sampled call may be stored: credentials never, the JSON
//! members `sampling.redact` names never, and bodies up to a limit, their
//! truncation marked.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::store::CapturedBody;

pub const REDACTED: &str = "[redacted]";

/// The agent's headers as the reviewer sees them: its key and every header
/// the route injects (listed whether the agent sent it or not) show
/// [`REDACTED`].
pub fn request_headers(
    headers: &HeaderMap,
    injected: &[(HeaderName, HeaderValue)],
) -> Vec<(String, String)> {
    let is_injected = |n: &HeaderName| injected.iter().any(|(i, _)| i == n);
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| !is_injected(n))
        .map(|(n, v)| {
            let value = if *n == http::header::AUTHORIZATION || v.is_sensitive() {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (n.as_str().to_string(), value)
        })
        .collect();
    out.extend(
        injected
            .iter()
            .map(|(n, _)| (n.as_str().to_string(), REDACTED.to_string())),
    );
    out
}

/// The upstream's headers, as sent to the agent.
pub fn response_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let value = if v.is_sensitive() {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (n.as_str().to_string(), value)
        })
        .collect()
}

/// A body kept whole or in part: `seen` is the body's length as far as it
/// passed, `kept` its first bytes (all of them when `kept.len() == seen`).
pub fn body(kept: &[u8], seen: u64, max: usize, pointers: &[String]) -> CapturedBody {
    let whole = u64::try_from(kept.len()).is_ok_and(|k| k == seen);
    if seen == 0 {
        return CapturedBody {
            kind: "empty".into(),
            content: None,
            bytes: 0,
            truncated: false,
            note: None,
        };
    }
    if whole {
        if let Ok(mut json) = serde_json::from_slice::<Value>(kept) {
            for p in pointers {
                if let Some(v) = json.pointer_mut(p) {
                    *v = Value::String(REDACTED.into());
                }
            }
            let text = json.to_string();
            if text.len() <= max {
                return kept_body("json", Some(json), seen, false);
            }
            // Redacted first, then cut: the cut text holds nothing redacted.
            let cut = cut_at_char(&text, max);
            return kept_body("text", Some(Value::String(cut.into())), seen, true);
        }
    }
    let looks_json = kept
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    if !whole && looks_json && !pointers.is_empty() {
        return CapturedBody {
            kind: "withheld".into(),
            content: None,
            bytes: seen,
            truncated: true,
            note: Some(
                "a JSON body longer than `sampling.max_bytes` is not kept: its cut text cannot be checked for the members `sampling.redact` names".into(),
            ),
        };
    }
    let take = kept.len().min(max);
    let text = String::from_utf8_lossy(&kept[..take]).into_owned();
    kept_body(
        "text",
        Some(Value::String(text)),
        seen,
        !whole || take < kept.len(),
    )
}

fn kept_body(kind: &str, content: Option<Value>, seen: u64, truncated: bool) -> CapturedBody {
    CapturedBody {
        kind: kind.into(),
        content,
        bytes: seen,
        truncated,
        note: None,
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn cut_at_char(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_are_blanked_before_the_body_is_cut() {
        let raw = br#"{"card_number":"4111111111111111","items":[{"sku":"a"}],"note":"xxxxxxxxxxxxxxxxxxxx"}"#;
        let pointers = vec!["/card_number".to_string(), "/items/0/sku".to_string()];
        let whole = body(raw, raw.len() as u64, 4096, &pointers);
        assert_eq!(whole.kind, "json");
        assert_eq!(
            whole.content,
            Some(
                json!({"card_number": REDACTED, "items": [{"sku": REDACTED}], "note": "xxxxxxxxxxxxxxxxxxxx"})
            )
        );
        let cut = body(raw, raw.len() as u64, 40, &pointers);
        assert!(cut.truncated);
        let text = cut.content.unwrap().to_string();
        assert!(!text.contains("4111"), "{text}");
    }

    #[test]
    fn a_cut_json_stream_is_withheld_when_members_must_be_redacted() {
        let part = br#"{"card_number":"4111"#;
        let b = body(part, 500, 20, &["/card_number".to_string()]);
        assert_eq!(b.kind, "withheld");
        assert!(b.content.is_none());
        let plain = body(b"data: one\n\n", 500, 20, &["/x".to_string()]);
        assert_eq!(plain.kind, "text");
        assert!(plain.truncated);
    }
}
