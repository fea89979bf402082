//! Services through the in-memory driver, frame in, frame out: a connection to a cluster
//! IP reaches an endpoint and its replies come from the service; a node port from the
//! world is translated to the node, and so are load-balancer and external IPs;
//! `externalTrafficPolicy: Local` answers only where an endpoint is local;
//! `internalTrafficPolicy: Local` keeps cluster IP traffic on the node's endpoints; a pod
//! reaches itself through its service; affinity pins a client for its timeout; removing an
//! endpoint keeps the connections to the others; a service without endpoints
//! answers with a reset or a port unreachable; two workers place both directions of a
//! service connection on one.

use std::net::Ipv4Addr;
use std::sync::Arc;

use weir_dataplane::craft;
use weir_dataplane::service::{BackendSpec, FrontendKind, FrontendSpec, ServiceSpec, ServiceTable};
use weir_dataplane::snapshot::{Mac, NatPool, NextHop, PodSpec, Prefix, SnatConfig, Tunnel};
use weir_dataplane::wire::checksum;
use weir_dataplane::{DropReason, IcmpErrorKind, IfIndex, Snapshot, SnapshotBuilder};
use weir_workers::handoff::mesh;
use weir_workers::mem::run_workers;
use weir_workers::MemDriver;

mod common;
use common::{checksums_verify, v4_dst, v4_src};

const GW_MAC: Mac = [0xee; 6];
const UP_MAC: Mac = [0x02, 0, 0, 0, 0, 0x99];
const ROUTER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
const NODE2_MAC: Mac = [0x02, 0, 0, 0, 0, 0x22];

const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 4);
/// A pod on node2.
const D4: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 9);
const NODE4: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
const WORLD4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);

const API: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const EMPTY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const SELF: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 12);
const STICKY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 13);
const NEARBY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 14);
const LB: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);

const A: IfIndex = 0;
const B: IfIndex = 1;
const C: IfIndex = 2;
const UPLINK: IfIndex = 3;
const PORTS: (u16, u16) = (61000, 61999);

fn mac(i: u8) -> Mac {
    [0x02, 0, 0, 0, 0, i]
}

fn backend(addr: Ipv4Addr, port: u16, local: bool) -> BackendSpec {
    BackendSpec {
        addr: addr.into(),
        port,
        ready: true,
        serving: true,
        terminating: false,
        local,
    }
}

fn service(
    name: &str,
    protocol: u8,
    frontends: Vec<FrontendSpec>,
    backends: Vec<BackendSpec>,
) -> ServiceSpec {
    ServiceSpec {
        namespace: "shop".into(),
        name: name.into(),
        port_name: String::new(),
        protocol,
        frontends,
        backends,
        external_local: false,
        internal_local: false,
        affinity_seconds: None,
    }
}

fn cluster_ip(addr: Ipv4Addr, port: u16) -> FrontendSpec {
    FrontendSpec {
        addr: addr.into(),
        port,
        kind: FrontendKind::ClusterIp,
    }
}

fn node_port(port: u16) -> FrontendSpec {
    FrontendSpec {
        addr: NODE4.into(),
        port,
        kind: FrontendKind::NodePort,
    }
}

