//! Per-worker connection tracking: the first packet of a flow is classified, later packets
//! and replies take the flow's cached verdict.
//!
//! A fixed-size open-addressed table (power-of-two slots, linear probing over at most
//! [`PROBE`] slots), allocated once: no allocation, lock or shared atomic per packet, and a
//! hard bound on memory. Inserting into a full probe window evicts the entry that expires
//! first (counted in `evictions`). Keys are stored normalised (the lower address/port pair
//! first) so a flow and its reply find the same slot; each entry remembers which side
//! initiated.
//!
//! Only allowed flows are cached: a denied packet is classified again next time, so a flow
//! that a policy change allows starts working at once, and a denied flow never makes its
//! reverse look like a reply. Each entry carries the snapshot generation it was last
//! checked against; the policy stage re-checks a flow whose generation is stale, so a new
//! deny cuts an established connection within one batch.

use crate::flow::FlowKey;

/// Slots probed per lookup.
pub const PROBE: usize = 8;

/// Timeouts in nanoseconds and the table size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Number of slots (rounded up to a power of two).
    pub capacity: usize,
    /// TCP before the reply direction is seen.
    pub tcp_opening_ns: u64,
    /// TCP once both directions are seen.
    pub tcp_established_ns: u64,
    /// TCP after a FIN or RST.
    pub tcp_closing_ns: u64,
    /// UDP before a reply.
    pub udp_ns: u64,
    /// UDP once both directions are seen.
    pub udp_stream_ns: u64,
    /// ICMP and every other protocol.
    pub other_ns: u64,
}

const SEC: u64 = 1_000_000_000;

impl Default for ConntrackConfig {
    /// 256k slots per worker; timeouts in line with Linux's nf_conntrack defaults where
    /// they are sane for a pod network (established TCP 2 h rather than 5 days).
    fn default() -> Self {
        ConntrackConfig {
            capacity: 1 << 18,
            tcp_opening_ns: 120 * SEC,
            tcp_established_ns: 7200 * SEC,
            tcp_closing_ns: 10 * SEC,
            udp_ns: 30 * SEC,
            udp_stream_ns: 180 * SEC,
            other_ns: 30 * SEC,
        }
    }
}

/// Counters of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    pub entries: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub expired: u64,
}

/// A found flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The packet goes in the reply direction (from the side that did not initiate).
    pub reply: bool,
    /// The snapshot generation the flow's verdict was last checked against.
    pub generation: u64,
    /// Slot, for [`Conntrack::revalidate`] and [`Conntrack::remove`].
    pub slot: usize,
}

const LIVE: u8 = 1;
const INITIATOR_LOW: u8 = 2;
const REPLY_SEEN: u8 = 4;
const CLOSING: u8 = 8;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: FlowKey,
    generation: u64,
    expires_ns: u64,
    flags: u8,
}

/// One worker's connection table.
#[derive(Debug)]
pub struct Conntrack {
    slots: Vec<Slot>,
    mask: usize,
    config: ConntrackConfig,
    stats: ConntrackStats,
}

/// TCP flags the tracker looks at.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const RST: u8 = 0x04;
}

impl Conntrack {
    /// An empty table.
    pub fn new(config: ConntrackConfig) -> Self {
        let n = config.capacity.max(PROBE).next_power_of_two();
        Conntrack {
            slots: vec![Slot::default(); n],
            mask: n - 1,
            config,
            stats: ConntrackStats::default(),
        }
    }

    /// The table's counters.
    pub fn stats(&self) -> ConntrackStats {
        self.stats
    }

