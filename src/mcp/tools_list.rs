//! Filtering `tools/list` answers, in JSON or as server-sent events, so an
//! agent sees only the tools it could call (allowed or held).
//!
//! A filtered result is marked `cacheScope: private`, so no cache shares one
//! agent's list with another. A result whose `resultType` is not `complete`
//! (a multi-round-trip step) carries no tools and passes intact.

use serde_json::{json, Value};

use super::method::tool_call;
use super::sse::event_end;
use crate::policy::PolicySnapshot;

/// Who the list is filtered for, and which response ids answer `tools/list`.
pub struct ListFilter<'a> {
    pub policy: &'a PolicySnapshot,
    pub agent: &'a str,
    pub route: &'a str,
    /// The `tools/list` request's common context (`method`, `path`,
    /// `query`, `headers`): a tool is listed by what a call sent the same
    /// way could get.
    pub common: &'a serde_json::Map<String, Value>,
    /// Ids of the `tools/list` requests still waiting for their answer.
    pub pending: Vec<Value>,
    /// Tools removed so far, for the audit record.
    pub hidden: Vec<String>,
}

impl ListFilter<'_> {
    pub fn done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Rewrites one JSON-RPC message or batch in place.
    pub fn rewrite(&mut self, message: &mut Value) {
        match message {
            Value::Array(items) => items.iter_mut().for_each(|m| self.rewrite_one(m)),
            m => self.rewrite_one(m),
        }
    }

    fn rewrite_one(&mut self, message: &mut Value) {
        let Some(id) = message.get("id") else {
            return;
        };
        let Some(at) = self.pending.iter().position(|p| p == id) else {
            return;
        };
        if message.get("method").is_some() {
            return;
        }
        self.pending.swap_remove(at);
        let Some(result) = message.get_mut("result") else {
            return;
        };
        let kind = result.get("resultType").and_then(Value::as_str);
        if kind.is_some_and(|k| k != "complete") {
            return;
        }
        if let Some(Value::Array(tools)) = result.get_mut("tools") {
            let before = std::mem::take(tools);
            for tool in before {
                let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
                if self.visible(name) {
                    tools.push(tool);
                } else {
                    self.hidden.push(name.to_string());
                }
            }
        }
        if let Value::Object(r) = result {
            r.insert("cacheScope".into(), json!("private"));
        }
    }

    fn visible(&self, tool: &str) -> bool {
        if tool.is_empty() {
            return false;
        }
        let call = tool_call(self.policy, self.agent, self.route, tool, None, self.common);
        // A tool that cannot be judged is not shown: never fail open.
        self.policy.visibility(&call).is_ok_and(|v| v.visible)
    }

    /// Rewrites a whole JSON body; `None` when it is not JSON.
    pub fn rewrite_json(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let mut v: Value = serde_json::from_slice(body).ok()?;
        self.rewrite(&mut v);
        serde_json::to_vec(&v).ok()
    }
}

/// Rewrites a server-sent event stream event by event.
pub struct SseRewriter {
    buf: Vec<u8>,
}

impl SseRewriter {
    pub fn new() -> Self {
        SseRewriter { buf: Vec::new() }
    }

    /// Takes more bytes of the stream; returns the complete events so far,
    /// rewritten.
    pub fn push(&mut self, chunk: &[u8], filter: &mut ListFilter) -> Vec<u8> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, sep)) = event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end + sep).collect();
            out.extend(rewrite_event(&event[..end], filter));
            out.extend_from_slice(b"\n\n");
        }
        out
    }

    /// What is left when the stream ends: an unterminated last event.
    pub fn finish(self, filter: &mut ListFilter) -> Vec<u8> {
        if self.buf.is_empty() {
            return Vec::new();
        }
        let mut out = rewrite_event(&self.buf, filter);
        out.extend_from_slice(b"\n\n");
        out
    }
}

impl Default for SseRewriter {
    fn default() -> Self {
        Self::new()
    }
}

