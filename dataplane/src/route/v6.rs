//! IPv6 longest-prefix match by binary search on prefix lengths (M. Waldvogel, G. Varghese,
//! J. Turner, B. Plattner, "Scalable High Speed IP Routing Lookups", ACM SIGCOMM 1997).
//!
//! The table keeps one hash table per distinct prefix length present, and a balanced
//! binary search tree over those lengths. A lookup starts at the middle length `M`: it
//! masks the address to `M` bits and probes that length's table. A hit means a prefix of
//! length `M` or a *marker* matches, so a longer match may exist: search the longer half.
//! A miss means no prefix of length `M` or longer on this path can match: search the
//! shorter half. Markers are entries placed at the lengths a search passes on its way to a
//! longer prefix; each entry carries its *best matching prefix* (the value of the longest
//! real prefix, default route included, that covers it), precomputed at build, so the last
//! hit is the answer and the search never backtracks.
//!
//! Why this and not a multibit trie (DPDK's `rte_fib6` trie, 24 bits then 8 per level): a
//! trie's cost grows with the prefix length, up to 14 dependent loads for a /128, while
//! this costs one probe per level of the length tree: `ceil(log2(lengths + 1))` probes.
//! Kubernetes tables have few lengths (a cluster /48, per-node /64 or /80 pod ranges,
//! /128 pods and services, a default route): two or three probes, each one cache line.
//! Memory is linear in the number of prefixes and markers (at most one marker per prefix
//! per tree level): about 3.5 MiB for 100k routes, where DPDK's trie reserves 1 GiB of
//! groups for the same routes.
//!
//! Each length's entries live in buckets of one cache line, open-addressed: five 64-bit
//! keys per bucket for lengths up to /64 (the address's top half is the whole key), three
//! 128-bit keys beyond. A probe reads one bucket and compares all its keys without
//! branching; a full bucket spills into the next, which a search follows only when the
//! key was not in the full one. Table contents come from the control plane; addresses
//! from the wire only choose which bucket a probe reads.
//!
//! [`Ipv6Lpm::lookup_batch`] is a loop over the single lookup. Breadth-first walks over a
//! group of addresses (all first probes, then all second probes) and early loads of the
//! next level's candidates were measured slower on a Xeon VM with 100k routes: a lookup
//! costs about 22 ns with addresses in route order and 29 ns in random order, of which
//! about 10 and 18 ns are computation and mispredicted branches (measured on a 1k-route
//! table that stays in L1), so there is little memory latency left to hide.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use rustc_hash::{FxHashMap, FxHashSet};

use super::{LpmError, MAX_VALUE, MISS};

/// "No child" in the length tree.
const NONE: u8 = u8::MAX;

/// An immutable IPv6 route table. Built once with [`Ipv6Lpm::build`], looked up from any
/// number of threads.
pub struct Ipv6Lpm {
    /// One per distinct prefix length above 0, shortest first.
    tables: Vec<LengthTable>,
    /// Index into `tables` where every search starts, or [`NONE`] if there are none.
    root: u8,
    /// Levels of the length tree: the most probes a lookup makes.
    height: u8,
    /// The value of `::/0`, or [`MISS`].
    default: u32,
    routes: usize,
}

