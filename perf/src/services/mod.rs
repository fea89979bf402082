//! The services benchmark (`weir-bench services`): weir replacing kube-proxy.
//!
//! 1. **Through a ClusterIP, real frames** ([`run_forward`]), in the lab of
//!    `weir-bench forward` (generator, node and sink namespaces, the same traffic engine on
//!    its own CPU, the forwarder on another): the generator pod sends UDP to a service's
//!    cluster IP, port 80; the forwarder translates it to the sink pod, port 9; the sink
//!    counts a frame as delivered only if it arrives from the generator, to the sink's
//!    address and port, with a valid header checksum. Forwarders, per service count
//!    (1 / 1k / 10k services × 10 endpoints, the target service having the sink alone):
//!    - `weir_svc_N`: the `weir agent` with the Services and EndpointSlices in its file
//!      datastore ([`datastore`]);
//!    - `kernel_nft_svc_N`: Linux forwarding with kube-proxy's nftables-mode ruleset for
//!      the same services ([`kube_proxy::nft_ruleset`]);
//!    - `kernel_ipt_svc_N`: the same with kube-proxy's iptables-mode rules through
//!      `iptables-legacy-restore` ([`kube_proxy::iptables_restore`]); with
//!      `iptables_nft`, also `kernel_iptnft_svc_N` through `iptables-nft-restore` (Debian's
//!      default `iptables`, which takes minutes to load 10k services × 10 endpoints: kept
//!      out of the default run so that it stays bounded);
//!
//!    and, once per round, plain `weir` and plain `kernel` forwarding straight to the sink
//!    (what the service costs each of them). Rounds interleave all of them.
//! 2. **The service stage in memory** ([`stage`]): ns per packet through the pipeline with
//!    10 / 1k / 10k services beside the same pipeline straight to the backend, established
//!    flows and first packets.
//!
//! The traffic is one-way UDP, as in `weir-bench forward`: for the kernel every packet of
//! a flow after the first finds its conntrack entry (NAT bound once per flow), but the
//! entry never sees a reply, so kube-proxy's `ct state new` filter checks run on every
//! packet; weir's conntrack keeps the translation the same way.

pub mod churn;
pub mod datastore;
pub mod kube_proxy;
pub mod model;
pub mod stage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::forward::forwarders::{Kind, KubeProxyMode, Running, Setup};
use crate::forward::lab::{Lab, GEN_IP};
use crate::forward::traffic::{Flow, Traffic, TrialSpec};
use crate::forward::KEPT_UP_LOSS_PCT;
use crate::report::BenchResult;

/// The goal for forwarding through a service: weir ≥ 3× the kernel in kube-proxy's
/// nftables mode.
pub const GOAL_VS_NFT: f64 = 3.0;

/// What the forwarding part runs.
#[derive(Debug, Clone)]
pub struct ServicesForwardConfig {
    /// Rounds; each figure is the median over them.
    pub runs: usize,
    /// Seconds per trial.
    pub seconds: f64,
    /// Frame size on the wire (with FCS).
    pub size: usize,
    /// Service counts.
    pub services: Vec<usize>,
    /// Endpoints of every service but the target.
    pub endpoints: usize,
    /// The forwarder's CPU.
    pub cpu: usize,
    /// The traffic engine's CPU.
    pub gen_cpu: usize,
    /// The `weir` binary.
    pub weir: PathBuf,
    /// Run weir through the services.
    pub weir_services: bool,
    /// Run the kernel with kube-proxy's rules.
    pub kernel: bool,
    /// Also kube-proxy's iptables mode, legacy backend (with `kernel`).
    pub iptables: bool,
    /// Also kube-proxy's iptables mode on the nf_tables backend (with `kernel`; slow to
    /// load at 10k services).
    pub iptables_nft: bool,
    /// Fraction of each forwarder's rate at which latency is measured (0: no latency
    /// trial).
    pub load: f64,
    /// UDP source ports the traffic cycles through.
    pub flows: u16,
    /// Scratch directory (removed afterwards).
    pub workdir: PathBuf,
}

#[derive(Debug, Default)]
struct Samples {
    mpps: Vec<f64>,
    offered_mpps: Vec<f64>,
    loss_pct: Vec<f64>,
    stalled_pct: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    load_seconds: Vec<f64>,
    /// Frames of the trial that reached the sink still addressed to the cluster IP, or
    /// with another wrong header, over every trial.
    wrong: u64,
}

