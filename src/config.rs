//! YAML configuration to validated types.
//!
//! This module reads files and nothing else of ours: it knows nothing of
//! Cedar, sockets or storage. Loading happens in two steps. `serde-saphyr`
//! parses the text into `raw` structs (rejecting duplicate keys and
//! remembering where each value was written), then [`Config::from_raw`] checks
//! every value and turns it into the types the rest of Airlock uses. Every
//! problem found is reported as a [`SourceProblem`] with `file:line:col`.
//!
//! `${NAME}` inside any string value expands from the environment; a missing
//! variable is a load error, never an empty string.

mod raw;
mod sampling;
mod validate;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use crate::duration::parse_duration;
pub use crate::problem::SourceProblem;
pub use sampling::{SampleRule, SamplingConfig};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<SourceProblem>),
}

impl ConfigError {
    /// Every problem as `file:line:col: message`.
    pub fn problems(&self) -> Vec<SourceProblem> {
        match self {
            ConfigError::Read { path, source } => vec![SourceProblem {
                file: path.clone(),
                line: 1,
                column: 1,
                message: format!("cannot read file: {source}"),
            }],
            ConfigError::Invalid(p) => p.clone(),
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside it are resolved
    /// against its directory.
    pub source: PathBuf,
    /// SHA-256 of the file's bytes, so reloads can tell "nothing changed".
    pub content_hash: String,
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub admin: AdminConfig,
    pub policies: PathBuf,
    pub store: StoreLocation,
    pub audit: AuditConfig,
    pub agents: Vec<AgentConfig>,
    pub routes: Vec<RouteConfig>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub approvals: ApprovalSettings,
    pub approvers: Vec<ApproverConfig>,
    /// Who decides the calls an operator's `hold` pause holds.
    pub pause: PauseSettings,
    pub webhooks: Vec<WebhookConfig>,
    pub demo: Option<DemoConfig>,
    /// Calls kept for review after the fact (docs/feedback.md).
    pub sampling: SamplingConfig,
}

/// The group every approver with `operator: true` is in, besides its own.
pub const OPERATORS_GROUP: &str = "airlock:operators";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseSettings {
    /// The group that decides calls held by a `hold` pause (the gate
    /// `airlock:paused`); [`OPERATORS_GROUP`] unless set.
    pub approvers: String,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// SHA-256 of the admin bearer token; `None` means the admin API only
    /// answers `/healthz` and `/metrics`.
    pub token_sha256: Option<[u8; 32]>,
    /// The URL approvers are sent to (webhook payloads); defaults to
    /// `http://<admin.listen>`.
    pub public_url: String,
    /// `admin.public_url` as written in the config; `None` when it was left
    /// out. Links meant for people (an approval's page, elicitation) are
    /// only given when someone chose the address people reach.
    pub configured_public_url: Option<String>,
    /// How long an approval endpoint waits for the store before it answers
    /// 503 (the store may be locked by another process).
    pub store_timeout: Duration,
    /// How long an inbox sign-in lasts.
    pub session_ttl: Duration,
}

impl AdminConfig {
    /// The inbox page of approval `id`, when `admin.public_url` is set.
    pub fn approval_page(&self, id: &str) -> Option<String> {
        self.configured_public_url
            .as_ref()
            .map(|base| format!("{base}/approvals/{id}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// `sqlite::memory:` keeps holds only for the life of the process.
    SqliteMemory,
    /// A PostgreSQL database shared by several replicas (the URL as
    /// written, `${ENV}` expanded).
    Postgres(String),
}

/// Where decision records go and what happens when they cannot be
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub target: AuditTarget,
    pub on_failure: AuditOnFailure,
    /// Records held in memory while the sink cannot take them.
    pub buffer: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    File(PathBuf),
    /// RFC 5424 messages, one record each.
    Syslog(SyslogAddress),
    /// OpenTelemetry logs over HTTP (protobuf), to this URL.
    Otlp(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogAddress {
    Udp(String),
    Tcp(String),
    Unix(PathBuf),
}

/// What a full audit buffer does to new calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOnFailure {
    /// Refuse them (503 `audit_unavailable`): no call runs unrecorded.
    Deny,
    /// Serve them and count the records that could not be kept.
    Continue,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            target: AuditTarget::Stdout,
            on_failure: AuditOnFailure::Deny,
            buffer: DEFAULT_AUDIT_BUFFER,
        }
    }
}

pub const DEFAULT_AUDIT_BUFFER: usize = 10_000;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub id: String,
    pub key_sha256: [u8; 32],
    pub groups: Vec<String>,
    /// Attribute values as JSON; the policy module maps them to Cedar.
    pub attributes: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Mcp,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so
/// they are never forwarded, in either direction.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Why a route may not inject header `name` (lower case), or `None` when
/// it may.
pub(crate) fn not_injectable(name: &str) -> Option<&'static str> {
    if HOP_BY_HOP.contains(&name) {
        Some("it is hop-by-hop, and Airlock never forwards those")
    } else if matches!(name, "host" | "content-length") {
        Some("Airlock sets it from the upstream URL and the exact body")
    } else if name == "x-request-id" || name.starts_with("airlock-") {
        Some("it is Airlock's own")
    } else {
        None
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    /// Normalized: starts with `/`, no trailing `/` (except the root `/`).
    pub prefix: String,
    pub upstream: http::Uri,
    pub protocol: Protocol,
    /// Headers added to every upstream request (credentials the agent never
    /// sees). Values never appear in audit records.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// `path_params: allow`: a `;` sent as is in the path is kept and shown
    /// to the policy, instead of refused.
    pub path_params: bool,
    /// `case_insensitive: true`: the path is folded to lower case for the
    /// policy and the upstream alike (the prefix is stored folded).
    pub case_insensitive: bool,
    /// MCP routes: the `Origin` values a request may carry (exact, without
    /// a path); a request with any other `Origin` is refused.
    pub allowed_origins: Vec<String>,
    /// Bodies that are neither JSON nor a form (multipart, compressed,
    /// undeclared) are forwarded as `body_kind: "opaque"`, unread, instead
    /// of being refused.
    pub opaque_bodies: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time allowed for an agent to send request headers; also the idle
    /// time allowed between requests on a keep-alive connection.
    pub header_read: Duration,
    pub body_read: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub upstream_idle: Duration,
    /// How long SIGTERM waits for in-flight requests before giving up.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    pub wait: Duration,
    pub expire: Duration,
    pub replay_window: Duration,
    /// How often a held MCP tool call answered as an event stream gets a
    /// `notifications/progress`, so the client keeps waiting.
    pub progress_interval: Duration,
    /// Decoded `whsec_` key that signed decision callbacks are checked
    /// against; `None` refuses signed callbacks.
    pub callback_secret: Option<Vec<u8>>,
    /// How many calls one agent may have awaiting a decision at once; past
    /// it the agent gets 429, so that it cannot flood the approvers.
    pub max_pending_per_agent: u32,
}

#[derive(Debug, Clone)]
pub struct ApproverConfig {
    pub id: String,
    pub token_sha256: [u8; 32],
    /// Its groups; an operator is also in [`OPERATORS_GROUP`].
    pub groups: Vec<String>,
    /// May pause and resume agents, routes and tools.
    pub operator: bool,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    /// Decoded key bytes of a `whsec_` secret.
    pub secret: Vec<u8>,
    /// `None` means every event.
    pub events: Option<Vec<String>>,
    pub max_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub listen: SocketAddr,
}

/// SHA-256 of a secret, as stored for keys and tokens.
/// `path` without `.` components, and without `dir/..` pairs whose `dir` is
/// not a symbolic link (through a link, `..` leads elsewhere, so those stay):
/// `config/../policies` is printed as `policies`, and means the same file.
pub fn tidy(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    // How many components at the end of `out` are ordinary names.
    let mut names = 0usize;
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if names > 0 && !out.is_symlink() => {
                out.pop();
                names -= 1;
            }
            Component::Normal(_) => {
                out.push(c);
                names += 1;
            }
            other => {
                out.push(other);
                names = 0;
            }
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

// === impl Config ===

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(path, &text)
    }

    /// Parses and validates configuration text; `path` names it in errors
    /// and anchors relative paths.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (SourceProblem::at(l.line()), SourceProblem::at(l.column())))
                .unwrap_or((1, 1));
            ConfigError::Invalid(vec![SourceProblem {
                file: path.to_path_buf(),
                line,
                column,
                message: first_line(&e.to_string()),
            }])
        })?;
        let content_hash = hex::encode(sha256(text.as_bytes()));
        Self::from_raw(path, content_hash, raw)
    }

    fn from_raw(
        path: &Path,
        content_hash: String,
        raw: raw::RawConfig,
    ) -> Result<Config, ConfigError> {
        let mut v = validate::Validator::new(path);
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let resolve = |p: &str| -> PathBuf {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                tidy(&base.join(p))
            }
        };

        let listen = v.socket_addr(&raw.listen);
        let admin_listen = raw
            .admin
            .as_ref()
            .and_then(|a| a.listen.as_ref())
            .map(|l| v.socket_addr(l))
            .unwrap_or_else(|| Some(SocketAddr::from(([127, 0, 0, 1], 9090))));
        let admin_token = raw
            .admin
            .as_ref()
            .and_then(|a| a.token.as_ref())
            .map(|t| sha256(t.value.0.as_bytes()));
        let public_url = raw
            .admin
            .as_ref()
            .and_then(|a| a.public_url.as_ref())
            .map(|u| u.value.0.trim_end_matches('/').to_string());
        let store_timeout = v.duration_or(
            raw.admin.as_ref().and_then(|a| a.store_timeout.as_ref()),
            Duration::from_secs(2),
        );
        let session_ttl = v.duration_or(
            raw.admin.as_ref().and_then(|a| a.session_ttl.as_ref()),
            Duration::from_secs(12 * 3600),
        );

        let store = match raw.store.as_ref() {
            None => StoreLocation::Sqlite(resolve("airlock.db")),
            Some(s) => v.store(s, &resolve),
        };
        let audit = match raw.audit.as_ref() {
            None => AuditConfig::default(),
            Some(a) => v.audit(a, &resolve),
        };

        let mut agents = Vec::new();
        let mut seen_agents = HashSet::new();
        for a in raw.agents.unwrap_or_default() {
            if let Some(agent) = v.agent(a, &mut seen_agents) {
                agents.push(agent);
            }
        }
        let mut seen_keys = HashSet::new();
        for a in &agents {
            if !seen_keys.insert(a.key_sha256) {
                v.problem_at_start(format!(
                    "agents `{}` and another agent share one key; every agent needs its own",
                    a.id
                ));
            }
        }

        let timeouts = v.timeouts(raw.timeouts.as_ref());
        let mut routes = Vec::new();
        let mut seen_routes = HashSet::new();
        let mut seen_prefixes = HashSet::new();
        for r in raw.routes.unwrap_or_default() {
            if let Some(route) =
                v.route(r, &timeouts, &resolve, &mut seen_routes, &mut seen_prefixes)
            {
                routes.push(route);
            }
        }

        let limits = Limits {
            max_body: raw
                .limits
                .as_ref()
                .and_then(|l| l.max_body.as_ref())
                .and_then(|m| v.byte_size(m))
                .unwrap_or(1024 * 1024),
        };
        let approvals = v.approvals(raw.approvals.as_ref());
        let sampling = v.sampling(raw.sampling.as_ref());
        let approvers = raw
            .approvers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| v.approver(a))
            .collect();
        let pause = PauseSettings {
            approvers: raw
                .pause
                .and_then(|p| p.approvers)
                .map_or_else(|| OPERATORS_GROUP.to_string(), |g| g.0),
        };
        let webhooks = raw
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .filter_map(|w| v.webhook(w))
            .collect();
        let demo = raw
            .demo
            .as_ref()
            .and_then(|d| v.socket_addr(&d.listen).map(|listen| DemoConfig { listen }));
        let tls = raw.tls.map(|t| TlsConfig {
            cert: resolve(&t.cert.0),
            key: resolve(&t.key.0),
        });
        let policies = resolve(
            raw.policies
                .as_ref()
                .map(|p| p.value.0.as_str())
                .unwrap_or("policies"),
        );

        let problems = v.finish();
        match (listen, admin_listen) {
            (Some(listen), Some(admin_listen)) if problems.is_empty() => Ok(Config {
                source: path.to_path_buf(),
                content_hash,
                listen,
                tls,
                admin: AdminConfig {
                    listen: admin_listen,
                    token_sha256: admin_token,
                    public_url: public_url
                        .clone()
                        .unwrap_or_else(|| format!("http://{admin_listen}")),
                    configured_public_url: public_url,
                    store_timeout,
                    session_ttl,
                },
                policies,
                store,
                audit,
                agents,
                routes,
                limits,
                timeouts,
                approvals,
                approvers,
                pause,
                webhooks,
                demo,
                sampling,
            }),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }

    /// The settings that a reload cannot change, for telling the operator
    /// that a restart is needed.
    pub fn restart_only_differences(&self, other: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.listen != other.listen {
            out.push("listen");
        }
        if self.admin.listen != other.admin.listen {
            out.push("admin.listen");
        }
        if self.store != other.store {
            out.push("store");
        }
        if self.audit != other.audit {
            out.push("audit");
        }
        if self.policies != other.policies {
            out.push("policies");
        }
        if self.tls.as_ref().map(|t| (&t.cert, &t.key))
            != other.tls.as_ref().map(|t| (&t.cert, &t.key))
        {
            out.push("tls");
        }
        out
    }
}

/// The parser's message without its own location prefix (we print ours).
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = match line.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(line, |(_, msg)| msg),
        None => line,
    };
    line.split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(line)
        .to_string()
}

#[cfg(test)]
mod tests;
