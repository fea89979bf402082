//! `/metrics`: the control loop's counters (changes applied and rejected, the apply-time
//! histogram), each worker's counters, the policy `Log` records the agent collected, and
//! the HTTP server's own counters, encoded by `prometheus-client` (OpenMetrics text).
//!
//! The workers' counters live in their reports (copied a few times per second, no lock on
//! the packet path), so they are read at scrape time by a [`Collector`] rather than copied
//! into registered metric objects: one copy of each number, never two that disagree.
//! Counter families are declared without `_total`, which the encoder appends to every
//! sample: the samples read as the docs spell them (`weir_rx_packets_total{worker="0"}`).
//!
//! [`LogDrain`] turns the workers' policy log records into log lines (target
//! `weir::policy_log`, key=value fields) and counts them per rule
//! (`weir_policy_log_records_total{tier,policy,direction,rule}`). A record names its rule
//! by id, and ids are given out per compilation: the drain keeps the rule names of the
//! last few snapshot generations, and a record from a generation it never saw is counted
//! under `unknown` rather than under another rule's name.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use weir_dataplane::policy::{Direction, RuleInfo, Verdict};
use weir_dataplane::DropReason;
use weir_workers::worker::{SharedReport, WorkerReport};

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
    /// Since when the control loop has been applying one batch of changes; `None` while
    /// it waits for changes (for `/healthz`).
    pub busy_since: Option<Instant>,
    /// Why the latest batch of changes could not be published; `None` once one is (for
    /// `/readyz`).
    pub last_rejection: Option<String>,
    /// Service changes refused (a Service claiming a frontend another holds): that
    /// Service's last good version kept serving.
    pub service_changes_refused: u64,
    /// Why the model's latest services are not the ones served, while they are not (for
    /// `/services`).
    pub services_refused: Option<String>,
}

impl ControlStats {
    /// Counts one change published `secs` after it was noticed.
    pub fn observe(&mut self, secs: f64) {
        for (bound, n) in APPLY_BUCKETS.iter().zip(self.apply_buckets.iter_mut()) {
            if secs <= *bound {
                *n += 1;
            }
        }
        self.apply_count += 1;
        self.apply_sum += secs;
    }
}

/// Counts the agent keeps itself (the workers keep theirs in their reports).
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Connections closed at once because [`crate::agent::HttpLimits::max_connections`]
    /// were open.
    pub http_connections_refused: AtomicU64,
    /// Policy log records taken from the workers, by rule.
    log_records: Mutex<BTreeMap<RuleLabels, u64>>,
}

/// Everything `/metrics` shows, behind one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry that reads `reports`, `control` and `counters` at each scrape.
    pub fn new(
        reports: Vec<SharedReport>,
        control: Arc<Mutex<ControlStats>>,
        counters: Arc<AgentCounters>,
    ) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(AgentCollector {
            reports,
            control,
            counters,
        }));
        Metrics { registry }
    }

    /// The OpenMetrics text of every family, ending with `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Takes the policy log records out of the workers' reports, writes each as a log line
/// and counts it by rule.
#[derive(Debug)]
pub struct LogDrain {
    counters: Arc<AgentCounters>,
    /// The rule names of the last [`NAMED_GENERATIONS`] snapshot generations seen.
    names: VecDeque<(u64, Arc<[RuleInfo]>)>,
}

/// How many snapshot generations' rule names [`LogDrain`] keeps.
const NAMED_GENERATIONS: usize = 8;

impl LogDrain {
    pub fn new(counters: Arc<AgentCounters>) -> LogDrain {
        LogDrain {
            counters,
            names: VecDeque::new(),
        }
    }

    /// Notes the rule names of snapshot `generation` (a no-op when already known).
    pub fn learn(&mut self, generation: u64, rules: &[RuleInfo]) {
        if self.names.iter().any(|(g, _)| *g == generation) {
            return;
        }
        if self.names.len() == NAMED_GENERATIONS {
            self.names.pop_front();
        }
        self.names.push_back((generation, rules.into()));
    }