fn rewrite_event(event: &[u8], filter: &mut ListFilter) -> Vec<u8> {
    let text = String::from_utf8_lossy(event);
    let mut data = Vec::new();
    let mut other = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("data:") {
            Some(d) => data.push(d.strip_prefix(' ').unwrap_or(d)),
            None => other.push(line),
        }
    }
    let joined = data.join("\n");
    let Ok(mut v) = serde_json::from_str::<Value>(&joined) else {
        return event.to_vec();
    };
    let before = filter.pending.len();
    filter.rewrite(&mut v);
    if filter.pending.len() == before {
        return event.to_vec();
    }
    let mut out = other.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::policy::{Directory, PrincipalSpec};

    fn snapshot() -> (tempfile::TempDir, PolicySnapshot) {
        let dir = tempfile::tempdir().unwrap();
        let schema = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policies/schema.cedarschema"
        ))
        .unwrap();
        std::fs::write(dir.path().join("schema.cedarschema"), schema).unwrap();
        std::fs::write(
            dir.path().join("p.cedar"),
            "permit (principal, action == Action::\"call_tool\", resource == Tool::\"crm/ok\");",
        )
        .unwrap();
        let directory = Directory {
            agents: vec![PrincipalSpec {
                id: "bot".into(),
                groups: vec![],
                attributes: BTreeMap::new(),
            }],
            routes: vec!["crm".into()],
            config_hash: String::new(),
        };
        let snap = PolicySnapshot::load(dir.path(), &directory).unwrap();
        (dir, snap)
    }

    static NO_COMMON: std::sync::LazyLock<serde_json::Map<String, Value>> =
        std::sync::LazyLock::new(serde_json::Map::new);

    fn filter(snap: &PolicySnapshot) -> ListFilter<'_> {
        ListFilter {
            policy: snap,
            agent: "bot",
            route: "crm",
            common: &NO_COMMON,
            pending: vec![json!(1)],
            hidden: Vec::new(),
        }
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"},{"name":"secret"}],"cacheScope":"public"}}"#;

    #[test]
    fn json_lists_are_filtered_and_made_private() {
        let (_d, snap) = snapshot();
        let mut f = filter(&snap);
        let out: Value = serde_json::from_slice(&f.rewrite_json(LIST.as_bytes()).unwrap()).unwrap();
        assert_eq!(out["result"]["tools"], json!([{"name": "ok"}]));
        assert_eq!(out["result"]["cacheScope"], "private");
        assert_eq!(f.hidden, vec!["secret".to_string()]);
        assert!(f.done());
    }

    #[test]
    fn incomplete_results_and_other_ids_pass_intact() {
        let (_d, snap) = snapshot();
        let mut f = filter(&snap);
        let step = r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","tools":[{"name":"secret"}]}}"#;
        let out: Value = serde_json::from_slice(&f.rewrite_json(step.as_bytes()).unwrap()).unwrap();
        assert_eq!(out, serde_json::from_str::<Value>(step).unwrap());
        let mut f = filter(&snap);
        let other = LIST.replace("\"id\":1", "\"id\":2");
        let out: Value =
            serde_json::from_slice(&f.rewrite_json(other.as_bytes()).unwrap()).unwrap();
        assert_eq!(out["result"]["tools"].as_array().unwrap().len(), 2);
        assert!(!f.done());
    }

    #[test]
    fn events_are_rewritten_across_chunk_boundaries() {
        let (_d, snap) = snapshot();
        let mut f = filter(&snap);
        let stream = format!(
            "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\n\nid: e2\nevent: message\ndata: {LIST}\r\n\r\n"
        );
        let mut sse = SseRewriter::new();
        let mut out = Vec::new();
        for chunk in stream.as_bytes().chunks(7) {
            out.extend(sse.push(chunk, &mut f));
        }
        out.extend(sse.finish(&mut f));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("notifications/progress"), "{text}");
        assert!(text.contains("id: e2\nevent: message\ndata: {"), "{text}");
        assert!(
            !text.contains("secret") && text.contains("\"private\""),
            "{text}"
        );
        assert!(f.done());
    }
}
