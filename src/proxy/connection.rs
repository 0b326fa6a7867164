//! What the requests of one agent connection share: its upstream lane and
//! the digest of the key it last authenticated with.
//!
//! Both live exactly as long as the agent's connection, so neither outlives
//! what the agent itself keeps open.

use std::sync::Mutex;

use crate::upstream::paired::PairedUpstream;

/// One agent connection's state, shared by its requests.
#[derive(Default)]
pub struct AgentConnection {
    /// Its own upstream connection (HTTP/1.1 agents, plain-HTTP tools).
    pub lane: PairedUpstream,
    // A std Mutex, only ever `try_lock`ed and never held across an await:
    // on HTTP/1.1 the requests of a connection come one at a time; on
    // HTTP/2 a stream that finds it busy simply hashes the key itself.
    last_key: Mutex<Option<KnownKey>>,
}

/// A bearer key and its SHA-256. An agent sends the same key on every
/// request of a connection, and hashing it cost more than the decision
/// itself once decisions were memoized. The raw key is kept only for as
/// long as the connection that carries it is open.
struct KnownKey {
    key: Box<[u8]>,
    sha256: [u8; 32],
}

impl AgentConnection {
    pub fn new() -> Self {
        Self::default()
    }

    /// The SHA-256 of `key`, computed once per key per connection.
    pub fn key_sha256(&self, key: &[u8]) -> [u8; 32] {
        if let Ok(last) = self.last_key.try_lock() {
            if let Some(known) = last.as_ref().filter(|k| *k.key == *key) {
                return known.sha256;
            }
        }
        let sha256 = crate::config::sha256(key);
        if let Ok(mut last) = self.last_key.try_lock() {
            *last = Some(KnownKey {
                key: key.into(),
                sha256,
            });
        }
        sha256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_key_is_hashed_again() {
        let conn = AgentConnection::new();
        let a = conn.key_sha256(b"key-a");
        assert_eq!(a, crate::config::sha256(b"key-a"));
        assert_eq!(conn.key_sha256(b"key-a"), a);
        let b = conn.key_sha256(b"key-b");
        assert_eq!(b, crate::config::sha256(b"key-b"));
        assert_ne!(a, b);
        assert_eq!(conn.key_sha256(b"key-a"), a);
    }
}
