//! The peers of one worker: a WireGuard session per remote node (boringtun's `Tunn`:
//! handshake, timers, cookies, replay window), the allowed IPs that route to it and that
//! it may speak for, and the counters of everything refused.
//!
//! A `Peers` is owned by one worker and never shared: no lock per packet. Handshake
//! messages pass a rate limiter shared by all peers of the table first; under a flood it
//! answers with cookie replies instead of doing the Diffie-Hellman work, and data
//! messages, which it does not limit, keep flowing. (boringtun's `Tunn` checks the same
//! limiter again, so each handshake message counts twice against the limit.)
//!
//! boringtun reads the monotonic clock itself for its timers and the OS random source for
//! ephemeral keys; [`Peers::tick`] is where the owning worker drives the timers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use ipnet::IpNet;

use crate::keys::{format_public, NodeKey};

/// A peer's number in its table (stable while the peer exists).
pub type PeerId = u32;

/// The largest peer number: boringtun keeps 24 bits of session index for the peer.
const MAX_PEERS: usize = 1 << 20;

/// Handshake messages per second, over all peers, before cookies are required.
pub const DEFAULT_HANDSHAKE_LIMIT: u64 = 100;

/// A remote node as the datastore describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// The node's name (for logs and errors).
    pub name: String,
    pub public_key: PublicKey,
    /// Where its WireGuard listens.
    pub endpoint: SocketAddr,
    /// Its pod CIDRs: what is routed to it, and the only sources it may send from.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives when idle (`None`: off).
    pub persistent_keepalive: Option<u16>,
}

/// Why a peer set was refused. The previous set stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("peer {0}: its public key is this node's own")]
    OwnKey(String),
    #[error("peers {0} and {1} have the same public key")]
    DuplicateKey(String, String),
    #[error("peers {0} and {1} both claim {2}")]
    Overlap(String, String, IpNet),
    #[error("more than {MAX_PEERS} peers")]
    TooMany,
}

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgDrop {
    /// Not a WireGuard message of a known type and length.
    Malformed,
    /// A MAC, a tag, a key or a timestamp did not check out.
    Unauthenticated,
    /// A data message counter already seen, or too old for the replay window.
    Replay,
    /// The inner source is not in the sending peer's allowed IPs.
    NotAllowed,
    /// No peer with that key or index.
    UnknownPeer,
    /// Handshake refused: the node is under load and no valid cookie came with it.
    UnderLoad,
    /// No session for that index (expired, or from before a re-key).
    NoSession,
}

/// Counters of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WgCounters {
    pub sealed: u64,
    pub opened: u64,
    pub handshake_initiations: u64,
    pub handshake_responses: u64,
    pub cookie_replies: u64,
    /// Packets waiting in a peer's queue for its handshake to finish.
    pub queued: u64,
    pub malformed: u64,
    pub unauthenticated: u64,
    pub replayed: u64,
    pub not_allowed: u64,
    pub unknown_peer: u64,
    pub under_load: u64,
    pub no_session: u64,
}

impl WgCounters {
    fn count(&mut self, why: WgDrop) {
        let c = match why {
            WgDrop::Malformed => &mut self.malformed,
            WgDrop::Unauthenticated => &mut self.unauthenticated,
            WgDrop::Replay => &mut self.replayed,
            WgDrop::NotAllowed => &mut self.not_allowed,
            WgDrop::UnknownPeer => &mut self.unknown_peer,
            WgDrop::UnderLoad => &mut self.under_load,
            WgDrop::NoSession => &mut self.no_session,
        };
        *c += 1;
    }
}

