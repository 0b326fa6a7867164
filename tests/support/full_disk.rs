//! A place for the audit file that the test can fill and free again: a
//! small tmpfs where the test may mount one (as root), else a file-size
//! limit on the child (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored so that a
//! write over it fails with `EFBIG` instead of killing the process).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// The tmpfs's size, and the child's file-size limit.
const SIZE: u64 = 1024 * 1024;

pub struct FullDisk {
    dir: tempfile::TempDir,
    tmpfs: bool,
}

impl FullDisk {
    /// Mounts a tmpfs unless that fails (or `AIRLOCK_TEST_NO_TMPFS` is
    /// set), in which case [`FullDisk::customize`] limits the child instead.
    pub fn new() -> FullDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let tmpfs = std::env::var_os("AIRLOCK_TEST_NO_TMPFS").is_none()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={SIZE}"), "tmpfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        FullDisk { dir, tmpfs }
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// What a failed write says when the disk is full.
    pub fn error_text(&self) -> &'static str {
        if self.tmpfs {
            "No space left on device"
        } else {
            "File too large"
        }
    }

    /// Applies the file-size limit to the child, where there is no tmpfs.
    pub fn customize(&self, cmd: &mut Command) {
        if self.tmpfs {
            return;
        }
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made (setrlimit, signal), and nothing is allocated.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: SIZE as libc::rlim_t,
                    rlim_max: SIZE as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }

    /// Leaves no room for another record.
    pub fn fill(&self) {
        if self.tmpfs {
            let mut f = std::fs::File::create(self.filler()).expect("filler");
            let block = vec![0u8; 4096];
            while f.write_all(&block).is_ok() {}
        } else {
            // Blank lines up to the limit: readers skip them.
            let f = std::fs::OpenOptions::new()
                .append(true)
                .open(self.audit_path())
                .expect("audit file");
            let len = f.metadata().expect("metadata").len();
            let pad = vec![b'\n'; SIZE.saturating_sub(len) as usize];
            (&f).write_all(&pad).expect("pad");
        }
    }

    /// Makes room again. Under the file-size limit that means emptying the
    /// audit file: read what it holds first.
    pub fn free(&self) {
        if self.tmpfs {
            std::fs::remove_file(self.filler()).expect("remove filler");
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .open(self.audit_path())
                .and_then(|f| f.set_len(0))
                .expect("truncate");
        }
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        if self.tmpfs {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
