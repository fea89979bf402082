//! The agent's end of `weir-cni`: attaching and detaching pods.
//!
//! ADD, in order, undoing what was done if a step fails:
//!
//! 1. addresses from IPAM (persisted before anything uses them);
//! 2. the veth pair, made inside the pod's network namespace with the pod end named as the
//!    runtime asked (`eth0`) and the host end moved into the agent's namespace; the pod end
//!    gets its /32 (/128), the MTU weir computes, and a default route via 169.254.1.1
//!    (fe80::1);
//! 3. the attachment's record written (`crate::attachments`), so that a restarted agent
//!    adopts the pod again;
//! 4. the attachment handed to the control loop, which publishes a snapshot holding the
//!    endpoint and its policy and puts the host end on a worker; ADD answers only then, so
//!    a pod never starts unprotected, or fails after the timeout.
//!
//! DEL detaches the pod, deletes the host end (which takes the pair), releases the
//! addresses and removes the record; every step tolerates what is already gone, so DEL is
//! idempotent and works when the pod's namespace no longer exists. CHECK answers from the
//! record. GC does the same as DEL for every lease and record whose attachment the runtime
//! no longer lists.
//!
//! Interfaces are configured over rtnetlink ([`crate::netlink`]): the pair is created from
//! the agent's namespace with the pod's end placed straight into the pod's namespace (the
//! runtime hands its path), which a thread of its own then enters to give the pod its
//! addresses and routes. No subprocess runs on the attach path.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::IpAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::attachments::{AttachmentStore, Record, FORMAT_VERSION};
use crate::calc::{Change, Update};
use crate::cni::{code, host_interface, Attached, Command, Request, Response};
use crate::ipam::Ipam;
use crate::netlink::{addresses_in, delete_link, link_exists};
use crate::policy::model::{IpPool, NamespacedName};
use crate::policy::selector::Labels;

/// The `cni:` section of the agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CniConfig {
    /// The socket `weir-cni` talks to.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// IPAM's state directory with the file datastore (see `ipam`); with the Kubernetes
    /// datastore the state is in `IPAMBlock` objects.
    #[serde(default = "default_ipam_dir")]
    pub ipam_dir: PathBuf,
    /// The pod interfaces' MTU; default: the uplink's less the tunnel's overhead (or 1500
    /// less it without an uplink).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// How long ADD waits for the pod's policy to be programmed, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Pod interfaces each worker is planned for: the UMEM's fill frames are shared out
    /// among this many (raise `frames` with it).
    #[serde(default = "default_ports_per_worker")]
    pub ports_per_worker: usize,
}

fn default_ports_per_worker() -> usize {
    32
}

fn default_socket() -> PathBuf {
    PathBuf::from(crate::cni::DEFAULT_SOCKET)
}

fn default_ipam_dir() -> PathBuf {
    PathBuf::from("/var/lib/weir/ipam")
}

fn default_timeout() -> u64 {
    20
}

/// What the control loop tells the attacher after each publication.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The IP pools.
    pub pools: Vec<IpPool>,
    /// This node's labels (pools' nodeSelectors match them).
    pub node_labels: Labels,
    /// Whether the first full sync is published (ADD before it is "try again later").
    pub ready: bool,
}

/// Serves `weir-cni`'s requests. See the module doc.
#[derive(Debug)]
pub struct Attacher {
    ipam: Mutex<Ipam>,
    store: AttachmentStore,
    view: Arc<Mutex<View>>,
    updates: Mutex<Sender<Update>>,
    mtu: u16,
    timeout: Duration,
}

fn error(code: u32, msg: &str, details: impl Into<String>) -> Response {
    Response::Error {
        code,
        msg: msg.to_owned(),
        details: details.into(),
    }
}

impl Attacher {
    /// An attacher allocating from `ipam`.
    pub fn new(
        ipam: Ipam,
        store: AttachmentStore,
        config: &CniConfig,
        mtu: u16,
        view: Arc<Mutex<View>>,
        updates: Sender<Update>,
    ) -> Result<Attacher, String> {
        Ok(Attacher {
            ipam: Mutex::new(ipam),
            store,
            view,
            updates: Mutex::new(updates),
            mtu: config.mtu.unwrap_or(mtu),
            timeout: Duration::from_secs(config.timeout_seconds.max(1)),
        })
    }

