//! The datastore the agent reads cluster state from: a directory of YAML files (loaded
//! whole at start, then object by object on each change, so that one bad edit does not
//! undo the rest) or the Kubernetes API (watched on a runtime of its own).
//!
//! With the file datastore, IPAM's block files (`<cni.ipamDir>/blocks/`, shared by the
//! nodes, see `crate::ipam`) are read beside the YAML as `IPAMBlock` objects: they say
//! which node holds which block, and so what is routed to each node. IPAM writes them, not
//! the operator, so a malformed one never stops an agent from starting: it is refused with
//! its reason (its last good version kept) like a bad edit of a running datastore. With the
//! Kubernetes datastore the `IPAMBlock` objects are watched like every other kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::calc::{Change, Update};
use crate::policy::load::{load_documents_each, Cluster, LoadError, Object};
use crate::policy::model::{Kind, ObjectRef};

use super::{AgentConfig, AgentError, ControlStats, KubernetesConfig};

/// Loads the datastore for a start: every object must be valid, since there is no earlier
/// version to fall back on. Returns the cluster and the objects it was built from.
pub fn load_datastore(dir: &Path) -> Result<(Cluster, LastGood), AgentError> {
    let (cluster, objects, refused) = load_datastore_keeping(dir, &LastGood::new())?;
    if !refused.is_empty() {
        return Err(AgentError::Datastore {
            path: dir.display().to_string(),
            why: refused.join("; "),
        });
    }
    Ok((cluster, objects))
}

/// The objects the running tables were built from, by identity.
pub type LastGood = BTreeMap<ObjectRef, Object>;

/// Loads the datastore object by object, for a change to a running agent. An object that
/// does not decode or validate is refused with its reason and its last good version (in
/// `last`) is kept; a file that cannot be read or parsed keeps what it held before. Returns
/// the cluster, the objects it was built from, and one line per refusal. Fails only when
/// the objects kept and taken do not make a consistent cluster (a duplicate, two pods on
/// one address); then nothing changes.
pub fn load_datastore_keeping(
    dir: &Path,
    last: &LastGood,
) -> Result<(Cluster, LastGood, Vec<String>), AgentError> {
    let err = |why: String| AgentError::Datastore {
        path: dir.display().to_string(),
        why,
    };
    let files = datastore_files(dir).map_err(|e| err(e.to_string()))?;
    let mut taken = LastGood::new();
    let mut refused = Vec::new();
    for f in &files {
        let name = f.display().to_string();
        let results = match std::fs::read_to_string(f) {
            Ok(text) => load_documents_each(&text, &name),
            Err(e) => vec![Err(LoadError::Yaml {
                source_name: name.clone(),
                document: 0,
                message: e.to_string(),
            })],
        };
        let mut unreadable = false;
        for r in results {
            match r {
                Ok(o) => {
                    let id = o.resource.object_ref();
                    if let Some(first) = taken.get(&id) {
                        refused.push(format!(
                            "{id} is defined again in {} (first in {}); the second is ignored",
                            o.origin, first.origin
                        ));
                    } else {
                        taken.insert(id, o);
                    }
                }
                Err(LoadError::Invalid { origin, error }) => match last.get(&error.object) {
                    Some(old) => {
                        refused.push(format!(
                            "{origin}: {error}; its last good version stays in force"
                        ));
                        taken
                            .entry(error.object.clone())
                            .or_insert_with(|| old.clone());
                    }
                    None => refused.push(format!("{origin}: {error}; not applied")),
                },
                Err(other) => {
                    unreadable = true;
                    refused.push(format!(
                        "{other}; what this file held before stays in force"
                    ));
                }
            }
        }
        if unreadable {
            for (id, o) in last.iter().filter(|(_, o)| o.origin.source == name) {
                taken.entry(id.clone()).or_insert_with(|| o.clone());
            }
        }
    }
    let cluster = Cluster::from_objects(taken.values().cloned().collect()).map_err(|errors| {
        err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    })?;
    Ok((cluster, taken, refused))
}

