//! Path normalization: what the policy sees is what the upstream gets.
//!
//! The agent's path is percent-decoded segment by segment, `.` and empty
//! segments (`//`) are dropped and `..` is resolved, all before routing and
//! before the policy runs. The forwarded path is re-encoded from the same
//! segments, so the upstream cannot read `/a/%2e%2e/admin` as anything but
//! `/admin`. Paths that cannot round-trip are refused: an encoded `/` or
//! `\`, control characters, invalid UTF-8, and `..` above the root.
//!
//! Servlet containers (Tomcat, Jetty, Spring) cut `;params` off each
//! segment before resolving dot segments, so `/x/..;/admin` is `/admin`
//! to them. A segment that is `.` or `..` once its parameters are cut is
//! refused; a `;` sent as is marks the path as carrying parameters, which
//! a route refuses unless it allows them ([`NormalizedPath::has_params`]).
//! A `;`, `=` or `,` that arrived percent-encoded is data, and is
//! forwarded encoded again, never as a live delimiter.

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

/// Sub-delimiters that servers give a meaning inside a segment (path
/// parameters): re-encoded when they arrived encoded.
const DELIMITERS: [char; 3] = [';', '=', ','];

/// One segment: as the policy reads it, and as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment<'a> {
    text: Cow<'a, str>,
    raw: &'a str,
}

/// A path after normalization, as decoded segments. A segment with nothing
/// to decode borrows from the request, and a usual path's segments fit on
/// the stack: a plain path is parsed without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    segments: SmallVec<[Segment<'a>; 8]>,
    trailing_slash: bool,
    /// A `;` was sent as is somewhere in the path.
    params: bool,
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
    #[error(
        "segment `{0}` is a dot segment with `;` parameters, which servlet containers resolve"
    )]
    DotWithParams(String),
}

impl PathError {
    /// The `error` kind the agent is answered with.
    pub fn kind(&self) -> &'static str {
        match self {
            PathError::DotWithParams(_) => "path_params",
            _ => "bad_path",
        }
    }
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

/// Whether a decoded segment is `.` or `..` followed by `;` parameters.
fn is_dot_with_params(s: &str) -> bool {
    s.starts_with(".;") || s.starts_with("..;")
}

/// `s` in lower case as `str::to_lowercase` gives it (without its
/// word-final sigma rule), one char at a time so that comparing needs no
/// copy.
fn fold(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().flat_map(char::to_lowercase)
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
        let params = raw.contains(';');
        for raw_seg in raw.split('/').skip(1) {
            let text = if plain {
                Cow::Borrowed(raw_seg)
            } else {
                decode_segment(raw_seg)?
            };
            if is_dot_with_params(&text) {
                return Err(PathError::DotWithParams(raw_seg.to_string()));
            }
            trailing_slash = false;
            match text.as_ref() {
                "" | "." => trailing_slash = true,
                ".." => {
                    if segments.pop().is_none() {
                        return Err(PathError::AboveRoot);
                    }
                    trailing_slash = true;
                }
                _ => segments.push(Segment { text, raw: raw_seg }),
            }
        }
        Ok(NormalizedPath {
            trailing_slash: trailing_slash && !segments.is_empty(),
            segments,
            params,
        })
    }

    /// Whether the agent sent a `;` as is: path parameters, which servlet
    /// containers cut off before they route.
    pub fn has_params(&self) -> bool {
        self.params
    }

    /// Folds every segment to lower case, for a route whose tool ignores
    /// case: the policy and the upstream then read the same folded path.
    pub fn fold_case(&mut self) {
        for s in &mut self.segments {
            if fold(&s.text).ne(s.text.chars()) {
                s.text = Cow::Owned(fold(&s.text).collect());
            }
        }
    }

    /// The decoded path the policy sees, e.g. `/crm/refunds`.
    pub fn decoded(&self) -> String {
        let mut out = String::with_capacity(self.joined_len(0));
        self.join_into(&mut out, 0, |out, s| out.push_str(&s.text));
        out
    }

    /// How many segments route prefix `prefix` (such as `/crm`) takes when
    /// this path is `prefix` or below it; `fold` compares in lower case
    /// (`prefix` is then lower case already).
    pub fn prefix_len(&self, prefix: &str, fold_case: bool) -> Option<usize> {
        let mut wanted = 0;
        for p in prefix.split('/').filter(|s| !s.is_empty()) {
            let s = &self.segments.get(wanted)?.text;
            let same = if fold_case {
                fold(s).eq(p.chars())
            } else {
                s == p
            };
            if !same {
                return None;
            }
            wanted += 1;
        }
        Some(wanted)
    }

    /// The encoded path from segment `from` on (`""` when there is none, or
    /// `/x/y`), as the upstream gets it after a route prefix that took
    /// `from` segments.
    pub fn encoded_from(&self, from: usize) -> String {
        if from >= self.segments.len() {
            // The prefix itself, with or without its trailing `/`.
            return String::new();
        }
        let mut rest = String::with_capacity(self.joined_len(from));
        self.join_into(&mut rest, from, encode_segment);
        rest
    }

    /// If this path is `prefix` or below it, the encoded rest (`""` or
    /// `/x/y`).
    pub fn strip_prefix(&self, prefix: &str) -> Option<String> {
        self.prefix_len(prefix, false).map(|n| self.encoded_from(n))
    }

    /// `/`-joined segments from `from` on, with the trailing `/` (or `/`
    /// alone when there are none).
    fn join_into(&self, out: &mut String, from: usize, push: impl Fn(&mut String, &Segment<'_>)) {
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
            .map(|s| s.text.len() + 1)
            .sum::<usize>()
            + 1
    }
}

