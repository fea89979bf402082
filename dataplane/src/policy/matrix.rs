//! The decision matrix of a program: every verdict it can reach, computed when it is
//! compiled, in tables a packet indexes with its fields.
//!
//! A packet's decision depends on its source and destination addresses (through the address
//! sets and named ports the rules name), its protocol, and its ports or ICMP type and code.
//! Each of these is cut into the parts the program's rules cannot tell apart:
//!
//! - **rows**, per address side: the distinct projections of an address onto the sets that
//!   side's rules name (which of them hold it, its family, which of the named ports it
//!   declares). The address classes of the snapshot (`classes`) map onto rows through an
//!   open-addressed table per side, bound when the snapshot is built and shared by every
//!   program whose side names the same sets. Classes missing from the table take their
//!   family's default row: the projection onto the sets holding most of that family's
//!   classes, so the table lists whichever of a set's members or non-members is fewer.
//!
//! Every program's matrix is laid out in one arena of words per snapshot (`Matrix::emit`,
//! read by `classify_at`): a header of sizes and offsets, the protocol map, the port parts
//! and the three tables, so a lookup follows offsets instead of pointers.
//! - **port columns**: the protocols the rules tell apart, and the elementary intervals of
//!   source port, destination port and ICMP type/code that their conditions cut.
//!
//! Then, as in Recursive Flow Classification (P. Gupta, N. McKeown, SIGCOMM 1999), the
//! parts are combined in two cross-product tables whose entries are equivalence classes
//! (rows with the same set of rules matching are one class; so are columns), and a last
//! table holds, per (address class, port class), the index of the [`Decision`]: the
//! verdict, deciding rule and `Log` rules that today's in-order evaluation gives on a
//! representative packet of that cell. Tiers, order, `Pass` and `Log` therefore cost
//! nothing per packet: a lookup is two row probes, three small binary searches at most, and
//! four table loads, whatever the number of rules.
//!
//! Exactness: every condition but a named port is a function of one part, so equal parts
//! mean equal matches. A named port is a condition on (address, protocol, port) together:
//! rows keep an address's declarations apart, port intervals are cut at every declared
//! port, and a program with a named port never merges columns, so the representative
//! packet's full test is the same for every packet of its cell.
//!
//! A program whose tables would exceed [`MAX_CELLS`] entries has no matrix; it is decided
//! through the bit-vector index instead (`index`).
//!
//! Written here because no maintained crate builds classifiers of this kind (ordered tiers
//! with Pass and Log, exact address sets with exceptions, named ports).

use rustc_hash::FxHashMap;

use crate::flow::FlowKey;
use crate::policy::classes::{sweep, AddrClasses, Family, NamedTag};
use crate::policy::program::{
    Action, Decision, IcmpMatch, NetSetId, PortMatch, PortSetId, Rule, Sets, Tier, TierEnd,
    Verdict, MAX_LOGGED,
};

/// The most entries any one table of a matrix may have.
pub const MAX_CELLS: usize = 1 << 20;

/// The most classes one row map lists (a side whose sets cut the classes finer is left to
/// the program's index: its map would cost more than the index saves).
const MAX_MAP_ENTRIES: usize = 1 << 14;

/// The most words the matrices of one snapshot may take (64 MiB): programs that come
/// after the arena is full are decided by their index, so a snapshot's memory stays
/// bounded whatever the cluster.
pub(crate) const ARENA_BUDGET: usize = 16 << 20;

/// What an address side of a program tells apart: the sets it names (ascending) and the
/// rows their projections make.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Side {
    nets: Vec<NetSetId>,
    named: Vec<PortSetId>,
    rows: FxHashMap<Proj, u16>,
    /// One address of each row, in key form.
    reps: Vec<[u8; 16]>,
    /// Whether an address with the empty projection of IPv4, IPv6 was seen (until then
    /// the empty rows' representatives are placeholders).
    seen: [bool; 2],
}

/// An address projected onto one side's sets: local indices into `Side::nets` and
/// `Side::named`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Proj {
    v6: bool,
    nets: Box<[u32]>,
    named: Box<[NamedTag]>,
}