    /// Takes every worker's pending records: one log line each, and counted. Returns how
    /// many were taken.
    pub fn drain(&mut self, reports: &[SharedReport]) -> usize {
        let mut taken = 0;
        for (worker, report) in reports.iter().enumerate() {
            let records = match report.lock() {
                Ok(mut r) => std::mem::take(&mut r.logs),
                Err(_) => continue,
            };
            taken += records.len();
            for record in records {
                let names = self
                    .names
                    .iter()
                    .find(|(g, _)| *g == record.generation)
                    .and_then(|(_, rules)| rules.get(record.rule as usize));
                let labels = RuleLabels::of(names);
                let flow = &record.flow;
                tracing::info!(
                    target: "weir::policy_log",
                    worker,
                    tier = labels.tier.as_str(),
                    policy = labels.policy.as_str(),
                    direction = labels.direction,
                    rule = labels.rule.as_str(),
                    verdict = match record.verdict {
                        Verdict::Allow => "allow",
                        Verdict::Deny => "deny",
                    },
                    proto = flow.proto,
                    src = %flow.src_ip(),
                    src_port = flow.src_port,
                    dst = %flow.dst_ip(),
                    dst_port = flow.dst_port,
                    generation = record.generation,
                    "policy log"
                );
                if let Ok(mut counts) = self.counters.log_records.lock() {
                    *counts.entry(labels).or_default() += 1;
                }
            }
        }
        taken
    }
}

/// Writes log lines (the policy log records) to stderr as `key=value` fields, once per
/// process; later calls, and calls after another subscriber was set, do nothing.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// A log record's rule, as labels: the tier, the policy, the direction and the rule's
/// index in the policy (`end` for a tier's default action or a policy's implicit end).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RuleLabels {
    tier: String,
    policy: String,
    direction: &'static str,
    rule: String,
}

impl RuleLabels {
    fn of(info: Option<&RuleInfo>) -> RuleLabels {
        let Some(info) = info else {
            return RuleLabels {
                tier: "unknown".into(),
                policy: "unknown".into(),
                direction: "unknown",
                rule: "unknown".into(),
            };
        };
        RuleLabels {
            tier: label(&info.tier),
            policy: label(&info.policy),
            direction: match info.direction {
                Direction::Ingress => "ingress",
                Direction::Egress => "egress",
            },
            rule: info
                .index
                .map_or_else(|| "end".to_owned(), |i| i.to_string()),
        }
    }
}

/// A label value as the text format can carry it (the encoder does not escape): quotes,
/// backslashes and line breaks become `_`. Kubernetes names never hold them.
fn label(value: &str) -> String {
    value.replace(['"', '\\', '\n'], "_")
}

/// Reads the reports, the control loop's counters and the agent's own at each scrape.
#[derive(Debug)]
struct AgentCollector {
    reports: Vec<SharedReport>,
    control: Arc<Mutex<ControlStats>>,
    counters: Arc<AgentCounters>,
}

