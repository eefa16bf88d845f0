//! Kubernetes label selectors, parsed once and matched many times.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// Parses a `LabelSelector`; the error names what is wrong.
    pub fn parse(selector: &LabelSelector) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            check_key(k)?;
            requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            check_key(&expr.key).map_err(|e| format!("matchExpressions[{i}]: {e}"))?;
            let values = expr.values.clone().unwrap_or_default();
            let key = expr.key.clone();
            let needs_values = match expr.operator.as_str() {
                "In" | "NotIn" => true,
                "Exists" | "DoesNotExist" => false,
                other => return Err(format!("matchExpressions[{i}]: unknown operator {other:?}")),
            };
            if needs_values == values.is_empty() {
                return Err(format!(
                    "matchExpressions[{i}]: operator {} {} values",
                    expr.operator,
                    if needs_values { "needs" } else { "takes no" }
                ));
            }
            requirements.push(match expr.operator.as_str() {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                _ => Requirement::DoesNotExist(key),
            });
        }
        Ok(Self { requirements })
    }

    /// A selector requiring exactly these labels (a Service's `spec.selector`).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Self {
        Self {
            requirements: labels
                .iter()
                .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
                .collect(),
        }
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

fn check_key(key: &str) -> Result<(), String> {
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let sel = Selector::parse(&LabelSelector {
            match_labels: Some(labels(&[("app", "reviews")])),
            match_expressions: Some(vec![
                expr("version", "In", &["v1", "v2"]),
                expr("canary", "DoesNotExist", &[]),
            ]),
        })
        .unwrap();
        assert!(sel.matches(&labels(&[("app", "reviews"), ("version", "v2")])));
        assert!(!sel.matches(&labels(&[("app", "reviews"), ("version", "v3")])));
        assert!(!sel.matches(&labels(&[
            ("app", "reviews"),
            ("version", "v1"),
            ("canary", "y")
        ])));
        assert!(Selector::default().matches(&labels(&[])));
    }

    #[test]
    fn malformed_selectors_are_refused() {
        let bad_op = LabelSelector {
            match_expressions: Some(vec![expr("a", "Near", &["x"])]),
            ..Default::default()
        };
        assert!(
            Selector::parse(&bad_op)
                .unwrap_err()
                .contains("unknown operator")
        );
        let no_values = LabelSelector {
            match_expressions: Some(vec![expr("a", "In", &[])]),
            ..Default::default()
        };
        assert!(
            Selector::parse(&no_values)
                .unwrap_err()
                .contains("needs values")
        );
        let bad_key = LabelSelector {
            match_labels: Some(labels(&[("-x", "1")])),
            ..Default::default()
        };
        assert!(
            Selector::parse(&bad_key)
                .unwrap_err()
                .contains("invalid label key")
        );
    }
}
