//! Every wire view, fed arbitrary bytes: `new_checked` (or the parse function), then every
//! accessor. The promise under test is the one in `weir_dataplane::wire`'s module doc:
//! malformed input is an `Err`, never a panic, and once a view is checked no accessor
//! panics.
//!
//! Each input is used three ways:
//!
//! 1. as an Ethernet frame, decoded the way the pipeline does: VLAN tags, IPv4/IPv6/ARP,
//!    the IPv6 extension-header walk, the L4 header, and VXLAN or WireGuard inside UDP;
//! 2. as the buffer of every view on its own, so each parser sees arbitrary bytes without
//!    the fuzzer first having to build the headers in front of it;
//! 3. as parameters and data for the checksum helpers, checked against naive models.
//!
//! Beyond "does not panic", it asserts the invariants the callers rely on: offsets that a
//! parser returns lie inside the buffer, a completed checksum verifies, an incremental
//! update agrees with recomputation, setters read back.
//!
//! smoltcp accessors are called only where they are safe after `new_checked`: the
//! type-specific ICMPv6 getters (NDP, MLD) index past the 8 bytes that `check_len`
//! guarantees for other message types, so they are called only for their own type.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_dataplane::wire::{
    checksum, ipv6ext, sctp::SctpPacket, vlan, vlan::VlanTag, vxlan, vxlan::VxlanPacket, wireguard,
    ArpPacket, EthernetFrame, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, Ipv4Packet, Ipv6Packet,
    TcpPacket, UdpPacket,
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV4: u8 = 1;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

fuzz_target!(|data: &[u8]| {
    decode_frame(data, 0);
    every_view(data);
    checksums(data);
});

/// The pipeline's decode order, VXLAN recursing once into the inner frame.
fn decode_frame(frame: &[u8], depth: u8) {
    if let Ok(eth) = EthernetFrame::new_checked(frame) {
        let _ = (
            eth.dst_addr(),
            eth.src_addr(),
            eth.ethertype(),
            eth.payload().len(),
        );
    }
    let Ok((ethertype, offset, _vid)) = vlan::l3_offset(frame) else {
        return;
    };
    assert!(offset <= frame.len(), "l3_offset beyond the frame");
    let l3 = &frame[offset..];
    match ethertype {
        0x0800 => decode_ipv4(l3, depth),
        0x86dd => decode_ipv6(l3, depth),
        0x0806 => arp(l3),
        _ => {}
    }
}

fn decode_ipv4(l3: &[u8], depth: u8) {
    let Ok(ip) = ipv4(l3) else { return };
    let payload = ip.payload();
    decode_l4(payload, u8::from(ip.next_header()), depth);
}

fn decode_ipv6(l3: &[u8], depth: u8) {
    let Ok(ip) = ipv6(l3) else { return };
    let payload = ip.payload();
    let Ok(chain) = walk(payload, u8::from(ip.next_header())) else {
        return;
    };
    if chain.fragment.is_some_and(|f| !f.is_first()) {
        return;
    }
    decode_l4(&payload[chain.l4_offset..], chain.upper, depth);
}

fn decode_l4(l4: &[u8], protocol: u8, depth: u8) {
    match protocol {
        TCP => tcp(l4),
        UDP => {
            let Some((dst_port, payload)) = udp(l4) else {
                return;
            };
            if dst_port == vxlan::PORT && depth == 0 {
                if let Ok(v) = VxlanPacket::new_checked(payload) {
                    decode_frame(v.payload(), depth + 1);
                }
            }
            if dst_port == wireguard::DEFAULT_PORT {
                wireguard_message(payload);
            }
        }
        ICMPV4 => icmpv4(l4),
        ICMPV6 => icmpv6(l4),
        SCTP => sctp(l4),
        _ => {}
    }
}

fn every_view(data: &[u8]) {
    let _ = vlan::l3_offset(data);
    vlan_tag(data);
    sctp(data);
    vxlan_packet(data);
    wireguard_message(data);
    if let Some((&first, rest)) = data.split_first() {
        let _ = walk(rest, first);
    }
    if let Ok(eth) = EthernetFrame::new_checked(data) {
        let _ = (
            eth.dst_addr(),
            eth.src_addr(),
            eth.ethertype(),
            eth.payload().len(),
        );
    }
    arp(data);
    let _ = ipv4(data);
    let _ = ipv6(data);
    icmpv4(data);
    icmpv6(data);
    let _ = udp(data);
    tcp(data);
}

