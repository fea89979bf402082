//! Stages `nat_in` and `nat_out`: source NAT of pod traffic that leaves the cluster
//! (Calico's IPPool `natOutgoing`), with the translations held per worker.
//!
//! - `nat_out` runs after `policy` (policy sees the pod's own address) and before
//!   `rewrite`. Reads: `nexthop` (only adjacencies with `nat`, i.e. routed to the node's
//!   gateway), `flow`, `kind`, `l3`, `l4`, `flags`. Writes: the source address and port
//!   (TCP/UDP) or echo identifier (ICMP), the IP header checksum and the L4 checksum
//!   (incrementally, RFC 1624), `flow`. Next: unchanged (`Rewrite`), or
//!   `Drop(SnatUnavailable | SnatPortsExhausted)`.
//! - `nat_in` runs after `antispoof` and before `forward` (the reply is routed by the
//!   pod's address, and policy sees it as the reply of the pod's flow). Reads packets from
//!   the uplink: those addressed to the node's address with a port in the SNAT range are
//!   translated back (destination address and port, checksums, `flow`); others addressed
//!   to a `natOutgoing` pool from outside the cluster are remembered as *inbound* flows,
//!   so that the pod's replies keep its address (only connections a pod opens are
//!   translated, as the kernel's MASQUERADE does through conntrack). Next: unchanged
//!   (`Forward`), or `Drop(SnatNoMapping | SnatTableFull)`.
//!
//! # Why the state is shaped so
//!
//! The mapping is endpoint-dependent (RFC 4787 calls it "address and port-dependent"):
//! one node port serves one pod flow, and a reply is taken back only from the remote
//! address and port the pod talks to. Ports are split between workers by residue
//! (`port % workers == worker`), so a reply can be steered to the worker holding its
//! translation by its destination port alone, without a shared table. Per worker:
//! a slot per port and protocol family (index `port - first`), which makes the reverse
//! lookup one array read, and a hash map from the pod's flow key to its port for the
//! forward direction, sized once (no allocation on the packet path while under its
//! capacity). A slot is free when its expiry has passed; taking it removes the stale
//! forward entry.
//!
//! Timeouts follow the BEHAVE requirements: UDP 120 s (RFC 4787 REQ-5: at least two
//! minutes), TCP established 7440 s (RFC 5382 REQ-5: at least 2 h 4 min) and 10 s after
//! a FIN or RST, ICMP echo 60 s (RFC 5508 REQ-1).
//!
//! Not translated, on purpose: fragments (no ports in later fragments; weir does not
//! reassemble, dropped as `snat_unavailable`: pods use path MTU discovery), protocols
//! other than TCP, UDP and ICMP echo (dropped the same way), ICMP errors the pod sends
//! (they answer inbound flows, which keep the pod's address). ICMP errors from the world
//! about a translated flow are addressed to the node and reach the node's kernel.

use rustc_hash::FxHashMap;

use crate::batch::{flags, L3Kind, Meta, Next};
use crate::counters::DropReason;
use crate::flow::FlowKey;
use crate::frame::{Frame, FrameRegion};
use crate::snapshot::{Snapshot, SnatConfig};
use crate::wire::checksum;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

const SEC: u64 = 1_000_000_000;
const UDP_TIMEOUT: u64 = 120 * SEC;
const TCP_TIMEOUT: u64 = 7440 * SEC;
const TCP_CLOSING_TIMEOUT: u64 = 10 * SEC;
const ICMP_TIMEOUT: u64 = 60 * SEC;

/// The most flows one worker remembers (translated and inbound together).
pub const MAX_FLOWS: usize = 1 << 16;