/// The services of the node: `api` (TCP 80 and UDP 53) on B, C and D; `empty` without
/// endpoints; `self` whose only endpoint is A; `sticky` with ClientIP affinity; node port
/// 30080 (eTP Cluster) to B; node port 30081 (eTP Local) to D only. `without` leaves out
/// endpoints by address.
fn services(without: &[Ipv4Addr]) -> Vec<ServiceSpec> {
    let keep = |v: Vec<BackendSpec>| -> Vec<BackendSpec> {
        v.into_iter()
            .filter(|b| !without.iter().any(|w| b.addr == std::net::IpAddr::V4(*w)))
            .collect()
    };
    let bcd = |port| {
        keep(vec![
            backend(B4, port, true),
            backend(C4, port, true),
            backend(D4, port, false),
        ])
    };
    let mut sticky = service("sticky", 6, vec![cluster_ip(STICKY, 80)], bcd(8080));
    sticky.affinity_seconds = Some(10_800);
    let mut local = service(
        "local",
        6,
        vec![node_port(30081)],
        keep(vec![backend(D4, 8080, false)]),
    );
    local.external_local = true;
    // internalTrafficPolicy: Local: cluster IP traffic to this node's endpoints only.
    let mut nearby = service("nearby", 6, vec![cluster_ip(NEARBY, 80)], bcd(8080));
    nearby.internal_local = true;
    let balanced = service(
        "balanced",
        6,
        vec![
            FrontendSpec {
                addr: LB.into(),
                port: 443,
                kind: FrontendKind::LoadBalancer,
            },
            FrontendSpec {
                addr: EXTERNAL.into(),
                port: 443,
                kind: FrontendKind::ExternalIp,
            },
        ],
        keep(vec![backend(C4, 8443, true)]),
    );
    vec![
        nearby,
        balanced,
        service("api", 6, vec![cluster_ip(API, 80)], bcd(8080)),
        {
            let mut s = service("api", 17, vec![cluster_ip(API, 53)], bcd(5353));
            s.port_name = "dns".into();
            s
        },
        service("empty", 6, vec![cluster_ip(EMPTY, 80)], Vec::new()),
        service("empty-udp", 17, vec![cluster_ip(EMPTY, 53)], Vec::new()),
        service(
            "self",
            6,
            vec![cluster_ip(SELF, 80)],
            keep(vec![backend(A4, 8080, true)]),
        ),
        sticky,
        service(
            "np",
            6,
            vec![node_port(30080)],
            keep(vec![backend(B4, 8080, true)]),
        ),
        service(
            "diameter",
            132,
            vec![cluster_ip(API, 3868)],
            keep(vec![backend(B4, 3869, true)]),
        ),
        local,
    ]
}

fn node(generation: u64, table: Arc<ServiceTable>) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    for (name, ip, i) in [("a", A4, 0x0a), ("b", B4, 0x0b), ("c", C4, 0x0c)] {
        b.pod(PodSpec {
            namespace: "shop".into(),
            name: name.into(),
            interface: format!("veth-{name}"),
            gateway_mac: GW_MAC,
            mac: mac(i),
            ipv4: Some(ip),
            ipv6: None,
            mtu: 1500,
        })
        .unwrap();
    }
    assert_eq!(b.uplink("up0", UP_MAC, 1500).unwrap(), UPLINK);
    let n2 = b.node("node2", "198.18.200.3".parse().unwrap(), Some(NODE2_MAC));
    b.route(
        "198.18.64.0/24".parse::<Prefix>().unwrap(),
        NextHop::Remote {
            node: n2,
            tunnel: Tunnel::None,
        },
    );
    b.route(
        "0.0.0.0/0".parse::<Prefix>().unwrap(),
        NextHop::Router {
            mac: Some(ROUTER_MAC),
        },
    );
    b.snat(SnatConfig {
        v4: Some(NODE4),
        v6: None,
        ports: PORTS,
        pools: vec![NatPool {
            prefix: "198.18.0.0/17".parse().unwrap(),
            nat_outgoing: true,
        }],
    });
    b.services(table);
    b.build(generation).unwrap()
}

fn table(without: &[Ipv4Addr], previous: Option<&ServiceTable>) -> Arc<ServiceTable> {
    Arc::new(ServiceTable::build(services(without), previous).unwrap())
}

fn run(d: &mut MemDriver, s: &Snapshot, ingress: IfIndex, frame: &[u8], now: u64) {
    d.inject(ingress, frame).unwrap();
    d.run(s, now);
    d.check_accounting().unwrap();
    d.counters().check_accounting().unwrap();
}

/// The one frame that left, and the interface it left by.
fn sent(d: &mut MemDriver) -> (IfIndex, Vec<u8>) {
    let mut out = Vec::new();
    for iface in [A, B, C, UPLINK] {
        for f in d.take_tx(iface) {
            out.push((iface, f));
        }
    }
    d.complete_all();
    assert_eq!(out.len(), 1, "one frame out: {:?}", d.counters());
    out.pop().unwrap()
}

fn pod_mac(iface: IfIndex) -> Mac {
    match iface {
        A => mac(0x0a),
        B => mac(0x0b),
        C => mac(0x0c),
        _ => NODE2_MAC,
    }
}

fn addr_of(iface: IfIndex) -> Ipv4Addr {
    match iface {
        A => A4,
        B => B4,
        C => C4,
        _ => D4,
    }
}

fn tcp_flags(f: &[u8]) -> u8 {
    f[14 + 20 + 13]
}

