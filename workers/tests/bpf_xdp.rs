//! The XDP program layer: the programs through the verifier and `BPF_PROG_TEST_RUN` on
//! crafted frames, and attach/detach on a veth inside a network namespace of its own
//! (root). The assembler is tested in `bpf_asm.rs`.
//!
//! Classification is observed with `XdpProgram::uplink_with_miss_action(.., MissAction::Tx)`
//! over an empty XSKMAP: "to weir" returns XDP_TX, "to the kernel" XDP_PASS (see the
//! module documentation of `weir_workers::bpf`). The production programs are also run
//! with an AF_XDP socket in the map, where "to weir" returns XDP_REDIRECT.
//!
//! Tests that need root have `root` in their name and fail with a clear message without it.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use proptest::prelude::*;
use weir_testkit::lab::{in_netns, ip, NetnsGuard};
use weir_workers::bpf::{
    ifindex, AttachMode, BpfError, Insn, MissAction, SlotMap, SnatMatch, UplinkFilter, XdpLink,
    XdpProgram, XskMap, VXLAN_PORT, WIREGUARD_PORT, XDP_PASS, XDP_REDIRECT, XDP_TX,
};

// ---------------------------------------------------------------------------------------
// Errors

#[test]
fn ifindex_of_a_missing_interface_is_a_clear_error() {
    let err = ifindex("wb-no-such-if").unwrap_err();
    assert!(matches!(err, BpfError::NoSuchInterface { .. }), "{err}");
    assert!(err.to_string().contains("wb-no-such-if"));
    assert!(matches!(
        ifindex("bad\0name"),
        Err(BpfError::NoSuchInterface { .. })
    ));
}

#[test]
fn root_oversized_uplink_filter_is_a_clear_error() {
    require_root("root_oversized_uplink_filter_is_a_clear_error");
    let map = XskMap::new(1).expect("XSKMAP");
    let filter = UplinkFilter {
        v4: vec![(Ipv4Addr::new(198, 18, 0, 0), 24); 17],
        ..Default::default()
    };
    let err = XdpProgram::uplink(&map, &filter).unwrap_err();
    assert!(
        matches!(
            err,
            BpfError::FilterTooLarge {
                count: 17,
                max: 16,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("IPv4 prefixes"), "{err}");
    let filter = UplinkFilter {
        v6: vec![(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 129)],
        ..Default::default()
    };
    let err = XdpProgram::uplink(&map, &filter).unwrap_err();
    assert!(err.to_string().contains("2001:db8::/129"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Frames

const POD4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 16);
const POD4_HOST: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 200, 7), 32);
const POD6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0, 0, 0, 0, 0), 48);
const POD6_ODD: (Ipv6Addr, u8) = (
    Ipv6Addr::new(0x2001, 0xdb8, 0x2, 0x8000, 0x8000, 0, 0, 0),
    65,
);
const NODE4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);

const TCP: u8 = 6;
const UDP: u8 = 17;

fn filter() -> UplinkFilter {
    UplinkFilter {
        v4: vec![POD4, POD4_HOST],
        v6: vec![POD6, POD6_ODD],
        udp_ports: vec![WIREGUARD_PORT, VXLAN_PORT],
        snat: Vec::new(),
    }
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    f.extend(ethertype.to_be_bytes());
    f
}

fn vlan(f: Vec<u8>, vid: u16) -> Vec<u8> {
    let mut out = f[..12].to_vec();
    out.extend(0x8100u16.to_be_bytes());
    out.extend(vid.to_be_bytes());
    out.extend(&f[12..]);
    out
}

/// Ethernet + IPv4 (with `options` 32-bit words of options) + transport header stub.
fn ipv4(dst: Ipv4Addr, proto: u8, dport: u16, options: u8, frag_off: u16) -> Vec<u8> {
    let mut f = eth(0x0800);
    let ihl = 5 + options;
    let total = u16::from(ihl) * 4 + 8 + 4;
    f.extend([0x40 | ihl, 0]);
    f.extend(total.to_be_bytes());
    f.extend([0, 1]);
    f.extend(frag_off.to_be_bytes());
    f.extend([64, proto, 0, 0]);
    f.extend(PEER4.octets());
    f.extend(dst.octets());
    f.extend(std::iter::repeat_n(1u8, usize::from(options) * 4)); // NOPs
    f.extend(40000u16.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0, 12, 0, 0]);
    f.extend([0xde, 0xad, 0xbe, 0xef]);
    f
}

fn ipv6(dst: Ipv6Addr, next: u8, dport: u16) -> Vec<u8> {
    let mut f = eth(0x86dd);
    f.extend([0x60, 0, 0, 0]);
    f.extend(12u16.to_be_bytes());
    f.extend([next, 64]);
    f.extend(PEER6.octets());
    f.extend(dst.octets());
    f.extend(40000u16.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0, 12, 0, 0]);
    f.extend([0xde, 0xad, 0xbe, 0xef]);
    f
}

