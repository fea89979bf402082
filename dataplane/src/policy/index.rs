//! The decision structure of one program: instead of testing rules one after another, each
//! packet field is looked up once in a partition of its value space, every part of which
//! carries the bitmap of the rules whose condition on that field holds there. The AND of the
//! field bitmaps is the set of rules that match the packet; the first one in program order
//! (with `Pass` skipping to the next tier and `Log` recording and continuing) decides.
//!
//! This is the bit-vector scheme of Lakshman and Stiliadis (SIGCOMM 1998), per program: a
//! lookup costs one binary search per field (two addresses, two ports) and one table read
//! for the protocol, then a handful of word ANDs, however many rules the program has. The
//! partitions are exact for every condition but named ports, whose (address, protocol, port)
//! triples do not factor into fields; a rule with a named port gets a superset in the port
//! field and is confirmed by its full test before it may decide.
//!
//! Written here because no maintained crate classifies on this model (ordered tiers with
//! Pass and Log, negated conditions, exact address sets with exceptions); `rte_acl` solves
//! the flat 5-tuple case in C and is the anchor in `weir-bench policy`.

use rustc_hash::FxHashMap;

use crate::flow::FlowKey;
use crate::policy::program::{
    Action, Decision, IcmpMatch, Match, NetSetId, PortMatch, Rule, Sets, Tier, TierEnd, Verdict,
    MAX_LOGGED,
};

/// A value type a field partition is made of.
trait Point: Ord + Copy + std::hash::Hash {
    const MIN: Self;
    const MAX: Self;
    fn succ(self) -> Self;
}

macro_rules! point {
    ($($t:ty),*) => {$(
        impl Point for $t {
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
            fn succ(self) -> Self {
                self + 1
            }
        }
    )*};
}
point!(u16, u32, u128);

/// A partition of a field's value space into intervals, each with a class (an index into
/// the program's bitmap store). `starts[0]` is the smallest value; adjacent intervals have
/// different classes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Partition<T> {
    starts: Vec<T>,
    class: Vec<u32>,
}

impl<T: Point> Partition<T> {
    #[inline]
    fn class_of(&self, x: T) -> u32 {
        let i = self.starts.partition_point(|&s| s <= x);
        // `starts[0]` is `T::MIN`, so `i >= 1`.
        self.class[i.saturating_sub(1)]
    }

    fn bytes(&self) -> usize {
        self.starts.capacity() * std::mem::size_of::<T>() + self.class.capacity() * 4
    }
}

/// One rule's condition on one field: the value must be in `pos` (when present) and not in
/// `neg` (when present).
struct Cond<'a, T> {
    pos: Option<&'a [(T, T)]>,
    neg: Option<&'a [(T, T)]>,
}

/// Bitmaps of rules, `words` u64 each, interned so equal bitmaps share a class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Classes {
    words: usize,
    bits: Vec<u64>,
}

struct Interner<'a> {
    store: &'a mut Classes,
    ids: FxHashMap<Vec<u64>, u32>,
}

impl Interner<'_> {
    fn intern(&mut self, bitmap: &[u64]) -> u32 {
        if let Some(&id) = self.ids.get(bitmap) {
            return id;
        }
        let id = (self.store.bits.len() / self.store.words.max(1)) as u32;
        self.store.bits.extend_from_slice(bitmap);
        self.ids.insert(bitmap.to_vec(), id);
        id
    }
}

/// Sorted, disjoint intervals from possibly overlapping ones.
fn normalise<T: Point>(mut v: Vec<(T, T)>) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if last.1 == T::MAX || lo <= last.1.succ() => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn set_index<'a, T: PartialEq>(sets: &mut Vec<&'a [(T, T)]>, s: &'a [(T, T)]) -> usize {
    match sets.iter().position(|x| std::ptr::eq(*x, s) || *x == s) {
        Some(i) => i,
        None => {
            sets.push(s);
            sets.len() - 1
        }
    }
}

