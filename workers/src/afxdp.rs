//! The AF_XDP driver: one worker's UMEM, its sockets (one per interface it owns, all on
//! that UMEM so a frame received on one interface is transmitted on another without a
//! copy), the XDP programs that feed them, and the loop that runs the pipeline.
//!
//! Loop: reap TX completions into the free list, top up every fill ring, receive a burst
//! from every socket into one batch, run the pipeline, stage the frames it emits per output
//! interface, push the staged frames into the TX rings and kick the kernel. When a few
//! hundred polls in a row find nothing, the worker sleeps in `poll(2)` on its sockets (an
//! idle edge box should not burn a core); under load it never sleeps.
//!
//! Frame accounting is an invariant: every frame of the UMEM is in exactly one place —
//! the free list, a fill ring (lent to the kernel until it comes back on that socket's RX
//! ring), the batch, a TX staging queue, or a TX ring (lent until it completes).
//! [`Worker::check_accounting`] verifies it from the counts and the free list.
//!
//! # Ports come and go
//!
//! Pods are created and deleted while the workers run, so a worker's interfaces are not
//! fixed at [`Worker::new`]. [`Worker::attach_port`] binds one more socket on the
//! worker's UMEM, attaches its XDP program and gives its fill ring its share of frames;
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
//! re-derives its index tables (`port_of`, `remote_of`) whenever the snapshot it loads
//! has another generation than the one it mapped: one integer compare per round on the
//! packet path, and the re-map (which may allocate) only when the snapshot changed. A
//! frame routed to an interface that neither this worker nor a known other worker owns
//! (just detached, or its owner not announced yet) is dropped as `no_route` and counted
//! in [`WorkerReport::unowned_output`].
//!
//! The agent drives all this through [`crate::ports::PortControl`]: a command mailbox
//! per worker, checked with one atomic load per round (a lock only when a command
//! waits), whose posts wake a sleeping worker through its handoff [`crate::handoff::Waker`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_dataplane::policy::ConntrackConfig;
use weir_dataplane::snapshot::SnapshotReader;
use weir_dataplane::{Batch, Counters, FrameRegion, IfIndex, Pipeline, Snapshot, BATCH_SIZE};

use crate::bpf::{AttachMode, BpfError, UplinkFilter, XdpLink, XdpProgram, XskMap};
use crate::handoff::Links;
use crate::ports::{PortCommand, PortMailbox};
use crate::tunnel::{Inbound, SharedPeerMailbox, Tunnel, TunnelCounters, WireGuardSetup};

/// WireGuard for the uplink's worker: the set-up, and where later peer sets arrive.
#[derive(Debug)]
pub struct WireGuardOnWorker {
    pub wireguard: WireGuardSetup,
    pub mailbox: Option<SharedPeerMailbox>,
}
use crate::xsk::{SocketConfig, Umem, UmemConfig, XskError, XskSocket};
use weir_crypto::peers::WgCounters;
use weir_dataplane::batch::{flags, Next};
use weir_dataplane::DropReason;

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

/// What a worker publishes for metrics: a copy of its counters and its driver counts,
/// refreshed a few times per second (no lock on the packet path).
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    pub pipeline: Counters,
    /// Frames received from the kernel, over all sockets.
    pub rx_frames: u64,
    /// Frames the kernel took for transmission.
    pub tx_frames: u64,
    /// Times a TX ring had no room for a staged frame.
    pub tx_ring_full: u64,
    /// Times every fill ring could not be topped up because the free list was empty.
    pub fill_starved: u64,
    /// Sleeps in `poll(2)`.
    pub sleeps: u64,
    /// Frames handed to the worker that owns their output interface.
    pub handoff_out: u64,
    /// Frames other workers handed to this one (and it staged for sending).
    pub handoff_in: u64,
    /// Frames dropped at a handoff: no buffer free on the lane to the owner (it is behind),
    /// or no frame or TX room here for a frame handed in, or a frame handed in whose
    /// output index is of another snapshot generation than the one mapped here (a few
    /// while the workers move to a new snapshot).
    pub handoff_dropped: u64,
    /// WireGuard, on the worker that owns the uplink: the peers' counters.
    pub wireguard: WgCounters,
    /// WireGuard: the tunnel's own counters.
    pub tunnel: TunnelCounters,
    /// RX descriptors that pointed outside the UMEM (recycled, not processed).
    pub bad_descriptors: u64,
    /// Frames routed to an interface that neither this worker nor a known other worker
    /// owns (detached, or its owner not announced yet); each is also a `no_route` drop
    /// in the pipeline's counters.
    pub unowned_output: u64,
    /// Frames found in a port's RX ring or TX staging queue while it was detached, and
    /// returned to the free list unsent.
    pub detach_dropped: u64,
    /// Frames the kernel did not give back when a port was detached (TX not completed
    /// within [`DETACH_WAIT`], or kept from the fill ring); they are never reused. 0 on
    /// veth in copy mode.
    pub frames_lost: u64,
    /// Per interface: name, whether XDP runs in native mode, and the kernel's statistics.
    pub ports: Vec<PortReport>,
}

