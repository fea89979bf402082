//! Stage `steer`: every packet of a flow, in both directions, is processed by one worker,
//! the flow's *owner*; a packet received by another worker is handed to the owner before
//! any stateful stage sees it.
//!
//! - Runs after `neighbor` and before `nat_in`, on the packets at `Forward`, and only when
//!   the pipeline runs on more than one worker (with one worker it is skipped whole: no
//!   hash per packet). Packets the batch says were handed in ([`Batch::handed`]) are not
//!   steered again (the owner of a flow is a function of the packet and the snapshot
//!   generation, which the handoff checks, so they are already home; the rule also makes
//!   a loop between two workers impossible).
//! - Reads: `flow`, `ingress`, `flags`, `l4` (for an ICMP error, the datagram it quotes).
//!   Writes: `next`. Next: unchanged (`Forward`), or `Steer(owner)`, which the `output`
//!   stage turns into a handoff of the unmodified frame to the owner, who runs the whole
//!   pipeline on it as if it had received it on the same interface.
//! - Drops: none here. A handoff that finds the owner's lane full is dropped by the driver
//!   as `handoff_full`.
//!
//! # Why
//!
//! Conntrack, the policy state and source NAT's translations are per worker (no lock, no
//! shared cache line on the packet path). A flow's two directions usually arrive on
//! different workers: a pod's interface is owned by one worker, the uplink or the other
//! pod's interface by another. Without steering, the reply reaches a conntrack that never
//! saw the request, and an isolated pod (default-deny ingress) loses its replies.
//!
//! # Who owns a flow
//!
//! - Ordinary flows: [`FlowKey::symmetric_hash`] of the 5-tuple, modulo the number of
//!   workers. The hash orders the two (address, port) endpoints first, so a packet and its
//!   reply land on the same worker. ICMP echo request and reply differ in their type
//!   (kept in `src_port`), so echo is hashed with the identifier as both ports; other ICMP
//!   messages with ports 0. Fragments are hashed by addresses and protocol only (later
//!   fragments carry no ports), so the fragments of a datagram meet on one worker.
//! - Replies to source NAT (arriving on the uplink, addressed to the node's SNAT address,
//!   TCP/UDP destination port or ICMP echo-reply identifier inside the SNAT range): the
//!   owner is `port % workers`. `nat_out` on worker `w` allocates only ports with
//!   `port % workers == w` ([`super::nat::NatTable::new`]), and the worker that runs
//!   `nat_out` for a pod's flow is the owner of that flow by the hash above (the pod's
//!   side of it, before translation). So the reply is steered by its port alone to the
//!   worker that holds its translation and its conntrack entry, without a shared table.
//! - ICMP errors: the owner of the flow they quote (the quoted datagram's 5-tuple, with the
//!   SNAT rule when its source is the SNAT address), since policy lets an error through
//!   only when the quoted flow is in this worker's conntrack.
//!
//! # Cost
//!
//! A packet on the wrong worker costs one extra hop: a copy into a handoff buffer, a
//! queue push, and on the owner a copy into one of its frames and a second parse. With
//! pods spread over workers, about half of the packets of a flow between two pods on
//! different workers take it; `docs/node.md` ("Flows and workers") has the figures.

use crate::batch::{flags, IfIndex, Meta, Next};
use crate::flow::FlowKey;
use crate::frame::{Frame, FrameRegion};
use crate::service::ServiceTable;
use crate::snapshot::Snapshot;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

/// What the owner of a packet depends on, taken from one snapshot: the number of workers,
/// the uplink, source NAT's addresses and port range, and the services. Built per batch
/// (a few copies).
#[derive(Debug, Clone, Copy)]
pub struct SteerConfig<'a> {
    workers: u16,
    uplink: Option<IfIndex>,
    snat_v4: Option<[u8; 16]>,
    snat_v6: Option<[u8; 16]>,
    ports: (u16, u16),
    services: &'a ServiceTable,
}

impl<'a> SteerConfig<'a> {
    /// The configuration for `snapshot` on `workers` workers (0 is taken as 1).
    pub fn new(snapshot: &'a Snapshot, workers: u16) -> Self {
        let snat = snapshot.snat.as_ref().filter(|_| snapshot.uplink.is_some());
        SteerConfig {
            workers: workers.max(1),
            uplink: snapshot.uplink,
            snat_v4: snat.and_then(|s| s.v4).map(|a| FlowKey::map_v4(a.octets())),
            snat_v6: snat.and_then(|s| s.v6).map(|a| a.octets()),
            ports: snat.map_or((1, 0), |s| s.ports),
            services: &snapshot.services,
        }
    }

