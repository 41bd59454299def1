//! Label selectors, as Kubernetes writes them: `app=hello,tier!=db,canary,!legacy`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One requirement on an object's labels.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// All requirements must hold; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

/// A selector that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("label selector {selector:?}: {reason}")]
pub struct SelectorError {
    selector: String,
    reason: String,
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| SelectorError {
            selector: s.to_owned(),
            reason,
        };
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(k.trim().to_owned())
            } else {
                Requirement::Exists(part.to_owned())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::Absent(k) => k,
            };
            if !valid_key(key) {
                return Err(err(format!("{key:?} is not a label key")));
            }
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }
}

impl Selector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::Absent(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [("app", "hello"), ("tier", "web")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let m = |s: &str| s.parse::<Selector>().unwrap().matches(&labels);
        assert!(m(""));
        assert!(m("app=hello"));
        assert!(m("app==hello,tier"));
        assert!(m("tier!=db,!canary"));
        assert!(!m("app=other"));
        assert!(!m("canary"));
        assert!(!m("!tier"));
        assert!("a b=c".parse::<Selector>().is_err());
        assert_eq!(
            "app=hello, !x".parse::<Selector>().unwrap().to_string(),
            "app=hello,!x"
        );
    }
}
