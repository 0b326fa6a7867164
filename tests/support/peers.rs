//! The tests' real peers (the MCP SDKs, `server-everything`, the
//! `standardwebhooks` verifier), provisioned on first use under
//! `tests/peers/` by `tests/peers/setup.sh`, so that `cargo test` works
//! from a fresh clone with nothing set up beforehand.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;

const SETUP: &str = "bash tests/peers/setup.sh";

pub fn peers_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers"))
}

/// The peers' Python, in their own venv; provisions the peers first.
pub fn python() -> PathBuf {
    ensure();
    peers_dir().join(".venv/bin/python")
}

/// The directory holding the peers' npm packages; provisions them first.
pub fn node_modules() -> PathBuf {
    ensure();
    peers_dir().join("node_modules")
}

/// Provisions the peers once per test process. The file lock keeps two
/// test processes (two `cargo test` runs, or a nextest-style runner) from
/// installing into one venv at once; the `OnceLock` keeps this process's
/// threads to one attempt, whose failure every later caller reports too.
pub fn ensure() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = READY.get_or_init(provision) {
        panic!("{why}");
    }
}

fn provision() -> Result<(), String> {
    let lock_path = peers_dir().join(".setup.lock");
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create `{}`: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock `{}`: {e}", lock_path.display()))?;
    let out = Command::new("bash")
        .arg(peers_dir().join("setup.sh"))
        .output()
        .map_err(|e| format!("cannot run `{SETUP}`: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "the test peers could not be installed: `{SETUP}` {}.\n\
         It needs python3 with venv, node with npm and Debian's chromium, \
         which it installs with apt-get as root or through `sudo -n` \
         (Debian: apt-get install python3-venv nodejs npm chromium).\n--- its stderr ---\n{}",
        describe(out.status),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A peer process whose stderr goes to a file, so that a peer that dies
/// can say why.
pub struct Peer {
    pub name: &'static str,
    pub command: String,
    pub child: Child,
    stderr: tempfile::NamedTempFile,
}

impl Peer {
    /// Starts `cmd`, named `name` in failures.
    pub fn spawn(name: &'static str, mut cmd: Command) -> Peer {
        let command = format!("{cmd:?}");
        let stderr = tempfile::NamedTempFile::new().expect("temp file for a peer's stderr");
        let err = stderr.reopen().expect("reopen the peer's stderr file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name} peer ({command}): {e}"));
        Peer {
            name,
            command,
            child,
            stderr,
        }
    }

    /// Panics with the peer's name, command and stderr when it has exited.
    pub fn check_alive(&mut self, waiting_for: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.fail(&format!("exited ({}) {waiting_for}", describe(status)));
        }
    }

    /// Panics naming the peer, its command and its stderr so far.
    pub fn fail(&self, what: &str) -> ! {
        let stderr = std::fs::read_to_string(self.stderr.path()).unwrap_or_default();
        panic!(
            "the {} peer {what}\n  command: {}\n--- its stderr ---\n{stderr}",
            self.name, self.command
        );
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("was stopped: {status}"),
    }
}
