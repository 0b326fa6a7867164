//! The JSON-RPC reader of MCP routes: never panics, and whatever it accepts
//! is what serde_json reads, with no duplicate keys at any depth.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if airlock::mcp::jsonrpc::parse(data).is_ok() {
        assert!(
            airlock::policy::value::parse_json_strict(data).is_ok(),
            "the JSON-RPC reader accepted what strict JSON refuses: {:?}",
            String::from_utf8_lossy(data)
        );
    }
});
