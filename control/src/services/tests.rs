use std::net::IpAddr;

use weir_dataplane::service::{BackendSpec, FrontendKind, FrontendSpec, ServiceSpec, TCP, UDP};

use super::*;

const NODE: &str = "node-a";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn cluster(docs: &[String]) -> Cluster {
    let yaml = docs.join("---\n");
    Cluster::from_sources([("test.yaml", yaml.as_str())])
        .unwrap_or_else(|e| panic!("{e:?}\n{yaml}"))
}

/// A pod of namespace `shop`, labelled `app: {app}`, on `node`, with `ips` and container
/// ports (`name:port/protocol` or `port`).
fn pod(name: &str, app: &str, node: &str, ips: &[&str], ports: &[&str]) -> String {
    let ports: String = ports
        .iter()
        .map(|p| {
            let (name, rest) = p.split_once(':').map_or((None, *p), |(n, r)| (Some(n), r));
            let (number, protocol) = rest.split_once('/').unwrap_or((rest, "TCP"));
            let name = name.map_or(String::new(), |n| format!("name: {n}, "));
            format!("    - {{{name}containerPort: {number}, protocol: {protocol}}}\n")
        })
        .collect();
    let ips: String = ips.iter().map(|a| format!("  - ip: '{a}'\n")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  labels:\n    \
         app: {app}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: x\n    \
         ports:\n{ports}status:\n  podIPs:\n{ips}"
    )
}

fn service(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n{spec}")
}

fn slice(name: &str, service: &str, body: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, \
         namespace: shop, labels: {{kubernetes.io/service-name: {service}}}}}\n{body}"
    )
}

fn specs(docs: &[String], node_addresses: &[&str]) -> Vec<ServiceSpec> {
    let addrs: Vec<IpAddr> = node_addresses.iter().map(|a| ip(a)).collect();
    node_services(&cluster(docs), NODE, &addrs)
}

fn backend(addr: &str, port: u16, ready: bool, terminating: bool, local: bool) -> BackendSpec {
    BackendSpec {
        addr: ip(addr),
        port,
        ready,
        serving: true,
        terminating,
        local,
    }
}

fn frontend(addr: &str, port: u16, kind: FrontendKind) -> FrontendSpec {
    FrontendSpec {
        addr: ip(addr),
        port,
        kind,
    }
}

#[test]
fn endpoint_slices_give_the_backends_with_their_conditions_and_locality() {
    let docs = [
        service(
            "api",
            "spec:\n  clusterIP: 198.19.0.10\n  selector: {app: api}\n  ports:\n  - {name: http, \
             port: 80, targetPort: 8080}\n  - {name: dns, port: 53, protocol: UDP}\n",
        ),
        slice(
            "api-1",
            "api",
            "addressType: IPv4\nendpoints:\n- addresses: [198.18.1.11]\n  nodeName: node-b\n- \
             addresses: [198.18.1.10, 198.18.1.99]\n  nodeName: node-a\n- addresses: \
             [198.18.1.12]\n  conditions: {ready: false, serving: true, terminating: true}\n  \
             nodeName: node-b\nports:\n- {name: http, port: 8080}\n- {name: dns, port: 5353, \
             protocol: UDP}\n",
        ),
        // An endpoint listed twice while it moves between slices: the ready copy counts,
        // though this slice is read first.
        slice(
            "api-0",
            "api",
            "addressType: IPv4\nendpoints:\n- addresses: [198.18.1.11]\n  conditions: {ready: \
             false}\n- addresses: [198.18.2.20]\nports:\n- {name: http, port: 8080}\n",
        ),
        slice(
            "api-fqdn",
            "api",
            "addressType: FQDN\nendpoints:\n- addresses: [api.example.com]\nports:\n- {name: \
             http, port: 8080}\n",
        ),
        // The pods the selector picks are not read: slices exist.
        pod("api-x", "api", "node-a", &["198.18.9.9"], &["8080"]),
        // 198.18.2.20 has no nodeName in its slice, but it is one of this node's pods.
        pod("api-y", "other", "node-a", &["198.18.2.20"], &[]),
    ];
    let s = specs(&docs, &[]);
    assert_eq!(s.len(), 2, "{s:#?}");
    let (dns, http) = (&s[0], &s[1]);
    assert_eq!((dns.port_name.as_str(), dns.protocol), ("dns", UDP));
    assert_eq!(
        dns.backends.iter().map(|b| b.port).collect::<Vec<_>>(),
        [5353, 5353, 5353],
        "slice api-2 has no dns port"
    );
    assert_eq!((http.port_name.as_str(), http.protocol), ("http", TCP));
    assert_eq!(
        http.frontends,
        [frontend("198.19.0.10", 80, FrontendKind::ClusterIp)]
    );
    assert_eq!(
        http.backends,
        [
            backend("198.18.1.10", 8080, true, false, true),
            backend("198.18.1.11", 8080, true, false, false),
            backend("198.18.1.12", 8080, false, true, false),
            backend("198.18.2.20", 8080, true, false, true),
        ],
        "first address only, sorted, conditions carried, local by nodeName or by pod"
    );
}

