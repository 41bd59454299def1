//! Whatever a runtime writes on stdin: the network configuration, the prevResult inside it,
//! and the IPAM ranges must parse or fail with a CNI error, never panic; a parsed result must
//! render and parse back in every version.
#![no_main]

use berth_cni::config::NetConf;
use berth_cni::result::CniResult;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = NetConf::parse(data)
        && let Some(prev) = &conf.prev_result
        && let Ok(r) = CniResult::from_value(prev)
    {
        for v in berth_cni::version::SUPPORTED {
            let back = CniResult::from_value(&r.to_value(v)).expect("own output parses");
            assert_eq!(back.ips, r.ips);
            assert_eq!(back.routes, r.routes);
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = CniResult::from_value(&v);
        let _ = berth_cni::NetworkList::parse(data);
    }
});
