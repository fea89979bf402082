//! Stage `rewrite`: applies the adjacency chosen by `forward` and selects the output.
//!
//! - Reads: `out`, `nexthop`, `ip_len`, `kind`.
//! - Writes: the MAC header (destination and source from the adjacency), the TTL / hop
//!   limit (decremented; the IPv4 header checksum updated incrementally, RFC 1624 eqn. 3,
//!   over the TTL/protocol word); trims Ethernet padding after the IP packet.
//! - Next: `Tx(out)`.
//!
//! The TTL is decremented here, not in `forward`, so that a packet answered with an ICMP
//! error is quoted exactly as it arrived.

use crate::batch::{L3Kind, Meta, Next};
use crate::counters::DropReason;
use crate::frame::{Frame, FrameRegion};
use crate::snapshot::Snapshot;
use crate::wire::checksum;

/// Runs the stage over the batch.
pub fn run(
    region: &mut FrameRegion<'_>,
    frames: &mut [Frame],
    meta: &mut [Meta],
    snapshot: &Snapshot,
) {
    let adjacencies = &snapshot.fib.adjacencies;
    for (frame, m) in frames.iter_mut().zip(meta.iter_mut()) {
        if m.next != Next::Rewrite {
            continue;
        }
        // `forward` only sends packets here with an adjacency of this snapshot.
        let Some(adj) = adjacencies.get(m.nexthop as usize) else {
            m.next = Next::Drop(DropReason::NeighborUnresolved);
            continue;
        };
        frame.truncate(14 + usize::from(m.ip_len));
        let data = region.data_mut(frame);
        data[0..12].copy_from_slice(&adj.macs);
        decrement(data, m.kind);
        m.next = Next::Tx(m.out);
    }
}

#[inline]
fn decrement(data: &mut [u8], kind: L3Kind) {
    let ip = &mut data[14..];
    if kind == L3Kind::Ipv4 {
        let old = u16::from_be_bytes([ip[8], ip[9]]);
        ip[8] = ip[8].wrapping_sub(1);
        let new = u16::from_be_bytes([ip[8], ip[9]]);
        let check = u16::from_be_bytes([ip[10], ip[11]]);
        ip[10..12].copy_from_slice(&checksum::update16(check, old, new).to_be_bytes());
    } else {
        ip[7] = ip[7].wrapping_sub(1);
    }
}
