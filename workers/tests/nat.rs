//! Source NAT to the world and the node's own stack, frame in, frame out, through the
//! in-memory driver: pods' connections leave with the node's address and a port of the
//! SNAT range and their replies come back to the pod; traffic inside the cluster and
//! replies to connections opened from outside keep the pod's address; the node's own stack
//! reaches an isolated pod, unless `host.allowHostToPods` is off: then it meets the pod's
//! ingress policy like anyone else.

use std::net::{Ipv4Addr, Ipv6Addr};

use weir_dataplane::craft;
use weir_dataplane::policy::{
    Direction, EndpointPolicy, PolicyTables, Program, RuleInfo, Sets, Tier, TierEnd,
};
use weir_dataplane::snapshot::{Mac, NatPool, NextHop, PodSpec, Prefix, SnatConfig};
use weir_dataplane::wire::checksum;
use weir_dataplane::{DropReason, IfIndex, Snapshot, SnapshotBuilder};
use weir_workers::MemDriver;

mod common;
use common::{checksums_verify, v4_dst, v4_src};

const GW_MAC: Mac = [0xee; 6];
const A_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];
const UP_MAC: Mac = [0x02, 0, 0, 0, 0, 0x99];
const ROUTER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
const HOST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x77];
const HOST_PEER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x78];

const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 10, 0, 0, 0, 0, 2);
const NODE4: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 200, 0, 0, 0, 0, 2);
const WORLD4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
const WORLD6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
/// In another pool of the cluster, routed to another node.
const OTHER_POOL4: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 9);
const OTHER_NODE_MAC: Mac = [0x02, 0, 0, 0, 0, 0x22];

const POD: IfIndex = 0;
const UPLINK: IfIndex = 1;
const HOST: IfIndex = 2;
const PORTS: (u16, u16) = (61000, 61999);

/// One pod (isolated for ingress when `isolated`), the uplink with the node's default
/// gateway, the host interface, and source NAT for the pod's pool.
fn world_node(isolated: bool) -> Snapshot {
    world_node_where_the_host(isolated, true)
}

/// [`world_node`], with connections from the node's own stack exempt from the pods'
/// ingress policy (`host.allowHostToPods`, the default) or not.
fn world_node_where_the_host(isolated: bool, host_to_pods_allowed: bool) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    b.host_to_pods_allowed(host_to_pods_allowed);
    b.pod(PodSpec {
        namespace: "demo".into(),
        name: "a".into(),
        interface: "veth-a".into(),
        gateway_mac: GW_MAC,
        mac: A_MAC,
        ipv4: Some(A4),
        ipv6: Some(A6),
        mtu: 1500,
    })
    .unwrap();
    b.uplink("up0", UP_MAC, 1500).unwrap();
    b.host("weir0", HOST_MAC, HOST_PEER_MAC, 1500).unwrap();
    let n2 = b.node(
        "node2",
        "198.18.200.3".parse().unwrap(),
        Some(OTHER_NODE_MAC),
    );
    let router = NextHop::Router {
        mac: Some(ROUTER_MAC),
    };
    for (p, nh) in [
        ("0.0.0.0/0", router),
        ("::/0", router),
        ("198.18.200.2/32", NextHop::Host),
        ("2001:db8:c8::2/128", NextHop::Host),
        (
            "198.18.64.0/24",
            NextHop::Remote {
                node: n2,
                tunnel: weir_dataplane::snapshot::Tunnel::None,
            },
        ),
    ] {
        b.route(p.parse::<Prefix>().unwrap(), nh);
    }
    b.snat(SnatConfig {
        v4: Some(NODE4),
        v6: Some(NODE6),
        ports: PORTS,
        pools: vec![
            NatPool {
                prefix: "198.18.0.0/17".parse().unwrap(),
                nat_outgoing: true,
            },
            NatPool {
                prefix: "2001:db8:a::/48".parse().unwrap(),
                nat_outgoing: true,
            },
        ],
    });
    if isolated {
        // Ingress: nothing allowed (a default deny); egress: everything.
        let info = RuleInfo {
            tier: "default".into(),
            policy: "deny-all".into(),
            direction: Direction::Ingress,
            index: None,
        };
        let deny = Program::new(
            vec![Tier {
                rules: vec![],
                end: TierEnd::Deny,
                end_id: 0,
            }],
            &Sets::default(),
        );
        b.policy(PolicyTables {
            endpoints: vec![EndpointPolicy {
                ingress: Some(std::sync::Arc::new(deny)),
                egress: None,
            }],
            warm_pays: Default::default(),
            sets: Sets::default(),
            rules: vec![info],
        });
    }
    b.build(1).unwrap()
}

fn run(d: &mut MemDriver, s: &Snapshot, ingress: IfIndex, frame: &[u8], now: u64) {
    d.inject(ingress, frame).unwrap();
    d.run(s, now);
    d.check_accounting().unwrap();
    d.counters().check_accounting().unwrap();
}

