//! The inputs of the scheduler: nodes and instance requests.

use std::collections::BTreeMap;

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

/// A node instances can be placed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// What instances may use in total.
    pub allocatable: Resources,
    /// Most instances the node runs at once.
    pub max_instances: u32,
    /// Node labels (zone, rack, ...), matched by node selectors.
    pub labels: BTreeMap<String, String>,
    /// False when the node is cordoned or not ready: nothing new lands on it.
    pub schedulable: bool,
}

/// How an app likes its instances placed among the feasible nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Least allocated node first, and fewest instances of the same app: for services.
    #[default]
    Spread,
    /// Most allocated node first: for batch work, to keep nodes free.
    BinPack,
}

/// One instance waiting for a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Unique instance identity, used to release the placement later.
    pub id: String,
    /// The app the instance belongs to (for spreading its replicas).
    pub app: String,
    /// What the instance reserves on its node.
    pub resources: Resources,
    /// Labels the node must carry, all of them, with these values.
    pub node_selector: BTreeMap<String, String>,
    /// Placement preference.
    pub strategy: Strategy,
}