fn arp() -> Vec<u8> {
    let mut f = eth(0x0806);
    f.extend([0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend([0x02, 0, 0, 0, 0, 0x02]);
    f.extend(PEER4.octets());
    f.extend([0; 6]);
    f.extend(NODE4.octets());
    f
}

/// The SNAT range of the tests (the agent's default is 61000..=65535; a narrower one has
/// a port above it).
const SNAT_FIRST: u16 = 61000;
const SNAT_LAST: u16 = 62000;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn snat(addr: IpAddr, ports: std::ops::RangeInclusive<u16>) -> SnatMatch {
    SnatMatch { addr, ports }
}

/// [`filter`] with the SNAT matches of NODE4 and NODE6.
fn snat_filter() -> UplinkFilter {
    UplinkFilter {
        snat: vec![
            snat(IpAddr::V4(NODE4), SNAT_FIRST..=SNAT_LAST),
            snat(IpAddr::V6(NODE6), SNAT_FIRST..=SNAT_LAST),
        ],
        ..filter()
    }
}

/// Ethernet + IPv4 + an ICMP echo message (type, code 0, checksum, identifier, sequence).
fn icmp4(dst: Ipv4Addr, kind: u8, id: u16) -> Vec<u8> {
    let mut f = ipv4(dst, ICMP, 0, 0, 0);
    let l4 = 14 + 20;
    f[l4..l4 + 8].copy_from_slice(&[kind, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1]);
    f
}

/// Ethernet + IPv6 + an ICMPv6 echo message.
fn icmp6(dst: Ipv6Addr, kind: u8, id: u16) -> Vec<u8> {
    let mut f = ipv6(dst, ICMPV6, 0);
    let l4 = 14 + 40;
    f[l4..l4 + 8].copy_from_slice(&[kind, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1]);
    f
}

/// IPv6 with a hop-by-hop options header (8 bytes) before `next`.
fn ipv6_hop_by_hop(dst: Ipv6Addr, next: u8, dport: u16) -> Vec<u8> {
    let mut f = ipv6(dst, 0, 0);
    let l4 = 14 + 40;
    f.truncate(l4);
    f.extend([next, 0, 1, 4, 0, 0, 0, 0]); // next header, length 0, PadN
    f.extend(40000u16.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0, 12, 0, 0]);
    f
}

// ---------------------------------------------------------------------------------------
// Root helpers

fn require_root(test: &str) {
    weir_testkit::lab::require_root(&format!(
        "{test} (CAP_BPF, CAP_NET_ADMIN, network namespaces)"
    ));
}

/// An AF_XDP socket, unbound: enough for the XSKMAP to accept it.
fn xdp_socket() -> OwnedFd {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "socket(AF_XDP): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn classifier() -> (XskMap, XdpProgram) {
    let map = XskMap::new(4).expect("XSKMAP");
    let prog = XdpProgram::uplink_with_miss_action(&map, &filter(), MissAction::Tx)
        .unwrap_or_else(|e| panic!("{e}"));
    (map, prog)
}

fn run(prog: &XdpProgram, frame: &[u8]) -> u32 {
    prog.test_run(frame).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------
// Programs through the verifier and BPF_PROG_TEST_RUN (root)

#[test]
fn root_both_programs_pass_the_verifier() {
    require_root("root_both_programs_pass_the_verifier");
    let map = XskMap::new(64).expect("XSKMAP");
    let all = XdpProgram::redirect_all(&map).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        all.instructions(),
        6,
        "5 instructions, the map load takes two slots"
    );
    let up = XdpProgram::uplink(&map, &filter()).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "redirect_all: {} slots, uplink (2+2 prefixes, 2 ports): {} slots",
        all.instructions(),
        up.instructions()
    );
    let full = UplinkFilter {
        v4: (0..16)
            .map(|i| (Ipv4Addr::new(198, 18, i, 0), 24))
            .collect(),
        v6: (0..16)
            .map(|i| (Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 0), 127))
            .collect(),
        udp_ports: vec![51820, 4789, 8472, 6081],
        snat: vec![
            snat(IpAddr::V4(NODE4), SNAT_FIRST..=SNAT_LAST),
            snat(IpAddr::V4(PEER4), 1..=2),
            snat(IpAddr::V6(NODE6), SNAT_FIRST..=SNAT_LAST),
            snat(IpAddr::V6(PEER6), 1..=2),
        ],
    };
    let big = XdpProgram::uplink(&map, &full).unwrap_or_else(|e| panic!("{e}"));
    let empty =
        XdpProgram::uplink(&map, &UplinkFilter::default()).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "uplink at the limits (16+16 prefixes, 4 ports, 2+2 SNAT addresses): {} slots, \
         empty filter: {} slots",
        big.instructions(),
        empty.instructions()
    );
    assert_eq!(
        run(&empty, &ipv4(POD4.0, UDP, WIREGUARD_PORT, 0, 0)),
        XDP_PASS
    );

    // A /0 prefix makes the rest of its family unreachable; the builder leaves it out
    // (the verifier refuses unreachable instructions).
    let v4_all = UplinkFilter {
        v4: vec![POD4, (Ipv4Addr::UNSPECIFIED, 0)],
        v6: vec![POD6],
        udp_ports: vec![WIREGUARD_PORT],
        snat: vec![snat(IpAddr::V4(NODE4), SNAT_FIRST..=SNAT_LAST)],
    };
    let prog = XdpProgram::uplink_with_miss_action(&map, &v4_all, MissAction::Tx)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&prog, &ipv4(NODE4, TCP, 22, 0, 0)), XDP_TX);
    assert_eq!(run(&prog, &ipv6(NODE6, TCP, 22)), XDP_PASS);
    assert_eq!(run(&prog, &ipv6(NODE6, UDP, WIREGUARD_PORT)), XDP_TX);
    assert_eq!(run(&prog, &arp()), XDP_PASS);
    let v6_all = UplinkFilter {
        v6: vec![(Ipv6Addr::UNSPECIFIED, 0)],
        ..Default::default()
    };
    let prog = XdpProgram::uplink_with_miss_action(&map, &v6_all, MissAction::Tx)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&prog, &ipv6(NODE6, TCP, 22)), XDP_TX);
    assert_eq!(
        run(&prog, &ipv4(POD4.0, UDP, WIREGUARD_PORT, 0, 0)),
        XDP_PASS
    );
}

