//! IPv4 longest-prefix match with DIR-24-8 (P. Gupta, S. Lin, N. McKeown, "Routing Lookups
//! in Hardware at Memory Access Speeds", IEEE INFOCOM 1998), the structure behind DPDK's
//! `rte_lpm` and `rte_fib`.
//!
//! `tbl24` has one entry per /24: the top 24 bits of an address index it directly. An entry
//! either holds the answer for the whole /24, or names a 256-entry group in `tbl8` that the
//! last 8 bits index. A lookup is one load, or two under a prefix longer than /24, with no
//! dependence on the number of routes. What a lookup costs in practice is the cache miss
//! and, with 4 KiB pages, the TLB miss of that load: [`Ipv4Lpm::lookup_batch`] issues the
//! `tbl24` loads of a block of addresses before it resolves the block before, so the
//! misses of a batch overlap; [`Ipv4Lpm::build_in`] lets the caller place the arrays in
//! memory backed by huge pages, as DPDK does.
//!
//! Encoding (chosen so that zeroed memory is an empty table and the lookup has no special
//! case for "no route"):
//!
//! | `tbl24` entry `e` | meaning |
//! |---|---|
//! | `e & 1 == 1` | a leaf: the value is `e >> 1` |
//! | `e & 1 == 0` | group `e >> 1`: the value (or [`MISS`]) is `tbl8[(e >> 1) * 256 + (addr & 0xff)]` |
//!
//! Group 0 is all [`MISS`], so an empty (zero) `tbl24` entry resolves to a miss through the
//! same path as a real group, and [`Ipv4Lpm::build`] can take `tbl24` from zeroed memory
//! and skip writing empty runs: pages no prefix covers are never touched, so a table of a
//! few routes costs a few pages of memory, not 64 MiB.
//!
//! Build is linear: prefixes up to /24 are painted in one sweep in address order (every
//! `tbl24` entry is written at most once, with its final value), then each /24 holding
//! longer prefixes gets a group initialised from its `tbl24` leaf and painted shortest
//! prefix first.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use super::{LpmError, MAX_VALUE, MISS};

mod update;

pub use update::Ipv4Routes;

/// Entries in `tbl24`: one per /24.
pub const TBL24_ENTRIES: usize = 1 << 24;
/// Entries in one `tbl8` group: one per address of a /24.
pub const GROUP_ENTRIES: usize = 256;
/// The default cap on `tbl8` groups: 2^18 groups, 256 MiB. A group is needed per /24 that
/// holds a prefix longer than /24.
pub const DEFAULT_TBL8_GROUPS_LIMIT: usize = 1 << 18;

/// The block of [`Ipv4Lpm::lookup_batch`]: it loads the `tbl24` entries of one block
/// while it resolves the one before. Measured on a Xeon VM with 100k routes and huge
/// pages: 8 is within a few percent of a plain loop when consecutive addresses sweep the
/// table in order (as `dpdk-test-fib`'s do, which keeps branches predictable) and about
/// 20% faster when they come in random order; 4 overlaps too few misses, 12 and 16 gain
/// nothing more. (A prefetch instruction would let the loads run further ahead without
/// holding up retirement, but it needs `unsafe` on stable Rust.)
const BLOCK: usize = 8;

/// An immutable IPv4 route table (DIR-24-8). Built once with [`Ipv4Lpm::build`], looked up
/// from any number of threads.
pub struct Ipv4Lpm {
    tbl24: Box<[u32; TBL24_ENTRIES]>,
    /// Groups of [`GROUP_ENTRIES`] final answers (value or [`MISS`]); group 0 is all
    /// [`MISS`].
    tbl8: Vec<u32>,
    /// Groups no `tbl24` entry names (freed by [`Ipv4Lpm::update`]), reused first.
    free_groups: Vec<u32>,
    /// The cap on groups in use.
    max_groups: usize,
    routes: usize,
}

