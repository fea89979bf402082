//! `weir-bench`: weir's benchmark harness. Every subcommand prints a human table, or with
//! `--json` one JSON object (see `weir_perf::report`). `weir-bench all` runs them all in
//! one go and writes the combined JSON, the plots and the generated section of
//! `perf/RESULTS.md` (see `weir_perf::combined`, `weir_perf::plots`,
//! `weir_perf::results_md`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use weir_perf::combined::{self, BenchRun, Combined, Outcome};
use weir_perf::forward::{self, ForwardBenchConfig};
use weir_perf::lpm::{self, LpmBenchConfig};
use weir_perf::pipeline::{self, PipelineBenchConfig};
use weir_perf::policy::{self, PolicyBenchConfig};
use weir_perf::report::{BenchResult, Machine, Report};
use weir_perf::wireguard::{self, WireGuardBenchConfig};
use weir_perf::{plots, progress, results_md};

#[global_allocator]
static GLOBAL: weir_perf::alloc::Counting<mimalloc::MiMalloc> =
    weir_perf::alloc::Counting(mimalloc::MiMalloc);

#[derive(Parser, Debug)]
#[command(
    name = "weir-bench",
    version,
    about = "weir's benchmark harness: every figure beside its anchor, measured in the same run"
)]
struct Cli {
    /// Print one JSON object instead of the table.
    #[arg(long, global = true)]
    json: bool,
    /// Measurement rounds per figure (the median is reported, with min and max)
    /// [default: 5; `all --quick`: 1 or 2 per benchmark].
    #[arg(long, global = true)]
    runs: Option<usize>,
    /// CPU to pin the measuring thread (and the anchors) to. Default: the last CPU.
    #[arg(long, global = true)]
    cpu: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The in-memory pipeline per core (64 B and 1500 B), then LPM lookups on 100k IPv4
    /// prefixes beside dpdk-test-fib and a naive trie.
    Pipeline {
        #[command(flatten)]
        lpm: LpmArgs,
        /// Seconds per pipeline measurement.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Flow counts of the policy case (established flows through an ingress policy,
        /// each a conntrack hit), comma-separated; 0 skips the case.
        #[arg(long, value_delimiter = ',', default_values_t = [1024, 65536])]
        policy_flows: Vec<usize>,
    },
    /// LPM lookups only.
    Lpm {
        #[command(flatten)]
        lpm: LpmArgs,
    },
    /// Real frames through one forwarder core: weir (plain and with a policy of --rules
    /// rules) beside dpdk-testpmd io forwarding over net_af_xdp and the kernel's forwarding
    /// (plain and with the same rules in nftables), and pod → world with source NAT (weir
    /// beside the kernel's nftables masquerade), on the same veths and core: rate
    /// delivered, loss, and latency at half load. Needs root.
    Forward {
        #[command(flatten)]
        forward: ForwardArgs,
    },
    /// The control plane at cluster scale through the fake API server: initial sync,
    /// event-to-snapshot latency over single changes beside a full recompute, snapshot
    /// build time, memory.
    Control {
        /// Pods in the generated cluster.
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// Kubernetes NetworkPolicies.
        #[arg(long, default_value_t = 5_000)]
        policies: usize,
        /// Namespaces.
        #[arg(long, default_value_t = 500)]
        namespaces: usize,
        /// Nodes the pods are spread over (default: one per 100 pods; at most 110 pods per
        /// node, kubelet's default maximum).
        #[arg(long)]
        nodes: Option<usize>,
        /// Single changes measured.
        #[arg(long, default_value_t = 1_000)]
        changes: usize,
        /// Pods created and deleted in the memory soak after the changes (0: none).
        #[arg(long, default_value_t = 10_000)]
        churn: usize,
    },
    /// Pod attachment through libcni: ADD to the first packet answered, for weir-cni
    /// beside Debian's bridge + host-local, pods created several at a time. Needs root.
    Attach {
        /// Pods timed per plugin.
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Pods created at once, one round of `--pods` per level (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = vec![10, 50])]
        parallel: Vec<usize>,
    },
    /// WireGuard per core, in memory: weir's seal path (the adjacency's peer, copy, seal,
    /// outer headers from the peer's template) beside the raw ring ChaCha20-Poly1305 seal
    /// and boringtun's encapsulate.
    Wireguard {
        /// Inner packet sizes in bytes, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [64, 512, 1420])]
        sizes: Vec<usize>,
        /// Seconds per figure per round.
        #[arg(long, default_value_t = 0.5)]
        seconds: f64,
        /// Skip part (b), end to end between two nodes (it needs root).
        #[arg(long)]
        no_e2e: bool,
        /// Seconds per end-to-end iperf3 run.
        #[arg(long, default_value_t = 5)]
        e2e_seconds: u32,
        /// The weir binary for part (b) (default: `weir` beside this program).
        #[arg(long)]
        weir: Option<PathBuf>,
    },
    /// Policy classification on generated clusters of 10 to 100k rules, beside a linear scan
    /// of the same rules and rte_acl on the equivalent 5-tuple rules (both directions, every
    /// answer checked); build time and memory too.
    Policy {
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// weir replacing kube-proxy: the service stage in memory at 10 to 10k services beside
    /// the same pipeline straight to the backend (established flows and first packets),
    /// then real frames through a ClusterIP on one core, weir beside the kernel with
    /// kube-proxy's nftables-mode and iptables-mode rules for the same services. The
    /// forwarding part needs root.
    Services {
        #[command(flatten)]
        services: ServicesArgs,
    },
    /// Every benchmark with its anchors, in order: pipeline (with LPM), policy, forward,
    /// services, wireguard (with end to end), control, attach. Writes the combined JSON to
    /// `<out-dir>/results/<date>-<host>.json`, the plots to `<out-dir>/plots/`, and (not
    /// with --quick) regenerates the marked section of `<out-dir>/RESULTS.md`. A benchmark
    /// that fails is reported with its error and the others still run; the exit status is
    /// then 1. Most benchmarks need root.
    All(AllArgs),
}

