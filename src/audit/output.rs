//! The sinks records go to, and the buffer of records not yet taken.
//!
//! Every sink takes records from the front of [`Pending`] and removes only
//! what it delivered, so that a failed send leaves the rest to retry.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{IoSlice, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::otlp::OtlpOut;
use super::syslog::SyslogOut;
use super::AuditError;
use crate::config::AuditTarget;

/// Lines not yet delivered, oldest first.
#[derive(Default)]
pub(super) struct Pending {
    lines: VecDeque<Vec<u8>>,
    /// Bytes of the first line already written (a byte stream can take
    /// part of a line).
    written: usize,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn push(&mut self, line: Vec<u8>) {
        self.lines.push_back(line);
    }

    pub fn front(&self) -> Option<&[u8]> {
        self.lines.front().map(Vec::as_slice)
    }

    /// The first `n` lines, whole.
    pub fn first(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        self.lines.iter().take(n).map(Vec::as_slice)
    }

    /// Removes the first `n` lines: delivered, or counted as dropped.
    pub fn pop(&mut self, n: usize) {
        let n = n.min(self.lines.len());
        self.lines.drain(..n);
        self.written = 0;
    }

    /// Removes and returns every line (when giving up at shutdown).
    pub fn clear(&mut self) -> usize {
        let n = self.lines.len();
        self.pop(n);
        n
    }

    /// The next lines to write to a byte stream, the first one from where
    /// the last write stopped.
    fn slices(&self, max: usize) -> Vec<IoSlice<'_>> {
        let mut out = Vec::with_capacity(max.min(self.lines.len()));
        for (i, line) in self.lines.iter().take(max).enumerate() {
            let from = if i == 0 { self.written } else { 0 };
            out.push(IoSlice::new(&line[from.min(line.len())..]));
        }
        out
    }

    /// Takes `n` written bytes off the front.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.lines.front() else {
                return;
            };
            let left = front.len() - self.written.min(front.len());
            if n >= left {
                n -= left;
                self.lines.pop_front();
                self.written = 0;
            } else {
                self.written += n;
                n = 0;
            }
        }
    }

    /// Starts the first line over: after a reopen, its start went to the
    /// old file, and the new one gets it whole.
    pub fn restart_line(&mut self) {
        self.written = 0;
    }
}

/// How many records the sink refused for good on a send (one too large
/// for a datagram, or named by a collector's partial success); the writer
/// counts them as dropped.
pub(super) type Rejected = u64;

pub(super) enum Output {
    File(FileOut),
    Syslog(SyslogOut),
    // Boxed: the HTTP client is large, and there is one output per process.
    Otlp(Box<OtlpOut>),
}

impl Output {
    pub fn open(target: &AuditTarget) -> Result<Output, AuditError> {
        Ok(match target {
            AuditTarget::Stdout => Output::File(FileOut::stdout()?),
            AuditTarget::File(path) => Output::File(FileOut::open(path)?),
            AuditTarget::Syslog(addr) => Output::Syslog(SyslogOut::new(addr.clone())),
            AuditTarget::Otlp(url) => Output::Otlp(Box::new(OtlpOut::new(url)?)),
        })
    }

    /// Sends from the front of `p`, removing what was delivered.
    pub async fn send(&mut self, p: &mut Pending) -> std::io::Result<Rejected> {
        match self {
            Output::File(f) => f.send(p).map(|()| 0),
            Output::Syslog(s) => s.send(p),
            Output::Otlp(o) => o.send(p).await,
        }
    }

    /// Reopens the file when asked (`force`) or when its path no longer
    /// names the open file. True when a new file was opened.
    pub fn reopen(&mut self, force: bool) -> bool {
        match self {
            Output::File(f) => f.reopen(force),
            Output::Syslog(_) | Output::Otlp(_) => false,
        }
    }

    /// The sink as named in health reasons and logs.
    pub fn describe(&self) -> String {
        match self {
            Output::File(f) => f.describe(),
            Output::Syslog(s) => format!("audit syslog `{}`", s.describe()),
            Output::Otlp(o) => format!("audit OTLP collector `{}`", o.describe()),
        }
    }
}

/// A file opened for appending, or standard output.
pub(super) struct FileOut {
    /// `None` for standard output, which is never reopened.
    path: Option<PathBuf>,
    /// `None` after a reopen failed: records wait rather than go to a file
    /// that may have been deleted.
    file: Option<File>,
    /// Device and inode of the open file, to notice a rename.
    id: Option<(u64, u64)>,
}

/// Lines per write: the kernel takes at most 1,024 slices at once.
const SLICES: usize = 512;

impl FileOut {
    fn stdout() -> Result<FileOut, AuditError> {
        use std::os::fd::AsFd;
        // A file of its own on descriptor 1, unbuffered, so that a failed
        // write says exactly which bytes did not go out.
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(AuditError::Start)?;
        Ok(FileOut {
            path: None,
            file: Some(File::from(fd)),
            id: None,
        })
    }

    fn open(path: &Path) -> Result<FileOut, AuditError> {
        let file = open_append(path).map_err(|source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let id = file.metadata().ok().map(|m| (m.dev(), m.ino()));
        Ok(FileOut {
            path: Some(path.to_path_buf()),
            file: Some(file),
            id,
        })
    }

    fn send(&mut self, p: &mut Pending) -> std::io::Result<()> {
        // A file deleted since it was opened (a rotated file removed before
        // Airlock was told) would take records to nowhere: one `fstat` per
        // batch finds that out before writing.
        let deleted = self.path.is_some()
            && self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .is_some_and(|m| m.nlink() == 0);
        if deleted || self.file.is_none() {
            self.file = None;
            self.open_again()?;
            p.restart_line();
        }
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        while !p.is_empty() {
            let n = match file.write_vectored(&p.slices(SLICES)) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            p.consume(n);
        }
        Ok(())
    }

    fn reopen(&mut self, force: bool) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        if !force && self.file.is_some() && self.names_open_file(path) {
            return false;
        }
        match self.open_again() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the {}", self.describe());
                // Records wait (and the failure shows) rather than go to a
                // file that may be gone.
                self.file = None;
                false
            }
        }
    }

    fn open_again(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        let file = open_append(path)?;
        self.id = file.metadata().ok().map(|m| (m.dev(), m.ino()));
        self.file = Some(file);
        tracing::info!(path = %path.display(), "audit file reopened");
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("audit file `{}`", p.display()),
            None => "audit stdout".to_string(),
        }
    }

    fn names_open_file(&self, path: &Path) -> bool {
        std::fs::metadata(path)
            .ok()
            .is_some_and(|m| Some((m.dev(), m.ino())) == self.id)
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(lines: &[&str]) -> Pending {
        let mut p = Pending::default();
        for l in lines {
            p.push(l.as_bytes().to_vec());
        }
        p
    }

    #[test]
    fn a_short_write_resumes_mid_line() {
        let mut p = pending(&["abc\n", "de\n", "f\n"]);
        p.consume(5);
        assert_eq!(p.len(), 2);
        let rest: Vec<u8> = p.slices(8).iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(rest, b"e\nf\n");
        p.consume(4);
        assert!(p.is_empty());
    }

    #[test]
    fn a_restarted_line_is_written_whole() {
        let mut p = pending(&["abc\n"]);
        p.consume(2);
        p.restart_line();
        let rest: Vec<u8> = p.slices(8).iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(rest, b"abc\n");
    }
}