type Labels = Vec<(&'static str, String)>;

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let stats = self.control.lock().map(|s| s.clone()).unwrap_or_default();
        control_families(&mut encoder, &stats)?;
        let reports: Vec<WorkerReport> = self
            .reports
            .iter()
            .map(|r| {
                r.lock()
                    .map(|r| WorkerReport {
                        logs: Vec::new(),
                        ..r.clone()
                    })
                    .unwrap_or_default()
            })
            .collect();
        worker_families(&mut encoder, &reports)?;
        let logs: Vec<(Labels, u64)> = self
            .counters
            .log_records
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(l, n)| {
                        (
                            vec![
                                ("tier", l.tier.clone()),
                                ("policy", l.policy.clone()),
                                ("direction", l.direction.to_owned()),
                                ("rule", l.rule.clone()),
                            ],
                            *n,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        counters(
            &mut encoder,
            "weir_policy_log_records_total",
            "Policy Log rule hits taken from the workers and written to the log, by rule.",
            logs,
        )?;
        counter(
            &mut encoder,
            "weir_http_connections_refused_total",
            "Connections to the metrics and health port closed at once: too many were open.",
            self.counters
                .http_connections_refused
                .load(Ordering::Relaxed),
        )
    }
}

/// The control loop's families.
fn control_families(encoder: &mut DescriptorEncoder<'_>, s: &ControlStats) -> std::fmt::Result {
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
        (
            "weir_services_refused_total",
            "Service changes refused (a Service claiming a frontend another holds); that \
             Service's last good version kept serving.",
            s.service_changes_refused,
        ),
    ] {
        counter(encoder, name, help, v)?;
    }
    let gauge = encoder.encode_descriptor(
        "weir_snapshot_generation",
        "The generation of the snapshot the workers read.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(i64::try_from(s.generation).unwrap_or(i64::MAX)).encode(gauge)?;
    let histogram = encoder.encode_descriptor(
        "weir_datastore_apply_seconds",
        "From noticing a datastore change to publishing its snapshot.",
        None,
        MetricType::Histogram,
    )?;
    ApplyHistogram(s).encode(histogram)
}

/// The workers' families.
fn worker_families(
    encoder: &mut DescriptorEncoder<'_>,
    reports: &[WorkerReport],
) -> std::fmt::Result {
    let per = |f: &dyn Fn(&WorkerReport) -> u64| -> Vec<(Labels, u64)> {
        reports
            .iter()
            .enumerate()
            .map(|(i, r)| (vec![("worker", i.to_string())], f(r)))
            .collect()
    };
    for (name, help, field) in PER_WORKER {
        counters(encoder, name, help, per(&field))?;
    }
    for (name, help, field) in WORKER_TIMES {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, ns) in per(&field) {
            ConstGauge::new(ns as f64 / 1e9).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut waited = encoder.encode_descriptor(
        "weir_worker_cpu_wait_seconds",
        "Time a worker's thread was ready to run but waited for a CPU (the kernel's \
         run_delay): near 0 on a core of its own.",
        None,
        MetricType::Counter,
    )?;
    for (labels, ns) in per(&|r| r.cpu_wait_ns) {
        ConstCounter::new(ns as f64 / 1e9).encode(waited.encode_family(&labels)?)?;
    }
    let mut wg_drops = Vec::new();
    for (i, r) in reports.iter().enumerate() {
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
            wg_drops.push((worker_and("reason", i, reason), v));
        }
    }
    counters(
        encoder,
        "weir_wireguard_drops_total",
        "WireGuard messages refused, by reason.",
        wg_drops,
    )?;
    let mut drops = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        for reason in DropReason::ALL {
            drops.push((
                worker_and("reason", i, reason.name()),
                r.pipeline.dropped(reason),
            ));
        }
    }
    counters(
        encoder,
        "weir_drops_total",
        "Frames dropped, by reason.",
        drops,
    )?;
    let mut icmp = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        for kind in weir_dataplane::IcmpErrorKind::ALL {
            icmp.push((
                worker_and("kind", i, kind.name()),
                r.pipeline.icmp_sent(kind),
            ));
        }
    }
    counters(
        encoder,
        "weir_icmp_errors_total",
        "Errors sent in place of a dropped packet, by kind (ICMP errors, and TCP resets \
         from services without endpoints).",
        icmp,
    )?;
    let mut rings = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        for p in &r.ports {
            rings.insert((i, p.name.clone()), p.rx_ring_full);
        }
    }
    counters(
        encoder,
        "weir_xsk_rx_ring_full_total",
        "Kernel: frames dropped because the RX ring was full.",
        rings
            .into_iter()
            .map(|((i, name), v)| (worker_and("interface", i, &label(&name)), v))
            .collect(),
    )
}

fn worker_and(key: &'static str, worker: usize, value: &str) -> Labels {
    vec![("worker", worker.to_string()), (key, value.to_owned())]
}

