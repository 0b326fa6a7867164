//! Telling approvers: webhook payloads, Standard Webhooks signatures, and
//! the durable outbox worker that delivers them.

pub mod outbox;
pub mod payload;
pub mod shown;
pub mod signing;

pub use outbox::WebhookOutbox;
