//! Names as servers match them, so that the policy never reads one key
//! while the tool binds another.
//!
//! - Go's `encoding/json` matches object keys to struct fields without
//!   regard to case (the last match wins), and folds `K` (U+212A) to `k`
//!   and `ſ` (U+017F) to `s`; Jackson and System.Text.Json can do the same.
//!   So two keys of one object that [`fold`] the same are one key to such a
//!   server: the object is refused.
//! - A lone key that is not a name the schema declares for a body, query
//!   or tool arguments, but folds to one (`Amount` where the schema
//!   declares `amount`), is what such a server binds to the declared
//!   field, while the policy finds no `amount`: it is refused too
//!   ([`DeclaredNames::json_key`]).
//! - Query and form field names are read more loosely still: PHP turns `.`
//!   and spaces into `_` and `a[]` into `a`, Rack and Rails nest `a[b]`
//!   under `a`, ASP.NET binds without regard to case. [`field_name`] is
//!   the name a field may be read as; two fields with the same one collide,
//!   and a field whose name reads as a declared name it is not is refused.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

/// Whether `s` is its own fold: ASCII without upper-case letters.
pub fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| b < 0x80 && !b.is_ascii_uppercase())
}

/// `s` folded as Go's `encoding/json` folds keys, written in lower case:
/// two keys Go matches to the same field fold the same (a few keys Go
/// tells apart may fold the same too, which only refuses more).
pub fn fold(s: &str) -> Cow<'_, str> {
    if is_plain(s) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(fold_char).collect())
}

/// Go compares `ToUpper(ToLower(r))` with simple case mappings; lowering
/// that again keeps ASCII letters lower case and merges no more than Go.
fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    simple_lower(simple_upper(simple_lower(c)))
}

fn simple_lower(c: char) -> char {
    let mut it = c.to_lowercase();
    match (it.next(), it.next()) {
        (Some(l), None) => l,
        // The one letter whose full lower case is two characters.
        _ if c == '\u{130}' => 'i',
        _ => c,
    }
}

fn simple_upper(c: char) -> char {
    let mut it = c.to_uppercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// The name a query or form field may be read as: up to its first `[`,
/// leading spaces dropped, `.` and spaces as `_`, folded.
pub fn field_name(name: &str) -> Cow<'_, str> {
    let base = match name.find('[') {
        Some(0) | None => name,
        Some(i) => &name[..i],
    };
    let base = base.trim_start_matches(' ');
    if base.len() == name.len() && !name.contains(['.', ' ']) {
        return fold(name);
    }
    let mangled: String = base
        .chars()
        .map(|c| if c == '.' || c == ' ' { '_' } else { c })
        .collect();
    Cow::Owned(fold(&mangled).into_owned())
}

/// Every attribute name the schema declares inside what the agent writes:
/// the request `body`, the `query` and MCP tool `arguments` of every
/// action's context, at any depth. Names are not tied to where they are
/// declared, which refuses a little more than needed and keeps the check
/// one lookup.
#[derive(Debug, Default)]
pub struct DeclaredNames {
    exact: BTreeSet<String>,
    /// [`fold`] of each name → the name.
    folded: BTreeMap<String, String>,
    /// [`field_name`] of each name → the name.
    fields: BTreeMap<String, String>,
    /// Every name is [`is_plain`]: a plain key then needs no lookup.
    all_plain: bool,
}

/// No names: only collisions are refused.
pub static NO_NAMES: DeclaredNames = DeclaredNames {
    exact: BTreeSet::new(),
    folded: BTreeMap::new(),
    fields: BTreeMap::new(),
    all_plain: true,
};

