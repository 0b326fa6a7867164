//! An agent connection's own upstream connection: the fast path for
//! HTTP/1.1 agents calling plain-HTTP tools.
//!
//! hyper-util's pooled client hands every request to a shared pool and its
//! connections' tasks, a dispatch that shows in a bare proxy's throughput
//! (`examples/bare_proxy.rs` with and without `BARE_PAIRED=1`). Here an HTTP/1.1 agent connection, which carries one
//! request at a time anyway, gets one upstream connection of its own,
//! driven on the same worker thread, as nginx does with `keepalive`.
//!
//! - The lane binds to the first plain-HTTP upstream the agent connection
//!   calls; calls to other upstreams, TLS upstreams, HTTP/2 agents and the
//!   forwards of approved held calls use the pool.
//! - It lives exactly as long as the agent connection: when the agent
//!   closes (or idles past `timeouts.header_read`), the upstream connection
//!   is closed too, so idle upstream connections never outnumber agents'.
//! - A request is retried on a fresh connection only when hyper reports it
//!   was never written (the upstream closed the idle connection first), so
//!   a call is never sent twice.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

type Sender = SendRequest<Full<Bytes>>;

/// Why a call through the lane got no response.
#[derive(Debug, thiserror::Error)]
pub enum PairedError {
    #[error("connecting timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Connect(std::io::Error),
    #[error("{}", super::describe_error(.0))]
    Http(hyper::Error),
}

/// One agent connection's upstream lane. Shared by the requests of that
/// connection only.
#[derive(Default)]
pub struct PairedUpstream {
    // A std Mutex: it is held only to take or give back the connection,
    // never across an await. An HTTP/1.1 agent connection sends one request
    // at a time, so it is never contended.
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    /// The upstream this lane serves, set by its first call.
    bound: Option<Authority>,
    /// The connection, when it is idle between calls.
    idle: Option<Sender>,
    // INVARIANT: `busy` is true exactly while a `Claim` on this lane
    // exists; the claim gives the connection back when dropped.
    busy: bool,
}

impl PairedUpstream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the lane for one call to `authority`; `None` when it serves
    /// another upstream or is in use, and the caller should use the pool.
    pub fn claim(&self, authority: &Authority) -> Option<Claim<'_>> {
        let mut slot = self.slot.lock().ok()?;
        if slot.busy {
            return None;
        }
        let bound = slot.bound.get_or_insert_with(|| authority.clone());
        if bound != authority {
            return None;
        }
        let authority = bound.clone();
        slot.busy = true;
        Some(Claim {
            lane: self,
            sender: slot.idle.take(),
            authority,
        })
    }
}

/// The lane, taken for one call.
pub struct Claim<'a> {
    lane: &'a PairedUpstream,
    sender: Option<Sender>,
    authority: Authority,
}

impl Claim<'_> {
    /// Sends `req` over the lane's connection, opening one when there is
    /// none or it has closed. The request is in origin form (the path
    /// alone) and carries its `Host`, as an HTTP/1.1 connection takes it;
    /// the pool takes the absolute URI instead.
    pub async fn send(
        mut self,
        mut req: Request<Full<Bytes>>,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, PairedError> {
        if let Some(mut sender) = self.sender.take() {
            // An idle connection is nearly always ready at once; only one
            // that is not pays for a timer.
            let ready = sender.is_ready()
                || (!sender.is_closed()
                    && matches!(
                        tokio::time::timeout(connect_timeout, sender.ready()).await,
                        Ok(Ok(()))
                    ));
            if ready {
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        self.sender = Some(sender);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        // Never written: the upstream closed the idle
                        // connection first. A fresh one below.
                        Some(unsent) => req = unsent,
                        None => return Err(PairedError::Http(e.into_error())),
                    },
                }
            }
        }
        let mut sender = connect(&self.authority, connect_timeout).await?;
        let resp = sender.send_request(req).await.map_err(PairedError::Http)?;
        self.sender = Some(sender);
        Ok(resp)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.lane.slot.lock() {
            slot.busy = false;
            // A call cancelled mid-flight took its connection with it
            // (hyper closes it); the next call opens a new one.
            slot.idle = self.sender.take();
        }
    }
}

async fn connect(authority: &Authority, timeout: Duration) -> Result<Sender, PairedError> {
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host();
    // `host()` keeps an IPv6 literal's brackets, which `connect` wants gone.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let stream =
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
            Err(_) => return Err(PairedError::ConnectTimeout),
            Ok(Err(e)) => return Err(PairedError::Connect(e)),
            Ok(Ok(s)) => s,
        };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(PairedError::Http)?;
    // Driven on this worker's runtime, next to the agent's connection. It
    // ends when the lane drops its sender or the upstream closes.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
