//! In-process wake-ups for agents waiting on a hold. The store stays the
//! source of truth: a wake-up only means "read the hold again".

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Default)]
pub struct Waiters {
    // A std Mutex: held only to insert or remove an entry, never across an
    // await. A watch channel per hold, because a receiver subscribed before
    // the store read sees any wake-up sent after it (no lost wake-ups).
    map: Mutex<HashMap<String, watch::Sender<()>>>,
}

impl Waiters {
    /// Subscribes before reading the store, so no change is missed.
    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<()>> {
        let mut map = self.map.lock().ok()?;
        let tx = map
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(()).0);
        Some(tx.subscribe())
    }

    /// Wakes everyone waiting on `id`.
    pub fn wake(&self, id: &str) {
        let tx = self.map.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(tx) = tx {
            // Dropping the sender right after also wakes every receiver.
            let _ = tx.send(());
        }
    }

    /// Drops the entry for `id` once nobody waits on it any more.
    pub fn release(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            if map.get(id).is_some_and(|tx| tx.receiver_count() == 0) {
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