impl Ipv4Lpm {
    /// Builds a table from `(prefix, length, value)` routes, in any order, with at most
    /// [`DEFAULT_TBL8_GROUPS_LIMIT`] groups for prefixes longer than /24.
    ///
    /// # Errors
    /// A length above 32, host bits set beyond the length, a value above
    /// [`MAX_VALUE`], a prefix listed twice, or too many /24s holding
    /// longer prefixes ([`LpmError::Tbl8Exhausted`]).
    pub fn build(routes: &[(Ipv4Addr, u8, u32)]) -> Result<Self, LpmError> {
        Self::build_with_tbl8_limit(routes, DEFAULT_TBL8_GROUPS_LIMIT)
    }

    /// [`Ipv4Lpm::build`] with a different cap on the number of 256-entry groups (1 KiB
    /// each) that prefixes longer than /24 may use.
    ///
    /// # Errors
    /// As [`Ipv4Lpm::build`].
    pub fn build_with_tbl8_limit(
        routes: &[(Ipv4Addr, u8, u32)],
        max_groups: usize,
    ) -> Result<Self, LpmError> {
        Self::build_inner(routes, max_groups, |n| vec![0; n].into_boxed_slice(), true)
    }

    /// [`Ipv4Lpm::build_with_tbl8_limit`] with the arrays in memory the caller provides:
    /// `alloc(n)` returns storage for `n` entries, whatever its contents, since every
    /// entry is written. It is called once for `tbl24` ([`TBL24_ENTRIES`]) and once for
    /// `tbl8` (a multiple of [`GROUP_ENTRIES`]). A caller that may use `unsafe` can advise
    /// the kernel to back that memory with huge pages before returning it (for example
    /// `madvise(MADV_HUGEPAGE)` on a fresh allocation): every lookup then finds its page
    /// in the TLB, which on a table of 100k routes is worth about a quarter of the lookup
    /// time (7.4 to 8.0 rather than 9.8 to 11.4 ns per batched lookup in `weir-bench lpm`
    /// runs).
    ///
    /// # Errors
    /// As [`Ipv4Lpm::build`].
    ///
    /// # Panics
    /// If `alloc` returns a different number of entries than it was asked for.
    pub fn build_in(
        routes: &[(Ipv4Addr, u8, u32)],
        max_groups: usize,
        alloc: impl FnMut(usize) -> Box<[u32]>,
    ) -> Result<Self, LpmError> {
        Self::build_inner(routes, max_groups, alloc, false)
    }

    /// The value of the longest prefix covering `addr` (host byte order, as
    /// `u32::from(Ipv4Addr)`), or `None`.
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<u32> {
        let value = self.resolve(addr);
        (value != MISS).then_some(value)
    }

