//! Unit tests of the parts below the HTTP surface (paths, selectors, merge patches,
//! continue tokens); weir-control's `tests/fake_api.rs` drives the whole server through kube-rs.

use serde_json::json;

use super::request::{Query, Selector, Target};
use super::resources::RESOURCES;
use super::store::{decode_continue, encode_continue, merge_patch};

#[test]
fn paths_name_resources() {
    let target = Target::parse("/api/v1/namespaces/a/pods/p/status").unwrap();
    assert_eq!(RESOURCES[target.resource].plural, "pods");
    assert_eq!(target.namespace.as_deref(), Some("a"));
    assert_eq!(target.name.as_deref(), Some("p"));
    assert_eq!(target.subresource.as_deref(), Some("status"));
    let target = Target::parse("/api/v1/namespaces/a").unwrap();
    assert_eq!(RESOURCES[target.resource].kind, "Namespace");
    assert_eq!(target.name.as_deref(), Some("a"));
    let target = Target::parse("/apis/weir.dev/v1/networkpolicies").unwrap();
    assert_eq!(RESOURCES[target.resource].group, "weir.dev");
    assert!(target.namespace.is_none() && target.name.is_none());
    assert!(
        Target::parse("/api/v1/pods/p").is_none(),
        "a namespaced object needs its namespace"
    );
    assert!(Target::parse("/api/v1/namespaces/a/nodes").is_none());
    assert!(Target::parse("/apis/weir.dev/v2/tiers").is_none());
}

#[test]
fn selectors_follow_the_label_and_field_forms() {
    let object = json!({ "metadata": { "name": "p", "labels": { "app": "web", "tier": "1" } },
                         "spec": { "nodeName": "n1" } });
    let selects = |labels: &str, fields: &str| {
        let query = Query(vec![
            ("labelSelector".into(), labels.into()),
            ("fieldSelector".into(), fields.into()),
        ]);
        Selector::parse(&query).unwrap().selects(&object)
    };
    assert!(selects("app=web,tier==1", "metadata.name=p"));
    assert!(selects("app in (db, web),!gone", "spec.nodeName!=n2"));
    assert!(!selects("app notin (web)", ""));
    assert!(!selects("app", "spec.nodeName=n2"));
    assert!(!selects("app!=web", ""));
}

#[test]
fn merge_patch_follows_rfc_7386_examples() {
    let mut target = json!({ "a": "b", "c": { "d": "e", "f": "g" } });
    merge_patch(&mut target, &json!({ "a": "z", "c": { "f": null } }));
    assert_eq!(target, json!({ "a": "z", "c": { "d": "e" } }));
    let mut target = json!({ "a": ["b"] });
    merge_patch(&mut target, &json!({ "a": "c" }));
    assert_eq!(target, json!({ "a": "c" }));
}

#[test]
fn continue_tokens_round_trip() {
    let key = ("ns".to_string(), "name".to_string());
    assert_eq!(decode_continue(&encode_continue(42, &key)), Some((42, key)));
    assert_eq!(decode_continue("zz"), None);
}