/// Runs the forwarding part; returns the results and notes for the report.
pub fn run_forward(cfg: &ServicesForwardConfig) -> Result<(Vec<BenchResult>, Vec<String>), String> {
    if !weir_testkit::lab::is_root() {
        return Err("services needs root (network namespaces, AF_XDP, XDP programs)".into());
    }
    if cfg.cpu == cfg.gen_cpu {
        return Err(format!(
            "the forwarder and the generator need different CPUs (both are {})",
            cfg.cpu
        ));
    }
    if !(64..=1518).contains(&cfg.size) {
        return Err(format!("frame size {} B is outside 64..=1518", cfg.size));
    }
    if cfg.runs == 0 || cfg.seconds.is_nan() || cfg.seconds <= 0.0 {
        return Err("nothing to measure: give at least one run and a duration".into());
    }
    std::fs::create_dir_all(&cfg.workdir).map_err(|e| format!("{}: {e}", cfg.workdir.display()))?;
    let _cleanup = RemoveDir(cfg.workdir.clone());
    let mut notes = Vec::new();
    let (_reservation, note) =
        match crate::dpdk::HugepageReservation::ensure(48, "weir's UMEM and the traffic engine") {
            Ok(r) => r,
            Err(e) => {
                notes.push(format!("no hugepages reserved ({e}): UMEMs on 4 KiB pages"));
                (None, None)
            }
        };
    notes.extend(note);
    let lab = Lab::create()?;
    let setup = Setup {
        cpu: cfg.cpu,
        gen_cpu: cfg.gen_cpu,
        weir: cfg.weir.clone(),
        workdir: cfg.workdir.clone(),
        huge_dir: None,
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
    let kinds = kinds(cfg);
    let duration = Duration::from_secs_f64(cfg.seconds);
    let max_packets = (30e6 * cfg.seconds) as u64 + 1;
    let len = cfg.size - 4;
    let mut samples: BTreeMap<String, Samples> = BTreeMap::new();
    for round in 0..cfg.runs {
        for &kind in &kinds {
            crate::progress::step(&format!(
                "services round {}/{}: {}",
                round + 1,
                cfg.runs,
                kind.label()
            ));
            let fwd = Running::start(kind, &lab, &setup)?;
            let target = kind.target();
            // weir publishes the services after it starts forwarding: allow for a large
            // datastore.
            if !traffic.wait_for_path(target, len, Duration::from_secs(60))? {
                return Err(format!(
                    "{}: no frame reached the sink through {}:{} within 60 s",
                    kind.label(),
                    target.dst_ip,
                    target.dst_port
                ));
            }
            let s = samples.entry(kind.label()).or_default();
            if let Some(l) = fwd.load_seconds {
                s.load_seconds.push(l);
            }
            let full = traffic.trial(TrialSpec {
                target,
                frame_len: len,
                rate_pps: None,
                duration,
                max_packets,
            })?;
            s.mpps.push(full.delivered_pps() / 1e6);
            s.offered_mpps.push(full.offered_pps() / 1e6);
            s.loss_pct.push(full.loss_pct());
            s.stalled_pct.push(full.stalled_pct());
            s.wrong += full.untranslated + full.mangled;
            if full.delivered == 0 {
                return Err(format!(
                    "{}: nothing delivered out of {} frames ({} untranslated, {} mangled)",
                    kind.label(),
                    full.sent,
                    full.untranslated,
                    full.mangled
                ));
            }
            if cfg.load > 0.0 {
                let paced = traffic.trial(TrialSpec {
                    target,
                    frame_len: len,
                    rate_pps: Some(full.delivered_pps() * cfg.load),
                    duration,
                    max_packets,
                })?;
                if paced.delivered > 0 {
                    let h = &paced.latency_ns;
                    s.p50_us.push(h.value_at_quantile(0.5) as f64 / 1e3);
                    s.p99_us.push(h.value_at_quantile(0.99) as f64 / 1e3);
                }
                s.wrong += paced.untranslated + paced.mangled;
            }
            fwd.stop()?;
        }
    }
    drop(traffic);
    drop(lab);
    let results = assemble(cfg, &kinds, &samples, &mut notes);
    notes.push(format!(
        "forwarder on CPU {}, traffic engine on CPU {}; {} s per trial; {} B frames; {} UDP \
         flows (source ports) to the target service's cluster IP, UDP 80 → the sink pod's \
         port 9; every service but the target has {} endpoints (the target has the sink \
         alone, so that a kernel choosing at random sends everything to the sink)",
        cfg.cpu, cfg.gen_cpu, cfg.seconds, cfg.size, cfg.flows, cfg.endpoints
    ));
    notes.push(
        "kernel_nft_svc_*: kube-proxy's nftables-mode table `ip kube-proxy` (service-ips \
         verdict map, numgen vmap per service, dnat per endpoint chain); kernel_ipt_svc_*: \
         kube-proxy's iptables-mode KUBE-SERVICES / KUBE-SVC-* (statistic random) / \
         KUBE-SEP-* (DNAT) rules through iptables-legacy-restore (kernel_iptnft_svc_*: the \
         same through iptables-nft-restore); all on the kernel forwarding \
         of `weir-bench forward` (RPS to the forwarder's CPU); *_load_s: time to load the \
         ruleset"
            .into(),
    );
    notes.push(
        "one-way UDP: the kernel binds the NAT on a flow's first packet (the nat chains run \
         once per flow) and every later packet takes its conntrack entry; the entries never \
         see a reply, so kube-proxy's `ct state new` filter checks run on every packet"
            .into(),
    );
    Ok((results, notes))
}

/// The forwarders of one round, in order.
fn kinds(cfg: &ServicesForwardConfig) -> Vec<Kind> {
    let mut kinds = Vec::new();
    if cfg.kernel {
        kinds.push(Kind::Kernel { rules: 0 });
    }
    if cfg.weir_services {
        kinds.push(Kind::Weir { rules: 0 });
    }
    for &services in &cfg.services {
        let endpoints = cfg.endpoints;
        if cfg.kernel {
            kinds.push(Kind::KubeProxy {
                mode: KubeProxyMode::Nftables,
                services,
                endpoints,
            });
            if cfg.iptables {
                kinds.push(Kind::KubeProxy {
                    mode: KubeProxyMode::Iptables,
                    services,
                    endpoints,
                });
            }
            if cfg.iptables_nft {
                kinds.push(Kind::KubeProxy {
                    mode: KubeProxyMode::IptablesNft,
                    services,
                    endpoints,
                });
            }
        }
        if cfg.weir_services {
            kinds.push(Kind::WeirService {
                services,
                endpoints,
            });
        }
    }
    kinds
}

fn assemble(
    cfg: &ServicesForwardConfig,
    kinds: &[Kind],
    samples: &BTreeMap<String, Samples>,
    notes: &mut Vec<String>,
) -> Vec<BenchResult> {
    let median = |v: &[f64]| crate::report::median_min_max(v).0;
    let rate_of = |k: Kind| {
        samples
            .get(&k.label())
            .map(|s| (k.label(), median(&s.mpps)))
    };
    let mut out = Vec::new();
    for &kind in kinds {
        let label = kind.label();
        let Some(s) = samples.get(&label) else {
            continue;
        };
        let name = |what: &str| format!("services_{}B_{label}_{what}", cfg.size);
        let rate = BenchResult::from_samples(name("mpps"), "Mpps", s.mpps.clone());
        let mut extra = Vec::new();
        let rate = match kind {
            Kind::WeirService {
                services,
                endpoints,
            } => {
                let nft = rate_of(Kind::KubeProxy {
                    mode: KubeProxyMode::Nftables,
                    services,
                    endpoints,
                });
                for anchor in [
                    rate_of(Kind::KubeProxy {
                        mode: KubeProxyMode::Iptables,
                        services,
                        endpoints,
                    }),
                    rate_of(Kind::KubeProxy {
                        mode: KubeProxyMode::IptablesNft,
                        services,
                        endpoints,
                    }),
                    rate_of(Kind::Weir { rules: 0 }),
                ]
                .into_iter()
                .flatten()
                {
                    extra.push(
                        BenchResult::from_samples(
                            format!("{}_vs_{}", name("mpps"), anchor.0),
                            "Mpps",
                            s.mpps.clone(),
                        )
                        .with_anchor(anchor.0, anchor.1),
                    );
                }
                if let Some((_, v)) = nft {
                    extra.push(
                        BenchResult::from_samples(
                            format!("{}_vs_nft_goal", name("mpps")),
                            "Mpps",
                            s.mpps.clone(),
                        )
                        .with_anchor(
                            format!("goal: {GOAL_VS_NFT}× kernel_nft (= {:.3})", GOAL_VS_NFT * v),
                            GOAL_VS_NFT * v,
                        ),
                    );
                }
                match nft {
                    Some((n, v)) => rate.with_anchor(n, v),
                    None => rate,
                }
            }
            Kind::KubeProxy { .. } => match rate_of(Kind::Kernel { rules: 0 }) {
                // Above 1 would mean the rules made the kernel faster: this says what they
                // cost it.
                Some((n, v)) => rate.with_anchor(n, v),
                None => rate,
            },
            _ => rate,
        };
        out.push(rate);
        out.extend(extra);
        out.push(BenchResult::from_samples(
            name("loss_pct"),
            "%",
            s.loss_pct.clone(),
        ));
        if !s.p50_us.is_empty() {
            out.push(BenchResult::from_samples(
                name("p50_us"),
                "us",
                s.p50_us.clone(),
            ));
            out.push(BenchResult::from_samples(
                name("p99_us"),
                "us",
                s.p99_us.clone(),
            ));
        }
        if !s.load_seconds.is_empty() {
            out.push(BenchResult::from_samples(
                name("load_s"),
                "s",
                s.load_seconds.clone(),
            ));
        }
        if s.wrong > 0 {
            notes.push(format!(
                "{label}: {} frames reached the sink untranslated or with a wrong header (not \
                 counted as delivered)",
                s.wrong
            ));
        }
        let loss = median(&s.loss_pct);
        let stalled = median(&s.stalled_pct);
        if loss < KEPT_UP_LOSS_PCT && stalled < KEPT_UP_LOSS_PCT {
            notes.push(format!(
                "{label} lost {loss:.2}% of the generator's {:.3} Mpps: it kept up, so its rate \
                 is the generator's ceiling (a lower bound)",
                median(&s.offered_mpps)
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ServicesForwardConfig {
        ServicesForwardConfig {
            runs: 1,
            seconds: 1.0,
            size: 64,
            services: vec![1, 1000],
            endpoints: 10,
            cpu: 1,
            gen_cpu: 0,
            weir: PathBuf::from("weir"),
            weir_services: true,
            kernel: true,
            iptables: true,
            iptables_nft: false,
            load: 0.0,
            flows: 16,
            workdir: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn every_round_runs_the_baselines_then_each_count_with_its_anchors() {
        let labels: Vec<String> = kinds(&cfg()).iter().map(Kind::label).collect();
        assert_eq!(
            labels,
            [
                "kernel",
                "weir",
                "kernel_nft_svc_1",
                "kernel_ipt_svc_1",
                "weir_svc_1",
                "kernel_nft_svc_1k",
                "kernel_ipt_svc_1k",
                "weir_svc_1k"
            ]
        );
        let k = Kind::WeirService {
            services: 1000,
            endpoints: 10,
        };
        let set = k.service_set().unwrap();
        let t = k.target();
        assert_eq!(t.dst_ip, set.target().cluster_ip);
        assert_eq!(t.dst_port, set.target().port);
        assert_eq!(
            set.target().endpoints,
            vec![(t.sink_dst, crate::forward::traffic::UDP_PORT)]
        );
    }

    #[test]
    fn weir_through_a_service_is_set_beside_kube_proxy_and_the_goal() {
        let c = cfg();
        let kinds = kinds(&c);
        let mut samples = BTreeMap::new();
        for k in &kinds {
            let v = match k {
                Kind::WeirService { .. } => 0.6,
                Kind::Weir { .. } => 0.7,
                Kind::KubeProxy {
                    mode: KubeProxyMode::Nftables,
                    ..
                } => 0.2,
                Kind::KubeProxy { .. } => 0.15,
                _ => 0.25,
            };
            samples.insert(
                k.label(),
                Samples {
                    mpps: vec![v],
                    offered_mpps: vec![1.0],
                    loss_pct: vec![10.0],
                    stalled_pct: vec![0.0],
                    ..Samples::default()
                },
            );
        }
        let mut notes = Vec::new();
        let out = assemble(&c, &kinds, &samples, &mut notes);
        let get = |n: &str| {
            out.iter()
                .find(|r| r.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        let r = get("services_64B_weir_svc_1k_mpps");
        assert_eq!(r.anchor.as_ref().unwrap().name, "kernel_nft_svc_1k");
        assert!((r.ratio.unwrap() - 3.0).abs() < 1e-9);
        let r = get("services_64B_weir_svc_1k_mpps_vs_kernel_ipt_svc_1k");
        assert!((r.ratio.unwrap() - 4.0).abs() < 1e-9);
        let r = get("services_64B_weir_svc_1k_mpps_vs_nft_goal");
        assert!((r.ratio.unwrap() - 1.0).abs() < 1e-9);
        let r = get("services_64B_kernel_nft_svc_1_mpps");
        assert_eq!(r.anchor.as_ref().unwrap().name, "kernel");
    }
}
