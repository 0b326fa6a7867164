//! Reload on file changes: watches the policies directory and the config
//! file's directory.
//!
//! Directories, not files, are watched: an editor that saves by writing a
//! temporary file and renaming it over the original would end a watch on
//! the file, and a Kubernetes ConfigMap update swaps a `..data` symlink, so
//! the event names `..data` and never the file itself. Events are debounced,
//! filtered down to names that can matter, and then the [`Reloader`]
//! compares content hashes, so writes to the audit log or the store next to
//! the config never cause a compile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, EventKind};
use notify::{RecursiveMode, Watcher};

use crate::reload::Reloader;

/// How long the directory must be quiet before a reload starts: long enough
/// to let an editor's write-and-rename or a ConfigMap swap finish.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch `{path}` for changes: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// Keeps the watch alive; dropping it stops watching.
pub struct PolicyWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `config_path`'s directory and `policies_dir`; every
/// relevant change asks `reloader` to reload if the content changed.
/// Must be called inside a tokio runtime.
pub fn watch(
    reloader: Arc<Reloader>,
    config_path: &Path,
    policies_dir: &Path,
) -> Result<PolicyWatcher, WatchError> {
    let config_name = config_path.file_name().map(|n| n.to_os_string());
    // Capacity 1 with try_send: a burst of changes becomes one pending
    // reload, and the notify thread never blocks on the runtime.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(event) => {
            if is_change(&event.kind)
                && event
                    .paths
                    .iter()
                    .any(|p| is_relevant(p, config_name.as_deref()))
            {
                let _ = tx.try_send(());
            }
        }
        Err(e) => tracing::warn!(error = %e, "file watch error"),
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(|source| WatchError {
        path: policies_dir.to_path_buf(),
        source,
    })?;
    let config_dir = match config_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![config_dir, policies_dir.to_path_buf()];
    dirs.dedup_by(|a, b| same_dir(a, b));
    for dir in dirs {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError { path: dir, source })?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until the directory has been quiet for
            // DEBOUNCE, so a write-then-rename is read once, complete.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            if let Some(Err(problems)) = reloader.reload_if_changed().await {
                tracing::warn!(
                    count = problems.len(),
                    "the changed files did not load; the last good snapshot keeps serving"
                );
            }
        }
    });
    Ok(PolicyWatcher { _watcher: watcher })
}

/// Whether an event kind can mean new content. Reads are not changes, and
/// must be ignored: inotify reports opens and closes-after-read, so the
/// reloader's own reads would otherwise trigger the next reload, forever.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(notify::event::AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether a change to `path` can change the snapshot: the config file,
/// Cedar files, and Kubernetes' `..data` swaps (names starting with `..`).
fn is_relevant(path: &Path, config_name: Option<&std::ffi::OsStr>) -> bool {
    let Some(name) = path.file_name() else {
        return true;
    };
    if Some(name) == config_name {
        return true;
    }
    let name = name.to_string_lossy();
    name.starts_with("..") || name.ends_with(".cedar") || name.ends_with(".cedarschema")
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_not_changes() {
        use notify::event::{AccessMode, CreateKind, ModifyKind};
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn only_config_cedar_and_configmap_names_matter() {
        let cfg = Some(std::ffi::OsStr::new("airlock.yaml"));
        assert!(is_relevant(Path::new("/c/airlock.yaml"), cfg));
        assert!(is_relevant(Path::new("/c/policies/crm.cedar"), cfg));
        assert!(is_relevant(
            Path::new("/c/policies/schema.cedarschema"),
            cfg
        ));
        assert!(is_relevant(Path::new("/c/..data"), cfg));
        assert!(is_relevant(Path::new("/c/..2026_11_27_19_00_00.1"), cfg));
        assert!(!is_relevant(Path::new("/c/audit.jsonl"), cfg));
        assert!(!is_relevant(Path::new("/c/airlock.db-wal"), cfg));
        assert!(!is_relevant(Path::new("/c/.crm.cedar.swp"), cfg));
    }
}
