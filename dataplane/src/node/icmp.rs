//! Stage `icmp`: turns a packet that cannot be forwarded into the ICMP error that explains
//! why, in place, and sends it back out of the interface it came from. Rate limited per
//! worker by a token bucket driven by the batch's `now`.
//!
//! - Reads: `IcmpError(kind, reason)`, `ingress`, `flags`, `ip_len`, `flow`.
//! - Writes: the frame (new Ethernet, IP and ICMP headers in the headroom; the original
//!   datagram stays where it is as the error's payload), `Counters::icmp_errors`,
//!   `icmp_rate_limited`, and the drop counter of `reason` (the original packet was
//!   dropped; the error took its frame).
//! - Next: `Tx(ingress)`, or `Drop(reason)` when no error may or can be sent.
//!
//! For a service without endpoints (`node::service`), the answer is what a closed port
//! sends: an ICMP port unreachable from the service's address for UDP and SCTP, a TCP
//! reset from the service's address and port for TCP ([`IcmpErrorKind::Reset`]).
//!
//! When an error must not be sent (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e)): for an ICMP error
//! message, for a non-first fragment, or when the bucket is empty. Sources and multicast
//! destinations never reach this stage (parse drops them). The payload is as much of the
//! original as fits in 576 bytes (IPv4, RFC 1812 §4.3.2.3) or 1280 bytes (IPv6,
//! RFC 4443 §2.4(c)).

use crate::batch::{flags, L3Kind, Meta, Next};
use crate::counters::{Counters, IcmpErrorKind};
use crate::frame::{Frame, FrameRegion};
use crate::snapshot::{IcmpConfig, Snapshot};
use crate::wire::checksum;

/// A token bucket in nanoseconds, owned by one worker.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: u64,
    last_ns: u64,
}

impl Default for TokenBucket {
    fn default() -> Self {
        TokenBucket {
            tokens: u64::MAX,
            last_ns: 0,
        }
    }
}

