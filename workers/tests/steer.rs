//! Flows stay on one worker, in memory: two in-memory drivers joined by the workers'
//! handoff lanes, pod a's interface on worker 0, pod b's and the uplink on worker 1. Pod a
//! is isolated for ingress (default deny), so its replies pass only as replies of a flow
//! its own worker's conntrack knows. Every TCP, UDP and ping flow between the pods, and
//! every source-NAT flow to the world, ends up with conntrack state on exactly one worker,
//! its owner, and its replies reach pod a; a connection opened towards pod a is still
//! dropped and counted.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use weir_dataplane::craft;
use weir_dataplane::flow::FlowKey;
use weir_dataplane::node::steer::flow_owner;
use weir_dataplane::policy::{
    Direction, EndpointPolicy, PolicyTables, Program, RuleInfo, Sets, Tier, TierEnd,
};
use weir_dataplane::snapshot::{Mac, NatPool, NextHop, PodSpec, Prefix, SnatConfig};
use weir_dataplane::wire::checksum;
use weir_dataplane::{DropReason, IfIndex, Snapshot, SnapshotBuilder};
use weir_workers::handoff::mesh;
use weir_workers::mem::run_workers;
use weir_workers::MemDriver;

const GW_MAC: Mac = [0xee; 6];
const A_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];
const B_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0b];
const UP_MAC: Mac = [0x02, 0, 0, 0, 0, 0x99];
const ROUTER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];

const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 10, 0, 0, 0, 0, 2);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 10, 0, 0, 0, 0, 3);
const NODE4: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
const WORLD4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);

const POD_A: IfIndex = 0;
const POD_B: IfIndex = 1;
const UPLINK: IfIndex = 2;
const PORTS: (u16, u16) = (61000, 61999);
const NOW: u64 = 1_000_000_000;

fn pod(name: &str, mac: Mac, v4: Ipv4Addr, v6: Ipv6Addr) -> PodSpec {
    PodSpec {
        namespace: "demo".into(),
        name: name.into(),
        interface: format!("veth-{name}"),
        gateway_mac: GW_MAC,
        mac,
        ipv4: Some(v4),
        ipv6: Some(v6),
        mtu: 1500,
    }
}

/// Pods a (isolated for ingress) and b (open), the uplink towards the world with source NAT
/// for the pods' pool.
fn node() -> Snapshot {
    let mut b = SnapshotBuilder::new();
    b.pod(pod("a", A_MAC, A4, A6)).unwrap();
    b.pod(pod("b", B_MAC, B4, B6)).unwrap();
    b.uplink("up0", UP_MAC, 1500).unwrap();
    let router = NextHop::Router {
        mac: Some(ROUTER_MAC),
    };
    b.route("0.0.0.0/0".parse::<Prefix>().unwrap(), router);
    b.snat(SnatConfig {
        v4: Some(NODE4),
        v6: None,
        ports: PORTS,
        pools: vec![NatPool {
            prefix: "198.18.0.0/17".parse().unwrap(),
            nat_outgoing: true,
        }],
    });
    let deny = Program::new(
        vec![Tier {
            rules: vec![],
            end: TierEnd::Deny,
            end_id: 0,
        }],
        &Sets::default(),
    );
    b.policy(PolicyTables {
        endpoints: vec![
            EndpointPolicy {
                ingress: Some(Arc::new(deny)),
                egress: None,
            },
            EndpointPolicy::default(),
        ],
        warm_pays: Default::default(),
        sets: Sets::default(),
        rules: vec![RuleInfo {
            tier: "default".into(),
            policy: "deny-all".into(),
            direction: Direction::Ingress,
            index: None,
        }],
    });
    let s = b.build(1).unwrap();
    assert_eq!(s.uplink, Some(UPLINK));
    s
}

/// Two drivers: pod a's interface on worker 0, pod b's and the uplink on worker 1.
fn workers(depth: usize) -> Vec<MemDriver> {
    let owners = vec![
        ("veth-a".to_string(), 0),
        ("veth-b".to_string(), 1),
        ("up0".to_string(), 1),
    ];
    mesh(2, depth, &owners)
        .unwrap()
        .into_iter()
        .map(|links| {
            let mut d = MemDriver::new(256, 256);
            d.connect(links);
            d
        })
        .collect()
}

