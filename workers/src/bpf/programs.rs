//! The two XDP programs, written as instruction lists.
//!
//! Both end in the same redirect sequence:
//!
//! ```text
//! r2 = ctx->rx_queue_index
//! r1 = &xskmap                      ; lddw, BPF_PSEUDO_MAP_FD
//! r3 = miss action                  ; low two bits of flags: returned if the key is empty
//! call bpf_redirect_map             ; helper 51
//! exit
//! ```
//!
//! # The uplink classifier
//!
//! ```text
//! eth (14 bytes) [802.1Q tag (4 bytes), once] ethertype
//!   0x0800: version 4, daddr in a v4 prefix           -> redirect
//!           first fragment, 8 bytes of L4 header:
//!             daddr == a SNAT address and (TCP/UDP dport, or ICMP echo reply
//!             identifier) in its range                -> redirect
//!             proto 17, dport in ports                -> redirect
//!   0x86dd: version 6, daddr in a v6 prefix           -> redirect
//!           8 bytes after the fixed header:
//!             daddr == a SNAT address and (TCP/UDP dport, or ICMPv6 echo reply
//!             identifier) in its range                -> redirect
//!             next header 17, dport in ports          -> redirect
//!   anything else, or a frame too short to hold what is read -> XDP_PASS
//! ```
//!
//! The SNAT matches catch the replies to the flows weir translated to the node's address
//! (`dataplane/src/node/nat.rs`, which translates an echo identifier as it does a port);
//! the node's own traffic to the same address (SSH, the kubelet, its own ping replies
//! with identifiers outside the range, ICMP errors, echo requests) still reaches the
//! kernel. Port and identifier are compared as numbers, so they are loaded byte by byte
//! into host order (`hi << 8 | lo`) rather than swapped with an endianness instruction.
//!
//! Every packet read is preceded by a comparison of `data + end_of_read` with
//! `data_end`, which is what the verifier needs to accept the load
//! (`check_packet_access`); a frame that fails one goes to the kernel.
//!
//! Addresses and ports are compared as they sit in memory: a packet load yields the bytes
//! in host order, so the constants are built with `from_ne_bytes` over the network-order
//! bytes, and the comparisons are 32-bit (`BPF_JMP32`) so no immediate is sign-extended.
//!
//! Sizes, in slots as loaded: `redirect_all` 6 (5 instructions, the map load is two
//! slots); `uplink` 33 with an empty filter, 81 with two prefixes per family and two
//! ports, 279 at the limits (16 + 16 prefixes, 4 ports, 2 + 2 SNAT addresses).
//!
//! Not handled, on purpose: IPv6 extension headers before the transport header
//! (WireGuard and VXLAN do not send them, and the replies to translated flows that carry
//! one go to the kernel, which answers them as it would without weir: a fragmented IPv6
//! reply is one, and source NAT does not translate fragments anyway), non-first IPv4 fragments of tunnel traffic (they carry no UDP header; the
//! kernel gets them, unless their destination is a pod prefix), and QinQ.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use super::insn::{AluOp, Insn, JmpOp, Label, Reg, Size, Width};
use super::{BpfError, MissAction, SnatMatch, UplinkFilter};

/// Most IPv4 prefixes an uplink filter may hold.
pub const MAX_V4_PREFIXES: usize = 16;
/// Most IPv6 prefixes an uplink filter may hold.
pub const MAX_V6_PREFIXES: usize = 16;
/// Most UDP destination ports an uplink filter may hold.
pub const MAX_UDP_PORTS: usize = 4;
/// Most IPv4 SNAT addresses an uplink filter may hold.
pub const MAX_SNAT_V4: usize = 2;
/// Most IPv6 SNAT addresses an uplink filter may hold.
pub const MAX_SNAT_V6: usize = 2;

/// `BPF_FUNC_redirect_map`
const BPF_FUNC_REDIRECT_MAP: u32 = 51;
/// `BPF_FUNC_map_lookup_elem`
const BPF_FUNC_MAP_LOOKUP_ELEM: u32 = 1;
/// `XDP_PASS`
const XDP_PASS: i32 = 2;

// struct xdp_md
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_INGRESS_IFINDEX: i16 = 12;
const MD_RX_QUEUE_INDEX: i16 = 16;

