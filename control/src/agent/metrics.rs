//! Prometheus text for `/metrics`: the control loop's counters (changes applied and
//! rejected, the apply-time histogram) and each worker's counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use weir_dataplane::DropReason;
use weir_workers::worker::WorkerReport;

/// Upper bounds (seconds) of the change-to-snapshot histogram's buckets.
pub const APPLY_BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// The control loop's counters for `/metrics`: datastore changes applied and rejected,
/// objects refused, and the time from noticing a change to publishing its snapshot.
#[derive(Debug, Clone, Default)]
pub struct ControlStats {
    pub applied: u64,
    pub rejected: u64,
    pub refused_objects: u64,
    pub generation: u64,
    /// Observations at or under each bound of [`APPLY_BUCKETS`] (cumulative).
    pub apply_buckets: [u64; APPLY_BUCKETS.len()],
    pub apply_count: u64,
    pub apply_sum: f64,
}

impl ControlStats {
    pub(super) fn observe(&mut self, secs: f64) {
        for (bound, n) in APPLY_BUCKETS.iter().zip(self.apply_buckets.iter_mut()) {
            if secs <= *bound {
                *n += 1;
            }
        }
        self.apply_count += 1;
        self.apply_sum += secs;
    }
}

/// Prometheus text for the control loop.
pub fn control_metrics(s: &ControlStats) -> String {
    let mut out = String::new();
    for (name, help, v) in [
        (
            "weir_datastore_changes_applied_total",
            "Datastore changes published as a new snapshot.",
            s.applied,
        ),
        (
            "weir_datastore_changes_rejected_total",
            "Datastore changes refused whole (the running tables kept serving).",
            s.rejected,
        ),
        (
            "weir_datastore_objects_refused_total",
            "Objects refused in changes that were applied (their last good version kept).",
            s.refused_objects,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP weir_snapshot_generation The generation of the snapshot the workers read.\n\
         # TYPE weir_snapshot_generation gauge\nweir_snapshot_generation {}",
        s.generation
    );
    let name = "weir_datastore_apply_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From noticing a datastore change to publishing its snapshot.\n\
         # TYPE {name} histogram"
    );
    for (bound, n) in APPLY_BUCKETS.iter().zip(s.apply_buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.apply_count);
    let _ = writeln!(out, "{name}_sum {}", s.apply_sum);
    let _ = writeln!(out, "{name}_count {}", s.apply_count);
    out
}

/// Prometheus text for the workers' reports.
pub fn metrics(reports: &[Arc<Mutex<WorkerReport>>]) -> String {
    let mut out = String::new();
    let snapshots: Vec<WorkerReport> = reports
        .iter()
        .map(|r| r.lock().map(|r| r.clone()).unwrap_or_default())
        .collect();
    let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let per = |f: &dyn Fn(&WorkerReport) -> u64| -> Vec<(String, u64)> {
        snapshots
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("worker=\"{i}\""), f(r)))
            .collect()
    };
    for (name, help, field) in PER_WORKER {
        family(name, help, "counter", per(&field));
    }
    let mut wg_drops = Vec::new();
    for (i, r) in snapshots.iter().enumerate() {
        let c = &r.wireguard;
        for (reason, v) in [
            ("malformed", c.malformed),
            ("unauthenticated", c.unauthenticated),
            ("replay", c.replayed),
            ("not_allowed", c.not_allowed),
            ("unknown_peer", c.unknown_peer),
            ("under_load", c.under_load),
            ("no_session", c.no_session),
        ] {
            wg_drops.push((format!("worker=\"{i}\",reason=\"{reason}\""), v));
        }
    }
    family(
        "weir_wireguard_drops_total",
        "WireGuard messages refused, by reason.",
        "counter",
        wg_drops,
    );
    let mut drops = Vec::new();
    for (i, r) in snapshots.iter().enumerate() {
        for reason in DropReason::ALL {
            drops.push((
                format!("worker=\"{i}\",reason=\"{}\"", reason.name()),
                r.pipeline.dropped(reason),
            ));
        }
    }
    family(
        "weir_drops_total",
        "Frames dropped, by reason.",
        "counter",
        drops,
    );
    let mut rings = BTreeMap::new();
    for (i, r) in snapshots.iter().enumerate() {
        for p in &r.ports {
            rings.insert(
                format!("worker=\"{i}\",interface=\"{}\"", p.name),
                p.rx_ring_full,
            );
        }
    }
    family(
        "weir_xsk_rx_ring_full_total",
        "Kernel: frames dropped because the RX ring was full.",
        "counter",
        rings.into_iter().collect(),
    );
    out
}

/// A per-worker counter family: name, help, and the field it reads.
type Family = (&'static str, &'static str, fn(&WorkerReport) -> u64);

