//! Why an instance found no node, counted per reason as kube-scheduler reports it.

use std::collections::BTreeMap;
use std::fmt;

/// Why one node was filtered out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The node is cordoned or not ready.
    NotSchedulable,
    /// The node has a `NoSchedule`/`NoExecute` taint the instance does not tolerate.
    Taint,
    /// The node's labels do not match the node selector or node affinity.
    NodeSelector,
    /// A requested host port is taken on the node.
    HostPorts,
    /// The node runs its maximum number of instances.
    TooManyInstances,
    /// Not enough free CPU.
    InsufficientCpu,
    /// Not enough free memory.
    InsufficientMemory,
    /// The app already has its maximum number of instances in the node's domain.
    MaxPerTopology,
    /// Placing here would exceed the maximum skew of a required topology spread.
    TopologySpread,
    /// No instance of a required affinity's app runs in the node's domain.
    Affinity,
    /// An instance of a required anti-affinity's app runs in the node's domain.
    AntiAffinity,
    /// An instance running in the node's domain has a required anti-affinity against this app.
    ExistingAntiAffinity,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::NotSchedulable => "unschedulable",
            Reason::Taint => "had untolerated taint",
            Reason::NodeSelector => "didn't match node selector",
            Reason::HostPorts => "didn't have free host ports",
            Reason::TooManyInstances => "too many instances",
            Reason::InsufficientCpu => "insufficient cpu",
            Reason::InsufficientMemory => "insufficient memory",
            Reason::MaxPerTopology => "had the app's maximum instances in its topology domain",
            Reason::TopologySpread => "didn't match topology spread constraints",
            Reason::Affinity => "didn't match app affinity rules",
            Reason::AntiAffinity => "didn't match app anti-affinity rules",
            Reason::ExistingAntiAffinity => {
                "didn't satisfy existing instances' anti-affinity rules"
            }
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
