//! What an endpoint sends back to berth's own HTTP/1.1 client: the response head (status line,
//! fields, framing and keep-alive decisions) and a chunked body. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    berth_proxy::fuzzing::upstream_response(data);
});