/// One socket's state for metrics.
#[derive(Debug, Clone, Default)]
pub struct PortReport {
    pub name: String,
    pub native: bool,
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub tx_ring_empty: u64,
}

struct Port {
    name: String,
    index: IfIndex,
    socket: XskSocket,
    // Kept alive: dropping the link detaches the program; the map holds the socket.
    link: XdpLink,
    _program: XdpProgram,
    _map: XskMap,
    staged: Vec<(u64, u32)>,
    /// Frames given to the fill ring and not yet received back.
    lent_fill: usize,
    /// Frames given to the TX ring and not yet completed.
    lent_tx: usize,
}

/// How long [`Worker::detach_port`] waits for a port's TX completions at most.
pub const DETACH_WAIT: Duration = Duration::from_millis(100);

/// How long a detached port's rings must stay quiet (no RX, nothing pending) before its
/// fill ring is read back: lets a receive that was under way when the program was
/// detached finish.
const DETACH_SETTLE: Duration = Duration::from_millis(2);

/// The index of a port whose interface the loaded snapshot does not have: no snapshot
/// has that many interfaces, so the pipeline drops what arrives on it.
const UNMAPPED: IfIndex = IfIndex::MAX;

/// `mapped_generation` that no snapshot has: forces a re-map on the next round.
const REMAP: u64 = u64::MAX;

/// How often a running worker publishes its report.
const REPORT_INTERVAL_NS: u64 = 100_000_000;

/// Wakeups per output per round at most: a full batch in copy mode, 32 frames each.
const MAX_KICKS: usize = BATCH_SIZE / 32 + 1;

/// Staged frames per output beyond which new ones are dropped (`tx_ring_full`).
const STAGE_LIMIT: usize = 2 * BATCH_SIZE;

