//! Stages `service_in` and `service_out`: Kubernetes Services (cluster IPs, node ports,
//! load balancer and external IPs) translated to their endpoints, with the translations
//! held per worker in a connection table, as kube-proxy does through the kernel's
//! conntrack.
//!
//! - `service_in` runs after `steer` and before `nat_in` and `forward`, on the packets at
//!   `Forward` (TCP, UDP and SCTP). Reads: `flow`, `ingress`, `flags`, `l3`, `l4`, the
//!   frame's TCP flags. Writes: the destination address and port (and for replies the
//!   destination back to the client), the checksums (incrementally, RFC 1624; SCTP's CRC32c
//!   again), `flow`, `flags::SERVICE_NAT`, and what `service_out` must do. Next: unchanged
//!   (`Forward`: routed to the endpoint, so policy sees the pod's address, as Kubernetes
//!   requires), `IcmpError(Reset | PortUnreachable, ServiceNoEndpoints)`, or
//!   `Drop(ServiceTableFull | ServiceFragment | SnatUnavailable | SnatPortsExhausted)`.
//! - `service_out` runs after `policy` and before `nat_out`, on the packets at `Rewrite`
//!   that `service_in` marked: it rewrites the source, to the node's address for a
//!   connection from outside to an `externalTrafficPolicy: Cluster` service, to the
//!   service's address for a hairpin (a pod reaching itself through its service), and on
//!   replies back to the service's address and port. Policy saw the addresses before
//!   these rewrites: the client's and the endpoint's.
//!
//! # A connection
//!
//! The first packet of a connection to a frontend picks an endpoint: with `ClientIP`
//! affinity the one this client used last (within the timeout) or Maglev over the client's
//! address, otherwise Maglev over the packet's 5-tuple. Two entries are recorded: the
//! client's direction as received (-> the translated 5-tuple), and the reply's direction as
//! it will be received (-> the original 5-tuple), so each packet costs one hash lookup. A
//! packet of a TCP connection that has no entry (after a restart of the agent, or an
//! expiry) picks again: Maglev gives the same endpoint while the endpoint set is unchanged,
//! so established connections survive a restart.
//!
//! When a new snapshot changes the services, an entry whose endpoint is no longer listed
//! (in any condition) is forgotten at its next packet, which picks a live endpoint (a TCP
//! peer there answers with a reset: the connection ends, as with kube-proxy); entries to
//! endpoints that stay are kept whatever the Maglev table says now. Terminating endpoints
//! keep their connections until they are removed.
//!
//! # Workers
//!
//! A connection and its replies must meet on one worker, and the translation changes the
//! 5-tuple, so the symmetric hash of `steer` cannot place both directions. Service traffic
//! is owned by the **client's port** instead (see `steer`): a packet to a frontend or to an
//! endpoint by its source port, a packet from an endpoint by its destination port. Ports
//! allocated for the source NAT of external connections have the owner's residue, as
//! source NAT's do. (A client whose own source port is an endpoint's port on its own
//! address is placed by that rule too: such a connection through a service may be owned by
//! two workers and fail. Clients use ephemeral ports, endpoints service ports.)
//!
//! Timeouts are source NAT's (`nat`): TCP 7440 s and 10 s after a FIN or RST, UDP 120 s,
//! SCTP as TCP. Not translated: later fragments (dropped as `service_fragment`: the first
//! fragment carries the ports, weir does not reassemble); ICMP errors about a service
//! connection (they keep the endpoint's address).

use rustc_hash::FxHashMap;

use super::nat::{self, NatTable, Side};
use crate::batch::{flags, Meta, Next, BATCH_SIZE};
use crate::counters::{DropReason, IcmpErrorKind};
use crate::flow::FlowKey;
use crate::frame::{Frame, FrameRegion};
use crate::service::maglev::BackendKey;
use crate::service::{BackendSet, Frontend, SCTP, TCP, UDP};
use crate::snapshot::Snapshot;

/// The most entries one worker holds (two per connection).
pub const MAX_ENTRIES: usize = 1 << 17;

/// The most clients one worker pins to an endpoint (`ClientIP` affinity).
pub const MAX_PINS: usize = 1 << 16;