/// One worker's translations.
#[derive(Debug)]
pub struct NatTable {
    worker: u16,
    workers: u16,
    range: (u16, u16),
    /// Pod-side flow key -> what was decided for it.
    flows: FxHashMap<FlowKey, Entry>,
    /// Per (family, protocol): a slot per port of the range, index `port - range.0`.
    slots: [Vec<Slot>; 6],
    /// Next time the inbound entries are swept for expiry.
    next_sweep_ns: u64,
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    /// Translated to this node port (or echo identifier).
    Snat { port: u16 },
    /// Opened from outside the cluster: the pod's replies keep its address.
    Inbound { expires_ns: u64 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The pod-side flow key (as the pod sends it).
    key: FlowKey,
    expires_ns: u64,
}

impl Default for NatTable {
    fn default() -> Self {
        NatTable::new(0, 1)
    }
}

impl NatTable {
    /// The table of worker `worker` out of `workers`: it allocates the ports `p` of the
    /// range with `p % workers == worker`.
    ///
    /// # Panics
    /// If `worker >= workers` (a driver bug).
    pub fn new(worker: u16, workers: u16) -> Self {
        assert!(worker < workers, "worker {worker} of {workers}");
        NatTable {
            worker,
            workers,
            range: (0, 0),
            flows: FxHashMap::default(),
            slots: Default::default(),
            next_sweep_ns: 0,
        }
    }

    /// Translations alive (translated flows and remembered inbound ones).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no translation is alive.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Sizes the slots for `range` (once, or again when the range changes: the old
    /// translations are then forgotten).
    fn prepare(&mut self, range: (u16, u16)) {
        if self.range == range && !self.slots[0].is_empty() {
            return;
        }
        let n = usize::from(range.1.saturating_sub(range.0)) + 1;
        self.range = range;
        for s in &mut self.slots {
            *s = vec![Slot::default(); n];
        }
        self.flows = FxHashMap::default();
        self.flows.reserve(MAX_FLOWS);
    }

    fn space(v4: bool, proto: u8) -> usize {
        let p = match proto {
            TCP => 0,
            UDP => 1,
            _ => 2,
        };
        p + if v4 { 0 } else { 3 }
    }

    /// A free port of this worker for `key`, claimed until `expires_ns`.
    fn allocate(&mut self, key: &FlowKey, v4: bool, now_ns: u64, expires_ns: u64) -> Option<u16> {
        let (lo, hi) = self.range;
        let n = u32::from(self.workers);
        // The first port of the range that is this worker's.
        let first = u32::from(lo) + (u32::from(self.worker) + n - u32::from(lo) % n) % n;
        if first > u32::from(hi) {
            return None;
        }
        let count = (u32::from(hi) - first) / n + 1;
        let start = (key.symmetric_hash() % u64::from(count)) as u32;
        let space = Self::space(v4, key.proto);
        for k in 0..count {
            let port = first + ((start + k) % count) * n;
            let index = (port - u32::from(lo)) as usize;
            let slot = self.slots[space][index];
            if slot.expires_ns > now_ns {
                continue;
            }
            if slot.expires_ns != 0 {
                self.flows.remove(&slot.key);
            }
            self.slots[space][index] = Slot {
                key: *key,
                expires_ns,
            };
            return Some(port as u16);
        }
        None
    }

    /// A port of this worker for a service flow translated to the node's address (see
    /// `node::service`): claimed in the same slots as source NAT's, so the two never hand
    /// out one port twice. `key` is the flow as it leaves the service stage (the client's
    /// source, the backend's destination); the slot is refreshed by [`NatTable::touch`].
    pub(crate) fn claim(
        &mut self,
        range: (u16, u16),
        key: &FlowKey,
        now_ns: u64,
        expires_ns: u64,
    ) -> Option<u16> {
        self.prepare(range);
        self.allocate(key, key.is_v4(), now_ns, expires_ns)
    }

    /// Extends the claim on `port` held by `key` (a no-op if it is not `key`'s).
    pub(crate) fn touch(&mut self, port: u16, key: &FlowKey, expires_ns: u64) {
        let space = Self::space(key.is_v4(), key.proto);
        let index = usize::from(port.wrapping_sub(self.range.0));
        if let Some(slot) = self.slots[space].get_mut(index) {
            if slot.key == *key {
                slot.expires_ns = expires_ns;
            }
        }
    }

