//! A worker's map from 5-tuples to per-connection state, made for the packet path: open
//! addressing with linear probing over slots that hold the key's hash beside the key, a
//! hash of the key's five machine words, and a way to start the loads of a whole batch's
//! lookups before any of them is needed ([`FlowMap::warm`]).
//!
//! Why not a general hash map: the service stage's connections table is probed once per
//! packet, on a table of thousands of connections that does not fit the core's caches; a
//! lookup that waits for its slot costs more than the rest of the stage. Warming the
//! slots of all the batch's lookups first (safe Rust has no prefetch instruction: an
//! ordinary load whose value is kept does the same job) makes their cache misses overlap,
//! which a general map's API does not allow. Deletion is only by [`FlowMap::retain`]
//! (expiry sweeps), with backward shifting, so no tombstones slow the probes.

use crate::flow::FlowKey;

/// A slot: the key's hash with the top bit set (0: empty), the key, the value; aligned to
/// two cache lines (the pair a core's adjacent-line prefetch loads together), the tag and
/// the key in the first, so a probe reads one line per slot until it finds the key.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(128))]
struct Slot<V> {
    tag: u32,
    key: FlowKey,
    value: V,
}

impl<V> Slot<V> {
    #[inline]
    fn is_empty(&self) -> bool {
        self.tag == 0
    }
}

/// A map from [`FlowKey`] to `V`, growing by doubling up to a fixed number of entries.
#[derive(Debug, Clone)]
pub struct FlowMap<V> {
    slots: Vec<Slot<V>>,
    len: usize,
    /// The most entries it takes.
    max: usize,
}

/// The map holds its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl<V: Copy + Default> FlowMap<V> {
    /// An empty map (no allocation) that takes at most `max` entries.
    pub fn new(max: usize) -> Self {
        FlowMap {
            slots: Vec::new(),
            len: 0,
            max,
        }
    }

    /// The hash of `key`, for [`FlowMap::warm`], [`FlowMap::get_mut`] and
    /// [`FlowMap::insert`].
    #[inline]
    pub fn hash(key: &FlowKey) -> u64 {
        let w = |b: &[u8; 16], i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_ne_bytes(x)
        };
        let mix = |h: u64, v: u64| (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut h = mix(0x243f_6a88_85a3_08d3, w(&key.src, 0));
        h = mix(h, w(&key.src, 8)).rotate_left(23);
        h = mix(h, w(&key.dst, 0)).rotate_left(23);
        h = mix(h, w(&key.dst, 8)).rotate_left(23);
        h = mix(
            h,
            u64::from(key.src_port) | u64::from(key.dst_port) << 16 | u64::from(key.proto) << 32,
        );
        h ^ (h >> 29)
    }

    /// Entries held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Allocates room for `entries` (at most the maximum) if it has less.
    pub fn reserve(&mut self, entries: usize) {
        let want = slots_for(entries.min(self.max));
        if want > self.slots.len() {
            self.resize(want);
        }
    }

    /// The slot a hash starts probing at.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash as usize) & (self.slots.len() - 1)
    }

    /// Loads the first slot of a lookup of `hash` and returns a value made of it: a
    /// caller that warms every lookup of a batch before it runs any has their cache misses
    /// overlap.
    #[inline]
    pub fn warm(&self, hash: u64) -> u32 {
        if self.slots.is_empty() {
            return 0;
        }
        self.slots[self.home(hash)].tag
    }

    /// The value of `key` (`hash` is [`FlowMap::hash`] of it).
    #[inline]
    pub fn get_mut(&mut self, key: &FlowKey, hash: u64) -> Option<&mut V> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = tag(hash);
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        loop {
            let s = &self.slots[i];
            if s.is_empty() {
                return None;
            }
            if s.tag == tag && s.key == *key {
                break;
            }
            i = (i + 1) & mask;
        }
        Some(&mut self.slots[i].value)
    }

    /// Sets the value of `key` (`hash` is [`FlowMap::hash`] of it), growing the map if it
    /// is half full; [`Full`] (nothing changed) when it holds its maximum and `key` is new.
    pub fn insert(&mut self, key: FlowKey, hash: u64, value: V) -> Result<(), Full> {
        if let Some(v) = self.get_mut(&key, hash) {
            *v = value;
            return Ok(());
        }
        if self.len >= self.max {
            return Err(Full);
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.resize(slots_for(self.len + 1).max(self.slots.len() * 2));
        }
        self.place(Slot {
            tag: tag(hash),
            key,
            value,
        });
        self.len += 1;
        Ok(())
    }

    /// Puts a slot whose key is not in the map into the first free slot of its probe.
    fn place(&mut self, slot: Slot<V>) {
        let mask = self.slots.len() - 1;
        let mut i = (slot.tag as usize) & mask;
        while !self.slots[i].is_empty() {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    /// Rehashes into `slots` slots (a power of two).
    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); slots]);
        for s in old.into_iter().filter(|s| !s.is_empty()) {
            self.place(s);
        }
    }

    /// Keeps the entries `keep` accepts (it may change their values).
    pub fn retain(&mut self, mut keep: impl FnMut(&FlowKey, &mut V) -> bool) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        let mask = n - 1;
        // Start right after an empty slot, so that no cluster of probes wraps around the
        // start of the walk: every shift then moves an entry to a slot already walked.
        let Some(empty) = self.slots.iter().position(Slot::is_empty) else {
            return;
        };
        let mut i = (empty + 1) & mask;
        let mut walked = 0;
        while walked < n {
            let s = &mut self.slots[i];
            let remove = !s.is_empty() && !keep(&s.key, &mut s.value);
            if remove {
                self.slots[i] = Slot::default();
                self.len -= 1;
                // An entry shifted into the hole has not been looked at yet: look again.
                self.shift_back(i);
            } else {
                i = (i + 1) & mask;
                walked += 1;
            }
        }
    }

    /// Fills the hole at `hole` with the entries after it that probed past it.
    fn shift_back(&mut self, mut hole: usize) {
        let mask = self.slots.len() - 1;
        let mut j = (hole + 1) & mask;
        while !self.slots[j].is_empty() {
            let home = (self.slots[j].tag as usize) & mask;
            // Distance from home to j, and from home to the hole, along the probe.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = std::mem::take(&mut self.slots[j]);
                hole = j;
            }
            j = (j + 1) & mask;
        }
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &V)> {
        self.slots
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| (&s.key, &s.value))
    }
}

