//! Semantic checks of declared objects, each failure naming the field path and the reason.

use std::collections::HashSet;
use std::fmt;

use super::{Kind, Object, Probe, parse_cpu, parse_memory};

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path from the object root, e.g. `spec.template.ports[1].name`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.push(path, message);
        }
    }
}

/// Upper bound on replicas of one app, so that a typo cannot start a million processes.
pub const MAX_REPLICAS: u32 = 10_000;

/// Whether `s` is an RFC 1123 label: lowercase letters, digits and `-`, at most 63, starting
/// and ending with a letter or digit.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn label_error(what: &str) -> String {
    format!(
        "{what} must be a DNS label: lowercase letters, digits and '-', at most 63 characters, \
         starting and ending with a letter or digit"
    )
}

/// Port names become SRV labels (`_http._tcp`): IANA service names, at most 15 characters,
/// with a letter.
fn is_port_name(s: &str) -> bool {
    is_dns_label(s) && s.len() <= 15 && s.bytes().any(|b| b.is_ascii_lowercase())
}

fn is_host_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Checks an object as a user declared it.
pub fn validate(obj: &Object) -> Result<(), Vec<FieldError>> {
    let mut e = Errors(Vec::new());
    let m = obj.meta();
    e.check(
        is_dns_label(&m.name),
        "metadata.name",
        label_error(&format!("{:?}", m.name)),
    );
    if obj.kind().namespaced() {
        e.check(
            is_dns_label(&m.namespace),
            "metadata.namespace",
            label_error(&format!("{:?}", m.namespace)),
        );
    }
    match obj {
        Object::App(app) => {
            let s = &app.spec;
            e.check(
                s.replicas <= MAX_REPLICAS,
                "spec.replicas",
                format!("{} is more than the limit of {MAX_REPLICAS}", s.replicas),
            );
            for (i, c) in s.constraints.iter().enumerate() {
                let path = format!("spec.constraints[{i}]");
                let (topology, app, weight) = match c {
                    super::PlacementConstraint::MaxPer { topology, max } => {
                        e.check(
                            *max >= 1,
                            format!("{path}.maxPer.max"),
                            "must be at least 1",
                        );
                        (topology, None, None)
                    }
                    super::PlacementConstraint::Spread {
                        topology, max_skew, ..
                    } => {
                        e.check(
                            *max_skew >= 1,
                            format!("{path}.spread.maxSkew"),
                            "must be at least 1",
                        );
                        (topology, None, None)
                    }
                    super::PlacementConstraint::Affinity {
                        app,
                        topology,
                        weight,
                        ..
                    }
                    | super::PlacementConstraint::AntiAffinity {
                        app,
                        topology,
                        weight,
                        ..
                    } => (topology, Some(app), Some(*weight)),
                };
                e.check(
                    !topology.is_empty() && topology.len() <= 253,
                    format!("{path}.topology"),
                    "`node`, or a node label such as `zone`",
                );
                if let Some(app) = app {
                    e.check(
                        is_dns_label(app),
                        format!("{path}.app"),
                        label_error(&format!("{app:?}")),
                    );
                }
                if let Some(w) = weight {
                    e.check(
                        (1..=100).contains(&w),
                        format!("{path}.weight"),
                        "must be between 1 and 100",
                    );
                }
            }
            let u = &s.update_strategy;
            e.check(
                u.max_surge > 0 || u.max_unavailable > 0,
                "spec.updateStrategy",
                "maxSurge and maxUnavailable cannot both be 0: no update could make progress",
            );
            e.check(
                u.progress_deadline_seconds >= 1,
                "spec.updateStrategy.progressDeadlineSeconds",
                "must be at least 1",
            );
            let t = &s.template;
            e.check(
                !t.command.trim().is_empty(),
                "spec.template.command",
                "must not be empty",
            );
            if let Err(msg) = parse_cpu(&t.resources.cpu) {
                e.push("spec.template.resources.cpu", msg);
            }
            if let Err(msg) = parse_memory(&t.resources.memory) {
                e.push("spec.template.resources.memory", msg);
            }
            let mut names = HashSet::new();
            for (i, p) in t.ports.iter().enumerate() {
                let path = format!("spec.template.ports[{i}].name");
                if !is_port_name(&p.name) {
                    e.push(
                        &path,
                        format!(
                            "{:?} must be a port name: a DNS label of at most 15 characters with a letter",
                            p.name
                        ),
                    );
                }
                e.check(
                    names.insert(p.name.as_str()),
                    path,
                    format!("duplicate port name {:?}", p.name),
                );
                e.check(
                    p.port != Some(0),
                    format!("spec.template.ports[{i}].port"),
                    "must be between 1 and 65535",
                );
            }
            for (k, _) in t.env.iter() {
                e.check(
                    !k.is_empty() && !k.contains('=') && !k.contains('\0'),
                    format!("spec.template.env.{k}"),
                    "environment variable names must be non-empty, without '=' or NUL",
                );
            }
            if let Some(p) = &t.readiness_probe {
                check_probe(&mut e, p, &names, "spec.template.readinessProbe");
            }
            if let Some(p) = &t.liveness_probe {
                check_probe(&mut e, p, &names, "spec.template.livenessProbe");
            }
        }
        Object::Service(svc) => {
            let s = &svc.spec;
            e.check(
                is_dns_label(&s.app),
                "spec.app",
                label_error(&format!("{:?}", s.app)),
            );
            e.check(!s.ports.is_empty(), "spec.ports", "a service needs a port");
            let mut names = HashSet::new();
            for (i, p) in s.ports.iter().enumerate() {
                e.check(
                    is_port_name(&p.name),
                    format!("spec.ports[{i}].name"),
                    format!("{:?} must be a port name: a DNS label of at most 15 characters with a letter", p.name),
                );
                e.check(
                    names.insert(p.name.as_str()),
                    format!("spec.ports[{i}].name"),
                    format!("duplicate port name {:?}", p.name),
                );
                e.check(
                    p.port != 0,
                    format!("spec.ports[{i}].port"),
                    "must be between 1 and 65535",
                );
                e.check(
                    is_port_name(p.target()),
                    format!("spec.ports[{i}].targetPort"),
                    format!("{:?} must name an app port", p.target()),
                );
            }
        }
        Object::Route(route) => {
            let s = &route.spec;
            e.check(!s.hosts.is_empty(), "spec.hosts", "a route needs a host");
            for (i, h) in s.hosts.iter().enumerate() {
                e.check(
                    is_host_name(h),
                    format!("spec.hosts[{i}]"),
                    format!("{h:?} is not a host name or a wildcard like *.example.com"),
                );
            }
            if let Some(tls) = &s.tls {
                e.check(
                    is_dns_label(&tls.secret),
                    "spec.tls.secret",
                    label_error(&format!("{:?}", tls.secret)),
                );
            }
            e.check(!s.rules.is_empty(), "spec.rules", "a route needs a rule");
            for (i, r) in s.rules.iter().enumerate() {
                e.check(
                    r.path.starts_with('/'),
                    format!("spec.rules[{i}].path"),
                    format!("{:?} must start with '/'", r.path),
                );
                e.check(
                    is_dns_label(&r.service),
                    format!("spec.rules[{i}].service"),
                    label_error(&format!("{:?}", r.service)),
                );
                e.check(
                    is_port_name(&r.port),
                    format!("spec.rules[{i}].port"),
                    format!("{:?} must name a service port", r.port),
                );
            }
        }
        Object::Secret(secret) => {
            for k in secret.data.keys() {
                e.check(
                    !k.is_empty()
                        && k.len() <= 253
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
                    format!("data.{k}"),
                    "keys are letters, digits, '-', '_' and '.'",
                );
            }
            if secret.kind == super::SecretType::Tls {
                for (key, marker) in [
                    ("tls.crt", "-----BEGIN CERTIFICATE-----"),
                    ("tls.key", "PRIVATE KEY-----"),
                ] {
                    match secret.data.get(key) {
                        None => e.push(format!("data.{key}"), "a tls secret needs it"),
                        Some(v) => e.check(v.contains(marker), format!("data.{key}"), "is not PEM"),
                    }
                }
            }
        }
        Object::Node(_) | Object::Instance(_) | Object::Endpoints(_) => {}
    }
    if e.0.is_empty() { Ok(()) } else { Err(e.0) }
}

