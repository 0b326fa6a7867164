//! What a request body is, read the way the tool's server reads it.
//!
//! Servers pick their body parser by `Content-Type` (Express, Rails,
//! Django, PHP), many inflate `Content-Encoding: gzip`, and some sniff a
//! byte order mark or UTF-16. So a body is read only when there is one
//! reading of it:
//!
//! | the request | `body_kind` | `context.body` |
//! | --- | --- | --- |
//! | no body | `none` | absent |
//! | `application/json` or `*/*+json` | `json` | the JSON value |
//! | `application/x-www-form-urlencoded` | `form` | a record of strings |
//! | anything else, on a route with `opaque_bodies: true` | `opaque` | absent |
//!
//! Anything else is refused with 415 `unsupported_body`: another media
//! type (multipart, text), a missing or repeated `Content-Type`, a charset
//! other than UTF-8, a `Content-Encoding` other than `identity`, a byte
//! order mark, or (in a form) NUL bytes. A body is never read as JSON
//! because it looks like JSON: only its declared type counts.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use http::{header, HeaderMap};
use percent_encoding::percent_decode;
use serde_json::{Map, Value};
use smallvec::SmallVec;

use super::error::ProxyError;
use crate::policy::keys::{field_name, fold, DeclaredNames};

/// How a call's body was read; the policy sees it as `context.body_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Json,
    Form,
    Opaque,
}

impl BodyKind {
    pub fn name(self) -> &'static str {
        match self {
            BodyKind::None => "none",
            BodyKind::Json => "json",
            BodyKind::Form => "form",
            BodyKind::Opaque => "opaque",
        }
    }
}

/// What decides how a route's bodies are read.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules<'a> {
    /// The schema's attribute names: keys and fields that read as one of
    /// them without being it are refused.
    pub names: &'a DeclaredNames,
    /// The route's `opaque_bodies`: forward what cannot be read, unread.
    pub opaque_bodies: bool,
}

const BOM: &[u8] = b"\xef\xbb\xbf";

/// The kind of `body` under `headers`; `Err` (415) for a body that cannot
/// be read one way only, unless `opaque_bodies` lets it through unread.
pub fn body_kind(
    headers: &HeaderMap,
    body: &[u8],
    opaque_bodies: bool,
) -> Result<BodyKind, ProxyError> {
    if body.is_empty() {
        return Ok(BodyKind::None);
    }
    match readable_kind(headers, body) {
        Ok(kind) => Ok(kind),
        Err(_) if opaque_bodies => Ok(BodyKind::Opaque),
        Err(why) => Err(ProxyError::UnsupportedBody(why)),
    }
}

/// `json` or `form`, or why the body cannot be read.
fn readable_kind(headers: &HeaderMap, body: &[u8]) -> Result<BodyKind, String> {
    for v in headers.get_all(header::CONTENT_ENCODING) {
        let text = v.to_str().unwrap_or("?");
        if !text.trim().eq_ignore_ascii_case("identity") {
            return Err(format!(
                "the body is sent with `Content-Encoding: {text}`, which Airlock does not read; send it uncompressed"
            ));
        }
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let declared = match (types.next(), types.next()) {
        (None, _) => {
            return Err("the body has no `Content-Type`; declare `application/json` or `application/x-www-form-urlencoded`".into())
        }
        (Some(_), Some(_)) => return Err("the body has more than one `Content-Type`".into()),
        (Some(v), None) => v
            .to_str()
            .map_err(|_| "`Content-Type` is not text".to_string())?,
    };
    let (essence, params) = split_media_type(declared);
    let kind = media_kind(essence).ok_or_else(|| {
        format!("`Content-Type: {declared}` is neither JSON nor a form, and this route does not forward other bodies")
    })?;
    if let Some(charset) = charset(params).filter(|c| !is_utf8(c)) {
        return Err(format!(
            "charset `{charset}` is not read; send the body as UTF-8"
        ));
    }
    if body.starts_with(BOM) {
        return Err("the body starts with a byte order mark, which some servers skip and others refuse; send it without".into());
    }
    if kind == BodyKind::Form && body.contains(&0) {
        return Err("the form body has NUL bytes".into());
    }
    Ok(kind)
}

/// A `Content-Type` split once at its first `;`: the media type, and its
/// parameters.
fn split_media_type(content_type: &str) -> (&str, &str) {
    super::split_once_ascii(content_type, b';').unwrap_or((content_type, ""))
}

/// The kind a declared media type (without parameters) is read as, when
/// Airlock reads it.
fn media_kind(essence: &str) -> Option<BodyKind> {
    let essence = essence.trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Some(BodyKind::Json);
    }
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Some(BodyKind::Form);
    }
    let (kind, subtype) = essence.split_once('/')?;
    let json_suffix = subtype.len() > 5
        && subtype
            .get(subtype.len() - 5..)
            .is_some_and(|s| s.eq_ignore_ascii_case("+json"));
    (!kind.is_empty() && json_suffix && !subtype.contains('/')).then_some(BodyKind::Json)
}

