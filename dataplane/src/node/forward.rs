//! Stage `forward`: TTL / hop limit, route lookup (in one batch per family), next-hop
//! resolution and the MTU check.
//!
//! - Reads: `kind`, `flow.dst`, `ip_len`, `flags`, `ingress`, the TTL / hop limit.
//! - Writes: the TTL (decremented, IPv4 checksum updated incrementally per RFC 1624),
//!   `out`, `nexthop`.
//! - Next: `Rewrite`, `IcmpError` (time exceeded, unreachable, too big), or `Drop`.
//! - Drops: `ToGateway`, `Blackhole`, `TunnelUnavailable` (VXLAN and WireGuard next hops
//!   until their encapsulation stages exist: never sent in clear), `NeighborUnresolved`,
//!   `Hairpin`, `TooBig` (IPv4 without DF: weir does not fragment), `NoRoute` when the
//!   host interface is the next hop but none is configured.

use crate::batch::{flags, IfIndex, L3Kind, Meta, Next, BATCH_SIZE};
use crate::counters::{DropReason, IcmpErrorKind};
use crate::frame::{Frame, FrameRegion};
use crate::route::MISS;
use crate::snapshot::{NextHop, Snapshot, Tunnel};
use crate::wire::checksum;

/// Scratch arrays for the batch lookups, owned by the worker (no allocation per batch).
#[derive(Debug)]
pub struct Scratch {
    v4_addr: [u32; BATCH_SIZE],
    v4_idx: [u16; BATCH_SIZE],
    v4_out: [u32; BATCH_SIZE],
    v6_addr: [u128; BATCH_SIZE],
    v6_idx: [u16; BATCH_SIZE],
    v6_out: [u32; BATCH_SIZE],
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            v4_addr: [0; BATCH_SIZE],
            v4_idx: [0; BATCH_SIZE],
            v4_out: [0; BATCH_SIZE],
            v6_addr: [0; BATCH_SIZE],
            v6_idx: [0; BATCH_SIZE],
            v6_out: [0; BATCH_SIZE],
        }
    }
}

/// Runs the stage over the batch.
pub fn run(region: &mut FrameRegion<'_>, frames: &[Frame], meta: &mut [Meta], snapshot: &Snapshot, scratch: &mut Scratch) {
    let gateway = crate::flow::FlowKey::map_v4(snapshot.gateway_v4.octets());
    let (mut n4, mut n6) = (0, 0);
    // Pass 1: hop limits, and gather destinations per family.
    for (i, (frame, m)) in frames.iter().zip(meta.iter_mut()).enumerate() {
        if m.next != Next::Forward {
            continue;
        }
        let data = region.data(frame);
        match m.kind {
            L3Kind::Ipv4 => {
                if m.flow.dst == gateway {
                    m.next = Next::Drop(DropReason::ToGateway);
                    continue;
                }
                // RFC 1812 §5.3.1: a packet whose TTL would reach zero is discarded with a
                // time exceeded message.
                if data[14 + 8] <= 1 {
                    m.next = Next::IcmpError(IcmpErrorKind::TimeExceeded, DropReason::TtlExceeded);
                    continue;
                }
                let d = &m.flow.dst;
                scratch.v4_addr[n4] = u32::from_be_bytes([d[12], d[13], d[14], d[15]]);
                scratch.v4_idx[n4] = i as u16;
                n4 += 1;
            }
            L3Kind::Ipv6 => {
                // RFC 8200 §3: "decremented by 1 by each node that forwards the packet ...
                // discarded if Hop Limit was zero when received or is decremented to zero".
                if data[14 + 7] <= 1 {
                    m.next = Next::IcmpError(IcmpErrorKind::TimeExceeded, DropReason::TtlExceeded);
                    continue;
                }
                scratch.v6_addr[n6] = u128::from_be_bytes(m.flow.dst);
                scratch.v6_idx[n6] = i as u16;
                n6 += 1;
            }
            _ => m.next = Next::Drop(DropReason::UnknownEthertype),
        }
    }
    // Pass 2: one batch lookup per family.
    let fib = &*snapshot.fib;
    if n4 > 0 {
        fib.v4.lookup_batch(&scratch.v4_addr[..n4], &mut scratch.v4_out[..n4]);
    }
    if n6 > 0 {
        fib.v6.lookup_batch(&scratch.v6_addr[..n6], &mut scratch.v6_out[..n6]);
    }
    // Pass 3: resolve next hops, check MTU, decrement TTL.
    let v4 = scratch.v4_idx[..n4].iter().zip(&scratch.v4_out[..n4]);
    let v6 = scratch.v6_idx[..n6].iter().zip(&scratch.v6_out[..n6]);
    for (&i, &nh) in v4.chain(v6) {
        let i = usize::from(i);
        let m = &mut meta[i];
        m.next = match resolve(snapshot, m, nh) {
            Ok(out) => {
                decrement(region.data_mut(&frames[i]), m.kind);
                debug_assert_eq!(m.out, out);
                m.nexthop = nh;
                Next::Rewrite
            }
            Err(next) => next,
        };
    }
}