    /// Looks up every address of `addrs` (host byte order) and writes the value of its
    /// longest matching prefix, or [`MISS`], to the same index of `out`. The fast path:
    /// addresses go in blocks of eight, and the `tbl24` entries of the next block are
    /// loaded before the current block is resolved, so that the cache and TLB misses of
    /// neighbouring addresses overlap instead of queueing behind each other.
    ///
    /// # Panics
    /// If `addrs` and `out` differ in length.
    // Kept out of line: it is called once per batch, and inlined into a caller's loop it
    // measured 7% slower (the caller's state crowds out the block's registers).
    #[inline(never)]
    pub fn lookup_batch(&self, addrs: &[u32], out: &mut [u32]) {
        assert_eq!(
            addrs.len(),
            out.len(),
            "lookup_batch: addrs and out differ in length"
        );
        let mut a_blocks = addrs.chunks_exact(BLOCK);
        let mut o_blocks = out.chunks_exact_mut(BLOCK);
        if let (Some(mut a), Some(mut o)) = (a_blocks.next(), o_blocks.next()) {
            let mut e = self.block_entries(a);
            for (next_a, next_o) in (&mut a_blocks).zip(&mut o_blocks) {
                let next_e = self.block_entries(next_a);
                self.follow_block(&e, a, o);
                (a, o, e) = (next_a, next_o, next_e);
            }
            self.follow_block(&e, a, o);
        }
        for (o, &a) in o_blocks
            .into_remainder()
            .iter_mut()
            .zip(a_blocks.remainder())
        {
            *o = self.resolve(a);
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

    /// Number of 256-entry groups used by prefixes longer than /24.
    pub fn tbl8_groups(&self) -> usize {
        self.tbl8.len() / GROUP_ENTRIES - 1 - self.free_groups.len()
    }

    /// Bytes of memory the table holds (`tbl24` is 64 MiB of address space; when it came
    /// from [`Ipv4Lpm::build`], the pages no prefix covers stay unmapped).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val(&*self.tbl24)
            + std::mem::size_of_val(&*self.tbl8)
    }

    fn build_inner(
        routes: &[(Ipv4Addr, u8, u32)],
        max_groups: usize,
        alloc: impl FnMut(usize) -> Box<[u32]>,
        zeroed: bool,
    ) -> Result<Self, LpmError> {
        Self::build_checked(checked_sorted(routes)?, max_groups, alloc, zeroed)
    }

    /// Builds from validated routes sorted by (prefix, length), without duplicates.
    fn build_checked(
        checked: Vec<Route>,
        max_groups: usize,
        mut alloc: impl FnMut(usize) -> Box<[u32]>,
        zeroed: bool,
    ) -> Result<Self, LpmError> {
        let max_groups = max_groups.min(MAX_VALUE as usize);
        let (short, mut long): (Vec<Route>, Vec<Route>) =
            checked.into_iter().partition(|r| r.len <= 24);
        long.sort_by_key(|r| (r.addr >> 8, r.len));
        let groups = long.chunk_by(|a, b| a.addr >> 8 == b.addr >> 8).count();
        if groups > max_groups {
            return Err(LpmError::Tbl8Exhausted { max: max_groups });
        }

        let tbl24 = alloc(TBL24_ENTRIES);
        let tbl8 = alloc((groups + 1) * GROUP_ENTRIES);
        assert_eq!(
            tbl24.len(),
            TBL24_ENTRIES,
            "build_in: alloc returned a wrong tbl24 size"
        );
        assert_eq!(
            tbl8.len(),
            (groups + 1) * GROUP_ENTRIES,
            "build_in: wrong tbl8 size"
        );
        let mut table = Ipv4Lpm {
            tbl24: tbl24.try_into().expect("length checked"),
            tbl8: tbl8.into_vec(),
            free_groups: Vec::new(),
            max_groups,
            routes: short.len() + long.len(),
        };
        table.paint_short(&short, zeroed);
        table.paint_long(&long);
        Ok(table)
    }

    /// The `tbl24` entries of a block of addresses, loaded back to back.
    #[inline(always)]
    fn block_entries(&self, addrs: &[u32]) -> [u32; BLOCK] {
        std::array::from_fn(|j| self.tbl24[(addrs[j] >> 8) as usize])
    }

    /// Resolves a block of addresses from their `tbl24` entries.
    #[inline(always)]
    fn follow_block(&self, entries: &[u32; BLOCK], addrs: &[u32], out: &mut [u32]) {
        for ((o, &e), &a) in out.iter_mut().zip(entries).zip(addrs) {
            *o = self.follow(e, a);
        }
    }

    #[inline(always)]
    fn resolve(&self, addr: u32) -> u32 {
        self.follow(self.tbl24[(addr >> 8) as usize], addr)
    }

    /// The answer for `addr` given its `tbl24` entry `e`.
    #[inline(always)]
    fn follow(&self, e: u32, addr: u32) -> u32 {
        if e & 1 != 0 {
            e >> 1
        } else {
            // `e` is even: (e >> 1) * GROUP_ENTRIES == e << 7.
            self.tbl8[((e as usize) << 7) | (addr & 0xff) as usize]
        }
    }

    /// Paints prefixes of length <= 24, sorted by (address, length), in one pass over
    /// `tbl24`. Prefixes nest or are disjoint, so a stack of the enclosing prefixes gives
    /// the entry for every index. Over `zeroed` memory, empty runs are skipped so their
    /// pages stay untouched.
    fn paint_short(&mut self, short: &[Route], zeroed: bool) {
        let mut painter = Painter {
            tbl24: &mut self.tbl24,
            stack: vec![],
            cursor: 0,
            zeroed,
        };
        for r in short {
            let start = (r.addr >> 8) as usize;
            painter.fill_until(start);
            painter
                .stack
                .push((start + (1usize << (24 - r.len)), leaf(r.value)));
        }
        painter.fill_until(TBL24_ENTRIES);
    }

    /// Gives every /24 that holds prefixes longer than /24 a group, initialised from the
    /// /24's leaf and painted shortest prefix first. `long` is sorted by (/24, length).
    fn paint_long(&mut self, long: &[Route]) {
        self.tbl8[..GROUP_ENTRIES].fill(MISS);
        for (run, group) in long.chunk_by(|a, b| a.addr >> 8 == b.addr >> 8).zip(1u32..) {
            let slot = (run[0].addr >> 8) as usize;
            let covering = self.tbl24[slot];
            let base = group as usize * GROUP_ENTRIES;
            let fill = if covering & 1 != 0 {
                covering >> 1
            } else {
                MISS
            };
            self.tbl8[base..base + GROUP_ENTRIES].fill(fill);
            for r in run {
                let start = base + (r.addr & 0xff) as usize;
                self.tbl8[start..start + (1usize << (32 - r.len))].fill(r.value);
            }
            // At most MAX_VALUE groups (checked at build), so the shift cannot overflow.
            self.tbl24[slot] = group << 1;
        }
    }
}

impl fmt::Debug for Ipv4Lpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipv4Lpm")
            .field("routes", &self.routes)
            .field("tbl8_groups", &self.tbl8_groups())
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

/// The sweep of [`Ipv4Lpm::paint_short`]: `tbl24[..cursor]` is final; `stack` holds the
/// (end, entry) of the prefixes enclosing `cursor`, innermost last.
struct Painter<'a> {
    tbl24: &'a mut [u32; TBL24_ENTRIES],
    stack: Vec<(usize, u32)>,
    cursor: usize,
    zeroed: bool,
}

