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

use std::borrow::Cow;

use cedar_policy::RestrictedExpression;
use serde_json::Value;

use super::json_scan;
use super::keys::{fold, is_plain, DeclaredNames, NO_NAMES};
use super::reads::ContextNeeds;

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

/// Parses JSON, refusing duplicate object keys, compared without regard to
/// case as Go's `encoding/json` compares them (see `policy::keys`): two
/// parsers that pick different duplicates would let the policy and the
/// upstream see different calls.
pub fn parse_json_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    parse_whole(bytes, StrictValue(&NO_NAMES))
}

/// [`parse_json_strict`], also refusing any key that `names` finds
/// ambiguous (a declared name it is not, but folds to).
pub fn parse_json_named(bytes: &[u8], names: &DeclaredNames) -> Result<Value, serde_json::Error> {
    parse_whole(bytes, StrictValue(names))
}

/// [`parse_json_named`], building only what `needs` asks for: the result
/// equals the pruned full value, and every error of the full parse is still
/// an error (syntax, trailing bytes, duplicate or ambiguous keys at any
/// depth).
pub fn parse_json_needed(
    bytes: &[u8],
    needs: ContextNeeds<'_>,
    names: &DeclaredNames,
) -> Result<Value, serde_json::Error> {
    if let Some(v) = needed_members(bytes, needs, names) {
        return Ok(v);
    }
    parse_whole(bytes, NeededValue(needs, names))
}

/// The fast way to [`parse_json_needed`]'s answer, for an object that the
/// scanner finds surely valid: serde_json reads only the members needed.
/// `None` when it does not apply or is not sure (the slow way then gives
/// the answer, or the exact error).
fn needed_members(bytes: &[u8], needs: ContextNeeds<'_>, names: &DeclaredNames) -> Option<Value> {
    if needs.is_everything() {
        return None;
    }
    let top = scanned(bytes, names)?;
    if !top.is_object {
        return None;
    }
    let mut out = serde_json::Map::new();
    for (key, value) in top.members {
        if let Some(n) = needs.below(key) {
            let v = parse_whole(value.as_bytes(), NeededValue(n, names)).ok()?;
            out.insert(key.to_owned(), v);
        }
    }
    Some(Value::Object(out))
}

/// Checks `bytes` as [`parse_json_named`] does, building nothing.
pub fn check_json_strict(bytes: &[u8], names: &DeclaredNames) -> Result<(), serde_json::Error> {
    if scanned(bytes, names).is_some() {
        return Ok(());
    }
    parse_whole(bytes, Unneeded(names))
}

/// `bytes` as [`json_scan::scan`] sees them, when they are text.
fn scanned<'a>(bytes: &'a [u8], names: &DeclaredNames) -> Option<json_scan::Top<'a>> {
    simdutf8::basic::from_utf8(bytes)
        .ok()
        .and_then(|text| json_scan::scan(text, names))
}

/// `bytes` as one JSON document read by `seed`; trailing bytes are an error.
///
/// Text is checked as UTF-8 once, up front and with SIMD, and then read as
/// `str`, so that serde_json need not check each string again byte by
/// byte (the costlier part of reading a large string value). A body that
/// is not UTF-8 is read as bytes, so that its error says where it breaks.
fn parse_whole<'de, S: serde::de::DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    fn read<'de, R: serde_json::de::Read<'de>, S: serde::de::DeserializeSeed<'de>>(
        mut de: serde_json::Deserializer<R>,
        seed: S,
    ) -> Result<S::Value, serde_json::Error> {
        let v = seed.deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => read(serde_json::Deserializer::from_str(text), seed),
        Err(_) => read(serde_json::Deserializer::from_slice(bytes), seed),
    }
}

struct StrictValue<'n>(&'n DeclaredNames);

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor(self.0))
    }
}

struct StrictVisitor<'n>(&'n DeclaredNames);

impl<'de> serde::de::Visitor<'de> for StrictVisitor<'_> {
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
        while let Some(v) = seq.next_element_seed(StrictValue(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        let mut seen = SeenKeys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            admit_key(&mut seen, key.clone(), self.0)?;
            let v = map.next_value_seed(StrictValue(self.0))?;
            out.insert(key.into_owned(), v);
        }
        Ok(Value::Object(out))
    }
}

/// Refuses `key` when an earlier key of its object folds the same, or when
/// it reads as a declared name it is not.
fn admit_key<'de, E: serde::de::Error>(
    seen: &mut SeenKeys<'de>,
    key: Cow<'de, str>,
    names: &DeclaredNames,
) -> Result<(), E> {
    if let Some(declared) = names.json_key(&key).map(str::to_owned) {
        // A collision is the clearer error when there is one.
        if seen.insert(key.clone()) {
            return Err(E::custom(format!(
                "ambiguous key `{key}`: servers that match keys without regard to case read it as `{declared}`; send `{declared}`"
            )));
        }
    } else if seen.insert(key.clone()) {
        return Ok(());
    }
    Err(E::custom(format!(
        "duplicate key `{key}` (keys are compared without regard to case)"
    )))
}

