//! What a worker publishes for metrics and tests, and the frame-accounting check.
//!
//! The report is also how the agent learns that a worker is alive and what its `Log`
//! rules saw: each publication advances [`WorkerReport::heartbeat`] (the worker's loop
//! publishes about ten times a second, so a heartbeat that stands still for seconds means
//! a stuck loop; it costs one increment per publication, nothing per round or packet),
//! and moves the records of the policy stage's log ring into [`WorkerReport::logs`],
//! where they wait for the agent to take them. The backlog there is bounded
//! ([`LOG_BACKLOG`]): records beyond it are counted in `logs_lost`, never queued without
//! bound.

use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use weir_crypto::peers::WgCounters;
use weir_dataplane::node::policy::{LogRecord, LOG_RING};
use weir_dataplane::{Counters, DropReason};

use super::Worker;
use crate::wireguard::TunnelCounters;

/// What a worker publishes for metrics: a copy of its counters and its driver counts,
/// refreshed a few times per second (no lock on the packet path).
///
/// Every frame's fate is in `pipeline` (see [`Counters`]: received, handed in or out,
/// made, sent, consumed, or dropped for a named reason, including the driver's own:
/// `handoff_full`, `handoff_stale`, `unowned_output`, `bad_descriptor`, `fill_starved`,
/// `port_detached`, `tx_ring_full`); the fields here are the driver's events.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    pub pipeline: Counters,
    /// Frames received from the kernel, over all sockets.
    pub rx_frames: u64,
    /// Frames the kernel took for transmission.
    pub tx_frames: u64,
    /// Times a TX ring had no room for every staged frame (they stay staged).
    pub tx_ring_full: u64,
    /// Times the fill rings could not be topped up because the free list was empty.
    pub fill_starved: u64,
    /// Sleeps in `poll(2)`.
    pub sleeps: u64,
    /// Rounds of the loop (port commands served, then one poll) that took longer than
    /// [`SLOW_ROUND`]: forwarding stood still that long. Idle sleeps do not count.
    pub slow_rounds: u64,
    /// Of those, the rounds that served port commands (a port attached, adopted or
    /// detached): the worker's own work when ports come and go, apart from the rounds
    /// that were slow for other reasons (the thread preempted, a large batch).
    pub slow_port_rounds: u64,
    /// The longest such round, in nanoseconds.
    pub longest_round_ns: u64,
    /// The longest slow round less the time the thread waited for a CPU in it (see
    /// [`CpuWait`]): how long the worker's own work (or a kernel call it made) held
    /// forwarding up, apart from the scheduler giving its core to something else.
    pub longest_stall_ns: u64,
    /// Of those, the longest in a round that served port commands.
    pub longest_port_stall_ns: u64,
    /// Time the worker's thread was ready to run but waited for a CPU, since it started
    /// (the kernel's `run_delay`; 0 where the kernel does not keep it). On a core of its
    /// own this stays near 0; where it grows, other work shares the worker's cores.
    pub cpu_wait_ns: u64,
    /// WireGuard, on the worker that owns the uplink: the peers' counters.
    pub wireguard: WgCounters,
    /// WireGuard: the tunnel's own counters.
    pub tunnel: TunnelCounters,
    /// Frames the kernel did not give back when a port was detached (TX not completed
    /// within [`super::DETACH_WAIT`], or kept from the fill ring); they are never reused.
    /// 0 on veth in copy mode.
    pub frames_lost: u64,
    /// Per interface: name, whether XDP runs in native mode, and the kernel's statistics.
    pub ports: Vec<PortReport>,
    /// Publications so far: advances about ten times a second while the worker's loop
    /// turns, and stands still when it is stuck.
    pub heartbeat: u64,
    /// `Log` rule hits not yet taken by the agent (oldest first, at most [`LOG_BACKLOG`]).
    pub logs: Vec<LogRecord>,
    /// `Log` rule hits dropped because the agent had not taken the backlog in time
    /// (those the policy stage itself could not record are in
    /// `pipeline.policy_logs_suppressed`).
    pub logs_lost: u64,
}

/// The calling thread's wait for a CPU, from `/proc/thread-self/schedstat` (its second
/// field, `run_delay`: nanoseconds runnable but not running). Read only at a slow round's
/// end and at each publication (about ten times a second), never per round: the wait
/// attributed to a slow round is what accumulated since the last read, so it may also
/// hold sub-millisecond waits of the rounds before it (at most one publication interval
/// of them), which errs towards a shorter stall.
pub(super) struct CpuWait {
    file: Option<std::fs::File>,
    /// The total when opened, and at the last read.
    start: u64,
    last: u64,
}