/// The per-worker counters `/metrics` shows, one family each.
const PER_WORKER: [Family; 25] = [
    (
        "weir_rx_packets_total",
        "Frames that entered the pipeline.",
        |r| r.pipeline.rx,
    ),
    (
        "weir_tx_packets_total",
        "Frames given to an output's TX ring.",
        |r| r.pipeline.tx,
    ),
    (
        "weir_xsk_rx_frames_total",
        "Frames received from AF_XDP sockets.",
        |r| r.rx_frames,
    ),
    (
        "weir_xsk_tx_frames_total",
        "Frames given to AF_XDP TX rings.",
        |r| r.tx_frames,
    ),
    (
        "weir_tx_ring_full_total",
        "Times a TX ring had no room.",
        |r| r.tx_ring_full,
    ),
    (
        "weir_fill_starved_total",
        "Times the free list could not top up the fill rings.",
        |r| r.fill_starved,
    ),
    (
        "weir_handoff_out_total",
        "Frames handed to the worker that owns their output interface.",
        |r| r.handoff_out(),
    ),
    (
        "weir_handoff_in_total",
        "Frames other workers handed to this one.",
        |r| r.handoff_in(),
    ),
    (
        "weir_handoff_dropped_total",
        "Frames dropped at a handoff (the owning worker was behind, or a stale generation; \
         also in weir_drops_total as handoff_full and handoff_stale).",
        |r| r.handoff_dropped(),
    ),
    (
        "weir_unowned_output_total",
        "Frames routed to an interface no worker holds (detached, or not announced yet; \
         dropped, also in weir_drops_total as unowned_output).",
        |r| r.pipeline.dropped(DropReason::UnownedOutput),
    ),
    (
        "weir_detach_dropped_total",
        "Frames found in an interface's rings while it was detached (dropped, also in \
         weir_drops_total as port_detached).",
        |r| r.pipeline.dropped(DropReason::PortDetached),
    ),
    (
        "weir_frames_lost_total",
        "UMEM frames the kernel still held when an interface was detached (never reused).",
        |r| r.frames_lost,
    ),
    ("weir_worker_sleeps_total", "Idle sleeps in poll(2).", |r| {
        r.sleeps
    }),
    (
        "weir_wireguard_sealed_total",
        "Packets sealed for a peer and sent.",
        |r| r.tunnel.sealed,
    ),
    (
        "weir_wireguard_opened_total",
        "Packets opened from a peer and delivered to the pipeline.",
        |r| r.tunnel.opened,
    ),
    (
        "weir_wireguard_control_total",
        "Handshake, cookie and keepalive messages sent.",
        |r| r.tunnel.control,
    ),
    (
        "weir_wireguard_no_peer_total",
        "Packets routed over WireGuard to a node without a usable peer (dropped, also in \
         weir_drops_total as wireguard_no_peer).",
        |r| r.pipeline.dropped(DropReason::WireguardNoPeer),
    ),
    (
        "weir_wireguard_malformed_total",
        "WireGuard messages refused before decryption: unknown type, reserved bytes or \
         length (dropped, in weir_drops_total as wireguard_rejected).",
        |r| r.tunnel.malformed,
    ),
    (
        "weir_wireguard_peer_updates_total",
        "Peer sets taken from a new snapshot.",
        |r| r.tunnel.peer_updates,
    ),
    (
        "weir_wireguard_peer_updates_refused_total",
        "Peer sets of a new snapshot refused (the old set stays).",
        |r| r.tunnel.peer_updates_refused,
    ),
    (
        "weir_generated_total",
        "Frames made with no frame coming in: WireGuard messages and packets flushed after \
         a handshake.",
        |r| r.pipeline.generated,
    ),
    (
        "weir_consumed_total",
        "Frames that ended by design: WireGuard control messages received, packets queued \
         for a handshake.",
        |r| r.pipeline.consumed,
    ),
    (
        "weir_wireguard_handshakes_initiated_total",
        "Handshake initiations sent.",
        |r| r.wireguard.handshake_initiations,
    ),
    (
        "weir_wireguard_handshakes_answered_total",
        "Handshake initiations answered.",
        |r| r.wireguard.handshake_responses,
    ),
    (
        "weir_wireguard_cookie_replies_total",
        "Cookie replies sent under handshake load.",
        |r| r.wireguard.cookie_replies,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apply_histogram_is_cumulative_and_well_formed() {
        let mut s = ControlStats::default();
        for secs in [0.0005, 0.003, 0.003, 0.2, 5.0] {
            s.observe(secs);
        }
        let text = control_metrics(&s);
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "weir_datastore_apply_seconds_bucket{{le=\"{le}\"}}"
                    ))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(bucket("0.001"), Some(1));
        assert_eq!(bucket("0.005"), Some(3));
        assert_eq!(bucket("0.25"), Some(4));
        assert_eq!(bucket("1"), Some(4));
        assert_eq!(bucket("+Inf"), Some(5));
        assert!(text.contains("weir_datastore_apply_seconds_count 5"));
        assert!(text.contains("# TYPE weir_datastore_apply_seconds histogram"));
    }
}
