//! WireGuard on the worker that owns the uplink: sealing what the output stage planned as
//! `Seal { peer }` into outer Ethernet/IP/UDP + WireGuard in the same frame region, opening
//! what arrives on the WireGuard port back into an Ethernet frame for the pipeline, and the
//! control messages (handshakes, cookies, keepalives) that need frames of their own.
//!
//! Everything about the peers comes from the snapshot the batch holds
//! ([`weir_dataplane::snapshot::PeerTable`]): which peer to seal for (the adjacency named
//! it), where it listens, and its outer headers, prebuilt. What is the worker's own is the
//! protocol state: keys, sessions and timers ([`weir_crypto::Peers`]), reconciled with the
//! table when the snapshot generation changes ([`Tunnel::reconcile`], an allocation only
//! then); a peer whose key is unchanged keeps its sessions.
//!
//! Both drivers run it: the AF_XDP worker on its UMEM, and the in-memory driver on its
//! region (so the tunnel is tested without a kernel). Frames are addresses in a region cut
//! into chunks, with a [`FreeList`]; a packet starts `headroom` bytes into its chunk, which
//! leaves room in front for the outer headers. The inner packet is copied once (boringtun
//! seals from one buffer into another), into a spare chunk when one is free.
//!
//! Every frame is accounted in the pipeline's [`Counters`]: a packet queued for a handshake
//! is `consumed` and leaves later as a `generated` frame; a received control message is
//! `consumed` and its answer `generated`; refusals are named drops.
//!
//! Peers are owned by this worker alone; other workers hand their frames to seal over (see
//! `handoff`), so no lock is taken per packet.

use std::net::SocketAddr;

use weir_crypto::peers::{Opened, PeerConfig, PeerId, Peers, Sealed, WgCounters};
use weir_crypto::{IpNet, NodeKey, PublicKey};
use weir_dataplane::snapshot::{PeerIndex, PeerSpec};
use weir_dataplane::wire::wireguard::outer::{self, OuterPath, OuterTemplate, ETH_LEN};
use weir_dataplane::{Counters, DropReason, FreeList, Snapshot};

/// Counters of the tunnel beyond the peers' own and the pipeline's drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelCounters {
    /// Frames sealed and sent.
    pub sealed: u64,
    /// Inner packets delivered to the pipeline.
    pub opened: u64,
    /// Handshake, cookie and keepalive messages written.
    pub control: u64,
    /// WireGuard messages refused before decryption (unknown type, bad reserved bytes,
    /// wrong length).
    pub malformed: u64,
    /// Peer sets taken from a new snapshot, and refused (the old set stays).
    pub peer_updates: u64,
    pub peer_updates_refused: u64,
}

/// What became of a frame received on the uplink.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Not WireGuard for this node: to the pipeline as it is.
    Pass,
    /// Opened: an Ethernet frame of this length at the same address, for the pipeline.
    Deliver(u32),
    /// Answered in the same chunk: send `(addr, len)` on the uplink, then
    /// [`Tunnel::flush`] the peer if given.
    Reply(u64, u32, Option<PeerId>),
    /// Consumed or dropped (counted), and the chunk is back in the free list.
    Done,
}

