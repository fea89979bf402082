//! The attachments `weir-cni` made on this node, persisted so that an agent restart (a
//! DaemonSet rollout, a crash, `kill -9`) keeps every pod attached.
//!
//! Without it the attachments lived only in the agent's memory: a new agent knew the
//! leases (IPAM persists them) but not which interface, namespace and MAC belonged to
//! them, so it published no endpoint and put no port on a worker, and every pod attached
//! before the restart was cut off until the runtime recreated it.
//!
//! One JSON file per attachment in `<cni.ipamDir>/attachments-<node>/`, named after the
//! attachment's host-side interface (a hash of the container id and interface name, so a
//! safe file name whatever the runtime's ids look like). A file is written atomically
//! (temporary file, fsync, rename, fsync of the directory) during ADD, before ADD answers
//! success, and removed by DEL and GC: a record exists for every attachment the runtime
//! was told about, and the rename means a crash leaves either the old state or the new,
//! never half a file. Each record carries a format `version`; a file this agent cannot
//! read (corrupt, truncated by hand, written by a newer weir) is reported with its path
//! and why, left in place for the operator, and skipped: it never stops the others from
//! being restored.
//!
//! At start the agent calls [`restore`]: an attachment whose network namespace and
//! host-side interface still exist is adopted again as it was (same addresses, same MACs:
//! the pod never notices the agent was gone except for the outage); one whose namespace
//! still exists but whose veth pair vanished gets a new pair; one whose namespace is gone
//! is garbage (the pod died while no agent watched) and its addresses are released and its
//! record removed. "Still exists" means the same namespace: its inode is recorded, because
//! a `/proc/<pid>/ns/net` path outlives its pod when the pid is reused.

use std::fs::File;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::calc::Attachment;
use crate::cni::host_interface;
use crate::ipam::Ipam;
use crate::policy::model::NamespacedName;

/// The record format this agent writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// One attachment, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The format ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The runtime's container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface inside the pod (`CNI_IFNAME`).
    pub ifname: String,
    /// The pod's network namespace as the runtime named it (`CNI_NETNS`).
    pub netns: String,
    /// That namespace's inode when attached: a `/proc/<pid>/ns/net` path whose process
    /// died and whose pid was reused names another namespace, which must not be adopted.
    #[serde(default)]
    pub netns_inode: Option<u64>,
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The host-side interface.
    pub host_interface: String,
    /// Its MAC.
    pub host_mac: String,
    /// The pod interface's MAC.
    pub pod_mac: String,
    /// The pod's addresses.
    pub ips: Vec<IpAddr>,
    /// The pod interface's MTU.
    pub mtu: u16,
}