    /// The number of workers.
    pub fn workers(&self) -> u16 {
        self.workers
    }

    /// Whether `addr` (key form) is a SNAT address and `port` is in the SNAT range.
    #[inline]
    fn is_snat(&self, addr: &[u8; 16], port: u16) -> bool {
        (self.snat_v4.as_ref() == Some(addr) || self.snat_v6.as_ref() == Some(addr))
            && port >= self.ports.0
            && port <= self.ports.1
    }
}

/// The worker that owns the flow of the packet `m` (received on `m.ingress`, parsed),
/// from the data of its frame `data` (read only for ICMP errors). Always `< workers`.
#[inline]
pub fn owner(data: &[u8], m: &Meta, config: &SteerConfig<'_>) -> u16 {
    let n = config.workers;
    if n <= 1 {
        return 0;
    }
    if m.has(flags::ICMP_ERROR) {
        if let Some(quoted) = super::policy::quoted_flow(data, m) {
            // The quoted datagram went the other way: its source is our destination.
            if config.is_snat(&quoted.src, quoted.src_port)
                && matches!(quoted.proto, TCP | UDP | ICMP | ICMPV6)
            {
                return quoted.src_port % n;
            }
            return flow_owner(&quoted, false, n);
        }
    }
    if Some(m.ingress) == config.uplink && !m.has(flags::LATER_FRAGMENT) {
        if let Some(port) = reply_port(&m.flow) {
            if config.is_snat(&m.flow.dst, port) {
                return port % n;
            }
        }
    }
    if let Some(port) = service_client_port(&m.flow, m.has(flags::FRAGMENT), config.services) {
        return port % n;
    }
    flow_owner(&m.flow, m.has(flags::FRAGMENT), n)
}

/// For service traffic (see `node::service`), the client's port, which places the
/// connection: the source port of a packet to a frontend or to an endpoint, the
/// destination port of a packet from an endpoint. `None` for other traffic, and for
/// fragments (a later fragment has no port; the first one of a datagram to a service is
/// placed by its ports like any other).
#[inline]
fn service_client_port(k: &FlowKey, fragment: bool, services: &ServiceTable) -> Option<u16> {
    if fragment || services.is_empty() || !matches!(k.proto, TCP | UDP | SCTP) {
        return None;
    }
    let to_frontend = services.is_frontend_port(k.dst_port)
        && services.frontend(&k.dst, k.dst_port, k.proto).is_some();
    if to_frontend || services.is_endpoint(&k.dst, k.dst_port, k.proto) {
        return Some(k.src_port);
    }
    services
        .is_endpoint(&k.src, k.src_port, k.proto)
        .then_some(k.dst_port)
}

/// The owner by symmetric hash of `key` (see the module doc for ICMP and fragments).
#[inline]
pub fn flow_owner(key: &FlowKey, fragment: bool, workers: u16) -> u16 {
    let mut k = *key;
    if fragment {
        k.src_port = 0;
        k.dst_port = 0;
    } else if k.proto == ICMP || k.proto == ICMPV6 {
        let echo = matches!(
            (k.proto, k.src_port >> 8),
            (ICMP, 0 | 8) | (ICMPV6, 128 | 129)
        );
        let id = if echo { k.dst_port } else { 0 };
        k.src_port = id;
        k.dst_port = id;
    }
    (k.symmetric_hash() % u64::from(workers.max(1))) as u16
}

/// Runs the stage over the batch for worker `me`: the packets at `Forward` (but the first
/// `handed` ones, handed in by their owner's peers) owned by another worker go to
/// `Steer(owner)`.
pub fn run(
    region: &FrameRegion<'_>,
    frames: &[Frame],
    meta: &mut [Meta],
    handed: usize,
    config: &SteerConfig<'_>,
    me: u16,
) {
    if config.workers <= 1 {
        return;
    }
    for (frame, m) in frames.iter().zip(meta.iter_mut()).skip(handed) {
        if m.next != Next::Forward {
            continue;
        }
        let owner = owner(region.data(frame), m, config);
        if owner != me {
            m.next = Next::Steer(owner);
        }
    }
}

