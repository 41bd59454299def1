//! Placement constraints relative to other instances: per-topology limits, topology spread,
//! affinity and anti-affinity between apps.

/// The domains a constraint counts instances in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topology {
    /// Each node is its own domain (Kubernetes' `kubernetes.io/hostname`).
    Node,
    /// Nodes sharing a value of this label form one domain (e.g. `topology.kubernetes.io/zone`).
    /// A node without the label belongs to no domain.
    Label(String),
}

/// Whether a constraint must hold or is only preferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Nodes that break it are filtered out.
    Required,
    /// Nodes that break it score lower; weight 1 to 100, as in Kubernetes.
    Preferred {
        /// How much it counts against other preferences (1..=100).
        weight: u32,
    },
}

/// A rule about where an instance may go relative to other instances.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Constraint {
    /// At most `max` instances of the app per domain (always required).
    MaxPer {
        /// The domains.
        topology: Topology,
        /// The limit, at least 1.
        max: u32,
    },
    /// Instances of the app spread over the domains: after placement, the count in the chosen
    /// domain exceeds the smallest count by at most `max_skew` (Kubernetes'
    /// `topologySpreadConstraints`).
    Spread {
        /// The domains.
        topology: Topology,
        /// Allowed difference, at least 1.
        max_skew: u32,
        /// Required (`DoNotSchedule`) or preferred (`ScheduleAnyway`).
        mode: Mode,
    },
    /// In a domain that runs an instance of `app`.
    Affinity {
        /// The other app.
        app: String,
        /// The domains.
        topology: Topology,
        /// Required or preferred.
        mode: Mode,
    },
    /// In a domain that runs no instance of `app` (which may be the instance's own app).
    AntiAffinity {
        /// The other app.
        app: String,
        /// The domains.
        topology: Topology,
        /// Required or preferred.
        mode: Mode,
    },
}

impl Constraint {
    /// At most one instance of the app per node.
    pub fn one_per_node() -> Self {
        Constraint::MaxPer {
            topology: Topology::Node,
            max: 1,
        }
    }

    pub(crate) fn topology(&self) -> &Topology {
        match self {
            Constraint::MaxPer { topology, .. }
            | Constraint::Spread { topology, .. }
            | Constraint::Affinity { topology, .. }
            | Constraint::AntiAffinity { topology, .. } => topology,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if let Topology::Label(k) = self.topology()
            && k.is_empty()
        {
            return Err(("topology", "label key is empty"));
        }
        let mode = match self {
            Constraint::MaxPer { max: 0, .. } => return Err(("max", "must be at least 1")),
            Constraint::MaxPer { .. } => None,
            Constraint::Spread { max_skew: 0, .. } => {
                return Err(("max_skew", "must be at least 1"));
            }
            Constraint::Spread { mode, .. } => Some(mode),
            Constraint::Affinity { app, mode, .. } | Constraint::AntiAffinity { app, mode, .. } => {
                if app.is_empty() {
                    return Err(("app", "is empty"));
                }
                Some(mode)
            }
        };
        if let Some(Mode::Preferred { weight }) = mode
            && !(1..=100).contains(weight)
        {
            return Err(("mode.weight", "must be between 1 and 100"));
        }
        Ok(())
    }
}
