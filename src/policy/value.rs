//! How JSON becomes Cedar values.
//!
//! The mapping is total: every JSON document maps to a Cedar value without
//! panicking, and no field that a policy can read is dropped.
//!
//! | JSON | Cedar |
//! | --- | --- |
//! | string | `String` |
//! | `true` / `false` | `Bool` |
//! | integer within i64 | `Long` |
//! | number with at most 4 decimals, integer part within i64 / 10^4 | `decimal("…")` |
//! | any other number (exponent, more decimals, beyond i64) | `String` of its JSON text |
//! | array | `Set` (order and duplicates are lost, as Cedar sets have none) |
//! | object | record, every key kept as written |
//! | `null` | the attribute is absent (`has` is false); a `null` array element is left out |
//!
//! A value whose Cedar type differs from what the schema declares makes the
//! policy that reads it fail to evaluate, and Airlock turns any evaluation
//! error into a deny: a mismatch can never let a call through.

use cedar_policy::RestrictedExpression;
use serde_json::Value;

/// Maps a JSON value; `None` for `null`, which Cedar cannot express.
pub fn to_cedar(v: &Value) -> Option<RestrictedExpression> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => number(n),
        Value::Array(items) => RestrictedExpression::new_set(items.iter().filter_map(to_cedar)),
        Value::Object(map) => record(map),
    })
}

/// Maps a JSON object to a Cedar record, leaving out `null` members.
pub fn record(map: &serde_json::Map<String, Value>) -> RestrictedExpression {
    let fields = map
        .iter()
        .filter_map(|(k, v)| to_cedar(v).map(|v| (k.clone(), v)));
    // INVARIANT: a JSON object's keys are unique (serde_json's Map is a map,
    // and Airlock's body parser rejects duplicates before this point), so
    // `new_record` cannot fail; the fallback only keeps this total.
    RestrictedExpression::new_record(fields).unwrap_or_else(|_| {
        RestrictedExpression::new_string(Value::Object(map.clone()).to_string())
    })
}

fn number(n: &serde_json::Number) -> RestrictedExpression {
    if let Some(i) = n.as_i64() {
        return RestrictedExpression::new_long(i);
    }
    let text = n.to_string();
    if fits_decimal(&text) {
        RestrictedExpression::new_decimal(text)
    } else {
        RestrictedExpression::new_string(text)
    }
}

/// Cedar decimals have 1 to 4 digits after the point and a range of about
/// ±922337203685477.
pub(crate) fn fits_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let Some((int, frac)) = digits.split_once('.') else {
        return false;
    };
    !int.is_empty()
        && int.len() <= 15
        && int.bytes().all(|b| b.is_ascii_digit())
        && (1..=4).contains(&frac.len())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && int.parse::<u64>().is_ok_and(|i| i < 922_337_203_685_477)
}

/// Parses JSON, refusing duplicate object keys: two parsers that pick
/// different duplicates would let the policy and the upstream see different
/// calls.
pub fn parse_json_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = StrictValue.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

struct StrictValue;

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValue)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            let v = map.next_value_seed(StrictValue)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse_json_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_json_strict(br#"{"x":[{"b":1,"b":1}]}"#).is_err());
        assert!(parse_json_strict(br#"{"a":1,"b":{"a":2}}"#).is_ok());
        assert!(parse_json_strict(b"{} trailing").is_err());
    }

    #[test]
    fn decimals_follow_cedar_limits() {
        assert!(fits_decimal("150.5"));
        assert!(fits_decimal("-0.0001"));
        assert!(!fits_decimal("0.00001"));
        assert!(!fits_decimal("1e-7"));
        assert!(!fits_decimal("9999999999999999.5"));
        assert!(!fits_decimal("150"));
    }

    #[test]
    fn every_shape_maps_without_panicking() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        for doc in [
            r#"{"a":null,"b":[null,1,"x",1.5,1e300,18446744073709551615],"c":{"d":{}}}"#,
            deep.as_str(),
            r#""just a string""#,
            "-0.0",
        ] {
            let v = parse_json_strict(doc.as_bytes()).unwrap();
            let _ = to_cedar(&v);
        }
    }
}