impl Ipv6Lpm {
    /// Builds a table from `(prefix, length, value)` routes, in any order.
    ///
    /// # Errors
    /// A length above 128, host bits set beyond the length, a value above
    /// [`MAX_VALUE`] or a prefix listed twice.
    pub fn build(routes: &[(Ipv6Addr, u8, u32)]) -> Result<Self, LpmError> {
        let mut checked = Vec::with_capacity(routes.len());
        for &(prefix, len, value) in routes {
            checked.push(check_route(prefix, len, value)?);
        }
        // Stable: among duplicates, the first given comes first in the error.
        checked.sort_by_key(|r| (r.len, r.addr));
        if let Some(w) = checked
            .windows(2)
            .find(|w| (w[0].len, w[0].addr) == (w[1].len, w[1].addr))
        {
            return Err(LpmError::DuplicatePrefix {
                prefix: IpAddr::V6(Ipv6Addr::from(w[0].addr)),
                len: w[0].len,
                first: w[0].value,
                second: w[1].value,
            });
        }

        let default = checked
            .iter()
            .find(|r| r.len == 0)
            .map_or(MISS, |r| r.value);
        let mut lengths: Vec<u8> = checked.iter().map(|r| r.len).filter(|&l| l > 0).collect();
        lengths.dedup();
        let tree = LengthTree::balanced(lengths.len());

        // The real prefixes per length index, then the markers each prefix needs on the
        // way down the tree to its own length.
        let mut real: Vec<FxHashMap<u128, u32>> = vec![FxHashMap::default(); lengths.len()];
        let mut markers: Vec<FxHashSet<u128>> = vec![FxHashSet::default(); lengths.len()];
        for r in checked.iter().filter(|r| r.len > 0) {
            let own = lengths.binary_search(&r.len).expect("length is listed");
            real[own].insert(r.addr, r.value);
            let mut node = tree.root;
            while node != own {
                if lengths[node] < r.len {
                    markers[node].insert(r.addr & mask(lengths[node]));
                    node = tree.right[node];
                } else {
                    node = tree.left[node];
                }
            }
        }

        let best_matching = |key: u128, below: usize| {
            (0..below)
                .rev()
                .find_map(|j| real[j].get(&(key & mask(lengths[j]))).copied())
                .unwrap_or(default)
        };
        let mut tables = Vec::with_capacity(lengths.len());
        for (i, &len) in lengths.iter().enumerate() {
            let marker_only: Vec<(u128, u32)> = markers[i]
                .iter()
                .filter(|k| !real[i].contains_key(k))
                .map(|&k| (k, best_matching(k, i)))
                .collect();
            let mut table = LengthTable::new(len, real[i].len() + marker_only.len());
            for (&k, &v) in &real[i] {
                table.insert(k, v);
            }
            for (k, v) in marker_only {
                table.insert(k, v);
            }
            table.left = to_u8(tree.left[i]);
            table.right = to_u8(tree.right[i]);
            tables.push(table);
        }
        Ok(Ipv6Lpm {
            tables,
            root: to_u8(tree.root),
            height: tree.height,
            default,
            routes: checked.len(),
        })
    }

    /// The value of the longest prefix covering `addr` (host byte order, as
    /// `u128::from(Ipv6Addr)`), or `None`.
    #[inline]
    pub fn lookup(&self, addr: u128) -> Option<u32> {
        let best = self.search(addr);
        (best != MISS).then_some(best)
    }

    /// Looks up every address of `addrs` (host byte order) and writes the value of its
    /// longest matching prefix, or [`MISS`], to the same index of `out`.
    ///
    /// # Panics
    /// If `addrs` and `out` differ in length.
    pub fn lookup_batch(&self, addrs: &[u128], out: &mut [u32]) {
        assert_eq!(
            addrs.len(),
            out.len(),
            "lookup_batch: addrs and out differ in length"
        );
        for (o, &a) in out.iter_mut().zip(addrs) {
            *o = self.search(a);
        }
    }

    /// Number of routes in the table.
    pub fn len(&self) -> usize {
        self.routes
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }

    /// The distinct prefix lengths above 0, shortest first.
    pub fn lengths(&self) -> impl Iterator<Item = u8> + '_ {
        self.tables.iter().map(|t| t.len)
    }

    /// The most hash probes one lookup makes.
    pub fn max_probes(&self) -> usize {
        usize::from(self.height)
    }

    /// Prefixes and markers stored, over all lengths.
    pub fn entries(&self) -> usize {
        self.tables.iter().map(LengthTable::entries).sum()
    }

    /// The binary search over lengths: the best matching prefix of `addr`, or [`MISS`].
    /// Branch-free but for the walk down the tree, whose shape is the same for every
    /// address, and the rare spill into a next bucket.
    #[inline(always)]
    fn search(&self, addr: u128) -> u32 {
        let mut best = self.default;
        let mut node = self.root;
        while let Some(t) = self.tables.get(usize::from(node)) {
            let found = t.find(addr);
            let hit = found != 0;
            best = if hit { found.wrapping_sub(2) } else { best };
            node = if hit { t.right } else { t.left };
        }
        best
    }

    /// Bytes of memory the table holds.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .tables
                .iter()
                .map(LengthTable::memory_bytes)
                .sum::<usize>()
    }
}

