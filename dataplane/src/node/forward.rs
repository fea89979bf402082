//! Stage `forward`: TTL / hop limit, route lookup (in one batch per family), next-hop
//! resolution and the MTU check.
//!
//! - Reads: `kind`, `flow.dst`, `ip_len`, `flags`, `ingress`, `ttl`; not the frame.
//! - Writes: `out`, `nexthop` (the adjacency `rewrite` applies).
//! - Next: `Policy`, `IcmpError` (time exceeded, unreachable, too big), or `Drop`.
//! - WireGuard next hops: like any other, with the tunnel's overhead taken off the MTU,
//!   and flagged `ENCRYPT`; their adjacency names the peer, which the `output` stage reads
//!   (no second lookup of the destination).
//! - Drops: `ToGateway`, `Blackhole`, `TunnelUnavailable` (VXLAN next hops until their
//!   encapsulation stage exists: never sent in clear), `WireguardNoPeer` (a WireGuard
//!   next hop without a peer: never sent in clear), `NeighborUnresolved`,
//!   `Hairpin`, `TooBig` (IPv4 without DF: weir does not fragment), `NoRoute` when the
//!   host interface is the next hop but none is configured.

use crate::batch::{flags, L3Kind, Meta, Next, BATCH_SIZE};
use crate::counters::{DropReason, IcmpErrorKind};
use crate::frame::Frame;
use crate::route::MISS;
use crate::snapshot::{AdjacencyAction, Snapshot};

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
pub fn run(frames: &[Frame], meta: &mut [Meta], snapshot: &Snapshot, scratch: &mut Scratch) {
    let gateway = crate::flow::FlowKey::map_v4(snapshot.gateway_v4.octets());
    let (mut n4, mut n6) = (0, 0);
    // Pass 1: hop limits, and gather destinations per family.
    for (i, m) in meta.iter_mut().enumerate().take(frames.len()) {
        if m.next != Next::Forward {
            continue;
        }
        // RFC 1812 §5.3.1: a packet whose TTL would reach zero is discarded with a time
        // exceeded message. RFC 8200 §3: the same for the hop limit.
        if m.ttl <= 1 {
            m.next = Next::IcmpError(IcmpErrorKind::TimeExceeded, DropReason::TtlExceeded);
            continue;
        }
        match m.kind {
            L3Kind::Ipv4 => {
                if m.flow.dst == gateway {
                    m.next = Next::Drop(DropReason::ToGateway);
                    continue;
                }
                let d = &m.flow.dst;
                scratch.v4_addr[n4] = u32::from_be_bytes([d[12], d[13], d[14], d[15]]);
                scratch.v4_idx[n4] = i as u16;
                n4 += 1;
            }
            L3Kind::Ipv6 => {
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
        fib.v4
            .lookup_batch(&scratch.v4_addr[..n4], &mut scratch.v4_out[..n4]);
    }
    if n6 > 0 {
        fib.v6
            .lookup_batch(&scratch.v6_addr[..n6], &mut scratch.v6_out[..n6]);
    }
    // Pass 3: act on the adjacency, check the MTU.
    let v4 = scratch.v4_idx[..n4].iter().zip(&scratch.v4_out[..n4]);
    let v6 = scratch.v6_idx[..n6].iter().zip(&scratch.v6_out[..n6]);
    for (&i, &nh) in v4.chain(v6) {
        let m = &mut meta[usize::from(i)];
        m.next = resolve(snapshot, m, nh);
    }
}

/// Where a packet routed to next hop `nh` goes.
#[inline]
fn resolve(snapshot: &Snapshot, m: &mut Meta, nh: u32) -> Next {
    let unreachable = Next::IcmpError(IcmpErrorKind::Unreachable, DropReason::NoRoute);
    let Some(adj) = snapshot.fib.adjacencies.get(nh as usize) else {
        // MISS, or (impossible by construction) an id past the table.
        debug_assert!(nh == MISS, "next hop {nh} is not in the table");
        return unreachable;
    };
    let mut encrypt = false;
    match adj.action {
        AdjacencyAction::Forward => {}
        AdjacencyAction::Encrypt => encrypt = true,
        AdjacencyAction::Unreachable => return unreachable,
        AdjacencyAction::Blackhole => return Next::Drop(DropReason::Blackhole),
        AdjacencyAction::TunnelUnavailable => return Next::Drop(DropReason::TunnelUnavailable),
        AdjacencyAction::NoPeer => return Next::Drop(DropReason::WireguardNoPeer),
        AdjacencyAction::NeighborUnresolved => return Next::Drop(DropReason::NeighborUnresolved),
        AdjacencyAction::NoHostInterface => return Next::Drop(DropReason::NoRoute),
    }
    if adj.out == m.ingress && !m.has(flags::SERVICE_NAT) {
        return Next::Drop(DropReason::Hairpin);
    }
    m.out = adj.out;
    m.nexthop = nh;
    if m.ip_len > adj.mtu {
        // IPv6 routers never fragment (RFC 8200 §5); IPv4 with DF asks for PMTUD
        // (RFC 1191). IPv4 without DF would need fragmentation, which weir does not do.
        if m.kind == L3Kind::Ipv6 || m.has(flags::DONT_FRAGMENT) {
            return Next::IcmpError(IcmpErrorKind::TooBig, DropReason::TooBig);
        }
        return Next::Drop(DropReason::TooBig);
    }
    // Only a packet that goes on is sealed: an ICMP error made in its place goes back
    // to its source in clear, like any other.
    if encrypt {
        m.flags |= flags::ENCRYPT;
    }
    Next::Policy
}