impl DeclaredNames {
    /// The names below `body`, `query` and `arguments` in the action
    /// contexts of schema fragments in Cedar's JSON form.
    pub fn from_schema_json<'a>(fragments: impl IntoIterator<Item = &'a Value> + Clone) -> Self {
        let mut common: HashMap<&str, &Value> = HashMap::new();
        for ns in fragments.clone().into_iter().filter_map(Value::as_object) {
            for types in ns
                .values()
                .filter_map(|n| n.get("commonTypes")?.as_object())
            {
                for (name, ty) in types {
                    common.entry(name.as_str()).or_insert(ty);
                }
            }
        }
        let mut names = BTreeSet::new();
        let contexts = fragments
            .into_iter()
            .filter_map(Value::as_object)
            .flat_map(|ns| ns.values())
            .filter_map(|n| n.get("actions")?.as_object())
            .flat_map(|actions| actions.values())
            .filter_map(|a| a.get("appliesTo")?.get("context"));
        for ctx in contexts {
            let Some(attrs) = record(ctx, &common, 0) else {
                continue;
            };
            for part in ["body", "query", "arguments"] {
                if let Some(ty) = attrs.get(part) {
                    collect(ty, &common, &mut names, 0);
                }
            }
        }
        Self::new(names)
    }

    pub fn new(exact: BTreeSet<String>) -> Self {
        let folded = exact
            .iter()
            .map(|n| (fold(n).into_owned(), n.clone()))
            .collect();
        let fields = exact
            .iter()
            .map(|n| (field_name(n).into_owned(), n.clone()))
            .collect();
        let all_plain = exact.iter().all(|n| is_plain(n));
        DeclaredNames {
            exact,
            folded,
            fields,
            all_plain,
        }
    }

    /// The declared name a JSON key is not, but which a case-blind server
    /// binds it to; `None` when the key is fine.
    pub fn json_key(&self, key: &str) -> Option<&str> {
        if (self.all_plain && is_plain(key)) || self.exact.contains(key) {
            return None;
        }
        // A short ASCII key (a camelCase one, say) folds on the stack.
        let mut buf = [0u8; 64];
        if let Some(lower) = buf.get_mut(..key.len()).filter(|_| key.is_ascii()) {
            lower.copy_from_slice(key.as_bytes());
            lower.make_ascii_lowercase();
            let folded = std::str::from_utf8(lower).ok()?;
            return self.folded.get(folded).map(String::as_str);
        }
        self.folded.get(fold(key).as_ref()).map(String::as_str)
    }

    /// The declared name a query or form field is not, but which a server
    /// may read it as; `None` when the name is fine.
    pub fn field(&self, name: &str) -> Option<&str> {
        if self.exact.contains(name) {
            return None;
        }
        self.fields
            .get(field_name(name).as_ref())
            .map(String::as_str)
    }
}

/// Deeper types are not followed (Cedar's own types are far shallower).
const MAX_TYPE_DEPTH: usize = 32;

/// The attributes of the record `ty` is, following common type names.
fn record<'a>(
    ty: &'a Value,
    common: &HashMap<&str, &'a Value>,
    depth: usize,
) -> Option<&'a serde_json::Map<String, Value>> {
    match resolve(ty, common, depth)? {
        t if t.get("type")?.as_str()? == "Record" => t.get("attributes")?.as_object(),
        _ => None,
    }
}

/// `ty`, or the common type it names, until a record, a set or another
/// type.
fn resolve<'a>(
    ty: &'a Value,
    common: &HashMap<&str, &'a Value>,
    depth: usize,
) -> Option<&'a Value> {
    if depth > MAX_TYPE_DEPTH {
        return None;
    }
    let kind = ty.get("type")?.as_str()?;
    let named = match kind {
        "Record" | "Set" | "Entity" | "Extension" => return Some(ty),
        "EntityOrCommon" => ty.get("name")?.as_str()?,
        other => other,
    };
    let short = named.rsplit("::").next().unwrap_or(named);
    match common.get(short) {
        Some(t) => resolve(t, common, depth + 1),
        None => Some(ty),
    }
}

