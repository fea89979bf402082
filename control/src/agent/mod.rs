//! `weir agent`: attaches the node's interfaces to AF_XDP workers and forwards with the
//! pipeline, its policy compiled from the datastore (a directory of YAML files or the
//! Kubernetes API) and recalculated as the datastore changes.
//!
//! The file datastore holds ordinary Kubernetes YAML (Namespaces, Pods with
//! `status.podIPs`, NetworkPolicies and the weir.dev objects).
//! A pod is local to this node when it carries the annotation `weir.dev/interface` (its
//! host-side veth) and `weir.dev/mac` (the MAC of its `eth0`).
//!
//! It serves `/metrics` (Prometheus text), `/healthz` and `/readyz` on a local port, and
//! stops cleanly on SIGTERM or SIGINT; the XDP programs are attached through bpf_links,
//! so the kernel detaches them even if the agent is killed.
//!
//! The agent is divided by concern: its configuration ([`AgentConfig`]), the datastore it
//! reads, this node's snapshot, the workers and the interfaces they hold, and the HTTP
//! endpoints with their metrics. [`run`] starts each in turn and then drives the control
//! loop.

mod config;
mod datastore;
mod host;
mod http;
mod metrics;
mod node;
mod ports;
mod workers;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_dataplane::snapshot::Publisher;
use weir_workers::ports::PortControl;
use weir_workers::worker::{PortSpec, WorkerReport};

use crate::attach::{CniConfig, View};
use crate::attachments::AttachmentStore;
use crate::calc::{drive, Batch, Calculator, Change, DriveState, Update};
use crate::policy::load::Cluster;
use crate::policy::model::Kind;
use crate::services::ServiceState;

pub use self::config::{AgentConfig, AgentError, KubernetesConfig};
pub use self::datastore::{load_datastore, load_datastore_keeping, LastGood};
pub use self::http::{Endpoints, HttpLimits, HttpServer, Liveness};
pub use self::metrics::{
    init_logging, AgentCounters, ControlStats, LogDrain, Metrics, APPLY_BUCKETS,
};
pub use self::node::{build_node, parse_mac};
pub use self::ports::spread;
pub use crate::calc::INTERFACE_ANNOTATION;
pub use crate::calc::MAC_ANNOTATION;

use self::node::{calculate, pod_mtu, Calculated};

