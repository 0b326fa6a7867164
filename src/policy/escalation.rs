//! What an agent says about its own call: how sure it is, and why it acts.
//!
//! An agent states them in the headers `Airlock-Confidence` and
//! `Airlock-Reason` (REST and MCP), or in an MCP message's
//! `params._meta["airlock.dev/confidence"]` and
//! `params._meta["airlock.dev/reason"]`. Policies read them as
//! `context.confidence` (a `decimal` from 0 to 1, at most 4 decimals) and
//! `context.agent_reason` (a `String` of at most [`MAX_REASON`] bytes); both
//! are optional on every action. A value outside those bounds is refused
//! rather than dropped, so that a policy never mistakes a malformed
//! confidence for none at all.

use serde_json::{Map, Number, Value};

use super::reads::ContextNeeds;

pub const CONFIDENCE_HEADER: &str = "airlock-confidence";
pub const REASON_HEADER: &str = "airlock-reason";
pub const CONFIDENCE_META: &str = "airlock.dev/confidence";
pub const REASON_META: &str = "airlock.dev/reason";
/// The longest reason, in bytes, an agent may give.
pub const MAX_REASON: usize = 1024;

/// The agent's own confidence and reason, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Escalation {
    /// The confidence as decimal text with 1 to 4 decimals (`"0.63"`,
    /// `"1.0"`): what Cedar reads as a `decimal`.
    pub confidence: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscalationError {
    #[error("confidence `{0}` is not a number from 0 to 1 with at most 4 decimals")]
    Confidence(String),
    #[error("the agent's reason is {0} bytes long; at most 1024 are accepted")]
    ReasonTooLong(usize),
    #[error("`{0}` is given more than once")]
    Repeated(&'static str),
    #[error("header `{0}` is not valid text")]
    NotText(&'static str),
    #[error("`params._meta[\"{0}\"]` must be a {1}")]
    MetaType(&'static str, &'static str),
    #[error("the {0} in `params._meta` differs from the one in the `{1}` header")]
    Disagree(&'static str, &'static str),
}

impl Escalation {
    /// Checks the texts an agent sent (headers, or a policy test case).
    pub fn from_texts(
        confidence: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Escalation, EscalationError> {
        Ok(Escalation {
            confidence: confidence.map(confidence_text).transpose()?,
            reason: reason.map(reason_text).transpose()?,
        })
    }

    /// Reads the headers, refusing a repeated one or one that is not text.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Escalation, EscalationError> {
        // Static names: looking one up then parses nothing.
        static NAMES: [http::HeaderName; 2] = [
            http::HeaderName::from_static(CONFIDENCE_HEADER),
            http::HeaderName::from_static(REASON_HEADER),
        ];
        let one = |i: usize, name: &'static str| -> Result<Option<&str>, EscalationError> {
            let mut values = headers.get_all(&NAMES[i]).iter();
            let Some(first) = values.next() else {
                return Ok(None);
            };
            if values.next().is_some() {
                return Err(EscalationError::Repeated(name));
            }
            first
                .to_str()
                .map(Some)
                .map_err(|_| EscalationError::NotText(name))
        };
        Escalation::from_texts(one(0, CONFIDENCE_HEADER)?, one(1, REASON_HEADER)?)
    }

    /// Reads an MCP message's `params._meta` and joins it with what the
    /// headers said: both may state a value, but then the same one.
    pub fn with_meta(self, params: Option<&Value>) -> Result<Escalation, EscalationError> {
        let meta = params.and_then(|p| p.get("_meta"));
        let confidence = match meta.and_then(|m| m.get(CONFIDENCE_META)) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(confidence_text(&n.to_string())?),
            Some(_) => return Err(EscalationError::MetaType(CONFIDENCE_META, "number")),
        };
        let reason = match meta.and_then(|m| m.get(REASON_META)) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(reason_text(s)?),
            Some(_) => return Err(EscalationError::MetaType(REASON_META, "string")),
        };
        Ok(Escalation {
            confidence: joined(
                self.confidence,
                confidence,
                "confidence",
                "Airlock-Confidence",
            )?,
            reason: joined(self.reason, reason, "reason", "Airlock-Reason")?,
        })
    }

    /// Adds `confidence` and `agent_reason` to a context, as far as `needs`
    /// asks.
    pub fn insert_into(&self, ctx: &mut Map<String, Value>, needs: ContextNeeds<'_>) {
        let number = self
            .confidence
            .as_deref()
            .and_then(|c| c.parse::<f64>().ok())
            .and_then(Number::from_f64);
        if let (Some(n), Some(need)) = (number, needs.below("confidence")) {
            // A number with a fraction (`1.0`, never `1`) maps to a decimal.
            ctx.insert("confidence".into(), need.keep(Value::Number(n)));
        }
        if let (Some(r), Some(need)) = (&self.reason, needs.below("agent_reason")) {
            ctx.insert("agent_reason".into(), need.keep(Value::String(r.clone())));
        }
    }
}

