//! Two nodes' peer tables talking to each other in memory: handshake, data both ways,
//! queued packets released by the handshake, replay, garbage, tampering, a node speaking
//! for pods that are not its own, re-keying, peer set errors, and a handshake flood.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use weir_crypto::peers::{Opened, PeerConfig, PeerError, Peers, Sealed, WgDrop};
use weir_crypto::NodeKey;

const A_ADDR: &str = "198.18.100.1:51820";
const B_ADDR: &str = "198.18.100.2:51820";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An IPv4/UDP packet from `src` to `dst` with `len` payload bytes.
fn inner(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let total = 28 + len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let mut sum = 0u32;
    for c in p[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + len) as u16).to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn config(name: &str, key: &NodeKey, endpoint: &str, pods: &str) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        public_key: key.public(),
        endpoint: addr(endpoint),
        allowed_ips: vec![pods.parse().unwrap()],
        persistent_keepalive: None,
    }
}

struct Pair {
    a: Peers,
    b: Peers,
    a_key: NodeKey,
    b_key: NodeKey,
}

fn pair() -> Pair {
    let (a_key, b_key) = (NodeKey::from_bytes([1; 32]), NodeKey::from_bytes([2; 32]));
    let mut a = Peers::new(a_key.clone(), 100);
    let mut b = Peers::new(b_key.clone(), 100);
    a.set_peers(vec![config("b", &b_key, B_ADDR, "198.18.2.0/24")])
        .unwrap();
    b.set_peers(vec![config("a", &a_key, A_ADDR, "198.18.1.0/24")])
        .unwrap();
    Pair { a, b, a_key, b_key }
}

/// Sends `packet` from a to b, completing a handshake first if needed; returns the inner
/// packet b delivered.
fn a_to_b(p: &mut Pair, packet: &[u8]) -> Vec<u8> {
    let id =
        p.a.route(IpAddr::from([198, 18, 2, 7]))
            .expect("route to b's pods");
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let first = match p.a.seal(id, packet, &mut buf) {
        Sealed::Message(m) => m.to_vec(),
        Sealed::Handshake(init) => {
            let init = init.to_vec();
            let response = match p.b.open(addr(A_ADDR), &init, &mut out) {
                Opened::Reply { message, .. } => message.to_vec(),
                other => panic!("b answers the initiation: {other:?}"),
            };
            let keepalive = match p.a.open(addr(B_ADDR), &response, &mut out) {
                Opened::Reply { peer, message, .. } => {
                    assert_eq!(peer, Some(id));
                    message.to_vec()
                }
                other => panic!("a confirms with a keepalive: {other:?}"),
            };
            assert!(matches!(
                p.b.open(addr(A_ADDR), &keepalive, &mut out),
                Opened::Nothing
            ));
            p.a.flush(id, &mut buf).expect("the queued packet").to_vec()
        }
        other => panic!("seal: {other:?}"),
    };
    match p.b.open(addr(A_ADDR), &first, &mut out) {
        Opened::Packet { packet, .. } => packet.to_vec(),
        other => panic!("b opens the data: {other:?}"),
    }
}

#[test]
fn a_handshake_then_data_both_ways() {
    let mut p = pair();
    let pkt = inner([198, 18, 1, 5], [198, 18, 2, 7], 100);
    assert_eq!(
        a_to_b(&mut p, &pkt),
        pkt,
        "the queued packet arrives intact"
    );
    let pkt2 = inner([198, 18, 1, 5], [198, 18, 2, 7], 1400);
    assert_eq!(
        a_to_b(&mut p, &pkt2),
        pkt2,
        "then directly, without a handshake"
    );
    // b answers over the same session.
    let back = inner([198, 18, 2, 7], [198, 18, 1, 5], 64);
    let id = p.b.route(IpAddr::from([198, 18, 1, 5])).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let m = match p.b.seal(id, &back, &mut buf) {
        Sealed::Message(m) => m.to_vec(),
        other => panic!("b has a session: {other:?}"),
    };
    assert_eq!(m.len(), back.len() + 32, "header and tag");
    match p.a.open(addr(B_ADDR), &m, &mut out) {
        Opened::Packet { packet, .. } => assert_eq!(packet, &back[..]),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.a.counters().handshake_initiations, 1);
    assert_eq!(p.b.counters().opened, 2);
}

#[test]
fn replays_garbage_and_tampering_are_counted_drops() {
    let mut p = pair();
    let pkt = inner([198, 18, 1, 5], [198, 18, 2, 7], 200);
    a_to_b(&mut p, &pkt);
    let id = p.a.route(IpAddr::from([198, 18, 2, 7])).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let m = match p.a.seal(id, &pkt, &mut buf) {
        Sealed::Message(m) => m.to_vec(),
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        p.b.open(addr(A_ADDR), &m, &mut out),
        Opened::Packet { .. }
    ));
    assert!(matches!(
        p.b.open(addr(A_ADDR), &m, &mut out),
        Opened::Dropped(WgDrop::Replay)
    ));
    let mut tampered = match p.a.seal(id, &pkt, &mut buf) {
        Sealed::Message(m) => m.to_vec(),
        other => panic!("{other:?}"),
    };
    tampered[40] ^= 0x80;
    assert!(matches!(
        p.b.open(addr(A_ADDR), &tampered, &mut out),
        Opened::Dropped(WgDrop::Unauthenticated)
    ));
    for garbage in [&b""[..], &[4u8, 0, 0][..], &[9u8; 100][..], &[1u8; 148][..]] {
        assert!(
            matches!(
                p.b.open(addr(A_ADDR), garbage, &mut out),
                Opened::Dropped(_)
            ),
            "{garbage:?}"
        );
    }
    let c = p.b.counters();
    assert_eq!(c.replayed, 1);
    assert!(c.unauthenticated >= 1);
    assert!(c.malformed + c.unauthenticated >= 4, "{c:?}");
}