/// The `charset` parameter of a media type's `params`, unquoted.
fn charset(params: &str) -> Option<&str> {
    if params.is_empty() {
        return None;
    }
    params.split(';').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    })
}

fn is_utf8(charset: &str) -> bool {
    ["utf-8", "utf8", "us-ascii"]
        .iter()
        .any(|c| charset.eq_ignore_ascii_case(c))
}

/// Where a set of `name=value` fields came from, for the error's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    Query,
    Form,
}

impl Fields {
    fn noun(self) -> &'static str {
        match self {
            Fields::Query => "query parameter",
            Fields::Form => "form field",
        }
    }

    fn ambiguous(self, message: String) -> ProxyError {
        let kind = match self {
            Fields::Query => "ambiguous_query",
            Fields::Form => "ambiguous_form",
        };
        ProxyError::bad_request(kind, message)
    }
}

/// Reads `name=value` pairs joined by `&` (a query string or a form body)
/// into a record of strings (`+` and `%XX` decoded). Refused: names that
/// one server or another reads as one (a repeat, `dry_run` beside
/// `dry.run`, `dry_run[]` or `DRY_RUN`), a name that reads as a declared
/// name it is not, and text that is not UTF-8.
pub fn parse_fields(
    text: &str,
    names: &DeclaredNames,
    what: Fields,
) -> Result<Map<String, Value>, ProxyError> {
    // On the stack: most queries and forms have a few fields.
    let mut pairs: SmallVec<[(String, String); 4]> = SmallVec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        pairs.push((decode_component(k, what)?, decode_component(v, what)?));
    }
    let read: SmallVec<[ReadAs<'_>; 4]> = pairs.iter().map(|(k, _)| read_as(k)).collect();
    let clashing = clash(&read);
    drop(read);
    if let Some((i, j)) = clashing {
        let (first, k, noun) = (&pairs[i].0, &pairs[j].0, what.noun());
        return Err(what.ambiguous(if first == k {
            format!("{noun} `{k}` is repeated; send it once")
        } else {
            format!("{noun}s `{first}` and `{k}` are one to some servers, which ignore case, `.` and `[]` in names; send one")
        }));
    }
    for (k, _) in &pairs {
        if let Some(declared) = names.field(k) {
            return Err(what.ambiguous(format!(
                "{} `{k}` reads as `{declared}` to some servers; send `{declared}`",
                what.noun()
            )));
        }
    }
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect())
}

/// A field name as servers may read it: its [`field_name`], and its
/// `[...]` part folded (empty when it has none).
type ReadAs<'a> = (Cow<'a, str>, Cow<'a, str>);

fn read_as(name: &str) -> ReadAs<'_> {
    let suffix = match name.find('[') {
        Some(i) if i > 0 => fold(&name[i..]),
        _ => Cow::Borrowed(""),
    };
    (field_name(name), suffix)
}