/// The sealing and opening engine of the uplink's worker.
pub struct Tunnel {
    peers: Peers,
    headroom: u64,
    /// The snapshot generation the peers were reconciled with.
    generation: u64,
    /// The peer specs in force, to tell whether a new snapshot changed them.
    applied: Vec<PeerSpec>,
    /// Snapshot peer index → the protocol's peer id.
    crypto_of: Vec<Option<PeerId>>,
    /// The protocol's peer id → snapshot peer index.
    index_of: Vec<Option<PeerIndex>>,
    scratch: Vec<u8>,
    out: Vec<u8>,
    counters: TunnelCounters,
    last_tick_ns: u64,
    last_budget_ns: u64,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("generation", &self.generation)
            .field("peers", &self.applied.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Timers run every 100 ms; the handshake budget renews every second.
const TICK_NS: u64 = 100_000_000;
const BUDGET_NS: u64 = 1_000_000_000;

impl Tunnel {
    /// A tunnel with this node's key and no peer yet; `handshake_limit` handshakes per
    /// second before cookies are asked for; packets start `headroom` bytes into their
    /// chunk. Peers arrive with the first [`Tunnel::reconcile`].
    pub fn new(key: NodeKey, handshake_limit: u64, headroom: usize) -> Tunnel {
        Tunnel {
            peers: Peers::new(key, handshake_limit),
            headroom: headroom as u64,
            generation: u64::MAX,
            applied: Vec::new(),
            crypto_of: Vec::new(),
            index_of: Vec::new(),
            scratch: vec![0; 2048],
            out: vec![0; 2048],
            counters: TunnelCounters::default(),
            last_tick_ns: 0,
            last_budget_ns: 0,
        }
    }

    /// A tunnel over a prepared peer table (sessions already established, as a benchmark
    /// wants them); the first [`Tunnel::reconcile`] keeps the sessions of every peer whose
    /// key the snapshot also has.
    pub fn with_peers(peers: Peers, headroom: usize) -> Tunnel {
        let mut t = Tunnel::new(NodeKey::from_bytes([1; 32]), 1, headroom);
        t.peers = peers;
        t
    }

    /// Takes the peers of `snapshot` when its generation is not the one in force: new
    /// peers start without a session, peers whose key is unchanged keep theirs, peers
    /// gone are forgotten. A set the protocol refuses is counted (the control plane checks
    /// sets before publishing them, so this does not happen) and the old one stays.
    pub fn reconcile(&mut self, snapshot: &Snapshot) {
        if snapshot.generation == self.generation {
            return;
        }
        self.generation = snapshot.generation;
        let table = &snapshot.peers.peers;
        let same = table.len() == self.applied.len()
            && table.iter().zip(&self.applied).all(|(p, a)| p.spec == *a);
        if !same {
            match self
                .peers
                .set_peers(table.iter().map(|p| config(&p.spec)).collect())
            {
                Ok(()) => {
                    self.applied = table.iter().map(|p| p.spec.clone()).collect();
                    self.counters.peer_updates += 1;
                }
                Err(_) => self.counters.peer_updates_refused += 1,
            }
        }
        self.crypto_of.clear();
        self.index_of.clear();
        for (i, p) in table.iter().enumerate() {
            let id = self.peers.by_key(&p.spec.public_key);
            self.crypto_of.push(id);
            if let Some(id) = id {
                let at = id as usize;
                if self.index_of.len() <= at {
                    self.index_of.resize(at + 1, None);
                }
                self.index_of[at] = Some(i as PeerIndex);
            }
        }
    }

    /// The tunnel's own counters.
    pub fn counters(&self) -> TunnelCounters {
        self.counters
    }

    /// The peers' counters (handshakes, and why messages were refused).
    pub fn wg_counters(&self) -> WgCounters {
        *self.peers.counters()
    }

    /// Seals the Ethernet frame `area[addr..addr + len]` (its IP packet) for snapshot peer
    /// `peer`. Returns the outer frame to send; `None` when there is nothing to send (the
    /// packet waits in the peer's queue for a handshake, or was dropped; counted either
    /// way, and the chunk is back in `free`).
    ///
    /// When `free` has a chunk, the message is sealed straight from the packet into it
    /// (boringtun seals from one buffer into another, so this saves a copy) and the
    /// packet's own chunk goes back; otherwise the packet is copied aside and sealed back
    /// into its own chunk, in its headroom.
    #[allow(clippy::too_many_arguments)]
    pub fn seal(
        &mut self,
        snapshot: &Snapshot,
        area: &mut [u8],
        free: &mut FreeList,
        peer: PeerIndex,
        addr: u64,
        len: u32,
        c: &mut Counters,
    ) -> Option<(u64, u32)> {
        let size = free.chunk_size() as u64;
        let base = free.base(addr);
        let fail = |free: &mut FreeList, c: &mut Counters, reason| {
            c.drop(reason);
            free.push(base);
            None
        };
        let Some(id) = self.crypto_of.get(peer as usize).copied().flatten() else {
            return fail(free, c, DropReason::WireguardNoPeer);
        };
        let Some(template) = self.template(snapshot, id, None) else {
            return fail(free, c, DropReason::WireguardNoPeer);
        };
        let (start, end) = (addr as usize, addr as usize + len as usize);
        let n = len.saturating_sub(ETH_LEN as u32) as usize;
        if n < 20 || n > self.scratch.len() || area.get(start..end).is_none() {
            return fail(free, c, DropReason::WireguardNoRoom);
        }
        let hdr = template.header_len() as u64;
        // Where the outer frame goes: a spare chunk, or this one's headroom.
        let spare = match free.pop() {
            Some(other) if other != base => Some(other),
            Some(same) => {
                free.push(same);
                None
            }
            None => None,
        };
        let (new_start, chunk_end) = match spare {
            Some(other) => (other + self.headroom, other + size),
            None => {
                // The message starts 16 bytes before the inner packet did (its header).
                let s = (addr + ETH_LEN as u64).saturating_sub(16 + hdr);
                if s < base {
                    return fail(free, c, DropReason::WireguardNoRoom);
                }
                (s, base + size)
            }
        };
        let msg_start = (new_start + hdr) as usize;
        let chunk_end = chunk_end as usize;
        let sealed = match spare {
            Some(other) => {
                // Two different chunks of the area: the packet's and the spare one.
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
                self.peers.seal(id, src, dst)
            }
            None => {
                self.scratch[..n].copy_from_slice(&area[start + ETH_LEN..end]);
                self.peers
                    .seal(id, &self.scratch[..n], &mut area[msg_start..chunk_end])
            }
        };
        let wg_len = match sealed {
            Sealed::Message(m) => {
                self.counters.sealed += 1;
                m.len()
            }
            Sealed::Handshake(m) => {
                // The packet waits for the session; the handshake takes its place.
                c.consumed += 1;
                c.generated += 1;
                self.counters.control += 1;
                m.len()
            }
            Sealed::Queued => {
                c.consumed += 1;
                if let Some(other) = spare {
                    free.push(other);
                }
                free.push(base);
                return None;
            }
            Sealed::NoPeer => {
                if let Some(other) = spare {
                    free.push(other);
                }
                return fail(free, c, DropReason::WireguardNoPeer);
            }
        };
        match template.write(&mut area[new_start as usize..chunk_end], wg_len) {
            Ok(total) => {
                if spare.is_some() {
                    free.push(base);
                }
                Some((new_start, total as u32))
            }
            Err(_) => {
                if let Some(other) = spare {
                    free.push(other);
                }
                fail(free, c, DropReason::WireguardNoRoom)
            }
        }
    }

    /// Looks at a frame received on the uplink. WireGuard for this node is opened,
    /// answered or consumed here (and counted as received); anything else passes to the
    /// pipeline untouched.
    pub fn receive(
        &mut self,
        snapshot: &Snapshot,
        area: &mut [u8],
        free: &mut FreeList,
        addr: u64,
        len: u32,
        c: &mut Counters,
    ) -> Inbound {
        let Some(local) = snapshot.peers.local else {
            return Inbound::Pass;
        };
        let (start, end) = (addr as usize, addr as usize + len as usize);
        let Some(frame) = area.get(start..end) else {
            return Inbound::Pass;
        };
        let Ok(inb) = outer::parse(frame, local.port()) else {
            return Inbound::Pass;
        };
        if inb.dst.ip() != local.ip() {
            return Inbound::Pass;
        }
        let (from, offset, mlen) = (inb.src, inb.offset, inb.message.len());
        let done = |free: &mut FreeList, c: &mut Counters, reason: Option<DropReason>| {
            c.rx += 1;
            match reason {
                Some(r) => c.drop(r),
                None => c.consumed += 1,
            }
            free.push(addr);
            Inbound::Done
        };
        // The message's framing is checked before any cryptography looks at it.
        if weir_dataplane::wire::wireguard::parse(inb.message).is_err() {
            self.counters.malformed += 1;
            return done(free, c, Some(DropReason::WireguardRejected));
        }
        let (our_mac, their_mac) = {
            let mut ours = [0u8; 6];
            let mut theirs = [0u8; 6];
            ours.copy_from_slice(&frame[0..6]);
            theirs.copy_from_slice(&frame[6..12]);
            (ours, theirs)
        };
        let message = &area[start + offset..start + offset + mlen];
        match self.peers.open(from, message, &mut self.out) {
            Opened::Packet { packet, .. } => {
                let n = packet.len();
                if n == 0 || start + ETH_LEN + n > end {
                    return done(free, c, Some(DropReason::WireguardRejected));
                }
                let ethertype: [u8; 2] = if packet[0] >> 4 == 6 {
                    [0x86, 0xdd]
                } else {
                    [0x08, 0x00]
                };
                let f = &mut area[start..end];
                // Addressed to us; the source MAC stays the sender's (the pipeline does not
                // read it on the uplink).
                f[12..14].copy_from_slice(&ethertype);
                f[ETH_LEN..ETH_LEN + n].copy_from_slice(packet);
                self.counters.opened += 1;
                Inbound::Deliver((ETH_LEN + n) as u32)
            }
            Opened::Reply { peer, to, message } => {
                let m = message.len();
                self.scratch[..m].copy_from_slice(message);
                c.rx += 1;
                c.consumed += 1;
                c.generated += 1;
                // Answered to whoever sent it, through the link it came from.
                let path = OuterPath {
                    src_mac: our_mac,
                    dst_mac: their_mac,
                    src: local,
                    dst: to,
                };
                let base = free.base(addr);
                let written = OuterTemplate::new(path)
                    .ok()
                    .and_then(|t| self.write_message(area, free, base, &t, m));
                match written {
                    Some((a, l)) => Inbound::Reply(a, l, peer),
                    None => {
                        c.drop(DropReason::WireguardNoRoom);
                        free.push(base);
                        Inbound::Done
                    }
                }
            }
            Opened::Nothing => done(free, c, None),
            Opened::Dropped(_) => done(free, c, Some(DropReason::WireguardRejected)),
        }
    }

    /// After a handshake completed with peer `id`: the packets that waited for its
    /// session, sealed into free chunks and appended to `send`.
    pub fn flush(
        &mut self,
        snapshot: &Snapshot,
        area: &mut [u8],
        free: &mut FreeList,
        id: PeerId,
        send: &mut Vec<(u64, u32)>,
        c: &mut Counters,
    ) {
        while let Some(base) = free.pop() {
            let Some(m) = self.peers.flush(id, &mut self.out).map(<[u8]>::len) else {
                free.push(base);
                return;
            };
            self.scratch[..m].copy_from_slice(&self.out[..m]);
            c.generated += 1;
            self.counters.sealed += 1;
            self.send_message(snapshot, area, free, base, id, None, m, send, c);
        }
    }

    /// Runs the peers' timers when due (every 100 ms): each message to send is written
    /// into a chunk taken from `free` and appended to `send`.
    pub fn tick(
        &mut self,
        now_ns: u64,
        snapshot: &Snapshot,
        area: &mut [u8],
        free: &mut FreeList,
        send: &mut Vec<(u64, u32)>,
        c: &mut Counters,
    ) {
        if now_ns.saturating_sub(self.last_budget_ns) >= BUDGET_NS {
            self.last_budget_ns = now_ns;
            self.peers.reset_handshake_budget();
        }
        if now_ns.saturating_sub(self.last_tick_ns) < TICK_NS {
            return;
        }
        self.last_tick_ns = now_ns;
        let mut messages: Vec<(PeerId, SocketAddr, Vec<u8>)> = Vec::new();
        self.peers.tick(&mut self.out, |id, to, m| {
            messages.push((id, to, m.to_vec()))
        });
        for (id, to, m) in messages {
            c.generated += 1;
            let Some(base) = free.pop() else {
                c.drop(DropReason::FillStarved);
                continue;
            };
            self.scratch[..m.len()].copy_from_slice(&m);
            self.counters.control += 1;
            self.send_message(snapshot, area, free, base, id, Some(to), m.len(), send, c);
        }
    }

    /// Writes the message in `scratch[..m]` for peer `id` (to `to`, or its endpoint) into
    /// the chunk at `base` and appends it to `send`; a message that cannot be written is
    /// a counted drop and the chunk goes back.
    #[allow(clippy::too_many_arguments)]
    fn send_message(
        &mut self,
        snapshot: &Snapshot,
        area: &mut [u8],
        free: &mut FreeList,
        base: u64,
        id: PeerId,
        to: Option<SocketAddr>,
        m: usize,
        send: &mut Vec<(u64, u32)>,
        c: &mut Counters,
    ) {
        let Some(template) = self.template(snapshot, id, to) else {
            c.drop(DropReason::NeighborUnresolved);
            free.push(base);
            return;
        };
        match self.write_message(area, free, base, &template, m) {
            Some(f) => send.push(f),
            None => {
                c.drop(DropReason::WireguardNoRoom);
                free.push(base);
            }
        }
    }

    /// The outer headers to peer `id` at `to` (default: where it last spoke from): the
    /// snapshot's template, rebuilt for another address when the peer roamed.
    fn template(
        &self,
        snapshot: &Snapshot,
        id: PeerId,
        to: Option<SocketAddr>,
    ) -> Option<OuterTemplate> {
        let index = self.index_of.get(id as usize).copied().flatten()?;
        let template = snapshot.peers.get(index)?.outer?;
        let to = to.or_else(|| self.peers.endpoint(id))?;
        if template.path().dst == to {
            Some(template)
        } else {
            OuterTemplate::new(OuterPath {
                dst: to,
                ..*template.path()
            })
            .ok()
        }
    }

    /// Writes the message in `scratch[..m]` with `template`'s headers into the chunk at
    /// `base`, after the headroom.
    fn write_message(
        &mut self,
        area: &mut [u8],
        free: &FreeList,
        base: u64,
        template: &OuterTemplate,
        m: usize,
    ) -> Option<(u64, u32)> {
        let start = (base + self.headroom) as usize;
        let end = (base as usize + free.chunk_size()).min(area.len());
        let hdr = template.header_len();
        if start + hdr + m > end {
            return None;
        }
        area[start + hdr..start + hdr + m].copy_from_slice(&self.scratch[..m]);
        let total = template.write(&mut area[start..end], m).ok()?;
        Some((start as u64, total as u32))
    }
}

/// The protocol's view of a snapshot peer.
fn config(spec: &PeerSpec) -> PeerConfig {
    PeerConfig {
        name: spec.name.clone(),
        public_key: PublicKey::from(spec.public_key),
        endpoint: spec.endpoint,
        allowed_ips: spec
            .allowed_ips
            .iter()
            .filter_map(|p| IpNet::new(p.addr(), p.bits()).ok())
            .collect(),
        persistent_keepalive: spec.persistent_keepalive,
    }
}
