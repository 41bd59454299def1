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

/// Whether `s` is a Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 letters, digits, `-`, `_` and `.` that starts and ends alphanumeric.
pub fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label));
    name_ok && prefix_ok
}

/// Whether `s` is a label value: empty, or at most 63 letters, digits, `-`, `_` and `.`,
/// starting and ending alphanumeric.
fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

const LABEL_KEY: &str = "must be a label key: an optional DNS prefix and '/', then at most 63 \
                         letters, digits, '-', '_' and '.', starting and ending alphanumeric";
const LABEL_VALUE: &str = "must be empty or at most 63 letters, digits, '-', '_' and '.', \
                           starting and ending alphanumeric";

/// Checks a node as an agent or admin PUTs it: its pod subnet and taints.
pub fn validate_node(node: &super::Node) -> Result<(), Vec<FieldError>> {
    let mut e = Errors(Vec::new());
    if let Some(s) = &node.spec.pod_subnet {
        match s.parse::<ipnet::IpNet>() {
            Err(_) => e.push(
                "spec.podSubnet",
                format!("{s:?} is not a CIDR such as 10.244.1.0/24"),
            ),
            Ok(n) if n.trunc() != n => e.push(
                "spec.podSubnet",
                format!("{s}: host bits are set (did you mean {}?)", n.trunc()),
            ),
            Ok(n) if n.prefix_len() + 1 >= n.max_prefix_len() => e.push(
                "spec.podSubnet",
                format!("{s} is too small for a gateway and an instance"),
            ),
            Ok(_) => {}
        }
    }
    let mut seen = HashSet::new();
    for (i, t) in node.spec.taints.iter().enumerate() {
        let path = format!("spec.taints[{i}]");
        e.check(
            is_label_key(&t.key),
            format!("{path}.key"),
            format!("{:?} {LABEL_KEY}", t.key),
        );
        e.check(
            is_label_value(&t.value),
            format!("{path}.value"),
            format!("{:?} {LABEL_VALUE}", t.value),
        );
        e.check(
            seen.insert((t.key.as_str(), t.effect)),
            path.clone(),
            format!(
                "duplicate taint {:?} with effect {}",
                t.key,
                t.effect.as_str()
            ),
        );
    }
    if e.0.is_empty() { Ok(()) } else { Err(e.0) }
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
            for (i, t) in s.tolerations.iter().enumerate() {
                let path = format!("spec.tolerations[{i}]");
                match t.operator {
                    super::TolerationOperator::Exists => e.check(
                        t.value.is_empty(),
                        format!("{path}.value"),
                        "must be empty with operator Exists",
                    ),
                    super::TolerationOperator::Equal => e.check(
                        !t.key.is_empty(),
                        format!("{path}.key"),
                        "an empty key (every taint) needs operator Exists",
                    ),
                }
                e.check(
                    t.key.is_empty() || is_label_key(&t.key),
                    format!("{path}.key"),
                    format!("{:?} {LABEL_KEY}", t.key),
                );
                e.check(
                    is_label_value(&t.value),
                    format!("{path}.value"),
                    format!("{:?} {LABEL_VALUE}", t.value),
                );
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
            e.check(
                !(s.headless && s.cluster_ip.is_some()),
                "spec.clusterIP",
                "a headless service has no VIP",
            );
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
                if let Some(proto) = &p.app_protocol {
                    e.check(
                        matches!(proto.as_str(), "http" | "tcp"),
                        format!("spec.ports[{i}].appProtocol"),
                        format!("{proto:?} must be http or tcp"),
                    );
                    e.check(
                        !(proto == "http" && p.protocol == super::Protocol::Udp),
                        format!("spec.ports[{i}].appProtocol"),
                        "http needs protocol tcp",
                    );
                }
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
                if let Some(t) = r.timeout_ms {
                    e.check(
                        t <= 3_600_000,
                        format!("spec.rules[{i}].timeoutMs"),
                        "at most 3600000 (one hour)",
                    );
                }
                if let Some(n) = r.retries {
                    e.check(n <= 10, format!("spec.rules[{i}].retries"), "at most 10");
                }
            }
            if let Some(st) = &s.sticky {
                e.check(
                    !st.cookie.is_empty()
                        && st.cookie.len() <= 64
                        && st
                            .cookie
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
                    "spec.sticky.cookie",
                    format!(
                        "{:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                        st.cookie
                    ),
                );
                e.check(
                    st.path.starts_with('/'),
                    "spec.sticky.path",
                    format!("{:?} must start with '/'", st.path),
                );
                e.check(
                    (1..=31_536_000).contains(&st.ttl_seconds),
                    "spec.sticky.ttlSeconds",
                    "between 1 and 31536000 (a year)",
                );
                if let Some(secret) = &st.secret {
                    e.check(
                        is_dns_label(secret),
                        "spec.sticky.secret",
                        label_error(&format!("{secret:?}")),
                    );
                }
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

    #[test]
    fn label_keys() {
        assert!(is_label_key("dedicated"));
        assert!(is_label_key("example.com/gpu"));
        assert!(is_label_key("node.berth.io/maintenance"));
        assert!(!is_label_key(""));
        assert!(!is_label_key("-x"));
        assert!(!is_label_key("a/"));
        assert!(!is_label_key("/a"));
        assert!(!is_label_key("Example.com/a"));
        assert!(!is_label_key(&"a".repeat(64)));
        assert!(is_label_value("") && is_label_value("gpu-1"));
        assert!(!is_label_value("a b"));
    }

    fn errors(v: serde_json::Value) -> Vec<String> {
        let o: Object = serde_json::from_value(v).unwrap();
        match validate(&o) {
            Ok(()) => vec![],
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn tolerations_are_checked() {
        let app = |tolerations: serde_json::Value| {
            serde_json::json!({"kind": "App", "metadata": {"name": "a"},
                "spec": {"template": {"command": "x"}, "tolerations": tolerations}})
        };
        assert!(
            errors(app(serde_json::json!([
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Exists"},
                {"operator": "Exists"}
            ])))
            .is_empty()
        );
        assert_eq!(
            errors(app(serde_json::json!([
                {"value": "gpu"},
                {"key": "spot", "operator": "Exists", "value": "x"},
                {"key": "-bad", "operator": "Exists"}
            ]))),
            [
                "spec.tolerations[0].key: an empty key (every taint) needs operator Exists",
                "spec.tolerations[1].value: must be empty with operator Exists",
                "spec.tolerations[2].key: \"-bad\" must be a label key: an optional DNS prefix \
                 and '/', then at most 63 letters, digits, '-', '_' and '.', starting and ending \
                 alphanumeric",
            ]
        );
    }

    #[test]
    fn service_vip_fields_are_checked() {
        let svc = |spec: serde_json::Value| serde_json::json!({"kind": "Service", "metadata": {"name": "s"}, "spec": spec});
        assert_eq!(
            errors(svc(
                serde_json::json!({"app": "a", "headless": true, "clusterIP": "10.96.0.9",
                "ports": [{"name": "dns", "port": 53, "protocol": "udp", "appProtocol": "http"},
                          {"name": "web", "port": 80, "appProtocol": "grpc"}]})
            )),
            [
                "spec.clusterIP: a headless service has no VIP",
                "spec.ports[0].appProtocol: http needs protocol tcp",
                "spec.ports[1].appProtocol: \"grpc\" must be http or tcp",
            ]
        );
    }

    #[test]
    fn nodes_are_checked() {
        let node = |spec: serde_json::Value| -> Vec<String> {
            let mut full = serde_json::json!({"address": "10.0.0.1", "cpuMillis": 1000,
                "memoryBytes": 1, "maxInstances": 1});
            full.as_object_mut()
                .unwrap()
                .extend(spec.as_object().unwrap().clone());
            let n: super::super::Node = serde_json::from_value(
                serde_json::json!({"metadata": {"name": "n"}, "spec": full}),
            )
            .unwrap();
            match validate_node(&n) {
                Ok(()) => vec![],
                Err(e) => e.iter().map(ToString::to_string).collect(),
            }
        };
        assert!(node(serde_json::json!({"podSubnet": "fd00:10:244:1::/64"})).is_empty());
        assert_eq!(
            node(serde_json::json!({"podSubnet": "10.244.1.0/32",
                "taints": [{"key": "a", "value": "b c", "effect": "NoExecute"}]})),
            [
                "spec.podSubnet: 10.244.1.0/32 is too small for a gateway and an instance",
                "spec.taints[0].value: \"b c\" must be empty or at most 63 letters, digits, '-', \
                 '_' and '.', starting and ending alphanumeric",
            ]
        );
    }
}