impl Side {
    fn build(nets: Vec<NetSetId>, named: Vec<PortSetId>, sets: &Sets) -> Option<Side> {
        let mut side = Side {
            nets,
            named,
            rows: FxHashMap::default(),
            reps: Vec::new(),
            seen: [false; 2],
        };
        for v6 in [false, true] {
            let rep = if v6 { 0u128.key() } else { 0u32.key() };
            side.row(
                Proj {
                    v6,
                    ..Proj::default()
                },
                rep,
            );
        }
        side.seen = [false; 2];
        if side.nets.is_empty() && side.named.is_empty() {
            return Some(side);
        }
        // Per declaring address, its declarations of this side's named sets.
        let mut declared: FxHashMap<[u8; 16], Vec<NamedTag>> = FxHashMap::default();
        for (local, &id) in side.named.iter().enumerate() {
            for &(addr, proto, port) in sets.named_ports.get(id as usize).into_iter().flatten() {
                declared
                    .entry(addr)
                    .or_default()
                    .push((local as u32, proto, port));
            }
        }
        declared.values_mut().for_each(|v| {
            v.sort_unstable();
            v.dedup();
        });
        let empty = crate::policy::NetSet::new();
        let net = |id: NetSetId| sets.nets.get(id as usize).unwrap_or(&empty);
        let v4: Vec<(u32, &[(u32, u32)])> = (0..side.nets.len())
            .map(|i| (i as u32, net(side.nets[i]).v4_intervals()))
            .collect();
        let v6: Vec<(u32, &[(u128, u128)])> = (0..side.nets.len())
            .map(|i| (i as u32, net(side.nets[i]).v6_intervals()))
            .collect();
        let mut p4 = Vec::new();
        let mut p6 = Vec::new();
        for addr in declared.keys() {
            if addr[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
                p4.push(u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]));
            } else {
                p6.push(u128::from_be_bytes(*addr));
            }
        }
        let mut full = false;
        side.sweep_family(&v4, &p4, &declared, &mut full);
        side.sweep_family(&v6, &p6, &declared, &mut full);
        (!full).then_some(side)
    }

    fn sweep_family<T: Family>(
        &mut self,
        sets: &[(u32, &[(T, T)])],
        points: &[T],
        declared: &FxHashMap<[u8; 16], Vec<NamedTag>>,
        full: &mut bool,
    ) {
        sweep(sets, points, |lo, hi, active| {
            let named = (lo == hi)
                .then(|| declared.get(&lo.key()))
                .flatten()
                .map_or_else(Box::default, |v| v.clone().into_boxed_slice());
            let proj = Proj {
                v6: T::V6,
                nets: active.into(),
                named,
            };
            if self.row(proj, lo.key()).is_none() {
                *full = true;
            }
        });
    }

    /// The row of `proj`, made if new with `rep` as its representative (the empty rows,
    /// made first, take the first address seen with their projection).
    fn row(&mut self, proj: Proj, rep: [u8; 16]) -> Option<u16> {
        if let Some(&r) = self.rows.get(&proj) {
            if let Some(seen) = self.seen.get_mut(usize::from(r)) {
                if !*seen {
                    *seen = true;
                    self.reps[usize::from(r)] = rep;
                }
            }
            return Some(r);
        }
        let r = u16::try_from(self.reps.len())
            .ok()
            .filter(|&r| r < u16::MAX)?;
        self.reps.push(rep);
        self.rows.insert(proj, r);
        Some(r)
    }

    /// The row map of this side for `classes`: the rows of the classes whose row is not
    /// their family's default, and the default row of IPv4 and IPv6.
    ///
    /// A family's default projection holds the side's sets that contain more than half of
    /// that family's classes and none of the others, so the map lists, per set, whichever
    /// of its members or its non-members is fewer: a rule naming every pod of the cluster
    /// costs as little as one naming a single pod.
    fn bind(&self, classes: &AddrClasses) -> (Vec<(u32, u32)>, [u32; 2]) {
        if self.nets.is_empty() && self.named.is_empty() {
            return (Vec::new(), [0, 1]);
        }
        let mut candidates: Vec<u32> = Vec::new();
        let mut large: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        for (local, &n) in self.nets.iter().enumerate() {
            let members = classes.in_net(n);
            for (f, large) in large.iter_mut().enumerate() {
                let family = classes.family(f == 1);
                let inside = members
                    .iter()
                    .filter(|&&c| classes.key(c).is_some_and(|k| k.v6 == (f == 1)));
                let count = inside.clone().count();
                if count * 2 > family.len() {
                    large.push(local as u32);
                    // `members` and `family` are ascending: a merge gives the others.
                    let mut m = inside.copied().peekable();
                    for &c in family {
                        while m.peek().is_some_and(|&x| x < c) {
                            m.next();
                        }
                        if m.peek() != Some(&c) {
                            candidates.push(c);
                        }
                    }
                } else {
                    candidates.extend(inside);
                }
            }
        }
        for &n in &self.named {
            candidates.extend_from_slice(classes.in_named(n));
        }
        candidates.sort_unstable();
        candidates.dedup();
        let defaults: [Proj; 2] = [0, 1].map(|f| Proj {
            v6: f == 1,
            nets: large[f].clone().into(),
            named: Box::default(),
        });
        let default_rows = [0, 1].map(|f| {
            self.rows
                .get(&defaults[f])
                .map_or(f as u32, |&r| u32::from(r))
        });
        let mut entries = Vec::new();
        for class in candidates {
            let Some(key) = classes.key(class) else {
                continue;
            };
            let nets: Vec<u32> = key
                .nets
                .iter()
                .filter_map(|n| self.nets.binary_search(n).ok().map(|i| i as u32))
                .collect();
            let named: Vec<NamedTag> = key
                .named
                .iter()
                .filter_map(|&(s, proto, port)| {
                    self.named
                        .binary_search(&s)
                        .ok()
                        .map(|i| (i as u32, proto, port))
                })
                .collect();
            let proj = Proj {
                v6: key.v6,
                nets: nets.into(),
                named: named.into(),
            };
            if proj == defaults[usize::from(key.v6)] {
                continue;
            }
            // Every projection a class has is one some address has, so the sweep made it.
            if let Some(&row) = self.rows.get(&proj) {
                entries.push((class, u32::from(row)));
            }
        }
        (entries, default_rows)
    }
}