fn check_probe(e: &mut Errors, p: &Probe, ports: &HashSet<&str>, path: &str) {
    let port = match (&p.http, &p.tcp, &p.exec) {
        (Some(h), None, None) => {
            e.check(
                h.path.starts_with('/'),
                format!("{path}.http.path"),
                format!("{:?} must start with '/'", h.path),
            );
            Some(("http", &h.port))
        }
        (None, Some(t), None) => Some(("tcp", &t.port)),
        (None, None, Some(x)) => {
            e.check(
                x.command.first().is_some_and(|c| !c.is_empty()),
                format!("{path}.exec.command"),
                "needs a program",
            );
            None
        }
        _ => {
            e.push(path, "give exactly one of http, tcp or exec");
            None
        }
    };
    if let Some((kind, port)) = port {
        e.check(
            ports.contains(port.as_str()),
            format!("{path}.{kind}.port"),
            format!("{port:?} is not one of the app's ports"),
        );
    }
    e.check(
        p.period_seconds >= 1,
        format!("{path}.periodSeconds"),
        "must be at least 1",
    );
    e.check(
        p.timeout_seconds >= 1,
        format!("{path}.timeoutSeconds"),
        "must be at least 1",
    );
    e.check(
        p.failure_threshold >= 1,
        format!("{path}.failureThreshold"),
        "must be at least 1",
    );
}

/// Kinds a user may declare with `berth apply`.
pub fn user_kind(kind: Kind) -> bool {
    matches!(kind, Kind::App | Kind::Service | Kind::Route | Kind::Secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(is_dns_label("hello-1"));
        assert!(!is_dns_label("Hello"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_port_name("http"));
        assert!(!is_port_name("8080"));
        assert!(is_host_name("*.example.com"));
        assert!(!is_host_name("a..b"));
    }
}
