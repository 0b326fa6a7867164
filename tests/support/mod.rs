//! Builders for integration tests: a real upstream on port 0, and the real
//! `airlock` binary started on port 0 with a config written to a temp dir.
#![allow(
    dead_code,
    reason = "each scenario module uses its own part of the support"
)]

pub mod audit_receivers;
pub mod full_disk;
pub mod mcp;
pub mod peers;
pub mod pg_instance;
pub mod reload;
pub mod replicas;
pub mod sse;
pub mod tls;
pub mod upstream;
pub mod webhook;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use upstream::Upstream;

pub const AGENT_KEY: &str = "agent-key-1";
pub const OTHER_AGENT_KEY: &str = "agent-key-2";
pub const ADMIN_TOKEN: &str = "admin-token-1";
pub const APPROVER_TOKEN: &str = "approver-token-1";

/// The shipped schema, which most tests use unchanged.
pub fn shipped_schema() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/schema.cedarschema"
    ))
    .expect("shipped schema")
}

/// Builds an Airlock config and starts the binary.
pub struct AirlockBuilder {
    dir: tempfile::TempDir,
    policies: Vec<(String, String)>,
    schema: String,
    routes: Vec<String>,
    agents: Vec<String>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    audit: String,
    store: String,
}

impl AirlockBuilder {
    pub fn new() -> Self {
        AirlockBuilder {
            dir: tempfile::tempdir().expect("temp dir"),
            policies: Vec::new(),
            schema: shipped_schema(),
            routes: Vec::new(),
            agents: vec![
                format!("  - id: bot\n    key: {AGENT_KEY}\n    groups: [support]\n    attributes:\n      team: support"),
                format!("  - id: intruder\n    key: {OTHER_AGENT_KEY}\n    groups: []"),
            ],
            extra: Vec::new(),
            env: Vec::new(),
            audit: "audit: audit.jsonl".to_string(),
            store: "sqlite://airlock.db".to_string(),
        }
    }

    /// An environment variable for the `airlock` process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// A builder whose one policy permits every call.
    pub fn permitting_everything() -> Self {
        AirlockBuilder::new().policy("open.cedar", "permit(principal, action, resource);")
    }

    /// A route like [`Self::route`] (without injected headers) whose
    /// upstream must answer within `timeout` (e.g. `300ms`).
    pub fn route_with_timeout(
        self,
        name: &str,
        prefix: &str,
        upstream: &str,
        timeout: &str,
    ) -> Self {
        self.route_yaml(&format!(
            "  - name: {name}\n    prefix: {prefix}\n    upstream: {upstream}\n    timeout: {timeout}"
        ))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a `*.cedar` file.
    pub fn policy(mut self, file: &str, text: &str) -> Self {
        self.policies.push((file.to_string(), text.to_string()));
        self
    }

    pub fn schema(mut self, text: &str) -> Self {
        self.schema = text.to_string();
        self
    }

    /// A route `name` at `prefix` to `upstream` (a full URL).
    pub fn route(mut self, name: &str, prefix: &str, upstream: &str) -> Self {
        self.routes.push(format!(
            "  - name: {name}\n    prefix: {prefix}\n    upstream: {upstream}\n    headers:\n      x-upstream-secret: injected-secret"
        ));
        self
    }

    /// A route given as raw YAML list item (starting with `  - name:`).
    pub fn route_yaml(mut self, yaml: &str) -> Self {
        self.routes.push(yaml.to_string());
        self
    }

    /// The `audit:` setting as YAML (default `audit: audit.jsonl`).
    pub fn audit_yaml(mut self, yaml: &str) -> Self {
        self.audit = yaml.to_string();
        self
    }

    /// The `store:` URL (default `sqlite://airlock.db`, in the temp dir).
    pub fn store(mut self, url: &str) -> Self {
        self.store = url.to_string();
        self
    }

    /// Extra top-level YAML.
    pub fn yaml(mut self, yaml: &str) -> Self {
        self.extra.push(yaml.to_string());
        self
    }

    /// Writes config and policies; returns the config path.
    pub fn write(&self) -> PathBuf {
        let pol = self.dir.path().join("policies");
        std::fs::create_dir_all(&pol).expect("policies dir");
        std::fs::write(pol.join("schema.cedarschema"), &self.schema).expect("schema");
        for (f, t) in &self.policies {
            std::fs::write(pol.join(f), t).expect("policy");
        }
        let mut yaml = format!(
            "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n  token: {ADMIN_TOKEN}\npolicies: policies\nstore: {}\n{}\nagents:\n{}\n",
            self.store,
            self.audit,
            self.agents.join("\n")
        );
        if !self.routes.is_empty() {
            yaml.push_str(&format!("routes:\n{}\n", self.routes.join("\n")));
        }
        for e in &self.extra {
            yaml.push_str(e);
            yaml.push('\n');
        }
        if !self.extra.iter().any(|e| e.contains("timeouts:")) {
            yaml.push_str("timeouts:\n  shutdown_grace: 5s\n");
        }
        let path = self.dir.path().join("airlock.yaml");
        std::fs::write(&path, yaml).expect("config");
        path
    }

    pub fn start(self) -> Airlock {
        self.start_customized(|_| {})
    }

    /// Starts Airlock with `customize` applied to its command (e.g. limits
    /// set in the child before it runs).
    pub fn start_customized(self, customize: impl FnOnce(&mut Command)) -> Airlock {
        let config = self.write();
        Airlock::spawn(self.dir, config, &self.env, customize)
    }
}

impl Default for AirlockBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The path of the built binary.
pub fn airlock_bin() -> &'static str {
    env!("CARGO_BIN_EXE_airlock")
}