impl Painter<'_> {
    /// Fills `tbl24[cursor..to]` from the innermost enclosing prefix, or empty.
    fn fill_until(&mut self, to: usize) {
        while self.cursor < to {
            while self
                .stack
                .last()
                .is_some_and(|&(end, _)| end <= self.cursor)
            {
                self.stack.pop();
            }
            let (limit, entry) = match self.stack.last() {
                Some(&(end, entry)) => (end.min(to), entry),
                None => (to, 0),
            };
            if entry != 0 || !self.zeroed {
                self.tbl24[self.cursor..limit].fill(entry);
            }
            self.cursor = limit;
        }
    }
}

/// Validates `routes` and sorts them by (prefix, length); a prefix listed twice is an
/// error naming both values (the first given first).
fn checked_sorted(routes: &[(Ipv4Addr, u8, u32)]) -> Result<Vec<Route>, LpmError> {
    let mut checked = Vec::with_capacity(routes.len());
    for &(prefix, len, value) in routes {
        checked.push(check_route(prefix, len, value)?);
    }
    // Stable: among duplicates, the first given comes first in the error.
    checked.sort_by_key(|r| (r.addr, r.len));
    if let Some(w) = checked
        .windows(2)
        .find(|w| (w[0].addr, w[0].len) == (w[1].addr, w[1].len))
    {
        return Err(LpmError::DuplicatePrefix {
            prefix: IpAddr::V4(Ipv4Addr::from(w[0].addr)),
            len: w[0].len,
            first: w[0].value,
            second: w[1].value,
        });
    }
    Ok(checked)
}

/// A validated route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    addr: u32,
    len: u8,
    value: u32,
}

fn leaf(value: u32) -> u32 {
    (value << 1) | 1
}

