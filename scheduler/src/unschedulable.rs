//! Why an instance found no node, counted per reason as kube-scheduler reports it.

use std::collections::BTreeMap;
use std::fmt;

/// Why one node was filtered out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The node is cordoned or not ready.
    NotSchedulable,
    /// The node's labels do not match the node selector.
    NodeSelector,
    /// The node runs its maximum number of instances.
    TooManyInstances,
    /// Not enough free CPU.
    InsufficientCpu,
    /// Not enough free memory.
    InsufficientMemory,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::NotSchedulable => "unschedulable",
            Reason::NodeSelector => "didn't match node selector",
            Reason::TooManyInstances => "too many instances",
            Reason::InsufficientCpu => "insufficient cpu",
            Reason::InsufficientMemory => "insufficient memory",
        })
    }
}

/// The nodes that were tried and why each one failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes considered.
    pub nodes: usize,
    /// Nodes rejected, per reason (a node short of CPU and memory counts under both).
    pub reasons: BTreeMap<Reason, usize>,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes available", self.nodes)?;
        // Largest counts first, ties in text order, as kube-scheduler prints them.
        let mut reasons: Vec<_> = self.reasons.iter().collect();
        reasons.sort_by(|a, b| {
            b.1.cmp(a.1)
                .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
        });
        for (i, (reason, count)) in reasons.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { ", " })?;
            write!(f, "{count} {reason}")?;
        }
        Ok(())
    }
}
