//! A throwaway PostgreSQL cluster of the test's own, on a free loopback
//! port, that the test may stop and start again. The machine's shared
//! server at 127.0.0.1:5432 serves other tests at the same time and is
//! never restarted.
//!
//! `initdb` and `postgres` refuse to run as root, and the tests run as
//! root: every PostgreSQL command runs as the `postgres` user, in a temp
//! dir handed over to it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory of PostgreSQL's server programs: Debian's, of the newest
/// version installed (the one `.ci/setup` installs with the machine's
/// cluster).
fn bin_dir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's programs under /usr/lib/postgresql (apt-get install postgresql)");
    versions
        .filter_map(|v| v.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
        .expect("a numbered version under /usr/lib/postgresql")
}

pub struct PgInstance {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgInstance {
    /// Creates a cluster (trust authentication, user `postgres`) and starts
    /// it on a free port of 127.0.0.1.
    pub fn start() -> PgInstance {
        let dir = tempfile::tempdir().expect("temp dir for PostgreSQL");
        run("chown", &["-R", "postgres:postgres", &path_str(dir.path())]);
        let port = free_port();
        let pg = PgInstance { dir, port };
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                &path_str(&pg.data()),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.start_again();
        pg
    }

    /// The store URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (`fast`: open connections are cut, as in a restart
    /// or a failover).
    pub fn stop(&self) {
        self.as_postgres(
            "pg_ctl",
            &["-D", &path_str(&self.data()), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts the server again on the same port, with its data; returns
    /// once it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            path_str(self.dir.path())
        );
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &path_str(&self.data()),
                "-l",
                &path_str(&self.log()),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Runs PostgreSQL's `tool` as the `postgres` user; a failure names the
    /// command, its output and the server log.
    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let exe = path_str(&bin_dir().join(tool));
        let mut all = vec!["-u", "postgres", "--", exe.as_str()];
        all.extend_from_slice(args);
        let out = Command::new("runuser").args(&all).output();
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        check(&format!("runuser {}", all.join(" ")), out, &log);
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        // `immediate`: the data is thrown away with the dir.
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &path_str(&bin_dir().join("pg_ctl")),
                "-D",
            ])
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("temp paths are UTF-8").to_string()
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("addr").port()
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output();
    check(&format!("{cmd} {}", args.join(" ")), out, "");
}

fn check(what: &str, out: std::io::Result<Output>, log: &str) {
    match out {
        Err(e) => panic!("cannot run `{what}`: {e}"),
        Ok(o) if !o.status.success() => panic!(
            "`{what}` failed ({}):\nstdout: {}\nstderr: {}\nserver log:\n{log}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => {}
    }
}
