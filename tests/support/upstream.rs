//! A real HTTP upstream for tests: records what reaches it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The connection it came on: which of Airlock's upstream connections.
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    shared: Shared,
}

impl Upstream {
    /// Starts the upstream on 127.0.0.1:0 in the current tokio runtime.
    ///
    /// - `/slow?ms=N` (or any path with `?slow_ms=N`) waits N ms before
    ///   the headers;
    /// - `/stream?events=N&gap_ms=M` sends N server-sent events M ms apart;
    /// - `/close` answers with `Connection: close`, ending the connection;
    /// - `/cut?bytes=N` answers 200, sends N bytes of its body and drops
    ///   the connection before the rest;
    /// - anything else echoes the request as JSON.
    pub async fn start() -> Upstream {
        Upstream::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    /// As [`Upstream::start`], listening on `addr` (a port a route already
    /// names).
    pub async fn start_on(addr: SocketAddr) -> Upstream {
        let shared = Shared::default();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn hits(&self) -> usize {
        self.shared.seen.lock().expect("lock").len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("lock").clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }
}

fn param(query: Option<&str>, name: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

async fn handle(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let seen = Seen {
        peer,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
    };
    shared.seen.lock().expect("lock").push(seen.clone());
    let query = parts.uri.query();
    if let Some(ms) = param(query, "slow_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if parts.uri.path().ends_with("/slow") {
        let ms = param(query, "ms").unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if parts.uri.path().ends_with("/cut") {
        let n = param(query, "bytes").unwrap_or(100);
        let part = bytes::Bytes::from(vec![b'x'; usize::try_from(n).unwrap_or(0)]);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
        tokio::spawn(async move {
            let _ = tx.send(Ok(part)).await;
            // Long enough for the part to be on its way first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tx
                .send(Err(std::io::Error::other(
                    "the upstream dropped the connection",
                )))
                .await;
        });
        return Response::builder()
            .header("content-length", (n * 10).to_string())
            .body(Body::from_stream(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .expect("response");
    }
    if parts.uri.path().ends_with("/stream") {
        let n = param(query, "events").unwrap_or(3);
        let gap = param(query, "gap_ms").unwrap_or(200);
        let stream = async_stream(n, gap);
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .expect("response");
    }
    let echoed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut resp = axum::Json(json!({
        "method": seen.method,
        "path": seen.path,
        "query": seen.query,
        "body": echoed,
    }))
    .into_response();
    if parts.uri.path().ends_with("/close") {
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
    }
    resp
}

fn async_stream(
    n: u64,
    gap_ms: u64,
) -> impl futures_core::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(gap_ms)).await;
            }
            let ev = bytes::Bytes::from(format!("data: event {i}\n\n"));
            if tx.send(Ok(ev)).await.is_err() {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A hand-written HTTP/1.1 upstream for connection-level scenarios. It
/// counts connections, requests and the connections its peer closed, and
/// can drop each connection right after its first answer without saying
/// so (no `Connection: close`), as an upstream with a short keep-alive
/// timeout does.
pub struct RawUpstream {
    pub addr: SocketAddr,
    counts: Arc<RawCounts>,
}

#[derive(Default)]
struct RawCounts {
    connections: AtomicUsize,
    requests: AtomicUsize,
    closed_by_peer: AtomicUsize,
}

impl RawUpstream {
    pub async fn keep_alive() -> RawUpstream {
        RawUpstream::start(false).await
    }

    pub async fn dropping_after_each_answer() -> RawUpstream {
        RawUpstream::start(true).await
    }

    async fn start(drop_after_answer: bool) -> RawUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw upstream");
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(RawCounts::default());
        let shared = counts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_raw(stream, shared.clone(), drop_after_answer));
            }
        });
        RawUpstream { addr, counts }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Connections the other side (Airlock) closed.
    pub fn closed_by_peer(&self) -> usize {
        self.counts.closed_by_peer.load(Ordering::SeqCst)
    }
}

async fn serve_raw(mut stream: tokio::net::TcpStream, counts: Arc<RawCounts>, drop_after: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request: headers, then `content-length` bytes of body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    counts.closed_by_peer.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + len);
        let n = counts.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let body = format!("{{\"request\":{n}}}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if drop_after {
            return;
        }
    }
}