impl fmt::Debug for Ipv6Lpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipv6Lpm")
            .field("routes", &self.routes)
            .field("lengths", &self.lengths().collect::<Vec<_>>())
            .field("entries", &self.entries())
            .field("max_probes", &self.max_probes())
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

/// The prefixes and markers of one length, keyed by the address masked to that length.
struct LengthTable {
    len: u8,
    mask: u128,
    keys: Keys,
    /// Next table to search after a miss here.
    left: u8,
    /// Next table to search after a hit here.
    right: u8,
}

/// Keys of lengths up to /64 fit in 64 bits, five to a cache line; longer ones take 128
/// bits, three to a line. The narrow form keeps the /48 and /64 tables that dominate real
/// routing tables at a third of the memory, so more of them stays in cache.
enum Keys {
    Narrow(BucketTable<u64, 5>),
    Wide(BucketTable<u128, 3>),
}

impl LengthTable {
    fn new(len: u8, entries: usize) -> Self {
        let keys = if len <= 64 {
            // Two entries per bucket of five on average.
            Keys::Narrow(BucketTable::new(entries.div_ceil(2)))
        } else {
            // One entry per bucket of three on average.
            Keys::Wide(BucketTable::new(entries))
        };
        LengthTable {
            len,
            mask: mask(len),
            keys,
            left: NONE,
            right: NONE,
        }
    }

    /// The stored word for `addr` masked to this length: its best matching prefix + 2, or
    /// 0 if absent.
    #[inline(always)]
    fn find(&self, addr: u128) -> u32 {
        let key = addr & self.mask;
        match &self.keys {
            Keys::Narrow(t) => {
                let key = (key >> 64) as u64;
                t.find(key, hash_narrow(key))
            }
            Keys::Wide(t) => t.find(key, hash_wide(key)),
        }
    }

    fn insert(&mut self, key: u128, best: u32) {
        let stored = best.wrapping_add(2);
        match &mut self.keys {
            Keys::Narrow(t) => {
                let key = (key >> 64) as u64;
                t.insert(key, hash_narrow(key), stored);
            }
            Keys::Wide(t) => t.insert(key, hash_wide(key), stored),
        }
    }

    fn entries(&self) -> usize {
        match &self.keys {
            Keys::Narrow(t) => t.entries,
            Keys::Wide(t) => t.entries,
        }
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + match &self.keys {
                Keys::Narrow(t) => std::mem::size_of_val(&*t.buckets),
                Keys::Wide(t) => std::mem::size_of_val(&*t.buckets),
            }
    }
}

fn hash_narrow(key: u64) -> u64 {
    key.wrapping_mul(0xd6e8_feb8_6659_fd93)
}

fn hash_wide(key: u128) -> u64 {
    let (hi, lo) = ((key >> 64) as u64, key as u64);
    (hi ^ lo.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(32))
        .wrapping_mul(0xd6e8_feb8_6659_fd93)
}

/// Open addressing over buckets of one cache line. A key's home bucket is
/// `hash * homes >> 64` (Lemire's multiply-shift range reduction, so `homes` need not be a
/// power of two); a full home spills into the next bucket. Spills run off the end into
/// extra buckets, and the last bucket is never full, so every search ends inside the table.
struct BucketTable<K, const N: usize> {
    buckets: Vec<Bucket<K, N>>,
    homes: u64,
    entries: usize,
}

/// Up to `N` keys and their stored words (0 = empty), filled in order, in one cache line.
/// A full bucket may have spilled entries into the next one; a bucket with a free slot
/// never has.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket<K, const N: usize> {
    keys: [K; N],
    stored: [u32; N],
}

