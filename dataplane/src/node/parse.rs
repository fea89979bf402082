//! Stage `parse`: Ethernet, ARP, IPv4 and IPv6 headers, checked as RFC 1812 asks, and the
//! flow key.
//!
//! - Reads: the frame, `Meta::next == Parse`.
//! - Writes: `kind`, `l3`, `l4`, `ip_len`, `flags`, `flow`; completes partial TCP/UDP
//!   checksums left by veth tx offload (counted in `checksums_completed`).
//! - Next: `AntiSpoof`, or `Drop`.
//! - Drops: `EthTruncated`, `VlanTagged`, `UnknownEthertype`, `ArpMalformed`,
//!   `Ipv4Malformed`, `Ipv4BadChecksum`, `Ipv4BadOptions`, `Ipv4SourceRoute`,
//!   `Ipv4MartianSource`, `Ipv4MartianDestination`, `Ipv4Multicast`, `Ipv6Malformed`,
//!   `Ipv6BadExtensions`, `Ipv6MartianSource`, `Ipv6MartianDestination`, `Ipv6Multicast`,
//!   `Ipv6LinkLocal`, `L4Truncated`.
//!
//! The checks are written out over byte offsets rather than through smoltcp's views: this
//! is the hottest code in weir, the offsets are few, every slice access is checked by the
//! length tests just above it, and RFC 1812 asks for checks smoltcp does not make
//! (martian addresses, options). A malformed frame can only produce a `Drop`.

use crate::batch::{flags, L3Kind, Meta, Next};
use crate::counters::{Counters, DropReason};
use crate::flow::FlowKey;
use crate::frame::{Frame, FrameRegion};
use crate::wire::{checksum, ipv6ext};

const ETH_LEN: usize = 14;

/// Runs the stage over the batch.
pub fn run(
    region: &mut FrameRegion<'_>,
    frames: &[Frame],
    meta: &mut [Meta],
    counters: &mut Counters,
) {
    for (frame, m) in frames.iter().zip(meta.iter_mut()) {
        if m.next != Next::Parse {
            continue;
        }
        let data = region.data_mut(frame);
        m.next = match parse(data, m, counters) {
            Ok(()) => Next::AntiSpoof,
            Err(reason) => Next::Drop(reason),
        };
    }
}

/// Parses one frame into `m`.
pub fn parse(data: &mut [u8], m: &mut Meta, counters: &mut Counters) -> Result<(), DropReason> {
    if data.len() < ETH_LEN {
        return Err(DropReason::EthTruncated);
    }
    let ethertype = u16::from_be_bytes([data[12], data[13]]);
    m.l3 = ETH_LEN as u16;
    match ethertype {
        0x0800 => parse_v4(data, m, counters),
        0x86dd => parse_v6(data, m, counters),
        0x0806 => parse_arp(data, m),
        0x8100 | 0x88a8 => Err(DropReason::VlanTagged),
        _ => Err(DropReason::UnknownEthertype),
    }
}

/// RFC 826 over Ethernet: htype 1, ptype IPv4, hlen 6, plen 4.
fn parse_arp(data: &[u8], m: &mut Meta) -> Result<(), DropReason> {
    let a = &data[ETH_LEN..];
    if a.len() < 28 || a[0..6] != [0, 1, 8, 0, 6, 4] {
        return Err(DropReason::ArpMalformed);
    }
    m.kind = L3Kind::Arp;
    Ok(())
}

