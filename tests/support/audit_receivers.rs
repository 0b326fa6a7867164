//! Receivers for the audit sinks that are not files, run inside the test:
//! syslog over UDP, TCP and a Unix datagram socket, and an OTLP/HTTP
//! collector that decodes the protobuf it is sent.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// One syslog message as received: `<PRI>1 TIME HOST APP PROCID MSGID - MSG`.
#[derive(Debug, Clone)]
pub struct SyslogLine {
    pub header: Vec<String>,
    pub record: serde_json::Value,
}

impl SyslogLine {
    fn parse(text: &str) -> SyslogLine {
        let mut parts = text.splitn(8, ' ');
        let header: Vec<String> = parts.by_ref().take(7).map(str::to_string).collect();
        let msg = parts.next().unwrap_or_default();
        let record = serde_json::from_str(msg)
            .unwrap_or_else(|e| panic!("syslog message is not a JSON record ({e}): {text}"));
        SyslogLine { header, record }
    }
}

/// Collects syslog messages from a background task.
#[derive(Clone, Default)]
pub struct SyslogSink {
    lines: Arc<Mutex<Vec<SyslogLine>>>,
}

impl SyslogSink {
    fn push(&self, text: &str) {
        self.lines.lock().unwrap().push(SyslogLine::parse(text));
    }

    pub fn lines(&self) -> Vec<SyslogLine> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a message for each of `ids` came in; returns them in
    /// that order.
    pub async fn wait_for(&self, ids: &[String], within: Duration) -> Vec<SyslogLine> {
        let deadline = Instant::now() + within;
        loop {
            let lines = self.lines();
            let found: Vec<SyslogLine> = ids
                .iter()
                .filter_map(|id| {
                    lines
                        .iter()
                        .find(|l| l.record["request_id"] == id.as_str())
                        .cloned()
                })
                .collect();
            if found.len() == ids.len() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} records reached syslog: {lines:?}",
                found.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A UDP receiver on 127.0.0.1: one message per datagram.
    pub async fn udp() -> (SyslogSink, SocketAddr) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let sink = SyslogSink::default();
        let s = sink.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = socket.recv(&mut buf).await {
                s.push(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        (sink, addr)
    }

    /// A Unix datagram receiver at `path`, as `/dev/log` is.
    pub fn unix(path: &Path) -> SyslogSink {
        let socket = tokio::net::UnixDatagram::bind(path).unwrap();
        let sink = SyslogSink::default();
        let s = sink.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = socket.recv(&mut buf).await {
                s.push(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        sink
    }

    /// A TCP receiver on `addr` reading octet-counted frames (RFC 6587).
    pub async fn tcp(addr: SocketAddr) -> SyslogSink {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let sink = SyslogSink::default();
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut r = BufReader::new(conn);
                    loop {
                        let mut len = Vec::new();
                        if r.read_until(b' ', &mut len).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let len: usize = String::from_utf8_lossy(&len).trim().parse().unwrap();
                        let mut msg = vec![0u8; len];
                        if r.read_exact(&mut msg).await.is_err() {
                            return;
                        }
                        s.push(&String::from_utf8_lossy(&msg));
                    }
                });
            }
        });
        sink
    }
}

/// An OTLP/HTTP logs endpoint that answers 503 to its first `fail_first`
/// requests, then decodes and keeps each `ExportLogsServiceRequest`.
#[derive(Clone)]
pub struct Collector {
    pub addr: SocketAddr,
    state: Arc<CollectorState>,
}

#[derive(Default)]
struct CollectorState {
    fail_first: AtomicUsize,
    requests: AtomicUsize,
    records: Mutex<Vec<LogRecord>>,
    content_types: Mutex<Vec<String>>,
}

impl Collector {
    pub async fn start(fail_first: usize) -> Collector {
        let state = Arc::new(CollectorState {
            fail_first: AtomicUsize::new(fail_first),
            ..CollectorState::default()
        });
        let app = Router::new()
            .route("/v1/logs", post(export))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1/logs", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn content_types(&self) -> Vec<String> {
        self.state.content_types.lock().unwrap().clone()
    }

    /// Waits until a record for each of `ids` came in (by its `request_id`
    /// attribute); returns them in that order.
    pub async fn wait_for(&self, ids: &[String], within: Duration) -> Vec<LogRecord> {
        let deadline = Instant::now() + within;
        loop {
            let records = self.state.records.lock().unwrap().clone();
            let found: Vec<LogRecord> = ids
                .iter()
                .filter_map(|id| {
                    records
                        .iter()
                        .find(|r| {
                            attribute(r, "request_id") == Some(AnyValue::StringValue(id.clone()))
                        })
                        .cloned()
                })
                .collect();
            if found.len() == ids.len() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} records reached the collector",
                found.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The value of a log record's attribute.
pub fn attribute(r: &LogRecord, key: &str) -> Option<AnyValue> {
    r.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.clone())
}

async fn export(
    State(state): State<Arc<CollectorState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let failing = state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    state.content_types.lock().unwrap().push(content_type);
    let Ok(request) = ExportLogsServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut records = state.records.lock().unwrap();
    for rl in request.resource_logs {
        for sl in rl.scope_logs {
            records.extend(sl.log_records);
        }
    }
    StatusCode::OK
}
