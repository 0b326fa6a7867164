//! The `otlp` sink: OpenTelemetry logs over HTTP, protobuf-encoded
//! (`ExportLogsServiceRequest`), to a collector's `/v1/logs` URL. Each
//! record is one log record: its JSON line as the body and each of its
//! fields as an attribute. A batch counts as delivered only on a 2xx
//! answer; every other answer (or none) is retried, since a collector that
//! is misconfigured or overloaded is a sink that cannot take records.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use super::output::{Pending, Rejected};
use super::AuditError;

/// Records per export request.
const BATCH: usize = 512;
const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `SEVERITY_NUMBER_INFO`.
const INFO: i32 = 9;

pub(super) struct OtlpOut {
    url: http::Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl OtlpOut {
    pub fn new(url: &str) -> Result<OtlpOut, AuditError> {
        let bad_url = |detail: String| AuditError::Url {
            url: url.to_string(),
            detail,
        };
        let parsed: http::Uri = url.parse().map_err(|e| bad_url(format!("{e}")))?;
        // The system's trust roots; none found is no error for an
        // `http://` collector, and an `https://` one then fails to verify,
        // visibly, on the first export.
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad_url(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(OtlpOut {
            url: parsed,
            client,
        })
    }

    pub fn describe(&self) -> String {
        self.url.to_string()
    }

    /// Sends the buffer in batches; a collector's partial success names
    /// records it refused for good, which are counted as dropped.
    pub async fn send(&mut self, p: &mut Pending) -> std::io::Result<Rejected> {
        let mut rejected = 0;
        while !p.is_empty() {
            let n = p.len().min(BATCH);
            let body = encode(p.first(n));
            let req = http::Request::post(self.url.clone())
                .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                .body(Full::new(Bytes::from(body)))
                .map_err(std::io::Error::other)?;
            let resp = tokio::time::timeout(TIMEOUT, self.client.request(req))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
                .map_err(std::io::Error::other)?;
            let status = resp.status();
            // Read to the end, so the connection goes back to the pool.
            let answer =
                tokio::time::timeout(TIMEOUT, http_body_util::BodyExt::collect(resp.into_body()))
                    .await;
            if !status.is_success() {
                return Err(std::io::Error::other(format!(
                    "the collector answered {status}"
                )));
            }
            if let Ok(Ok(body)) = answer {
                rejected += refused(&body.to_bytes());
            }
            p.pop(n);
        }
        Ok(rejected)
    }
}

/// How many records a collector's answer says it refused (`partial_success`).
fn refused(answer: &[u8]) -> Rejected {
    ExportLogsServiceResponse::decode(answer)
        .ok()
        .and_then(|r| r.partial_success)
        .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0))
}

/// One export request for `lines`, each a JSON object.
fn encode<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let observed = nanos(SystemTime::now());
    let log_records = lines.map(|line| record(line, observed)).collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", text("airlock"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "airlock.audit".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    request.encode_to_vec()
}

fn record(line: &[u8], observed: u64) -> LogRecord {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line).unwrap_or_default();
    let time = fields
        .get("time")
        .and_then(|t| t.as_str())
        .and_then(parse_rfc3339)
        .unwrap_or(observed);
    let event_name = fields
        .get("event")
        .and_then(|e| e.as_str())
        .map(|e| format!("airlock.{e}"))
        .unwrap_or_default();
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: observed,
        severity_number: INFO,
        severity_text: "INFO".into(),
        body: Some(text(&String::from_utf8_lossy(line))),
        attributes: fields
            .into_iter()
            .filter_map(|(k, v)| {
                Some(KeyValue {
                    value: Some(value(v)?),
                    key: k,
                    ..Default::default()
                })
            })
            .collect(),
        event_name,
        ..Default::default()
    }
}

fn value(v: serde_json::Value) -> Option<AnyValue> {
    use any_value::Value as V;
    let v = match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => V::BoolValue(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => V::StringValue(s),
        serde_json::Value::Array(a) => V::ArrayValue(ArrayValue {
            values: a.into_iter().filter_map(value).collect(),
        }),
        serde_json::Value::Object(o) => V::KvlistValue(KeyValueList {
            values: o
                .into_iter()
                .filter_map(|(k, v)| Some(kv(&k, value(v)?)))
                .collect(),
        }),
    };
    Some(AnyValue { value: Some(v) })
}

fn text(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Nanoseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form
/// [`super::rfc3339`] writes.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        std::str::from_utf8(b.get(from..from + len)?)
            .ok()?
            .parse()
            .ok()
    };
    let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hh, mm, ss, ms) = (num(11, 2)?, num(14, 2)?, num(17, 2)?, num(20, 3)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs * 1000 + ms).ok()?.checked_mul(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_times_read_back_as_written() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_614_265_330_123);
        assert_eq!(
            parse_rfc3339(&crate::clock::rfc3339(t)),
            Some(1_614_265_330_123_000_000)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.007Z"),
            Some(951_782_400_007_000_000)
        );
        assert_eq!(parse_rfc3339("not a time"), None);
    }

    #[test]
    fn fields_become_attributes() {
        let line = br#"{"time":"2021-02-25T15:02:10.123Z","event":"decision","policies":["a"],"status":200,"duration_ms":1.5,"shadow":{"verdict":"deny"}}"#;
        let r = record(line, 7);
        assert_eq!(r.time_unix_nano, 1_614_265_330_123_000_000);
        assert_eq!(r.event_name, "airlock.decision");
        let keys: Vec<&str> = r.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "time",
                "event",
                "policies",
                "status",
                "duration_ms",
                "shadow"
            ]
        );
        let status = r.attributes[3].value.as_ref().and_then(|v| v.value.clone());
        assert_eq!(status, Some(any_value::Value::IntValue(200)));
    }
}