impl Record {
    /// The attachment the control loop publishes for this record.
    pub fn attachment(&self) -> Attachment {
        Attachment {
            pod: NamespacedName::new(&self.pod_namespace, &self.pod_name),
            container_id: self.container_id.clone(),
            interface: self.host_interface.clone(),
            mac: self.pod_mac.clone(),
            host_mac: Some(self.host_mac.clone()).filter(|m| !m.is_empty()),
            mtu: Some(self.mtu).filter(|&m| m > 0),
            ips: self.ips.clone(),
        }
    }
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// A file or the directory could not be read or written.
    #[error("attachment store {path}: {why}")]
    Io {
        /// The file or directory.
        path: String,
        /// The operating system's answer.
        why: String,
    },
    /// A record could not be read; the file stays where it is.
    #[error("attachment record {path} skipped: {why}; move it away or fix it (the pod it held stays unattached until its runtime re-adds it)")]
    Unreadable {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

fn io(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// What [`AttachmentStore::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The records read.
    pub records: Vec<Record>,
    /// The files that could not be read (each an [`StoreError::Unreadable`] or `Io`).
    pub problems: Vec<StoreError>,
}

/// One node's attachment records. See the module doc.
#[derive(Debug, Clone)]
pub struct AttachmentStore {
    dir: PathBuf,
}

impl AttachmentStore {
    /// The store of `node` under IPAM's state directory (created when missing).
    pub fn open(ipam_dir: &Path, node: &str) -> Result<AttachmentStore, StoreError> {
        let dir = ipam_dir.join(format!("attachments-{node}"));
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(AttachmentStore { dir })
    }

    /// The directory the records are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the attachment (`container_id`, `ifname`).
    pub fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", host_interface(container_id, ifname)))
    }

    /// Writes `record` durably: once this returns, a crash or power loss leaves it whole.
    pub fn save(&self, record: &Record) -> Result<(), StoreError> {
        let path = self.path(&record.container_id, &record.ifname);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(record).map_err(|e| io(&path, e))?;
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&text)?;
                f.sync_all()
            })
            .map_err(|e| io(&tmp, e));
        if let Err(e) =
            written.and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| io(&path, e)))
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.sync_dir()
    }

    /// Removes the record of (`container_id`, `ifname`); `Ok(false)` when there was none.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<bool, StoreError> {
        let path = self.path(container_id, ifname);
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_dir().map(|()| true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// The record of (`container_id`, `ifname`), if there is one.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Option<Record>, StoreError> {
        let path = self.path(container_id, ifname);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let r = parse(&path, &bytes)?;
                if r.container_id != container_id || r.ifname != ifname {
                    return Err(unreadable(&path, "it names another attachment"));
                }
                Ok(Some(r))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Every record, in file-name order, and the files that could not be read. Temporary
    /// files a crash left mid-write are removed (their attachment never answered success).
    pub fn load(&self) -> Loaded {
        let mut loaded = Loaded::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                loaded.problems.push(io(&self.dir, e));
                return loaded;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".json.tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                loaded
                    .problems
                    .push(unreadable(&path, "not an attachment record (*.json)"));
                continue;
            }
            let record = std::fs::read(&path)
                .map_err(|e| io(&path, e))
                .and_then(|bytes| parse(&path, &bytes))
                .and_then(|r| {
                    if self.path(&r.container_id, &r.ifname) == path {
                        Ok(r)
                    } else {
                        Err(unreadable(
                            &path,
                            "its name is not that of the attachment it holds",
                        ))
                    }
                });
            match record {
                Ok(r) => loaded.records.push(r),
                Err(e) => loaded.problems.push(e),
            }
        }
        loaded
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.dir, e))
    }
}

fn unreadable(path: &Path, why: impl Into<String>) -> StoreError {
    StoreError::Unreadable {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// Reads one record, its version checked before its fields.
fn parse(path: &Path, bytes: &[u8]) -> Result<Record, StoreError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| unreadable(path, format!("not JSON: {e}")))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(unreadable(
                path,
                format!("format version {v}, this agent reads {FORMAT_VERSION}"),
            ))
        }
        None => return Err(unreadable(path, "no format version")),
    }
    serde_json::from_value(value).map_err(|e| unreadable(path, e.to_string()))
}

/// What [`restore`] did.
#[derive(Debug, Default)]
pub struct Restored {
    /// Attachments adopted again (their interfaces exist, or were made again).
    pub adopted: Vec<Attachment>,
    /// Records whose pod is gone: addresses released, interface and record removed.
    pub released: Vec<Record>,
    /// What went wrong, one line each (unreadable files, failed clean-ups).
    pub problems: Vec<String>,
}