fn check_route(prefix: Ipv4Addr, len: u8, value: u32) -> Result<Route, LpmError> {
    if len > 32 {
        return Err(LpmError::PrefixTooLong {
            prefix: IpAddr::V4(prefix),
            len,
            max: 32,
        });
    }
    let addr = u32::from(prefix);
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    if addr & !mask != 0 {
        return Err(LpmError::HostBitsSet {
            prefix: IpAddr::V4(prefix),
            len,
            masked: IpAddr::V4(Ipv4Addr::from(addr & mask)),
        });
    }
    if value > MAX_VALUE {
        return Err(LpmError::ValueTooLarge {
            prefix: IpAddr::V4(prefix),
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
    use crate::route::naive::NaiveTrie4;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn at(t: &Ipv4Lpm, s: &str) -> Option<u32> {
        t.lookup(u32::from(ip(s)))
    }

    #[test]
    fn empty_table_misses_everything() {
        let t = Ipv4Lpm::build(&[]).unwrap();
        assert!(t.is_empty());
        assert_eq!(at(&t, "0.0.0.0"), None);
        assert_eq!(at(&t, "255.255.255.255"), None);
        let mut out = [0; 3];
        t.lookup_batch(&[0, 1, u32::MAX], &mut out);
        assert_eq!(out, [MISS; 3]);
    }

    #[test]
    fn default_route_covers_every_address() {
        let t = Ipv4Lpm::build(&[(ip("0.0.0.0"), 0, 7)]).unwrap();
        assert_eq!(t.len(), 1);
        for a in ["0.0.0.0", "10.1.2.3", "255.255.255.255"] {
            assert_eq!(at(&t, a), Some(7), "{a}");
        }
    }

    #[test]
    fn host_route_sits_in_a_group_and_the_rest_of_its_24_falls_back() {
        let t = Ipv4Lpm::build(&[(ip("10.0.0.0"), 8, 1), (ip("10.1.2.3"), 32, 2)]).unwrap();
        assert_eq!(t.tbl8_groups(), 1);
        assert_eq!(at(&t, "10.1.2.3"), Some(2));
        assert_eq!(at(&t, "10.1.2.2"), Some(1));
        assert_eq!(at(&t, "10.1.2.4"), Some(1));
        assert_eq!(at(&t, "11.1.2.3"), None);

        let alone = Ipv4Lpm::build(&[(ip("192.0.2.9"), 32, 5)]).unwrap();
        assert_eq!(at(&alone, "192.0.2.9"), Some(5));
        assert_eq!(at(&alone, "192.0.2.8"), None);
        assert_eq!(at(&alone, "192.0.2.10"), None);
    }

    #[test]
    fn lengths_25_to_31_paint_their_part_of_the_group() {
        let mut routes = vec![];
        // 198.51.100.0/25, .128/26, .192/27, .224/28, .240/29, .248/30, .252/31
        let mut start = 0u32;
        for (i, len) in (25u8..=31).enumerate() {
            routes.push((Ipv4Addr::from(0xc633_6400 | start), len, i as u32));
            start += 1 << (32 - len);
        }
        let t = Ipv4Lpm::build(&routes).unwrap();
        assert_eq!(t.tbl8_groups(), 1);
        let mut start = 0u32;
        for (i, len) in (25u8..=31).enumerate() {
            let size = 1u32 << (32 - len);
            for host in [start, start + size - 1] {
                assert_eq!(
                    t.lookup(0xc633_6400 | host),
                    Some(i as u32),
                    "/{len} host {host}"
                );
            }
            start += size;
        }
        assert_eq!(t.lookup(0xc633_64fe), None);
        assert_eq!(t.lookup(0xc633_64ff), None);
    }

    #[test]
    fn overlapping_prefixes_resolve_to_the_longest() {
        let t = Ipv4Lpm::build(&[
            (ip("10.1.2.128"), 25, 5),
            (ip("0.0.0.0"), 0, 0),
            (ip("10.0.0.0"), 8, 1),
            (ip("10.1.0.0"), 16, 2),
            (ip("10.1.2.0"), 24, 3),
            (ip("10.1.2.200"), 32, 6),
            (ip("10.1.3.0"), 24, 4),
        ])
        .unwrap();
        assert_eq!(at(&t, "9.255.255.255"), Some(0));
        assert_eq!(at(&t, "10.0.255.255"), Some(1));
        assert_eq!(at(&t, "10.1.0.0"), Some(2));
        assert_eq!(at(&t, "10.1.2.127"), Some(3));
        assert_eq!(at(&t, "10.1.2.128"), Some(5));
        assert_eq!(at(&t, "10.1.2.200"), Some(6));
        assert_eq!(at(&t, "10.1.2.201"), Some(5));
        assert_eq!(at(&t, "10.1.3.77"), Some(4));
        assert_eq!(at(&t, "10.1.4.0"), Some(2));
        assert_eq!(at(&t, "10.2.0.0"), Some(1));
        assert_eq!(at(&t, "11.0.0.0"), Some(0));
    }

    #[test]
    fn largest_value_round_trips() {
        let t = Ipv4Lpm::build(&[
            (ip("10.0.0.0"), 8, MAX_VALUE),
            (ip("10.0.0.1"), 32, MAX_VALUE),
        ])
        .unwrap();
        assert_eq!(at(&t, "10.0.0.1"), Some(MAX_VALUE));
        assert_eq!(at(&t, "10.9.0.1"), Some(MAX_VALUE));
    }

    #[test]
    fn errors_name_the_prefix_and_the_fix() {
        let e = Ipv4Lpm::build(&[(ip("198.18.1.1"), 16, 1)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "198.18.1.1/16 has host bits set; did you mean 198.18.0.0/16?"
        );
        let e = Ipv4Lpm::build(&[(ip("10.0.0.0"), 33, 1)]).unwrap_err();
        assert_eq!(
            e,
            LpmError::PrefixTooLong {
                prefix: ip("10.0.0.0").into(),
                len: 33,
                max: 32
            }
        );
        assert!(
            e.to_string().starts_with("10.0.0.0/33: prefix length 33"),
            "{e}"
        );
        let e = Ipv4Lpm::build(&[(ip("10.0.0.0"), 8, 1 << 31)]).unwrap_err();
        assert!(
            matches!(
                e,
                LpmError::ValueTooLarge {
                    value: 0x8000_0000,
                    ..
                }
            ),
            "{e}"
        );
        let e = Ipv4Lpm::build(&[
            (ip("10.0.0.0"), 8, 1),
            (ip("10.0.0.0"), 16, 2),
            (ip("10.0.0.0"), 8, 3),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "10.0.0.0/8 is listed twice (values 1 and 3); each prefix may appear once"
        );
        let routes = [(ip("10.0.0.1"), 32, 1), (ip("10.0.1.1"), 32, 2)];
        let e = Ipv4Lpm::build_with_tbl8_limit(&routes, 1).unwrap_err();
        assert_eq!(e, LpmError::Tbl8Exhausted { max: 1 });
        assert!(Ipv4Lpm::build_with_tbl8_limit(&routes, 2).is_ok());
    }

    #[test]
    fn build_in_overwrites_whatever_memory_it_is_given() {
        let routes = [
            (ip("0.0.0.0"), 1, 1),
            (ip("10.0.0.0"), 8, 2),
            (ip("10.1.2.0"), 25, 3),
            (ip("192.0.2.7"), 32, 4),
        ];
        let clean = Ipv4Lpm::build(&routes).unwrap();
        let mut sizes = vec![];
        let dirty = Ipv4Lpm::build_in(&routes, 8, |n| {
            sizes.push(n);
            vec![0xdead_beef; n].into_boxed_slice()
        })
        .unwrap();
        assert_eq!(sizes, [TBL24_ENTRIES, 3 * GROUP_ENTRIES]);
        let mut x = 1u32;
        let addrs: Vec<u32> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            })
            .chain(routes.iter().map(|r| u32::from(r.0) | 1))
            .chain([u32::MAX, 0x0a01_02ff, 0xc000_0206])
            .collect();
        for a in addrs {
            assert_eq!(dirty.lookup(a), clean.lookup(a), "{}", Ipv4Addr::from(a));
        }
    }

    #[test]
    #[should_panic(expected = "wrong tbl24 size")]
    fn build_in_rejects_short_storage() {
        let _ = Ipv4Lpm::build_in(&[], 1, |n| vec![0; n / 2].into_boxed_slice());
    }

    #[test]
    fn lookup_batch_agrees_with_lookup_for_every_length() {
        let t = Ipv4Lpm::build(&[(ip("10.0.0.0"), 8, 1), (ip("10.0.0.128"), 25, 2)]).unwrap();
        let addrs: Vec<u32> = (0..40u32).map(|i| 0x0a00_0000 | (i * 7)).collect();
        for n in 0..addrs.len() {
            let mut out = vec![0; n];
            t.lookup_batch(&addrs[..n], &mut out);
            let want: Vec<u32> = addrs[..n].iter().map(|&a| t.lookup(a).unwrap()).collect();
            assert_eq!(out, want, "batch of {n}");
        }
    }

    #[test]
    #[should_panic(expected = "differ in length")]
    fn lookup_batch_panics_on_length_mismatch() {
        let t = Ipv4Lpm::build(&[]).unwrap();
        t.lookup_batch(&[1, 2], &mut [0]);
    }

    #[test]
    fn debug_is_a_summary() {
        let t = Ipv4Lpm::build(&[(ip("10.0.0.1"), 32, 1)]).unwrap();
        let s = format!("{t:?}");
        assert!(s.starts_with("Ipv4Lpm { routes: 1, tbl8_groups: 1"), "{s}");
        assert!(s.len() < 200);
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Ipv4Lpm>();
    }

    /// Route sets with the lengths that exercise the structure's edges over-represented,
    /// host bits cleared and duplicates dropped.
    fn routes() -> impl Strategy<Value = Vec<(Ipv4Addr, u8, u32)>> {
        let len = prop_oneof![
            Just(0u8),
            Just(1),
            Just(8),
            Just(24),
            Just(25),
            Just(32),
            0u8..=32,
            20u8..=32,
        ];
        // Mostly a few /24s under a few /8s, so that prefixes nest and share groups.
        let clustered = (0u32..3, 0u32..3, 0u32..3, any::<u8>())
            .prop_map(|(a, b, c, d)| (a << 24) | (b << 16) | (c << 8) | u32::from(d));
        let addr = prop_oneof![3 => clustered, 1 => any::<u32>()];
        prop::collection::vec((addr, len, 0..=MAX_VALUE), 0..64).prop_map(|v| {
            let mut seen = std::collections::HashSet::new();
            v.into_iter()
                .map(|(a, len, value)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    (Ipv4Addr::from(a & mask), len, value)
                })
                .filter(|&(a, len, _)| seen.insert((a, len)))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matches_the_naive_trie(
            routes in routes(),
            random in prop::collection::vec(any::<u32>(), 64),
            hosts in prop::collection::vec(any::<u32>(), 64),
        ) {
            let table = Ipv4Lpm::build(&routes).unwrap();
            let mut model = NaiveTrie4::new();
            for &(p, len, v) in &routes {
                model.insert(p, len, v);
            }
            prop_assert_eq!(table.len(), model.len());
            // Random addresses, then for each route its first and last address and one
            // inside it.
            let mut addrs = random;
            for (i, &(p, len, _)) in routes.iter().enumerate() {
                let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                let p = u32::from(p);
                addrs.extend([p, p | host, p | (hosts[i % hosts.len()] & host)]);
                addrs.extend([p.wrapping_sub(1), (p | host).wrapping_add(1)]);
            }
            let mut out = vec![0; addrs.len()];
            table.lookup_batch(&addrs, &mut out);
            for (&a, &got) in addrs.iter().zip(&out) {
                let want = model.lookup(a);
                prop_assert_eq!(table.lookup(a), want, "{}", Ipv4Addr::from(a));
                prop_assert_eq!(got, want.unwrap_or(MISS), "{}", Ipv4Addr::from(a));
            }
        }
    }
}
