//! Address sets for policy matching: the exact union of CIDRs minus their exceptions, kept
//! as sorted, disjoint, non-adjacent inclusive intervals per family, and looked up by
//! binary search.
//!
//! Why intervals rather than an LPM: a rule's peers are a union of `ipBlock`s, each with
//! its own `except` list, plus the addresses of selected pods and network sets. The union of
//! differences is not expressible as one longest-prefix table (an exception of one block
//! would hide an address another block includes), but interval arithmetic computes it
//! exactly. Pods' addresses are mostly consecutive in IPAM blocks, so thousands of /32s
//! collapse into a few intervals.

use std::net::IpAddr;

/// A set of IPv4 and IPv6 addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NetSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl NetSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every address of both families.
    pub fn all() -> Self {
        NetSet {
            v4: vec![(0, u32::MAX)],
            v6: vec![(0, u128::MAX)],
        }
    }

    /// Adds `addr/len` (host bits are ignored).
    pub fn insert(&mut self, addr: IpAddr, len: u8) {
        match addr {
            IpAddr::V4(a) => {
                let (lo, hi) = range32(u32::from(a), len);
                self.v4 = union(&self.v4, &[(lo, hi)]);
            }
            IpAddr::V6(a) => {
                let (lo, hi) = range128(u128::from(a), len);
                self.v6 = union(&self.v6, &[(lo, hi)]);
            }
        }
    }

    /// Removes `addr/len`.
    pub fn remove(&mut self, addr: IpAddr, len: u8) {
        match addr {
            IpAddr::V4(a) => {
                let r = range32(u32::from(a), len);
                self.v4 = difference(&self.v4, r);
            }
            IpAddr::V6(a) => {
                let r = range128(u128::from(a), len);
                self.v6 = difference(&self.v6, r);
            }
        }
    }

    /// Adds every address of `other`.
    pub fn extend(&mut self, other: &NetSet) {
        self.v4 = union(&self.v4, &other.v4);
        self.v6 = union(&self.v6, &other.v6);
    }

    /// The union of many prefixes at once: one sort and merge, where repeated `insert`s
    /// would rebuild the set for each (thousands of pod addresses).
    pub fn from_prefixes(prefixes: impl IntoIterator<Item = (IpAddr, u8)>) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (addr, len) in prefixes {
            match addr {
                IpAddr::V4(a) => v4.push(range32(u32::from(a), len)),
                IpAddr::V6(a) => v6.push(range128(u128::from(a), len)),
            }
        }
        NetSet {
            v4: union(&v4, &[]),
            v6: union(&v6, &[]),
        }
    }

    /// Removes every address of `other`.
    pub fn subtract(&mut self, other: &NetSet) {
        for &r in &other.v4 {
            self.v4 = difference(&self.v4, r);
        }
        for &r in &other.v6 {
            self.v6 = difference(&self.v6, r);
        }
    }

    /// The addresses in both sets.
    pub fn intersection(&self, other: &NetSet) -> NetSet {
        NetSet {
            v4: intersect(&self.v4, &other.v4),
            v6: intersect(&self.v6, &other.v6),
        }
    }

    /// The IPv4 intervals, inclusive, sorted and disjoint.
    pub fn v4_intervals(&self) -> &[(u32, u32)] {
        &self.v4
    }

    /// The IPv6 intervals, inclusive, sorted and disjoint.
    pub fn v6_intervals(&self) -> &[(u128, u128)] {
        &self.v6
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Number of intervals (a measure of lookup cost and memory).
    pub fn intervals(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether `addr` (16 bytes, network order, IPv4-mapped for IPv4 as in `FlowKey`) is in
    /// the set.
    #[inline]
    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        if addr[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
            find(
                &self.v4,
                u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]),
            )
        } else {
            find(&self.v6, u128::from_be_bytes(*addr))
        }
    }

    /// Whether `ip` is in the set.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }
}

#[inline]
fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The first interval whose end is >= x holds x if its start is <= x.
    let i = ranges.partition_point(|&(_, hi)| hi < x);
    ranges.get(i).is_some_and(|&(lo, _)| lo <= x)
}

fn range32(a: u32, len: u8) -> (u32, u32) {
    let len = u32::from(len.min(32));
    let host = u32::MAX.checked_shr(len).unwrap_or(0);
    (a & !host, a | host)
}

fn range128(a: u128, len: u8) -> (u128, u128) {
    let len = u32::from(len.min(128));
    let host = u128::MAX.checked_shr(len).unwrap_or(0);
    (a & !host, a | host)
}

/// Numbers with a successor, for merging adjacent intervals.
trait Step: Ord + Copy {
    fn succ(self) -> Option<Self>;
    fn pred(self) -> Option<Self>;
}

impl Step for u32 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

impl Step for u128 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

fn union<T: Step>(a: &[(T, T)], b: &[(T, T)]) -> Vec<(T, T)> {
    let mut all: Vec<(T, T)> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(all.len());
    for (lo, hi) in all {
        if let Some(last) = out.last_mut() {
            // Overlapping or adjacent: merge.
            if last.1.succ().is_none_or(|next| lo <= next) {
                if hi > last.1 {
                    last.1 = hi;
                }
                continue;
            }
        }
        out.push((lo, hi));
    }
    out
}