/// Where a matrix's parts sit in the arena (`Flat`), in words after its offset.
const H_DST_ROWS: usize = 0;
const H_S_DIM: usize = 1;
const H_D_DIM: usize = 2;
const H_SPORT_CLASSES: usize = 3;
const H_DPORT_CLASSES: usize = 4;
const H_PORT_CLASSES: usize = 5;
/// Row maps: slot count (a power of two, 0 for none), where the slots start (from the
/// start of the arena: sides naming the same sets share one map), and the default rows
/// (IPv4 row | IPv6 row << 16).
const H_SRC_SLOTS: usize = 6;
const H_SRC_MAP: usize = 7;
const H_SRC_DEFAULT: usize = 8;
const H_DST_SLOTS: usize = 9;
const H_DST_MAP: usize = 10;
const H_DST_DEFAULT: usize = 11;
/// Port-like fields: where the parts start, then how many there are.
const H_SPORT: usize = 12;
const H_SPORT_N: usize = 13;
const H_DPORT: usize = 14;
const H_DPORT_N: usize = 15;
const H_ICMP: usize = 16;
const H_ICMP_N: usize = 17;
const H_ADDR: usize = 18;
const H_PORTS: usize = 19;
const H_CELLS: usize = 20;
/// 64 words: the protocol classes, four bytes a word.
const H_PROTO: usize = 21;
const HEADER: usize = H_PROTO + 64;

/// The row maps already in an arena, by the sets their side names.
#[derive(Default)]
pub(crate) struct RowMaps(FxHashMap<(Vec<NetSetId>, Vec<PortSetId>), [u32; 3]>);

/// Slots of a row map holding `entries` entries: at most half full, none when empty.
fn slots_for(entries: usize) -> usize {
    if entries == 0 {
        0
    } else {
        (entries * 2).next_power_of_two().max(4)
    }
}

#[inline(always)]
fn slot_of(class: u32, slots: usize) -> usize {
    (class.wrapping_mul(0x9E37_79B9) as usize >> 8) & (slots - 1)
}

/// The row of address class `class` in the row map at `map` with `slots` slots (two words
/// each: class + 1, row; 0 is empty); classes not in the map take their family's default
/// row from `defaults`.
#[inline(always)]
fn row_of(w: &[u32], map: usize, slots: usize, defaults: u32, class: u32, v6: bool) -> usize {
    let default = (if v6 {
        defaults >> 16
    } else {
        defaults & 0xffff
    }) as usize;
    if slots == 0 {
        return default;
    }
    let want = class.wrapping_add(1);
    let mut i = slot_of(class, slots);
    loop {
        let k = w[map + 2 * i];
        if k == want {
            return w[map + 2 * i + 1] as usize;
        }
        if k == 0 {
            return default;
        }
        i = (i + 1) & (slots - 1);
    }
}

/// The part of `x` in the parts at `at` (`start << 16 | class` each, ascending).
#[inline(always)]
fn part_of(w: &[u32], at: usize, n: usize, x: u16) -> usize {
    if n <= 1 {
        return 0;
    }
    let probe = u32::from(x) << 16 | 0xffff;
    let i = w[at..at + n].partition_point(|&p| p <= probe);
    (w[at + i.saturating_sub(1)] & 0xffff) as usize
}

/// Decides `key`, whose addresses are of classes `src` and `dst`, through the matrix laid
/// out at `off` of `w` by [`Matrix::emit`]; returns the decision's number.
#[inline(always)]
pub(crate) fn classify_at(w: &[u32], off: usize, src: u32, dst: u32, key: &FlowKey) -> u32 {
    let addr = addr_cell_at(w, off, src, dst, key);
    let ports = port_class_at(w, off, key);
    w[cell_at(w, off, w[addr], ports)]
}

/// Where in `w` the address class of a (`src`, `dst`) class pair is, in the matrix at `off`.
#[inline(always)]
fn addr_cell_at(w: &[u32], off: usize, src: u32, dst: u32, key: &FlowKey) -> usize {
    let h = &w[off..off + HEADER];
    let v6 = !key.is_v4();
    let s_row = row_of(
        w,
        h[H_SRC_MAP] as usize,
        h[H_SRC_SLOTS] as usize,
        h[H_SRC_DEFAULT],
        src,
        v6,
    );
    let d_row = row_of(
        w,
        h[H_DST_MAP] as usize,
        h[H_DST_SLOTS] as usize,
        h[H_DST_DEFAULT],
        dst,
        v6,
    );
    off + h[H_ADDR] as usize + s_row * h[H_DST_ROWS] as usize + d_row
}

