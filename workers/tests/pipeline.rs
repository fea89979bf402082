//! The pipeline driven through the in-memory driver, frame in, frame out: forwarding, the
//! gateway responders, ICMP errors, anti-spoofing, partial checksums, and one trigger per
//! drop reason.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use proptest::prelude::*;
use weir_crypto::NodeKey;
use weir_dataplane::craft;
use weir_dataplane::policy::program::{Match, PortMatch};
use weir_dataplane::policy::{
    Action, Direction, EndpointPolicy, NetSet, PolicyTables, Program, Rule, RuleInfo, Sets, Tier,
    TierEnd,
};
use weir_dataplane::service::{FrontendKind, FrontendSpec, ServiceSpec, ServiceTable};
use weir_dataplane::snapshot::{
    IcmpConfig, Mac, NatPool, NextHop, PeerSpec, PodSpec, Prefix, SnatConfig, Tunnel,
};
use weir_dataplane::wire::checksum;
use weir_dataplane::{DropReason, IcmpErrorKind, IfIndex, Snapshot, SnapshotBuilder};
use weir_workers::handoff::mesh;
use weir_workers::MemDriver;

const GW_MAC: Mac = [0xee, 0xee, 0xee, 0xee, 0xee, 0xee];
const A_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];
const B_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0b];
const UP_MAC: Mac = [0x02, 0, 0, 0, 0, 0x99];
const NODE2_MAC: Mac = [0x02, 0, 0, 0, 0, 0x22];
const HOST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x77];
const HOST_PEER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x78];

const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
const A_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x10);
const GW4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const GW6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// This node's WireGuard address (on the uplink).
const LOCAL_WG: &str = "198.19.255.1:51820";

const VETH_A: IfIndex = 0;
const VETH_B: IfIndex = 1;
const UPLINK: IfIndex = 2;
const HOST: IfIndex = 3;

fn pod(name: &str, mac: Mac, v4: Ipv4Addr, v6: Ipv6Addr, mtu: u16) -> PodSpec {
    PodSpec {
        namespace: "demo".into(),
        name: name.into(),
        interface: format!("veth-{name}"),
        gateway_mac: GW_MAC,
        mac,
        ipv4: Some(v4),
        ipv6: Some(v6),
        mtu,
    }
}

/// Two pods, an uplink to a remote node, the host interface, and one route per next-hop
/// kind.
fn node(icmp: IcmpConfig) -> Snapshot {
    node_builder(icmp).build(1).unwrap()
}

/// The node's address on the uplink, which pods' traffic to the world leaves with.
const NODE4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);

/// [`node`] with a default route to a router on the uplink and source NAT for the pods'
/// pool, from a one-port range (so that a second worker has none).
fn world_node() -> Snapshot {
    let mut b = node_builder(IcmpConfig::default());
    b.route(
        "0.0.0.0/0".parse().unwrap(),
        NextHop::Router {
            mac: Some(NODE2_MAC),
        },
    );
    b.snat(SnatConfig {
        v4: Some(NODE4),
        v6: None,
        ports: (61000, 61000),
        pools: vec![NatPool {
            prefix: "198.18.0.0/24".parse().unwrap(),
            nat_outgoing: true,
        }],
    });
    b.build(1).unwrap()
}

fn node_builder(icmp: IcmpConfig) -> SnapshotBuilder {
    let mut b = SnapshotBuilder::new();
    b.icmp(icmp);
    assert_eq!(b.pod(pod("a", A_MAC, A4, A6, 1500)).unwrap().0, VETH_A);
    assert_eq!(b.pod(pod("b", B_MAC, B4, B6, 1400)).unwrap().0, VETH_B);
    assert_eq!(b.uplink("up0", UP_MAC, 1500).unwrap(), UPLINK);
    assert_eq!(
        b.host("weir0", HOST_MAC, HOST_PEER_MAC, 1500).unwrap(),
        HOST
    );
    let n2 = b.node("node2", "198.19.255.2".parse().unwrap(), Some(NODE2_MAC));
    let n3 = b.node("node3", "198.19.255.3".parse().unwrap(), None);
    // WireGuard on, with a peer for node2 only: node3's WireGuard route has no peer.
    b.wireguard(LOCAL_WG.parse().unwrap());
    b.peer(PeerSpec {
        node: n2,
        name: "node2".into(),
        public_key: [0x22; 32],
        endpoint: "198.19.255.2:51820".parse().unwrap(),
        allowed_ips: vec!["198.19.1.0/24".parse().unwrap()],
        persistent_keepalive: None,
    });
    let routes: [(&str, NextHop); 9] = [
        (
            "198.19.0.0/24",
            NextHop::Remote {
                node: n2,
                tunnel: Tunnel::None,
            },
        ),
        (
            "2001:db8:2::/48",
            NextHop::Remote {
                node: n2,
                tunnel: Tunnel::None,
            },
        ),
        (
            "198.19.1.0/24",
            NextHop::Remote {
                node: n2,
                tunnel: Tunnel::WireGuard,
            },
        ),
        ("198.19.2.0/24", NextHop::Blackhole),
        ("198.19.3.0/24", NextHop::Unreachable),
        (
            "198.19.4.0/24",
            NextHop::Remote {
                node: n3,
                tunnel: Tunnel::None,
            },
        ),
        ("198.19.5.0/24", NextHop::Host),
        (
            "198.19.7.0/24",
            NextHop::Remote {
                node: n3,
                tunnel: Tunnel::WireGuard,
            },
        ),
        (
            "198.19.6.0/24",
            NextHop::Local {
                interface: VETH_A,
                mac: A_MAC,
            },
        ),
    ];
    for (p, nh) in routes {
        b.route(p.parse::<Prefix>().unwrap(), nh);
    }
    b.policy(default_policy());
    // A service without endpoints, TCP and UDP (for `service_no_endpoints` and
    // `service_fragment`).
    let empty = |protocol| ServiceSpec {
        namespace: "shop".into(),
        name: "empty".into(),
        port_name: String::new(),
        protocol,
        frontends: vec![FrontendSpec {
            addr: SERVICE_VIP.parse().unwrap(),
            port: 80,
            kind: FrontendKind::ClusterIp,
        }],
        backends: Vec::new(),
        external_local: false,
        internal_local: false,
        affinity_seconds: None,
    };
    b.services(Arc::new(
        ServiceTable::build(vec![empty(6), empty(17)], None).unwrap(),
    ));
    b
}

