//! Decision records: one JSON line per decision, written off the request
//! path.
//!
//! The request path turns a record into its JSON line and hands the line to
//! a bounded channel; one writer thread owns the output, writes lines in
//! batches and flushes whenever the channel runs dry, then naps for a few
//! milliseconds so that a busy proxy pays for one wakeup per batch rather
//! than one per request. Serializing on the sending side keeps the record's
//! many small strings on the thread that allocated them: freeing them on the
//! writer thread cost more in the allocator than writing them. When the
//! channel is full, the request waits for room (and the wait is counted in
//! `airlock_audit_backpressure_total`): a record is never dropped silently.
//! Records never hold secrets: agent keys and injected headers are not
//! part of the type.

mod line;

use std::borrow::Cow;
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
    /// stream; `response_incomplete` for a response whose upstream broke
    /// off the body after its decision record was written.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Shared with the snapshot's route, so naming it copies nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Arc<str>>,
    /// Static for the standard methods, so naming one copies nothing.
    pub method: Cow<'static, str>,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Cow<'static, str>>,
    /// Shared with the snapshot's route on the REST path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Arc<str>>,
    /// `allow`, `deny`, `hold`, or `error` when no decision was reached.
    /// For `approval` events: `approve` or `deny` (a decision taken),
    /// `refused` (a decision attempt that was turned away), `expired`,
    /// `executing` (an approved call about to be sent) or `interrupted` (one
    /// a crash caught mid-execution, settled at start-up).
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
    pub fault: Option<Fault>,
    /// Shared with the policy snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Arc<str>>,
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

/// Who has to act for a failed call to succeed. Defined here, where it is
/// recorded, so that the audit module needs nothing of the proxy's; the
/// proxy's errors say which one is theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    Agent,
    Upstream,
    Policy,
    Internal,
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
    // INVARIANT: each item is one complete JSON line, newline included.
    tx: mpsc::Sender<Vec<u8>>,
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
    ///
    /// Not an `async fn`: the record is turned into its line here, so the
    /// returned future holds only the line. A caller's future reserves room
    /// for this one, and a held call's lives as long as a human takes.
    ///
    /// Takes the record by reference: it is large, and only read here.
    pub fn record(&self, record: &AuditRecord) -> impl std::future::Future<Output = ()> + use<'_> {
        let mut line = Vec::with_capacity(512);
        line::write(record, &mut line);
        line.push(b'\n');
        self.queue(line)
    }

    async fn queue(&self, line: Vec<u8>) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(line)) => {
                self.metrics.audit_backpressure.inc();
                // Boxed: rare, and its state would otherwise be reserved in
                // every caller's future.
                if Box::pin(self.tx.send(line)).await.is_err() {
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

fn write_loop(mut rx: mpsc::Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    while let Some(line) = rx.blocking_recv() {
        write_line(&mut out, &line);
        // Batch whatever else is already queued, then flush once.
        while let Ok(line) = rx.try_recv() {
            write_line(&mut out, &line);
        }
        if let Err(e) = out.flush() {
            tracing::error!(error = %e, "audit flush failed");
        }
        std::thread::sleep(GATHER);
    }
    let _ = out.flush();
}

fn write_line(out: &mut impl Write, line: &[u8]) {
    if let Err(e) = out.write_all(line) {
        tracing::error!(error = %e, "audit write failed");
    }
}

thread_local! {
    // The last second each thread formatted, and its text up to the `.`
    // (`2021-02-25T15:02:10.`): records come many per second, and the
    // calendar arithmetic cost more than the rest of the time stamp. Per
    // thread, so that no lock is shared.
    static LAST_SECOND: std::cell::Cell<(u64, [u8; 20])> =
        const { std::cell::Cell::new((u64::MAX, [0; 20])) };
}

/// RFC 3339 UTC time with milliseconds, without pulling in a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let text = match LAST_SECOND.get() {
        (last, text) if last == secs => text,
        _ => {
            let text = to_second(secs);
            LAST_SECOND.set((secs, text));
            text
        }
    };
    let millis = d.subsec_millis();
    let mut out = String::with_capacity(24);
    out.extend(text.iter().map(|&b| char::from(b)));
    for digit in [millis / 100, millis / 10 % 10, millis % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
    out.push('Z');
    out
}

/// `secs` as RFC 3339 UTC up to the `.` (`2021-02-25T15:02:10.`): the
/// calendar arithmetic.
fn to_second(secs: u64) -> [u8; 20] {
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
    // Digit by digit into a fixed array: `format!` with padding cost more
    // than the rest of the record.
    let mut out = [0u8; 20];
    let mut at = out.iter_mut();
    let mut digits = |n: i64, width: u32, then: u8| {
        for p in (0..width).rev() {
            if let Some(slot) = at.next() {
                *slot = b'0' + (n / 10_i64.pow(p)).rem_euclid(10) as u8;
            }
        }
        if let Some(slot) = at.next() {
            *slot = then;
        }
    };
    let rem = rem as i64;
    digits(year, 4, b'-');
    digits(month, 2, b'-');
    digits(day, 2, b'T');
    digits(rem / 3600, 2, b':');
    digits((rem % 3600) / 60, 2, b':');
    digits(rem % 60, 2, b'.');
    out
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
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
        assert_eq!(rfc3339(t), "9999-12-31T23:59:59.999Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(951_782_400_007);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.007Z");
    }

    #[test]
    fn rfc3339_of_the_same_second_again_and_of_the_next() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_614_265_330_000);
        for (ms, want) in [
            (5, "2021-02-25T15:02:10.005Z"),
            (999, "2021-02-25T15:02:10.999Z"),
            (1_040, "2021-02-25T15:02:11.040Z"),
            (1_040 + 86_400_000, "2021-02-26T15:02:11.040Z"),
            (120, "2021-02-25T15:02:10.120Z"),
        ] {
            assert_eq!(rfc3339(base + Duration::from_millis(ms)), want);
        }
    }
}