#[test]
fn root_verifier_rejection_carries_the_log() {
    require_root("root_verifier_rejection_carries_the_log");
    // Returns r0 without ever writing it.
    let err = XdpProgram::load("weir_bad", &[Insn::exit()]).unwrap_err();
    let BpfError::Load { errno, log, .. } = &err else {
        panic!("expected a load error, got {err}");
    };
    assert_eq!(errno.0, libc::EACCES, "{err}");
    assert!(log.contains("R0 !read_ok"), "verifier log missing: {err}");
    assert!(err.to_string().contains("weir_bad"));
}

#[test]
fn root_uplink_classifies_crafted_frames() {
    require_root("root_uplink_classifies_crafted_frames");
    let (_map, prog) = classifier();
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "IPv4 TCP to a pod prefix",
            ipv4(Ipv4Addr::new(198, 18, 3, 4), TCP, 80, 0, 0),
            XDP_TX,
        ),
        (
            "IPv4 to the /32 pod",
            ipv4(POD4_HOST.0, TCP, 443, 0, 0),
            XDP_TX,
        ),
        (
            "IPv4 next to the /32 pod",
            ipv4(Ipv4Addr::new(198, 19, 200, 8), TCP, 443, 0, 0),
            XDP_PASS,
        ),
        (
            "IPv4 TCP to the node (SSH)",
            ipv4(NODE4, TCP, 22, 0, 0),
            XDP_PASS,
        ),
        (
            "IPv4 UDP 51820 to the node",
            ipv4(NODE4, UDP, WIREGUARD_PORT, 0, 0),
            XDP_TX,
        ),
        (
            "IPv4 UDP 4789 to the node",
            ipv4(NODE4, UDP, VXLAN_PORT, 0, 0),
            XDP_TX,
        ),
        (
            "IPv4 UDP 53 to the node",
            ipv4(NODE4, UDP, 53, 0, 0),
            XDP_PASS,
        ),
        (
            "IPv4 TCP 51820 to the node",
            ipv4(NODE4, TCP, WIREGUARD_PORT, 0, 0),
            XDP_PASS,
        ),
        (
            "IPv4 with options, UDP 51820",
            ipv4(NODE4, UDP, WIREGUARD_PORT, 3, 0),
            XDP_TX,
        ),
        (
            "IPv4 with options, UDP 53",
            ipv4(NODE4, UDP, 53, 3, 0),
            XDP_PASS,
        ),
        (
            "IPv4 first fragment UDP 51820",
            ipv4(NODE4, UDP, WIREGUARD_PORT, 0, 0x2000),
            XDP_TX,
        ),
        (
            "IPv4 later fragment, port bytes 51820",
            ipv4(NODE4, UDP, WIREGUARD_PORT, 0, 0x0010),
            XDP_PASS,
        ),
        (
            "IPv4 later fragment to a pod",
            ipv4(Ipv4Addr::new(198, 18, 9, 9), UDP, 1, 0, 0x0010),
            XDP_TX,
        ),
        ("ARP", arp(), XDP_PASS),
        (
            "IPv6 to a pod prefix",
            ipv6(Ipv6Addr::new(0x2001, 0xdb8, 1, 7, 0, 0, 0, 9), TCP, 80),
            XDP_TX,
        ),
        (
            "IPv6 to the /65 pod",
            ipv6(
                Ipv6Addr::new(0x2001, 0xdb8, 2, 0x8000, 0xffff, 0, 0, 1),
                TCP,
                80,
            ),
            XDP_TX,
        ),
        (
            "IPv6 beside the /65 pod",
            ipv6(
                Ipv6Addr::new(0x2001, 0xdb8, 2, 0x8000, 0x7fff, 0, 0, 1),
                TCP,
                80,
            ),
            XDP_PASS,
        ),
        ("IPv6 TCP to the node", ipv6(NODE6, TCP, 22), XDP_PASS),
        (
            "IPv6 UDP 51820 to the node",
            ipv6(NODE6, UDP, WIREGUARD_PORT),
            XDP_TX,
        ),
        ("IPv6 UDP 53 to the node", ipv6(NODE6, UDP, 53), XDP_PASS),
        (
            "VLAN IPv4 to a pod prefix",
            vlan(ipv4(Ipv4Addr::new(198, 18, 1, 1), TCP, 80, 0, 0), 7),
            XDP_TX,
        ),
        (
            "VLAN IPv4 UDP 4789 to the node",
            vlan(ipv4(NODE4, UDP, VXLAN_PORT, 0, 0), 7),
            XDP_TX,
        ),
        (
            "VLAN IPv4 TCP to the node",
            vlan(ipv4(NODE4, TCP, 22, 0, 0), 7),
            XDP_PASS,
        ),
        (
            "VLAN IPv6 to a pod prefix",
            vlan(ipv6(POD6.0, TCP, 80), 7),
            XDP_TX,
        ),
        ("VLAN ARP", vlan(arp(), 7), XDP_PASS),
    ];
    let mut failures = Vec::new();
    for (name, frame, want) in &cases {
        let got = run(&prog, frame);
        if got != *want {
            failures.push(format!("{name}: got {got}, want {want}"));
        }
    }
    assert!(
        failures.is_empty(),
        "misclassified:\n{}",
        failures.join("\n")
    );
}

