//! Which parts of `context` a set of policies can read, so that a call's
//! context is converted to Cedar only as far as some policy looks.
//!
//! Converting the whole context (a 1 KiB JSON body becomes dozens of Cedar
//! values) used to cost more than evaluating the policies. Most slices of
//! the scope index read a few fields or none, so each slice carries the
//! tree of context paths its policies mention, and the call's context is
//! pruned to that tree before conversion.
//!
//! The tree comes from each policy's syntax tree (Cedar's JSON form), never
//! from its text: `context.a.b` and `context["a"]["b"]` are both the path
//! `a.b`; `context.a has b` needs only the key `b` to be present; any other
//! use of a path (`context.a == {..}`, `context.a in ..`, passing it to a
//! function, or `context` on its own) needs its whole value, so nothing
//! below it is pruned. When in doubt the answer is "whole": a policy whose
//! JSON form cannot be produced, or an unknown shape, reads everything.
//!
//! INVARIANT: a pruned context gives every policy of the slice exactly the
//! values, presence tests and record comparisons it would have seen with
//! the full context. The property test `the_index_never_changes_a_verdict`
//! compares decisions on pruned contexts with decisions on full ones.

use std::borrow::Cow;
use std::collections::HashMap;

use cedar_policy::Policy;
use serde_json::{Map, Value};

/// The context paths some policy of a set may read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ContextReads {
    /// Some policy uses the value here as a whole: keep all of it.
    whole: bool,
    /// Keys read below this point (only meaningful when not `whole`).
    keys: HashMap<String, ContextReads>,
}

impl ContextReads {
    /// Reads of every policy in `policies` together.
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> ContextReads {
        let mut reads = ContextReads::default();
        for p in policies {
            match p.to_json() {
                Ok(est) => visit(&est, &mut reads),
                Err(_) => reads.whole = true,
            }
            if reads.whole {
                break;
            }
        }
        reads
    }

    /// Reads that keep the whole context.
    pub fn everything() -> ContextReads {
        ContextReads {
            whole: true,
            keys: HashMap::new(),
        }
    }

    /// `context` reduced to what these reads can see.
    pub fn prune<'a>(&self, context: &'a Map<String, Value>) -> Cow<'a, Map<String, Value>> {
        if self.whole {
            return Cow::Borrowed(context);
        }
        Cow::Owned(self.prune_map(context))
    }

    fn prune_map(&self, map: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, below) in &self.keys {
            if let Some(v) = map.get(k) {
                out.insert(k.clone(), below.prune_value(v));
            }
        }
        out
    }

    fn prune_value(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) if !self.whole => Value::Object(self.prune_map(m)),
            other => other.clone(),
        }
    }

    fn at(&mut self, path: &[String]) -> &mut ContextReads {
        let mut node = self;
        for k in path {
            node = node.keys.entry(k.clone()).or_default();
        }
        node
    }
}

/// Walks a policy's JSON form and records what it reads of `context`.
fn visit(expr: &Value, reads: &mut ContextReads) {
    if let Some(path) = context_path(expr) {
        // A path used as a value: it needs all of what is below it.
        reads.at(&path).whole = true;
        return;
    }
    match expr {
        Value::Object(m) => {
            if let Some(Value::Object(has)) = m.get("has").filter(|_| m.len() == 1) {
                if let (Some(left), Some(Value::String(attr))) = (has.get("left"), has.get("attr"))
                {
                    if let Some(mut path) = context_path(left) {
                        // Presence only: the key must survive, its value
                        // need not.
                        path.push(attr.clone());
                        reads.at(&path);
                        return;
                    }
                }
            }
            for v in m.values() {
                visit(v, reads);
            }
        }
        Value::Array(items) => {
            for v in items {
                visit(v, reads);
            }
        }
        _ => {}
    }
}

/// `context`, `context.a`, `context.a.b`… as the list of attribute names;
/// `None` for any other expression.
fn context_path(expr: &Value) -> Option<Vec<String>> {
    let Value::Object(m) = expr else {
        return None;
    };
    if m.len() != 1 {
        return None;
    }
    if m.get("Var").and_then(Value::as_str) == Some("context") {
        return Some(Vec::new());
    }
    let Some(Value::Object(get)) = m.get(".") else {
        return None;
    };
    let (Some(left), Some(Value::String(attr))) = (get.get("left"), get.get("attr")) else {
        return None;
    };
    let mut path = context_path(left)?;
    path.push(attr.clone());
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    fn reads(src: &str) -> ContextReads {
        let p = Policy::from_str(src).unwrap();
        ContextReads::of([&p])
    }

    fn ctx() -> Map<String, Value> {
        let Value::Object(m) = json!({
            "method": "POST",
            "path": "/crm/refunds",
            "body": {"amount": 5, "note": "x", "customer": {"id": "c1", "tier": "gold"}},
        }) else {
            unreachable!()
        };
        m
    }

    fn pruned(src: &str) -> Value {
        let c = ctx();
        Value::Object(reads(src).prune(&c).into_owned())
    }

    #[test]
    fn a_policy_without_conditions_reads_nothing() {
        assert_eq!(pruned("permit(principal, action, resource);"), json!({}));
    }

    #[test]
    fn attribute_reads_keep_only_their_paths() {
        assert_eq!(
            pruned(
                r#"permit(principal, action, resource) when { context.body.amount > 1 && context["path"] like "/crm/*" };"#
            ),
            json!({"path": "/crm/refunds", "body": {"amount": 5}})
        );
    }

    #[test]
    fn a_presence_test_keeps_the_key() {
        assert_eq!(
            pruned("permit(principal, action, resource) when { context.body has customer };"),
            json!({"body": {"customer": {}}})
        );
    }

    #[test]
    fn a_record_used_whole_is_kept_whole() {
        assert_eq!(
            pruned(
                r#"permit(principal, action, resource) when { context.body.customer == {"id": "c1"} };"#
            ),
            json!({"body": {"customer": {"id": "c1", "tier": "gold"}}})
        );
        assert_eq!(
            pruned(r#"permit(principal, action, resource) when { context == {"path": "/x"} };"#),
            Value::Object(ctx())
        );
    }

    #[test]
    fn reads_of_several_policies_add_up() {
        let a = Policy::from_str(
            r#"permit(principal, action, resource) when { context.body.amount > 1 };"#,
        )
        .unwrap();
        let b = Policy::from_str(
            r#"forbid(principal, action, resource) when { context.method == "DELETE" };"#,
        )
        .unwrap();
        let c = ctx();
        let got = Value::Object(ContextReads::of([&a, &b]).prune(&c).into_owned());
        assert_eq!(got, json!({"method": "POST", "body": {"amount": 5}}));
    }
}
