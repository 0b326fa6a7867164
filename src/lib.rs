//! # Airlock
//!
//! A policy-as-code gateway that puts humans in the loop of AI agents. It is
//! a reverse proxy between agents and the tools they call; every call is
//! judged by Cedar policies and is **allowed** (forwarded), **denied**
//! (refused with reasons the agent can act on) or **held** (kept for a
//! human).
//!
//! ## A tour
//!
//! - [`config`] reads YAML into validated types. It reads files and uses
//!   nothing else of ours.
//! - [`policy`] is the only module that speaks Cedar: it loads and validates
//!   the policies, builds the entities, and turns Cedar's Allow/Deny into a
//!   [`policy::Verdict`] of allow, deny or hold. It uses nothing else of ours
//!   but [`duration`].
//! - [`upstream`] builds pooled HTTP(S) clients for the tools, a pool per
//!   data-plane worker, and the paired lanes that give an HTTP/1.1 agent
//!   connection an upstream connection of its own.
//! - [`workers`] runs the data plane: one single-threaded runtime per core,
//!   each connection pinned to one of them.
//! - [`snapshot`] joins config, policies and clients into one immutable
//!   [`snapshot::GatewaySnapshot`] that a request is judged by from start to
//!   end.
//! - [`mcp`] understands MCP's JSON-RPC: which action a method is, the
//!   filtering of `tools/list`, and `airlock schema pull`.
//! - [`proxy`] is the data plane; its module docs walk the request
//!   lifecycle phase by phase.
//! - [`approval`] keeps held calls for a human: durable holds in the
//!   [`store`], waiting agents, decisions, expiry, exactly-once execution.
//!   It is protocol neutral and never uses `proxy`.
//! - [`store`] is the durable state behind approvals (SQLite, WAL; or
//!   PostgreSQL shared by several replicas).
//! - [`notify`] signs and delivers webhooks from the store's outbox.
//! - [`audit`] writes one JSON record per decision off the request path, to
//!   a file, stdout, syslog or an OTLP collector, keeping and retrying what
//!   the sink does not take.
//! - [`telemetry`] holds the Prometheus metrics and log setup.
//! - [`reload`] compiles new snapshots away from the request path and swaps
//!   them in atomically.
//! - [`watch`] reloads when the policy or config files change.
//! - [`admin`] is the control plane (health, metrics, status, reload).
//! - [`approvals_client`] is the `airlock approvals` command's API client.
//! - [`explain`] answers "what would happen to this call?" for the CLI.
//! - [`policytest`] runs the YAML policy test cases of `airlock test`.
//! - [`cli`] holds code only the command line uses (`airlock init`).
//! - [`clock`] is the one clock: epoch milliseconds and RFC 3339 text.
//! - [`demo`] is a small tool server for the quickstart.
//! - [`app`] wires everything together; `main.rs` is only the CLI.
//!
//! Dependencies flow one way: `proxy` → (`approval`, `snapshot`) →
//! (`policy`, `config`, `upstream`); `approval` → (`store`, `notify`,
//! `audit`, `config`); `admin` and `reload` → `snapshot`; `app` → everything.
//! Two edges go against that flow (`snapshot` → `proxy::path`, `proxy` →
//! `store` and `notify`); ARCHITECTURE.md
//! lists every edge, and the `architecture` integration test holds the code
//! to that list.

pub mod admin;
pub mod app;
pub mod approval;
pub mod approvals_client;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod duration;
pub mod explain;
pub mod mcp;
pub mod notify;
pub mod policy;
pub mod policytest;
pub mod proxy;
pub mod reload;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod watch;
pub mod workers;
