//! The in-memory driver: feeds frames to the pipeline and carries out its output plan, with
//! no kernel in the loop. Unit tests, scenario tests of the pipeline (WireGuard included),
//! the fuzzer and the pipeline benchmark drive weir through it; the AF_XDP driver has the
//! same shape (a frame region, a free list, RX in, the pipeline and its output stage, TX
//! out) with rings instead of queues.
//!
//! Alone, it is one worker that owns every interface of the snapshot (unless a test says an
//! interface is owned by nobody, see [`MemDriver::set_unowned`]), so nothing is handed off.
//! Several drivers joined by the AF_XDP workers' handoff lanes ([`MemDriver::connect`],
//! [`crate::handoff::mesh`]) behave as that many workers: each owns the interfaces the
//! mesh does not give to another, hands frames to the owner of their output interface,
//! and hands packets of flows another worker owns to it, unprocessed, to run its pipeline
//! on them ([`weir_dataplane::node::steer`]); [`run_workers`] polls them until all are
//! quiet.
//! With [`MemDriver::enable_wireguard`] it seals and opens WireGuard on the snapshot's
//! uplink like the AF_XDP worker does, with the same engine ([`crate::wireguard`]).
//!
//! Frame accounting is an invariant: every chunk is in exactly one place (free, waiting in
//! RX, or waiting in a TX queue); [`MemDriver::check_accounting`] verifies it, and the
//! pipeline's counters account for every packet ([`Counters::check_accounting`]).

use std::collections::VecDeque;

use weir_crypto::NodeKey;
use weir_dataplane::frame::{DEFAULT_CHUNK_SIZE, DEFAULT_HEADROOM};
use weir_dataplane::node::output::{Action, HandIn, OutputMap, Owner};
use weir_dataplane::policy::ConntrackConfig;
use weir_dataplane::{
    Batch, Counters, DropReason, Frame, FrameRegion, FreeList, IfIndex, Pipeline, Snapshot,
    BATCH_SIZE,
};

use crate::handoff::Links;
use crate::wireguard::{Inbound, Tunnel};

/// Why a frame could not be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// Every chunk is in use (like a full fill ring).
    #[error("no free frame: all {0} chunks are in use")]
    NoFreeFrame(usize),
    /// The packet does not fit a chunk after the headroom.
    #[error("a {len}-byte packet does not fit a {chunk_size}-byte chunk after {headroom} bytes of headroom")]
    TooLarge {
        len: usize,
        chunk_size: usize,
        headroom: usize,
    },
}

/// A driver over a `Vec<u8>` frame region.
#[derive(Debug)]
pub struct MemDriver {
    mem: Vec<u8>,
    chunk_size: usize,
    headroom: usize,
    free: FreeList,
    rx: VecDeque<(Frame, IfIndex)>,
    tx: Vec<VecDeque<Frame>>,
    tx_capacity: usize,
    batch: Batch,
    pipeline: Pipeline,
    plan: Vec<Action>,
    map: OutputMap,
    unowned: Vec<IfIndex>,
    remap: bool,
    tunnel: Option<Tunnel>,
    /// Frames WireGuard made or sealed this round, for the uplink: `(addr, len)`.
    wg_out: Vec<(u64, u32)>,
    /// Frames to seal this round: `(peer, addr, len)`.
    to_seal: Vec<(u32, u64, u32)>,
    /// Peers whose queued packets can go after a handshake reply.
    flush: Vec<weir_crypto::PeerId>,
    /// Lanes to and from the other drivers (empty when alone).
    links: Links,
    /// Interfaces other drivers own, by name, with their driver's number.
    owners: Vec<(String, usize)>,
}