/// A denies egress to 198.19.0.66; B denies ingress UDP port 9; everything else passes.
fn default_policy() -> PolicyTables {
    let mut blocked = NetSet::new();
    blocked.insert("198.19.0.66".parse().unwrap(), 32);
    let info = |policy: &str, direction| RuleInfo {
        tier: "default".into(),
        policy: policy.into(),
        direction,
        index: Some(0),
    };
    let sets = Sets {
        nets: vec![blocked],
        named_ports: vec![],
    };
    let a_egress = Program::new(
        vec![Tier {
            rules: vec![Rule {
                matches: Match {
                    dst_nets: Some(0),
                    ..Match::default()
                },
                action: Action::Deny,
                id: 0,
            }],
            end: TierEnd::Pass,
            end_id: 2,
        }],
        &sets,
    );
    let b_ingress = Program::new(
        vec![Tier {
            rules: vec![Rule {
                matches: Match {
                    protocol: Some(17),
                    dst_ports: PortMatch {
                        ranges: vec![(9, 9)],
                        named: None,
                    },
                    ..Match::default()
                },
                action: Action::Deny,
                id: 1,
            }],
            end: TierEnd::Pass,
            end_id: 2,
        }],
        &sets,
    );
    PolicyTables {
        endpoints: vec![
            EndpointPolicy {
                ingress: None,
                egress: Some(Arc::new(a_egress)),
            },
            EndpointPolicy {
                ingress: Some(Arc::new(b_ingress)),
                egress: None,
            },
        ],
        sets,
        rules: vec![
            info("demo/a-egress", Direction::Egress),
            info("demo/b-ingress", Direction::Ingress),
            RuleInfo {
                tier: "default".into(),
                policy: String::new(),
                direction: Direction::Ingress,
                index: None,
            },
        ],
    }
}

fn default_node() -> Snapshot {
    node(IcmpConfig::default())
}

/// Runs one frame through a fresh driver; returns the driver for inspection.
fn one(snapshot: &Snapshot, ingress: IfIndex, frame: &[u8]) -> MemDriver {
    let mut d = MemDriver::new(64, 64);
    d.inject(ingress, frame).unwrap();
    d.run(snapshot, 1_000_000_000);
    d.check_accounting().unwrap();
    d.counters().check_accounting().unwrap();
    d
}

fn only_tx(d: &mut MemDriver, iface: IfIndex) -> Vec<u8> {
    let mut out = d.take_tx(iface);
    assert_eq!(
        out.len(),
        1,
        "expected one frame on interface {iface}, counters {:?}",
        d.counters()
    );
    out.pop().unwrap()
}

fn ipv4_header_ok(f: &[u8]) -> bool {
    let ihl = usize::from(f[14] & 0xf) * 4;
    checksum::checksum(&f[14..14 + ihl]) == 0
}

fn l4_checksum_ok(f: &[u8]) -> bool {
    if u16::from_be_bytes([f[12], f[13]]) == craft::ETH_IPV6 {
        let len = u16::from_be_bytes([f[18], f[19]]) as usize;
        let src: [u8; 16] = f[22..38].try_into().unwrap();
        let dst: [u8; 16] = f[38..54].try_into().unwrap();
        let p = checksum::pseudo_header_v6(&src, &dst, f[20], len as u32);
        checksum::fold(checksum::sum(&f[54..54 + len], p)) == 0xffff
    } else {
        let ihl = usize::from(f[14] & 0xf) * 4;
        let total = u16::from_be_bytes([f[16], f[17]]) as usize;
        let seg = &f[14 + ihl..14 + total];
        if f[23] == craft::PROTO_ICMP {
            return checksum::checksum(seg) == 0;
        }
        let src: [u8; 4] = f[26..30].try_into().unwrap();
        let dst: [u8; 4] = f[30..34].try_into().unwrap();
        let p = checksum::pseudo_header_v4(src, dst, f[23], seg.len() as u16);
        checksum::fold(checksum::sum(seg, p)) == 0xffff
    }
}

#[test]
fn udp4_pod_to_pod_is_routed_rewritten_and_ttl_decremented() {
    let s = default_node();
    let frame = craft::udp4(A_MAC, GW_MAC, A4, B4, 40000, 5201, 64);
    let mut d = one(&s, VETH_A, &frame);
    let out = only_tx(&mut d, VETH_B);
    assert_eq!(&out[0..6], &B_MAC);
    assert_eq!(&out[6..12], &GW_MAC);
    assert_eq!(out[22], 63, "TTL decremented");
    assert!(ipv4_header_ok(&out), "incremental checksum update is right");
    assert!(l4_checksum_ok(&out));
    assert_eq!(&out[14..22], &frame[14..22]);
    assert_eq!(&out[26..], &frame[26..], "addresses and payload untouched");
    assert_eq!(d.counters().tx, 1);
}

#[test]
fn tcp6_pod_to_pod_is_routed_and_hop_limit_decremented() {
    let s = default_node();
    let frame = craft::tcp6(A_MAC, GW_MAC, A6, B6, 40000, 80, 1200);
    let mut d = one(&s, VETH_A, &frame);
    let out = only_tx(&mut d, VETH_B);
    assert_eq!(&out[0..6], &B_MAC);
    assert_eq!(out[21], 63);
    assert!(l4_checksum_ok(&out));
    assert_eq!(out.len(), frame.len());
}