    /// Drops inbound entries that have expired (at most once a second).
    fn sweep(&mut self, now_ns: u64) {
        if now_ns < self.next_sweep_ns {
            return;
        }
        self.next_sweep_ns = now_ns + SEC;
        let slots = &self.slots;
        let lo = self.range.0;
        self.flows.retain(|key, e| match *e {
            Entry::Inbound { expires_ns } => expires_ns > now_ns,
            Entry::Snat { port } => {
                let space = NatTable::space(key.is_v4(), key.proto);
                slots[space]
                    .get(usize::from(port.wrapping_sub(lo)))
                    .is_some_and(|s| s.expires_ns > now_ns && s.key == *key)
            }
        });
    }
}

/// Runs `nat_in` over the batch.
pub fn run_in(
    region: &mut FrameRegion<'_>,
    frames: &[Frame],
    meta: &mut [Meta],
    snapshot: &Snapshot,
    table: &mut NatTable,
    now_ns: u64,
) {
    let (Some(snat), Some(uplink)) = (&snapshot.snat, snapshot.uplink) else {
        return;
    };
    table.prepare(snat.ports);
    for (frame, m) in frames.iter().zip(meta.iter_mut()) {
        if m.next != Next::Forward || m.ingress != uplink {
            continue;
        }
        let dst = m.flow.dst_ip();
        let to_node = match dst {
            std::net::IpAddr::V4(a) => snat.v4 == Some(a),
            std::net::IpAddr::V6(a) => snat.v6 == Some(a),
        };
        if to_node {
            let Some(port) = reply_port(m) else { continue };
            if port < snat.ports.0 || port > snat.ports.1 {
                continue;
            }
            let space = NatTable::space(m.flow.is_v4(), m.flow.proto);
            let slot = table.slots[space][usize::from(port - snat.ports.0)];
            let remote_matches = slot.key.dst == m.flow.src
                && (m.flow.proto != TCP && m.flow.proto != UDP
                    || slot.key.dst_port == m.flow.src_port);
            if slot.expires_ns <= now_ns || !remote_matches {
                m.next = Next::Drop(DropReason::SnatNoMapping);
                continue;
            }
            let data = region.data_mut(frame);
            if !translate(data, m, &slot.key, Side::Destination) {
                m.next = Next::Drop(DropReason::SnatNoMapping);
                continue;
            }
            let expires = expiry(data, m, now_ns);
            table.slots[space][usize::from(port - snat.ports.0)].expires_ns = expires;
            continue;
        }
        // A connection opened from outside to a pod: remember it, so its replies are not
        // translated.
        if m.has(flags::ICMP_ERROR) || !snat.translates(dst, m.flow.src_ip()) {
            continue;
        }
        let key = m.flow.reversed();
        let expires_ns = expiry(region.data(frame), m, now_ns);
        if table.flows.len() >= MAX_FLOWS {
            table.sweep(now_ns);
        }
        let room = table.flows.len() < MAX_FLOWS;
        match table.flows.get_mut(&key) {
            Some(Entry::Inbound { expires_ns: e }) => *e = expires_ns,
            Some(Entry::Snat { .. }) => {}
            None if room => {
                table.flows.insert(key, Entry::Inbound { expires_ns });
            }
            None => m.next = Next::Drop(DropReason::SnatTableFull),
        }
    }
}

/// Runs `nat_out` over the batch.
pub fn run_out(
    region: &mut FrameRegion<'_>,
    frames: &[Frame],
    meta: &mut [Meta],
    snapshot: &Snapshot,
    table: &mut NatTable,
    now_ns: u64,
) {
    let Some(snat) = &snapshot.snat else { return };
    table.prepare(snat.ports);
    let adjacencies = &snapshot.fib.adjacencies;
    for (frame, m) in frames.iter().zip(meta.iter_mut()) {
        if m.next != Next::Rewrite
            || !adjacencies.get(m.nexthop as usize).is_some_and(|a| a.nat)
            || !snat.translates(m.flow.src_ip(), m.flow.dst_ip())
        {
            continue;
        }
        m.next = out(region, frame, m, snat, table, now_ns);
    }
}

fn out(
    region: &mut FrameRegion<'_>,
    frame: &Frame,
    m: &mut Meta,
    snat: &SnatConfig,
    table: &mut NatTable,
    now_ns: u64,
) -> Next {
    let unavailable = Next::Drop(DropReason::SnatUnavailable);
    let v4 = m.flow.is_v4();
    let node = match (v4, snat.v4, snat.v6) {
        (true, Some(a), _) => FlowKey::map_v4(a.octets()),
        (false, _, Some(a)) => a.octets(),
        _ => return unavailable,
    };
    let icmp = if v4 { ICMP } else { ICMPV6 };
    if m.flow.proto == icmp {
        if m.has(flags::ICMP_ERROR) {
            return Next::Rewrite;
        }
        let echo_request = if v4 { 8 } else { 128 };
        if m.flow.src_port >> 8 != echo_request {
            return Next::Rewrite;
        }
    } else if m.flow.proto != TCP && m.flow.proto != UDP {
        return unavailable;
    }
    if m.has(flags::FRAGMENT) {
        return unavailable;
    }
    let key = m.flow;
    let data = region.data_mut(frame);
    let expires_ns = expiry(data, m, now_ns);
    let port = match table.flows.get(&key).copied() {
        Some(Entry::Inbound { .. }) => return Next::Rewrite,
        Some(Entry::Snat { port }) => {
            let space = NatTable::space(v4, key.proto);
            let index = usize::from(port.wrapping_sub(table.range.0));
            match table.slots[space].get_mut(index) {
                Some(slot) if slot.key == key && slot.expires_ns > now_ns => {
                    slot.expires_ns = expires_ns;
                    Some(port)
                }
                _ => {
                    table.flows.remove(&key);
                    None
                }
            }
        }
        None => None,
    };
    let port = match port {
        Some(p) => p,
        None => {
            if table.flows.len() >= MAX_FLOWS {
                table.sweep(now_ns);
                if table.flows.len() >= MAX_FLOWS {
                    return Next::Drop(DropReason::SnatPortsExhausted);
                }
            }
            let Some(p) = table.allocate(&key, v4, now_ns, expires_ns) else {
                return Next::Drop(DropReason::SnatPortsExhausted);
            };
            table.flows.insert(key, Entry::Snat { port: p });
            p
        }
    };
    let mut to = key;
    to.src = node;
    if key.proto == TCP || key.proto == UDP {
        to.src_port = port;
    } else {
        to.dst_port = port;
    }
    if !translate(data, m, &to, Side::Source) {
        return unavailable;
    }
    Next::Rewrite
}

/// The port a reply to a translated flow is addressed to: the TCP/UDP destination port,
/// or the identifier of an ICMP echo reply.
fn reply_port(m: &Meta) -> Option<u16> {
    if m.has(flags::LATER_FRAGMENT) {
        return None;
    }
    match m.flow.proto {
        TCP | UDP => Some(m.flow.dst_port),
        ICMP if m.flow.src_port >> 8 == 0 => Some(m.flow.dst_port),
        ICMPV6 if m.flow.src_port >> 8 == 129 => Some(m.flow.dst_port),
        _ => None,
    }
}

/// When a translation touched by this packet expires.
pub(crate) fn expiry(data: &[u8], m: &Meta, now_ns: u64) -> u64 {
    now_ns
        + match m.flow.proto {
            TCP => {
                let tcp_flags = data.get(usize::from(m.l4) + 13).copied().unwrap_or(0);
                // FIN (0x01) or RST (0x04): the connection is ending.
                if tcp_flags & 0x05 != 0 {
                    TCP_CLOSING_TIMEOUT
                } else {
                    TCP_TIMEOUT
                }
            }
            UDP => UDP_TIMEOUT,
            // An SCTP association lives as long as a TCP connection.
            SCTP => TCP_TIMEOUT,
            _ => ICMP_TIMEOUT,
        }
}

/// Which end of a packet a translation rewrites.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Side {
    Source,
    Destination,
}