impl MemDriver {
    /// A driver with `chunks` frames of [`DEFAULT_CHUNK_SIZE`] bytes, and TX queues that
    /// hold at most `tx_capacity` frames per interface (beyond that: `tx_ring_full` drops).
    pub fn new(chunks: usize, tx_capacity: usize) -> Self {
        let chunk_size = DEFAULT_CHUNK_SIZE;
        MemDriver {
            mem: vec![0; chunks * chunk_size],
            chunk_size,
            headroom: DEFAULT_HEADROOM,
            free: FreeList::full(chunks, chunk_size),
            rx: VecDeque::with_capacity(chunks),
            tx: Vec::new(),
            tx_capacity,
            batch: Batch::new(),
            // A small table: in-memory runs track few flows, and tests make many drivers.
            pipeline: Pipeline::with_conntrack(ConntrackConfig {
                capacity: 4096,
                ..ConntrackConfig::default()
            }),
            plan: Vec::with_capacity(BATCH_SIZE),
            map: OutputMap::new(),
            unowned: Vec::new(),
            remap: true,
            tunnel: None,
            wg_out: Vec::new(),
            to_seal: Vec::new(),
            flush: Vec::new(),
            links: Links::default(),
            owners: Vec::new(),
        }
    }

    /// Joins a handoff mesh as worker `links.me` of `links.outbound.len()`: the interfaces
    /// `links.remote` names are owned by those workers (frames routed there are handed to
    /// them), the rest by this driver; source NAT takes this worker's share of the ports,
    /// and packets of flows another worker owns are handed to it to be processed there.
    ///
    /// # Panics
    /// If `links.me` is not below the number of workers (a test bug).
    pub fn connect(&mut self, links: Links) {
        let workers = links.outbound.len().max(1);
        assert!(links.me < workers, "worker {} of {workers}", links.me);
        self.pipeline
            .set_worker(links.me as u16, u16::try_from(workers).unwrap_or(u16::MAX));
        self.owners = links
            .remote
            .iter()
            .filter(|(_, w)| *w != links.me)
            .cloned()
            .collect();
        self.links = links;
        self.remap = true;
    }

    /// Whether frames wait to be processed here (injected, or handed in by another
    /// driver).
    pub fn pending(&self) -> bool {
        !self.rx.is_empty() || self.links.inbound.iter().any(|l| l.waiting() > 0)
    }

    /// Turns WireGuard on with this node's key: the peers, this node's address and port
    /// come from the snapshots the driver is polled with.
    pub fn enable_wireguard(&mut self, key: NodeKey) {
        self.tunnel = Some(Tunnel::new(
            key,
            weir_crypto::peers::DEFAULT_HANDSHAKE_LIMIT,
            self.headroom,
        ));
        self.remap = true;
    }

    /// The WireGuard engine, when on.
    pub fn wireguard(&self) -> Option<&Tunnel> {
        self.tunnel.as_ref()
    }

    /// Says that interface `iface` is owned by no worker (`true`), as a just-detached port
    /// is, or by this driver again (`false`).
    pub fn set_unowned(&mut self, iface: IfIndex, unowned: bool) {
        self.unowned.retain(|&i| i != iface);
        if unowned {
            self.unowned.push(iface);
        }
        self.remap = true;
    }

    /// Queues a copy of `bytes` as received on `ingress`.
    pub fn inject(&mut self, ingress: IfIndex, bytes: &[u8]) -> Result<(), InjectError> {
        if self.headroom + bytes.len() > self.chunk_size {
            return Err(InjectError::TooLarge {
                len: bytes.len(),
                chunk_size: self.chunk_size,
                headroom: self.headroom,
            });
        }
        let chunk = self
            .free
            .pop()
            .ok_or(InjectError::NoFreeFrame(self.chunks()))?;
        let mut region = FrameRegion::new(&mut self.mem, self.chunk_size);
        let frame = region
            .fill(chunk, self.headroom, bytes)
            .expect("a free chunk and a checked length fit the region");
        self.rx.push_back((frame, ingress));
        Ok(())
    }

