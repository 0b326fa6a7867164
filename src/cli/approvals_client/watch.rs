//! `airlock watch`: the live view as a table, one row per event, as
//! `kubectl get -w` prints changes.

use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

use super::{query_value, ApprovalsClient, ClientError};
use crate::mcp::sse::{data, EventSplitter};

/// What to watch.
#[derive(Debug, Default)]
pub struct WatchFilter {
    pub agent: Option<String>,
    pub route: Option<String>,
    pub verdict: Option<String>,
}

impl WatchFilter {
    fn query(&self) -> String {
        let pairs: Vec<String> = [
            ("agent", &self.agent),
            ("route", &self.route),
            ("verdict", &self.verdict),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", query_value(v))))
        .collect();
        if pairs.is_empty() {
            String::new()
        } else {
            format!("?{}", pairs.join("&"))
        }
    }
}

/// The table's header.
pub const HEADER: &str = "TIME                      EVENT              AGENT          ROUTE      ACTION                     VERDICT   POLICIES";

impl ApprovalsClient {
    /// Follows `GET /v1/events` until the stream ends, giving `line` the
    /// header and then one row per event.
    pub async fn watch(
        &self,
        filter: &WatchFilter,
        mut line: impl FnMut(&str),
    ) -> Result<(), ClientError> {
        let path = format!("/v1/events{}", filter.query());
        let resp = self
            .send(Method::GET, &path, Some("text/event-stream"), None)
            .await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let text = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
            let message = v["message"].as_str().unwrap_or("no message").to_string();
            return Err(ClientError::Refused { status, message });
        }
        line(HEADER);
        let mut events = EventSplitter::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.unreachable(e.to_string()))?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            for event in events.push(&chunk) {
                if let Some(row) = row(&event) {
                    line(&row);
                }
            }
        }
        Ok(())
    }
}

/// One table row for a raw event, or `None` for a comment.
fn row(event: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(event);
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("event:"))
        .map(str::trim)
        .unwrap_or("message");
    let payload = data(event);
    if payload.is_empty() {
        return None;
    }
    let v: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
    if name == "lagged" {
        return Some(format!(
            "-- fell behind: {} events missed --",
            v["missed"].as_u64().unwrap_or(0)
        ));
    }
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let action = match v["resource"].as_str() {
        Some(r) if r.starts_with("Tool::") => r
            .trim_start_matches("Tool::\"")
            .trim_end_matches('"')
            .to_string(),
        _ => s("action"),
    };
    let policies: Vec<&str> = v["policies"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Some(format!(
        "{:<25} {:<18} {:<14} {:<10} {:<26} {:<9} {}",
        s("time"),
        name,
        s("agent"),
        s("route"),
        action,
        s("verdict"),
        if policies.is_empty() {
            "-".to_string()
        } else {
            policies.join(",")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_row_and_a_heartbeat_none() {
        let event = b"id: 3\nevent: decision\ndata: {\"time\":\"2026-12-06T01:00:00.000Z\",\"agent\":\"bot\",\"route\":\"crm\",\"action\":\"DELETE\",\"verdict\":\"deny\",\"policies\":[\"no-deletes\"]}\n\n";
        let r = row(event).unwrap();
        assert!(
            r.contains("decision") && r.contains("DELETE") && r.contains("no-deletes"),
            "{r}"
        );
        assert_eq!(row(b": heartbeat\n\n"), None);
        let lagged = row(b"event: lagged\ndata: {\"missed\":7}\n\n").unwrap();
        assert!(lagged.contains("7 events missed"), "{lagged}");
    }
}