/// The first two fields servers could take for one, by index: the same
/// name, unless both have `[...]` parts and these differ.
fn clash(read: &[ReadAs<'_>]) -> Option<(usize, usize)> {
    const FEW: usize = 16;
    if read.len() <= FEW {
        let collide = |a: &ReadAs<'_>, b: &ReadAs<'_>| {
            a.0 == b.0 && (a.1.is_empty() || b.1.is_empty() || a.1 == b.1)
        };
        return (1..read.len()).find_map(|j| {
            (0..j)
                .find(|&i| collide(&read[i], &read[j]))
                .map(|i| (i, j))
        });
    }
    // Many fields: grouped by name, so that this stays linear. Per name,
    // the first field, and the first without a `[...]` part.
    let mut by_name: HashMap<&str, (usize, Option<usize>)> = HashMap::new();
    let mut nested: HashMap<(&str, &str), usize> = HashMap::new();
    for (j, (name, suffix)) in read.iter().enumerate() {
        if let Some(&(first, plain)) = by_name.get(name.as_ref()) {
            if let Some(p) = plain {
                return Some((p, j));
            }
            if suffix.is_empty() {
                return Some((first, j));
            }
        }
        if !suffix.is_empty() {
            if let Some(&i) = nested.get(&(name.as_ref(), suffix.as_ref())) {
                return Some((i, j));
            }
            nested.insert((name, suffix), j);
        }
        let entry = by_name.entry(name).or_insert((j, None));
        if suffix.is_empty() {
            entry.1 = Some(j);
        }
    }
    None
}

/// Refuses a form field that is also a query parameter, names read as
/// servers read them: PHP's `$_REQUEST`, Flask's `request.values` and
/// Rails' `params` merge the two, and disagree on which one wins.
pub fn not_in_both(
    query: &Map<String, Value>,
    form: &Map<String, Value>,
) -> Result<(), ProxyError> {
    if query.is_empty() {
        return Ok(());
    }
    let names: HashSet<Cow<'_, str>> = query.keys().map(|k| field_name(k)).collect();
    match form.keys().find(|k| names.contains(&field_name(k))) {
        Some(k) => Err(Fields::Form.ambiguous(format!(
            "form field `{k}` is also a query parameter; servers that merge the two disagree on which wins"
        ))),
        None => Ok(()),
    }
}

/// A form body as a record of strings (see [`parse_fields`]).
pub fn read_form(body: &[u8], names: &DeclaredNames) -> Result<Map<String, Value>, ProxyError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ProxyError::bad_request("bad_form", "the form body is not valid UTF-8"))?;
    let fields = parse_fields(text, names, Fields::Form)?;
    if fields.keys().any(|k| super::call::is_method_field(k)) {
        return Err(super::screen::override_refused("form field `_method`"));
    }
    Ok(fields)
}