#[test]
fn remote_node_host_and_local_routes_pick_their_outputs() {
    let s = default_node();
    let mut d = one(
        &s,
        VETH_A,
        &craft::udp4(A_MAC, GW_MAC, A4, "198.19.0.7".parse().unwrap(), 1, 2, 100),
    );
    let out = only_tx(&mut d, UPLINK);
    assert_eq!((&out[0..6], &out[6..12]), (&NODE2_MAC[..], &UP_MAC[..]));
    let mut d = one(
        &s,
        VETH_A,
        &craft::udp6(
            A_MAC,
            GW_MAC,
            A6,
            "2001:db8:2::5".parse().unwrap(),
            1,
            2,
            100,
        ),
    );
    assert_eq!(&only_tx(&mut d, UPLINK)[0..6], &NODE2_MAC);
    let mut d = one(
        &s,
        VETH_A,
        &craft::udp4(A_MAC, GW_MAC, A4, "198.19.5.1".parse().unwrap(), 1, 2, 100),
    );
    let out = only_tx(&mut d, HOST);
    assert_eq!(
        (&out[0..6], &out[6..12]),
        (&HOST_PEER_MAC[..], &HOST_MAC[..])
    );
    // From the uplink to a pod.
    let mut d = one(
        &s,
        UPLINK,
        &craft::udp4(
            NODE2_MAC,
            UP_MAC,
            "198.19.0.7".parse().unwrap(),
            B4,
            1,
            2,
            100,
        ),
    );
    assert_eq!(&only_tx(&mut d, VETH_B)[0..6], &B_MAC);
}

#[test]
fn arp_for_the_gateway_is_answered_in_place() {
    let s = default_node();
    let mut d = one(&s, VETH_A, &craft::arp_request(A_MAC, A4, GW4));
    let r = only_tx(&mut d, VETH_A);
    assert_eq!(&r[0..6], &A_MAC);
    assert_eq!(&r[6..12], &GW_MAC);
    assert_eq!(&r[12..14], &[8, 6]);
    assert_eq!(u16::from_be_bytes([r[20], r[21]]), 2, "opcode reply");
    assert_eq!(&r[22..28], &GW_MAC, "sender hardware address");
    assert_eq!(&r[28..32], &GW4.octets(), "sender protocol address");
    assert_eq!(&r[32..38], &A_MAC);
    assert_eq!(&r[38..42], &A4.octets());
    assert_eq!(d.counters().neighbor_replies, 1);
    // The host interface is answered for any address (proxy ARP).
    let mut d = one(
        &s,
        HOST,
        &craft::arp_request(HOST_PEER_MAC, "198.18.255.1".parse().unwrap(), A4),
    );
    assert_eq!(&only_tx(&mut d, HOST)[28..32], &A4.octets());
}

