//! The writer thread: takes lines from the channel into a bounded buffer
//! and sends them to the sink, keeping whatever the sink did not take.
//!
//! It runs a single-threaded runtime of its own, so that it can wait for a
//! line, a reopen request or a timer at once, and so that the OTLP sink's
//! HTTP client has a runtime to drive its connections. A healthy writer
//! naps for a few milliseconds after each batch, so that a busy proxy pays
//! for one wakeup per batch rather than one per request. A failing one
//! retries with a growing pause, and keeps taking lines until the buffer is
//! full; what happens then is `audit.on_failure`'s call.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::time::Instant;

use super::output::{Output, Pending};
use super::Shared;
use crate::config::{AuditConfig, AuditOnFailure};
use crate::telemetry::Metrics;

/// How long the writer lets records gather after a delivery. Waking for
/// every record costs a context switch per request (the sender must wake a
/// parked thread); a short nap bounds wakeups and write syscalls to a few
/// hundred per second at any load, and delays a record by at most this much.
const GATHER: Duration = Duration::from_millis(5);
/// How often the file's path is checked for a rotation nobody announced.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How long a failing sink is retried after the last sender is gone (at
/// shutdown) before the records still buffered are counted as dropped.
const GIVE_UP_AT_SHUTDOWN: Duration = Duration::from_secs(5);

pub(super) struct Writer {
    rx: mpsc::Receiver<Vec<u8>>,
    out: Output,
    pending: Pending,
    buffer: usize,
    on_failure: AuditOnFailure,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    /// Whether the last send failed.
    failing: bool,
    /// When the last sender went away.
    closed: Option<Instant>,
    /// Records dropped in this failure, for one log line per failure.
    dropping: bool,
}

impl Writer {
    pub fn new(
        rx: mpsc::Receiver<Vec<u8>>,
        out: Output,
        config: &AuditConfig,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
    ) -> Writer {
        Writer {
            rx,
            out,
            pending: Pending::default(),
            buffer: config.buffer,
            on_failure: config.on_failure,
            shared,
            metrics,
            failing: false,
            closed: None,
            dropping: false,
        }
    }

    /// Runs until the last sender is gone and the buffer is empty (or given
    /// up on, counted).
    pub async fn run(mut self) {
        let mut next_check = Instant::now() + ROTATION_CHECK;
        let mut retry = RETRY_FIRST;
        loop {
            self.wait(next_check, retry).await;
            self.take();
            let forced = self.shared.reopen.swap(false, Ordering::Relaxed);
            if forced || Instant::now() >= next_check {
                if self.out.reopen(forced) {
                    self.pending.restart_line();
                }
                next_check = Instant::now() + ROTATION_CHECK;
            }
            if !self.pending.is_empty() {
                match self.out.send(&mut self.pending).await {
                    Ok(rejected) => {
                        self.drop_counted(rejected, "the sink refused it for good");
                        self.recovered();
                        retry = RETRY_FIRST;
                    }
                    Err(e) => {
                        self.failed(&e);
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
            self.publish();
            if let Some(closed) = self.closed {
                if self.pending.is_empty() && self.rx.is_empty() {
                    break;
                }
                if self.failing && closed.elapsed() >= GIVE_UP_AT_SHUTDOWN {
                    let mut n = self.pending.clear() as u64;
                    while self.rx.try_recv().is_ok() {
                        n += 1;
                    }
                    self.metrics.audit_dropped.inc_by(n);
                    tracing::error!(
                        "shutting down with {} still failing: {n} audit records were not written",
                        self.out.describe()
                    );
                    break;
                }
            }
            if !self.failing {
                tokio::time::sleep(GATHER).await;
            }
        }
        self.publish();
    }

    /// Waits for work: a line, a reopen request, the rotation check, or
    /// (while failing) the next retry.
    async fn wait(&mut self, next_check: Instant, retry: Duration) {
        if self.failing {
            tokio::select! {
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep(retry) => {}
            }
            return;
        }
        if !self.pending.is_empty() || self.closed.is_some() {
            return;
        }
        tokio::select! {
            line = self.rx.recv() => match line {
                Some(line) => self.pending.push(line),
                None => self.closed = Some(Instant::now()),
            },
            _ = self.shared.wake.notified() => {}
            _ = tokio::time::sleep_until(next_check) => {}
        }
    }

    /// Moves queued lines into the buffer while it has room. A full buffer
    /// of a failing sink leaves them queued under `deny` (the request side
    /// waits, and new calls are refused) and drops them, counted, under
    /// `continue`.
    fn take(&mut self) {
        loop {
            let full = self.pending.len() >= self.buffer;
            if full && !(self.failing && self.on_failure == AuditOnFailure::Continue) {
                // Lines stay queued, but shutdown must still be noticed.
                if self.rx.is_closed() && self.closed.is_none() {
                    self.closed = Some(Instant::now());
                }
                return;
            }
            match self.rx.try_recv() {
                Ok(line) if full => {
                    drop(line);
                    self.drop_counted(1, "the audit buffer is full");
                }
                Ok(line) => self.pending.push(line),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.closed.get_or_insert_with(Instant::now);
                    return;
                }
            }
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        self.metrics.audit_write_errors.inc();
        let why = format!(
            "{} cannot take records: {e}; {} records wait in the buffer",
            self.out.describe(),
            self.pending.len()
        );
        if !self.failing {
            tracing::error!("{why}");
        }
        self.failing = true;
        self.shared.set_trouble(Some(why));
    }

    fn recovered(&mut self) {
        if self.failing {
            tracing::info!("{} takes records again", self.out.describe());
            self.shared.set_trouble(None);
        }
        self.failing = false;
        self.dropping = false;
    }

    fn drop_counted(&mut self, n: u64, why: &str) {
        if n == 0 {
            return;
        }
        self.metrics.audit_dropped.inc_by(n);
        if !self.dropping {
            tracing::error!("audit records dropped and counted: {why}");
        }
        self.dropping = true;
    }

    /// Tells the request side and the metrics where the buffer stands.
    fn publish(&self) {
        let refusing = self.on_failure == AuditOnFailure::Deny
            && self.failing
            && self.pending.len() >= self.buffer;
        self.shared.refusing.store(refusing, Ordering::Relaxed);
        self.metrics
            .audit_buffered
            .set(i64::try_from(self.pending.len()).unwrap_or(i64::MAX));
    }
}
