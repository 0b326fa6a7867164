//! A problem found at a place in a file the user wrote: the configuration
//! or a policy. One type, so that both print alike (`file:line:column:
//! message`, the form editors and terminals link to).

use std::fmt;
use std::path::PathBuf;

/// One problem, with the place it was found. Lines and columns count from
/// one; zero means the whole file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceProblem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl SourceProblem {
    /// A line or column as a YAML reader counts it.
    pub fn at(n: u64) -> usize {
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}
