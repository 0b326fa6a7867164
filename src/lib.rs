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
//!   nothing else of ours but [`duration`], [`problem`] and [`rate`].
//! - [`policy`] is the only module that speaks Cedar: it loads and validates
//!   the policies, builds the entities, and turns Cedar's Allow/Deny into a
//!   [`policy::Verdict`] of allow, deny or hold. It uses nothing else of ours
//!   but [`duration`], [`problem`] and [`rate`].
//! - [`upstream`] builds pooled HTTP(S) clients for the tools, a pool per
//!   data-plane worker, and the paired lanes that give an HTTP/1.1 agent
//!   connection an upstream connection of its own.
//! - [`workers`] runs the data plane: one single-threaded runtime per core,
//!   each connection pinned to one of them.
//! - [`problem`] is a problem at a place in a file the user wrote (the
//!   configuration or a policy), printed as `file:line:column: message`.
//! - [`path`] normalizes the agent's path, so that what the policy sees is
//!   what the upstream gets; routes' prefixes are matched on it.
//! - [`snapshot`] joins config, policies and clients into one immutable
//!   [`snapshot::GatewaySnapshot`] that a request is judged by from start to
//!   end.
//! - [`mcp`] understands MCP's JSON-RPC: which action a method is, the
//!   filtering of `tools/list`, and the Cedar declarations of tools.
//! - [`proxy`] is the data plane; its module docs walk the request
//!   lifecycle phase by phase.
//! - [`approval`] keeps held calls for a human: durable holds in the
//!   [`store`], waiting agents, decisions, expiry, exactly-once execution.
//!   It is protocol neutral and never uses `proxy`.
//! - [`store`] is the durable state behind approvals and pauses (SQLite,
//!   WAL; or PostgreSQL shared by several replicas).
//! - [`oversight`] lets operators pause an agent, a route, a tool or
//!   everything: the pause board the data plane reads, and the per-agent
//!   call counts of the last hour.
//! - [`sampling`] picks a share of allowed calls (`@sample`,
//!   `sampling.rules`), copies them as they pass and stores them, redacted,
//!   through a bounded writer for reviewers; [`rate`] is the share.
//! - [`feedback`] counts, per day, policy and route or tool, the calls'
//!   verdicts, what became of holds, how long humans took and what
//!   reviewers said (in memory, flushed to the [`store`]); `airlock report`
//!   reads the counts and `airlock feedback export` the human judgments.
//! - [`notify`] signs and delivers webhooks from the store's outbox.
//! - [`audit`] writes one JSON record per decision off the request path, to
//!   a file, stdout, syslog or an OTLP collector, keeping and retrying what
//!   the sink does not take.
//! - [`relay`] passes each replica's live events to the others through a
//!   shared store, so that every replica's event stream shows them all.
//! - [`telemetry`] holds the Prometheus metrics and log setup.
//! - [`reload`] compiles new snapshots away from the request path and swaps
//!   them in atomically.
//! - [`watch`] reloads when the policy or config files change.
//! - [`admin`] is the control plane (health, metrics, status, reload,
//!   approvals, operators' pauses, the review queue) and the approvers'
//!   web inbox at `/`.
//! - [`cli`] holds code only the command line uses: its arguments
//!   (`args`), `airlock init`, `explain` ("what would happen to this
//!   call?"), `policytest` (the YAML cases of `airlock test`), the admin
//!   API client of `approvals`, `reviews`, `agents` and `watch`, and
//!   `airlock schema pull`.
//! - [`clock`] is the one clock: epoch milliseconds and RFC 3339 text.
//! - [`demo`] is a small tool server for the quickstart.
//! - [`app`] wires everything together; `main.rs` only sends each
//!   subcommand to the call that does it.
//!
//! Dependencies flow one way: `proxy` → (`approval`, `snapshot`) →
//! (`policy`, `config`, `upstream`, `path`); `approval` → (`store`,
//! `notify`, `audit`, `config`); `admin` and `reload` → `snapshot`; `cli`
//! and `app` → everything they use. ARCHITECTURE.md lists every edge, and
//! the `architecture` integration test holds the code to that list.

pub mod admin;
pub mod app;
pub mod approval;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod duration;
pub mod feedback;
pub mod mcp;
pub mod notify;
pub mod oversight;
pub mod path;
pub mod policy;
pub mod problem;
pub mod proxy;
pub mod rate;
pub mod relay;
pub mod reload;
pub mod sampling;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod watch;
pub mod workers;
