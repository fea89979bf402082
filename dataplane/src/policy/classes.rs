//! Address classes: every address of the snapshot's policy is given the id of its *class*,
//! the set of things policy can tell about it (which address sets it is in, which named
//! ports it declares, which local endpoint it is). One longest-prefix lookup per address
//! replaces the per-program searches of address intervals: programs then map a class to
//! one of their rows (see `matrix`), and two addresses of one class are alike for every
//! rule of every program.
//!
//! Sets in Kubernetes are memberships shared by many rules (a namespace's pods, an ipBlock
//! with its exceptions), so the classes are few: about one per local endpoint and one per
//! distinct combination of sets among the others. The table is built by one sweep over the
//! boundaries of every set's intervals, then stored in the route module's LPM structures
//! (DIR-24-8 for IPv4, binary search on lengths for IPv6), whose lookups are a load or two.
//!
//! Classes 0 and 1 are the IPv4 and IPv6 addresses that are in no set, declare no named
//! port and are no endpoint; the tables do not store them (a miss is class 0 or 1).

use std::net::{Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;

use crate::flow::FlowKey;
use crate::policy::program::{NetSetId, PortSetId, Sets};
use crate::route::{Ipv4Lpm, Ipv6Lpm, LpmError};
use crate::snapshot::EndpointId;

/// The class of IPv4 addresses policy knows nothing about.
pub const CLASS_V4: u32 = 0;
/// The class of IPv6 addresses policy knows nothing about.
pub const CLASS_V6: u32 = 1;
/// "Not an endpoint" in [`AddrClasses::endpoint`].
const NO_ENDPOINT: u32 = u32::MAX;
/// The most keys [`AddrClasses::class_pairs`] takes at once.
pub const BATCH: usize = 32;

/// A named-port declaration of an address: (named-port set, protocol, port).
pub type NamedTag = (PortSetId, u8, u16);

/// What the policy can tell about the addresses of one class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClassKey {
    pub v6: bool,
    /// The address sets (ids into `Sets::nets`) holding the class, ascending.
    pub nets: Box<[NetSetId]>,
    /// Its named-port declarations, ascending.
    pub named: Box<[NamedTag]>,
    /// The local endpoint it is, or `u32::MAX`.
    pub endpoint: u32,
}

/// The address → class table of one snapshot's policy; see the module documentation.
#[derive(Default)]
pub struct AddrClasses {
    v4: Option<Ipv4Lpm>,
    v6: Option<Ipv6Lpm>,
    keys: Vec<ClassKey>,
    /// One address of each class, in key form (`FlowKey::map_ip`).
    reps: Vec<[u8; 16]>,
    /// Per address set, the classes inside it; per named-port set, the classes declaring
    /// one of its ports.
    of_net: Vec<Vec<u32>>,
    of_named: Vec<Vec<u32>>,
    /// The IPv4 classes, then the IPv6 ones, ascending.
    families: [Vec<u32>; 2],
    /// Bytes of the IPv4 table's pages that hold an entry (the rest is never touched).
    v4_resident: usize,
}

impl std::fmt::Debug for AddrClasses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddrClasses")
            .field("classes", &self.keys.len())
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

/// An address family's value type, for the sweep.
pub(crate) trait Family: Ord + Copy + std::hash::Hash {
    const MIN: Self;
    const MAX: Self;
    const V6: bool;
    fn succ(self) -> Self;
    fn pred(self) -> Self;
    fn key(self) -> [u8; 16];
}

impl Family for u32 {
    const MIN: Self = 0;
    const MAX: Self = u32::MAX;
    const V6: bool = false;
    fn succ(self) -> Self {
        self + 1
    }
    fn pred(self) -> Self {
        self - 1
    }
    fn key(self) -> [u8; 16] {
        FlowKey::map_v4(self.to_be_bytes())
    }
}