/// The port class of `key` (protocol, ports or ICMP type/code) in the matrix at `off`.
#[inline(always)]
fn port_class_at(w: &[u32], off: usize, key: &FlowKey) -> u32 {
    let h = &w[off..off + HEADER];
    let at = |i: usize| off + h[i] as usize;
    let p = usize::from(key.proto);
    let pc = (h[H_PROTO + p / 4] >> (8 * (p % 4)) & 0xff) as usize;
    let (s, d) = if ported(key.proto) {
        (
            part_of(w, at(H_SPORT), h[H_SPORT_N] as usize, key.src_port),
            part_of(w, at(H_DPORT), h[H_DPORT_N] as usize, key.dst_port),
        )
    } else if is_icmp(key.proto) {
        (
            h[H_SPORT_CLASSES] as usize
                + part_of(w, at(H_ICMP), h[H_ICMP_N] as usize, key.src_port),
            h[H_DPORT_CLASSES] as usize,
        )
    } else {
        (h[H_S_DIM] as usize - 1, h[H_DPORT_CLASSES] as usize)
    };
    let (s_dim, d_dim) = (h[H_S_DIM] as usize, h[H_D_DIM] as usize);
    w[at(H_PORTS) + (pc * s_dim + s) * d_dim + d]
}

/// Where in `w` the cell of address class `addr` and port class `ports` is.
#[inline(always)]
fn cell_at(w: &[u32], off: usize, addr: u32, ports: u32) -> usize {
    let h = &w[off..off + HEADER];
    off + h[H_CELLS] as usize + addr as usize * h[H_PORT_CLASSES] as usize + ports as usize
}

/// A value read from the first line of the matrix at `off` (see `Program::warm`).
#[inline(always)]
pub(crate) fn warm_at(w: &[u32], off: usize) -> u32 {
    w[off]
}

/// A partition of a port-like field: `starts[0]` is 0; part `i` is class `class[i]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ranges {
    starts: Box<[u16]>,
    class: Box<[u16]>,
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    src: Side,
    dst: Side,
    dst_rows: usize,
    /// `[src row * dst_rows + dst row]` → address class.
    addr: Box<[u16]>,
    /// Protocol → protocol class.
    proto: Box<[u8; 256]>,
    sport: Ranges,
    dport: Ranges,
    icmp: Ranges,
    /// Source-side columns: source port classes, then ICMP classes, then "none".
    s_dim: usize,
    /// Destination-side columns: destination port classes, then "none".
    d_dim: usize,
    sport_classes: usize,
    dport_classes: usize,
    /// `[(protocol class * s_dim + s) * d_dim + d]` → port class.
    ports: Box<[u16]>,
    port_classes: usize,
    /// `[address class * port_classes + port class]` → index into `decisions`.
    cells: Box<[u16]>,
    decisions: Box<[Decision]>,
}

/// Bitmaps of rules, interned.
struct Bitmaps {
    words: usize,
    ids: FxHashMap<(Vec<u64>, u64), u16>,
    bits: Vec<u64>,
    /// A representative (first seen) of each class, as the caller describes it.
    reps: Vec<u64>,
}

impl Bitmaps {
    fn new(words: usize) -> Bitmaps {
        Bitmaps {
            words,
            ids: FxHashMap::default(),
            bits: Vec::new(),
            reps: Vec::new(),
        }
    }

    /// The class of `bits` (told apart further by `apart`, when not `u64::MAX`), with
    /// `rep` as its representative if new; `None` past `u16` classes.
    fn intern(&mut self, bits: &[u64], apart: u64, rep: u64) -> Option<u16> {
        let key = (bits.to_vec(), apart);
        if let Some(&id) = self.ids.get(&key) {
            return Some(id);
        }
        let id = u16::try_from(self.reps.len()).ok()?;
        self.bits.extend_from_slice(bits);
        self.reps.push(rep);
        self.ids.insert(key, id);
        Some(id)
    }

    fn get(&self, id: usize) -> &[u64] {
        &self.bits[id * self.words..(id + 1) * self.words]
    }

    fn len(&self) -> usize {
        self.reps.len()
    }
}

fn set_bit(bits: &mut [u64], r: usize) {
    bits[r / 64] |= 1 << (r % 64);
}

fn ported(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

fn is_icmp(proto: u8) -> bool {
    proto == 1 || proto == 58
}

fn icmp_hit(m: &IcmpMatch, v: u16) -> bool {
    m.ty == (v >> 8) as u8 && m.code.is_none_or(|c| c == v as u8)
}

fn ranges_hit(m: &PortMatch, port: u16) -> bool {
    m.ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi)
}

/// A port field's condition on its own: exact for ranges; a named port admits every port
/// here (a superset, confirmed by the rule's full test).
fn port_field(pos: &PortMatch, neg: &PortMatch, port: u16) -> bool {
    (pos.is_any() || pos.named.is_some() || ranges_hit(pos, port)) && !ranges_hit(neg, port)
}

