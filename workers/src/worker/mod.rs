//! The AF_XDP driver: one worker's UMEM, its sockets (one per interface it owns, all on
//! that UMEM so a frame received on one interface is transmitted on another without a
//! copy), the XDP programs that feed them, and the loop that runs the pipeline.
//!
//! Loop: reap TX completions into the free list, top up every fill ring, run WireGuard's
//! timers, take the frames other workers handed over, receive a burst from every socket
//! into one batch (WireGuard for this node is opened on the way in), run the pipeline and
//! its output stage, carry out the plan it makes (stage per port, seal, hand off,
//! recycle), seal, push the staged frames into the TX rings and kick the kernel. When a few
//! hundred polls in a row find nothing, the worker sleeps in `poll(2)` on its sockets (an
//! idle edge box should not burn a core); under load it never sleeps.
//!
//! Frame accounting is an invariant: every frame of the UMEM is in exactly one place —
//! the free list, a fill ring (lent to the kernel until it comes back on that socket's RX
//! ring), the batch, waiting to be sealed, a TX staging queue, or a TX ring (lent until it
//! completes). [`Worker::check_accounting`] verifies it from the counts and the free list.
//! The pipeline's [`Counters`] account for every packet the same way (received, handed in
//! or out, made, sent, consumed, dropped for a named reason); the worker tests assert both.
//!
//! # Ports come and go
//!
//! Pods are created and deleted while the workers run, so a worker's interfaces are not
//! fixed at [`Worker::new`]. [`Worker::attach_port`] binds one more socket on the
//! worker's UMEM, puts it in a slot of the worker's one pod program (loaded with the
//! first pod, see [`crate::bpf::XdpProgram::by_ifindex`]; at most [`POD_SLOTS`]),
//! links that program to the interface and gives its fill ring its share of frames;
//! [`Worker::detach_port`] undoes that without losing a frame: it detaches the XDP
//! program first (nothing new arrives), returns what waits in the RX ring to the free
//! list, pushes out what was staged and waits up to [`DETACH_WAIT`] (kicking) for the TX
//! completions, then reads back the frames still lent to the fill ring (the entries the
//! kernel has not consumed, between its consumer index and ours) and only then closes the
//! socket. Frames the kernel never gives back within that bound (a TX that does not
//! complete, or a frame the kernel took from the fill ring and kept, which happens only
//! after it found the RX ring full) are counted as lost in [`WorkerReport::frames_lost`]
//! and stay out of circulation: [`Worker::check_accounting`] counts them as a place of
//! their own, so the invariant still holds and no frame can ever be handed out twice.
//! With veth in copy mode they complete, and nothing is lost.
//!
//! Interfaces are named in the snapshot by index, and indices move when the agent
//! publishes a snapshot with interfaces added or removed. A worker therefore keeps every
//! interface by name (its own ports, and which other worker owns which interface) and
//! re-derives its [`OutputMap`] whenever the snapshot it loads has another generation
//! than the one it mapped: one integer compare per round on the packet path, and the
//! re-map (which may allocate) only when the snapshot changed. WireGuard's peers are
//! reconciled with the snapshot's at the same moment. A frame routed to an interface that
//! neither this worker nor a known other worker owns (just detached, or its owner not
//! announced yet) is dropped as `unowned_output`.
//!
//! The agent drives all this through [`crate::ports::PortControl`]: a command mailbox
//! per worker, checked with one atomic load per round (a lock only when a command
//! waits), whose posts wake a sleeping worker through its handoff [`crate::handoff::Waker`].

mod execute;
mod ports;
mod report;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_crypto::peers::{PeerId, DEFAULT_HANDSHAKE_LIMIT};
use weir_crypto::NodeKey;
use weir_dataplane::node::output::{Action, OutputMap, Owner};
use weir_dataplane::policy::ConntrackConfig;
use weir_dataplane::snapshot::{PeerIndex, SnapshotReader};
use weir_dataplane::{Batch, FrameRegion, FreeList, IfIndex, Pipeline, Snapshot, BATCH_SIZE};

pub use ports::DETACH_WAIT;
pub use ports::POD_SLOTS;
use ports::{bind_port, fill_quota, PodSteering, Port, UNMAPPED};
pub use report::{PortReport, SharedReport, WorkerReport, SLOW_ROUND};

