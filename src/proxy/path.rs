//! Path normalization: what the policy sees is what the upstream gets.
//!
//! The agent's path is percent-decoded segment by segment, `.` and empty
//! segments (`//`) are dropped and `..` is resolved, all before routing and
//! before the policy runs. The forwarded path is re-encoded from the same
//! segments, so the upstream cannot read `/a/%2e%2e/admin` as anything but
//! `/admin`. Paths that cannot round-trip are refused: an encoded `/` or
//! `\`, control characters, invalid UTF-8, and `..` above the root.

use std::borrow::Cow;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use smallvec::SmallVec;

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

/// A path after normalization, as decoded segments. A segment with nothing
/// to decode borrows from the request, and a usual path's segments fit on
/// the stack: a plain path is parsed without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    segments: SmallVec<[Cow<'a, str>; 8]>,
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

/// One segment percent-decoded, refused when it cannot round-trip.
fn decode_segment(raw_seg: &str) -> Result<Cow<'_, str>, PathError> {
    let decoded = percent_decode_str(raw_seg)
        .decode_utf8()
        .map_err(|_| PathError::BadCharacter)?;
    if decoded.contains(['/', '\\']) {
        return Err(PathError::EncodedSeparator(raw_seg.to_string()));
    }
    if decoded.chars().any(char::is_control) {
        return Err(PathError::BadCharacter);
    }
    Ok(decoded)
}

impl<'a> NormalizedPath<'a> {
    pub fn parse(raw: &'a str) -> Result<NormalizedPath<'a>, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        // The usual path is printable ASCII with nothing encoded: each
        // segment is then its own decoding, and none can hold a separator
        // or a control character, so `decode_segment` would find nothing.
        let plain = raw
            .bytes()
            .all(|b| matches!(b, 0x21..=0x7e) && b != b'%' && b != b'\\');
        Self::parse_segments(raw, plain)
    }

    /// `plain`: every segment is known to decode to itself.
    fn parse_segments(raw: &'a str, plain: bool) -> Result<NormalizedPath<'a>, PathError> {
        let mut segments = SmallVec::new();
        let mut trailing_slash = false;
        for raw_seg in raw.split('/').skip(1) {
            let decoded = if plain {
                Cow::Borrowed(raw_seg)
            } else {
                decode_segment(raw_seg)?
            };
            trailing_slash = false;
            match decoded.as_ref() {
                "" | "." => trailing_slash = true,
                ".." => {
                    if segments.pop().is_none() {
                        return Err(PathError::AboveRoot);
                    }
                    trailing_slash = true;
                }
                _ => segments.push(decoded),
            }
        }
        Ok(NormalizedPath {
            trailing_slash: trailing_slash && !segments.is_empty(),
            segments,
        })
    }

    /// The decoded path the policy sees, e.g. `/crm/refunds`.
    pub fn decoded(&self) -> String {
        let mut out = String::with_capacity(self.joined_len(0));
        self.join_into(&mut out, 0, |out, s| out.push_str(s));
        out
    }

    /// If this path is `prefix` or below it, the encoded rest (`""` or
    /// `/x/y`). `prefix` is a configured route prefix such as `/crm`.
    pub fn strip_prefix(&self, prefix: &str) -> Option<String> {
        let mut wanted = 0;
        for p in prefix.split('/').filter(|s| !s.is_empty()) {
            if self.segments.get(wanted).is_none_or(|s| s != p) {
                return None;
            }
            wanted += 1;
        }
        if wanted == self.segments.len() {
            // The prefix itself, with or without its trailing `/`.
            return Some(String::new());
        }
        let mut rest = String::with_capacity(self.joined_len(wanted));
        self.join_into(&mut rest, wanted, |out, s| {
            out.extend(utf8_percent_encode(s, SEGMENT));
        });
        Some(rest)
    }

    /// `/`-joined segments from `from` on, with the trailing `/` (or `/`
    /// alone when there are none).
    fn join_into(&self, out: &mut String, from: usize, push: impl Fn(&mut String, &str)) {
        for s in &self.segments[from..] {
            out.push('/');
            push(out, s);
        }
        if from == self.segments.len() || self.trailing_slash {
            out.push('/');
        }
    }

    /// The decoded length of [`join_into`](Self::join_into)'s output, as a
    /// capacity.
    fn joined_len(&self, from: usize) -> usize {
        self.segments[from..]
            .iter()
            .map(|s| s.len() + 1)
            .sum::<usize>()
            + 1
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

    proptest::proptest! {
        #[test]
        fn a_plain_path_parses_as_the_decoding_path_would(raw in proptest::prop_oneof![
            "/[a-c0-9./~-]{0,24}",
            "/[a-f0-9./%\\\\~ \u{1}é-]{0,24}",
        ]) {
            proptest::prop_assert_eq!(
                NormalizedPath::parse(&raw),
                NormalizedPath::parse_segments(&raw, false)
            );
        }
    }

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
        let slashed = NormalizedPath::parse("/crm/").unwrap();
        assert_eq!(slashed.strip_prefix("/crm").as_deref(), Some(""));
        let below = NormalizedPath::parse("/crm/x/").unwrap();
        assert_eq!(below.strip_prefix("/crm").as_deref(), Some("/x/"));
        assert_eq!(below.strip_prefix("/crm/x").as_deref(), Some(""));
        let root = NormalizedPath::parse("/").unwrap();
        assert_eq!(root.strip_prefix("/").as_deref(), Some(""));
        assert_eq!(root.decoded(), "/");
        assert_eq!(below.decoded(), "/crm/x/");
        assert_eq!(upstream_path("/mcp", ""), "/mcp");
        assert_eq!(upstream_path("/mcp", "/x"), "/mcp/x");
        assert_eq!(upstream_path("/", ""), "/");
        assert_eq!(upstream_path("", "/x"), "/x");
    }
}
