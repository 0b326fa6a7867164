//! In-process wake-ups for agents waiting on a hold. The store stays the
//! source of truth: a wake-up only means "read the hold again".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Waiters {
    // A std Mutex: held only to insert or remove an entry, never across an
    // await. A `Notify` per hold, shared by everyone waiting on it: a
    // `Notified` future created before the store read receives any
    // `notify_waiters` sent after it (no lost wake-ups), and it is far
    // smaller than a watch channel, for each of possibly thousands of
    // waiting calls.
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiters {
    /// The bell for `id`. Call [`Notify::notified`] on it before reading the
    /// store, so that no change is missed.
    pub fn subscribe(&self, id: &str) -> Option<Arc<Notify>> {
        let mut map = self.map.lock().ok()?;
        Some(map.entry(id.to_string()).or_default().clone())
    }

    /// Wakes everyone waiting on `id`.
    pub fn wake(&self, id: &str) {
        let bell = self.map.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(bell) = bell {
            bell.notify_waiters();
        }
    }

    /// Wakes everyone waiting on any hold: each reads its hold again (a
    /// shared store's hints may have been lost).
    pub fn wake_all(&self) {
        let bells: Vec<Arc<Notify>> = match self.map.lock() {
            Ok(mut m) => m.drain().map(|(_, bell)| bell).collect(),
            Err(_) => Vec::new(),
        };
        for bell in bells {
            bell.notify_waiters();
        }
    }

    /// Drops the entry for `id` once nobody waits on it any more. Callers
    /// drop their own bell first.
    pub fn release(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            // INVARIANT: every clone of a bell is taken under this lock, so
            // a count of one (the map's own) cannot grow while we hold it.
            if map.get(id).is_some_and(|bell| Arc::strong_count(bell) == 1) {
                map.remove(id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
