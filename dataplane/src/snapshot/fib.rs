//! The IPv4 FIB kept across publications: two DIR-24-8 tables used alternately, each
//! brought up to date by deltas when no reader holds it any more, and next-hop ids that
//! stay the same for a next hop's lifetime.
//!
//! Building the IPv4 table again for every publication costs a fresh 64 MiB of address
//! space, its page faults and zeroing (tens of milliseconds once the pods' /32s spread
//! over it), and the memory of the table it replaces. Instead [`FibTables`] keeps the
//! table the current snapshot serves and the one the snapshot before served (the
//! *spare*). At the next publication the spare, once its last reader let go of it (its
//! `Arc` is unique again), is changed in place from the routes it holds to the new ones
//! ([`Ipv4Lpm::update`]: a pod's /32 is one group refilled and one word) and published;
//! the current one becomes the spare. A batch therefore never sees half an update: it
//! holds the snapshot, and with it the table, it started with. When the spare is still
//! held (a worker stuck on an old snapshot) or an update fails, the table is built from
//! scratch, as before; [`FibStats`] counts both paths.
//!
//! Deltas stay small only if a route keeps its value, the next-hop id, while its next hop
//! lives. Interface and node indices are positions in the snapshot and move when a pod or
//! node is added before them, so ids are assigned by what a next hop *is*: the interface's
//! name and MAC for a local pod, the node's name and tunnel for a remote node, the next
//! hop itself otherwise. A freed id is reused by the next new next hop. (IPv6 tables are
//! built per publication: their size follows the number of routes, not the address
//! space.)

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{Mac, NextHop, Tunnel};
use crate::route::v4::DEFAULT_TBL8_GROUPS_LIMIT;
use crate::route::{Ipv4Lpm, Ipv4Routes, LpmError};

/// What a next-hop id is kept for across publications.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum HopKey {
    Local(String, Mac),
    Remote(String, Tunnel),
    Other(NextHop),
}

/// How the IPv4 tables of the publications so far were made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FibStats {
    /// Tables built from scratch (the first two publications, a spare still held, a
    /// failed update).
    pub full_builds: u64,
    /// Tables brought up to date in place.
    pub updates: u64,
    /// Prefixes rewritten by those updates.
    pub prefixes_changed: u64,
    /// Publications that found the spare still held by a reader.
    pub spare_held: u64,
}

#[derive(Debug)]
struct Copy4 {
    table: Arc<Ipv4Lpm>,
    routes: Ipv4Routes,
}

/// See the module doc. Owned by the [`super::Publisher`]; a snapshot built without one
/// ([`super::SnapshotBuilder::build`]) builds its tables from scratch.
#[derive(Debug, Default)]
pub struct FibTables {
    ids: FxHashMap<HopKey, u32>,
    published: Option<Copy4>,
    spare: Option<Copy4>,
    stats: FibStats,
}

impl FibTables {
    /// How the tables were made so far.
    pub fn stats(&self) -> FibStats {
        self.stats
    }

    /// Ids for `hops` (each distinct next hop of the new snapshot, with its key): a next
    /// hop keeps the id its key had, a new one takes the lowest id free. Returns the id of
    /// each hop, in order, and the number of ids (the next-hop table's length).
    pub(super) fn assign(&mut self, hops: &[(HopKey, NextHop)]) -> (Vec<u32>, usize) {
        let old = std::mem::take(&mut self.ids);
        let mut taken: Vec<bool> = Vec::new();
        let mut ids: Vec<Option<u32>> = Vec::with_capacity(hops.len());
        for (key, _) in hops {
            let id = old.get(key).copied().filter(|&id| {
                let i = id as usize;
                if taken.len() <= i {
                    taken.resize(i + 1, false);
                }
                !std::mem::replace(&mut taken[i], true)
            });
            ids.push(id);
        }
        let mut next_free = 0usize;
        let mut out = Vec::with_capacity(hops.len());
        for ((key, _), id) in hops.iter().zip(ids) {
            let id = id.unwrap_or_else(|| {
                while taken.get(next_free).copied().unwrap_or(false) {
                    next_free += 1;
                }
                if taken.len() <= next_free {
                    taken.resize(next_free + 1, false);
                }
                taken[next_free] = true;
                next_free as u32
            });
            self.ids.insert(key.clone(), id);
            out.push(id);
        }
        (out, taken.len())
    }

    /// The IPv4 table for `routes`: the spare brought up to date when no one holds it,
    /// else one built from scratch. The table returned is the one published next.
    ///
    /// # Errors
    /// What building the table from scratch reports.
    pub(super) fn v4(&mut self, routes: Ipv4Routes) -> Result<Arc<Ipv4Lpm>, LpmError> {
        if let Some(mut spare) = self.spare.take() {
            match Arc::get_mut(&mut spare.table) {
                Some(table) => {
                    if let Ok(n) = table.update(&spare.routes, &routes) {
                        self.stats.updates += 1;
                        self.stats.prefixes_changed += n as u64;
                        spare.routes = routes;
                        let out = Arc::clone(&spare.table);
                        self.spare = self.published.replace(spare);
                        return Ok(out);
                    }
                    // Refused (the groups would run out): a build from scratch reports it.
                }
                // A reader still holds the old snapshot; the publisher frees it later.
                None => self.stats.spare_held += 1,
            }
        }
        let table = Arc::new(Ipv4Lpm::from_routes(&routes, DEFAULT_TBL8_GROUPS_LIMIT)?);
        self.stats.full_builds += 1;
        self.spare = self.published.replace(Copy4 {
            table: Arc::clone(&table),
            routes,
        });
        Ok(table)
    }
}

#[cfg(test)]
mod tests;