/// The room the tables start with. They double as connections come (a rehash on the
/// worker, amortised over the connections that filled them) up to their maximum: a table
/// reserved at its maximum would spread a few thousand live entries over tens of MiB, and
/// every lookup would miss the caches and the TLB.
const INITIAL_ENTRIES: usize = 4096;

const SEC: u64 = 1_000_000_000;

/// One worker's service connections.
#[derive(Debug)]
pub struct ServiceState {
    entries: Conns,
    /// (service port index, client address) -> the endpoint it was pinned to.
    affinity: FxHashMap<(u32, [u8; 16]), Pin>,
    /// Per packet of the batch being processed: the source `service_out` writes.
    pending: Vec<Option<([u8; 16], u16)>>,
    /// How many of `pending` are set (`service_out` has nothing to do at zero, the usual
    /// case: only replies, hairpins and external connections translated to the node).
    pended: usize,
    /// The batch's packets that found no live entry and go to a frontend port: new
    /// connections, taken after the others (see [`prepare`]).
    fresh: Vec<usize>,
    /// The snapshot generation the entries were last checked against.
    generation: u64,
    next_sweep_ns: u64,
    capacity: usize,
}

/// What an entry says, in the tests' terms (the tables hold it packed, see [`Conns`];
/// `service_in` reads it as a [`Found`]).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
enum Entry {
    /// The client's direction as received: translated to `to`; `snat_port` when the
    /// source was translated to the node (a port claimed in the NAT table).
    Forward { to: FlowKey, snat_port: Option<u16> },
    /// The reply's direction as received: translated back to the reverse of `original`.
    Reply { original: FlowKey },
}

/// What a packet of an entry's direction updates in place.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    expires_ns: u64,
    /// The snapshot generation a `Forward` entry's endpoint was last found listed in.
    generation: u64,
}

/// The connection entries, in two tables: IPv4 flows (both keys and the translation
/// IPv4) with 32-bit addresses, 48 bytes an entry with its key (a whole flow key and
/// entry took 104), and the others with 16-byte ones (96). Every packet of a service
/// connection looks its entry up: the smaller the table, the fewer of those lookups miss
/// the caches.
#[derive(Debug, Default)]
struct Conns {
    v4: FxHashMap<Key4, Packed<u32>>,
    v6: FxHashMap<FlowKey, Packed<[u8; 16]>>,
}

/// An IPv4 flow key: both addresses in one word, ports and protocol in another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key4 {
    addrs: u64,
    rest: u64,
}

impl Key4 {
    fn of(k: &FlowKey) -> Option<Key4> {
        if !k.is_v4() {
            return None;
        }
        Some(Key4 {
            addrs: u64::from(u32::pack(&k.src)) << 32 | u64::from(u32::pack(&k.dst)),
            rest: u64::from(k.src_port) << 24 | u64::from(k.dst_port) << 8 | u64::from(k.proto),
        })
    }
}

/// An address as a table holds it.
trait Addr: Copy {
    /// From key form (for `u32`, an IPv4-mapped address).
    fn pack(a: &[u8; 16]) -> Self;
    /// Back to key form.
    fn full(&self) -> [u8; 16];
}

impl Addr for u32 {
    #[inline]
    fn pack(a: &[u8; 16]) -> u32 {
        u32::from_be_bytes([a[12], a[13], a[14], a[15]])
    }
    #[inline]
    fn full(&self) -> [u8; 16] {
        FlowKey::map_v4(self.to_be_bytes())
    }
}

impl Addr for [u8; 16] {
    #[inline]
    fn pack(a: &[u8; 16]) -> [u8; 16] {
        *a
    }
    #[inline]
    fn full(&self) -> [u8; 16] {
        *self
    }
}

/// An entry packed: the flow it names (`to` or `original`) without its protocol (the
/// key's), and what kind it is.
#[derive(Debug, Clone, Copy)]
struct Packed<A> {
    stamp: Stamp,
    src: A,
    dst: A,
    src_port: u16,
    dst_port: u16,
    snat_port: u16,
    kind: u8,
}

const FORWARD: u8 = 0;
const FORWARD_SNAT: u8 = 1;
const REPLY: u8 = 2;