/// Sends a TCP segment from A to `vip`:80 from `sport`; returns where it went and the
/// backend it reached.
fn connect(
    d: &mut MemDriver,
    s: &Snapshot,
    vip: Ipv4Addr,
    sport: u16,
    now: u64,
) -> (IfIndex, Ipv4Addr) {
    run(
        d,
        s,
        A,
        &craft::tcp4(mac(0x0a), GW_MAC, A4, vip, sport, 80, 60),
        now,
    );
    let (out, f) = sent(d);
    checksums_verify(&f);
    assert_eq!(v4_src(&f), (A4, sport), "the client's address is kept");
    let (dst, port) = v4_dst(&f);
    assert_eq!(port, 8080);
    assert_eq!(dst, addr_of(out), "sent where the endpoint is");
    (out, dst)
}

#[test]
fn a_connection_to_a_cluster_ip_reaches_an_endpoint_and_replies_come_from_the_service() {
    let s = node(1, table(&[], None));
    let mut d = MemDriver::new(64, 64);
    let mut seen = std::collections::BTreeSet::new();
    for sport in 40000..40040u16 {
        let (out, backend) = connect(&mut d, &s, API, sport, 1);
        seen.insert(backend);
        // The endpoint answers the client directly; weir gives the reply the service's
        // address and port.
        run(
            &mut d,
            &s,
            if out == UPLINK { UPLINK } else { out },
            &craft::tcp4(
                pod_mac(out),
                if out == UPLINK { UP_MAC } else { GW_MAC },
                backend,
                A4,
                8080,
                sport,
                60,
            ),
            2,
        );
        let (back, f) = sent(&mut d);
        assert_eq!(back, A);
        checksums_verify(&f);
        assert_eq!(v4_src(&f), (API, 80));
        assert_eq!(v4_dst(&f), (A4, sport));
    }
    assert_eq!(
        seen.len(),
        3,
        "40 connections spread over B, C and D: {seen:?}"
    );
    assert_eq!(d.pipeline().service_state().connections(), 40);

    // UDP to the same address, another port: its own endpoints' port.
    run(
        &mut d,
        &s,
        A,
        &craft::udp4(mac(0x0a), GW_MAC, A4, API, 5000, 53, 80),
        3,
    );
    let (_, f) = sent(&mut d);
    checksums_verify(&f);
    assert_eq!(v4_dst(&f).1, 5353);
}

/// One batch mixing new connections with packets that are not: with many services, new
/// connections are taken after the batch's other packets (their tables read together
/// first), so this checks, with few services and with many, that a second packet of a
/// connection opened earlier in the same batch finds its entry, that an established
/// connection and traffic to no frontend pass as they would alone, and that nothing is
/// lost or translated twice.
#[test]
fn new_connections_in_one_batch_with_other_traffic_are_each_translated_once() {
    // A few services: each new connection is taken at once.
    new_connections_in_one_batch(node(1, table(&[], None)));
    // Hundreds: new connections are taken after the batch's other packets, their tables
    // read ahead.
    let mut many = services(&[]);
    for k in 0..300u16 {
        let vip = Ipv4Addr::new(198, 19, 2 + (k >> 8) as u8, k as u8);
        many.push(service(
            &format!("filler-{k}"),
            6,
            vec![cluster_ip(vip, 80)],
            vec![backend(B4, 8080, true)],
        ));
    }
    new_connections_in_one_batch(node(1, Arc::new(ServiceTable::build(many, None).unwrap())));
}

