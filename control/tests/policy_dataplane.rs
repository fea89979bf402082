//! Compiled policy in the real pipeline: YAML objects compiled by the control plane, put
//! into a snapshot, and frames through the in-memory driver — the same tables
//! `weir policy eval` answers from.

use std::net::{IpAddr, Ipv4Addr};

use weir_control::policy::compile::compile;
use weir_control::policy::eval::{evaluate, parse_probes};
use weir_control::policy::load::Cluster;
use weir_control::policy::model::IpFamily;
use weir_dataplane::craft;
use weir_dataplane::snapshot::{Mac, PodSpec};
use weir_dataplane::{DropReason, IfIndex, Snapshot, SnapshotBuilder};
use weir_workers::MemDriver;

const GW_MAC: Mac = [0xee; 6];

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
status: {podIP: 198.18.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec:
  containers:
  - {name: c, image: i, ports: [{name: pg, containerPort: 5432}]}
status: {podIP: 198.18.0.11}
"#;

const ALLOW_PG: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: pg}]
"#;

const DENY_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
"#;

fn mac(i: u8) -> Mac {
    [0x02, 0, 0, 0, 0, i]
}

/// A node snapshot with the cluster's pods at the endpoint ids the compiler gave them.
fn snapshot(policy_yaml: &str, generation: u64) -> (Snapshot, Vec<(IfIndex, Ipv4Addr, Mac)>) {
    let text = format!("{PODS}---\n{policy_yaml}");
    let cluster = Cluster::from_sources([("t.yaml", text.as_str())]).unwrap();
    let compiled = compile(&cluster);
    let mut b = SnapshotBuilder::new();
    let mut ports = Vec::new();
    for (name, &id) in &compiled.endpoints {
        let pod = &cluster.pods[name];
        let Some(IpAddr::V4(ip)) = pod.ip(IpFamily::V4) else {
            panic!("fixture pods are IPv4")
        };
        let m = mac(10 + id as u8);
        let (ifindex, endpoint) = b
            .pod(PodSpec {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                interface: format!("veth-{}", pod.name),
                gateway_mac: GW_MAC,
                mac: m,
                ipv4: Some(ip),
                ipv6: None,
                mtu: 1500,
            })
            .unwrap();
        assert_eq!(endpoint, id, "snapshot endpoint ids follow the compiler's");
        ports.push((ifindex, ip, m));
    }
    b.policy(compiled.tables);
    (b.build(generation).unwrap(), ports)
}

#[test]
fn compiled_policy_decides_frames_and_a_new_deny_cuts_the_flow() {
    let (s1, ports) = snapshot(ALLOW_PG, 1);
    let [(client_if, client_ip, client_mac), (db_if, db_ip, _)] = ports[..] else {
        panic!("two pods")
    };
    let pg = craft::tcp4(client_mac, GW_MAC, client_ip, db_ip, 40000, 5432, 60);
    let other = craft::tcp4(client_mac, GW_MAC, client_ip, db_ip, 40000, 5433, 60);
    let mut d = MemDriver::new(64, 64);
    d.inject(client_if, &pg).unwrap();
    d.inject(client_if, &other).unwrap();
    d.run(&s1, 1_000);
    assert_eq!(d.take_tx(db_if).len(), 1, "the named port pg is allowed");
    assert_eq!(d.counters().dropped(DropReason::PolicyDeniedIngress), 1);

    // The same question asked of `weir policy eval` gets the same answers.
    let text = format!("{PODS}---\n{ALLOW_PG}");
    let cluster = Cluster::from_sources([("t.yaml", text.as_str())]).unwrap();
    let probes = parse_probes(
        r#"[{"from": "shop/client", "to": "shop/db", "port": 5432},
            {"from": "shop/client", "to": "shop/db", "port": 5433}]"#,
        "p.json",
    )
    .unwrap();
    let report = evaluate(&cluster, &probes, IpFamily::V4, "p.json").unwrap();
    assert_eq!(report.verdicts, ["allow", "deny"]);

    // A new generation denies everything to db: the running flow is cut on its next
    // packet.
    let (s2, _) = snapshot(DENY_ALL, 2);
    d.inject(client_if, &pg).unwrap();
    d.run(&s2, 2_000);
    assert!(d.take_tx(db_if).is_empty());
    assert_eq!(d.counters().dropped(DropReason::PolicyDeniedIngress), 2);
    d.counters().check_accounting().unwrap();
}

const LOG_THEN_ALLOW: &str = r#"
apiVersion: weir.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: audit}
spec:
  selector: app == 'db'
  ingress:
  - {action: Log, protocol: TCP}
  - {action: Allow}
"#;

#[test]
fn log_rules_leave_rate_limited_records_naming_the_rule() {
    let (s, ports) = snapshot(LOG_THEN_ALLOW, 1);
    let [(client_if, client_ip, client_mac), (db_if, db_ip, _)] = ports[..] else {
        panic!("two pods")
    };
    let mut d = MemDriver::new(256, 256);
    // 100 new flows in one instant: every one is allowed, at most a burst is logged.
    for port in 0..100u16 {
        let f = craft::tcp4(client_mac, GW_MAC, client_ip, db_ip, 40000 + port, 5432, 60);
        d.inject(client_if, &f).unwrap();
    }
    d.run(&s, 1_000);
    assert_eq!(d.take_tx(db_if).len(), 100);
    let logs = d.pipeline().policy_state().take_logs();
    assert_eq!(logs.len(), 20, "the burst of the log rate limit");
    let info = &s.policy.rules[logs[0].rule as usize];
    assert_eq!(
        (info.policy.as_str(), info.index),
        ("GlobalNetworkPolicy audit", Some(0))
    );
    assert!(logs
        .iter()
        .all(|l| l.flow.dst_port == 5432 && l.generation == 1));
}