/// A value of which only `needs` is built.
struct NeededValue<'a, 'n>(ContextNeeds<'a>, &'n DeclaredNames);

impl<'de> serde::de::DeserializeSeed<'de> for NeededValue<'_, '_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.is_everything() {
            return d.deserialize_any(StrictVisitor(self.1));
        }
        d.deserialize_any(NeededVisitor(self.0, self.1))
    }
}

/// Like [`StrictVisitor`], but an object keeps only the keys needed. Any
/// other value is needed whole, as pruning keeps it.
struct NeededVisitor<'a, 'n>(ContextNeeds<'a>, &'n DeclaredNames);

impl<'de> serde::de::Visitor<'de> for NeededVisitor<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        StrictVisitor(self.1).visit_bool(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        StrictVisitor(self.1).visit_i64(v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        StrictVisitor(self.1).visit_u64(v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        StrictVisitor(self.1).visit_f64(v)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        StrictVisitor(self.1).visit_str(v)
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        StrictVisitor(self.1).visit_string(v)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        StrictVisitor(self.1).visit_unit()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        StrictVisitor(self.1).visit_none()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        StrictVisitor(self.1).visit_seq(seq)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        let mut seen = SeenKeys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            admit_key(&mut seen, key.clone(), self.1)?;
            match self.0.below(&key) {
                Some(needs) => {
                    let v = map.next_value_seed(NeededValue(needs, self.1))?;
                    out.insert(key.into_owned(), v);
                }
                None => map.next_value_seed(Unneeded(self.1))?,
            }
        }
        Ok(Value::Object(out))
    }
}

/// The keys of one object so far, folded, to refuse duplicates without
/// building the object. Small objects are searched in order; large ones
/// hashed, so a body of many keys cannot make this quadratic.
#[derive(Default)]
struct SeenKeys<'de> {
    // On the stack: most objects have a few keys.
    few: smallvec::SmallVec<[Cow<'de, str>; 8]>,
    many: std::collections::HashSet<Cow<'de, str>>,
}

impl<'de> SeenKeys<'de> {
    /// False when a key that folds as `key` does was already there.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        const FEW: usize = 16;
        let key = match key {
            Cow::Borrowed(k) => fold(k),
            Cow::Owned(k) if is_plain(&k) => Cow::Owned(k),
            Cow::Owned(k) => Cow::Owned(fold(&k).into_owned()),
        };
        if self.many.is_empty() {
            if self.few.contains(&key) {
                return false;
            }
            self.few.push(key);
            if self.few.len() > FEW {
                self.many.extend(self.few.drain(..));
            }
            return true;
        }
        self.many.insert(key)
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct KeySeed;

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> serde::de::Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// A value nobody reads: checked as strictly as any other (duplicate or
/// ambiguous keys at any depth are refused), but never built.
#[derive(Clone, Copy)]
struct Unneeded<'n>(&'n DeclaredNames);

impl<'de> serde::de::DeserializeSeed<'de> for Unneeded<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Unneeded<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = SeenKeys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            admit_key(&mut seen, key.clone(), self.0)?;
            map.next_value_seed(self)?;
        }
        Ok(())
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
        assert!(parse_json_strict(br#"{"amount":50,"AMOUNT":500}"#).is_err());
        assert!(parse_json_strict("{\"k\":1,\"\u{212a}\":2}".as_bytes()).is_err());
        assert!(parse_json_strict("{\"x\":[{\"s\":1,\"\\u017f\":2}]}".as_bytes()).is_err());
        assert!(parse_json_strict(b"{} trailing").is_err());
    }

    #[test]
    fn invalid_utf8_is_refused_with_where_it_breaks() {
        let doc = b"{\"a\": \"ok\", \"b\": \"\xff\"}";
        let strict = parse_json_strict(doc).unwrap_err().to_string();
        assert!(
            strict.starts_with("invalid unicode code point at line 1 column"),
            "{strict}"
        );
        assert_eq!(
            check_json_strict(doc, &NO_NAMES).unwrap_err().to_string(),
            strict
        );
        // A lone surrogate is valid UTF-8 text but not a valid string.
        let lone = br#"{"a": "\ud800"}"#;
        let escaped = parse_json_strict(lone).unwrap_err().to_string();
        assert!(escaped.contains("line 1 column 14"), "{escaped}");
        assert_eq!(
            check_json_strict(lone, &NO_NAMES).unwrap_err().to_string(),
            escaped
        );
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