#[derive(clap::Args, Debug)]
struct AllArgs {
    /// Every benchmark with small parameters (about a minute in all, as root on 2 vCPUs);
    /// anchors still run beside each figure. Writes `<date>-<host>-quick.json` and
    /// `*-quick.svg`, never a full run's files, and leaves RESULTS.md alone.
    #[arg(long)]
    quick: bool,
    /// Directory for `results/` and `plots/` (and `RESULTS.md`, for a full run).
    #[arg(long, default_value = "perf")]
    out_dir: PathBuf,
    /// Benchmarks to leave out, comma-separated (pipeline, policy, forward, services,
    /// wireguard, control, attach). A skipped benchmark keeps its outcome from the file this run
    /// overwrites (same date, host and mode), if that has one: to rerun one benchmark
    /// alone, skip all the others.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// The markdown file whose generated section is rewritten [default:
    /// `<out-dir>/RESULTS.md`; none with --quick].
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct PolicyArgs {
    /// Rule counts to measure, comma-separated; each gets its own generated cluster.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 1_000, 10_000, 100_000])]
    rules: Vec<usize>,
    /// Probe 5-tuples per timed pass.
    #[arg(long, default_value_t = 1_000_000)]
    packets: usize,
    /// Skip the rte_acl anchor (the linear scan then anchors the classification).
    #[arg(long)]
    no_dpdk: bool,
    /// Directory for the rule and trace files shared with rte_acl.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Seconds one rte_acl run (build and classification) may take before it is
    /// killed and reported as infeasible.
    #[arg(long, default_value_t = 120)]
    acl_timeout: u64,
    /// Keep rte_acl's rule and trace files in the work directory (perf/anchors/acl.sh
    /// reruns DPDK on them by hand).
    #[arg(long)]
    keep_files: bool,
}

#[derive(clap::Args, Debug)]
struct ForwardArgs {
    /// Frame sizes on the wire (with FCS), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 1500])]
    sizes: Vec<usize>,
    /// Seconds per trial (each size is measured at full rate, then at --load).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Rules in the policy variants (0: none).
    #[arg(long, default_value_t = 1000)]
    rules: usize,
    /// Fraction of each forwarder's own rate at which latency is measured.
    #[arg(long, default_value_t = 0.5)]
    load: f64,
    /// UDP source ports the traffic cycles through.
    #[arg(long, default_value_t = 16)]
    flows: u16,
    /// CPU of the traffic engine (default: the first CPU that is not --cpu).
    #[arg(long)]
    gen_cpu: Option<usize>,
    /// The weir binary (default: `weir` beside this program).
    #[arg(long)]
    weir: Option<PathBuf>,
    /// Skip the dpdk-testpmd anchor.
    #[arg(long)]
    no_dpdk: bool,
    /// Skip the kernel anchors.
    #[arg(long)]
    no_kernel: bool,
    /// Skip the pod → world source NAT cases (weir_snat, kernel_masquerade).
    #[arg(long)]
    no_snat: bool,
}

#[derive(clap::Args, Debug)]
struct ServicesArgs {
    /// Service counts of the forwarding part (× --endpoints each), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 1_000, 10_000])]
    services: Vec<usize>,
    /// Service counts of the in-memory part, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 1_000, 10_000])]
    stage_services: Vec<usize>,
    /// Endpoints per service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Seconds per forwarding trial.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Seconds per in-memory measurement.
    #[arg(long, default_value_t = 0.5)]
    stage_seconds: f64,
    /// Cases of the in-memory part, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [weir_perf::services::stage::Case::Established, weir_perf::services::stage::Case::First])]
    stage_cases: Vec<weir_perf::services::stage::Case>,
    /// Frame size on the wire (with FCS).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Fraction of each forwarder's own rate at which latency is measured (0: none).
    #[arg(long, default_value_t = 0.5)]
    load: f64,
    /// UDP source ports the traffic cycles through.
    #[arg(long, default_value_t = 16)]
    flows: u16,
    /// CPU of the traffic engine (default: the first CPU that is not --cpu).
    #[arg(long)]
    gen_cpu: Option<usize>,
    /// The weir binary (default: `weir` beside this program).
    #[arg(long)]
    weir: Option<PathBuf>,
    /// Services of the churn part (one EndpointSlice change at a time, in the agent's
    /// service table; 0 skips it).
    #[arg(long, default_value_t = 10_000)]
    churn_services: usize,
    /// Changes per round of the churn part.
    #[arg(long, default_value_t = 200)]
    churn_changes: usize,
    /// Skip the in-memory part.
    #[arg(long)]
    no_stage: bool,
    /// Skip the forwarding part (the one that needs root).
    #[arg(long)]
    no_forward: bool,
    /// Skip weir in the forwarding part (the kernel anchors alone).
    #[arg(long)]
    no_weir: bool,
    /// Skip kube-proxy's iptables mode (legacy backend).
    #[arg(long)]
    no_iptables: bool,
    /// Also run kube-proxy's iptables mode on the nf_tables backend (iptables-nft-restore,
    /// which takes minutes to load 10k services × 10 endpoints).
    #[arg(long)]
    iptables_nft: bool,
}

#[derive(clap::Args, Debug)]
struct LpmArgs {
    /// Number of routes in the table.
    #[arg(long, default_value_t = 100_000)]
    routes: usize,
    /// Lookups per measurement.
    #[arg(long, default_value_t = 10_000_000)]
    lookups: usize,
    /// Skip the dpdk-test-fib anchor (the results then carry no DPDK ratio).
    #[arg(long)]
    no_dpdk: bool,
    /// Directory for route and address files shared with dpdk-test-fib.
    #[arg(long)]
    workdir: Option<PathBuf>,
}

/// Rounds per figure when `--runs` is not given.
const DEFAULT_RUNS: usize = 5;

/// One benchmark of `weir-bench all`, with the arguments of its `--quick` run.
struct SuiteEntry {
    name: &'static str,
    quick_args: &'static [&'static str],
    quick_runs: usize,
}

