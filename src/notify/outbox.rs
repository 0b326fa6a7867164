//! The webhook outbox worker. Deliveries are rows in the store, written in
//! the same transaction as the change they announce; this worker sends the
//! due ones, signed, and records each attempt. A delivery is retried with
//! exponential backoff and jitter (or after the endpoint's `Retry-After`)
//! until a 2xx, a 410 (endpoint gone), or the endpoint's `max_attempts`. A
//! restart simply resumes from the rows.
//!
//! Endpoints are served side by side, each with at most one attempt in
//! flight: an endpoint that accepts connections and never answers delays
//! only its own deliveries, never another endpoint's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::Full;
use rand::Rng as _;
use tokio::sync::Notify;

use super::signing;
use crate::clock::now_ms;
use crate::config::Config;
use crate::store::{ApprovalStore, AttemptResult, Delivery};
use crate::telemetry::{Metrics, ResultLabels};
use crate::upstream::UpstreamClient;

/// At most this many endpoints are attempted per pass.
const BATCH: u32 = 64;
/// Connecting to an endpoint: short, since a live one accepts at once.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// From the request sent to the endpoint's response headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon to look again when a delivery is due but its endpoint is busy:
/// the busy attempt wakes the worker when it ends, this is the backstop.
const BUSY_POLL: Duration = Duration::from_millis(200);
const BACKOFF_BASE_MS: i64 = 1_000;
const BACKOFF_CAP_MS: i64 = 60 * 60 * 1_000;
/// How long the worker sleeps when nothing is due and nobody wakes it.
const IDLE_POLL: Duration = Duration::from_secs(5);

pub struct WebhookOutbox {
    pub store: Arc<dyn ApprovalStore>,
    /// Notified when deliveries are queued; `notify_one` keeps a permit, so
    /// a wake-up sent while the worker is busy is not lost.
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub client: UpstreamClient,
    pub config: Arc<dyn Fn() -> Arc<Config> + Send + Sync>,
}

/// The delay before retry number `attempts` (1-based): exponential from 1 s,
/// capped at an hour, with "equal jitter" (half fixed, half random), so
/// retries from many deliveries spread out.
pub fn backoff_ms(attempts: u32, jitter: f64) -> i64 {
    let exp = BACKOFF_BASE_MS.saturating_mul(1i64 << attempts.saturating_sub(1).min(30));
    let d = exp.min(BACKOFF_CAP_MS);
    d / 2 + ((d / 2) as f64 * jitter.clamp(0.0, 1.0)) as i64
}

/// The endpoints with an attempt in flight. A std Mutex: it is only held
/// to insert or remove one URL, never across an await.
#[derive(Default)]
struct Busy(Mutex<HashSet<String>>);

impl Busy {
    /// Claims `url`; false when it already has an attempt in flight.
    fn claim(&self, url: &str) -> bool {
        self.0
            .lock()
            .map(|mut b| b.insert(url.to_string()))
            .unwrap_or(false)
    }

    fn release(&self, url: &str) {
        if let Ok(mut b) = self.0.lock() {
            b.remove(url);
        }
    }
}

impl WebhookOutbox {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { Arc::new(self).run().await })
    }

    async fn run(self: Arc<Self>) {
        let busy = Arc::new(Busy::default());
        loop {
            // Each endpoint's earliest due delivery: one endpoint's backlog
            // never fills the batch.
            let due = match self.store.due_deliveries(now_ms(), BATCH).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the webhook outbox");
                    Vec::new()
                }
            };
            for d in due {
                if !busy.claim(&d.url) {
                    continue;
                }
                let (outbox, busy) = (self.clone(), busy.clone());
                tokio::spawn(async move {
                    outbox.deliver(&d).await;
                    busy.release(&d.url);
                    // The endpoint may have more due: look again now.
                    outbox.wake.notify_one();
                });
            }
            let sleep = match self.store.next_delivery_ms().await {
                Ok(Some(next)) => match u64::try_from(next.saturating_sub(now_ms())) {
                    // Due already, so its endpoint is busy: its attempt
                    // wakes the worker when it ends.
                    Ok(0) | Err(_) => BUSY_POLL,
                    Ok(ms) => Duration::from_millis(ms).min(IDLE_POLL),
                },
                _ => IDLE_POLL,
            };
            tokio::select! {
                () = self.wake.notified() => {},
                () = tokio::time::sleep(sleep) => {},
            }
        }
    }

    /// One attempt at `d`, counted and recorded.
    async fn deliver(&self, d: &Delivery) {
        let result = self.attempt(d).await;
        let label = match &result {
            AttemptResult::Delivered { .. } => "delivered",
            AttemptResult::Failed { give_up: true, .. } => "gave_up",
            AttemptResult::Failed { .. } => "failed",
        };
        self.metrics
            .webhook_deliveries
            .get_or_create(&ResultLabels {
                result: label.to_string(),
            })
            .inc();
        if let Err(e) = self.store.record_attempt(&d.id, result).await {
            tracing::warn!(error = %e, delivery = %d.id, "cannot record a webhook attempt");
        }
    }

    async fn attempt(&self, d: &Delivery) -> AttemptResult {
        let cfg = (self.config)();
        let Some(hook) = cfg.webhooks.iter().find(|w| w.url == d.url) else {
            return AttemptResult::Failed {
                status: None,
                error: "the endpoint is no longer configured".into(),
                next_attempt_ms: now_ms(),
                give_up: true,
            };
        };
        let attempts = d.attempts + 1;
        let fail = |status: Option<u16>, error: String, retry_after: Option<i64>| {
            let give_up = attempts >= hook.max_attempts || status == Some(410);
            let wait = retry_after
                .unwrap_or_else(|| backoff_ms(attempts, rand::rng().random::<f64>()))
                .min(BACKOFF_CAP_MS);
            AttemptResult::Failed {
                status,
                error,
                next_attempt_ms: now_ms().saturating_add(wait),
                give_up,
            }
        };
        let ts = now_ms() / 1000;
        let signature = signing::sign(&hook.secret, &d.id, ts, d.payload.as_bytes());
        let req = Request::post(d.url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "airlock-webhooks")
            .header("webhook-id", d.id.as_str())
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(d.payload.clone())));
        let req = match req {
            Ok(r) => r,
            Err(e) => return fail(None, format!("cannot build the request: {e}"), None),
        };
        // The client's own connect timeout (`CONNECT_TIMEOUT`) comes first.
        match tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, self.client.request(req))
            .await
        {
            Err(_) => fail(
                None,
                format!(
                    "the endpoint did not answer within {}s",
                    RESPONSE_TIMEOUT.as_secs()
                ),
                None,
            ),
            Ok(Err(e)) => fail(None, crate::upstream::describe_error(&e), None),
            Ok(Ok(resp)) if resp.status().is_success() => AttemptResult::Delivered {
                status: resp.status().as_u16(),
            },
            Ok(Ok(resp)) => {
                let retry_after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .map(|s| s.saturating_mul(1000));
                let status = resp.status().as_u16();
                fail(
                    Some(status),
                    format!("the endpoint answered {status}"),
                    retry_after,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff_ms(1, 0.0), 500);
        assert_eq!(backoff_ms(1, 1.0), 1_000);
        assert_eq!(backoff_ms(4, 1.0), 8_000);
        assert!((4_000..=8_000).contains(&backoff_ms(4, 0.37)));
        assert_eq!(backoff_ms(40, 1.0), BACKOFF_CAP_MS);
    }
}