impl<A: Addr> Packed<A> {
    #[inline]
    fn of(flow: &FlowKey, snat_port: u16, kind: u8, stamp: Stamp) -> Packed<A> {
        Packed {
            stamp,
            src: A::pack(&flow.src),
            dst: A::pack(&flow.dst),
            src_port: flow.src_port,
            dst_port: flow.dst_port,
            snat_port,
            kind,
        }
    }

    #[inline]
    fn open(&mut self, proto: u8) -> (&mut Stamp, Found) {
        let flow = FlowKey {
            src: self.src.full(),
            dst: self.dst.full(),
            src_port: self.src_port,
            dst_port: self.dst_port,
            proto,
        };
        let found = Found {
            kind: self.kind,
            flow,
            snat_port: self.snat_port,
        };
        (&mut self.stamp, found)
    }
}

/// An entry as a lookup finds it: a plain struct, so that the compiler keeps its fields
/// apart instead of copying it whole (an enum carrying the flow was copied, and the copy
/// read the key's last eight bytes across the narrower stores that had just written
/// them: a stall the processor cannot forward, on every packet).
#[derive(Debug, Clone, Copy)]
struct Found {
    kind: u8,
    /// `to` of a `Forward` entry, `original` of a `Reply` one.
    flow: FlowKey,
    snat_port: u16,
}

impl Found {
    /// What the entry says.
    #[cfg(test)]
    fn entry(&self) -> Entry {
        match self.kind {
            REPLY => Entry::Reply {
                original: self.flow,
            },
            kind => Entry::Forward {
                to: self.flow,
                snat_port: (kind == FORWARD_SNAT).then_some(self.snat_port),
            },
        }
    }
}

impl Conns {
    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The IPv4 table's room (the other grows from nothing: it is rarely used).
    fn capacity(&self) -> usize {
        self.v4.capacity()
    }

    /// Room for `n` more IPv4 entries.
    fn reserve(&mut self, n: usize) {
        self.v4.reserve(n);
    }

    /// `key`'s entry: its stamp to update, and what it says.
    #[inline]
    fn find(&mut self, key: &FlowKey) -> Option<(&mut Stamp, Found)> {
        if let Some(k) = Key4::of(key) {
            if let Some(p) = self.v4.get_mut(&k) {
                return Some(p.open(key.proto));
            }
        }
        if self.v6.is_empty() {
            return None;
        }
        self.v6.get_mut(key).map(|p| p.open(key.proto))
    }

    /// Records `entry` for `key`, replacing what it had. IPv4 when the key and the flow
    /// the entry names both are.
    #[cfg(test)]
    fn insert(&mut self, key: &FlowKey, entry: Entry, stamp: Stamp) {
        match entry {
            Entry::Forward { to, snat_port } => self.insert_forward(key, &to, snat_port, stamp),
            Entry::Reply { original } => self.insert_reply(key, &original, stamp),
        }
    }

    /// Records, for `key`, the client's direction translated to `to`.
    #[inline]
    fn insert_forward(&mut self, key: &FlowKey, to: &FlowKey, snat: Option<u16>, stamp: Stamp) {
        let kind = if snat.is_some() {
            FORWARD_SNAT
        } else {
            FORWARD
        };
        self.insert_named(key, to, snat.unwrap_or(0), kind, stamp);
    }

    /// Records, for `key`, the reply's direction translated back to the reverse of
    /// `original`.
    #[inline]
    fn insert_reply(&mut self, key: &FlowKey, original: &FlowKey, stamp: Stamp) {
        self.insert_named(key, original, 0, REPLY, stamp);
    }

    /// Records the entry naming `named` for `key`. The flow is read field by field, never
    /// copied whole into an enum first: a copy of a key just written field by field
    /// reads its last eight bytes across four narrower stores, which the processor cannot
    /// forward, and the profile of a new connection put three quarters of `connect` on
    /// that read.
    #[inline]
    fn insert_named(
        &mut self,
        key: &FlowKey,
        named: &FlowKey,
        snat_port: u16,
        kind: u8,
        stamp: Stamp,
    ) {
        match Key4::of(key).filter(|_| named.is_v4()) {
            Some(k) => {
                if !self.v6.is_empty() {
                    self.v6.remove(key);
                }
                self.v4.insert(k, Packed::of(named, snat_port, kind, stamp));
            }
            None => {
                if let Some(k) = Key4::of(key) {
                    self.v4.remove(&k);
                }
                self.v6
                    .insert(*key, Packed::of(named, snat_port, kind, stamp));
            }
        }
    }

