//! What humans' judgments teach: daily counters of verdicts, hold outcomes
//! and reviews per policy and per route or tool ([`tally`], stored through
//! [`crate::store::CounterStore`]); the report that reads them and
//! suggests policy changes where the evidence is strong ([`report`]); and
//! the export of every human judgment as JSON lines ([`export`]).
//!
//! Counting costs the data plane no store write: each worker counts into
//! its own shard in memory, and a task adds the sums to the store every
//! [`tally::FLUSH_EVERY`] and at shutdown.

pub mod export;
pub mod report;
pub mod tally;

pub use tally::{target_of_resource, DailyCounters, FlushTrouble};
