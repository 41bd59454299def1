//! berth's CNI 1.1 plugin (bridge + veth + built-in IPAM). Issue 5 builds it; until then the
//! binary answers every command with a CNI error, so a runtime that calls it fails clearly.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The CNI error object (spec section "Error"), printed on stdout with a non-zero exit.
pub fn not_built_error(version: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","code":999,"msg":"berth-cni is not built yet","details":"the bridge, veth and IPAM plugin is tracked as berth issue 5"}}"#
    )
}
