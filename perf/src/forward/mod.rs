//! The forwarding benchmark (`weir-bench forward`): real frames from a generator namespace
//! through a forwarder in a node namespace to a sink namespace, over veth pairs, with the
//! forwarder on one core and the traffic engine on another.
//!
//! Forwarders, each started and stopped in turn on the same veths ([`forwarders`]): weir
//! (the `weir agent` binary, one worker), weir with a policy of `rules` rules on the sink,
//! `dpdk-testpmd` io forwarding over `net_af_xdp` (the raw AF_XDP ceiling: it forwards without
//! looking at the frames), the kernel's IPv4 forwarding, and the kernel with an nftables
//! chain holding the same rules. And pod → world with source NAT: weir translating to the
//! node's address (`weir_snat`: uplink, default route learned from the kernel, an IPPool
//! with `natOutgoing`) beside the kernel's nftables `masquerade` (`kernel_masquerade`),
//! the sink's veth standing for the uplink and the sink checking that every frame left
//! with the node's address (`..._untranslated`, which must be 0).
//!
//! Per round, per forwarder, per frame size:
//! - **rate**: the engine sends as fast as it can for `seconds`; the figure is the frames per
//!   second that reached the sink, with the offered rate and the loss beside it. A loss
//!   under [`KEPT_UP_LOSS_PCT`] means the forwarder kept up and the generator was the
//!   bottleneck; the notes then say the figure is a lower bound.
//! - **latency at partial load**: the engine sends at `load` (0.5) × the rate that
//!   forwarder delivered in this round, paced in bursts of at most 64, and the sink records
//!   the one-way latency of every frame (send time in the payload, same clock and core):
//!   p50, p99 and p99.9.
//!
//! Frame sizes are Ethernet frames on the wire with their FCS, as in RFC 2544: 64 B is a
//! 60-byte frame in memory, 1500 B a 1496-byte one. Rounds interleave the forwarders so
//! that a noisy neighbour on a shared VM hits all of them alike; medians are reported.
//!
//! What veths do to the picture: a frame sent into a veth is processed by the receiving
//! side in the sender's softirq, on the sender's CPU. So the XDP redirect into the
//! forwarder's socket (weir, testpmd) runs on the generator's CPU, and the sink's XDP
//! receive of what the forwarder sends runs on the forwarder's. The kernel forwarder would
//! run entirely on the generator's CPU; RPS moves its receive processing to the
//! forwarder's CPU, so that every forwarder does its forwarding work on the same core.

pub mod forwarders;
pub mod lab;
pub mod traffic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::report::BenchResult;
use forwarders::{Kind, Running, Setup};
use lab::{Lab, GEN_IP};
use traffic::{Flow, Traffic, TrialSpec};

/// Loss (percent) under which a forwarder is taken to have kept up with the generator.
pub const KEPT_UP_LOSS_PCT: f64 = 1.0;

/// The goal the issue sets for weir's p99 latency at half load, in µs.
pub const P99_GOAL_US: f64 = 50.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct ForwardBenchConfig {
    /// Rounds; each figure is the median over them.
    pub runs: usize,
    /// Seconds per trial.
    pub seconds: f64,
    /// Frame sizes on the wire (with FCS), 64..=1518.
    pub sizes: Vec<usize>,
    /// Rules in the policy variants (0 leaves them out).
    pub rules: usize,
    /// The forwarder's CPU.
    pub cpu: usize,
    /// The traffic engine's CPU.
    pub gen_cpu: usize,
    /// The `weir` binary.
    pub weir: PathBuf,
    /// Run the dpdk-testpmd anchor.
    pub testpmd: bool,
    /// Run the kernel anchors.
    pub kernel: bool,
    /// Run the pod → world source NAT cases (weir, and the kernel's masquerade if
    /// `kernel`).
    pub snat: bool,
    /// Fraction of each forwarder's rate at which latency is measured.
    pub load: f64,
    /// UDP source ports the traffic cycles through.
    pub flows: u16,
    /// Scratch directory (removed afterwards).
    pub workdir: PathBuf,
}

/// The medians of one (forwarder, size) pair, kept per round.
#[derive(Debug, Default)]
struct Samples {
    mpps: Vec<f64>,
    offered_mpps: Vec<f64>,
    loss_pct: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    p999_us: Vec<f64>,
    load_loss_pct: Vec<f64>,
    /// Share of the generator's sending rounds that could not send all they wanted (no
    /// free frame, or a full TX ring): the forwarder held the generator back (veth
    /// completes a sent frame only when its copy is done with, which for the kernel is
    /// after forwarding), so it set the pace.
    stalled_pct: Vec<f64>,
    /// Frames that reached the sink with the generator's address where the node's was
    /// expected, over every trial of every round.
    untranslated: u64,
    /// Frames that reached the sink with another wrong source or a broken IPv4 header
    /// checksum, over every trial of every round.
    mangled: u64,
}

