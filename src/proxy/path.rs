//! Path normalization: what the policy sees is what the upstream gets.
//!
//! The agent's path is percent-decoded segment by segment, `.` and empty
//! segments (`//`) are dropped and `..` is resolved, all before routing and
//! before the policy runs. The forwarded path is re-encoded from the same
//! segments, so the upstream cannot read `/a/%2e%2e/admin` as anything but
//! `/admin`. Paths that cannot round-trip are refused: an encoded `/` or
//! `\`, control characters, invalid UTF-8, and `..` above the root.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Characters escaped when a segment is re-encoded for the upstream.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A path after normalization, as decoded segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    segments: Vec<String>,
    trailing_slash: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with `/`")]
    NotAbsolute,
    #[error(
        "the path encodes a `/` or `\\` inside a segment (`{0}`), which upstreams read differently"
    )]
    EncodedSeparator(String),
    #[error("the path contains a control character or invalid UTF-8")]
    BadCharacter,
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
}

impl NormalizedPath {
    pub fn parse(raw: &str) -> Result<NormalizedPath, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        let mut segments: Vec<String> = Vec::new();
        let mut trailing_slash = false;
        for raw_seg in raw.split('/').skip(1) {
            let decoded = percent_decode_str(raw_seg)
                .decode_utf8()
                .map_err(|_| PathError::BadCharacter)?;
            if decoded.contains(['/', '\\']) {
                return Err(PathError::EncodedSeparator(raw_seg.to_string()));
            }
            if decoded.chars().any(char::is_control) {
                return Err(PathError::BadCharacter);
            }
            trailing_slash = false;
            match decoded.as_ref() {
                "" | "." => trailing_slash = true,
                ".." => {
                    if segments.pop().is_none() {
                        return Err(PathError::AboveRoot);
                    }
                    trailing_slash = true;
                }
                _ => segments.push(decoded.into_owned()),
            }
        }
        Ok(NormalizedPath {
            trailing_slash: trailing_slash && !segments.is_empty(),
            segments,
        })
    }

    /// The decoded path the policy sees, e.g. `/crm/refunds`.
    pub fn decoded(&self) -> String {
        self.join(0, |s| s.to_string())
    }

    /// If this path is `prefix` or below it, the encoded rest (`""` or
    /// `/x/y`). `prefix` is a configured route prefix such as `/crm`.
    pub fn strip_prefix(&self, prefix: &str) -> Option<String> {
        let wanted: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
        if wanted.len() > self.segments.len()
            || wanted.iter().zip(&self.segments).any(|(a, b)| a != b)
        {
            return None;
        }
        let rest = self.join(wanted.len(), |s| {
            utf8_percent_encode(s, SEGMENT).to_string()
        });
        Some(if rest == "/" && wanted.len() == self.segments.len() {
            String::new()
        } else {
            rest
        })
    }

    fn join(&self, from: usize, f: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for s in &self.segments[from..] {
            out.push('/');
            out.push_str(&f(s));
        }
        if out.is_empty() || self.trailing_slash {
            out.push('/');
        }
        out
    }
}

/// Joins an upstream base path and the encoded rest of the agent's path.
pub fn upstream_path(base: &str, rest: &str) -> String {
    let base = base.trim_end_matches('/');
    match (base.is_empty(), rest.is_empty()) {
        (true, true) => "/".to_string(),
        (true, false) => rest.to_string(),
        (false, _) => format!("{base}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        NormalizedPath::parse(p).map(|n| n.decoded())
    }

    #[test]
    fn dot_segments_and_doubled_slashes_are_resolved() {
        assert_eq!(norm("/a/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/a/./b//c").unwrap(), "/a/b/c");
        assert_eq!(norm("//admin").unwrap(), "/admin");
        assert_eq!(norm("/a/b/").unwrap(), "/a/b/");
        assert_eq!(norm("/").unwrap(), "/");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/caf%C3%A9").unwrap(), "/café");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert!(matches!(
            norm("/a%2Fb"),
            Err(PathError::EncodedSeparator(_))
        ));
        assert!(matches!(
            norm("/a%5cb"),
            Err(PathError::EncodedSeparator(_))
        ));
        assert_eq!(norm("/.."), Err(PathError::AboveRoot));
        assert_eq!(norm("/a%00"), Err(PathError::BadCharacter));
        assert_eq!(norm("/%ff"), Err(PathError::BadCharacter));
        assert_eq!(norm("a"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn prefixes_match_whole_segments_and_rest_is_reencoded() {
        let p = NormalizedPath::parse("/crm/a%20b/c").unwrap();
        assert_eq!(p.strip_prefix("/crm").as_deref(), Some("/a%20b/c"));
        assert_eq!(p.strip_prefix("/cr"), None);
        assert_eq!(p.strip_prefix("/").as_deref(), Some("/crm/a%20b/c"));
        let exact = NormalizedPath::parse("/crm").unwrap();
        assert_eq!(exact.strip_prefix("/crm").as_deref(), Some(""));
        assert_eq!(upstream_path("/mcp", ""), "/mcp");
        assert_eq!(upstream_path("/mcp", "/x"), "/mcp/x");
        assert_eq!(upstream_path("/", ""), "/");
        assert_eq!(upstream_path("", "/x"), "/x");
    }
}
