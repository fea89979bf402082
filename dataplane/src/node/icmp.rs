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
        let built = match m.kind {
            L3Kind::Ipv4 => build_v4(region, frame, m, kind, iface.mac, snapshot, out_mtu),
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
    };
    let ip = &mut data[14..34];
    ip.copy_from_slice(&[0; 20]);
    ip[0] = 0x45;
    ip[1] = 0xc0; // precedence: internetwork control (RFC 1812 §4.3.2.5)
    ip[2..4].copy_from_slice(&((HDR + quoted) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 1;
    ip[12..16].copy_from_slice(&snapshot.icmp.source_v4.octets());
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
    };
    let src = snapshot.icmp.source_v6.octets();
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
