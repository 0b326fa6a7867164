//! MCP (Model Context Protocol) over Streamable HTTP: what Airlock needs to
//! judge JSON-RPC calls rather than URLs.
//!
//! - [`jsonrpc`] parses POST bodies (single messages and batches) and writes
//!   the answers Airlock gives itself.
//! - [`method`] maps each method to the Cedar action, resource and context
//!   a policy judges (`tools/call` → a per-tool action on
//!   `Tool::"<route>/<tool>"`).
//! - [`tools_list`] filters `tools/list` answers down to the tools the agent
//!   could call.
//! - [`sse`] splits and writes server-sent events.
//! - [`schema_gen`] turns the servers' JSON Schemas into Cedar declarations,
//!   and `cli::schema_pull` fetches them for `airlock schema pull`.
//!
//! The data-plane side (deciding, answering, forwarding) is
//! `proxy::mcp`; this module never touches a socket.

pub mod jsonrpc;
pub mod method;
pub mod schema_gen;
pub mod sse;
pub mod tools_list;

/// The header that carries a Streamable HTTP session: the server names it in
/// its answer to `initialize`, and the client sends it with every later
/// request (the upstream answers 404 for one it has ended).
pub const SESSION_ID: http::HeaderName = http::HeaderName::from_static("mcp-session-id");