#[test]
fn neighbor_solicitation_for_the_gateway_gets_a_valid_advertisement() {
    let s = default_node();
    let mut d = one(&s, VETH_A, &craft::neighbor_solicitation(A_MAC, A_LL, GW6));
    let r = only_tx(&mut d, VETH_A);
    assert_eq!(&r[0..6], &A_MAC);
    assert_eq!(&r[6..12], &GW_MAC);
    assert_eq!(r[20], 58);
    assert_eq!(r[21], 255, "hop limit 255 (RFC 4861 §7.1.2)");
    assert_eq!(&r[22..38], &GW6.octets());
    assert_eq!(&r[38..54], &A_LL.octets());
    assert_eq!(r[54], 136);
    assert_eq!(r[58] & 0xe0, 0xe0, "router, solicited, override");
    assert_eq!(&r[62..78], &GW6.octets());
    assert_eq!(&r[78..80], &[2, 1]);
    assert_eq!(&r[80..86], &GW_MAC);
    assert!(l4_checksum_ok(&r));
    // DAD probe (unspecified source) is answered to all-nodes without the S flag.
    let mut d = one(
        &s,
        VETH_A,
        &craft::neighbor_solicitation(A_MAC, Ipv6Addr::UNSPECIFIED, GW6),
    );
    let r = only_tx(&mut d, VETH_A);
    assert_eq!(&r[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(r[58] & 0x40, 0);
    assert!(l4_checksum_ok(&r));
}

#[test]
fn ttl_expiry_sends_time_exceeded_quoting_the_original() {
    let s = default_node();
    let mut frame = craft::udp4(A_MAC, GW_MAC, A4, B4, 40000, 53, 200);
    frame[22] = 1;
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    let mut d = one(&s, VETH_A, &frame);
    let e = only_tx(&mut d, VETH_A);
    assert_eq!(&e[0..6], &A_MAC);
    assert!(ipv4_header_ok(&e));
    assert_eq!(&e[26..30], &GW4.octets(), "from the router address");
    assert_eq!(&e[30..34], &A4.octets());
    assert_eq!((e[34], e[35]), (11, 0));
    assert!(l4_checksum_ok(&e));
    assert_eq!(
        &e[42..],
        &frame[14..],
        "the whole original datagram is quoted"
    );
    assert_eq!(d.counters().dropped(DropReason::TtlExceeded), 1);
    assert_eq!(d.counters().icmp_sent(IcmpErrorKind::TimeExceeded), 1);

    let mut f6 = craft::udp6(A_MAC, GW_MAC, A6, B6, 1, 2, 300);
    f6[21] = 1;
    let mut d = one(&s, VETH_A, &f6);
    let e = only_tx(&mut d, VETH_A);
    assert_eq!((e[54], e[55]), (3, 0));
    assert_eq!(&e[38..54], &A6.octets());
    assert!(l4_checksum_ok(&e));
    assert_eq!(&e[62..], &f6[14..]);
}

#[test]
fn no_route_and_too_big_send_their_errors_and_cap_the_quote() {
    let s = default_node();
    let mut d = one(
        &s,
        VETH_A,
        &craft::udp4(
            A_MAC,
            GW_MAC,
            A4,
            "203.0.113.1".parse().unwrap(),
            1,
            2,
            1000,
        ),
    );
    let e = only_tx(&mut d, VETH_A);
    assert_eq!((e[34], e[35]), (3, 0));
    assert_eq!(e.len(), 14 + 576, "RFC 1812: at most 576 bytes");
    assert!(l4_checksum_ok(&e) && ipv4_header_ok(&e));
    let mut d = one(
        &s,
        VETH_A,
        &craft::udp4(A_MAC, GW_MAC, A4, "198.19.3.1".parse().unwrap(), 1, 2, 100),
    );
    assert_eq!(d.counters().dropped(DropReason::NoRoute), 1);
    assert_eq!(only_tx(&mut d, VETH_A)[34], 3);
    // veth-b has MTU 1400: a 1500-byte DF packet gets "fragmentation needed" with the MTU.
    let mut d = one(&s, VETH_A, &craft::udp4(A_MAC, GW_MAC, A4, B4, 1, 2, 1514));
    let e = only_tx(&mut d, VETH_A);
    assert_eq!((e[34], e[35]), (3, 4));
    assert_eq!(u16::from_be_bytes([e[40], e[41]]), 1400);
    let mut d = one(&s, VETH_A, &craft::udp6(A_MAC, GW_MAC, A6, B6, 1, 2, 1514));
    let e = only_tx(&mut d, VETH_A);
    assert_eq!(e[54], 2);
    assert_eq!(u32::from_be_bytes([e[58], e[59], e[60], e[61]]), 1400);
    assert_eq!(e.len(), 14 + 1280, "RFC 4443: at most the minimum MTU");
    let mut d = one(
        &s,
        VETH_A,
        &craft::udp6(
            A_MAC,
            GW_MAC,
            A6,
            "2001:db8:ff::1".parse().unwrap(),
            1,
            2,
            200,
        ),
    );
    assert_eq!(only_tx(&mut d, VETH_A)[54], 1);
    // A WireGuard route to node2 (IPv4 underlay) leaves 1500 - 60 for the inner packet.
    let mut d = one(
        &s,
        VETH_A,
        &craft::udp4(A_MAC, GW_MAC, A4, "198.19.1.1".parse().unwrap(), 1, 2, 1514),
    );
    let e = only_tx(&mut d, VETH_A);
    assert_eq!((e[34], e[35]), (3, 4));
    assert_eq!(u16::from_be_bytes([e[40], e[41]]), 1440);
}

#[test]
fn icmp_errors_are_rate_limited_per_worker() {
    let s = node(IcmpConfig {
        rate_per_sec: 10,
        burst: 5,
        ..IcmpConfig::default()
    });
    let mut d = MemDriver::new(256, 256);
    for _ in 0..100 {
        d.inject(
            VETH_A,
            &craft::udp4(A_MAC, GW_MAC, A4, "203.0.113.1".parse().unwrap(), 1, 2, 64),
        )
        .unwrap();
    }
    d.run(&s, 7_000_000_000);
    assert_eq!(d.take_tx(VETH_A).len(), 5);
    assert_eq!(d.counters().icmp_rate_limited, 95);
    assert_eq!(d.counters().dropped(DropReason::NoRoute), 100);
    d.counters().check_accounting().unwrap();
    // A second later the bucket holds 5 again (10/s, burst 5).
    for _ in 0..10 {
        d.inject(
            VETH_A,
            &craft::udp4(A_MAC, GW_MAC, A4, "203.0.113.1".parse().unwrap(), 1, 2, 64),
        )
        .unwrap();
    }
    d.run(&s, 8_000_000_000);
    assert_eq!(d.take_tx(VETH_A).len(), 5);
    // No error in answer to an ICMP error.
    let mut err = craft::icmp4_echo(A_MAC, GW_MAC, A4, "203.0.113.1".parse().unwrap(), 1, 8);
    err[34] = 3; // destination unreachable
    err[36..38].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&err[34..]);
    err[36..38].copy_from_slice(&c.to_be_bytes());
    let mut d = one(&s, VETH_A, &err);
    assert!(d.take_tx(VETH_A).is_empty());
    assert_eq!(d.counters().dropped(DropReason::NoRoute), 1);
}

#[test]
fn partial_checksums_from_tx_offload_are_completed() {
    let s = default_node();
    for full in [
        craft::udp4(A_MAC, GW_MAC, A4, B4, 1000, 2000, 300),
        craft::tcp4(A_MAC, GW_MAC, A4, B4, 1000, 2000, 300),
        craft::udp6(A_MAC, GW_MAC, A6, B6, 1000, 2000, 300),
        craft::tcp6(A_MAC, GW_MAC, A6, B6, 1000, 2000, 300),
    ] {
        let mut partial = full.clone();
        craft::make_partial(&mut partial);
        assert_ne!(partial, full);
        let mut d = one(&s, VETH_A, &partial);
        let out = only_tx(&mut d, VETH_B);
        assert!(l4_checksum_ok(&out), "completed checksum verifies");
        assert_eq!(d.counters().checksums_completed, 1);
        // A complete checksum is left as it is.
        let mut d = one(&s, VETH_A, &full);
        assert!(l4_checksum_ok(&only_tx(&mut d, VETH_B)));
        assert_eq!(d.counters().checksums_completed, 0);
    }
}

#[test]
fn spoofed_sources_are_dropped_and_counted() {
    let s = default_node();
    let d = one(&s, VETH_A, &craft::udp4(A_MAC, GW_MAC, B4, A4, 1, 2, 64));
    assert_eq!(d.counters().dropped(DropReason::SpoofedIp), 1);
    let d = one(&s, VETH_A, &craft::udp4(B_MAC, GW_MAC, A4, B4, 1, 2, 64));
    assert_eq!(d.counters().dropped(DropReason::SpoofedMac), 1);
    let d = one(&s, VETH_A, &craft::udp6(A_MAC, GW_MAC, B6, A6, 1, 2, 80));
    assert_eq!(d.counters().dropped(DropReason::SpoofedIp), 1);
    let d = one(&s, VETH_A, &craft::arp_request(A_MAC, B4, GW4));
    assert_eq!(d.counters().dropped(DropReason::SpoofedIp), 1);
    // The uplink carries many sources: not checked.
    let d = one(
        &s,
        UPLINK,
        &craft::udp4(
            NODE2_MAC,
            UP_MAC,
            "198.19.0.9".parse().unwrap(),
            A4,
            1,
            2,
            64,
        ),
    );
    assert_eq!(d.counters().tx, 1);
}

/// Sets the IPv4 header checksum of a frame after a test changed the header.
/// A cluster IP with no endpoint (see `node_builder`).
const SERVICE_VIP: &str = "198.19.0.80";

fn fix_v4(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0xf) * 4;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

fn udp4_from_a(dst: &str) -> Vec<u8> {
    craft::udp4(A_MAC, GW_MAC, A4, dst.parse().unwrap(), 1, 2, 64)
}

fn v4_with_options(opts: &[u8]) -> Vec<u8> {
    let mut f = craft::ethernet(GW_MAC, A_MAC, craft::ETH_IPV4);
    f.extend(craft::ipv4_header(A4, B4, 17, 64, 8, opts));
    f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
    f
}

fn v6_with_ext(next: u8, ext: &[u8]) -> Vec<u8> {
    let mut f = craft::ethernet(GW_MAC, A_MAC, craft::ETH_IPV6);
    f.extend(craft::ipv6_header(A6, B6, next, 64, ext.len()));
    f.extend_from_slice(ext);
    f
}

/// A frame (and the interface it arrives on) that must be dropped for `reason`, in a
/// driver made by [`driver_for`]. The match is exhaustive: a new reason without a trigger
/// does not compile, so no reason can exist that is never counted. `None` exactly for the
/// reasons only the AF_XDP driver can produce ([`DropReason::NOT_IN_MEMORY`]).
fn trigger(reason: DropReason) -> Option<(IfIndex, Vec<u8>)> {
    let a = VETH_A;
    Some(match reason {
        DropReason::EthTruncated => (a, vec![0; 13]),
        DropReason::VlanTagged => (a, {
            let mut f = udp4_from_a("198.18.0.11");
            f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
            f
        }),
        DropReason::UnknownEthertype => (a, craft::ethernet(GW_MAC, A_MAC, 0x88cc)),
        DropReason::ArpMalformed => (a, craft::arp_request(A_MAC, A4, GW4)[..30].to_vec()),
        DropReason::Ipv4Malformed => (a, {
            let mut f = udp4_from_a("198.18.0.11");
            f[14] = 0x44; // IHL 4
            f
        }),
        DropReason::Ipv4BadChecksum => (a, {
            let mut f = udp4_from_a("198.18.0.11");
            f[24] ^= 0xff;
            f
        }),
        DropReason::Ipv4BadOptions => (a, v4_with_options(&[7, 0, 0, 0])), // zero-length option
        DropReason::Ipv4SourceRoute => (a, v4_with_options(&[131, 3, 4, 0])),
        DropReason::Ipv4MartianSource => (
            UPLINK,
            craft::udp4(
                NODE2_MAC,
                UP_MAC,
                "127.0.0.1".parse().unwrap(),
                A4,
                1,
                2,
                64,
            ),
        ),
        DropReason::Ipv4MartianDestination => (a, udp4_from_a("0.1.2.3")),
        DropReason::Ipv4Multicast => (a, udp4_from_a("224.0.0.251")),
        DropReason::Ipv6Malformed => (a, {
            let mut f = craft::udp6(A_MAC, GW_MAC, A6, B6, 1, 2, 100);
            f[18] = 0x10; // payload length past the frame
            f
        }),
        DropReason::Ipv6BadExtensions => (a, v6_with_ext(0, &[17, 2, 0, 0, 0, 0, 0, 0])), // runs off the end
        DropReason::Ipv6MartianSource => (
            UPLINK,
            craft::udp6(NODE2_MAC, UP_MAC, "ff02::1".parse().unwrap(), A6, 1, 2, 80),
        ),
        DropReason::Ipv6MartianDestination => (
            a,
            craft::udp6(A_MAC, GW_MAC, A6, Ipv6Addr::LOCALHOST, 1, 2, 80),
        ),
        DropReason::Ipv6Multicast => (
            a,
            craft::udp6(A_MAC, GW_MAC, A6, "ff05::2".parse().unwrap(), 1, 2, 80),
        ),
        DropReason::Ipv6LinkLocal => (
            a,
            craft::udp6(A_MAC, GW_MAC, A6, "fe80::99".parse().unwrap(), 1, 2, 80),
        ),
        DropReason::L4Truncated => (a, {
            let mut f = craft::ethernet(GW_MAC, A_MAC, craft::ETH_IPV4);
            f.extend(craft::ipv4_header(A4, B4, 6, 64, 10, &[]));
            f.extend_from_slice(&[0; 10]);
            f
        }),
        DropReason::SpoofedMac => (a, craft::udp4(B_MAC, GW_MAC, A4, B4, 1, 2, 64)),
        DropReason::SpoofedIp => (a, craft::udp4(A_MAC, GW_MAC, B4, A4, 1, 2, 64)),
        DropReason::ArpIgnored => (a, craft::arp_request(A_MAC, A4, B4)),
        DropReason::NdpInvalid => (a, {
            let mut f = craft::neighbor_solicitation(A_MAC, A_LL, GW6);
            f[21] = 64; // hop limit must be 255
            f
        }),
        DropReason::NdpIgnored => (
            a,
            craft::neighbor_solicitation(A_MAC, A_LL, "fe80::55".parse().unwrap()),
        ),
        DropReason::ToGateway => (a, craft::icmp4_echo(A_MAC, GW_MAC, A4, GW4, 1, 8)),
        DropReason::TtlExceeded => (a, {
            let mut f = udp4_from_a("198.18.0.11");
            f[22] = 0;
            fix_v4(&mut f);
            f
        }),
        DropReason::NoRoute => (a, udp4_from_a("203.0.113.9")),
        // On the world node (see `every_drop_reason_is_reachable_and_counted`).
        DropReason::SnatUnavailable => (a, {
            let mut f = udp4_from_a("198.51.100.1");
            f[20] |= 0x20; // more fragments: a fragment is not translated
            fix_v4(&mut f);
            f
        }),
        DropReason::SnatPortsExhausted => (a, udp4_from_a("198.51.100.1")),
        DropReason::SnatNoMapping => (
            UPLINK,
            craft::udp4(
                NODE2_MAC,
                UP_MAC,
                "198.51.100.1".parse().unwrap(),
                NODE4,
                53,
                61000,
                64,
            ),
        ),
        DropReason::Blackhole => (a, udp4_from_a("198.19.2.1")),
        DropReason::TooBig => (a, {
            let mut f = craft::udp4(A_MAC, GW_MAC, A4, B4, 1, 2, 1514);
            f[20] = 0; // clear DF: weir does not fragment
            fix_v4(&mut f);
            f
        }),
        DropReason::TunnelUnavailable => (a, udp4_from_a("198.19.1.1")),
        DropReason::NeighborUnresolved => (a, udp4_from_a("198.19.4.1")),
        DropReason::Hairpin => (a, udp4_from_a("198.19.6.1")),
        DropReason::TxRingFull => (a, udp4_from_a("198.18.0.11")),
        DropReason::PolicyDeniedEgress => (a, udp4_from_a("198.19.0.66")),
        DropReason::PolicyDeniedIngress => (a, craft::udp4(A_MAC, GW_MAC, A4, B4, 1, 9, 64)),
        DropReason::WireguardNoPeer => (a, udp4_from_a("198.19.7.1")),
        // B's interface is owned by no worker (see `driver_for`).
        DropReason::UnownedOutput => (a, udp4_from_a("198.18.0.11")),
        // Not a WireGuard message: a zero type byte (see `driver_for`: WireGuard is on).
        DropReason::WireguardRejected => (
            UPLINK,
            craft::udp4(
                NODE2_MAC,
                UP_MAC,
                "198.19.255.2".parse().unwrap(),
                "198.19.255.1".parse().unwrap(),
                51820,
                51820,
                80,
            ),
        ),
        // B's interface is worker 1's, and the lane to it is full (see `driver_for`).
        DropReason::HandoffFull => (a, udp4_from_a("198.18.0.11")),
        // A parcel of another snapshot generation waits (see `driver_for`); the ARP request
        // is answered.
        DropReason::HandoffStale => (a, craft::arp_request(A_MAC, A4, GW4)),
        // A connection attempt to a service without endpoints is answered with a reset.
        DropReason::ServiceNoEndpoints => (
            a,
            craft::tcp4(
                A_MAC,
                GW_MAC,
                A4,
                SERVICE_VIP.parse().unwrap(),
                40000,
                80,
                54,
            ),
        ),
        DropReason::ServiceFragment => (a, {
            let mut f = udp4_from_a(SERVICE_VIP);
            f[20] = 0x00;
            f[21] = 0x10; // a later fragment (offset 128 bytes)
            fix_v4(&mut f);
            f
        }),
        DropReason::BadDescriptor
        | DropReason::PortDetached
        | DropReason::FillStarved
        | DropReason::WireguardNoRoom
        | DropReason::SnatTableFull
        | DropReason::ServiceTableFull => return None,
    })
}

/// The driver `reason`'s trigger needs: no TX room for `tx_ring_full`, B's interface
/// unowned for `unowned_output`, WireGuard on for `wireguard_rejected`, worker 0 of two for
/// the handoff reasons (B's interface on worker 1 behind a full lane for `handoff_full`, a
/// parcel of another generation handed in for `handoff_stale`).
fn driver_for(reason: DropReason) -> MemDriver {
    if matches!(reason, DropReason::HandoffFull | DropReason::HandoffStale) {
        let owners = [("veth-b".to_string(), 1)];
        let owners = if reason == DropReason::HandoffFull {
            &owners[..]
        } else {
            &[]
        };
        let links = mesh(2, 1, owners).unwrap();
        let to_one = links[0].outbound[1].as_ref().unwrap();
        let to_zero = links[1].outbound[0].as_ref().unwrap();
        if reason == DropReason::HandoffFull {
            assert!(to_one.send(VETH_B, &[0; 60]), "fills the one buffer");
        } else {
            assert!(to_zero.send_parcel(VETH_B, None, u64::MAX - 1, &[0; 60]));
        }
        let mut d = MemDriver::new(8, 64);
        d.connect(links.into_iter().next().unwrap());
        return d;
    }
    let tx_capacity = if reason == DropReason::TxRingFull {
        0
    } else {
        64
    };
    let mut d = MemDriver::new(8, tx_capacity);
    match reason {
        DropReason::UnownedOutput => d.set_unowned(VETH_B, true),
        DropReason::WireguardRejected => d.enable_wireguard(NodeKey::from_bytes([9; 32])),
        // The world node's one SNAT port (61000) is worker 0's of two.
        DropReason::SnatPortsExhausted => d.pipeline().set_worker(1, 2),
        _ => {}
    }
    d
}

#[test]
fn every_drop_reason_is_reachable_and_counted() {
    let (default, world) = (default_node(), world_node());
    for reason in DropReason::ALL {
        let s = if reason.name().starts_with("snat_") {
            &world
        } else {
            &default
        };
        let Some((ingress, frame)) = trigger(reason) else {
            assert!(
                DropReason::NOT_IN_MEMORY.contains(&reason),
                "{} has no trigger",
                reason.name()
            );
            continue;
        };
        assert!(!DropReason::NOT_IN_MEMORY.contains(&reason));
        let mut d = driver_for(reason);
        d.inject(ingress, &frame).unwrap();
        d.run(s, 1_000_000_000);
        let c = d.counters();
        assert_eq!(c.dropped(reason), 1, "{} not counted: {c:?}", reason.name());
        assert_eq!(
            c.total_drops(),
            1,
            "{}: another reason counted too: {c:?}",
            reason.name()
        );
        c.check_accounting().unwrap();
        d.complete_all();
        d.check_accounting().unwrap();
    }
}

#[test]
fn frames_stay_accounted_over_a_million_packets() {
    let s = default_node();
    let mut d = MemDriver::new(1024, 512);
    let frames: Vec<(IfIndex, Vec<u8>)> = DropReason::ALL
        .iter()
        .filter_map(|r| trigger(*r))
        .chain([
            (VETH_A, craft::udp4(A_MAC, GW_MAC, A4, B4, 1, 2, 64)),
            (VETH_A, craft::arp_request(A_MAC, A4, GW4)),
            (VETH_A, craft::neighbor_solicitation(A_MAC, A_LL, GW6)),
            (VETH_B, craft::tcp6(B_MAC, GW_MAC, B6, A6, 1, 2, 1000)),
        ])
        .collect();
    let mut sent = 0u64;
    let mut now = 0u64;
    while sent < 1_000_000 {
        for (i, f) in frames
            .iter()
            .cycle()
            .skip(sent as usize % frames.len())
            .take(700)
        {
            d.inject(*i, f).unwrap();
            sent += 1;
        }
        now += 1_000_000;
        d.run(&s, now);
        d.check_accounting().unwrap();
        d.complete_all();
    }
    let c = d.counters();
    assert_eq!(c.rx, sent);
    c.check_accounting().unwrap();
    d.check_accounting().unwrap();
}

fn valid_frames() -> Vec<(IfIndex, Vec<u8>)> {
    vec![
        (VETH_A, craft::udp4(A_MAC, GW_MAC, A4, B4, 1, 2, 120)),
        (VETH_A, craft::tcp6(A_MAC, GW_MAC, A6, B6, 1, 2, 120)),
        (VETH_A, craft::arp_request(A_MAC, A4, GW4)),
        (VETH_A, craft::neighbor_solicitation(A_MAC, A_LL, GW6)),
        (VETH_A, craft::icmp6_echo(A_MAC, GW_MAC, A6, B6, 7, 40)),
        (VETH_A, v4_with_options(&[1, 1, 68, 4, 5, 0, 0, 0])),
        (
            VETH_A,
            v6_with_ext(
                60,
                &[
                    44, 0, 1, 4, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 2, 0, 8, 0, 0,
                ],
            ),
        ),
        (
            UPLINK,
            craft::udp4(
                NODE2_MAC,
                UP_MAC,
                "198.19.0.9".parse().unwrap(),
                A4,
                1,
                2,
                64,
            ),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any corruption of a valid frame (truncation, a flipped byte, a byte set, bytes
    /// appended) is handled without a panic, and every frame is accounted for.
    #[test]
    fn corrupted_frames_never_panic(
        which in 0usize..8,
        cut in 0usize..2000,
        flips in proptest::collection::vec((0usize..2000, any::<u8>()), 0..6),
        extra in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let s = default_node();
        let (ingress, mut f) = valid_frames().swap_remove(which);
        for (pos, val) in flips {
            let len = f.len();
            f[pos % len] = val;
        }
        f.truncate(cut.max(1));
        f.extend(extra);
        let mut d = MemDriver::new(8, 8);
        d.inject(ingress, &f).unwrap();
        d.run(&s, 1);
        prop_assert!(d.counters().check_accounting().is_ok());
        prop_assert_eq!(d.counters().rx, 1);
        d.complete_all();
        prop_assert!(d.check_accounting().is_ok());
    }
}

#[test]
fn hop_by_hop_options_are_checked_and_extension_chains_walked() {
    let s = default_node();
    let udp = [0u8, 1, 0, 2, 0, 8, 0, 0];
    // Hop-by-hop with PadN (4 bytes of padding), then UDP: forwarded.
    let mut ok = vec![17, 0, 1, 4, 0, 0, 0, 0];
    ok.extend_from_slice(&udp);
    let d = one(&s, VETH_A, &v6_with_ext(0, &ok));
    assert_eq!(d.counters().tx, 1, "{:?}", d.counters());
    // Router alert is known: forwarded.
    let mut ra = vec![17, 0, 5, 2, 0, 0, 1, 0];
    ra.extend_from_slice(&udp);
    assert_eq!(one(&s, VETH_A, &v6_with_ext(0, &ra)).counters().tx, 1);
    // An option that runs past its header.
    let mut long = vec![17, 0, 1, 9, 0, 0, 0, 0];
    long.extend_from_slice(&udp);
    assert_eq!(
        one(&s, VETH_A, &v6_with_ext(0, &long))
            .counters()
            .dropped(DropReason::Ipv6BadExtensions),
        1
    );
    // An unknown option whose type says "discard" (high bits 01).
    let mut unknown = vec![17, 0, 0x7e, 4, 0, 0, 0, 0];
    unknown.extend_from_slice(&udp);
    assert_eq!(
        one(&s, VETH_A, &v6_with_ext(0, &unknown))
            .counters()
            .dropped(DropReason::Ipv6BadExtensions),
        1
    );
    // An unknown option whose type says "skip" (high bits 00): forwarded.
    let mut skip = vec![17, 0, 0x1e, 4, 0, 0, 0, 0];
    skip.extend_from_slice(&udp);
    assert_eq!(one(&s, VETH_A, &v6_with_ext(0, &skip)).counters().tx, 1);
    // Destination options (zero-length header, 8 bytes) then a first fragment then UDP.
    let mut chain = vec![44, 0, 1, 4, 0, 0, 0, 0, 17, 0, 0, 1, 0, 0, 0, 9];
    chain.extend_from_slice(&udp);
    let mut d = one(&s, VETH_A, &v6_with_ext(60, &chain));
    let out = only_tx(&mut d, VETH_B);
    assert_eq!(out.len(), 14 + 40 + chain.len());
    // A later fragment has no ports but is still routed.
    let later = [17u8, 0, 0, 8, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(one(&s, VETH_A, &v6_with_ext(44, &later)).counters().tx, 1);
    // Hop-by-hop after a destination options header is misordered.
    let bad = [0u8, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
    assert_eq!(
        one(&s, VETH_A, &v6_with_ext(60, &bad))
            .counters()
            .dropped(DropReason::Ipv6BadExtensions),
        1
    );
}

/// A: ingress closed (tier ends in Deny with no rules). B: ingress allows TCP 80 only.
fn isolated(generation: u64, b_allows_80: bool) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    b.pod(pod("a", A_MAC, A4, A6, 1500)).unwrap();
    b.pod(pod("b", B_MAC, B4, B6, 1500)).unwrap();
    b.uplink("up0", UP_MAC, 1500).unwrap();
    let closed = Program::new(
        vec![Tier {
            rules: vec![],
            end: TierEnd::Deny,
            end_id: 1,
        }],
        &Sets::default(),
    );
    let web = Rule {
        matches: Match {
            protocol: Some(6),
            dst_ports: PortMatch {
                ranges: vec![(80, 80)],
                named: None,
            },
            ..Match::default()
        },
        action: Action::Allow,
        id: 0,
    };
    let b_ingress = Program::new(
        vec![Tier {
            rules: if b_allows_80 { vec![web] } else { vec![] },
            end: TierEnd::Deny,
            end_id: 1,
        }],
        &Sets::default(),
    );
    let info = RuleInfo {
        tier: "default".into(),
        policy: "demo/p".into(),
        direction: Direction::Ingress,
        index: Some(0),
    };
    b.policy(PolicyTables {
        endpoints: vec![
            EndpointPolicy {
                ingress: Some(Arc::new(closed)),
                egress: None,
            },
            EndpointPolicy {
                ingress: Some(Arc::new(b_ingress)),
                egress: None,
            },
        ],
        sets: Sets::default(),
        rules: vec![
            info.clone(),
            RuleInfo {
                index: None,
                ..info
            },
        ],
    });
    b.build(generation).unwrap()
}

#[test]
fn conntrack_lets_replies_back_and_a_new_deny_cuts_the_running_flow() {
    let s1 = isolated(1, true);
    let mut d = MemDriver::new(64, 64);
    let syn = craft::tcp4(A_MAC, GW_MAC, A4, B4, 40000, 80, 60);
    let reply = craft::tcp4(B_MAC, GW_MAC, B4, A4, 80, 40000, 60);
    let unsolicited = craft::tcp4(B_MAC, GW_MAC, B4, A4, 80, 40001, 60);
    d.inject(VETH_A, &syn).unwrap();
    d.inject(VETH_B, &reply).unwrap();
    d.inject(VETH_B, &unsolicited).unwrap();
    d.run(&s1, 1_000);
    assert_eq!(
        d.take_tx(VETH_B).len(),
        1,
        "A -> B:80 allowed by B's ingress"
    );
    assert_eq!(
        d.take_tx(VETH_A).len(),
        1,
        "the reply comes back although A's ingress is closed"
    );
    assert_eq!(
        d.counters().dropped(DropReason::PolicyDeniedIngress),
        1,
        "B -> A on another port is a new flow: denied"
    );
    assert_eq!(d.counters().conntrack_hits, 1);
    // Same generation: cached.
    d.inject(VETH_A, &syn).unwrap();
    d.run(&s1, 2_000);
    assert_eq!(d.take_tx(VETH_B).len(), 1);
    assert_eq!(d.counters().conntrack_hits, 2);
    // A new snapshot closes B's port 80: the next packet of the running flow is dropped,
    // and so is the reply direction.
    let s2 = isolated(2, false);
    d.inject(VETH_A, &syn).unwrap();
    d.inject(VETH_B, &reply).unwrap();
    d.run(&s2, 3_000);
    assert!(d.take_tx(VETH_B).is_empty());
    assert!(d.take_tx(VETH_A).is_empty());
    assert_eq!(d.counters().dropped(DropReason::PolicyDeniedIngress), 3);
    d.counters().check_accounting().unwrap();
}

#[test]
fn icmp_errors_for_tracked_flows_pass_closed_ingress() {
    let s = isolated(1, true);
    let mut d = MemDriver::new(64, 64);
    d.inject(VETH_A, &craft::tcp4(A_MAC, GW_MAC, A4, B4, 40000, 80, 60))
        .unwrap();
    d.run(&s, 1_000);
    assert_eq!(d.take_tx(VETH_B).len(), 1);
    // B answers with "port unreachable" quoting A's packet: allowed into A.
    let quoted = &craft::tcp4(A_MAC, GW_MAC, A4, B4, 40000, 80, 60)[14..];
    let mut msg = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&quoted[..28]);
    let c = checksum::checksum(&msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut err = craft::ethernet(GW_MAC, B_MAC, craft::ETH_IPV4);
    err.extend(craft::ipv4_header(
        B4,
        A4,
        craft::PROTO_ICMP,
        64,
        msg.len(),
        &[],
    ));
    err.extend(msg);
    d.inject(VETH_B, &err).unwrap();
    // An error quoting a flow that does not exist is classified like any packet: denied.
    let mut stray = err.clone();
    stray[14 + 20 + 8 + 20] ^= 1; // quoted source port
    let c = {
        let seg = &mut stray[34..];
        seg[2..4].copy_from_slice(&[0, 0]);
        checksum::checksum(seg)
    };
    stray[36..38].copy_from_slice(&c.to_be_bytes());
    d.inject(VETH_B, &stray).unwrap();
    d.run(&s, 2_000);
    assert_eq!(d.take_tx(VETH_A).len(), 1);
    assert_eq!(d.counters().dropped(DropReason::PolicyDeniedIngress), 1);
}
