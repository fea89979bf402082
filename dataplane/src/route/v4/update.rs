//! Changing an [`Ipv4Lpm`] in place, from one route set to the next.
//!
//! A node's routes change a few at a time (a pod's /32 comes or goes, a remote node's
//! block appears), while a DIR-24-8 table is 64 MiB of address space: building it again
//! for every change costs tens of milliseconds in page faults and zeroing, and the memory
//! of the table it replaces. [`Ipv4Lpm::update`] rewrites only the entries whose answer
//! the change can alter:
//!
//! - a changed prefix of length ≤ 24 repaints its `tbl24` range from the new set (the
//!   innermost enclosing prefix, then the prefixes nested in the range, with the sweep the
//!   build uses), and refills the groups of the /24s in that range that hold longer
//!   prefixes (their default is the repainted leaf); nested changes are covered by the
//!   outermost one;
//! - a changed prefix longer than /24 refills the one group of its /24 (taken from the
//!   free list or appended when the /24 had none; freed, and the /24 given its covering
//!   leaf again, when its last long prefix goes).
//!
//! A pod's /32 is therefore one 1 KiB group refilled and one word written. The caller
//! keeps the route set the table holds ([`Ipv4Routes`]) and passes it with the next one;
//! the table must be exclusively held (`&mut`), so a reader never sees half an update: a
//! publisher keeps two tables and changes the one no reader holds any more.

use super::{checked_sorted, leaf, Ipv4Lpm, LpmError, Painter, Route, GROUP_ENTRIES, MISS};
use std::net::Ipv4Addr;

/// A validated IPv4 route set sorted by (prefix, length), each prefix once: what an
/// [`Ipv4Lpm`] holds, kept by a caller that changes the table with [`Ipv4Lpm::update`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ipv4Routes {
    routes: Vec<Route>,
}

impl Ipv4Routes {
    /// Validates and sorts `routes` (the checks of [`Ipv4Lpm::build`]).
    ///
    /// # Errors
    /// As [`Ipv4Lpm::build`], except [`LpmError::Tbl8Exhausted`].
    pub fn new(routes: &[(Ipv4Addr, u8, u32)]) -> Result<Self, LpmError> {
        Ok(Ipv4Routes {
            routes: checked_sorted(routes)?,
        })
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes as (prefix, length, value), sorted by prefix then length.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, u8, u32)> + '_ {
        self.routes
            .iter()
            .map(|r| (Ipv4Addr::from(r.addr), r.len, r.value))
    }

    /// The routes whose prefix starts in `lo..hi` (addresses, `hi` exclusive as u64).
    fn starting_in(&self, lo: u32, hi: u64) -> impl Iterator<Item = &Route> + '_ {
        let from = self.routes.partition_point(|r| r.addr < lo);
        self.routes[from..]
            .iter()
            .take_while(move |r| u64::from(r.addr) < hi)
    }

    /// The longest route of length ≤ 24 and < `below` that covers `addr`.
    fn covering(&self, addr: u32, below: u8) -> Option<Route> {
        (0..below.min(25)).rev().find_map(|len| {
            let prefix = addr & mask(len);
            self.routes
                .binary_search_by(|r| (r.addr, r.len).cmp(&(prefix, len)))
                .ok()
                .map(|i| self.routes[i])
        })
    }

    /// The /24s in `lo_slot..hi_slot` that hold prefixes longer than /24, in order.
    fn long_slots(&self, lo_slot: usize, hi_slot: usize) -> Vec<usize> {
        let mut slots: Vec<usize> = self
            .starting_in((lo_slot as u32) << 8, (hi_slot as u64) << 8)
            .filter(|r| r.len > 24)
            .map(|r| (r.addr >> 8) as usize)
            .collect();
        slots.dedup();
        slots
    }
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

/// The `tbl24` slots a prefix of length ≤ 24 covers.
fn slots_of(r: (u32, u8)) -> (usize, usize) {
    let start = (r.0 >> 8) as usize;
    (start, start + (1usize << (24 - r.1)))
}

