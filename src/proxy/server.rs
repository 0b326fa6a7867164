//! The agents' listener: TCP or TLS, HTTP/1.1 and h2c/h2, keep-alive, and
//! graceful shutdown that drains in-flight requests.
//!
//! Connections are accepted here and served on the data-plane workers
//! ([`crate::workers`]), one worker per connection, in turn.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::ProxyState;
use crate::workers::Workers;

pub struct ServeOptions {
    pub header_read: Duration,
    pub shutdown_grace: Duration,
    pub tls: Option<TlsAcceptor>,
}

/// Serves agents until `shutdown` resolves, then stops accepting and waits
/// up to the grace period for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    workers: &Workers,
    state: Arc<ProxyState>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        // An agent multiplexing tool calls keeps held ones open as streams
        // for as long as a human takes; hyper's default of 200 would stall
        // its other calls behind them.
        .max_concurrent_streams(1000)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let protocols = Arc::new(Protocols { http1, http2 });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Running out of file descriptors must not end the
                    // server; back off briefly and try again.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Handed to a worker as a std socket: a tokio socket is tied to the
        // runtime that registered it.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand the connection to a worker");
                continue;
            }
        };
        let state = state.clone();
        let protocols = protocols.clone();
        let watcher = graceful.watcher();
        let tls = opts.tls.clone();
        let first_bytes = opts.header_read;
        workers.spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "a worker cannot take the connection");
                    return;
                }
            };
            // Its lane and key digest live and die with the connection.
            let conn = Arc::new(super::AgentConnection::from_peer(peer, tls.is_some()));
            let service = service_fn(move |req| super::handle(state.clone(), conn.clone(), req));
            let result = match tls {
                None => {
                    let version = match tokio::time::timeout(first_bytes, sniff(&stream)).await {
                        Ok(Ok(Some(v))) => v,
                        Ok(Ok(None)) => return,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "connection failed before its first request");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "no request within the header read timeout");
                            return;
                        }
                    };
                    protocols.serve(stream, version, service, watcher).await
                }
                // Boxed: a TLS session is large, and a plain connection's
                // task should not carry room for one.
                Some(acceptor) => Box::pin(async move {
                    let tls_stream =
                        match tokio::time::timeout(first_bytes, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return Ok(());
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return Ok(());
                            }
                        };
                    // ALPN chose the protocol; without it, HTTP/1.1.
                    let version = match tls_stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => HttpVersion::H2,
                        _ => HttpVersion::H1,
                    };
                    protocols.serve(tls_stream, version, service, watcher).await
                })
                .await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("draining in-flight requests");
    if tokio::time::timeout(opts.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}

/// The HTTP/2 connection preface: what a client speaking HTTP/2 with prior
/// knowledge (h2c) sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpVersion {
    H1,
    H2,
}

/// Tells an HTTP/2 client from an HTTP/1 one by peeking at its first bytes,
/// which stay in the socket for hyper to read. `None` when the client
/// closed without sending anything.
///
/// Why not hyper-util's `auto` connection: it reads the first bytes itself
/// and replays them, so hyper's first read returns only those 24 bytes and
/// its 8 KiB read buffer then grows to 16 KiB. That doubled the buffer of
/// every HTTP/1.1 connection, for as long as the connection lives, which
/// for a held call is as long as a human takes.
async fn sniff(stream: &tokio::net::TcpStream) -> std::io::Result<Option<HttpVersion>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(HttpVersion::H1));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(HttpVersion::H2));
        }
        // Part of the preface: the socket stays readable with those bytes
        // in it, so wait a moment rather than spin. The caller's timeout
        // bounds how long.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The two protocol builders, shared by every connection.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    async fn serve<I, S>(
        &self,
        io: I,
        version: HttpVersion,
        service: S,
        watcher: Watcher,
    ) -> Result<(), hyper::Error>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::HttpService<hyper::body::Incoming> + Send + 'static,
        S::Future: Send + 'static,
        S::ResBody: Send + 'static,
        <S::ResBody as hyper::body::Body>::Data: Send,
        <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = TokioIo::new(io);
        match version {
            HttpVersion::H1 => {
                watcher
                    .watch(self.http1.serve_connection(io, service))
                    .await
            }
            // Boxed: an HTTP/2 connection's state is larger, and an
            // HTTP/1.1 connection's task (one per held call) should not
            // carry room for it. There are few HTTP/2 connections.
            HttpVersion::H2 => {
                Box::pin(watcher.watch(self.http2.serve_connection(io, service))).await
            }
        }
    }
}

/// Loads a PEM certificate chain and key into a TLS acceptor that offers
/// h2 and HTTP/1.1.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("cannot read `{}`: {e}", cert.display()))?;
    let key_pem =
        std::fs::read(key).map_err(|e| format!("cannot read `{}`: {e}", key.display()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate in `{}`: {e}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("bad key in `{}`: {e}", key.display()))?
        .ok_or_else(|| format!("no private key in `{}`", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