fn parse_v4(data: &mut [u8], m: &mut Meta, counters: &mut Counters) -> Result<(), DropReason> {
    let ip = &data[ETH_LEN..];
    // RFC 1812 §5.2.2: "(1) The packet length reported by the Link Layer must be large
    // enough to hold the minimum length legal IP datagram (20 bytes). (2) The IP checksum
    // must be correct. (3) The IP version number must be 4. (4) The IP header length field
    // must be large enough to hold the minimum length legal IP datagram (20 bytes = 5
    // words). (5) The IP total length field must be large enough to hold the IP datagram
    // header, whose length is specified in the IP header length field."
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err(DropReason::Ipv4Malformed);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || total < ihl || total > ip.len() {
        return Err(DropReason::Ipv4Malformed);
    }
    if !header_checksum_ok(&ip[..ihl]) {
        return Err(DropReason::Ipv4BadChecksum);
    }
    if ihl > 20 {
        check_options(&ip[20..ihl])?;
    }
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    // RFC 1812 §5.3.7 (martian filtering) and §4.2.2.11: {0, x}, {127, x}, class D/E and
    // the limited broadcast are never valid sources of a forwarded packet.
    if src[0] == 0 || src[0] == 127 || src[0] >= 224 {
        return Err(DropReason::Ipv4MartianSource);
    }
    if dst == [255; 4] || (224..240).contains(&dst[0]) {
        return Err(DropReason::Ipv4Multicast);
    }
    if dst[0] == 0 || dst[0] == 127 || dst[0] >= 240 {
        return Err(DropReason::Ipv4MartianDestination);
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let proto = ip[9];
    let mut f = 0;
    if frag & 0x4000 != 0 {
        f |= flags::DONT_FRAGMENT;
    }
    if frag & 0x3fff != 0 {
        f |= flags::FRAGMENT;
        if frag & 0x1fff != 0 {
            f |= flags::LATER_FRAGMENT;
        }
    }
    m.kind = L3Kind::Ipv4;
    m.ttl = ip[8];
    m.l4 = (ETH_LEN + ihl) as u16;
    m.ip_len = total as u16;
    m.flow.src = FlowKey::map_v4(src);
    m.flow.dst = FlowKey::map_v4(dst);
    m.flow.proto = proto;
    m.flags = f;
    if f & flags::LATER_FRAGMENT == 0 {
        let seg = &mut data[ETH_LEN + ihl..ETH_LEN + total];
        ports(seg, proto, m)?;
        if f & flags::FRAGMENT == 0 && (proto == 6 || proto == 17) {
            let pseudo = checksum::pseudo_header_v4(src, dst, proto, (total - ihl) as u16);
            complete(seg, proto, pseudo, counters);
        }
    }
    Ok(())
}

/// Walks IPv4 options (RFC 791 §3.1): EOL ends the list, NOP is one byte, every other
/// option has a length byte that counts itself and the type and must fit.
fn check_options(mut opts: &[u8]) -> Result<(), DropReason> {
    while let Some(&kind) = opts.first() {
        match kind {
            0 => return Ok(()),
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1).ok_or(DropReason::Ipv4BadOptions)?);
                if len < 2 || len > opts.len() {
                    return Err(DropReason::Ipv4BadOptions);
                }
                // Loose (131) and strict (137) source routing.
                if kind == 131 || kind == 137 {
                    return Err(DropReason::Ipv4SourceRoute);
                }
                opts = &opts[len..];
            }
        }
    }
    Ok(())
}

