//! Reading a server-sent event stream of JSON-RPC messages, as a raw HTTP
//! client sees it.

use std::time::Duration;

use serde_json::Value;

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    /// The `event:` field (`None`: the default, `message`).
    pub name: Option<String>,
    pub data: Value,
}

/// The JSON messages of an event stream, one at a time.
pub struct EventReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// Every frame received so far, verbatim, for failure messages.
    pub raw: String,
}

impl EventReader {
    pub fn new(resp: reqwest::Response) -> EventReader {
        EventReader {
            resp,
            buf: Vec::new(),
            raw: String::new(),
        }
    }

    /// The next event's JSON data; `None` when the stream ends. Panics when
    /// nothing complete arrives within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        self.next_event(within).await.map(|e| e.data)
    }

    /// The next event with data, its name and id too; comments and
    /// events without data are skipped.
    pub async fn next_event(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(event).expect("utf-8 event");
                let field = |name: &str| -> Vec<&str> {
                    text.lines()
                        .filter_map(|l| l.strip_prefix(name))
                        .filter_map(|l| l.strip_prefix(':'))
                        .map(str::trim_start)
                        .collect()
                };
                let data = field("data");
                if data.is_empty() {
                    continue;
                }
                let joined = data.join("\n");
                return Some(SseEvent {
                    id: field("id").first().map(|s| s.to_string()),
                    name: field("event").first().map(|s| s.to_string()),
                    data: serde_json::from_str(&joined)
                        .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {joined}")),
                });
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {within:?}; so far: {}", self.raw))
                .expect("read the event stream");
            match chunk {
                Some(c) => {
                    self.raw.push_str(&String::from_utf8_lossy(&c));
                    self.buf.extend_from_slice(&c);
                }
                None => {
                    assert!(
                        self.buf.iter().all(u8::is_ascii_whitespace),
                        "the stream ended inside an event: {}",
                        self.raw
                    );
                    return None;
                }
            }
        }
    }
}
