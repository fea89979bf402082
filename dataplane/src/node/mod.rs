//! The pipeline: vector stages over a batch, in a fixed order.
//!
//! ```text
//!  parse -> antispoof -> neighbor (ARP/NDP for the gateway) -> Tx(ingress)
//!                     \-> forward (TTL, LPM, next hop, MTU) -> policy -> rewrite -> Tx(out)
//!                                                   \-> icmp (errors, rate limited) -> Tx(ingress)
//!  any stage -> Drop(reason)
//! ```
//!
//! Each stage acts on the packets whose `Next` names it and writes their next one; a stage
//! only ever sends packets to stages that run after it, so when [`Pipeline::process`]
//! returns every packet is at `Tx` or `Drop`. The driver then moves frames to outputs and
//! counts them with [`Pipeline::settle`].
//!
//! Policy, conntrack, service NAT and encapsulation slot in between `antispoof` and
//! `rewrite` as their work lands.

pub mod antispoof;
pub mod forward;
pub mod icmp;
pub mod neighbor;
pub mod parse;
pub mod policy;
pub mod rewrite;

use crate::batch::{Batch, IfIndex, Next};
use crate::counters::Counters;
use crate::frame::FrameRegion;
use crate::snapshot::Snapshot;

/// One worker's pipeline state: counters, the ICMP rate limiter, lookup scratch space.
/// Owned by its worker thread; aligned so two workers never share a cache line.
#[derive(Debug)]
#[repr(align(64))]
pub struct Pipeline {
    counters: Counters,
    icmp_bucket: icmp::TokenBucket,
    scratch: Box<forward::Scratch>,
    policy: Box<policy::PolicyState>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// A pipeline with zeroed counters and a conntrack table of the default size.
    pub fn new() -> Self {
        Self::with_conntrack(crate::policy::ConntrackConfig::default())
    }

    /// A pipeline whose conntrack table has the given configuration.
    pub fn with_conntrack(config: crate::policy::ConntrackConfig) -> Self {
        Pipeline {
            counters: Counters::default(),
            icmp_bucket: icmp::TokenBucket::default(),
            scratch: Box::default(),
            policy: Box::new(policy::PolicyState::with_conntrack(config)),
        }
    }

    /// Runs every stage over `batch`. `now_ns` is a monotonic time in nanoseconds (for the
    /// ICMP rate limit). Afterwards every packet's `next` is `Tx` or `Drop`.
    pub fn process(
        &mut self,
        snapshot: &Snapshot,
        region: &mut FrameRegion<'_>,
        batch: &mut Batch,
        now_ns: u64,
    ) {
        let (frames, meta) = batch.parts_mut();
        self.counters.rx += frames.len() as u64;
        parse::run(region, frames, meta, &mut self.counters);
        antispoof::run(region, frames, meta, snapshot);
        neighbor::run(region, frames, meta, snapshot, &mut self.counters);
        forward::run(frames, meta, snapshot, &mut self.scratch);
        icmp::run(
            region,
            frames,
            meta,
            snapshot,
            &mut self.icmp_bucket,
            &mut self.counters,
            now_ns,
        );
        policy::run(
            region,
            frames,
            meta,
            snapshot,
            &mut self.policy,
            &mut self.counters,
            now_ns,
        );
        rewrite::run(region, frames, meta, snapshot);
    }

    /// Counts a processed packet and says where its frame goes: `Some(interface)` to be
    /// transmitted (the driver calls [`Pipeline::transmitted`] or, when the output is full,
    /// [`Pipeline::tx_full`]), `None` to be recycled (the drop is counted here).
    ///
    /// # Panics
    /// If `next` is not terminal, i.e. the packet was not processed: a driver bug.
    #[inline]
    pub fn settle(&mut self, next: Next) -> Option<IfIndex> {
        match next {
            Next::Tx(out) => Some(out),
            Next::Drop(reason) => {
                self.counters.drop(reason);
                None
            }
            other => panic!("packet left the pipeline unfinished at {other:?}"),
        }
    }

    /// Counts a frame handed to its output.
    #[inline]
    pub fn transmitted(&mut self) {
        self.counters.tx += 1;
    }

    /// Counts a frame dropped because its output was full.
    #[inline]
    pub fn tx_full(&mut self) {
        self.counters.drop(crate::counters::DropReason::TxRingFull);
    }

    /// This worker's policy state (conntrack table, log records).
    pub fn policy_state(&mut self) -> &mut policy::PolicyState {
        &mut self.policy
    }

    /// This worker's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}
