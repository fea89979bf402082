//! IP address management: pod addresses from weir.dev `IPPool`s, in blocks held by nodes.
//!
//! A pool is cut into blocks of `blockSize`. A node claims a block when it needs one, and
//! hands out the addresses of its blocks to the pods it attaches, so a node's pods share a
//! few routable prefixes (the routes other nodes need). Only pools whose `nodeSelector`
//! matches the node and that are not `disabled` give new blocks.
//!
//! # State on disk (file datastore)
//!
//! Under one directory, shared by every node that can see it:
//!
//! - `blocks/<block>`: one file per claimed block, created with `O_EXCL`, holding the node
//!   name. The filesystem decides races between nodes: a block has one holder.
//! - `leases-<node>.json`: the node's leases (address → container, interface, pod), and
//!   nothing else. It is rewritten whole for every change: written to a temporary file,
//!   `fsync`ed, renamed over the old one, and the directory `fsync`ed, so a crash leaves
//!   either the old or the new version, never a mix.
//!
//! A lease is written before the address is used, so an attach cut short (a killed plugin,
//! a crash) leaks at worst a lease that `DEL` or `GC` finds by its container id. The same
//! container and interface asking again get the same address (runtimes retry `ADD`).
//!
//! One node's allocations are made by its agent alone, under a lock: concurrency between
//! plugin invocations is resolved there, never in the filesystem.
//!
//! With the Kubernetes datastore the same allocator keeps its state in `IPAMBlock`
//! objects instead (`crate::k8s::ipam`): a block is claimed by creating its object, which
//! the API server refuses a second time, and its leases are changed with optimistic
//! concurrency on resourceVersion.
//!
//! Why not host-local: it allocates from one fixed range per node given in the network
//! configuration; weir's pools, selectors and blocks are cluster objects, and leases must
//! be reclaimable by container id.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::policy::model::{IpFamily, IpPool};
use crate::policy::selector::Labels;

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The runtime's container id.
    pub container_id: String,
    /// The interface inside the container.
    pub ifname: String,
    /// `namespace/name` of the pod, when the runtime said.
    #[serde(default)]
    pub pod: Option<String>,
    /// The pool it came from.
    pub pool: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LeaseFile {
    version: u32,
    leases: BTreeMap<IpAddr, Lease>,
}

/// Why an address could not be had.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    /// No pool serves this node.
    #[error("no enabled IPPool selects node {node}: create one (weir.dev/v1 IPPool) whose nodeSelector matches it")]
    NoPool { node: String },
    /// Every pool of a family is full.
    #[error("the {family} pools for node {node} are exhausted ({pools}): every block is claimed and every address of this node's blocks is leased")]
    Exhausted {
        node: String,
        family: IpFamily,
        pools: String,
    },
    /// The state directory could not be read or written.
    #[error("IPAM state {path}: {why}")]
    Io { path: String, why: String },
}

/// Where IPAM keeps its blocks and leases: files ([`FileStore`]) or, with the Kubernetes
/// datastore, `IPAMBlock` objects (`crate::k8s::ipam::KubeStore`).
pub trait Store: Send + std::fmt::Debug {
    /// The blocks `node` holds (block to pool) and their leases.
    #[allow(clippy::type_complexity)]
    fn load(
        &mut self,
        node: &str,
    ) -> Result<(BTreeMap<IpNet, String>, BTreeMap<IpAddr, Lease>), IpamError>;
    /// Claims `block` of `pool` for `node`; `Ok(false)` when another node holds it.
    fn claim(&mut self, node: &str, pool: &str, block: &IpNet) -> Result<bool, IpamError>;
    /// Makes the stored leases of the `changed` blocks those of `leases` (every lease of
    /// the node is given), durably, before returning.
    fn save(
        &mut self,
        node: &str,
        blocks: &BTreeMap<IpNet, String>,
        leases: &BTreeMap<IpAddr, Lease>,
        changed: &[IpNet],
    ) -> Result<(), IpamError>;
}

/// The file store. See the module doc.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
}