/// A hugetlbfs mount in the work directory for testpmd, unmounted on drop.
#[derive(Debug)]
struct HugeMount(PathBuf);

impl HugeMount {
    fn new(dir: PathBuf) -> Result<HugeMount, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.display().to_string();
        weir_testkit::lab::run(&[
            "mount",
            "-t",
            "hugetlbfs",
            "-o",
            "pagesize=2M",
            "nodev",
            &path,
        ])?;
        Ok(HugeMount(dir))
    }
}

impl Drop for HugeMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

/// Runs the benchmark; returns the results and notes for the report.
pub fn run(cfg: &ForwardBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), String> {
    if !weir_testkit::lab::is_root() {
        return Err("forward needs root (network namespaces, AF_XDP, XDP programs)".into());
    }
    if cfg.cpu == cfg.gen_cpu {
        return Err(format!(
            "the forwarder and the generator need different CPUs (both are {})",
            cfg.cpu
        ));
    }
    for &s in &cfg.sizes {
        if !(64..=1518).contains(&s) {
            return Err(format!("frame size {s} B is outside 64..=1518"));
        }
    }
    if cfg.runs == 0 || cfg.sizes.is_empty() || cfg.seconds.is_nan() || cfg.seconds <= 0.0 {
        return Err("nothing to measure: give at least one run, size and a duration".into());
    }
    std::fs::create_dir_all(&cfg.workdir).map_err(|e| format!("{}: {e}", cfg.workdir.display()))?;
    let _cleanup = RemoveDir(cfg.workdir.clone());
    let mut notes = Vec::new();
    // weir's UMEM (8 MiB), the engine's two (16 MiB) and testpmd's memory (512 MiB).
    let (_reservation, note) = match crate::dpdk::HugepageReservation::ensure(
        if cfg.testpmd { 560 } else { 48 },
        "weir's UMEM, the traffic engine and dpdk-testpmd",
    ) {
        Ok(r) => r,
        Err(e) => {
            notes.push(format!("no hugepages reserved ({e}): UMEMs on 4 KiB pages"));
            (None, None)
        }
    };
    notes.extend(note);
    let huge = if cfg.testpmd {
        match HugeMount::new(cfg.workdir.join("hugepages")) {
            Ok(m) => Some(m),
            Err(e) => {
                notes.push(format!(
                    "dpdk-testpmd ran with --no-huge (no hugetlbfs mount: {e})"
                ));
                None
            }
        }
    } else {
        None
    };
    let lab = Lab::create()?;
    if cfg.snat {
        lab.add_world()?;
    }
    let setup = Setup {
        cpu: cfg.cpu,
        gen_cpu: cfg.gen_cpu,
        weir: cfg.weir.clone(),
        workdir: cfg.workdir.clone(),
        huge_dir: huge.as_ref().map(|m| m.0.clone()),
    };
    let traffic = Traffic::start(
        &lab.gen,
        &lab.sink,
        cfg.gen_cpu,
        Flow {
            src_mac: lab.gen_mac,
            dst_mac: lab.gen_host_mac,
            src_ip: GEN_IP,
            flows: cfg.flows,
        },
    )?;
    let mut kinds = vec![Kind::Weir { rules: 0 }];
    if cfg.rules > 0 {
        kinds.push(Kind::Weir { rules: cfg.rules });
    }
    if cfg.testpmd {
        kinds.push(Kind::Testpmd);
    }
    if cfg.kernel {
        kinds.push(Kind::Kernel { rules: 0 });
        if cfg.rules > 0 {
            kinds.push(Kind::Kernel { rules: cfg.rules });
        }
    }
    if cfg.snat {
        kinds.push(Kind::WeirSnat);
        if cfg.kernel {
            kinds.push(Kind::KernelMasquerade);
        }
    }
    let duration = Duration::from_secs_f64(cfg.seconds);
    // No forwarder here moves more than 30 Mpps: a safe bound on every trial.
    let max_packets = (30e6 * cfg.seconds) as u64 + 1;
    let mut samples: BTreeMap<(String, usize), Samples> = BTreeMap::new();
    for round in 0..cfg.runs {
        for &kind in &kinds {
            crate::progress::step(&format!(
                "forward round {}/{}: {}",
                round + 1,
                cfg.runs,
                kind.label()
            ));
            let fwd = Running::start(kind, &lab, &setup)?;
            let target = kind.target();
            if !traffic.wait_for_path(target, cfg.sizes[0] - 4, Duration::from_secs(10))? {
                return Err(format!(
                    "{}: no frame reached the sink from {} within 10 s",
                    kind.label(),
                    target.sink_src
                ));
            }
            for &size in &cfg.sizes {
                let len = size - 4;
                let full = traffic.trial(TrialSpec {
                    target,
                    frame_len: len,
                    rate_pps: None,
                    duration,
                    max_packets,
                })?;
                let s = samples.entry((kind.label(), size)).or_default();
                s.mpps.push(full.delivered_pps() / 1e6);
                s.offered_mpps.push(full.offered_pps() / 1e6);
                s.loss_pct.push(full.loss_pct());
                s.stalled_pct.push(full.stalled_pct());
                s.untranslated += full.untranslated;
                s.mangled += full.mangled;
                if full.delivered == 0 {
                    return Err(format!(
                        "{} at {size} B: nothing delivered out of {} frames ({} untranslated, \
                         {} with a wrong source or header checksum)",
                        kind.label(),
                        full.sent,
                        full.untranslated,
                        full.mangled
                    ));
                }
                let paced = traffic.trial(TrialSpec {
                    target,
                    frame_len: len,
                    rate_pps: Some(full.delivered_pps() * cfg.load),
                    duration,
                    max_packets,
                })?;
                let h = &paced.latency_ns;
                if paced.delivered == 0 {
                    return Err(format!(
                        "{} at {size} B, {:.0}% load: nothing delivered",
                        kind.label(),
                        cfg.load * 100.0
                    ));
                }
                s.p50_us.push(h.value_at_quantile(0.5) as f64 / 1e3);
                s.p99_us.push(h.value_at_quantile(0.99) as f64 / 1e3);
                s.p999_us.push(h.value_at_quantile(0.999) as f64 / 1e3);
                s.load_loss_pct.push(paced.loss_pct());
                s.untranslated += paced.untranslated;
                s.mangled += paced.mangled;
            }
            fwd.stop()?;
        }
    }
    drop(traffic);
    drop(lab);
    let results = assemble(cfg, &kinds, &samples, &mut notes);
    notes.push(format!(
        "forwarder on CPU {}, traffic engine on CPU {}; {} s per trial; latency at {:.0}% of \
         each forwarder's own delivered rate; {} UDP flows; frame sizes include the FCS",
        cfg.cpu,
        cfg.gen_cpu,
        cfg.seconds,
        cfg.load * 100.0,
        cfg.flows
    ));
    if cfg.snat {
        notes.push(format!(
            "source NAT cases: the generator pod ({GEN_IP}, in an IPPool with natOutgoing) \
             sends to {} behind the node's default gateway; weir_snat is the agent with the \
             sink's veth as its uplink and the route and gateway MAC learned from the kernel, \
             kernel_masquerade the kernel's forwarding with an nftables masquerade rule; a frame \
             counts as delivered only if it reached the sink from the node's address {} with a \
             valid IPv4 header checksum",
            lab::WORLD_IP,
            lab::NODE_IP
        ));
    }
    if cfg.rules > 0 {
        notes.push(format!(
            "the {} rules: a NetworkPolicy on the sink for weir, the same rules in order in an \
             nftables forward chain for the kernel; the benchmark flow matches rule {} of {}",
            cfg.rules,
            cfg.rules / 2,
            cfg.rules
        ));
    }
    Ok((results, notes))
}

