//! The replica's one listening connection: `LISTEN` on the store's
//! channels, each notification turned into a [`StoreEvent`] for the
//! replica's own consumers.

use tokio::sync::broadcast;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Socket};

use super::{RECONNECT_MAX, RECONNECT_MIN};
use crate::store::StoreEvent;

/// Hold changes; the payload is the hold's id.
pub(super) const HOLDS: &str = "airlock_holds";
/// A pause set or lifted; no payload: every replica reads all pauses again.
pub(super) const PAUSES: &str = "airlock_pauses";
/// Notes between replicas (their live events); the payload is the note.
pub(super) const NOTES: &str = "airlock_events";

/// The event a notification on `channel` stands for.
fn event_of(channel: &str, payload: &str) -> Option<StoreEvent> {
    match channel {
        HOLDS => Some(StoreEvent::Changed(payload.to_string())),
        PAUSES => Some(StoreEvent::PausesChanged),
        NOTES => Some(StoreEvent::Note(payload.to_string())),
        _ => None,
    }
}

/// Forwards the store's notifications to `events` for as long as the store
/// lives, reconnecting with backoff. After each (re)connection it sends
/// [`StoreEvent::Resync`]: notifications sent while it was away are lost,
/// so every consumer reads what it follows again.
pub(super) async fn listen<T>(
    config: tokio_postgres::Config,
    tls: T,
    events: broadcast::Sender<StoreEvent>,
) where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut backoff = RECONNECT_MIN;
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut conn)) => {
                let tx = events.clone();
                // The connection is polled here, not spawned, because its
                // notifications arrive only through `poll_message`.
                let driver = tokio::spawn(async move {
                    while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        match msg {
                            Ok(AsyncMessage::Notification(n)) => {
                                if let Some(event) = event_of(n.channel(), n.payload()) {
                                    let _ = tx.send(event);
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the store's change listener lost its connection");
                                break;
                            }
                        }
                    }
                });
                let listened = client
                    .batch_execute(&format!("LISTEN {HOLDS}; LISTEN {PAUSES}; LISTEN {NOTES}"))
                    .await;
                if listened.is_ok() {
                    backoff = RECONNECT_MIN;
                    let _ = events.send(StoreEvent::Resync);
                }
                let _ = driver.await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store's change listener cannot connect");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}
