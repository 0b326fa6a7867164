//! `json_scan` against serde_json, as a differential: the fast scanner
//! never says "surely valid" of a document the strict serde_json reader
//! refuses (syntax, trailing bytes, duplicate or case-folded keys at any
//! depth, look-alikes of declared names).
#![no_main]

mod names;

use airlock::policy::json_scan::surely_valid;
use airlock::policy::keys::NO_NAMES;
use airlock::policy::value::parse_json_named;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let declared = names::declared();
    for names in [&NO_NAMES, &declared] {
        if surely_valid(text, names) {
            if let Err(e) = parse_json_named(data, names) {
                panic!("the scanner accepted what serde_json refuses ({e}): {text:?}");
            }
        }
    }
});
