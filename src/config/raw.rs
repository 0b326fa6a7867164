//! The YAML shape of the configuration, as serde reads it; `validate`
//! turns it into validated types.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A string whose `${NAME}` references have been expanded from the
/// environment while parsing, so that errors point at the value.
#[derive(Debug, Clone)]
pub struct Env(pub String);

impl<'de> Deserialize<'de> for Env {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        expand_env(&s).map(Env).map_err(serde::de::Error::custom)
    }
}

fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
        let name = &after[..end];
        if name.is_empty() {
            return Err(format!("empty `${{}}` in `{s}`"));
        }
        let value =
            std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Spanned<Env>,
    pub tls: Option<RawTls>,
    pub admin: Option<RawAdmin>,
    pub policies: Option<Spanned<Env>>,
    pub store: Option<Spanned<Env>>,
    pub audit: Option<Spanned<RawAudit>>,
    pub agents: Option<Vec<RawAgent>>,
    pub routes: Option<Vec<RawRoute>>,
    pub limits: Option<RawLimits>,
    pub timeouts: Option<RawTimeouts>,
    pub approvals: Option<RawApprovals>,
    pub approvers: Option<Vec<RawApprover>>,
    pub pause: Option<RawPause>,
    pub webhooks: Option<Vec<RawWebhook>>,
    pub demo: Option<RawDemo>,
    pub sampling: Option<super::sampling::RawSampling>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Env,
    pub key: Env,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Spanned<Env>>,
    pub token: Option<Spanned<Env>>,
    pub public_url: Option<Spanned<Env>>,
    pub store_timeout: Option<Spanned<Env>>,
    pub session_ttl: Option<Spanned<Env>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub id: Spanned<Env>,
    pub key: Option<Env>,
    pub key_sha256: Option<Spanned<Env>>,
    #[serde(default)]
    pub groups: Vec<Env>,
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<Env>,
    pub prefix: Spanned<Env>,
    pub upstream: Spanned<Env>,
    pub protocol: Option<Spanned<Env>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Env>,
    pub ca_file: Option<Env>,
    pub connect_timeout: Option<Spanned<Env>>,
    pub timeout: Option<Spanned<Env>>,
    pub path_params: Option<Spanned<Env>>,
    pub case_insensitive: Option<bool>,
    pub allowed_origins: Option<Vec<Spanned<Env>>>,
    #[serde(default)]
    pub opaque_bodies: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body: Option<Spanned<Env>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub header_read: Option<Spanned<Env>>,
    pub body_read: Option<Spanned<Env>>,
    pub upstream_connect: Option<Spanned<Env>>,
    pub upstream_response: Option<Spanned<Env>>,
    pub upstream_idle: Option<Spanned<Env>>,
    pub shutdown_grace: Option<Spanned<Env>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    pub wait: Option<Spanned<Env>>,
    pub expire: Option<Spanned<Env>>,
    pub replay_window: Option<Spanned<Env>>,
    pub progress_interval: Option<Spanned<Env>>,
    pub callback_secret: Option<Spanned<Env>>,
    pub max_pending_per_agent: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprover {
    pub id: Spanned<Env>,
    pub token: Option<Env>,
    pub token_sha256: Option<Spanned<Env>>,
    #[serde(default)]
    pub groups: Vec<Env>,
    #[serde(default)]
    pub operator: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPause {
    pub approvers: Option<Env>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: Spanned<Env>,
    pub secret: Spanned<Env>,
    pub events: Option<Vec<Env>>,
    pub max_attempts: Option<u32>,
}

/// `audit: <path, stdout, syslog or otlp>`, or a mapping for other sinks and the
/// failure settings. Spanned as a whole: serde buffers an untagged enum's
/// values and loses the spans inside.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "`audit` to be a file path, `stdout`, or a mapping of `sink`, `path`, `address`, `url`, `on_failure` and `buffer`"
)]
pub enum RawAudit {
    Short(Env),
    Full(RawAuditSettings),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditSettings {
    pub sink: Option<Env>,
    pub path: Option<Env>,
    pub address: Option<Env>,
    pub url: Option<Env>,
    pub on_failure: Option<Env>,
    pub buffer: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    pub listen: Spanned<Env>,
}