fn only(d: &mut MemDriver, iface: IfIndex) -> Vec<u8> {
    let mut out = d.take_tx(iface);
    assert_eq!(
        out.len(),
        1,
        "one frame out of interface {iface}: {:?}",
        d.counters()
    );
    d.complete_all();
    out.pop().unwrap()
}

/// A frame from the world (the router) on the uplink.
fn from_world_tcp4(sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    craft::tcp4(ROUTER_MAC, UP_MAC, WORLD4, dst, sport, dport, 80)
}

/// From the node's own stack (its address, through the host link) to the pod.
fn from_node_tcp4(sport: u16, dport: u16) -> Vec<u8> {
    craft::tcp4(HOST_PEER_MAC, HOST_MAC, NODE4, A4, sport, dport, 80)
}

/// From the pod to the node's address.
fn to_node_tcp4(sport: u16, dport: u16) -> Vec<u8> {
    craft::tcp4(A_MAC, GW_MAC, A4, NODE4, sport, dport, 80)
}

#[test]
fn a_pods_tcp_connection_leaves_with_the_node_address_and_its_replies_come_back() {
    let s = world_node(true);
    let mut d = MemDriver::new(64, 64);
    run(
        &mut d,
        &s,
        POD,
        &craft::tcp4(A_MAC, GW_MAC, A4, WORLD4, 40000, 80, 80),
        1,
    );
    let out = only(&mut d, UPLINK);
    assert_eq!(&out[0..6], &ROUTER_MAC, "to the gateway");
    let (src, port) = v4_src(&out);
    assert_eq!(src, NODE4);
    assert!((PORTS.0..=PORTS.1).contains(&port), "port {port}");
    assert_eq!(v4_dst(&out), (WORLD4, 80));
    checksums_verify(&out);
    // The same flow keeps its port.
    run(
        &mut d,
        &s,
        POD,
        &craft::tcp4(A_MAC, GW_MAC, A4, WORLD4, 40000, 80, 90),
        2,
    );
    assert_eq!(v4_src(&only(&mut d, UPLINK)), (NODE4, port));
    // The reply reaches the (ingress-isolated) pod as the reply of its own connection.
    run(&mut d, &s, UPLINK, &from_world_tcp4(80, NODE4, port), 3);
    let back = only(&mut d, POD);
    assert_eq!(v4_dst(&back), (A4, 40000));
    assert_eq!(v4_src(&back), (WORLD4, 80));
    assert_eq!(&back[0..6], &A_MAC);
    checksums_verify(&back);
    assert_eq!(d.counters().total_drops(), 0, "{:?}", d.counters());
    // A reply from another remote port does not match the translation.
    run(&mut d, &s, UPLINK, &from_world_tcp4(81, NODE4, port), 4);
    assert_eq!(d.counters().dropped(DropReason::SnatNoMapping), 1);
    assert!(d.take_tx(POD).is_empty());
}

#[test]
fn udp_and_ping_in_both_families_are_translated_and_answered() {
    let s = world_node(true);
    let mut d = MemDriver::new(64, 64);
    // UDP over IPv6.
    run(
        &mut d,
        &s,
        POD,
        &craft::udp6(A_MAC, GW_MAC, A6, WORLD6, 5353, 53, 100),
        1,
    );
    let out = only(&mut d, UPLINK);
    assert_eq!(&out[22..38], &NODE6.octets());
    let port = u16::from_be_bytes([out[54], out[55]]);
    assert!((PORTS.0..=PORTS.1).contains(&port));
    checksums_verify(&out);
    run(
        &mut d,
        &s,
        UPLINK,
        &craft::udp6(ROUTER_MAC, UP_MAC, WORLD6, NODE6, 53, port, 100),
        2,
    );
    let back = only(&mut d, POD);
    assert_eq!(&back[38..54], &A6.octets());
    assert_eq!(u16::from_be_bytes([back[56], back[57]]), 5353);
    checksums_verify(&back);
    // Ping over IPv4: the identifier is translated, the reply gets the pod's back.
    run(
        &mut d,
        &s,
        POD,
        &craft::icmp4_echo(A_MAC, GW_MAC, A4, WORLD4, 0x1234, 16),
        3,
    );
    let out = only(&mut d, UPLINK);
    assert_eq!(v4_src(&out).0, NODE4);
    let ident = u16::from_be_bytes([out[38], out[39]]);
    assert!((PORTS.0..=PORTS.1).contains(&ident), "identifier {ident}");
    checksums_verify(&out);
    let mut reply = craft::icmp4_echo(ROUTER_MAC, UP_MAC, WORLD4, NODE4, ident, 16);
    reply[34] = 0; // echo reply
    reply[36..38].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&reply[34..]);
    reply[36..38].copy_from_slice(&c.to_be_bytes());
    run(&mut d, &s, UPLINK, &reply, 4);
    let back = only(&mut d, POD);
    assert_eq!(v4_dst(&back).0, A4);
    assert_eq!(u16::from_be_bytes([back[38], back[39]]), 0x1234);
    checksums_verify(&back);
    assert_eq!(d.counters().total_drops(), 0, "{:?}", d.counters());
}

