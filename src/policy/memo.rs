//! A memo of recent decisions, so that a call that repeats skips Cedar.
//!
//! Within one snapshot a decision is a pure function of four things: the
//! principal, the action, the resource and the part of the context that the
//! chosen policies read (see `reads`). Entities are built once per snapshot,
//! and Cedar has no clock and no randomness, so the same four give the same
//! verdict, the same determining policies and the same errors. Agents repeat
//! themselves a lot: the same tool with the same arguments, or policies that
//! read little or nothing of the context. For those the decision becomes one
//! hash lookup.
//!
//! The memo belongs to one snapshot, so a reload starts an empty one. Each
//! thread keeps its own: since a decision is a pure function of the
//! snapshot and the key, threads gain nothing by sharing, and a shared map
//! would put a lock, and a cache line that both data-plane workers write,
//! on every call. It is bounded: keys longer than [`MAX_KEY_BYTES`] are not
//! memoized (a policy that reads a whole body would make every key differ
//! anyway), and when a thread's memo holds [`MAX_ENTRIES`] decisions it
//! starts over. Shadow policies and the unindexed reference path never use
//! it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::HashMap;

use serde_json::{Map, Value};

use super::{CallRequest, Resource, Verdict};

/// Decisions a thread keeps per snapshot before its memo starts over.
pub(super) const MAX_ENTRIES: usize = 1024;
/// Longer keys are not memoized.
pub(super) const MAX_KEY_BYTES: usize = 1024;

/// What a decision found, without the parts that vary per call.
#[derive(Clone)]
pub(super) struct Memoized {
    pub verdict: Verdict,
    pub policies: Vec<String>,
    pub errors: Vec<String>,
}

/// A snapshot's memo: the name under which each thread keeps its part.
pub(super) struct DecisionMemo {
    /// Unique per memo (so per snapshot) for the life of the process.
    id: u64,
}

/// One thread's memo, for the snapshot it last decided for.
#[derive(Default)]
struct ThreadMemo {
    /// The [`DecisionMemo::id`] the entries belong to; 0 is never one.
    owner: u64,
    // foldhash (seeded at random per map) rather than SipHash: keys carry
    // agents' values, but the map never holds more than MAX_ENTRIES, which
    // bounds what crafted collisions could cost, and SipHash would cost more
    // than the rest of a memoized decision.
    map: HashMap<Vec<u8>, Memoized>,
}

thread_local! {
    // A RefCell, not a lock: only its own thread ever touches it, and no
    // borrow is held beyond one lookup or insert.
    static MEMO: RefCell<ThreadMemo> = RefCell::new(ThreadMemo::default());
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Default for DecisionMemo {
    fn default() -> Self {
        DecisionMemo {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl DecisionMemo {
    /// The key for `call` judged on `context` (the pruned context), or
    /// `None` when it is too long to be worth keeping.
    ///
    // INVARIANT: the key determines the decision's inputs exactly: each
    // part is length-prefixed, so no two different inputs share a key (the
    // same input may get two keys if its JSON comes out in another order,
    // which only costs a miss).
    pub fn key(call: &CallRequest, context: &Map<String, Value>) -> Option<Vec<u8>> {
        let mut key = Vec::with_capacity(128);
        let mut part = |bytes: &[u8]| {
            key.extend_from_slice(&bytes.len().to_le_bytes());
            key.extend_from_slice(bytes);
        };
        part(call.agent.as_bytes());
        part(call.action.as_bytes());
        match &call.resource {
            Resource::Route(route) => {
                part(b"route");
                part(route.as_bytes());
            }
            Resource::Tool { route, tool } => {
                part(b"tool");
                part(route.as_bytes());
                part(tool.as_bytes());
            }
        }
        write_object(&mut key, context);
        (key.len() <= MAX_KEY_BYTES).then_some(key)
    }

    /// This thread's memoized decision for `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Memoized> {
        MEMO.with(|m| {
            let m = m.try_borrow().ok()?;
            (m.owner == self.id).then(|| m.map.get(key).cloned())?
        })
    }

    /// Keeps `found` in this thread's memo; a memo left from another
    /// snapshot is dropped first.
    pub fn put(&self, key: Vec<u8>, found: Memoized) {
        MEMO.with(|m| {
            let Ok(mut m) = m.try_borrow_mut() else {
                return;
            };
            if m.owner != self.id || m.map.len() >= MAX_ENTRIES {
                m.map.clear();
                m.owner = self.id;
            }
            m.map.insert(key, found);
        });
    }

    /// How many decisions this thread keeps for this memo.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        MEMO.with(|m| {
            let m = m.borrow();
            if m.owner == self.id {
                m.map.len()
            } else {
                0
            }
        })
    }
}

// The context's part of a key: a tag per value and a length before every
// string and collection, so the bytes name one value only. Written by hand:
// serde_json's text form escaped every string byte by byte, which cost as
// much as the lookup it served.