#[test]
fn without_a_slice_the_selected_pods_are_the_endpoints_with_named_ports_resolved_per_pod() {
    let docs = [
        service(
            "web",
            "spec:\n  clusterIPs: [198.19.0.20, '2001:db8::20']\n  selector: {app: web}\n  \
             ports:\n  - {name: http, port: 80, targetPort: web}\n  - {name: metrics, port: \
             9100}\n",
        ),
        pod(
            "web-1",
            "web",
            "node-a",
            &["198.18.1.1", "2001:db8:1::1"],
            &["web:8080", "9100"],
        ),
        // The same name over UDP is not the service port's TCP port: left out of http.
        pod("web-2", "web", "node-b", &["198.18.1.2"], &["web:8081/UDP"]),
        pod("web-3", "web", "node-b", &["198.18.1.3"], &["web:8082"]),
        pod("db-1", "db", "node-a", &["198.18.1.4"], &["web:8083"]),
        // No address yet.
        pod("web-4", "web", "node-a", &[], &["web:8084"]),
        // Another namespace.
        pod("web-6", "web", "node-a", &["198.18.1.6"], &["web:8086"])
            .replace("namespace: shop", "namespace: other"),
        // Host network: not an endpoint.
        pod("web-5", "web", "node-a", &["198.18.0.1"], &["web:8085"])
            .replace("spec:\n", "spec:\n  hostNetwork: true\n"),
    ];
    let s = specs(&docs, &[]);
    // Dual-stack: each port once per family, the IPv4 spec first.
    assert_eq!(s.len(), 4, "{s:#?}");
    let (http, http6, metrics, metrics6) = (&s[0], &s[1], &s[2], &s[3]);
    assert_eq!(
        (http.port_name.as_str(), http6.port_name.as_str()),
        ("http", "http")
    );
    assert_eq!(
        http.backends,
        [
            backend("198.18.1.1", 8080, true, false, true),
            backend("198.18.1.3", 8082, true, false, false),
        ]
    );
    assert_eq!(
        http6.backends,
        [backend("2001:db8:1::1", 8080, true, false, true)]
    );
    assert_eq!(metrics.port_name, "metrics");
    assert_eq!(
        metrics
            .backends
            .iter()
            .chain(&metrics6.backends)
            .map(|b| (b.addr, b.port))
            .collect::<Vec<_>>(),
        [
            (ip("198.18.1.1"), 9100),
            (ip("198.18.1.2"), 9100),
            (ip("198.18.1.3"), 9100),
            (ip("2001:db8:1::1"), 9100),
        ],
        "a numeric targetPort needs no container port"
    );
    assert_eq!(
        http.frontends,
        [frontend("198.19.0.20", 80, FrontendKind::ClusterIp)]
    );
    assert_eq!(
        http6.frontends,
        [frontend("2001:db8::20", 80, FrontendKind::ClusterIp)]
    );

    // A service without a selector and without slices has no backends, but answers.
    let s = specs(
        &[service(
            "manual",
            "spec:\n  clusterIP: 198.19.0.21\n  ports: [{port: 80}]\n",
        )],
        &[],
    );
    assert_eq!(s.len(), 1);
    assert!(s[0].backends.is_empty());
}