fn new_connections_in_one_batch(s: Snapshot) {
    let mut d = MemDriver::new(64, 64);
    let (_, old_backend) = connect(&mut d, &s, API, 40000, 1);
    let batch = [
        craft::tcp4(mac(0x0a), GW_MAC, A4, API, 41000, 80, 60),
        craft::tcp4(mac(0x0a), GW_MAC, A4, API, 40000, 80, 60),
        craft::tcp4(mac(0x0a), GW_MAC, A4, API, 41001, 80, 60),
        craft::tcp4(mac(0x0a), GW_MAC, A4, B4, 41002, 9999, 60),
        craft::tcp4(mac(0x0a), GW_MAC, A4, API, 41000, 80, 60),
        craft::tcp4(mac(0x0a), GW_MAC, A4, API, 41001, 80, 60),
    ];
    // A node port from the world, twice: a second pick would claim a second source port.
    let world = craft::tcp4(ROUTER_MAC, UP_MAC, WORLD4, NODE4, 33000, 30080, 60);
    for f in &batch {
        d.inject(A, f).unwrap();
    }
    d.inject(UPLINK, &world).unwrap();
    d.inject(UPLINK, &world).unwrap();
    assert_eq!(d.poll(&s, 2), batch.len() + 2, "the frames in one batch");
    d.check_accounting().unwrap();
    d.counters().check_accounting().unwrap();
    let mut to = std::collections::BTreeMap::<u16, Vec<(Ipv4Addr, u16)>>::new();
    let mut from_world = Vec::new();
    for iface in [A, B, C, UPLINK] {
        for f in d.take_tx(iface) {
            checksums_verify(&f);
            let (src, sport) = v4_src(&f);
            let (dst, port) = v4_dst(&f);
            assert_eq!(dst, addr_of(iface), "sent where the endpoint is");
            if src == NODE4 {
                from_world.push((sport, dst, port));
                continue;
            }
            assert_eq!(src, A4, "the client's address is kept");
            to.entry(sport).or_default().push((dst, port));
        }
    }
    d.complete_all();
    assert_eq!(from_world.len(), 2, "{from_world:?}");
    assert_eq!(
        from_world[0], from_world[1],
        "one source port, one endpoint"
    );
    assert_eq!(from_world[0].1, B4);
    assert_eq!(to.values().map(Vec::len).sum::<usize>(), 6, "{to:?}");
    assert_eq!(to[&40000], vec![(old_backend, 8080)], "established");
    assert_eq!(to[&41002], vec![(B4, 9999)], "no frontend: untranslated");
    for sport in [41000, 41001] {
        let seen = &to[&sport];
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], seen[1], "both packets of {sport} to one endpoint");
        assert_eq!(seen[0].1, 8080);
    }
    assert_eq!(d.pipeline().service_state().connections(), 4);
}

#[test]
fn a_service_without_endpoints_answers_with_a_reset_or_a_port_unreachable() {
    let s = node(1, table(&[], None));
    let mut d = MemDriver::new(64, 64);
    let mut syn = craft::tcp4(mac(0x0a), GW_MAC, A4, EMPTY, 40000, 80, 54);
    syn[14 + 20 + 4..14 + 20 + 8].copy_from_slice(&1000u32.to_be_bytes());
    syn[14 + 20 + 13] = 0x02; // SYN
    syn[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&[0, 0]);
    let pseudo = checksum::pseudo_header_v4(A4.octets(), EMPTY.octets(), 6, 20);
    let c = !checksum::fold(checksum::sum(&syn[34..54], pseudo));
    syn[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&c.to_be_bytes());
    run(&mut d, &s, A, &syn, 1);
    let (out, rst) = sent(&mut d);
    assert_eq!(out, A);
    checksums_verify(&rst);
    assert_eq!(&rst[0..6], &mac(0x0a), "back to the client");
    assert_eq!(v4_src(&rst), (EMPTY, 80));
    assert_eq!(v4_dst(&rst), (A4, 40000));
    assert_eq!(tcp_flags(&rst), 0x14, "RST and ACK");
    let ack = u32::from_be_bytes(rst[42..46].try_into().unwrap());
    assert_eq!(ack, 1001, "acknowledges the SYN");
    assert_eq!(d.counters().dropped(DropReason::ServiceNoEndpoints), 1);
    assert_eq!(d.counters().icmp_sent(IcmpErrorKind::Reset), 1);

    run(
        &mut d,
        &s,
        A,
        &craft::udp4(mac(0x0a), GW_MAC, A4, EMPTY, 5000, 53, 80),
        2,
    );
    let (out, icmp) = sent(&mut d);
    assert_eq!(out, A);
    checksums_verify(&icmp);
    assert_eq!(icmp[23], 1, "ICMP");
    assert_eq!((icmp[34], icmp[35]), (3, 3), "port unreachable");
    assert_eq!(Ipv4Addr::new(icmp[26], icmp[27], icmp[28], icmp[29]), EMPTY);
    assert_eq!(d.counters().icmp_sent(IcmpErrorKind::PortUnreachable), 1);
    assert_eq!(d.counters().dropped(DropReason::ServiceNoEndpoints), 2);
}

