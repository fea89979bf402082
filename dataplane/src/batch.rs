//! The vector the pipeline passes around: up to [`BATCH_SIZE`] frames with per-packet
//! metadata.
//!
//! As in VPP, a stage takes the whole batch, acts on the packets whose [`Next`] names it,
//! and writes each one's next stage. Frames and metadata live in two parallel arrays
//! (structure of arrays), allocated once when the batch is created and reused for every
//! burst: pushing and clearing never allocate.

use crate::counters::{DropReason, IcmpErrorKind};
use crate::flow::FlowKey;
use crate::frame::Frame;

/// The most frames a batch holds (the burst size of the workers).
pub const BATCH_SIZE: usize = 256;

/// weir's own index of an interface: its position in the snapshot's interface table (not
/// the kernel's ifindex).
pub type IfIndex = u16;

/// Where a packet goes next. The stages run in this order; a packet skips every stage that
/// is not its `Next`, and the terminal variants (`Tx`, `Drop`) are handled by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Next {
    /// Fresh from RX: to be parsed.
    #[default]
    Parse,
    /// Parsed; to be checked against its ingress pod's addresses.
    AntiSpoof,
    /// An ARP request or neighbour solicitation for the gateway: to be answered in place.
    Neighbor,
    /// An IP packet to be routed (TTL, route lookup, MTU).
    Forward,
    /// Routed; to be checked against network policy (conntrack first).
    Policy,
    /// Routed and allowed; its MACs are to be rewritten for the output interface.
    Rewrite,
    /// Cannot be forwarded; an ICMP error is to be generated in its place (rate limited).
    IcmpError(IcmpErrorKind, DropReason),
    /// Owned by another worker (the flow's owner, see `node::steer`): the unmodified frame
    /// is to be handed to that worker, which runs the pipeline on it.
    Steer(u16),
    /// To be transmitted on this interface.
    Tx(IfIndex),
    /// To be dropped, for this reason.
    Drop(DropReason),
}

/// What the parse stage found the frame to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L3Kind {
    #[default]
    Unknown,
    Arp,
    Ipv4,
    Ipv6,
}

/// Per-packet flags.
pub mod flags {
    /// The packet is a fragment (IPv4 MF or offset, or an IPv6 fragment header).
    pub const FRAGMENT: u8 = 1 << 0;
    /// The packet is a non-first fragment: no transport header.
    pub const LATER_FRAGMENT: u8 = 1 << 1;
    /// IPv4 DF bit set.
    pub const DONT_FRAGMENT: u8 = 1 << 2;
    /// The packet is an ICMP error message (never answered with another error).
    pub const ICMP_ERROR: u8 = 1 << 3;
    /// An ICMPv6 neighbour discovery message (types 133–137).
    pub const NDP: u8 = 1 << 4;
    /// Routed to a remote node over WireGuard: the driver seals it for the node's peer
    /// before it leaves through `out` (the uplink).
    pub const ENCRYPT: u8 = 1 << 5;
    /// Translated by the service stage (`node::service`): it may leave through the
    /// interface it came in on (a node port whose endpoint is reached through the uplink, a
    /// pod reaching itself through its service).
    pub const SERVICE_NAT: u8 = 1 << 6;
}

/// Metadata of one packet. Offsets are from the first packet byte.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta {
    /// Flow key (see `flow` for byte order). Filled by parse for IP packets.
    pub flow: FlowKey,
    /// The interface the frame arrived on. Set by the driver.
    pub ingress: IfIndex,
    /// The interface chosen by routing (valid from `Rewrite` on).
    pub out: IfIndex,
    /// The next-hop id from the route lookup (valid from `Rewrite` on).
    pub nexthop: u32,
    /// Offset of the L3 header.
    pub l3: u16,
    /// Offset of the L4 header (valid for IP packets that are not later fragments).
    pub l4: u16,
    /// Length of the IP packet (header and payload) according to its header; bytes after it
    /// in the frame are Ethernet padding.
    pub ip_len: u16,
    /// TTL (IPv4) or hop limit (IPv6) as received.
    pub ttl: u8,
    /// What the L3 header is.
    pub kind: L3Kind,
    /// Flags from [`flags`].
    pub flags: u8,
    /// The next stage.
    pub next: Next,
}