    fn retain_alive(&mut self, now_ns: u64) {
        self.v4.retain(|_, p| p.stamp.expires_ns > now_ns);
        self.v6.retain(|_, p| p.stamp.expires_ns > now_ns);
    }

    /// Connections (their `Forward` entries).
    fn connections(&self) -> usize {
        self.v4.values().filter(|p| p.kind != REPLY).count()
            + self.v6.values().filter(|p| p.kind != REPLY).count()
    }
}

#[derive(Debug, Clone, Copy)]
struct Pin {
    backend: BackendKey,
    expires_ns: u64,
}

impl Default for ServiceState {
    fn default() -> Self {
        ServiceState::with_capacity(MAX_ENTRIES)
    }
}

impl ServiceState {
    /// A state that holds at most `capacity` entries (two per connection).
    pub fn with_capacity(capacity: usize) -> Self {
        ServiceState {
            entries: Conns::default(),
            affinity: FxHashMap::default(),
            pending: vec![None; BATCH_SIZE],
            pended: 0,
            fresh: Vec::with_capacity(BATCH_SIZE),
            generation: 0,
            next_sweep_ns: 0,
            capacity,
        }
    }

    /// Connections alive (each counts its two directions once).
    pub fn connections(&self) -> usize {
        self.entries.connections()
    }

    /// Gives the tables their initial room when the first service connection appears.
    fn prepare(&mut self, affinity: bool) {
        if self.entries.capacity() == 0 {
            self.entries.reserve(self.capacity.min(INITIAL_ENTRIES));
        }
        if affinity && self.affinity.capacity() == 0 {
            self.affinity.reserve(INITIAL_ENTRIES);
        }
    }

    /// Forgets expired entries (at most once a second).
    fn sweep(&mut self, now_ns: u64) {
        if now_ns < self.next_sweep_ns {
            return;
        }
        self.next_sweep_ns = now_ns + SEC;
        self.entries.retain_alive(now_ns);
        self.affinity.retain(|_, p| p.expires_ns > now_ns);
    }
}