/// One node's allocator over a [`Store`]. See the module doc.
#[derive(Debug)]
pub struct Ipam {
    store: Box<dyn Store>,
    node: String,
    leases: BTreeMap<IpAddr, Lease>,
    /// Blocks this node holds, by pool name.
    blocks: BTreeMap<IpNet, String>,
    /// Reservations so far ([`Ipam::reserve`] tickets).
    reserved: u64,
    /// Every reservation up to this ticket is stored (or was refused).
    stored: u64,
    /// Reservations not stored yet: ticket and addresses.
    pending: Vec<(u64, Vec<IpAddr>)>,
    /// Recent failed writes: the tickets they covered and why (the last few).
    failed: Vec<(std::ops::RangeInclusive<u64>, IpamError)>,
}

/// A reservation [`Ipam::commit`] makes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a reservation is not stored until it is committed"]
pub struct Ticket(u64);

fn io_err(path: &Path, e: impl std::fmt::Display) -> IpamError {
    IpamError::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Every address of a network, its first and last included.
fn every_address(net: &IpNet) -> impl Iterator<Item = IpAddr> {
    let (v6, first, last) = match net {
        IpNet::V4(n) => (
            false,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (true, u128::from(n.network()), u128::from(n.broadcast())),
    };
    (first..=last).map(move |x| {
        if v6 {
            IpAddr::V6(x.into())
        } else {
            IpAddr::V4((x as u32).into())
        }
    })
}

/// A block's file name: its CIDR with `/` and `:` replaced.
fn block_file(block: &IpNet) -> String {
    block.to_string().replace(['/', ':'], "_")
}

impl FileStore {
    /// The store under `dir` (created if needed).
    pub fn new(dir: &Path) -> Result<FileStore, IpamError> {
        let blocks_dir = dir.join("blocks");
        fs::create_dir_all(&blocks_dir).map_err(|e| io_err(&blocks_dir, e))?;
        Ok(FileStore {
            dir: dir.to_owned(),
        })
    }
}

/// A block file as its holder wrote it (see the module doc): the fields are not checked
/// here; the agent's datastore validates them as an `IPAMBlock` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockFile {
    /// The file.
    pub path: PathBuf,
    /// The node holding the block.
    pub node: String,
    /// The pool it was cut from.
    pub pool: String,
    /// The block's CIDR.
    pub cidr: String,
}

/// Every claimed block under the state directory `dir`, with its holder: what other nodes
/// route to each node. A file that does not hold the three fields is an `Err` with its path;
/// an empty file is skipped (a claim being written: `claim` creates the file, then writes
/// it). No `blocks` directory yet is no block.
#[allow(clippy::type_complexity)]
pub fn block_files(dir: &Path) -> Result<Vec<Result<BlockFile, (PathBuf, String)>>, IpamError> {
    let dir = dir.join("blocks");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir, e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                out.push(Err((path, e.to_string())));
                continue;
            }
        };
        let parts: Vec<&str> = text.split_whitespace().collect();
        match parts[..] {
            [] => {}
            [node, pool, cidr] => out.push(Ok(BlockFile {
                node: node.to_owned(),
                pool: pool.to_owned(),
                cidr: cidr.to_owned(),
                path,
            })),
            _ => out.push(Err((
                path,
                format!("a block file holds \"<node> <pool> <cidr>\", not {text:?}"),
            ))),
        }
    }
    Ok(out)
}

impl Store for FileStore {
    fn load(
        &mut self,
        node: &str,
    ) -> Result<(BTreeMap<IpNet, String>, BTreeMap<IpAddr, Lease>), IpamError> {
        let path = self.dir.join(format!("leases-{node}.json"));
        let leases = match fs::read(&path) {
            Ok(bytes) => {
                let file: LeaseFile =
                    serde_json::from_slice(&bytes).map_err(|e| io_err(&path, e))?;
                file.leases
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_err(&path, e)),
        };
        let dir = self.dir.join("blocks");
        let mut blocks = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            let mut parts = text.split_whitespace();
            let (Some(owner), Some(pool), Some(cidr)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if owner == node {
                if let Ok(block) = cidr.parse::<IpNet>() {
                    blocks.insert(block, pool.to_owned());
                }
            }
        }
        Ok((blocks, leases))
    }

