//! `weir agent`: attaches the node's interfaces to an AF_XDP worker and forwards with the
//! pipeline, its policy compiled from a file datastore.
//!
//! This first agent reads its endpoints from the datastore directory once at start-up
//! (the watching, incremental control plane comes with its own work): ordinary Kubernetes
//! YAML (Namespaces, Pods with `status.podIPs`, NetworkPolicies and the weir.dev objects).
//! A pod is local to this node when it carries the annotation `weir.dev/interface` (its
//! host-side veth) and `weir.dev/mac` (the MAC of its `eth0`).
//!
//! It serves `/metrics` (Prometheus text), `/healthz` and `/readyz` on a local port, and
//! stops cleanly on SIGTERM or SIGINT; the XDP programs are attached through bpf_links,
//! so the kernel detaches them even if the agent is killed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use weir_dataplane::snapshot::{Mac, PodSpec, Publisher};
use weir_dataplane::{DropReason, SnapshotBuilder};
use weir_workers::afxdp::{PortSpec, Worker, WorkerConfig, WorkerReport};
use weir_workers::bpf::UplinkFilter;

use crate::calc::{drive, Calculator, Change, DriveState, Update};
use crate::policy::compile::Compiled;
use crate::policy::load::{load_documents_each, Cluster, LoadError, Object};
use crate::policy::model::Kind;
use crate::policy::model::ObjectRef;

/// The agent's configuration file (YAML).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name; left out (or empty), the `NODE_NAME` environment variable's
    /// value (a DaemonSet sets it from `spec.nodeName`).
    #[serde(default)]
    pub node: String,
    /// The uplink interface, if the node has one weir should take traffic from.
    #[serde(default)]
    pub uplink: Option<String>,
    /// Pod CIDRs of the cluster: the uplink's XDP program takes traffic to them.
    #[serde(default)]
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// UDP ports the uplink program takes (WireGuard, VXLAN).
    #[serde(default = "default_udp_ports")]
    pub uplink_udp_ports: Vec<u16>,
    /// The cores workers run on, one pinned worker per core. Pod interfaces are spread
    /// over the workers in turn; the uplink goes to the first.
    pub cores: Vec<usize>,
    /// The file datastore: a directory of YAML files. Exactly one of `datastore` and
    /// `kubernetes` is set.
    #[serde(default)]
    pub datastore: Option<PathBuf>,
    /// Read cluster state from the Kubernetes API.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
    /// How long the control loop waits after a change for more before it recalculates
    /// (microseconds): a burst of changes becomes one new snapshot.
    #[serde(default = "default_coalesce")]
    pub coalesce_micros: u64,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Number of UMEM frames.
    #[serde(default = "default_frames")]
    pub frames: u32,
    /// WireGuard between nodes (needs `uplink`).
    #[serde(default)]
    pub wireguard: Option<crate::wireguard::WireGuardConfig>,
    /// Serve `weir-cni` (pods attached and detached at run time, addresses from IPAM).
    #[serde(default)]
    pub cni: Option<crate::attach::CniConfig>,
}

/// Where the Kubernetes datastore finds its API server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file. Left out: the pod's service account (in a cluster), or
    /// `$KUBECONFIG` / `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

fn default_coalesce() -> u64 {
    1000
}

fn default_udp_ports() -> Vec<u16> {
    vec![51820, 4789]
}

fn default_listen() -> String {
    "127.0.0.1:9180".into()
}

fn default_frames() -> u32 {
    4096
}

pub use crate::calc::INTERFACE_ANNOTATION;
pub use crate::calc::MAC_ANNOTATION;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("config {path}: {why}")]
    Config { path: String, why: String },
    #[error("datastore {path}: {why}")]
    Datastore { path: String, why: String },
    #[error("pod {pod}: {why}")]
    Pod { pod: String, why: String },
    #[error("interface {name:?}: {why}")]
    Interface { name: String, why: String },
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("worker: {0}")]
    Worker(String),
    #[error("metrics listener on {addr}: {why}")]
    Listen { addr: String, why: String },
}

impl AgentConfig {
    /// The datastore, for messages.
    pub fn datastore_name(&self) -> String {
        match &self.datastore {
            Some(dir) => dir.display().to_string(),
            None => "kubernetes".into(),
        }
    }