fn decode_component(s: &str, what: Fields) -> Result<String, ProxyError> {
    let plus = s.replace('+', " ");
    percent_decode(plus.as_bytes())
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| match what {
            Fields::Query => {
                ProxyError::bad_request("bad_query", "the query string is not valid UTF-8")
            }
            Fields::Form => ProxyError::bad_request("bad_form", "the form body is not valid UTF-8"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::keys::NO_NAMES;
    use crate::proxy::tests::headers;

    fn kind(pairs: &[(&str, &str)], body: &[u8]) -> Result<BodyKind, String> {
        body_kind(&headers(pairs), body, false).map_err(|e| e.kind().to_string())
    }

    #[test]
    fn a_body_is_read_by_its_declared_type_only() {
        let json = [("content-type", "application/json; charset=UTF-8")];
        assert_eq!(kind(&json, b"{}"), Ok(BodyKind::Json));
        assert_eq!(
            kind(&[("content-type", "application/vnd.api+json")], b"{}"),
            Ok(BodyKind::Json)
        );
        let form = [("content-type", "application/x-www-form-urlencoded")];
        assert_eq!(kind(&form, b"{\"a\":1}"), Ok(BodyKind::Form));
        assert_eq!(kind(&[], b""), Ok(BodyKind::None));
        assert_eq!(
            kind(&[("content-encoding", "gzip")], b""),
            Ok(BodyKind::None)
        );
    }

    #[test]
    fn what_cannot_be_read_one_way_is_refused_unless_the_route_takes_it_opaque() {
        let unsupported = Err("unsupported_body".to_string());
        for (pairs, body) in [
            (&[][..], &b"{\"amount\":500}"[..]),
            (&[("content-type", "text/plain")][..], b"{}"),
            (
                &[("content-type", "multipart/form-data; boundary=x")][..],
                b"--x",
            ),
            (
                &[
                    ("content-type", "application/json"),
                    ("content-type", "text/plain"),
                ][..],
                b"{}",
            ),
            (
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip"),
                ][..],
                b"\x1f\x8b",
            ),
            (
                &[("content-type", "application/json")][..],
                b"\xef\xbb\xbf{}",
            ),
            (
                &[("content-type", "application/json; charset=utf-16")][..],
                b"{\0}\0",
            ),
            (
                &[("content-type", "application/x-www-form-urlencoded")][..],
                b"a\0=1",
            ),
            (&[("content-type", "application/json+text")][..], b"{}"),
        ] {
            assert_eq!(kind(pairs, body), unsupported, "{pairs:?}");
            assert_eq!(
                body_kind(&headers(pairs), body, true).unwrap(),
                BodyKind::Opaque
            );
        }
    }

    #[test]
    fn fields_that_some_server_reads_as_one_are_refused() {
        let q = parse_fields("a=1&b=x+y%21&c", &NO_NAMES, Fields::Query).unwrap();
        assert_eq!(q["b"], "x y!");
        assert_eq!(q["c"], "");
        let ok = parse_fields("page[size]=1&page[number]=2", &NO_NAMES, Fields::Query);
        assert_eq!(ok.unwrap().len(), 2);
        for q in [
            "a=1&a=2",
            "dry_run=0&dry.run=1",
            "dry_run=0&dry_run[]=1",
            "dry_run=0&DRY_RUN=1",
            "dry_run=0&dry%20run=1",
            "page[size]=1&PAGE[Size]=2",
        ] {
            let e = parse_fields(q, &NO_NAMES, Fields::Query).unwrap_err();
            assert_eq!(e.kind(), "ambiguous_query", "{q}");
        }
        let many: Vec<String> = (0..40).map(|i| format!("p[{i}]=1")).collect();
        let many = many.join("&");
        assert!(parse_fields(&many, &NO_NAMES, Fields::Query).is_ok());
        for extra in ["p=1", "P[7]=2", "p[39]=3"] {
            let q = format!("{many}&{extra}");
            let e = parse_fields(&q, &NO_NAMES, Fields::Query).unwrap_err();
            assert_eq!(e.kind(), "ambiguous_query", "{extra}");
        }
        let e = parse_fields("amount=1&amount=2", &NO_NAMES, Fields::Form).unwrap_err();
        assert_eq!(e.kind(), "ambiguous_form");
    }

    #[test]
    fn a_field_that_reads_as_a_declared_name_it_is_not_is_refused() {
        let names = DeclaredNames::new(["dry_run", "amount"].map(String::from).into());
        assert!(parse_fields("dry_run=1&amount=5", &names, Fields::Query).is_ok());
        for q in ["dry.run=1", "DRY_RUN=1", "dry_run[]=1", "Amount=5"] {
            let e = parse_fields(q, &names, Fields::Query).unwrap_err();
            assert!(e.to_string().contains("reads as"), "{q}: {e}");
        }
    }

    #[test]
    fn a_form_is_a_record_of_strings() {
        let form = read_form(b"amount=500&customer_id=c-1&note=a%26b", &NO_NAMES).unwrap();
        assert_eq!(form["amount"], "500");
        assert_eq!(form["note"], "a&b");
        assert_eq!(
            read_form(b"amount=\xff", &NO_NAMES).unwrap_err().kind(),
            "bad_form"
        );
    }
}
