//! A worker's ports: binding a socket and its XDP program, attaching and detaching while
//! the worker runs, and keeping the fill rings topped up (see the module doc of
//! [`super`], "Ports come and go").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_dataplane::snapshot::{Role, SnapshotReader};
use weir_dataplane::{DropReason, IfIndex, Snapshot, BATCH_SIZE};

use super::{PortReport, PortSpec, Worker, WorkerConfig, WorkerError, MAX_KICKS, STAGE_LIMIT};
use crate::bpf::{SlotMap, UplinkFilter, XdpLink, XdpProgram, XskMap};
use crate::ports::{BoundPort, PortCommand, PortMailbox, PortReply};
use crate::xsk::{Umem, UmemView, XskSocket};

/// How long [`Worker::detach_port`] waits for a port's TX completions at most.
pub const DETACH_WAIT: Duration = Duration::from_millis(100);

/// How long a detached port's rings must stay quiet (no RX, nothing pending) before its
/// fill ring is read back: lets a receive that was under way when the program was
/// detached finish.
const DETACH_SETTLE: Duration = Duration::from_millis(2);

/// The index of a port whose interface the loaded snapshot does not have: no snapshot
/// has that many interfaces, so the pipeline drops what arrives on it.
pub(super) const UNMAPPED: IfIndex = IfIndex::MAX;

/// Pod interfaces a worker can hold: the slots of its shared XSKMAP.
pub const POD_SLOTS: u32 = 1024;

/// The one XDP program a worker attaches to all its pod (and host) interfaces, with its
/// maps: interface index -> slot -> socket. Loaded at the first such port, kept for the
/// worker's life, so attaching a port is two map updates and a link. The maps and the
/// program are shared with the helper threads that bind ports; the free slots are the
/// worker's.
pub(super) struct PodSteering {
    maps: Arc<PodMaps>,
    free: Vec<u32>,
}

pub(super) struct PodMaps {
    xsks: XskMap,
    slots: SlotMap,
    program: XdpProgram,
}

impl PodSteering {
    fn new() -> Result<PodSteering, crate::bpf::BpfError> {
        let xsks = XskMap::new(POD_SLOTS)?;
        let slots = SlotMap::new(POD_SLOTS)?;
        let program = XdpProgram::by_ifindex(&slots, &xsks)?;
        Ok(PodSteering {
            maps: Arc::new(PodMaps {
                xsks,
                slots,
                program,
            }),
            free: (0..POD_SLOTS).rev().collect(),
        })
    }
}

impl PodSteering {
    /// A free slot of `pods`' maps, loading the program first when this is the worker's
    /// first pod interface.
    /// `name` is the interface asking (errors name it).
    fn take_slot<'a>(
        pods: &'a mut Option<PodSteering>,
        name: &str,
    ) -> Result<(&'a mut PodSteering, u32), WorkerError> {
        if pods.is_none() {
            *pods = Some(PodSteering::new().map_err(|source| WorkerError::Bpf {
                name: name.to_owned(),
                source,
            })?);
        }
        let pods = pods.as_mut().ok_or(WorkerError::TooManyPorts(0))?;
        let slot = pods
            .free
            .pop()
            .ok_or(WorkerError::TooManyPorts(POD_SLOTS))?;
        Ok((pods, slot))
    }
}

impl PodMaps {
    /// Puts `socket` in `slot` for interface `ifindex` and links the program to it; on
    /// failure nothing of it is left in the maps.
    fn link(
        &self,
        socket: &XskSocket,
        ifindex: u32,
        slot: u32,
        mode: crate::bpf::AttachMode,
    ) -> Result<XdpLink, crate::bpf::BpfError> {
        let attached = self
            .xsks
            .set(slot, socket.fd())
            .and_then(|()| self.slots.set(ifindex, slot))
            .and_then(|()| XdpLink::attach(&self.program, ifindex, mode));
        if attached.is_err() {
            let _ = self.slots.remove(ifindex);
            let _ = self.xsks.remove(slot);
        }
        attached
    }
}

/// How frames reach a port's socket.
pub(super) enum Steer {
    /// The uplink: a program of its own, built from its filter, over a map of its own.
    Own { program: XdpProgram, map: XskMap },
    /// A pod or host interface: the worker's [`PodSteering`], in `slot`.
    Shared { ifindex: u32, slot: u32 },
}