fn mark(masks: &mut Vec<Vec<u64>>, words: usize, i: usize, r: usize) {
    if masks.len() <= i {
        masks.resize(i + 1, vec![0u64; words]);
    }
    masks[i][r / 64] |= 1 << (r % 64);
}

/// Builds the partition of one field from the rules' conditions on it.
fn partition<'a, T: Point>(conds: &[Cond<'a, T>], interner: &mut Interner<'_>) -> Partition<T> {
    let words = interner.store.words;
    // The distinct sets referred to (address sets are shared by reference).
    let mut sets: Vec<&'a [(T, T)]> = Vec::new();
    let mut base = vec![0u64; words];
    let mut pos_masks: Vec<Vec<u64>> = Vec::new();
    let mut neg_masks: Vec<Vec<u64>> = Vec::new();
    for (r, c) in conds.iter().enumerate() {
        match c.pos {
            None => base[r / 64] |= 1 << (r % 64),
            Some(s) => {
                let i = set_index(&mut sets, s);
                mark(&mut pos_masks, words, i, r);
            }
        }
        if let Some(s) = c.neg {
            let i = set_index(&mut sets, s);
            mark(&mut neg_masks, words, i, r);
        }
    }
    pos_masks.resize(sets.len(), vec![0u64; words]);
    neg_masks.resize(sets.len(), vec![0u64; words]);

    // A sweep over the sets' boundaries: at each, the sets entered or left change, and the
    // bitmap there is made from the sets that hold the point (few, however many sets the
    // field has), not from a pass over all of them.
    let mut events: Vec<(T, u32, bool)> = Vec::new();
    for (i, s) in sets.iter().enumerate() {
        for &(lo, hi) in s.iter() {
            events.push((lo, i as u32, true));
            if hi != T::MAX {
                events.push((hi.succ(), i as u32, false));
            }
        }
    }
    // Each set's intervals are sorted already: a stable sort merges those runs instead of
    // sorting the whole from scratch.
    events.sort_by_key(|e| e.0);

    let mut depth = vec![0u32; sets.len()];
    // The sets holding the current point, and where each sits in that list.
    let mut active: Vec<usize> = Vec::new();
    let mut slot = vec![usize::MAX; sets.len()];
    let mut out = Partition {
        starts: Vec::new(),
        class: Vec::new(),
    };
    let mut bitmap = vec![0u64; words];
    let mut negs = vec![0u64; words];
    // Most points are a pod's /32 or /128 entered and left: the bitmap where no set holds
    // the point, and the one just made, are known without hashing them again.
    let mut base_class = None;
    let mut last: (Vec<u64>, Option<u32>) = (vec![0; words], None);
    let mut next = 0;
    let mut x = T::MIN;
    loop {
        while next < events.len() && events[next].0 == x {
            let (_, i, enter) = events[next];
            let i = i as usize;
            next += 1;
            if enter {
                depth[i] += 1;
                if depth[i] == 1 {
                    slot[i] = active.len();
                    active.push(i);
                }
            } else {
                depth[i] = depth[i].saturating_sub(1);
                if depth[i] == 0 && slot[i] != usize::MAX {
                    let at = slot[i];
                    active.swap_remove(at);
                    if let Some(&moved) = active.get(at) {
                        slot[moved] = at;
                    }
                    slot[i] = usize::MAX;
                }
            }
        }
        bitmap.copy_from_slice(&base);
        negs.iter_mut().for_each(|w| *w = 0);
        for &i in &active {
            for w in 0..words {
                bitmap[w] |= pos_masks[i][w];
                negs[w] |= neg_masks[i][w];
            }
        }
        for w in 0..words {
            bitmap[w] &= !negs[w];
        }
        let class = match last {
            _ if active.is_empty() => *base_class.get_or_insert_with(|| interner.intern(&base)),
            (ref bits, Some(class)) if *bits == bitmap => class,
            _ => {
                let class = interner.intern(&bitmap);
                last.0.copy_from_slice(&bitmap);
                last.1 = Some(class);
                class
            }
        };
        if out.class.last() != Some(&class) {
            out.starts.push(x);
            out.class.push(class);
        }
        match events.get(next) {
            Some(e) => x = e.0,
            None => break,
        }
    }
    out
}