/// Starts the datastore `config` names on a thread of its own, which sends its changes on
/// `updates` until `stop`; returns the kinds the control loop must see listed before its
/// first calculation. The file datastore is read before this returns.
pub(super) fn start(
    config: &AgentConfig,
    updates: Sender<Update>,
    control: &Arc<Mutex<ControlStats>>,
    stop: &'static AtomicBool,
) -> Result<Vec<Kind>, AgentError> {
    Ok(match (&config.datastore, &config.kubernetes) {
        (Some(dir), _) => {
            // At start every object must be valid: there is no earlier version to keep.
            let (_, last_good) = load_datastore(dir)?;
            let blocks = config.cni.as_ref().map(|c| c.ipam_dir.clone());
            let mut objects: Vec<Object> = last_good.values().cloned().collect();
            let mut blocks_good = LastGood::new();
            if let Some(ipam) = &blocks {
                let (taken, refused) = block_objects(ipam, &blocks_good);
                for r in refused {
                    eprintln!("weir agent: IPAM block refused: {r}");
                }
                // An IPAMBlock in the YAML wins over a block file of the same name.
                objects.extend(
                    taken
                        .iter()
                        .filter(|(id, _)| !last_good.contains_key(*id))
                        .map(|(_, o)| o.clone()),
                );
                blocks_good = taken;
            }
            let change = Change::Resync {
                kinds: Kind::ALL.to_vec(),
                objects,
            };
            let noticed = std::time::Instant::now();
            let _ = updates.send(Update::Change { change, noticed });
            for kind in Kind::ALL {
                let _ = updates.send(Update::Synced(kind));
            }
            let (dir, control) = (dir.clone(), control.clone());
            std::thread::Builder::new()
                .name("weir-datastore".into())
                .spawn(move || {
                    let last = Watched {
                        yaml: last_good,
                        blocks: blocks_good,
                    };
                    watch_files(dir, blocks, last, updates, control, stop);
                })
                .map_err(|e| AgentError::Worker(e.to_string()))?;
            Kind::ALL.to_vec()
        }
        (None, k) => {
            let (k, node) = (k.clone().unwrap_or_default(), config.node.clone());
            std::thread::Builder::new()
                .name("weir-kubernetes".into())
                .spawn(move || watch_kubernetes(k, node, updates, stop))
                .map_err(|e| AgentError::Worker(e.to_string()))?;
            eprintln!(
                "weir agent: waiting for the first full list of every kind from the API server"
            );
            crate::k8s::source::watched()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        }
    })
}

/// The datastore's `.yaml`/`.yml` files, in name order.
fn datastore_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// IPAM's block files under `ipam_dir` as `IPAMBlock` objects, by identity (named after
/// the file, which IPAM names after the block: `198.18.64.0_26` is `198-18-64-0-26`, the
/// name the Kubernetes store gives the block's object), and one line per file refused. A
/// refused file whose object has a version in `last` keeps that version.
pub fn block_objects(ipam_dir: &Path, last: &LastGood) -> (LastGood, Vec<String>) {
    let mut taken = LastGood::new();
    let mut refused = Vec::new();
    let files = match crate::ipam::block_files(ipam_dir) {
        Ok(f) => f,
        Err(e) => {
            // The directory cannot be read now: what it held stays.
            refused.push(format!("{e}; the blocks read before stay in force"));
            return (last.clone(), refused);
        }
    };
    for file in files {
        let (path, result) = match file {
            Ok(f) => {
                let path = f.path.clone();
                let doc = serde_json::json!({
                    "apiVersion": "weir.dev/v1",
                    "kind": "IPAMBlock",
                    "metadata": {"name": block_object_name(&f.path)},
                    "spec": {"cidr": f.cidr, "pool": f.pool, "node": f.node},
                });
                let mut loaded = load_documents_each(&doc.to_string(), &path.display().to_string());
                let result = match loaded.pop() {
                    Some(Ok(o)) => Ok(o),
                    Some(Err(LoadError::Invalid { error, .. })) => {
                        Err(format!("{}: {}", error.field, error.message))
                    }
                    Some(Err(other)) => Err(other.to_string()),
                    None => Err("no object".into()),
                };
                (path, result)
            }
            Err((path, why)) => (path, Err(why)),
        };
        let id = ObjectRef::cluster(Kind::IpamBlock, &block_object_name(&path));
        match result {
            Ok(o) => {
                taken.insert(o.resource.object_ref(), o);
            }
            Err(why) => match last.get(&id) {
                Some(old) => {
                    refused.push(format!(
                        "{}: {id}: {why}; its last good version stays in force",
                        path.display()
                    ));
                    taken.insert(id, old.clone());
                }
                None => refused.push(format!("{}: {id}: {why}; not applied", path.display())),
            },
        }
    }
    (taken, refused)
}

/// The object name of a block file: its file name with `_`, `.` and `:` as `-`.
fn block_object_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().replace(['_', '.', ':'], "-"))
        .unwrap_or_default()
}

/// What the file watcher last applied: the YAML's objects and the block files'.
struct Watched {
    yaml: LastGood,
    blocks: LastGood,
}

type Fingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

