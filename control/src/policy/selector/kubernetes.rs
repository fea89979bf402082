//! Kubernetes label selectors, converted into weir's selector language so that the policy
//! compiler evaluates one kind of selector, and the Kubernetes API's rules for label keys,
//! label values and DNS names, which every object's validation uses.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::Selector;

/// A Kubernetes label selector that is not valid per the API's validation.
///
/// `field` is relative to the selector (`matchExpressions[1].values`); the caller prefixes
/// the path of the selector inside its object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LabelSelectorError {
    /// Path of the offending field inside the label selector.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Converts a Kubernetes `LabelSelector` into a [`Selector`], validating it as the API
/// server does (`ValidateLabelSelector` in apimachinery).
///
/// - `matchLabels` entries become `key == "value"`, in key order;
/// - `matchExpressions` become, in order: `In` → `key in {...}`, `NotIn` → `key not in {...}`
///   (which, like Kubernetes, matches objects without the key), `Exists` → `has(key)`,
///   `DoesNotExist` → `!has(key)`;
/// - all of them are ANDed; a selector with neither (`{}`) is `all()`.
///
/// Errors: an unknown operator; `In`/`NotIn` with no values; `Exists`/`DoesNotExist` with
/// values; keys that are not qualified names or values that are not label values.
pub fn from_label_selector(selector: &LabelSelector) -> Result<Selector, LabelSelectorError> {
    let mut terms = Vec::new();
    if let Some(match_labels) = &selector.match_labels {
        for (key, value) in match_labels {
            let field = || format!("matchLabels.{key}");
            validate_label_key(key).map_err(|message| LabelSelectorError {
                field: field(),
                message,
            })?;
            validate_label_value(value).map_err(|message| LabelSelectorError {
                field: field(),
                message,
            })?;
            terms.push(Selector::Eq(key.clone(), value.clone()));
        }
    }
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let at = |sub: &str| format!("matchExpressions[{i}]{sub}");
        let key = &requirement.key;
        validate_label_key(key).map_err(|message| LabelSelectorError {
            field: at(".key"),
            message,
        })?;
        let values = requirement.values.as_deref().unwrap_or_default();
        let op = requirement.operator.as_str();
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    return Err(LabelSelectorError {
                        field: at(".values"),
                        message: format!(
                            "must be specified when `operator` is '{op}' (an empty set would \
                             match {})",
                            if op == "In" { "nothing" } else { "everything" }
                        ),
                    });
                }
                for (j, value) in values.iter().enumerate() {
                    validate_label_value(value).map_err(|message| LabelSelectorError {
                        field: at(&format!(".values[{j}]")),
                        message,
                    })?;
                }
                let set: BTreeSet<String> = values.iter().cloned().collect();
                terms.push(if op == "In" {
                    Selector::In(key.clone(), set)
                } else {
                    Selector::NotIn(key.clone(), set)
                });
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    return Err(LabelSelectorError {
                        field: at(".values"),
                        message: format!(
                            "may not be specified when `operator` is '{op}'; remove the values"
                        ),
                    });
                }
                let has = Selector::Has(key.clone());
                terms.push(if op == "Exists" {
                    has
                } else {
                    Selector::Not(Box::new(has))
                });
            }
            other => {
                return Err(LabelSelectorError {
                    field: at(".operator"),
                    message: format!(
                        "\"{other}\" is not a valid operator: use In, NotIn, Exists or \
                         DoesNotExist (case matters)"
                    ),
                })
            }
        }
    }
    let mut terms = terms.into_iter();
    Ok(match terms.next() {
        None => Selector::All,
        Some(first) => terms.fold(first, Selector::and),
    })
}

