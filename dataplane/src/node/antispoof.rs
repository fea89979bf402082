//! Stage `antispoof`: a frame from a pod's interface must carry that pod's MAC and IP.
//!
//! - Reads: `ingress`, `kind`, `flow.src`, `flags`, the Ethernet source and, for ARP, the
//!   sender hardware and protocol addresses.
//! - Next: `Neighbor` (ARP, neighbour discovery), `Forward` (IP), or `Drop`.
//! - Drops: `SpoofedMac`, `SpoofedIp`, `UnknownIngress`-style frames from an interface the
//!   snapshot does not know are counted as `SpoofedMac` (nobody may send from there).
//!
//! Only pod interfaces are checked: the uplink and the host interface carry traffic from
//! many sources. On a pod link, neighbour discovery may come from the pod's link-local
//! address or, during duplicate address detection, from `::` (RFC 4862 §5.4.2).

use crate::batch::{flags, L3Kind, Meta, Next};
use crate::counters::DropReason;
use crate::flow::FlowKey;
use crate::frame::{Frame, FrameRegion};
use crate::snapshot::{PodPort, Role, Snapshot};

/// Runs the stage over the batch.
pub fn run(region: &FrameRegion<'_>, frames: &[Frame], meta: &mut [Meta], snapshot: &Snapshot) {
    for (frame, m) in frames.iter().zip(meta.iter_mut()) {
        if m.next != Next::AntiSpoof {
            continue;
        }
        let Some(iface) = snapshot.interface(m.ingress) else {
            m.next = Next::Drop(DropReason::SpoofedMac);
            continue;
        };
        if let Role::Pod(pod) = &iface.role {
            if let Err(reason) = check(region.data(frame), m, pod) {
                m.next = Next::Drop(reason);
                continue;
            }
        }
        m.next = match m.kind {
            L3Kind::Arp => Next::Neighbor,
            _ if m.has(flags::NDP) => Next::Neighbor,
            _ => Next::Forward,
        };
    }
}

fn check(data: &[u8], m: &Meta, pod: &PodPort) -> Result<(), DropReason> {
    if data[6..12] != pod.mac {
        return Err(DropReason::SpoofedMac);
    }
    match m.kind {
        L3Kind::Arp => {
            // Parse guaranteed 28 bytes of ARP after the Ethernet header.
            let arp = &data[14..42];
            if arp[8..14] != pod.mac {
                return Err(DropReason::SpoofedMac);
            }
            let sender = [arp[14], arp[15], arp[16], arp[17]];
            let ours = pod.ipv4.is_some_and(|a| a.octets() == sender);
            if !ours && sender != [0; 4] {
                return Err(DropReason::SpoofedIp);
            }
        }
        L3Kind::Ipv4 => {
            if pod.ipv4.map(|a| FlowKey::map_v4(a.octets())) != Some(m.flow.src) {
                return Err(DropReason::SpoofedIp);
            }
        }
        L3Kind::Ipv6 => {
            let src = m.flow.src;
            let ours = pod.ipv6.is_some_and(|a| a.octets() == src);
            let ndp_ok =
                m.has(flags::NDP) && (src == [0; 16] || (src[0] == 0xfe && src[1] & 0xc0 == 0x80));
            if !ours && !ndp_ok {
                return Err(DropReason::SpoofedIp);
            }
        }
        L3Kind::Unknown => return Err(DropReason::UnknownEthertype),
    }
    Ok(())
}
