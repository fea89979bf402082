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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_dataplane::policy::ConntrackConfig;
use weir_dataplane::snapshot::SnapshotReader;
use weir_dataplane::{Batch, Counters, FrameRegion, IfIndex, Pipeline, Snapshot, BATCH_SIZE};

use crate::bpf::{AttachMode, BpfError, UplinkFilter, XdpLink, XdpProgram, XskMap};
use crate::handoff::Links;
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
    #[error("the worker owns no interface")]
    NoInterface,
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
    /// or no frame or TX room here for a frame handed in.
    pub handoff_dropped: u64,
    /// WireGuard, on the worker that owns the uplink: the peers' counters.
    pub wireguard: WgCounters,
    /// WireGuard: the tunnel's own counters.
    pub tunnel: TunnelCounters,
    /// RX descriptors that pointed outside the UMEM (recycled, not processed).
    pub bad_descriptors: u64,
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
        if ports.is_empty() {
            return Err(WorkerError::NoInterface);
        }
        let umem = Umem::new(&config.umem).map_err(WorkerError::Umem)?;
        let mut built: Vec<Port> = Vec::with_capacity(ports.len());
        for spec in ports {
            let name = spec.name.clone();
            let index = snapshot
                .interface_by_name(&name)
                .ok_or_else(|| WorkerError::UnknownInterface(name.clone()))?;
            let bpf = |source| WorkerError::Bpf {
                name: name.clone(),
                source,
            };
            let ifindex = crate::bpf::ifindex(&name).map_err(bpf)?;
            let socket = XskSocket::bind(
                &umem,
                ifindex,
                0,
                &config.socket,
                built.first().map(|p| &p.socket),
            )
            .map_err(|source| WorkerError::Socket {
                name: name.clone(),
                source,
            })?;
            let map = XskMap::new(1).map_err(bpf)?;
            map.set(0, socket.fd()).map_err(bpf)?;
            let program = match &spec.uplink_filter {
                None => XdpProgram::redirect_all(&map),
                Some(filter) => XdpProgram::uplink(&map, filter),
            }
            .map_err(bpf)?;
            let link = XdpLink::attach(&program, ifindex, config.attach).map_err(bpf)?;
            built.push(Port {
                name,
                index,
                socket,
                link,
                _program: program,
                _map: map,
                staged: Vec::with_capacity(STAGE_LIMIT),
                lent_fill: 0,
                lent_tx: 0,
            });
        }
        let mut port_of = Vec::new();
        for (i, p) in built.iter().enumerate() {
            let at = usize::from(p.index);
            if port_of.len() <= at {
                port_of.resize(at + 1, None);
            }
            port_of[at] = Some(i);
        }
        let mut free: Vec<u64> = umem.frames().collect();
        free.reverse();
        // Half the frames wait in fill rings, shared evenly; the rest are for frames in
        // flight between RX and TX completion.
        let fill_quota = (free.len() / 2 / built.len())
            .min(config.umem.fill_size as usize)
            .max(1);
        let report = WorkerReport {
            ports: built
                .iter()
                .map(|p| PortReport {
                    name: p.name.clone(),
                    native: p.link.native(),
                    ..PortReport::default()
                })
                .collect(),
            ..WorkerReport::default()
        };
        let pollfds = built
            .iter()
            .map(|p| libc::pollfd {
                fd: p.socket.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut worker = Worker {
            umem,
            ports: built,
            port_of,
            free,
            fill_quota,
            batch: Batch::new(),
            pipeline: Pipeline::with_conntrack(config.conntrack),
            rx: Vec::with_capacity(BATCH_SIZE),
            pollfds,
            report,
            idle: 0,
            config,
            links: Links::default(),
            remote_of: Vec::new(),
            handed: Vec::new(),
            tunnel: None,
            uplink_port: None,
            to_seal: Vec::new(),
            control: Vec::new(),
            flush: Vec::new(),
        };
        worker.refill();
        Ok(worker)
    }

    /// Joins the handoff mesh: frames whose output interface another worker owns go to it
    /// over `links`, and frames handed in are sent here. `snapshot` maps the interface
    /// names of `links.remote` to its indices.
    pub fn connect(&mut self, snapshot: &Snapshot, links: Links) -> Result<(), WorkerError> {
        let mut remote_of = Vec::new();
        for (name, owner) in &links.remote {
            let index = snapshot
                .interface_by_name(name)
                .ok_or_else(|| WorkerError::UnknownInterface(name.clone()))?;
            let at = usize::from(index);
            if remote_of.len() <= at {
                remote_of.resize(at + 1, None);
            }
            remote_of[at] = Some(*owner);
        }
        self.handed = vec![false; links.outbound.len()];
        self.pollfds.truncate(self.ports.len());
        if let Some(waker) = links.wakers.get(links.me) {
            self.pollfds.push(libc::pollfd {
                fd: waker.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        self.remote_of = remote_of;
        self.links = links;
        Ok(())
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
                let port = self.port_of.get(usize::from(parcel.out)).copied().flatten();
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
    /// the number of frames received.
    pub fn poll_once(&mut self, snapshot: &Snapshot, now_ns: u64) -> usize {
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
                            (Some(lane), Some(bytes)) => lane.send_parcel(out, seal, bytes),
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
                    _ => {
                        // No socket for that output on this worker, or it is backed up.
                        pipeline.tx_full();
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
            if self.handoffs_waiting() {
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
    /// rings (+ in the batch) equals the UMEM's frame count.
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
        let total = self.free.len() + lent + self.batch.len();
        if total != self.umem.frame_count() as usize {
            return Err(format!(
                "{} frames accounted for ({} free, {lent} lent or staged, {} in the batch), \
                 the UMEM has {}",
                total,
                self.free.len(),
                self.batch.len(),
                self.umem.frame_count()
            ));
        }
        Ok(())
    }
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