/// Rebuilds this node's attachments from `store` at agent start (see the module doc).
/// `replumb` makes a vanished veth pair again for a pod whose namespace still exists and
/// returns (host MAC, pod MAC).
pub fn restore(
    store: &AttachmentStore,
    ipam: &mut Ipam,
    mut replumb: impl FnMut(&Record) -> Result<(String, String), String>,
) -> Restored {
    let loaded = store.load();
    let mut restored = Restored {
        problems: loaded.problems.iter().map(ToString::to_string).collect(),
        ..Restored::default()
    };
    for mut record in loaded.records {
        let alive = match record.netns_inode {
            Some(inode) => netns_inode(&record.netns) == Some(inode),
            None => Path::new(&record.netns).exists(),
        };
        if !alive {
            // An interface that is not there is fine: the pair may have gone with the
            // pod's namespace.
            let clean = ipam
                .release(&record.container_id, Some(&record.ifname))
                .map(drop)
                .map_err(|e| e.to_string())
                .and(crate::netlink::delete_link(&record.host_interface));
            match clean.and_then(|()| {
                store
                    .remove(&record.container_id, &record.ifname)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }) {
                Ok(()) => restored.released.push(record),
                Err(why) => restored.problems.push(format!(
                    "pod {}/{} (namespace {} gone): {why}",
                    record.pod_namespace, record.pod_name, record.netns
                )),
            }
            continue;
        }
        let leased: Vec<IpAddr> = ipam
            .leases()
            .iter()
            .filter(|(_, l)| l.container_id == record.container_id && l.ifname == record.ifname)
            .map(|(ip, _)| *ip)
            .collect();
        if let Some(ip) = record.ips.iter().find(|ip| !leased.contains(ip)) {
            restored.problems.push(format!(
                "pod {}/{}: IPAM holds no lease for its address {ip}; adopted anyway (the pod \
                 uses it), but IPAM may hand it out again: DEL and re-ADD the pod",
                record.pod_namespace, record.pod_name
            ));
        }
        if !interface_exists(&record.host_interface) {
            match replumb(&record) {
                Ok((host_mac, pod_mac)) => {
                    record.host_mac = host_mac;
                    record.pod_mac = pod_mac;
                    if let Err(e) = store.save(&record) {
                        restored.problems.push(e.to_string());
                    }
                }
                Err(why) => {
                    restored.problems.push(format!(
                        "pod {}/{}: its interface {} is gone and could not be made again: {why}",
                        record.pod_namespace, record.pod_name, record.host_interface
                    ));
                    continue;
                }
            }
        }
        restored.adopted.push(record.attachment());
    }
    restored
}

