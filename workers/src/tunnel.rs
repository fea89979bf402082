//! WireGuard in the worker that owns the uplink: sealing what routing flagged `ENCRYPT`
//! into outer Ethernet/IP/UDP + WireGuard in the same UMEM frame, opening what arrives on
//! the WireGuard port back into an Ethernet frame for the pipeline, and the control
//! messages (handshakes, cookies, keepalives) that need frames of their own.
//!
//! In a frame received by AF_XDP the packet starts [`XDP_PACKET_HEADROOM`] bytes into the
//! frame, which leaves room in front for the outer headers; the inner packet is copied
//! once (boringtun seals from one buffer into another) and sealed straight into the frame.
//!
//! Peers are owned by this worker alone; other workers hand their flagged frames over
//! (see `handoff`), so no lock is taken per packet.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use weir_crypto::outer::{self, OuterPath, ETH_LEN};
use weir_crypto::peers::{Opened, PeerConfig, PeerId, Peers, Sealed, WgCounters};
use weir_crypto::EncryptionMode;
use weir_dataplane::snapshot::{Mac, Role};
use weir_dataplane::{IfIndex, Snapshot};

use crate::xsk::XDP_PACKET_HEADROOM;

/// What a worker needs to run WireGuard on its uplink.
#[derive(Debug)]
pub struct WireGuardSetup {
    pub peers: Peers,
    /// The UDP port WireGuard listens on (and sends from).
    pub port: u16,
    /// This node's underlay address (the uplink's).
    pub local: IpAddr,
    pub mode: EncryptionMode,
}

/// A new peer set and the underlay neighbours that go with it, left by the control thread
/// for the uplink's worker, which takes it on its next timer tick (a `try_lock` every
/// 100 ms; never on the packet path).
#[derive(Debug, Default)]
pub struct PeerUpdate {
    pub peers: Vec<PeerConfig>,
    /// Underlay address and MAC of every remote node.
    pub neighbors: Vec<(IpAddr, Mac)>,
}

/// Where the control thread leaves a [`PeerUpdate`], and where the worker reports back
/// the outcome (`Err` with the reason when the set was refused; the old one stays).
#[derive(Debug, Default)]
pub struct PeerMailbox {
    pub pending: Mutex<Option<PeerUpdate>>,
    pub applied: Mutex<Option<Result<u64, String>>>,
}

/// Shared handle to a [`PeerMailbox`].
pub type SharedPeerMailbox = Arc<PeerMailbox>;

/// Counters of the tunnel beyond the peers' own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelCounters {
    /// Frames routed over WireGuard to a node without a usable peer: dropped, never sent
    /// in clear.
    pub no_peer: u64,
    /// Messages for an endpoint whose MAC is not known.
    pub no_neighbor: u64,
    /// Frames or messages dropped for want of room: no headroom for the outer headers,
    /// no free frame for a timer's message.
    pub no_room: u64,
    /// Frames the tunnel could not seal or deliver: not IP, too short or too long, a peer
    /// without endpoint, headers that would not fit (dropped).
    pub unusable: u64,
    /// Frames sealed and sent.
    pub sealed: u64,
    /// Inner packets delivered to the pipeline.
    pub opened: u64,
    /// Handshake, cookie and keepalive messages sent.
    pub control: u64,
    /// Peer sets taken from the mailbox, and refused.
    pub peer_updates: u64,
    pub peer_updates_refused: u64,
}

/// What to do with a frame received on the uplink.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Not WireGuard for this node: to the pipeline as it is.
    Pass,
    /// Opened: an Ethernet frame of this length at the same address, for the pipeline.
    Deliver(u32),
    /// Answered in the same frame: send `(addr, len)` on the uplink, then flush the peer
    /// if given.
    Reply(u64, u32, Option<PeerId>),
    /// Consumed or dropped (counted): recycle the frame.
    Done,
}

