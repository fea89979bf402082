//! One trigger per drop reason through the in-memory driver (a reason no frame can reach
//! fails here), frames accounted over a million packets, and arbitrary frames never
//! breaking the accounting.

use std::net::Ipv6Addr;

use proptest::prelude::*;
use weir_crypto::NodeKey;
use weir_dataplane::craft;
use weir_dataplane::{DropReason, IfIndex};
use weir_workers::handoff::mesh;
use weir_workers::MemDriver;

mod common;
use common::node::*;

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