#[test]
fn a_pod_reaches_itself_through_its_service_from_the_service_address() {
    let s = node(1, table(&[], None));
    let mut d = MemDriver::new(64, 64);
    run(
        &mut d,
        &s,
        A,
        &craft::tcp4(mac(0x0a), GW_MAC, A4, SELF, 40000, 80, 60),
        1,
    );
    let (out, f) = sent(&mut d);
    assert_eq!(out, A, "back into the pod that sent it");
    checksums_verify(&f);
    assert_eq!(v4_src(&f), (SELF, 40000), "not from the pod's own address");
    assert_eq!(v4_dst(&f), (A4, 8080));
    // The pod answers the service address; it sees the reply from the service port.
    run(
        &mut d,
        &s,
        A,
        &craft::tcp4(mac(0x0a), GW_MAC, A4, SELF, 8080, 40000, 60),
        2,
    );
    let (out, f) = sent(&mut d);
    assert_eq!(out, A);
    checksums_verify(&f);
    assert_eq!(v4_src(&f), (SELF, 80));
    assert_eq!(v4_dst(&f), (A4, 40000));
}

#[test]
fn client_ip_affinity_sends_every_connection_of_a_client_to_one_endpoint() {
    let s = node(1, table(&[], None));
    let mut d = MemDriver::new(64, 64);
    let backends: std::collections::BTreeSet<_> = (40000..40030u16)
        .map(|sport| connect(&mut d, &s, STICKY, sport, 1).1)
        .collect();
    assert_eq!(backends.len(), 1, "{backends:?}");
}

#[test]
fn a_client_ip_pin_lasts_its_timeout_and_no_longer() {
    const SEC: u64 = 1_000_000_000;
    let full = table(&[], None);
    let s1 = node(1, Arc::clone(&full));
    let first = connect(&mut MemDriver::new(64, 64), &s1, STICKY, 40000, SEC).1;
    // Endpoints go, so the client is pinned anew to the one left; they come back. Of the
    // two ways to leave one endpoint, take one where Maglev would now pick another one for
    // a client without a pin (a fresh worker shows that pick): there the pin is visible.
    let mut seen = None;
    for other in [B4, C4, D4].into_iter().filter(|e| *e != first) {
        let mut d = MemDriver::new(64, 64);
        assert_eq!(connect(&mut d, &s1, STICKY, 40000, SEC).1, first);
        let without = table(&[first, other], Some(&full));
        let s2 = node(2, Arc::clone(&without));
        let pinned = connect(&mut d, &s2, STICKY, 40001, 2 * SEC).1;
        let s3 = node(3, table(&[], Some(&without)));
        let fresh = connect(&mut MemDriver::new(64, 64), &s3, STICKY, 40002, 3 * SEC).1;
        if fresh != pinned {
            seen = Some((d, s3, pinned, fresh));
            break;
        }
    }
    let (mut d, s3, pinned, fresh) = seen.expect("a set change that moves the Maglev pick");
    // The pin holds within 10 800 s of the client's last new connection (each one renews
    // it, as kube-proxy's `recent` match and nftables' timeout set do) ...
    // (`last` is past 10 800 s after the pin was made at 2 s: only its renewal at 4 s
    // keeps it.)
    let last = 4 * SEC + 10_799 * SEC;
    assert_eq!(connect(&mut d, &s3, STICKY, 40003, 4 * SEC).1, pinned);
    assert_eq!(connect(&mut d, &s3, STICKY, 40004, last).1, pinned);
    // ... and past it the client goes where Maglev sends it.
    assert_eq!(
        connect(&mut d, &s3, STICKY, 40005, last + 10_801 * SEC).1,
        fresh
    );
}

#[test]
fn removing_an_endpoint_keeps_the_connections_to_the_others_and_moves_its_own() {
    let first = table(&[], None);
    let s1 = node(1, Arc::clone(&first));
    let mut d = MemDriver::new(64, 64);
    let before: Vec<(u16, Ipv4Addr)> = (40000..40060u16)
        .map(|sport| (sport, connect(&mut d, &s1, API, sport, 1).1))
        .collect();
    assert!(before.iter().any(|(_, b)| *b == C4));
    let s2 = node(2, table(&[C4], Some(&first)));
    for (sport, was) in before {
        let (_, now) = connect(&mut d, &s2, API, sport, 2);
        if was == C4 {
            assert_ne!(now, C4, "port {sport}: the removed endpoint is not used");
        } else {
            assert_eq!(
                now, was,
                "port {sport}: a connection to a kept endpoint stays"
            );
        }
    }
}