/// The sealing and opening engine of the uplink's worker (public for the benchmark).
pub struct Tunnel {
    peers: Peers,
    port: u16,
    local: IpAddr,
    pub(crate) uplink: IfIndex,
    uplink_mac: Mac,
    neighbors: Vec<(IpAddr, Mac)>,
    scratch: Vec<u8>,
    out: Vec<u8>,
    pub(crate) counters: TunnelCounters,
    last_tick_ns: u64,
    last_budget_ns: u64,
    mailbox: Option<SharedPeerMailbox>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("local", &self.local)
            .field("port", &self.port)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Timers run every 100 ms; the handshake budget renews every second.
const TICK_NS: u64 = 100_000_000;
const BUDGET_NS: u64 = 1_000_000_000;

impl Tunnel {
    /// The tunnel on `uplink` (snapshot index), with the remote nodes' MACs from
    /// `snapshot`; `None` when `uplink` is not the snapshot's uplink.
    pub fn new(setup: WireGuardSetup, snapshot: &Snapshot, uplink: IfIndex) -> Option<Tunnel> {
        let iface = snapshot.interface(uplink)?;
        if iface.role != Role::Uplink {
            return None;
        }
        let neighbors = snapshot
            .nodes
            .iter()
            .filter_map(|n| n.mac.map(|m| (n.underlay, m)))
            .collect();
        Some(Tunnel {
            peers: setup.peers,
            port: setup.port,
            local: setup.local,
            uplink,
            uplink_mac: iface.mac,
            neighbors,
            scratch: vec![0; 2048],
            out: vec![0; 2048],
            counters: TunnelCounters::default(),
            last_tick_ns: 0,
            last_budget_ns: 0,
            mailbox: None,
        })
    }

    /// Counts a frame the tunnel cannot use; the caller recycles it.
    fn unusable<T>(&mut self) -> Option<T> {
        self.counters.unusable += 1;
        None
    }

    /// Where peer updates will come from.
    pub fn set_mailbox(&mut self, mailbox: SharedPeerMailbox) {
        self.mailbox = Some(mailbox);
    }

    fn take_update(&mut self) {
        let Some(mailbox) = &self.mailbox else { return };
        let update = match mailbox.pending.try_lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        let Some(update) = update else { return };
        let outcome = match self.peers.set_peers(update.peers) {
            Ok(()) => {
                self.neighbors = update.neighbors;
                self.counters.peer_updates += 1;
                Ok(self.counters.peer_updates)
            }
            Err(e) => {
                self.counters.peer_updates_refused += 1;
                Err(e.to_string())
            }
        };
        if let Ok(mut applied) = mailbox.applied.lock() {
            *applied = Some(outcome);
        }
    }

    pub(crate) fn wg_counters(&self) -> WgCounters {
        *self.peers.counters()
    }

    fn neighbor(&self, ip: IpAddr) -> Option<Mac> {
        self.neighbors
            .iter()
            .find(|(a, _)| *a == ip)
            .map(|(_, m)| *m)
    }

    fn path_to(&mut self, to: SocketAddr) -> Option<OuterPath> {
        let Some(mac) = self.neighbor(to.ip()) else {
            self.counters.no_neighbor += 1;
            return None;
        };
        Some(OuterPath {
            src_mac: self.uplink_mac,
            dst_mac: mac,
            src: SocketAddr::new(self.local, self.port),
            dst: to,
        })
    }

