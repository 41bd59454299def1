//! Everything the proxy reads from a `Cookie` header before hyper's parsed headers reach the
//! balancer: the cookie-pair scan and the sticky-session token check. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    berth_proxy::fuzzing::cookie(data);
});
