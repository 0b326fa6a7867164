//! Real MCP peers for tests: the official Python SDK 2.x (server and
//! client) and `@modelcontextprotocol/server-everything`, provisioned on
//! first use under `tests/peers/` (see `support::peers`).

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::peers::{node_modules, Peer};
pub use super::peers::{peers_dir, python};
use super::{run_cli, AirlockBuilder};

/// A free loopback port, for peers that cannot report the port they bound.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A running MCP server process, killed on drop.
pub struct McpServer {
    peer: Peer,
    pub port: u16,
}

impl McpServer {
    /// The Python SDK server of `tests/peers/mcp_server.py`.
    pub fn python() -> McpServer {
        let port = free_port();
        let mut cmd = Command::new(python());
        cmd.arg(peers_dir().join("mcp_server.py"))
            .arg(port.to_string());
        Self::ready(Peer::spawn("Python MCP server", cmd), port)
    }

    /// `@modelcontextprotocol/server-everything` over Streamable HTTP.
    pub fn everything() -> McpServer {
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.arg(node_modules().join("@modelcontextprotocol/server-everything/dist/index.js"))
            .arg("streamableHttp")
            .env("PORT", port.to_string());
        Self::ready(Peer::spawn("server-everything MCP server", cmd), port)
    }

    fn ready(mut peer: Peer, port: u16) -> McpServer {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            peer.check_alive(&format!("before listening on port {port}"));
            if Instant::now() > deadline {
                peer.fail(&format!("did not listen on port {port} within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        McpServer { peer, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// `builder` with the MCP route `name` at `prefix` in front of `server`,
/// and the server's tools declared as an operator declares them: `airlock
/// schema pull` writes `policies/tools.cedarschema`.
pub fn with_pulled_tools(
    builder: AirlockBuilder,
    name: &str,
    prefix: &str,
    server: &McpServer,
) -> AirlockBuilder {
    let builder = builder.route_yaml(&format!(
        "  - name: {name}\n    prefix: {prefix}\n    upstream: {}\n    protocol: mcp",
        server.url()
    ));
    let config = builder.write();
    let (code, out, err) = run_cli(&["schema", "pull", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "schema pull failed: {out}\n{err}");
    builder
}

/// Runs the Python SDK client (`tests/peers/mcp_client.py`) with a plan and
/// returns what it saw.
pub fn python_client(url: &str, key: &str, plan: &Value) -> Value {
    let out = Command::new(python())
        .arg(peers_dir().join("mcp_client.py"))
        .arg(url)
        .arg(key)
        .arg(plan.to_string())
        .output()
        .expect("run the Python MCP client");
    assert!(
        out.status.success(),
        "python client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// [`python_client`] as the agent `AGENT_KEY`, off the test's runtime, so
/// that Airlock can be driven while the client waits.
pub async fn python_agent(url: &str, plan: Value) -> Value {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || python_client(&url, super::AGENT_KEY, &plan))
        .await
        .expect("the Python MCP client task")
}

/// Runs the TypeScript SDK client (`tests/peers/ts_client.mjs`) with a plan
/// and returns what it saw.
pub fn ts_client(url: &str, key: &str, plan: &Value) -> Value {
    node_modules();
    let out = Command::new("node")
        .arg(peers_dir().join("ts_client.mjs"))
        .arg(url)
        .arg(key)
        .arg(plan.to_string())
        .output()
        .expect("run the TypeScript MCP client");
    assert!(
        out.status.success(),
        "ts client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
