//! [`ServiceTable::set`]: a Service changed in place gives the lookups a table compiled
//! from scratch gives, keeps what did not change, and refuses without changing anything.

use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn backend(last: u8, port: u16) -> BackendSpec {
    BackendSpec {
        addr: IpAddr::from([198, 18, 10, last]),
        port,
        ready: true,
        serving: true,
        terminating: false,
        local: last % 2 == 0,
    }
}

/// Service `svc` (namespace `shop`), port `name` on cluster IP 198.19.0.`vip`:`port`.
fn spec(svc: &str, name: &str, vip: u8, port: u16, backends: Vec<BackendSpec>) -> ServiceSpec {
    ServiceSpec {
        namespace: "shop".into(),
        name: svc.into(),
        port_name: name.into(),
        protocol: TCP,
        frontends: vec![FrontendSpec {
            addr: IpAddr::from([198, 19, 0, vip]),
            port,
            kind: FrontendKind::ClusterIp,
        }],
        backends,
        external_local: false,
        internal_local: false,
        affinity_seconds: None,
    }
}

fn name(svc: &str) -> ServiceName {
    ("shop".into(), svc.into())
}

fn vip(last: u8) -> [u8; 16] {
    FlowKey::map_v4([198, 19, 0, last])
}

/// Frontends (with their port and sets), endpoints, addresses, frontend ports, endpoint
/// ports.
type Lookups = (
    Vec<String>,
    Vec<AddrPort>,
    Vec<[u8; 16]>,
    Vec<u16>,
    Vec<u16>,
);

/// Everything a worker can look up, in a form two tables can be compared by.
fn lookups(t: &ServiceTable) -> Lookups {
    let mut frontends: Vec<String> = t
        .frontends
        .iter()
        .map(|(k, e)| {
            let p = t.ports[e.index as usize]
                .as_ref()
                .expect("a frontend's port is live");
            // The entry's own copy of what a new connection reads, beside the port's.
            format!(
                "{:?}:{}/{} {:?} -> {}/{}/{} {:?} {:?} inside {:?} outside {:?} snat {} affinity {}",
                k.addr,
                k.port,
                k.proto,
                e.kind,
                p.spec.name,
                p.spec.port_name,
                p.spec.protocol,
                p.cluster.backends,
                p.local.backends,
                e.inside.backends,
                e.outside.backends,
                e.snat_external,
                e.affinity_ns
            )
        })
        .collect();
    frontends.sort();
    let mut endpoints: Vec<AddrPort> = t.endpoints.keys().copied().collect();
    endpoints.sort_by_key(|e| (e.addr, e.port, e.proto));
    let mut addresses: Vec<[u8; 16]> = t.addresses.keys().copied().collect();
    addresses.sort();
    // The ports counted, each with its bit set, and no other bit set.
    let ports = |s: &PortSet| {
        let mut p: Vec<u16> = s.counts.keys().copied().collect();
        p.sort_unstable();
        assert!(p.iter().all(|&p| s.contains(p)));
        let bits: u32 = s.bits.iter().map(|w| w.count_ones()).sum();
        assert_eq!(bits as usize, p.len());
        p
    };
    (
        frontends,
        endpoints,
        addresses,
        ports(&t.frontend_ports),
        ports(&t.endpoint_ports),
    )
}

#[test]
fn an_endpoint_change_keeps_the_index_and_moves_only_the_removed_share() {
    let mut t = ServiceTable::default();
    let ten: Vec<BackendSpec> = (1..=10).map(|i| backend(i, 8080)).collect();
    t.set(&name("api"), vec![spec("api", "http", 10, 80, ten.clone())])
        .unwrap();
    t.set(
        &name("web"),
        vec![spec("web", "http", 11, 80, ten[..3].to_vec())],
    )
    .unwrap();
    let before = t.frontend(&vip(10), 80, TCP).unwrap();
    let (index, old_set) = (before.index, Arc::clone(&before.port().unwrap().cluster));
    let web_set = Arc::clone(
        &t.frontend(&vip(11), 80, TCP)
            .unwrap()
            .port()
            .unwrap()
            .cluster,
    );

    // Endpoint .10 goes away.
    t.set(
        &name("api"),
        vec![spec("api", "http", 10, 80, ten[..9].to_vec())],
    )
    .unwrap();
    let after = t.frontend(&vip(10), 80, TCP).unwrap();
    assert_eq!(after.index, index, "the port keeps its index");
    let gone = (FlowKey::map_v4([198, 18, 10, 10]), 8080);
    let mut moved = 0;
    for h in 0..20_000u64 {
        let hash = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let (was, is) = (
            old_set.pick(hash).unwrap(),
            after.port().unwrap().cluster.pick(hash).unwrap(),
        );
        if was != is {
            assert_eq!(was, gone, "only the removed endpoint's flows move");
            moved += 1;
        }
    }
    assert!(moved > 0);
    assert!(
        Arc::ptr_eq(
            &t.frontend(&vip(11), 80, TCP)
                .unwrap()
                .port()
                .unwrap()
                .cluster,
            &web_set
        ),
        "another Service is not touched"
    );
    // .10 served only api: it is no endpoint now; .1 still serves both.
    assert!(!t.is_endpoint(&gone.0, 8080, TCP));
    assert!(t.is_endpoint(&FlowKey::map_v4([198, 18, 10, 1]), 8080, TCP));
}