/// Injects `frame` on the worker that owns `ingress`, runs every worker until quiet, and
/// checks both accountings on both.
fn deliver(w: &mut [MemDriver], s: &Snapshot, ingress: IfIndex, frame: &[u8]) {
    let on = if ingress == POD_A { 0 } else { 1 };
    w[on].inject(ingress, frame).unwrap();
    run_workers(w, s, NOW);
    for d in w.iter() {
        d.check_accounting().unwrap();
        d.counters().check_accounting().unwrap();
    }
}

/// The one frame sent on `iface` (by the worker that owns it).
fn only(w: &mut [MemDriver], iface: IfIndex) -> Vec<u8> {
    let on = if iface == POD_A { 0 } else { 1 };
    let mut out = w[on].take_tx(iface);
    let other: usize = w.iter_mut().map(|d| d.complete_all()).sum::<usize>();
    assert_eq!(out.len(), 1, "one frame out of {iface} ({other} elsewhere)");
    assert_eq!(other, 0, "nothing else sent");
    out.pop().unwrap()
}

/// Which workers hold conntrack state for `key`.
fn holders(w: &mut [MemDriver], key: &FlowKey) -> Vec<usize> {
    (0..w.len())
        .filter(|&i| {
            w[i].pipeline()
                .policy_state()
                .conntrack
                .lookup(key, 0, NOW)
                .is_some()
        })
        .collect()
}

fn key4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: FlowKey::map_v4(src.octets()),
        dst: FlowKey::map_v4(dst.octets()),
        src_port: sport,
        dst_port: dport,
        proto,
    }
}

/// An ICMP echo reply with identifier `ident`.
fn echo_reply4(mac: Mac, src: Ipv4Addr, dst: Ipv4Addr, ident: u16) -> Vec<u8> {
    let mut f = craft::icmp4_echo(mac, GW_MAC, src, dst, ident, 32);
    f[34] = 0;
    f[36..38].copy_from_slice(&[0, 0]);
    let sum = checksum::checksum(&f[34..]);
    f[36..38].copy_from_slice(&sum.to_be_bytes());
    f
}

fn drops(w: &[MemDriver], reason: DropReason) -> u64 {
    w.iter().map(|d| d.counters().dropped(reason)).sum()
}

fn total_drops(w: &[MemDriver]) -> u64 {
    w.iter().map(|d| d.counters().total_drops()).sum()
}

#[test]
fn both_directions_of_tcp_udp_and_ping_flows_meet_one_conntrack_and_replies_reach_an_isolated_client(
) {
    let s = node();
    let mut w = workers(64);
    let mut owned = [0u32; 2];
    for i in 0..16u16 {
        let sport = 40000 + i;
        // TCP over IPv4: a -> b, b -> a.
        deliver(
            &mut w,
            &s,
            POD_A,
            &craft::tcp4(A_MAC, GW_MAC, A4, B4, sport, 80, 80),
        );
        assert_eq!(&only(&mut w, POD_B)[0..6], &B_MAC);
        let key = key4(A4, sport, B4, 80, 6);
        let owner = usize::from(flow_owner(&key, false, 2));
        owned[owner] += 1;
        assert_eq!(holders(&mut w, &key), vec![owner], "TCP flow {sport}");
        deliver(
            &mut w,
            &s,
            POD_B,
            &craft::tcp4(B_MAC, GW_MAC, B4, A4, 80, sport, 80),
        );
        assert_eq!(
            &only(&mut w, POD_A)[0..6],
            &A_MAC,
            "the TCP reply reaches a"
        );

        // UDP over IPv6.
        deliver(
            &mut w,
            &s,
            POD_A,
            &craft::udp6(A_MAC, GW_MAC, A6, B6, sport, 53, 100),
        );
        only(&mut w, POD_B);
        deliver(
            &mut w,
            &s,
            POD_B,
            &craft::udp6(B_MAC, GW_MAC, B6, A6, 53, sport, 100),
        );
        only(&mut w, POD_A);

        // Ping over IPv4 (identifier `sport`).
        deliver(
            &mut w,
            &s,
            POD_A,
            &craft::icmp4_echo(A_MAC, GW_MAC, A4, B4, sport, 32),
        );
        only(&mut w, POD_B);
        deliver(&mut w, &s, POD_B, &echo_reply4(B_MAC, B4, A4, sport));
        only(&mut w, POD_A);
    }
    assert_eq!(
        total_drops(&w),
        0,
        "{:?} {:?}",
        w[0].counters(),
        w[1].counters()
    );
    assert!(
        owned[0] > 0 && owned[1] > 0,
        "flows spread over both workers: {owned:?}"
    );
    // Each worker handed packets to the other, and took in what the other handed it.
    let (c0, c1) = (w[0].counters().clone(), w[1].counters().clone());
    assert!(c0.handoff_out > 0 && c1.handoff_out > 0, "{c0:?} {c1:?}");
    assert_eq!(c0.handoff_out, c1.handoff_in);
    assert_eq!(c1.handoff_out, c0.handoff_in);

    // A connection opened towards isolated pod a is still denied, and counted once.
    deliver(
        &mut w,
        &s,
        POD_B,
        &craft::tcp4(B_MAC, GW_MAC, B4, A4, 5555, 22, 80),
    );
    assert_eq!(drops(&w, DropReason::PolicyDeniedIngress), 1);
    assert_eq!(total_drops(&w), 1);
    assert!(w[0].take_tx(POD_A).is_empty());
}