impl<K: Copy + Default + Eq, const N: usize> BucketTable<K, N> {
    fn new(homes: usize) -> Self {
        let homes = homes.max(1);
        let empty = Bucket {
            keys: [K::default(); N],
            stored: [0; N],
        };
        BucketTable {
            buckets: vec![empty; homes + 1],
            homes: homes as u64,
            entries: 0,
        }
    }

    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * u128::from(self.homes)) >> 64) as usize
    }

    /// The stored word for `key`, or 0. Branch-free inside a bucket: at most one occupied
    /// slot holds `key`, and empty slots store 0.
    #[inline(always)]
    fn find(&self, key: K, hash: u64) -> u32 {
        let mut i = self.home(hash);
        loop {
            let bucket = &self.buckets[i];
            let mut found = 0;
            for (k, s) in bucket.keys.iter().zip(bucket.stored) {
                found |= s & 0u32.wrapping_sub(u32::from(*k == key));
            }
            if found != 0 || bucket.stored[N - 1] == 0 {
                return found;
            }
            i += 1;
        }
    }

    fn insert(&mut self, key: K, hash: u64, stored: u32) {
        let mut i = self.home(hash);
        while self.buckets[i].stored[N - 1] != 0 {
            i += 1;
        }
        let bucket = &mut self.buckets[i];
        let slot = bucket
            .stored
            .iter()
            .position(|&s| s == 0)
            .expect("bucket has room");
        bucket.keys[slot] = key;
        bucket.stored[slot] = stored;
        self.entries += 1;
        if self.buckets[self.buckets.len() - 1].stored[N - 1] != 0 {
            let empty = Bucket {
                keys: [K::default(); N],
                stored: [0; N],
            };
            self.buckets.push(empty);
        }
    }
}

/// A balanced binary search tree over `n` sorted lengths, as child indices.
struct LengthTree {
    root: usize,
    left: Vec<usize>,
    right: Vec<usize>,
    height: u8,
}

impl LengthTree {
    fn balanced(n: usize) -> Self {
        let mut tree = LengthTree {
            root: usize::from(NONE),
            left: vec![usize::from(NONE); n],
            right: vec![usize::from(NONE); n],
            height: 0,
        };
        tree.root = tree.span(0, n, 1);
        tree
    }

    /// Roots the lengths `lo..hi` at their middle; returns the root.
    fn span(&mut self, lo: usize, hi: usize, depth: u8) -> usize {
        if lo >= hi {
            return usize::from(NONE);
        }
        let mid = lo + (hi - lo) / 2;
        self.height = self.height.max(depth);
        self.left[mid] = self.span(lo, mid, depth + 1);
        self.right[mid] = self.span(mid + 1, hi, depth + 1);
        mid
    }
}

/// A tree index as stored in the tables (at most 128 lengths, so it fits).
fn to_u8(node: usize) -> u8 {
    u8::try_from(node).unwrap_or(NONE)
}

fn mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// A validated route.
#[derive(Debug, Clone, Copy)]
struct Route {
    addr: u128,
    len: u8,
    value: u32,
}