use crate::bpf::{AttachMode, BpfError, UplinkFilter};
use crate::handoff::Links;
use crate::ports::PortMailbox;
use crate::wireguard::Tunnel;
use crate::xsk::{SocketConfig, Umem, UmemConfig, XskError, XDP_PACKET_HEADROOM};

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("interface {name:?}: {source}")]
    Socket { name: String, source: XskError },
    #[error("interface {name:?}: {source}")]
    Bpf { name: String, source: BpfError },
    #[error("UMEM: {0}")]
    Umem(XskError),
    #[error("interface {0:?} is not in the snapshot")]
    UnknownInterface(String),
    #[error("interface {0:?} is already attached to this worker")]
    AlreadyAttached(String),
    #[error("interface {0:?} is not attached to this worker")]
    NotAttached(String),
    #[error("interface {0:?}: a pod interface and an uplink cannot turn into each other while attached; detach it and attach it again")]
    PortKind(String),
    #[error("WireGuard runs on the worker that owns the uplink, and this one does not")]
    NoUplink,
    #[error("this worker already serves {0} pod interfaces, its most; attach the interface to another worker")]
    TooManyPorts(u32),
}

/// An interface a worker attaches to.
#[derive(Debug, Clone)]
pub struct PortSpec {
    /// Kernel name (also the name in the snapshot).
    pub name: String,
    /// `None`: every frame goes to weir (a pod interface). `Some`: only the traffic the
    /// filter names (an uplink); the rest goes to the kernel.
    pub uplink_filter: Option<UplinkFilter>,
}

/// How a worker sets up its memory and sockets.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub umem: UmemConfig,
    pub socket: SocketConfig,
    pub attach: AttachMode,
    pub conntrack: ConntrackConfig,
    /// Empty polls in a row before the worker sleeps in `poll(2)`.
    pub idle_polls: u32,
    /// How long one sleep may last (the worker re-checks the stop flag after it).
    pub sleep: Duration,
    /// Plan for this many ports when sharing the fill frames out (at least the ports the
    /// worker has). A worker that gains ports at run time must plan for them from the
    /// start: frames already lent to a port's fill ring stay there until packets arrive,
    /// so a quota lowered later would leave a new port without frames.
    pub planned_ports: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            umem: UmemConfig::default(),
            socket: SocketConfig::default(),
            attach: AttachMode::NativeOrGeneric,
            conntrack: ConntrackConfig::default(),
            idle_polls: 256,
            sleep: Duration::from_millis(100),
            planned_ports: 1,
        }
    }
}

/// `poll(2)` wakeups per output per round at most: a full batch in copy mode, 32 frames
/// each.
const MAX_KICKS: usize = BATCH_SIZE / 32 + 1;

/// Staged frames per output beyond which new ones are dropped (`tx_ring_full`).
const STAGE_LIMIT: usize = 2 * BATCH_SIZE;

/// How often a running worker publishes its report.
const REPORT_INTERVAL_NS: u64 = 100_000_000;

/// One worker: its UMEM, its sockets and its pipeline.
pub struct Worker {
    umem: Umem,
    ports: Vec<Port>,
    /// The shared program of the pod and host interfaces, once one is attached.
    pods: Option<PodSteering>,
    /// Interfaces a helper thread is binding (see `Worker::start_binding`).
    binding: Vec<String>,
    /// Helper threads still at work (they are not joined: see `Worker::start_binding`).
    helpers: Arc<std::sync::atomic::AtomicUsize>,
    /// Port commands waiting for the binds to come back.
    deferred: Vec<crate::ports::PortCommand>,
    free: FreeList,
    /// Frames each fill ring is topped up to.
    fill_quota: usize,
    batch: Batch,
    pipeline: Pipeline,
    /// The output stage's plan for the batch.
    plan: Vec<Action>,
    /// Who owns each interface of the mapped snapshot.
    map: OutputMap,
    /// Set when ports or owners changed: the map is rebuilt before the next batch.
    force_remap: bool,
    rx: Vec<(u64, u32)>,
    /// The sockets as `poll(2)` wants them, built once.
    pollfds: Vec<libc::pollfd>,
    report: WorkerReport,
    idle: u32,
    config: WorkerConfig,
    /// Lanes to and from the other workers (empty when this is the only one).
    links: Links,
    /// Interfaces other workers own, by name: what the map's remote owners come from.
    owners: Vec<(String, usize)>,
    /// Frames the kernel kept when ports were detached (see the module doc).
    lost: usize,
    /// Where the agent's port commands arrive.
    mailbox: Option<Arc<PortMailbox>>,
    /// Per other worker: whether this round handed it frames (to wake it after).
    handed: Vec<bool>,
    /// WireGuard, when this worker owns the uplink and it is on.
    tunnel: Option<Tunnel>,
    /// The uplink's port here, when this worker owns it.
    uplink_port: Option<usize>,
    /// Frames to seal this round: `(peer, addr, len)`.
    to_seal: Vec<(PeerIndex, u64, u32)>,
    /// Frames the tunnel made (replies, flushed packets, timer messages) to send.
    control: Vec<(u64, u32)>,
    /// Peers whose queued packets can go after a handshake reply.
    flush: Vec<PeerId>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field(
                "ports",
                &self.ports.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A helper may be binding against this UMEM and the first port's socket: both
        // must outlive it.
        self.join_helpers();
    }
}

