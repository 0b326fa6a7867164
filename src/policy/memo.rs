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
//! The memo lives in the snapshot, so a reload starts an empty one. It is
//! bounded: keys longer than [`MAX_KEY_BYTES`] are not memoized (a policy
//! that reads a whole body would make every key differ anyway), and when it
//! holds [`MAX_ENTRIES`] decisions it starts over. Shadow policies and the
//! unindexed reference path never use it.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::{Map, Value};

use super::{CallRequest, Resource, Verdict};

/// Decisions kept per snapshot before the memo starts over.
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

#[derive(Default)]
pub(super) struct DecisionMemo {
    // Read-mostly: after warm-up, calls take only the read lock. A std
    // RwLock because it is held for one hash lookup and never across an
    // await.
    map: RwLock<HashMap<Vec<u8>, Memoized>>,
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
        serde_json::to_writer(&mut key, context).ok()?;
        (key.len() <= MAX_KEY_BYTES).then_some(key)
    }

    pub fn get(&self, key: &[u8]) -> Option<Memoized> {
        self.map.read().ok()?.get(key).cloned()
    }

    pub fn put(&self, key: Vec<u8>, found: Memoized) {
        if let Ok(mut map) = self.map.write() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key, found);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }
}
