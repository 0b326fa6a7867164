//! Telling approvers: webhook payloads, Standard Webhooks signatures, and
//! the durable outbox worker that delivers them.

pub mod outbox;
pub mod payload;
pub mod shown;
pub mod signing;

pub use outbox::WebhookOutbox;

use crate::config::Config;
use crate::store::NewDelivery;

/// One delivery of `event` per configured webhook that wants it, each with
/// its own message id and the same payload. The payload is built only when
/// some webhook wants the event.
pub fn deliveries(cfg: &Config, event: &str, payload: impl FnOnce() -> String) -> Vec<NewDelivery> {
    let mut wanted = cfg
        .webhooks
        .iter()
        .filter(|w| {
            w.events
                .as_ref()
                .is_none_or(|e| e.iter().any(|x| x == event))
        })
        .peekable();
    if wanted.peek().is_none() {
        return Vec::new();
    }
    let payload = payload();
    wanted
        .map(|w| NewDelivery {
            id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
            url: w.url.clone(),
            event: event.to_string(),
            payload: payload.clone(),
        })
        .collect()
}
