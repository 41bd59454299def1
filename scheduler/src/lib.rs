//! Placement of instances on nodes: filter, then score, over a cluster snapshot kept up to date
//! incrementally.
//!
//! A pure library: no I/O and no clock. The control plane feeds it nodes and existing placements,
//! calls [`Cluster::schedule`] with a batch of pending instances and carries out the decisions.
//! Every decision is also applied to the snapshot, so the next one in the same batch sees it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::print_stdout)]

mod cluster;
mod model;
mod unschedulable;

pub use cluster::{Cluster, Decision, PlacementError};
pub use model::{Node, Request, Resources, Strategy};
pub use unschedulable::{Reason, Unschedulable};
