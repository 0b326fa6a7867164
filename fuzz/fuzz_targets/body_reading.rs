//! Body reading (JSON, form): never panics; a body is read only as the kind
//! its headers declare; a JSON body accepted is one serde_json reads, and a
//! form accepted has no two fields a server could read as one.
#![no_main]

mod names;

use airlock::policy::ContextNeeds;
use airlock::proxy::call::{body_kind, json_body, read_form, BodyKind};
use libfuzzer_sys::fuzz_target;

/// Content types the first byte picks from, valid and tricky ones.
const TYPES: [Option<&str>; 8] = [
    None,
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
    Some("application/vnd.api+json"),
    Some("text/plain"),
    Some("multipart/form-data; boundary=x"),
    Some("application/json; charset=utf-16"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    if let Some(ct) = TYPES[usize::from(pick) % TYPES.len()] {
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
    }
    if pick & 0x80 != 0 {
        headers.insert(http::header::CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
    }
    let names = names::declared();
    let Ok(kind) = body_kind(&headers, body, false) else {
        return;
    };
    match kind {
        BodyKind::None => assert!(body.is_empty()),
        BodyKind::Opaque => panic!("an opaque body was accepted on a route that refuses them"),
        BodyKind::Json => {
            let bytes = bytes::Bytes::copy_from_slice(body);
            if json_body(&bytes, Some(ContextNeeds::everything()), &names).is_ok() {
                assert!(
                    serde_json::from_slice::<serde_json::Value>(body).is_ok(),
                    "accepted JSON serde_json refuses: {:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        BodyKind::Form => {
            let Ok(fields) = read_form(body, &names) else {
                return;
            };
            names::assert_distinct("form", fields.keys());
        }
    }
});