/// Offsets of the sections of the packed form, in `u32` units (see [`Index`]).
const H_WORDS: usize = 0;
const H_SRC4: usize = 1;
const H_DST4: usize = 2;
const H_SPORT: usize = 3;
const H_DPORT: usize = 4;
const H_ICMP: usize = 5;
const H_PROTO: usize = 6;
const H_BITS: usize = 7;
const H_SLOTS: usize = 8;
const H_TIERS: usize = 9;
const H_ONES: usize = 10;
const HEADER: usize = 11;

/// Slot flags: what a rule does (low two bits) and whether a match of the fields must be
/// confirmed by the rule's full test (named ports).
const SLOT_VERIFY: u32 = 4;
const NO_TIER: u32 = u32::MAX;

/// The decision structure of a program; see the module documentation.
///
/// Everything an IPv4 lookup reads is packed into one allocation of `u32`s, so a lookup
/// touches a few neighbouring cache lines instead of a dozen scattered vectors: a header of
/// section offsets; the partitions of the source and destination address, the ports and
/// ICMP type/code (each `n`, `n` starts, `n` classes); the protocols the rules name with
/// their classes; the class bitmaps (`u64` words as two `u32`s, low first); per rule, its
/// id and flags; per tier, its first rule, its end's id and the first tier from it on that
/// ends in Deny. The IPv6 address partitions live beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    packed: Box<[u32]>,
    src6: Partition<u128>,
    dst6: Partition<u128>,
}

fn port_pos(m: &PortMatch) -> Option<Vec<(u16, u16)>> {
    if m.is_any() {
        None
    } else if m.named.is_some() {
        // Named ports depend on the address too: the field admits every port and the
        // rule's full test decides.
        Some(vec![(0, u16::MAX)])
    } else {
        Some(normalise(m.ranges.clone()))
    }
}

fn port_neg(m: &PortMatch) -> Option<Vec<(u16, u16)>> {
    // A named exception cannot be decided per field: it is left to the full test.
    (!m.ranges.is_empty()).then(|| normalise(m.ranges.clone()))
}

fn icmp_range(m: &IcmpMatch) -> Vec<(u16, u16)> {
    let base = u16::from(m.ty) << 8;
    match m.code {
        Some(c) => vec![(base | u16::from(c), base | u16::from(c))],
        None => vec![(base, base | 0xff)],
    }
}

type OwnedCond = (Option<Vec<(u16, u16)>>, Option<Vec<(u16, u16)>>);

fn conds(v: &[OwnedCond]) -> Vec<Cond<'_, u16>> {
    v.iter()
        .map(|(p, n)| Cond {
            pos: p.as_deref(),
            neg: n.as_deref(),
        })
        .collect()
}