#[test]
fn node_ports_answer_on_the_node_addresses_of_the_service_families() {
    let docs = [
        service(
            "v4",
            "spec:\n  type: NodePort\n  clusterIP: 198.19.0.30\n  ports: [{port: 80, nodePort: \
             30080}]\n",
        ),
        service(
            "dual",
            "spec:\n  type: NodePort\n  clusterIPs: [198.19.0.31, '2001:db8::31']\n  ports: \
             [{port: 80, nodePort: 30081}]\n",
        ),
        // No cluster IP allocated (a file datastore): the families of its endpoints.
        service(
            "unallocated",
            "spec:\n  type: NodePort\n  selector: {app: u}\n  ports: [{port: 80, nodePort: \
             30082}]\n",
        ),
        pod("u-1", "u", "node-b", &["2001:db8:1::5"], &[]),
        // Neither: both families.
        service(
            "empty",
            "spec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 30083}]\n",
        ),
    ];
    let s = specs(&docs, &["2001:db8:ff::1", "198.18.0.1", "198.18.0.1"]);
    let by_name = |n: &str| s.iter().find(|s| s.name == n).unwrap();
    assert_eq!(
        by_name("v4").frontends,
        [
            frontend("198.19.0.30", 80, FrontendKind::ClusterIp),
            frontend("198.18.0.1", 30080, FrontendKind::NodePort),
        ]
    );
    let dual: Vec<&FrontendSpec> = s
        .iter()
        .filter(|s| s.name == "dual")
        .flat_map(|s| &s.frontends)
        .collect();
    assert_eq!(
        dual,
        [
            &frontend("198.19.0.31", 80, FrontendKind::ClusterIp),
            &frontend("198.18.0.1", 30081, FrontendKind::NodePort),
            &frontend("2001:db8::31", 80, FrontendKind::ClusterIp),
            &frontend("2001:db8:ff::1", 30081, FrontendKind::NodePort),
        ],
        "one spec per family, the IPv4 one first"
    );
    assert_eq!(
        by_name("unallocated").frontends,
        [frontend("2001:db8:ff::1", 30082, FrontendKind::NodePort)]
    );
    assert_eq!(s.iter().filter(|s| s.name == "empty").count(), 2);
}

#[test]
fn load_balancer_and_external_ips_answer_on_the_service_port() {
    let docs = [service(
        "lb",
        "spec:\n  type: LoadBalancer\n  clusterIP: 198.19.0.40\n  externalIPs: [198.18.250.1, \
         198.18.250.2]\n  externalTrafficPolicy: Local\n  ports: [{port: 443, nodePort: \
         30443}]\nstatus: {loadBalancer: {ingress: [{ip: 198.18.250.2}, {ip: 198.18.250.3}]}}\n",
    )];
    let s = specs(&docs, &["198.18.0.1"]);
    assert_eq!(
        s[0].frontends,
        [
            frontend("198.19.0.40", 443, FrontendKind::ClusterIp),
            frontend("198.18.0.1", 30443, FrontendKind::NodePort),
            frontend("198.18.250.2", 443, FrontendKind::LoadBalancer),
            frontend("198.18.250.3", 443, FrontendKind::LoadBalancer),
            frontend("198.18.250.1", 443, FrontendKind::ExternalIp),
        ],
        "an address both LB and external is one frontend"
    );
    assert!(s[0].external_local && !s[0].internal_local);
}

#[test]
fn traffic_policies_and_affinity_are_carried() {
    let docs = [
        service(
            "a",
            "spec:\n  clusterIP: 198.19.0.50\n  internalTrafficPolicy: Local\n  \
             sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: \
             60}}\n  ports: [{port: 80}]\n",
        ),
        service(
            "b",
            "spec:\n  clusterIP: 198.19.0.51\n  sessionAffinity: ClientIP\n  ports: [{port: \
             80}]\n",
        ),
        service(
            "c",
            "spec:\n  clusterIP: 198.19.0.52\n  ports: [{port: 80}]\n",
        ),
    ];
    let s = specs(&docs, &[]);
    let got: Vec<(bool, bool, Option<u32>)> = s
        .iter()
        .map(|s| (s.external_local, s.internal_local, s.affinity_seconds))
        .collect();
    assert_eq!(
        got,
        [
            (false, true, Some(60)),
            (false, false, Some(10_800)),
            (false, false, None)
        ]
    );
}

#[test]
fn external_name_headless_and_address_less_services_are_left_out() {
    let docs = [
        service(
            "alias",
            "spec: {type: ExternalName, externalName: db.example.com}\n",
        ),
        service(
            "headless",
            "spec:\n  clusterIP: None\n  selector: {app: h}\n  ports: [{port: 80}]\n",
        ),
        service(
            "unallocated",
            "spec:\n  selector: {app: h}\n  ports: [{port: 80}]\n",
        ),
        pod("h-1", "h", "node-a", &["198.18.1.1"], &[]),
        service(
            "kept",
            "spec:\n  clusterIP: 198.19.0.60\n  ports: [{port: 80}]\n",
        ),
    ];
    let s = specs(&docs, &["198.18.0.1"]);
    assert_eq!(
        s.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["kept"]
    );
}