fn has_named(r: &Rule) -> bool {
    let m = &r.matches;
    [
        &m.src_ports,
        &m.not_src_ports,
        &m.dst_ports,
        &m.not_dst_ports,
    ]
    .iter()
    .any(|p| p.named.is_some())
}

/// Cuts `u16` space at `bounds` (interval starts) and classes the parts by the rules
/// `holds(rule, value)` admits, merged unless `apart`.
fn ranges(
    mut bounds: Vec<u16>,
    rules: usize,
    words: usize,
    apart: bool,
    holds: impl Fn(usize, u16) -> bool,
) -> Option<(Ranges, Bitmaps)> {
    bounds.push(0);
    bounds.sort_unstable();
    bounds.dedup();
    let mut maps = Bitmaps::new(words);
    let mut starts = Vec::new();
    let mut class = Vec::new();
    let mut bits = vec![0u64; words];
    for (i, &x) in bounds.iter().enumerate() {
        bits.iter_mut().for_each(|w| *w = 0);
        for r in 0..rules {
            if holds(r, x) {
                set_bit(&mut bits, r);
            }
        }
        let c = maps.intern(&bits, if apart { i as u64 } else { u64::MAX }, u64::from(x))?;
        if class.last() != Some(&c) {
            starts.push(x);
            class.push(c);
        }
    }
    Some((
        Ranges {
            starts: starts.into(),
            class: class.into(),
        },
        maps,
    ))
}

fn bounds_of(list: &[(u16, u16)], out: &mut Vec<u16>) {
    for &(lo, hi) in list {
        out.push(lo);
        if hi != u16::MAX {
            out.push(hi + 1);
        }
    }
}