impl Family for u128 {
    const MIN: Self = 0;
    const MAX: Self = u128::MAX;
    const V6: bool = true;
    fn succ(self) -> Self {
        self + 1
    }
    fn pred(self) -> Self {
        self - 1
    }
    fn key(self) -> [u8; 16] {
        self.to_be_bytes()
    }
}

/// Calls `f(lo, hi, active)` for each elementary interval of the value space cut by the
/// intervals of `sets` (`(id, sorted disjoint intervals)`) and by the single values of
/// `points`: `active` holds the ids of the sets containing the interval, ascending.
/// Intervals are visited in order and cover the whole space.
pub(crate) fn sweep<T: Family>(
    sets: &[(u32, &[(T, T)])],
    points: &[T],
    mut f: impl FnMut(T, T, &[u32]),
) {
    // (value, set, entering)
    let mut events: Vec<(T, u32, bool)> = Vec::new();
    let mut cuts: Vec<T> = vec![T::MIN];
    for &(id, intervals) in sets {
        for &(lo, hi) in intervals {
            events.push((lo, id, true));
            cuts.push(lo);
            if hi != T::MAX {
                events.push((hi.succ(), id, false));
                cuts.push(hi.succ());
            }
        }
    }
    for &p in points {
        cuts.push(p);
        if p != T::MAX {
            cuts.push(p.succ());
        }
    }
    events.sort_unstable();
    cuts.sort_unstable();
    cuts.dedup();
    let mut active: Vec<u32> = Vec::new();
    let mut e = 0;
    for (i, &lo) in cuts.iter().enumerate() {
        while e < events.len() && events[e].0 <= lo {
            let (_, id, entering) = events[e];
            match (active.binary_search(&id), entering) {
                (Err(at), true) => active.insert(at, id),
                (Ok(at), false) => {
                    active.remove(at);
                }
                _ => {}
            }
            e += 1;
        }
        let hi = cuts.get(i + 1).map_or(T::MAX, |&next| next.pred());
        f(lo, hi, &active);
    }
}

/// The CIDR prefixes exactly covering `lo..=hi` in a `width`-bit space, in order.
pub(crate) fn prefixes(lo: u128, hi: u128, width: u32) -> Vec<(u128, u8)> {
    let span = |bits: u32| {
        if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        }
    };
    let mut out = Vec::new();
    let mut cur = lo;
    loop {
        let mut bits = if cur == 0 {
            width
        } else {
            cur.trailing_zeros().min(width)
        };
        while bits > 0 && cur.checked_add(span(bits)).is_none_or(|end| end > hi) {
            bits -= 1;
        }
        out.push((cur, (width - bits) as u8));
        let end = cur + span(bits);
        if end >= hi {
            return out;
        }
        cur = end + 1;
    }
}

/// Interns class keys while the sweeps run.
struct Builder {
    ids: FxHashMap<ClassKey, u32>,
    keys: Vec<ClassKey>,
    reps: Vec<[u8; 16]>,
}

impl Builder {
    fn intern(&mut self, key: ClassKey, rep: [u8; 16]) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(key.clone());
        self.reps.push(rep);
        self.ids.insert(key, id);
        id
    }

    /// Sweeps one family; returns the runs `(lo, hi, class)` of classes other than the
    /// family's empty one, adjacent runs of one class merged.
    fn family<T: Family>(
        &mut self,
        sets: &Sets,
        intervals: impl Fn(&crate::policy::NetSet) -> &[(T, T)],
        attrs: &FxHashMap<[u8; 16], (Vec<NamedTag>, u32)>,
        points: &[T],
    ) -> Vec<(T, T, u32)> {
        let listed: Vec<(u32, &[(T, T)])> = sets
            .nets
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32, intervals(s)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let empty = if T::V6 { CLASS_V6 } else { CLASS_V4 };
        let mut runs: Vec<(T, T, u32)> = Vec::new();
        sweep(&listed, points, |lo, hi, active| {
            let (named, endpoint) = match (lo == hi).then(|| attrs.get(&lo.key())).flatten() {
                Some((named, endpoint)) => (named.clone().into_boxed_slice(), *endpoint),
                None => (Box::default(), NO_ENDPOINT),
            };
            let key = ClassKey {
                v6: T::V6,
                nets: active.into(),
                named,
                endpoint,
            };
            let class = self.intern(key, lo.key());
            if class == empty {
                return;
            }
            match runs.last_mut() {
                Some(r) if r.2 == class && r.1.succ() == lo => r.1 = hi,
                _ => runs.push((lo, hi, class)),
            }
        });
        runs
    }
}