/// The datastore's YAML files, and IPAM's block files when `blocks` names IPAM's
/// directory, with their size and modification time: a change in this list is a change to
/// apply.
fn datastore_fingerprint(dir: &Path, blocks: Option<&Path>) -> Fingerprint {
    let block_files = blocks
        .and_then(|b| std::fs::read_dir(b.join("blocks")).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()));
    let mut block_files: Vec<PathBuf> = block_files.collect();
    block_files.sort();
    datastore_files(dir)
        .unwrap_or_default()
        .into_iter()
        .chain(block_files)
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

/// Watches the file datastore and, when `blocks` names IPAM's directory, its block files
/// (every 250 ms) and sends each change as a relist of every kind; objects that do not
/// validate keep their last good version (see [`load_datastore_keeping`] and
/// [`block_objects`]).
fn watch_files(
    dir: PathBuf,
    blocks: Option<PathBuf>,
    mut last: Watched,
    updates: Sender<Update>,
    control: Arc<Mutex<ControlStats>>,
    stop: &'static AtomicBool,
) {
    let mut seen = datastore_fingerprint(&dir, blocks.as_deref());
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        let now = datastore_fingerprint(&dir, blocks.as_deref());
        if now == seen {
            continue;
        }
        seen = now;
        let noticed = std::time::Instant::now();
        match load_datastore_keeping(&dir, &last.yaml) {
            Ok((_, kept, mut refused)) => {
                let blocks_kept = match &blocks {
                    Some(ipam) => {
                        let (taken, why) = block_objects(ipam, &last.blocks);
                        refused.extend(why);
                        taken
                    }
                    None => LastGood::new(),
                };
                for r in refused {
                    eprintln!("weir agent: datastore object refused: {r}");
                    let _ = updates.send(Update::Invalid {
                        object: None,
                        message: r,
                    });
                }
                last = Watched {
                    yaml: kept.clone(),
                    blocks: blocks_kept.clone(),
                };
                // An IPAMBlock in the YAML wins over a block file of the same name.
                let change = Change::Resync {
                    kinds: Kind::ALL.to_vec(),
                    objects: kept
                        .values()
                        .cloned()
                        .chain(
                            blocks_kept
                                .into_iter()
                                .filter(|(id, _)| !kept.contains_key(id))
                                .map(|(_, o)| o),
                        )
                        .collect(),
                };
                if updates.send(Update::Change { change, noticed }).is_err() {
                    return;
                }
            }
            Err(e) => {
                if let Ok(mut stats) = control.lock() {
                    stats.rejected += 1;
                }
                eprintln!(
                    "weir agent: datastore change rejected: {e}; the last good tables keep serving"
                );
            }
        }
    }
}

/// Runs the Kubernetes datastore on a runtime of its own until the agent stops (or the
/// client cannot be made: then the error is printed and the updates channel closes).
fn watch_kubernetes(
    k: KubernetesConfig,
    node: String,
    updates: Sender<Update>,
    stop: &'static AtomicBool,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir agent: kubernetes datastore: no runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let client = match crate::k8s::source::client(k.kubeconfig.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("weir agent: kubernetes datastore: {e}");
                return;
            }
        };
        let watching = crate::k8s::source::run(client, node, updates);
        let stopped = async {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            () = watching => {}
            () = stopped => {}
        }
    });
}

