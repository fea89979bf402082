//! The committed CRDs (`deploy/crds/`) are what the types generate, they are structural,
//! and they accept what the loader accepts: every weir.dev object in the policy fixtures,
//! and an object using every field, validates against its CRD's schema.
//!
//! The schema check below is a small validator for the subset of OpenAPI v3 that
//! structural schemas use (type, properties, required, items, enum, minimum/maximum,
//! additionalProperties, anyOf, nullable, x-kubernetes-int-or-string,
//! x-kubernetes-preserve-unknown-fields), with the API server's treatment of unknown
//! fields under strict field validation: an error.

use std::path::Path;

use serde_json::Value;
use weir_control::crd;
use weir_control::policy::load::load_documents;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let drift = crd::check(&dir).unwrap();
    assert!(drift.is_empty(), "deploy/crds: {drift}");
}

#[test]
fn crds_are_structural() {
    for crd in crd::all() {
        let name = crd.metadata.name.clone().unwrap();
        let names = &crd.spec.names;
        assert_eq!(name, format!("{}.{}", names.plural, crd.spec.group));
        assert_eq!(crd.spec.group, crd::GROUP);
        assert_eq!(crd.spec.versions.len(), 1, "{name}");
        let version = &crd.spec.versions[0];
        assert!(version.served && version.storage, "{name}");
        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(schema["type"], "object", "{name}");
        structural(&schema, &name, false);
        for column in version.additional_printer_columns.iter().flatten() {
            let path: Vec<&str> = column
                .json_path
                .trim_start_matches('.')
                .split('.')
                .collect();
            let mut at = &schema;
            for part in &path {
                at = &at["properties"][*part];
            }
            assert!(
                at.is_object(),
                "{name}: printer column {} points at {}, which the schema lacks",
                column.name,
                column.json_path
            );
        }
    }
}

/// Validates every weir.dev object of the YAML files in `dir` against its CRD (after the
/// loader accepted the file): the kinds checked.
fn validate_dir(dir: &Path) -> Vec<String> {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let source = path.display().to_string();
        load_documents(&text, &source).unwrap_or_else(|e| panic!("{e}"));
        for object in weir_objects(&text) {
            let kind = object["kind"].as_str().unwrap().to_owned();
            validate_object(&object).unwrap_or_else(|e| panic!("{source}: {kind}: {e}"));
            checked.push(kind);
        }
    }
    checked.sort();
    checked.dedup();
    checked
}

#[test]
fn the_deploy_examples_validate_against_the_crds_and_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let checked = validate_dir(&dir);
    for kind in ["GlobalNetworkPolicy", "IPPool", "NetworkPolicy", "Tier"] {
        assert!(checked.iter().any(|k| k == kind), "{kind}: {checked:?}");
    }
}

#[test]
fn every_fixture_object_validates_against_its_crd() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy");
    let checked = validate_dir(&dir);
    // IPAMBlock too: agents write it, and the datastore reads it (the routes to nodes).
    let mut kinds: Vec<String> = crd::all().into_iter().map(|c| c.spec.names.kind).collect();
    kinds.sort();
    assert_eq!(
        checked, kinds,
        "the fixtures hold one object of every CRD kind"
    );
}

/// Every field the loader reads, in both spellings where there are two (numbers and
/// strings for ports and protocols).
const EVERY_FIELD: &str = r#"
apiVersion: weir.dev/v1
kind: Tier
metadata: {name: security}
spec: {order: 100.5, defaultAction: Pass}
---
apiVersion: weir.dev/v1
kind: Tier
metadata: {name: bare}
---
apiVersion: weir.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: security.everything}
spec:
  tier: security
  order: 1
  selector: app == 'web'
  namespaceSelector: all()
  serviceAccountSelector: has(trusted)
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    ipVersion: 4
    protocol: TCP
    notProtocol: 17
    metadata: {annotations: {why: because}}
    source:
      nets: [198.18.0.0/16, 198.19.0.1]
      notNets: [198.18.1.0/24]
      selector: app == 'db'
      notSelector: app == 'x'
      namespaceSelector: global()
      serviceAccounts: {names: [web-sa], selector: a == 'b'}
    destination:
      ports: [80, "443", "8000:8080", http]
      notPorts: [22]
  - action: Log
  - action: Deny
    protocol: ICMP
    icmp: {type: 8, code: 0}
    notICMP: {type: 0}
  - action: Pass
    protocol: "6"
    ipVersion: 6
    destination: {nets: ["2001:db8::/32"]}
  egress:
  - {action: Deny, protocol: ICMPv6, ipVersion: 6, notICMP: {type: 128}}
