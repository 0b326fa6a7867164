//! Inbox sign-ins: a token typed once becomes a random session id in an
//! `HttpOnly` cookie. Sessions live in this process's memory only, so a
//! restart signs everyone out, and each replica signs its people in on its
//! own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use rand::Rng;

use crate::admin::constant_time_eq;
use crate::approval::Decider;
use crate::clock::now_ms;
use crate::config::{sha256, Config};

/// The cookie that carries the session id.
pub const COOKIE: &str = "airlock_session";

/// Who signed in. An approver is kept by id and looked up in the live
/// configuration on every request, so that removing an approver or
/// changing their groups takes effect at the next reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIn {
    Admin,
    Approver(String),
}

#[derive(Debug, Clone)]
pub struct Session {
    pub who: SignedIn,
    /// Carried by every state-changing form the signed-in person sends.
    pub csrf: String,
    expires_ms: i64,
}

impl Session {
    /// The decider the signed-in person acts as, if they are still
    /// configured.
    pub fn decider(&self, cfg: &Config) -> Option<Decider> {
        Session::decider_of(&self.who, cfg)
    }

    /// The decider `who` acts as, while the config still has them.
    pub fn decider_of(who: &SignedIn, cfg: &Config) -> Option<Decider> {
        match who {
            SignedIn::Admin => cfg.admin.token_sha256.map(|_| Decider {
                id: "admin".into(),
                groups: Vec::new(),
                any_group: true,
            }),
            SignedIn::Approver(id) => cfg.approvers.iter().find(|a| &a.id == id).map(|a| Decider {
                id: a.id.clone(),
                groups: a.groups.clone(),
                any_group: false,
            }),
        }
    }

    /// Whether `sent` is the CSRF token issued at sign-in.
    pub fn csrf_matches(&self, sent: &str) -> bool {
        constant_time_eq(self.csrf.as_bytes(), sent.as_bytes())
    }
}

/// The signed-in sessions, keyed by the SHA-256 of their id so that the
/// map never holds a live cookie value.
#[derive(Default)]
pub struct Sessions {
    // A std mutex: every critical section is a map lookup or insert, never
    // held across an await.
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Starts a session for `who`; answers the session id for the cookie.
    pub fn start(&self, who: SignedIn, ttl: Duration) -> String {
        let id = random_token();
        let now = now_ms();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let session = Session {
            who,
            csrf: random_token(),
            expires_ms: now.saturating_add(ttl_ms),
        };
        let mut map = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires_ms > now);
        map.insert(sha256(id.as_bytes()), session);
        id
    }

    /// The live session named by the request's cookie.
    pub fn find(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        let map = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&sha256(id.as_bytes()))
            .filter(|s| s.expires_ms > now_ms())
            .cloned()
    }

    /// Ends the session named by the request's cookie, if any.
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            let mut map = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&sha256(id.as_bytes()));
        }
    }
}

/// Who holds `token`: the admin or a configured approver.
pub fn token_owner(cfg: &Config, token: &str) -> Option<SignedIn> {
    let digest = sha256(token.trim().as_bytes());
    if cfg
        .admin
        .token_sha256
        .is_some_and(|t| constant_time_eq(&t, &digest))
    {
        return Some(SignedIn::Admin);
    }
    cfg.approvers
        .iter()
        .find(|a| constant_time_eq(&a.token_sha256, &digest))
        .map(|a| SignedIn::Approver(a.id.clone()))
}

/// The `Set-Cookie` value for session `id`; `Secure` when the inbox is
/// reached over TLS (`admin.public_url` is `https`).
pub fn set_cookie(id: &str, ttl: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        ttl.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", Duration::ZERO, secure)
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Unguessable: random bytes from the thread's CSPRNG, hex-encoded.
fn random_token() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_at_logout() {
        let sessions = Sessions::default();
        let id = sessions.start(SignedIn::Approver("alice".into()), Duration::from_secs(60));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("other=1; {COOKIE}={id}").parse().unwrap(),
        );
        let found = sessions.find(&headers).unwrap();
        assert_eq!(found.who, SignedIn::Approver("alice".into()));
        assert!(found.csrf_matches(&found.csrf.clone()));
        assert!(!found.csrf_matches("guess"));
        sessions.end(&headers);
        assert!(sessions.find(&headers).is_none());
    }

    #[test]
    fn an_expired_session_is_not_found() {
        let sessions = Sessions::default();
        let id = sessions.start(SignedIn::Admin, Duration::ZERO);
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("{COOKIE}={id}").parse().unwrap());
        assert!(sessions.find(&headers).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_only_over_tls() {
        let plain = set_cookie("abc", Duration::from_secs(60), false);
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(plain.contains("Path=/") && !plain.contains("Secure"));
        assert!(set_cookie("abc", Duration::from_secs(60), true).ends_with("; Secure"));
    }
}