fn intersect<T: Step>(a: &[(T, T)], b: &[(T, T)]) -> Vec<(T, T)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo <= hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn difference<T: Step>(a: &[(T, T)], (rlo, rhi): (T, T)) -> Vec<(T, T)> {
    let mut out = Vec::with_capacity(a.len() + 1);
    for &(lo, hi) in a {
        if hi < rlo || lo > rhi {
            out.push((lo, hi));
            continue;
        }
        if lo < rlo {
            if let Some(p) = rlo.pred() {
                out.push((lo, p));
            }
        }
        if hi > rhi {
            if let Some(s) = rhi.succ() {
                out.push((s, hi));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowKey;
    use proptest::prelude::*;

    fn v4(s: &str) -> [u8; 16] {
        let a: std::net::Ipv4Addr = s.parse().unwrap();
        FlowKey::map_v4(a.octets())
    }

    #[test]
    fn union_of_blocks_with_exceptions_is_exact() {
        // Block 1: 10.0.0.0/8 except 10.1.0.0/16. Block 2: 10.0.0.0/9 (covers 10.1.x).
        let mut b1 = NetSet::new();
        b1.insert("10.0.0.0".parse().unwrap(), 8);
        b1.remove("10.1.0.0".parse().unwrap(), 16);
        assert!(!b1.contains(&v4("10.1.2.3")));
        assert!(b1.contains(&v4("10.2.0.0")));
        let mut b2 = NetSet::new();
        b2.insert("10.0.0.0".parse().unwrap(), 9);
        let mut u = b1.clone();
        u.extend(&b2);
        assert!(
            u.contains(&v4("10.1.2.3")),
            "block 2 includes what block 1 excepts"
        );
        assert!(u.contains(&v4("10.255.255.255")));
        assert!(!u.contains(&v4("11.0.0.0")));
        assert_eq!(u.intervals(), 1);
    }

    #[test]
    fn adjacent_hosts_merge_and_families_stay_apart() {
        let mut s = NetSet::new();
        for i in 0..=255u8 {
            s.insert(IpAddr::from([198, 18, 0, i]), 32);
        }
        s.insert("2001:db8::1".parse().unwrap(), 128);
        assert_eq!(s.intervals(), 2);
        assert!(s.contains_ip("198.18.0.77".parse().unwrap()));
        assert!(!s.contains_ip("198.18.1.0".parse().unwrap()));
        assert!(s.contains_ip("2001:db8::1".parse().unwrap()));
        assert!(!s.contains_ip("::ffff:198.18.1.0".parse().unwrap()));
        assert!(NetSet::all().contains_ip("255.255.255.255".parse().unwrap()));
        assert!(NetSet::all().contains_ip("::".parse().unwrap()));
        let mut full = NetSet::all();
        full.remove("0.0.0.0".parse().unwrap(), 0);
        assert!(!full.contains_ip("1.2.3.4".parse().unwrap()));
        assert!(full.contains_ip("::1".parse().unwrap()));
    }

    #[test]
    fn bulk_build_intersection_and_subtraction() {
        let hosts = (0..=255u8).map(|i| (IpAddr::from([198, 18, 0, i]), 32));
        let s = NetSet::from_prefixes(hosts.chain([("2001:db8::".parse().unwrap(), 64)]));
        assert_eq!(s.v4_intervals(), &[(0xc612_0000, 0xc612_00ff)]);
        assert_eq!(s.v6_intervals().len(), 1);
        let half = NetSet::from_prefixes([("198.18.0.128".parse().unwrap(), 25)]);
        let both = s.intersection(&half);
        assert_eq!(both.v4_intervals(), &[(0xc612_0080, 0xc612_00ff)]);
        assert!(both.v6_intervals().is_empty());
        let mut rest = s.clone();
        rest.subtract(&half);
        assert_eq!(rest.v4_intervals(), &[(0xc612_0000, 0xc612_007f)]);
        assert_eq!(rest.v6_intervals(), s.v6_intervals());
    }

    proptest! {
        /// Against a naive model: a list of (include, prefix) operations applied in order.
        #[test]
        fn matches_naive_model(ops in proptest::collection::vec((any::<bool>(), any::<u32>(), 0u8..=32), 1..20),
                               probes in proptest::collection::vec(any::<u32>(), 1..50)) {
            let mut s = NetSet::new();
            for &(inc, a, l) in &ops {
                if inc { s.insert(IpAddr::from(a.to_be_bytes()), l) } else { s.remove(IpAddr::from(a.to_be_bytes()), l) }
            }
            let mut probes = probes;
            probes.extend(ops.iter().map(|o| o.1));
            for p in probes {
                let mut model = false;
                for &(inc, a, l) in &ops {
                    let (lo, hi) = range32(a, l);
                    if lo <= p && p <= hi { model = inc; }
                }
                prop_assert_eq!(s.contains_ip(IpAddr::from(p.to_be_bytes())), model);
            }
        }
    }
}
