//! Node taints and the tolerations that let instances onto tainted nodes.

/// What a taint does to instances that do not tolerate it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Effect {
    /// No new instance lands on the node.
    #[default]
    NoSchedule,
    /// The scheduler avoids the node when it has another choice.
    PreferNoSchedule,
    /// As `NoSchedule` for the scheduler (evicting running instances is control's job).
    NoExecute,
}

/// A mark on a node that repels instances that do not tolerate it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value; may be empty.
    pub value: String,
    /// What it does.
    pub effect: Effect,
}

/// How a toleration compares the taint's value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TolerationOperator {
    /// Any value.
    Exists,
    /// This value exactly.
    Equal(String),
}

/// Lets an instance onto nodes with matching taints.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// Taint key; `None` with `Exists` tolerates every taint.
    pub key: Option<String>,
    /// How the value is compared.
    pub operator: TolerationOperator,
    /// Only taints with this effect; `None` means all effects.
    pub effect: Option<Effect>,
}

impl Toleration {
    /// Whether this toleration covers the taint.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        match (&self.key, &self.operator) {
            (None, TolerationOperator::Exists) => true,
            (None, TolerationOperator::Equal(_)) => false,
            (Some(k), _) if *k != taint.key => false,
            (Some(_), TolerationOperator::Exists) => true,
            (Some(_), TolerationOperator::Equal(v)) => *v == taint.value,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        match (&self.key, &self.operator) {
            (None, TolerationOperator::Equal(_)) => {
                Err("an empty key is only allowed with operator Exists")
            }
            _ => Ok(()),
        }
    }
}

/// Whether some toleration covers the taint.
pub(crate) fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_match_key_value_and_effect() {
        let taint = Taint {
            key: "gpu".into(),
            value: "yes".into(),
            effect: Effect::NoSchedule,
        };
        let t = |key: Option<&str>, operator, effect| Toleration {
            key: key.map(Into::into),
            operator,
            effect,
        };
        assert!(t(None, TolerationOperator::Exists, None).tolerates(&taint));
        assert!(t(Some("gpu"), TolerationOperator::Exists, None).tolerates(&taint));
        assert!(t(Some("gpu"), TolerationOperator::Equal("yes".into()), None).tolerates(&taint));
        assert!(!t(Some("gpu"), TolerationOperator::Equal("no".into()), None).tolerates(&taint));
        assert!(!t(Some("ssd"), TolerationOperator::Exists, None).tolerates(&taint));
        assert!(
            !t(
                Some("gpu"),
                TolerationOperator::Exists,
                Some(Effect::NoExecute)
            )
            .tolerates(&taint)
        );
        assert!(
            t(None, TolerationOperator::Equal("x".into()), None)
                .validate()
                .is_err()
        );
    }
}