/// A segment as the upstream gets it: its text, escaped where needed, with
/// each `;`, `=` and `,` encoded again when it arrived encoded.
fn encode_segment(out: &mut String, s: &Segment<'_>) {
    if matches!(s.text, Cow::Borrowed(_)) || !s.raw.contains('%') {
        // Nothing was decoded: every delimiter in the text was sent as is.
        out.extend(utf8_percent_encode(&s.text, SEGMENT));
        return;
    }
    // Folding case never adds or removes a delimiter, so the text's
    // delimiters pair up, in order, with the raw segment's.
    let mut sent_encoded = raw_delimiters(s.raw);
    let mut text: &str = &s.text;
    while let Some(at) = text.find(DELIMITERS) {
        out.extend(utf8_percent_encode(&text[..at], SEGMENT));
        let d = text.as_bytes()[at];
        if sent_encoded.next().unwrap_or(true) {
            out.push_str(match d {
                b';' => "%3B",
                b'=' => "%3D",
                _ => "%2C",
            });
        } else {
            out.push(char::from(d));
        }
        text = &text[at + 1..];
    }
    out.extend(utf8_percent_encode(text, SEGMENT));
}

/// For each `;`, `=` or `,` of a raw segment in order, whether it was sent
/// percent-encoded.
fn raw_delimiters(raw: &str) -> impl Iterator<Item = bool> + '_ {
    let bytes = raw.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let hex = |at: usize| bytes.get(at).and_then(|h| char::from(*h).to_digit(16));
                if let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) {
                    i += 3;
                    if char::from_u32(high * 16 + low).is_some_and(|d| DELIMITERS.contains(&d)) {
                        return Some(true);
                    }
                    continue;
                }
            }
            i += 1;
            if DELIMITERS.contains(&char::from(b)) {
                return Some(false);
            }
        }
        None
    })
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

    proptest::proptest! {
        /// The upstream reads the forwarded path as the policy read the
        /// agent's: the same segments, and no parameters the agent did not
        /// send.
        #[test]
        fn the_forwarded_path_reads_back_as_what_the_policy_saw(
            raw in "(/([a-cA-C0-9.;=,%~ é-]|%3B|%3d|%2C|%2e|%25|%C3%89|%41|%E2%84%AA){0,6}){1,5}",
            fold_case: bool,
        ) {
            let Ok(mut judged) = NormalizedPath::parse(&raw) else {
                return Ok(());
            };
            if fold_case {
                judged.fold_case();
            }
            let forwarded = upstream_path("", &judged.encoded_from(0));
            let read = NormalizedPath::parse(&forwarded).unwrap();
            proptest::prop_assert_eq!(read.decoded(), judged.decoded(), "{}", forwarded);
            // A `;` the agent sent may go with a segment that `..` removes
            // (`/;/..`), but the upstream never sees one the agent did not
            // send as is.
            proptest::prop_assert!(!read.has_params() || judged.has_params(), "{}", forwarded);
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

    fn upstream(p: &str) -> String {
        NormalizedPath::parse(p).unwrap().encoded_from(0)
    }

    #[test]
    fn dot_segments_with_parameters_are_refused_however_they_are_spelled() {
        for p in [
            "/crm/x/..;/admin",
            "/crm/x/.;/admin",
            "/crm/..;jsessionid=1/admin",
            "/crm/x/%2e%2e;/admin",
            "/crm/x/..%3B/admin",
            "/crm/x/%2E;a=b",
        ] {
            assert!(
                matches!(NormalizedPath::parse(p), Err(PathError::DotWithParams(_))),
                "{p}"
            );
        }
        assert_eq!(PathError::DotWithParams("..;".into()).kind(), "path_params");
        // Only a whole `.` or `..` before the `;` is a dot segment.
        assert!(NormalizedPath::parse("/crm/...;x").is_ok());
        assert!(NormalizedPath::parse("/crm/.well-known;x").is_ok());
    }

    #[test]
    fn a_semicolon_sent_as_is_marks_parameters_and_an_encoded_one_does_not() {
        assert!(NormalizedPath::parse("/crm/admin;jsessionid=1")
            .unwrap()
            .has_params());
        assert!(NormalizedPath::parse("/crm/a;b/../c").unwrap().has_params());
        let encoded = NormalizedPath::parse("/crm/admin%3Bjsessionid=1").unwrap();
        assert!(!encoded.has_params());
        assert_eq!(encoded.decoded(), "/crm/admin;jsessionid=1");
        assert!(!NormalizedPath::parse("/crm/a=b,c").unwrap().has_params());
    }

    #[test]
    fn delimiters_that_arrived_encoded_are_forwarded_encoded() {
        assert_eq!(upstream("/a%3Bb"), "/a%3Bb");
        assert_eq!(upstream("/a%3bb%3D1%2c2"), "/a%3Bb%3D1%2C2");
        // Sent as is, they stay as they were, in the same segment too.
        assert_eq!(upstream("/a;v=1,2"), "/a;v=1,2");
        assert_eq!(upstream("/a%20b;v=1%3D2"), "/a%20b;v=1%3D2");
        assert_eq!(upstream("/%41=%2C"), "/A=%2C");
        // Everything else decodes and is re-encoded as before.
        assert_eq!(upstream("/caf%C3%A9"), "/caf%C3%A9");
        assert_eq!(upstream("/%7e%2"), "/~%252");
    }

    #[test]
    fn raw_delimiters_pair_each_delimiter_with_how_it_was_sent() {
        let flags: Vec<bool> = raw_delimiters("a;b%3Bc%3d%2,d%2C%zz=").collect();
        assert_eq!(flags, [false, true, true, false, true, false]);
    }

    #[test]
    fn case_folding_is_for_the_policy_and_the_upstream_alike() {
        // `%E2%84%AA` is the Kelvin sign, whose lower case is `k`.
        let mut p = NormalizedPath::parse("/CRM/Admin/%C3%89T%C3%89;X%3DY/%E2%84%AAey").unwrap();
        assert_eq!(p.prefix_len("/crm", true), Some(1));
        assert_eq!(p.prefix_len("/crm", false), None);
        assert_eq!(p.prefix_len("/crm/admin", true), Some(2));
        p.fold_case();
        assert_eq!(p.decoded(), "/crm/admin/été;x=y/key");
        assert_eq!(p.encoded_from(1), "/admin/%C3%A9t%C3%A9;x%3Dy/key");
        let plain = NormalizedPath::parse("/crm/x").unwrap();
        let mut folded = plain.clone();
        folded.fold_case();
        assert_eq!(plain, folded);
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
