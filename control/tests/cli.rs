//! `weir policy eval` as a user runs it: files in, JSON out, clear errors and exit codes;
//! `weir services` against an agent's HTTP server.

use std::path::PathBuf;
use std::process::Command;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/policy/all-kinds.yaml"
);

/// A scratch directory named after this process, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("weir-cli-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn weir(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn eval_prints_one_verdict_and_explanation_per_probe() {
    let s = Scratch::new("ok");
    let probes = s.file(
        "probes.json",
        r#"[{"from": "shop/web", "to": "shop/db", "port": 5432, "protocol": "TCP"},
            {"from": "shop/web", "to": "shop/db", "port": 5433},
            {"from": "shop/web", "to": "198.19.1.1", "port": 443}]"#,
    );
    let (ok, out, err) = weir(&[
        "policy",
        "eval",
        "-f",
        FIXTURE,
        "--probes",
        probes.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdicts"], serde_json::json!(["allow", "deny", "deny"]));
    let explanations = v["explanations"].as_array().unwrap();
    assert_eq!(explanations.len(), 3);
    assert!(explanations[0]
        .as_str()
        .unwrap()
        .contains("shop/db-ingress, ingress rule 0"));
    assert!(explanations[2]
        .as_str()
        .unwrap()
        .contains("GlobalNetworkPolicy security.deny-external, egress rule 0"));

    // IPv6: the external network set has a v6 block too.
    let probes6 = s.file(
        "probes6.json",
        r#"[{"from": "shop/web", "to": "2001:db8:ff::1", "port": 443},
            {"from": "shop/web", "to": "shop/db", "port": 5432}]"#,
    );
    let (ok, out, err) = weir(&[
        "policy",
        "eval",
        "-f",
        FIXTURE,
        "--probes",
        probes6.to_str().unwrap(),
        "--family",
        "IPv6",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdicts"], serde_json::json!(["deny", "allow"]));
}

#[test]
fn invalid_input_exits_non_zero_naming_the_object_and_field() {
    let s = Scratch::new("bad");
    let probes = s.file("probes.json", r#"[{"from": "a/x", "to": "a/y"}]"#);
    let bad = s.file(
        "bad.yaml",
        "apiVersion: weir.dev/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n  selector: app = 'x'\n",
    );
    let (ok, out, err) = weir(&[
        "policy",
        "eval",
        "-f",
        bad.to_str().unwrap(),
        "--probes",
        probes.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(
        err.contains("bad.yaml document 1")
            && err.contains("GlobalNetworkPolicy g")
            && err.contains("spec.selector")
            && err.contains("at position 4"),
        "{err}"
    );

    let (ok, _, err) = weir(&[
        "policy",
        "eval",
        "-f",
        FIXTURE,
        "--probes",
        probes.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("probes[0].from: there is no pod a/x"), "{err}");

    let (ok, _, err) = weir(&[
        "policy",
        "eval",
        "-f",
        "/nonexistent/weir.yaml",
        "--probes",
        probes.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/weir.yaml"), "{err}");
}

#[test]
fn crds_writes_then_checks_and_names_every_drifted_file() {
    let s = Scratch::new("crds");
    let dir = s.0.join("crds");
    let dir_arg = dir.to_str().unwrap();
    let (ok, out, err) = weir(&["crds", "--out", dir_arg]);
    assert!(ok, "{err}");
    assert!(out.starts_with("wrote 9 files"), "{out}");
    let (ok, _, err) = weir(&["crds", "--check", dir_arg]);
    assert!(ok, "{err}");

    std::fs::write(dir.join("tiers.weir.dev.yaml"), "edited\n").unwrap();
    std::fs::remove_file(dir.join("ippools.weir.dev.yaml")).unwrap();
    std::fs::write(dir.join("stale.yaml"), "").unwrap();
    let (ok, _, err) = weir(&["crds", "--check", dir_arg]);
    assert!(!ok);
    for expected in [
        "differ: tiers.weir.dev.yaml",
        "missing: ippools.weir.dev.yaml",
        "(extra): stale.yaml",
        "run `cargo run -p weir-control --bin weir -- crds --out deploy/crds`",
    ] {
        assert!(err.contains(expected), "{err}");
    }
    let (ok, _, err) = weir(&["crds"]);
    assert!(!ok && err.contains("--out"), "{err}");
}

/// Never set: the server is stopped by dropping it.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[test]
fn services_prints_the_agents_service_table() {
    use std::sync::{Arc, Mutex};
    use weir_control::agent::{ControlStats, Endpoints, HttpLimits, HttpServer};
    use weir_dataplane::service::{
        BackendSpec, FrontendKind, FrontendSpec, ServiceSpec, ServiceTable, UDP,
    };

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut publisher = weir_dataplane::Publisher::new();
    let endpoints = Endpoints {
        reports: Vec::new(),
        control: Arc::new(Mutex::new(ControlStats::default())),
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        snapshots: publisher.reader(),
    };
    let server = HttpServer::start(listener, endpoints, HttpLimits::default(), &STOP).unwrap();
    let table = ServiceTable::build(
        vec![ServiceSpec {
            namespace: "kube-system".into(),
            name: "dns".into(),
            port_name: "dns".into(),
            protocol: UDP,
            frontends: vec![FrontendSpec {
                addr: "198.19.0.53".parse().unwrap(),
                port: 53,
                kind: FrontendKind::ClusterIp,
            }],
            backends: vec![BackendSpec {
                addr: "198.18.1.53".parse().unwrap(),
                port: 5353,
                ready: true,
                serving: true,
                terminating: false,
                local: true,
            }],
            external_local: false,
            internal_local: false,
            affinity_seconds: None,
        }],
        None,
    )
    .unwrap();
    let mut b = weir_dataplane::SnapshotBuilder::new();
    b.services(Arc::new(table));
    publisher.publish(b).unwrap();

    let (ok, out, err) = weir(&["services", "--port", &port]);
    assert!(ok, "{err}");
    assert!(out.contains("kube-system/dns dns/UDP"), "{out}");
    let line = |needle: &str| out.lines().find(|l| l.contains(needle)).unwrap_or("");
    assert!(line("198.19.0.53:53").ends_with("ClusterIP"), "{out}");
    assert!(
        line("198.18.1.53:5353").ends_with("ready serving local"),
        "{out}"
    );
    let (ok, json, err) = weir(&["services", "--port", &port, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["services"][0]["cluster"]["set"], "ready", "{json}");
    drop(server);

    let (ok, _, err) = weir(&["services", "--port", &port]);
    assert!(!ok);
    assert!(
        err.contains("weir services: no agent answers on 127.0.0.1:"),
        "{err}"
    );
}