#[test]
fn root_uplink_hands_replies_to_translated_flows_to_weir_and_the_rest_to_the_kernel() {
    require_root(
        "root_uplink_hands_replies_to_translated_flows_to_weir_and_the_rest_to_the_kernel",
    );
    let map = XskMap::new(4).expect("XSKMAP");
    let prog = XdpProgram::uplink_with_miss_action(&map, &snat_filter(), MissAction::Tx)
        .unwrap_or_else(|e| panic!("{e}"));
    let (below, above, inside) = (SNAT_FIRST - 1, SNAT_LAST + 1, SNAT_FIRST + 7);
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "v4 TCP to the first port",
            ipv4(NODE4, TCP, SNAT_FIRST, 0, 0),
            XDP_TX,
        ),
        (
            "v4 TCP to the last port",
            ipv4(NODE4, TCP, SNAT_LAST, 0, 0),
            XDP_TX,
        ),
        (
            "v4 TCP just below the range",
            ipv4(NODE4, TCP, below, 0, 0),
            XDP_PASS,
        ),
        (
            "v4 TCP just above the range",
            ipv4(NODE4, TCP, above, 0, 0),
            XDP_PASS,
        ),
        (
            "v4 TCP to the node's SSH",
            ipv4(NODE4, TCP, 22, 0, 0),
            XDP_PASS,
        ),
        (
            "v4 UDP in the range",
            ipv4(NODE4, UDP, inside, 0, 0),
            XDP_TX,
        ),
        ("v4 UDP just below", ipv4(NODE4, UDP, below, 0, 0), XDP_PASS),
        ("v4 UDP just above", ipv4(NODE4, UDP, above, 0, 0), XDP_PASS),
        (
            "v4 UDP to WireGuard still",
            ipv4(NODE4, UDP, WIREGUARD_PORT, 0, 0),
            XDP_TX,
        ),
        (
            "v4 TCP in the range, other address",
            ipv4(PEER4, TCP, inside, 0, 0),
            XDP_PASS,
        ),
        (
            "v4 other protocol, port bytes in the range",
            ipv4(NODE4, 47, inside, 0, 0),
            XDP_PASS,
        ),
        (
            "v4 with options, TCP in the range",
            ipv4(NODE4, TCP, inside, 3, 0),
            XDP_TX,
        ),
        (
            "v4 first fragment, UDP in the range",
            ipv4(NODE4, UDP, inside, 0, 0x2000),
            XDP_TX,
        ),
        (
            "v4 later fragment, port bytes in the range",
            ipv4(NODE4, UDP, inside, 0, 0x0010),
            XDP_PASS,
        ),
        (
            "v4 echo reply, id in the range",
            icmp4(NODE4, 0, inside),
            XDP_TX,
        ),
        (
            "v4 echo reply, id = last",
            icmp4(NODE4, 0, SNAT_LAST),
            XDP_TX,
        ),
        (
            "v4 echo reply, id just below",
            icmp4(NODE4, 0, below),
            XDP_PASS,
        ),
        (
            "v4 echo reply, id just above",
            icmp4(NODE4, 0, above),
            XDP_PASS,
        ),
        (
            "v4 echo request, id in the range",
            icmp4(NODE4, 8, inside),
            XDP_PASS,
        ),
        (
            "v4 destination unreachable",
            icmp4(NODE4, 3, inside),
            XDP_PASS,
        ),
        (
            "v4 echo reply to another address",
            icmp4(PEER4, 0, inside),
            XDP_PASS,
        ),
        (
            "v4 echo reply to a pod prefix",
            icmp4(Ipv4Addr::new(198, 18, 0, 9), 0, 1),
            XDP_TX,
        ),
        (
            "VLAN v4 TCP in the range",
            vlan(ipv4(NODE4, TCP, inside, 0, 0), 7),
            XDP_TX,
        ),
        (
            "VLAN v4 TCP below the range",
            vlan(ipv4(NODE4, TCP, below, 0, 0), 7),
            XDP_PASS,
        ),
        (
            "v6 TCP to the first port",
            ipv6(NODE6, TCP, SNAT_FIRST),
            XDP_TX,
        ),
        (
            "v6 TCP to the last port",
            ipv6(NODE6, TCP, SNAT_LAST),
            XDP_TX,
        ),
        (
            "v6 TCP just below the range",
            ipv6(NODE6, TCP, below),
            XDP_PASS,
        ),
        (
            "v6 TCP just above the range",
            ipv6(NODE6, TCP, above),
            XDP_PASS,
        ),
        ("v6 UDP in the range", ipv6(NODE6, UDP, inside), XDP_TX),
        ("v6 UDP 53", ipv6(NODE6, UDP, 53), XDP_PASS),
        (
            "v6 TCP in the range, other address",
            ipv6(PEER6, TCP, inside),
            XDP_PASS,
        ),
        (
            "v6 TCP in the range, address differing in the last bit",
            ipv6(
                Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 3),
                TCP,
                inside,
            ),
            XDP_PASS,
        ),
        (
            "v6 TCP in the range, address differing in the first word",
            ipv6(
                Ipv6Addr::new(0x2001, 0xdb9, 0xff, 0, 0, 0, 0, 1),
                TCP,
                inside,
            ),
            XDP_PASS,
        ),
        (
            "v6 echo reply, id in the range",
            icmp6(NODE6, 129, inside),
            XDP_TX,
        ),
        (
            "v6 echo reply, id just below",
            icmp6(NODE6, 129, below),
            XDP_PASS,
        ),
        (
            "v6 echo reply, id just above",
            icmp6(NODE6, 129, above),
            XDP_PASS,
        ),
        (
            "v6 echo request, id in the range",
            icmp6(NODE6, 128, inside),
            XDP_PASS,
        ),
        (
            "v6 neighbour solicitation",
            icmp6(NODE6, 135, inside),
            XDP_PASS,
        ),
        (
            "v6 echo reply to another address",
            icmp6(PEER6, 129, inside),
            XDP_PASS,
        ),
        (
            "v6 hop-by-hop header before TCP in the range (not parsed: kernel)",
            ipv6_hop_by_hop(NODE6, TCP, inside),
            XDP_PASS,
        ),
        (
            "VLAN v6 UDP in the range",
            vlan(ipv6(NODE6, UDP, inside), 7),
            XDP_TX,
        ),
        ("ARP", arp(), XDP_PASS),
    ];
    let mut failures = Vec::new();
    for (name, frame, want) in &cases {
        let got = run(&prog, frame);
        if got != *want {
            failures.push(format!("{name}: got {got}, want {want}"));
        }
    }
    assert!(
        failures.is_empty(),
        "misclassified:\n{}",
        failures.join("\n")
    );

    // Frames cut short of the 8 transport bytes the match reads go to the kernel.
    let cases: [(&str, Vec<u8>, usize); 4] = [
        (
            "v4 TCP in the range",
            ipv4(NODE4, TCP, inside, 0, 0),
            14 + 20 + 8,
        ),
        ("v4 echo reply", icmp4(NODE4, 0, inside), 14 + 20 + 8),
        ("v6 TCP in the range", ipv6(NODE6, TCP, inside), 14 + 40 + 8),
        ("v6 echo reply", icmp6(NODE6, 129, inside), 14 + 40 + 8),
    ];
    for (name, frame, needed) in cases {
        for len in 14..needed {
            assert_eq!(
                run(&prog, &frame[..len]),
                XDP_PASS,
                "{name} cut to {len} bytes"
            );
        }
        assert_eq!(
            run(&prog, &frame[..needed]),
            XDP_TX,
            "{name} cut to {needed} bytes"
        );
    }

    // SNAT alone (no prefixes, no ports), one family only, and a one-port range.
    let only = UplinkFilter {
        snat: vec![snat(IpAddr::V6(NODE6), SNAT_FIRST..=SNAT_FIRST)],
        ..Default::default()
    };
    let prog = XdpProgram::uplink_with_miss_action(&map, &only, MissAction::Tx)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&prog, &ipv6(NODE6, TCP, SNAT_FIRST)), XDP_TX);
    assert_eq!(run(&prog, &ipv6(NODE6, TCP, SNAT_FIRST + 1)), XDP_PASS);
    assert_eq!(run(&prog, &ipv4(NODE4, TCP, SNAT_FIRST, 0, 0)), XDP_PASS);
    assert_eq!(run(&prog, &ipv6(NODE6, UDP, WIREGUARD_PORT)), XDP_PASS);

    // The production program with a socket in the map redirects the replies.
    let prog = XdpProgram::uplink(&map, &snat_filter()).unwrap_or_else(|e| panic!("{e}"));
    let xsk = xdp_socket();
    map.set(0, xsk.as_raw_fd())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&prog, &ipv4(NODE4, TCP, inside, 0, 0)), XDP_REDIRECT);
    assert_eq!(run(&prog, &icmp6(NODE6, 129, inside)), XDP_REDIRECT);
    assert_eq!(run(&prog, &ipv4(NODE4, TCP, 22, 0, 0)), XDP_PASS);
    assert_eq!(run(&prog, &icmp4(NODE4, 8, inside)), XDP_PASS);
}