    /// Seals the Ethernet frame `area[addr..addr + len]` (its IP packet) for the peer
    /// that owns its destination. Returns the outer frame to send, or `None` when the
    /// frame is to be recycled (counted; the packet may wait in the peer's queue for its
    /// handshake, whose message is then the frame returned).
    ///
    /// When `free` has a frame, the message is sealed straight from the packet into that
    /// frame (boringtun seals from one buffer into another, so this saves a copy) and the
    /// packet's own frame goes back to `free`; otherwise the packet is copied aside and
    /// sealed back into its own frame, in its headroom.
    pub fn seal(
        &mut self,
        area: &mut [u8],
        frame_size: u64,
        addr: u64,
        len: u32,
        free: &mut Vec<u64>,
    ) -> Option<(u64, u32)> {
        let (start, end) = (addr as usize, addr as usize + len as usize);
        let Some(inner) = area.get(start + ETH_LEN..end) else {
            return self.unusable();
        };
        let n = inner.len();
        if n < 20 || n > self.scratch.len() {
            return self.unusable();
        }
        let dst: IpAddr = match inner[0] >> 4 {
            4 => IpAddr::from([inner[16], inner[17], inner[18], inner[19]]),
            6 if n >= 40 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&inner[24..40]);
                IpAddr::from(a)
            }
            _ => return self.unusable(),
        };
        let Some(peer) = self.peers.route(dst) else {
            self.counters.no_peer += 1;
            return None;
        };
        let Some(endpoint) = self.peers.endpoint(peer) else {
            return self.unusable();
        };
        let path = self.path_to(endpoint)?;
        let hdr = path.header_len() as u64;
        let base = addr - addr % frame_size;
        // Where the outer frame goes: a free frame, or this one's headroom.
        let spare = match free.pop() {
            Some(e) if e - e % frame_size != base => Some(e - e % frame_size),
            Some(e) => {
                free.push(e);
                None
            }
            None => None,
        };
        let (new_start, chunk_end) = match spare {
            Some(other) => (other + XDP_PACKET_HEADROOM, other + frame_size),
            None => {
                // The message starts 16 bytes before the inner packet did (its header).
                let s = (addr + ETH_LEN as u64).saturating_sub(16 + hdr);
                if s < base {
                    self.counters.no_room += 1;
                    return None;
                }
                (s, base + frame_size)
            }
        };
        let msg_start = (new_start + hdr) as usize;
        let chunk_end = chunk_end as usize;
        let sealed = match spare {
            Some(other) => {
                // Two different frames of the area: the packet's and the spare one.
                let (src, dst) = if other > base {
                    let (lo, hi) = area.split_at_mut(other as usize);
                    (
                        &lo[start + ETH_LEN..end],
                        &mut hi[msg_start - other as usize..chunk_end - other as usize],
                    )
                } else {
                    let (lo, hi) = area.split_at_mut(base as usize);
                    (
                        &hi[start + ETH_LEN - base as usize..end - base as usize],
                        &mut lo[msg_start..chunk_end],
                    )
                };
                self.peers.seal(peer, src, dst)
            }
            None => {
                self.scratch[..n].copy_from_slice(&area[start + ETH_LEN..end]);
                self.peers
                    .seal(peer, &self.scratch[..n], &mut area[msg_start..chunk_end])
            }
        };
        let wg_len = match sealed {
            Sealed::Message(m) => {
                self.counters.sealed += 1;
                m.len()
            }
            Sealed::Handshake(m) => {
                self.counters.control += 1;
                m.len()
            }
            Sealed::Queued | Sealed::NoPeer => {
                if matches!(sealed, Sealed::NoPeer) {
                    self.counters.no_peer += 1;
                }
                free.extend(spare);
                return None;
            }
        };
        let Ok(total) =
            outer::write_headers(&mut area[new_start as usize..chunk_end], &path, wg_len)
        else {
            free.extend(spare);
            return self.unusable();
        };
        if spare.is_some() {
            free.push(base);
        }
        Some((new_start, total as u32))
    }

    /// Looks at a frame received on the uplink.
    pub fn receive(&mut self, area: &mut [u8], frame_size: u64, addr: u64, len: u32) -> Inbound {
        let (start, end) = (addr as usize, addr as usize + len as usize);
        let Some(frame) = area.get(start..end) else {
            return Inbound::Pass;
        };
        let Ok(inb) = outer::parse(frame, self.port) else {
            return Inbound::Pass;
        };
        if inb.dst.ip() != self.local {
            return Inbound::Pass;
        }
        let (from, offset, mlen) = (inb.src, inb.offset, inb.message.len());
        let message = &area[start + offset..start + offset + mlen];
        match self.peers.open(from, message, &mut self.out) {
            Opened::Packet { packet, .. } => {
                let n = packet.len();
                if start + ETH_LEN + n > end {
                    self.counters.unusable += 1;
                    return Inbound::Done;
                }
                let ethertype: [u8; 2] = if packet[0] >> 4 == 6 {
                    [0x86, 0xdd]
                } else {
                    [0x08, 0x00]
                };
                let f = &mut area[start..end];
                f[0..6].copy_from_slice(&self.uplink_mac);
                // The source MAC stays the sender's; the pipeline does not read it here.
                f[12..14].copy_from_slice(&ethertype);
                f[ETH_LEN..ETH_LEN + n].copy_from_slice(packet);
                self.counters.opened += 1;
                Inbound::Deliver((ETH_LEN + n) as u32)
            }
            Opened::Reply { peer, to, message } => {
                let m = message.len();
                self.scratch[..m].copy_from_slice(message);
                let base = addr - addr % frame_size;
                match self.control_into(area, frame_size, base, to, m) {
                    Some((a, l)) => Inbound::Reply(a, l, peer),
                    None => Inbound::Done,
                }
            }
            Opened::Nothing | Opened::Dropped(_) => Inbound::Done,
        }
    }

    /// Writes the control message in `scratch[..m]` for `to` into the frame at `base`.
    fn control_into(
        &mut self,
        area: &mut [u8],
        frame_size: u64,
        base: u64,
        to: SocketAddr,
        m: usize,
    ) -> Option<(u64, u32)> {
        let path = self.path_to(to)?;
        let start = (base + XDP_PACKET_HEADROOM) as usize;
        let end = (base + frame_size) as usize;
        let hdr = path.header_len();
        if start + hdr + m > end {
            self.counters.no_room += 1;
            return None;
        }
        area[start + hdr..start + hdr + m].copy_from_slice(&self.scratch[..m]);
        let Ok(total) = outer::write_headers(&mut area[start..end], &path, m) else {
            return self.unusable();
        };
        self.counters.control += 1;
        Some((start as u64, total as u32))
    }

    /// The next message that waited for peer `id`'s session, written into the free frame
    /// at `base`.
    pub(crate) fn flush_into(
        &mut self,
        area: &mut [u8],
        frame_size: u64,
        base: u64,
        id: PeerId,
    ) -> Option<Option<(u64, u32)>> {
        let m = self.peers.flush(id, &mut self.out)?.len();
        let to = self.peers.endpoint(id)?;
        self.scratch[..m].copy_from_slice(&self.out[..m]);
        Some(self.control_into(area, frame_size, base, to, m))
    }

    /// Runs the peers' timers when due: each message to send is written into a frame
    /// taken from `free`; returns the frames to send.
    pub(crate) fn tick(
        &mut self,
        now_ns: u64,
        area: &mut [u8],
        frame_size: u64,
        free: &mut Vec<u64>,
        send: &mut Vec<(u64, u32)>,
    ) {
        if now_ns.saturating_sub(self.last_budget_ns) >= BUDGET_NS {
            self.last_budget_ns = now_ns;
            self.peers.reset_handshake_budget();
        }
        if now_ns.saturating_sub(self.last_tick_ns) < TICK_NS {
            return;
        }
        self.last_tick_ns = now_ns;
        self.take_update();
        let mut messages: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        self.peers
            .tick(&mut self.out, |_, to, m| messages.push((to, m.to_vec())));
        for (to, m) in messages {
            let Some(entry) = free.pop() else {
                self.counters.no_room += 1;
                continue;
            };
            let base = entry - entry % frame_size;
            self.scratch[..m.len()].copy_from_slice(&m);
            match self.control_into(area, frame_size, base, to, m.len()) {
                Some(f) => send.push(f),
                None => free.push(base),
            }
        }
    }
}