/// One worker: its UMEM, its sockets and its pipeline.
pub struct Worker {
    umem: Umem,
    ports: Vec<Port>,
    /// Snapshot interface index to port.
    port_of: Vec<Option<usize>>,
    free: Vec<u64>,
    /// Frames each fill ring is topped up to.
    fill_quota: usize,
    batch: Batch,
    pipeline: Pipeline,
    rx: Vec<(u64, u32)>,
    /// The sockets as `poll(2)` wants them, built once.
    pollfds: Vec<libc::pollfd>,
    report: WorkerReport,
    idle: u32,
    config: WorkerConfig,
    /// Lanes to and from the other workers (empty when this is the only one).
    links: Links,
    /// Snapshot interface index to the worker that owns it, for interfaces not here.
    remote_of: Vec<Option<usize>>,
    /// Interfaces other workers own, by name: what `remote_of` is derived from.
    owners: Vec<(String, usize)>,
    /// The snapshot generation `port_of`, `remote_of` and the ports' indices were
    /// derived from.
    mapped_generation: u64,
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
    /// Frames to seal this round: `(addr, len)`.
    to_seal: Vec<(u64, u32)>,
    /// Frames the tunnel made (replies, flushed packets, timer messages) to send.
    control: Vec<(u64, u32)>,
    /// Peers whose queued packets can go after a handshake reply.
    flush: Vec<weir_crypto::PeerId>,
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
        for spec in ports {
            let port = bind_port(
                &umem,
                spec,
                snapshot,
                &config,
                built.first().map(|p| &p.socket),
            )?;
            built.push(port);
        }
        let mut free: Vec<u64> = umem.frames().collect();
        free.reverse();
        let fill_quota = fill_quota(&umem, built.len().max(config.planned_ports));
        let report = WorkerReport {
            ports: built.iter().map(Port::report).collect(),
            ..WorkerReport::default()
        };
        let mut worker = Worker {
            umem,
            ports: built,
            port_of: Vec::new(),
            free,
            fill_quota,
            batch: Batch::new(),
            pipeline: Pipeline::with_conntrack(config.conntrack),
            rx: Vec::with_capacity(BATCH_SIZE),
            pollfds: Vec::new(),
            report,
            idle: 0,
            config,
            links: Links::default(),
            remote_of: Vec::new(),
            owners: Vec::new(),
            mapped_generation: REMAP,
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

    /// Binds a socket for `spec` on this worker's UMEM, attaches its XDP program, and
    /// adds it to the ports, the poll set and the report; the fill quota is shared anew
    /// and the new fill ring is topped up. `snapshot` must name the interface (publish
    /// the snapshot that adds it first). Tell the other workers who owns it with
    /// [`crate::ports::PortControl::set_owner`] ([`crate::ports::PortControl::attach`]
    /// does).
    pub fn attach_port(&mut self, spec: &PortSpec, snapshot: &Snapshot) -> Result<(), WorkerError> {
        if self.ports.iter().any(|p| p.name == spec.name) {
            return Err(WorkerError::AlreadyAttached(spec.name.clone()));
        }
        let port = bind_port(
            &self.umem,
            spec,
            snapshot,
            &self.config,
            self.ports.first().map(|p| &p.socket),
        )?;
        self.report.ports.push(port.report());
        self.ports.push(port);
        self.fill_quota = fill_quota(&self.umem, self.ports.len().max(self.config.planned_ports));
        self.rebuild_pollfds();
        self.remap(snapshot);
        let quota = self.fill_quota;
        if let Some(p) = self.ports.last_mut() {
            let want = quota.saturating_sub(p.lent_fill);
            if self.free.len() < want {
                self.report.fill_starved += 1;
            }
            p.lent_fill += p.socket.fill_from(&mut self.free, want);
        }
        Ok(())
    }

    /// Detaches interface `name` and gives back every frame it holds, in this order: the
    /// XDP link goes first (nothing new arrives); what waits in the RX ring goes back to
    /// the free list (counted in [`WorkerReport::detach_dropped`]); what is staged is
    /// sent, and the TX completions are awaited, kicking, for up to [`DETACH_WAIT`];
    /// the frames still in the fill ring are read back; then the socket is closed. Frames
    /// the kernel did not return within the bound are counted in
    /// [`WorkerReport::frames_lost`] and never reused, so [`Worker::check_accounting`]
    /// holds either way. Blocks for a few milliseconds (at most about [`DETACH_WAIT`]).
    /// Detaching the uplink turns WireGuard off on this worker.
    pub fn detach_port(&mut self, name: &str) -> Result<(), WorkerError> {
        let i = self
            .ports
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| WorkerError::NotAttached(name.to_owned()))?;
        let port = self.ports.remove(i);
        self.report.ports.remove(i);
        for slot in &mut self.port_of {
            *slot = match *slot {
                Some(j) if j == i => None,
                Some(j) if j > i => Some(j - 1),
                other => other,
            };
        }
        self.uplink_port = match self.uplink_port {
            Some(u) if u == i => {
                self.tunnel = None;
                None
            }
            Some(u) if u > i => Some(u - 1),
            other => other,
        };
        self.rebuild_pollfds();
        if !self.ports.is_empty() {
            self.fill_quota =
                fill_quota(&self.umem, self.ports.len().max(self.config.planned_ports));
        }
        let lost = self.drain_detached(port);
        self.lost += lost;
        self.report.frames_lost += lost as u64;
        Ok(())
    }

    /// Records that interface `name` is now owned by worker `worker` (`None`: by no
    /// worker, it is gone). Frames routed to it are handed to that worker from the next
    /// round on. An interface attached here stays this worker's whatever this says.
    pub fn set_owner(&mut self, name: &str, worker: Option<usize>) {
        self.owners.retain(|(n, _)| n != name);
        if let Some(w) = worker.filter(|&w| w != self.links.me) {
            self.owners.push((name.to_owned(), w));
        }
        self.mapped_generation = REMAP;
    }

