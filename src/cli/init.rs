//! `airlock init [DIR]`: a commented starter configuration, the schema, one
//! example policy file and its test cases, ready for `airlock check`,
//! `airlock test` and `airlock serve`.

use std::path::{Path, PathBuf};

/// The files `init` writes, relative to its directory. The policy, schema
/// and tests are the shipped ones, so the starter never drifts from them.
const STARTER: [(&str, &str); 4] = [
    ("config/airlock.yaml", include_str!("starter/airlock.yaml")),
    (
        "policies/schema.cedarschema",
        include_str!("../../policies/schema.cedarschema"),
    ),
    (
        "policies/crm.cedar",
        include_str!("../../policies/crm.cedar"),
    ),
    (
        "policies/tests/crm.yaml",
        include_str!("../../policies/tests/crm.yaml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("`{}` already exists; airlock init never overwrites (choose another directory)", .0.display())]
    Exists(PathBuf),
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes the starter files under `dir`, and returns their paths. Writes
/// nothing when any of them exists already.
pub fn write_starter(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    let paths: Vec<PathBuf> = STARTER.iter().map(|(rel, _)| dir.join(rel)).collect();
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(InitError::Exists(existing.clone()));
    }
    for (path, (_, text)) in paths.iter().zip(STARTER) {
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // `create_new`: a file that appeared since the check above is
            // still never overwritten.
            use std::io::Write as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?
                .write_all(text.as_bytes())
        };
        write().map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_once_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_starter(dir.path()).unwrap();
        assert_eq!(written.len(), STARTER.len());
        for p in &written {
            assert!(p.is_file(), "{}", p.display());
        }
        std::fs::write(&written[2], "// mine").unwrap();
        let again = write_starter(dir.path()).unwrap_err();
        assert!(
            matches!(again, InitError::Exists(ref p) if p == &written[0]),
            "{again}"
        );
        assert_eq!(std::fs::read_to_string(&written[2]).unwrap(), "// mine");
    }
}
