//! The API objects: what users declare (apps, services, routes) and what berth records (nodes,
//! instances, endpoints).
//!
//! Every object has the same envelope `{kind, metadata, spec, status}`; the store keeps them as
//! the [`Object`] enum.

mod meta;
mod objects;
mod quantity;
mod selector;
mod validate;

pub use meta::{Kind, Metadata};
pub use objects::*;
pub use quantity::{parse_cpu, parse_memory};
pub use selector::{Selector, SelectorError};
pub use validate::{
    FieldError, MAX_REPLICAS, is_dns_label, is_label_key, user_kind, validate, validate_node,
};

use serde::{Deserialize, Serialize};

/// Any object the store holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Object {
    /// A declared app.
    App(App),
    /// A declared service.
    Service(Service),
    /// A declared route.
    Route(Route),
    /// A registered node.
    Node(Node),
    /// A scheduled or running instance of an app.
    Instance(Instance),
    /// The ready endpoints of a service (computed).
    Endpoints(Endpoints),
    /// A TLS certificate and key, or opaque data.
    Secret(Secret),
}

macro_rules! each_object {
    ($self:expr, $o:ident => $e:expr) => {
        match $self {
            Object::App($o) => $e,
            Object::Service($o) => $e,
            Object::Route($o) => $e,
            Object::Node($o) => $e,
            Object::Instance($o) => $e,
            Object::Endpoints($o) => $e,
            Object::Secret($o) => $e,
        }
    };
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::App(_) => Kind::App,
            Object::Service(_) => Kind::Service,
            Object::Route(_) => Kind::Route,
            Object::Node(_) => Kind::Node,
            Object::Instance(_) => Kind::Instance,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::Secret(_) => Kind::Secret,
        }
    }

    /// Name, namespace, labels, revision.
    pub fn meta(&self) -> &Metadata {
        each_object!(self, o => &o.metadata)
    }

    /// Mutable metadata, for the store to stamp revisions.
    pub fn meta_mut(&mut self) -> &mut Metadata {
        each_object!(self, o => &mut o.metadata)
    }

    /// The store key: `kind/namespace/name`.
    pub fn key(&self) -> String {
        let m = self.meta();
        key(self.kind(), &m.namespace, &m.name)
    }

    /// Whether the user-declared part (spec and labels) equals the other object's.
    pub fn same_spec(&self, other: &Object) -> bool {
        if self.meta().labels != other.meta().labels {
            return false;
        }
        match (self, other) {
            (Object::App(a), Object::App(b)) => a.spec == b.spec,
            (Object::Service(a), Object::Service(b)) => a.spec == b.spec,
            (Object::Route(a), Object::Route(b)) => a.spec == b.spec,
            (Object::Node(a), Object::Node(b)) => a.spec == b.spec,
            (Object::Instance(a), Object::Instance(b)) => a.spec == b.spec,
            (Object::Endpoints(a), Object::Endpoints(b)) => a.addresses == b.addresses,
            (Object::Secret(a), Object::Secret(b)) => a.kind == b.kind && a.data == b.data,
            _ => false,
        }
    }

    /// Takes the spec (and labels) of `new`, keeping this object's status and bookkeeping.
    /// Objects of different kinds are left alone (store keys include the kind, so the store never
    /// pairs them).
    pub fn take_spec(&mut self, new: Object) {
        self.meta_mut().labels = new.meta().labels.clone();
        match (self, new) {
            (Object::App(a), Object::App(b)) => a.spec = b.spec,
            (Object::Service(a), Object::Service(b)) => a.spec = b.spec,
            (Object::Route(a), Object::Route(b)) => a.spec = b.spec,
            (Object::Node(a), Object::Node(b)) => a.spec = b.spec,
            (Object::Instance(a), Object::Instance(b)) => a.spec = b.spec,
            (Object::Endpoints(a), Object::Endpoints(b)) => a.addresses = b.addresses,
            (Object::Secret(a), Object::Secret(b)) => {
                a.kind = b.kind;
                a.data = b.data;
            }
            _ => {}
        }
    }
}

/// The store key of an object.
pub fn key(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}/{}/{}", kind.plural(), namespace, name)
}

impl Object {
    /// The object as a reader without access to secret data sees it: every value of a secret
    /// replaced by its length.
    pub fn redacted(&self) -> Object {
        match self {
            Object::Secret(s) => {
                let mut s = s.clone();
                for v in s.data.values_mut() {
                    *v = format!("<redacted: {} bytes>", v.len());
                }
                Object::Secret(s)
            }
            o => o.clone(),
        }
    }
}