#[test]
fn a_node_port_from_the_world_is_translated_to_the_node_and_back() {
    let s = node(1, table(&[], None));
    let mut d = MemDriver::new(64, 64);
    run(
        &mut d,
        &s,
        UPLINK,
        &craft::tcp4(ROUTER_MAC, UP_MAC, WORLD4, NODE4, 33000, 30080, 60),
        1,
    );
    let (out, f) = sent(&mut d);
    assert_eq!(out, B);
    checksums_verify(&f);
    let (src, port) = v4_src(&f);
    assert_eq!(src, NODE4, "externalTrafficPolicy Cluster: from the node");
    assert!((PORTS.0..=PORTS.1).contains(&port));
    assert_eq!(v4_dst(&f), (B4, 8080));
    run(
        &mut d,
        &s,
        B,
        &craft::tcp4(mac(0x0b), GW_MAC, B4, NODE4, 8080, port, 60),
        2,
    );
    let (out, f) = sent(&mut d);
    assert_eq!(out, UPLINK);
    checksums_verify(&f);
    assert_eq!(&f[0..6], &ROUTER_MAC);
    assert_eq!(v4_src(&f), (NODE4, 30080));
    assert_eq!(v4_dst(&f), (WORLD4, 33000));
}

#[test]
fn load_balancer_and_external_ips_from_the_world_reach_the_endpoint_and_answer_back() {
    let s = node(1, table(&[], None));
    let mut d = MemDriver::new(64, 64);
    for (i, vip) in [LB, EXTERNAL].into_iter().enumerate() {
        let client_port = 33000 + i as u16;
        run(
            &mut d,
            &s,
            UPLINK,
            &craft::tcp4(ROUTER_MAC, UP_MAC, WORLD4, vip, client_port, 443, 60),
            1 + 2 * i as u64,
        );
        let (out, f) = sent(&mut d);
        assert_eq!(out, C, "{vip}");
        checksums_verify(&f);
        let (src, port) = v4_src(&f);
        assert_eq!(
            src, NODE4,
            "{vip}: externalTrafficPolicy Cluster, from the node"
        );
        assert_eq!(v4_dst(&f), (C4, 8443));
        run(
            &mut d,
            &s,
            C,
            &craft::tcp4(mac(0x0c), GW_MAC, C4, NODE4, 8443, port, 60),
            2 + 2 * i as u64,
        );
        let (out, f) = sent(&mut d);
        assert_eq!(out, UPLINK);
        checksums_verify(&f);
        assert_eq!(
            v4_src(&f),
            (vip, 443),
            "the reply comes from the address called"
        );
        assert_eq!(v4_dst(&f), (WORLD4, client_port));
    }
    assert_eq!(d.counters().total_drops(), 0, "{:?}", d.counters());
}

#[test]
fn internal_traffic_policy_local_keeps_cluster_ip_traffic_on_this_node() {
    let s = node(1, table(&[], None));
    let mut d = MemDriver::new(64, 64);
    let reached: std::collections::BTreeSet<Ipv4Addr> = (40000..40060u16)
        .map(|sport| connect(&mut d, &s, NEARBY, sport, 1).1)
        .collect();
    assert!(!reached.contains(&D4), "D is on node2: {reached:?}");
    assert_eq!(
        reached,
        [B4, C4].into_iter().collect(),
        "both local endpoints share the connections"
    );
}