---
apiVersion: weir.dev/v1
kind: NetworkPolicy
metadata: {name: np, namespace: shop}
spec: {selector: all(), egress: [{action: Allow, protocol: UDP, destination: {ports: [53]}}]}
---
apiVersion: weir.dev/v1
kind: NetworkPolicy
metadata: {name: empty, namespace: shop}
---
apiVersion: weir.dev/v1
kind: NetworkSet
metadata: {name: s, namespace: shop}
spec: {nets: [198.18.7.0/24]}
---
apiVersion: weir.dev/v1
kind: GlobalNetworkSet
metadata: {name: g}
---
apiVersion: weir.dev/v1
kind: IPPool
metadata: {name: v6}
spec: {cidr: "2001:db8:1::/48", blockSize: 122, nodeSelector: all(), disabled: true}
---
apiVersion: weir.dev/v1
kind: HostEndpoint
metadata: {name: h, labels: {a: b}}
spec: {node: n1, expectedIPs: [198.18.0.1]}
"#;

#[test]
fn what_the_loader_accepts_the_schemas_accept() {
    load_documents(EVERY_FIELD, "every-field.yaml").unwrap_or_else(|e| panic!("{e}"));
    for object in weir_objects(EVERY_FIELD) {
        validate_object(&object).unwrap_or_else(|e| panic!("{}: {e}", object["metadata"]["name"]));
    }
}

#[test]
fn schemas_reject_what_is_wrong_in_shape() {
    let cases = [
        (
            "kind: NetworkPolicy\nspec: {ingress: [{action: Accept}]}",
            "spec.ingress[0].action: \"Accept\" is not one of",
        ),
        (
            "kind: NetworkPolicy\nspec: {ingress: [{protocol: TCP}]}",
            "spec.ingress[0].action: is required",
        ),
        (
            "kind: NetworkPolicy\nspec: {namespaceSelector: all()}",
            "spec.namespaceSelector: unknown field",
        ),
        (
            "kind: GlobalNetworkPolicy\nspec: {egress: [{action: Allow, ipVersion: 5}]}",
            "spec.egress[0].ipVersion: 5 is not one of",
        ),
        (
            "kind: GlobalNetworkPolicy\nspec: {types: [ingress]}",
            "spec.types[0]: \"ingress\" is not one of",
        ),
        (
            "kind: GlobalNetworkPolicy\nspec: {egress: [{action: Allow, destination: {notNet: []}}]}",
            "spec.egress[0].destination.notNet: unknown field",
        ),
        (
            "kind: GlobalNetworkPolicy\nspec: {egress: [{action: Allow, protocol: [TCP]}]}",
            "is not an integer or a string",
        ),
        (
            "kind: GlobalNetworkPolicy\nspec: {egress: [{action: Allow, icmp: {type: 255}}]}",
            "spec.egress[0].icmp.type: 255 is above the maximum",
        ),
        ("kind: Tier\nspec: {defaultAction: Allow}", "spec.defaultAction: \"Allow\" is not one of"),
        ("kind: Tier\nspec: {order: high}", "spec.order: expected number"),
        ("kind: IPPool\nspec: {blockSize: 26}", "spec.cidr: is required"),
        ("kind: IPPool", "spec: is required"),
        ("kind: IPPool\nspec: {cidr: 198.18.0.0/16, ipipMode: Always}", "spec.ipipMode: unknown field"),
        ("kind: HostEndpoint\nspec: {node: n1}", "spec: matches none of anyOf"),
        ("kind: NetworkSet\nspec: {nets: 198.18.0.0/16}", "spec.nets: expected array"),
    ];
    for (yaml, expected) in cases {
        let object: Value = serde_yaml::from_str(&format!(
            "apiVersion: weir.dev/v1\nmetadata: {{name: x}}\n{yaml}"
        ))
        .unwrap();
        let e = validate_object(&object).expect_err(yaml);
        assert!(
            e.contains(expected),
            "{yaml}: got {e:?}, expected {expected:?}"
        );
    }
}

/// The weir.dev documents of a YAML text, as JSON values.
fn weir_objects(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| v["apiVersion"] == "weir.dev/v1")
        .collect()
}