/// Runs the agent until SIGTERM/SIGINT (or `stop`).
pub fn run(config: &AgentConfig, stop: &'static AtomicBool) -> Result<(), AgentError> {
    let control = Arc::new(Mutex::new(ControlStats::default()));
    metrics::init_logging();
    // The endpoints answer from the start: `/healthz` while the first sync runs, `/readyz`
    // (not ready) until the first tables and the workers are up.
    let listener = TcpListener::bind(&config.listen).map_err(|e| AgentError::Listen {
        addr: config.listen.clone(),
        why: e.to_string(),
    })?;
    let workers = config.cores.len();
    let reports: Vec<Arc<Mutex<WorkerReport>>> = (0..workers)
        .map(|_| Arc::new(Mutex::new(WorkerReport::default())))
        .collect();
    let ready = Arc::new(AtomicBool::new(false));
    let mut publisher = Publisher::new();
    let endpoints = http::Endpoints {
        reports: reports.clone(),
        control: control.clone(),
        ready: ready.clone(),
        snapshots: publisher.reader(),
    };
    let _http =
        HttpServer::start(listener, endpoints, HttpLimits::default(), stop).map_err(|e| {
            AgentError::Listen {
                addr: config.listen.clone(),
                why: e.to_string(),
            }
        })?;
    let mut calc = Calculator::new(&config.node);
    // Pods attached before a restart are in the first tables and on the first workers.
    let cni_state = match &config.cni {
        Some(cni) => Some(restore_cni(config, cni, &mut calc)?),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::channel::<Update>();
    let local_tx = tx.clone();
    let kernel_tx = tx.clone();
    let kinds = datastore::start(config, tx, &control, stop)?;
    let window = Duration::from_micros(config.coalesce_micros);
    let mut drive_state = DriveState::default();
    let mut env = start_host(config)?;
    let feed = Feed {
        rx: &rx,
        kinds: &kinds,
        window,
        stop,
    };
    let mut services = ServiceState::default();
    let first = first_calculation(
        config,
        &feed,
        &mut calc,
        &mut drive_state,
        &env,
        &mut services,
    )?;
    let Some(Calculated {
        mut builder,
        ports,
        peers: peer_configs,
        mut warnings,
        services: service_change,
    }) = first
    else {
        return Ok(());
    };
    let kernel = Arc::new(Mutex::new(env.kernel.clone()));
    let skip: Vec<String> = env
        .host
        .iter()
        .flat_map(|h| [h.kernel.clone(), h.weir.clone()])
        .collect();
    host::watch(
        config.uplink.clone(),
        skip,
        kernel.clone(),
        kernel_tx,
        Duration::from_secs(1),
        stop,
    )
    .map_err(|e| AgentError::Worker(format!("kernel watcher: {e}")))?;
    env.kernel = kernel.lock().map(|k| k.clone()).unwrap_or_default();
    let wireguard = start_wireguard(config, calc.cluster(), peer_configs, &mut warnings)?;
    if let Some((_, local)) = &wireguard {
        builder.wireguard(*local);
    }
    for w in &warnings {
        eprintln!("weir agent: warning: {w}");
    }
    let snapshot = publisher
        .publish(builder)
        .map_err(|e| AgentError::Snapshot(e.to_string()))?;
    let refused = services.commit(service_change);
    if let Some(why) = &refused {
        eprintln!("weir agent: {why}");
    }
    if let Ok(mut stats) = control.lock() {
        stats.generation = snapshot.generation;
        stats.service_changes_refused = services.refused_total();
        stats.services_refused = services.refusal();
    }
    let key = wireguard.as_ref().map(|(key, _)| key.clone());
    let started = workers::start(config, &ports, &publisher, &snapshot, &reports, key, stop)?;
    let view = Arc::new(Mutex::new(View::default()));
    update_view(&view, &calc, &config.node);
    match (&config.cni, cni_state) {
        (Some(cni), Some(state)) => start_cni(config, cni, state, &view, local_tx, stop)?,
        _ => drop(local_tx),
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
    let mut running = Running {
        config,
        publisher,
        wireguard,
        port_control: started.port_control,
        held: started.held,
        handles: started.handles,
        control,
        view,
        env,
        kernel,
        services,
        fib_updates: 0,
    };
    drive(
        &rx,
        &mut calc,
        &kinds,
        window,
        stop,
        &mut drive_state,
        |calc, batch| running.apply(calc, batch),
    );
    for h in running.handles {
        let _ = h.join();
    }
    eprintln!("weir agent: stopped");
    Ok(())
}

/// The host link (created, or taken back from a previous agent) and the kernel's view
/// of the node, before the first tables.
fn start_host(config: &AgentConfig) -> Result<host::NodeEnv, AgentError> {
    let link = if config.host.enabled {
        // The node's own stack reaches pods and, through weir's service stage, cluster IPs.
        let routed: Vec<ipnet::IpNet> = config
            .pod_cidrs
            .iter()
            .chain(&config.service_cidrs)
            .copied()
            .collect();
        let link = host::ensure_host_link(&config.host.interface, pod_mtu(config)?, &routed)?;
        eprintln!(
            "weir agent: host link {} <-> {} (MTU {}), routing {} into it",
            link.kernel,
            link.weir,
            link.mtu,
            if routed.is_empty() {
                "no pod or service CIDR (none configured)".to_owned()
            } else {
                routed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        Some(link)
    } else {
        None
    };
    let skip: Vec<String> = link
        .iter()
        .flat_map(|h| [h.kernel.clone(), h.weir.clone()])
        .collect();
    let kernel = host::kernel_view(config.uplink.as_deref(), &skip)?;
    for gw in [kernel.gateway_v4, kernel.gateway_v6].into_iter().flatten() {
        if gw.mac.is_none() {
            host::ask_to_resolve(gw.ip);
        }
    }
    if config.uplink.is_some() && kernel.gateway_v4.is_none() && kernel.gateway_v6.is_none() {
        eprintln!(
            "weir agent: warning: no default route through the uplink in the kernel's main \
             table: pods reach only the cluster and the node"
        );
    }
    Ok(host::NodeEnv { host: link, kernel })
}

/// Where the control loop's updates come from: the channel, the kinds whose first full
/// list counts as synced, the coalescing window and the stop flag.
struct Feed<'a> {
    rx: &'a Receiver<Update>,
    kinds: &'a [Kind],
    window: Duration,
    stop: &'a AtomicBool,
}

/// Waits for the datastore's first full list of the feed's kinds and calculates the
/// node's first tables from it. `None` when the agent was stopped first.
fn first_calculation(
    config: &AgentConfig,
    feed: &Feed<'_>,
    calc: &mut Calculator,
    drive_state: &mut DriveState,
    env: &host::NodeEnv,
    services: &mut ServiceState,
) -> Result<Option<Calculated>, AgentError> {
    let Feed {
        rx,
        kinds,
        window,
        stop,
    } = *feed;
    let mut first: Option<Result<Calculated, AgentError>> = None;
    drive(rx, calc, kinds, window, stop, drive_state, |calc, batch| {
        for r in &batch.refused {
            eprintln!("weir agent: {r}; not applied");
        }
        first = Some(calculate(config, None, calc, env, services));
        false
    });
    match first {
        Some(result) => result.map(Some),
        None if stop.load(Ordering::SeqCst) => Ok(None),
        None => Err(AgentError::Datastore {
            path: config.datastore_name(),
            why: "the datastore ended before its first full sync (see above)".into(),
        }),
    }
}

/// When WireGuard is on: this node's key (read from its key file, or made and written
/// there), published for the other nodes, and this node's WireGuard address (its
/// underlay address and port). `peer_configs`, the first peer set, is checked against the
/// key. A key that could not be published is a warning.
fn start_wireguard(
    config: &AgentConfig,
    cluster: &Cluster,
    peer_configs: Vec<weir_crypto::PeerConfig>,
    warnings: &mut Vec<String>,
) -> Result<Option<(weir_crypto::NodeKey, SocketAddr)>, AgentError> {
    let wg = config.wireguard_mode()?;
    let Some((w, _)) = wg.filter(|(_, m)| *m != weir_crypto::EncryptionMode::Off) else {
        return Ok(None);
    };
    let (key, created) = crate::wireguard::load_or_create_key(&w.key_file)?;
    let local = crate::wireguard::local_address(w, &config.node, cluster).map_err(|why| {
        AgentError::Config {
            path: "wireguard.address".into(),
            why,
        }
    })?;
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
        Some(k) => datastore::publish_key_kubernetes(k, &config.node, &key),
        None => crate::wireguard::publish_key(&config.node, &key, cluster),
    };
    match published {
        Ok(Some(done)) => eprintln!("weir agent: {done}"),
        Ok(None) => {}
        Err(warning) => warnings.push(warning),
    }
    // Checked here, so that a refused set never reaches the worker.
    weir_crypto::Peers::new(key.clone(), 1)
        .set_peers(peer_configs)
        .map_err(|e| AgentError::Datastore {
            path: config.datastore_name(),
            why: e.to_string(),
        })?;
    Ok(Some((key, SocketAddr::new(local, w.port))))
}

/// Opens IPAM (IPAMBlock objects with the Kubernetes datastore, else files) and the
/// attachment records, and puts the attachments that survived a restart back into `calc`
/// (see `crate::attachments`).
fn restore_cni(
    config: &AgentConfig,
    cni: &CniConfig,
    calc: &mut Calculator,
) -> Result<(crate::ipam::Ipam, AttachmentStore), AgentError> {
    let started = Instant::now();
    let mut ipam = match &config.kubernetes {
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
    let store =
        AttachmentStore::open(&cni.ipam_dir, &config.node).map_err(|e| AgentError::Config {
            path: "cni.ipamDir".into(),
            why: e.to_string(),
        })?;
    let mtu = pod_mtu(config)?;
    let restored = crate::attachments::restore(&store, &mut ipam, |r| {
        crate::netlink::plumb(
            &r.netns,
            &r.ifname,
            &r.host_interface,
            &r.ips,
            cni.mtu.unwrap_or(mtu),
        )
    });
    for problem in &restored.problems {
        eprintln!("weir agent: warning: {problem}");
    }
    let (adopted, released) = (restored.adopted.len(), restored.released.len());
    for a in restored.adopted {
        for r in calc.apply(Change::Attach(a)) {
            eprintln!("weir agent: warning: a restored attachment: {r}");
        }
    }
    if adopted + released > 0 {
        eprintln!(
            "weir agent: {adopted} attachment(s) restored from {}, {released} whose pod is gone \
             released ({} ms)",
            store.dir().display(),
            started.elapsed().as_millis()
        );
    }
    Ok((ipam, store))
}

/// Serves `weir-cni` on its socket, on a thread of its own: pods attached and detached at
/// run time. Local changes go to the control loop on `local_tx`.
fn start_cni(
    config: &AgentConfig,
    cni: &CniConfig,
    (ipam, store): (crate::ipam::Ipam, AttachmentStore),
    view: &Arc<Mutex<View>>,
    local_tx: Sender<Update>,
    stop: &'static AtomicBool,
) -> Result<(), AgentError> {
    let mtu = pod_mtu(config)?;
    if let Some(warning) = bind_cost_warning(config.frames) {
        eprintln!("weir agent: warning: {warning}");
    }
    let attacher = crate::attach::Attacher::new(ipam, store, cni, mtu, view.clone(), local_tx)
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
    Ok(())
}

/// UMEM frames above which binding a pod's socket costs the kernel milliseconds.
const CHEAP_BIND_FRAMES: u32 = 8192;

/// Why `frames` makes pod attaches slow, if it does: each pod socket's bind allocates a
/// buffer pool of one entry per frame under the kernel's RTNL lock (see docs/cni.md).
fn bind_cost_warning(frames: u32) -> Option<String> {
    (frames > CHEAP_BIND_FRAMES).then(|| {
        format!(
            "frames: {frames}: binding each pod's socket makes the kernel allocate {} KiB under \
             its RTNL lock (6-11 ms each at 16384-32768 frames on a small VM, one bind at a \
             time); {CHEAP_BIND_FRAMES} or fewer keep a pod's attach under a millisecond of it",
            u64::from(frames) * 128 / 1024
        )
    })
}

/// Tells the attacher what it needs from the latest model: the IP pools and this node's
/// labels.
fn update_view(view: &Mutex<View>, calc: &Calculator, node: &str) {
    if let Ok(mut v) = view.lock() {
        v.pools = calc.cluster().ip_pools.values().cloned().collect();
        v.node_labels = calc
            .cluster()
            .nodes
            .get(node)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        v.ready = true;
    }
}

/// What the control loop holds while the workers run.
struct Running<'a> {
    config: &'a AgentConfig,
    publisher: Publisher,
    /// This node's WireGuard key and address, when WireGuard is on (the peers travel in
    /// the snapshots).
    wireguard: Option<(weir_crypto::NodeKey, SocketAddr)>,
    port_control: PortControl,
    /// Which worker holds each interface.
    held: BTreeMap<String, usize>,
    handles: Vec<JoinHandle<()>>,
    control: Arc<Mutex<ControlStats>>,
    view: Arc<Mutex<View>>,
    /// The host link and the kernel's view the last tables were made with.
    env: host::NodeEnv,
    /// The kernel's view, kept fresh by the watcher.
    kernel: Arc<Mutex<host::KernelView>>,
    /// The service table published last, which the next one is built from.
    services: ServiceState,
    /// IPv4 tables changed in place so far (the publisher's count, for the log).
    fib_updates: u64,
}

impl Running<'_> {
    /// Applies one batch of datastore changes: a new snapshot published, interfaces
    /// attached and detached to match, the counters and the attacher's view brought up to
    /// date, and the answer sent to whoever waits for the batch. A change that cannot be
    /// applied is rejected and the last good tables keep serving. Returns `false` (stop
    /// driving) once every worker has ended.
    fn apply(&mut self, calc: &mut Calculator, batch: Batch) -> bool {
        if self.handles.iter().all(|h| h.is_finished()) {
            return false;
        }
        for r in &batch.refused {
            eprintln!("weir agent: {r}; its last good version stays");
        }
        let mut stats = self
            .control
            .lock()
            .map(|mut s| {
                s.busy_since = Some(Instant::now());
                s.clone()
            })
            .unwrap_or_default();
        stats.refused_objects += (batch.invalid + batch.refused.len()) as u64;
        let started = Instant::now();
        let answer = match self.publish(calc) {
            Ok((generation, new_ports, calculated)) => {
                let published = started.elapsed();
                // Interfaces the new tables name are put on workers; those they no longer
                // name are taken off (the snapshot without them is already published).
                let result = ports::reconcile_ports(&self.port_control, &mut self.held, &new_ports);
                let fib = self.publisher.fib_stats();
                stats.applied += 1;
                stats.generation = generation;
                stats.last_rejection = None;
                stats.observe(batch.first_noticed.elapsed().as_secs_f64());
                stats.service_changes_refused = self.services.refused_total();
                stats.services_refused = self.services.refusal();
                update_view(&self.view, calc, &self.config.node);
                eprintln!(
                    "weir agent: datastore reloaded (generation {generation}, {} change{}; \
                     calculated in {:.1} ms, published in {:.1} ms, ports in {:.1} ms; IPv4 \
                     table {})",
                    batch.changes,
                    if batch.changes == 1 { "" } else { "s" },
                    calculated.as_secs_f64() * 1e3,
                    (published - calculated).as_secs_f64() * 1e3,
                    (started.elapsed() - published).as_secs_f64() * 1e3,
                    if fib.updates > self.fib_updates {
                        "changed in place"
                    } else {
                        "built afresh"
                    },
                );
                self.fib_updates = fib.updates;
                if let Err(why) = &result {
                    eprintln!("weir agent: {why}");
                }
                result
            }
            Err(e) => {
                stats.rejected += 1;
                stats.last_rejection = Some(e.to_string());
                eprintln!(
                    "weir agent: datastore change rejected: {e}; the last good tables keep serving"
                );
                Err(e.to_string())
            }
        };
        for done in batch.done {
            let _ = done.send(answer.clone());
        }
        stats.busy_since = None;
        if let Ok(mut shared) = self.control.lock() {
            *shared = stats;
        }
        true
    }

    /// Calculates this node's tables from the model (WireGuard's peers included) and
    /// publishes them; returns the snapshot's generation, the interfaces it names and how
    /// long the calculation took.
    fn publish(
        &mut self,
        calc: &mut Calculator,
    ) -> Result<(u64, Vec<PortSpec>, Duration), AgentError> {
        let started = Instant::now();
        if let Ok(k) = self.kernel.lock() {
            self.env.kernel = k.clone();
        }
        let Calculated {
            builder,
            ports,
            warnings,
            services,
            ..
        } = calculate(
            self.config,
            self.wireguard.as_ref(),
            calc,
            &self.env,
            &mut self.services,
        )?;
        let calculated = started.elapsed();
        for w in &warnings {
            eprintln!("weir agent: warning: {w}");
        }
        let snapshot = self
            .publisher
            .publish(builder)
            .map_err(|e| AgentError::Snapshot(e.to_string()))?;
        // Published: the next table is built from this one. A refused one is logged once.
        if let Some(why) = self.services.commit(services) {
            eprintln!("weir agent: {why}");
        }
        Ok((snapshot.generation, ports, calculated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_that_make_pod_binds_slow_are_warned_of_with_the_kernels_cost() {
        assert_eq!(bind_cost_warning(4096), None);
        assert_eq!(bind_cost_warning(CHEAP_BIND_FRAMES), None);
        let warning = bind_cost_warning(32768).expect("32768 frames are warned of");
        assert!(warning.contains("4096 KiB"), "{warning}");
        assert!(warning.contains("8192 or fewer"), "{warning}");
    }
}
