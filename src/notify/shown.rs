//! A held call as an approver is shown it: the headers that will be
//! forwarded and the body exactly as it will be sent, never a re-encoding
//! of it (which would round numbers and reorder nothing but hide much).
//!
//! A body is shown as `{"text": ...}` (UTF-8; a form body adds its decoded
//! `form` fields, in order, repeats kept), or `{"base64": ...}`. Where it
//! leaves Airlock unauthenticated (webhooks, the audit log), the values of
//! secret-looking keys, fields and headers are replaced by a marker that
//! says what it hid: `[redacted: 13 bytes, sha256 <hex>]`. A JSON body keeps
//! its text, numbers as written, with only those values replaced; a form
//! keeps its fields; any other body is hidden whole (`hidden`), with the
//! same marker.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Keys, form fields and header names whose values never leave Airlock in
/// a notification.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "authorization",
    "cookie",
    "card",
    "cvv",
    "ssn",
    "iban",
];

/// JSON deeper than this is hidden whole rather than walked.
const MAX_DEPTH: usize = 128;

/// Whether values are shown as they are (an authenticated view) or with
/// secrets replaced by markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Authenticated,
    Redacted,
}

pub fn is_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// The marker for hidden `bytes`: what was hidden, by length and SHA-256,
/// so that two different values never look alike.
pub fn marker(bytes: &[u8]) -> String {
    format!(
        "[redacted: {} bytes, sha256 {}]",
        bytes.len(),
        hex::encode(Sha256::digest(bytes))
    )
}

/// The agent's stated confidence as a JSON number (`null` when it stated
/// none); the stored text has at most 4 decimals, which a float keeps.
pub fn confidence(text: Option<&str>) -> Value {
    text.and_then(|t| t.parse::<f64>().ok())
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// The headers as `[name, value]` pairs, in order.
pub fn headers(headers: &[(String, String)], to: Audience) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(k, v)| match to {
                Audience::Redacted if is_secret(k) => json!([k, marker(v.as_bytes())]),
                _ => json!([k, v]),
            })
            .collect(),
    )
}

/// The body as it will be sent; `null` when empty.
pub fn body(headers: &[(String, String)], body: &[u8], to: Audience) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return match to {
            Audience::Authenticated => {
                json!({"base64": base64::engine::general_purpose::STANDARD.encode(body)})
            }
            Audience::Redacted => json!({"hidden": marker(body)}),
        };
    };
    let form = is_form(headers).then(|| form_fields(text));
    match (to, form) {
        (Audience::Authenticated, None) => json!({"text": text}),
        (Audience::Authenticated, Some(fields)) => json!({"text": text, "form": pairs(fields)}),
        (Audience::Redacted, Some(fields)) => {
            let fields = fields
                .into_iter()
                .map(|(k, v)| {
                    let v = if is_secret(&k) {
                        marker(v.as_bytes())
                    } else {
                        v
                    };
                    (k, v)
                })
                .collect();
            json!({"form": pairs(fields)})
        }
        (Audience::Redacted, None) => match redact_json_text(text) {
            Some(redacted) => json!({"text": redacted}),
            None => json!({"hidden": marker(body)}),
        },
    }
}

/// A JSON value (an approver's proposed edit) with secret-looking keys'
/// values replaced by markers.
pub fn redact_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                if is_secret(k) {
                    let bytes = match x {
                        Value::String(s) => s.as_bytes().to_vec(),
                        other => other.to_string().into_bytes(),
                    };
                    out.insert(k.clone(), Value::String(marker(&bytes)));
                } else {
                    out.insert(k.clone(), redact_value(x));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(redact_value).collect()),
        other => other.clone(),
    }
}

fn pairs(fields: Vec<(String, String)>) -> Value {
    Value::Array(fields.into_iter().map(|(k, v)| json!([k, v])).collect())
}

fn is_form(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("content-type")
            && v.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
    })
}

