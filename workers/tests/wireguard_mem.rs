//! WireGuard between two nodes in memory: two in-memory drivers, each a node with one pod
//! and an uplink, their uplinks joined by this test. The handshake, sealing with the
//! adjacency's peer, opening, the snapshot's peer table and every frame's accounting are
//! exercised without a kernel.

use std::net::{Ipv4Addr, SocketAddr};

use weir_crypto::NodeKey;
use weir_dataplane::craft;
use weir_dataplane::snapshot::{Mac, NextHop, PeerSpec, PodSpec, Prefix, Tunnel};
use weir_dataplane::wire::wireguard::outer;
use weir_dataplane::{DropReason, IfIndex, Snapshot, SnapshotBuilder};
use weir_workers::MemDriver;

const GW: Mac = [0xee; 6];
const POD: IfIndex = 0;
const UPLINK: IfIndex = 1;
const PORT: u16 = 51820;

struct Node {
    pod_mac: Mac,
    pod_ip: Ipv4Addr,
    uplink_mac: Mac,
    underlay: Ipv4Addr,
    pods: &'static str,
    key: NodeKey,
}

fn node_a() -> Node {
    Node {
        pod_mac: [2, 0, 0, 0, 0, 0x0a],
        pod_ip: Ipv4Addr::new(198, 18, 10, 5),
        uplink_mac: [2, 0, 0, 0, 1, 0x0a],
        underlay: Ipv4Addr::new(198, 18, 250, 1),
        pods: "198.18.10.0/24",
        key: NodeKey::from_bytes([0x41; 32]),
    }
}

fn node_b() -> Node {
    Node {
        pod_mac: [2, 0, 0, 0, 0, 0x0b],
        pod_ip: Ipv4Addr::new(198, 18, 11, 5),
        uplink_mac: [2, 0, 0, 0, 1, 0x0b],
        underlay: Ipv4Addr::new(198, 18, 250, 2),
        pods: "198.18.11.0/24",
        key: NodeKey::from_bytes([0x42; 32]),
    }
}

/// `me`'s snapshot: its pod, its uplink, and `other` behind it over WireGuard (with a peer
/// when `peer` is set).
fn snapshot(me: &Node, other: &Node, generation: u64, peer: bool) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    b.pod(PodSpec {
        namespace: "demo".into(),
        name: "pod".into(),
        interface: "veth0".into(),
        gateway_mac: GW,
        mac: me.pod_mac,
        ipv4: Some(me.pod_ip),
        ipv6: None,
        mtu: 1440,
    })
    .unwrap();
    assert_eq!(b.uplink("up0", me.uplink_mac, 1500).unwrap(), UPLINK);
    let n = b.node("other", other.underlay.into(), Some(other.uplink_mac));
    let pods: Prefix = other.pods.parse().unwrap();
    b.route(
        pods,
        NextHop::Remote {
            node: n,
            tunnel: Tunnel::WireGuard,
        },
    );
    b.wireguard(SocketAddr::new(me.underlay.into(), PORT));
    if peer {
        b.peer(PeerSpec {
            node: n,
            name: "other".into(),
            public_key: *other.key.public().as_bytes(),
            endpoint: SocketAddr::new(other.underlay.into(), PORT),
            allowed_ips: vec![pods],
            persistent_keepalive: None,
        });
    }
    b.build(generation).unwrap()
}

fn driver(node: &Node) -> MemDriver {
    let mut d = MemDriver::new(64, 64);
    d.enable_wireguard(node.key.clone());
    d
}

fn udp(from: &Node, to: &Node, payload_len: usize) -> Vec<u8> {
    let mut f = craft::udp4(
        from.pod_mac,
        GW,
        from.pod_ip,
        to.pod_ip,
        4000,
        5201,
        42 + payload_len,
    );
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = (i * 13) as u8;
    }
    // The payload changed: the UDP checksum is optional for IPv4, leave it out.
    f[40..42].copy_from_slice(&[0, 0]);
    f
}

/// Carries every frame one node's uplink sent to the other's, for a few rounds, until
/// nothing is left in flight; returns the frames each uplink sent.
fn shuttle(
    a: &mut MemDriver,
    sa: &Snapshot,
    b: &mut MemDriver,
    sb: &Snapshot,
    now: u64,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut all_a, mut all_b) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        let from_a = a.take_tx(UPLINK);
        let from_b = b.take_tx(UPLINK);
        if from_a.is_empty() && from_b.is_empty() {
            break;
        }
        for f in &from_a {
            b.inject(UPLINK, f).unwrap();
        }
        for f in &from_b {
            a.inject(UPLINK, f).unwrap();
        }
        b.run(sb, now);
        a.run(sa, now);
        all_a.extend(from_a);
        all_b.extend(from_b);
    }
    (all_a, all_b)
}

fn accounted(d: &mut MemDriver) {
    d.complete_all();
    d.check_accounting().unwrap();
    d.counters().check_accounting().unwrap();
}

