//! Tests of the model as a whole (how errors read, what decoding refuses), and the
//! helpers the tests of each family share: YAML loaded as the datastore loads it.

use crate::policy::load::{load_documents, LoadError, Object};

use super::*;

/// Loads one YAML document and returns the single object or the error's text.
pub(super) fn load_one(yaml: &str) -> Result<Object, String> {
    match load_documents(yaml, "test.yaml") {
        Ok(mut objects) => {
            assert_eq!(objects.len(), 1, "{yaml}");
            Ok(objects.remove(0))
        }
        Err(e) => Err(e.to_string()),
    }
}

pub(super) fn invalid(yaml: &str) -> ValidationError {
    match load_documents(yaml, "test.yaml") {
        Err(LoadError::Invalid { error, .. }) => error,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

pub(super) fn k8s_policy(spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  \
         namespace: shop\nspec:\n{}",
        indent(spec)
    )
}

pub(super) fn weir_policy(spec: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-web\n  \
         namespace: shop\nspec:\n{}",
        indent(spec)
    )
}

pub(super) fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

pub(super) fn as_k8s(object: Object) -> K8sNetworkPolicy {
    match object.resource {
        crate::policy::load::Resource::K8sNetworkPolicy(p) => p,
        other => panic!("not a k8s policy: {other:?}"),
    }
}

pub(super) fn as_weir(object: Object) -> NetworkPolicy {
    match object.resource {
        crate::policy::load::Resource::NetworkPolicy(p) => p,
        other => panic!("not a weir policy: {other:?}"),
    }
}

pub(super) fn k8s(spec: &str) -> K8sNetworkPolicy {
    as_k8s(load_one(&k8s_policy(spec)).unwrap())
}

pub(super) fn weir(spec: &str) -> NetworkPolicy {
    as_weir(load_one(&weir_policy(spec)).unwrap())
}

#[test]
fn weir_error_display_names_object_field_and_problem() {
    let e = invalid(&weir_policy(
        "ingress:\n- action: Allow\n  source:\n    nets: [10.0.0.0/8, 10.0.0.1/33]",
    ));
    assert_eq!(
        e.to_string(),
        "weir.dev/v1 NetworkPolicy shop/allow-web: spec.ingress[0].source.nets[1]: \
         \"10.0.0.1/33\" is not a CIDR: prefix length 33 exceeds 32"
    );
}

#[test]
fn unknown_and_mistyped_fields_are_decode_errors() {
    let e = load_documents(
        &weir_policy("ingress: [{action: Allow, source: {notNet: [10.0.0.0/8]}}]"),
        "f.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(
            "f.yaml document 1: weir.dev/v1 NetworkPolicy shop/allow-web: \
                           spec.ingress[0].source.notNet: unknown field `notNet`"
        ),
        "{e}"
    );
    let e = load_documents(&weir_policy("order: high"), "f.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spec.order: invalid type: string \"high\""),
        "{e}"
    );
    let e = load_documents(&k8s_policy("podSelecter: {}"), "f.yaml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "f.yaml document 1: networking.k8s.io/v1 NetworkPolicy shop/p: spec.podSelecter: \
         unknown field (Kubernetes would reject it under strict field validation)"
    );
}
