//! The inputs of the scheduler: nodes and instance requests.

use std::collections::BTreeMap;

use crate::constraint::Constraint;
use crate::selector::Expression;
use crate::taint::{Taint, Toleration};

/// An amount of the resources the scheduler accounts for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Resources {
    /// Whether `self` fits into `free`.
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.cpu_millis <= free.cpu_millis && self.memory_bytes <= free.memory_bytes
    }

    pub(crate) fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }

    pub(crate) fn add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// Transport protocol of a host port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A port on the node's own addresses that an instance binds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// Port number; 0 is refused as a request (it means "any", which needs no scheduling).
    pub port: u16,
    /// Protocol: TCP and UDP ports of the same number do not conflict.
    pub protocol: Protocol,
}

impl HostPort {
    /// A TCP host port.
    pub fn tcp(port: u16) -> Self {
        HostPort {
            port,
            protocol: Protocol::Tcp,
        }
    }

    pub(crate) fn code(self) -> u32 {
        (match self.protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => 1 << 16,
        }) | u32::from(self.port)
    }
}

/// A node instances can be placed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// What instances may use in total.
    pub allocatable: Resources,
    /// Most instances the node runs at once.
    pub max_instances: u32,
    /// Node labels (zone, rack, ...), matched by node selectors and used as topology domains.
    pub labels: BTreeMap<String, String>,
    /// Taints: only instances that tolerate a `NoSchedule`/`NoExecute` taint may land here.
    pub taints: Vec<Taint>,
    /// Host ports already taken on the node by something the scheduler does not place.
    pub reserved_ports: Vec<HostPort>,
    /// False when the node is cordoned or not ready: nothing new lands on it.
    pub schedulable: bool,
}

impl Default for Node {
    /// An unnamed, empty, schedulable node with Kubernetes' default of 110 instances.
    fn default() -> Self {
        Node {
            name: String::new(),
            allocatable: Resources::default(),
            max_instances: 110,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            reserved_ports: Vec::new(),
            schedulable: true,
        }
    }
}

/// How an app likes its instances placed among the feasible nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Least allocated node first, and fewest instances of the same app: for services.
    #[default]
    Spread,
    /// Most allocated node first: for batch work, to keep whole nodes free.
    BinPack,
    /// The node whose CPU and memory shares stay closest to each other after placement, so
    /// that neither resource is stranded.
    Balanced,
}

/// One instance waiting for a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Request {
    /// Unique instance identity, used to release the placement later and to name victims.
    pub id: String,
    /// The app the instance belongs to (for spreading, affinity and anti-affinity).
    pub app: String,
    /// The tenant (namespace) the instance is accounted to for fairness.
    pub tenant: String,
    /// Higher runs first and may preempt lower; Kubernetes' default is 0.
    pub priority: i32,
    /// What the instance reserves on its node.
    pub resources: Resources,
    /// Host ports the instance binds on its node.
    pub host_ports: Vec<HostPort>,
    /// Labels the node must carry, all of them, with these values.
    pub node_selector: BTreeMap<String, String>,
    /// Label expressions the node must all satisfy (In, NotIn, Exists, DoesNotExist).
    pub node_affinity: Vec<Expression>,
    /// Taints the instance tolerates.
    pub tolerations: Vec<Toleration>,
    /// Placement constraints relative to other instances.
    pub constraints: Vec<Constraint>,
    /// Placement preference among feasible nodes.
    pub strategy: Strategy,
}

/// A request the scheduler refuses to consider, with what is wrong in it.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The identity is empty.
    #[error("request has an empty id")]
    EmptyId,
    /// The app is empty.
    #[error("request {id:?}: app is empty")]
    EmptyApp {
        /// The request.
        id: String,
    },
    /// The identity is already placed.
    #[error("request {id:?}: instance is already placed")]
    AlreadyPlaced {
        /// The request.
        id: String,
    },
    /// The same identity appears twice in one batch.
    #[error("request {id:?}: appears more than once in the batch")]
    Duplicate {
        /// The request.
        id: String,
    },
    /// A field holds a value that cannot be scheduled.
    #[error("request {id:?}: {field}: {reason}")]
    Invalid {
        /// The request.
        id: String,
        /// Which field, e.g. `constraints[1].max_skew`.
        field: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Request {
    /// Checks what the type cannot: port numbers, weights, skews, label expressions.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.id.is_empty() {
            return Err(RequestError::EmptyId);
        }
        if self.app.is_empty() {
            return Err(RequestError::EmptyApp {
                id: self.id.clone(),
            });
        }
        let invalid = |field: String, reason| RequestError::Invalid {
            id: self.id.clone(),
            field,
            reason,
        };
        for (i, p) in self.host_ports.iter().enumerate() {
            if p.port == 0 {
                return Err(invalid(
                    format!("host_ports[{i}]"),
                    "port must be between 1 and 65535",
                ));
            }
            if self.host_ports[..i].contains(p) {
                return Err(invalid(format!("host_ports[{i}]"), "port listed twice"));
            }
        }
        for (i, e) in self.node_affinity.iter().enumerate() {
            e.validate()
                .map_err(|reason| invalid(format!("node_affinity[{i}]"), reason))?;
        }
        for (i, t) in self.tolerations.iter().enumerate() {
            t.validate()
                .map_err(|reason| invalid(format!("tolerations[{i}]"), reason))?;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            c.validate()
                .map_err(|(field, reason)| invalid(format!("constraints[{i}].{field}"), reason))?;
        }
        Ok(())
    }
}
