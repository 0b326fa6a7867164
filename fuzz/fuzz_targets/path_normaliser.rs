//! The path normaliser: never panics, and what it accepts is a fixed point:
//! the path it forwards normalises to itself, with no dot segments, no
//! empty segments and no live `;`.
#![no_main]

use airlock::proxy::path::NormalizedPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = NormalizedPath::parse(raw) else {
        return;
    };
    // The whole path, as a route with prefix `/` and upstream path `/`
    // forwards it.
    let rest = path.strip_prefix("/").expect("every path is below `/`");
    let forwarded = airlock::proxy::path::upstream_path("/", &rest);
    let again = NormalizedPath::parse(&forwarded)
        .unwrap_or_else(|e| panic!("`{raw}` forwards as `{forwarded}`, which is refused: {e}"));
    assert_eq!(again.decoded(), path.decoded(), "`{raw}` is not a fixed point");
    for seg in forwarded.split('/') {
        assert!(seg != "." && seg != "..", "`{raw}` forwards a dot segment: `{forwarded}`");
    }
});
