//! Which parts of `context` a set of policies can read, so that a call's
//! context is converted to Cedar only as far as some policy looks.
//!
//! Converting the whole context (a 1 KiB JSON body becomes dozens of Cedar
//! values) can cost more than evaluating the policies. Most slices of
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
// A BTreeMap: every call looks keys up here, nearly always missing among a
// handful, and comparing a few short names costs less than hashing one.
use std::collections::BTreeMap;

use cedar_policy::Policy;
use serde_json::{Map, Value};

/// The context paths some policy of a set may read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ContextReads {
    /// Some policy uses the value here as a whole: keep all of it.
    whole: bool,
    /// Keys read below this point (only meaningful when not `whole`).
    keys: BTreeMap<String, ContextReads>,
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
            keys: BTreeMap::new(),
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

    pub(super) fn prune_value(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) if !self.whole => Value::Object(self.prune_map(m)),
            other => other.clone(),
        }
    }

    /// [`Self::prune_value`] on a value that is no longer needed whole.
    fn prune_owned(&self, v: Value) -> Value {
        match v {
            Value::Object(mut m) if !self.whole => {
                let mut out = Map::new();
                for (k, below) in &self.keys {
                    if let Some(v) = m.swap_remove(k) {
                        out.insert(k.clone(), below.prune_owned(v));
                    }
                }
                Value::Object(out)
            }
            other => other,
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

/// What a caller building a context must put in it: the part of the
/// context some chosen policy can read. A context built to these needs is
/// exactly the pruned full context, so nothing unread is ever parsed into
/// values or converted.
#[derive(Debug, Clone, Copy)]
pub struct ContextNeeds<'a> {
    /// `None`: everything.
    reads: Option<&'a ContextReads>,
}

impl<'a> ContextNeeds<'a> {
    pub fn everything() -> ContextNeeds<'static> {
        ContextNeeds { reads: None }
    }

    pub(super) fn of(reads: &'a ContextReads) -> ContextNeeds<'a> {
        ContextNeeds { reads: Some(reads) }
    }

    /// Whether the whole value here is needed.
    pub fn is_everything(self) -> bool {
        self.reads.is_none_or(|r| r.whole)
    }

    /// The needs below `key` of an object; `None` when nothing there is.
    pub fn below(self, key: &str) -> Option<ContextNeeds<'a>> {
        match self.reads {
            Some(r) if !r.whole => r.keys.get(key).map(ContextNeeds::of),
            _ => Some(ContextNeeds::everything()),
        }
    }

    /// `v` cut down to these needs (objects keep only the keys read).
    pub fn keep(self, v: Value) -> Value {
        match self.reads {
            Some(r) => r.prune_owned(v),
            None => v,
        }
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

    mod needed_parse {
        use super::*;
        use crate::policy::value::{check_json_strict, parse_json_needed, parse_json_strict};
        use proptest::prelude::*;

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("q\"")].prop_map(str::to_string)
        }

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i32>().prop_map(Value::from),
                "[a-z\\\\\"]{0,4}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map(key(), inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Reads of a few paths, some of them whole.
        fn reads() -> impl Strategy<Value = ContextReads> {
            proptest::collection::vec(
                (proptest::collection::vec(key(), 1..4), any::<bool>()),
                0..4,
            )
            .prop_map(|paths| {
                let mut r = ContextReads::default();
                for (path, whole) in paths {
                    r.at(&path).whole = whole;
                }
                r
            })
        }

        /// `doc` with `"a":0,` written after its `nth` `{`: a duplicate
        /// key when that object has an `a` already.
        fn with_extra_a(doc: &str, nth: usize) -> String {
            match doc.match_indices('{').nth(nth) {
                Some((i, _)) => format!("{}\"a\":0,{}", &doc[..=i], &doc[i + 1..]),
                None => doc.to_string(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            #[test]
            fn building_to_the_needs_equals_pruning_the_whole(v in json(), r in reads()) {
                let doc = serde_json::to_vec(&v).unwrap();
                let built = parse_json_needed(&doc, ContextNeeds::of(&r), &crate::policy::keys::NO_NAMES).unwrap();
                prop_assert_eq!(built, r.prune_value(&parse_json_strict(&doc).unwrap()));
            }

            #[test]
            fn what_is_not_built_is_checked_all_the_same(
                v in json(),
                r in reads(),
                nth in 0usize..4,
                cut in any::<prop::sample::Index>(),
                truncate in any::<bool>(),
            ) {
                let mut doc = with_extra_a(&serde_json::to_string(&v).unwrap(), nth);
                if truncate {
                    doc.truncate(cut.index(doc.len() + 1));
                }
                let kind = |e: serde_json::Error| e.to_string().starts_with("duplicate key");
                let whole = parse_json_strict(doc.as_bytes()).map(drop).map_err(kind);
                let needed = parse_json_needed(doc.as_bytes(), ContextNeeds::of(&r), &crate::policy::keys::NO_NAMES).map(drop).map_err(kind);
                let checked = check_json_strict(doc.as_bytes(), &crate::policy::keys::NO_NAMES).map_err(kind);
                prop_assert_eq!(&needed, &whole, "{}", doc);
                prop_assert_eq!(&checked, &whole, "{}", doc);
            }
        }
    }
}
