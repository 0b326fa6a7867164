//! Decision records: one JSON line per decision, written off the request
//! path.
//!
//! The request path hands a record to a bounded channel; one writer thread
//! owns the output, writes records in batches and flushes whenever the
//! channel runs dry, then naps for a few milliseconds so that a busy proxy
//! pays for one wakeup per batch rather than one per request. When the
//! channel is full, the request waits for room (and the wait is counted in
//! `airlock_audit_backpressure_total`): a record is never dropped silently.
//! Records never hold secrets: agent keys and injected headers are not
//! part of the type.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AuditTarget;
use crate::telemetry::Metrics;

/// One decision, as written to the audit log.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditRecord {
    pub time: String,
    pub request_id: String,
    /// `decision` for a call; `approval` for what happens to an approval: a
    /// human decision, a refused decision attempt, or an expiry;
    /// `held_stream` for the end of a held MCP call answered as an event
    /// stream.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `allow`, `deny`, `hold`, or `error` when no decision was reached.
    /// For `approval` events: `approve` or `deny` (a decision taken),
    /// `refused` (a decision attempt that was turned away) or `expired`.
    pub verdict: &'static str,
    pub policies: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub eval_errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<crate::proxy::error::Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// The HTTP status answered; absent when nobody was answered (an
    /// approval expiring in the background).
    #[serde(skip_serializing_if = "is_zero")]
    pub status: u16,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// The approval's state after this event (`approved`, `denied`,
    /// `expired`), or the state it stayed in when an attempt was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_status: Option<&'static str>,
    /// The decision a decision attempt asked for (`approve` or `deny`),
    /// when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    /// Who sent a decision attempt: an approver's id, `admin`,
    /// `agent:<id>`, `callback` (a validly signed callback naming no known
    /// approver); absent when unknown. Never a token or signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit file `{path}`: {source}")]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Where decision records go. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    // Bounded, so a stalled disk slows requests instead of growing memory
    // without limit; tokio's channel so that the request side can await room.
    tx: mpsc::Sender<AuditRecord>,
    metrics: Arc<Metrics>,
}

/// Joins the writer thread on shutdown so the last records reach the disk.
pub struct AuditWriter {
    handle: Option<std::thread::JoinHandle<()>>,
}

impl AuditSink {
    pub fn start(
        target: &AuditTarget,
        metrics: Arc<Metrics>,
    ) -> Result<(AuditSink, AuditWriter), AuditError> {
        let out: Box<dyn Write + Send> = match target {
            AuditTarget::Stdout => Box::new(std::io::stdout()),
            AuditTarget::File(path) => Box::new(open_append(path)?),
        };
        let (tx, rx) = mpsc::channel(8192);
        let handle = std::thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || write_loop(rx, out))
            .ok();
        Ok((AuditSink { tx, metrics }, AuditWriter { handle }))
    }

    /// Queues a record, waiting for room when the writer is behind.
    pub async fn record(&self, record: AuditRecord) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(record)) => {
                self.metrics.audit_backpressure.inc();
                if self.tx.send(record).await.is_err() {
                    tracing::error!("audit writer is gone; a record could not be written");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("audit writer is gone; a record could not be written");
            }
        }
    }
}

impl AuditWriter {
    /// Waits until every queued record is written. Call after the last sink
    /// clone is dropped.
    pub fn finish(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, AuditError> {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// How long the writer lets records gather after a flush. Waking for every
/// record costs a context switch per request (the sender must wake a parked
/// thread); a short nap bounds wakeups and write syscalls to a few hundred
/// per second at any load, and delays a record by at most this much.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

fn write_loop(mut rx: mpsc::Receiver<AuditRecord>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    while let Some(rec) = rx.blocking_recv() {
        write_one(&mut out, &rec);
        // Batch whatever else is already queued, then flush once.
        while let Ok(rec) = rx.try_recv() {
            write_one(&mut out, &rec);
        }
        if let Err(e) = out.flush() {
            tracing::error!(error = %e, "audit flush failed");
        }
        std::thread::sleep(GATHER);
    }
    let _ = out.flush();
}

fn write_one(out: &mut impl Write, rec: &AuditRecord) {
    let res = serde_json::to_writer(&mut *out, rec)
        .and_then(|()| out.write_all(b"\n").map_err(serde_json::Error::io));
    if let Err(e) = res {
        tracing::error!(error = %e, request_id = %rec.request_id, "audit write failed");
    }
}

/// RFC 3339 UTC time with milliseconds, without pulling in a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_614_265_330_123);
        assert_eq!(rfc3339(t), "2021-02-25T15:02:10.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
