//! The pipeline: vector stages over a batch, in a fixed order.
//!
//! ```text
//!  parse -> antispoof -> neighbor (ARP/NDP for the gateway) -> Tx(ingress)
//!                     \-> steer (another worker owns the flow) -> Steer(worker)
//!                     \-> service_in (DNAT to an endpoint; replies back)
//!                           -> nat_in (replies to SNAT) -> forward (TTL, LPM, next hop, MTU)
//!                           -> policy -> service_out (source of replies, hairpin, eTP
//!                              Cluster) -> nat_out (SNAT to the world) -> rewrite -> Tx(out)
//!                  forward, service_in \-> icmp (errors, resets, rate limited) -> Tx(ingress)
//!  any stage -> Drop(reason)
//!  Tx(out) / Steer / Drop -> output (send here / seal for a peer / hand off / unowned)
//!    -> the driver
//! ```
//!
//! Each stage acts on the packets whose `Next` names it and writes their next one; a stage
//! only ever sends packets to stages that run after it, so when [`Pipeline::process`]
//! returns every packet is at `Tx` or `Drop`. [`Pipeline::output`] then turns each into an
//! [`output::Action`] from what the worker owns, and the driver executes the plan.
//!
//! `service_in`, `nat_in`, `service_out` and `nat_out` act on the packets at `Forward`
//! and `Rewrite` (they need no `Next` of their own). Encapsulation (VXLAN) slots in between
//! `antispoof` and `rewrite` as its work lands.

pub mod antispoof;
pub mod forward;
pub mod icmp;
pub mod nat;
pub mod neighbor;
pub mod output;
pub mod parse;
pub mod policy;
pub mod rewrite;
pub mod service;
pub mod steer;

use crate::batch::Batch;
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
    nat: Box<nat::NatTable>,
    service: Box<service::ServiceState>,
    /// This worker's number and the number of workers (see [`steer`]).
    worker: u16,
    workers: u16,
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
            nat: Box::default(),
            service: Box::default(),
            worker: 0,
            workers: 1,
        }
    }

    /// Tells the pipeline it runs on worker `worker` of `workers`: source NAT then
    /// allocates only this worker's share of the ports (see [`nat`]), and packets of flows
    /// another worker owns are sent to `Steer(owner)` (see [`steer`]). Forgets the
    /// translations made so far.
    ///
    /// # Panics
    /// If `worker >= workers`.
    pub fn set_worker(&mut self, worker: u16, workers: u16) {
        *self.nat = nat::NatTable::new(worker, workers);
        *self.service = service::ServiceState::default();
        self.worker = worker;
        self.workers = workers;
    }

    /// This worker's number and the number of workers.
    pub fn worker(&self) -> (u16, u16) {
        (self.worker, self.workers)
    }

    /// This worker's service connections.
    pub fn service_state(&self) -> &service::ServiceState {
        &self.service
    }

    /// Replaces this worker's service connection table (tests size it small).
    pub fn set_service_state(&mut self, state: service::ServiceState) {
        *self.service = state;
    }

    /// This worker's source NAT translations.
    pub fn nat_table(&self) -> &nat::NatTable {
        &self.nat
    }

    /// Runs every stage over `batch`. `now_ns` is a monotonic time in nanoseconds (for the
    /// ICMP rate limit). Afterwards every packet's `next` is `Tx`, `Steer` (only with more
    /// than one worker) or `Drop`.
    pub fn process(
        &mut self,
        snapshot: &Snapshot,
        region: &mut FrameRegion<'_>,
        batch: &mut Batch,
        now_ns: u64,
    ) {
        let handed = batch.handed();
        let (frames, meta) = batch.parts_mut();
        // Frames handed in were counted (`handoff_in`) by the driver.
        self.counters.rx += (frames.len() - handed) as u64;
        parse::run(region, frames, meta, &mut self.counters);
        antispoof::run(region, frames, meta, snapshot);
        neighbor::run(region, frames, meta, snapshot, &mut self.counters);
        if self.workers > 1 {
            let config = steer::SteerConfig::new(snapshot, self.workers);
            steer::run(region, frames, meta, handed, &config, self.worker);
        }
        service::run_in(
            region,
            frames,
            meta,
            snapshot,
            &mut self.service,
            &mut self.nat,
            now_ns,
        );
        nat::run_in(region, frames, meta, snapshot, &mut self.nat, now_ns);
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
        service::run_out(region, frames, meta, &mut self.service);
        nat::run_out(region, frames, meta, snapshot, &mut self.nat, now_ns);
        rewrite::run(region, frames, meta, snapshot);
    }

    /// Runs the `output` stage over a processed batch: `plan[i]` says what the driver does
    /// with frame `i` (see [`output`]), and the drops the stage decides are counted.
    ///
    /// # Panics
    /// If the batch was not processed (a packet is not at `Tx` or `Drop`): a driver bug.
    pub fn output(
        &mut self,
        snapshot: &Snapshot,
        batch: &Batch,
        map: &output::OutputMap,
        plan: &mut Vec<output::Action>,
    ) {
        plan.clear();
        plan.resize(batch.len(), output::Action::Drop);
        output::run(batch.meta(), snapshot, map, plan, &mut self.counters);
    }

    /// Counts `n` frames given to a TX ring (or, in memory, a TX queue).
    #[inline]
    pub fn sent(&mut self, n: usize) {
        self.counters.tx += n as u64;
    }

    /// Counts a drop the driver decided (a full TX queue or lane, a bad descriptor...).
    #[inline]
    pub fn drop(&mut self, reason: crate::counters::DropReason) {
        self.counters.drop(reason);
    }

    /// The counters, for what a driver counts beside the stages: frames received outside
    /// a batch, handed in and out, made and consumed by WireGuard.
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
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