impl Worker {
    /// Creates the UMEM, binds a socket on queue 0 of every port, and attaches the XDP
    /// programs that feed them. `snapshot` maps interface names to its indices.
    pub fn new(
        ports: &[PortSpec],
        snapshot: &Snapshot,
        config: WorkerConfig,
    ) -> Result<Worker, WorkerError> {
        // No port yet is fine: ports are attached as pods arrive.
        let umem = Umem::new(&config.umem).map_err(WorkerError::Umem)?;
        let mut built: Vec<Port> = Vec::with_capacity(ports.len());
        let mut pods = None;
        for spec in ports {
            let port = bind_port(
                &umem,
                spec,
                snapshot,
                &config,
                built.first().map(|p| &p.socket),
                &mut pods,
            )?;
            built.push(port);
        }
        let free = FreeList::full(umem.frame_count() as usize, umem.frame_size() as usize);
        let fill_quota = fill_quota(&umem, built.len().max(config.planned_ports));
        let report = WorkerReport {
            ports: built.iter().map(Port::report).collect(),
            ..WorkerReport::default()
        };
        let mut worker = Worker {
            umem,
            ports: built,
            pods,
            binding: Vec::new(),
            helpers: Arc::default(),
            deferred: Vec::new(),
            free,
            fill_quota,
            batch: Batch::new(),
            pipeline: Pipeline::with_conntrack(config.conntrack),
            plan: Vec::with_capacity(BATCH_SIZE),
            map: OutputMap::new(),
            force_remap: true,
            rx: Vec::with_capacity(BATCH_SIZE),
            pollfds: Vec::new(),
            report,
            idle: 0,
            config,
            links: Links::default(),
            owners: Vec::new(),
            lost: 0,
            mailbox: None,
            handed: Vec::new(),
            tunnel: None,
            uplink_port: None,
            to_seal: Vec::new(),
            control: Vec::new(),
            flush: Vec::new(),
        };
        worker.rebuild_pollfds();
        worker.remap(snapshot);
        worker.refill();
        Ok(worker)
    }

    /// Joins the handoff mesh: frames whose output interface another worker owns go to it
    /// over `links`, and frames handed in are sent here. `snapshot` maps the interface
    /// names of `links.remote` to its indices.
    pub fn connect(&mut self, snapshot: &Snapshot, links: Links) -> Result<(), WorkerError> {
        if let Some((name, _)) = links
            .remote
            .iter()
            .find(|(name, _)| snapshot.interface_by_name(name).is_none())
        {
            return Err(WorkerError::UnknownInterface(name.clone()));
        }
        self.handed = vec![false; links.outbound.len()];
        // Source NAT takes this worker's share of the ports (replies steer back by port).
        if let (Ok(me), Ok(n)) = (
            u16::try_from(links.me),
            u16::try_from(links.outbound.len().max(1)),
        ) {
            if me < n {
                self.pipeline.set_worker(me, n);
            }
        }
        self.owners = links
            .remote
            .iter()
            .filter(|(_, w)| *w != links.me)
            .cloned()
            .collect();
        self.links = links;
        self.rebuild_pollfds();
        self.remap(snapshot);
        Ok(())
    }

    /// Takes port commands from `mailbox` (see [`crate::ports::PortControl`]): a running
    /// worker ([`Worker::run`]) looks at it once per round and serves what waits there.
    pub fn set_port_mailbox(&mut self, mailbox: Arc<PortMailbox>) {
        self.mailbox = Some(mailbox);
    }