/// Runs `service_in` over the batch.
pub fn run_in(
    region: &mut FrameRegion<'_>,
    frames: &[Frame],
    meta: &mut [Meta],
    snapshot: &Snapshot,
    state: &mut ServiceState,
    nat: &mut NatTable,
    now_ns: u64,
) {
    if state.pended > 0 {
        state.pending.fill(None);
        state.pended = 0;
    }
    let services = &*snapshot.services;
    if services.is_empty() && state.entries.is_empty() {
        return;
    }
    if state.pending.len() < frames.len() {
        state.pending.resize(frames.len(), None);
    }
    // With few frontends their tables stay in the caches: a new connection is taken at
    // once. With many, reading ahead pays (see `prepare`).
    let read_ahead = services.frontends() >= READ_AHEAD_FRONTENDS;
    for (i, (frame, m)) in frames.iter().zip(meta.iter_mut()).enumerate() {
        if m.next != Next::Forward || !matches!(m.flow.proto, TCP | UDP | SCTP) {
            continue;
        }
        // Every entry is keyed by a packet to a frontend port (the client's direction) or
        // from an endpoint port (the reply's); other packets are not service traffic. A
        // frontend or endpoint that went away with a new snapshot leaves its entries to
        // expire (their packets then pass untranslated, as new ones would).
        if !services.is_frontend_port(m.flow.dst_port)
            && !services.is_endpoint_port(m.flow.src_port)
            && !m.has(flags::LATER_FRAGMENT)
        {
            continue;
        }
        if m.has(flags::LATER_FRAGMENT) {
            if services.is_service_address(&m.flow.dst) {
                m.next = Next::Drop(DropReason::ServiceFragment);
            }
            continue;
        }
        match established(region, frame, m, i, snapshot, state, nat, now_ns) {
            Some(next) => m.next = next,
            // A packet with no live entry to a frontend port may open a connection: it is
            // taken below. One to another port passes untranslated, as `connect` would
            // let it (its reply entry cannot be one that a new connection of this batch
            // records: a reply leaves its endpoint after the request reached it).
            None if !services.is_frontend_port(m.flow.dst_port) => {}
            None if read_ahead => state.fresh.push(i),
            None => {
                m.next = connect(region, frame, m, i, snapshot, state, nat, now_ns, None);
            }
        }
    }
    // New connections, a few at a time: their tables read together first, then each
    // taken in order (an earlier packet of the same connection in this batch may have
    // recorded its entry since).
    let fresh = std::mem::take(&mut state.fresh);
    // The keys this batch has recorded so far, as bits of a small filter: a packet whose
    // bit is clear found no entry above and none was recorded for it since, so it is
    // not looked up again.
    let mut recorded = [0u64; 4];
    let bit = |k: &FlowKey| {
        usize::from((k.src_port ^ k.dst_port ^ u16::from(k.src[15]) ^ u16::from(k.dst[15])) as u8)
    };
    for chunk in fresh.chunks(WARM) {
        let prepared = prepare(snapshot, meta, chunk);
        for (&i, p) in chunk.iter().zip(prepared) {
            let (frame, m) = (&frames[i], &mut meta[i]);
            let b = bit(&m.flow);
            if recorded[b / 64] & 1 << (b % 64) != 0 {
                if let Some(next) = established(region, frame, m, i, snapshot, state, nat, now_ns) {
                    m.next = next;
                    continue;
                }
            }
            recorded[b / 64] |= 1 << (b % 64);
            m.next = connect(region, frame, m, i, snapshot, state, nat, now_ns, Some(p));
        }
    }
    state.fresh = fresh;
    state.fresh.clear();
    state.generation = snapshot.generation;
}

/// How many new connections [`prepare`] reads ahead for.
const WARM: usize = 16;

/// From this many frontends on, a batch's new connections are taken after its other
/// packets, a few at a time, their tables read ahead ([`prepare`]). Measured with
/// `weir-bench services` (the first-packet case, LTO, 2-vCPU VM): at 1k and 10k services
/// reading ahead made a new connection 10–45% cheaper; at 10 services, where every table
/// is in the caches, 10–25% dearer.
const READ_AHEAD_FRONTENDS: usize = 256;

/// What a new connection's pick found before its turn: its frontend (`None`: the packet
/// goes to no frontend) and the endpoint Maglev gives it (`None`: the set is empty).
#[derive(Clone, Copy)]
struct Prepared<'a> {
    frontend: Option<Frontend<'a>>,
    maglev: Option<BackendKey>,
}

/// Looks up, for a few new connections, what their picks read: each one's frontend entry,
/// backend set, Maglev slot and backend. At 10k services each is a cache miss, and one
/// connection's four depend on each other; read one step at a time over the connections,
/// the misses of a step overlap instead of following each other. `connect` then takes
/// what was found instead of looking it up again.
fn prepare<'a>(snapshot: &'a Snapshot, meta: &[Meta], fresh: &[usize]) -> [Prepared<'a>; WARM] {
    let services = &*snapshot.services;
    let mut sets: [Option<(&BackendSet, u64)>; WARM] = [None; WARM];
    let mut out = [Prepared {
        frontend: None,
        maglev: None,
    }; WARM];
    for ((p, set), &i) in out.iter_mut().zip(sets.iter_mut()).zip(fresh) {
        let (m, key) = (&meta[i], &meta[i].flow);
        p.frontend = services.frontend(&key.dst, key.dst_port, key.proto);
        *set = p.frontend.map(|f| {
            (
                f.backends(Some(m.ingress) == snapshot.uplink),
                pick_hash(&f, key),
            )
        });
    }
    let mut at = [None; WARM];
    for (at, set) in at.iter_mut().zip(&sets) {
        *at = set.and_then(|(s, hash)| s.table.slot_at(hash));
    }
    let mut slots = [None; WARM];
    for ((slot, at), set) in slots.iter_mut().zip(&at).zip(&sets) {
        *slot = set.zip(*at).and_then(|((s, _), at)| s.table.slot(at));
    }
    for ((p, slot), set) in out.iter_mut().zip(&slots).zip(&sets) {
        if let (Some(b), Some((s, _))) = (slot, set) {
            p.maglev = s.backends.get(usize::from(*b)).copied();
        }
    }
    out
}

