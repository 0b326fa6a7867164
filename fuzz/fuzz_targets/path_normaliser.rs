//! The path normaliser: never panics, and what it accepts is a fixed point.
//! The path it forwards normalises to what the policy saw, with no dot
//! segments and no `;` the agent did not send as is; folding case twice
//! changes nothing more than folding once.
#![no_main]

use airlock::path::{upstream_path, NormalizedPath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut path) = NormalizedPath::parse(raw) else {
        return;
    };
    check_round_trip(raw, &path);
    path.fold_case();
    let folded = path.decoded();
    check_round_trip(raw, &path);
    path.fold_case();
    assert_eq!(path.decoded(), folded, "`{raw}`: folding is not idempotent");
});

/// What a route with prefix `/` and upstream path `/` forwards reads back
/// as the path the policy saw.
fn check_round_trip(raw: &str, path: &NormalizedPath<'_>) {
    let forwarded = upstream_path("/", &path.encoded_from(0));
    let again = NormalizedPath::parse(&forwarded)
        .unwrap_or_else(|e| panic!("`{raw}` forwards as `{forwarded}`, which is refused: {e}"));
    assert_eq!(again.decoded(), path.decoded(), "`{raw}` forwards as `{forwarded}`");
    // A `;` the agent sent may vanish with its segment (`/x;a/..`), but one
    // must never appear: an encoded `%3B` is forwarded encoded.
    assert!(
        !again.has_params() || path.has_params(),
        "`{raw}` forwards as `{forwarded}`, with a live `;` the agent never sent"
    );
    for seg in forwarded.split('/') {
        assert!(seg != "." && seg != "..", "`{raw}` forwards a dot segment: `{forwarded}`");
    }
}