/// What `weir-bench all` runs, in this order. The quick parameters keep the whole suite
/// near a minute on 2 vCPUs: short measurements, small clusters, few pods, one or two
/// rounds.
const SUITE: [SuiteEntry; 7] = [
    SuiteEntry {
        name: "pipeline",
        quick_args: &[
            "--seconds",
            "0.2",
            "--routes",
            "20000",
            "--lookups",
            "1000000",
        ],
        quick_runs: 2,
    },
    SuiteEntry {
        name: "policy",
        quick_args: &["--rules", "10,1000", "--packets", "100000"],
        quick_runs: 2,
    },
    SuiteEntry {
        name: "forward",
        quick_args: &["--seconds", "0.5"],
        quick_runs: 1,
    },
    SuiteEntry {
        name: "services",
        quick_args: &[
            "--services",
            "1,1000",
            "--stage-services",
            "10,1000",
            "--seconds",
            "0.5",
            "--stage-seconds",
            "0.1",
            "--churn-services",
            "1000",
            "--churn-changes",
            "20",
            "--load",
            "0",
        ],
        quick_runs: 1,
    },
    SuiteEntry {
        name: "wireguard",
        quick_args: &[
            "--sizes",
            "64,512,1420",
            "--seconds",
            "0.1",
            "--e2e-seconds",
            "1",
        ],
        quick_runs: 2,
    },
    SuiteEntry {
        name: "control",
        quick_args: &[
            "--pods",
            "1000",
            "--policies",
            "500",
            "--namespaces",
            "50",
            "--changes",
            "100",
            "--churn",
            "1000",
        ],
        quick_runs: 2,
    },
    SuiteEntry {
        name: "attach",
        quick_args: &["--pods", "10", "--parallel", "5,10"],
        quick_runs: 1,
    },
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cli.cpu.unwrap_or(cpus - 1);
    if cpu >= cpus {
        eprintln!(
            "weir-bench: --cpu {cpu} does not exist (this machine has CPUs 0..{})",
            cpus - 1
        );
        return ExitCode::from(2);
    }
    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    if !pinned {
        eprintln!("weir-bench: could not pin to CPU {cpu}; figures will be noisier");
    }
    let place = Placement { cpu, pinned };
    if let Command::All(args) = &cli.command {
        return run_all(&cli, args, place);
    }
    let runs = cli.runs.unwrap_or(DEFAULT_RUNS);
    match build_report(&cli.command, runs, place) {
        Ok(report) => {
            if cli.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(e)) => {
            eprintln!("weir-bench: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Bench(e)) => {
            eprintln!("weir-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The CPU the measuring thread runs on, and whether pinning it there worked.
#[derive(Debug, Clone, Copy)]
struct Placement {
    cpu: usize,
    pinned: bool,
}

/// Why a benchmark has no report.
#[derive(Debug)]
enum Failure {
    /// Its arguments were wrong (exit status 2).
    Usage(String),
    /// It could not run or stopped with an error (exit status 1).
    Bench(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(e) | Failure::Bench(e) => f.write_str(e),
        }
    }
}

/// Runs the benchmark `command` names with its arguments and returns its report: the one
/// place both the subcommands and `all` build reports.
fn build_report(command: &Command, runs: usize, place: Placement) -> Result<Report, Failure> {
    let mut notes = vec![format!("medians of {runs} runs (rounds)")];
    let (bench, results) = match command {
        Command::Pipeline {
            lpm,
            seconds,
            policy_flows,
        } => {
            let mut results = pipeline_results(*seconds, policy_flows, runs, &mut notes);
            results.extend(lpm_results(lpm, runs, place, &mut notes)?);
            ("pipeline", results)
        }
        Command::Lpm { lpm } => ("lpm", lpm_results(lpm, runs, place, &mut notes)?),
        Command::Forward { forward: args } => {
            ("forward", forward_results(args, runs, place, &mut notes)?)
        }
        Command::Services { services: args } => {
            ("services", services_results(args, runs, place, &mut notes)?)
        }
        Command::Control {
            pods,
            policies,
            namespaces,
            nodes,
            changes,
            churn,
        } => {
            progress::step(
                "control: loading the fake API server, then syncing and changing one object at a time",
            );
            let cfg = weir_perf::control::ControlBenchConfig {
                pods: *pods,
                policies: *policies,
                namespaces: (*namespaces).max(1),
                nodes: nodes.unwrap_or_else(|| weir_perf::control::default_nodes(*pods)),
                changes: *changes,
                churn: *churn,
                runs,
                ..weir_perf::control::ControlBenchConfig::default()
            };
            ("control", take(weir_perf::control::run(&cfg), &mut notes)?)
        }
        Command::Attach { pods, parallel } => {
            progress::step("attach: weir-cni then bridge + host-local, through libcni");
            let cfg = weir_perf::attach::AttachBenchConfig {
                pods: *pods,
                parallel: parallel.clone(),
                weir: sibling("weir"),
                plugin_dir: sibling("weir-cni")
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                workdir: temp_dir("weir-bench-attach"),
            };
            let outcome = weir_perf::attach::run(&cfg);
            let _ = std::fs::remove_dir_all(&cfg.workdir);
            ("attach", take(outcome, &mut notes)?)
        }
        Command::Wireguard {
            sizes,
            seconds,
            no_e2e,
            e2e_seconds,
            weir,
        } => {
            if sizes.iter().any(|&s| !(20..=1440).contains(&s))
                || seconds.is_nan()
                || *seconds <= 0.0
            {
                return Err(Failure::Usage(
                    "sizes must be 20..=1440 bytes and --seconds positive".into(),
                ));
            }
            progress::step("wireguard: handshakes, then weir, ring and boringtun per size");
            let cfg = WireGuardBenchConfig {
                runs,
                sizes: sizes.clone(),
                duration: Duration::from_secs_f64(*seconds),
            };
            let mut results = take(wireguard::run(&cfg), &mut notes)?;
            if !*no_e2e {
                progress::step(
                    "wireguard: end to end between two nodes (weir on, off, wireguard-go)",
                );
                let cfg = weir_perf::wireguard_e2e::E2eConfig {
                    runs,
                    seconds: *e2e_seconds,
                    weir: weir.clone().unwrap_or_else(|| sibling("weir")),
                    cpus: [other_cpu(place.cpu), place.cpu],
                    workdir: temp_dir("weir-bench-wg"),
                };
                let outcome = weir_perf::wireguard_e2e::run(&cfg);
                let _ = std::fs::remove_dir_all(&cfg.workdir);
                results.extend(take(outcome, &mut notes)?);
            }
            ("wireguard", results)
        }
        Command::Policy { policy: args } => {
            progress::step("policy: generating clusters, compiling, running anchors");
            let cfg = PolicyBenchConfig {
                rules: args.rules.clone(),
                packets: args.packets,
                runs,
                cpu: Some(place.cpu),
                dpdk: !args.no_dpdk,
                workdir: args
                    .workdir
                    .clone()
                    .unwrap_or_else(|| temp_dir("weir-bench")),
                acl_timeout: Duration::from_secs(args.acl_timeout),
                keep_files: args.keep_files,
            };
            ("policy", take(policy::run(&cfg), &mut notes)?)
        }
        Command::All(_) => {
            return Err(Failure::Usage(
                "`all` runs the other benchmarks; it is not one itself".into(),
            ))
        }
    };
    Ok(Report {
        bench: bench.to_string(),
        machine: Machine::detect(place.pinned.then_some(place.cpu)),
        results,
        notes,
    })
}

fn pipeline_results(
    seconds: f64,
    policy_flows: &[usize],
    runs: usize,
    notes: &mut Vec<String>,
) -> Vec<BenchResult> {
    progress::step("pipeline: 64 B and 1500 B frames, then established flows through policy");
    let cfg = PipelineBenchConfig {
        runs,
        duration: Duration::from_secs_f64(seconds),
        policy_flows: policy_flows.iter().copied().filter(|&f| f > 0).collect(),
        ..Default::default()
    };
    notes.push(
        "pipeline figures include the harness (header refresh, batch push/drain); harness_only_* shows that share".into(),
    );
    if !cfg.policy_flows.is_empty() {
        notes.push(
            "pipeline_policy_<F>_flows_*: 64 B frames of F UDP flows through a node whose pods admit UDP 5201 by ingress policy (every timed packet a conntrack hit, checked, but for flows the table evicted: a full probe window, rare at 64k flows in the default table), beside pipeline_<F>_flows_ns, the same frames without policy, round by round; *_cost_ns is the difference per round".into(),
        );
    }
    let mut results = pipeline::run(&cfg);
    progress::step("pipeline: flows kept on one worker (steering), two in-memory workers");
    notes.push(
        "steer_* is both workers' work per packet on one core, injection copy included (see perf/src/steer.rs)".into(),
    );
    results.extend(weir_perf::steer::run(runs, cfg.duration));
    results
}

fn lpm_results(
    args: &LpmArgs,
    runs: usize,
    place: Placement,
    notes: &mut Vec<String>,
) -> Result<Vec<BenchResult>, Failure> {
    progress::step("lpm: building tables and running anchors");
    let cfg = LpmBenchConfig {
        routes: args.routes,
        lookups: args.lookups,
        runs,
        cpu: Some(place.cpu),
        dpdk: !args.no_dpdk,
        workdir: args
            .workdir
            .clone()
            .unwrap_or_else(|| temp_dir("weir-bench")),
    };
    take(lpm::run(&cfg), notes)
}

fn forward_results(
    args: &ForwardArgs,
    runs: usize,
    place: Placement,
    notes: &mut Vec<String>,
) -> Result<Vec<BenchResult>, Failure> {
    progress::step("forward: building the namespaces, starting the traffic engine");
    let cfg = ForwardBenchConfig {
        runs,
        seconds: args.seconds,
        sizes: args.sizes.clone(),
        rules: args.rules,
        cpu: place.cpu,
        gen_cpu: args.gen_cpu.unwrap_or(other_cpu(place.cpu)),
        weir: args.weir.clone().unwrap_or_else(|| sibling("weir")),
        testpmd: !args.no_dpdk,
        kernel: !args.no_kernel,
        snat: !args.no_snat,
        load: args.load,
        flows: args.flows,
        workdir: temp_dir("weir-bench-forward"),
    };
    take(forward::run(&cfg), notes)
}

fn services_results(
    args: &ServicesArgs,
    runs: usize,
    place: Placement,
    notes: &mut Vec<String>,
) -> Result<Vec<BenchResult>, Failure> {
    if args.stage_seconds.is_nan() || args.stage_seconds <= 0.0 {
        return Err(Failure::Usage("--stage-seconds must be positive".into()));
    }
    let mut results = Vec::new();
    if !args.no_stage {
        progress::step("services: the service stage in memory");
        let cfg = weir_perf::services::stage::StageBenchConfig {
            runs,
            duration: Duration::from_secs_f64(args.stage_seconds),
            services: args.stage_services.clone(),
            cases: args.stage_cases.clone(),
            endpoints: args.endpoints,
            frame_len: args.size.clamp(64, 1518) - 4,
        };
        results.extend(take(weir_perf::services::stage::run(&cfg), notes)?);
    }
    if args.churn_services > 0 {
        progress::step("services: one EndpointSlice change at a time in the agent's table");
        let cfg = weir_perf::services::churn::ChurnBenchConfig {
            services: args.churn_services,
            endpoints: args.endpoints,
            changes: args.churn_changes,
            runs,
        };
        results.extend(take(weir_perf::services::churn::run(&cfg), notes)?);
    }
    if !args.no_forward {
        progress::step("services: building the namespaces, starting the traffic engine");
        let cfg = weir_perf::services::ServicesForwardConfig {
            runs,
            seconds: args.seconds,
            size: args.size,
            services: args.services.clone(),
            endpoints: args.endpoints,
            cpu: place.cpu,
            gen_cpu: args.gen_cpu.unwrap_or(other_cpu(place.cpu)),
            weir: args.weir.clone().unwrap_or_else(|| sibling("weir")),
            weir_services: !args.no_weir,
            kernel: true,
            iptables: !args.no_iptables,
            iptables_nft: args.iptables_nft,
            load: args.load,
            flows: args.flows,
            workdir: temp_dir("weir-bench-services"),
        };
        results.extend(take(weir_perf::services::run_forward(&cfg), notes)?);
    }
    Ok(results)
}

/// A benchmark's results, its notes added to `notes`; or its error.
fn take<E: std::fmt::Display>(
    outcome: Result<(Vec<BenchResult>, Vec<String>), E>,
    notes: &mut Vec<String>,
) -> Result<Vec<BenchResult>, Failure> {
    match outcome {
        Ok((results, n)) => {
            notes.extend(n);
            Ok(results)
        }
        Err(e) => Err(Failure::Bench(e.to_string())),
    }
}

/// `weir-bench all`: every benchmark of [`SUITE`], then the files.
fn run_all(cli: &Cli, args: &AllArgs, place: Placement) -> ExitCode {
    if let Some(unknown) = args
        .skip
        .iter()
        .find(|s| !SUITE.iter().any(|e| e.name == s.as_str()))
    {
        let names: Vec<&str> = SUITE.iter().map(|e| e.name).collect();
        eprintln!(
            "weir-bench: --skip {unknown}: no such benchmark (there are {})",
            names.join(", ")
        );
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let date = combined::utc_date(SystemTime::now());
    let machine = Machine::detect(place.pinned.then_some(place.cpu));
    let bar = ProgressBar::with_draw_target(Some(SUITE.len() as u64), ProgressDrawTarget::stderr());
    // Without a terminal (CI logs) the bar stays hidden and every step is a plain line.
    let plain = bar.is_hidden();
    if !plain {
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:20} {pos}/{len} {wide_msg}",
            )
            .expect("the progress template is valid"),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        let shown = bar.clone();
        progress::set_sink(Some(Box::new(move |what| {
            shown.set_message(what.to_string())
        })));
    }
    let say = |line: String| {
        if plain {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let mut benches = Vec::new();
    for (i, entry) in SUITE.iter().enumerate() {
        let argv = suite_argv(entry, cli, args.quick);
        let command = argv.join(" ");
        let counter = format!("[{}/{}]", i + 1, SUITE.len());
        bar.set_message(entry.name);
        if args.skip.iter().any(|s| s == entry.name) {
            say(format!("weir-bench all: {counter} {}: skipped", entry.name));
            benches.push(BenchRun {
                name: entry.name.to_string(),
                command,
                seconds: 0.0,
                kept_from_earlier_run: false,
                outcome: Outcome::Skipped,
            });
            bar.inc(1);
            continue;
        }
        if plain {
            eprintln!("weir-bench all: {counter} {}: `{command}` ...", entry.name);
        }
        let t = Instant::now();
        let outcome = match Cli::try_parse_from(&argv) {
            Ok(sub) => {
                let runs = sub.runs.unwrap_or(DEFAULT_RUNS);
                build_report(&sub.command, runs, place)
            }
            Err(e) => Err(Failure::Usage(e.to_string())),
        };
        let seconds = t.elapsed().as_secs_f64();
        let outcome = match outcome {
            Ok(report) => {
                say(format!(
                    "weir-bench all: {counter} {}: {} figures in {seconds:.1} s",
                    entry.name,
                    report.results.len()
                ));
                Outcome::Ok { report }
            }
            Err(e) => {
                say(format!(
                    "weir-bench all: {counter} {}: FAILED after {seconds:.1} s: {e}",
                    entry.name
                ));
                Outcome::Failed {
                    error: e.to_string(),
                }
            }
        };
        benches.push(BenchRun {
            name: entry.name.to_string(),
            command,
            seconds,
            kept_from_earlier_run: false,
            outcome,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    progress::set_sink(None);

    let host = combined::short_host(&machine.hostname);
    let mut run = Combined {
        date,
        quick: args.quick,
        machine,
        seconds: started.elapsed().as_secs_f64(),
        benches,
    };
    let json_path = args
        .out_dir
        .join("results")
        .join(combined::file_name(&run.date, &host, args.quick));
    if !args.skip.is_empty() {
        if let Some(earlier) = std::fs::read_to_string(&json_path)
            .ok()
            .and_then(|text| Combined::from_json(&text).ok())
        {
            run.keep_skipped_from(&earlier);
        }
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(&run).expect("a combined run serialises")
        );
    } else {
        print!("{}", combined_table(&run));
    }
    let written = write_outputs(&run, args, &json_path);
    let failed: Vec<&str> = run.failed().map(|b| b.name.as_str()).collect();
    eprintln!(
        "weir-bench all: {} benchmarks in {:.1} s{}",
        run.benches.len(),
        run.seconds,
        if failed.is_empty() {
            String::new()
        } else {
            format!("; FAILED: {}", failed.join(", "))
        }
    );
    if written && failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The command line that runs `entry` alone as `all` runs it.
fn suite_argv(entry: &SuiteEntry, cli: &Cli, quick: bool) -> Vec<String> {
    let mut argv = vec!["weir-bench".to_string(), entry.name.to_string()];
    if quick {
        argv.extend(entry.quick_args.iter().map(|a| a.to_string()));
    }
    let runs = cli.runs.or(quick.then_some(entry.quick_runs));
    if let Some(runs) = runs {
        argv.extend(["--runs".to_string(), runs.to_string()]);
    }
    if let Some(cpu) = cli.cpu {
        argv.extend(["--cpu".to_string(), cpu.to_string()]);
    }
    argv
}

/// Every report's table, or why there is none.
fn combined_table(run: &Combined) -> String {
    let mut out = String::new();
    for b in &run.benches {
        match &b.outcome {
            Outcome::Ok { report } => {
                out.push_str(&report.to_table());
                if b.kept_from_earlier_run {
                    out.push_str("note: skipped in this run, kept from the earlier run\n");
                }
            }
            Outcome::Failed { error } => {
                out.push_str(&format!("weir-bench {}: FAILED: {error}\n", b.name));
            }
            Outcome::Skipped => out.push_str(&format!("weir-bench {}: skipped\n", b.name)),
        }
        out.push('\n');
    }
    out
}

/// Writes the combined JSON, the plots and (if asked) the markdown section; reports each
/// file on stderr. Returns whether all were written.
fn write_outputs(run: &Combined, args: &AllArgs, json_path: &Path) -> bool {
    let mut ok = write_file(json_path, &run.to_json_pretty());
    let suffix = if run.quick { "-quick" } else { "" };
    let mut plot_paths = Vec::new();
    match plots::render(run) {
        Ok(files) => {
            for plot in files {
                let path = args
                    .out_dir
                    .join("plots")
                    .join(format!("{}{suffix}.svg", plot.stem));
                ok &= write_file(&path, &plot.svg);
                plot_paths.push((plot.title.to_string(), path));
            }
        }
        Err(e) => {
            eprintln!("weir-bench all: {e}");
            ok = false;
        }
    }
    let markdown = args
        .markdown
        .clone()
        .or_else(|| (!args.quick).then(|| args.out_dir.join("RESULTS.md")));
    if let Some(md) = markdown {
        let dir = match md.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let links = results_md::Links {
            json: results_md::relative_link(&dir, json_path),
            plots: plot_paths
                .iter()
                .map(|(title, path)| (title.clone(), results_md::relative_link(&dir, path)))
                .collect(),
        };
        let existing = std::fs::read_to_string(&md).unwrap_or_default();
        match results_md::splice(&existing, &results_md::section(run, &links)) {
            Ok(text) => ok &= write_file(&md, &text),
            Err(e) => {
                eprintln!("weir-bench all: {}: {e}", md.display());
                ok = false;
            }
        }
    }
    ok
}

/// Writes `text` to `path` (creating its directory) and says so on stderr; returns whether
/// it was written.
fn write_file(path: &Path, text: &str) -> bool {
    let outcome = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, text));
    match outcome {
        Ok(()) => {
            eprintln!("weir-bench all: wrote {}", path.display());
            true
        }
        Err(e) => {
            eprintln!("weir-bench all: cannot write {}: {e}", path.display());
            false
        }
    }
}

/// A program beside this one (`target/release/weir` beside `weir-bench`).
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A per-process directory under the system's temporary directory.
fn temp_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()))
}

/// The CPU the other side of a two-CPU benchmark runs on (traffic engine, second node).
fn other_cpu(cpu: usize) -> usize {
    if cpu == 0 {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_suite_entry_parses_as_its_own_subcommand_full_and_quick() {
        let all = cli(&["weir-bench", "all"]);
        for entry in &SUITE {
            for quick in [false, true] {
                let argv = suite_argv(entry, &all, quick);
                let sub = Cli::try_parse_from(&argv)
                    .unwrap_or_else(|e| panic!("{}: {argv:?}: {e}", entry.name));
                let name = Cli::command()
                    .try_get_matches_from(&argv)
                    .unwrap()
                    .subcommand_name()
                    .map(str::to_string);
                assert_eq!(name.as_deref(), Some(entry.name));
                let expected_runs = quick.then_some(entry.quick_runs);
                assert_eq!(sub.runs, expected_runs, "{argv:?}");
                assert_eq!(
                    argv.len() > 2,
                    quick,
                    "a full run takes the defaults: {argv:?}"
                );
            }
        }
    }

    #[test]
    fn runs_and_cpu_given_to_all_reach_every_benchmark() {
        let all = cli(&["weir-bench", "--runs", "3", "--cpu", "0", "all", "--quick"]);
        for entry in &SUITE {
            let argv = suite_argv(entry, &all, true);
            let sub = Cli::try_parse_from(&argv).unwrap();
            assert_eq!(sub.runs, Some(3), "{argv:?}");
            assert_eq!(sub.cpu, Some(0), "{argv:?}");
        }
    }

    #[test]
    fn the_suite_runs_every_benchmark_once_in_the_documented_order() {
        let names: Vec<&str> = SUITE.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "pipeline",
                "policy",
                "forward",
                "services",
                "wireguard",
                "control",
                "attach"
            ]
        );
    }

    #[test]
    fn all_is_not_a_benchmark_of_its_own() {
        let all = cli(&["weir-bench", "all"]);
        let place = Placement {
            cpu: 0,
            pinned: false,
        };
        assert!(matches!(
            build_report(&all.command, 1, place),
            Err(Failure::Usage(_))
        ));
    }
}