    /// Runs one batch (up to [`BATCH_SIZE`] queued frames) through the pipeline with
    /// `snapshot` at time `now_ns`, then carries out its output plan. Returns how many
    /// frames it took from RX.
    pub fn poll(&mut self, snapshot: &Snapshot, now_ns: u64) -> usize {
        if self.remap || self.map.generation() != snapshot.generation {
            self.remap(snapshot);
        }
        let uplink = snapshot.uplink;
        if let Some(t) = self.tunnel.as_mut() {
            t.tick(
                now_ns,
                snapshot,
                &mut self.mem,
                &mut self.free,
                &mut self.wg_out,
                self.pipeline.counters_mut(),
            );
        }
        if !self.links.inbound.is_empty() {
            self.take_handoffs();
        }
        let n = self.rx.len().min(BATCH_SIZE - self.batch.len());
        for (frame, ingress) in self.rx.drain(..n) {
            let frame = match (self.tunnel.as_mut(), Some(ingress) == uplink) {
                (Some(t), true) => {
                    let (addr, len) = (frame.addr(), frame.len() as u32);
                    let c = self.pipeline.counters_mut();
                    match t.receive(snapshot, &mut self.mem, &mut self.free, addr, len, c) {
                        Inbound::Pass => frame,
                        Inbound::Deliver(n) => {
                            let region = FrameRegion::new(&mut self.mem, self.chunk_size);
                            match region.frame(addr, n as usize) {
                                Ok(f) => f,
                                // An opened packet is shorter than its message, so this
                                // does not happen; if it did, the frame is counted.
                                Err(_) => {
                                    let c = self.pipeline.counters_mut();
                                    c.rx += 1;
                                    c.drop(DropReason::WireguardRejected);
                                    self.free.push(addr);
                                    continue;
                                }
                            }
                        }
                        Inbound::Reply(a, l, peer) => {
                            self.wg_out.push((a, l));
                            self.flush.extend(peer);
                            continue;
                        }
                        Inbound::Done => continue,
                    }
                }
                _ => frame,
            };
            if self.batch.push(frame, ingress).is_err() {
                unreachable!("at most BATCH_SIZE frames are pushed into an empty batch");
            }
        }
        let mut region = FrameRegion::new(&mut self.mem, self.chunk_size);
        self.pipeline
            .process(snapshot, &mut region, &mut self.batch, now_ns);
        self.pipeline
            .output(snapshot, &self.batch, &self.map, &mut self.plan);
        let (pipeline, tx, free, cap, plan, to_seal) = (
            &mut self.pipeline,
            &mut self.tx,
            &mut self.free,
            self.tx_capacity,
            &self.plan,
            &mut self.to_seal,
        );
        let (mem, links) = (&self.mem, &self.links);
        let generation = self.map.generation();
        let mut i = 0;
        self.batch.drain(|frame, _| {
            let action = plan.get(i).copied().unwrap_or_default();
            i += 1;
            let mut hand = |worker: u16, send: &dyn Fn(&crate::handoff::Lane, &[u8]) -> bool| {
                let lane = links
                    .outbound
                    .get(usize::from(worker))
                    .and_then(Option::as_ref);
                let Some(lane) = lane else {
                    // No such worker: nobody to give the frame to.
                    pipeline.drop(DropReason::UnownedOutput);
                    return;
                };
                let start = frame.addr() as usize;
                let sent = mem
                    .get(start..start + frame.len())
                    .is_some_and(|bytes| send(lane, bytes));
                if sent {
                    pipeline.counters_mut().handoff_out += 1;
                } else {
                    pipeline.drop(DropReason::HandoffFull);
                }
            };
            match action {
                Action::Send { port } => queue(tx, usize::from(port), cap, frame, pipeline, free),
                Action::Seal { peer, .. } => to_seal.push((peer, frame.addr(), frame.len() as u32)),
                Action::Handoff { worker, out, peer } => {
                    hand(worker, &|lane, bytes| {
                        lane.send_parcel(out, peer, generation, bytes)
                    });
                    free.push(frame.chunk());
                }
                Action::Steer { worker, ingress } => {
                    hand(worker, &|lane, bytes| {
                        lane.send_to_pipeline(ingress, generation, bytes)
                    });
                    free.push(frame.chunk());
                }
                Action::Drop => free.push(frame.chunk()),
            }
        });
        if let Some(t) = self.tunnel.as_mut() {
            let c = self.pipeline.counters_mut();
            for (peer, addr, len) in self.to_seal.drain(..) {
                if let Some(f) = t.seal(snapshot, &mut self.mem, &mut self.free, peer, addr, len, c)
                {
                    self.wg_out.push(f);
                }
            }
            for id in self.flush.drain(..) {
                t.flush(
                    snapshot,
                    &mut self.mem,
                    &mut self.free,
                    id,
                    &mut self.wg_out,
                    c,
                );
            }
        }
        if !self.wg_out.is_empty() {
            let region = FrameRegion::new(&mut self.mem, self.chunk_size);
            for (addr, len) in self.wg_out.drain(..) {
                let (pipeline, free) = (&mut self.pipeline, &mut self.free);
                match (region.frame(addr, len as usize), uplink) {
                    (Ok(frame), Some(up)) => queue(
                        &mut self.tx,
                        usize::from(up),
                        self.tx_capacity,
                        frame,
                        pipeline,
                        free,
                    ),
                    _ => {
                        pipeline.drop(DropReason::WireguardNoRoom);
                        free.push(addr);
                    }
                }
            }
        }
        n
    }

