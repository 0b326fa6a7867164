//! Each agent's calls of the last hour by verdict, for `GET /v1/agents`.
//!
//! Counted on the request path, so with atomics only: a slot per minute of
//! the hour and per verdict, each one `AtomicU64` holding the minute it
//! counts (high half) and the count (low half), so that moving a slot on to
//! a new minute and counting in it are one compare-and-set, and no call is
//! lost at the turn of a minute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// The verdicts counted, in the order [`AgentCalls::last_hour`] answers.
pub const VERDICTS: [&str; 4] = ["allow", "deny", "hold", "error"];
const MINUTES: usize = 60;

/// One agent's slots.
pub struct AgentCalls {
    slots: [[AtomicU64; VERDICTS.len()]; MINUTES],
}

impl Default for AgentCalls {
    fn default() -> Self {
        AgentCalls {
            slots: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

fn minute_of(now_ms: i64) -> u64 {
    u64::try_from(now_ms / 60_000).unwrap_or(0) & u64::from(u32::MAX)
}

impl AgentCalls {
    fn count(&self, verdict: usize, now_ms: i64) {
        let minute = minute_of(now_ms);
        let slot = &self.slots[(minute as usize) % MINUTES][verdict];
        // Relaxed: a count, read only for display; the compare-and-set
        // keeps minute and count together.
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(if v >> 32 == minute {
                v.saturating_add(1)
            } else {
                (minute << 32) | 1
            })
        });
    }

    /// Calls in the hour up to `now_ms`, per verdict of [`VERDICTS`].
    pub fn last_hour(&self, now_ms: i64) -> [u64; VERDICTS.len()] {
        let now = minute_of(now_ms);
        let mut out = [0; VERDICTS.len()];
        for minute in &self.slots {
            for (i, slot) in minute.iter().enumerate() {
                let v = slot.load(Ordering::Relaxed);
                if now.saturating_sub(v >> 32) < MINUTES as u64 {
                    out[i] += v & u64::from(u32::MAX);
                }
            }
        }
        out
    }
}

/// Every agent's [`AgentCalls`].
#[derive(Default)]
pub struct CallTally {
    // An ArcSwap: an agent's first call adds it (rare, copy on write); every
    // other call only reads the map and counts with an atomic.
    agents: ArcSwap<HashMap<String, Arc<AgentCalls>>>,
}

impl CallTally {
    /// Counts a call of `agent` with audit verdict `verdict` (`allow`,
    /// `deny`, `hold`; anything else counts as `error`).
    pub fn count(&self, agent: &str, verdict: &str, now_ms: i64) {
        let i = VERDICTS[..3]
            .iter()
            .position(|v| *v == verdict)
            .unwrap_or(3);
        if let Some(calls) = self.agents.load().get(agent) {
            calls.count(i, now_ms);
            return;
        }
        self.agents.rcu(|old| {
            let mut next = HashMap::clone(old);
            next.entry(agent.to_string()).or_default();
            next
        });
        if let Some(calls) = self.agents.load().get(agent) {
            calls.count(i, now_ms);
        }
    }

    /// `agent`'s calls of the last hour, per verdict of [`VERDICTS`].
    pub fn last_hour(&self, agent: &str, now_ms: i64) -> [u64; VERDICTS.len()] {
        self.agents
            .load()
            .get(agent)
            .map_or([0; VERDICTS.len()], |c| c.last_hour(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_older_than_an_hour_drop_out() {
        let t = CallTally::default();
        let m = 60_000;
        t.count("a", "allow", 0);
        t.count("a", "allow", 30 * m);
        t.count("a", "deny", 30 * m);
        t.count("a", "oops", 30 * m);
        assert_eq!(t.last_hour("a", 30 * m), [2, 1, 0, 1]);
        assert_eq!(t.last_hour("a", 61 * m), [1, 1, 0, 1]);
        // The slot of minute 0 is reused by minute 60, from zero.
        t.count("a", "hold", 60 * m);
        assert_eq!(t.last_hour("a", 60 * m), [1, 1, 1, 1]);
        assert_eq!(t.last_hour("b", 0), [0; 4]);
    }
}