// Offsets from the start of the frame (after an optional VLAN tag, whose 4 bytes are
// skipped by advancing the data pointer).
const ETH_HLEN: i16 = 14;
const ETH_TYPE: i16 = 12;
const VLAN_HLEN: i16 = 4;
const IP4_VER_IHL: i16 = ETH_HLEN;
const IP4_FRAG: i16 = ETH_HLEN + 6;
const IP4_PROTO: i16 = ETH_HLEN + 9;
const IP4_DADDR: i16 = ETH_HLEN + 16;
const IP4_HLEN: i16 = 20;
const IP6_VER: i16 = ETH_HLEN;
const IP6_NEXT: i16 = ETH_HLEN + 6;
const IP6_DADDR: i16 = ETH_HLEN + 24;
const IP6_HLEN: i16 = 40;
const UDP_DPORT: i16 = 2;
// TCP and UDP share the destination port's offset; an ICMP/ICMPv6 echo message carries
// type, code, checksum, then the identifier (RFC 792, RFC 4443 section 4.2).
const L4_DPORT: i16 = 2;
const ICMP_TYPE: i16 = 0;
const ICMP_ECHO_ID: i16 = 4;
/// What the transport checks read: a UDP header, a TCP header's first 8 bytes, an echo
/// message's first 8 bytes.
const L4_READ: i16 = 8;

const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: i32 = 17;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_ICMP: i32 = 1;
const IPPROTO_ICMPV6: i32 = 58;
/// RFC 792: echo reply is type 0.
const ICMP_ECHO_REPLY: i32 = 0;
/// RFC 4443 section 4.2: echo reply is type 129.
const ICMPV6_ECHO_REPLY: i32 = 129;

/// `redirect_all`: every frame to the socket of its receive queue.
pub(crate) fn redirect_all(map_fd: RawFd, miss: MissAction) -> Vec<Insn> {
    let mut p = Vec::with_capacity(5);
    redirect_tail(&mut p, Reg::R1, map_fd, miss);
    p
}

/// `by_ifindex`: every frame to the socket in the XSKMAP slot that `slots` gives its
/// interface (`ctx->ingress_ifindex`); a frame from an interface `slots` does not list
/// passes to the kernel. One program for all of a worker's pod interfaces.
pub(crate) fn by_ifindex(slots_fd: RawFd, xsks_fd: RawFd, miss: MissAction) -> Vec<Insn> {
    let unlisted = Label(1);
    vec![
        Insn::ldx_w(Reg::R2, Reg::R1, MD_INGRESS_IFINDEX),
        Insn::stx(Size::W, Reg::R10, -4, Reg::R2),
        Insn::mov64_reg(Reg::R2, Reg::R10),
        Insn::add64_imm(Reg::R2, -4),
        Insn::ld_map_fd(Reg::R1, slots_fd),
        Insn::call(BPF_FUNC_MAP_LOOKUP_ELEM),
        Insn::jmp_imm(JmpOp::Eq, Width::W64, Reg::R0, 0, unlisted),
        Insn::ldx_w(Reg::R2, Reg::R0, 0),
        Insn::ld_map_fd(Reg::R1, xsks_fd),
        Insn::mov64_imm(Reg::R3, miss.action() as i32),
        Insn::call(BPF_FUNC_REDIRECT_MAP),
        Insn::exit(),
        Insn::label(unlisted),
        Insn::mov64_imm(Reg::R0, XDP_PASS),
        Insn::exit(),
    ]
}