/// The inode of the network namespace at `path` (a bind mount or `/proc/<pid>/ns/net`).
pub fn netns_inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn interface_exists(name: &str) -> bool {
    // An unreadable link table counts as "there": nothing is re-created over it.
    crate::netlink::link_exists(name).unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-att-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn record(id: &str) -> Record {
        Record {
            version: FORMAT_VERSION,
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/none".into(),
            netns_inode: Some(4026531992),
            pod_namespace: "shop".into(),
            pod_name: format!("pod-{id}"),
            host_interface: host_interface(id, "eth0"),
            host_mac: "02:00:00:00:00:01".into(),
            pod_mac: "02:00:00:00:00:02".into(),
            ips: vec![
                "198.18.0.5".parse().unwrap(),
                "2001:db8::5".parse().unwrap(),
            ],
            mtu: 1450,
        }
    }

    #[test]
    fn records_round_trip_and_are_removed() {
        let dir = temp_dir("round");
        let store = AttachmentStore::open(&dir, "n1").unwrap();
        assert!(store.dir().ends_with("attachments-n1"));
        let (a, b) = (record("a"), record("b"));
        store.save(&a).unwrap();
        store.save(&b).unwrap();
        assert_eq!(store.find("a", "eth0").unwrap(), Some(a.clone()));
        assert_eq!(store.find("a", "eth1").unwrap(), None);
        let loaded = store.load();
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let mut records = loaded.records;
        records.sort_by(|x, y| x.container_id.cmp(&y.container_id));
        assert_eq!(records, vec![a.clone(), b]);
        assert_eq!(a.attachment().pod, NamespacedName::new("shop", "pod-a"));
        // Overwriting replaces, removing twice is fine.
        let mut a2 = a.clone();
        a2.pod_mac = "02:00:00:00:00:03".into();
        store.save(&a2).unwrap();
        assert_eq!(store.find("a", "eth0").unwrap(), Some(a2));
        assert!(store.remove("a", "eth0").unwrap());
        assert!(!store.remove("a", "eth0").unwrap());
        assert_eq!(store.load().records.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_is_atomic_and_leaves_no_temporary_file() {
        let dir = temp_dir("atomic");
        let store = AttachmentStore::open(&dir, "n1").unwrap();
        let a = record("a");
        store.save(&a).unwrap();
        let names: Vec<String> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![format!("{}.json", a.host_interface)]);
        // A crash mid-write leaves a temporary file beside the old record: the old record
        // is what is read, and the leftover is cleared.
        let path = store.path("a", "eth0");
        std::fs::write(
            path.with_extension("json.tmp"),
            b"{\"version\": 1, \"contai",
        )
        .unwrap();
        let loaded = store.load();
        assert_eq!(loaded.records, vec![a]);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert!(!path.with_extension("json.tmp").exists());
        // A failed write (the directory is gone) is an error naming the file, not a panic.
        std::fs::remove_dir_all(&dir).unwrap();
        let err = store.save(&record("b")).unwrap_err();
        assert!(err.to_string().contains("attachment store"), "{err}");
    }

    #[test]
    fn restore_adopts_live_attachments_and_releases_dead_ones() {
        use crate::policy::model::IpPool;
        use crate::policy::selector::{Labels, Selector};
        let dir = temp_dir("restore");
        let store = AttachmentStore::open(&dir, "n1").unwrap();
        let mut ipam = Ipam::open(&dir, "n1").unwrap();
        let pool = IpPool {
            name: "p".into(),
            cidr: "198.18.70.0/24".parse().unwrap(),
            block_size: 26,
            node_selector: Selector::All,
            disabled: false,
            nat_outgoing: false,
        };
        let mut leased = |id: &str| {
            let ips = ipam
                .allocate(&[&pool], &Labels::new(), id, "eth0", Some("shop/x"))
                .unwrap();
            let mut r = record(id);
            r.ips = ips;
            r
        };
        // Alive: this process's own namespace, and an interface every namespace has.
        let mut live = leased("live");
        live.netns = "/proc/self/ns/net".into();
        live.netns_inode = netns_inode(&live.netns);
        live.host_interface = "lo".into();
        // The same path, but another namespace than the one attached (a reused pid).
        let mut reused = leased("reused");
        reused.netns = "/proc/self/ns/net".into();
        reused.netns_inode = Some(1);
        // Gone.
        let dead = leased("dead");
        for r in [&live, &reused, &dead] {
            store.save(r).unwrap();
        }
        assert_eq!(ipam.leases().len(), 3);
        let mut replumbed = 0;
        let restored = restore(&store, &mut ipam, |_| {
            replumbed += 1;
            Err("not in this test".into())
        });
        assert_eq!(replumbed, 0, "lo exists: nothing to make again");
        assert!(restored.problems.is_empty(), "{:?}", restored.problems);
        assert_eq!(restored.adopted, vec![live.attachment()]);
        let mut released: Vec<&str> = restored
            .released
            .iter()
            .map(|r| r.container_id.as_str())
            .collect();
        released.sort_unstable();
        assert_eq!(released, ["dead", "reused"]);
        assert_eq!(store.load().records, vec![live.clone()]);
        let left: Vec<&str> = ipam
            .leases()
            .values()
            .map(|l| l.container_id.as_str())
            .collect();
        assert_eq!(left, ["live"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_and_unknown_files_are_reported_and_skipped() {
        let dir = temp_dir("corrupt");
        let store = AttachmentStore::open(&dir, "n1").unwrap();
        let good = record("good");
        store.save(&good).unwrap();
        let bad = store.path("bad", "eth0");
        std::fs::write(&bad, b"{\"version\": 1, \"containerID\": \"ba").unwrap();
        let newer = store.path("newer", "eth0");
        let mut future = serde_json::to_value(record("newer")).unwrap();
        future["version"] = 2.into();
        std::fs::write(&newer, future.to_string()).unwrap();
        let unversioned = store.path("old", "eth0");
        std::fs::write(&unversioned, b"{\"containerID\": \"old\"}").unwrap();
        let misnamed = store.path("elsewhere", "eth0");
        std::fs::write(&misnamed, serde_json::to_vec(&record("other")).unwrap()).unwrap();
        std::fs::write(store.dir().join("notes.txt"), b"hello").unwrap();
        let loaded = store.load();
        assert_eq!(loaded.records, vec![good]);
        let text: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 5, "{text:#?}");
        let says = |path: &Path, what: &str| {
            assert!(
                text.iter()
                    .any(|t| t.contains(&path.display().to_string()) && t.contains(what)),
                "{path:?} / {what}: {text:#?}"
            );
        };
        says(&bad, "not JSON");
        says(&newer, "format version 2, this agent reads 1");
        says(&unversioned, "no format version");
        says(&misnamed, "its name is not that of the attachment");
        says(&store.dir().join("notes.txt"), "not an attachment record");
        // The files stay for the operator.
        assert!(bad.exists() && newer.exists());
        assert!(matches!(
            store.find("bad", "eth0"),
            Err(StoreError::Unreadable { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