fn vlan_tag(data: &[u8]) {
    let Ok(tag) = VlanTag::new_checked(data) else {
        assert!(data.len() < vlan::HEADER_LEN);
        return;
    };
    let (pcp, dei, vid, ethertype) = (tag.pcp(), tag.dei(), tag.vid(), tag.ethertype());
    assert!(pcp <= 7 && vid <= 0x0fff);
    assert_eq!(tag.payload().len(), data.len() - vlan::HEADER_LEN);
    let _ = tag.tci();

    let mut copy = VlanTag::new_checked(data.to_vec()).unwrap();
    copy.set_pcp(pcp);
    copy.set_dei(!dei);
    copy.set_dei(dei);
    copy.set_vid(vid);
    copy.set_ethertype(ethertype);
    copy.payload_mut();
    assert_eq!(
        copy.into_inner(),
        data,
        "setters with read values change nothing"
    );
}

fn sctp(data: &[u8]) {
    let Ok(p) = SctpPacket::new_checked(data) else {
        return;
    };
    let fields = (
        p.src_port(),
        p.dst_port(),
        p.verification_tag(),
        p.checksum(),
    );
    let _ = p.chunks().len();

    let mut copy = SctpPacket::new_checked(data.to_vec()).unwrap();
    copy.set_src_port(fields.1);
    copy.set_dst_port(fields.0);
    copy.set_verification_tag(!fields.2);
    copy.set_checksum(!fields.3);
    assert_eq!(
        (
            copy.src_port(),
            copy.dst_port(),
            copy.verification_tag(),
            copy.checksum()
        ),
        (fields.1, fields.0, !fields.2, !fields.3)
    );
    assert_eq!(copy.chunks_mut().len(), p.chunks().len());
}

fn vxlan_packet(data: &[u8]) {
    let Ok(v) = VxlanPacket::new_checked(data) else {
        return;
    };
    assert_ne!(v.flags() & vxlan::FLAG_I, 0);
    let vni = v.vni();
    assert!(vni <= vxlan::MAX_VNI);
    let _ = v.payload().len();

    let mut copy = VxlanPacket::new_unchecked(data.to_vec());
    copy.write_header(vni);
    assert!(copy.check().is_ok());
    assert_eq!(copy.vni(), vni);
    copy.set_flags(data[0]);
    assert_eq!(copy.payload_mut(), v.payload());
}

fn wireguard_message(data: &[u8]) {
    let Ok(msg) = wireguard::parse(data) else {
        return;
    };
    assert_eq!(msg.as_bytes(), data);
    let _ = (msg.message_type(), msg.receiver_index());
    match msg {
        wireguard::Message::HandshakeInitiation(m) => {
            assert_eq!(m.as_bytes().len(), wireguard::HANDSHAKE_INITIATION_LEN);
            let _ = m.sender_index();
            assert_eq!(m.unencrypted_ephemeral().len(), 32);
            assert_eq!(m.encrypted_static().len(), 48);
            assert_eq!(m.encrypted_timestamp().len(), 28);
            assert_eq!(m.mac1().len() + m.mac2().len(), 32);
            assert_eq!(m.msg_alpha().len() + 16, m.msg_beta().len());
        }
        wireguard::Message::HandshakeResponse(m) => {
            assert_eq!(m.as_bytes().len(), wireguard::HANDSHAKE_RESPONSE_LEN);
            let _ = (m.sender_index(), m.receiver_index());
            assert_eq!(m.unencrypted_ephemeral().len(), 32);
            assert_eq!(m.encrypted_nothing().len(), 16);
            assert_eq!(m.mac1().len() + m.mac2().len(), 32);
            assert_eq!(m.msg_alpha().len() + 16, m.msg_beta().len());
        }
        wireguard::Message::CookieReply(m) => {
            assert_eq!(m.as_bytes().len(), wireguard::COOKIE_REPLY_LEN);
            let _ = m.receiver_index();
            assert_eq!(m.nonce().len(), 24);
            assert_eq!(m.encrypted_cookie().len(), 32);
        }
        wireguard::Message::TransportData(m) => {
            let _ = (m.receiver_index(), m.counter(), m.is_keepalive());
            assert!(m.encrypted_packet().len() >= wireguard::TAG_LEN);
            assert_eq!(m.as_bytes().len(), data.len());
        }
    }
}