#[test]
fn a_packet_crosses_two_nodes_sealed_after_a_handshake_and_every_frame_is_accounted() {
    let (na, nb) = (node_a(), node_b());
    let (sa, sb) = (snapshot(&na, &nb, 1, true), snapshot(&nb, &na, 1, true));
    let (mut a, mut b) = (driver(&na), driver(&nb));
    let now = 1_000_000_000;

    let packet = udp(&na, &nb, 200);
    a.inject(POD, &packet).unwrap();
    a.run(&sa, now);
    assert_eq!(
        a.counters().consumed,
        1,
        "the packet waits for the handshake"
    );
    let (from_a, from_b) = shuttle(&mut a, &sa, &mut b, &sb, now);

    // Nothing left the uplinks in clear: every frame is WireGuard between the underlays.
    for f in from_a.iter().chain(&from_b) {
        let o = outer::parse(f, PORT).expect("only WireGuard on the underlay");
        assert!(
            weir_dataplane::wire::wireguard::parse(o.message).is_ok(),
            "a framed WireGuard message"
        );
        assert!([na.underlay, nb.underlay]
            .iter()
            .any(|u| o.src.ip() == std::net::IpAddr::V4(*u)));
    }
    // Handshake initiation, its response, then the confirming keepalive and the data.
    assert!(
        from_a.len() >= 3 && !from_b.is_empty(),
        "{} / {}",
        from_a.len(),
        from_b.len()
    );

    let delivered = b.take_tx(POD);
    assert_eq!(
        delivered.len(),
        1,
        "b's pod received the packet: {:?}",
        b.counters()
    );
    let got = &delivered[0];
    assert_eq!(&got[0..6], &nb.pod_mac, "to b's pod");
    assert_eq!(&got[6..12], &GW, "from the gateway");
    assert_eq!(
        got[14 + 8],
        packet[14 + 8] - 2,
        "TTL decremented by each node's routing"
    );
    assert_eq!(
        &got[34..],
        &packet[34..],
        "the UDP header and payload arrive intact"
    );

    let wg = a.wireguard().unwrap().counters();
    assert_eq!((wg.sealed, wg.peer_updates), (1, 1), "{wg:?}");
    assert_eq!(b.wireguard().unwrap().counters().opened, 1);

    // Once the session is up, the next packet is sealed at once.
    a.inject(POD, &udp(&na, &nb, 1000)).unwrap();
    a.run(&sa, now);
    let sealed = a.take_tx(UPLINK);
    assert_eq!(sealed.len(), 1);
    assert_eq!(sealed[0].len(), 14 + 20 + 8 + 16 + (20 + 8 + 1000) + 16);
    b.inject(UPLINK, &sealed[0]).unwrap();
    b.run(&sb, now);
    assert_eq!(b.take_tx(POD).len(), 1);

    for d in [&mut a, &mut b] {
        accounted(d);
        assert_eq!(d.counters().total_drops(), 0, "{:?}", d.counters());
    }
}

#[test]
fn peers_follow_the_snapshot_and_a_node_without_one_is_never_reached_in_clear() {
    let (na, nb) = (node_a(), node_b());
    let (sa, sb) = (snapshot(&na, &nb, 1, true), snapshot(&nb, &na, 1, true));
    let (mut a, mut b) = (driver(&na), driver(&nb));
    let now = 1_000_000_000;
    a.inject(POD, &udp(&na, &nb, 64)).unwrap();
    a.run(&sa, now);
    shuttle(&mut a, &sa, &mut b, &sb, now);
    assert_eq!(b.take_tx(POD).len(), 1);

    // A new generation with the same peer: its session stays, the next packet is sealed
    // at once.
    let same = snapshot(&na, &nb, 2, true);
    a.inject(POD, &udp(&na, &nb, 64)).unwrap();
    a.run(&same, now);
    let sent = a.take_tx(UPLINK);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        outer::parse(&sent[0], PORT).unwrap().message[0],
        4,
        "a data message"
    );
    assert_eq!(
        a.wireguard().unwrap().counters().peer_updates,
        1,
        "nothing to re-apply"
    );

    // The next generation has no peer for b: its route drops, nothing leaves in clear.
    let without = snapshot(&na, &nb, 3, false);
    a.inject(POD, &udp(&na, &nb, 64)).unwrap();
    a.run(&without, now);
    assert!(a.take_tx(UPLINK).is_empty());
    assert_eq!(a.counters().dropped(DropReason::WireguardNoPeer), 1);

    // The peer comes back: it was forgotten, so a new handshake starts.
    let again = snapshot(&na, &nb, 4, true);
    a.inject(POD, &udp(&na, &nb, 64)).unwrap();
    a.run(&again, now);
    let sent = a.take_tx(UPLINK);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        outer::parse(&sent[0], PORT).unwrap().message[0],
        1,
        "a handshake"
    );
    assert_eq!(a.wireguard().unwrap().counters().peer_updates, 3);
    accounted(&mut a);
    accounted(&mut b);
}

#[test]
fn wireguard_for_another_address_or_port_is_left_to_the_pipeline() {
    let (na, nb) = (node_a(), node_b());
    let sa = snapshot(&na, &nb, 1, true);
    let mut a = driver(&na);
    // To another port on this node: not WireGuard, the pipeline routes it (no route).
    let other_port = craft::udp4(
        nb.uplink_mac,
        na.uplink_mac,
        nb.underlay,
        na.underlay,
        PORT,
        PORT + 1,
        100,
    );
    a.inject(UPLINK, &other_port).unwrap();
    a.run(&sa, 1);
    let c = a.counters();
    assert_eq!(c.rx, 1);
    assert_eq!(c.consumed + c.dropped(DropReason::WireguardRejected), 0);
    accounted(&mut a);
}