/// Checks a label key the way Kubernetes does (`IsQualifiedName`): an optional DNS-subdomain
/// prefix of at most 253 characters and a `/`, then a name of at most 63 characters made of
/// alphanumerics, `-`, `_` and `.`, beginning and ending with an alphanumeric.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(format!(
                "label key \"{key}\": the prefix before '/' must not be empty"
            ));
        }
        if let Err(why) = validate_dns_subdomain(prefix) {
            return Err(format!("label key \"{key}\": prefix {why}"));
        }
    }
    if name.is_empty() {
        return Err(format!(
            "label key \"{key}\": the name part must not be empty"
        ));
    }
    if name.len() > 63 {
        return Err(format!(
            "label key \"{key}\": the name part must be at most 63 characters"
        ));
    }
    if !is_label_word(name) {
        return Err(format!(
            "label key \"{key}\": the name part must consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Checks a label value the way Kubernetes does (`IsValidLabelValue`): empty, or at most 63
/// characters of alphanumerics, `-`, `_` and `.`, beginning and ending with an alphanumeric.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err(format!(
            "label value \"{value}\" must be at most 63 characters"
        ));
    }
    if !is_label_word(value) {
        return Err(format!(
            "label value \"{value}\" must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (lower-case alphanumerics, `-` and `.`, at most 253
/// characters, each dot-separated part starting and ending with an alphanumeric).
pub fn validate_dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("\"{name}\" must be at most 253 characters"));
    }
    if name.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" must be a DNS subdomain: lower-case alphanumeric characters, '-' and \
             '.', starting and ending with an alphanumeric character"
        ))
    }
}

/// Checks a DNS-1123 label (lower-case alphanumerics and `-`, at most 63 characters,
/// starting and ending with an alphanumeric).
pub fn validate_dns_label(name: &str) -> Result<(), String> {
    if name.len() <= 63 && is_dns_label(name) {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" must be a DNS label: at most 63 lower-case alphanumeric characters or \
             '-', starting and ending with an alphanumeric character"
        ))
    }
}

fn is_dns_label(part: &str) -> bool {
    let bytes = part.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-')
}