/// `uplink`: weir's traffic to the socket, the rest to the kernel.
pub(crate) fn uplink(
    map_fd: RawFd,
    filter: &UplinkFilter,
    miss: MissAction,
) -> Result<Vec<Insn>, BpfError> {
    check_filter(filter)?;
    let mut labels = Labels(0);
    let pass = labels.next();
    let redirect = labels.next();
    let ethertype = labels.next();
    let v4 = labels.next();
    let v6 = labels.next();
    let ports = labels.next();

    use Reg::*;
    use Width::W32;
    let mut p = vec![
        Insn::mov64_reg(R6, R1),
        Insn::ldx_w(R2, R1, MD_DATA),
        Insn::ldx_w(R3, R1, MD_DATA_END),
    ];
    bounds_check(&mut p, ETH_HLEN, pass);
    p.extend([
        Insn::ldx_h(R5, R2, ETH_TYPE),
        Insn::jmp_imm(JmpOp::Ne, W32, R5, be16(ETHERTYPE_VLAN), ethertype),
    ]);
    bounds_check(&mut p, ETH_HLEN + VLAN_HLEN, pass);
    p.extend([
        Insn::ldx_h(R5, R2, ETH_TYPE + VLAN_HLEN),
        Insn::add64_imm(R2, i32::from(VLAN_HLEN)),
        Insn::label(ethertype),
        Insn::jmp_imm(JmpOp::Eq, W32, R5, be16(ETHERTYPE_IPV4), v4),
        Insn::jmp_imm(JmpOp::Eq, W32, R5, be16(ETHERTYPE_IPV6), v6),
        Insn::ja(pass),
    ]);

    // The verifier refuses unreachable instructions, so blocks nothing jumps to are left
    // out: after a /0 prefix (everything of that family is ours), and the redirect tail
    // when the filter is empty.
    let has_ports = !filter.udp_ports.is_empty();
    let (snat4, snat6) = snat_by_family(&filter.snat);
    let mut jumps_to_ports = false;
    let mut jumps_to_redirect = false;

    // IPv4: r5 = version/IHL byte, r7 = daddr, r9 = protocol, r4 = start of the transport
    // header - ETH_HLEN.
    p.push(Insn::label(v4));
    bounds_check(&mut p, ETH_HLEN + IP4_HLEN, pass);
    p.extend([
        Insn::ldx_b(R5, R2, IP4_VER_IHL),
        Insn::mov64_reg(R0, R5),
        Insn::alu32_imm(AluOp::Rsh, R0, 4),
        Insn::jmp_imm(JmpOp::Ne, W32, R0, 4, pass),
    ]);
    let v4_all = filter.v4.iter().any(|&(_, len)| len == 0);
    if v4_all {
        p.push(Insn::ja(redirect));
        jumps_to_redirect = true;
    } else {
        if !filter.v4.is_empty() || !snat4.is_empty() {
            p.push(Insn::ldx_w(R7, R2, IP4_DADDR));
        }
        for &(addr, len) in &filter.v4 {
            let (value, mask) = v4_word(addr, len);
            if len == 32 {
                p.push(Insn::jmp_imm(JmpOp::Eq, W32, R7, value, redirect));
            } else {
                p.extend([
                    Insn::mov64_reg(R8, R7),
                    Insn::alu32_imm(AluOp::And, R8, mask),
                    Insn::jmp_imm(JmpOp::Eq, W32, R8, value, redirect),
                ]);
            }
            jumps_to_redirect = true;
        }
        if has_ports || !snat4.is_empty() {
            p.extend([
                Insn::ldx_b(R9, R2, IP4_PROTO),
                // RFC 791: a fragment offset other than 0 means no transport header here.
                Insn::ldx_h(R8, R2, IP4_FRAG),
                Insn::alu32_imm(AluOp::And, R8, be16(0x1fff)),
                Insn::jmp_imm(JmpOp::Ne, W32, R8, 0, pass),
                // r4 = start of the transport header - ETH_HLEN, from the IHL (20..60 bytes).
                Insn::alu32_imm(AluOp::And, R5, 0x0f),
                Insn::alu32_imm(AluOp::Lsh, R5, 2),
                Insn::jmp_imm(JmpOp::Lt, W32, R5, i32::from(IP4_HLEN), pass),
                Insn::mov64_reg(R4, R2),
                Insn::alu64_reg(AluOp::Add, R4, R5),
                Insn::mov64_reg(R8, R4),
                Insn::add64_imm(R8, i32::from(ETH_HLEN + L4_READ)),
                Insn::jmp_reg(JmpOp::Gt, Width::W64, R8, R3, pass),
            ]);
            if !snat4.is_empty() {
                let next = labels.next();
                let ids = SnatRegs {
                    proto: R9,
                    l4: R4,
                    l4_off: ETH_HLEN,
                    port: R5,
                    scratch: R1,
                };
                snat_port(
                    &mut p,
                    &mut labels,
                    ids,
                    IPPROTO_ICMP,
                    ICMP_ECHO_REPLY,
                    next,
                );
                for &(addr, ref ports) in &snat4 {
                    let (value, _) = v4_word(addr, 32);
                    let miss = labels.next();
                    p.push(Insn::jmp_imm(JmpOp::Ne, W32, R7, value, miss));
                    range_check(&mut p, R5, ports, redirect, miss);
                }
                p.push(Insn::label(next));
                jumps_to_redirect = true;
            }
            if has_ports {
                jumps_to_ports = true;
                p.extend([
                    Insn::jmp_imm(JmpOp::Ne, W32, R9, IPPROTO_UDP, pass),
                    Insn::ldx_h(R8, R4, ETH_HLEN + UDP_DPORT),
                    Insn::ja(ports),
                ]);
            } else {
                p.push(Insn::ja(pass));
            }
        } else {
            p.push(Insn::ja(pass));
        }
    }

    // IPv6: destination words in r7, r8, r9, r0 (only as many as the longest prefix needs,
    // all four with a SNAT address), r5 = next header.
    p.push(Insn::label(v6));
    bounds_check(&mut p, ETH_HLEN + IP6_HLEN, pass);
    p.extend([
        Insn::ldx_b(R5, R2, IP6_VER),
        Insn::alu32_imm(AluOp::Rsh, R5, 4),
        Insn::jmp_imm(JmpOp::Ne, W32, R5, 6, pass),
    ]);
    let v6_all = filter.v6.iter().any(|&(_, len)| len == 0);
    if v6_all {
        p.push(Insn::ja(redirect));
        jumps_to_redirect = true;
    } else {
        let word_regs = [R7, R8, R9, R0];
        let words_needed = if snat6.is_empty() {
            filter
                .v6
                .iter()
                .map(|&(_, len)| usize::from(len).div_ceil(32))
                .max()
                .unwrap_or(0)
        } else {
            4
        };
        for (i, reg) in word_regs.iter().enumerate().take(words_needed) {
            p.push(Insn::ldx(Size::W, *reg, R2, IP6_DADDR + 4 * i as i16));
        }
        for &(addr, len) in &filter.v6 {
            let next = labels.next();
            for (i, (value, mask, bits)) in v6_words(addr, len).into_iter().enumerate() {
                if bits == 32 {
                    p.push(Insn::jmp_imm(JmpOp::Ne, W32, word_regs[i], value, next));
                } else {
                    p.extend([
                        Insn::mov64_reg(R4, word_regs[i]),
                        Insn::alu32_imm(AluOp::And, R4, mask),
                        Insn::jmp_imm(JmpOp::Ne, W32, R4, value, next),
                    ]);
                }
            }
            p.extend([Insn::ja(redirect), Insn::label(next)]);
            jumps_to_redirect = true;
        }
        if has_ports || !snat6.is_empty() {
            p.push(Insn::ldx_b(R5, R2, IP6_NEXT));
            bounds_check(&mut p, ETH_HLEN + IP6_HLEN + L4_READ, pass);
            if !snat6.is_empty() {
                let next = labels.next();
                let ids = SnatRegs {
                    proto: R5,
                    l4: R2,
                    l4_off: ETH_HLEN + IP6_HLEN,
                    port: R4,
                    scratch: R1,
                };
                snat_port(
                    &mut p,
                    &mut labels,
                    ids,
                    IPPROTO_ICMPV6,
                    ICMPV6_ECHO_REPLY,
                    next,
                );
                for &(addr, ref ports) in &snat6 {
                    let miss = labels.next();
                    for (i, (value, _, _)) in v6_words(addr, 128).into_iter().enumerate() {
                        p.push(Insn::jmp_imm(JmpOp::Ne, W32, word_regs[i], value, miss));
                    }
                    range_check(&mut p, R4, ports, redirect, miss);
                }
                p.push(Insn::label(next));
                jumps_to_redirect = true;
            }
            if has_ports {
                jumps_to_ports = true;
                p.extend([
                    Insn::jmp_imm(JmpOp::Ne, W32, R5, IPPROTO_UDP, pass),
                    Insn::ldx_h(R8, R2, ETH_HLEN + IP6_HLEN + UDP_DPORT),
                    Insn::ja(ports),
                ]);
            } else {
                p.push(Insn::ja(pass));
            }
        } else {
            p.push(Insn::ja(pass));
        }
    }

    // r8 = UDP destination port as loaded.
    if jumps_to_ports {
        p.push(Insn::label(ports));
        for &port in &filter.udp_ports {
            p.push(Insn::jmp_imm(JmpOp::Eq, W32, R8, be16(port), redirect));
        }
        p.push(Insn::ja(pass));
        jumps_to_redirect = true;
    }

    if jumps_to_redirect {
        p.push(Insn::label(redirect));
        redirect_tail(&mut p, R6, map_fd, miss);
    }
    p.extend([
        Insn::label(pass),
        Insn::mov64_imm(R0, XDP_PASS),
        Insn::exit(),
    ]);
    Ok(p)
}

