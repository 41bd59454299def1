//! The CNI error object and its codes (spec section "Error").

use crate::version::Version;

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in network configuration.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist (the runtime need not call DEL).
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables, such as CNI_COMMAND or CNI_CONTAINERID.
pub const INVALID_ENVIRONMENT: u32 = 4;
/// I/O failure, such as a failure to read the network configuration from stdin.
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content, such as a bad JSON document.
pub const DECODE: u32 = 6;
/// Invalid network configuration: the JSON decodes but a value is not acceptable.
pub const INVALID_CONFIG: u32 = 7;
/// Try again later: a transient condition such as a lock held too long.
pub const TRY_AGAIN: u32 = 11;
/// STATUS: the plugin cannot serve ADD right now (e.g. no address left).
pub const NOT_AVAILABLE: u32 = 50;
/// STATUS: limited connectivity; ADD works but the network is degraded.
pub const LIMITED_CONNECTIVITY: u32 = 51;
/// Plugin-specific: the kernel refused an operation.
pub const KERNEL: u32 = 100;
/// Plugin-specific: CHECK found drift between the container and `prevResult`.
pub const DRIFT: u32 = 101;
/// Plugin-specific: the delegated IPAM plugin failed.
pub const DELEGATE: u32 = 102;
/// Plugin-specific: the interface named by CNI_IFNAME already exists in the container.
pub const INTERFACE_EXISTS: u32 = 103;
/// Plugin-specific: no free address left in a range set.
pub const EXHAUSTED: u32 = 104;

/// A CNI error: printed on stdout as the spec's JSON object, with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}{details}", if details.is_empty() { "" } else { ": " })]
pub struct CniError {
    /// The spec's error code (1-99 reserved by the spec, 100+ this plugin's).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// The longer explanation: which value was wrong and why.
    pub details: String,
}

impl CniError {
    /// An error with a code, a message and details.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Code 7: a configuration value that decodes but is not acceptable.
    pub fn config(details: impl Into<String>) -> Self {
        Self::new(INVALID_CONFIG, "invalid network configuration", details)
    }

    /// Code 4: a `CNI_*` variable missing or malformed; `var` names it.
    pub fn env(var: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            INVALID_ENVIRONMENT,
            format!("invalid environment variable {var}"),
            format!("{var}: {why}"),
        )
    }

    /// Code 100: a kernel operation failed.
    pub fn kernel(err: &crate::kernel::KernelError) -> Self {
        let mut details = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            details.push_str(": ");
            details.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::new(KERNEL, "kernel operation failed", details)
    }

    /// The JSON error object for `version`.
    pub fn to_json(&self, version: Version) -> String {
        serde_json::json!({
            "cniVersion": version.as_str(),
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}
