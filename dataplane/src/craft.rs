//! Well-formed frames for tests, demos and benchmarks: Ethernet + IPv4/IPv6 + UDP, TCP,
//! ICMP, ARP and neighbour solicitations, with every checksum right. Tests then break them
//! on purpose, one field at a time.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::snapshot::Mac;
use crate::wire::checksum;

/// EtherTypes used here.
pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_ARP: u16 = 0x0806;

/// IP protocol numbers used here.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// An Ethernet header.
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(1514);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 header (20 bytes plus `options`, padded to 4 bytes) with a valid checksum.
pub fn ipv4_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ttl: u8,
    payload_len: usize,
    options: &[u8],
) -> Vec<u8> {
    let opt_len = options.len().div_ceil(4) * 4;
    let ihl = 20 + opt_len;
    let total = (ihl + payload_len) as u16;
    let mut h = vec![0u8; ihl];
    h[0] = 0x40 | (ihl / 4) as u8;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6] = 0x40; // DF
    h[8] = ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h[20..20 + options.len()].copy_from_slice(options);
    let c = checksum::checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// An IPv6 header.
pub fn ipv6_header(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    hop_limit: u8,
    payload_len: usize,
) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = next;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

/// A UDP header and payload (`payload_len` bytes of a counting pattern) with the checksum
/// computed over `pseudo`.
fn udp(sport: u16, dport: u16, payload_len: usize, pseudo: u32) -> Vec<u8> {
    let len = 8 + payload_len;
    let mut u = vec![0u8; len];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    for (i, b) in u[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut c = !checksum::fold(checksum::sum(&u, pseudo));
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// A TCP header (20 bytes, ACK|PSH) and payload with the checksum computed over `pseudo`.
fn tcp(sport: u16, dport: u16, payload_len: usize, pseudo: u32) -> Vec<u8> {
    let mut t = vec![0u8; 20 + payload_len];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x18;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    for (i, b) in t[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let c = !checksum::fold(checksum::sum(&t, pseudo));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// Ethernet + IPv4 + UDP. `frame_len` is the whole frame (at least 42).
pub fn udp4(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    frame_len: usize,
) -> Vec<u8> {
    let payload = frame_len.saturating_sub(42);
    let pseudo =
        checksum::pseudo_header_v4(src.octets(), dst.octets(), PROTO_UDP, (8 + payload) as u16);
    let mut f = ethernet(dst_mac, src_mac, ETH_IPV4);
    f.extend(ipv4_header(src, dst, PROTO_UDP, 64, 8 + payload, &[]));
    f.extend(udp(sport, dport, payload, pseudo));
    f
}

/// Ethernet + IPv4 + TCP. `frame_len` is the whole frame (at least 54).
pub fn tcp4(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    frame_len: usize,
) -> Vec<u8> {
    let payload = frame_len.saturating_sub(54);
    let pseudo =
        checksum::pseudo_header_v4(src.octets(), dst.octets(), PROTO_TCP, (20 + payload) as u16);
    let mut f = ethernet(dst_mac, src_mac, ETH_IPV4);
    f.extend(ipv4_header(src, dst, PROTO_TCP, 64, 20 + payload, &[]));
    f.extend(tcp(sport, dport, payload, pseudo));
    f
}

/// Ethernet + IPv4 + ICMP echo request with `payload_len` bytes of data.
pub fn icmp4_echo(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    payload_len: usize,
) -> Vec<u8> {
    let mut m = vec![0u8; 8 + payload_len];
    m[0] = 8;
    m[4..6].copy_from_slice(&ident.to_be_bytes());
    m[6..8].copy_from_slice(&1u16.to_be_bytes());
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = ethernet(dst_mac, src_mac, ETH_IPV4);
    f.extend(ipv4_header(src, dst, PROTO_ICMP, 64, m.len(), &[]));
    f.extend(m);
    f
}

/// Ethernet + IPv6 + UDP. `frame_len` is the whole frame (at least 62).
pub fn udp6(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    frame_len: usize,
) -> Vec<u8> {
    let payload = frame_len.saturating_sub(62);
    let pseudo = checksum::pseudo_header_v6(
        &src.octets(),
        &dst.octets(),
        PROTO_UDP,
        (8 + payload) as u32,
    );
    let mut f = ethernet(dst_mac, src_mac, ETH_IPV6);
    f.extend(ipv6_header(src, dst, PROTO_UDP, 64, 8 + payload));
    f.extend(udp(sport, dport, payload, pseudo));
    f
}

/// Ethernet + IPv6 + TCP. `frame_len` is the whole frame (at least 74).
pub fn tcp6(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    frame_len: usize,
) -> Vec<u8> {
    let payload = frame_len.saturating_sub(74);
    let pseudo = checksum::pseudo_header_v6(
        &src.octets(),
        &dst.octets(),
        PROTO_TCP,
        (20 + payload) as u32,
    );
    let mut f = ethernet(dst_mac, src_mac, ETH_IPV6);
    f.extend(ipv6_header(src, dst, PROTO_TCP, 64, 20 + payload));
    f.extend(tcp(sport, dport, payload, pseudo));
    f
}

/// Ethernet + IPv6 + ICMPv6 message (`msg` with its checksum field zeroed; it is filled).
pub fn icmp6(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    mut msg: Vec<u8>,
) -> Vec<u8> {
    let pseudo =
        checksum::pseudo_header_v6(&src.octets(), &dst.octets(), PROTO_ICMPV6, msg.len() as u32);
    let c = !checksum::fold(checksum::sum(&msg, pseudo));
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = ethernet(dst_mac, src_mac, ETH_IPV6);
    f.extend(ipv6_header(src, dst, PROTO_ICMPV6, hop_limit, msg.len()));
    f.extend(msg);
    f
}

/// Ethernet + IPv6 + ICMPv6 echo request.
pub fn icmp6_echo(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ident: u16,
    payload_len: usize,
) -> Vec<u8> {
    let mut m = vec![0u8; 8 + payload_len];
    m[0] = 128;
    m[4..6].copy_from_slice(&ident.to_be_bytes());
    icmp6(src_mac, dst_mac, src, dst, 64, m)
}

/// The solicited-node multicast address of `target` (RFC 4291 §2.7.1).
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    )
}

/// The multicast MAC of an IPv6 multicast address (RFC 2464 §7).
pub fn multicast_mac(group: Ipv6Addr) -> Mac {
    let g = group.octets();
    [0x33, 0x33, g[12], g[13], g[14], g[15]]
}

/// A neighbour solicitation from `src` for `target`, with a source link-layer option,
/// sent to the solicited-node group of the target.
pub fn neighbor_solicitation(src_mac: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![0u8; 32];
    m[0] = 135;
    m[8..24].copy_from_slice(&target.octets());
    m[24] = 1; // source link-layer address option
    m[25] = 1; // length in units of 8 octets
    m[26..32].copy_from_slice(&src_mac);
    let group = solicited_node(target);
    icmp6(src_mac, multicast_mac(group), src, group, 255, m)
}

/// An ARP request (padded to the 60-byte Ethernet minimum) from `sender` for `target`.
pub fn arp_request(src_mac: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet([0xff; 6], src_mac, ETH_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0);
    f
}

/// Turns the full L4 checksum of a TCP or UDP frame built here into the partial form a
/// kernel leaves with tx offload on (the folded pseudo-header sum, not complemented).
pub fn make_partial(frame: &mut [u8]) {
    let v6 = u16::from_be_bytes([frame[12], frame[13]]) == ETH_IPV6;
    let (proto, l4, pseudo) = if v6 {
        let ip = &frame[14..54];
        let len = u32::from(u16::from_be_bytes([ip[4], ip[5]]));
        let src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
        let dst: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
        (
            ip[6],
            54,
            checksum::pseudo_header_v6(&src, &dst, ip[6], len),
        )
    } else {
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let total = u16::from_be_bytes([ip[2], ip[3]]);
        let src: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
        let dst: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
        (
            ip[9],
            14 + ihl,
            checksum::pseudo_header_v4(src, dst, ip[9], total - ihl as u16),
        )
    };
    let off = l4 + if proto == PROTO_TCP { 16 } else { 6 };
    frame[off..off + 2].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
}
