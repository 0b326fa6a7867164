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

use std::collections::HashMap;

use http::{header, HeaderMap};
use percent_encoding::percent_decode;
use serde_json::{Map, Value};

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
    let kind = media_kind(declared).ok_or_else(|| {
        format!("`Content-Type: {declared}` is neither JSON nor a form, and this route does not forward other bodies")
    })?;
    if let Some(charset) = charset(declared).filter(|c| !is_utf8(c)) {
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

/// The kind a declared media type is read as, when Airlock reads it.
fn media_kind(content_type: &str) -> Option<BodyKind> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
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

/// The `charset` parameter, unquoted.
fn charset(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|p| {
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
    let mut out = Map::new();
    // Per name as servers may read it: the first name seen, and whether
    // one came without a `[...]` part (it then clashes with any other).
    let mut bases: HashMap<String, (String, bool)> = HashMap::new();
    // Per name and `[...]` part, folded: the first name seen.
    let mut nested: HashMap<(String, String), String> = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode_component(k, what)?;
        let v = decode_component(v, what)?;
        let base = field_name(&k).into_owned();
        let suffix = match k.find('[') {
            Some(i) if i > 0 => fold(&k[i..]).into_owned(),
            _ => String::new(),
        };
        let clash = match bases.get(&base) {
            Some((first, plain)) if *plain || suffix.is_empty() => Some(first.clone()),
            _ if suffix.is_empty() => None,
            _ => nested.get(&(base.clone(), suffix.clone())).cloned(),
        };
        if let Some(first) = clash {
            let noun = what.noun();
            return Err(what.ambiguous(if first == k {
                format!("{noun} `{k}` is repeated; send it once")
            } else {
                format!("{noun}s `{first}` and `{k}` are one to some servers, which ignore case, `.` and `[]` in names; send one")
            }));
        }
        if let Some(declared) = names.field(&k) {
            return Err(what.ambiguous(format!(
                "{} `{k}` reads as `{declared}` to some servers; send `{declared}`",
                what.noun()
            )));
        }
        let entry = bases
            .entry(base.clone())
            .or_insert_with(|| (k.clone(), false));
        if suffix.is_empty() {
            entry.1 = true;
        } else {
            nested.entry((base, suffix)).or_insert_with(|| k.clone());
        }
        out.insert(k, Value::String(v));
    }
    Ok(out)
}

/// A form body as a record of strings (see [`parse_fields`]).
pub fn read_form(body: &[u8], names: &DeclaredNames) -> Result<Map<String, Value>, ProxyError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ProxyError::bad_request("bad_form", "the form body is not valid UTF-8"))?;
    parse_fields(text, names, Fields::Form)
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

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

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