#[test]
fn external_traffic_policy_local_keeps_the_client_and_refuses_without_a_local_endpoint() {
    let s = node(1, table(&[], None));
    let mut d = MemDriver::new(64, 64);
    // From the world: D is on node2, this node has no local endpoint: refused.
    run(
        &mut d,
        &s,
        UPLINK,
        &craft::tcp4(ROUTER_MAC, UP_MAC, WORLD4, NODE4, 33000, 30081, 54),
        1,
    );
    let (out, f) = sent(&mut d);
    assert_eq!(out, UPLINK);
    assert_eq!(tcp_flags(&f) & 0x04, 0x04, "a reset");
    assert_eq!(d.counters().dropped(DropReason::ServiceNoEndpoints), 1);
    // From a pod, the node port goes to any endpoint (Cluster), with the pod's address.
    run(
        &mut d,
        &s,
        A,
        &craft::tcp4(mac(0x0a), GW_MAC, A4, NODE4, 40000, 30081, 60),
        2,
    );
    let (out, f) = sent(&mut d);
    assert_eq!(out, UPLINK);
    assert_eq!(&f[0..6], &NODE2_MAC);
    assert_eq!(v4_src(&f), (A4, 40000));
    assert_eq!(v4_dst(&f), (D4, 8080));

    // With a local endpoint, the world's client address is kept.
    let mut specs = services(&[]);
    let local = specs.iter_mut().find(|s| s.name == "local").unwrap();
    local.backends.push(backend(C4, 8080, true));
    let s = node(2, Arc::new(ServiceTable::build(specs, None).unwrap()));
    run(
        &mut d,
        &s,
        UPLINK,
        &craft::tcp4(ROUTER_MAC, UP_MAC, WORLD4, NODE4, 33001, 30081, 60),
        3,
    );
    let (out, f) = sent(&mut d);
    assert_eq!(out, C, "only the local endpoint");
    assert_eq!(v4_src(&f), (WORLD4, 33001));
    run(
        &mut d,
        &s,
        C,
        &craft::tcp4(mac(0x0c), GW_MAC, C4, WORLD4, 8080, 33001, 60),
        4,
    );
    let (out, f) = sent(&mut d);
    assert_eq!(out, UPLINK);
    checksums_verify(&f);
    assert_eq!(v4_src(&f), (NODE4, 30081));
    assert_eq!(v4_dst(&f), (WORLD4, 33001));
}

#[test]
fn a_full_connection_table_drops_a_new_connection_and_names_why() {
    let s = node(1, table(&[], None));
    let mut d = MemDriver::new(64, 64);
    d.pipeline()
        .set_service_state(weir_dataplane::node::service::ServiceState::with_capacity(
            2,
        ));
    connect(&mut d, &s, API, 40000, 1);
    run(
        &mut d,
        &s,
        A,
        &craft::tcp4(mac(0x0a), GW_MAC, A4, API, 40001, 80, 60),
        2,
    );
    assert_eq!(d.counters().dropped(DropReason::ServiceTableFull), 1);
    assert!(d.take_tx(B).is_empty() && d.take_tx(C).is_empty());
}

#[test]
fn two_workers_place_a_service_connection_and_its_replies_on_one() {
    let s = node(1, table(&[], None));
    // Pod a's interface on worker 0; b's, c's and the uplink on worker 1.
    let owners = vec![
        ("veth-a".to_string(), 0),
        ("veth-b".to_string(), 1),
        ("veth-c".to_string(), 1),
        ("up0".to_string(), 1),
    ];
    let mut w: Vec<MemDriver> = mesh(2, 64, &owners)
        .unwrap()
        .into_iter()
        .map(|links| {
            let mut d = MemDriver::new(256, 256);
            d.connect(links);
            d
        })
        .collect();
    let on = |iface: IfIndex| usize::from(iface != A);
    for sport in 40000..40020u16 {
        w[0].inject(A, &craft::tcp4(mac(0x0a), GW_MAC, A4, API, sport, 80, 60))
            .unwrap();
        run_workers(&mut w, &s, 1);
        let mut out = Vec::new();
        for (i, d) in w.iter_mut().enumerate() {
            for iface in [A, B, C, UPLINK] {
                for f in d.take_tx(iface) {
                    out.push((i, iface, f));
                }
            }
            d.complete_all();
        }
        assert_eq!(out.len(), 1, "port {sport}");
        let (_, iface, f) = out.pop().unwrap();
        let backend = v4_dst(&f).0;
        let reply = craft::tcp4(
            pod_mac(iface),
            if iface == UPLINK { UP_MAC } else { GW_MAC },
            backend,
            A4,
            8080,
            sport,
            60,
        );
        w[on(iface)].inject(iface, &reply).unwrap();
        run_workers(&mut w, &s, 2);
        let back = w[0].take_tx(A);
        w[0].complete_all();
        assert_eq!(back.len(), 1, "port {sport}: the reply reaches a");
        assert_eq!(
            v4_src(&back[0]),
            (API, 80),
            "translated by the worker that holds it"
        );
        for d in &w {
            d.check_accounting().unwrap();
            d.counters().check_accounting().unwrap();
        }
    }
    // Each connection is held by one worker: the one its client port names.
    let held: Vec<usize> = w
        .iter_mut()
        .map(|d| d.pipeline().service_state().connections())
        .collect();
    assert_eq!(held, [10, 10]);
}