/// What sealing a packet gave.
#[derive(Debug)]
pub enum Sealed<'a> {
    /// A data message for the peer's endpoint.
    Message(&'a [u8]),
    /// No session yet: the packet waits in the peer's queue, and this handshake
    /// initiation must be sent to the peer's endpoint.
    Handshake(&'a [u8]),
    /// No session yet and a handshake is under way: the packet waits in the queue.
    Queued,
    /// No such peer.
    NoPeer,
}

/// What opening a message gave.
#[derive(Debug)]
pub enum Opened<'a> {
    /// An inner packet from `peer`, its source within the peer's allowed IPs.
    Packet { peer: PeerId, packet: &'a [u8] },
    /// A message to send back to `to` (a handshake response, a cookie reply, the
    /// keepalive that confirms a session). When `peer` is set, call [`Peers::flush`]
    /// for it next: packets that waited for the session can go now.
    Reply {
        peer: Option<PeerId>,
        to: SocketAddr,
        message: &'a [u8],
    },
    /// Consumed (a keepalive, a cookie reply taken into account).
    Nothing,
    /// Refused and counted.
    Dropped(WgDrop),
}

struct Peer {
    config: PeerConfig,
    tunn: Tunn,
    /// Where to send: the configured endpoint, then wherever it last spoke from.
    endpoint: SocketAddr,
}

/// The peers of one worker.
pub struct Peers {
    key: NodeKey,
    limiter: Arc<RateLimiter>,
    handshake_limit: u64,
    slots: Vec<Option<Peer>>,
    by_key: HashMap<[u8; 32], PeerId>,
    /// Allowed IPs, longest prefix first.
    routes: Vec<(IpNet, PeerId)>,
    counters: WgCounters,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("key", &self.key)
            .field("peers", &self.by_key.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// An empty table for this node's key; `handshake_limit` handshake messages per second
    /// before cookies are asked for.
    pub fn new(key: NodeKey, handshake_limit: u64) -> Peers {
        let limiter = Arc::new(RateLimiter::new(&key.public(), handshake_limit));
        Peers {
            key,
            limiter,
            handshake_limit,
            slots: Vec::new(),
            by_key: HashMap::new(),
            routes: Vec::new(),
            counters: WgCounters::default(),
        }
    }

    /// This node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// Replaces the peer set. A peer whose key is unchanged keeps its sessions (its
    /// endpoint and allowed IPs are updated); a new or re-keyed peer starts without one;
    /// a peer no longer listed is forgotten. On error nothing changes.
    pub fn set_peers(&mut self, configs: Vec<PeerConfig>) -> Result<(), PeerError> {
        let own = *self.key.public().as_bytes();
        let mut seen: HashMap<[u8; 32], &str> = HashMap::new();
        for c in &configs {
            let k = *c.public_key.as_bytes();
            if k == own {
                return Err(PeerError::OwnKey(c.name.clone()));
            }
            if let Some(other) = seen.insert(k, &c.name) {
                return Err(PeerError::DuplicateKey(other.to_string(), c.name.clone()));
            }
        }
        for (i, a) in configs.iter().enumerate() {
            for b in &configs[i + 1..] {
                for na in &a.allowed_ips {
                    for nb in &b.allowed_ips {
                        if na.contains(&nb.network()) || nb.contains(&na.network()) {
                            return Err(PeerError::Overlap(
                                a.name.clone(),
                                b.name.clone(),
                                if na.prefix_len() <= nb.prefix_len() {
                                    *nb
                                } else {
                                    *na
                                },
                            ));
                        }
                    }
                }
            }
        }
        if configs.len() > MAX_PEERS {
            return Err(PeerError::TooMany);
        }
        let mut keep: HashMap<[u8; 32], Peer> = HashMap::new();
        for slot in self.slots.iter_mut() {
            if let Some(p) = slot.take() {
                keep.insert(*p.config.public_key.as_bytes(), p);
            }
        }
        let old_ids = std::mem::take(&mut self.by_key);
        self.slots.clear();
        self.routes.clear();
        // Peers keep their number when they stay, so that session indices stay valid.
        let mut placed: Vec<(PeerId, PeerConfig)> = Vec::new();
        let mut fresh: Vec<PeerConfig> = Vec::new();
        for c in configs {
            match old_ids.get(c.public_key.as_bytes()) {
                Some(&id) => placed.push((id, c)),
                None => fresh.push(c),
            }
        }
        let mut next_free = 0u32;
        let used: std::collections::BTreeSet<PeerId> = placed.iter().map(|(id, _)| *id).collect();
        for c in fresh {
            while used.contains(&next_free) {
                next_free += 1;
            }
            placed.push((next_free, c));
            next_free += 1;
        }
        for (id, config) in placed {
            let k = *config.public_key.as_bytes();
            let peer = match keep.remove(&k) {
                Some(mut p) => {
                    if p.config.endpoint != config.endpoint {
                        p.endpoint = config.endpoint;
                    }
                    p.config = config;
                    p
                }
                None => Peer {
                    tunn: Tunn::new(
                        self.key.secret().clone(),
                        config.public_key,
                        None,
                        config.persistent_keepalive,
                        id,
                        Some(self.limiter.clone()),
                    ),
                    endpoint: config.endpoint,
                    config,
                },
            };
            let at = id as usize;
            if self.slots.len() <= at {
                self.slots.resize_with(at + 1, || None);
            }
            for net in &peer.config.allowed_ips {
                self.routes.push((*net, id));
            }
            self.by_key.insert(k, id);
            self.slots[at] = Some(peer);
        }
        self.routes
            .sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(())
    }

    /// Changes this node's key: every session is dropped and handshakes start again with
    /// the new key (no restart).
    pub fn set_key(&mut self, key: NodeKey) {
        self.limiter = Arc::new(RateLimiter::new(&key.public(), self.handshake_limit));
        for p in self.slots.iter_mut().flatten() {
            p.tunn.set_static_private(
                key.secret().clone(),
                key.public(),
                Some(self.limiter.clone()),
            );
        }
        self.key = key;
    }

    /// The peer whose allowed IPs hold `dst` (longest prefix), by a scan of every allowed
    /// network: for tests and tools. The dataplane never calls it: a frame to seal names its
    /// peer in its route's `Encrypt` adjacency (`snapshot::PeerTable`).
    pub fn route(&self, dst: IpAddr) -> Option<PeerId> {
        self.routes
            .iter()
            .find(|(net, _)| net.contains(&dst))
            .map(|(_, id)| *id)
    }

    /// The peer whose public key is `key`.
    pub fn by_key(&self, key: &[u8; 32]) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// Where to send to peer `id`.
    pub fn endpoint(&self, id: PeerId) -> Option<SocketAddr> {
        self.peer(id).map(|p| p.endpoint)
    }

    /// Peer `id`'s name.
    pub fn name(&self, id: PeerId) -> Option<&str> {
        self.peer(id).map(|p| p.config.name.as_str())
    }

    /// Every peer: number, name, public key (base64).
    pub fn list(&self) -> Vec<(PeerId, String, String)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.as_ref().map(|p| {
                    (
                        i as PeerId,
                        p.config.name.clone(),
                        format_public(&p.config.public_key),
                    )
                })
            })
            .collect()
    }

    /// The counters so far.
    pub fn counters(&self) -> &WgCounters {
        &self.counters
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    /// Seals an IP packet for peer `id` into `out`, which needs `packet.len() + 32` bytes
    /// and at least 148.
    pub fn seal<'a>(&mut self, id: PeerId, packet: &[u8], out: &'a mut [u8]) -> Sealed<'a> {
        let Some(peer) = self.slots.get_mut(id as usize).and_then(Option::as_mut) else {
            return Sealed::NoPeer;
        };
        match peer.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(m) if m.first() == Some(&4) => {
                self.counters.sealed += 1;
                Sealed::Message(m)
            }
            TunnResult::WriteToNetwork(m) => {
                self.counters.queued += 1;
                self.counters.handshake_initiations += 1;
                Sealed::Handshake(m)
            }
            _ => {
                self.counters.queued += 1;
                Sealed::Queued
            }
        }
    }

    /// After a [`Opened::Reply`] for `id`: the next message that waited for the session
    /// (call until `None`).
    pub fn flush<'a>(&mut self, id: PeerId, out: &'a mut [u8]) -> Option<&'a [u8]> {
        let peer = self.slots.get_mut(id as usize).and_then(Option::as_mut)?;
        match peer.tunn.decapsulate(None, &[], out) {
            TunnResult::WriteToNetwork(m) => {
                self.counters.sealed += 1;
                Some(m)
            }
            _ => None,
        }
    }

    /// Opens a WireGuard message that came from `from`, into `out` (at least as long as
    /// the message).
    pub fn open<'a>(&mut self, from: SocketAddr, message: &[u8], out: &'a mut [u8]) -> Opened<'a> {
        let mut cookie = [0u8; 64];
        let id = match self
            .limiter
            .verify_packet(Some(from.ip()), message, &mut cookie)
        {
            Ok(packet) => match packet {
                Packet::HandshakeInit(ref init) => {
                    match parse_handshake_anon(self.key.secret(), &self.key.public(), init) {
                        Ok(half) => match self.by_key.get(&half.peer_static_public) {
                            Some(&id) => id,
                            None => return self.dropped(WgDrop::UnknownPeer),
                        },
                        Err(_) => return self.dropped(WgDrop::Unauthenticated),
                    }
                }
                Packet::HandshakeResponse(ref r) => r.receiver_idx >> 8,
                Packet::PacketCookieReply(ref c) => c.receiver_idx >> 8,
                Packet::PacketData(ref d) => d.receiver_idx >> 8,
            },
            Err(TunnResult::WriteToNetwork(reply)) => {
                let n = reply.len().min(out.len());
                out[..n].copy_from_slice(&reply[..n]);
                self.counters.cookie_replies += 1;
                return Opened::Reply {
                    peer: None,
                    to: from,
                    message: &out[..n],
                };
            }
            Err(TunnResult::Err(e)) => return self.dropped(classify(&e)),
            Err(_) => return self.dropped(WgDrop::Malformed),
        };
        let Some(peer) = self.slots.get_mut(id as usize).and_then(Option::as_mut) else {
            return self.dropped(WgDrop::UnknownPeer);
        };
        let kind = message.first().copied();
        match peer.tunn.decapsulate(Some(from.ip()), message, out) {
            TunnResult::WriteToNetwork(m) => {
                peer.endpoint = from;
                match kind {
                    Some(1) => self.counters.handshake_responses += 1,
                    Some(4) => self.counters.opened += 1,
                    _ => {}
                }
                Opened::Reply {
                    peer: Some(id),
                    to: from,
                    message: m,
                }
            }
            TunnResult::WriteToTunnelV4(packet, src) => {
                let allowed = allows(&peer.config.allowed_ips, src.into());
                Self::inner(&mut self.counters, peer, from, id, packet, allowed)
            }
            TunnResult::WriteToTunnelV6(packet, src) => {
                let allowed = allows(&peer.config.allowed_ips, src.into());
                Self::inner(&mut self.counters, peer, from, id, packet, allowed)
            }
            TunnResult::Done => {
                peer.endpoint = from;
                Opened::Nothing
            }
            TunnResult::Err(e) => self.dropped(classify(&e)),
        }
    }

    fn inner<'a>(
        counters: &mut WgCounters,
        peer: &mut Peer,
        from: SocketAddr,
        id: PeerId,
        packet: &'a [u8],
        allowed: bool,
    ) -> Opened<'a> {
        if !allowed {
            counters.count(WgDrop::NotAllowed);
            return Opened::Dropped(WgDrop::NotAllowed);
        }
        // Authenticated: the peer roams to where it spoke from.
        peer.endpoint = from;
        counters.opened += 1;
        Opened::Packet { peer: id, packet }
    }

    fn dropped<'a>(&mut self, why: WgDrop) -> Opened<'a> {
        self.counters.count(why);
        Opened::Dropped(why)
    }

    /// Drives every peer's timers (re-keys, retries, keepalives): `emit(endpoint,
    /// message)` for each message to send. Call it every 100 ms or so.
    pub fn tick(&mut self, out: &mut [u8], mut emit: impl FnMut(PeerId, SocketAddr, &[u8])) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(p) = slot.as_mut() else { continue };
            if let TunnResult::WriteToNetwork(m) = p.tunn.update_timers(out) {
                if m.first() == Some(&1) {
                    self.counters.handshake_initiations += 1;
                }
                emit(i as PeerId, p.endpoint, m);
            }
        }
    }

    /// Starts a new second of the handshake budget (call once per second).
    pub fn reset_handshake_budget(&self) {
        self.limiter.reset_count();
    }

    /// Seconds since peer `id`'s last completed handshake.
    pub fn since_handshake(&self, id: PeerId) -> Option<std::time::Duration> {
        self.peer(id)
            .and_then(|p| p.tunn.time_since_last_handshake())
    }
}

fn allows(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

fn classify(e: &WireGuardError) -> WgDrop {
    match e {
        WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => WgDrop::Replay,
        WireGuardError::NoCurrentSession | WireGuardError::ConnectionExpired => WgDrop::NoSession,
        WireGuardError::UnderLoad => WgDrop::UnderLoad,
        WireGuardError::InvalidPacket
        | WireGuardError::IncorrectPacketLength
        | WireGuardError::DestinationBufferTooSmall => WgDrop::Malformed,
        _ => WgDrop::Unauthenticated,
    }
}