    /// Turns WireGuard on, on the uplink this worker owns: frames routed to remote nodes
    /// are sealed for their peers, and WireGuard arriving on the uplink is opened into the
    /// pipeline. Fails when this worker has no uplink.
    pub fn enable_wireguard(
        &mut self,
        snapshot: &Snapshot,
        setup: WireGuardOnWorker,
    ) -> Result<(), WorkerError> {
        let found = self.ports.iter().enumerate().find(|(_, p)| {
            snapshot
                .interface(p.index)
                .is_some_and(|i| i.role == weir_dataplane::snapshot::Role::Uplink)
        });
        let Some((i, p)) = found else {
            return Err(WorkerError::UnknownInterface(
                "an uplink (WireGuard needs the worker that owns it)".into(),
            ));
        };
        let mut tunnel = Tunnel::new(setup.wireguard, snapshot, p.index)
            .ok_or_else(|| WorkerError::UnknownInterface(p.name.clone()))?;
        if let Some(m) = setup.mailbox {
            tunnel.set_mailbox(m);
        }
        self.uplink_port = Some(i);
        self.tunnel = Some(tunnel);
        Ok(())
    }

    /// Seals what waits in `to_seal` and stages it, with the tunnel's control messages,
    /// on the uplink.
    fn seal_pending(&mut self) {
        let frame_size = u64::from(self.umem.frame_size());
        let (Some(tunnel), Some(up)) = (self.tunnel.as_mut(), self.uplink_port) else {
            for (addr, _) in self.to_seal.drain(..) {
                self.free.push(addr - addr % frame_size);
                self.pipeline
                    .settle(Next::Drop(DropReason::TunnelUnavailable));
            }
            for (addr, _) in self.control.drain(..) {
                self.free.push(addr - addr % frame_size);
            }
            self.flush.clear();
            return;
        };
        let area = self.umem.region_mut();
        for (addr, len) in self.to_seal.drain(..) {
            match tunnel.seal(area, frame_size, addr, len, &mut self.free) {
                Some(f) => self.control.push(f),
                None => self.free.push(addr - addr % frame_size),
            }
        }
        for id in self.flush.drain(..) {
            while let Some(entry) = self.free.pop() {
                let base = entry - entry % frame_size;
                match tunnel.flush_into(area, frame_size, base, id) {
                    Some(Some(f)) => self.control.push(f),
                    Some(None) => self.free.push(base),
                    None => {
                        self.free.push(base);
                        break;
                    }
                }
            }
        }
        let port = &mut self.ports[up];
        for f in self.control.drain(..) {
            if port.staged.len() < STAGE_LIMIT {
                port.staged.push(f);
            } else {
                self.report.tx_ring_full += 1;
                self.free.push(f.0 - f.0 % frame_size);
            }
        }
    }

    /// Frames other workers handed over: each is copied into a free frame of ours and
    /// staged on its output port.
    fn take_handoffs(&mut self) {
        let frame_size = u64::from(self.umem.frame_size());
        let mut budget = BATCH_SIZE;
        for lane in &self.links.inbound {
            while budget > 0 {
                let Some(parcel) = lane.receive() else { break };
                budget -= 1;
                let len = usize::from(parcel.len);
                // An index of another snapshot may name another interface here.
                let port = (parcel.generation == self.mapped_generation)
                    .then(|| self.port_of.get(usize::from(parcel.out)).copied().flatten())
                    .flatten();
                // Frames keep the usual headroom, which sealing writes outer headers into.
                let headroom = crate::xsk::XDP_PACKET_HEADROOM;
                let staged = match (port, self.free.last().copied()) {
                    (Some(i), Some(entry))
                        if self.ports[i].staged.len() < STAGE_LIMIT
                            && headroom + len as u64 <= frame_size =>
                    {
                        // Free-list entries are whatever address the frame last had
                        // (completions return the TX address): start from the frame's base.
                        let addr = entry - entry % frame_size + headroom;
                        match self.umem.packet_mut(addr, len as u32) {
                            Some(dst) => {
                                dst.copy_from_slice(&parcel.bytes[..len]);
                                self.free.pop();
                                if parcel.seal {
                                    self.to_seal.push((addr, len as u32));
                                } else {
                                    self.ports[i].staged.push((addr, len as u32));
                                }
                                true
                            }
                            None => false,
                        }
                    }
                    _ => false,
                };
                if staged {
                    self.report.handoff_in += 1;
                } else {
                    self.report.handoff_dropped += 1;
                }
                lane.recycle(parcel.bytes);
            }
        }
    }

    /// Serves the port commands waiting in `mailbox`, then re-maps for `snapshot`.
    fn serve(&mut self, mailbox: &PortMailbox, snapshot: &Snapshot) {
        for command in mailbox.take() {
            match command {
                PortCommand::Attach(spec, reply) => {
                    let r = self.attach_port(&spec, snapshot);
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                }
                PortCommand::Detach(name, reply) => {
                    let r = self.detach_port(&name);
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                }
                PortCommand::SetOwner { name, worker } => self.set_owner(&name, worker),
            }
        }
        self.remap(snapshot);
    }

