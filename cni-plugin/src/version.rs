//! The CNI spec versions this plugin speaks, and what each allows.

use crate::error::{CniError, INCOMPATIBLE_VERSION};

/// A supported `cniVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 0.3.1: ADD and DEL; IP configs carry a `version` field.
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: drops the IP `version` field.
    V1_0_0,
    /// 1.1.0: adds GC and STATUS.
    V1_1_0,
}

/// Every version, oldest first, as `VERSION` reports them.
pub const SUPPORTED: [Version; 4] = [
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

impl Version {
    /// The newest supported version.
    pub const LATEST: Version = Version::V1_1_0;

    /// Parses a `cniVersion` string; an unknown version is error 1.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        match s {
            "0.3.1" => Ok(Version::V0_3_1),
            "0.4.0" => Ok(Version::V0_4_0),
            "1.0.0" => Ok(Version::V1_0_0),
            "1.1.0" => Ok(Version::V1_1_0),
            other => Err(CniError::new(
                INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!("cniVersion {other:?} is not one of 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
            )),
        }
    }

    /// The version as the spec spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// GC and STATUS exist from 1.1.0 on.
    pub fn has_gc_status(self) -> bool {
        self >= Version::V1_1_0
    }

    /// Before 1.0.0 every IP config carries `"version": "4"|"6"`.
    pub fn ip_has_version_field(self) -> bool {
        self < Version::V1_0_0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
