//! The CLI's configuration file, like a kubeconfig: which server, and which token.
//!
//! `$BERTH_CONFIG`, else `$XDG_CONFIG_HOME/berth/config.yaml`, else
//! `~/.config/berth/config.yaml`. Flags and `BERTH_SERVER`/`BERTH_TOKEN` win over it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Marks a file `berth dev` wrote, which a later `berth dev` may replace.
const DEV_MARK: &str = "# written by berth dev";

/// The settings in the file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// API server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// CA certificate (PEM file) of an https server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
}

/// Where the configuration file is.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("berth").join("config.yaml"))
}

/// Reads the configuration file; a missing file is an empty configuration.
pub fn load() -> Result<ClientConfig> {
    let Some(p) = path() else {
        return Ok(ClientConfig::default());
    };
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{}: not a berth config", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Writes the configuration for `berth dev` unless the file holds someone else's settings.
/// Returns whether it wrote.
pub fn write_for_dev(path: &Path, config: &ClientConfig) -> Result<bool> {
    if let Ok(existing) = std::fs::read_to_string(path)
        && !existing.starts_with(DEV_MARK)
    {
        return Ok(false);
    }
    let text = format!(
        "{DEV_MARK}: replaced by the next berth dev\n{}",
        serde_yaml_ng::to_string(config)?
    );
    crate::fsutil::write_private(path, &text)?;
    Ok(true)
}