/// `application/x-www-form-urlencoded` fields as a server decodes them:
/// `+` is a space, then percent-decoding; empty pieces are skipped.
fn form_fields(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// `text` with the value of every secret-looking object key replaced by a
/// marker and everything else as written; `None` when it is not JSON.
pub fn redact_json_text(text: &str) -> Option<String> {
    let mut walk = Walk {
        src: text.as_bytes(),
        pos: 0,
        hidden: Vec::new(),
    };
    walk.ws();
    walk.value(0)?;
    walk.ws();
    if walk.pos != text.len() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in walk.hidden {
        out.push_str(text.get(at..start)?);
        let raw = text.get(start..end)?;
        // A string is measured and hashed as the text it stands for.
        let bytes = match serde_json::from_str::<String>(raw) {
            Ok(s) => s.into_bytes(),
            Err(_) => raw.as_bytes().to_vec(),
        };
        out.push_str(&Value::String(marker(&bytes)).to_string());
        at = end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}

/// A strict-enough JSON walk that records the spans of secret values.
struct Walk<'a> {
    src: &'a [u8],
    pos: usize,
    hidden: Vec<(usize, usize)>,
}

impl Walk<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.src.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    /// One or more digits.
    fn digits(&mut self) -> Option<()> {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        (self.pos > start).then_some(())
    }

    /// The string's span, quotes included.
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.pos;
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some((start, self.pos));
                }
                b'\\' => self.pos += 2,
                c if c < 0x20 => return None,
                _ => self.pos += 1,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.ws();
            self.value(depth + 1)?;
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.ws();
            let (ks, ke) = self.string()?;
            let key_text = std::str::from_utf8(&self.src[ks..ke]).ok()?;
            let key: String = serde_json::from_str(key_text).ok()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let vs = self.pos;
            self.value(depth + 1)?;
            if is_secret(&key) {
                self.hidden.push((vs, self.pos));
            }
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(ct: &str) -> Vec<(String, String)> {
        vec![("content-type".into(), ct.into())]
    }

    #[test]
    fn numbers_are_shown_as_written() {
        let raw = br#"{"amount": 123456789012345678901234567, "rate": 0.10}"#;
        let shown = body(&hdrs("application/json"), raw, Audience::Authenticated);
        assert_eq!(shown["text"], std::str::from_utf8(raw).unwrap());
        let redacted = body(&hdrs("application/json"), raw, Audience::Redacted);
        assert_eq!(redacted["text"], std::str::from_utf8(raw).unwrap());
    }

    #[test]
    fn redaction_says_what_it_hid_at_any_depth() {
        let raw = r#"{"a": 1.50e2, "payout_token": "acct-attacker", "auth": {"api_key": [1, 2]}, "k\u0065y": 7}"#;
        let out = redact_json_text(raw).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["payout_token"], marker(b"acct-attacker"));
        assert!(v["payout_token"]
            .as_str()
            .unwrap()
            .starts_with("[redacted: 13 bytes, sha256 "));
        assert_eq!(v["auth"]["api_key"], marker(b"[1, 2]"));
        assert_eq!(v["key"], marker(b"7"), "escaped keys are decoded");
        assert!(out.starts_with(r#"{"a": 1.50e2, "#), "{out}");
        assert!(!out.contains("acct-attacker"));
    }

    #[test]
    fn what_is_not_json_is_hidden_whole() {
        assert!(redact_json_text(r#"{"a": 1"#).is_none());
        assert!(redact_json_text(r#"{"a": 1} x"#).is_none());
        assert!(redact_json_text("[01]").is_none());
        let shown = body(&hdrs("text/plain"), b"token=abc", Audience::Redacted);
        assert_eq!(shown, json!({"hidden": marker(b"token=abc")}));
        let bin = body(&[], &[0xff, 0x00], Audience::Authenticated);
        assert_eq!(bin, json!({"base64": "/wA="}));
    }

    #[test]
    fn forms_show_their_decoded_fields() {
        let raw = b"amount=100&payout+token=acct%2Dattacker&note=a%20b&amount=5";
        let h = hdrs("Application/X-WWW-Form-Urlencoded; charset=utf-8");
        let shown = body(&h, raw, Audience::Authenticated);
        assert_eq!(
            shown["form"],
            json!([
                ["amount", "100"],
                ["payout token", "acct-attacker"],
                ["note", "a b"],
                ["amount", "5"]
            ])
        );
        let redacted = body(&h, raw, Audience::Redacted);
        assert_eq!(redacted["form"][1][1], marker(b"acct-attacker"));
        assert!(redacted.get("text").is_none());
    }

    #[test]
    fn secret_headers_are_marked_in_notifications_only() {
        let h = vec![
            ("x-api-key".to_string(), "k-1".to_string()),
            ("x-trace".to_string(), "t".to_string()),
        ];
        assert_eq!(headers(&h, Audience::Authenticated)[0][1], "k-1");
        assert_eq!(headers(&h, Audience::Redacted)[0][1], marker(b"k-1"));
        assert_eq!(headers(&h, Audience::Redacted)[1][1], "t");
    }
}