/// Rejects filters the program cannot express or that exceed the size limits.
fn check_filter(filter: &UplinkFilter) -> Result<(), BpfError> {
    let too_large = |what: &'static str, count: usize, max: usize| {
        if count > max {
            Err(BpfError::FilterTooLarge { what, count, max })
        } else {
            Ok(())
        }
    };
    too_large("IPv4 prefixes", filter.v4.len(), MAX_V4_PREFIXES)?;
    too_large("IPv6 prefixes", filter.v6.len(), MAX_V6_PREFIXES)?;
    too_large("UDP ports", filter.udp_ports.len(), MAX_UDP_PORTS)?;
    let (snat4, snat6) = snat_by_family(&filter.snat);
    too_large("IPv4 SNAT addresses", snat4.len(), MAX_SNAT_V4)?;
    too_large("IPv6 SNAT addresses", snat6.len(), MAX_SNAT_V6)?;
    for m in &filter.snat {
        if m.ports.is_empty() {
            return Err(BpfError::SnatRange {
                addr: m.addr,
                first: *m.ports.start(),
                last: *m.ports.end(),
            });
        }
    }
    for &(addr, len) in &filter.v4 {
        if len > 32 {
            return Err(BpfError::PrefixLength {
                prefix: format!("{addr}/{len}"),
                max: 32,
            });
        }
    }
    for &(addr, len) in &filter.v6 {
        if len > 128 {
            return Err(BpfError::PrefixLength {
                prefix: format!("{addr}/{len}"),
                max: 128,
            });
        }
    }
    Ok(())
}