#[test]
fn traffic_inside_the_cluster_and_replies_to_inbound_connections_keep_the_pod_address() {
    let s = world_node(false);
    let mut d = MemDriver::new(64, 64);
    // To another pool of the cluster, on another node: never translated.
    run(
        &mut d,
        &s,
        POD,
        &craft::tcp4(A_MAC, GW_MAC, A4, OTHER_POOL4, 40000, 80, 80),
        1,
    );
    let out = only(&mut d, UPLINK);
    assert_eq!(&out[0..6], &OTHER_NODE_MAC);
    assert_eq!(v4_src(&out), (A4, 40000));
    // A connection from the world to the pod (its CIDR routed to this node): the pod's
    // reply leaves with its own address.
    run(&mut d, &s, UPLINK, &from_world_tcp4(33000, A4, 8080), 2);
    assert_eq!(v4_dst(&only(&mut d, POD)), (A4, 8080));
    run(
        &mut d,
        &s,
        POD,
        &craft::tcp4(A_MAC, GW_MAC, A4, WORLD4, 8080, 33000, 80),
        3,
    );
    let out = only(&mut d, UPLINK);
    assert_eq!(v4_src(&out), (A4, 8080), "a reply is not translated");
    assert_eq!(&out[0..6], &ROUTER_MAC);
    assert_eq!(d.counters().total_drops(), 0, "{:?}", d.counters());
}

#[test]
fn the_node_reaches_an_isolated_pod_and_the_pod_reaches_the_node() {
    let s = world_node(true);
    let mut d = MemDriver::new(64, 64);
    // kubelet's probe: from the node's address, through weir0.
    run(&mut d, &s, HOST, &from_node_tcp4(45000, 8080), 1);
    let probe = only(&mut d, POD);
    assert_eq!(v4_dst(&probe), (A4, 8080));
    assert_eq!(v4_src(&probe), (NODE4, 45000), "not translated");
    run(&mut d, &s, POD, &to_node_tcp4(8080, 45000), 2);
    let reply = only(&mut d, HOST);
    assert_eq!(&reply[0..6], &HOST_PEER_MAC);
    assert_eq!(v4_dst(&reply), (NODE4, 45000));
    // The pod opens a connection to a service on the node's address.
    run(&mut d, &s, POD, &to_node_tcp4(41000, 6443), 3);
    assert_eq!(v4_src(&only(&mut d, HOST)), (A4, 41000));
    // Someone else on the uplink cannot reach the isolated pod.
    run(&mut d, &s, UPLINK, &from_world_tcp4(33000, A4, 8080), 4);
    assert_eq!(d.counters().dropped(DropReason::PolicyDeniedIngress), 1);
    assert_eq!(d.counters().total_drops(), 1, "{:?}", d.counters());
}

#[test]
fn with_host_to_pods_not_allowed_the_node_meets_the_pods_ingress_policy() {
    let s = world_node_where_the_host(true, false);
    let mut d = MemDriver::new(64, 64);
    run(&mut d, &s, HOST, &from_node_tcp4(45000, 8080), 1);
    assert!(d.take_tx(POD).is_empty(), "the probe reached the pod");
    assert_eq!(d.counters().dropped(DropReason::PolicyDeniedIngress), 1);
    // The pod still opens connections to the node (egress is open), and the node's
    // replies come back as replies of that flow.
    run(&mut d, &s, POD, &to_node_tcp4(41000, 6443), 2);
    assert_eq!(v4_src(&only(&mut d, HOST)), (A4, 41000));
    run(&mut d, &s, HOST, &from_node_tcp4(6443, 41000), 3);
    assert_eq!(v4_dst(&only(&mut d, POD)), (A4, 41000));
    assert_eq!(d.counters().total_drops(), 1, "{:?}", d.counters());
}

#[test]
fn two_workers_allocate_ports_that_steer_back_to_them() {
    let s = world_node(false);
    for worker in 0..2u16 {
        let mut d = MemDriver::new(64, 64);
        d.pipeline().set_worker(worker, 2);
        // The flows this worker owns (the others it would hand to their owner).
        let owned = (40000..40100)
            .filter(|&sport| {
                let key = weir_dataplane::flow::FlowKey {
                    src: weir_dataplane::flow::FlowKey::map_v4(A4.octets()),
                    dst: weir_dataplane::flow::FlowKey::map_v4(WORLD4.octets()),
                    src_port: sport,
                    dst_port: 53,
                    proto: 17,
                };
                weir_dataplane::node::steer::flow_owner(&key, false, 2) == worker
            })
            .take(10);
        for sport in owned {
            run(
                &mut d,
                &s,
                POD,
                &craft::udp4(A_MAC, GW_MAC, A4, WORLD4, sport, 53, 64),
                1,
            );
            let (_, port) = v4_src(&only(&mut d, UPLINK));
            assert_eq!(port % 2, worker, "port {port} from worker {worker}");
        }
        assert_eq!(d.pipeline().nat_table().len(), 10);
    }
}