pub(super) struct Port {
    pub(super) name: String,
    pub(super) index: IfIndex,
    pub(super) socket: XskSocket,
    // Kept alive: dropping the link detaches the program; the map holds the socket.
    pub(super) link: XdpLink,
    pub(super) steer: Steer,
    /// The filter `program` was built from (`None`: it takes every frame).
    pub(super) filter: Option<UplinkFilter>,
    pub(super) staged: Vec<(u64, u32)>,
    /// Frames given to the fill ring and not yet received back.
    pub(super) lent_fill: usize,
    /// Frames given to the TX ring and not yet completed.
    pub(super) lent_tx: usize,
}

impl Port {
    pub(super) fn report(&self) -> PortReport {
        PortReport {
            name: self.name.clone(),
            native: self.link.native(),
            ..PortReport::default()
        }
    }
}

impl Worker {
    /// Binds a socket for `spec` on this worker's UMEM, attaches its XDP program, and
    /// adds it to the ports, the poll set and the report; the fill quota is shared anew
    /// and the new fill ring is topped up. `snapshot` must name the interface (publish
    /// the snapshot that adds it first). Tell the other workers who owns it with
    /// [`crate::ports::PortControl::set_owner`] ([`crate::ports::PortControl::attach`]
    /// does).
    pub fn attach_port(&mut self, spec: &PortSpec, snapshot: &Snapshot) -> Result<(), WorkerError> {
        if self.ports.iter().any(|p| p.name == spec.name) || self.binding.contains(&spec.name) {
            return Err(WorkerError::AlreadyAttached(spec.name.clone()));
        }
        let port = bind_port(
            &self.umem,
            spec,
            snapshot,
            &self.config,
            self.ports.first().map(|p| &p.socket),
            &mut self.pods,
        )?;
        self.adopt_port(port, snapshot);
        Ok(())
    }

    /// Adds a bound port to the ports, the poll set and the report; the fill quota is
    /// shared anew and the new fill ring is topped up.
    fn adopt_port(&mut self, port: Port, snapshot: &Snapshot) {
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
    }

