//! `weir-bench`: weir's benchmark harness. Every subcommand prints a human table, or with
//! `--json` one JSON object (see `weir_perf::report`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use weir_perf::forward::{self, ForwardBenchConfig};
use weir_perf::lpm::{self, LpmBenchConfig};
use weir_perf::pipeline::{self, PipelineBenchConfig};
use weir_perf::policy::{self, PolicyBenchConfig};
use weir_perf::report::{BenchResult, Machine, Report};
use weir_perf::wireguard::{self, WireGuardBenchConfig};

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
    /// Measurement rounds per figure (the median is reported, with min and max).
    #[arg(long, global = true, default_value_t = 5)]
    runs: usize,
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
    },
    /// LPM lookups only.
    Lpm {
        #[command(flatten)]
        lpm: LpmArgs,
    },
    /// Real frames through one forwarder core: weir (plain and with a policy of --rules
    /// rules) beside dpdk-testpmd io forwarding over net_af_xdp and the kernel's forwarding
    /// (plain and with the same rules in nftables), on the same veths and core: rate
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
        /// Single changes measured.
        #[arg(long, default_value_t = 1_000)]
        changes: usize,
    },
    /// Pod attachment through libcni: ADD to the first packet answered, for weir-cni
    /// beside Debian's bridge + host-local, pods created several at a time. Needs root.
    Attach {
        /// Pods timed per plugin.
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Pods created at once.
        #[arg(long, default_value_t = 10)]
        parallel: usize,
    },
    /// WireGuard per core, in memory: weir's seal path (route to peer, copy, seal, outer
    /// headers) beside the raw ring ChaCha20-Poly1305 seal and boringtun's encapsulate.
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
    /// of the same rules and dpdk-test-acl on the equivalent 5-tuple rules; build time and
    /// memory too.
    Policy {
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

#[derive(clap::Args, Debug)]
struct PolicyArgs {
    /// Rule counts to measure, comma-separated; each gets its own generated cluster.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 1_000, 10_000, 100_000])]
    rules: Vec<usize>,
    /// Probe 5-tuples per timed pass.
    #[arg(long, default_value_t = 1_000_000)]
    packets: usize,
    /// Skip the dpdk-test-acl anchor (the linear scan then anchors the classification).
    #[arg(long)]
    no_dpdk: bool,
    /// Directory for the rule and trace files shared with dpdk-test-acl.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Seconds one dpdk-test-acl run (build and classification) may take before it is
    /// killed and reported as infeasible.
    #[arg(long, default_value_t = 120)]
    acl_timeout: u64,
    /// Keep dpdk-test-acl's rule and trace files in the work directory (perf/anchors/acl.sh
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
    let mut results = Vec::new();
    let mut notes = vec![format!("medians of {} runs (rounds)", cli.runs)];
    if let Command::Attach { pods, parallel } = &cli.command {
        progress("attach: weir-cni then bridge + host-local, through libcni");
        let cfg = weir_perf::attach::AttachBenchConfig {
            pods: *pods,
            parallel: *parallel,
            weir: sibling("weir"),
            plugin_dir: sibling("weir-cni")
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default(),
            workdir: std::env::temp_dir().join(format!("weir-bench-attach-{}", std::process::id())),
        };
        let outcome = weir_perf::attach::run(&cfg);
        let _ = std::fs::remove_dir_all(&cfg.workdir);
        if !take(outcome, &mut results, &mut notes) {
            return ExitCode::FAILURE;
        }
        return print_report("attach", pinned.then_some(cpu), results, notes, cli.json);
    }
    if let Command::Control {
        pods,
        policies,
        namespaces,
        changes,
    } = &cli.command
    {
        progress(
            "control: loading the fake API server, then syncing and changing one object at a time",
        );
        let cfg = weir_perf::control::ControlBenchConfig {
            pods: *pods,
            policies: *policies,
            namespaces: (*namespaces).max(1),
            changes: *changes,
            runs: cli.runs,
            ..weir_perf::control::ControlBenchConfig::default()
        };
        if !take(weir_perf::control::run(&cfg), &mut results, &mut notes) {
            return ExitCode::FAILURE;
        }
        return print_report("control", pinned.then_some(cpu), results, notes, cli.json);
    }
    if let Command::Wireguard {
        sizes,
        seconds,
        no_e2e,
        e2e_seconds,
        weir,
    } = &cli.command
    {
        progress("wireguard: handshakes, then weir, ring and boringtun per size");
        if sizes.iter().any(|&s| !(20..=1440).contains(&s)) || seconds.is_nan() || *seconds <= 0.0 {
            eprintln!("weir-bench: sizes must be 20..=1440 bytes and --seconds positive");
            return ExitCode::from(2);
        }
        let cfg = WireGuardBenchConfig {
            runs: cli.runs,
            sizes: sizes.clone(),
            duration: Duration::from_secs_f64(*seconds),
        };
        if !take(wireguard::run(&cfg), &mut results, &mut notes) {
            return ExitCode::FAILURE;
        }
        if !*no_e2e {
            progress("wireguard: end to end between two nodes (weir on, off, wireguard-go)");
            let cfg = weir_perf::wireguard_e2e::E2eConfig {
                runs: cli.runs,
                seconds: *e2e_seconds,
                weir: weir.clone().unwrap_or_else(|| sibling("weir")),
                cpus: [if cpu == 0 { 1 } else { 0 }, cpu],
                workdir: std::env::temp_dir().join(format!("weir-bench-wg-{}", std::process::id())),
            };
            let outcome = weir_perf::wireguard_e2e::run(&cfg);
            let _ = std::fs::remove_dir_all(&cfg.workdir);
            if !take(outcome, &mut results, &mut notes) {
                return ExitCode::FAILURE;
            }
        }
        return print_report("wireguard", pinned.then_some(cpu), results, notes, cli.json);
    }
    if let Command::Forward { forward: args } = &cli.command {
        progress("forward: building the namespaces, starting the traffic engine");
        let gen_cpu = args.gen_cpu.unwrap_or(if cpu == 0 { 1 } else { 0 });
        let weir = args.weir.clone().unwrap_or_else(|| sibling("weir"));
        let cfg = ForwardBenchConfig {
            runs: cli.runs,
            seconds: args.seconds,
            sizes: args.sizes.clone(),
            rules: args.rules,
            cpu,
            gen_cpu,
            weir,
            testpmd: !args.no_dpdk,
            kernel: !args.no_kernel,
            load: args.load,
            flows: args.flows,
            workdir: std::env::temp_dir()
                .join(format!("weir-bench-forward-{}", std::process::id())),
        };
        if !take(forward::run(&cfg), &mut results, &mut notes) {
            return ExitCode::FAILURE;
        }
        return print_report("forward", pinned.then_some(cpu), results, notes, cli.json);
    }
    if let Command::Policy { policy: args } = &cli.command {
        progress("policy: generating clusters, compiling, running anchors");
        let cfg = PolicyBenchConfig {
            rules: args.rules.clone(),
            packets: args.packets,
            runs: cli.runs,
            cpu: Some(cpu),
            dpdk: !args.no_dpdk,
            workdir: args.workdir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("weir-bench-{}", std::process::id()))
            }),
            acl_timeout: Duration::from_secs(args.acl_timeout),
            keep_files: args.keep_files,
        };
        if !take(policy::run(&cfg), &mut results, &mut notes) {
            return ExitCode::FAILURE;
        }
        return print_report("policy", pinned.then_some(cpu), results, notes, cli.json);
    }
    let (bench, lpm_args) = match &cli.command {
        Command::Pipeline { lpm, seconds } => {
            progress("pipeline: 64 B and 1500 B frames");
            let cfg = PipelineBenchConfig {
                runs: cli.runs,
                duration: Duration::from_secs_f64(*seconds),
                ..Default::default()
            };
            results.extend(pipeline::run(&cfg));
            notes.push(
                "pipeline figures include the harness (header refresh, batch push/drain); harness_only_* shows that share".into(),
            );
            ("pipeline", lpm)
        }
        Command::Lpm { lpm } => ("lpm", lpm),
        Command::Policy { .. }
        | Command::Forward { .. }
        | Command::Wireguard { .. }
        | Command::Control { .. }
        | Command::Attach { .. } => {
            unreachable!("handled above")
        }
    };
    progress("lpm: building tables and running anchors");
    let cfg = LpmBenchConfig {
        routes: lpm_args.routes,
        lookups: lpm_args.lookups,
        runs: cli.runs,
        cpu: Some(cpu),
        dpdk: !lpm_args.no_dpdk,
        workdir: lpm_args.workdir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("weir-bench-{}", std::process::id()))
        }),
    };
    if !take(lpm::run(&cfg), &mut results, &mut notes) {
        return ExitCode::FAILURE;
    }
    print_report(bench, pinned.then_some(cpu), results, notes, cli.json)
}

fn print_report(
    bench: &str,
    pinned_cpu: Option<usize>,
    results: Vec<BenchResult>,
    notes: Vec<String>,
    json: bool,
) -> ExitCode {
    let report = Report {
        bench: bench.to_string(),
        machine: Machine::detect(pinned_cpu),
        results,
        notes,
    };
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    ExitCode::SUCCESS
}

/// Adds a benchmark's results and notes to the report, or prints its error; returns
/// whether it ran.
fn take<E: std::fmt::Display>(
    outcome: Result<(Vec<BenchResult>, Vec<String>), E>,
    results: &mut Vec<BenchResult>,
    notes: &mut Vec<String>,
) -> bool {
    match outcome {
        Ok((r, n)) => {
            results.extend(r);
            notes.extend(n);
            true
        }
        Err(e) => {
            eprintln!("weir-bench: {e}");
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

/// Progress goes to stderr, so `--json` output on stdout stays one clean object.
fn progress(what: &str) {
    eprintln!("weir-bench: {what} ...");
}