impl Matrix {
    /// The matrix of `tiers` over `sets`, or `None` if a table would pass [`MAX_CELLS`]
    /// entries or a dimension `u16` classes.
    pub fn build(tiers: &[Tier], sets: &Sets) -> Option<Matrix> {
        let rules: Vec<&Rule> = tiers.iter().flat_map(|t| &t.rules).collect();
        let n = rules.len();
        let words = n.div_ceil(64).max(1);
        let named_rule: Vec<bool> = rules.iter().map(|r| has_named(r)).collect();
        let apart = named_rule.iter().any(|&v| v);

        // Address sides.
        let mut src_nets = Vec::new();
        let mut dst_nets = Vec::new();
        let mut src_named = Vec::new();
        let mut dst_named = Vec::new();
        for r in &rules {
            let m = &r.matches;
            src_nets.extend(m.src_nets.into_iter().chain(m.not_src_nets));
            dst_nets.extend(m.dst_nets.into_iter().chain(m.not_dst_nets));
            src_named.extend(m.src_ports.named.into_iter().chain(m.not_src_ports.named));
            dst_named.extend(m.dst_ports.named.into_iter().chain(m.not_dst_ports.named));
        }
        for v in [&mut src_nets, &mut dst_nets, &mut src_named, &mut dst_named] {
            v.sort_unstable();
            v.dedup();
        }
        let src = Side::build(src_nets, src_named, sets)?;
        let dst = Side::build(dst_nets, dst_named, sets)?;
        let (src_rows, dst_rows) = (src.reps.len(), dst.reps.len());
        if src_rows * dst_rows > MAX_CELLS {
            return None;
        }
        let empty = crate::policy::NetSet::new();
        let net = |id: Option<NetSetId>| id.map(|i| sets.nets.get(i as usize).unwrap_or(&empty));
        let side_bits = |rep: &[u8; 16],
                         pos: fn(&Rule) -> Option<NetSetId>,
                         neg: fn(&Rule) -> Option<NetSetId>| {
            let mut bits = vec![0u64; words];
            for (r, rule) in rules.iter().enumerate() {
                let ok = net(pos(rule)).is_none_or(|s| s.contains(rep))
                    && !net(neg(rule)).is_some_and(|s| s.contains(rep));
                if ok {
                    set_bit(&mut bits, r);
                }
            }
            bits
        };
        let src_bits: Vec<Vec<u64>> = src
            .reps
            .iter()
            .map(|a| side_bits(a, |r| r.matches.src_nets, |r| r.matches.not_src_nets))
            .collect();
        let dst_bits: Vec<Vec<u64>> = dst
            .reps
            .iter()
            .map(|a| side_bits(a, |r| r.matches.dst_nets, |r| r.matches.not_dst_nets))
            .collect();
        let v6_of = |rep: &[u8; 16]| rep[..12] != [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        let src_named_apart = !src.named.is_empty();
        let dst_named_apart = !dst.named.is_empty();
        let mut family_ok = [vec![0u64; words], vec![0u64; words]];
        for (r, rule) in rules.iter().enumerate() {
            for (f, ok) in family_ok.iter_mut().enumerate() {
                if rule.matches.ip_version.is_none_or(|v| (v == 4) == (f == 0)) {
                    set_bit(ok, r);
                }
            }
        }
        let mut addr_maps = Bitmaps::new(words);
        let mut addr = Vec::with_capacity(src_rows * dst_rows);
        let mut bits = vec![0u64; words];
        for (s, sb) in src_bits.iter().enumerate() {
            for (d, db) in dst_bits.iter().enumerate() {
                let v4 = !v6_of(&src.reps[s]) && !v6_of(&dst.reps[d]);
                let ok = &family_ok[usize::from(!v4)];
                for (w, word) in bits.iter_mut().enumerate() {
                    *word = sb[w] & db[w] & ok[w];
                }
                let apart = match (src_named_apart, dst_named_apart) {
                    (false, false) => u64::MAX,
                    (a, b) => (if a { s as u64 } else { 0 }) << 32 | if b { d as u64 } else { 0 },
                };
                addr.push(addr_maps.intern(&bits, apart, (s as u64) << 32 | d as u64)?);
            }
        }

        // Protocols: those rules name, the families port and ICMP conditions depend on,
        // and one that stands for every other.
        let mut protos: Vec<u8> = vec![1, 6, 17, 58, 132];
        for r in &rules {
            protos.extend(r.matches.protocol);
            protos.extend(r.matches.not_protocol);
        }
        protos.sort_unstable();
        protos.dedup();
        if let Some(other) = (0..=255u8).find(|p| !protos.contains(p)) {
            protos.push(other);
        }
        let mut proto = Box::new([0u8; 256]);
        for p in 0..=255u8 {
            let class = protos
                .iter()
                .position(|&x| x == p)
                .unwrap_or(protos.len() - 1);
            proto[usize::from(p)] = class as u8;
        }
        let proto_bits: Vec<Vec<u64>> = protos
            .iter()
            .map(|&p| {
                let mut bits = vec![0u64; words];
                for (r, rule) in rules.iter().enumerate() {
                    let m = &rule.matches;
                    let ok = m.protocol.is_none_or(|x| x == p)
                        && m.not_protocol != Some(p)
                        && ((m.src_ports.is_any() && m.dst_ports.is_any()) || ported(p))
                        && (m.icmp.is_none() || is_icmp(p));
                    if ok {
                        set_bit(&mut bits, r);
                    }
                }
                bits
            })
            .collect();

        // Port fields, cut at every range bound and every declared named port.
        let declared_ports = |ids: &[PortSetId], out: &mut Vec<u16>| {
            for &id in ids {
                for &(_, _, port) in sets.named_ports.get(id as usize).into_iter().flatten() {
                    out.push(port);
                    out.push(port.saturating_add(1));
                }
            }
        };
        let mut sb = Vec::new();
        let mut db = Vec::new();
        let mut ib = Vec::new();
        for r in &rules {
            let m = &r.matches;
            bounds_of(&m.src_ports.ranges, &mut sb);
            bounds_of(&m.not_src_ports.ranges, &mut sb);
            bounds_of(&m.dst_ports.ranges, &mut db);
            bounds_of(&m.not_dst_ports.ranges, &mut db);
            for i in m.icmp.iter().chain(&m.not_icmp) {
                let base = u16::from(i.ty) << 8;
                match i.code {
                    Some(c) => bounds_of(&[(base | u16::from(c), base | u16::from(c))], &mut ib),
                    None => bounds_of(&[(base, base | 0xff)], &mut ib),
                }
            }
        }
        declared_ports(&src.named, &mut sb);
        declared_ports(&dst.named, &mut db);
        let (sport, sport_maps) = ranges(sb, n, words, apart, |r, x| {
            port_field(
                &rules[r].matches.src_ports,
                &rules[r].matches.not_src_ports,
                x,
            )
        })?;
        let (dport, dport_maps) = ranges(db, n, words, apart, |r, x| {
            port_field(
                &rules[r].matches.dst_ports,
                &rules[r].matches.not_dst_ports,
                x,
            )
        })?;
        let (icmp, icmp_maps) = ranges(ib, n, words, apart, |r, x| {
            let m = &rules[r].matches;
            m.icmp.as_ref().is_none_or(|i| icmp_hit(i, x))
                && !m.not_icmp.as_ref().is_some_and(|i| icmp_hit(i, x))
        })?;
        let (ns, nd, ni) = (sport_maps.len(), dport_maps.len(), icmp_maps.len());
        let s_dim = ns + ni + 1;
        let d_dim = nd + 1;
        if protos.len() * s_dim * d_dim > MAX_CELLS {
            return None;
        }
        let mut port_maps = Bitmaps::new(words);
        let mut ports = vec![0u16; protos.len() * s_dim * d_dim];
        // A port class's representative: protocol, source port (or ICMP type/code) and
        // destination port, packed.
        let pack = |p: u8, s: u16, d: u16| u64::from(p) << 32 | u64::from(s) << 16 | u64::from(d);
        for (pc, &p) in protos.iter().enumerate() {
            let mut put = |s: usize, d: usize, bits: &[u64], rep: u64| -> Option<()> {
                let apart = if apart {
                    ((pc * s_dim + s) * d_dim + d) as u64
                } else {
                    u64::MAX
                };
                ports[(pc * s_dim + s) * d_dim + d] = port_maps.intern(bits, apart, rep)?;
                Some(())
            };
            if ported(p) {
                for s in 0..ns {
                    for d in 0..nd {
                        for w in 0..words {
                            bits[w] =
                                proto_bits[pc][w] & sport_maps.get(s)[w] & dport_maps.get(d)[w];
                        }
                        let rep = pack(p, sport_maps.reps[s] as u16, dport_maps.reps[d] as u16);
                        put(s, d, &bits, rep)?;
                    }
                }
            } else if is_icmp(p) {
                for i in 0..ni {
                    for w in 0..words {
                        bits[w] = proto_bits[pc][w] & icmp_maps.get(i)[w];
                    }
                    put(ns + i, nd, &bits, pack(p, icmp_maps.reps[i] as u16, 0))?;
                }
            } else {
                put(s_dim - 1, nd, &proto_bits[pc], pack(p, 0, 0))?;
            }
        }

        // The cells: each (address class, port class) decided on its representative.
        let (na, np) = (addr_maps.len(), port_maps.len());
        if na * np > MAX_CELLS {
            return None;
        }
        let mut decisions: Vec<Decision> = Vec::new();
        let mut decision_ids: FxHashMap<Decision, u16> = FxHashMap::default();
        let mut cells = Vec::with_capacity(na * np);
        for a in 0..na {
            let rep = addr_maps.reps[a];
            let (s, d) = ((rep >> 32) as usize, (rep & 0xffff_ffff) as usize);
            for p in 0..np {
                let prep = port_maps.reps[p];
                let key = FlowKey {
                    src: src.reps[s],
                    dst: dst.reps[d],
                    proto: (prep >> 32) as u8,
                    src_port: (prep >> 16) as u16,
                    dst_port: prep as u16,
                };
                let (am, pm) = (addr_maps.get(a), port_maps.get(p));
                for (w, b) in bits.iter_mut().enumerate().take(words) {
                    *b = am[w] & pm[w];
                }
                let decision = decide(tiers, &rules, &named_rule, &bits, &key, sets);
                let id = match decision_ids.get(&decision) {
                    Some(&id) => id,
                    None => {
                        let id = u16::try_from(decisions.len()).ok()?;
                        decisions.push(decision);
                        decision_ids.insert(decision, id);
                        id
                    }
                };
                cells.push(id);
            }
        }
        Some(Matrix {
            src,
            dst,
            dst_rows,
            addr: addr.into(),
            proto,
            sport,
            dport,
            icmp,
            s_dim,
            d_dim,
            sport_classes: ns,
            dport_classes: nd,
            ports: ports.into(),
            port_classes: np,
            cells: cells.into(),
            decisions: decisions.into(),
        })
    }

    /// Appends this matrix to the arena `w`, its row maps bound to `classes` (reusing
    /// those in `maps`) and its decisions numbered by `number`; returns its offset, which
    /// [`classify_at`] reads it at. `None`, with nothing written, when the arena would grow
    /// past `budget` words or a row map past [`MAX_MAP_ENTRIES`].
    pub(crate) fn emit(
        &self,
        classes: &AddrClasses,
        w: &mut Vec<u32>,
        maps: &mut RowMaps,
        budget: usize,
        mut number: impl FnMut(&Decision) -> u32,
    ) -> Option<usize> {
        let parts = [&self.sport, &self.dport, &self.icmp]
            .iter()
            .map(|r| r.starts.len())
            .sum::<usize>();
        let own = HEADER + parts + self.addr.len() + self.ports.len() + self.cells.len();
        if w.len() + own > budget {
            return None;
        }
        // The row maps this matrix needs that the arena does not hold yet, bound first:
        // nothing is written unless all of it fits.
        let mut bound: [Option<(Vec<(u32, u32)>, [u32; 2])>; 2] = [None, None];
        let mut need = own;
        for (side, b) in [&self.src, &self.dst].into_iter().zip(bound.iter_mut()) {
            if !maps
                .0
                .contains_key(&(side.nets.clone(), side.named.clone()))
            {
                let (entries, defaults) = side.bind(classes);
                if entries.len() > MAX_MAP_ENTRIES {
                    return None;
                }
                need += 2 * slots_for(entries.len());
                *b = Some((entries, defaults));
            }
        }
        if w.len() + need > budget {
            return None;
        }
        let off = w.len();
        w.resize(off + HEADER, 0);
        let rel = |w: &Vec<u32>| (w.len() - off) as u32;
        let set = |w: &mut Vec<u32>, i: usize, v: usize| w[off + i] = v as u32;
        set(w, H_DST_ROWS, self.dst_rows);
        set(w, H_S_DIM, self.s_dim);
        set(w, H_D_DIM, self.d_dim);
        set(w, H_SPORT_CLASSES, self.sport_classes);
        set(w, H_DPORT_CLASSES, self.dport_classes);
        set(w, H_PORT_CLASSES, self.port_classes);
        for (p, &c) in self.proto.iter().enumerate() {
            w[off + H_PROTO + p / 4] |= u32::from(c) << (8 * (p % 4));
        }
        for ((side, slots_at), b) in [(&self.src, H_SRC_SLOTS), (&self.dst, H_DST_SLOTS)]
            .into_iter()
            .zip(bound)
        {
            let key = (side.nets.clone(), side.named.clone());
            let header = match (maps.0.get(&key), b) {
                (Some(&header), _) => header,
                (None, b) => {
                    // Bound above, unless the other side named the same sets.
                    let (entries, defaults) = b.unwrap_or_else(|| side.bind(classes));
                    let slots = slots_for(entries.len());
                    let start = w.len();
                    w.resize(start + 2 * slots, 0);
                    for (class, row) in entries {
                        let mut i = slot_of(class, slots);
                        while w[start + 2 * i] != 0 {
                            i = (i + 1) & (slots - 1);
                        }
                        w[start + 2 * i] = class + 1;
                        w[start + 2 * i + 1] = row;
                    }
                    let header = [slots as u32, start as u32, defaults[0] | defaults[1] << 16];
                    maps.0.insert(key, header);
                    header
                }
            };
            w[off + slots_at..off + slots_at + 3].copy_from_slice(&header);
        }
        for (r, at) in [
            (&self.sport, H_SPORT),
            (&self.dport, H_DPORT),
            (&self.icmp, H_ICMP),
        ] {
            w[off + at] = rel(w);
            w[off + at + 1] = r.starts.len() as u32;
            w.extend(
                r.starts
                    .iter()
                    .zip(r.class.iter())
                    .map(|(&s, &c)| u32::from(s) << 16 | u32::from(c)),
            );
        }
        w[off + H_ADDR] = rel(w);
        w.extend(self.addr.iter().map(|&x| u32::from(x)));
        w[off + H_PORTS] = rel(w);
        w.extend(self.ports.iter().map(|&x| u32::from(x)));
        w[off + H_CELLS] = rel(w);
        let numbers: Vec<u32> = self.decisions.iter().map(&mut number).collect();
        w.extend(self.cells.iter().map(|&c| numbers[usize::from(c)]));
        Some(off)
    }

    /// Heap bytes.
    pub fn bytes(&self) -> usize {
        let side = |s: &Side| {
            (s.nets.len() + s.named.len()) * 4
                + s.reps.len() * 16
                + s.rows
                    .keys()
                    .map(|p| 48 + p.nets.len() * 4 + p.named.len() * 8)
                    .sum::<usize>()
        };
        side(&self.src)
            + side(&self.dst)
            + (self.addr.len() + self.ports.len() + self.cells.len()) * 2
            + 256
            + (self.sport.starts.len() + self.dport.starts.len() + self.icmp.starts.len()) * 4
            + self.decisions.len() * std::mem::size_of::<Decision>()
    }

    /// Rows of both sides (a measure of how many address classes the program tells apart).
    pub fn rows(&self) -> usize {
        self.src.reps.len() + self.dst.reps.len()
    }
}

/// In-order evaluation of the rules whose bits are set in `bits` (and, for named-port
/// rules, whose full test passes on `key`): the same semantics as `Program::classify_by_scan`.
fn decide(
    tiers: &[Tier],
    rules: &[&Rule],
    named_rule: &[bool],
    bits: &[u64],
    key: &FlowKey,
    sets: &Sets,
) -> Decision {
    let mut logged = [None; MAX_LOGGED];
    let mut n_logged = 0;
    let mut first = 0usize;
    for tier in tiers {
        let end = first + tier.rules.len();
        let mut passed = false;
        let mut r = first;
        while r < end {
            let word = bits[r / 64] >> (r % 64);
            if word == 0 {
                r = (r / 64 + 1) * 64;
                continue;
            }
            r += word.trailing_zeros() as usize;
            if r >= end {
                break;
            }
            let rule = rules[r];
            r += 1;
            if named_rule[r - 1] && !rule.matches.test(key, sets) {
                continue;
            }
            match rule.action {
                Action::Allow | Action::Deny => {
                    return Decision {
                        verdict: if rule.action == Action::Allow {
                            Verdict::Allow
                        } else {
                            Verdict::Deny
                        },
                        rule: Some(rule.id),
                        logged,
                    }
                }
                Action::Pass => {
                    passed = true;
                    break;
                }
                Action::Log => {
                    if n_logged < MAX_LOGGED {
                        logged[n_logged] = Some(rule.id);
                        n_logged += 1;
                    }
                }
            }
        }
        if !passed && tier.end == TierEnd::Deny {
            return Decision {
                verdict: Verdict::Deny,
                rule: Some(tier.end_id),
                logged,
            };
        }
        first = end;
    }
    Decision {
        verdict: Verdict::Allow,
        rule: None,
        logged,
    }
}
