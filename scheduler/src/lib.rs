//! Placement of instances on nodes: filter, then score, over a cluster snapshot kept up to date
//! incrementally.
//!
//! A pure library: no I/O and no clock. The control plane feeds it nodes and existing placements,
//! calls [`Cluster::schedule`] with a batch of pending instances and carries out the decisions
//! (including stopping the victims of a [`Decision::Preempted`]). Every decision is also applied
//! to the snapshot, so the next one in the same batch sees it.
//!
//! ```
//! use berth_scheduler::{Cluster, Constraint, Decision, Node, Request, Resources, Strategy};
//!
//! let mut cluster = Cluster::with_seed(1);
//! for name in ["a", "b"] {
//!     cluster.upsert_node(Node {
//!         name: name.into(),
//!         allocatable: Resources { cpu_millis: 4000, memory_bytes: 8 << 30 },
//!         ..Node::default()
//!     });
//! }
//! let replica = |i: u32| Request {
//!     id: format!("instances/default/db-{i}"),
//!     app: "default/db".into(),
//!     resources: Resources { cpu_millis: 500, memory_bytes: 1 << 30 },
//!     constraints: vec![Constraint::one_per_node()],
//!     strategy: Strategy::BinPack,
//!     ..Request::default()
//! };
//! let decisions = cluster.schedule(&[replica(0), replica(1), replica(2)]);
//! assert!(matches!(decisions[0], Decision::Placed { .. }));
//! assert!(matches!(decisions[1], Decision::Placed { .. }));
//! let Decision::Unschedulable(why) = &decisions[2] else { panic!() };
//! assert_eq!(
//!     why.to_string(),
//!     "0/2 nodes available: 2 had the app's maximum instances in its topology domain"
//! );
//! ```
//!
//! How a decision stays cheap at thousands of nodes is described in the `cluster` module: flat
//! per-node arrays, nodes ordered by free capacity so that a decision walks only the few nodes
//! that can still win, and per-app counts per node and per topology domain kept up to date on
//! every placement and release.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::print_stdout)]

mod cluster;
mod constraint;
mod model;
mod selector;
mod taint;
mod unschedulable;

pub use cluster::{Cluster, Decision, PlacementError, Usage};
pub use constraint::{Constraint, Mode, Topology};
pub use model::{HostPort, Node, Protocol, Request, RequestError, Resources, Strategy};
pub use selector::{Expression, Operator};
pub use taint::{Effect, Taint, Toleration, TolerationOperator};
pub use unschedulable::{Reason, Unschedulable};