fn walk(payload: &[u8], first: u8) -> Result<ipv6ext::Chain, ()> {
    let chain = ipv6ext::walk(payload, first).map_err(|_| ())?;
    assert!(
        chain.l4_offset <= payload.len(),
        "l4_offset beyond the payload"
    );
    assert!(chain.headers <= ipv6ext::MAX_HEADERS);
    if let Some(f) = chain.fragment {
        let _ = (f.offset, f.more, f.ident, f.is_first());
    }
    Ok(chain)
}

fn arp(data: &[u8]) {
    let Ok(p) = ArpPacket::new_checked(data) else {
        return;
    };
    let _ = (
        p.hardware_type(),
        p.protocol_type(),
        p.hardware_len(),
        p.protocol_len(),
        p.operation(),
        p.source_hardware_addr().len(),
        p.source_protocol_addr().len(),
        p.target_hardware_addr().len(),
        p.target_protocol_addr().len(),
    );
}

fn ipv4(data: &[u8]) -> Result<Ipv4Packet<&[u8]>, ()> {
    let ip = Ipv4Packet::new_checked(data).map_err(|_| ())?;
    let _ = (
        ip.version(),
        ip.header_len(),
        ip.dscp(),
        ip.ecn(),
        ip.total_len(),
        ip.ident(),
        ip.dont_frag(),
        ip.more_frags(),
        ip.frag_offset(),
        ip.hop_limit(),
        ip.next_header(),
        ip.checksum(),
        ip.src_addr(),
        ip.dst_addr(),
        ip.verify_checksum(),
        ip.payload().len(),
    );
    Ok(ip)
}

fn ipv6(data: &[u8]) -> Result<Ipv6Packet<&[u8]>, ()> {
    let ip = Ipv6Packet::new_checked(data).map_err(|_| ())?;
    let _ = (
        ip.header_len(),
        ip.version(),
        ip.traffic_class(),
        ip.flow_label(),
        ip.payload_len(),
        ip.total_len(),
        ip.next_header(),
        ip.hop_limit(),
        ip.src_addr(),
        ip.dst_addr(),
        ip.payload().len(),
    );
    Ok(ip)
}

fn icmpv4(data: &[u8]) {
    let Ok(p) = Icmpv4Packet::new_checked(data) else {
        return;
    };
    let _ = (
        p.msg_type(),
        p.msg_code(),
        p.checksum(),
        p.echo_ident(),
        p.echo_seq_no(),
        p.header_len(),
        p.verify_checksum(),
        p.data().len(),
    );
}

fn icmpv6(data: &[u8]) {
    let Ok(p) = Icmpv6Packet::new_checked(data) else {
        return;
    };
    let _ = (
        p.msg_type(),
        p.msg_code(),
        p.checksum(),
        p.echo_ident(),
        p.echo_seq_no(),
        p.pkt_too_big_mtu(),
        p.param_problem_ptr(),
        p.neighbor_flags(),
        p.header_len(),
        p.payload().len(),
    );
    match p.msg_type() {
        Icmpv6Message::RouterAdvert => {
            let _ = (
                p.current_hop_limit(),
                p.router_flags(),
                p.router_lifetime(),
                p.reachable_time(),
                p.retrans_time(),
            );
        }
        Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert => {
            let _ = p.target_addr();
        }
        Icmpv6Message::Redirect => {
            let _ = (p.target_addr(), p.dest_addr());
        }
        Icmpv6Message::MldQuery => {
            let _ = (
                p.max_resp_code(),
                p.mcast_addr(),
                p.s_flag(),
                p.qrv(),
                p.qqic(),
                p.num_srcs(),
            );
        }
        Icmpv6Message::MldReport => {
            let _ = p.nr_mcast_addr_rcrds();
        }
        _ => {}
    }
}