    /// Looks `key` up at `now_ns`; a hit refreshes the flow's timeout (with `tcp_flags`
    /// from the packet for TCP). Expired entries are misses (and are freed).
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, tcp_flags: u8, now_ns: u64) -> Option<Hit> {
        let (canon, low) = normalise(key);
        let start = hash(&canon) as usize & self.mask;
        for i in 0..PROBE {
            let idx = (start + i) & self.mask;
            let s = &mut self.slots[idx];
            if s.flags & LIVE == 0 || s.key != canon {
                continue;
            }
            if s.expires_ns <= now_ns {
                s.flags = 0;
                self.stats.entries -= 1;
                self.stats.expired += 1;
                return None;
            }
            let reply = (s.flags & INITIATOR_LOW != 0) != low;
            if reply {
                s.flags |= REPLY_SEEN;
            }
            if key.proto == 6 && tcp_flags & (tcp::FIN | tcp::RST) != 0 {
                s.flags |= CLOSING;
            }
            s.expires_ns = now_ns.saturating_add(timeout(&self.config, key.proto, s.flags));
            return Some(Hit {
                reply,
                generation: s.generation,
                slot: idx,
            });
        }
        None
    }

    /// Records an allowed flow initiated by `key`'s source, checked against `generation`.
    pub fn insert(&mut self, key: &FlowKey, generation: u64, now_ns: u64) {
        let (canon, low) = normalise(key);
        let start = hash(&canon) as usize & self.mask;
        let mut victim = start;
        let mut soonest = u64::MAX;
        for i in 0..PROBE {
            let idx = (start + i) & self.mask;
            let s = &self.slots[idx];
            if s.flags & LIVE == 0 || s.expires_ns <= now_ns || s.key == canon {
                victim = idx;
                break;
            }
            if s.expires_ns < soonest {
                soonest = s.expires_ns;
                victim = idx;
            }
        }
        let old = self.slots[victim];
        if old.flags & LIVE == 0 {
            self.stats.entries += 1;
        } else if old.key != canon {
            if old.expires_ns <= now_ns {
                self.stats.expired += 1;
            } else {
                self.stats.evictions += 1;
            }
        }
        let flags = LIVE | if low { INITIATOR_LOW } else { 0 };
        self.slots[victim] = Slot {
            key: canon,
            generation,
            expires_ns: now_ns.saturating_add(timeout(&self.config, key.proto, flags)),
            flags,
        };
        self.stats.inserts += 1;
    }

    /// Marks the flow in `slot` as checked against `generation`.
    pub fn revalidate(&mut self, slot: usize, generation: u64) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.generation = generation;
        }
    }

    /// Forgets the flow in `slot` (its verdict no longer holds).
    pub fn remove(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            if s.flags & LIVE != 0 {
                s.flags = 0;
                self.stats.entries -= 1;
            }
        }
    }
}

fn timeout(c: &ConntrackConfig, proto: u8, flags: u8) -> u64 {
    match proto {
        6 if flags & CLOSING != 0 => c.tcp_closing_ns,
        6 if flags & REPLY_SEEN != 0 => c.tcp_established_ns,
        6 => c.tcp_opening_ns,
        17 if flags & REPLY_SEEN != 0 => c.udp_stream_ns,
        17 => c.udp_ns,
        _ => c.other_ns,
    }
}

/// The key with the lower (address, port) first, and whether `key` was already in that
/// order.
///
/// ICMP echo is one flow of two message types: a request (ICMP 8, ICMPv6 128) and its
/// reply (0, 129) carry the same identifier (RFC 792, RFC 4443 §4.2), so both are keyed
/// as the request, and only the addresses are ordered (the identifier is not a port).
#[inline]
fn normalise(key: &FlowKey) -> (FlowKey, bool) {
    let echo = match (key.proto, key.src_port >> 8) {
        (1, 0 | 8) => Some(8u16),
        (58, 128 | 129) => Some(128u16),
        _ => None,
    };
    if let Some(request) = echo {
        let mut k = *key;
        k.src_port = request << 8;
        if k.src <= k.dst {
            return (k, true);
        }
        std::mem::swap(&mut k.src, &mut k.dst);
        return (k, false);
    }
    if (key.src, key.src_port) <= (key.dst, key.dst_port) {
        (*key, true)
    } else {
        (key.reversed(), false)
    }
}