/// A table holding service `api` on 198.19.0.10:80 with one endpoint, 198.18.10.1:8080.
fn with_api() -> ServiceTable {
    let mut t = ServiceTable::default();
    t.set(
        &name("api"),
        vec![spec("api", "http", 10, 80, vec![backend(1, 8080)])],
    )
    .unwrap();
    t
}

#[test]
fn a_removed_service_leaves_no_lookup_and_shared_entries_stay_for_the_other() {
    let mut t = with_api();
    t.set(
        &name("web"),
        vec![
            spec("web", "http", 11, 80, vec![backend(1, 8080)]),
            spec("web", "admin", 11, 9000, vec![backend(2, 9001)]),
        ],
    )
    .unwrap();
    t.set(&name("web"), vec![]).unwrap();
    assert!(t.frontend(&vip(11), 80, TCP).is_none());
    assert!(!t.is_service_address(&vip(11)));
    assert!(!t.is_frontend_port(9000) && !t.is_endpoint_port(9001));
    assert!(
        t.is_frontend_port(80) && t.is_endpoint_port(8080),
        "api still uses them"
    );
    assert!(t.is_endpoint(&FlowKey::map_v4([198, 18, 10, 1]), 8080, TCP));
    assert_eq!(t.len(), 1);
    assert_eq!(t.ports().count(), 1);
    // The freed indices are used again.
    t.set(
        &name("db"),
        vec![spec("db", "sql", 12, 5432, vec![backend(3, 5432)])],
    )
    .unwrap();
    assert!(t.frontend(&vip(12), 5432, TCP).unwrap().index < 3);
    assert_eq!(t.ports.len(), 3);
}

#[test]
fn a_refused_change_changes_nothing() {
    let mut t = with_api();
    t.set(
        &name("web"),
        vec![spec("web", "http", 11, 80, vec![backend(2, 8080)])],
    )
    .unwrap();
    let before = lookups(&t);
    // web onto api's frontend.
    let e = t
        .set(
            &name("web"),
            vec![spec("web", "http", 10, 80, vec![backend(3, 8080)])],
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("already the frontend of shop/api"),
        "{e}"
    );
    // Two ports of one Service on one frontend.
    let e = t
        .set(
            &name("web"),
            vec![
                spec("web", "a", 11, 80, vec![]),
                spec("web", "b", 11, 80, vec![]),
            ],
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("already the frontend of shop/web"),
        "{e}"
    );
    let mut odd = spec("web", "http", 11, 80, vec![]);
    odd.protocol = 1;
    assert!(matches!(
        t.set(&name("web"), vec![odd]),
        Err(ServiceError::Protocol { .. })
    ));
    assert!(matches!(
        t.set(&name("web"), vec![spec("api", "http", 11, 80, vec![])]),
        Err(ServiceError::Misfiled { .. })
    ));
    assert_eq!(lookups(&t), before);
}

type StepPort = (u8, u16, Vec<(u8, u16)>);

/// One step of a random history: Service `svc` gets ports on cluster IP .`vip`.
#[derive(Debug, Clone)]
struct Step {
    svc: u8,
    /// (port name, port, endpoints as (address's last byte, port)).
    ports: Vec<StepPort>,
}

fn step() -> impl Strategy<Value = Step> {
    let port = (
        0u8..3,
        prop::sample::select(vec![80u16, 443, 8080]),
        prop::collection::vec((1u8..12, prop::sample::select(vec![8080u16, 9000])), 0..6),
    );
    (0u8..6, prop::collection::vec(port, 0..3)).prop_map(|(svc, ports)| Step { svc, ports })
}

fn specs_of(step: &Step) -> Vec<ServiceSpec> {
    let svc = format!("s{}", step.svc);
    let mut out: Vec<ServiceSpec> = Vec::new();
    for (name, port, backends) in &step.ports {
        let name = format!("p{name}");
        if out.iter().any(|s| s.port_name == name) {
            continue;
        }
        let mut b: Vec<BackendSpec> = backends.iter().map(|&(a, p)| backend(a, p)).collect();
        b.sort_by_key(|b| (b.addr, b.port));
        b.dedup_by_key(|b| (b.addr, b.port));
        // Services 0 and 1 share cluster IP .10, so some histories clash.
        out.push(spec(&svc, &name, 10 + step.svc.saturating_sub(1), *port, b));
    }
    out
}

proptest! {
    #[test]
    fn any_history_of_changes_looks_up_as_a_fresh_build(steps in prop::collection::vec(step(), 1..40)) {
        let mut t = ServiceTable::default();
        let mut current: BTreeMap<ServiceName, Vec<ServiceSpec>> = BTreeMap::new();
        for s in &steps {
            let n = name(&format!("s{}", s.svc));
            let specs = specs_of(s);
            let before = lookups(&t);
            match t.set(&n, specs.clone()) {
                Ok(()) => {
                    if specs.is_empty() {
                        current.remove(&n);
                    } else {
                        current.insert(n, specs);
                    }
                }
                Err(_) => prop_assert_eq!(lookups(&t), before),
            }
            let fresh = ServiceTable::build(current.values().flatten().cloned().collect(), None)
                .expect("the accepted specs compile");
            prop_assert_eq!(lookups(&t), lookups(&fresh));
            let live: Vec<&ServiceSpec> = t.ports().map(|p| &p.spec).collect();
            let want: Vec<&ServiceSpec> = current.values().flatten().collect();
            prop_assert_eq!(live, want);
        }
    }
}