fn assemble(
    cfg: &ForwardBenchConfig,
    kinds: &[Kind],
    samples: &BTreeMap<(String, usize), Samples>,
    notes: &mut Vec<String>,
) -> Vec<BenchResult> {
    let median = |v: &[f64]| crate::report::median_min_max(v).0;
    let testpmd = Kind::Testpmd.label();
    let kernel = Kind::Kernel { rules: 0 }.label();
    let kernel_rules = Kind::Kernel { rules: cfg.rules }.label();
    let weir = Kind::Weir { rules: 0 }.label();
    let masquerade = Kind::KernelMasquerade.label();
    let mut out = Vec::new();
    for &size in &cfg.sizes {
        let get = |label: &str| samples.get(&(label.to_string(), size));
        let anchor_rate = |label: &str| get(label).map(|s| (label.to_string(), median(&s.mpps)));
        for kind in kinds {
            let label = kind.label();
            let Some(s) = get(&label) else { continue };
            let name = |what: &str| format!("forward_{size}B_{label}_{what}");
            let rate = BenchResult::from_samples(name("mpps"), "Mpps", s.mpps.clone());
            let mut paired = Vec::new();
            let rate = match kind {
                Kind::Weir { rules } => {
                    let plain_anchor = if *rules == 0 { &kernel } else { &kernel_rules };
                    if let Some((n, v)) = anchor_rate(plain_anchor) {
                        let vs = BenchResult::from_samples(
                            format!("{}_vs_{n}", name("mpps")),
                            "Mpps",
                            s.mpps.clone(),
                        )
                        .with_anchor(n, v);
                        paired.push(vs);
                    }
                    match anchor_rate(&testpmd) {
                        Some((n, v)) => rate.with_anchor(n, v),
                        None => rate,
                    }
                }
                Kind::WeirSnat => {
                    // The same case in the kernel is the anchor; plain weir says what the
                    // translation costs it.
                    if let Some((n, v)) = anchor_rate(&weir) {
                        paired.push(
                            BenchResult::from_samples(
                                format!("{}_vs_{n}", name("mpps")),
                                "Mpps",
                                s.mpps.clone(),
                            )
                            .with_anchor(n, v),
                        );
                    }
                    match anchor_rate(&masquerade) {
                        Some((n, v)) => rate.with_anchor(n, v),
                        None => rate,
                    }
                }
                _ => rate,
            };
            out.push(rate);
            out.extend(paired);
            out.push(BenchResult::from_samples(
                name("offered_mpps"),
                "Mpps",
                s.offered_mpps.clone(),
            ));
            out.push(BenchResult::from_samples(
                name("loss_pct"),
                "%",
                s.loss_pct.clone(),
            ));
            for (what, v) in [
                ("p50_us", &s.p50_us),
                ("p99_us", &s.p99_us),
                ("p999_us", &s.p999_us),
            ] {
                let r = BenchResult::from_samples(name(what), "us", v.clone());
                let anchor = match kind {
                    Kind::Weir { .. } => Some(&testpmd),
                    Kind::WeirSnat => Some(&masquerade),
                    _ => None,
                };
                let r = match anchor.and_then(|a| get(a).map(|t| (a, t))) {
                    Some((a, t)) => {
                        let tv = match what {
                            "p50_us" => &t.p50_us,
                            "p99_us" => &t.p99_us,
                            _ => &t.p999_us,
                        };
                        r.with_anchor(format!("{a}_{what}"), median(tv))
                    }
                    None => r,
                };
                out.push(r);
            }
            if kind.translates() {
                // Totals over every trial of every round, not medians: one untranslated
                // frame is a wrong answer.
                out.push(BenchResult::from_samples(
                    name("untranslated"),
                    "frames",
                    vec![s.untranslated as f64],
                ));
                if s.untranslated > 0 {
                    notes.push(format!(
                        "{label} at {size} B: {} frames reached the world with the pod's own \
                         address (untranslated)",
                        s.untranslated
                    ));
                }
            }
            if s.mangled > 0 {
                notes.push(format!(
                    "{label} at {size} B: {} frames reached the sink with a wrong source \
                     address or a broken IPv4 header checksum (not counted as delivered)",
                    s.mangled
                ));
            }
            if matches!(kind, Kind::Weir { .. } | Kind::WeirSnat) {
                out.push(
                    BenchResult::from_samples(name("p99_us_vs_goal"), "us", s.p99_us.clone())
                        .with_anchor("goal", P99_GOAL_US),
                );
            }
            let loss = median(&s.loss_pct);
            let stalled = median(&s.stalled_pct);
            if loss < KEPT_UP_LOSS_PCT && stalled < KEPT_UP_LOSS_PCT {
                notes.push(format!(
                    "{label} at {size} B lost {loss:.2}% of the generator's {:.3} Mpps: it kept \
                     up, so its rate is the generator's ceiling (a lower bound)",
                    median(&s.offered_mpps)
                ));
            } else if stalled >= KEPT_UP_LOSS_PCT {
                notes.push(format!(
                    "{label} at {size} B held the generator back ({stalled:.0}% of its sending \
                     rounds were short): it set the pace, so its rate is its own"
                ));
            }
            let load_loss = median(&s.load_loss_pct);
            if load_loss >= KEPT_UP_LOSS_PCT {
                notes.push(format!(
                    "{label} at {size} B lost {load_loss:.2}% at {:.0}% load",
                    cfg.load * 100.0
                ));
            }
        }
    }
    out
}

/// Removes the work directory on drop.
#[derive(Debug)]
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
