//! Object metadata and kinds.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Name, namespace, labels and the store's bookkeeping, common to every object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Unique within the kind and namespace; a DNS label.
    pub name: String,
    /// Namespace; `default` when not given. Empty for cluster-scoped kinds (nodes).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Store revision of the last change of this object (set by the store; ignored on input).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
    /// Store revision at which the object was created (set by the store).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_revision: u64,
    /// Creation time, seconds since the Unix epoch (set by the store).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_at: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The namespace of objects that do not name one.
pub(crate) fn default_namespace() -> String {
    "default".to_owned()
}

impl Metadata {
    /// Metadata with a name in a namespace.
    pub fn new(namespace: &str, name: &str) -> Self {
        Metadata {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            ..Metadata::default()
        }
    }
}

/// The kinds of object, with their URL (plural) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// Apps.
    App,
    /// Services.
    Service,
    /// Routes.
    Route,
    /// Nodes (cluster-scoped).
    Node,
    /// Instances.
    Instance,
    /// Endpoints.
    Endpoints,
    /// Secrets.
    Secret,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] = [
        Kind::App,
        Kind::Service,
        Kind::Route,
        Kind::Node,
        Kind::Instance,
        Kind::Endpoints,
        Kind::Secret,
    ];

    /// The plural name used in URLs and keys.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::App => "apps",
            Kind::Service => "services",
            Kind::Route => "routes",
            Kind::Node => "nodes",
            Kind::Instance => "instances",
            Kind::Endpoints => "endpoints",
            Kind::Secret => "secrets",
        }
    }

    /// The kind as written in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Kind::App => "App",
            Kind::Service => "Service",
            Kind::Route => "Route",
            Kind::Node => "Node",
            Kind::Instance => "Instance",
            Kind::Endpoints => "Endpoints",
            Kind::Secret => "Secret",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Node
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind name that berth does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown kind {0:?} (known: apps, services, routes, nodes, instances, endpoints, secrets)")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    /// Accepts the manifest name, the plural, the singular and short forms, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let k = match s.to_ascii_lowercase().as_str() {
            "app" | "apps" => Kind::App,
            "service" | "services" | "svc" => Kind::Service,
            "route" | "routes" => Kind::Route,
            "node" | "nodes" | "no" => Kind::Node,
            "instance" | "instances" | "inst" => Kind::Instance,
            "endpoints" | "endpoint" | "ep" => Kind::Endpoints,
            "secret" | "secrets" => Kind::Secret,
            _ => return Err(UnknownKind(s.to_owned())),
        };
        Ok(k)
    }
}
