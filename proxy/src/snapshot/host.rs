//! Virtual host lookup by domain: exact, then wildcard suffix (longest first), then "*".

use std::collections::hash_map::Entry;

use ahash::AHashMap;

use crate::error::ConfigError;

/// Domains to virtual host indices.
#[derive(Debug, Default)]
pub(super) struct HostTable {
    exact: AHashMap<Box<str>, usize>,
    /// Keyed by the suffix with its leading dot: "*.example.com" is stored as ".example.com".
    wildcard: AHashMap<Box<str>, usize>,
    default: Option<usize>,
}

impl HostTable {
    /// Adds `domain` for virtual host `index`; `name_of` names the virtual host that already
    /// claimed a domain, for the error.
    pub(super) fn insert(
        &mut self,
        domain: &str,
        index: usize,
        virtual_host: &str,
        name_of: impl Fn(usize) -> String,
    ) -> Result<(), ConfigError> {
        let invalid = |reason| ConfigError::InvalidDomain {
            domain: domain.to_owned(),
            virtual_host: virtual_host.to_owned(),
            reason,
        };
        let normalised = domain.trim_end_matches('.').to_ascii_lowercase();
        if normalised == "*" {
            return match self.default {
                Some(other) => Err(duplicate(normalised, virtual_host, name_of(other))),
                None => {
                    self.default = Some(index);
                    Ok(())
                }
            };
        }
        let (map, key) = match normalised.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => (&mut self.wildcard, suffix),
            Some(_) => return Err(invalid("a wildcard must be \"*\" or start with \"*.\"")),
            None => (&mut self.exact, normalised.as_str()),
        };
        if key.is_empty() || key == "." || key.contains("..") {
            return Err(invalid("empty label"));
        }
        if key.contains('*') {
            return Err(invalid("'*' is only allowed as the whole first label"));
        }
        if key.contains(':') && !key.starts_with('[') {
            return Err(invalid("a domain must not include a port"));
        }
        match map.entry(Box::from(key)) {
            Entry::Occupied(e) => Err(duplicate(
                normalised.clone(),
                virtual_host,
                name_of(*e.get()),
            )),
            Entry::Vacant(e) => {
                e.insert(index);
                Ok(())
            }
        }
    }

    /// The virtual host for a normalised host: lowercase, without port or trailing dot.
    pub(super) fn find(&self, host: &str) -> Option<usize> {
        if let Some(&index) = self.exact.get(host) {
            return Some(index);
        }
        if !self.wildcard.is_empty() {
            // Suffixes from longest to shortest, each starting at a dot that has at least one
            // character before it.
            let found = host
                .char_indices()
                .filter(|&(i, c)| c == '.' && i > 0)
                .find_map(|(i, _)| self.wildcard.get(&host[i..]));
            if let Some(&index) = found {
                return Some(index);
            }
        }
        self.default
    }
}

fn duplicate(domain: String, virtual_host: &str, other: String) -> ConfigError {
    ConfigError::DuplicateDomain {
        domain,
        virtual_host: virtual_host.to_owned(),
        other,
    }
}
