//! URL elicitation for held tool calls: a gate annotated `@elicit("url")`
//! sends the human at the agent's MCP client to the approval's inbox page,
//! where they sign in and decide. The decision stays the approver's: the
//! client's answer (accept, decline, cancel) is logged and otherwise ignored.
//!
//! Only a client that declared `capabilities.elicitation.url` is asked, and
//! only when `admin.public_url` names the page. The two revisions carry it
//! differently:
//!
//! - 2025-11-25 (`initialize` handshake): the capability is declared once
//!   per session, so Airlock remembers the sessions that declared it
//!   ([`ElicitingSessions`]). The held call's event stream carries an
//!   `elicitation/create` request (`mode: "url"`, an `elicitationId`) while
//!   it waits, and `notifications/elicitation/complete` once the approval is
//!   decided. The client's answer comes back as a POST that Airlock takes
//!   and never forwards: the server did not ask.
//! - 2026-07-28 (self-contained requests): the capability rides in each
//!   request's `_meta`, and a server cannot send requests of its own. The
//!   first attempt is answered with an `InputRequiredResult` carrying the
//!   `elicitation/create`; the client's retry names Airlock's
//!   `requestState` and then waits on the same approval as usual.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use http::HeaderValue;
use serde_json::{json, Value};

use crate::config::AdminConfig;
use crate::mcp::jsonrpc::Message;
use crate::policy::Gate;

/// The prefix of the JSON-RPC ids of Airlock's own `elicitation/create`
/// requests: an answer carrying one is for Airlock, not the server.
const REQUEST_ID_PREFIX: &str = "airlock-elicitation-";

/// The prefix of the `requestState` Airlock hands a 2026-07-28 client, so
/// that its retry is not asked again.
const REQUEST_STATE_PREFIX: &str = "airlock-elicitation:";

/// The `inputRequests` key of Airlock's elicitation (2026-07-28).
const INPUT_KEY: &str = "airlock-approval";

/// The `_meta` key of a 2026-07-28 request's client capabilities.
const CLIENT_CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";

/// How many sessions are remembered; the oldest is forgotten first.
const MAX_SESSIONS: usize = 65_536;

/// The 2025-11-25 sessions whose client declared URL elicitation at
/// `initialize`, by agent, route and `Mcp-Session-Id`.
///
/// Local to this replica: a session whose later requests land on another
/// replica is not asked there, and its held calls wait as for any client.
#[derive(Debug, Default)]
pub struct ElicitingSessions {
    // A std mutex: held only to insert, remove or look up one key, never
    // across an await.
    inner: Mutex<SessionSet>,
}

#[derive(Debug, Default)]
struct SessionSet {
    keys: HashSet<SessionKey>,
    /// Insertion order, for forgetting the oldest when full.
    order: VecDeque<SessionKey>,
}

type SessionKey = (String, String, Vec<u8>);

fn key(agent: &str, route: &str, session: &HeaderValue) -> SessionKey {
    (
        agent.to_string(),
        route.to_string(),
        session.as_bytes().to_vec(),
    )
}

// === impl ElicitingSessions ===

impl ElicitingSessions {
    pub fn remember(&self, agent: &str, route: &str, session: &HeaderValue) {
        let k = key(agent, route, session);
        let Ok(mut set) = self.inner.lock() else {
            return;
        };
        if set.keys.contains(&k) {
            return;
        }
        while set.order.len() >= MAX_SESSIONS {
            if let Some(old) = set.order.pop_front() {
                set.keys.remove(&old);
            }
        }
        set.keys.insert(k.clone());
        set.order.push_back(k);
    }

    pub fn forget(&self, agent: &str, route: &str, session: &HeaderValue) {
        let k = key(agent, route, session);
        if let Ok(mut set) = self.inner.lock() {
            if set.keys.remove(&k) {
                set.order.retain(|x| *x != k);
            }
        }
    }

    pub fn declared(&self, agent: &str, route: &str, session: &HeaderValue) -> bool {
        let k = key(agent, route, session);
        self.inner.lock().is_ok_and(|set| set.keys.contains(&k))
    }
}

/// Whether a `capabilities` object declares URL elicitation: an object
/// under `elicitation.url` (a bare `elicitation: {}` means form only).
pub fn declares_url(capabilities: Option<&Value>) -> bool {
    capabilities
        .and_then(|c| c.get("elicitation"))
        .and_then(|e| e.get("url"))
        .is_some_and(Value::is_object)
}

/// Whether an `initialize` request declares URL elicitation.
pub fn initialize_declares_url(msg: &Message) -> bool {
    msg.method() == Some("initialize")
        && declares_url(msg.params().and_then(|p| p.get("capabilities")))
}

/// Whether a 2026-07-28 request declares URL elicitation in its `_meta`.
pub fn request_declares_url(params: &Value) -> bool {
    declares_url(
        params
            .get("_meta")
            .and_then(|m| m.get(CLIENT_CAPABILITIES_META)),
    )
}