    /// Starts attaching a pod interface (no uplink filter) on a helper thread: the socket
    /// is bound and linked there, while this worker keeps forwarding, and handed back
    /// through `mailbox` ([`PortCommand::Bound`]), where [`Worker::finish_binding`] adopts
    /// it and answers `reply`. Until every such bind is back, detaches wait (a helper may
    /// share the UMEM through the first port's socket), and so does an attach when the
    /// worker has no port yet (the first bind registers the UMEM).
    fn start_binding(
        &mut self,
        spec: PortSpec,
        reply: PortReply,
        mailbox: &Arc<PortMailbox>,
        snapshot: &Snapshot,
    ) {
        let name = spec.name.clone();
        if self.ports.iter().any(|p| p.name == name) || self.binding.contains(&name) {
            let _ = reply.send(Err(WorkerError::AlreadyAttached(name).to_string()));
            return;
        }
        if snapshot.interface_by_name(&name).is_none() {
            let _ = reply.send(Err(WorkerError::UnknownInterface(name).to_string()));
            return;
        }
        let bpf = |source| WorkerError::Bpf {
            name: name.clone(),
            source,
        };
        let prepared = crate::bpf::ifindex(&name).map_err(bpf).and_then(|ifindex| {
            let (pods, slot) = PodSteering::take_slot(&mut self.pods, &name)?;
            Ok((ifindex, slot, Arc::clone(&pods.maps)))
        });
        let (ifindex, slot, maps) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
                return;
            }
        };
        let umem = UmemView::of(&self.umem);
        let shared = self.ports.first().map(|p| p.socket.shared_view());
        let (socket_config, mode) = (self.config.socket, self.config.attach);
        let back = Arc::clone(mailbox);
        let elsewhere = off_this_core();
        let alive = HelperAlive::enter(&self.helpers);
        let helper = std::thread::Builder::new()
            .name("weir-bind".into())
            .spawn(move || {
                // Counted out when this closure ends, whichever way: after that the
                // thread touches nothing of the worker's.
                let _alive = alive;
                if let Some(set) = elsewhere {
                    set_affinity(&set);
                }
                // SAFETY: the worker keeps its UMEM mapped and the socket `shared` came
                // from open until this closure has ended: detaches wait while a bind is
                // out, and the worker waits for its helpers to be counted out before it
                // is dropped (`join_helpers`).
                #[allow(unsafe_code)]
                let socket =
                    unsafe { XskSocket::bind_views(umem, ifindex, 0, &socket_config, shared) };
                let result = socket
                    .map_err(|source| WorkerError::Socket {
                        name: spec.name.clone(),
                        source,
                    })
                    .and_then(|socket| {
                        let link = maps.link(&socket, ifindex, slot, mode).map_err(|source| {
                            WorkerError::Bpf {
                                name: spec.name.clone(),
                                source,
                            }
                        })?;
                        Ok((socket, link))
                    });
                back.post(PortCommand::Bound(Box::new(BoundPort {
                    spec,
                    reply,
                    slot,
                    result,
                })));
            });
        match helper {
            // Not joined: a join frees the thread's stack (an munmap, a TLB shootdown)
            // on the joining thread, which held this worker up 1-5 ms per port.
            Ok(_detached) => self.binding.push(name),
            Err(e) => {
                // The closure (and the reply in it) is gone with the failed spawn: the
                // attach is answered by its timeout; the slot is ours again.
                if let Some(pods) = self.pods.as_mut() {
                    pods.free.push(slot);
                }
                eprintln!("weir worker: no thread to bind {name} on: {e}");
            }
        }
    }

    /// Adopts a port a helper bound (see [`Worker::start_binding`]) and answers its attach.
    fn finish_binding(&mut self, bound: BoundPort, snapshot: &Snapshot) {
        let BoundPort {
            spec,
            reply,
            slot,
            result,
        } = bound;
        self.binding.retain(|n| *n != spec.name);
        match result {
            Ok((socket, link)) => {
                let ifindex = socket.ifindex();
                let port = Port {
                    name: spec.name.clone(),
                    index: snapshot.interface_by_name(&spec.name).unwrap_or(UNMAPPED),
                    socket,
                    link,
                    steer: Steer::Shared { ifindex, slot },
                    filter: None,
                    staged: Vec::with_capacity(STAGE_LIMIT),
                    lent_fill: 0,
                    lent_tx: 0,
                };
                self.adopt_port(port, snapshot);
                let _ = reply.send(Ok(()));
            }
            Err(e) => {
                if let Some(pods) = self.pods.as_mut() {
                    pods.free.push(slot);
                }
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }

    /// Waits until every helper has ended its work (the worker is going away).
    pub(super) fn join_helpers(&mut self) {
        while self.helpers.load(Ordering::Acquire) > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Gives the attached interface `spec.name` the uplink filter `spec` carries, when it
    /// differs from the one its program was built from: the new program is loaded and
    /// swapped in on the link in one step ([`XdpLink::update`]), so no frame meets a
    /// detached interface and the socket keeps its rings. Returns whether the program
    /// changed. A port attached without a filter (a pod's) cannot be given one, nor the
    /// reverse: that is a different kind of port, detach and attach it.
    pub fn refilter_port(&mut self, spec: &PortSpec) -> Result<bool, WorkerError> {
        let port = self
            .ports
            .iter_mut()
            .find(|p| p.name == spec.name)
            .ok_or_else(|| WorkerError::NotAttached(spec.name.clone()))?;
        if port.filter == spec.uplink_filter {
            return Ok(false);
        }
        let bpf = |source| WorkerError::Bpf {
            name: spec.name.clone(),
            source,
        };
        let (Some(_), Some(filter), Steer::Own { program, map }) =
            (&port.filter, &spec.uplink_filter, &mut port.steer)
        else {
            return Err(WorkerError::PortKind(spec.name.clone()));
        };
        let new = XdpProgram::uplink(map, filter).map_err(bpf)?;
        port.link.update(&new).map_err(bpf)?;
        *program = new;
        port.filter = spec.uplink_filter.clone();
        Ok(true)
    }

    /// Detaches interface `name` and gives back every frame it holds, in this order: the
    /// XDP link goes first (nothing new arrives); what waits in the RX ring goes back to
    /// the free list (received and dropped as `port_detached`); what is staged is sent,
    /// and the TX completions are awaited, kicking, for up to [`DETACH_WAIT`]; the frames
    /// still in the fill ring are read back; then the socket is closed. Frames the kernel
    /// did not return within the bound are counted in
    /// [`super::WorkerReport::frames_lost`] and never reused, so
    /// [`Worker::check_accounting`] holds either way. Blocks for a few milliseconds (at
    /// most about [`DETACH_WAIT`]). Detaching the uplink turns WireGuard off on this
    /// worker.
    pub fn detach_port(&mut self, name: &str) -> Result<(), WorkerError> {
        let i = self
            .ports
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| WorkerError::NotAttached(name.to_owned()))?;
        if self.uplink_port == Some(i) {
            self.tunnel = None;
        }
        let port = self.ports.remove(i);
        self.report.ports.remove(i);
        // Port numbers after `i` moved down: the output map is rebuilt before the next
        // batch.
        self.force_remap = true;
        self.uplink_port = None;
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
        self.force_remap = true;
    }

    /// Serves the port commands waiting in `mailbox`, then re-maps. The snapshot is read
    /// after the commands are taken: the agent publishes the tables naming an interface
    /// before it posts the interface's attach, so a snapshot loaded earlier in the round
    /// may not hold it yet.
    pub(super) fn serve(&mut self, mailbox: &Arc<PortMailbox>, reader: &SnapshotReader) {
        // Next round when a poster holds the mailbox (it stays pending).
        let Some(commands) = mailbox.try_take() else {
            return;
        };
        let snapshot = &*reader.load();
        for command in commands {
            self.serve_one(command, mailbox, snapshot);
        }
        // What waited for the binds, once they are all back.
        while self.binding.is_empty() && !self.deferred.is_empty() {
            for command in std::mem::take(&mut self.deferred) {
                self.serve_one(command, mailbox, snapshot);
            }
        }
        self.remap(snapshot);
    }

    fn serve_one(&mut self, command: PortCommand, mailbox: &Arc<PortMailbox>, snapshot: &Snapshot) {
        match command {
            // A pod's interface is bound off this thread; the uplink (rare, and its own
            // program) here.
            PortCommand::Attach(spec, reply) if spec.uplink_filter.is_none() => {
                if self.ports.is_empty() && !self.binding.is_empty() {
                    self.deferred.push(PortCommand::Attach(spec, reply));
                } else {
                    self.start_binding(spec, reply, mailbox, snapshot);
                }
            }
            PortCommand::Attach(spec, reply) => {
                let r = self.attach_port(&spec, snapshot);
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            PortCommand::Bound(bound) => self.finish_binding(*bound, snapshot),
            PortCommand::Refilter(spec, reply) => {
                let r = self.refilter_port(&spec);
                let _ = reply.send(r.map(|_| ()).map_err(|e| e.to_string()));
            }
            PortCommand::Detach(name, reply) if !self.binding.is_empty() => {
                self.deferred.push(PortCommand::Detach(name, reply));
            }
            PortCommand::Detach(name, reply) => {
                let r = self.detach_port(&name);
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            PortCommand::SetOwner { name, worker } => self.set_owner(&name, worker),
        }
    }

    pub(super) fn refill(&mut self) {
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

    /// Whether the port at `i` is the snapshot's uplink.
    pub(super) fn is_uplink(&self, snapshot: &Snapshot, i: usize) -> bool {
        self.ports.get(i).is_some_and(|p| {
            snapshot
                .interface(p.index)
                .is_some_and(|x| x.role == Role::Uplink)
        })
    }

    /// Takes every frame back from a port already removed from `ports` (see
    /// [`Worker::detach_port`]) and closes it; returns the frames the kernel kept.
    fn drain_detached(&mut self, port: Port) -> usize {
        let Port {
            mut socket,
            link,
            steer,
            mut staged,
            mut lent_fill,
            mut lent_tx,
            ..
        } = port;
        // No new frames once the program is gone.
        drop(link);
        match steer {
            Steer::Own { program, map } => {
                drop(program);
                drop(map);
            }
            Steer::Shared { ifindex, slot } => {
                if let Some(pods) = self.pods.as_mut() {
                    // The link is gone, so the program no longer runs for `ifindex`: the
                    // entries only have to be gone before the slot is used again, and a
                    // failure to delete them (the kernel refusing) costs nothing more than
                    // the slot.
                    let cleared = pods.maps.slots.remove(ifindex).is_ok()
                        && pods.maps.xsks.remove(slot).is_ok();
                    if cleared {
                        pods.free.push(slot);
                    }
                }
            }
        }
        let started = Instant::now();
        let mut quiet_since: Option<Instant> = None;
        let mut rx = Vec::with_capacity(BATCH_SIZE);
        loop {
            rx.clear();
            let n = socket.recv(&mut rx, BATCH_SIZE);
            lent_fill -= n.min(lent_fill);
            for &(addr, _) in &rx {
                self.free.push(addr);
                let c = self.pipeline.counters_mut();
                c.rx += 1;
                c.drop(DropReason::PortDetached);
            }
            self.report.rx_frames += n as u64;
            if !staged.is_empty() {
                let sent = socket.send(&staged);
                staged.drain(..sent);
                lent_tx += sent;
                self.report.tx_frames += sent as u64;
                self.pipeline.sent(sent);
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
            self.free.push(addr);
            self.pipeline.drop(DropReason::PortDetached);
        }
        // The frames the kernel has not taken from the fill ring are ours again once the
        // socket is closed. Each is checked against the free list, so that no frame can
        // get there twice whatever the kernel's consumer index says.
        let mut unfilled = Vec::new();
        socket.unfilled(&mut unfilled);
        let size = u64::from(self.umem.frame_size());
        let mut is_free = vec![false; self.umem.frame_count() as usize];
        for &f in self.free.bases() {
            if let Some(b) = is_free.get_mut((f / size) as usize) {
                *b = true;
            }
        }
        for addr in unfilled {
            if lent_fill == 0 {
                break;
            }
            let base = self.free.base(addr);
            if let Some(b) = is_free.get_mut((base / size) as usize).filter(|b| !**b) {
                *b = true;
                self.free.push(base);
                lent_fill -= 1;
            }
        }
        drop(socket);
        lent_fill + lent_tx
    }
}

/// Binds a socket for `spec` on `umem` (sharing it with `shared`, any socket already on
/// it, when there is one), and attaches the XDP program that feeds it: the uplink's own
/// filter program, or for any other interface the worker's shared program (`pods`,
/// loaded here the first time).
pub(super) fn bind_port(
    umem: &Umem,
    spec: &PortSpec,
    snapshot: &Snapshot,
    config: &WorkerConfig,
    shared: Option<&XskSocket>,
    pods: &mut Option<PodSteering>,
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
    let (steer, link) = match &spec.uplink_filter {
        Some(filter) => {
            let map = XskMap::new(1).map_err(bpf)?;
            map.set(0, socket.fd()).map_err(bpf)?;
            let program = XdpProgram::uplink(&map, filter).map_err(bpf)?;
            let link = XdpLink::attach(&program, ifindex, config.attach).map_err(bpf)?;
            (Steer::Own { program, map }, link)
        }
        None => {
            let (pods, slot) = PodSteering::take_slot(pods, &name)?;
            match pods.maps.link(&socket, ifindex, slot, config.attach) {
                Ok(link) => (Steer::Shared { ifindex, slot }, link),
                Err(e) => {
                    pods.free.push(slot);
                    return Err(bpf(e));
                }
            }
        }
    };
    Ok(Port {
        name,
        index,
        socket,
        link,
        steer,
        filter: spec.uplink_filter.clone(),
        staged: Vec::with_capacity(STAGE_LIMIT),
        lent_fill: 0,
        lent_tx: 0,
    })
}

/// Frames each fill ring is topped up to with `ports` ports: half the frames wait in
/// fill rings, shared evenly; the rest are for frames in flight between RX and TX
/// completion.
pub(super) fn fill_quota(umem: &Umem, ports: usize) -> usize {
    (umem.frame_count() as usize / 2 / ports.max(1))
        .min(umem.config().fill_size as usize)
        .max(1)
}

/// Where a helper of this worker should run: the CPUs of the process's main thread (the
/// agent's own, those it was started on) less the core this worker runs on, when that
/// leaves any. A thread inherits its creator's affinity, so without this a helper would
/// share the worker's pinned core and take its time (the bind's own kernel work), which
/// the worker's `cpu_wait` showed during attach bursts.
fn off_this_core() -> Option<libc::cpu_set_t> {
    // SAFETY: `cpu_set_t` is plain data (all zeroes is the empty set); the calls get the
    // set's real size and write only inside it.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(libc::getpid(), size, &mut set) != 0 {
            return None;
        }
        let here = libc::sched_getcpu();
        let here = usize::try_from(here).ok()?;
        libc::CPU_CLR(here, &mut set);
        (libc::CPU_COUNT(&set) > 0).then_some(set)
    }
}

/// Moves the calling thread to `set`; a refusal leaves it where it was (it still works,
/// on the worker's core).
fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a whole `cpu_set_t`, read only.
    #[allow(unsafe_code)]
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
    }
}

/// One helper thread counted in its worker's `helpers` until this is dropped (at the end
/// of its work, or with the closure when the spawn fails).
struct HelperAlive(Arc<AtomicUsize>);

impl HelperAlive {
    fn enter(count: &Arc<AtomicUsize>) -> HelperAlive {
        count.fetch_add(1, Ordering::AcqRel);
        HelperAlive(Arc::clone(count))
    }
}

impl Drop for HelperAlive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