impl TokenBucket {
    /// Takes one token at time `now_ns`, refilling at `cfg.rate_per_sec` up to `cfg.burst`.
    pub fn take(&mut self, now_ns: u64, cfg: &IcmpConfig) -> bool {
        if cfg.rate_per_sec == 0 {
            return false;
        }
        let burst = u64::from(cfg.burst.max(1));
        let per_token = 1_000_000_000 / u64::from(cfg.rate_per_sec);
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let refill = elapsed / per_token.max(1);
        if refill > 0 || self.tokens > burst {
            self.tokens = self.tokens.min(burst).saturating_add(refill).min(burst);
            self.last_ns = now_ns;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

const V4_MAX: usize = 576;
const V6_MAX: usize = 1280;

/// Runs the stage over the batch.
pub fn run(
    region: &mut FrameRegion<'_>,
    frames: &mut [Frame],
    meta: &mut [Meta],
    snapshot: &Snapshot,
    bucket: &mut TokenBucket,
    counters: &mut Counters,
    now_ns: u64,
) {
    for (frame, m) in frames.iter_mut().zip(meta.iter_mut()) {
        let Next::IcmpError(kind, reason) = m.next else {
            continue;
        };
        if m.has(flags::ICMP_ERROR) || m.has(flags::LATER_FRAGMENT) {
            m.next = Next::Drop(reason);
            continue;
        }
        let Some(iface) = snapshot.interface(m.ingress) else {
            m.next = Next::Drop(reason);
            continue;
        };
        if !bucket.take(now_ns, &snapshot.icmp) {
            counters.icmp_rate_limited += 1;
            m.next = Next::Drop(reason);
            continue;
        }
        // The next hop's MTU: the interface's, less the tunnel's overhead for WireGuard.
        let out_mtu = snapshot
            .fib
            .adjacencies
            .get(m.nexthop as usize)
            .filter(|a| a.out == m.out)
            .map(|a| a.mtu)
            .or_else(|| snapshot.interface(m.out).map(|i| i.mtu))
            .unwrap_or(0);
        let built = match (kind, m.kind) {
            (IcmpErrorKind::Reset, _) => build_reset(region, frame, m, iface.mac),
            (_, L3Kind::Ipv4) => build_v4(region, frame, m, kind, iface.mac, snapshot, out_mtu),
            _ => build_v6(region, frame, m, kind, iface.mac, snapshot, out_mtu),
        };
        if built {
            counters.drop(reason);
            counters.icmp_errors[kind as usize] += 1;
            m.next = Next::Tx(m.ingress);
        } else {
            m.next = Next::Drop(reason);
        }
    }
}

/// Next-hop MTU for "too big" errors: the output interface's, which `forward` left in
/// `m.out` before it refused the packet.
fn build_v4(
    region: &mut FrameRegion<'_>,
    frame: &mut Frame,
    m: &Meta,
    kind: IcmpErrorKind,
    our_mac: [u8; 6],
    snapshot: &Snapshot,
    mtu: u16,
) -> bool {
    const HDR: usize = 20 + 8;
    let quoted = usize::from(m.ip_len).min(V4_MAX - HDR);
    if !frame.push_head(HDR) {
        return false;
    }
    frame.truncate(14 + HDR + quoted);
    let data = region.data_mut(frame);
    // The original Ethernet header now starts at HDR; its source is where the error goes.
    let mut to = [0u8; 6];
    to.copy_from_slice(&data[HDR + 6..HDR + 12]);
    data[0..6].copy_from_slice(&to);
    data[6..12].copy_from_slice(&our_mac);
    data[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let (ty, code, rest): (u8, u8, [u8; 4]) = match kind {
        IcmpErrorKind::TimeExceeded => (11, 0, [0; 4]),
        IcmpErrorKind::Unreachable => (3, 0, [0; 4]),
        IcmpErrorKind::TooBig => {
            let mtu = mtu.to_be_bytes();
            (3, 4, [0, 0, mtu[0], mtu[1]])
        }
        IcmpErrorKind::PortUnreachable | IcmpErrorKind::Reset => (3, 3, [0; 4]),
    };
    // A port unreachable comes from the address the datagram was sent to (a service's
    // frontend), as a host's own does; other errors from the gateway, a router's.
    let source = if kind == IcmpErrorKind::PortUnreachable {
        [
            m.flow.dst[12],
            m.flow.dst[13],
            m.flow.dst[14],
            m.flow.dst[15],
        ]
    } else {
        snapshot.icmp.source_v4.octets()
    };
    let ip = &mut data[14..34];
    ip.copy_from_slice(&[0; 20]);
    ip[0] = 0x45;
    ip[1] = 0xc0; // precedence: internetwork control (RFC 1812 §4.3.2.5)
    ip[2..4].copy_from_slice(&((HDR + quoted) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 1;
    ip[12..16].copy_from_slice(&source);
    ip[16..20].copy_from_slice(&m.flow.src[12..16]);
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let msg = &mut data[34..34 + 8 + quoted];
    msg[0] = ty;
    msg[1] = code;
    msg[2..4].copy_from_slice(&[0, 0]);
    msg[4..8].copy_from_slice(&rest);
    let c = checksum::checksum(msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    true
}

fn build_v6(
    region: &mut FrameRegion<'_>,
    frame: &mut Frame,
    m: &Meta,
    kind: IcmpErrorKind,
    our_mac: [u8; 6],
    snapshot: &Snapshot,
    mtu: u16,
) -> bool {
    const HDR: usize = 40 + 8;
    let quoted = usize::from(m.ip_len).min(V6_MAX - HDR);
    if !frame.push_head(HDR) {
        return false;
    }
    frame.truncate(14 + HDR + quoted);
    let data = region.data_mut(frame);
    let mut to = [0u8; 6];
    to.copy_from_slice(&data[HDR + 6..HDR + 12]);
    data[0..6].copy_from_slice(&to);
    data[6..12].copy_from_slice(&our_mac);
    data[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let (ty, code, rest): (u8, u8, [u8; 4]) = match kind {
        IcmpErrorKind::TimeExceeded => (3, 0, [0; 4]),
        IcmpErrorKind::Unreachable => (1, 0, [0; 4]),
        IcmpErrorKind::TooBig => (2, 0, u32::from(mtu).to_be_bytes()),
        IcmpErrorKind::PortUnreachable | IcmpErrorKind::Reset => (1, 4, [0; 4]),
    };
    let src = if kind == IcmpErrorKind::PortUnreachable {
        m.flow.dst
    } else {
        snapshot.icmp.source_v6.octets()
    };
    let ip = &mut data[14..54];
    ip.copy_from_slice(&[0; 40]);
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((8 + quoted) as u16).to_be_bytes());
    ip[6] = 58;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&m.flow.src);
    let msg = &mut data[54..54 + 8 + quoted];
    msg[0] = ty;
    msg[1] = code;
    msg[2..4].copy_from_slice(&[0, 0]);
    msg[4..8].copy_from_slice(&rest);
    let pseudo = checksum::pseudo_header_v6(&src, &m.flow.src, 58, (8 + quoted) as u32);
    let c = !checksum::fold(checksum::sum(msg, pseudo));
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    true
}

/// Turns a TCP segment into the reset that answers it (RFC 9293 §3.10.7.1, a segment to
/// a CLOSED port: "If the ACK bit is off, sequence number zero is used, <SEQ=0>
/// <ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; if the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>"),
/// from the address and port it was sent to, in place: Ethernet, a fresh IP header
/// (options and extension headers dropped) and a 20-byte TCP header. A reset is never
/// answered. False (the caller drops) when the segment is too short or a reset.
fn build_reset(
    region: &mut FrameRegion<'_>,
    frame: &mut Frame,
    m: &Meta,
    our_mac: [u8; 6],
) -> bool {
    let (l3, l4) = (usize::from(m.l3), usize::from(m.l4));
    let data = region.data(frame);
    if m.flow.proto != 6 || data.len() < l4 + 20 || l4 < l3 {
        return false;
    }
    let seq = u32::from_be_bytes([data[l4 + 4], data[l4 + 5], data[l4 + 6], data[l4 + 7]]);
    let ack = u32::from_be_bytes([data[l4 + 8], data[l4 + 9], data[l4 + 10], data[l4 + 11]]);
    let offset = usize::from(data[l4 + 12] >> 4) * 4;
    let tcp_flags = data[l4 + 13];
    if tcp_flags & 0x04 != 0 {
        return false;
    }
    let payload = usize::from(m.ip_len).saturating_sub((l4 - l3) + offset);
    // SYN and FIN each take a sequence number.
    let seg_len =
        payload as u32 + u32::from(tcp_flags & 0x02 != 0) + u32::from(tcp_flags & 0x01 != 0);
    let (rst_seq, rst_ack, rst_flags) = if tcp_flags & 0x10 != 0 {
        (ack, 0, 0x04)
    } else {
        (0, seq.wrapping_add(seg_len), 0x14)
    };
    let mut to_mac = [0u8; 6];
    to_mac.copy_from_slice(&data[6..12]);
    let v4 = m.kind == L3Kind::Ipv4;
    let ip_len = if v4 { 20 } else { 40 };
    if 14 + ip_len + 20 > data.len() {
        return false;
    }
    frame.truncate(14 + ip_len + 20);
    let data = region.data_mut(frame);
    data[0..6].copy_from_slice(&to_mac);
    data[6..12].copy_from_slice(&our_mac);
    let (src, dst) = (m.flow.dst, m.flow.src);
    let pseudo = if v4 {
        data[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut data[14..34];
        ip.copy_from_slice(&[0; 20]);
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src[12..]);
        ip[16..20].copy_from_slice(&dst[12..]);
        let c = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let s4 = [src[12], src[13], src[14], src[15]];
        let d4 = [dst[12], dst[13], dst[14], dst[15]];
        checksum::pseudo_header_v4(s4, d4, 6, 20)
    } else {
        data[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        let ip = &mut data[14..54];
        ip.copy_from_slice(&[0; 40]);
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&20u16.to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
        checksum::pseudo_header_v6(&src, &dst, 6, 20)
    };
    let tcp = &mut data[14 + ip_len..14 + ip_len + 20];
    tcp.copy_from_slice(&[0; 20]);
    tcp[0..2].copy_from_slice(&m.flow.dst_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&m.flow.src_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&rst_seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&rst_ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = rst_flags;
    let c = !checksum::fold(checksum::sum(tcp, pseudo));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let cfg = IcmpConfig {
            rate_per_sec: 1000,
            burst: 3,
            ..IcmpConfig::default()
        };
        let mut b = TokenBucket::default();
        let t0 = 5_000_000_000;
        assert!((0..3).all(|_| b.take(t0, &cfg)));
        assert!(!b.take(t0, &cfg));
        assert!(!b.take(t0 + 999_999, &cfg));
        assert!(b.take(t0 + 1_000_000, &cfg));
        assert!(!b.take(t0 + 1_000_000, &cfg));
        assert!((0..3).all(|_| b.take(t0 + 1_000_000_000, &cfg)));
        assert!(!b.take(t0 + 1_000_000_000, &cfg));
        let off = IcmpConfig {
            rate_per_sec: 0,
            ..cfg
        };
        assert!(!TokenBucket::default().take(t0, &off));
    }
}
