//! The in-memory driver: feeds frames to the pipeline and collects what it emits, with no
//! kernel in the loop. Unit tests, scenario tests of the pipeline, the fuzzer and the
//! pipeline benchmark drive weir through it; the AF_XDP driver has the same shape (a frame
//! region, a free list, RX in, TX out) with rings instead of queues.
//!
//! Frame accounting is an invariant: every chunk is in exactly one place (free, waiting in
//! RX, or waiting in a TX queue); [`MemDriver::check_accounting`] verifies it.

use std::collections::VecDeque;

use weir_dataplane::batch::{flags, Next};
use weir_dataplane::frame::{DEFAULT_CHUNK_SIZE, DEFAULT_HEADROOM};
use weir_dataplane::policy::ConntrackConfig;
use weir_dataplane::{
    Batch, Counters, DropReason, Frame, FrameRegion, IfIndex, Pipeline, Snapshot, BATCH_SIZE,
};

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
    free: Vec<u64>,
    rx: VecDeque<(Frame, IfIndex)>,
    tx: Vec<VecDeque<Frame>>,
    tx_capacity: usize,
    batch: Batch,
    pipeline: Pipeline,
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
            free: (0..chunks as u64)
                .rev()
                .map(|c| c * chunk_size as u64)
                .collect(),
            rx: VecDeque::with_capacity(chunks),
            tx: Vec::new(),
            tx_capacity,
            batch: Batch::new(),
            // A small table: in-memory runs track few flows, and tests make many drivers.
            pipeline: Pipeline::with_conntrack(ConntrackConfig {
                capacity: 4096,
                ..ConntrackConfig::default()
            }),
        }
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
    /// `snapshot` at time `now_ns`. Returns how many frames it processed.
    pub fn poll(&mut self, snapshot: &Snapshot, now_ns: u64) -> usize {
        let n = self.rx.len().min(BATCH_SIZE);
        for (frame, ingress) in self.rx.drain(..n) {
            if self.batch.push(frame, ingress).is_err() {
                unreachable!("at most BATCH_SIZE frames are pushed into an empty batch");
            }
        }
        let mut region = FrameRegion::new(&mut self.mem, self.chunk_size);
        self.pipeline
            .process(snapshot, &mut region, &mut self.batch, now_ns);
        let (pipeline, tx, free, cap) = (
            &mut self.pipeline,
            &mut self.tx,
            &mut self.free,
            self.tx_capacity,
        );
        self.batch.drain(|frame, meta| {
            // This driver has no WireGuard: what routing marked for sealing is dropped,
            // never sent in clear.
            let next = if meta.has(flags::ENCRYPT) {
                Next::Drop(DropReason::TunnelUnavailable)
            } else {
                meta.next
            };
            match pipeline.settle(next) {
                Some(out) => {
                    let out = usize::from(out);
                    if tx.len() <= out {
                        tx.resize_with(out + 1, VecDeque::new);
                    }
                    if tx[out].len() < cap {
                        pipeline.transmitted();
                        tx[out].push_back(frame);
                    } else {
                        pipeline.tx_full();
                        free.push(frame.chunk());
                    }
                }
                None => free.push(frame.chunk()),
            }
        });
        n
    }

    /// Polls until no frame is waiting. Returns how many were processed.
    pub fn run(&mut self, snapshot: &Snapshot, now_ns: u64) -> usize {
        let mut total = 0;
        while !self.rx.is_empty() {
            total += self.poll(snapshot, now_ns);
        }
        total
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
            self.free.extend(q.drain(..).map(|f| f.chunk()));
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
}
