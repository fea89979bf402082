//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, §3.4): a lookup table of `M` slots (`M` prime), each
//! naming a backend; a flow's hash picks a slot.
//!
//! A fresh table is the paper's `Populate`: every backend walks its own permutation of the
//! slots (`offset + j * skip mod M`, both from a hash of the backend's address and port)
//! and the backends take turns claiming their next free slot, so every backend ends with
//! `⌊M/N⌋` or `⌈M/N⌉` slots. `M` is the smallest prime of [`SIZES`] at least 100 × N,
//! which keeps each share within 1% of equal.
//!
//! An update is not a fresh build: [`Maglev::update`] keeps every slot whose backend
//! survives and refills only the slots that must change (those of removed backends, and
//! the excess of backends that now hold more than their share because others were added),
//! each backend again following its own permutation. So removing a backend moves exactly
//! its slots and nothing else, and adding one takes only the slots it needs (the paper's
//! `Populate` moves a few percent more). A table that the remaining backends would not need
//! keeps its size while it is at most [`SHRINK_FACTOR`] times too large, so that removals
//! stay minimal; growth past the size rebuilds it. The price is that a table depends on the history
//! of the backend set, not only on the set: two nodes may hold different tables for one
//! service, which only matters for a flow whose packets reach several nodes (the backend
//! choice of a flow is remembered in the conntrack of the node that made it).
//!
//! Written here rather than taken from a crate: the published Rust implementations are
//! fresh-build only (no minimal-disruption update) and allocate per lookup or hash with
//! SipHash; this one is a `Vec<u16>` read per new flow.

/// The table sizes: primes, each about twice the previous one.
pub const SIZES: [usize; 12] = [
    251, 509, 1009, 2053, 4099, 8209, 16411, 32771, 65537, 131_101, 262_147, 524_309,
];

/// The most backends one table holds.
pub const MAX_BACKENDS: usize = SIZES[SIZES.len() - 1] / 100;

/// A Maglev lookup table over `backends` backends: slot -> backend index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Maglev {
    slots: Vec<u16>,
    backends: usize,
}

/// A backend as Maglev sees it: a stable identity to hash (address and port in key form).
pub type BackendKey = ([u8; 16], u16);

impl Maglev {
    /// A fresh table for `backends` (in order: slot values index this list). Empty when
    /// there is none. At most [`MAX_BACKENDS`] are used; the rest never get a slot.
    pub fn new(backends: &[BackendKey]) -> Maglev {
        let n = backends.len().min(MAX_BACKENDS);
        if n == 0 {
            return Maglev::default();
        }
        let m = size_for(n);
        let mut t = Maglev {
            slots: vec![FREE; m],
            backends: n,
        };
        let counts = vec![0usize; n];
        let targets = targets(m, &counts);
        t.fill(&backends[..n], counts, &targets);
        t
    }

    /// The table for `backends` derived from `self`, built for `previous`: slots of
    /// backends in both lists keep them (re-indexed), the others are refilled. The table
    /// keeps its size while that still gives each backend 100 slots or more and is not
    /// more than [`SHRINK_FACTOR`] times the size a fresh table would take; otherwise (the
    /// set grew past the size, or shrank to a small part of it) a new table is built.
    pub fn update(&self, previous: &[BackendKey], backends: &[BackendKey]) -> Maglev {
        let n = backends.len().min(MAX_BACKENDS);
        if n == 0 {
            return Maglev::default();
        }
        let m = size_to_keep(self.slots.len(), n);
        if self.slots.len() != m || self.backends != previous.len().min(MAX_BACKENDS) {
            return Maglev::new(backends);
        }
        let index: rustc_hash::FxHashMap<BackendKey, u16> = backends[..n]
            .iter()
            .enumerate()
            .map(|(i, b)| (*b, i as u16))
            .collect();
        let mut slots: Vec<u16> = self
            .slots
            .iter()
            .map(|&s| {
                previous
                    .get(usize::from(s))
                    .and_then(|b| index.get(b).copied())
                    .unwrap_or(FREE)
            })
            .collect();
        let mut counts = vec![0usize; n];
        for &s in &slots {
            if s != FREE {
                counts[usize::from(s)] += 1;
            }
        }
        // The extra slots (`m % n`) go to the backends holding most already, so that as
        // few as possible give any back. Backends above their share give back their last
        // slots (in table order).
        let targets = targets(m, &counts);
        for (b, count) in counts.iter_mut().enumerate() {
            let target = targets[b];
            if *count > target {
                let mut excess = *count - target;
                for s in slots.iter_mut().rev() {
                    if excess == 0 {
                        break;
                    }
                    if usize::from(*s) == b {
                        *s = FREE;
                        excess -= 1;
                    }
                }
                *count = target;
            }
        }
        let mut t = Maglev { slots, backends: n };
        t.fill(&backends[..n], counts, &targets);
        t
    }