#[test]
fn services_labelled_for_another_proxy_or_headless_are_left_out_as_kube_proxy_does() {
    let labelled = |name: &str, label: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop, labels: \
             {{'{label}': x}}}}\nspec:\n  clusterIP: 198.19.0.61\n  ports: [{{port: 80}}]\n"
        )
    };
    let docs = [
        labelled("other-proxy", "service.kubernetes.io/service-proxy-name"),
        labelled("marked-headless", "service.kubernetes.io/headless"),
        labelled("unrelated", "service.kubernetes.io/topology-mode"),
    ];
    let s = specs(&docs, &["198.18.0.1"]);
    assert_eq!(
        s.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["unrelated"]
    );
    let c = cluster(&docs);
    let other = c
        .services
        .values()
        .find(|s| s.name == "other-proxy")
        .unwrap();
    assert_eq!(
        other.not_proxied,
        Some("service.kubernetes.io/service-proxy-name")
    );
}

#[test]
fn the_same_model_gives_equal_specs_in_a_fixed_order() {
    let mut docs = vec![
        service(
            "zeta",
            "spec:\n  clusterIP: 198.19.0.70\n  selector: {app: z}\n  ports: [{name: b, port: \
             81}, {name: a, port: 80}]\n",
        ),
        service(
            "alpha",
            "spec:\n  clusterIP: 198.19.0.71\n  selector: {app: z}\n  ports: [{port: 80}]\n",
        ),
    ];
    for i in (1..=5).rev() {
        docs.push(pod(
            &format!("z-{i}"),
            "z",
            "node-b",
            &[&format!("198.18.1.{i}")],
            &[],
        ));
    }
    let first = specs(&docs, &["198.18.0.1"]);
    docs.reverse();
    let again = specs(&docs, &["198.18.0.1"]);
    assert_eq!(first, again);
    assert_eq!(
        first
            .iter()
            .map(|s| format!("{}/{}", s.name, s.port_name))
            .collect::<Vec<_>>(),
        ["alpha/", "zeta/a", "zeta/b"]
    );
    let addrs: Vec<IpAddr> = first[0].backends.iter().map(|b| b.addr).collect();
    let mut sorted = addrs.clone();
    sorted.sort();
    assert_eq!(addrs, sorted);
    assert_eq!(addrs.len(), 5);
}

#[test]
fn the_state_reuses_an_unchanged_table_and_keeps_the_last_good_one_when_refused() {
    let one = specs(
        &[service(
            "a",
            "spec:\n  clusterIP: 198.19.0.80\n  ports: [{port: 80}]\n",
        )],
        &[],
    );
    let mut state = ServiceState::default();
    let change = state.change(one.clone());
    assert!(change.is_new());
    let built = change.table().clone();
    assert_eq!(state.commit(change), None);
    let same = state.change(one.clone());
    assert!(!same.is_new());
    assert!(
        Arc::ptr_eq(same.table(), &built),
        "no rebuild for equal specs"
    );
    state.commit(same);

    // Two services on one frontend: the newcomer is refused, the last good table stays,
    // reported once.
    let mut clash = one.clone();
    let mut other = one[0].clone();
    other.name = "b".into();
    clash.push(other);
    let refused = state.change(clash.clone());
    assert!(Arc::ptr_eq(refused.table(), &built));
    let why = state.commit(refused).expect("a fresh refusal is reported");
    assert!(
        why.contains("service shop/b could not be compiled"),
        "{why}"
    );
    assert!(why.contains("already the frontend of shop/a"), "{why}");
    assert!(why.contains("last good version keeps serving"), "{why}");
    assert_eq!(state.refused_total(), 1);
    let again = state.change(clash);
    assert!(Arc::ptr_eq(again.table(), &built));
    assert_eq!(
        state.commit(again),
        None,
        "the same refusal is not reported again"
    );
    assert_eq!(state.refused_total(), 1);
    assert!(state.refusal().is_some());

    // Fixed: back to the good specs, the refusal is gone.
    let fixed = state.change(one);
    assert!(Arc::ptr_eq(fixed.table(), &built));
    state.commit(fixed);
    assert_eq!(state.refusal(), None);
}

/// Service `name` on cluster IP 198.19.0.`vip`, port 80, with `endpoints` endpoints.
fn one_service(name: &str, vip: u8, endpoints: u8) -> Vec<ServiceSpec> {
    let mut s = specs(
        &[service(
            name,
            &format!("spec:\n  clusterIP: 198.19.0.{vip}\n  ports: [{{port: 80}}]\n"),
        )],
        &[],
    );
    s[0].backends = (1..=endpoints)
        .map(|i| backend(&format!("198.18.10.{i}"), 8080, true, false, false))
        .collect();
    s
}