impl Meta {
    /// Metadata of a frame fresh from `ingress`.
    pub fn new(ingress: IfIndex) -> Self {
        Meta {
            ingress,
            ..Meta::default()
        }
    }

    /// Whether a flag from [`flags`] is set.
    #[inline]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A batch of frames and their metadata.
#[derive(Debug)]
pub struct Batch {
    frames: Vec<Frame>,
    meta: Vec<Meta>,
    /// How many of the first frames were handed in by another worker to be processed here.
    handed: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch with room for [`BATCH_SIZE`] frames.
    pub fn new() -> Self {
        Batch {
            frames: Vec::with_capacity(BATCH_SIZE),
            meta: Vec::with_capacity(BATCH_SIZE),
            handed: 0,
        }
    }

    /// Number of frames in the batch.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether the batch is full.
    pub fn is_full(&self) -> bool {
        self.frames.len() == BATCH_SIZE
    }

    /// Adds a frame received on `ingress`. When the batch is full the frame is handed back.
    pub fn push(&mut self, frame: Frame, ingress: IfIndex) -> Result<(), Frame> {
        if self.is_full() {
            return Err(frame);
        }
        self.frames.push(frame);
        self.meta.push(Meta::new(ingress));
        Ok(())
    }

    /// Adds a frame another worker handed over to be processed here, as received on
    /// `ingress` (a packet of a flow this worker owns). Handed-in frames come first: when
    /// the batch is full, or already holds a frame received here, the frame is handed back.
    pub fn push_handed(&mut self, frame: Frame, ingress: IfIndex) -> Result<(), Frame> {
        if self.handed != self.frames.len() {
            return Err(frame);
        }
        self.push(frame, ingress)?;
        self.handed += 1;
        Ok(())
    }

    /// How many of the first frames were handed in ([`Batch::push_handed`]).
    pub fn handed(&self) -> usize {
        self.handed
    }

    /// Frames and metadata, for stages: the frames may be resized, the metadata rewritten.
    pub fn parts_mut(&mut self) -> (&mut [Frame], &mut [Meta]) {
        (&mut self.frames, &mut self.meta)
    }

    /// The metadata, read-only.
    pub fn meta(&self) -> &[Meta] {
        &self.meta
    }

    /// The frames, read-only.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Empties the batch, handing every frame and its metadata to `sink` (the driver's
    /// output selection). The batch keeps its capacity.
    pub fn drain(&mut self, mut sink: impl FnMut(Frame, &Meta)) {
        for (frame, meta) in self.frames.drain(..).zip(self.meta.iter()) {
            sink(frame, meta);
        }
        self.meta.clear();
        self.handed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameRegion;

    #[test]
    fn push_until_full_then_drain_keeps_capacity() {
        let mut mem = vec![0u8; (BATCH_SIZE + 1) * 256];
        let region = FrameRegion::new(&mut mem, 256);
        let mut b = Batch::new();
        for i in 0..BATCH_SIZE {
            b.push(region.frame(i as u64 * 256, 60).unwrap(), 3)
                .unwrap();
        }
        let extra = region.frame(BATCH_SIZE as u64 * 256, 60).unwrap();
        assert!(b.push(extra, 3).is_err());
        let mut n = 0;
        b.drain(|f, m| {
            assert_eq!(f.len(), 60);
            assert_eq!(m.ingress, 3);
            assert_eq!(m.next, Next::Parse);
            n += 1;
        });
        assert_eq!(n, BATCH_SIZE);
        assert!(b.is_empty());
        assert!(b.frames.capacity() >= BATCH_SIZE);
    }
}
