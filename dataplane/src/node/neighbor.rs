//! Stage `neighbor`: answers ARP requests and neighbour solicitations for the gateway, in
//! place, so pods configured Calico-style (a /32 or /128 and a default route via
//! 169.254.1.1 or fe80::1) can reach their gateway. The request frame becomes the reply.
//!
//! - Reads: `kind`, `flags`, `ingress`, the ARP or ICMPv6 message.
//! - Writes: the frame (reply), `Counters::neighbor_replies`.
//! - Next: `Tx(ingress)` with the reply, or `Drop`.
//! - Drops: `ArpIgnored` (not a request for the gateway), `NdpInvalid` (fails RFC 4861
//!   §7.1.1 validation), `NdpIgnored` (other neighbour discovery messages).
//!
//! On the host interface weir answers ARP for any address: the host routes only pod
//! prefixes into that link, so every address it asks for is reached through weir.

use std::net::Ipv6Addr;

use crate::batch::{L3Kind, Meta, Next};
use crate::counters::{Counters, DropReason};
use crate::frame::{Frame, FrameRegion};
use crate::snapshot::{Mac, Role, Snapshot};
use crate::wire::checksum;

/// Length of the neighbour advertisement built here: ICMPv6 header (4), flags (4), target
/// (16), target link-layer address option (8).
const NA_LEN: usize = 32;
const NA_FRAME_LEN: usize = 14 + 40 + NA_LEN;

/// Runs the stage over the batch.
pub fn run(
    region: &mut FrameRegion<'_>,
    frames: &mut [Frame],
    meta: &mut [Meta],
    snapshot: &Snapshot,
    counters: &mut Counters,
) {
    let chunk_size = region.chunk_size();
    for (frame, m) in frames.iter_mut().zip(meta.iter_mut()) {
        if m.next != Next::Neighbor {
            continue;
        }
        let Some(iface) = snapshot.interface(m.ingress) else {
            m.next = Next::Drop(DropReason::ArpIgnored);
            continue;
        };
        let proxy_all = matches!(iface.role, Role::Host { .. });
        let result = if m.kind == L3Kind::Arp {
            arp_reply(
                region.data_mut(frame),
                iface.mac,
                snapshot.gateway_v4.octets(),
                proxy_all,
            )
        } else if frame.len() < NA_FRAME_LEN && !frame.set_len(NA_FRAME_LEN, chunk_size) {
            Err(DropReason::NdpInvalid)
        } else {
            ndp_reply(region.data_mut(frame), m, iface.mac, snapshot.gateway_v6)
        };
        m.next = match result {
            Ok(len) => {
                if let Some(len) = len {
                    frame.truncate(len);
                }
                counters.neighbor_replies += 1;
                Next::Tx(m.ingress)
            }
            Err(reason) => Next::Drop(reason),
        };
    }
}

/// Rewrites an ARP request for the gateway into the reply (RFC 826: swap sender and
/// target, fill in our hardware address, opcode 2).
fn arp_reply(
    data: &mut [u8],
    our_mac: Mac,
    gateway: [u8; 4],
    proxy_all: bool,
) -> Result<Option<usize>, DropReason> {
    let (eth, arp) = data.split_at_mut(14);
    let arp = &mut arp[..28];
    let op = u16::from_be_bytes([arp[6], arp[7]]);
    let target = [arp[24], arp[25], arp[26], arp[27]];
    if op != 1 || (!proxy_all && target != gateway) {
        return Err(DropReason::ArpIgnored);
    }
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(&arp[8..14]);
    let sender_ip = [arp[14], arp[15], arp[16], arp[17]];
    arp[7] = 2;
    arp[18..24].copy_from_slice(&sender_mac);
    arp[24..28].copy_from_slice(&sender_ip);
    arp[8..14].copy_from_slice(&our_mac);
    arp[14..18].copy_from_slice(&target);
    eth[0..6].copy_from_slice(&sender_mac);
    eth[6..12].copy_from_slice(&our_mac);
    Ok(None)
}

/// Validates a neighbour solicitation (RFC 4861 §7.1.1) for the gateway and rewrites the
/// frame into a solicited neighbour advertisement (§7.2.4) with the router flag and our
/// link-layer address. `data` is at least 14 + 40 + `NA_LEN` bytes long; the original
/// message length is `m.ip_len - 40`.
fn ndp_reply(
    data: &mut [u8],
    m: &Meta,
    our_mac: Mac,
    gateway: Ipv6Addr,
) -> Result<Option<usize>, DropReason> {
    let l4 = usize::from(m.l4);
    let end = 14 + usize::from(m.ip_len);
    // Extension headers before a neighbour discovery message: not something pods send.
    if l4 != 14 + 40 {
        return Err(DropReason::NdpInvalid);
    }
    let ip = &data[14..54];
    let (hop_limit, src, dst) = (ip[7], m.flow.src, m.flow.dst);
    let msg = &data[l4..end];
    // §7.1.1: "The IP Hop Limit field has a value of 255 ... ICMP Checksum is valid ...
    // ICMP Code is 0 ... ICMP length (derived from the IP length) is 24 or more octets."
    if hop_limit != 255 || msg.len() < 4 || msg[1] != 0 {
        return Err(DropReason::NdpInvalid);
    }
    let pseudo = checksum::pseudo_header_v6(&src, &dst, 58, msg.len() as u32);
    if checksum::fold(checksum::sum(msg, pseudo)) != 0xffff {
        return Err(DropReason::NdpInvalid);
    }
    if msg[0] != 135 {
        return Err(DropReason::NdpIgnored);
    }
    if msg.len() < 24 || msg[8] == 0xff {
        return Err(DropReason::NdpInvalid);
    }
    if msg[8..24] != gateway.octets() {
        return Err(DropReason::NdpIgnored);
    }
    // §7.2.4: a solicitation from the unspecified address (DAD) is answered to all-nodes,
    // without the Solicited flag.
    let dad = src == [0; 16];
    let reply_dst: [u8; 16] = if dad {
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets()
    } else {
        src
    };
    let reply_mac: Mac = if dad {
        [0x33, 0x33, 0, 0, 0, 1]
    } else {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&data[6..12]);
        mac
    };
    data[0..6].copy_from_slice(&reply_mac);
    data[6..12].copy_from_slice(&our_mac);
    let ip = &mut data[14..54];
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&(NA_LEN as u16).to_be_bytes());
    ip[6] = 58;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&gateway.octets());
    ip[24..40].copy_from_slice(&reply_dst);
    let na = &mut data[54..54 + NA_LEN];
    na[0] = 136;
    na[1] = 0;
    na[2..4].copy_from_slice(&[0, 0]);
    // Router, Solicited (unless DAD), Override.
    na[4] = if dad { 0x80 | 0x20 } else { 0x80 | 0x40 | 0x20 };
    na[5..8].copy_from_slice(&[0, 0, 0]);
    na[8..24].copy_from_slice(&gateway.octets());
    na[24] = 2; // target link-layer address option
    na[25] = 1;
    na[26..32].copy_from_slice(&our_mac);
    let pseudo = checksum::pseudo_header_v6(&gateway.octets(), &reply_dst, 58, NA_LEN as u32);
    let c = !checksum::fold(checksum::sum(na, pseudo));
    na[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(Some(54 + NA_LEN))
}