    /// The backend index for `hash`, `None` when the table is empty.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<u16> {
        self.slot_at(hash).map(|at| self.slots[at])
    }

    /// The slot `hash` falls in, `None` when the table is empty. With [`Self::slot`], a
    /// [`Self::pick`] in two steps, so that a caller can read the tables of many picks one
    /// step at a time (their cache misses then overlap).
    #[inline]
    pub fn slot_at(&self, hash: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        Some((hash % self.slots.len() as u64) as usize)
    }

    /// The backend index in slot `at` (`None` past the end).
    #[inline]
    pub fn slot(&self, at: usize) -> Option<u16> {
        self.slots.get(at).copied()
    }

    /// The number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table has no slot (no backend).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slots (backend index per slot).
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    /// Gives every free slot to a backend below its share, backends taking turns, each
    /// walking its own permutation of the slots.
    fn fill(&mut self, backends: &[BackendKey], mut counts: Vec<usize>, targets: &[usize]) {
        let m = self.slots.len();
        let n = backends.len();
        let perms: Vec<(usize, usize)> = backends
            .iter()
            .map(|b| {
                let h1 = hash_backend(b, 0x6d61_676c);
                let h2 = hash_backend(b, 0x6576_3432);
                ((h1 % m as u64) as usize, (h2 % (m as u64 - 1)) as usize + 1)
            })
            .collect();
        let mut next = vec![0usize; n];
        let mut free = self.slots.iter().filter(|&&s| s == FREE).count();
        while free > 0 {
            let mut progressed = false;
            for b in 0..n {
                if counts[b] >= targets[b] {
                    continue;
                }
                let (offset, skip) = perms[b];
                // A permutation of a prime modulus visits every slot within `m` steps.
                loop {
                    let slot = (offset + next[b] * skip) % m;
                    next[b] += 1;
                    if self.slots[slot] == FREE {
                        self.slots[slot] = b as u16;
                        counts[b] += 1;
                        free -= 1;
                        progressed = true;
                        break;
                    }
                }
                if free == 0 {
                    break;
                }
            }
            debug_assert!(progressed, "shares add up to the table size");
            if !progressed {
                break;
            }
        }
    }
}

const FREE: u16 = u16::MAX;

/// How much larger than a fresh table a table may stay when backends go: removing
/// backends then moves exactly their slots, at the price of a table up to this many times
/// the size it needs.
pub const SHRINK_FACTOR: usize = 8;

/// The size of a table of `current` slots updated to `n` backends (at most
/// [`MAX_BACKENDS`]): `current` while it
/// still holds 100 slots per backend (each share within 1% of equal) and is at most
/// [`SHRINK_FACTOR`] times a fresh table's size.
fn size_to_keep(current: usize, n: usize) -> usize {
    let fresh = size_for(n);
    if current >= 100 * n && current <= fresh * SHRINK_FACTOR {
        current
    } else {
        fresh
    }
}

/// The table size for `n` backends.
fn size_for(n: usize) -> usize {
    SIZES
        .iter()
        .copied()
        .find(|&m| m >= 100 * n)
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// Each backend's share of `m` slots: `m / n`, and one more for the `m % n` backends
/// that hold the most slots now (the first ones in a fresh table).
fn targets(m: usize, counts: &[usize]) -> Vec<usize> {
    let n = counts.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&b| std::cmp::Reverse(counts[b]));
    let mut t = vec![m / n; n];
    for &b in order.iter().take(m % n) {
        t[b] += 1;
    }
    t
}

