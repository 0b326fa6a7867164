//! The gateway snapshot: one immutable value holding everything a request
//! is judged by: the configuration, agent keys, routes with their upstream
//! clients, and the compiled policies.
//!
//! A request loads the current snapshot once and uses only that value to the
//! end, so a reload can never judge half a request by old rules and half by
//! new ones. Snapshots are built away from the request path and swapped in
//! whole (see `reload`).

use std::sync::Arc;

use crate::config::{AgentConfig, Config, RouteConfig};
use crate::path::NormalizedPath;
use crate::policy::{Directory, PolicySnapshot, PrincipalSpec, Resource, SourceProblem};
use crate::upstream::{UpstreamClient, UpstreamClients};

/// A route ready to forward to.
pub struct Route {
    pub config: RouteConfig,
    pub client: UpstreamClient,
    /// `config.name`, shared by the audit records and metrics that name it.
    pub name: Arc<str>,
    /// The route as a policy resource (`Route::"name"`), for audit records.
    pub resource: Arc<str>,
    /// The `Host` an HTTP/1.1 request to the upstream carries, made once.
    pub host: Option<http::HeaderValue>,
}

pub struct GatewaySnapshot {
    pub config: Arc<Config>,
    pub policy: PolicySnapshot,
    /// Longest prefix first, so the most specific route wins.
    routes: Vec<Route>,
    /// SHA-256 of each agent key, to the agent. foldhash: the keys come
    /// from the configuration, so an agent cannot choose what collides.
    agents_by_key: foldhash::HashMap<[u8; 32], AgentConfig>,
}

impl GatewaySnapshot {
    /// Compiles a snapshot from a loaded configuration.
    pub fn build(
        config: Arc<Config>,
        clients: &UpstreamClients,
    ) -> Result<GatewaySnapshot, Vec<SourceProblem>> {
        let directory = Directory {
            agents: config
                .agents
                .iter()
                .map(|a| PrincipalSpec {
                    id: a.id.clone(),
                    groups: a.groups.clone(),
                    attributes: a.attributes.clone(),
                })
                .collect(),
            routes: config.routes.iter().map(|r| r.name.clone()).collect(),
            config_hash: config.content_hash.clone(),
        };
        let policy = PolicySnapshot::load(&config.policies, &directory)?;
        let mut routes = Vec::new();
        let mut problems = Vec::new();
        for r in &config.routes {
            match clients.client(r.ca_file.as_deref(), r.connect_timeout) {
                Ok(client) => routes.push(Route {
                    config: r.clone(),
                    client,
                    name: r.name.as_str().into(),
                    resource: Resource::Route(r.name.clone()).to_string().into(),
                    host: r
                        .upstream
                        .authority()
                        .and_then(crate::upstream::host_header),
                }),
                Err(e) => problems.push(SourceProblem {
                    file: config.source.clone(),
                    line: 1,
                    column: 1,
                    message: format!("route `{}`: {e}", r.name),
                }),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.config.prefix.len()));
        let agents_by_key = config
            .agents
            .iter()
            .map(|a| (a.key_sha256, a.clone()))
            .collect();
        Ok(GatewaySnapshot {
            config,
            policy,
            routes,
            agents_by_key,
        })
    }

    /// The agent whose key hashes to `key_sha256`.
    pub fn agent_by_key(&self, key_sha256: &[u8; 32]) -> Option<&AgentConfig> {
        self.agents_by_key.get(key_sha256)
    }

    pub fn agent(&self, id: &str) -> Option<&AgentConfig> {
        self.config.agents.iter().find(|a| a.id == id)
    }

    /// The most specific route for a path, with how many of its segments
    /// the route's prefix takes.
    pub fn route_for(&self, path: &NormalizedPath) -> Option<(&Route, usize)> {
        self.routes.iter().find_map(|r| {
            path.prefix_len(&r.config.prefix, r.config.case_insensitive)
                .map(|taken| (r, taken))
        })
    }

    pub fn route_named(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.config.name == name)
    }

    /// What loads but will not work as written: `@elicit` gates without
    /// `admin.public_url`, which have no page to send anyone to.
    pub fn config_warnings(&self) -> Vec<String> {
        let gates = self.policy.elicit_gates();
        if gates.is_empty() || self.config.admin.configured_public_url.is_some() {
            return Vec::new();
        }
        vec![format!(
            "`@elicit` on {} sends no elicitation: set `admin.public_url` to the address people open the inbox at",
            gates
                .iter()
                .map(|g| format!("`{g}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )]
    }
}