    fn claim(&mut self, node: &str, pool: &str, block: &IpNet) -> Result<bool, IpamError> {
        let path = self.dir.join("blocks").join(block_file(block));
        let created = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        let mut f = match created {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err(&path, e)),
        };
        let line = format!("{node} {pool} {block}\n");
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.sync_all()) {
            let _ = fs::remove_file(&path);
            return Err(io_err(&path, e));
        }
        fs::File::open(self.dir.join("blocks"))
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&path, e))?;
        Ok(true)
    }

    fn save(
        &mut self,
        node: &str,
        _blocks: &BTreeMap<IpNet, String>,
        leases: &BTreeMap<IpAddr, Lease>,
        _changed: &[IpNet],
    ) -> Result<(), IpamError> {
        let path = self.dir.join(format!("leases-{node}.json"));
        let tmp = self.dir.join(format!(".leases-{node}.json.tmp"));
        let body = serde_json::to_vec_pretty(&LeaseFile {
            version: 1,
            leases: leases.clone(),
        })
        .map_err(|e| io_err(&path, e))?;
        let mut f = fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(&body).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&self.dir, e))
    }
}

impl Ipam {
    /// Opens (creating if needed) the file state under `dir` for node `node`.
    pub fn open(dir: &Path, node: &str) -> Result<Ipam, IpamError> {
        Ipam::with_store(Box::new(FileStore::new(dir)?), node)
    }

    /// Node `node`'s allocator over `store`.
    pub fn with_store(mut store: Box<dyn Store>, node: &str) -> Result<Ipam, IpamError> {
        let (blocks, leases) = store.load(node)?;
        Ok(Ipam {
            store,
            node: node.to_owned(),
            leases,
            blocks,
            reserved: 0,
            stored: 0,
            pending: Vec::new(),
            failed: Vec::new(),
        })
    }

    /// The leases held, by address.
    pub fn leases(&self) -> &BTreeMap<IpAddr, Lease> {
        &self.leases
    }

    /// The blocks this node holds.
    pub fn blocks(&self) -> impl Iterator<Item = &IpNet> {
        self.blocks.keys()
    }

    /// Persists the leases of the blocks holding `ips`.
    fn save(&mut self, ips: &[IpAddr]) -> Result<(), IpamError> {
        let changed: Vec<IpNet> = self
            .blocks
            .keys()
            .filter(|b| ips.iter().any(|ip| b.contains(ip)))
            .copied()
            .collect();
        self.store
            .save(&self.node, &self.blocks, &self.leases, &changed)
    }

    /// The addresses for `container_id`/`ifname`: one per family that has a pool for this
    /// node (`node_labels` are matched against each pool's nodeSelector), stored before
    /// this returns. The same container and interface get the addresses they already
    /// hold. [`Ipam::reserve`] then [`Ipam::commit`].
    pub fn allocate(
        &mut self,
        pools: &[&IpPool],
        node_labels: &Labels,
        container_id: &str,
        ifname: &str,
        pod: Option<&str>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let (ips, ticket) = self.reserve(pools, node_labels, container_id, ifname, pod)?;
        self.commit(ticket)?;
        Ok(ips)
    }