#[test]
fn changes_are_made_in_the_spare_table_once_no_snapshot_holds_it() {
    let mut state = ServiceState::default();
    let mut model = [one_service("a", 80, 3), one_service("b", 81, 3)].concat();
    let first = state.change(model.clone());
    // The published snapshot holds the table, as the agent's would.
    let snapshot = Arc::clone(first.table());
    let t1 = Arc::as_ptr(first.table());
    state.commit(first);

    model[1].backends.pop();
    let second = state.change(model.clone());
    assert_eq!(second.changed(), 1, "only b changed");
    assert!(!std::ptr::eq(Arc::as_ptr(second.table()), t1));
    // The new snapshot replaces the old one, which lets go of the first table.
    drop(snapshot);
    let snapshot = Arc::clone(second.table());
    let t2 = Arc::as_ptr(second.table());
    state.commit(second);

    // The first table is free again: the third change is made in it, caught up.
    model[0].backends.pop();
    let third = state.change(model.clone());
    assert!(
        std::ptr::eq(Arc::as_ptr(third.table()), t1),
        "the spare is reused"
    );
    let looked = |t: &ServiceTable, vip: u8| {
        t.frontend(&weir_dataplane::FlowKey::map_v4([198, 19, 0, vip]), 80, 6)
            .and_then(|f| f.port())
            .map(|p| p.cluster.backends.len())
    };
    assert_eq!(looked(third.table(), 80), Some(2));
    assert_eq!(looked(third.table(), 81), Some(2), "b's change caught up");
    let published = Arc::clone(third.table());
    state.commit(third);
    assert_eq!(
        state.copies(),
        1,
        "only the very first table was made from scratch"
    );

    // A snapshot still holding the spare (t2, the one `snapshot` holds): the change is
    // made in a copy, counted.
    let held = snapshot;
    let snapshot = published;
    model[0].backends.pop();
    let fourth = state.change(model.clone());
    let p4 = Arc::as_ptr(fourth.table());
    assert!(!std::ptr::eq(p4, t2) && !std::ptr::eq(p4, t1));
    assert_eq!(looked(fourth.table(), 80), Some(1));
    assert_eq!(looked(&held, 80), Some(3), "a held table never changes");
    state.commit(fourth);
    assert_eq!(state.copies(), 2);
    drop((held, snapshot));
}

#[test]
fn a_refused_service_does_not_hold_back_the_others() {
    let mut state = ServiceState::default();
    let mut model = [one_service("a", 80, 3), one_service("b", 81, 3)].concat();
    let c = state.change(model.clone());
    state.commit(c);
    // b moves onto a's address while a loses an endpoint.
    model[1].frontends[0].addr = ip("198.19.0.80");
    model[0].backends.pop();
    let c = state.change(model.clone());
    assert_eq!(c.changed(), 1);
    let why = state.commit(c).expect("b's refusal");
    assert!(why.contains("shop/b"), "{why}");
    let t = state.table();
    let a = t
        .frontend(&weir_dataplane::FlowKey::map_v4([198, 19, 0, 80]), 80, 6)
        .unwrap();
    assert_eq!(a.port().unwrap().spec.name, "a");
    assert_eq!(
        a.port().unwrap().cluster.backends.len(),
        2,
        "a's change is published"
    );
    assert!(
        t.frontend(&weir_dataplane::FlowKey::map_v4([198, 19, 0, 81]), 80, 6)
            .is_some(),
        "b's last good version serves"
    );
    // a goes away: b's refused version now fits, and is retried with that change.
    let model: Vec<ServiceSpec> = model.into_iter().filter(|s| s.name == "b").collect();
    let c = state.change(model);
    assert_eq!(c.changed(), 2);
    state.commit(c);
    assert_eq!(state.refusal(), None);
    let b = state
        .table()
        .frontend(&weir_dataplane::FlowKey::map_v4([198, 19, 0, 80]), 80, 6)
        .unwrap();
    assert_eq!(b.port().unwrap().spec.name, "b");
}

#[test]
fn after_a_change_of_many_services_the_next_one_copies_rather_than_catches_up() {
    let mut state = ServiceState::default();
    let many: Vec<ServiceSpec> = (0..100u8)
        .flat_map(|i| one_service(&format!("s{i}"), i, 2))
        .collect();
    let c = state.change(many.clone());
    assert_eq!(c.changed(), 100);
    state.commit(c);
    assert_eq!(state.copies(), 1);
    let mut fewer = many;
    fewer[0].backends.pop();
    let c = state.change(fewer.clone());
    state.commit(c);
    assert_eq!(state.copies(), 2, "a copy, not 100 Services compiled again");
    fewer[1].backends.pop();
    let c = state.change(fewer);
    state.commit(c);
    assert_eq!(state.copies(), 2, "then the spare again");
}