/// Validates a weir.dev object against its CRD's schema; `apiVersion`, `kind` and
/// `metadata` are the API server's and not in the schema.
fn validate_object(object: &Value) -> Result<(), String> {
    let kind = object["kind"].as_str().ok_or("no kind")?;
    let crd = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .ok_or_else(|| format!("no CRD for kind {kind}"))?;
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap(),
    )
    .unwrap();
    let mut body = object.clone();
    if let Some(map) = body.as_object_mut() {
        for implicit in ["apiVersion", "kind", "metadata"] {
            map.remove(implicit);
        }
    }
    validate(&body, &schema, "")
}

fn validate(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    let at = |message: String| {
        if path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        }
    };
    if value.is_null() {
        return if schema["nullable"] == true {
            Ok(())
        } else {
            Err(at("null is not allowed".into()))
        };
    }
    if let Some(any_of) = schema["anyOf"].as_array() {
        if !any_of.iter().any(|s| validate(value, s, path).is_ok()) {
            return Err(at("matches none of anyOf".into()));
        }
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            return Err(at(format!("{value} is not one of {options:?}")));
        }
    }
    if let (Some(max), Some(n)) = (schema["maximum"].as_f64(), value.as_f64()) {
        if n > max {
            return Err(at(format!("{value} is above the maximum {max}")));
        }
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64()) {
        if n < min {
            return Err(at(format!("{value} is below the minimum {min}")));
        }
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return if value.is_i64() || value.is_u64() || value.is_string() {
            Ok(())
        } else {
            Err(at(format!("{value} is not an integer or a string")))
        };
    }
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    match schema["type"].as_str() {
        None if preserve => Ok(()),
        // A value-only subschema (inside anyOf): its `required` is all it checks.
        None => required(value, schema, path),
        Some("string") if value.is_string() => Ok(()),
        Some("boolean") if value.is_boolean() => Ok(()),
        Some("integer") if value.is_i64() || value.is_u64() => Ok(()),
        Some("number") if value.is_number() => Ok(()),
        Some("array") => {
            let items = value
                .as_array()
                .ok_or_else(|| at(format!("expected array, got {value}")))?;
            for (i, item) in items.iter().enumerate() {
                validate(item, &schema["items"], &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Some("object") => {
            let map = value
                .as_object()
                .ok_or_else(|| at(format!("expected object, got {value}")))?;
            required(value, schema, path)?;
            for (key, field) in map {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if let Some(property) = schema["properties"].get(key) {
                    validate(field, property, &here)?;
                } else if schema["additionalProperties"].is_object() {
                    validate(field, &schema["additionalProperties"], &here)?;
                } else if !preserve {
                    return Err(format!("{here}: unknown field"));
                }
            }
            Ok(())
        }
        Some(other) => Err(at(format!("expected {other}, got {value}"))),
    }
}

fn required(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap();
        if value.get(name).is_none() {
            return Err(if path.is_empty() {
                format!("{name}: is required")
            } else {
                format!("{path}.{name}: is required")
            });
        }
    }
    Ok(())
}

/// The structural-schema rules of apiextensions.k8s.io/v1: every node has a type (or is
/// int-or-string, or preserves unknown fields); `additionalProperties` never beside
/// `properties`; inside `anyOf` (value validation) no type, properties or items.
fn structural(schema: &Value, path: &str, in_value_validation: bool) {
    let has = |key: &str| schema.get(key).is_some();
    if in_value_validation {
        for key in [
            "type",
            "properties",
            "items",
            "additionalProperties",
            "nullable",
        ] {
            assert!(!has(key), "{path}: `{key}` inside anyOf");
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    assert!(
        has("type") || int_or_string || preserve,
        "{path}: no type: {schema}"
    );
    assert!(
        !(has("properties") && has("additionalProperties")),
        "{path}: properties and additionalProperties together"
    );
    for key in ["oneOf", "allOf", "not", "$ref", "definitions", "$defs"] {
        assert!(!has(key), "{path}: `{key}` is not allowed");
    }
    if schema["type"] == "array" {
        assert!(has("items"), "{path}: an array needs items");
    }
    for sub in schema["anyOf"].as_array().into_iter().flatten() {
        structural(sub, &format!("{path}.anyOf"), true);
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, sub) in properties {
            structural(sub, &format!("{path}.{name}"), false);
        }
    }
    if has("items") {
        structural(&schema["items"], &format!("{path}[]"), false);
    }
    if schema["additionalProperties"].is_object() {
        structural(&schema["additionalProperties"], &format!("{path}.*"), false);
    }
}
