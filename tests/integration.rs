//! One integration-test binary: each module is a group of scenarios run
//! against the real `airlock` binary over real sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a scenario fails by panicking"
)]

#[path = "support/mod.rs"]
mod support;

#[path = "it/proxy.rs"]
mod proxy;

#[path = "it/tls.rs"]
mod tls;

#[path = "it/cli.rs"]
mod cli;

#[path = "it/approvals.rs"]
mod approvals;

#[path = "it/events.rs"]
mod events;

#[path = "it/inbox.rs"]
mod inbox;
#[path = "it/inbox_pages.rs"]
mod inbox_pages;

#[path = "it/approvals_restart.rs"]
mod approvals_restart;

#[path = "it/admin.rs"]
mod admin;

#[path = "it/mcp.rs"]
mod mcp;

#[path = "it/reload.rs"]
mod reload;

#[path = "it/policy_cli.rs"]
mod policy_cli;

#[path = "it/mcp_progress.rs"]
mod mcp_progress;

#[path = "it/mcp_elicit.rs"]
mod mcp_elicit;

#[path = "it/approvals_audit.rs"]
mod approvals_audit;

#[path = "it/approvals_pages.rs"]
mod approvals_pages;

#[path = "it/upstream_lanes.rs"]
mod upstream_lanes;

#[path = "it/webhooks.rs"]
mod webhooks;

#[path = "it/bypass_paths.rs"]
mod bypass_paths;

#[path = "it/audit_trail.rs"]
mod audit_trail;
#[path = "it/bypass_approvals.rs"]
mod bypass_approvals;
#[path = "it/bypass_bodies.rs"]
mod bypass_bodies;
#[path = "it/faults.rs"]
mod faults;

#[path = "it/escalation.rs"]
mod escalation;

#[path = "it/pause.rs"]
mod pause;

#[path = "it/architecture.rs"]
mod architecture;

#[path = "it/store_conformance.rs"]
mod store_conformance;

#[path = "it/sampling.rs"]
mod sampling;

#[path = "it/takeover.rs"]
mod takeover;

#[path = "it/replica_faults.rs"]
mod replica_faults;

#[path = "it/replicas.rs"]
mod replicas;

#[path = "it/feedback.rs"]
mod feedback;