fn hash_backend(b: &BackendKey, seed: u64) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for chunk in b.0.chunks(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h = h.rotate_left(29);
    }
    h ^= u64::from(b.1);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backends(n: usize, salt: u8) -> Vec<BackendKey> {
        (0..n)
            .map(|i| {
                let mut a = [0u8; 16];
                a[10] = 0xff;
                a[11] = 0xff;
                a[12] = 198;
                a[13] = 18 + (salt & 1);
                a[14] = (i >> 8) as u8;
                a[15] = i as u8;
                (a, 8080)
            })
            .collect()
    }

    fn counts(t: &Maglev) -> Vec<usize> {
        let mut c = vec![0usize; t.backends];
        for &s in t.slots() {
            c[usize::from(s)] += 1;
        }
        c
    }

    fn assert_balanced(t: &Maglev) {
        let c = counts(t);
        let ideal = t.len() as f64 / c.len() as f64;
        for (b, &n) in c.iter().enumerate() {
            assert!(
                (n as f64 - ideal).abs() <= ideal * 0.01,
                "backend {b} holds {n} slots of {}, ideal {ideal:.1}",
                t.len()
            );
        }
    }

    #[test]
    fn an_empty_set_has_no_table_and_picks_nothing() {
        let t = Maglev::new(&[]);
        assert!(t.is_empty());
        assert_eq!(t.pick(7), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn each_backend_holds_its_share_within_one_percent(n in 1usize..200, salt in 0u8..2) {
            let t = Maglev::new(&backends(n, salt));
            prop_assert!(t.slots().iter().all(|&s| usize::from(s) < n));
            assert_balanced(&t);
        }

        #[test]
        fn a_removal_moves_only_the_removed_backends_slots(
            n in 2usize..120,
            removed in proptest::collection::btree_set(0usize..120, 1..4),
        ) {
            let before = backends(n, 0);
            let removed: Vec<usize> = removed.into_iter().filter(|&r| r < n).collect();
            prop_assume!(!removed.is_empty() && removed.len() < n);
            let after: Vec<BackendKey> = before
                .iter()
                .enumerate()
                .filter(|(i, _)| !removed.contains(i))
                .map(|(_, b)| *b)
                .collect();
            let old = Maglev::new(&before);
            let new = old.update(&before, &after);
            // Removals keep the table's size (they cannot shrink it eightfold here).
            prop_assert_eq!(new.len(), old.len());
            for (slot, (&o, &n2)) in old.slots().iter().zip(new.slots()).enumerate() {
                let was = before[usize::from(o)];
                let now = after[usize::from(n2)];
                if !removed.contains(&usize::from(o)) {
                    prop_assert_eq!(was, now, "slot {} moved off a surviving backend", slot);
                }
            }
            assert_balanced(&new);
        }

        #[test]
        fn an_addition_moves_slots_only_to_the_new_backend(n in 1usize..100) {
            let all = backends(n + 1, 1);
            let before = &all[..n];
            let old = Maglev::new(before);
            let new = old.update(before, &all);
            prop_assume!(new.len() == old.len());
            for (&o, &n2) in old.slots().iter().zip(new.slots()) {
                let now = all[usize::from(n2)];
                prop_assert!(now == before[usize::from(o)] || usize::from(n2) == n);
            }
            assert_balanced(&new);
        }
    }

    #[test]
    fn shrinking_keeps_the_size_until_the_table_is_eight_times_too_large() {
        let ten = backends(10, 0);
        let t = Maglev::new(&ten);
        assert_eq!(t.len(), 1009);
        // Down to 3 (a fresh table would have 509 slots): kept, each share moved alone.
        let three = &ten[..3];
        let kept = t.update(&ten, three);
        assert_eq!(kept.len(), 1009);
        for (&o, &n) in t.slots().iter().zip(kept.slots()) {
            if usize::from(o) < 3 {
                assert_eq!(o, n, "a surviving backend's slot moved");
            }
        }
        assert_balanced(&kept);
        // And to one: 1009 slots is at most 8 × 251, kept too.
        assert_eq!(kept.update(three, &ten[..1]).len(), 1009);
        // From 100 backends (16 411 slots) to one: more than 8 × 251, a fresh small table.
        let hundred = backends(100, 0);
        let big = Maglev::new(&hundred);
        assert_eq!(big.len(), 16411);
        let one = big.update(&hundred, &hundred[..1]);
        assert_eq!(one, Maglev::new(&hundred[..1]));
        assert_eq!(one.len(), 251);
    }

    #[test]
    fn a_size_change_builds_afresh_and_an_identical_set_changes_nothing() {
        let b = backends(3, 0);
        let t = Maglev::new(&b);
        assert_eq!(t.update(&b, &b), t);
        let many = backends(10, 0);
        let grown = t.update(&b, &many);
        assert_eq!(grown, Maglev::new(&many));
        assert_eq!(grown.len(), 1009);
    }
}