/// The SNAT port a packet from the world answers: TCP/UDP destination port, or the
/// identifier of an ICMP/ICMPv6 echo reply.
#[inline]
fn reply_port(k: &FlowKey) -> Option<u16> {
    match k.proto {
        TCP | UDP => Some(k.dst_port),
        ICMP if k.src_port >> 8 == 0 => Some(k.dst_port),
        ICMPV6 if k.src_port >> 8 == 129 => Some(k.dst_port),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{SnapshotBuilder, SnatConfig, SNAT_PORTS};

    fn key(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> FlowKey {
        FlowKey {
            src: FlowKey::map_v4(src),
            dst: FlowKey::map_v4(dst),
            src_port: sport,
            dst_port: dport,
            proto,
        }
    }

    fn meta(flow: FlowKey, ingress: IfIndex) -> Meta {
        let mut m = Meta::new(ingress);
        m.flow = flow;
        m.next = Next::Forward;
        m
    }

    fn config(workers: u16) -> SteerConfig<'static> {
        let mut b = SnapshotBuilder::new();
        let up = b.uplink("up0", [2, 0, 0, 0, 0, 1], 1500).unwrap();
        assert_eq!(up, 0);
        let mut s = b.build(1).unwrap();
        s.snat = Some(SnatConfig {
            v4: Some("198.18.0.1".parse().unwrap()),
            v6: None,
            ports: SNAT_PORTS,
            pools: Vec::new(),
        });
        SteerConfig::new(Box::leak(Box::new(s)), workers)
    }

    #[test]
    fn both_directions_of_a_flow_have_one_owner_and_flows_spread() {
        for workers in [2u16, 3, 4] {
            let c = config(workers);
            let mut seen = vec![0u32; usize::from(workers)];
            for i in 0..2000u16 {
                for proto in [TCP, UDP] {
                    let k = key([198, 19, 1, 2], 1024 + i, [198, 19, 2, 3], 80, proto);
                    let a = owner(&[], &meta(k, 1), &c);
                    let b = owner(&[], &meta(k.reversed(), 2), &c);
                    assert_eq!(a, b, "{k:?}");
                    assert!(a < workers);
                    seen[usize::from(a)] += 1;
                }
                // Echo: request (type 8) and reply (type 0) share the identifier.
                let req = key([198, 19, 1, 2], 8 << 8, [198, 19, 2, 3], i, ICMP);
                let mut rep = req.reversed();
                rep.src_port = 0;
                rep.dst_port = i;
                assert_eq!(owner(&[], &meta(req, 1), &c), owner(&[], &meta(rep, 2), &c));
            }
            let even = 4000 / u32::from(workers);
            for s in seen {
                assert!(s > even * 8 / 10 && s < even * 12 / 10, "{s} of {even}");
            }
        }
    }

    #[test]
    fn a_reply_to_source_nat_goes_to_the_worker_that_owns_its_port() {
        let c = config(4);
        for port in [61000u16, 61001, 61002, 65535] {
            let reply = key([198, 18, 9, 9], 443, [198, 18, 0, 1], port, TCP);
            assert_eq!(owner(&[], &meta(reply, 0), &c), port % 4);
            let echo = key([198, 18, 9, 9], 0, [198, 18, 0, 1], port, ICMP);
            assert_eq!(owner(&[], &meta(echo, 0), &c), port % 4);
        }
        // Below the range, or not from the uplink: by hash.
        let k = key([198, 18, 9, 9], 443, [198, 18, 0, 1], 1000, TCP);
        assert_eq!(owner(&[], &meta(k, 0), &c), flow_owner(&k, false, 4));
        let k = key([198, 18, 9, 9], 443, [198, 18, 0, 1], 61001, TCP);
        assert_eq!(owner(&[], &meta(k, 3), &c), flow_owner(&k, false, 4));
    }

    #[test]
    fn fragments_meet_on_one_worker_and_one_worker_needs_no_hash() {
        let c = config(3);
        let first = key([198, 19, 1, 2], 5000, [198, 19, 2, 3], 53, UDP);
        let later = key([198, 19, 1, 2], 0, [198, 19, 2, 3], 0, UDP);
        let mut a = meta(first, 1);
        a.flags = flags::FRAGMENT;
        let mut b = meta(later, 1);
        b.flags = flags::FRAGMENT | flags::LATER_FRAGMENT;
        assert_eq!(owner(&[], &a, &c), owner(&[], &b, &c));
        assert_eq!(owner(&[], &a, &config(1)), 0);
    }
}