    /// Derives the snapshot indices of the ports, `port_of` and `remote_of` from the
    /// names, for `snapshot`. Allocates; runs only when the snapshot or the ports changed.
    fn remap(&mut self, snapshot: &Snapshot) {
        let by_name: HashMap<&str, IfIndex> = snapshot
            .interfaces
            .iter()
            .enumerate()
            .filter_map(|(i, x)| Some((x.name.as_str(), IfIndex::try_from(i).ok()?)))
            .collect();
        fn set(table: &mut Vec<Option<usize>>, at: IfIndex, value: usize) {
            let at = usize::from(at);
            if table.len() <= at {
                table.resize(at + 1, None);
            }
            table[at] = Some(value);
        }
        self.port_of.clear();
        for (i, p) in self.ports.iter_mut().enumerate() {
            p.index = by_name.get(p.name.as_str()).copied().unwrap_or(UNMAPPED);
            if p.index != UNMAPPED {
                set(&mut self.port_of, p.index, i);
            }
        }
        self.remote_of.clear();
        for (name, owner) in &self.owners {
            let Some(&at) = by_name.get(name.as_str()) else {
                continue;
            };
            if self
                .port_of
                .get(usize::from(at))
                .copied()
                .flatten()
                .is_none()
            {
                set(&mut self.remote_of, at, *owner);
            }
        }
        if let (Some(t), Some(up)) = (self.tunnel.as_mut(), self.uplink_port) {
            t.uplink = self.ports[up].index;
        }
        self.mapped_generation = snapshot.generation;
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

    /// Takes every frame back from a port already removed from `ports` (see
    /// [`Worker::detach_port`]) and closes it; returns the frames the kernel kept.
    fn drain_detached(&mut self, port: Port) -> usize {
        let Port {
            mut socket,
            link,
            _program,
            _map,
            mut staged,
            mut lent_fill,
            mut lent_tx,
            ..
        } = port;
        // No new frames once the program is gone.
        drop(link);
        let started = Instant::now();
        let mut quiet_since: Option<Instant> = None;
        let mut rx = Vec::with_capacity(BATCH_SIZE);
        loop {
            rx.clear();
            let n = socket.recv(&mut rx, BATCH_SIZE);
            lent_fill -= n.min(lent_fill);
            for &(addr, _) in &rx {
                self.free.push(self.umem.frame_base(addr));
            }
            self.report.detach_dropped += n as u64;
            if !staged.is_empty() {
                let sent = socket.send(&staged);
                staged.drain(..sent);
                lent_tx += sent;
                self.report.tx_frames += sent as u64;
            }
            for _ in 0..MAX_KICKS {
                if socket.tx_pending() == 0 || socket.kick().is_err() {
                    break;
                }
            }
            let done = socket.complete(&mut self.free);
            lent_tx -= done.min(lent_tx);
            let quiet = n == 0 && staged.is_empty() && lent_tx == 0 && !socket.rx_pending();
            if !quiet {
                quiet_since = None;
            } else if quiet_since.get_or_insert_with(Instant::now).elapsed() >= DETACH_SETTLE {
                break;
            }
            if started.elapsed() >= DETACH_WAIT {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        for (addr, _) in staged.drain(..) {
            self.free.push(self.umem.frame_base(addr));
            self.report.detach_dropped += 1;
        }
        // The frames the kernel has not taken from the fill ring are ours again once the
        // socket is closed. Each is checked against the free list, so that no frame can
        // get there twice whatever the kernel's consumer index says.
        let mut unfilled = Vec::new();
        socket.unfilled(&mut unfilled);
        let size = u64::from(self.umem.frame_size());
        let mut is_free = vec![false; self.umem.frame_count() as usize];
        for &f in &self.free {
            if let Some(b) = is_free.get_mut((f / size) as usize) {
                *b = true;
            }
        }
        for addr in unfilled {
            if lent_fill == 0 {
                break;
            }
            let base = self.umem.frame_base(addr);
            if let Some(b) = is_free.get_mut((base / size) as usize).filter(|b| !**b) {
                *b = true;
                self.free.push(base);
                lent_fill -= 1;
            }
        }
        drop(socket);
        lent_fill + lent_tx
    }

    fn handoffs_waiting(&self) -> bool {
        self.links.inbound.iter().any(|l| l.waiting() > 0)
    }

    /// The UMEM's hugepage warning, if it fell back to 4 KiB pages.
    pub fn umem_warning(&self) -> Option<&str> {
        self.umem.warning()
    }

    fn refill(&mut self) {
        for p in &mut self.ports {
            let want = self.fill_quota.saturating_sub(p.lent_fill);
            if want == 0 {
                continue;
            }
            if self.free.is_empty() {
                self.report.fill_starved += 1;
                break;
            }
            let n = p.socket.fill_from(&mut self.free, want);
            p.lent_fill += n;
        }
    }

    /// One round: completions, refill, one RX burst through the pipeline, TX. Returns
    /// the number of frames received. When `snapshot` is of another generation than the
    /// one last mapped, the interface indices are first re-derived from the names.
    pub fn poll_once(&mut self, snapshot: &Snapshot, now_ns: u64) -> usize {
        if snapshot.generation != self.mapped_generation {
            self.remap(snapshot);
        }
        for p in &mut self.ports {
            let n = p.socket.complete(&mut self.free);
            p.lent_tx -= n.min(p.lent_tx);
        }
        self.refill();
        if let Some(t) = self.tunnel.as_mut() {
            let frame_size = u64::from(self.umem.frame_size());
            t.tick(
                now_ns,
                self.umem.region_mut(),
                frame_size,
                &mut self.free,
                &mut self.control,
            );
        }
        if !self.links.inbound.is_empty() {
            self.take_handoffs();
        }

        let mut received = 0;
        for p in &mut self.ports {
            let room = BATCH_SIZE - self.batch.len();
            if room == 0 {
                break;
            }
            self.rx.clear();
            let n = p.socket.recv(&mut self.rx, room);
            p.lent_fill -= n.min(p.lent_fill);
            received += n;
            if let Some(tunnel) = self.tunnel.as_mut().filter(|t| t.uplink == p.index) {
                let frame_size = u64::from(self.umem.frame_size());
                let area = self.umem.region_mut();
                let free = &mut self.free;
                let (control, flush) = (&mut self.control, &mut self.flush);
                self.rx.retain_mut(|(addr, len)| {
                    match tunnel.receive(area, frame_size, *addr, *len) {
                        Inbound::Pass => true,
                        Inbound::Deliver(n) => {
                            *len = n;
                            true
                        }
                        Inbound::Reply(a, l, peer) => {
                            control.push((a, l));
                            flush.extend(peer);
                            false
                        }
                        Inbound::Done => {
                            free.push(*addr - *addr % frame_size);
                            false
                        }
                    }
                });
            }
            // The kernel wrote these headers on another core: touch the first line of
            // each before parsing any, so that the misses overlap instead of queueing
            // one behind the other in the pipeline.
            let area = self.umem.region();
            let mut touched = 0u8;
            for &(addr, _) in &self.rx {
                touched ^= area.get(addr as usize).copied().unwrap_or(0);
            }
            std::hint::black_box(touched);
            let frame_size = u64::from(self.umem.frame_size());
            let region = FrameRegion::new(self.umem.region_mut(), frame_size as usize);
            for &(addr, len) in &self.rx {
                match region.frame(addr, len as usize) {
                    Ok(frame) => {
                        if let Err(frame) = self.batch.push(frame, p.index) {
                            self.free.push(frame.chunk());
                        }
                    }
                    // The kernel gave a descriptor outside the area: count and recycle.
                    Err(_) => {
                        self.report.bad_descriptors += 1;
                        self.free.push(addr - addr % frame_size);
                    }
                }
            }
        }
        self.report.rx_frames += received as u64;
        if !self.batch.is_empty() {
            let frame_size = self.umem.frame_size() as usize;
            let mut region = FrameRegion::new(self.umem.region_mut(), frame_size);
            self.pipeline
                .process(snapshot, &mut region, &mut self.batch, now_ns);
            let (pipeline, ports, port_of, free) = (
                &mut self.pipeline,
                &mut self.ports,
                &self.port_of,
                &mut self.free,
            );
            let (area, remote_of, links, handed, report) = (
                self.umem.region(),
                &self.remote_of,
                &self.links,
                &mut self.handed,
                &mut self.report,
            );
            let (to_seal, sealing_here) = (&mut self.to_seal, self.tunnel.is_some());
            let generation = self.mapped_generation;
            self.batch.drain(|frame, meta| {
                let seal = meta.has(flags::ENCRYPT);
                let Some(out) = pipeline.settle(meta.next) else {
                    free.push(frame.chunk());
                    return;
                };
                match port_of.get(usize::from(out)).copied().flatten() {
                    Some(_) if seal && sealing_here => {
                        pipeline.transmitted();
                        to_seal.push((frame.addr(), frame.len() as u32));
                    }
                    Some(_) if seal => {
                        // Flagged for WireGuard where it is off: never sent in clear.
                        pipeline.settle(Next::Drop(DropReason::TunnelUnavailable));
                        free.push(frame.chunk());
                    }
                    Some(i) if ports[i].staged.len() < STAGE_LIMIT => {
                        pipeline.transmitted();
                        ports[i].staged.push((frame.addr(), frame.len() as u32));
                    }
                    None if remote_of.get(usize::from(out)).copied().flatten().is_some() => {
                        // Another worker owns the output: copy the frame to it.
                        let owner = remote_of[usize::from(out)].unwrap_or(0);
                        let start = frame.addr() as usize;
                        let sent = match (
                            links.outbound.get(owner).and_then(Option::as_ref),
                            area.get(start..start + frame.len()),
                        ) {
                            (Some(lane), Some(bytes)) => {
                                lane.send_parcel(out, seal, generation, bytes)
                            }
                            _ => false,
                        };
                        if sent {
                            pipeline.transmitted();
                            report.handoff_out += 1;
                            handed[owner] = true;
                        } else {
                            report.handoff_dropped += 1;
                        }
                        free.push(frame.chunk());
                    }
                    Some(_) => {
                        // The output's staging queue is backed up.
                        pipeline.tx_full();
                        free.push(frame.chunk());
                    }
                    None => {
                        // No worker is known to own that output: detached, or its owner
                        // not announced yet.
                        pipeline.settle(Next::Drop(DropReason::NoRoute));
                        report.unowned_output += 1;
                        free.push(frame.chunk());
                    }
                }
            });
        }
        if !self.to_seal.is_empty() || !self.control.is_empty() || !self.flush.is_empty() {
            self.seal_pending();
        }
        for (w, flag) in self.handed.iter_mut().enumerate() {
            if std::mem::take(flag) {
                if let Some(waker) = self.links.wakers.get(w) {
                    waker.wake();
                }
            }
        }
        for p in &mut self.ports {
            if !p.staged.is_empty() {
                let n = p.socket.send(&p.staged);
                if n < p.staged.len() {
                    self.report.tx_ring_full += 1;
                }
                p.staged.drain(..n);
                p.lent_tx += n;
                self.report.tx_frames += n as u64;
            }
            // Copy mode sends a small budget per wakeup: kick until the kernel has taken
            // what the ring holds (bounded). A kick that fails is retried on the next
            // round; the frames stay in the ring.
            for _ in 0..MAX_KICKS {
                if p.socket.tx_pending() == 0 || p.socket.kick().is_err() {
                    break;
                }
            }
        }
        received
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
        while !stop.load(Ordering::Relaxed) {
            let snapshot = reader.load();
            if let Some(mailbox) = self.mailbox.as_ref().filter(|m| m.pending()).cloned() {
                self.serve(&mailbox, &snapshot);
                self.idle = 0;
            }
            // One clock read per round serves the pipeline and the report timer.
            let now_ns = started.elapsed().as_nanos() as u64;
            let n = self.poll_once(&snapshot, now_ns);
            drop(snapshot);
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
            if now_ns.saturating_sub(last_report_ns) >= REPORT_INTERVAL_NS {
                last_report_ns = now_ns;
                self.publish(report);
            }
        }
        self.publish(report);
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

    fn publish(&mut self, report: &Mutex<WorkerReport>) {
        self.report.pipeline = self.pipeline.counters().clone();
        if let Some(t) = &self.tunnel {
            self.report.wireguard = t.wg_counters();
            self.report.tunnel = t.counters;
        }
        for (p, r) in self.ports.iter().zip(self.report.ports.iter_mut()) {
            if let Ok(s) = p.socket.statistics() {
                r.rx_dropped = s.rx_dropped;
                r.rx_ring_full = s.rx_ring_full;
                r.rx_fill_ring_empty = s.rx_fill_ring_empty_descs;
                r.tx_ring_empty = s.tx_ring_empty_descs;
            }
        }
        if let Ok(mut shared) = report.lock() {
            *shared = self.report.clone();
        }
    }

    /// The worker's report as of now.
    pub fn report(&mut self) -> WorkerReport {
        self.report.pipeline = self.pipeline.counters().clone();
        if let Some(t) = &self.tunnel {
            self.report.wireguard = t.wg_counters();
            self.report.tunnel = t.counters;
        }
        self.report.clone()
    }

    /// Checks that every frame is in exactly one place: the free list holds no frame twice
    /// and nothing outside the UMEM, and free + lent to fill rings + staged + lent to TX
    /// rings (+ in the batch, + lost when ports were detached) equals the UMEM's frame
    /// count.
    pub fn check_accounting(&self) -> Result<(), String> {
        let size = u64::from(self.umem.frame_size());
        let mut seen = vec![false; self.umem.frame_count() as usize];
        for &f in &self.free {
            let i = (f / size) as usize;
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                Some(_) => return Err(format!("frame {f:#x} is in the free list twice")),
                None => return Err(format!("frame {f:#x} is outside the UMEM")),
            }
        }
        let lent: usize = self
            .ports
            .iter()
            .map(|p| p.lent_fill + p.lent_tx + p.staged.len())
            .sum();
        let total = self.free.len() + lent + self.batch.len() + self.lost;
        if total != self.umem.frame_count() as usize {
            return Err(format!(
                "{} frames accounted for ({} free, {lent} lent or staged, {} in the batch, \
                 {} lost at detach), the UMEM has {}",
                total,
                self.free.len(),
                self.batch.len(),
                self.lost,
                self.umem.frame_count()
            ));
        }
        Ok(())
    }
}

impl Port {
    fn report(&self) -> PortReport {
        PortReport {
            name: self.name.clone(),
            native: self.link.native(),
            ..PortReport::default()
        }
    }
}

/// Binds a socket for `spec` on `umem` (sharing it with `shared`, any socket already on
/// it, when there is one), and attaches the XDP program that feeds it.
fn bind_port(
    umem: &Umem,
    spec: &PortSpec,
    snapshot: &Snapshot,
    config: &WorkerConfig,
    shared: Option<&XskSocket>,
) -> Result<Port, WorkerError> {
    let name = spec.name.clone();
    let index = snapshot
        .interface_by_name(&name)
        .ok_or_else(|| WorkerError::UnknownInterface(name.clone()))?;
    let bpf = |source| WorkerError::Bpf {
        name: name.clone(),
        source,
    };
    let ifindex = crate::bpf::ifindex(&name).map_err(bpf)?;
    let socket = XskSocket::bind(umem, ifindex, 0, &config.socket, shared).map_err(|source| {
        WorkerError::Socket {
            name: name.clone(),
            source,
        }
    })?;
    let map = XskMap::new(1).map_err(bpf)?;
    map.set(0, socket.fd()).map_err(bpf)?;
    let program = match &spec.uplink_filter {
        None => XdpProgram::redirect_all(&map),
        Some(filter) => XdpProgram::uplink(&map, filter),
    }
    .map_err(bpf)?;
    let link = XdpLink::attach(&program, ifindex, config.attach).map_err(bpf)?;
    Ok(Port {
        name,
        index,
        socket,
        link,
        _program: program,
        _map: map,
        staged: Vec::with_capacity(STAGE_LIMIT),
        lent_fill: 0,
        lent_tx: 0,
    })
}

/// Frames each fill ring is topped up to with `ports` ports: half the frames wait in
/// fill rings, shared evenly; the rest are for frames in flight between RX and TX
/// completion.
fn fill_quota(umem: &Umem, ports: usize) -> usize {
    (umem.frame_count() as usize / 2 / ports.max(1))
        .min(umem.config().fill_size as usize)
        .max(1)
}

/// `poll(2)` on `pfds` (built once per worker) for input, up to `timeout_ms` (0: just look). Errors (EINTR) are
/// treated as a wake-up.
#[allow(unsafe_code)]
fn poll_sockets(pfds: &mut [libc::pollfd], timeout_ms: i32) {
    // SAFETY: `pfds` is a valid, exclusively borrowed array of `pfds.len()` pollfd
    // structures that outlives the call.
    unsafe {
        libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms);
    }
}

/// Shared handle to a worker's report, for the metrics endpoint.
pub type SharedReport = Arc<Mutex<WorkerReport>>;