#[test]
fn root_bad_snat_matches_are_clear_errors() {
    require_root("root_bad_snat_matches_are_clear_errors");
    let map = XskMap::new(1).expect("XSKMAP");
    #[allow(clippy::reversed_empty_ranges)]
    let empty = UplinkFilter {
        snat: vec![snat(IpAddr::V4(NODE4), 62000..=61000)],
        ..Default::default()
    };
    let err = XdpProgram::uplink(&map, &empty).unwrap_err();
    assert!(
        matches!(
            err,
            BpfError::SnatRange {
                first: 62000,
                last: 61000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("198.19.0.1"), "{err}");
    let three = UplinkFilter {
        snat: (1..=3)
            .map(|i| {
                snat(
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)),
                    1..=9,
                )
            })
            .collect(),
        ..Default::default()
    };
    let err = XdpProgram::uplink(&map, &three).unwrap_err();
    assert!(
        matches!(
            err,
            BpfError::FilterTooLarge {
                count: 3,
                max: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("IPv6 SNAT addresses"), "{err}");
}

#[test]
fn root_uplink_passes_truncated_frames() {
    require_root("root_uplink_passes_truncated_frames");
    let (_map, prog) = classifier();
    // The kernel refuses test frames shorter than an Ethernet header; the program's own
    // first bounds check covers that case on a live interface.
    let err = prog.test_run(&[0x02; 13]).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
    let pod_v4 = ipv4(Ipv4Addr::new(198, 18, 3, 4), UDP, WIREGUARD_PORT, 0, 0);
    let wg_v4_opts = ipv4(NODE4, UDP, WIREGUARD_PORT, 3, 0);
    let pod_v6 = ipv6(POD6.0, UDP, WIREGUARD_PORT);
    let wg_v6 = ipv6(NODE6, UDP, WIREGUARD_PORT);
    let vlan_v4 = vlan(pod_v4.clone(), 7);
    // Every cut short of what the decision needs must pass; cuts after it may not.
    let cases: [(&str, &[u8], usize); 5] = [
        ("IPv4 to a pod", &pod_v4, 14 + 20),
        ("IPv4 with options, UDP 51820", &wg_v4_opts, 14 + 32 + 8),
        ("IPv6 to a pod", &pod_v6, 14 + 40),
        ("IPv6 UDP 51820", &wg_v6, 14 + 40 + 8),
        ("VLAN IPv4 to a pod", &vlan_v4, 18 + 20),
    ];
    for (name, frame, needed) in cases {
        for len in 14..needed {
            assert_eq!(
                run(&prog, &frame[..len]),
                XDP_PASS,
                "{name} cut to {len} bytes"
            );
        }
        assert_eq!(
            run(&prog, &frame[..needed]),
            XDP_TX,
            "{name} cut to exactly {needed} bytes"
        );
    }
}

#[test]
fn root_production_programs_redirect_to_a_socket_in_the_map() {
    require_root("root_production_programs_redirect_to_a_socket_in_the_map");
    let map = XskMap::new(4).expect("XSKMAP");
    let all = XdpProgram::redirect_all(&map).unwrap_or_else(|e| panic!("{e}"));
    let up = XdpProgram::uplink(&map, &filter()).unwrap_or_else(|e| panic!("{e}"));
    let ours = ipv4(Ipv4Addr::new(198, 18, 3, 4), TCP, 80, 0, 0);
    let node = ipv4(NODE4, TCP, 22, 0, 0);

    // No socket on queue 0: the miss action (XDP_PASS) for everything.
    for frame in [&ours, &node, &arp()] {
        assert_eq!(run(&all, frame), XDP_PASS);
        assert_eq!(run(&up, frame), XDP_PASS);
    }

    // BPF_PROG_TEST_RUN runs on queue 0; with a socket there, the helper returns
    // XDP_REDIRECT (the test run reports it without performing it).
    let xsk = xdp_socket();
    map.set(0, xsk.as_raw_fd())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&all, &ours), XDP_REDIRECT);
    assert_eq!(run(&all, &arp()), XDP_REDIRECT);
    assert_eq!(run(&up, &ours), XDP_REDIRECT);
    assert_eq!(run(&up, &ipv6(NODE6, UDP, WIREGUARD_PORT)), XDP_REDIRECT);
    assert_eq!(run(&up, &node), XDP_PASS);
    assert_eq!(run(&up, &arp()), XDP_PASS);

    map.remove(0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&up, &ours), XDP_PASS);
    assert_eq!(run(&all, &ours), XDP_PASS);

    // Map errors name the operation and queue.
    let err = map.set(9, xsk.as_raw_fd()).unwrap_err();
    assert!(err.to_string().contains("set of queue 9"), "{err}");
    let err = map
        .set(1, File::open("/dev/null").unwrap().as_raw_fd())
        .unwrap_err();
    assert!(err.errno().is_some(), "{err}");
}