    /// [`Ipam::allocate`] without the write: the addresses are leased in memory (no one
    /// else gets them) and stored by the [`Ipam::commit`] of this ticket or of any later
    /// one. Group commit: concurrent attaches reserve, then the first to commit stores
    /// every reservation so far in one write (one `fsync`), and the others find theirs
    /// stored. An address must not be used before its ticket is committed.
    pub fn reserve(
        &mut self,
        pools: &[&IpPool],
        node_labels: &Labels,
        container_id: &str,
        ifname: &str,
        pod: Option<&str>,
    ) -> Result<(Vec<IpAddr>, Ticket), IpamError> {
        let held: Vec<IpAddr> = self
            .leases
            .iter()
            .filter(|(_, l)| l.container_id == container_id && l.ifname == ifname)
            .map(|(ip, _)| *ip)
            .collect();
        if !held.is_empty() {
            // Possibly reserved by a request still committing: a ticket that covers it.
            return Ok((held, Ticket(self.reserved)));
        }
        let usable: Vec<&IpPool> = pools
            .iter()
            .copied()
            .filter(|p| !p.disabled && p.node_selector.matches(node_labels))
            .collect();
        if usable.is_empty() {
            return Err(IpamError::NoPool {
                node: self.node.clone(),
            });
        }
        let mut out = Vec::new();
        for family in [IpFamily::V4, IpFamily::V6] {
            let of_family: Vec<&IpPool> = usable
                .iter()
                .copied()
                .filter(|p| IpFamily::of_net(&p.cidr) == family)
                .collect();
            if of_family.is_empty() {
                continue;
            }
            let (ip, pool) = self
                .next_free(&of_family)
                .ok_or_else(|| IpamError::Exhausted {
                    node: self.node.clone(),
                    family,
                    pools: of_family
                        .iter()
                        .map(|p| format!("{} {}", p.name, p.cidr))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            self.leases.insert(
                ip,
                Lease {
                    container_id: container_id.to_owned(),
                    ifname: ifname.to_owned(),
                    pod: pod.map(str::to_owned),
                    pool,
                },
            );
            out.push(ip);
        }
        self.reserved += 1;
        self.pending.push((self.reserved, out.clone()));
        Ok((out, Ticket(self.reserved)))
    }

    /// Stores every reservation made so far, unless `ticket`'s is stored already; a
    /// failed write takes back every reservation it held (their commits all fail).
    pub fn commit(&mut self, ticket: Ticket) -> Result<(), IpamError> {
        if let Some((_, e)) = self.failed.iter().find(|(r, _)| r.contains(&ticket.0)) {
            return Err(e.clone());
        }
        if ticket.0 <= self.stored {
            return Ok(());
        }
        let upto = self.reserved;
        let ips: Vec<IpAddr> = self
            .pending
            .iter()
            .flat_map(|(_, ips)| ips.iter().copied())
            .collect();
        let written = self.save(&ips);
        let covered = self.stored + 1..=upto;
        self.stored = upto;
        let pending = std::mem::take(&mut self.pending);
        match written {
            Ok(()) => Ok(()),
            Err(e) => {
                for ip in pending.iter().flat_map(|(_, ips)| ips) {
                    self.leases.remove(ip);
                }
                if self.failed.len() >= 16 {
                    self.failed.remove(0);
                }
                self.failed.push((covered, e.clone()));
                Err(e)
            }
        }
    }

    /// A free address from this node's blocks of these pools, claiming a new block when
    /// they are full.
    fn next_free(&mut self, pools: &[&IpPool]) -> Option<(IpAddr, String)> {
        for pool in pools {
            let blocks: Vec<IpNet> = self
                .blocks
                .iter()
                .filter(|(b, name)| **name == pool.name && pool.cidr.contains(*b))
                .map(|(b, _)| *b)
                .collect();
            for block in blocks {
                if let Some(ip) = self.free_in(pool, &block) {
                    return Some((ip, pool.name.clone()));
                }
            }
        }
        for pool in pools {
            while let Some(block) = self.claim_block(pool) {
                if let Some(ip) = self.free_in(pool, &block) {
                    return Some((ip, pool.name.clone()));
                }
            }
        }
        None
    }

    /// The first address of `block` not leased (never the pool's first or, for IPv4, last
    /// address: some networks treat them as network and broadcast).
    fn free_in(&self, pool: &IpPool, block: &IpNet) -> Option<IpAddr> {
        let (first, last) = (pool.cidr.network(), pool.cidr.broadcast());
        let reserved = |ip: IpAddr| ip == first || (ip == last && ip.is_ipv4());
        every_address(block)
            .take(1 << 16)
            .find(|ip| !reserved(*ip) && !self.leases.contains_key(ip))
    }

    /// Claims the next unclaimed block of a pool; `None` when all are claimed (or the
    /// store fails, which the caller reports as exhaustion of what it could reach).
    fn claim_block(&mut self, pool: &IpPool) -> Option<IpNet> {
        let subnets = pool.cidr.subnets(pool.block_size).ok()?;
        for block in subnets.take(1 << 20) {
            if self.blocks.contains_key(&block) {
                continue;
            }
            match self.store.claim(&self.node, &pool.name, &block) {
                Ok(true) => {
                    self.blocks.insert(block, pool.name.clone());
                    return Some(block);
                }
                Ok(false) => continue,
                Err(e) => {
                    eprintln!("weir agent: IPAM: claiming {block}: {e}");
                    return None;
                }
            }
        }
        None
    }

    /// Releases what `container_id` (and `ifname`, when given) holds; returns the
    /// addresses released. Releasing nothing is not an error (`DEL` is idempotent).
    pub fn release(
        &mut self,
        container_id: &str,
        ifname: Option<&str>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let gone: Vec<IpAddr> = self
            .leases
            .iter()
            .filter(|(_, l)| l.container_id == container_id && ifname.is_none_or(|i| i == l.ifname))
            .map(|(ip, _)| *ip)
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let kept = self.leases.clone();
        for ip in &gone {
            self.leases.remove(ip);
        }
        if let Err(e) = self.save(&gone) {
            self.leases = kept;
            return Err(e);
        }
        Ok(gone)
    }

    /// Garbage collection: releases every lease whose (container, interface) is not in
    /// `valid`; returns the leases released.
    pub fn gc(&mut self, valid: &[(String, String)]) -> Result<Vec<(IpAddr, Lease)>, IpamError> {
        let gone: Vec<(IpAddr, Lease)> = self
            .leases
            .iter()
            .filter(|(_, l)| {
                !valid
                    .iter()
                    .any(|(c, i)| *c == l.container_id && *i == l.ifname)
            })
            .map(|(ip, l)| (*ip, l.clone()))
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let kept = self.leases.clone();
        for (ip, _) in &gone {
            self.leases.remove(ip);
        }
        let ips: Vec<IpAddr> = gone.iter().map(|(ip, _)| *ip).collect();
        if let Err(e) = self.save(&ips) {
            self.leases = kept;
            return Err(e);
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::selector::Selector;

    fn pool(name: &str, cidr: &str, block: u8) -> IpPool {
        IpPool {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size: block,
            node_selector: Selector::All,
            disabled: false,
            nat_outgoing: false,
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weir-ipam-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// A store in memory that counts its writes and can be told to fail them.
    #[derive(Debug, Default)]
    struct Counting {
        saves: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
        stored: std::sync::Arc<std::sync::Mutex<BTreeMap<IpAddr, Lease>>>,
    }

    impl Store for Counting {
        fn load(
            &mut self,
            _node: &str,
        ) -> Result<(BTreeMap<IpNet, String>, BTreeMap<IpAddr, Lease>), IpamError> {
            Ok(Default::default())
        }
        fn claim(&mut self, _: &str, _: &str, _: &IpNet) -> Result<bool, IpamError> {
            Ok(true)
        }
        fn save(
            &mut self,
            _: &str,
            _: &BTreeMap<IpNet, String>,
            leases: &BTreeMap<IpAddr, Lease>,
            _: &[IpNet],
        ) -> Result<(), IpamError> {
            use std::sync::atomic::Ordering::SeqCst;
            if self.fail.load(SeqCst) {
                return Err(IpamError::Io {
                    path: "test".into(),
                    why: "refused".into(),
                });
            }
            self.saves.fetch_add(1, SeqCst);
            *self.stored.lock().unwrap() = leases.clone();
            Ok(())
        }
    }

    #[test]
    fn reservations_made_together_are_stored_in_one_write_and_a_failed_one_takes_them_back() {
        use std::sync::atomic::Ordering::SeqCst;
        let store = Counting::default();
        let (saves, fail, stored) = (
            store.saves.clone(),
            store.fail.clone(),
            store.stored.clone(),
        );
        let mut ipam = Ipam::with_store(Box::new(store), "n1").unwrap();
        let p = pool("v4", "198.18.0.0/24", 26);
        let labels = Labels::new();
        let reserve = |ipam: &mut Ipam, c: &str| ipam.reserve(&[&p], &labels, c, "eth0", None);
        let (a, ta) = reserve(&mut ipam, "a").unwrap();
        let (b, tb) = reserve(&mut ipam, "b").unwrap();
        let (c, tc) = reserve(&mut ipam, "c").unwrap();
        assert_eq!(saves.load(SeqCst), 0, "nothing written before a commit");
        ipam.commit(tb).unwrap();
        assert_eq!(saves.load(SeqCst), 1);
        for ip in a.iter().chain(&b).chain(&c) {
            assert!(stored.lock().unwrap().contains_key(ip), "{ip} stored");
        }
        ipam.commit(ta).unwrap();
        ipam.commit(tc).unwrap();
        assert_eq!(saves.load(SeqCst), 1, "one write for the three");

        // A write that fails: every reservation it carried fails and is taken back.
        fail.store(true, SeqCst);
        let (d, td) = reserve(&mut ipam, "d").unwrap();
        let (e, te) = reserve(&mut ipam, "e").unwrap();
        assert!(ipam.commit(te).is_err());
        assert!(ipam.commit(td).is_err(), "the same write carried it");
        assert!(!ipam.leases().contains_key(&d[0]) && !ipam.leases().contains_key(&e[0]));
        // Later reservations are not blamed for it.
        fail.store(false, SeqCst);
        let (f, tf) = reserve(&mut ipam, "f").unwrap();
        ipam.commit(tf).unwrap();
        assert!(stored.lock().unwrap().contains_key(&f[0]));
        assert_eq!(ipam.leases().len(), 4, "a, b, c and f");
    }

    #[test]
    fn addresses_are_distinct_persisted_and_idempotent_per_container() {
        let d = dir("basic");
        let (p4, p6) = (
            pool("v4", "198.18.0.0/24", 28),
            pool("v6", "2001:db8::/120", 124),
        );
        let pools = [&p4, &p6];
        let labels = Labels::new();
        let mut ipam = Ipam::open(&d, "n1").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..40 {
            let ips = ipam
                .allocate(&pools, &labels, &format!("c{i}"), "eth0", Some("ns/p"))
                .unwrap();
            assert_eq!(ips.len(), 2, "one address per family");
            for ip in ips {
                assert!(seen.insert(ip), "{ip} handed out twice");
                assert_ne!(ip, "198.18.0.0".parse::<IpAddr>().unwrap());
            }
        }
        // Retry of an ADD: same answer.
        let again = ipam.allocate(&pools, &labels, "c3", "eth0", None).unwrap();
        assert!(again
            .iter()
            .all(|ip| ipam.leases()[ip].container_id == "c3"));
        // 40 addresses in blocks of 16: three IPv4 blocks held.
        assert_eq!(ipam.blocks().filter(|b| b.addr().is_ipv4()).count(), 3);
        // Reopened from disk: the same leases and blocks.
        let reopened = Ipam::open(&d, "n1").unwrap();
        assert_eq!(reopened.leases(), ipam.leases());
        assert_eq!(reopened.blocks().count(), ipam.blocks().count());
        // Release and GC.
        assert_eq!(ipam.release("c0", Some("eth0")).unwrap().len(), 2);
        assert!(
            ipam.release("c0", Some("eth0")).unwrap().is_empty(),
            "DEL twice is fine"
        );
        let valid: Vec<(String, String)> =
            (1..10).map(|i| (format!("c{i}"), "eth0".into())).collect();
        let collected = ipam.gc(&valid).unwrap();
        assert_eq!(collected.len(), 30 * 2);
        assert_eq!(ipam.leases().len(), 9 * 2);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn nodes_never_share_a_block_and_a_full_pool_is_a_clear_error() {
        let d = dir("nodes");
        let p = pool("small", "198.18.1.0/29", 30);
        let pools = [&p];
        let labels = Labels::new();
        let mut a = Ipam::open(&d, "a").unwrap();
        let mut b = Ipam::open(&d, "b").unwrap();
        let mut got = Vec::new();
        for i in 0..3 {
            got.extend(
                a.allocate(&pools, &labels, &format!("a{i}"), "eth0", None)
                    .unwrap(),
            );
            got.extend(
                b.allocate(&pools, &labels, &format!("b{i}"), "eth0", None)
                    .unwrap(),
            );
        }
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            got.len(),
            "no address twice across nodes: {got:?}"
        );
        let ablocks: Vec<_> = a.blocks().copied().collect();
        assert!(b.blocks().all(|blk| !ablocks.contains(blk)));
        // 198.18.1.0/29 less .0 and .7: 6 addresses, all leased now.
        let err = a.allocate(&pools, &labels, "a9", "eth0", None).unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
        assert!(err.to_string().contains("small 198.18.1.0/29"), "{err}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn pools_follow_their_node_selector_and_disabled_flag() {
        let d = dir("select");
        let mut edge = pool("edge", "198.18.2.0/24", 26);
        edge.node_selector = Selector::parse("zone == 'edge'").unwrap();
        let mut off = pool("off", "198.18.3.0/24", 26);
        off.disabled = true;
        let pools = [&edge, &off];
        let mut ipam = Ipam::open(&d, "n").unwrap();
        let err = ipam
            .allocate(&pools, &Labels::new(), "c", "eth0", None)
            .unwrap_err();
        assert_eq!(err, IpamError::NoPool { node: "n".into() });
        let labels = Labels::from([("zone".to_owned(), "edge".to_owned())]);
        let ips = ipam.allocate(&pools, &labels, "c", "eth0", None).unwrap();
        assert!(edge.cidr.contains(&ips[0]));
        let _ = fs::remove_dir_all(&d);
    }
}