fn parse_v6(data: &mut [u8], m: &mut Meta, counters: &mut Counters) -> Result<(), DropReason> {
    let ip = &data[ETH_LEN..];
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Err(DropReason::Ipv6Malformed);
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if 40 + payload_len > ip.len() {
        return Err(DropReason::Ipv6Malformed);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    dst.copy_from_slice(&ip[24..40]);
    let payload = &ip[40..40 + payload_len];
    let chain = ipv6ext::walk(payload, ip[6]).map_err(|_| DropReason::Ipv6BadExtensions)?;
    if ip[6] == ipv6ext::HOP_BY_HOP {
        // The walk checked that the header fits: at least 8 bytes, (len + 1) * 8 in all.
        let len = (usize::from(payload[1]) + 1) * 8;
        check_hop_by_hop(&payload[2..len])?;
    }
    let mut f = 0;
    if let Some(frag) = &chain.fragment {
        f |= flags::FRAGMENT;
        if !frag.is_first() {
            f |= flags::LATER_FRAGMENT;
        }
    }
    let l4 = 40 + chain.l4_offset;
    let proto = chain.upper;
    m.kind = L3Kind::Ipv6;
    m.ttl = ip[7];
    m.l4 = (ETH_LEN + l4) as u16;
    m.ip_len = (40 + payload_len) as u16;
    m.flow.src = src;
    m.flow.dst = dst;
    m.flow.proto = proto;
    if f & flags::LATER_FRAGMENT == 0 {
        let seg = &mut data[ETH_LEN + l4..ETH_LEN + 40 + payload_len];
        ports(seg, proto, m)?;
        if proto == 58 && (133..=137).contains(&seg[0]) {
            f |= flags::NDP;
        }
        if f & flags::FRAGMENT == 0 && (proto == 6 || proto == 17) {
            let pseudo = checksum::pseudo_header_v6(&src, &dst, proto, seg.len() as u32);
            complete(seg, proto, pseudo, counters);
        }
    }
    m.flags |= f;
    let ndp = f & flags::NDP != 0;
    // RFC 4291 §2.5.2/§2.5.3/§2.7: the unspecified address is only a source (of DAD
    // probes), loopback never leaves a node, multicast is never a source.
    if src[0] == 0xff || src == LOOPBACK || (src == [0; 16] && !ndp) {
        return Err(DropReason::Ipv6MartianSource);
    }
    if dst == LOOPBACK || dst == [0; 16] {
        return Err(DropReason::Ipv6MartianDestination);
    }
    if ndp {
        return Ok(());
    }
    if dst[0] == 0xff {
        return Err(DropReason::Ipv6Multicast);
    }
    // RFC 4291 §2.5.6: "Routers must not forward any packets with Link-Local source or
    // destination addresses to other links."
    if is_link_local(&src) || is_link_local(&dst) {
        return Err(DropReason::Ipv6LinkLocal);
    }
    Ok(())
}

/// Hop-by-hop options are processed by every node on the path (RFC 8200 §4.3), so weir
/// checks them: each TLV must fit the header (§4.2), and an option weir does not know is
/// handled as its type's two high-order bits say: "00 - skip over this option and continue
/// processing the header", anything else discards the packet. Known: Pad1 (0), PadN (1),
/// Router Alert (5).
fn check_hop_by_hop(mut opts: &[u8]) -> Result<(), DropReason> {
    while let Some(&kind) = opts.first() {
        if kind == 0 {
            opts = &opts[1..];
            continue;
        }
        let len = 2 + usize::from(*opts.get(1).ok_or(DropReason::Ipv6BadExtensions)?);
        if len > opts.len() || (!matches!(kind, 1 | 5) && kind >> 6 != 0) {
            return Err(DropReason::Ipv6BadExtensions);
        }
        opts = &opts[len..];
    }
    Ok(())
}

const LOOPBACK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn is_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// Reads the transport ports (or ICMP type/code/identifier) into the flow key; the segment
/// must hold the transport header.
fn ports(seg: &[u8], proto: u8, m: &mut Meta) -> Result<(), DropReason> {
    let need = match proto {
        6 => 20,
        17 => 8,
        132 => 12,
        1 | 58 => 4,
        _ => 0,
    };
    if seg.len() < need {
        return Err(DropReason::L4Truncated);
    }
    match proto {
        6 | 17 | 132 => {
            m.flow.src_port = u16::from_be_bytes([seg[0], seg[1]]);
            m.flow.dst_port = u16::from_be_bytes([seg[2], seg[3]]);
        }
        1 | 58 => {
            let (ty, code) = (seg[0], seg[1]);
            m.flow.src_port = u16::from_be_bytes([ty, code]);
            let echo = if proto == 1 {
                ty == 0 || ty == 8
            } else {
                ty == 128 || ty == 129
            };
            m.flow.dst_port = if echo && seg.len() >= 6 {
                u16::from_be_bytes([seg[4], seg[5]])
            } else {
                0
            };
            // ICMPv4 errors: 3, 4, 5, 11, 12 (RFC 792); ICMPv6 errors are types 0..=127
            // (RFC 4443 §2.1).
            let error = if proto == 1 {
                matches!(ty, 3 | 4 | 5 | 11 | 12)
            } else {
                ty < 128
            };
            if error {
                m.flags |= flags::ICMP_ERROR;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Completes a partial TCP/UDP checksum. The common case (a complete checksum, whose field
/// differs from the folded pseudo-header sum) is decided here without a call.
#[inline]
fn complete(seg: &mut [u8], proto: u8, pseudo: u32, counters: &mut Counters) {
    let udp = proto == 17;
    let offset = if udp { 6 } else { 16 };
    let Some(field) = seg.get(offset..offset + 2) else {
        return;
    };
    let field = u16::from_be_bytes([field[0], field[1]]);
    let folded = checksum::fold(pseudo);
    // 0x0000 and 0xffff are both ones'-complement zero; let the full check sort them out.
    if field != folded && !(field == 0 || field == 0xffff) {
        return;
    }
    if let Ok(checksum::Partial::Completed) = checksum::complete_partial(seg, offset, pseudo, udp) {
        counters.checksums_completed += 1;
    }
}

/// Verifies an IPv4 header checksum; the 20-byte header without options (nearly every
/// packet) is summed as five 32-bit words.
#[inline]
fn header_checksum_ok(h: &[u8]) -> bool {
    if let Ok(h20) = <&[u8; 20]>::try_from(h) {
        let w = |i: usize| {
            u64::from(u32::from_be_bytes([
                h20[i],
                h20[i + 1],
                h20[i + 2],
                h20[i + 3],
            ]))
        };
        let s = w(0) + w(4) + w(8) + w(12) + w(16);
        let s = (s >> 32) + (s & 0xffff_ffff);
        let s = (s >> 16) + (s & 0xffff);
        let s = (s >> 16) + (s & 0xffff);
        let s = (s >> 16) + (s & 0xffff);
        return s == 0xffff;
    }
    checksum::checksum(h) == 0
}
