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
//! `airlock_audit_backpressure_total`).
//!
//! A record the sink does not take is kept and retried, in a buffer of
//! `audit.buffer` records (see `writer`). While it fails, `/healthz` says
//! why and `airlock_audit_write_errors_total` counts; once the buffer is
//! full, `audit.on_failure` either refuses new calls (`deny`) or counts
//! each record it cannot keep in `airlock_audit_dropped_total`
//! (`continue`). A record is never dropped without being counted.
//! Records never hold secrets: agent keys and injected headers are not
//! part of the type.

mod line;
pub mod live;
mod otlp;
mod output;
mod syslog;
mod writer;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AuditConfig;
use crate::telemetry::Metrics;
use live::LiveEvent;

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
    /// The groups a held call's gates name (`@approvers`): who may decide
    /// it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approver_groups: Vec<String>,
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
    #[error("cannot start the audit writer: {0}")]
    Start(std::io::Error),
    #[error("cannot use audit url `{url}`: {detail}")]
    Url { url: String, detail: String },
}

/// The `error` kind of a call refused because its record could not be
/// kept. Its own record is queued only if there is room (and counted as
/// dropped if not): the call did not run, and waiting for room would hold
/// the refusal itself.
pub const UNAVAILABLE: &str = "audit_unavailable";

/// What the writer and the request path share.
pub(crate) struct Shared {
    /// Set while the buffer is full and the sink failing under
    /// `on_failure: deny`: new calls are refused.
    refusing: AtomicBool,
    /// Why the sink cannot take records, while it cannot.
    trouble: Mutex<Option<String>>,
    /// Asked by SIGHUP or `POST /v1/reload`: reopen the file.
    reopen: AtomicBool,
    wake: tokio::sync::Notify,
    /// The second of the last "dropped" log line from the request side, so
    /// that a refusal per call does not become a log line per call.
    lost_logged: AtomicU64,
}

impl Shared {
    fn set_trouble(&self, why: Option<String>) {
        if let Ok(mut t) = self.trouble.lock() {
            *t = why;
        }
    }
}

/// Where decision records go. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    // Bounded, so a stalled sink slows requests instead of growing memory
    // without limit; tokio's channel so that the request side can await room.
    // INVARIANT: each item is one complete JSON line, newline included.
    tx: mpsc::Sender<Vec<u8>>,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    live: Arc<live::LiveFeed>,
}

/// Joins the writer thread on shutdown so the last records reach the sink.
pub struct AuditWriter {
    handle: Option<std::thread::JoinHandle<()>>,
}

impl AuditSink {
    pub fn start(
        config: &AuditConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(AuditSink, AuditWriter), AuditError> {
        let out = output::Output::open(&config.target)?;
        let (tx, rx) = mpsc::channel(8192);
        let shared = Arc::new(Shared {
            refusing: AtomicBool::new(false),
            trouble: Mutex::new(None),
            reopen: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            lost_logged: AtomicU64::new(0),
        });
        let writer = writer::Writer::new(rx, out, config, shared.clone(), metrics.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AuditError::Start)?;
        let handle = std::thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || runtime.block_on(writer.run()))
            .map_err(AuditError::Start)?;
        let sink = AuditSink {
            tx,
            metrics,
            shared,
            live: Arc::new(live::LiveFeed::default()),
        };
        Ok((
            sink,
            AuditWriter {
                handle: Some(handle),
            },
        ))
    }

    /// Queues a record, waiting for room when the writer is behind.
    ///
    /// Not an `async fn`: the record is turned into its line here, so the
    /// returned future holds only the line. A caller's future reserves room
    /// for this one, and a held call's lives as long as a human takes.
    ///
    /// Takes the record by value: once it is written as a line, its text
    /// moves into the live view's event instead of being copied. Inlined,
    /// so that the record is not copied whole into this frame first.
    #[inline]
    pub fn record(&self, record: AuditRecord) -> impl std::future::Future<Output = ()> + use<'_> {
        self.record_published(record).1
    }

    /// As [`Self::record`], and the live view's event of the record: what a
    /// follow-up record of the same call names, shared rather than copied.
    #[inline]
    pub fn record_published(
        &self,
        record: AuditRecord,
    ) -> (
        Option<Arc<LiveEvent>>,
        impl std::future::Future<Output = ()> + use<'_>,
    ) {
        let mut line = Vec::with_capacity(512);
        line::write(&record, &mut line);
        line.push(b'\n');
        let wait = record.error != Some(UNAVAILABLE);
        let event = self.live.publish(record);
        (event, self.queue(line, wait))
    }

    async fn queue(&self, line: Vec<u8>, wait: bool) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(line)) if wait => {
                self.metrics.audit_backpressure.inc();
                // Boxed: rare, and its state would otherwise be reserved in
                // every caller's future.
                if Box::pin(self.tx.send(line)).await.is_err() {
                    self.lost();
                }
            }
            Err(_) => self.lost(),
        }
    }

    fn lost(&self) {
        self.metrics.audit_dropped.inc();
        let second = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        if self.shared.lost_logged.swap(second, Ordering::Relaxed) != second {
            tracing::error!(
                "audit queue is full or closed; records are dropped and counted in airlock_audit_dropped_total"
            );
        }
    }

    /// Whether new calls are to be refused: the sink is failing, its buffer
    /// is full, and `audit.on_failure` is `deny`. One relaxed load: the flag
    /// is advisory, and a call that races with it is still recorded.
    /// The live view of what is recorded.
    pub fn live(&self) -> &Arc<live::LiveFeed> {
        &self.live
    }

    pub fn refusing(&self) -> bool {
        self.shared.refusing.load(Ordering::Relaxed)
    }

    /// Why the sink cannot take records, while it cannot.
    pub fn trouble(&self) -> Option<String> {
        self.shared.trouble.lock().ok().and_then(|t| t.clone())
    }

    /// Asks the writer to reopen its file (after rotation).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }

    /// Reopens the file on every SIGHUP until the process ends.
    pub fn reopen_on_sighup(&self) {
        // Only what reopening needs: a sender here would keep the channel
        // open at shutdown.
        let shared = self.shared.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                shared.reopen.store(true, Ordering::Relaxed);
                shared.wake.notify_one();
            }
        });
    }
}

impl AuditWriter {
    /// Waits until every queued record is written (or, with the sink still
    /// failing, given up on and counted). Call after the last sink clone is
    /// dropped.
    pub fn finish(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