    /// Hands a change to the control loop and waits for its publication.
    fn publish(&self, change: Change) -> Result<(), String> {
        let (done, outcome) = std::sync::mpsc::channel();
        self.updates
            .lock()
            .map_err(|_| "the control loop is gone".to_string())?
            .send(Update::Local { change, done })
            .map_err(|_| "the control loop is gone".to_string())?;
        match outcome.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the pod's tables were not published within {} s",
                self.timeout.as_secs()
            )),
        }
    }

    /// Answers one request.
    pub fn handle(&self, req: &Request) -> Response {
        match req.command {
            Command::Add => self.add(req),
            Command::Del => self.del(req),
            Command::Check => self.check(req),
            Command::Status => self.status(),
            Command::Gc => self.gc(req),
        }
    }

    fn pod_of(req: &Request) -> NamespacedName {
        match (&req.pod_namespace, &req.pod_name) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
                NamespacedName::new(ns, name)
            }
            // Not from a kubelet: named after the container.
            _ => NamespacedName::new(
                "default",
                req.container_id.chars().take(63).collect::<String>(),
            ),
        }
    }

    fn status(&self) -> Response {
        let view = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        if !view.ready {
            return error(
                code::NOT_AVAILABLE,
                "the weir agent has not finished its first sync",
                "pods cannot be attached yet",
            );
        }
        let usable = view
            .pools
            .iter()
            .any(|p| !p.disabled && p.node_selector.matches(&view.node_labels));
        if !usable {
            return error(
                code::NOT_AVAILABLE,
                "no IPPool serves this node",
                "create a weir.dev/v1 IPPool whose nodeSelector matches this node",
            );
        }
        Response::Ok(None)
    }

    fn add(&self, req: &Request) -> Response {
        let view = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        if !view.ready {
            return error(
                code::TRY_AGAIN_LATER,
                "the weir agent has not finished its first sync",
                "try again shortly",
            );
        }
        let pod = Self::pod_of(req);
        let started = std::time::Instant::now();
        let pools: Vec<&IpPool> = view.pools.iter().collect();
        let ips = {
            let Ok(mut ipam) = self.ipam.lock() else {
                return error(
                    code::AGENT_FAILURE,
                    "IPAM is unusable",
                    "a lock was poisoned",
                );
            };
            match ipam.reserve(
                &pools,
                &view.node_labels,
                &req.container_id,
                &req.ifname,
                Some(&pod.to_string()),
            ) {
                Ok(reserved) => reserved,
                Err(e) => {
                    return error(code::AGENT_FAILURE, "no address for the pod", e.to_string())
                }
            }
        };
        // Stored before anything uses it; concurrent ADDs share one write (group commit):
        // the lock is taken again, so the reservations made meanwhile ride along.
        let (ips, ticket) = ips;
        let committed = match self.ipam.lock() {
            Ok(mut ipam) => ipam.commit(ticket).map_err(|e| e.to_string()),
            Err(_) => Err("a lock was poisoned".to_owned()),
        };
        if let Err(why) = committed {
            return error(code::IO_FAILURE, "cannot persist the pod's address", why);
        }
        let host = host_interface(&req.container_id, &req.ifname);
        let leased = started.elapsed();
        let plumbed = crate::netlink::plumb(&req.netns, &req.ifname, &host, &ips, self.mtu);
        let plumbed_at = started.elapsed();
        let (host_mac, pod_mac) = match plumbed {
            Ok(macs) => macs,
            Err(why) => {
                self.undo(req, &host);
                return error(
                    code::AGENT_FAILURE,
                    "cannot set up the pod's interface",
                    why,
                );
            }
        };
        // Persisted before the pod is published, so that ADD never answers success for an
        // attachment a restarted agent would not know.
        let record = Record {
            version: FORMAT_VERSION,
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            netns_inode: crate::attachments::netns_inode(&req.netns),
            pod_namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            host_interface: host.clone(),
            host_mac: host_mac.clone(),
            pod_mac: pod_mac.clone(),
            ips: ips.clone(),
            mtu: self.mtu,
        };
        let saved = self.store.save(&record);
        let recorded_at = started.elapsed();
        if let Err(e) = saved {
            self.undo(req, &host);
            return error(
                code::IO_FAILURE,
                "cannot persist the pod's attachment",
                e.to_string(),
            );
        }
        if let Err(why) = self.publish(Change::Attach(record.attachment())) {
            let _ = self.publish(Change::Detach(Self::pod_of(req)));
            self.undo(req, &host);
            return error(
                code::AGENT_FAILURE,
                "the pod's policy could not be programmed",
                why,
            );
        }
        eprintln!(
            "weir agent: pod {} attached in {} ms (address {} ms, interfaces {} ms, record {} ms, \
             tables {} ms)",
            Self::pod_of(req),
            started.elapsed().as_millis(),
            leased.as_millis(),
            (plumbed_at - leased).as_millis(),
            (recorded_at - plumbed_at).as_millis(),
            (started.elapsed() - recorded_at).as_millis()
        );
        Response::Ok(Some(Attached {
            host_interface: host,
            host_mac,
            pod_mac,
            ips,
            mtu: self.mtu,
        }))
    }

    /// Removes the host end (and so the pair), the record and the leases of a request.
    fn undo(&self, req: &Request, host: &str) {
        let _ = delete_link(host);
        let _ = self.store.remove(&req.container_id, &req.ifname);
        if let Ok(mut ipam) = self.ipam.lock() {
            let _ = ipam.release(&req.container_id, Some(&req.ifname));
        }
    }

    fn del(&self, req: &Request) -> Response {
        // The pod's key: from its record, else from its lease, else from the request.
        let recorded = self
            .store
            .find(&req.container_id, &req.ifname)
            .ok()
            .flatten()
            .map(|r| format!("{}/{}", r.pod_namespace, r.pod_name));
        let pod = recorded.or_else(|| {
            let ipam = self.ipam.lock();
            ipam.ok().and_then(|i| {
                i.leases()
                    .values()
                    .find(|l| l.container_id == req.container_id && l.ifname == req.ifname)
                    .and_then(|l| l.pod.clone())
            })
        });
        let key = match pod.as_deref().and_then(|p| p.split_once('/')) {
            Some((ns, name)) => NamespacedName::new(ns, name),
            None => Self::pod_of(req),
        };
        if let Err(why) = self.publish(Change::Detach(key)) {
            return error(code::AGENT_FAILURE, "the pod could not be detached", why);
        }
        let host = host_interface(&req.container_id, &req.ifname);
        if let Err(why) = delete_link(&host) {
            return error(code::IO_FAILURE, "cannot delete the pod's interface", why);
        }
        match self.ipam.lock() {
            Ok(mut ipam) => {
                if let Err(e) = ipam.release(&req.container_id, Some(&req.ifname)) {
                    return error(
                        code::IO_FAILURE,
                        "cannot release the pod's addresses",
                        e.to_string(),
                    );
                }
            }
            Err(_) => {
                return error(
                    code::AGENT_FAILURE,
                    "IPAM is unusable",
                    "a lock was poisoned",
                )
            }
        }
        // Last: a DEL that failed before this is retried and finds the record again.
        match self.store.remove(&req.container_id, &req.ifname) {
            Ok(_) => Response::Ok(None),
            Err(e) => error(
                code::IO_FAILURE,
                "cannot remove the pod's attachment record",
                e.to_string(),
            ),
        }
    }

    /// CHECK answers from the attachment record: the interfaces it names exist, the pod
    /// holds its addresses, and IPAM still leases them to this container.
    fn check(&self, req: &Request) -> Response {
        let record = match self.store.find(&req.container_id, &req.ifname) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return error(
                    code::AGENT_FAILURE,
                    "weir has no attachment for this container",
                    format!("container {} interface {}", req.container_id, req.ifname),
                )
            }
            Err(e) => {
                return error(
                    code::IO_FAILURE,
                    "the attachment record is unreadable",
                    e.to_string(),
                )
            }
        };
        let leased: Vec<IpAddr> = match self.ipam.lock() {
            Ok(ipam) => ipam
                .leases()
                .iter()
                .filter(|(_, l)| l.container_id == req.container_id && l.ifname == req.ifname)
                .map(|(ip, _)| *ip)
                .collect(),
            Err(_) => {
                return error(
                    code::AGENT_FAILURE,
                    "IPAM is unusable",
                    "a lock was poisoned",
                )
            }
        };
        if let Some(ip) = record.ips.iter().find(|ip| !leased.contains(ip)) {
            return error(
                code::AGENT_FAILURE,
                "the pod's address is not leased to it",
                format!("{ip} of container {}", req.container_id),
            );
        }
        match link_exists(&record.host_interface) {
            Ok(true) => {}
            Ok(false) => {
                return error(
                    code::AGENT_FAILURE,
                    "the pod's host interface is missing",
                    record.host_interface,
                )
            }
            Err(why) => return error(code::AGENT_FAILURE, "cannot read the interfaces", why),
        }
        let shown = match addresses_in(&req.netns, &req.ifname) {
            Ok(s) => s,
            Err(why) => return error(code::AGENT_FAILURE, "the pod's interface is missing", why),
        };
        for ip in &record.ips {
            if !shown.contains(ip) {
                return error(
                    code::AGENT_FAILURE,
                    "the pod's interface lost its address",
                    format!("{ip} is not on {} in {}", req.ifname, req.netns),
                );
            }
        }
        Response::Ok(None)
    }

    fn gc(&self, req: &Request) -> Response {
        let valid: Vec<(String, String)> = req
            .valid
            .iter()
            .map(|v| (v.container_id.clone(), v.ifname.clone()))
            .collect();
        let released = match self.ipam.lock() {
            Ok(mut ipam) => match ipam.gc(&valid) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        code::IO_FAILURE,
                        "GC could not release leases",
                        e.to_string(),
                    )
                }
            },
            Err(_) => {
                return error(
                    code::AGENT_FAILURE,
                    "IPAM is unusable",
                    "a lock was poisoned",
                )
            }
        };
        let mut done = std::collections::BTreeSet::new();
        for (_, lease) in released {
            if !done.insert((lease.container_id.clone(), lease.ifname.clone())) {
                continue;
            }
            if let Some((ns, name)) = lease.pod.as_deref().and_then(|p| p.split_once('/')) {
                let _ = self.publish(Change::Detach(NamespacedName::new(ns, name)));
            }
            let host = host_interface(&lease.container_id, &lease.ifname);
            let _ = delete_link(&host);
        }
        // Records not on the list go too, also those whose leases were already gone.
        for record in self.store.load().records {
            let key = (record.container_id.clone(), record.ifname.clone());
            if valid.contains(&key) {
                continue;
            }
            if done.insert(key) {
                let pod = NamespacedName::new(&record.pod_namespace, &record.pod_name);
                let _ = self.publish(Change::Detach(pod));
                let _ = delete_link(&record.host_interface);
            }
            if let Err(e) = self.store.remove(&record.container_id, &record.ifname) {
                return error(
                    code::IO_FAILURE,
                    "GC could not remove an attachment record",
                    e.to_string(),
                );
            }
        }
        Response::Ok(None)
    }
}

/// Serves requests on `listener` (one thread per connection, so concurrent ADDs proceed
/// together up to IPAM's lock and the control loop) until `stop`.
pub fn serve(listener: UnixListener, attacher: Arc<Attacher>, stop: &'static AtomicBool) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let attacher = attacher.clone();
                let _ = std::thread::Builder::new()
                    .name("weir-cni-conn".into())
                    .spawn(move || answer(stream, &attacher));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn answer(stream: UnixStream, attacher: &Attacher) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let response = match BufReader::new(&stream).read_line(&mut line) {
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => attacher.handle(&req),
            Err(e) => error(code::DECODE_FAILURE, "unreadable request", e.to_string()),
        },
        Err(e) => error(code::IO_FAILURE, "cannot read the request", e.to_string()),
    };
    let mut out = serde_json::to_string(&response).unwrap_or_default();
    out.push('\n');
    let mut stream = stream;
    let _ = stream.write_all(out.as_bytes());
}

/// Binds the socket (replacing a stale one), readable by root only.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{}: another agent is serving this socket",
                path.display()
            ));
        }
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(listener)
}