/// One counter family without labels; `name` as the samples spell it (`..._total`).
fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> std::fmt::Result {
    let family = name.strip_suffix("_total").unwrap_or(name);
    let metric = encoder.encode_descriptor(family, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(metric)
}

/// One counter family, a sample per label set; `name` as the samples spell it.
fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: Vec<(Labels, u64)>,
) -> std::fmt::Result {
    let family = name.strip_suffix("_total").unwrap_or(name);
    let mut metric = encoder.encode_descriptor(family, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// [`ControlStats`]' apply-time histogram, for the encoder (which wants each bucket's own
/// count, and `f64::MAX` for `+Inf`).
struct ApplyHistogram<'a>(&'a ControlStats);

impl EncodeMetric for ApplyHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> std::fmt::Result {
        let s = self.0;
        let mut below = 0;
        let mut buckets = Vec::with_capacity(APPLY_BUCKETS.len() + 1);
        for (bound, cumulative) in APPLY_BUCKETS.iter().zip(s.apply_buckets) {
            buckets.push((*bound, cumulative.saturating_sub(below)));
            below = cumulative;
        }
        buckets.push((f64::MAX, s.apply_count.saturating_sub(below)));
        encoder.encode_histogram::<NoLabelSet>(s.apply_sum, s.apply_count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A per-worker counter family: name, help, and the field it reads.
type Family = (&'static str, &'static str, fn(&WorkerReport) -> u64);

/// Per worker, durations as gauges in seconds (the field holds nanoseconds).
const WORKER_TIMES: [Family; 3] = [
    (
        "weir_worker_longest_round_seconds",
        "The longest round of a worker's loop over 1 ms since it started: the longest \
         forwarding stood still, whatever the cause.",
        |r| r.longest_round_ns,
    ),
    (
        "weir_worker_longest_stall_seconds",
        "The longest round over 1 ms less the time the worker waited for a CPU in it: the \
         longest its own work or a kernel call it made held forwarding up.",
        |r| r.longest_stall_ns,
    ),
    (
        "weir_worker_longest_port_stall_seconds",
        "Of those stalls, the longest in a round that served port commands (interfaces \
         attached or detached).",
        |r| r.longest_port_stall_ns,
    ),
];

/// The per-worker counters `/metrics` shows, one family each.
const PER_WORKER: [Family; 28] = [
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
        "weir_worker_slow_rounds_total",
        "Rounds of a worker's loop (port commands, then one poll) that took more than 1 ms: \
         forwarding stood still that long.",
        |r| r.slow_rounds,
    ),
    (
        "weir_worker_slow_port_rounds_total",
        "Of the rounds over 1 ms, those that served port commands (interfaces attached or \
         detached).",
        |r| r.slow_port_rounds,
    ),
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
    (
        "weir_policy_logs_suppressed_total",
        "Policy Log rule hits not written: over the rate limit (100 a second, bursts of \
         20), the worker's ring full, or the agent behind in taking them.",
        |r| r.pipeline.policy_logs_suppressed + r.logs_lost,
    ),
];

#[cfg(test)]
mod tests {
    use weir_dataplane::node::policy::LogRecord;
    use weir_dataplane::FlowKey;

    use super::*;

    fn render(stats: ControlStats, reports: Vec<SharedReport>) -> String {
        let control = Arc::new(Mutex::new(stats));
        Metrics::new(reports, control, Arc::default()).render()
    }

    fn value(text: &str, sample: &str) -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn the_apply_histogram_is_cumulative_and_well_formed() {
        let mut s = ControlStats::default();
        for secs in [0.0005, 0.003, 0.003, 0.2, 5.0] {
            s.observe(secs);
        }
        let text = render(s, Vec::new());
        let bucket = |le: &str| {
            value(
                &text,
                &format!("weir_datastore_apply_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.001"), Some(1));
        assert_eq!(bucket("0.005"), Some(3));
        assert_eq!(bucket("0.25"), Some(4));
        assert_eq!(bucket("1.0"), Some(4));
        assert_eq!(bucket("+Inf"), Some(5));
        assert_eq!(value(&text, "weir_datastore_apply_seconds_count"), Some(5));
        assert!(text.contains("# TYPE weir_datastore_apply_seconds histogram"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn worker_counters_keep_their_documented_names_and_labels() {
        let report = SharedReport::default();
        {
            let mut r = report.lock().unwrap();
            r.pipeline.rx = 7;
            r.pipeline.policy_logs_suppressed = 2;
            r.logs_lost = 1;
            r.pipeline.drop(DropReason::PolicyDeniedIngress);
        }
        let stats = ControlStats {
            applied: 3,
            generation: 9,
            ..ControlStats::default()
        };
        let text = render(stats, vec![SharedReport::default(), report]);
        assert_eq!(value(&text, "weir_rx_packets_total{worker=\"1\"}"), Some(7));
        assert_eq!(value(&text, "weir_rx_packets_total{worker=\"0\"}"), Some(0));
        assert_eq!(
            value(
                &text,
                "weir_drops_total{worker=\"1\",reason=\"policy_denied_ingress\"}"
            ),
            Some(1)
        );
        assert_eq!(
            value(&text, "weir_policy_logs_suppressed_total{worker=\"1\"}"),
            Some(3)
        );
        assert_eq!(
            value(&text, "weir_datastore_changes_applied_total"),
            Some(3)
        );
        assert_eq!(value(&text, "weir_snapshot_generation"), Some(9));
        assert!(text.contains("# TYPE weir_rx_packets counter"));
    }

    /// Captures what a fmt subscriber writes, for the log line tests.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_record_becomes_a_line_with_its_rule_and_flow_and_a_count_per_rule() {
        let rules = vec![
            RuleInfo {
                tier: "security".into(),
                policy: "prod/web".into(),
                direction: Direction::Ingress,
                index: Some(2),
            },
            RuleInfo {
                tier: "security".into(),
                policy: String::new(),
                direction: Direction::Egress,
                index: None,
            },
        ];
        let flow = FlowKey {
            src: FlowKey::map_v4([198, 18, 0, 1]),
            dst: FlowKey::map_v4([198, 18, 0, 2]),
            src_port: 40000,
            dst_port: 80,
            proto: 6,
        };
        let record = |rule, generation| LogRecord {
            rule,
            flow,
            verdict: Verdict::Deny,
            generation,
            now_ns: 0,
        };
        let report = SharedReport::default();
        report.lock().unwrap().logs = vec![record(0, 4), record(0, 4), record(1, 4), record(0, 3)];
        let counters = Arc::new(AgentCounters::default());
        let mut drain = LogDrain::new(counters.clone());
        drain.learn(4, &rules);
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let reports = vec![SharedReport::default(), report.clone()];
        let taken = tracing::subscriber::with_default(subscriber, || drain.drain(&reports));
        assert_eq!(taken, 4);
        assert!(
            report.lock().unwrap().logs.is_empty(),
            "the records were taken"
        );
        let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        for want in [
            "weir::policy_log",
            "worker=1",
            "tier=\"security\"",
            "policy=\"prod/web\"",
            "direction=\"ingress\"",
            "rule=\"2\"",
            "verdict=\"deny\"",
            "proto=6",
            "src=198.18.0.1",
            "src_port=40000",
            "dst=198.18.0.2",
            "dst_port=80",
        ] {
            assert!(lines[0].contains(want), "{want} missing from {}", lines[0]);
        }
        assert!(lines[2].contains("rule=\"end\""), "{}", lines[2]);
        assert!(lines[3].contains("tier=\"unknown\""), "{}", lines[3]);
        let text = Metrics::new(reports, Arc::default(), counters).render();
        let sample = |tier: &str, policy: &str, dir: &str, rule: &str| {
            value(
                &text,
                &format!(
                    "weir_policy_log_records_total{{tier=\"{tier}\",policy=\"{policy}\",\
                     direction=\"{dir}\",rule=\"{rule}\"}}"
                ),
            )
        };
        assert_eq!(
            sample("security", "prod/web", "ingress", "2"),
            Some(2),
            "{text}"
        );
        assert_eq!(sample("security", "", "egress", "end"), Some(1), "{text}");
        assert_eq!(sample("unknown", "unknown", "unknown", "unknown"), Some(1));
    }

    #[test]
    fn the_drain_keeps_the_names_of_a_bounded_number_of_generations() {
        let mut drain = LogDrain::new(Arc::default());
        for g in 0..20 {
            drain.learn(g, &[]);
            drain.learn(g, &[]);
        }
        assert_eq!(drain.names.len(), NAMED_GENERATIONS);
        assert_eq!(
            drain.names.front().map(|n| n.0),
            Some(20 - NAMED_GENERATIONS as u64)
        );
    }
}