/// The hash a new connection's Maglev pick uses: the client's address alone with
/// `ClientIP` affinity, the 5-tuple otherwise.
#[inline]
fn pick_hash(frontend: &Frontend<'_>, key: &FlowKey) -> u64 {
    if frontend.affinity_ns() > 0 {
        client_hash(&key.src)
    } else {
        key.symmetric_hash()
    }
}

/// Runs `service_out` over the batch.
pub fn run_out(
    region: &mut FrameRegion<'_>,
    frames: &[Frame],
    meta: &mut [Meta],
    state: &mut ServiceState,
) {
    if state.pended == 0 {
        return;
    }
    state.pended = 0;
    for (i, (frame, m)) in frames.iter().zip(meta.iter_mut()).enumerate() {
        let Some((addr, port)) = state.pending.get_mut(i).and_then(Option::take) else {
            continue;
        };
        if m.next != Next::Rewrite {
            continue;
        }
        // The headers were rewritten once already by `service_in`: they are where `m` says.
        nat::set_endpoint(region.data_mut(frame), m, Side::Source, &addr, port);
    }
}

/// A packet of a connection with a live entry, translated; `None` when it has none.
#[allow(clippy::too_many_arguments)]
#[inline]
fn established(
    region: &mut FrameRegion<'_>,
    frame: &Frame,
    m: &mut Meta,
    i: usize,
    snapshot: &Snapshot,
    state: &mut ServiceState,
    nat: &mut NatTable,
    now_ns: u64,
) -> Option<Next> {
    let services = &*snapshot.services;
    let key = m.flow;
    let expires_ns = nat::expiry(region.data(frame), m, now_ns);
    match state.entries.find(&key) {
        Some((stamp, found)) if found.kind == REPLY && stamp.expires_ns > now_ns => {
            let original = &found.flow;
            stamp.expires_ns = expires_ns;
            let data = region.data_mut(frame);
            if (m.flow.dst, m.flow.dst_port) != (original.src, original.src_port)
                && !nat::set_endpoint(data, m, Side::Destination, &original.src, original.src_port)
            {
                return Some(Next::Forward);
            }
            m.flags |= flags::SERVICE_NAT;
            state.pending[i] = Some((original.dst, original.dst_port));
            state.pended += 1;
            Some(Next::Forward)
        }
        Some((stamp, found)) if found.kind != REPLY && stamp.expires_ns > now_ns => {
            let to = &found.flow;
            let snat_port = (found.kind == FORWARD_SNAT).then_some(found.snat_port);
            let live = stamp.generation == snapshot.generation
                || services.is_endpoint(&to.dst, to.dst_port, to.proto);
            if live {
                stamp.expires_ns = expires_ns;
                stamp.generation = snapshot.generation;
                if let Some(p) = snat_port {
                    let mut pre = *to;
                    pre.src = key.src;
                    pre.src_port = key.src_port;
                    nat.touch(p, &pre, expires_ns);
                }
                return Some(translate_forward(region.data_mut(frame), m, i, to, state));
            }
            None
        }
        _ => None,
    }
}