/// The registers of a SNAT check: the protocol, the base the transport header is read
/// from (at `l4_off`), where the host-order port or identifier goes, and a scratch.
#[derive(Clone, Copy)]
struct SnatRegs {
    proto: Reg,
    l4: Reg,
    l4_off: i16,
    port: Reg,
    scratch: Reg,
}

/// `port = TCP/UDP destination port, or the identifier of an echo reply`, in host order;
/// any other protocol or ICMP type goes to `other`. The transport header's first
/// [`L4_READ`] bytes must have been bounds-checked.
fn snat_port(
    p: &mut Vec<Insn>,
    labels: &mut Labels,
    r: SnatRegs,
    icmp: i32,
    echo_reply: i32,
    other: Label,
) {
    let transport = labels.next();
    let have = labels.next();
    p.extend([
        Insn::jmp_imm(JmpOp::Eq, Width::W32, r.proto, IPPROTO_TCP, transport),
        Insn::jmp_imm(JmpOp::Eq, Width::W32, r.proto, IPPROTO_UDP, transport),
        Insn::jmp_imm(JmpOp::Ne, Width::W32, r.proto, icmp, other),
        Insn::ldx_b(r.port, r.l4, r.l4_off + ICMP_TYPE),
        Insn::jmp_imm(JmpOp::Ne, Width::W32, r.port, echo_reply, other),
    ]);
    load_be16(p, r, ICMP_ECHO_ID);
    p.extend([Insn::ja(have), Insn::label(transport)]);
    load_be16(p, r, L4_DPORT);
    p.push(Insn::label(have));
}

/// `r.port = l4[off] << 8 | l4[off + 1]` (a network-order u16 as a number).
fn load_be16(p: &mut Vec<Insn>, r: SnatRegs, off: i16) {
    p.extend([
        Insn::ldx_b(r.port, r.l4, r.l4_off + off),
        Insn::alu32_imm(AluOp::Lsh, r.port, 8),
        Insn::ldx_b(r.scratch, r.l4, r.l4_off + off + 1),
        Insn::alu32_reg(AluOp::Or, r.port, r.scratch),
    ]);
}

/// `if first <= port <= last goto hit`, else `miss` (which is placed right after).
fn range_check(
    p: &mut Vec<Insn>,
    port: Reg,
    ports: &std::ops::RangeInclusive<u16>,
    hit: Label,
    miss: Label,
) {
    p.extend([
        Insn::jmp_imm(JmpOp::Lt, Width::W32, port, i32::from(*ports.start()), miss),
        Insn::jmp_imm(JmpOp::Gt, Width::W32, port, i32::from(*ports.end()), miss),
        Insn::ja(hit),
        Insn::label(miss),
    ]);
}

