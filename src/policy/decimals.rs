//! Arguments declared `decimal` get decimal values.
//!
//! A JSON number maps to a Cedar `Long` when it is an integer and to a
//! `decimal` otherwise (see [`super::value`]), so `150` and `150.5` would
//! have different types. A policy over a `decimal` argument would then fail
//! on whole numbers, and the failure would deny the call. Wherever the
//! schema declares a context attribute `decimal`, a number is therefore
//! given as a decimal: `150` becomes `decimal("150.0")`. A number that no
//! decimal can hold (more than 4 decimals, an exponent, out of range) stays
//! as it is, fails the policy that reads it, and so is denied.

use std::collections::HashMap;

use cedar_policy::{RestrictedExpression, SchemaFragment};
use serde_json::Value;

use super::value;

/// For each action, the context paths declared `decimal`.
pub(crate) type DecimalPaths = HashMap<String, Vec<Vec<String>>>;

/// Reads the decimal attributes of every action's context from schema
/// fragments (records only; sets are left alone).
pub(crate) fn decimal_paths(fragments: &[SchemaFragment]) -> DecimalPaths {
    let mut out = DecimalPaths::new();
    for f in fragments {
        let Ok(json) = f.to_json_string() else {
            continue;
        };
        let Ok(Value::Object(namespaces)) = serde_json::from_str::<Value>(&json) else {
            continue;
        };
        for ns in namespaces.values() {
            let Some(actions) = ns.get("actions").and_then(Value::as_object) else {
                continue;
            };
            for (name, action) in actions {
                let Some(ctx) = action.get("appliesTo").and_then(|a| a.get("context")) else {
                    continue;
                };
                let mut paths = Vec::new();
                collect(ctx, &mut Vec::new(), &mut paths, 0);
                if !paths.is_empty() {
                    out.insert(name.clone(), paths);
                }
            }
        }
    }
    out
}

fn collect(ty: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>, depth: usize) {
    if depth > 16 {
        return;
    }
    let kind = ty.get("type").and_then(Value::as_str);
    let name = ty.get("name").and_then(Value::as_str);
    match kind {
        Some("Extension" | "EntityOrCommon")
            if matches!(name, Some("decimal" | "__cedar::decimal")) =>
        {
            out.push(at.clone());
        }
        Some("Record") => {
            for (k, v) in ty
                .get("attributes")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                at.push(k.clone());
                collect(v, at, out, depth + 1);
                at.pop();
            }
        }
        _ => {}
    }
}

/// Maps a context attribute's value, giving numbers at `paths` (relative to
/// this value) as decimals.
pub(crate) fn typed(v: &Value, paths: &[&[String]]) -> Option<RestrictedExpression> {
    if paths.is_empty() {
        return value::to_cedar(v);
    }
    if paths.iter().any(|p| p.is_empty()) {
        if let Value::Number(n) = v {
            if let Some(d) = decimal_text(n) {
                return Some(RestrictedExpression::new_decimal(d));
            }
        }
        return value::to_cedar(v);
    }
    let Value::Object(map) = v else {
        return value::to_cedar(v);
    };
    let fields = map.iter().filter_map(|(k, v)| {
        let below: Vec<&[String]> = paths
            .iter()
            .filter_map(|p| p.split_first())
            .filter(|(first, _)| *first == k)
            .map(|(_, rest)| rest)
            .collect();
        typed(v, &below).map(|e| (k.clone(), e))
    });
    // INVARIANT: keys of a JSON object are unique, so `new_record` cannot
    // fail; the fallback only keeps this total.
    RestrictedExpression::new_record(fields)
        .ok()
        .or_else(|| value::to_cedar(v))
}

fn decimal_text(n: &serde_json::Number) -> Option<String> {
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() < 922_337_203_685_477).then(|| format!("{i}.0"));
    }
    let text = n.to_string();
    value::fits_decimal(&text).then_some(text)
}