/// Whether a 2026-07-28 request is the retry of one Airlock already asked
/// about.
pub fn is_retry(params: &Value) -> bool {
    params
        .get("requestState")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with(REQUEST_STATE_PREFIX))
}

/// The client's answer to one of Airlock's own requests, when the POST is
/// exactly that: the `action` it gave (`accept`, `decline`, `cancel`, or
/// `error` when it refused the request).
pub fn answer_to_airlock(messages: &[Message], body: &[u8]) -> Option<String> {
    let [Message::Response { id }] = messages else {
        return None;
    };
    if !id
        .as_str()
        .is_some_and(|s| s.starts_with(REQUEST_ID_PREFIX))
    {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let action = match v.get("result") {
        Some(r) => r.get("action").and_then(Value::as_str).unwrap_or("unknown"),
        None => "error",
    };
    Some(action.to_string())
}

/// The `action` of the client's answer in a 2026-07-28 retry, for the log.
pub fn retry_action(params: &Value) -> Option<&str> {
    params
        .get("inputResponses")?
        .get(INPUT_KEY)?
        .get("action")?
        .as_str()
}

/// One elicitation sent for a held call.
#[derive(Debug, Clone)]
pub struct Elicitation {
    /// The `elicitationId` (2025-11-25), unique per attempt.
    pub id: String,
    pub url: String,
    pub message: String,
    hold_id: String,
}

// === impl Elicitation ===

impl Elicitation {
    /// The elicitation for a held call to `tool`, when one of its gates
    /// asks for it and `admin.public_url` gives the page.
    pub fn for_hold(
        admin: &AdminConfig,
        gates: &[Gate],
        hold_id: &str,
        tool: &str,
    ) -> Option<Self> {
        let asking: Vec<&Gate> = gates.iter().filter(|g| g.elicit).collect();
        if asking.is_empty() {
            return None;
        }
        let url = admin.approval_page(hold_id)?;
        let reasons = asking
            .iter()
            .map(|g| g.reason.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Some(Elicitation {
            id: uuid::Uuid::now_v7().to_string(),
            message: format!(
                "The call to tool `{tool}` needs a human's approval: {reasons}. Open the page to sign in and decide; the call waits until then."
            ),
            url,
            hold_id: hold_id.to_string(),
        })
    }

    /// The 2025-11-25 `elicitation/create` request.
    pub fn request(&self) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": format!("{REQUEST_ID_PREFIX}{}", self.id),
            "method": "elicitation/create",
            "params": {
                "mode": "url",
                "elicitationId": self.id,
                "message": self.message,
                "url": self.url,
            },
        })
    }

    /// The 2025-11-25 notice that the out-of-band step is done.
    pub fn complete(&self) -> Value {
        json!({
            "jsonrpc": "2.0",
            "method": "notifications/elicitation/complete",
            "params": {"elicitationId": self.id},
        })
    }

    /// The 2026-07-28 answer to the first attempt: the elicitation as an
    /// input request, and the state its retry echoes.
    pub fn input_required(&self, id: &Value) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "result": {
                "resultType": "input_required",
                "inputRequests": {
                    INPUT_KEY: {
                        "method": "elicitation/create",
                        "params": {"mode": "url", "message": self.message, "url": self.url},
                    },
                },
                "requestState": format!("{REQUEST_STATE_PREFIX}{}", self.hold_id),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_object_under_elicitation_url_declares_url_mode() {
        assert!(declares_url(Some(
            &json!({"elicitation": {"form": {}, "url": {}}})
        )));
        assert!(!declares_url(Some(&json!({"elicitation": {}}))));
        assert!(!declares_url(Some(&json!({"elicitation": {"url": true}}))));
        assert!(!declares_url(None));
    }

    #[test]
    fn sessions_are_remembered_per_agent_and_route_and_forgotten() {
        let s = ElicitingSessions::default();
        let id = HeaderValue::from_static("abc");
        s.remember("bot", "crm-mcp", &id);
        assert!(s.declared("bot", "crm-mcp", &id));
        assert!(!s.declared("other", "crm-mcp", &id));
        s.forget("bot", "crm-mcp", &id);
        assert!(!s.declared("bot", "crm-mcp", &id));
    }

    #[test]
    fn only_answers_to_airlock_ids_are_taken() {
        let ours =
            br#"{"jsonrpc":"2.0","id":"airlock-elicitation-1","result":{"action":"decline"}}"#;
        let msgs = crate::mcp::jsonrpc::parse(ours).unwrap().messages;
        let msgs: Vec<Message> = msgs.into_iter().map(Result::unwrap).collect();
        assert_eq!(answer_to_airlock(&msgs, ours).as_deref(), Some("decline"));
        let theirs = br#"{"jsonrpc":"2.0","id":"s-1","result":{"action":"accept"}}"#;
        let msgs = crate::mcp::jsonrpc::parse(theirs).unwrap().messages;
        let msgs: Vec<Message> = msgs.into_iter().map(Result::unwrap).collect();
        assert_eq!(answer_to_airlock(&msgs, theirs), None);
    }
}
