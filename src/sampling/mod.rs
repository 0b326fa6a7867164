//! Quality sampling: a share of the calls policies allow is kept, after
//! the fact, for a human to review.
//!
//! - [`choose`] decides on the request path whether a call is sampled: the
//!   highest of its permits' `@sample` rates and the matching
//!   `sampling.rules`. A call nobody samples costs a few comparisons and no
//!   allocation.
//! - [`Capture`] copies a sampled call as it passes: the request once
//!   judged, the response's chunks as they stream to the agent, up to
//!   `sampling.max_bytes` each, never holding one back. Redaction
//!   (`redact`) happens before anything is queued.
//! - [`ReviewQueue`] hands finished items to a writer task over a bounded
//!   channel, so the store is never on the request path; an item that
//!   finds the queue full is dropped and counted, never silently.

mod capture;
mod choice;
mod redact;
mod writer;

pub use capture::{CallFacts, Capture};
pub use choice::{choose, seeded_draw, Picked};
pub use writer::ReviewQueue;