/// A hash as stored in a slot: never 0 (the top bit set), its low bits the home slot's.
#[inline]
fn tag(hash: u64) -> u32 {
    (hash as u32) | 0x8000_0000
}

/// The slots for `entries` at most half full (a power of two, at least 16).
fn slots_for(entries: usize) -> usize {
    (entries * 2).next_power_of_two().max(16)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn key(n: u16) -> FlowKey {
        FlowKey {
            src: FlowKey::map_v4([198, 18, 0, (n >> 8) as u8]),
            dst: FlowKey::map_v4([198, 19, 0, 1]),
            src_port: n,
            dst_port: 80,
            proto: 6,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Get(u16),
        /// Remove the keys whose port has this residue mod 3.
        Retain(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..300, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0u16..300).prop_map(Op::Get),
            (0u16..3).prop_map(Op::Retain),
        ]
    }

    proptest! {
        #[test]
        fn it_behaves_as_a_hash_map_with_a_maximum(ops in prop::collection::vec(op(), 1..400)) {
            let mut map: FlowMap<u32> = FlowMap::new(200);
            let mut model: HashMap<FlowKey, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let got = map.insert(key(k), FlowMap::<u32>::hash(&key(k)), v);
                        if model.len() >= 200 && !model.contains_key(&key(k)) {
                            prop_assert_eq!(got, Err(Full));
                        } else {
                            prop_assert_eq!(got, Ok(()));
                            model.insert(key(k), v);
                        }
                    }
                    Op::Get(k) => {
                        let h = FlowMap::<u32>::hash(&key(k));
                        prop_assert_eq!(map.get_mut(&key(k), h).copied(), model.get(&key(k)).copied());
                    }
                    Op::Retain(r) => {
                        map.retain(|k, _| k.src_port % 3 != r);
                        model.retain(|k, _| k.src_port % 3 != r);
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                for (k, v) in &model {
                    prop_assert_eq!(map.get_mut(k, FlowMap::<u32>::hash(k)).copied(), Some(*v));
                }
                prop_assert!(map.capacity() <= slots_for(200));
            }
        }
    }

    #[test]
    fn keys_that_collide_on_their_home_slot_survive_removals_around_them() {
        let mut map: FlowMap<u16> = FlowMap::new(1000);
        // Force every key to one home slot: the same hash, distinct keys.
        for n in 0..12 {
            map.insert(key(n), 5, n).unwrap();
        }
        map.retain(|k, _| k.src_port % 2 == 0);
        for n in 0..12 {
            assert_eq!(map.get_mut(&key(n), 5).copied(), (n % 2 == 0).then_some(n));
        }
        assert_eq!(map.len(), 6);
        assert_eq!(map.iter().count(), 6);
    }
}