/// A running `airlock serve`.
pub struct Airlock {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: mpsc::Receiver<String>,
    scheme: &'static str,
}

impl Airlock {
    pub fn start_with(dir: tempfile::TempDir, config: PathBuf) -> Airlock {
        Airlock::spawn(dir, config, &[], |_| {})
    }

    fn spawn(
        dir: tempfile::TempDir,
        config: PathBuf,
        env: &[(String, String)],
        customize: impl FnOnce(&mut Command),
    ) -> Airlock {
        let mut command = Command::new(airlock_bin());
        command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        customize(&mut command);
        let mut child = command.spawn().expect("spawn airlock");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proxy = None;
        let mut admin = None;
        let mut scheme = "http";
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while proxy.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => panic!("airlock did not start; stderr:\n{}", seen.join("\n")),
            };
            if let Some(rest) = line.strip_prefix("airlock: proxy listening on ") {
                let (s, addr) = rest.split_once("://").expect("scheme");
                scheme = if s == "https" { "https" } else { "http" };
                proxy = Some(
                    addr.split(' ')
                        .next()
                        .expect("addr")
                        .parse()
                        .expect("proxy addr"),
                );
            }
            if let Some(rest) = line.strip_prefix("airlock: admin listening on http://") {
                admin = Some(rest.trim().parse().expect("admin addr"));
            }
            seen.push(line);
        }
        Airlock {
            dir,
            config,
            child,
            proxy: proxy.expect("proxy"),
            admin: admin.expect("admin"),
            stderr: rx,
            scheme,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.proxy, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// `GET` on the proxy as the test agent (`AGENT_KEY`).
    pub async fn agent_get(&self, path: &str) -> reqwest::Response {
        self.agent_get_via(&client(), path).await
    }

    /// `GET` as the agent through `client`: its connection, its protocol.
    pub async fn agent_get_via(&self, client: &reqwest::Client, path: &str) -> reqwest::Response {
        client
            .get(self.url(path))
            .header("authorization", bearer(AGENT_KEY))
            .send()
            .await
            .unwrap()
    }

    /// `GET` on the admin API as the holder of `token`; the JSON answer.
    pub async fn admin_get(&self, path: &str, token: &str) -> Value {
        client()
            .get(self.admin_url(path))
            .header("authorization", bearer(token))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// Audit records written so far.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until an audit record with this request id is written.
    pub fn audit_for(&self, request_id: &str) -> Value {
        self.audit_where(&format!("request id {request_id}"), |r| {
            r["request_id"] == request_id
        })
    }

    /// Waits until an audit record that `wanted` accepts is written (records
    /// are written off the request path, so one may land after the answer).
    pub fn audit_where(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(r) = self.audit().into_iter().find(|r| wanted(r)) {
                return r;
            }
            assert!(Instant::now() < deadline, "no audit record for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn sighup(&self) {
        let _ = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit; returns whether it exited cleanly.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Airlock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that talks to Airlock as an agent.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Runs `airlock` with arguments and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(airlock_bin())
        .args(args)
        .output()
        .expect("run airlock");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