impl CpuWait {
    /// Opens the calling thread's statistics: call on the worker's own thread.
    pub(super) fn of_this_thread() -> Self {
        let mut wait = CpuWait {
            file: std::fs::File::open("/proc/thread-self/schedstat").ok(),
            start: 0,
            last: 0,
        };
        wait.start = wait.total().unwrap_or(0);
        wait.last = wait.start;
        wait
    }

    /// The thread's total wait so far, when the kernel keeps it.
    fn total(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 96];
        let n = self.file.as_ref()?.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(buf.get(..n)?).ok()?;
        text.split_ascii_whitespace().nth(1)?.parse().ok()
    }

    /// The wait since the last call (or since opening), and since opening.
    pub(super) fn since_last(&mut self) -> (u64, u64) {
        let now = self.total().unwrap_or(self.last);
        let d = now.saturating_sub(self.last);
        self.last = now;
        (d, now.saturating_sub(self.start))
    }
}

/// A round of the worker loop longer than this counts in [`WorkerReport::slow_rounds`].
pub const SLOW_ROUND: std::time::Duration = std::time::Duration::from_millis(1);

/// How many log records a report holds for the agent: four of the policy stage's rings.
pub const LOG_BACKLOG: usize = 4 * LOG_RING;

impl WorkerReport {
    /// Frames handed to the worker that owns their output.
    pub fn handoff_out(&self) -> u64 {
        self.pipeline.handoff_out
    }

    /// Frames other workers handed to this one.
    pub fn handoff_in(&self) -> u64 {
        self.pipeline.handoff_in
    }

    /// Frames dropped at a handoff, on either side: a full lane here, a stale generation
    /// or no free frame for one handed in.
    pub fn handoff_dropped(&self) -> u64 {
        self.pipeline.dropped(DropReason::HandoffFull)
            + self.pipeline.dropped(DropReason::HandoffStale)
    }
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

/// Shared handle to a worker's report, for the metrics endpoint.
pub type SharedReport = Arc<Mutex<WorkerReport>>;

impl Worker {
    /// Publishes the report into `report`, with the wait for a CPU read from `cpu_wait`.
    /// Unless `wait`, gives up (returns false) while the agent holds it, so that a reader
    /// preempted with the lock held never stops the worker; the loop tries again in its
    /// next round.
    pub(super) fn publish(
        &mut self,
        report: &Mutex<WorkerReport>,
        cpu_wait: &mut CpuWait,
        wait: bool,
    ) -> bool {
        let mut shared = match report.try_lock() {
            Ok(shared) => shared,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) if !wait => return false,
            Err(TryLockError::WouldBlock) => report.lock().unwrap_or_else(PoisonError::into_inner),
        };
        self.report.cpu_wait_ns = cpu_wait.since_last().1;
        let fresh = self.pipeline.policy_state().take_logs();
        self.report.heartbeat += 1;
        self.refresh_report();
        for (p, r) in self.ports.iter().zip(self.report.ports.iter_mut()) {
            if let Ok(s) = p.socket.statistics() {
                r.rx_dropped = s.rx_dropped;
                r.rx_ring_full = s.rx_ring_full;
                r.rx_fill_ring_empty = s.rx_fill_ring_empty_descs;
                r.tx_ring_empty = s.tx_ring_empty_descs;
            }
        }
        let mut logs = std::mem::take(&mut shared.logs);
        let room = LOG_BACKLOG.saturating_sub(logs.len());
        self.report.logs_lost += fresh.len().saturating_sub(room) as u64;
        logs.extend(fresh.into_iter().take(room));
        *shared = self.report.clone();
        shared.logs = logs;
        true
    }

    fn refresh_report(&mut self) {
        self.report.pipeline = self.pipeline.counters().clone();
        if let Some(t) = &self.tunnel {
            self.report.wireguard = t.wg_counters();
            self.report.tunnel = t.counters();
        }
    }

    /// The worker's report as of now.
    pub fn report(&mut self) -> WorkerReport {
        self.refresh_report();
        self.report.clone()
    }

    /// Checks that every frame is in exactly one place: the free list holds no frame twice
    /// and nothing outside the UMEM, and free + lent to fill rings + staged + lent to TX
    /// rings (+ in the batch, + waiting to be sealed or sent, + lost when ports were
    /// detached) equals the UMEM's frame count.
    pub fn check_accounting(&self) -> Result<(), String> {
        let size = u64::from(self.umem.frame_size());
        let mut seen = vec![false; self.umem.frame_count() as usize];
        for &f in self.free.bases() {
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
        let pending = self.to_seal.len() + self.control.len();
        let total = self.free.len() + lent + self.batch.len() + pending + self.lost;
        if total != self.umem.frame_count() as usize {
            return Err(format!(
                "{} frames accounted for ({} free, {lent} lent or staged, {} in the batch, \
                 {pending} waiting to be sealed or sent, {} lost at detach), the UMEM has {}",
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