fn is_label_word(word: &str) -> bool {
    let bytes = word.as_bytes();
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| edge(b) || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use proptest::prelude::*;

    use super::super::tests::{key, labels};
    use super::super::Labels;
    use super::*;

    fn requirement(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: op.to_owned(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn label_selector(
        match_labels: &[(&str, &str)],
        expressions: Vec<LabelSelectorRequirement>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty())
                .then(|| labels(match_labels).into_iter().collect()),
            match_expressions: (!expressions.is_empty()).then_some(expressions),
        }
    }

    #[test]
    fn empty_label_selector_selects_everything() {
        assert_eq!(
            from_label_selector(&LabelSelector::default()),
            Ok(Selector::All)
        );
        let explicit_empty = LabelSelector {
            match_labels: Some(std::collections::BTreeMap::new()),
            match_expressions: Some(Vec::new()),
        };
        assert_eq!(from_label_selector(&explicit_empty), Ok(Selector::All));
    }

    #[test]
    fn label_selector_terms_are_anded() {
        let ls = label_selector(
            &[("app", "web"), ("env", "prod")],
            vec![
                requirement("tier", "In", Some(&["a", "b"])),
                requirement("zone", "NotIn", Some(&["x"])),
                requirement("team", "Exists", None),
                requirement("legacy", "DoesNotExist", Some(&[])),
            ],
        );
        let s = from_label_selector(&ls).unwrap();
        assert_eq!(
            s.to_string(),
            "app == \"web\" && env == \"prod\" && tier in {\"a\", \"b\"} && zone not in \
             {\"x\"} && has(team) && !has(legacy)"
        );
        let mut l = labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("tier", "a"),
            ("team", "t"),
        ]);
        assert!(s.matches(&l));
        l.insert(key("legacy"), String::new());
        assert!(!s.matches(&l), "DoesNotExist fails when the key is present");
        l.remove("legacy");
        l.insert(key("zone"), key("x"));
        assert!(!s.matches(&l), "NotIn fails on a listed value");
        l.insert(key("zone"), key("y"));
        assert!(s.matches(&l), "NotIn passes on another value");
    }

    #[test]
    fn notin_and_doesnotexist_match_objects_without_the_key() {
        let no_labels = Labels::new();
        let notin = from_label_selector(&label_selector(
            &[],
            vec![requirement("env", "NotIn", Some(&["prod"]))],
        ))
        .unwrap();
        assert!(notin.matches(&no_labels));
        let dne = from_label_selector(&label_selector(
            &[],
            vec![requirement("env", "DoesNotExist", None)],
        ))
        .unwrap();
        assert!(dne.matches(&no_labels));
        let exists = from_label_selector(&label_selector(
            &[],
            vec![requirement("env", "Exists", None)],
        ))
        .unwrap();
        assert!(!exists.matches(&no_labels));
        let is_in = from_label_selector(&label_selector(
            &[],
            vec![requirement("env", "In", Some(&["prod"]))],
        ))
        .unwrap();
        assert!(!is_in.matches(&no_labels));
    }

    fn label_selector_error(ls: &LabelSelector) -> LabelSelectorError {
        from_label_selector(ls).expect_err("should be invalid")
    }

    #[test]
    fn invalid_label_selectors_are_rejected() {
        let e = label_selector_error(&label_selector(
            &[],
            vec![
                requirement("ok", "Exists", None),
                requirement("env", "In", Some(&[])),
            ],
        ));
        assert_eq!(e.field, "matchExpressions[1].values");
        assert!(e.message.contains("'In'"), "{e}");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("env", "NotIn", None)],
        ));
        assert_eq!(e.field, "matchExpressions[0].values");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("env", "Exists", Some(&["x"]))],
        ));
        assert_eq!(e.field, "matchExpressions[0].values");
        assert!(e.message.contains("may not be specified"), "{e}");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("env", "DoesNotExist", Some(&["x"]))],
        ));
        assert_eq!(e.field, "matchExpressions[0].values");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("env", "in", Some(&["x"]))],
        ));
        assert_eq!(e.field, "matchExpressions[0].operator");
        assert!(e.message.contains("\"in\" is not a valid operator"), "{e}");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("bad key", "Exists", None)],
        ));
        assert_eq!(e.field, "matchExpressions[0].key");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("env", "In", Some(&["ok", "not ok"]))],
        ));
        assert_eq!(e.field, "matchExpressions[0].values[1]");

        let e = label_selector_error(&label_selector(&[("app", "-web")], vec![]));
        assert_eq!(e.field, "matchLabels.app");
        assert_eq!(
            e.to_string(),
            "matchLabels.app: label value \"-web\" must consist of alphanumeric characters, \
             '-', '_' or '.', and must start and end with an alphanumeric character"
        );
    }

    #[test]
    fn label_key_and_value_rules() {
        for good in ["a", "app.kubernetes.io/name", "A-b_c.d", "x/y", "1abc"] {
            assert_eq!(validate_label_key(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "-a",
            "a-",
            "Ex.com/a",
            "a/b/c",
            &"k".repeat(64),
        ] {
            assert!(validate_label_key(bad).is_err(), "{bad}");
        }
        for good in ["", "a", "a.b-c_d", "0"] {
            assert_eq!(validate_label_value(good), Ok(()), "{good}");
        }
        for bad in ["-", "a b", "a'", &"v".repeat(64)] {
            assert!(validate_label_value(bad).is_err(), "{bad}");
        }
    }

    fn arb_labels() -> impl Strategy<Value = Labels> {
        prop::collection::btree_map("[a-c]", "[xy]{0,2}", 0..4)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        /// `from_label_selector` agrees with a direct reading of the Kubernetes rules.
        #[test]
        fn label_selector_matches_like_kubernetes(
            match_labels in prop::collection::btree_map("[a-c]", "[xy]", 0..3),
            expressions in prop::collection::vec(
                ("[a-c]", 0..4usize, prop::collection::vec("[xy]", 1..3)), 0..3),
            object in arb_labels(),
        ) {
            let ops = ["In", "NotIn", "Exists", "DoesNotExist"];
            let reqs: Vec<LabelSelectorRequirement> = expressions
                .iter()
                .map(|(k, op, vals)| LabelSelectorRequirement {
                    key: k.clone(),
                    operator: ops[*op].to_owned(),
                    values: (*op < 2).then(|| vals.clone()),
                })
                .collect();
            let ls = LabelSelector {
                match_labels: Some(match_labels.clone()),
                match_expressions: Some(reqs.clone()),
            };
            let naive = match_labels.iter().all(|(k, v)| object.get(k) == Some(v))
                && reqs.iter().all(|r| {
                    let vals = r.values.clone().unwrap_or_default();
                    match r.operator.as_str() {
                        "In" => object.get(&r.key).is_some_and(|v| vals.contains(v)),
                        "NotIn" => !object.get(&r.key).is_some_and(|v| vals.contains(v)),
                        "Exists" => object.contains_key(&r.key),
                        _ => !object.contains_key(&r.key),
                    }
                });
            let s = from_label_selector(&ls).unwrap();
            prop_assert_eq!(s.matches(&object), naive);
            prop_assert_eq!(Selector::parse(&s.to_string()), Ok(s));
        }
    }
}