fn ported(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

fn is_icmp(proto: u8) -> bool {
    proto == 1 || proto == 58
}

impl Index {
    /// Builds the index of `tiers`, whose rules refer to `sets`.
    pub fn build(tiers: &[Tier], sets: &Sets) -> Index {
        let rules: Vec<&Rule> = tiers.iter().flat_map(|t| &t.rules).collect();
        let n = rules.len();
        let words = n.div_ceil(64).max(1);
        let mut classes = Classes {
            words,
            bits: Vec::new(),
        };
        let mut interner = Interner {
            store: &mut classes,
            ids: FxHashMap::default(),
        };
        let mut ones = vec![0u64; words];
        for r in 0..n {
            ones[r / 64] |= 1 << (r % 64);
        }
        let ones = interner.intern(&ones);

        let empty = crate::policy::NetSet::new();
        let net = |id: Option<NetSetId>| id.map(|i| sets.nets.get(i as usize).unwrap_or(&empty));
        let addr4 = |pos: Option<NetSetId>, neg: Option<NetSetId>| Cond {
            pos: net(pos).map(|s| s.v4_intervals()),
            neg: net(neg).map(|s| s.v4_intervals()),
        };
        let addr6 = |pos: Option<NetSetId>, neg: Option<NetSetId>| Cond {
            pos: net(pos).map(|s| s.v6_intervals()),
            neg: net(neg).map(|s| s.v6_intervals()),
        };
        let ms: Vec<&Match> = rules.iter().map(|r| &r.matches).collect();
        let src4: Vec<_> = ms
            .iter()
            .map(|m| addr4(m.src_nets, m.not_src_nets))
            .collect();
        let src6: Vec<_> = ms
            .iter()
            .map(|m| addr6(m.src_nets, m.not_src_nets))
            .collect();
        let dst4: Vec<_> = ms
            .iter()
            .map(|m| addr4(m.dst_nets, m.not_dst_nets))
            .collect();
        let dst6: Vec<_> = ms
            .iter()
            .map(|m| addr6(m.dst_nets, m.not_dst_nets))
            .collect();

        let ports = |pos: fn(&Match) -> &PortMatch, neg: fn(&Match) -> &PortMatch| {
            ms.iter()
                .map(|m| (port_pos(pos(m)), port_neg(neg(m))))
                .collect::<Vec<OwnedCond>>()
        };
        let sport_sets = ports(|m| &m.src_ports, |m| &m.not_src_ports);
        let dport_sets = ports(|m| &m.dst_ports, |m| &m.not_dst_ports);
        let icmp_sets: Vec<OwnedCond> = ms
            .iter()
            .map(|m| {
                (
                    m.icmp.as_ref().map(icmp_range),
                    m.not_icmp.as_ref().map(icmp_range),
                )
            })
            .collect();

        let src4 = partition(&src4, &mut interner);
        let src6 = partition(&src6, &mut interner);
        let dst4 = partition(&dst4, &mut interner);
        let dst6 = partition(&dst6, &mut interner);
        let sport = partition(&conds(&sport_sets), &mut interner);
        let dport = partition(&conds(&dport_sets), &mut interner);
        let icmp = partition(&conds(&icmp_sets), &mut interner);

        // The protocols that rules tell apart: those they name, and the families that
        // port and ICMP conditions depend on. Any other protocol is like every other one.
        let mut named: Vec<u8> = vec![1, 6, 17, 58, 132];
        for m in &ms {
            named.extend(m.protocol);
            named.extend(m.not_protocol);
        }
        named.sort_unstable();
        named.dedup();
        let other = (0..=255u8).find(|p| !named.contains(p));
        let mut proto = Vec::with_capacity(2 * (named.len() + 1));
        let mut bitmap = vec![0u64; words];
        for v4 in [false, true] {
            for p in named.iter().copied().map(Some).chain([other]) {
                bitmap.iter_mut().for_each(|w| *w = 0);
                // Every protocol value is named: the "other" class matches nothing.
                if let Some(p) = p {
                    for (r, m) in ms.iter().enumerate() {
                        let ok = m.protocol.is_none_or(|x| x == p)
                            && m.not_protocol != Some(p)
                            && m.ip_version.is_none_or(|v| (v == 4) == v4)
                            && ((m.src_ports.is_any() && m.dst_ports.is_any()) || ported(p))
                            && (m.icmp.is_none() || is_icmp(p));
                        if ok {
                            bitmap[r / 64] |= 1 << (r % 64);
                        }
                    }
                }
                proto.push(interner.intern(&bitmap));
            }
        }

        let mut packed = vec![0u32; HEADER];
        packed[H_WORDS] = words as u32;
        packed[H_ONES] = ones;
        let section = |packed: &mut Vec<u32>, at: usize, data: &[u32]| {
            packed[at] = packed.len() as u32;
            packed.extend_from_slice(data);
        };
        for (at, starts, class) in [
            (H_SRC4, src4.starts.clone(), &src4.class),
            (H_DST4, dst4.starts.clone(), &dst4.class),
            (
                H_SPORT,
                sport.starts.iter().map(|&x| u32::from(x)).collect(),
                &sport.class,
            ),
            (
                H_DPORT,
                dport.starts.iter().map(|&x| u32::from(x)).collect(),
                &dport.class,
            ),
            (
                H_ICMP,
                icmp.starts.iter().map(|&x| u32::from(x)).collect(),
                &icmp.class,
            ),
        ] {
            let mut data = vec![starts.len() as u32];
            data.extend(starts);
            data.extend(class);
            section(&mut packed, at, &data);
        }
        let mut data = vec![named.len() as u32];
        data.extend(named.iter().map(|&p| u32::from(p)));
        data.extend(&proto);
        section(&mut packed, H_PROTO, &data);
        let bits: Vec<u32> = classes
            .bits
            .iter()
            .flat_map(|&w| [w as u32, (w >> 32) as u32])
            .collect();
        section(&mut packed, H_BITS, &bits);

        let mut slots = Vec::with_capacity(2 * n);
        let mut tier_data = Vec::with_capacity(3 * (tiers.len() + 1));
        let mut deny_from = vec![NO_TIER; tiers.len() + 1];
        for t in (0..tiers.len()).rev() {
            deny_from[t] = if tiers[t].end == TierEnd::Deny {
                t as u32
            } else {
                deny_from[t + 1]
            };
        }
        let mut first = 0u32;
        for (t, tier) in tiers.iter().enumerate() {
            tier_data.extend([first, tier.end_id, deny_from[t]]);
            for r in &tier.rules {
                let m = &r.matches;
                let verify = [
                    &m.src_ports,
                    &m.not_src_ports,
                    &m.dst_ports,
                    &m.not_dst_ports,
                ]
                .iter()
                .any(|p| p.named.is_some());
                let action = match r.action {
                    Action::Allow => 0,
                    Action::Deny => 1,
                    Action::Pass => 2,
                    Action::Log => 3,
                };
                slots.extend([
                    r.id,
                    action | if verify { SLOT_VERIFY } else { 0 } | (t as u32) << 8,
                ]);
                first += 1;
            }
        }
        tier_data.extend([first, 0, NO_TIER]);
        section(&mut packed, H_SLOTS, &slots);
        section(&mut packed, H_TIERS, &tier_data);

        Index {
            packed: packed.into_boxed_slice(),
            src6,
            dst6,
        }
    }

    /// Classifies `key` against the program `tiers` this index was built from.
    #[inline]
    pub fn classify(&self, tiers: &[Tier], key: &FlowKey, sets: &Sets) -> Decision {
        let p = &self.packed[..];
        let h = |at: usize| p[at] as usize;
        let src = self.addr_class(h(H_SRC4), &self.src6, &key.src);
        let dst = self.addr_class(h(H_DST4), &self.dst6, &key.dst);
        let proto = {
            let at = h(H_PROTO);
            let n = p[at] as usize;
            let protos = &p[at + 1..at + 1 + n];
            let k = protos
                .iter()
                .position(|&x| x == u32::from(key.proto))
                .unwrap_or(n);
            p[at + 1 + n + usize::from(key.is_v4()) * (n + 1) + k]
        };
        let ones = p[H_ONES];
        let (sport, dport) = if ported(key.proto) {
            (
                class_of(p, h(H_SPORT), u32::from(key.src_port)),
                class_of(p, h(H_DPORT), u32::from(key.dst_port)),
            )
        } else if is_icmp(key.proto) {
            (class_of(p, h(H_ICMP), u32::from(key.src_port)), ones)
        } else {
            (ones, ones)
        };
        let words = h(H_WORDS);
        let bits = h(H_BITS);
        let word = |class: u32, w: usize| {
            let at = bits + 2 * (class as usize * words + w);
            u64::from(p[at]) | u64::from(p[at + 1]) << 32
        };
        let slots = h(H_SLOTS);
        let tier_at = |t: u32| h(H_TIERS) + 3 * t as usize;

        let mut logged = [None; MAX_LOGGED];
        let mut n_logged = 0;
        // The tier being evaluated; bits below `floor` are skipped (after a Pass).
        let mut tier = 0u32;
        let mut floor = 0u32;
        for w in 0..words {
            let mut m =
                word(src, w) & word(dst, w) & word(proto, w) & word(sport, w) & word(dport, w);
            while m != 0 {
                let bit = (w as u32) * 64 + m.trailing_zeros();
                m &= m - 1;
                if bit < floor {
                    continue;
                }
                let (id, flags) = (p[slots + 2 * bit as usize], p[slots + 2 * bit as usize + 1]);
                let rule_tier = flags >> 8;
                if rule_tier > tier {
                    // Every tier from `tier` to the one before this rule matched nothing.
                    let d = p[tier_at(tier) + 2];
                    if d < rule_tier {
                        return tier_deny(p, tier_at(d), logged);
                    }
                    tier = rule_tier;
                }
                if flags & SLOT_VERIFY != 0 {
                    let index = bit - p[tier_at(rule_tier)];
                    let confirmed = tiers
                        .get(rule_tier as usize)
                        .and_then(|t| t.rules.get(index as usize))
                        .is_some_and(|r| r.matches.test(key, sets));
                    if !confirmed {
                        continue;
                    }
                }
                let verdict = match flags & 3 {
                    0 => Verdict::Allow,
                    1 => Verdict::Deny,
                    2 => {
                        tier += 1;
                        floor = p[tier_at(tier)];
                        continue;
                    }
                    _ => {
                        if n_logged < MAX_LOGGED {
                            logged[n_logged] = Some(id);
                            n_logged += 1;
                        }
                        continue;
                    }
                };
                return Decision {
                    verdict,
                    rule: Some(id),
                    logged,
                };
            }
        }
        let d = p[tier_at(tier) + 2];
        if d != NO_TIER {
            return tier_deny(p, tier_at(d), logged);
        }
        Decision {
            verdict: Verdict::Allow,
            rule: None,
            logged,
        }
    }

    #[inline(always)]
    fn addr_class(&self, v4_at: usize, v6: &Partition<u128>, addr: &[u8; 16]) -> u32 {
        if addr[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
            let x = u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]);
            class_of(&self.packed, v4_at, x)
        } else {
            v6.class_of(u128::from_be_bytes(*addr))
        }
    }

    /// Heap bytes held by the index.
    pub fn memory_bytes(&self) -> usize {
        self.packed.len() * 4 + self.src6.bytes() + self.dst6.bytes()
    }

    /// Number of intervals over both address fields (a measure of lookup depth).
    pub fn address_intervals(&self) -> usize {
        let p = &self.packed;
        p[p[H_SRC4] as usize] as usize
            + p[p[H_DST4] as usize] as usize
            + self.src6.starts.len()
            + self.dst6.starts.len()
    }

    /// Loads the cache lines a lookup starts with (the header and the address partitions,
    /// the bitmaps, the rule slots) and returns a value made of them, so that a caller can
    /// issue the loads of many lookups before it runs any: they then miss the cache
    /// together instead of one after another. Safe Rust has no prefetch instruction; an
    /// ordinary load whose result is kept does the same job.
    #[inline]
    pub fn warm(&self) -> u32 {
        let p = &self.packed[..];
        let at = |h: usize| p.get(p[h] as usize).copied().unwrap_or(0);
        at(H_SRC4) ^ at(H_DST4) ^ at(H_BITS) ^ at(H_SLOTS) ^ at(H_TIERS)
    }
}

/// The class of `x` in the packed partition at `at`.
#[inline]
fn class_of(p: &[u32], at: usize, x: u32) -> u32 {
    let n = p[at] as usize;
    if n == 1 {
        // No rule has a condition on the field (the common case for the local address).
        return p[at + 2];
    }
    let starts = &p[at + 1..at + 1 + n];
    let i = starts.partition_point(|&s| s <= x);
    // `starts[0]` is 0, so `i >= 1`.
    p[at + 1 + n + i.saturating_sub(1)]
}

#[inline]
fn tier_deny(p: &[u32], tier_at: usize, logged: [Option<u32>; MAX_LOGGED]) -> Decision {
    Decision {
        verdict: Verdict::Deny,
        rule: Some(p[tier_at + 1]),
        logged,
    }
}