/// The destination port and payload of a checked UDP datagram.
fn udp(data: &[u8]) -> Option<(u16, &[u8])> {
    let p = UdpPacket::new_checked(data).ok()?;
    let _ = (p.src_port(), p.len(), p.checksum());
    Some((p.dst_port(), p.payload()))
}

fn tcp(data: &[u8]) {
    let Ok(p) = TcpPacket::new_checked(data) else {
        return;
    };
    let _ = (
        p.src_port(),
        p.dst_port(),
        p.seq_number(),
        p.ack_number(),
        (
            p.fin(),
            p.syn(),
            p.rst(),
            p.psh(),
            p.ack(),
            p.urg(),
            p.ece(),
            p.cwr(),
            p.ns(),
        ),
        p.header_len(),
        p.window_len(),
        p.checksum(),
        p.urgent_at(),
        p.segment_len(),
        p.selective_ack_permitted(),
        p.selective_ack_ranges(),
        p.options().len(),
        p.payload().len(),
    );
}

/// The checksum helpers against naive models, with parameters taken from the input.
fn checksums(data: &[u8]) {
    assert_eq!(checksum::checksum(data), naive_checksum(data));

    let [offset, p0, p1, p2, p3, flags, rest @ ..] = data else {
        return;
    };
    // complete_partial requires an even offset (every L4 checksum field is aligned).
    let offset = usize::from(*offset & !1);
    let pseudo = u32::from_be_bytes([*p0, *p1, *p2, *p3]);
    let is_udp = flags & 1 != 0;

    // complete_partial: a completed checksum verifies and equals recomputation; anything
    // else leaves the segment alone.
    let mut l4 = rest.to_vec();
    match checksum::complete_partial(&mut l4, offset, pseudo, is_udp) {
        Err(_) => {
            assert!(offset + 2 > rest.len());
            assert_eq!(l4, rest);
        }
        Ok(checksum::Partial::NotPartial) => assert_eq!(l4, rest),
        Ok(checksum::Partial::Completed) => {
            let written = u16::from_be_bytes([l4[offset], l4[offset + 1]]);
            let mut cleared = rest.to_vec();
            cleared[offset..offset + 2].fill(0);
            let mut expected = !checksum::fold(checksum::sum(&cleared, pseudo));
            if is_udp && expected == 0 {
                expected = 0xffff;
            }
            assert!(
                same_ones_complement(written, expected),
                "completed {written:#06x}, recomputed {expected:#06x}"
            );
            let degenerate = checksum::fold(pseudo) == 0 && cleared.iter().all(|&b| b == 0);
            assert!(degenerate || checksum::fold(checksum::sum(&l4, pseudo)) == 0xffff);
            for (i, (a, b)) in l4.iter().zip(rest).enumerate() {
                assert!(a == b || i == offset || i == offset + 1, "byte {i} changed");
            }
        }
    }

    // update16 / update32: change one aligned word of `rest`, compare with recomputation.
    let words = rest.len() / 2;
    if words >= 2 {
        let mut buf = rest[..words * 2].to_vec();
        let check = checksum::checksum(&buf);
        let i = (offset % (words - 1)) * 2;
        let old16 = u16::from_be_bytes([buf[i], buf[i + 1]]);
        let new16 = (pseudo >> 16) as u16;
        buf[i..i + 2].copy_from_slice(&new16.to_be_bytes());
        let updated = checksum::update16(check, old16, new16);
        assert!(same_ones_complement(updated, checksum::checksum(&buf)));

        let check = checksum::checksum(&buf);
        let old32 = u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        buf[i..i + 4].copy_from_slice(&pseudo.to_be_bytes());
        let updated = checksum::update32(check, old32, pseudo);
        assert!(same_ones_complement(updated, checksum::checksum(&buf)));
    }
}

/// 0x0000 and 0xffff are both ones'-complement zero; an incremental update can land on
/// either where recomputation over all-zero data gives the other.
fn same_ones_complement(a: u16, b: u16) -> bool {
    a == b || (a == 0 || a == 0xffff) && (b == 0 || b == 0xffff)
}

fn naive_checksum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for pair in data.chunks(2) {
        acc += u32::from(pair[0]) << 8 | pair.get(1).map_or(0, |&b| u32::from(b));
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}
