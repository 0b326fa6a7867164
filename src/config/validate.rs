//! The checks that turn the YAML shape of the configuration into validated
//! types, collecting every problem with its place in the file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_saphyr::Spanned;

use super::{
    parse_duration, sha256, AgentConfig, ApprovalSettings, ApproverConfig, AuditConfig,
    AuditOnFailure, AuditTarget, Protocol, RouteConfig, SourceProblem, StoreLocation,
    SyslogAddress, Timeouts, WebhookConfig,
};

use super::raw::{
    Env, RawAgent, RawApprovals, RawApprover, RawAudit, RawRoute, RawTimeouts, RawWebhook,
};

/// The local syslog socket, for `audit: syslog` without an address.
const DEFAULT_SYSLOG: &str = "/dev/log";
/// The OTLP/HTTP logs endpoint of a collector on the same host, the
/// OpenTelemetry default, for `audit: otlp` without a URL.
const DEFAULT_OTLP: &str = "http://localhost:4318/v1/logs";

/// Collects every problem instead of stopping at the first, so that one
/// `airlock check` run shows them all.
pub struct Validator {
    file: PathBuf,
    problems: Vec<SourceProblem>,
}

impl Validator {
    pub fn new(file: &Path) -> Self {
        Validator {
            file: file.to_path_buf(),
            problems: Vec::new(),
        }
    }

    pub fn finish(self) -> Vec<SourceProblem> {
        self.problems
    }

    pub(super) fn problem<T>(&mut self, at: &Spanned<T>, message: String) {
        self.problems.push(SourceProblem {
            file: self.file.clone(),
            line: SourceProblem::at(at.referenced.line()),
            column: SourceProblem::at(at.referenced.column()),
            message,
        });
    }

    pub fn problem_at_start(&mut self, message: String) {
        self.problems.push(SourceProblem {
            file: self.file.clone(),
            line: 1,
            column: 1,
            message,
        });
    }