/// The first packet of a connection (or one whose entry expired or lost its endpoint):
/// an endpoint picked and both directions' entries recorded, when it goes to a frontend.
/// `prepared`: the frontend and Maglev pick already looked up ([`prepare`]).
#[allow(clippy::too_many_arguments)]
fn connect(
    region: &mut FrameRegion<'_>,
    frame: &Frame,
    m: &mut Meta,
    i: usize,
    snapshot: &Snapshot,
    state: &mut ServiceState,
    nat: &mut NatTable,
    now_ns: u64,
    prepared: Option<Prepared<'_>>,
) -> Next {
    let services = &*snapshot.services;
    let key = m.flow;
    let frontend = match prepared {
        Some(p) => p.frontend,
        None => services.frontend(&key.dst, key.dst_port, key.proto),
    };
    let Some(frontend) = frontend else {
        return Next::Forward;
    };
    let expires_ns = nat::expiry(region.data(frame), m, now_ns);
    let external = Some(m.ingress) == snapshot.uplink;
    let set = frontend.backends(external);
    let affinity_ns = frontend.affinity_ns();
    let pinned = if affinity_ns > 0 {
        state
            .affinity
            .get(&(frontend.index, key.src))
            .filter(|p| p.expires_ns > now_ns && set.backends.contains(&p.backend))
            .map(|p| p.backend)
    } else {
        None
    };
    let backend = pinned.or_else(|| match prepared {
        Some(p) => p.maglev,
        None => set.pick(pick_hash(&frontend, &key)),
    });
    let Some((addr, port)) = backend else {
        let answer = if key.proto == TCP {
            IcmpErrorKind::Reset
        } else {
            IcmpErrorKind::PortUnreachable
        };
        return Next::IcmpError(answer, DropReason::ServiceNoEndpoints);
    };
    state.prepare(affinity_ns > 0);
    if state.entries.len() + 2 > state.capacity {
        state.sweep(now_ns);
        if state.entries.len() + 2 > state.capacity {
            return Next::Drop(DropReason::ServiceTableFull);
        }
    }
    if affinity_ns > 0 && state.affinity.len() >= MAX_PINS {
        state.sweep(now_ns);
    }
    // A full pin table forgets nothing that is alive: the new client is not pinned, and
    // Maglev over its address still sends its connections to one endpoint while the set
    // does not change.
    if affinity_ns > 0 && state.affinity.len() < MAX_PINS {
        state.affinity.insert(
            (frontend.index, key.src),
            Pin {
                backend: (addr, port),
                expires_ns: now_ns + affinity_ns,
            },
        );
    }
    let mut to = FlowKey {
        src: key.src,
        dst: addr,
        src_port: key.src_port,
        dst_port: port,
        proto: key.proto,
    };
    let mut snat_port = None;
    if external && frontend.snat_external() {
        let node = match (&snapshot.snat, key.is_v4()) {
            (Some(s), true) => s.v4.map(|a| FlowKey::map_v4(a.octets())),
            (Some(s), false) => s.v6.map(|a| a.octets()),
            (None, _) => None,
        };
        let (Some(node), Some(range)) = (node, snapshot.snat.as_ref().map(|s| s.ports)) else {
            return Next::Drop(DropReason::SnatUnavailable);
        };
        let Some(p) = nat.claim(range, &to, now_ns, expires_ns) else {
            return Next::Drop(DropReason::SnatPortsExhausted);
        };
        to.src = node;
        to.src_port = p;
        snat_port = Some(p);
    } else if addr == key.src {
        // Hairpin: the pod would drop a packet from its own address; it comes from the
        // service's address instead, with the client's port.
        to.src = key.dst;
    }
    let stamp = Stamp {
        expires_ns,
        generation: snapshot.generation,
    };
    state.entries.insert_forward(&key, &to, snat_port, stamp);
    state.entries.insert_reply(&to.reversed(), &key, stamp);
    translate_forward(region.data_mut(frame), m, i, &to, state)
}

/// Rewrites the destination to `to`'s and leaves the source for `service_out`.
fn translate_forward(
    data: &mut [u8],
    m: &mut Meta,
    i: usize,
    to: &FlowKey,
    state: &mut ServiceState,
) -> Next {
    let src = (m.flow.src, m.flow.src_port);
    if !nat::set_endpoint(data, m, Side::Destination, &to.dst, to.dst_port) {
        return Next::Forward;
    }
    m.flags |= flags::SERVICE_NAT;
    if (to.src, to.src_port) != src {
        state.pending[i] = Some((to.src, to.src_port));
        state.pended += 1;
    }
    Next::Forward
}