#[test]
fn an_sctp_association_is_translated_with_its_crc32c_recomputed() {
    let s = node(1, table(&[], None));
    let mut d = MemDriver::new(64, 64);
    let mut sctp = Vec::new();
    sctp.extend_from_slice(&5000u16.to_be_bytes());
    sctp.extend_from_slice(&3868u16.to_be_bytes());
    sctp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    // An INIT chunk's header and a few bytes of its body.
    sctp.extend_from_slice(&[
        1, 0, 0, 20, 1, 2, 3, 4, 0, 0, 0x10, 0, 0, 1, 0, 1, 9, 9, 9, 9,
    ]);
    weir_dataplane::wire::sctp::set_checksum(&mut sctp);
    let mut f = craft::ethernet(GW_MAC, mac(0x0a), craft::ETH_IPV4);
    f.extend(craft::ipv4_header(A4, API, 132, 64, sctp.len(), &[]));
    f.extend(&sctp);
    run(&mut d, &s, A, &f, 1);
    let (out, f) = sent(&mut d);
    assert_eq!(out, B);
    assert_eq!(v4_dst(&f), (B4, 3869));
    assert!(
        weir_dataplane::wire::sctp::checksum_ok(&f[34..]),
        "CRC32c after the port changed"
    );
    assert!(!weir_dataplane::wire::sctp::checksum_ok(&{
        let mut bad = f[34..].to_vec();
        bad[3] ^= 1;
        bad
    }));
}

#[test]
fn an_ipv6_cluster_ip_is_translated_both_ways() {
    use std::net::Ipv6Addr;
    let a6: Ipv6Addr = "2001:db8:a::2".parse().unwrap();
    let b6: Ipv6Addr = "2001:db8:a::3".parse().unwrap();
    let vip6: Ipv6Addr = "2001:db8:ffff::10".parse().unwrap();
    let mut b = SnapshotBuilder::new();
    for (name, ip, i) in [("a", a6, 0x0a), ("b", b6, 0x0b)] {
        b.pod(PodSpec {
            namespace: "shop".into(),
            name: name.into(),
            interface: format!("veth-{name}"),
            gateway_mac: GW_MAC,
            mac: mac(i),
            ipv4: None,
            ipv6: Some(ip),
            mtu: 1500,
        })
        .unwrap();
    }
    let spec = ServiceSpec {
        frontends: vec![FrontendSpec {
            addr: vip6.into(),
            port: 80,
            kind: FrontendKind::ClusterIp,
        }],
        backends: vec![BackendSpec {
            addr: b6.into(),
            ..backend(B4, 8080, true)
        }],
        ..service("api6", 6, Vec::new(), Vec::new())
    };
    b.services(Arc::new(ServiceTable::build(vec![spec], None).unwrap()));
    let s = b.build(1).unwrap();
    let mut d = MemDriver::new(64, 64);
    run(
        &mut d,
        &s,
        A,
        &craft::tcp6(mac(0x0a), GW_MAC, a6, vip6, 40000, 80, 90),
        1,
    );
    let out = d.take_tx(B);
    d.complete_all();
    assert_eq!(out.len(), 1, "{:?}", d.counters());
    checksums_verify(&out[0]);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&out[0][38..54]).unwrap());
    assert_eq!(dst, b6);
    assert_eq!(u16::from_be_bytes([out[0][56], out[0][57]]), 8080);
    run(
        &mut d,
        &s,
        B,
        &craft::tcp6(mac(0x0b), GW_MAC, b6, a6, 8080, 40000, 90),
        2,
    );
    let back = d.take_tx(A);
    d.complete_all();
    assert_eq!(back.len(), 1, "{:?}", d.counters());
    checksums_verify(&back[0]);
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&back[0][22..38]).unwrap());
    assert_eq!(src, vip6);
    assert_eq!(u16::from_be_bytes([back[0][54], back[0][55]]), 80);
}