fn joined(
    header: Option<String>,
    meta: Option<String>,
    what: &'static str,
    name: &'static str,
) -> Result<Option<String>, EscalationError> {
    match (header, meta) {
        (Some(h), Some(m)) if h != m => Err(EscalationError::Disagree(what, name)),
        (h, m) => Ok(h.or(m)),
    }
}

/// `0`, `1`, or either with 1 to 4 decimals, at most 1; as decimal text
/// without trailing zeros (`0.630` is `0.63`, `1` is `1.0`).
fn confidence_text(text: &str) -> Result<String, EscalationError> {
    let bad = || EscalationError::Confidence(text.chars().take(64).collect());
    let trimmed = text.trim();
    let (int, frac) = trimmed.split_once('.').unwrap_or((trimmed, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !matches!(int, "0" | "1") || !digits(frac) || frac.len() > 4 {
        return Err(bad());
    }
    if int == "1" && frac.bytes().any(|b| b != b'0') {
        return Err(bad());
    }
    let frac = frac.trim_end_matches('0');
    let frac = if frac.is_empty() { "0" } else { frac };
    Ok(format!("{int}.{frac}"))
}

fn reason_text(text: &str) -> Result<String, EscalationError> {
    if text.len() > MAX_REASON {
        return Err(EscalationError::ReasonTooLong(text.len()));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn confidence_is_read_at_its_bounds_and_refused_outside() {
        let c = |t: &str| confidence_text(t).ok();
        assert_eq!(c("0").as_deref(), Some("0.0"));
        assert_eq!(c("1").as_deref(), Some("1.0"));
        assert_eq!(c("1.0000").as_deref(), Some("1.0"));
        assert_eq!(c("0.630").as_deref(), Some("0.63"));
        assert_eq!(c("0.9999").as_deref(), Some("0.9999"));
        for bad in [
            "1.0001", "0.12345", "-0", "-0.1", "2", ".5", "0.", "abc", "1e-1", "", "0x1",
        ] {
            assert!(c(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_reason_over_a_kibibyte_is_refused() {
        assert!(reason_text(&"a".repeat(MAX_REASON)).is_ok());
        assert_eq!(
            reason_text(&"a".repeat(MAX_REASON + 1)),
            Err(EscalationError::ReasonTooLong(MAX_REASON + 1))
        );
    }

    #[test]
    fn meta_and_headers_must_agree() {
        let headers = Escalation::from_texts(Some("0.5"), None).ok();
        let params =
            json!({"_meta": {"airlock.dev/confidence": 0.50, "airlock.dev/reason": "why"}});
        let joined = headers.clone().map(|h| h.with_meta(Some(&params)));
        assert_eq!(
            joined,
            Some(Ok(Escalation {
                confidence: Some("0.5".into()),
                reason: Some("why".into())
            }))
        );
        let other = json!({"_meta": {"airlock.dev/confidence": 0.6}});
        assert!(headers
            .map(|h| h.with_meta(Some(&other)))
            .is_some_and(|r| r.is_err()));
        let text = json!({"_meta": {"airlock.dev/confidence": "0.6"}});
        assert!(Escalation::default().with_meta(Some(&text)).is_err());
    }

    #[test]
    fn whole_confidences_enter_the_context_as_fractions() {
        let mut ctx = Map::new();
        let e = Escalation::from_texts(Some("1"), Some("sure")).unwrap_or_default();
        e.insert_into(&mut ctx, ContextNeeds::everything());
        assert_eq!(
            ctx.get("confidence").map(Value::to_string).as_deref(),
            Some("1.0")
        );
        assert_eq!(ctx.get("agent_reason"), Some(&json!("sure")));
    }
}