fn check_route(prefix: Ipv6Addr, len: u8, value: u32) -> Result<Route, LpmError> {
    if len > 128 {
        return Err(LpmError::PrefixTooLong {
            prefix: IpAddr::V6(prefix),
            len,
            max: 128,
        });
    }
    let addr = u128::from(prefix);
    if addr & !mask(len) != 0 {
        return Err(LpmError::HostBitsSet {
            prefix: IpAddr::V6(prefix),
            len,
            masked: IpAddr::V6(Ipv6Addr::from(addr & mask(len))),
        });
    }
    if value > MAX_VALUE {
        return Err(LpmError::ValueTooLarge {
            prefix: IpAddr::V6(prefix),
            len,
            value,
        });
    }
    Ok(Route { addr, len, value })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::route::naive::NaiveTrie6;

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn at(t: &Ipv6Lpm, s: &str) -> Option<u32> {
        t.lookup(u128::from(ip(s)))
    }

    #[test]
    fn empty_table_misses_everything() {
        let t = Ipv6Lpm::build(&[]).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.max_probes(), 0);
        assert_eq!(at(&t, "::"), None);
        let mut out = [0; 2];
        t.lookup_batch(&[0, u128::MAX], &mut out);
        assert_eq!(out, [MISS; 2]);
    }

    #[test]
    fn default_route_covers_every_address() {
        let t = Ipv6Lpm::build(&[(Ipv6Addr::UNSPECIFIED, 0, 9)]).unwrap();
        assert_eq!(at(&t, "::"), Some(9));
        assert_eq!(at(&t, "ffff::1"), Some(9));
        let mut out = [0; 2];
        t.lookup_batch(&[0, u128::MAX], &mut out);
        assert_eq!(out, [9; 2]);
    }

    #[test]
    fn kubernetes_shaped_table() {
        let t = Ipv6Lpm::build(&[
            (ip("::"), 0, 0),
            (ip("fd00:10::"), 48, 1),
            (ip("fd00:10:0:1::"), 64, 2),
            (ip("fd00:10:0:2::"), 64, 3),
            (ip("fd00:10:0:1::7"), 128, 4),
            (ip("fd00:20::1"), 128, 5),
        ])
        .unwrap();
        assert_eq!(t.lengths().collect::<Vec<_>>(), [48, 64, 128]);
        assert_eq!(t.max_probes(), 2);
        assert_eq!(at(&t, "fd00:10:0:1::7"), Some(4));
        assert_eq!(at(&t, "fd00:10:0:1::8"), Some(2));
        assert_eq!(at(&t, "fd00:10:0:2::7"), Some(3));
        assert_eq!(at(&t, "fd00:10:0:3::7"), Some(1));
        // Reached through a marker at /64 that no /64 or /48 prefix covers: the default.
        assert_eq!(at(&t, "fd00:20::1"), Some(5));
        assert_eq!(at(&t, "fd00:20::2"), Some(0));
        assert_eq!(at(&t, "2001:db8::"), Some(0));
    }

    #[test]
    fn markers_carry_the_best_matching_prefix() {
        // Lengths 16, 32, 100, 127, 128: the root is 100, so the /128 and /127 leave markers
        // at 100 whose best match is the /32 (or nothing).
        let t = Ipv6Lpm::build(&[
            (ip("2001::"), 16, 1),
            (ip("2001:db8::"), 32, 2),
            (ip("2001:db8::1:0:0"), 100, 3),
            (ip("2001:db8::2"), 127, 4),
            (ip("2001:db8::1"), 128, 5),
            (ip("3000::1"), 128, 6),
        ])
        .unwrap();
        assert_eq!(t.max_probes(), 3);
        assert_eq!(at(&t, "2001:db8::1"), Some(5));
        assert_eq!(at(&t, "2001:db8::0"), Some(2));
        assert_eq!(at(&t, "2001:db8::3"), Some(4));
        assert_eq!(at(&t, "2001:db8::4"), Some(2));
        assert_eq!(at(&t, "2001:db8::1:0:5"), Some(3));
        assert_eq!(at(&t, "2001:db9::1"), Some(1));
        assert_eq!(at(&t, "3000::1"), Some(6));
        assert_eq!(at(&t, "3000::2"), None);
    }

    #[test]
    fn errors_name_the_prefix_and_the_fix() {
        let e = Ipv6Lpm::build(&[(ip("2001:db8::1"), 64, 1)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "2001:db8::1/64 has host bits set; did you mean 2001:db8::/64?"
        );
        let e = Ipv6Lpm::build(&[(ip("::"), 129, 1)]).unwrap_err();
        assert_eq!(
            e,
            LpmError::PrefixTooLong {
                prefix: ip("::").into(),
                len: 129,
                max: 128
            }
        );
        let e = Ipv6Lpm::build(&[(ip("::1"), 128, u32::MAX)]).unwrap_err();
        assert!(matches!(e, LpmError::ValueTooLarge { .. }), "{e}");
        let e = Ipv6Lpm::build(&[(ip("::1"), 128, 1), (ip("::1"), 128, 2)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "::1/128 is listed twice (values 1 and 2); each prefix may appear once"
        );
    }

    #[test]
    fn full_buckets_spill_into_the_next_and_past_the_end() {
        let mut t = BucketTable::<u64, 5>::new(4);
        for k in 1..=12u64 {
            t.insert(k, 0, k as u32 + 2);
        }
        for k in 1..=12u64 {
            assert_eq!(t.find(k, 0), k as u32 + 2);
        }
        assert_eq!(t.find(13, 0), 0);
        assert_eq!(
            t.find(0, 0),
            0,
            "empty slots store 0 even where the key is 0"
        );

        let mut t = BucketTable::<u128, 3>::new(2);
        let last = u64::MAX;
        assert_eq!(t.home(last), 1);
        for k in 1..=7u128 {
            t.insert(k, last, 100);
        }
        assert_eq!(
            t.buckets.len(),
            4,
            "spilled past the last home, with an open bucket left"
        );
        for k in 1..=7u128 {
            assert_eq!(t.find(k, last), 100);
        }
        assert_eq!(t.find(8, last), 0);
    }

    #[test]
    #[should_panic(expected = "differ in length")]
    fn lookup_batch_panics_on_length_mismatch() {
        Ipv6Lpm::build(&[]).unwrap().lookup_batch(&[1], &mut []);
    }

    #[test]
    fn debug_is_a_summary() {
        let t = Ipv6Lpm::build(&[(ip("::1"), 128, 1)]).unwrap();
        let s = format!("{t:?}");
        assert!(
            s.starts_with("Ipv6Lpm { routes: 1, lengths: [128], entries: 1"),
            "{s}"
        );
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Ipv6Lpm>();
    }

    fn routes() -> impl Strategy<Value = Vec<(Ipv6Addr, u8, u32)>> {
        let len = prop_oneof![
            Just(0u8),
            Just(48),
            Just(64),
            Just(127),
            Just(128),
            0u8..=128,
            40u8..=72,
            120u8..=128,
        ];
        // Mostly under a few /32s, with few distinct bits around /48, /64 and /128, so
        // that prefixes nest.
        let clustered = (0u128..3, 0u128..3, 0u128..3, 0u128..4).prop_map(|(a, b, c, d)| {
            (0x2001_0db8 << 96) | (a << 96) | (b << 80) | (c << 64) | (d << 62) | d
        });
        let addr = prop_oneof![3 => clustered, 1 => any::<u128>()];
        prop::collection::vec((addr, len, 0..=MAX_VALUE), 0..64).prop_map(|v| {
            let mut seen = std::collections::HashSet::new();
            v.into_iter()
                .map(|(a, len, value)| (Ipv6Addr::from(a & mask(len)), len, value))
                .filter(|&(a, len, _)| seen.insert((a, len)))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn matches_the_naive_trie(
            routes in routes(),
            random in prop::collection::vec(any::<u128>(), 64),
            hosts in prop::collection::vec(any::<u128>(), 64),
        ) {
            let table = Ipv6Lpm::build(&routes).unwrap();
            let mut model = NaiveTrie6::new();
            for &(p, len, v) in &routes {
                model.insert(p, len, v);
            }
            prop_assert_eq!(table.len(), model.len());
            let mut addrs = random;
            for (i, &(p, len, _)) in routes.iter().enumerate() {
                let host = !mask(len);
                let p = u128::from(p);
                addrs.extend([p, p | host, p | (hosts[i % hosts.len()] & host)]);
                addrs.extend([p.wrapping_sub(1), (p | host).wrapping_add(1)]);
            }
            let mut out = vec![0; addrs.len()];
            table.lookup_batch(&addrs, &mut out);
            for (&a, &got) in addrs.iter().zip(&out) {
                let want = model.lookup(a);
                prop_assert_eq!(table.lookup(a), want, "{}", Ipv6Addr::from(a));
                prop_assert_eq!(got, want.unwrap_or(MISS), "{}", Ipv6Addr::from(a));
            }
        }
    }
}
