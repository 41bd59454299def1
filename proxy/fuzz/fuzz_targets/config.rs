//! Config files (YAML and JSON) are parsed, validated and built; bad ones must be errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    berth_proxy::fuzzing::config(data);
});
