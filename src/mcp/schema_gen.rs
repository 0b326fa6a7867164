//! Cedar declarations for MCP tools, from the JSON Schemas the servers give
//! in `tools/list`.
//!
//! Cedar has no open records, so one action cannot carry every tool's
//! arguments. Each tool gets its own action, `Action::"<route>/<tool>"`, a
//! member of `call_tool`, whose context declares `arguments` with the
//! tool's own types. Strict validation (`airlock check`) then refuses a
//! policy that reads an argument the tool does not have, or compares one
//! with the wrong type.
//!
//! | JSON Schema | Cedar |
//! | --- | --- |
//! | `string` (or a `enum` of strings) | `String` |
//! | `integer` | `Long` |
//! | `number` | `decimal` (whole numbers too: `150` is `decimal("150.0")`) |
//! | `boolean` | `Bool` |
//! | `array` of a mappable `items` | `Set<…>` |
//! | `object` with `properties` | a record; `required` members are required, the rest optional |
//! | `["T", "null"]` | as `T`, optional |
//! | unions, anything else | left out, with a comment: a policy cannot read it |
//!
//! A `number` is declared `decimal`, and the policy module gives every number
//! at such a place as a decimal, so `150` and `150.5` have one type. A
//! number no decimal can hold (more than 4 decimals) fails the policy that
//! reads it, which denies the call.

use serde_json::Value;

/// One tool as a server lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDecl {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Value,
}

const MAX_DEPTH: usize = 8;

/// The declarations for one route's tools, as Cedar schema text.
pub fn route_section(route: &str, upstream: &str, tools: &[ToolDecl]) -> String {
    let mut out = format!(
        "// === route `{route}` ({upstream}): {} tools ===\n\n",
        tools.len()
    );
    for t in tools {
        if t.name.is_empty() || t.name.chars().any(char::is_control) {
            out.push_str(&format!(
                "// skipped a tool whose name cannot be an action id: {}\n\n",
                quote(&t.name)
            ));
            continue;
        }
        if let Some(d) = &t.description {
            let first = d.lines().next().unwrap_or("").trim();
            out.push_str(&format!("// `{}`: {}\n", t.name, first));
        }
        let mut notes = Vec::new();
        let args = record(&t.input_schema, 2, "arguments", &mut notes, 0)
            .unwrap_or_else(|| "{}".to_string());
        for n in notes {
            out.push_str(&format!("// {n}\n"));
        }
        out.push_str(&format!(
            "action {} in [\"call_tool\"] appliesTo {{\n  principal: [Agent],\n  resource: [Tool],\n  context: {{\n    \"method\": String,\n    \"path\": String,\n    \"query\": Query,\n    \"headers\": Headers,\n    \"body_kind\": String,\n    \"rpc_method\": String,\n    \"tool\": String,\n    \"confidence\"?: decimal,\n    \"agent_reason\"?: String,\n    \"arguments\": {args}\n  }}\n}};\n\n",
            quote(&format!("{route}/{}", t.name))
        ));
    }
    out
}

/// A record type for an object schema, indented for `level`.
fn record(
    schema: &Value,
    level: usize,
    path: &str,
    notes: &mut Vec<String>,
    depth: usize,
) -> Option<String> {
    let props = schema.get("properties")?.as_object()?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let pad = "  ".repeat(level);
    let mut members = Vec::new();
    for (name, prop) in props {
        if name.chars().any(char::is_control) {
            continue;
        }
        let sub = format!("{path}.{name}");
        let (ty, nullable) = match cedar_type(prop, level + 1, &sub, notes, depth + 1) {
            Some(t) => t,
            None => {
                notes.push(format!(
                    "`{sub}` is not declared ({}): policies cannot read it",
                    describe(prop)
                ));
                continue;
            }
        };
        let optional = nullable || !required.contains(&name.as_str());
        members.push(format!(
            "{pad}  {}{}: {ty}",
            quote(name),
            if optional { "?" } else { "" }
        ));
    }
    if members.is_empty() {
        return Some("{}".to_string());
    }
    Some(format!("{{\n{}\n{pad}}}", members.join(",\n")))
}

/// The Cedar type of a property schema, and whether it may be `null`.
fn cedar_type(
    schema: &Value,
    level: usize,
    path: &str,
    notes: &mut Vec<String>,
    depth: usize,
) -> Option<(String, bool)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (ty, nullable) = match schema.get("type") {
        Some(Value::String(t)) => (t.as_str(), false),
        Some(Value::Array(ts)) => {
            let named: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            let non_null: Vec<&str> = named.iter().copied().filter(|t| *t != "null").collect();
            match non_null.as_slice() {
                [one] => (*one, named.len() > 1),
                _ => return None,
            }
        }
        None if schema
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty() && e.iter().all(Value::is_string)) =>
        {
            ("string", false)
        }
        _ => return None,
    };
    let t = match ty {
        "string" => "String".to_string(),
        "integer" => "Long".to_string(),
        "number" => "decimal".to_string(),
        "boolean" => "Bool".to_string(),
        "array" => {
            let items = schema.get("items")?;
            let (inner, _) = cedar_type(items, level, path, notes, depth + 1)?;
            format!("Set<{inner}>")
        }
        "object" => record(schema, level, path, notes, depth)?,
        _ => return None,
    };
    Some((t, nullable))
}

fn describe(schema: &Value) -> String {
    match schema.get("type") {
        Some(t) => format!("type {t}"),
        None => "no single type".to_string(),
    }
}

/// A Cedar string literal.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_map_and_unmappable_fields_are_noted() {
        let tools = vec![ToolDecl {
            name: "issue_refund".into(),
            description: Some("Issue a refund.\nMore.".into()),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "amount": {"type": "integer"},
                    "note": {"type": ["string", "null"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "ratio": {"type": "number"},
                    "who": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
                    "mode": {"enum": ["a", "b"]}
                },
                "required": ["amount", "note"]
            }),
        }];
        let text = route_section("crm", "http://x", &tools);
        assert!(
            text.contains("action \"crm/issue_refund\" in [\"call_tool\"]"),
            "{text}"
        );
        assert!(text.contains("\"amount\": Long"), "{text}");
        assert!(text.contains("\"note\"?: String"), "{text}");
        assert!(text.contains("\"tags\"?: Set<String>"), "{text}");
        assert!(text.contains("\"id\": String"), "{text}");
        assert!(text.contains("\"mode\"?: String"), "{text}");
        assert!(text.contains("\"ratio\"?: decimal"), "{text}");
    }
}