/// The pods' shared program: `BPF_PROG_TEST_RUN` runs on the loopback device of the
/// test's namespace, whose index is always 1.
#[test]
fn root_the_pods_program_redirects_by_interface_index() {
    require_root("root_the_pods_program_redirects_by_interface_index");
    const LO: u32 = 1;
    let xsks = XskMap::new(4).expect("XSKMAP");
    let slots = SlotMap::new(8).expect("slot map");
    let prod = XdpProgram::by_ifindex(&slots, &xsks).unwrap_or_else(|e| panic!("{e}"));
    let probe = XdpProgram::by_ifindex_with_miss_action(&slots, &xsks, MissAction::Tx)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prod.name(), "weir_pods");
    let frame = ipv4(Ipv4Addr::new(198, 18, 3, 4), TCP, 80, 0, 0);

    // An interface the map does not list goes to the kernel, whatever the miss action.
    assert_eq!(run(&probe, &frame), XDP_PASS);
    assert_eq!(run(&prod, &frame), XDP_PASS);

    // Listed, slot 2 empty: the redirect's miss action.
    slots.set(LO, 2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&probe, &frame), XDP_TX);
    assert_eq!(run(&prod, &frame), XDP_PASS);

    // A socket in slot 2: redirected; in another slot only: not.
    let xsk = xdp_socket();
    xsks.set(2, xsk.as_raw_fd())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&prod, &frame), XDP_REDIRECT);
    assert_eq!(run(&prod, &arp()), XDP_REDIRECT);
    slots.set(LO, 3).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&probe, &frame), XDP_TX);
    slots.set(LO, 2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&prod, &frame), XDP_REDIRECT);

    // Unlisted again: the kernel's.
    slots.remove(LO).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&prod, &frame), XDP_PASS);
    assert_eq!(run(&probe, &frame), XDP_PASS);
    let err = slots.remove(LO).unwrap_err();
    assert!(err.to_string().contains("remove"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The uplink program agrees with a plain Rust model of the filter on random filters
    /// and random IPv4/IPv6 UDP/TCP frames inside the test ranges.
    #[test]
    fn root_uplink_agrees_with_a_model(
        v4 in proptest::collection::vec((any::<u32>(), 15u8..=32), 0..5),
        v6 in proptest::collection::vec((any::<u128>(), 32u8..=128), 0..5),
        ports in proptest::collection::vec(any::<u16>(), 0..5),
        frames in proptest::collection::vec((any::<bool>(), any::<u128>(), any::<bool>(), any::<u16>()), 1..24),
    ) {
        require_root("root_uplink_agrees_with_a_model");
        // Everything inside 198.18.0.0/15 and 2001:db8::/32.
        let in4 = |x: u32| Ipv4Addr::from(0xc612_0000 | (x & 0x0001_ffff));
        let in6 = |x: u128| Ipv6Addr::from((0x2001_0db8u128 << 96) | (x & ((1u128 << 96) - 1)));
        let ports: Vec<u16> = ports.into_iter().take(4).collect();
        let filter = UplinkFilter {
            v4: v4.iter().map(|&(a, l)| (in4(a), l)).collect(),
            v6: v6.iter().map(|&(a, l)| (in6(a), l)).collect(),
            udp_ports: ports.clone(),
            snat: Vec::new(),
        };
        let map = XskMap::new(1).expect("XSKMAP");
        let prog = XdpProgram::uplink_with_miss_action(&map, &filter, MissAction::Tx)
            .unwrap_or_else(|e| panic!("{e}"));
        for (is_v6, addr, is_udp, port) in frames {
            // Half the destinations are drawn near the filter's first prefix.
            let proto = if is_udp { UDP } else { TCP };
            let (frame, in_prefix) = if is_v6 {
                let dst = match filter.v6.first() {
                    Some(&(p, _)) if addr & 1 == 0 => in6(u128::from(p) ^ (addr >> 100)),
                    _ => in6(addr),
                };
                let hit = filter.v6.iter().any(|&(p, l)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(l)).unwrap_or(0);
                    u128::from(dst) & mask == u128::from(p) & mask
                });
                (ipv6(dst, proto, port), hit)
            } else {
                let dst = match filter.v4.first() {
                    Some(&(p, _)) if addr & 1 == 0 => in4(u32::from(p) ^ (addr >> 120) as u32),
                    _ => in4(addr as u32),
                };
                let hit = filter.v4.iter().any(|&(p, l)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(l)).unwrap_or(0);
                    u32::from(dst) & mask == u32::from(p) & mask
                });
                (ipv4(dst, proto, port, 0, 0), hit)
            };
            let want = if in_prefix || (is_udp && ports.contains(&port)) { XDP_TX } else { XDP_PASS };
            prop_assert_eq!(run(&prog, &frame), want, "v6 {} udp {} port {}", is_v6, is_udp, port);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// The SNAT match agrees with a plain model: ours iff the destination is the node's
    /// address and a TCP/UDP port or an echo reply's identifier is in the range.
    #[test]
    fn root_uplink_snat_agrees_with_a_model(
        first in any::<u16>(),
        len in 0u16..3000,
        frames in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u8..5, any::<u16>()), 1..32),
    ) {
        require_root("root_uplink_snat_agrees_with_a_model");
        let last = first.saturating_add(len);
        let filter = UplinkFilter {
            snat: vec![snat(IpAddr::V4(NODE4), first..=last), snat(IpAddr::V6(NODE6), first..=last)],
            ..Default::default()
        };
        let map = XskMap::new(1).expect("XSKMAP");
        let prog = XdpProgram::uplink_with_miss_action(&map, &filter, MissAction::Tx)
            .unwrap_or_else(|e| panic!("{e}"));
        for (is_v6, to_node, kind, raw) in frames {
            // Half the ports near the range's ends.
            let port = match raw % 4 {
                0 => first.wrapping_add(raw >> 14).wrapping_sub(2),
                1 => last.wrapping_add(raw >> 14).wrapping_sub(2),
                _ => raw,
            };
            let in_range = (first..=last).contains(&port);
            let (frame, ours) = match (is_v6, kind) {
                (false, 0) => (ipv4(if to_node { NODE4 } else { PEER4 }, TCP, port, 0, 0), in_range),
                (false, 1) => (ipv4(if to_node { NODE4 } else { PEER4 }, UDP, port, 0, 0), in_range),
                (false, 2) => (icmp4(if to_node { NODE4 } else { PEER4 }, 0, port), in_range),
                (false, _) => (icmp4(if to_node { NODE4 } else { PEER4 }, 8, port), false),
                (true, 0) => (ipv6(if to_node { NODE6 } else { PEER6 }, TCP, port), in_range),
                (true, 1) => (ipv6(if to_node { NODE6 } else { PEER6 }, UDP, port), in_range),
                (true, 2) => (icmp6(if to_node { NODE6 } else { PEER6 }, 129, port), in_range),
                (true, _) => (icmp6(if to_node { NODE6 } else { PEER6 }, 128, port), false),
            };
            let want = if ours && to_node { XDP_TX } else { XDP_PASS };
            prop_assert_eq!(run(&prog, &frame), want, "v6 {} kind {} port {} range {}..={}", is_v6, kind, port, first, last);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Attach and detach on a veth in a namespace of its own (root)

#[test]
fn root_attach_and_detach_on_a_veth() {
    require_root("root_attach_and_detach_on_a_veth");
    let pid = std::process::id();
    let ns = format!("weir-bpf-{pid}");
    let (a, b) = (format!("wb{pid}a"), format!("wb{pid}b"));
    // The namespace, with the veth pair inside it, deleted on drop even when the test fails.
    let mut lab = NetnsGuard::new();
    lab.add_netns(&ns).unwrap();
    lab.veth(&ns, &a, &b, None).unwrap();
    ip(&["-n", &ns, "link", "set", &a, "up"]).unwrap();
    ip(&["-n", &ns, "link", "set", &b, "up"]).unwrap();
    assert!(!ip(&["-n", &ns, "link", "show", "dev", &a])
        .unwrap()
        .contains("prog/xdp"));

    let ns_name = ns.clone();
    let dev = a.clone();
    in_netns(&ns, move || {
        let index = ifindex(&dev).unwrap_or_else(|e| panic!("{e}"));
        let map = XskMap::new(1).expect("XSKMAP");
        let prog = XdpProgram::uplink(&map, &filter()).unwrap_or_else(|e| panic!("{e}"));
        let link = XdpLink::attach(&prog, index, AttachMode::NativeOrGeneric)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(link.native(), "veth supports native XDP");
        assert_eq!(link.ifindex(), index);
        let shown = ip(&["-n", &ns_name, "link", "show", "dev", &dev]).unwrap();
        assert!(shown.contains("prog/xdp"), "no XDP program shown:\n{shown}");
        assert!(shown.contains("xdp "), "not in driver mode:\n{shown}");

        // A second program on the same interface is refused, and the error says where.
        let other = XdpProgram::redirect_all(&map).unwrap_or_else(|e| panic!("{e}"));
        let err = XdpLink::attach(&other, index, AttachMode::Native).unwrap_err();
        assert!(err.to_string().contains(&dev), "{err}");
        assert!(err.errno().is_some(), "{err}");

        // The link takes another program in one step, and keeps it in the driver.
        let prog_id = |shown: &str| {
            shown
                .split("prog/xdp id ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .map(str::to_owned)
        };
        let before = prog_id(&shown);
        assert!(before.is_some(), "no program id shown:\n{shown}");
        let refiltered = XdpProgram::uplink(&map, &snat_filter()).unwrap_or_else(|e| panic!("{e}"));
        link.update(&refiltered).unwrap_or_else(|e| panic!("{e}"));
        drop(refiltered);
        let shown = ip(&["-n", &ns_name, "link", "show", "dev", &dev]).unwrap();
        assert!(
            shown.contains("xdp "),
            "not in driver mode after the update:\n{shown}"
        );
        let after = prog_id(&shown);
        assert!(
            after.is_some() && after != before,
            "program not replaced:\n{shown}"
        );

        // The program and map descriptors may go; the link keeps the program attached.
        drop(prog);
        drop(map);
        let shown = ip(&["-n", &ns_name, "link", "show", "dev", &dev]).unwrap();
        assert!(shown.contains("prog/xdp"), "detached too early:\n{shown}");

        drop(link);
        let shown = ip(&["-n", &ns_name, "link", "show", "dev", &dev]).unwrap();
        assert!(
            !shown.contains("prog/xdp"),
            "still attached after drop:\n{shown}"
        );

        // Generic mode on the other end, then detach.
        let index_b = ifindex(&format!("wb{}b", std::process::id())).unwrap();
        let map = XskMap::new(1).expect("XSKMAP");
        let prog = XdpProgram::redirect_all(&map).unwrap_or_else(|e| panic!("{e}"));
        let link =
            XdpLink::attach(&prog, index_b, AttachMode::Generic).unwrap_or_else(|e| panic!("{e}"));
        assert!(!link.native());
        drop(link);
    })
    .unwrap();
    let shown = ip(&["-n", &ns, "link", "show", "dev", &b]).unwrap();
    assert!(!shown.contains("prog/xdp"), "{shown}");

    // Interfaces of the namespace are invisible from the test's own namespace.
    assert!(ifindex(&a).is_err());
}