/// Publishes this node's WireGuard key on its Node object through the API server (a merge
/// patch of the one annotation): what was done, `Ok(None)` when it was already there, or
/// a warning (the other nodes cannot reach this one until the key is there).
pub(super) fn publish_key_kubernetes(
    k: &KubernetesConfig,
    node: &str,
    key: &weir_crypto::NodeKey,
) -> Result<Option<String>, String> {
    let public = key.public_base64();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("publishing the WireGuard key: no runtime: {e}"))?;
    let patched = runtime.block_on(async {
        let client = crate::k8s::source::client(k.kubeconfig.as_deref()).await?;
        tokio::time::timeout(
            Duration::from_secs(10),
            crate::k8s::node::publish_key(client, node, &public),
        )
        .await
        .map_err(|_| format!("annotating Node {node}: no answer in 10 s"))?
    });
    match patched {
        Ok(true) => Ok(Some(format!(
            "published WireGuard public key {public} on Node {node}"
        ))),
        Ok(false) => Ok(None),
        Err(e) => Err(format!(
            "{e}; the other nodes cannot reach this one until Node {node} carries \
             {}: \"{public}\"",
            crate::wireguard::PUBLIC_KEY_ANNOTATION
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load::Resource;

    #[test]
    fn ipam_block_files_become_block_objects_and_a_bad_one_is_refused_alone() {
        let dir = std::env::temp_dir().join(format!("weir-blockfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            block_objects(&dir, &LastGood::new()).0.is_empty(),
            "no directory yet: no blocks"
        );
        // Two nodes take addresses from one shared pool through IPAM's file store.
        let pool = crate::policy::model::IpPool {
            name: "shared".into(),
            cidr: "198.18.64.0/18".parse().unwrap(),
            block_size: 26,
            node_selector: crate::policy::selector::Selector::All,
            disabled: false,
            nat_outgoing: false,
        };
        let labels = crate::policy::selector::Labels::new();
        for node in ["node-a", "node-b"] {
            let mut ipam = crate::ipam::Ipam::open(&dir, node).unwrap();
            ipam.allocate(&[&pool], &labels, "c1", "eth0", None)
                .unwrap();
        }
        let held = |objects: &LastGood| -> Vec<(String, String, String)> {
            objects
                .values()
                .map(|o| match &o.resource {
                    Resource::IpamBlock(b) => (b.name.clone(), b.cidr.to_string(), b.node.clone()),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let (good, refused) = block_objects(&dir, &LastGood::new());
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(
            held(&good),
            [
                (
                    "198-18-64-0-26".into(),
                    "198.18.64.0/26".into(),
                    "node-a".into()
                ),
                (
                    "198-18-64-64-26".into(),
                    "198.18.64.64/26".into(),
                    "node-b".into()
                ),
            ]
        );
        // A claim being written (empty) is not a block yet; a malformed new file is refused
        // with its reason; a corrupted known block keeps its last good version.
        let blocks = dir.join("blocks");
        std::fs::write(blocks.join("198.18.65.0_26"), "").unwrap();
        std::fs::write(
            blocks.join("198.18.66.0_26"),
            "node-c shared 198.18.66.1/26\n",
        )
        .unwrap();
        std::fs::write(blocks.join("198.18.64.64_26"), "node-b\n").unwrap();
        let (kept, refused) = block_objects(&dir, &good);
        assert_eq!(held(&kept), held(&good), "{refused:?}");
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(
            refused
                .iter()
                .any(|r| r.contains("IPAMBlock 198-18-66-0-26: spec.cidr")
                    && r.contains("not applied")),
            "{refused:?}"
        );
        assert!(
            refused
                .iter()
                .any(|r| r.contains("IPAMBlock 198-18-64-64-26") && r.contains("last good version")),
            "{refused:?}"
        );
        // A released block (its file removed) is gone.
        std::fs::remove_file(blocks.join("198.18.64.64_26")).unwrap();
        let (kept, _) = block_objects(&dir, &kept);
        assert_eq!(held(&kept).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refused_edit_keeps_each_objects_last_good_version() {
        let dir = std::env::temp_dir().join(format!("weir-keeping-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ns = |name: &str, label: &str| {
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{team: {label}}}}}\n")
        };
        let set = |cidr: &str| {
            format!(
                "apiVersion: weir.dev/v1\nkind: GlobalNetworkSet\nmetadata: {{name: blocked}}\n\
                 spec: {{nets: [\"{cidr}\"]}}\n"
            )
        };
        std::fs::write(
            dir.join("a.yaml"),
            format!("{}---\n{}", ns("shop", "retail"), set("198.18.5.0/24")),
        )
        .unwrap();
        std::fs::write(dir.join("b.yaml"), ns("bank", "money")).unwrap();
        let (c, last, refused) = load_datastore_keeping(&dir, &LastGood::new()).unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(c.global_network_sets["blocked"].nets.len(), 1);

        // An invalid edit of an existing object keeps its last good version; the valid
        // part of the same file applies; an unreadable file keeps what it held.
        std::fs::write(
            dir.join("a.yaml"),
            format!("{}---\n{}", ns("shop", "online"), set("198.18.5.0/33")),
        )
        .unwrap();
        std::fs::write(dir.join("b.yaml"), "apiVersion: v1\nkind: [unclosed\n").unwrap();
        std::fs::write(dir.join("c.yaml"), set("bad").replace("blocked", "fresh")).unwrap();
        let (c, last2, refused) = load_datastore_keeping(&dir, &last).unwrap();
        assert_eq!(
            c.namespaces["shop"].labels["team"], "online",
            "the valid part applies"
        );
        let kept = &c.global_network_sets["blocked"].nets;
        assert_eq!(kept.len(), 1, "last good version kept");
        assert_eq!(
            c.namespaces["bank"].labels["team"], "money",
            "unreadable file kept"
        );
        assert!(
            !c.global_network_sets.contains_key("fresh"),
            "a new invalid object is not applied"
        );
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused
            .iter()
            .any(|r| r.contains("spec.nets[0]") && r.contains("last good")));
        assert!(refused.iter().any(|r| r.contains("not applied")));

        // A removed file takes its objects with it.
        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        let (c, _, _) = load_datastore_keeping(&dir, &last2).unwrap();
        assert!(
            !c.namespaces.contains_key("bank"),
            "a removed file takes its objects"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