/// The (prefix, length) of every route whose value differs between `a` and `b` or that
/// only one holds, sorted.
fn changed(a: &[Route], b: &[Route]) -> Vec<(u32, u8)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        let ka = a.get(i).map(|r| (r.addr, r.len));
        let kb = b.get(j).map(|r| (r.addr, r.len));
        match (ka, kb) {
            (Some(x), Some(y)) if x == y => {
                if a[i].value != b[j].value {
                    out.push(x);
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                out.push(x);
                i += 1;
            }
            (Some(x), None) => {
                out.push(x);
                i += 1;
            }
            (_, Some(y)) => {
                out.push(y);
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

impl Ipv4Lpm {
    /// Builds a table holding `routes`, with at most `max_groups` groups now and after
    /// any [`Ipv4Lpm::update`].
    ///
    /// # Errors
    /// [`LpmError::Tbl8Exhausted`].
    pub fn from_routes(routes: &Ipv4Routes, max_groups: usize) -> Result<Self, LpmError> {
        Self::build_checked(
            routes.routes.clone(),
            max_groups,
            |n| vec![0; n].into_boxed_slice(),
            true,
        )
    }

    /// Changes the table from holding `before` to holding `after`, rewriting only what the
    /// difference can change (see the module doc); returns the number of prefixes that
    /// differed. `before` must be the set the table holds (from [`Ipv4Lpm::from_routes`]
    /// or the last update).
    ///
    /// # Errors
    /// [`LpmError::Tbl8Exhausted`] when `after` needs more groups than the table's cap;
    /// the table is unchanged then.
    pub fn update(&mut self, before: &Ipv4Routes, after: &Ipv4Routes) -> Result<usize, LpmError> {
        let diff = changed(&before.routes, &after.routes);
        if diff.is_empty() {
            return Ok(0);
        }
        // The outermost changed short prefixes: disjoint slot ranges (a prefix sorts
        // before the prefixes nested in it).
        let mut ranges: Vec<(usize, usize, u32, u8)> = Vec::new();
        for &(addr, len) in diff.iter().filter(|d| d.1 <= 24) {
            let (s, e) = slots_of((addr, len));
            if ranges.last().is_some_and(|&(_, end, _, _)| s < end) {
                continue;
            }
            ranges.push((s, e, addr, len));
        }
        let inside = |slot: usize| {
            let i = ranges.partition_point(|r| r.1 <= slot);
            ranges.get(i).is_some_and(|r| r.0 <= slot)
        };
        let mut lone: Vec<usize> = diff
            .iter()
            .filter(|d| d.1 > 24)
            .map(|d| (d.0 >> 8) as usize)
            .filter(|&s| !inside(s))
            .collect();
        lone.dedup();

        // Groups before and after, for the budget check before anything is written.
        let mut plan: Vec<(Vec<usize>, Vec<usize>)> = Vec::with_capacity(ranges.len());
        let (mut gained, mut lost) = (0usize, 0usize);
        for &(s, e, _, _) in &ranges {
            let had = before.long_slots(s, e);
            let has = after.long_slots(s, e);
            gained += has.iter().filter(|x| had.binary_search(x).is_err()).count();
            lost += had.iter().filter(|x| has.binary_search(x).is_err()).count();
            plan.push((had, has));
        }
        for &slot in &lone {
            let had = !before.long_slots(slot, slot + 1).is_empty();
            let has = !after.long_slots(slot, slot + 1).is_empty();
            gained += usize::from(has && !had);
            lost += usize::from(had && !has);
        }
        if (self.tbl8_groups() + gained).saturating_sub(lost) > self.max_groups {
            return Err(LpmError::Tbl8Exhausted {
                max: self.max_groups,
            });
        }

        for (&(s, e, addr, len), (had, has)) in ranges.iter().zip(plan) {
            let mut old: Vec<(usize, u32)> = had
                .iter()
                .map(|&slot| (slot, self.group_at(slot)))
                .collect();
            let enclosing = after.covering(addr, len);
            let mut painter = Painter {
                tbl24: &mut self.tbl24,
                stack: enclosing
                    .map(|r| (slots_of((r.addr, r.len)).1, leaf(r.value)))
                    .into_iter()
                    .collect(),
                cursor: s,
                zeroed: false,
            };
            for r in after
                .starting_in((s as u32) << 8, (e as u64) << 8)
                .filter(|r| r.len <= 24)
            {
                let (start, end) = slots_of((r.addr, r.len));
                painter.fill_until(start);
                painter.stack.push((end, leaf(r.value)));
            }
            painter.fill_until(e);
            for slot in has {
                let group = match old.iter().position(|&(x, _)| x == slot) {
                    Some(i) => old.swap_remove(i).1,
                    None => self.take_group(),
                };
                self.fill_group(slot, group, after);
            }
            self.free_groups.extend(old.into_iter().map(|(_, g)| g));
        }
        for slot in lone {
            let long = !after.long_slots(slot, slot + 1).is_empty();
            let entry = self.tbl24[slot];
            let current = (entry & 1 == 0 && entry != 0).then_some(entry >> 1);
            match (current, long) {
                (Some(group), true) => self.fill_group(slot, group, after),
                (None, true) => {
                    let group = self.take_group();
                    self.fill_group(slot, group, after);
                }
                (Some(group), false) => {
                    self.free_groups.push(group);
                    self.tbl24[slot] = after
                        .covering((slot as u32) << 8, 25)
                        .map_or(0, |r| leaf(r.value));
                }
                (None, false) => {}
            }
        }
        self.routes = after.len();
        Ok(diff.len())
    }

    /// The group a `tbl24` entry names (the slot holds long prefixes).
    fn group_at(&self, slot: usize) -> u32 {
        let e = self.tbl24[slot];
        debug_assert!(e & 1 == 0 && e != 0, "slot {slot} has no group");
        e >> 1
    }

    /// A free group: a freed one, or one appended to `tbl8`.
    fn take_group(&mut self) -> u32 {
        self.free_groups.pop().unwrap_or_else(|| {
            let group = (self.tbl8.len() / GROUP_ENTRIES) as u32;
            self.tbl8.resize(self.tbl8.len() + GROUP_ENTRIES, MISS);
            group
        })
    }

    /// Fills `group` for the /24 `slot` from `routes` (its covering leaf, then its long
    /// prefixes shortest first) and points the slot at it.
    fn fill_group(&mut self, slot: usize, group: u32, routes: &Ipv4Routes) {
        let base = group as usize * GROUP_ENTRIES;
        let fill = routes
            .covering((slot as u32) << 8, 25)
            .map_or(MISS, |r| r.value);
        self.tbl8[base..base + GROUP_ENTRIES].fill(fill);
        let mut long: Vec<Route> = routes
            .starting_in((slot as u32) << 8, ((slot as u64) + 1) << 8)
            .filter(|r| r.len > 24)
            .copied()
            .collect();
        long.sort_by_key(|r| r.len);
        for r in long {
            let start = base + (r.addr & 0xff) as usize;
            self.tbl8[start..start + (1usize << (32 - r.len))].fill(r.value);
        }
        self.tbl24[slot] = group << 1;
    }
}

#[cfg(test)]
mod tests;
