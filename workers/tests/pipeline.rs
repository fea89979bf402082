//! The pipeline driven through the in-memory driver, frame in, frame out: forwarding, the
//! gateway responders, ICMP errors, anti-spoofing, partial checksums, extension headers
//! and conntrack. One trigger per drop reason is `drops.rs`.

use std::net::Ipv6Addr;
use std::sync::Arc;

use weir_dataplane::craft;
use weir_dataplane::policy::program::{Match, PortMatch};
use weir_dataplane::policy::{
    Action, Direction, EndpointPolicy, PolicyTables, Program, Rule, RuleInfo, Sets, Tier, TierEnd,
};
use weir_dataplane::snapshot::IcmpConfig;
use weir_dataplane::wire::checksum;
use weir_dataplane::{DropReason, IcmpErrorKind, Snapshot, SnapshotBuilder};
use weir_workers::MemDriver;

mod common;
use common::node::*;

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
        warm_pays: Default::default(),
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