impl AddrClasses {
    /// The classes of `sets` with the local endpoints at `endpoints` (address in key form,
    /// as `FlowKey::map_ip` gives it).
    ///
    /// # Errors
    /// Only if the route tables refuse the classes' prefixes, which they do for no table a
    /// policy can describe; the caller then falls back to testing rules one by one.
    pub fn build(
        sets: &Sets,
        endpoints: &[(EndpointId, [u8; 16])],
    ) -> Result<AddrClasses, LpmError> {
        let mut attrs: FxHashMap<[u8; 16], (Vec<NamedTag>, u32)> = FxHashMap::default();
        for (id, set) in sets.named_ports.iter().enumerate() {
            for &(addr, proto, port) in set {
                attrs
                    .entry(addr)
                    .or_insert_with(|| (Vec::new(), NO_ENDPOINT))
                    .0
                    .push((id as PortSetId, proto, port));
            }
        }
        for &(endpoint, addr) in endpoints {
            attrs
                .entry(addr)
                .or_insert_with(|| (Vec::new(), NO_ENDPOINT))
                .1 = endpoint;
        }
        let mut points4 = Vec::new();
        let mut points6 = Vec::new();
        for (addr, (named, _)) in attrs.iter_mut() {
            named.sort_unstable();
            named.dedup();
            if addr[..12] == V4_MAPPED {
                points4.push(u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]));
            } else {
                points6.push(u128::from_be_bytes(*addr));
            }
        }
        let mut b = Builder {
            ids: FxHashMap::default(),
            keys: Vec::new(),
            reps: Vec::new(),
        };
        for v6 in [false, true] {
            let rep = if v6 { 0u128.key() } else { 0u32.key() };
            b.intern(
                ClassKey {
                    v6,
                    nets: Box::default(),
                    named: Box::default(),
                    endpoint: NO_ENDPOINT,
                },
                rep,
            );
        }
        let runs4 = b.family(sets, |s| s.v4_intervals(), &attrs, &points4);
        let runs6 = b.family(sets, |s| s.v6_intervals(), &attrs, &points6);

        let mut routes4 = Vec::new();
        let mut pages: Vec<(u32, u32)> = Vec::new();
        for &(lo, hi, class) in &runs4 {
            for (p, len) in prefixes(u128::from(lo), u128::from(hi), 32) {
                routes4.push((Ipv4Addr::from(p as u32), len, class));
            }
            // `tbl24` holds 4-byte entries, 1024 per 4 KiB page.
            pages.push((lo >> 18, hi >> 18));
        }
        let mut routes6 = Vec::new();
        for &(lo, hi, class) in &runs6 {
            for (p, len) in prefixes(lo, hi, 128) {
                routes6.push((Ipv6Addr::from(p), len, class));
            }
        }
        let v4 = if routes4.is_empty() {
            None
        } else {
            Some(Ipv4Lpm::build_with_tbl8_limit(&routes4, usize::MAX)?)
        };
        let v6 = if routes6.is_empty() {
            None
        } else {
            Some(Ipv6Lpm::build(&routes6)?)
        };
        let mut touched = 0usize;
        let mut last: Option<u32> = None;
        for (lo, hi) in pages {
            let lo = last.map_or(lo, |l| lo.max(l + 1));
            if hi >= lo {
                touched += (hi - lo) as usize + 1;
                last = Some(hi);
            }
        }
        let mut of_net = vec![Vec::new(); sets.nets.len()];
        let mut of_named = vec![Vec::new(); sets.named_ports.len()];
        for (c, key) in b.keys.iter().enumerate() {
            for &n in key.nets.iter() {
                of_net[n as usize].push(c as u32);
            }
            let mut last = None;
            for &(s, _, _) in key.named.iter() {
                if last != Some(s) {
                    of_named[s as usize].push(c as u32);
                    last = Some(s);
                }
            }
        }
        let mut families = [Vec::new(), Vec::new()];
        for (c, key) in b.keys.iter().enumerate() {
            families[usize::from(key.v6)].push(c as u32);
        }
        Ok(AddrClasses {
            families,
            v4_resident: touched * 4096 + v4.as_ref().map_or(0, |t| t.tbl8_groups() * 1024),
            v4,
            v6,
            keys: b.keys,
            reps: b.reps,
            of_net,
            of_named,
        })
    }

    /// The class of `addr` (key form).
    #[inline]
    pub fn class_of(&self, addr: &[u8; 16]) -> u32 {
        if addr[..12] == V4_MAPPED {
            let x = u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]);
            self.v4
                .as_ref()
                .and_then(|t| t.lookup(x))
                .unwrap_or(CLASS_V4)
        } else {
            self.v6
                .as_ref()
                .and_then(|t| t.lookup(u128::from_be_bytes(*addr)))
                .unwrap_or(CLASS_V6)
        }
    }

    /// The classes of the source and the destination of every key of `keys` into `out`
    /// (same length, at most [`BATCH`] keys): when every address is IPv4, they go through
    /// the IPv4 table's batched lookup, whose cache and TLB misses overlap.
    ///
    /// # Panics
    /// If `keys` and `out` differ in length or hold more than [`BATCH`] keys.
    pub fn class_pairs(&self, keys: &[FlowKey], out: &mut [(u32, u32)]) {
        assert!(
            keys.len() == out.len() && keys.len() <= BATCH,
            "class_pairs: bad batch"
        );
        let mut addrs = [0u32; 2 * BATCH];
        let mut all_v4 = true;
        for (i, k) in keys.iter().enumerate() {
            match (v4_of(&k.src), v4_of(&k.dst)) {
                (Some(s), Some(d)) => (addrs[2 * i], addrs[2 * i + 1]) = (s, d),
                _ => all_v4 = false,
            }
        }
        match (&self.v4, all_v4) {
            (Some(t), true) => {
                let n = 2 * keys.len();
                let mut got = [0u32; 2 * BATCH];
                t.lookup_batch(&addrs[..n], &mut got[..n]);
                let class = |c: u32| if c == crate::route::MISS { CLASS_V4 } else { c };
                for (i, o) in out.iter_mut().enumerate() {
                    *o = (class(got[2 * i]), class(got[2 * i + 1]));
                }
            }
            _ => {
                for (k, o) in keys.iter().zip(out.iter_mut()) {
                    *o = (self.class_of(&k.src), self.class_of(&k.dst));
                }
            }
        }
    }

    /// The local endpoint of a class.
    #[inline]
    pub fn endpoint(&self, class: u32) -> Option<EndpointId> {
        self.keys
            .get(class as usize)
            .map(|k| k.endpoint)
            .filter(|&e| e != NO_ENDPOINT)
    }

    /// What a class stands for.
    pub fn key(&self, class: u32) -> Option<&ClassKey> {
        self.keys.get(class as usize)
    }

    /// Number of classes (the two empty ones included).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no classes at all (a table that was never built).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The classes inside address set `net`.
    pub(crate) fn in_net(&self, net: NetSetId) -> &[u32] {
        self.of_net.get(net as usize).map_or(&[], Vec::as_slice)
    }

    /// The classes of one address family, ascending.
    pub(crate) fn family(&self, v6: bool) -> &[u32] {
        &self.families[usize::from(v6)]
    }

    /// The classes declaring a port of named-port set `set`.
    pub(crate) fn in_named(&self, set: PortSetId) -> &[u32] {
        self.of_named.get(set as usize).map_or(&[], Vec::as_slice)
    }

    /// Bytes the table occupies: the touched pages of the IPv4 table (the rest of its
    /// address space is never written, so never mapped), the IPv6 table, and the class
    /// descriptions.
    pub fn memory_bytes(&self) -> usize {
        let keys: usize = self
            .keys
            .iter()
            .map(|k| {
                std::mem::size_of::<ClassKey>()
                    + k.nets.len() * 4
                    + k.named.len() * std::mem::size_of::<NamedTag>()
            })
            .sum();
        let inverse: usize = self
            .of_net
            .iter()
            .chain(&self.of_named)
            .chain(&self.families)
            .map(|v| 24 + v.capacity() * 4)
            .sum();
        self.v4_resident
            + self.v6.as_ref().map_or(0, Ipv6Lpm::memory_bytes)
            + keys
            + self.reps.capacity() * 16
            + inverse
    }
}

