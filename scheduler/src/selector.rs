//! Node label expressions, as Kubernetes' `nodeSelectorTerms.matchExpressions` gives them.

use std::collections::BTreeMap;

/// How an expression tests the value of its label.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// The label is present with one of these values.
    In(Vec<String>),
    /// The label is absent, or present with none of these values.
    NotIn(Vec<String>),
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One requirement on a node's labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Expression {
    /// The label key.
    pub key: String,
    /// The test.
    pub operator: Operator,
}

impl Expression {
    /// `key In (values)`.
    pub fn is_in(key: &str, values: &[&str]) -> Self {
        Expression {
            key: key.into(),
            operator: Operator::In(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    /// `key NotIn (values)`.
    pub fn not_in(key: &str, values: &[&str]) -> Self {
        Expression {
            key: key.into(),
            operator: Operator::NotIn(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    /// Whether the labels satisfy the expression.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.key.is_empty() {
            return Err("key is empty");
        }
        match &self.operator {
            // As Kubernetes: an empty In can never match, so it is a mistake, not a rule.
            Operator::In(v) | Operator::NotIn(v) if v.is_empty() => {
                Err("In and NotIn need at least one value")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_match_like_kubernetes() {
        let labels: BTreeMap<String, String> =
            [("zone".to_owned(), "a".to_owned())].into_iter().collect();
        assert!(Expression::is_in("zone", &["a", "b"]).matches(&labels));
        assert!(!Expression::is_in("zone", &["b"]).matches(&labels));
        assert!(!Expression::is_in("rack", &["a"]).matches(&labels));
        assert!(!Expression::not_in("zone", &["a"]).matches(&labels));
        assert!(Expression::not_in("rack", &["a"]).matches(&labels));
        let exists = |key: &str, operator| Expression {
            key: key.into(),
            operator,
        };
        assert!(exists("zone", Operator::Exists).matches(&labels));
        assert!(!exists("rack", Operator::Exists).matches(&labels));
        assert!(exists("rack", Operator::DoesNotExist).matches(&labels));
        assert!(!exists("zone", Operator::DoesNotExist).matches(&labels));
        assert!(Expression::is_in("zone", &[]).validate().is_err());
    }
}
