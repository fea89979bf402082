//! Stage `rewrite`: the L2 header for the chosen output, and output selection.
//!
//! - Reads: `out`, `nexthop`, `ip_len`.
//! - Writes: destination MAC (the pod's, the remote node's on the uplink, or the host
//!   stack's), source MAC (weir's on the output link); trims Ethernet padding after the IP
//!   packet.
//! - Next: `Tx(out)`, or `Drop(NeighborUnresolved)` if the next hop lost its MAC between
//!   the stages (it cannot within one snapshot; the check keeps the stage total).

use crate::batch::{Meta, Next};
use crate::counters::DropReason;
use crate::frame::{Frame, FrameRegion};
use crate::snapshot::{Mac, NextHop, Role, Snapshot};

/// Runs the stage over the batch.
pub fn run(region: &mut FrameRegion<'_>, frames: &mut [Frame], meta: &mut [Meta], snapshot: &Snapshot) {
    for (frame, m) in frames.iter_mut().zip(meta.iter_mut()) {
        if m.next != Next::Rewrite {
            continue;
        }
        let Some(out) = snapshot.interface(m.out) else {
            m.next = Next::Drop(DropReason::NeighborUnresolved);
            continue;
        };
        let Some(dst) = destination_mac(snapshot, m.nexthop, &out.role) else {
            m.next = Next::Drop(DropReason::NeighborUnresolved);
            continue;
        };
        frame.truncate(14 + usize::from(m.ip_len));
        let data = region.data_mut(frame);
        data[0..6].copy_from_slice(&dst);
        data[6..12].copy_from_slice(&out.mac);
        m.next = Next::Tx(m.out);
    }
}

fn destination_mac(snapshot: &Snapshot, nexthop: u32, out_role: &Role) -> Option<Mac> {
    match snapshot.fib.nexthops.get(nexthop as usize)? {
        NextHop::Local { mac, .. } => Some(*mac),
        NextHop::Remote { node, .. } => snapshot.nodes.get(*node as usize)?.mac,
        NextHop::Host => match out_role {
            Role::Host { peer_mac } => Some(*peer_mac),
            _ => None,
        },
        NextHop::Unreachable | NextHop::Blackhole => None,
    }
}
