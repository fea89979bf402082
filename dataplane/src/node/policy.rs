//! Stage `policy`: network policy with connection tracking.
//!
//! - Reads: `ingress` and `out` (which pods are the sender and the receiver), `flow`,
//!   `flags`, the TCP flags, and for ICMP errors the quoted header.
//! - Writes: the worker's conntrack table, `policy_classified`, `conntrack_hits`, the log
//!   ring for `Log` rules.
//! - Next: `Rewrite` (allowed), or `Drop(PolicyDeniedEgress | PolicyDeniedIngress)`.
//!
//! Traffic between two non-pod interfaces (uplink, host) has no endpoint policy here.
//!
//! Connections the node's own stack opens to a local pod (through the host interface:
//! kubelet's probes, `kubectl port-forward`) are allowed whatever the pod's ingress policy
//! says when [`Snapshot::host_to_pods_allowed`] is set (the default), as Calico does: they
//! are tracked, so the pod's replies pass its egress policy as replies. Pods opening
//! connections to the node go through their egress policy like any other.
//! A packet of a tracked flow whose verdict was checked against this snapshot generation
//! passes without classification; a stale one is re-checked (in its original direction),
//! so a new deny cuts a running connection at its next packet. An ICMP error is allowed
//! when the packet it quotes belongs to a tracked flow (RFC 792 / RFC 4443: the first bytes
//! of the offending datagram follow the ICMP header).
//!
//! Non-first fragments carry no ports and are classified as they are: a rule with port
//! conditions does not match them (reassembly is not done here).

use crate::batch::{flags, Meta, Next};
use crate::counters::{Counters, DropReason};
use crate::flow::FlowKey;
use crate::frame::{Frame, FrameRegion};
use crate::node::icmp::TokenBucket;
use crate::policy::{Conntrack, Direction, RuleId, Verdict};
use crate::snapshot::{EndpointId, IcmpConfig, Role, Snapshot};

/// A `Log` rule hit, kept for the observability work to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord {
    pub rule: RuleId,
    pub flow: FlowKey,
    pub verdict: Verdict,
    pub generation: u64,
    pub now_ns: u64,
}

/// Log records kept per worker until collected.
pub const LOG_RING: usize = 1024;

/// Per-worker policy state.
#[derive(Debug)]
pub struct PolicyState {
    pub conntrack: Conntrack,
    logs: std::collections::VecDeque<LogRecord>,
    log_bucket: TokenBucket,
}

impl Default for PolicyState {
    fn default() -> Self {
        Self::with_conntrack(Default::default())
    }
}

impl PolicyState {
    /// State with a conntrack table of the given configuration.
    pub fn with_conntrack(config: crate::policy::ConntrackConfig) -> Self {
        PolicyState {
            conntrack: Conntrack::new(config),
            logs: std::collections::VecDeque::with_capacity(LOG_RING),
            log_bucket: TokenBucket::default(),
        }
    }
}

impl PolicyState {
    /// Takes the log records gathered so far.
    pub fn take_logs(&mut self) -> Vec<LogRecord> {
        self.logs.drain(..).collect()
    }
}

/// Log records: at most 100 per second per worker, bursts of 20.
const LOG_RATE: IcmpConfig = IcmpConfig {
    source_v4: std::net::Ipv4Addr::UNSPECIFIED,
    source_v6: std::net::Ipv6Addr::UNSPECIFIED,
    rate_per_sec: 100,
    burst: 20,
};