/// The hash affinity picks by: the client's address alone.
fn client_hash(addr: &[u8; 16]) -> u64 {
    FlowKey {
        src: *addr,
        ..FlowKey::default()
    }
    .symmetric_hash()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: [u8; 16], dst: [u8; 16], src_port: u16, dst_port: u16) -> FlowKey {
        FlowKey {
            src,
            dst,
            src_port,
            dst_port,
            proto: TCP,
        }
    }

    fn v4(d: u8) -> [u8; 16] {
        FlowKey::map_v4([198, 18, 0, d])
    }

    fn v6(d: u8) -> [u8; 16] {
        let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a[15] = d;
        a
    }

    fn stamp(expires_ns: u64) -> Stamp {
        Stamp {
            expires_ns,
            generation: 7,
        }
    }

    /// What `find` reads back, comparable.
    fn read(c: &mut Conns, key: &FlowKey) -> Option<(u64, u64, String)> {
        c.find(key)
            .map(|(s, e)| (s.expires_ns, s.generation, format!("{:?}", e.entry())))
    }

    #[test]
    fn entries_read_back_as_written_in_both_families_and_ipv4_ones_are_packed() {
        let mut c = Conns::default();
        let client4 = flow(v4(1), v4(100), 40000, 80);
        let to4 = flow(v4(1), v4(9), 40000, 5201);
        let snat4 = flow(v4(200), v4(9), 61000, 5201);
        let client6 = flow(v6(1), v6(100), 40001, 80);
        let to6 = flow(v6(1), v6(9), 40001, 5201);
        let writes = [
            (
                client4,
                Entry::Forward {
                    to: to4,
                    snat_port: None,
                },
            ),
            (to4.reversed(), Entry::Reply { original: client4 }),
            (
                flow(v4(2), v4(100), 40002, 80),
                Entry::Forward {
                    to: snat4,
                    snat_port: Some(61000),
                },
            ),
            (
                client6,
                Entry::Forward {
                    to: to6,
                    snat_port: None,
                },
            ),
            (to6.reversed(), Entry::Reply { original: client6 }),
        ];
        for (i, (k, e)) in writes.iter().enumerate() {
            c.insert(k, *e, stamp(100 + i as u64));
        }
        assert_eq!((c.v4.len(), c.v6.len(), c.len()), (3, 2, 5));
        assert_eq!(c.connections(), 3);
        for (i, (k, e)) in writes.iter().enumerate() {
            assert_eq!(
                read(&mut c, k),
                Some((100 + i as u64, 7, format!("{e:?}"))),
                "{k:?}"
            );
        }
        assert_eq!(read(&mut c, &flow(v4(1), v4(100), 40000, 81)), None);
        // The stamp is updated in place.
        c.find(&client4).unwrap().0.expires_ns = 500;
        assert_eq!(read(&mut c, &client4).unwrap().0, 500);
        c.retain_alive(150);
        assert_eq!((c.v4.len(), c.v6.len()), (1, 0));
        assert!(read(&mut c, &client6).is_none());
    }

    #[test]
    fn an_ipv4_entry_and_its_key_take_48_bytes_others_96() {
        assert_eq!(std::mem::size_of::<(Key4, Packed<u32>)>(), 48);
        assert_eq!(std::mem::size_of::<(FlowKey, Packed<[u8; 16]>)>(), 96);
    }

    #[test]
    fn an_ipv4_key_translated_to_another_family_is_kept_whole_and_moves_back() {
        let mut c = Conns::default();
        let key = flow(v4(1), v4(100), 40000, 80);
        let mixed = flow(v4(1), v6(9), 40000, 5201);
        c.insert(
            &key,
            Entry::Forward {
                to: mixed,
                snat_port: None,
            },
            stamp(1),
        );
        assert_eq!((c.v4.len(), c.v6.len()), (0, 1));
        let want = format!(
            "{:?}",
            Entry::Forward {
                to: mixed,
                snat_port: None
            }
        );
        assert_eq!(read(&mut c, &key), Some((1, 7, want)));
        // The same key translated within IPv4 replaces the whole entry: one entry left.
        let to = flow(v4(1), v4(9), 40000, 5201);
        c.insert(
            &key,
            Entry::Forward {
                to,
                snat_port: None,
            },
            stamp(2),
        );
        assert_eq!((c.v4.len(), c.v6.len()), (1, 0));
        c.insert(
            &key,
            Entry::Forward {
                to: mixed,
                snat_port: None,
            },
            stamp(3),
        );
        assert_eq!((c.v4.len(), c.v6.len()), (0, 1));
    }
}