/// The IPv4-mapped prefix `::ffff:0:0/96`.
const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// The IPv4 address of an address in key form, if it is one.
#[inline(always)]
fn v4_of(addr: &[u8; 16]) -> Option<u32> {
    (addr[..12] == V4_MAPPED).then(|| u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NetSet;

    #[test]
    fn prefixes_cover_exactly() {
        assert_eq!(prefixes(0, u128::from(u32::MAX), 32), vec![(0, 0)]);
        assert_eq!(prefixes(0, u128::MAX, 128), vec![(0, 0)]);
        let p = prefixes(5, 20, 32);
        assert_eq!(p, vec![(5, 32), (6, 31), (8, 29), (16, 30), (20, 32)]);
    }

    #[test]
    fn classes_tell_sets_named_ports_and_endpoints_apart() {
        let a = NetSet::from_prefixes([("198.18.0.0".parse().unwrap(), 24)]);
        let mut b = NetSet::from_prefixes([("198.18.0.0".parse().unwrap(), 16)]);
        b.remove("198.18.0.128".parse().unwrap(), 25);
        b.insert("2001:db8::".parse().unwrap(), 64);
        let web = FlowKey::map_v4([198, 18, 0, 7]);
        let mut named = rustc_hash::FxHashSet::default();
        named.insert((web, 6, 8080));
        let sets = Sets {
            nets: vec![a, b],
            named_ports: vec![named],
        };
        let pod = FlowKey::map_v4([198, 18, 0, 9]);
        let c = AddrClasses::build(&sets, &[(3, pod)]).unwrap();
        let of = |k: [u8; 4]| c.class_of(&FlowKey::map_v4(k));
        let key = |k: [u8; 4]| c.key(of(k)).unwrap().clone();
        assert_eq!(of([10, 0, 0, 1]), CLASS_V4);
        assert_eq!(
            c.class_of(&"2001:db9::1".parse::<Ipv6Addr>().unwrap().octets()),
            CLASS_V6
        );
        assert_eq!(&*key([198, 18, 0, 1]).nets, &[0, 1]);
        assert_eq!(of([198, 18, 0, 1]), of([198, 18, 0, 100]));
        assert_eq!(&*key([198, 18, 0, 200]).nets, &[0], "the exception");
        assert_eq!(&*key([198, 18, 5, 1]).nets, &[1]);
        assert_eq!(&*key([198, 18, 0, 7]).named, &[(0, 6, 8080)]);
        assert_eq!(c.endpoint(of([198, 18, 0, 9])), Some(3));
        assert_eq!(c.endpoint(of([198, 18, 0, 1])), None);
        let v6 = c.class_of(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(&*c.key(v6).unwrap().nets, &[1]);
        assert!(c.in_net(0).contains(&of([198, 18, 0, 9])));
        assert_eq!(c.in_named(0), &[of([198, 18, 0, 7])]);
        for class in 0..c.len() as u32 {
            assert_eq!(c.class_of(&c.reps[class as usize]), class, "representative");
        }
    }
}