#[inline]
fn hash(k: &FlowKey) -> u64 {
    k.symmetric_hash()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16, dport: u16, proto: u8) -> FlowKey {
        FlowKey {
            src: FlowKey::map_v4([198, 18, 0, 1]),
            dst: FlowKey::map_v4([198, 18, 0, 2]),
            src_port: sport,
            dst_port: dport,
            proto,
        }
    }

    #[test]
    fn replies_find_the_flow_and_know_they_are_replies() {
        let mut ct = Conntrack::new(ConntrackConfig::default());
        let k = key(40000, 80, 6);
        assert_eq!(ct.lookup(&k, 0, 0), None);
        ct.insert(&k, 7, 0);
        let h = ct.lookup(&k, 0, 1).unwrap();
        assert!(!h.reply);
        assert_eq!(h.generation, 7);
        assert!(ct.lookup(&k.reversed(), 0, 2).unwrap().reply);
        // Same for a key whose initiator is the higher side.
        let k2 = k.reversed();
        let mut ct2 = Conntrack::new(ConntrackConfig::default());
        ct2.insert(&k2, 1, 0);
        assert!(!ct2.lookup(&k2, 0, 1).unwrap().reply);
        assert!(ct2.lookup(&k, 0, 1).unwrap().reply);
        assert_eq!(ct2.stats().entries, 1);
    }

    #[test]
    fn an_echo_reply_finds_its_request_and_other_icmp_does_not() {
        for (proto, request, reply) in [(1u8, 8u16, 0u16), (58, 128, 129)] {
            let mut ct = Conntrack::new(ConntrackConfig::default());
            // Echo: ports carry (type << 8 | code) and the identifier.
            let req = FlowKey {
                src: FlowKey::map_v4([198, 18, 0, 9]),
                dst: FlowKey::map_v4([198, 18, 0, 1]),
                src_port: request << 8,
                dst_port: 0x4242,
                proto,
            };
            ct.insert(&req, 1, 0);
            let mut answer = req;
            answer.src = req.dst;
            answer.dst = req.src;
            answer.src_port = reply << 8;
            let hit = ct
                .lookup(&answer, 0, 1)
                .expect("the reply meets its request");
            assert!(hit.reply);
            assert!(!ct.lookup(&req, 0, 1).unwrap().reply);
            let mut other_id = answer;
            other_id.dst_port = 0x4243;
            assert_eq!(ct.lookup(&other_id, 0, 1), None, "another identifier");
            let mut unreachable = answer;
            unreachable.src_port = 3 << 8;
            assert_eq!(ct.lookup(&unreachable, 0, 1), None, "not an echo");
        }
    }

    #[test]
    fn timeouts_follow_the_flow_state() {
        let c = ConntrackConfig::default();
        let mut ct = Conntrack::new(c);
        let k = key(40000, 80, 6);
        ct.insert(&k, 1, 0);
        assert!(ct.lookup(&k, 0, c.tcp_opening_ns - 1).is_some());
        // A reply makes it established: the long timeout applies from then.
        let t = c.tcp_opening_ns;
        assert!(ct.lookup(&k.reversed(), 0, t).is_some());
        assert!(ct.lookup(&k, 0, t + c.tcp_established_ns - 1).is_some());
        // FIN: closing.
        let t = t + c.tcp_established_ns - 1;
        assert!(ct.lookup(&k, tcp::FIN, t).is_some());
        assert!(ct.lookup(&k, 0, t + c.tcp_closing_ns).is_none());
        assert_eq!(ct.stats().expired, 1);
        assert_eq!(ct.stats().entries, 0);
        let u = key(5000, 53, 17);
        ct.insert(&u, 1, 0);
        assert!(ct.lookup(&u, 0, c.udp_ns).is_none());
    }

    #[test]
    fn a_full_table_evicts_the_soonest_to_expire_and_counts_it() {
        let c = ConntrackConfig {
            capacity: 8,
            ..ConntrackConfig::default()
        };
        let mut ct = Conntrack::new(c);
        for i in 0..8u16 {
            ct.insert(&key(1000 + i, 80, 17), 1, u64::from(i));
        }
        assert_eq!(ct.stats().entries, 8);
        ct.insert(&key(2000, 80, 17), 1, 100);
        assert_eq!(ct.stats().evictions, 1);
        assert_eq!(ct.stats().entries, 8);
        assert!(
            ct.lookup(&key(1000, 80, 17), 0, 101).is_none(),
            "the oldest went"
        );
        assert!(ct.lookup(&key(2000, 80, 17), 0, 101).is_some());
        let slot = ct.lookup(&key(1001, 80, 17), 0, 102).unwrap().slot;
        ct.remove(slot);
        assert_eq!(ct.stats().entries, 7);
    }
}
