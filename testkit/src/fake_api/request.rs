//! What a request asks for: the resource its path names, its query parameters, and the
//! label and field selectors that filter lists and watches.

use serde_json::Value;

use super::resources::{resource_by_plural, Key, RESOURCES};
use super::service::ApiError;

/// What a request path names.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) resource: usize,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    /// Only "status" is served.
    pub(super) subresource: Option<String>,
}

impl Target {
    /// Parses `/api/v1/...` and `/apis/{group}/{version}/...`, followed by `{plural}`,
    /// `{plural}/{name}[/status]` (cluster-scoped kinds, or all namespaces for a list),
    /// or `namespaces/{ns}/{plural}[/{name}[/status]]`.
    pub(super) fn parse(path: &str) -> Option<Target> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segments.iter().any(|segment| segment.is_empty()) {
            return None;
        }
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let namespaced_resource = match rest {
            ["namespaces", _, plural, ..] => resource_by_plural(group, version, plural),
            _ => None,
        };
        let (resource, namespace, rest) = match namespaced_resource {
            Some(resource) => (resource, Some(rest[1].to_string()), &rest[3..]),
            None => {
                let plural = rest.first()?;
                (
                    resource_by_plural(group, version, plural)?,
                    None,
                    &rest[1..],
                )
            }
        };
        let namespaced = RESOURCES[resource].namespaced;
        if namespace.is_some() && !namespaced {
            return None;
        }
        let (name, subresource) = match rest {
            [] => (None, None),
            [name] => (Some(name.to_string()), None),
            [name, "status"] => (Some(name.to_string()), Some("status".to_string())),
            _ => return None,
        };
        if namespaced && namespace.is_none() && name.is_some() {
            return None;
        }
        Some(Target {
            resource,
            namespace,
            name,
            subresource,
        })
    }

    pub(super) fn key(&self) -> Key {
        (
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }
}

/// Query parameters, decoded.
#[derive(Debug)]
pub(super) struct Query(pub(super) Vec<(String, String)>);

impl Query {
    pub(super) fn parse(query: &str) -> Query {
        Query(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A boolean parameter: "true" or "1".
    pub(super) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }
}

/// A label selector and a field selector, both conjunctions.
#[derive(Debug, Default)]
pub(super) struct Selector {
    labels: Vec<Requirement>,
    /// (dotted path, wanted value, equal or not).
    fields: Vec<(String, String, bool)>,
}

#[derive(Debug)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    pub(super) fn parse(query: &Query) -> Result<Selector, ApiError> {
        let mut selector = Selector::default();
        for term in split_top_level(query.get("labelSelector").unwrap_or_default()) {
            selector.labels.push(parse_requirement(term).ok_or_else(|| {
                ApiError::new(
                    400,
                    "BadRequest",
                    format!("unable to parse requirement: {term:?} in labelSelector"),
                )
            })?);
        }
        for term in split_top_level(query.get("fieldSelector").unwrap_or_default()) {
            let (field, value, equal) = if let Some((field, value)) = term.split_once("!=") {
                (field, value, false)
            } else if let Some((field, value)) = term.split_once("==") {
                (field, value, true)
            } else if let Some((field, value)) = term.split_once('=') {
                (field, value, true)
            } else {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!("invalid selector: {term:?}; can't understand it in fieldSelector"),
                ));
            };
            selector
                .fields
                .push((field.trim().into(), value.trim().into(), equal));
        }
        Ok(selector)
    }

    pub(super) fn selects(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|requirement| match requirement {
            Requirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|w| w == v))
            }
            Requirement::NotIn(key, values) => {
                label(key).is_none_or(|v| values.iter().all(|w| w != v))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::DoesNotExist(key) => label(key).is_none(),
        });
        labels_match
            && self.fields.iter().all(|(path, wanted, equal)| {
                let value = path
                    .split('.')
                    .try_fold(object, |value, part| value.get(part));
                let value = match value {
                    Some(Value::String(value)) => value.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                (value == *wanted) == *equal
            })
    }
}

/// Splits a selector on the commas that are not inside `( )`.
fn split_top_level(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (index, character) in selector.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .collect()
}

/// One label requirement: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
fn parse_requirement(term: &str) -> Option<Requirement> {
    let set = |values: &str| -> Option<Vec<String>> {
        let inner = values.trim().strip_prefix('(')?.strip_suffix(')')?;
        Some(
            inner
                .split(',')
                .map(|value| value.trim().to_string())
                .collect(),
        )
    };
    if let Some((key, value)) = term.split_once("!=") {
        return Some(Requirement::NotIn(
            key.trim().into(),
            vec![value.trim().into()],
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Some(Requirement::In(
            key.trim().into(),
            vec![value.trim().into()],
        ));
    }
    if let Some((key, values)) = term.split_once(" notin ") {
        return Some(Requirement::NotIn(key.trim().into(), set(values)?));
    }
    if let Some((key, values)) = term.split_once(" in ") {
        return Some(Requirement::In(key.trim().into(), set(values)?));
    }
    if let Some(key) = term.strip_prefix('!') {
        return Some(Requirement::DoesNotExist(key.trim().into()));
    }
    (!term.contains(char::is_whitespace)).then(|| Requirement::Exists(term.into()))
}

/// Which objects of a resource a list or watch is about.
#[derive(Debug)]
pub(super) struct Filter {
    namespace: Option<String>,
    selector: Selector,
}

impl Filter {
    pub(super) fn new(target: &Target, query: &Query) -> Result<Filter, ApiError> {
        Ok(Filter {
            namespace: target.namespace.clone(),
            selector: Selector::parse(query)?,
        })
    }

    pub(super) fn selects(&self, object: &Value) -> bool {
        let namespace_matches = self
            .namespace
            .as_deref()
            .is_none_or(|namespace| object["metadata"]["namespace"].as_str() == Some(namespace));
        namespace_matches && self.selector.selects(object)
    }
}