    /// Polls until no frame is waiting. Returns how many injected frames were processed.
    pub fn run(&mut self, snapshot: &Snapshot, now_ns: u64) -> usize {
        let mut total = 0;
        while self.pending() {
            total += self.poll(snapshot, now_ns);
        }
        total
    }

    /// Frames other drivers handed over: unprocessed ones go into the batch (their flow is
    /// this worker's), processed ones into the TX queue of their output (or to be sealed).
    fn take_handoffs(&mut self) {
        let inbound = std::mem::take(&mut self.links.inbound);
        for lane in &inbound {
            while self.batch.len() < BATCH_SIZE {
                let Some(parcel) = lane.receive() else { break };
                self.pipeline.counters_mut().handoff_in += 1;
                let bytes = &parcel.bytes[..usize::from(parcel.len)];
                if let Err(reason) = self.hand_in(
                    parcel.generation,
                    parcel.run,
                    parcel.out,
                    parcel.seal,
                    bytes,
                ) {
                    self.pipeline.drop(reason);
                }
                lane.recycle(parcel.bytes);
            }
        }
        self.links.inbound = inbound;
    }

    fn hand_in(
        &mut self,
        generation: u64,
        run: bool,
        out: IfIndex,
        seal: Option<u32>,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        let plan = self.map.hand_in(generation, run, out, seal)?;
        if self.headroom + bytes.len() > self.chunk_size {
            return Err(DropReason::TooBig);
        }
        let chunk = self.free.pop().ok_or(DropReason::FillStarved)?;
        let mut region = FrameRegion::new(&mut self.mem, self.chunk_size);
        let frame = region
            .fill(chunk, self.headroom, bytes)
            .expect("a free chunk and a checked length fit the region");
        match plan {
            HandIn::Pipeline { ingress } => {
                self.batch.push_handed(frame, ingress).map_err(|frame| {
                    self.free.push(frame.chunk());
                    DropReason::HandoffFull
                })?;
            }
            HandIn::Seal { peer } => {
                self.to_seal.push((peer, frame.addr(), frame.len() as u32));
            }
            HandIn::Send { port } => queue(
                &mut self.tx,
                usize::from(port),
                self.tx_capacity,
                frame,
                &mut self.pipeline,
                &mut self.free,
            ),
        }
        Ok(())
    }