    /// The WireGuard section and its mode, if there is one.
    pub fn wireguard_mode(
        &self,
    ) -> Result<
        Option<(
            &crate::wireguard::WireGuardConfig,
            weir_crypto::EncryptionMode,
        )>,
        AgentError,
    > {
        match &self.wireguard {
            Some(w) => w
                .mode()
                .map(|m| Some((w, m)))
                .map_err(|why| AgentError::Config {
                    path: "wireguard.mode".into(),
                    why,
                }),
            None => Ok(None),
        }
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentError> {
        let err = |why: String| AgentError::Config {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let mut config: AgentConfig =
            serde_path_to_error::deserialize(de).map_err(|e| err(e.to_string()))?;
        config.node = node_name(&config.node, std::env::var("NODE_NAME").ok()).map_err(err)?;
        if config.cores.is_empty() {
            return Err(err("cores: name at least one core".into()));
        }
        match (&config.datastore, &config.kubernetes) {
            (Some(_), None) | (None, Some(_)) => {}
            (None, None) => {
                return Err(err(
                    "name a datastore: `datastore: <directory of YAML>` or `kubernetes: {}`".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "`datastore` and `kubernetes` are both set: choose one".into()
                ))
            }
        }
        // The machine's CPUs, not this process's affinity mask (which a parent may have
        // narrowed): workers pin themselves.
        let cpus = std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
            .unwrap_or(0)
            .max(std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut seen = std::collections::BTreeSet::new();
        for &core in &config.cores {
            if !seen.insert(core) {
                return Err(err(format!("cores: core {core} is named twice")));
            }
            if core >= cpus {
                return Err(err(format!(
                    "cores: core {core} does not exist here (CPUs 0..{})",
                    cpus - 1
                )));
            }
        }
        if config.frames < 512 || !config.frames.is_power_of_two() {
            return Err(err(format!(
                "frames: {} is not a power of two of at least 512",
                config.frames
            )));
        }
        if let Some(wg) = &config.wireguard {
            let mode = wg.mode().map_err(|e| err(format!("wireguard.mode: {e}")))?;
            if mode != weir_crypto::EncryptionMode::Off {
                if config.uplink.is_none() {
                    return Err(err(
                        "wireguard: needs an uplink (the interface to the other nodes)".into(),
                    ));
                }
                // The uplink's XDP program must hand WireGuard's port to weir.
                if !config.uplink_udp_ports.contains(&wg.port) {
                    config.uplink_udp_ports.push(wg.port);
                }
            }
        }
        Ok(config)
    }
}

/// The node's name: the configuration's, else `NODE_NAME`'s.
fn node_name(configured: &str, env: Option<String>) -> Result<String, String> {
    let name = if configured.trim().is_empty() {
        env.unwrap_or_default()
    } else {
        configured.to_owned()
    };
    let name = name.trim().to_owned();
    if name.is_empty() {
        return Err("node: name this node, or set NODE_NAME".into());
    }
    crate::policy::selector::validate_dns_subdomain(&name)
        .map_err(|why| format!("node: {name:?}: {why}"))?;
    Ok(name)
}

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

/// The datastore's `.yaml`/`.yml` files, in name order.
fn datastore_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
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

fn sysfs(name: &str, what: &str) -> Result<String, AgentError> {
    let path = format!("/sys/class/net/{name}/{what}");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| AgentError::Interface {
            name: name.into(),
            why: format!("{path}: {e}"),
        })
}

/// "aa:bb:cc:dd:ee:ff" as bytes.
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn interface_mac(name: &str) -> Result<Mac, AgentError> {
    let text = sysfs(name, "address")?;
    parse_mac(&text).ok_or_else(|| AgentError::Interface {
        name: name.into(),
        why: format!("unreadable MAC {text:?}"),
    })
}

fn interface_mtu(name: &str) -> Result<u16, AgentError> {
    let text = sysfs(name, "mtu")?;
    text.parse().map_err(|_| AgentError::Interface {
        name: name.into(),
        why: format!("unreadable MTU {text:?}"),
    })
}

/// The snapshot of this node from the datastore, and the interfaces to attach.
pub fn build_node(
    config: &AgentConfig,
    cluster: &Cluster,
    compiled: Compiled,
) -> Result<(SnapshotBuilder, Vec<PortSpec>), AgentError> {
    let mut b = SnapshotBuilder::new();
    let mut ports = Vec::new();
    // Snapshot endpoint ids must be the compiler's: pods are added in id order.
    let mut by_id: Vec<_> = compiled.endpoints.iter().collect();
    by_id.sort_by_key(|(_, &id)| id);
    for (name, &id) in by_id {
        let pod = &cluster.pods[name];
        let who = format!("{}/{}", pod.namespace, pod.name);
        let perr = |why: String| AgentError::Pod {
            pod: who.clone(),
            why,
        };
        let interface = pod.annotations.get(INTERFACE_ANNOTATION).ok_or_else(|| {
            perr(format!(
                "no {INTERFACE_ANNOTATION} annotation: this agent serves one node, and every \
                 pod in its datastore must be local (name its host-side interface)"
            ))
        })?;
        let mac = pod
            .annotations
            .get(MAC_ANNOTATION)
            .and_then(|m| parse_mac(m))
            .ok_or_else(|| perr(format!("{MAC_ANNOTATION}: missing or not a MAC")))?;
        let (mut ipv4, mut ipv6) = (None, None);
        for ip in &pod.ips {
            match ip {
                IpAddr::V4(a) => ipv4 = Some(*a),
                IpAddr::V6(a) => ipv6 = Some(*a),
            }
        }
        // An interface that is gone (its pod's namespace was deleted before DEL) must not
        // stop the node's other changes: the pod keeps its endpoint, with no port, so
        // nothing reaches it, until it is detached.
        let present = interface_mac(interface).and_then(|m| Ok((m, interface_mtu(interface)?)));
        let (gateway_mac, mtu) = match &present {
            Ok((m, t)) => (*m, *t),
            Err(e) => {
                eprintln!("weir agent: pod {who}: {e}; it is unreachable until it is detached");
                ([0x02, 0, 0, 0, 0, 0], 1500)
            }
        };
        let (_, endpoint) = b
            .pod(PodSpec {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                interface: interface.clone(),
                gateway_mac,
                mac,
                ipv4,
                ipv6,
                mtu,
            })
            .map_err(|e| perr(e.to_string()))?;
        if endpoint != id {
            return Err(perr(format!(
                "endpoint id {endpoint} differs from the policy's {id}"
            )));
        }
        if present.is_ok() {
            ports.push(PortSpec {
                name: interface.clone(),
                uplink_filter: None,
            });
        }
    }
    if let Some(up) = &config.uplink {
        b.uplink(up, interface_mac(up)?, interface_mtu(up)?)
            .map_err(|e| AgentError::Snapshot(e.to_string()))?;
        let mut filter = UplinkFilter {
            v4: Vec::new(),
            v6: Vec::new(),
            udp_ports: config.uplink_udp_ports.clone(),
        };
        for net in &config.pod_cidrs {
            match net {
                ipnet::IpNet::V4(n) => filter.v4.push((n.network(), n.prefix_len())),
                ipnet::IpNet::V6(n) => filter.v6.push((n.network(), n.prefix_len())),
            }
        }
        ports.push(PortSpec {
            name: up.clone(),
            uplink_filter: Some(filter),
        });
    }
    b.policy(compiled.tables);
    Ok((b, ports))
}

/// The datastore's YAML files with their size and modification time: a change in this
/// list is a change to apply.
fn datastore_fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    datastore_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

/// What one calculation gives the agent: the snapshot to publish, the interfaces it
/// needs, the WireGuard peers, and warnings for the operator.
type Calculated = (
    SnapshotBuilder,
    Vec<PortSpec>,
    Vec<weir_crypto::PeerConfig>,
    Vec<String>,
);

/// This node's snapshot, the interfaces it names, and the peer set, from the calculator's
/// model. Refused (with the reason) when the peer set is invalid: the running tables stay.
fn calculate(
    config: &AgentConfig,
    key: Option<&weir_crypto::NodeKey>,
    calc: &mut Calculator,
) -> Result<Calculated, AgentError> {
    let compiled = calc.compile();
    let cluster = calc.cluster();
    let (mut builder, new_ports) = build_node(config, cluster, compiled)?;
    let mut warnings = Vec::new();
    let unattached = cluster
        .pods
        .values()
        .filter(|p| p.node_name.as_deref() == Some(config.node.as_str()) && !calc.is_local(p))
        .count();
    if unattached > 0 {
        warnings.push(format!(
            "{unattached} pod(s) scheduled on this node have no {INTERFACE_ANNOTATION} \
             annotation yet: they are not attached, and nothing reaches them until they are"
        ));
    }
    let wg = config.wireguard_mode()?;
    let peers =
        crate::wireguard::remote_nodes(&config.node, wg, cluster, &mut builder, &mut warnings);
    if let Some(key) = key {
        // Checked here, so that a refused set never reaches the worker.
        weir_crypto::Peers::new(key.clone(), 1)
            .set_peers(peers.clone())
            .map_err(|e| AgentError::Datastore {
                path: config.datastore_name(),
                why: e.to_string(),
            })?;
        warnings.extend(crate::wireguard::check_published(
            &config.node,
            key,
            cluster,
        ));
    }
    Ok((builder, new_ports, peers, warnings))
}

/// Watches the file datastore (every 250 ms) and sends each change as a relist of every
/// kind; objects that do not validate keep their last good version (see
/// [`load_datastore_keeping`]).
fn watch_files(
    dir: PathBuf,
    mut last: LastGood,
    updates: std::sync::mpsc::Sender<Update>,
    control: Arc<Mutex<ControlStats>>,
    stop: &'static AtomicBool,
) {
    let mut seen = datastore_fingerprint(&dir);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        let now = datastore_fingerprint(&dir);
        if now == seen {
            continue;
        }
        seen = now;
        let noticed = std::time::Instant::now();
        match load_datastore_keeping(&dir, &last) {
            Ok((_, kept, refused)) => {
                for r in refused {
                    eprintln!("weir agent: datastore object refused: {r}");
                    let _ = updates.send(Update::Invalid {
                        object: None,
                        message: r,
                    });
                }
                last = kept.clone();
                let change = Change::Resync {
                    kinds: Kind::ALL.to_vec(),
                    objects: kept.into_values().collect(),
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
    updates: std::sync::mpsc::Sender<Update>,
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
fn publish_key_kubernetes(
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

/// Upper bounds (seconds) of the change-to-snapshot histogram's buckets.
pub const APPLY_BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// The control loop's counters for `/metrics`: datastore changes applied and rejected,
/// objects refused, and the time from noticing a change to publishing its snapshot.
#[derive(Debug, Clone, Default)]
pub struct ControlStats {
    pub applied: u64,
    pub rejected: u64,
    pub refused_objects: u64,
    pub generation: u64,
    /// Observations at or under each bound of [`APPLY_BUCKETS`] (cumulative).
    pub apply_buckets: [u64; APPLY_BUCKETS.len()],
    pub apply_count: u64,
    pub apply_sum: f64,
}

impl ControlStats {
    fn observe(&mut self, secs: f64) {
        for (bound, n) in APPLY_BUCKETS.iter().zip(self.apply_buckets.iter_mut()) {
            if secs <= *bound {
                *n += 1;
            }
        }
        self.apply_count += 1;
        self.apply_sum += secs;
    }
}

/// How long the control loop waits for a worker to attach or detach an interface.
const PORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Puts the interfaces in `wanted` that no worker holds on the worker holding fewest, and
/// takes off the ones no longer wanted. `held` maps interface to worker.
fn reconcile_ports(
    control: &weir_workers::ports::PortControl,
    held: &mut BTreeMap<String, usize>,
    wanted: &[PortSpec],
) -> Result<(), String> {
    let mut problems = Vec::new();
    let names: BTreeSet<&str> = wanted.iter().map(|p| p.name.as_str()).collect();
    let gone: Vec<(String, usize)> = held
        .iter()
        .filter(|(n, _)| !names.contains(n.as_str()))
        .map(|(n, w)| (n.clone(), *w))
        .collect();
    for (name, w) in gone {
        match control.detach(w, &name, PORT_TIMEOUT) {
            Ok(()) => {
                held.remove(&name);
                eprintln!("weir agent: interface {name} detached from worker {w}");
            }
            Err(why) => problems.push(format!("detaching {name}: {why}")),
        }
    }
    let new: Vec<&PortSpec> = wanted
        .iter()
        .filter(|p| !held.contains_key(&p.name))
        .collect();
    for spec in new {
        let mut load = vec![0usize; control.workers()];
        for w in held.values() {
            load[*w] += 1;
        }
        let w = (0..load.len()).min_by_key(|&w| (load[w], w)).unwrap_or(0);
        let t = std::time::Instant::now();
        match control.attach(w, spec, PORT_TIMEOUT) {
            Ok(()) => {
                held.insert(spec.name.clone(), w);
                eprintln!(
                    "weir agent: interface {} attached to worker {w} ({} ms)",
                    spec.name,
                    t.elapsed().as_millis()
                );
            }
            Err(why) => problems.push(format!("attaching {}: {why}", spec.name)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The MTU of pod interfaces: the uplink's (1500 without one) less WireGuard's overhead
/// when it is on (80 bytes, enough for an IPv6 underlay).
fn pod_mtu(config: &AgentConfig) -> Result<u16, AgentError> {
    let base = match &config.uplink {
        Some(up) => interface_mtu(up)?,
        None => 1500,
    };
    let wg = config
        .wireguard_mode()?
        .is_some_and(|(_, m)| m != weir_crypto::EncryptionMode::Off);
    Ok(if wg { base.saturating_sub(80) } else { base })
}

/// Buffers on each handoff lane between two workers.
const HANDOFF_DEPTH: usize = 1024;

/// Deals the ports out to `workers` workers: uplinks to the first worker, pod interfaces
/// round-robin in the order given (the first pod to the first worker).
pub fn spread(ports: &[PortSpec], workers: usize) -> Vec<Vec<PortSpec>> {
    let mut out = vec![Vec::new(); workers.max(1)];
    let (uplinks, pods): (Vec<&PortSpec>, Vec<&PortSpec>) =
        ports.iter().partition(|p| p.uplink_filter.is_some());
    for p in uplinks {
        out[0].push(p.clone());
    }
    let n = out.len();
    for (i, p) in pods.into_iter().enumerate() {
        out[i % n].push(p.clone());
    }
    out
}

/// Runs the agent until SIGTERM/SIGINT (or `stop`).
pub fn run(config: &AgentConfig, stop: &'static AtomicBool) -> Result<(), AgentError> {
    let control = Arc::new(Mutex::new(ControlStats::default()));
    let mut calc = Calculator::new(&config.node);
    let (tx, rx) = std::sync::mpsc::channel::<Update>();
    let local_tx = tx.clone();
    let kinds: Vec<Kind> = match (&config.datastore, &config.kubernetes) {
        (Some(dir), _) => {
            // At start every object must be valid: there is no earlier version to keep.
            let (_, last_good) = load_datastore(dir)?;
            let change = Change::Resync {
                kinds: Kind::ALL.to_vec(),
                objects: last_good.values().cloned().collect(),
            };
            let noticed = std::time::Instant::now();
            let _ = tx.send(Update::Change { change, noticed });
            for kind in Kind::ALL {
                let _ = tx.send(Update::Synced(kind));
            }
            let (dir, control) = (dir.clone(), control.clone());
            std::thread::Builder::new()
                .name("weir-datastore".into())
                .spawn(move || watch_files(dir, last_good, tx, control, stop))
                .map_err(|e| AgentError::Worker(e.to_string()))?;
            Kind::ALL.to_vec()
        }
        (None, k) => {
            let (k, node) = (k.clone().unwrap_or_default(), config.node.clone());
            std::thread::Builder::new()
                .name("weir-kubernetes".into())
                .spawn(move || watch_kubernetes(k, node, tx, stop))
                .map_err(|e| AgentError::Worker(e.to_string()))?;
            eprintln!(
                "weir agent: waiting for the first full list of every kind from the API server"
            );
            crate::k8s::source::watched()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        }
    };
    let window = Duration::from_micros(config.coalesce_micros);
    let mut drive_state = DriveState::default();
    let mut first: Option<Result<Calculated, AgentError>> = None;
    drive(
        &rx,
        &mut calc,
        &kinds,
        window,
        stop,
        &mut drive_state,
        |calc, batch| {
            for r in &batch.refused {
                eprintln!("weir agent: {r}; not applied");
            }
            first = Some(calculate(config, None, calc));
            false
        },
    );
    let (builder, ports, peer_configs, mut warnings) = match first {
        Some(result) => result?,
        None if stop.load(Ordering::SeqCst) => return Ok(()),
        None => {
            return Err(AgentError::Datastore {
                path: config.datastore_name(),
                why: "the datastore ended before its first full sync (see above)".into(),
            })
        }
    };
    let wg = config.wireguard_mode()?;
    let mut node_key: Option<weir_crypto::NodeKey> = None;
    let mut wg_setup = match wg.filter(|(_, m)| *m != weir_crypto::EncryptionMode::Off) {
        Some((w, mode)) => {
            let (key, created) = crate::wireguard::load_or_create_key(&w.key_file)?;
            let local = crate::wireguard::local_address(w, &config.node, calc.cluster()).map_err(
                |why| AgentError::Config {
                    path: "wireguard.address".into(),
                    why,
                },
            )?;
            eprintln!(
                "weir agent: WireGuard public key {} ({}), mode {}, {local} port {}",
                key.public_base64(),
                if created {
                    "new key written to the key file"
                } else {
                    "from the key file"
                },
                w.mode,
                w.port
            );
            let published = match &config.kubernetes {
                Some(k) => publish_key_kubernetes(k, &config.node, &key),
                None => crate::wireguard::publish_key(&config.node, &key, calc.cluster()),
            };
            match published {
                Ok(Some(done)) => eprintln!("weir agent: {done}"),
                Ok(None) => {}
                Err(warning) => warnings.push(warning),
            }
            node_key = Some(key.clone());
            let mut peers =
                weir_crypto::Peers::new(key, weir_crypto::peers::DEFAULT_HANDSHAKE_LIMIT);
            peers
                .set_peers(peer_configs)
                .map_err(|e| AgentError::Datastore {
                    path: config.datastore_name(),
                    why: e.to_string(),
                })?;
            Some(weir_workers::tunnel::WireGuardSetup {
                peers,
                port: w.port,
                local,
                mode,
            })
        }
        None => None,
    };
    let mailbox: weir_workers::tunnel::SharedPeerMailbox = Arc::default();
    for w in &warnings {
        eprintln!("weir agent: warning: {w}");
    }
    let mut publisher = Publisher::new();
    let snapshot = publisher
        .publish(builder)
        .map_err(|e| AgentError::Snapshot(e.to_string()))?;
    let listener = TcpListener::bind(&config.listen).map_err(|e| AgentError::Listen {
        addr: config.listen.clone(),
        why: e.to_string(),
    })?;
    let workers = config.cores.len();
    let reports: Vec<Arc<Mutex<WorkerReport>>> = (0..workers)
        .map(|_| Arc::new(Mutex::new(WorkerReport::default())))
        .collect();
    let ready = Arc::new(AtomicBool::new(false));
    if let Ok(mut stats) = control.lock() {
        stats.generation = snapshot.generation;
    }
    {
        let (reports, ready, control) = (reports.clone(), ready.clone(), control.clone());
        std::thread::Builder::new()
            .name("weir-http".into())
            .spawn(move || serve_http(&listener, &reports, &control, &ready, stop))
            .map_err(|e| AgentError::Worker(e.to_string()))?;
    }

    let worker_config = WorkerConfig {
        umem: weir_workers::xsk::UmemConfig {
            frame_count: config.frames,
            ..weir_workers::xsk::UmemConfig::default()
        },
        // Pods attached at run time need fill frames of their own: plan for them.
        planned_ports: config.cni.as_ref().map_or(1, |c| c.ports_per_worker + 1),
        ..WorkerConfig::default()
    };
    let assigned = spread(&ports, workers);
    // Which worker holds each interface, as interfaces come and go.
    let mut held: BTreeMap<String, usize> = assigned
        .iter()
        .enumerate()
        .flat_map(|(w, ps)| ps.iter().map(move |p| (p.name.clone(), w)))
        .collect();
    let owner: Vec<(String, usize)> = assigned
        .iter()
        .enumerate()
        .flat_map(|(w, ps)| ps.iter().map(move |p| (p.name.clone(), w)))
        .collect();
    let links = weir_workers::handoff::mesh(workers, HANDOFF_DEPTH, &owner)
        .map_err(|e| AgentError::Worker(format!("handoff wakers: {e}")))?;
    let port_control = weir_workers::ports::PortControl::new(&links);
    let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for ((w, ports), links) in assigned.into_iter().enumerate().zip(links) {
        let port_mailbox = port_control.mailbox(w);
        let core = config.cores[w];
        let (reader, report, snapshot) = (publisher.reader(), reports[w].clone(), snapshot.clone());
        let (started_tx, worker_config) = (started_tx.clone(), worker_config.clone());
        // WireGuard runs on the worker that owns the uplink.
        let wg = if ports.iter().any(|p| p.uplink_filter.is_some()) {
            wg_setup
                .take()
                .map(|wireguard| weir_workers::afxdp::WireGuardOnWorker {
                    wireguard,
                    mailbox: Some(mailbox.clone()),
                })
        } else {
            None
        };
        let handle = std::thread::Builder::new()
            .name(format!("weir-worker-{core}"))
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    eprintln!(
                        "weir agent: could not pin worker {w} to core {core}; running unpinned"
                    );
                }
                let built = Worker::new(&ports, &snapshot, worker_config).and_then(|mut worker| {
                    worker.connect(&snapshot, links)?;
                    worker.set_port_mailbox(port_mailbox);
                    if let Some(setup) = wg {
                        worker.enable_wireguard(&snapshot, setup)?;
                    }
                    Ok(worker)
                });
                let mut worker = match built {
                    Ok(worker) => worker,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("worker {w} (core {core}): {e}")));
                        return;
                    }
                };
                if let Some(warning) = worker.umem_warning() {
                    eprintln!("weir agent: warning: worker {w}: {warning}");
                }
                let _ = started_tx.send(Ok(()));
                worker.run(&reader, stop, &report);
            })
            .map_err(|e| AgentError::Worker(e.to_string()))?;
        handles.push(handle);
    }
    drop(started_tx);
    for _ in 0..workers {
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // The others stop with the flag; their sockets and programs go with them.
                stop.store(true, Ordering::SeqCst);
                for h in handles {
                    let _ = h.join();
                }
                return Err(AgentError::Worker(e));
            }
            Err(_) => return Err(AgentError::Worker("a worker thread ended".into())),
        }
    }
    let view = Arc::new(Mutex::new(crate::attach::View::default()));
    let update_view = |calc: &Calculator| {
        if let Ok(mut v) = view.lock() {
            v.pools = calc.cluster().ip_pools.values().cloned().collect();
            v.node_labels = calc
                .cluster()
                .nodes
                .get(&config.node)
                .map(|n| n.labels.clone())
                .unwrap_or_default();
            v.ready = true;
        }
    };
    update_view(&calc);
    if let Some(cni) = &config.cni {
        let mtu = pod_mtu(config)?;
        let ipam = match &config.kubernetes {
            Some(k) => {
                let kubeconfig = k.kubeconfig.clone();
                crate::k8s::ipam::KubeStore::new(|| async move {
                    crate::k8s::source::client(kubeconfig.as_deref()).await
                })
                .and_then(|store| crate::ipam::Ipam::with_store(Box::new(store), &config.node))
            }
            None => crate::ipam::Ipam::open(&cni.ipam_dir, &config.node),
        }
        .map_err(|e| AgentError::Config {
            path: "cni".into(),
            why: e.to_string(),
        })?;
        let attacher = crate::attach::Attacher::new(ipam, cni, mtu, view.clone(), local_tx)
            .map_err(|why| AgentError::Config {
                path: "cni".into(),
                why,
            })?;
        let listener = crate::attach::bind(&cni.socket).map_err(|why| AgentError::Config {
            path: "cni.socket".into(),
            why,
        })?;
        let attacher = Arc::new(attacher);
        std::thread::Builder::new()
            .name("weir-cni".into())
            .spawn(move || crate::attach::serve(listener, attacher, stop))
            .map_err(|e| AgentError::Worker(e.to_string()))?;
        eprintln!(
            "weir agent: serving weir-cni on {} (pod MTU {mtu}, IPAM state in {})",
            cni.socket.display(),
            if config.kubernetes.is_some() {
                "IPAMBlock objects".to_owned()
            } else {
                cni.ipam_dir.display().to_string()
            }
        );
    } else {
        drop(local_tx);
    }
    ready.store(true, Ordering::SeqCst);
    eprintln!(
        "weir agent: node {} forwarding on core{} {}; metrics on http://{}/metrics",
        config.node,
        if workers > 1 { "s" } else { "" },
        config
            .cores
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        config.listen
    );
    // The control loop: apply datastore changes while the workers run.
    drive(
        &rx,
        &mut calc,
        &kinds,
        window,
        stop,
        &mut drive_state,
        |calc, batch| {
            if handles.iter().all(|h| h.is_finished()) {
                return false;
            }
            for r in &batch.refused {
                eprintln!("weir agent: {r}; its last good version stays");
            }
            let mut stats = control.lock().map(|s| s.clone()).unwrap_or_default();
            stats.refused_objects += (batch.invalid + batch.refused.len()) as u64;
            let outcome = calculate(config, node_key.as_ref(), calc).and_then(
                |(builder, new_ports, peers, warnings)| {
                    for w in &warnings {
                        eprintln!("weir agent: warning: {w}");
                    }
                    let snapshot = publisher
                        .publish(builder)
                        .map_err(|e| AgentError::Snapshot(e.to_string()))?;
                    if node_key.is_some() {
                        let neighbors = snapshot
                            .nodes
                            .iter()
                            .filter_map(|n| n.mac.map(|m| (n.underlay, m)))
                            .collect();
                        if let Ok(mut slot) = mailbox.pending.lock() {
                            *slot = Some(weir_workers::tunnel::PeerUpdate { peers, neighbors });
                        }
                    }
                    Ok((snapshot.generation, new_ports))
                },
            );
            let answer = match outcome {
                Ok((generation, new_ports)) => {
                    // Interfaces the new tables name are put on workers; those they no longer
                    // name are taken off (the snapshot without them is already published).
                    let result = reconcile_ports(&port_control, &mut held, &new_ports);
                    stats.applied += 1;
                    stats.generation = generation;
                    stats.observe(batch.first_noticed.elapsed().as_secs_f64());
                    update_view(calc);
                    eprintln!(
                        "weir agent: datastore reloaded (generation {generation}, {} change{})",
                        batch.changes,
                        if batch.changes == 1 { "" } else { "s" }
                    );
                    if let Err(why) = &result {
                        eprintln!("weir agent: {why}");
                    }
                    result
                }
                Err(e) => {
                    stats.rejected += 1;
                    eprintln!(
                    "weir agent: datastore change rejected: {e}; the last good tables keep serving"
                );
                    Err(e.to_string())
                }
            };
            for done in batch.done {
                let _ = done.send(answer.clone());
            }
            if let Ok(mut shared) = control.lock() {
                *shared = stats;
            }
            true
        },
    );
    for h in handles {
        let _ = h.join();
    }
    eprintln!("weir agent: stopped");
    Ok(())
}

fn serve_http(
    listener: &TcpListener,
    reports: &[Arc<Mutex<WorkerReport>>],
    control: &Mutex<ControlStats>,
    ready: &AtomicBool,
    stop: &AtomicBool,
) {
    // Non-blocking accept with a short sleep, so the thread notices a stop.
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).unwrap_or(0);
        let request = String::from_utf8_lossy(&buf[..n]);
        let path = request.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = match path {
            "/healthz" => ("200 OK", "ok\n".to_owned()),
            "/readyz" if ready.load(Ordering::SeqCst) => ("200 OK", "ready\n".to_owned()),
            "/readyz" => ("503 Service Unavailable", "not ready\n".to_owned()),
            "/metrics" => {
                let stats = control.lock().map(|s| s.clone()).unwrap_or_default();
                ("200 OK", metrics(reports) + &control_metrics(&stats))
            }
            _ => ("404 Not Found", "not found\n".to_owned()),
        };
        let _ = write!(
            conn,
            "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}

/// Prometheus text for the control loop.
pub fn control_metrics(s: &ControlStats) -> String {
    let mut out = String::new();
    for (name, help, v) in [
        (
            "weir_datastore_changes_applied_total",
            "Datastore changes published as a new snapshot.",
            s.applied,
        ),
        (
            "weir_datastore_changes_rejected_total",
            "Datastore changes refused whole (the running tables kept serving).",
            s.rejected,
        ),
        (
            "weir_datastore_objects_refused_total",
            "Objects refused in changes that were applied (their last good version kept).",
            s.refused_objects,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP weir_snapshot_generation The generation of the snapshot the workers read.\n\
         # TYPE weir_snapshot_generation gauge\nweir_snapshot_generation {}",
        s.generation
    );
    let name = "weir_datastore_apply_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From noticing a datastore change to publishing its snapshot.\n\
         # TYPE {name} histogram"
    );
    for (bound, n) in APPLY_BUCKETS.iter().zip(s.apply_buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.apply_count);
    let _ = writeln!(out, "{name}_sum {}", s.apply_sum);
    let _ = writeln!(out, "{name}_count {}", s.apply_count);
    out
}

/// A per-worker counter family: name, help, and the field it reads.
type Family = (&'static str, &'static str, fn(&WorkerReport) -> u64);

/// The per-worker counters `/metrics` shows, one family each.
const PER_WORKER: [Family; 22] = [
    (
        "weir_rx_packets_total",
        "Frames that entered the pipeline.",
        |r| r.pipeline.rx,
    ),
    (
        "weir_tx_packets_total",
        "Frames handed to an output.",
        |r| r.pipeline.tx,
    ),
    (
        "weir_xsk_rx_frames_total",
        "Frames received from AF_XDP sockets.",
        |r| r.rx_frames,
    ),
    (
        "weir_xsk_tx_frames_total",
        "Frames given to AF_XDP TX rings.",
        |r| r.tx_frames,
    ),
    (
        "weir_tx_ring_full_total",
        "Times a TX ring had no room.",
        |r| r.tx_ring_full,
    ),
    (
        "weir_fill_starved_total",
        "Times the free list could not top up the fill rings.",
        |r| r.fill_starved,
    ),
    (
        "weir_handoff_out_total",
        "Frames handed to the worker that owns their output interface.",
        |r| r.handoff_out,
    ),
    (
        "weir_handoff_in_total",
        "Frames other workers handed to this one.",
        |r| r.handoff_in,
    ),
    (
        "weir_handoff_dropped_total",
        "Frames dropped at a handoff (the owning worker was behind, or no room here).",
        |r| r.handoff_dropped,
    ),
    (
        "weir_unowned_output_total",
        "Frames routed to an interface no worker holds (detached, or not announced yet; \
         dropped, also counted as no_route).",
        |r| r.unowned_output,
    ),
    (
        "weir_detach_dropped_total",
        "Frames found in an interface's rings while it was detached (dropped).",
        |r| r.detach_dropped,
    ),
    (
        "weir_frames_lost_total",
        "UMEM frames the kernel still held when an interface was detached (never reused).",
        |r| r.frames_lost,
    ),
    ("weir_worker_sleeps_total", "Idle sleeps in poll(2).", |r| {
        r.sleeps
    }),
    (
        "weir_wireguard_sealed_total",
        "Packets sealed for a peer and sent.",
        |r| r.tunnel.sealed,
    ),
    (
        "weir_wireguard_opened_total",
        "Packets opened from a peer and delivered to the pipeline.",
        |r| r.tunnel.opened,
    ),
    (
        "weir_wireguard_control_total",
        "Handshake, cookie and keepalive messages sent.",
        |r| r.tunnel.control,
    ),
    (
        "weir_wireguard_no_peer_total",
        "Packets routed over WireGuard to a node without a usable peer (dropped).",
        |r| r.tunnel.no_peer,
    ),
    (
        "weir_wireguard_no_neighbor_total",
        "WireGuard messages for an endpoint whose MAC is unknown (dropped).",
        |r| r.tunnel.no_neighbor,
    ),
    (
        "weir_wireguard_unusable_total",
        "Frames the tunnel could not seal or deliver: not IP, too short or too long, or no \
         room for the headers (dropped).",
        |r| r.tunnel.unusable,
    ),
    (
        "weir_wireguard_handshakes_initiated_total",
        "Handshake initiations sent.",
        |r| r.wireguard.handshake_initiations,
    ),
    (
        "weir_wireguard_handshakes_answered_total",
        "Handshake initiations answered.",
        |r| r.wireguard.handshake_responses,
    ),
    (
        "weir_wireguard_cookie_replies_total",
        "Cookie replies sent under handshake load.",
        |r| r.wireguard.cookie_replies,
    ),
];

/// Prometheus text for the workers' reports.
pub fn metrics(reports: &[Arc<Mutex<WorkerReport>>]) -> String {
    let mut out = String::new();
    let snapshots: Vec<WorkerReport> = reports
        .iter()
        .map(|r| r.lock().map(|r| r.clone()).unwrap_or_default())
        .collect();
    let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let per = |f: &dyn Fn(&WorkerReport) -> u64| -> Vec<(String, u64)> {
        snapshots
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("worker=\"{i}\""), f(r)))
            .collect()
    };
    for (name, help, field) in PER_WORKER {
        family(name, help, "counter", per(&field));
    }
    let mut wg_drops = Vec::new();
    for (i, r) in snapshots.iter().enumerate() {
        let c = &r.wireguard;
        for (reason, v) in [
            ("malformed", c.malformed),
            ("unauthenticated", c.unauthenticated),
            ("replay", c.replayed),
            ("not_allowed", c.not_allowed),
            ("unknown_peer", c.unknown_peer),
            ("under_load", c.under_load),
            ("no_session", c.no_session),
        ] {
            wg_drops.push((format!("worker=\"{i}\",reason=\"{reason}\""), v));
        }
    }
    family(
        "weir_wireguard_drops_total",
        "WireGuard messages refused, by reason.",
        "counter",
        wg_drops,
    );
    let mut drops = Vec::new();
    for (i, r) in snapshots.iter().enumerate() {
        for reason in DropReason::ALL {
            drops.push((
                format!("worker=\"{i}\",reason=\"{}\"", reason.name()),
                r.pipeline.dropped(reason),
            ));
        }
    }
    family(
        "weir_drops_total",
        "Frames dropped, by reason.",
        "counter",
        drops,
    );
    let mut rings = BTreeMap::new();
    for (i, r) in snapshots.iter().enumerate() {
        for p in &r.ports {
            rings.insert(
                format!("worker=\"{i}\",interface=\"{}\"", p.name),
                p.rx_ring_full,
            );
        }
    }
    family(
        "weir_xsk_rx_ring_full_total",
        "Kernel: frames dropped because the RX ring was full.",
        "counter",
        rings.into_iter().collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, uplink: bool) -> PortSpec {
        PortSpec {
            name: name.into(),
            uplink_filter: uplink.then(|| UplinkFilter {
                v4: Vec::new(),
                v6: Vec::new(),
                udp_ports: vec![51820],
            }),
        }
    }

    #[test]
    fn ports_are_dealt_round_robin_with_the_uplink_on_the_first_worker() {
        let ports = [
            port("a", false),
            port("b", false),
            port("up", true),
            port("c", false),
        ];
        let names = |ws: &[Vec<PortSpec>]| -> Vec<Vec<String>> {
            ws.iter()
                .map(|w| w.iter().map(|p| p.name.clone()).collect())
                .collect()
        };
        assert_eq!(names(&spread(&ports, 2)), [vec!["up", "a", "c"], vec!["b"]]);
        assert_eq!(names(&spread(&ports, 1)), [vec!["up", "a", "b", "c"]]);
        let three = spread(&ports, 3);
        assert_eq!(three.iter().map(Vec::len).sum::<usize>(), 4);
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

    #[test]
    fn the_apply_histogram_is_cumulative_and_well_formed() {
        let mut s = ControlStats::default();
        for secs in [0.0005, 0.003, 0.003, 0.2, 5.0] {
            s.observe(secs);
        }
        let text = control_metrics(&s);
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "weir_datastore_apply_seconds_bucket{{le=\"{le}\"}}"
                    ))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(bucket("0.001"), Some(1));
        assert_eq!(bucket("0.005"), Some(3));
        assert_eq!(bucket("0.25"), Some(4));
        assert_eq!(bucket("1"), Some(4));
        assert_eq!(bucket("+Inf"), Some(5));
        assert!(text.contains("weir_datastore_apply_seconds_count 5"));
        assert!(text.contains("# TYPE weir_datastore_apply_seconds histogram"));
    }

    #[test]
    fn the_node_name_comes_from_the_config_or_node_name() {
        assert_eq!(node_name("a", Some("b".into())).unwrap(), "a");
        assert_eq!(node_name("", Some("node-7".into())).unwrap(), "node-7");
        assert!(node_name("", None).unwrap_err().contains("NODE_NAME"));
        assert!(node_name("Bad_Name", None).is_err());
    }

    #[test]
    fn cores_must_be_distinct_and_exist() {
        let dir = std::env::temp_dir().join(format!("weir-agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |cores: &str| {
            let path = dir.join("agent.yaml");
            std::fs::write(
                &path,
                format!("node: n\ncores: {cores}\ndatastore: /nonexistent\n"),
            )
            .unwrap();
            AgentConfig::load(&path)
        };
        assert!(write("[0]").is_ok());
        let twice = write("[0, 0]").unwrap_err().to_string();
        assert!(twice.contains("named twice"), "{twice}");
        let missing = write("[4096]").unwrap_err().to_string();
        assert!(missing.contains("does not exist"), "{missing}");
        let none = write("[]").unwrap_err().to_string();
        assert!(none.contains("at least one core"), "{none}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
