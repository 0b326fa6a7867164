//! Pooled HTTP clients for upstream tools, over plain TCP or rustls.
//!
//! Certificates are always verified: against the system's trust roots, plus
//! a route's own `ca_file` for private CAs. There is no switch to skip
//! verification. Clients are cached by (CA file, connect timeout) so that a
//! configuration reload keeps warm connection pools.
//!
//! HTTP/1.1 agents calling plain-HTTP tools mostly bypass the pool: see
//! [`paired`].

pub mod paired;
mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;

type PooledClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client every route forwards through: one connection pool per
/// data-plane worker (see [`crate::workers`]), so that a connection is
/// only ever used by the thread whose runtime drives it, plus one for
/// everything off the data plane. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamClient {
    off_plane: PooledClient,
    per_worker: Arc<[PooledClient]>,
}

impl UpstreamClient {
    /// Sends `req` through this thread's pool.
    pub fn request(&self, req: http::Request<Full<Bytes>>) -> ResponseFuture {
        let pool = crate::workers::worker_index()
            .and_then(|w| self.per_worker.get(w))
            .unwrap_or(&self.off_plane);
        pool.request(req)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("cannot read CA file `{path}`: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("cannot build the TLS client: {0}")]
    Tls(String),
}

type ClientKey = (Option<PathBuf>, Duration, Duration);

/// Builds and caches upstream clients.
pub struct UpstreamClients {
    idle: Duration,
    workers: usize,
    // A std Mutex: it is held only to look up or insert a client, never
    // across an await, and only while a snapshot is being built.
    cache: Mutex<HashMap<ClientKey, UpstreamClient>>,
}

impl UpstreamClients {
    /// Clients with a pool for each of `workers` data-plane workers (0
    /// off the data plane, e.g. for the CLI).
    pub fn new(idle: Duration, workers: usize) -> Arc<Self> {
        Arc::new(UpstreamClients {
            idle,
            workers,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The client for a route with these settings, built once and reused.
    pub fn client(
        &self,
        ca_file: Option<&Path>,
        connect_timeout: Duration,
    ) -> Result<UpstreamClient, UpstreamSetupError> {
        let key = (ca_file.map(Path::to_path_buf), connect_timeout, self.idle);
        if let Ok(cache) = self.cache.lock() {
            if let Some(c) = cache.get(&key) {
                return Ok(c.clone());
            }
        }
        let connector = build_connector(ca_file, connect_timeout)?;
        let pool = || {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(self.idle)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(connector.clone())
        };
        let client = UpstreamClient {
            off_plane: pool(),
            per_worker: (0..self.workers).map(|_| pool()).collect(),
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, client.clone());
        }
        Ok(client)
    }
}

fn native_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let result = rustls_native_certs::load_native_certs();
        for cert in result.certs {
            // A system certificate rustls cannot parse is skipped: it could
            // never have verified anything.
            let _ = store.add(cert);
        }
        store
    })
}

fn build_connector(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, UpstreamSetupError> {
    let mut roots = native_roots().clone();
    // The route's own certificates, also trusted as themselves (`verify`).
    let mut own = Vec::new();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| UpstreamSetupError::CaFile {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| UpstreamSetupError::CaFile {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
            roots
                .add(cert.clone())
                .map_err(|e| UpstreamSetupError::CaFile {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?;
            own.push(cert);
            added += 1;
        }
        if added == 0 {
            return Err(UpstreamSetupError::CaFile {
                path: path.to_path_buf(),
                detail: "no PEM certificate in it".to_string(),
            });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamSetupError::Tls(e.to_string()))?;
    let tls = if own.is_empty() {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let verifier =
            verify::RouteVerifier::new(roots, own, provider).map_err(UpstreamSetupError::Tls)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

/// `Host` for `authority`, as the pool writes it: the default port is left
/// out. `None` only for an authority that is not a valid header value,
/// which a parsed URI's never is.
pub fn host_header(authority: &http::uri::Authority) -> Option<http::HeaderValue> {
    match authority.port_u16() {
        Some(80) => http::HeaderValue::from_str(authority.host()),
        _ => http::HeaderValue::from_str(authority.as_str()),
    }
    .ok()
}

/// What an operator does about a certificate the tool's name or trust
/// roots do not match.
const CERT_HINT: &str = "put the tool's CA certificate (or its self-signed certificate) \
     in the route's `ca_file`, and make sure the upstream URL's host is a name the certificate lists";

/// Describes a client error (the pool's or a lane's) for the agent by its
/// innermost cause; TLS failures are named as such.
pub fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut detail = e.to_string();
    while let Some(s) = source {
        detail = s.to_string();
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_) => format!("TLS error: {tls}; {CERT_HINT}"),
                _ => format!("TLS error: {tls}"),
            };
        }
        if s.to_string().contains("certificate") {
            return format!("TLS error: {s}; {CERT_HINT}");
        }
        source = s.source();
    }
    detail
}