/// Rewrites one side of the packet to `to`'s (the source of `to` for `Source`, the
/// source of `to` as destination for `Destination`: `to` is always the pod-side key for
/// `Destination`), with the checksums; false (nothing written) if the headers are not
/// where `m` says.
fn translate(data: &mut [u8], m: &mut Meta, to: &FlowKey, side: Side) -> bool {
    let new_port = match (m.flow.proto, side) {
        (TCP | UDP, _) => to.src_port,
        // The echo identifier: the pod's choice (`Destination`, the echo reply) or the
        // node's (`Source`).
        _ => to.dst_port,
    };
    set_endpoint(data, m, side, &to.src, new_port)
}

/// Rewrites the source or destination address and port (TCP, UDP, SCTP) or echo
/// identifier (ICMP, ICMPv6) of the packet to `addr` (key form) and `port`, the checksums
/// with them (incrementally for IP, TCP, UDP and ICMP, RFC 1624; SCTP's CRC32c again when
/// a port changes, RFC 9260 §6.8, as it covers no address), and `m.flow`. False (nothing
/// written) if the headers are not where `m` says or the protocol has no ports.
// Inlined into each caller, where the side and usually the protocol are known: out of
// line it cost the service stage about 15 ns a packet (its branches and bounds checks).
#[inline(always)]
pub(crate) fn set_endpoint(
    data: &mut [u8],
    m: &mut Meta,
    side: Side,
    addr: &[u8; 16],
    new_port: u16,
) -> bool {
    let (l3, l4) = (usize::from(m.l3), usize::from(m.l4));
    let v4 = m.kind == L3Kind::Ipv4;
    let (addr_at, addr_len) = match (v4, side) {
        (true, Side::Source) => (l3 + 12, 4),
        (true, Side::Destination) => (l3 + 16, 4),
        (false, Side::Source) => (l3 + 8, 16),
        (false, Side::Destination) => (l3 + 24, 16),
    };
    let new_addr: &[u8] = if v4 { &addr[12..] } else { &addr[..] };
    let port_off = if side == Side::Source { 0 } else { 2 };
    let (port_at, check_at, pseudo) = match m.flow.proto {
        TCP => (l4 + port_off, l4 + 16, true),
        UDP => (l4 + port_off, l4 + 6, true),
        // SCTP's checksum is recomputed below (offset 8, four bytes).
        SCTP => (l4 + port_off, l4 + 8, false),
        // The echo identifier; ICMPv6's checksum covers a pseudo-header, ICMPv4's does not.
        ICMP => (l4 + 4, l4 + 2, false),
        ICMPV6 => (l4 + 4, l4 + 2, true),
        _ => return false,
    };
    let end = if m.flow.proto == SCTP {
        (l3 + usize::from(m.ip_len)).min(data.len())
    } else {
        check_at + 2
    };
    if data.len() < addr_at + addr_len || end < check_at + 2 || data.len() < port_at + 2 {
        return false;
    }
    let old_port = u16::from_be_bytes([data[port_at], data[port_at + 1]]);
    let mut l4_check = u16::from_be_bytes([data[check_at], data[check_at + 1]]);
    // RFC 768: an IPv4 UDP checksum of zero means none was computed; keep it so.
    let udp_none = m.flow.proto == UDP && v4 && l4_check == 0;
    let mut ip_check = if v4 {
        u16::from_be_bytes([data[l3 + 10], data[l3 + 11]])
    } else {
        0
    };
    for i in (0..addr_len).step_by(2) {
        let old = u16::from_be_bytes([data[addr_at + i], data[addr_at + i + 1]]);
        let new = u16::from_be_bytes([new_addr[i], new_addr[i + 1]]);
        if pseudo {
            l4_check = checksum::update16(l4_check, old, new);
        }
        if v4 {
            ip_check = checksum::update16(ip_check, old, new);
        }
    }
    l4_check = checksum::update16(l4_check, old_port, new_port);
    if m.flow.proto == UDP && l4_check == 0 {
        // RFC 768: a computed checksum of zero is sent as all ones.
        l4_check = 0xffff;
    }
    data[addr_at..addr_at + addr_len].copy_from_slice(new_addr);
    data[port_at..port_at + 2].copy_from_slice(&new_port.to_be_bytes());
    if m.flow.proto == SCTP {
        if old_port != new_port {
            crate::wire::sctp::set_checksum(&mut data[l4..end]);
        }
    } else if !udp_none {
        data[check_at..check_at + 2].copy_from_slice(&l4_check.to_be_bytes());
    }
    if v4 {
        data[l3 + 10..l3 + 12].copy_from_slice(&ip_check.to_be_bytes());
    }
    let ported = matches!(m.flow.proto, TCP | UDP | SCTP);
    match side {
        Side::Source => {
            m.flow.src = *addr;
            if ported {
                m.flow.src_port = new_port;
            } else {
                m.flow.dst_port = new_port;
            }
        }
        Side::Destination => {
            m.flow.dst = *addr;
            m.flow.dst_port = new_port;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: FlowKey::map_v4([198, 18, 10, 2]),
            dst: FlowKey::map_v4([198, 19, 255, 1]),
            src_port: port,
            dst_port: 80,
            proto: TCP,
        }
    }

    #[test]
    fn workers_allocate_disjoint_ports_by_residue() {
        for workers in 1..4u16 {
            let mut seen = std::collections::BTreeSet::new();
            for w in 0..workers {
                let mut t = NatTable::new(w, workers);
                t.prepare((61000, 61099));
                for i in 0..200u16 {
                    let Some(p) = t.allocate(&key(1000 + i), true, 1, 100) else {
                        break;
                    };
                    assert_eq!(p % workers, w, "port {p} of worker {w}/{workers}");
                    assert!((61000..=61099).contains(&p));
                    assert!(seen.insert(p), "port {p} given twice");
                }
            }
            assert_eq!(seen.len(), 100, "{workers} workers share the whole range");
        }
    }

    #[test]
    fn a_full_table_drops_a_new_inbound_connection_and_names_why() {
        use crate::batch::Batch;
        use crate::frame::FrameRegion;
        use crate::snapshot::{NatPool, PodSpec, SnatConfig};
        use crate::SnapshotBuilder;
        let mut b = SnapshotBuilder::new();
        b.pod(PodSpec {
            namespace: "n".into(),
            name: "a".into(),
            interface: "veth-a".into(),
            gateway_mac: [0xee; 6],
            mac: [2, 0, 0, 0, 0, 0xa],
            ipv4: Some([198, 18, 10, 2].into()),
            ipv6: None,
            mtu: 1500,
        })
        .unwrap();
        let up = b.uplink("up0", [2, 0, 0, 0, 0, 0x99], 1500).unwrap();
        b.snat(SnatConfig {
            v4: Some([198, 18, 200, 2].into()),
            v6: None,
            ports: (61000, 61999),
            pools: vec![NatPool {
                prefix: "198.18.0.0/17".parse().unwrap(),
                nat_outgoing: true,
            }],
        });
        let s = b.build(1).unwrap();
        let mut pipeline = crate::node::Pipeline::new();
        let mut table = NatTable::new(0, 1);
        table.prepare((61000, 61999));
        for i in 0..MAX_FLOWS as u32 {
            let mut k = key(0);
            k.dst = FlowKey::map_v4(i.to_be_bytes());
            table.flows.insert(
                k,
                Entry::Inbound {
                    expires_ns: u64::MAX,
                },
            );
        }
        *pipeline.nat = table;
        let frame = crate::craft::tcp4(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 0x99],
            [198, 19, 255, 1].into(),
            [198, 18, 10, 2].into(),
            33000,
            8080,
            80,
        );
        let mut mem = vec![0u8; 4096];
        let mut region = FrameRegion::new(&mut mem, 2048);
        let f = region.fill(0, 256, &frame).unwrap();
        let mut batch = Batch::new();
        batch.push(f, up).unwrap();
        pipeline.process(&s, &mut region, &mut batch, 1);
        assert_eq!(batch.meta()[0].next, Next::Drop(DropReason::SnatTableFull));
        assert_eq!(pipeline.nat_table().len(), MAX_FLOWS);
    }

    #[test]
    fn an_expired_port_is_taken_again_and_a_live_one_is_not() {
        let mut t = NatTable::new(0, 1);
        t.prepare((61000, 61001));
        let a = t.allocate(&key(1), true, 10, 100).unwrap();
        let b = t.allocate(&key(2), true, 10, 100).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.allocate(&key(3), true, 50, 200), None, "range full");
        // After the first two expire, both ports come back.
        assert!(t.allocate(&key(3), true, 100, 200).is_some());
        assert!(t.allocate(&key(4), true, 100, 200).is_some());
        // TCP and UDP have ports of their own.
        let mut udp = key(5);
        udp.proto = UDP;
        assert!(t.allocate(&udp, true, 100, 200).is_some());
    }
}
