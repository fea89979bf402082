//! The node the pipeline tests run on: two pods, the uplink with WireGuard, the host
//! link, a service without endpoints, routes of every kind, and the frames and checks
//! the tests share.

#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

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
use weir_dataplane::{IfIndex, Snapshot, SnapshotBuilder};
use weir_workers::MemDriver;

pub const GW_MAC: Mac = [0xee, 0xee, 0xee, 0xee, 0xee, 0xee];
pub const A_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];
pub const B_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0b];
pub const UP_MAC: Mac = [0x02, 0, 0, 0, 0, 0x99];
pub const NODE2_MAC: Mac = [0x02, 0, 0, 0, 0, 0x22];
pub const HOST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x77];
pub const HOST_PEER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x78];

pub const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
pub const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
pub const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
pub const A_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x10);
pub const GW4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const GW6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// This node's WireGuard address (on the uplink).
pub const LOCAL_WG: &str = "198.19.255.1:51820";

pub const VETH_A: IfIndex = 0;
pub const VETH_B: IfIndex = 1;
pub const UPLINK: IfIndex = 2;
pub const HOST: IfIndex = 3;

pub fn pod(name: &str, mac: Mac, v4: Ipv4Addr, v6: Ipv6Addr, mtu: u16) -> PodSpec {
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
pub fn node(icmp: IcmpConfig) -> Snapshot {
    node_builder(icmp).build(1).unwrap()
}

/// The node's address on the uplink, which pods' traffic to the world leaves with.
pub const NODE4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);

/// [`node`] with a default route to a router on the uplink and source NAT for the pods'
/// pool, from a one-port range (so that a second worker has none).
pub fn world_node() -> Snapshot {
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

pub fn node_builder(icmp: IcmpConfig) -> SnapshotBuilder {
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
pub fn default_policy() -> PolicyTables {
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
        warm_pays: Default::default(),
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

pub fn default_node() -> Snapshot {
    node(IcmpConfig::default())
}

/// Runs one frame through a fresh driver; returns the driver for inspection.
pub fn one(snapshot: &Snapshot, ingress: IfIndex, frame: &[u8]) -> MemDriver {
    let mut d = MemDriver::new(64, 64);
    d.inject(ingress, frame).unwrap();
    d.run(snapshot, 1_000_000_000);
    d.check_accounting().unwrap();
    d.counters().check_accounting().unwrap();
    d
}

pub fn only_tx(d: &mut MemDriver, iface: IfIndex) -> Vec<u8> {
    let mut out = d.take_tx(iface);
    assert_eq!(
        out.len(),
        1,
        "expected one frame on interface {iface}, counters {:?}",
        d.counters()
    );
    out.pop().unwrap()
}

pub fn ipv4_header_ok(f: &[u8]) -> bool {
    let ihl = usize::from(f[14] & 0xf) * 4;
    checksum::checksum(&f[14..14 + ihl]) == 0
}

pub fn l4_checksum_ok(f: &[u8]) -> bool {
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

pub fn fix_v4(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0xf) * 4;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

pub fn udp4_from_a(dst: &str) -> Vec<u8> {
    craft::udp4(A_MAC, GW_MAC, A4, dst.parse().unwrap(), 1, 2, 64)
}

pub fn v4_with_options(opts: &[u8]) -> Vec<u8> {
    let mut f = craft::ethernet(GW_MAC, A_MAC, craft::ETH_IPV4);
    f.extend(craft::ipv4_header(A4, B4, 17, 64, 8, opts));
    f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
    f
}

pub fn v6_with_ext(next: u8, ext: &[u8]) -> Vec<u8> {
    let mut f = craft::ethernet(GW_MAC, A_MAC, craft::ETH_IPV6);
    f.extend(craft::ipv6_header(A6, B6, next, 64, ext.len()));
    f.extend_from_slice(ext);
    f
}

/// A cluster IP with no endpoint (see `node_builder`).
pub const SERVICE_VIP: &str = "198.19.0.80";