fn write_len(key: &mut Vec<u8>, n: usize) {
    key.extend_from_slice(&n.to_le_bytes());
}

fn write_str(key: &mut Vec<u8>, s: &str) {
    write_len(key, s.len());
    key.extend_from_slice(s.as_bytes());
}

fn write_object(key: &mut Vec<u8>, m: &Map<String, Value>) {
    key.push(b'{');
    write_len(key, m.len());
    for (k, v) in m {
        write_str(key, k);
        write_value(key, v);
    }
}

fn write_value(key: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => key.push(b'n'),
        Value::Bool(b) => key.push(if *b { b't' } else { b'f' }),
        // Each kind of number has its own tag: 1 and 1.0 get two keys,
        // which only costs a miss.
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                key.push(b'u');
                key.extend_from_slice(&u.to_le_bytes());
            } else if let Some(i) = n.as_i64() {
                key.push(b'i');
                key.extend_from_slice(&i.to_le_bytes());
            } else {
                key.push(b'd');
                let bits = n.as_f64().map_or(u64::MAX, f64::to_bits);
                key.extend_from_slice(&bits.to_le_bytes());
            }
        }
        Value::String(s) => {
            key.push(b's');
            write_str(key, s);
        }
        Value::Array(items) => {
            key.push(b'[');
            write_len(key, items.len());
            for item in items {
                write_value(key, item);
            }
        }
        Value::Object(m) => write_object(key, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Small values from few parts, so that two of them often look alike.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-2i64..3).prop_map(Value::from),
            prop_oneof![Just(1.0f64), Just(-0.5), Just(2.5)].prop_map(Value::from),
            // Tag bytes among the letters, to tempt a key without lengths.
            "[asnu{\\[]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[asn]{0,2}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn key_of(m: &Map<String, Value>) -> Vec<u8> {
        let mut key = Vec::new();
        write_object(&mut key, m);
        key
    }

    /// Reads a key's context part back: a key that can be read back names
    /// one context only.
    struct Reader<'k>(&'k [u8]);

    impl Reader<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            head
        }
        fn len(&mut self) -> usize {
            usize::from_le_bytes(self.take(8).try_into().unwrap())
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.take(8).try_into().unwrap())
        }
        fn str(&mut self) -> String {
            let n = self.len();
            String::from_utf8(self.take(n).to_vec()).unwrap()
        }
        fn object(&mut self) -> Map<String, Value> {
            assert_eq!(self.take(1), b"{");
            let n = self.len();
            (0..n).map(|_| (self.str(), self.value())).collect()
        }
        fn value(&mut self) -> Value {
            match self.0[0] {
                b'{' => Value::Object(self.object()),
                tag => {
                    self.take(1);
                    match tag {
                        b'n' => Value::Null,
                        b't' => Value::Bool(true),
                        b'f' => Value::Bool(false),
                        b'u' => Value::from(self.u64()),
                        b'i' => Value::from(self.u64() as i64),
                        b'd' => Value::from(f64::from_bits(self.u64())),
                        b's' => Value::String(self.str()),
                        b'[' => {
                            let n = self.len();
                            Value::Array((0..n).map(|_| self.value()).collect())
                        }
                        other => panic!("unknown tag {other}"),
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn a_key_reads_back_as_its_context(
            m in proptest::collection::btree_map("[asn]{0,2}", json(), 0..3),
        ) {
            let m: Map<String, Value> = m.into_iter().collect();
            let key = key_of(&m);
            let mut reader = Reader(&key);
            let back = reader.object();
            prop_assert!(reader.0.is_empty(), "bytes left over");
            // Compared as text too: Map equality ignores member order.
            prop_assert_eq!(back.clone(), m.clone());
            prop_assert_eq!(Value::Object(back).to_string(), Value::Object(m).to_string());
        }
    }

    #[test]
    fn values_that_print_alike_get_their_own_keys() {
        let ctx = |v: Value| match v {
            Value::Object(m) => key_of(&m),
            _ => unreachable!(),
        };
        use serde_json::json;
        let pairs = [
            (json!({"a": 1}), json!({"a": "1"})),
            (json!({"a": 1}), json!({"a": 1.0})),
            (json!({"ab": "c"}), json!({"a": "bc"})),
            (json!({"a": "bs", "c": null}), json!({"a": "b", "sc": null})),
            (json!({"a": ["b", "c"]}), json!({"a": ["bc"]})),
            (json!({"a": [[]]}), json!({"a": [[], []]})),
            (json!({"a": null}), json!({"a": false})),
            (json!({"a": -1}), json!({"a": u64::MAX})),
        ];
        for (x, y) in pairs {
            assert_ne!(ctx(x.clone()), ctx(y.clone()), "{x} and {y}");
        }
    }
}
