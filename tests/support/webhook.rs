//! A real webhook receiver for tests: records every delivery, and can be
//! told to fail with 500 until further notice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Router;
use serde_json::Value;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Vec<Delivery>>>,
    failing: Arc<AtomicBool>,
    stalling: Arc<AtomicBool>,
    attempts: Arc<Mutex<usize>>,
}

pub struct WebhookReceiver {
    pub addr: SocketAddr,
    shared: Shared,
}

/// The secret tests configure (the Standard Webhooks test vector's).
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        WebhookReceiver::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    /// As [`WebhookReceiver::start`], listening on `addr` (a port a config
    /// already names, for a receiver that comes up late).
    pub async fn start_on(addr: SocketAddr) -> WebhookReceiver {
        let shared = Shared::default();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind webhook receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The YAML for a `webhooks:` entry pointing here.
    pub fn yaml(&self) -> String {
        format!(
            "webhooks:\n  - url: {}\n    secret: {WEBHOOK_SECRET}\n    max_attempts: 50\n",
            self.url()
        )
    }

    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// While set, each delivery is recorded as it arrives and its answer
    /// held back: the sender is left mid-delivery.
    pub fn set_stalling(&self, stalling: bool) {
        self.shared.stalling.store(stalling, Ordering::SeqCst);
    }

    /// Attempts answered (delivered or refused).
    pub fn attempts(&self) -> usize {
        *self.shared.attempts.lock().expect("lock")
    }

    /// Accepted deliveries.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.seen.lock().expect("lock").clone()
    }

    /// Waits until an accepted delivery matches `pred` (async: the receiver
    /// runs on the test's own runtime).
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Delivery {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(d) = self.deliveries().into_iter().find(|d| pred(&d.json())) {
                return d;
            }
            assert!(Instant::now() < deadline, "no webhook delivery for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the `event` webhook of approval `id`.
    pub async fn wait_event(&self, event: &str, id: &str) -> Delivery {
        self.wait_for(&format!("{event} {id}"), |v| {
            v["type"] == event && v["data"]["approval_id"] == id
        })
        .await
    }
}

async fn handle(State(shared): State<Shared>, req: Request) -> StatusCode {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    *shared.attempts.lock().expect("lock") += 1;
    if shared.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let h = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    shared.seen.lock().expect("lock").push(Delivery {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body: body.to_vec(),
    });
    // Bounded like every test wait: a stall outlives any sender's timeout.
    for _ in 0..3000 {
        if !shared.stalling.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    StatusCode::NO_CONTENT
}