    pub fn socket_addr(&mut self, s: &Spanned<Env>) -> Option<SocketAddr> {
        match s.value.0.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                let msg = format!(
                    "`{}` is not a socket address; write e.g. `127.0.0.1:8080`",
                    s.value.0
                );
                self.problem(s, msg);
                None
            }
        }
    }

    fn duration(&mut self, s: &Spanned<Env>) -> Option<Duration> {
        match parse_duration(&s.value.0) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(s, e);
                None
            }
        }
    }

    pub fn duration_or(&mut self, s: Option<&Spanned<Env>>, default: Duration) -> Duration {
        s.and_then(|s| self.duration(s)).unwrap_or(default)
    }

    pub fn byte_size(&mut self, s: &Spanned<Env>) -> Option<usize> {
        let t = s.value.0.trim();
        let (num, mult) = if let Some(n) = t.strip_suffix("MiB") {
            (n, 1024 * 1024)
        } else if let Some(n) = t.strip_suffix("KiB") {
            (n, 1024)
        } else if let Some(n) = t.strip_suffix('B') {
            (n, 1)
        } else {
            (t, 1)
        };
        match num
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
        {
            Some(n) if n > 0 => Some(n),
            _ => {
                let msg = format!("`{t}` is not a size; write e.g. `1MiB`, `64KiB` or `4096`");
                self.problem(s, msg);
                None
            }
        }
    }

    fn sha256_hex(&mut self, s: &Spanned<Env>) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        match hex::decode_to_slice(s.value.0.trim(), &mut out) {
            Ok(()) => Some(out),
            Err(_) => {
                self.problem(s, "expected 64 hexadecimal digits (a SHA-256)".to_string());
                None
            }
        }
    }

    pub fn store(&mut self, s: &Spanned<Env>, resolve: &dyn Fn(&str) -> PathBuf) -> StoreLocation {
        let url = s.value.0.as_str();
        if url == "sqlite::memory:" {
            StoreLocation::SqliteMemory
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            StoreLocation::Sqlite(resolve(path))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Parsed here, so that `airlock check` and `serve` agree; the
            // message never repeats the URL, which may hold a password.
            match url.parse::<tokio_postgres::Config>() {
                Ok(_) => StoreLocation::Postgres(url.to_string()),
                Err(e) => {
                    self.problem(s, format!("the PostgreSQL store URL does not parse: {e}"));
                    StoreLocation::SqliteMemory
                }
            }
        } else {
            let msg = format!("`{url}` is not a store; write `sqlite://PATH`, `sqlite::memory:` or `postgres://USER@HOST:PORT/DB`");
            self.problem(s, msg);
            StoreLocation::SqliteMemory
        }
    }

    pub fn agent(&mut self, a: RawAgent, seen: &mut HashSet<String>) -> Option<AgentConfig> {
        let id = a.id.value.0.clone();
        let mut ok = valid_entity_id(&mut *self, &a.id, "agent id");
        if !seen.insert(id.clone()) {
            self.problem(&a.id, format!("agent `{id}` is defined twice"));
            ok = false;
        }
        let key = match (&a.key, &a.key_sha256) {
            (Some(k), None) if !k.0.is_empty() => Some(sha256(k.0.as_bytes())),
            (None, Some(h)) => self.sha256_hex(h),
            (Some(_), Some(_)) => {
                self.problem(
                    &a.id,
                    format!("agent `{id}` has both `key` and `key_sha256`; keep one"),
                );
                None
            }
            _ => {
                self.problem(
                    &a.id,
                    format!("agent `{id}` needs a non-empty `key` or a `key_sha256`"),
                );
                None
            }
        };
        match key {
            Some(key_sha256) if ok => Some(AgentConfig {
                id,
                key_sha256,
                groups: a.groups.into_iter().map(|g| g.0).collect(),
                attributes: a.attributes,
            }),
            _ => None,
        }
    }

    pub fn timeouts(&mut self, t: Option<&RawTimeouts>) -> Timeouts {
        fn get<'a>(
            t: Option<&'a RawTimeouts>,
            f: fn(&'a RawTimeouts) -> Option<&'a Spanned<Env>>,
        ) -> Option<&'a Spanned<Env>> {
            t.and_then(f)
        }
        Timeouts {
            header_read: self.duration_or(get(t, |t| t.header_read.as_ref()), secs(10)),
            body_read: self.duration_or(get(t, |t| t.body_read.as_ref()), secs(30)),
            upstream_connect: self.duration_or(get(t, |t| t.upstream_connect.as_ref()), secs(5)),
            upstream_response: self.duration_or(get(t, |t| t.upstream_response.as_ref()), secs(60)),
            upstream_idle: self.duration_or(get(t, |t| t.upstream_idle.as_ref()), secs(90)),
            shutdown_grace: self.duration_or(get(t, |t| t.shutdown_grace.as_ref()), secs(30)),
        }
    }

    pub fn route(
        &mut self,
        r: RawRoute,
        timeouts: &Timeouts,
        resolve: &dyn Fn(&str) -> PathBuf,
        seen_names: &mut HashSet<String>,
        seen_prefixes: &mut HashSet<String>,
    ) -> Option<RouteConfig> {
        let name = r.name.value.0.clone();
        let mut ok = valid_entity_id(&mut *self, &r.name, "route name");
        if name.contains('/') {
            self.problem(&r.name, format!("route name `{name}` must not contain `/`"));
            ok = false;
        }
        if !seen_names.insert(name.clone()) {
            self.problem(&r.name, format!("route `{name}` is defined twice"));
            ok = false;
        }
        let case_insensitive = r.case_insensitive.unwrap_or(false);
        let mut prefix = normalize_prefix(&r.prefix.value.0);
        if case_insensitive {
            prefix = prefix.chars().flat_map(char::to_lowercase).collect();
        }
        if prefix.contains("..") || prefix.contains(['%', ';']) || prefix.contains("//") {
            self.problem(
                &r.prefix,
                format!("prefix `{prefix}` must be a plain path without `..`, `%`, `;` or `//`"),
            );
            ok = false;
        }
        if !seen_prefixes.insert(prefix.clone()) {
            self.problem(
                &r.prefix,
                format!("prefix `{prefix}` is used by two routes"),
            );
            ok = false;
        }
        let upstream = match r.upstream.value.0.parse::<http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http") | Some("https"))
                    && u.authority().is_some()
                    && u.query().is_none() =>
            {
                Some(u)
            }
            _ => {
                let msg = format!(
                    "upstream `{}` must be an `http://` or `https://` URL with a host and no query",
                    r.upstream.value.0
                );
                self.problem(&r.upstream, msg);
                None
            }
        };
        let protocol = match r.protocol.as_ref().map(|p| p.value.0.as_str()) {
            None | Some("http") => Protocol::Http,
            Some("mcp") => Protocol::Mcp,
            Some(other) => {
                let msg = format!("protocol `{other}` is unknown; use `http` or `mcp`");
                if let Some(p) = r.protocol.as_ref() {
                    self.problem(p, msg);
                }
                ok = false;
                Protocol::Http
            }
        };
        let mut headers = Vec::new();
        for (k, v) in &r.headers {
            match (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(&v.0),
            ) {
                (Ok(n), Ok(mut val)) => match super::not_injectable(n.as_str()) {
                    Some(why) => {
                        self.problem(
                            &r.name,
                            format!("route `{name}`: header `{n}` cannot be injected: {why}"),
                        );
                        ok = false;
                    }
                    None => {
                        val.set_sensitive(true);
                        headers.push((n, val));
                    }
                },
                _ => {
                    self.problem(
                        &r.name,
                        format!("route `{name}`: header `{k}` has an invalid name or value"),
                    );
                    ok = false;
                }
            }
        }
        let path_params = self.path_params(r.path_params.as_ref());
        let allowed_origins = self.allowed_origins(&name, &r, protocol);
        ok &= path_params.is_some() && allowed_origins.is_some();
        let connect_timeout =
            self.duration_or(r.connect_timeout.as_ref(), timeouts.upstream_connect);
        let response_timeout = self.duration_or(r.timeout.as_ref(), timeouts.upstream_response);
        match upstream {
            Some(upstream) if ok => Some(RouteConfig {
                name,
                prefix,
                upstream,
                protocol,
                headers,
                ca_file: r.ca_file.map(|c| resolve(&c.0)),
                connect_timeout,
                response_timeout,
                path_params: path_params.unwrap_or(false),
                case_insensitive,
                allowed_origins: allowed_origins.unwrap_or_default(),
                opaque_bodies: r.opaque_bodies,
            }),
            _ => None,
        }
    }

    /// `path_params`: `refuse` (the default) or `allow`; `None` when
    /// invalid.
    fn path_params(&mut self, v: Option<&Spanned<Env>>) -> Option<bool> {
        match v.map(|v| v.value.0.as_str()) {
            None | Some("refuse") => Some(false),
            Some("allow") => Some(true),
            Some(other) => {
                let msg = format!("path_params `{other}` is unknown; use `refuse` or `allow`");
                if let Some(v) = v {
                    self.problem(v, msg);
                }
                None
            }
        }
    }

    /// `allowed_origins`: `scheme://host[:port]` each, on MCP routes only;
    /// `None` when invalid.
    fn allowed_origins(
        &mut self,
        route: &str,
        r: &RawRoute,
        protocol: Protocol,
    ) -> Option<Vec<String>> {
        let Some(list) = &r.allowed_origins else {
            return Some(Vec::new());
        };
        if protocol != Protocol::Mcp {
            self.problem(
                &r.name,
                format!(
                    "route `{route}`: `allowed_origins` applies to `protocol: mcp` routes only"
                ),
            );
            return None;
        }
        let mut ok = true;
        for o in list {
            let text = &o.value.0;
            let bare = text
                .split_once("://")
                .is_some_and(|(_, rest)| !rest.contains(['/', '?', '#']));
            let valid = bare
                && text
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some());
            if !valid {
                self.problem(
                    o,
                    format!("origin `{text}` must be `scheme://host[:port]`, without a path"),
                );
                ok = false;
            }
        }
        ok.then(|| list.iter().map(|o| o.value.0.clone()).collect())
    }

    pub fn approvals(&mut self, a: Option<&RawApprovals>) -> ApprovalSettings {
        ApprovalSettings {
            wait: self.duration_or(a.and_then(|a| a.wait.as_ref()), secs(25)),
            expire: self.duration_or(a.and_then(|a| a.expire.as_ref()), secs(3600)),
            replay_window: self.duration_or(a.and_then(|a| a.replay_window.as_ref()), secs(300)),
            progress_interval: self.progress_interval(a.and_then(|a| a.progress_interval.as_ref())),
            callback_secret: a
                .and_then(|a| a.callback_secret.as_ref())
                .and_then(|s| self.whsec(s)),
            max_pending_per_agent: self
                .max_pending(a.and_then(|a| a.max_pending_per_agent.as_ref())),
        }
    }

    /// At least 1: a cap of 0 would hold nothing and refuse every gated call.
    fn max_pending(&mut self, n: Option<&Spanned<u32>>) -> u32 {
        match n {
            None => 100,
            Some(n) if n.value == 0 => {
                self.problem(
                    n,
                    "`approvals.max_pending_per_agent` must be at least 1".into(),
                );
                100
            }
            Some(n) => n.value,
        }
    }

    /// Between `100ms` (more often only floods the client) and `1h`; the
    /// point is to arrive before a client's request timeout.
    fn progress_interval(&mut self, s: Option<&Spanned<Env>>) -> Duration {
        let default = secs(5);
        let Some(s) = s else { return default };
        let Some(d) = self.duration(s) else {
            return default;
        };
        if d < Duration::from_millis(100) || d > secs(3600) {
            let msg = format!(
                "`approvals.progress_interval` `{}` must be between `100ms` and `1h`",
                s.value.0.trim()
            );
            self.problem(s, msg);
            return default;
        }
        d
    }

    pub fn audit(
        &mut self,
        a: &Spanned<RawAudit>,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> AuditConfig {
        let mut out = AuditConfig::default();
        let s = match &a.value {
            RawAudit::Short(p) => {
                out.target = match p.0.as_str() {
                    "stdout" | "-" => AuditTarget::Stdout,
                    "syslog" => AuditTarget::Syslog(SyslogAddress::Unix(DEFAULT_SYSLOG.into())),
                    "otlp" => AuditTarget::Otlp(DEFAULT_OTLP.to_string()),
                    path => AuditTarget::File(resolve(path)),
                };
                return out;
            }
            RawAudit::Full(s) => s,
        };
        let sink = match (&s.sink, &s.path, &s.address, &s.url) {
            (Some(k), ..) => k.0.as_str(),
            (None, Some(_), _, _) => "file",
            (None, None, Some(_), _) => "syslog",
            (None, None, None, Some(_)) => "otlp",
            (None, None, None, None) => "stdout",
        };
        let given = |field: &Option<Env>, default: &str| {
            field
                .as_ref()
                .map_or_else(|| default.to_string(), |f| f.0.clone())
        };
        out.target = match sink {
            "stdout" => AuditTarget::Stdout,
            "file" => match &s.path {
                Some(p) => AuditTarget::File(resolve(&p.0)),
                None => {
                    self.problem(a, "`audit.sink: file` needs `audit.path`".to_string());
                    AuditTarget::Stdout
                }
            },
            "syslog" => {
                let addr = given(&s.address, &format!("unix://{DEFAULT_SYSLOG}"));
                self.syslog_address(a, &addr)
                    .map_or(AuditTarget::Stdout, AuditTarget::Syslog)
            }
            "otlp" => match given(&s.url, DEFAULT_OTLP) {
                u if u.starts_with("http://") || u.starts_with("https://") => AuditTarget::Otlp(u),
                u => {
                    let msg = format!("`audit.url` `{u}` must start with `http://` or `https://`");
                    self.problem(a, msg);
                    AuditTarget::Stdout
                }
            },
            other => {
                let msg = format!(
                    "`audit.sink` `{other}` is not one of `file`, `stdout`, `syslog`, `otlp`"
                );
                self.problem(a, msg);
                AuditTarget::Stdout
            }
        };
        match s.on_failure.as_ref().map(|f| f.0.as_str()) {
            None | Some("deny") => {}
            Some("continue") => out.on_failure = AuditOnFailure::Continue,
            Some(other) => {
                let msg = format!("`audit.on_failure` `{other}` is not `deny` or `continue`");
                self.problem(a, msg);
            }
        }
        match s.buffer {
            None => {}
            Some(n @ 1..=10_000_000) => out.buffer = n as usize,
            Some(n) => {
                let msg = format!("`audit.buffer` `{n}` must be between 1 and 10000000 records");
                self.problem(a, msg);
            }
        }
        out
    }

    /// `udp://host:port`, `tcp://host:port` or `unix:///path`.
    fn syslog_address<T>(&mut self, at: &Spanned<T>, addr: &str) -> Option<SyslogAddress> {
        let parsed = if let Some(rest) = addr.strip_prefix("udp://") {
            rest.contains(':')
                .then(|| SyslogAddress::Udp(rest.to_string()))
        } else if let Some(rest) = addr.strip_prefix("tcp://") {
            rest.contains(':')
                .then(|| SyslogAddress::Tcp(rest.to_string()))
        } else if let Some(rest) = addr.strip_prefix("unix://") {
            rest.starts_with('/')
                .then(|| SyslogAddress::Unix(PathBuf::from(rest)))
        } else {
            None
        };
        if parsed.is_none() {
            let msg = format!(
                "`audit.address` `{addr}` is not a syslog address; write `udp://host:514`, `tcp://host:514` or `unix:///dev/log`"
            );
            self.problem(at, msg);
        }
        parsed
    }

    pub fn approver(&mut self, a: RawApprover) -> Option<ApproverConfig> {
        let id = a.id.value.0.clone();
        let token = match (&a.token, &a.token_sha256) {
            (Some(t), None) if !t.0.is_empty() => Some(sha256(t.0.as_bytes())),
            (None, Some(h)) => self.sha256_hex(h),
            _ => {
                self.problem(
                    &a.id,
                    format!("approver `{id}` needs exactly one of `token` or `token_sha256`"),
                );
                None
            }
        };
        let mut groups: Vec<String> = a.groups.into_iter().map(|g| g.0).collect();
        if a.operator {
            groups.push(super::OPERATORS_GROUP.to_string());
        }
        token.map(|token_sha256| ApproverConfig {
            id,
            token_sha256,
            groups,
            operator: a.operator,
        })
    }

    fn whsec(&mut self, s: &Spanned<Env>) -> Option<Vec<u8>> {
        match s
            .value
            .0
            .strip_prefix("whsec_")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        {
            Some(k) if !k.is_empty() => Some(k),
            _ => {
                self.problem(
                    s,
                    "callback secret must be `whsec_` followed by base64 key bytes".to_string(),
                );
                None
            }
        }
    }

    pub fn webhook(&mut self, w: RawWebhook) -> Option<WebhookConfig> {
        let url_ok = w.url.value.0.starts_with("http://") || w.url.value.0.starts_with("https://");
        if !url_ok {
            let msg = format!(
                "webhook url `{}` must be http:// or https://",
                w.url.value.0
            );
            self.problem(&w.url, msg);
        }
        let secret = match w
            .secret
            .value
            .0
            .strip_prefix("whsec_")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                self.problem(
                    &w.secret,
                    "webhook secret must be `whsec_` followed by base64 key bytes".to_string(),
                );
                None
            }
        };
        match secret {
            Some(secret) if url_ok => Some(WebhookConfig {
                url: w.url.value.0,
                secret,
                events: w.events.map(|e| e.into_iter().map(|e| e.0).collect()),
                max_attempts: w.max_attempts.unwrap_or(12).max(1),
            }),
            _ => None,
        }
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn valid_entity_id(v: &mut Validator, s: &Spanned<Env>, what: &str) -> bool {
    let id = &s.value.0;
    if id.is_empty() || id.chars().any(|c| c.is_control() || c == '"') {
        v.problem(
            s,
            format!("{what} `{id}` must be non-empty, without quotes or control characters"),
        );
        false
    } else {
        true
    }
}

fn normalize_prefix(p: &str) -> String {
    let trimmed = p.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}
