//! Live reload of configuration and policies.
//!
//! A reload reads and compiles a whole new [`GatewaySnapshot`] on a blocking
//! thread, away from the request path, then swaps it in with one atomic
//! store. A reload that fails leaves the last good snapshot serving and
//! records the problems for `GET /v1/status`. Triggers: SIGHUP,
//! `POST /v1/reload`, and changes in the policies directory or the config
//! file's directory.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::snapshot::GatewaySnapshot;
use crate::telemetry::{Metrics, ResultLabels};
use crate::upstream::UpstreamClients;

/// What `GET /v1/status` reports about reloads.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Problems of the last failed reload, `file:line:col: message` each;
    /// cleared by the next successful one.
    pub last_error: Option<Vec<String>>,
    pub last_attempt: Option<String>,
    /// Settings changed on disk that only a restart applies.
    pub restart_required: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    pub version: String,
    pub changed: bool,
    pub restart_required: Vec<String>,
}

pub struct Reloader {
    config_path: PathBuf,
    live: Arc<ArcSwap<GatewaySnapshot>>,
    clients: Arc<UpstreamClients>,
    metrics: Arc<Metrics>,
    // A std Mutex: held only to copy or replace the status, never across
    // an await.
    status: Mutex<ReloadStatus>,
    // Serializes reloads so two triggers at once cannot swap out of order.
    // A tokio Mutex because it is held across the blocking compile.
    running: tokio::sync::Mutex<()>,
    // Hash of the files the last reload read. A std Mutex: only copied or
    // replaced, never held across an await.
    last_inputs: Mutex<Option<[u8; 32]>>,
}

impl Reloader {
    pub fn new(
        config_path: PathBuf,
        live: Arc<ArcSwap<GatewaySnapshot>>,
        clients: Arc<UpstreamClients>,
        metrics: Arc<Metrics>,
    ) -> Arc<Reloader> {
        let reloader = Arc::new(Reloader {
            config_path,
            live,
            clients,
            metrics,
            status: Mutex::new(ReloadStatus::default()),
            running: tokio::sync::Mutex::new(()),
            last_inputs: Mutex::new(None),
        });
        // The live snapshot was built from these files (modulo a write
        // racing with startup, which then reloads once more).
        let inputs = reloader.inputs_hash();
        if let Ok(mut l) = reloader.last_inputs.lock() {
            *l = inputs;
        }
        reloader
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reloads unless the files hash the same as at the last reload (or
    /// reload attempt): what the file watcher calls, since most events in a
    /// watched directory change nothing that matters.
    pub async fn reload_if_changed(self: &Arc<Self>) -> Option<Result<ReloadOutcome, Vec<String>>> {
        let this = self.clone();
        let now = tokio::task::spawn_blocking(move || this.inputs_hash())
            .await
            .ok()?;
        let last = self.last_inputs.lock().ok().and_then(|l| *l);
        if now.is_some() && now == last {
            return None;
        }
        Some(self.reload().await)
    }

    /// Reads, compiles and swaps in a new snapshot.
    pub async fn reload(self: &Arc<Self>) -> Result<ReloadOutcome, Vec<String>> {
        let _one_at_a_time = self.running.lock().await;
        let this = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            // Hashed before reading, so a change racing with this reload
            // hashes differently and triggers another one.
            let inputs = this.inputs_hash();
            (inputs, this.build())
        })
        .await;
        let built = match built {
            Ok((inputs, built)) => {
                if let Ok(mut l) = self.last_inputs.lock() {
                    *l = inputs;
                }
                built
            }
            Err(e) => Err(vec![format!("reload task failed: {e}")]),
        };
        let now = crate::clock::rfc3339(SystemTime::now());
        let result = match built {
            Ok(next) => {
                let current = self.live.load();
                let restart_required: Vec<String> = current
                    .config
                    .restart_only_differences(&next.config)
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                let changed = current.policy.version() != next.policy.version();
                let version = next.policy.version().to_string();
                if changed {
                    self.live.store(Arc::new(next));
                    tracing::info!(%version, "reloaded");
                }
                if !restart_required.is_empty() {
                    tracing::warn!(settings = ?restart_required, "changed settings need a restart to apply");
                }
                Ok(ReloadOutcome {
                    version,
                    changed,
                    restart_required,
                })
            }
            Err(problems) => {
                for p in &problems {
                    tracing::error!("reload failed: {p}");
                }
                Err(problems)
            }
        };
        // A reload that found nothing new is not a successful change:
        // counting it as one would hide, in dashboards, whether edits land.
        let label = match &result {
            Ok(o) if !o.changed && o.restart_required.is_empty() => "unchanged",
            Ok(_) => "success",
            Err(_) => "failure",
        };
        self.metrics
            .policy_reloads
            .get_or_create(&ResultLabels {
                result: label.to_string(),
            })
            .inc();
        if let Ok(mut s) = self.status.lock() {
            s.last_attempt = Some(now);
            match &result {
                Ok(o) => {
                    s.last_error = None;
                    s.restart_required = o.restart_required.clone();
                }
                Err(p) => s.last_error = Some(p.clone()),
            }
        }
        result
    }

    /// SHA-256 over the config file and the Cedar files of the live
    /// snapshot's policies directory, read through symlinks. `None` when the
    /// config cannot be read (a reload will then report why).
    fn inputs_hash(&self) -> Option<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(std::fs::read(&self.config_path).ok()?);
        let dir = self.live.load().config.policies.clone();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| {
            p.extension()
                .is_some_and(|x| x == "cedar" || x == "cedarschema")
        });
        files.sort();
        for f in files {
            h.update([0]);
            h.update(f.as_os_str().as_encoded_bytes());
            h.update([0]);
            h.update(std::fs::read(&f).unwrap_or_default());
        }
        Some(h.finalize().into())
    }

    fn build(&self) -> Result<GatewaySnapshot, Vec<String>> {
        let config = Config::load(&self.config_path).map_err(|e| {
            e.problems()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        })?;
        GatewaySnapshot::build(Arc::new(config), &self.clients)
            .map_err(|p| p.iter().map(ToString::to_string).collect())
    }

    /// Reloads on every SIGHUP until the process ends. Several signals that
    /// arrive together are coalesced by the signal stream.
    pub fn watch_sighup(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; reload with POST /v1/reload");
                return;
            };
            while hup.recv().await.is_some() {
                let _ = this.reload().await;
            }
        });
    }
}