    /// Turns WireGuard on with this node's key, on the uplink this worker owns: frames the
    /// pipeline routes to a WireGuard peer are sealed for it, and WireGuard arriving on the
    /// uplink is opened into the pipeline. The peers, this node's address and port come
    /// from the snapshots (`snapshot.peers`), reconciled whenever the generation changes.
    /// Fails when this worker has no uplink.
    pub fn enable_wireguard(
        &mut self,
        snapshot: &Snapshot,
        key: NodeKey,
    ) -> Result<(), WorkerError> {
        if !(0..self.ports.len()).any(|i| self.is_uplink(snapshot, i)) {
            return Err(WorkerError::NoUplink);
        }
        let mut tunnel = Tunnel::new(key, DEFAULT_HANDSHAKE_LIMIT, XDP_PACKET_HEADROOM as usize);
        tunnel.reconcile(snapshot);
        self.tunnel = Some(tunnel);
        self.remap(snapshot);
        Ok(())
    }

    /// Runs until `stop` is set, reading the current snapshot for each batch and
    /// publishing a report into `report` about ten times a second.
    pub fn run(
        &mut self,
        reader: &SnapshotReader,
        stop: &AtomicBool,
        report: &Mutex<WorkerReport>,
    ) {
        let started = Instant::now();
        let mut last_report_ns = 0u64;
        let mut cpu_wait = report::CpuWait::of_this_thread();
        while !stop.load(Ordering::Relaxed) {
            // One clock read at the start of a round serves the pipeline, the report
            // timer and the round's length (read again after port commands, which may
            // take a while); one more at its end.
            let round_ns = started.elapsed().as_nanos() as u64;
            let mut served = false;
            if let Some(mailbox) = self.mailbox.as_ref().filter(|m| m.pending()).cloned() {
                self.serve(&mailbox, reader);
                self.idle = 0;
                served = true;
            }
            let snapshot = reader.load();
            let now_ns = if served {
                started.elapsed().as_nanos() as u64
            } else {
                round_ns
            };
            let n = self.poll_once(&snapshot, now_ns);
            drop(snapshot);
            let took_ns = (started.elapsed().as_nanos() as u64).saturating_sub(round_ns);
            if took_ns > report::SLOW_ROUND.as_nanos() as u64 {
                self.report.slow_rounds += 1;
                self.report.slow_port_rounds += u64::from(served);
                self.report.longest_round_ns = self.report.longest_round_ns.max(took_ns);
                let (waited, total) = cpu_wait.since_last();
                self.report.cpu_wait_ns = total;
                let stall = took_ns.saturating_sub(waited);
                self.report.longest_stall_ns = self.report.longest_stall_ns.max(stall);
                if served {
                    self.report.longest_port_stall_ns =
                        self.report.longest_port_stall_ns.max(stall);
                }
            }
            if n == 0
                && self
                    .ports
                    .iter()
                    .all(|p| p.staged.is_empty() && p.socket.tx_pending() == 0)
                && !self.handoffs_waiting()
            {
                self.idle += 1;
                if self.idle >= self.config.idle_polls {
                    self.sleep();
                    self.idle = 0;
                }
            } else {
                self.idle = 0;
                // Wake the kernel when a fill ring asks for it (copy mode on veth does).
                if self.ports.iter().any(|p| p.socket.fill_needs_wakeup()) {
                    poll_sockets(&mut self.pollfds, 0);
                }
            }
            if now_ns.saturating_sub(last_report_ns) >= REPORT_INTERVAL_NS
                && self.publish(report, &mut cpu_wait, false)
            {
                last_report_ns = now_ns;
            }
        }
        self.publish(report, &mut cpu_wait, true);
    }