/// Runs the stage over the batch.
pub fn run(
    region: &FrameRegion<'_>,
    frames: &[Frame],
    meta: &mut [Meta],
    snapshot: &Snapshot,
    state: &mut PolicyState,
    counters: &mut Counters,
    now_ns: u64,
) {
    let tables = &snapshot.policy;
    let generation = snapshot.generation;
    let host_allowed = snapshot.host_to_pods_allowed && snapshot.host.is_some();
    let pod_of = |i: u16| match snapshot.interface(i).map(|x| &x.role) {
        Some(Role::Pod(p)) => Some(p.endpoint),
        _ => None,
    };
    if tables.endpoints.is_empty() {
        // No endpoint has policy: every packet passes.
        for m in meta.iter_mut().filter(|m| m.next == Next::Policy) {
            m.next = Next::Rewrite;
        }
        return;
    }
    // Load the programs of the whole batch first, so that their cache misses overlap
    // (see `PolicyTables::warm`), where the tables are large enough for that to pay.
    if tables.warm_pays() {
        let mut warmth = 0u32;
        for m in meta.iter().filter(|m| m.next == Next::Policy) {
            warmth ^= tables.warm(pod_of(m.ingress), pod_of(m.out));
        }
        std::hint::black_box(warmth);
    }
    for (frame, m) in frames.iter().zip(meta.iter_mut()) {
        if m.next != Next::Policy {
            continue;
        }
        let (src, dst) = (pod_of(m.ingress), pod_of(m.out));
        if src.is_none() && dst.is_none() {
            m.next = Next::Rewrite;
            continue;
        }
        let data = region.data(frame);
        let tcp_flags = if m.flow.proto == 6 && !m.has(flags::LATER_FRAGMENT) {
            data.get(usize::from(m.l4) + 13).copied().unwrap_or(0)
        } else {
            0
        };
        if let Some(hit) = state.conntrack.lookup(&m.flow, tcp_flags, now_ns) {
            if hit.generation == generation {
                counters.conntrack_hits += 1;
                m.next = Next::Rewrite;
                continue;
            }
            // Re-check the flow in the direction it was opened.
            let opened_by_host = host_allowed
                && if hit.reply {
                    snapshot.host == Some(m.out)
                } else {
                    snapshot.host == Some(m.ingress)
                };
            if opened_by_host {
                state.conntrack.revalidate(hit.slot, generation);
                m.next = Next::Rewrite;
                continue;
            }
            let (s, d, k) = if hit.reply {
                (dst, src, opening(&m.flow))
            } else {
                (src, dst, m.flow)
            };
            counters.policy_classified += 1;
            let decision = tables.evaluate(s, d, &k);
            if decision.verdict == Verdict::Allow {
                state.conntrack.revalidate(hit.slot, generation);
                m.next = Next::Rewrite;
            } else {
                state.conntrack.remove(hit.slot);
                m.next = denied(decision.denied_by);
            }
            continue;
        }
        if m.has(flags::ICMP_ERROR) {
            if let Some(inner) = quoted_flow(data, m) {
                if state.conntrack.lookup(&inner, 0, now_ns).is_some() {
                    counters.conntrack_hits += 1;
                    m.next = Next::Rewrite;
                    continue;
                }
            }
        }
        if host_allowed && snapshot.host == Some(m.ingress) && !m.has(flags::ICMP_ERROR) {
            state.conntrack.insert(&m.flow, generation, now_ns);
            m.next = Next::Rewrite;
            continue;
        }
        counters.policy_classified += 1;
        let decision = tables.evaluate(src, dst, &m.flow);
        for logged in [decision.egress, decision.ingress]
            .into_iter()
            .flatten()
            .flat_map(|d| d.logged)
            .flatten()
        {
            if state.logs.len() < LOG_RING && state.log_bucket.take(now_ns, &LOG_RATE) {
                state.logs.push_back(LogRecord {
                    rule: logged,
                    flow: m.flow,
                    verdict: decision.verdict,
                    generation,
                    now_ns,
                });
            } else {
                counters.policy_logs_suppressed += 1;
            }
        }
        if decision.verdict == Verdict::Allow {
            if !m.has(flags::ICMP_ERROR) {
                state.conntrack.insert(&m.flow, generation, now_ns);
            }
            m.next = Next::Rewrite;
        } else {
            m.next = denied(decision.denied_by);
        }
    }
}

/// The key of the packet that opened the flow `reply` answers: addresses and ports
/// swapped, and for an ICMP echo reply the request (same identifier, RFC 792 / RFC 4443).
fn opening(reply: &FlowKey) -> FlowKey {
    let mut k = reply.reversed();
    match (reply.proto, reply.src_port >> 8) {
        (1, 0) | (58, 129) => {
            k.src_port = if reply.proto == 1 { 8 << 8 } else { 128 << 8 };
            k.dst_port = reply.dst_port;
        }
        _ => {}
    }
    k
}

fn denied(by: Option<Direction>) -> Next {
    match by {
        Some(Direction::Ingress) => Next::Drop(DropReason::PolicyDeniedIngress),
        _ => Next::Drop(DropReason::PolicyDeniedEgress),
    }
}

/// The flow key of the datagram an ICMP error quotes (its IP header and first 8 bytes),
/// if it is there.
pub(crate) fn quoted_flow(data: &[u8], m: &Meta) -> Option<FlowKey> {
    let inner = data.get(usize::from(m.l4) + 8..)?;
    let mut k = FlowKey::default();
    let l4 = if m.flow.is_v4() {
        let ihl = usize::from(*inner.first()? & 0x0f) * 4;
        if ihl < 20 || inner.len() < ihl {
            return None;
        }
        k.src = FlowKey::map_v4(inner[12..16].try_into().ok()?);
        k.dst = FlowKey::map_v4(inner[16..20].try_into().ok()?);
        k.proto = inner[9];
        &inner[ihl..]
    } else {
        if inner.len() < 40 {
            return None;
        }
        k.src = inner[8..24].try_into().ok()?;
        k.dst = inner[24..40].try_into().ok()?;
        k.proto = inner[6];
        &inner[40..]
    };
    if matches!(k.proto, 6 | 17 | 132) {
        k.src_port = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
        k.dst_port = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
    }
    Some(k)
}

/// Helper for callers that want to know which endpoint an interface belongs to.
pub fn endpoint_of(snapshot: &Snapshot, interface: u16) -> Option<EndpointId> {
    match snapshot.interface(interface).map(|x| &x.role) {
        Some(Role::Pod(p)) => Some(p.endpoint),
        _ => None,
    }
}