#[test]
fn a_node_cannot_speak_for_another_nodes_pods() {
    let mut p = pair();
    a_to_b(&mut p, &inner([198, 18, 1, 5], [198, 18, 2, 7], 10));
    // a seals a packet whose source is in 198.18.3.0/24, which b does not allow from a.
    let forged = inner([198, 18, 3, 9], [198, 18, 2, 7], 10);
    let id = p.a.route(IpAddr::from([198, 18, 2, 7])).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let m = match p.a.seal(id, &forged, &mut buf) {
        Sealed::Message(m) => m.to_vec(),
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        p.b.open(addr(A_ADDR), &m, &mut out),
        Opened::Dropped(WgDrop::NotAllowed)
    ));
    assert_eq!(p.b.counters().not_allowed, 1);
}

#[test]
fn a_changed_key_re_keys_without_losing_the_peer() {
    let mut p = pair();
    let pkt = inner([198, 18, 1, 5], [198, 18, 2, 7], 50);
    a_to_b(&mut p, &pkt);
    // a gets a new key; b learns it from the datastore.
    let new_a = NodeKey::from_bytes([3; 32]);
    p.a.set_key(new_a.clone());
    p.b.set_peers(vec![config("a", &new_a, A_ADDR, "198.18.1.0/24")])
        .unwrap();
    p.a_key = new_a;
    assert_eq!(
        a_to_b(&mut p, &pkt),
        pkt,
        "a new handshake with the new key"
    );
    // An unknown key is refused at the handshake.
    let stranger_key = NodeKey::from_bytes([9; 32]);
    let mut stranger = Peers::new(stranger_key, 100);
    stranger
        .set_peers(vec![config("b", &p.b_key, B_ADDR, "198.18.2.0/24")])
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let init = match stranger.seal(0, &pkt, &mut buf) {
        Sealed::Handshake(m) => m.to_vec(),
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        p.b.open(addr("198.18.100.9:51820"), &init, &mut out),
        Opened::Dropped(WgDrop::UnknownPeer)
    ));
}

#[test]
fn bad_peer_sets_are_refused_and_the_old_one_kept() {
    let mut p = pair();
    let c = config(
        "c",
        &NodeKey::from_bytes([5; 32]),
        "198.18.100.3:51820",
        "198.18.2.128/25",
    );
    let b = config("b", &p.b_key, B_ADDR, "198.18.2.0/24");
    assert!(matches!(
        p.a.set_peers(vec![b.clone(), c]),
        Err(PeerError::Overlap(..))
    ));
    assert!(matches!(
        p.a.set_peers(vec![b.clone(), b.clone()]),
        Err(PeerError::DuplicateKey(..))
    ));
    let own = config("me", &p.a_key, A_ADDR, "198.18.9.0/24");
    assert!(matches!(
        p.a.set_peers(vec![own]),
        Err(PeerError::OwnKey(_))
    ));
    assert_eq!(p.a.list().len(), 1, "the old set is still in force");
    assert!(p
        .a
        .route(IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1)))
        .is_some());
    assert!(p
        .a
        .route(IpAddr::V4(Ipv4Addr::new(198, 18, 7, 1)))
        .is_none());
}

#[test]
fn a_handshake_flood_gets_cookies_while_data_keeps_flowing() {
    let mut p = pair();
    let pkt = inner([198, 18, 1, 5], [198, 18, 2, 7], 100);
    a_to_b(&mut p, &pkt);
    // Strangers flood b with initiations (valid MAC1 for b's key, unknown senders).
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let mut cookies = 0;
    for i in 0..400u32 {
        let mut s = Peers::new(NodeKey::from_bytes([(i % 200 + 20) as u8; 32]), 100);
        s.set_peers(vec![config("b", &p.b_key, B_ADDR, "198.18.2.0/24")])
            .unwrap();
        let init = match s.seal(0, &pkt, &mut buf) {
            Sealed::Handshake(m) => m.to_vec(),
            other => panic!("{other:?}"),
        };
        if let Opened::Reply { peer: None, .. } =
            p.b.open(addr("198.18.100.50:51820"), &init, &mut out)
        {
            cookies += 1;
        }
    }
    assert!(cookies > 0, "under load, initiations get cookie replies");
    assert!(p.b.counters().cookie_replies > 0);
    // a's data still opens during the flood.
    assert_eq!(a_to_b(&mut p, &pkt), pkt);
    p.b.reset_handshake_budget();
}