    /// Takes the frames transmitted on `iface` (copies of their bytes) and frees them.
    pub fn take_tx(&mut self, iface: IfIndex) -> Vec<Vec<u8>> {
        let Some(q) = self.tx.get_mut(usize::from(iface)) else {
            return Vec::new();
        };
        let region = FrameRegion::new(&mut self.mem, self.chunk_size);
        let mut out = Vec::with_capacity(q.len());
        for frame in q.drain(..) {
            out.push(region.data(&frame).to_vec());
            self.free.push(frame.chunk());
        }
        out
    }

    /// Frees every transmitted frame without looking at it (what a completion ring does).
    pub fn complete_all(&mut self) -> usize {
        let mut n = 0;
        for q in &mut self.tx {
            n += q.len();
            for f in q.drain(..) {
                self.free.push(f.chunk());
            }
        }
        n
    }

    /// The pipeline (its policy state, counters).
    pub fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// The pipeline's counters.
    pub fn counters(&self) -> &Counters {
        self.pipeline.counters()
    }

    /// Number of chunks in the region.
    pub fn chunks(&self) -> usize {
        self.mem.len() / self.chunk_size
    }

    /// Checks that every chunk is in exactly one place.
    pub fn check_accounting(&self) -> Result<(), String> {
        let mut seen = vec![false; self.chunks()];
        let places = self
            .free
            .bases()
            .iter()
            .copied()
            .chain(self.rx.iter().map(|(f, _)| f.chunk()))
            .chain(self.tx.iter().flatten().map(|f| f.chunk()));
        for chunk in places {
            let i = (chunk / self.chunk_size as u64) as usize;
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                Some(_) => return Err(format!("chunk {chunk:#x} is in two places")),
                None => return Err(format!("chunk {chunk:#x} is outside the region")),
            }
        }
        match seen.iter().position(|s| !s) {
            Some(i) => Err(format!("chunk {:#x} is lost", i * self.chunk_size)),
            None => Ok(()),
        }
    }

    /// Every interface is this driver's port of the same number, but the unowned ones and
    /// those another driver owns; WireGuard's peers follow the snapshot.
    fn remap(&mut self, snapshot: &Snapshot) {
        let sealing = self.tunnel.is_some() && snapshot.uplink.is_some();
        self.map
            .reset(snapshot.generation, snapshot.interfaces.len(), sealing);
        for (i, x) in snapshot.interfaces.iter().enumerate() {
            if let Ok(at) = IfIndex::try_from(i) {
                let remote = self.owners.iter().find(|(name, _)| *name == x.name);
                match remote {
                    Some((_, w)) => self
                        .map
                        .set(at, Owner::Worker(u16::try_from(*w).unwrap_or(u16::MAX))),
                    None if !self.unowned.contains(&at) => {
                        self.map.set(at, Owner::Here { port: at })
                    }
                    None => {}
                }
            }
        }
        if let Some(t) = self.tunnel.as_mut() {
            t.reconcile(snapshot);
        }
        self.remap = false;
    }
}

/// Puts `frame` in TX queue `out` (counted sent), or drops it when the queue is full.
fn queue(
    tx: &mut Vec<VecDeque<Frame>>,
    out: usize,
    cap: usize,
    frame: Frame,
    pipeline: &mut Pipeline,
    free: &mut FreeList,
) {
    if tx.len() <= out {
        tx.resize_with(out + 1, VecDeque::new);
    }
    if tx[out].len() < cap {
        pipeline.sent(1);
        tx[out].push_back(frame);
    } else {
        pipeline.drop(DropReason::TxRingFull);
        free.push(frame.chunk());
    }
}

/// Polls every driver of a mesh with `snapshot` until none has a frame waiting (injected or
/// handed in). Returns how many injected frames were processed.
pub fn run_workers(drivers: &mut [MemDriver], snapshot: &Snapshot, now_ns: u64) -> usize {
    let mut total = 0;
    while drivers.iter().any(MemDriver::pending) {
        for d in drivers.iter_mut() {
            total += d.poll(snapshot, now_ns);
        }
    }
    total
}