/// The SNAT matches split by family.
#[allow(clippy::type_complexity)]
fn snat_by_family(
    snat: &[SnatMatch],
) -> (
    Vec<(Ipv4Addr, std::ops::RangeInclusive<u16>)>,
    Vec<(Ipv6Addr, std::ops::RangeInclusive<u16>)>,
) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for m in snat {
        match m.addr {
            IpAddr::V4(a) => v4.push((a, m.ports.clone())),
            IpAddr::V6(a) => v6.push((a, m.ports.clone())),
        }
    }
    (v4, v6)
}

/// `if data + end > data_end goto pass` (clobbers r4).
fn bounds_check(p: &mut Vec<Insn>, end: i16, pass: Label) {
    p.extend([
        Insn::mov64_reg(Reg::R4, Reg::R2),
        Insn::add64_imm(Reg::R4, i32::from(end)),
        Insn::jmp_reg(JmpOp::Gt, Width::W64, Reg::R4, Reg::R3, pass),
    ]);
}

/// `return bpf_redirect_map(&map, ctx->rx_queue_index, miss)` with the context in `ctx`.
fn redirect_tail(p: &mut Vec<Insn>, ctx: Reg, map_fd: RawFd, miss: MissAction) {
    p.extend([
        Insn::ldx_w(Reg::R2, ctx, MD_RX_QUEUE_INDEX),
        Insn::ld_map_fd(Reg::R1, map_fd),
        Insn::mov64_imm(Reg::R3, miss.action() as i32),
        Insn::call(BPF_FUNC_REDIRECT_MAP),
        Insn::exit(),
    ]);
}

/// A 16-bit network-order constant as a 16-bit packet load yields it.
fn be16(v: u16) -> i32 {
    i32::from(u16::from_ne_bytes(v.to_be_bytes()))
}

/// (address & mask, mask) as a 32-bit packet load yields them.
fn v4_word(addr: Ipv4Addr, len: u8) -> (i32, i32) {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    let net = u32::from(addr) & mask;
    (
        u32::from_ne_bytes(net.to_be_bytes()) as i32,
        u32::from_ne_bytes(mask.to_be_bytes()) as i32,
    )
}

/// For each 32-bit word the prefix covers: (masked value, mask, bits covered).
fn v6_words(addr: Ipv6Addr, len: u8) -> Vec<(i32, i32, u8)> {
    let octets = addr.octets();
    (0..usize::from(len).div_ceil(32))
        .map(|i| {
            let bits = (len - 32 * i as u8).min(32);
            let word = u32::from_be_bytes([
                octets[4 * i],
                octets[4 * i + 1],
                octets[4 * i + 2],
                octets[4 * i + 3],
            ]);
            let (value, mask) = v4_word(Ipv4Addr::from(word), bits);
            (value, mask, bits)
        })
        .collect()
}

struct Labels(u32);

impl Labels {
    fn next(&mut self) -> Label {
        self.0 += 1;
        Label(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::insn::assemble;
    use super::*;

    #[test]
    fn redirect_all_is_five_instructions() {
        let p = redirect_all(3, MissAction::Pass);
        assert_eq!(p.len(), 5);
        assert_eq!(assemble(&p).unwrap().len(), 6);
    }

    #[test]
    fn prefix_words_are_masked() {
        let (v, m) = v4_word(Ipv4Addr::new(198, 19, 7, 1), 15);
        assert_eq!(
            u32::from_ne_bytes((v as u32).to_ne_bytes()).to_ne_bytes(),
            [198, 18, 0, 0]
        );
        assert_eq!((m as u32).to_ne_bytes(), [255, 254, 0, 0]);
        assert_eq!(v4_word(Ipv4Addr::new(1, 2, 3, 4), 0), (0, 0));
        let words = v6_words("2001:db8:ffff::".parse().unwrap(), 40);
        assert_eq!(words.len(), 2);
        assert_eq!(words[1].2, 8);
        assert_eq!((words[1].0 as u32).to_ne_bytes(), [0xff, 0, 0, 0]);
    }

    #[test]
    fn oversized_filters_are_rejected() {
        let filter = UplinkFilter {
            udp_ports: vec![1, 2, 3, 4, 5],
            ..Default::default()
        };
        assert!(matches!(
            uplink(3, &filter, MissAction::Pass),
            Err(BpfError::FilterTooLarge {
                count: 5,
                max: 4,
                ..
            })
        ));
        let filter = UplinkFilter {
            v4: vec![(Ipv4Addr::new(198, 18, 0, 0), 33)],
            ..Default::default()
        };
        assert!(matches!(
            uplink(3, &filter, MissAction::Pass),
            Err(BpfError::PrefixLength { max: 32, .. })
        ));
    }
}
