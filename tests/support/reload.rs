//! Helpers for reload scenarios: admin calls, atomic file writes, and
//! starting Airlock over a prepared directory layout.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Airlock, AirlockBuilder, ADMIN_TOKEN};

impl AirlockBuilder {
    /// Writes the config and policies, lets `prepare` rearrange the
    /// directory (e.g. into a ConfigMap layout), then starts Airlock.
    pub fn start_prepared(self, prepare: impl FnOnce(&Path)) -> Airlock {
        let config = self.write();
        prepare(self.dir.path());
        Airlock::start_with(self.dir, config)
    }
}

impl Airlock {
    /// `GET /v1/status`.
    pub async fn status(&self) -> Value {
        self.admin_get("/v1/status", ADMIN_TOKEN).await
    }

    /// `POST /v1/reload`: the HTTP status and the JSON answer.
    pub async fn reload(&self) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.admin_url("/v1/reload"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls `/v1/status` until `done` holds for it; panics after `within`.
    pub async fn wait_status(&self, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.status().await;
            if done(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "status never got there: {s}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `n` audit records are written.
    pub fn wait_audit_count(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let recs = self.audit();
            if recs.len() >= n {
                return recs;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} audit records",
                recs.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Replaces `path` the way editors save: write a temporary file next to it,
/// then rename it over the original.
pub fn save_by_rename(path: &Path, text: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.swp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Turns the flat `dir` into a Kubernetes ConfigMap volume layout: the files
/// live in `..<generation>/`, `..data` links to it, and each name links
/// through `..data`.
pub fn configmap_layout(dir: &Path, generation: &str) {
    let gen_dir = dir.join(format!("..{generation}"));
    std::fs::create_dir(&gen_dir).unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && e.file_type().unwrap().is_file() {
            std::fs::rename(e.path(), gen_dir.join(&name)).unwrap();
            names.push(name);
        }
    }
    std::os::unix::fs::symlink(format!("..{generation}"), dir.join("..data")).unwrap();
    for n in names {
        std::os::unix::fs::symlink(format!("..data/{n}"), dir.join(&n)).unwrap();
    }
}

/// Publishes a new ConfigMap generation the way the kubelet does: write the
/// files into a fresh `..<generation>` directory, then atomically swap the
/// `..data` symlink by renaming a new link over it.
pub fn configmap_swap(dir: &Path, generation: &str, files: &[(&str, &str)]) {
    let gen_dir = dir.join(format!("..{generation}"));
    std::fs::create_dir(&gen_dir).unwrap();
    for (name, text) in files {
        std::fs::write(gen_dir.join(name), text).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}
