//! Server-sent events as MCP's Streamable HTTP uses them: splitting a
//! stream into events, reading an event's data, and writing one.

use bytes::Bytes;
use serde_json::Value;

/// The end of the first event in `buf` and the length of its separator.
pub fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Splits a byte stream into whole events, across chunk boundaries.
#[derive(Default)]
pub struct EventSplitter {
    buf: Vec<u8>,
}

impl EventSplitter {
    /// Takes more bytes; returns the events they complete, without their
    /// separators.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, sep)) = event_end(&self.buf) {
            let mut event: Vec<u8> = self.buf.drain(..end + sep).collect();
            event.truncate(end);
            out.push(event);
        }
        out
    }

    /// The unterminated last event, when the stream ends with one.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then_some(self.buf)
    }
}

/// An event's `data:` lines, joined with newlines.
pub fn data(event: &[u8]) -> String {
    String::from_utf8_lossy(event)
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One JSON-RPC message as a `message` event.
pub fn message(v: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {v}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_separators() {
        let stream = b"event: message\ndata: {\"a\":1}\n\nid: 2\r\ndata: {\"b\":\r\ndata: 2}\r\n\r\ndata: tail";
        let mut s = EventSplitter::default();
        let mut events = Vec::new();
        for chunk in stream.chunks(5) {
            events.extend(s.push(chunk));
        }
        assert_eq!(events.len(), 2);
        assert_eq!(data(&events[0]), "{\"a\":1}");
        assert_eq!(data(&events[1]), "{\"b\":\n2}");
        assert_eq!(data(&s.finish().unwrap()), "tail");
        let v: Value = serde_json::from_str(r#"{"x":"a\nb"}"#).unwrap();
        assert_eq!(
            &message(&v)[..],
            b"event: message\ndata: {\"x\":\"a\\nb\"}\n\n"
        );
    }
}