/// Every attribute name in `ty`, at any depth.
fn collect(ty: &Value, common: &HashMap<&str, &Value>, out: &mut BTreeSet<String>, depth: usize) {
    if depth > MAX_TYPE_DEPTH {
        return;
    }
    let Some(t) = resolve(ty, common, depth) else {
        return;
    };
    match t.get("type").and_then(Value::as_str) {
        Some("Record") => {
            for (k, v) in t
                .get("attributes")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                out.insert(k.clone());
                collect(v, common, out, depth + 1);
            }
        }
        Some("Set") => {
            if let Some(e) = t.get("element") {
                collect(e, common, out, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_as_go_matches_them() {
        for (a, b) in [
            ("amount", "AMOUNT"),
            ("amount", "Amount"),
            ("k", "\u{212a}"),
            ("s", "\u{17f}"),
            ("sk", "\u{17f}\u{212a}"),
            ("é", "É"),
        ] {
            assert_eq!(fold(a), fold(b), "{a} / {b}");
        }
        for (a, b) in [("amount", "amount_"), ("ss", "ß"), ("a.b", "a_b")] {
            assert_ne!(fold(a), fold(b), "{a} / {b}");
        }
        assert!(matches!(fold("customer_id"), Cow::Borrowed(_)));
    }

    #[test]
    fn field_names_read_as_php_rails_and_asp_net_read_them() {
        for name in [
            "dry_run",
            "dry.run",
            "dry run",
            "dry_run[]",
            "DRY_RUN",
            " dry_run",
            "dry_run[x]",
        ] {
            assert_eq!(field_name(name), "dry_run", "{name}");
        }
        assert_eq!(field_name("[x]"), "[x]");
        assert_eq!(field_name("limit"), "limit");
    }

    #[test]
    fn a_key_that_reads_as_a_declared_name_it_is_not_is_named() {
        let names = DeclaredNames::new(["amount", "customerId"].map(String::from).into());
        assert_eq!(names.json_key("amount"), None);
        assert_eq!(names.json_key("note"), None);
        assert_eq!(names.json_key("Amount"), Some("amount"));
        assert_eq!(names.json_key("customerid"), Some("customerId"));
        assert_eq!(names.json_key("customerId"), None);
        assert_eq!(names.field("amount"), None);
        assert_eq!(names.field("amount[]"), Some("amount"));
        assert_eq!(names.field("AMOUNT"), Some("amount"));
        assert_eq!(NO_NAMES.json_key("Amount"), None);
    }

    #[test]
    fn declared_names_are_those_below_body_query_and_arguments() {
        let json: Value = serde_json::from_str(
            r#"{"": {
              "commonTypes": {
                "Body": {"type": "Record", "attributes": {
                  "amount": {"type": "Long"},
                  "items": {"type": "Set", "element": {"type": "Record", "attributes": {"Sku": {"type": "String"}}}}}},
                "Ctx": {"type": "Record", "attributes": {
                  "method": {"type": "String"},
                  "body": {"type": "EntityOrCommon", "name": "Body", "required": false}}}},
              "entityTypes": {"Agent": {"shape": {"type": "Record", "attributes": {"team": {"type": "String"}}}}},
              "actions": {
                "POST": {"appliesTo": {"context": {"type": "Ctx"}}},
                "t": {"appliesTo": {"context": {"type": "Record", "attributes": {
                  "tool": {"type": "String"},
                  "arguments": {"type": "Record", "attributes": {"customerId": {"type": "String"}}}}}}}}}}"#,
        )
        .unwrap();
        let names = DeclaredNames::from_schema_json([&json]);
        assert_eq!(names.json_key("AMOUNT"), Some("amount"));
        assert_eq!(names.json_key("sku"), Some("Sku"));
        assert_eq!(names.json_key("customerid"), Some("customerId"));
        for free in ["Method", "Team", "Tool", "Body", "Arguments"] {
            assert_eq!(names.json_key(free), None, "{free}");
        }
    }

    #[test]
    fn the_shipped_schema_declares_the_refund_fields() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/");
        let json: Vec<Value> = ["schema.cedarschema", "tools.cedarschema"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(format!("{dir}{f}")).unwrap();
                let (frag, _) = cedar_policy::SchemaFragment::from_cedarschema_str(&text).unwrap();
                serde_json::from_str(&frag.to_json_string().unwrap()).unwrap()
            })
            .collect();
        let names = DeclaredNames::from_schema_json(&json);
        for (key, declared) in [
            ("Amount", "amount"),
            ("DRY_RUN", "dry_run"),
            ("Customer_ID", "customer_id"),
        ] {
            assert_eq!(names.json_key(key), Some(declared), "{key}");
        }
        assert_eq!(names.field("dry.run"), Some("dry_run"));
        assert_eq!(names.json_key("Name"), None);
    }
}
