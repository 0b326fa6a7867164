//! The query parser: never panics, a query it accepts has no two names
//! that a server could read as one (after PHP/Rails-style normalisation and
//! case folding; distinct `[...]` parts are distinct fields), and `_method`
//! is never accepted.
#![no_main]

mod names;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let names = names::declared();
    let Ok(fields) = airlock::proxy::call::parse_query(q, &names) else {
        return;
    };
    names::assert_distinct(q, fields.keys());
    for k in fields.keys() {
        assert!(!k.eq_ignore_ascii_case("_method"), "`{q}`: `_method` accepted");
    }
});