#[test]
fn source_nat_flows_are_translated_and_answered_by_the_worker_that_owns_their_port() {
    let s = node();
    let mut w = workers(64);
    let mut owned = [0u32; 2];
    for i in 0..16u16 {
        let sport = 41000 + i;
        deliver(
            &mut w,
            &s,
            POD_A,
            &craft::tcp4(A_MAC, GW_MAC, A4, WORLD4, sport, 443, 80),
        );
        let out = only(&mut w, UPLINK);
        assert_eq!(
            &out[26..30],
            &NODE4.octets(),
            "leaves with the node address"
        );
        let port = u16::from_be_bytes([out[34], out[35]]);
        assert!((PORTS.0..=PORTS.1).contains(&port), "port {port}");
        let key = key4(A4, sport, WORLD4, 443, 6);
        let owner = usize::from(flow_owner(&key, false, 2));
        owned[owner] += 1;
        assert_eq!(
            usize::from(port % 2),
            owner,
            "the owner's share of the ports"
        );
        assert_eq!(holders(&mut w, &key), vec![owner]);
        assert_eq!(w[owner].pipeline().nat_table().len(), owned[owner] as usize);

        // The reply arrives on the uplink (worker 1) and reaches isolated pod a.
        deliver(
            &mut w,
            &s,
            UPLINK,
            &craft::tcp4(ROUTER_MAC, UP_MAC, WORLD4, NODE4, 443, port, 80),
        );
        let back = only(&mut w, POD_A);
        assert_eq!(&back[30..34], &A4.octets());
        assert_eq!(u16::from_be_bytes([back[36], back[37]]), sport);
    }
    assert_eq!(
        total_drops(&w),
        0,
        "{:?} {:?}",
        w[0].counters(),
        w[1].counters()
    );
    assert!(owned[0] > 0 && owned[1] > 0, "{owned:?}");
    assert_eq!(
        w[0].pipeline().nat_table().len() + w[1].pipeline().nat_table().len(),
        16,
        "each translation on one worker"
    );
}

#[test]
fn a_full_lane_to_the_owner_drops_the_packet_as_handoff_full() {
    let s = node();
    // One buffer per lane: the second packet steered in one round finds it taken.
    let mut w = workers(1);
    let steered: Vec<u16> = (40000..40100)
        .filter(|&p| flow_owner(&key4(A4, p, B4, 80, 6), false, 2) == 1)
        .take(2)
        .collect();
    for &p in &steered {
        w[0].inject(POD_A, &craft::tcp4(A_MAC, GW_MAC, A4, B4, p, 80, 80))
            .unwrap();
    }
    w[0].poll(&s, NOW);
    assert_eq!(w[0].counters().dropped(DropReason::HandoffFull), 1);
    assert_eq!(w[0].counters().handoff_out, 1);
    run_workers(&mut w, &s, NOW);
    assert_eq!(w[1].take_tx(POD_B).len(), 1);
    // The one that got through was processed by its owner, not by the worker it came in on.
    assert_eq!(holders(&mut w, &key4(A4, steered[0], B4, 80, 6)), vec![1]);
    assert!(holders(&mut w, &key4(A4, steered[1], B4, 80, 6)).is_empty());
    for d in &w {
        d.counters().check_accounting().unwrap();
    }
}