    /// One round: completions, refill, WireGuard's timers, handoffs, one RX burst through
    /// the pipeline and its output stage, sealing, TX. Returns the number of frames
    /// received. When `snapshot` is of another generation than the one last mapped, the
    /// interface indices are first re-derived from the names and WireGuard's peers
    /// reconciled.
    pub fn poll_once(&mut self, snapshot: &Snapshot, now_ns: u64) -> usize {
        if self.force_remap || snapshot.generation != self.map.generation() {
            self.remap(snapshot);
        }
        for p in &mut self.ports {
            let n = p.socket.complete(&mut self.free);
            p.lent_tx -= n.min(p.lent_tx);
        }
        self.refill();
        if let Some(t) = self.tunnel.as_mut() {
            t.tick(
                now_ns,
                snapshot,
                self.umem.region_mut(),
                &mut self.free,
                &mut self.control,
                self.pipeline.counters_mut(),
            );
        }
        if !self.links.inbound.is_empty() {
            self.take_handoffs();
        }
        let received = self.receive(snapshot);
        if !self.batch.is_empty() {
            let frame_size = self.umem.frame_size() as usize;
            let mut region = FrameRegion::new(self.umem.region_mut(), frame_size);
            self.pipeline
                .process(snapshot, &mut region, &mut self.batch, now_ns);
            self.pipeline
                .output(snapshot, &self.batch, &self.map, &mut self.plan);
            self.execute_plan();
        }
        if !self.to_seal.is_empty() || !self.control.is_empty() || !self.flush.is_empty() {
            self.seal_pending(snapshot);
        }
        for (w, flag) in self.handed.iter_mut().enumerate() {
            if std::mem::take(flag) {
                if let Some(waker) = self.links.wakers.get(w) {
                    waker.wake();
                }
            }
        }
        self.transmit();
        received
    }

    fn sleep(&mut self) {
        let waker = self.links.wakers.get(self.links.me).cloned();
        if let Some(w) = &waker {
            // Say so first, then look once more: a parcel queued before the flag was
            // visible brought no signal.
            w.set_sleeping(true);
            if self.handoffs_waiting() || self.mailbox.as_ref().is_some_and(|m| m.pending()) {
                w.set_sleeping(false);
                return;
            }
        }
        self.report.sleeps += 1;
        let ms = self.config.sleep.as_millis().min(i32::MAX as u128) as i32;
        poll_sockets(&mut self.pollfds, ms);
        if let Some(w) = &waker {
            w.set_sleeping(false);
            w.clear();
        }
    }

    /// Derives the ports' snapshot indices and the output map from the names, for
    /// `snapshot`, and reconciles WireGuard's peers with it. Allocates; runs only when the
    /// snapshot or the ports changed.
    fn remap(&mut self, snapshot: &Snapshot) {
        let by_name: HashMap<&str, IfIndex> = snapshot
            .interfaces
            .iter()
            .enumerate()
            .filter_map(|(i, x)| Some((x.name.as_str(), IfIndex::try_from(i).ok()?)))
            .collect();
        self.map
            .reset(snapshot.generation, snapshot.interfaces.len(), false);
        for (name, owner) in &self.owners {
            if let (Some(&at), Ok(w)) = (by_name.get(name.as_str()), u16::try_from(*owner)) {
                self.map.set(at, Owner::Worker(w));
            }
        }
        // This worker's own ports win over what the owners list says.
        for (i, p) in self.ports.iter_mut().enumerate() {
            p.index = by_name.get(p.name.as_str()).copied().unwrap_or(UNMAPPED);
            if let (true, Ok(port)) = (p.index != UNMAPPED, u16::try_from(i)) {
                self.map.set(p.index, Owner::Here { port });
            }
        }
        self.uplink_port = (0..self.ports.len()).find(|&i| self.is_uplink(snapshot, i));
        if self.uplink_port.is_none() {
            self.tunnel = None;
        }
        if let Some(t) = self.tunnel.as_mut() {
            t.reconcile(snapshot);
        }
        self.map.set_sealing(self.tunnel.is_some());
        self.force_remap = false;
    }

    /// The poll set: every socket, then this worker's waker when it has one.
    fn rebuild_pollfds(&mut self) {
        self.pollfds.clear();
        for p in &self.ports {
            self.pollfds.push(libc::pollfd {
                fd: p.socket.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(waker) = self.links.wakers.get(self.links.me) {
            self.pollfds.push(libc::pollfd {
                fd: waker.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
    }

    fn handoffs_waiting(&self) -> bool {
        self.links.inbound.iter().any(|l| l.waiting() > 0)
    }

    /// The UMEM's hugepage warning, if it fell back to 4 KiB pages.
    pub fn umem_warning(&self) -> Option<&str> {
        self.umem.warning()
    }
}

/// `poll(2)` on `pfds` (built once per worker) for input, up to `timeout_ms` (0: just
/// look). Errors (EINTR) are treated as a wake-up.
#[allow(unsafe_code)]
fn poll_sockets(pfds: &mut [libc::pollfd], timeout_ms: i32) {
    // SAFETY: `pfds` is a valid, exclusively borrowed array of `pfds.len()` pollfd
    // structures that outlives the call.
    unsafe {
        libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms);
    }
}