/// The output interface for next hop `nh`, or where the packet goes instead.
fn resolve(snapshot: &Snapshot, m: &mut Meta, nh: u32) -> Result<IfIndex, Next> {
    let unreachable = Next::IcmpError(IcmpErrorKind::Unreachable, DropReason::NoRoute);
    if nh == MISS {
        return Err(unreachable);
    }
    let out = match snapshot.fib.nexthops.get(nh as usize) {
        None | Some(NextHop::Unreachable) => return Err(unreachable),
        Some(NextHop::Blackhole) => return Err(Next::Drop(DropReason::Blackhole)),
        Some(NextHop::Local { interface, .. }) => *interface,
        Some(NextHop::Host) => snapshot.host.ok_or(Next::Drop(DropReason::NoRoute))?,
        Some(NextHop::Remote { node, tunnel: Tunnel::None }) => {
            let known = snapshot.nodes.get(*node as usize).is_some_and(|n| n.mac.is_some());
            match snapshot.uplink {
                Some(up) if known => up,
                _ => return Err(Next::Drop(DropReason::NeighborUnresolved)),
            }
        }
        Some(NextHop::Remote { .. }) => return Err(Next::Drop(DropReason::TunnelUnavailable)),
    };
    if out == m.ingress {
        return Err(Next::Drop(DropReason::Hairpin));
    }
    m.out = out;
    let mtu = snapshot.interface(out).map_or(0, |i| i.mtu);
    if m.ip_len > mtu {
        // IPv6 routers never fragment (RFC 8200 §5); IPv4 with DF asks for PMTUD
        // (RFC 1191). IPv4 without DF would need fragmentation, which weir does not do.
        if m.kind == L3Kind::Ipv6 || m.has(flags::DONT_FRAGMENT) {
            return Err(Next::IcmpError(IcmpErrorKind::TooBig, DropReason::TooBig));
        }
        return Err(Next::Drop(DropReason::TooBig));
    }
    Ok(out)
}

/// Decrements the TTL (updating the IPv4 header checksum incrementally, RFC 1624 eqn. 3,
/// over the TTL/protocol word) or the hop limit.
fn decrement(data: &mut [u8], kind: L3Kind) {
    let ip = &mut data[14..];
    if kind == L3Kind::Ipv4 {
        let old = u16::from_be_bytes([ip[8], ip[9]]);
        ip[8] -= 1;
        let new = u16::from_be_bytes([ip[8], ip[9]]);
        let check = u16::from_be_bytes([ip[10], ip[11]]);
        ip[10..12].copy_from_slice(&checksum::update16(check, old, new).to_be_bytes());
    } else {
        ip[7] -= 1;
    }
}
