//! The policy benchmark: weir's compiled policy classifier on generated clusters of 10 to
//! 100k rules, beside a linear first-match scan of the same rules and DPDK's `rte_acl` on
//! the equivalent 5-tuple rule set deciding both directions, in the same run, on the same
//! core, its every answer checked against weir's.
//!
//! Results, for each rule count R (named `10`, `1k`, `10k`, `100k`):
//! - `policy_<R>_rules_classify_rate` (classifications/s) and `policy_<R>_rules_classify_ns`
//!   (ns per classification): weir's
//!   [`PolicyTables::evaluate`](weir_dataplane::policy::PolicyTables::evaluate) over the
//!   probe list, beside the best `rte_acl` algorithm classifying the same probes, both directions, against the
//!   flattened rules. `_classify_ns_vs_linear`: the same figure beside the linear scan.
//! - `policy_<R>_rules_build_ms`: `compile(&cluster)`, beside `rte_acl`'s build
//!   (`rte_acl_create`, `rte_acl_add_rules`, `rte_acl_build`, timed by the anchor itself);
//!   `_build_ms_vs_linear`: beside flattening the compiled policies into the linear list.
//! - `policy_<R>_rules_memory_mib`: the compiled tables, beside `rte_acl`'s runtime footprint
//!   as its build reports it; `_memory_mib_vs_linear`: beside the linear list.
//! - `policy_linear_<R>_rules_ns`: the linear scan itself, beside `rte_acl` (here a ratio
//!   above 1 means the linear scan beats DPDK, which it only does at tiny sizes).
//! - `policy_<R>_rules_established_ns`: a packet of an established flow, which the policy
//!   stage does not classify but finds in its connection table (a conntrack hit, up to
//!   16k allowed flows of the probes in a table of the workers' default size), beside
//!   weir's classification of a new flow.
//! - `policy_<R>_rules_node_...`: the same figures (but build time) for **one node's
//!   tables**: the busiest node's pods (about 50 at 1k rules and up), only their programs,
//!   the flattened rules that check them (egress from them, ingress to them), and the
//!   probes to or from them; `rte_acl` is fed those rules. The whole cluster on one core is
//!   the worst case; a node classifies this.
//! - `policy_slowdown_<Rmin>_to_<Rmax>_rules`: weir's ns per classification at the largest
//!   size over the smallest, round by round, beside the stated goal (at most 1.5).
//!
//! Without DPDK (`--no-dpdk`, or where its build is infeasible, which the notes then say),
//! the linear scan is the anchor of the classification figures and the DPDK-anchored build
//! and memory figures carry no anchor.
//!
//! Method:
//! - **A realistic cluster per size** ([`generate_cluster`], fixed seeds): about 20 rules per
//!   application namespace (one namespace at R = 10), each with a handful of pods labelled
//!   `app`/`tier`, whose containerPorts are partly named; pods are scheduled on random nodes
//!   and take addresses from their node's /26 block, as Calico's IPAM hands them out, so a
//!   namespace's pods are scattered over the pod range. Per namespace a mix of Kubernetes
//!   NetworkPolicies (default deny, peers by podSelector, namespaceSelector and ipBlock with
//!   except, ports with endPort ranges and named ports, egress with DNS) and weir.dev
//!   NetworkPolicies (Deny/Allow/Log/Pass rules, notNets, a `platform` tier that passes);
//!   plus GlobalNetworkPolicies in a `security` tier (deny to and from an external block
//!   list, deny SMTP, allow monitoring, Pass otherwise). "Rules" counts every ingress and
//!   egress rule of every policy, exactly R. Addresses: pods in 198.18.0.0–198.19.127.255,
//!   "external" peers in 198.19.128.0/17 (RFC 2544 benchmarking space).
//! - **Probes** ([`generate_probes`]): TCP (80%) and UDP 5-tuples from a source pod drawn
//!   uniformly: 72% to another pod of its namespace, 15% to any other pod, 8% from an
//!   external address to it instead, 5% to an external address; destination ports half drawn
//!   from the ports the rules name (named ports resolved), half uniformly. Endpoint ids are resolved beforehand, as the dataplane
//!   has them from its address lookup.
//! - **The linear scan** ([`flatten`]) is the same policy as plain first-match 5-tuple rules
//!   (one source interval, one destination interval, one port range each, protocol or any):
//!   every rule of every policy, its selected endpoints as the destination (ingress) or source
//!   (egress), the cross product of its address intervals and port options expanded, named
//!   ports expanded to one rule per (pod, port); a `Deny` rule for each tier that ends in
//!   Deny, over the endpoints the tier's policies select; `Pass` jumps past its tier's end. It
//!   is scanned once for the egress section and once for the ingress section per packet,
//!   which makes it compute exactly weir's verdicts for IPv4 TCP/UDP/SCTP (what the probes
//!   are): before timing, every probe the linear scan classifies is compared with weir's
//!   verdict, and a difference stops the benchmark ([`PolicyBenchError::WrongAnswer`]).
//!   A scan over a million rules takes a millisecond per packet, so it classifies a prefix of
//!   the probe list sized to about [`LINEAR_WORK`] rule visits per pass.
//! - **DPDK** (`acl.rs`): a small C program over `librte_acl` (`acl_harness.c`, built at
//!   run time with `cc` and `pkg-config libdpdk` from `dpdk-dev`; `dpdk-test-acl` cannot
//!   give each rule its own category, nor print its answers) classifies every probe in one
//!   `rte_acl_classify` call per burst of 64 with two categories: the egress section's rules
//!   in one, the ingress section's in the other, priority in section order so the first
//!   match of each wins. A Deny in either decides. `rte_acl` knows no `Pass` or `Log`, so
//!   they are compiled out ([`first_match_only`]): `Log` rules go, and a `Pass` rule becomes
//!   the rules after its tier narrowed to where it matches, then itself as `Allow`. Address
//!   intervals are split into CIDR prefixes. The first run at each size writes every
//!   answer, and one that differs from weir's verdict stops the benchmark
//!   ([`PolicyBenchError::WrongAnswer`]). Its figure is the fastest of its timed passes over
//!   the probes (generous to it); its build time is its own; its memory is the "total" of
//!   `rte_acl`'s runtime footprint log. The anchor is its best algorithm (`scalar`, `sse`,
//!   `avx2`, `avx512x16`, `avx512x32`: all run in the first round unless one run takes over
//!   [`ACL_ALL_ALGS_MAX`], and in later rounds while that fits [`ACL_BUDGET`] per size,
//!   otherwise only the fastest so far) and the others are listed in the notes. A build that
//!   fails, runs out of memory (its heap is capped at [`ACL_DATA_LIMIT_FRACTION`] of the
//!   available memory with `prlimit --data`), passes `--acl-timeout`, or would need more
//!   than [`ACL_PLAIN_RULES_MAX`] rules once `Pass` is compiled out is reported in the
//!   notes, not as a failure.
//! - **Same core, interleaved rounds.** The measuring thread and the anchor (`-l <cpu>`)
//!   run on the same CPU; each of `runs` rounds times weir, the linear scan and DPDK, so that
//!   noise on a shared VM hits all of them alike. weir's build time is `compile` once per
//!   round (within [`BUILD_BUDGET`]); its memory is the heap capacity of the tables (every
//!   program's tiers and rules, address sets, named-port sets, rule descriptions).
//!
//! The anchor runs with `--in-memory` on hugepages, which the benchmark reserves as root
//! (raising `/proc/sys/vm/nr_hugepages` and putting it back afterwards, also on error), or
//! with `--no-huge`, which the notes then say. Its file prefix and the work directory carry
//! the process id; the work files are removed afterwards unless `keep_files` asks to keep the
//! rule and trace files for `perf/anchors/acl.sh`.

mod acl;
mod generate;
mod linear;
mod measure;

pub use acl::{
    acl_verdict, build_harness, interval_prefixes, parse_acl_build_ms, parse_acl_memory,
    parse_acl_rate, write_acl_rules, write_acl_trace, ACL_ALL_ALGS_MAX, ACL_BUDGET,
    ACL_DATA_LIMIT_FRACTION, ACL_PLAIN_RULES_MAX,
};
pub use generate::{generate_cluster, generate_probes, GeneratedCluster, Probe};
pub use linear::{first_match_only, flatten, FlatAction, FlatRule, FlatRules, Tuple};
pub use measure::{BUILD_BUDGET, LINEAR_WORK};

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::report::BenchResult;

/// What to run.
#[derive(Debug, Clone)]
pub struct PolicyBenchConfig {
    /// Rule counts to measure, each on its own generated cluster.
    pub rules: Vec<usize>,
    /// Probe 5-tuples per timed pass (weir and DPDK; the linear scan takes a prefix).
    pub packets: usize,
    /// Interleaved rounds; figures are medians over them.
    pub runs: usize,
    /// The CPU the measuring thread and the `rte_acl` anchor run on; `None` leaves both
    /// unpinned (DPDK then uses CPU 0).
    pub cpu: Option<usize>,
    /// Whether to run the `rte_acl` anchor.
    pub dpdk: bool,
    /// Where the `rte_acl` anchor's program, rule, trace and answer files go (removed
    /// afterwards, and the directory too if the benchmark made it).
    pub workdir: PathBuf,
    /// How long one run of the `rte_acl` anchor (build and classification) may take.
    pub acl_timeout: Duration,
    /// Leave the `rte_acl` anchor's rule and trace files in `workdir` (for `anchors/acl.sh`).
    pub keep_files: bool,
}

impl Default for PolicyBenchConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        PolicyBenchConfig {
            rules: vec![10, 1_000, 10_000, 100_000],
            packets: 1_000_000,
            runs: 5,
            cpu: (cpus > 1).then_some(1),
            dpdk: true,
            workdir: std::env::temp_dir().join(format!("weir-bench-policy-{}", std::process::id())),
            acl_timeout: Duration::from_secs(120),
            keep_files: false,
        }
    }
}

/// Why the benchmark could not produce figures.
#[derive(Debug, thiserror::Error)]
pub enum PolicyBenchError {
    /// The DPDK anchor was asked for but what it is built with is missing.
    #[error("the DPDK anchor cannot run: {0}; or run with --no-dpdk")]
    DpdkMissing(#[from] crate::tools::Missing),
    /// The `rte_acl` anchor could not be built.
    #[error("the rte_acl anchor could not be built: {0}; or run with --no-dpdk")]
    Harness(String),
    /// The configuration cannot be run.
    #[error("invalid policy benchmark configuration: {0}")]
    Config(String),
    /// A file in the work directory could not be written or read, or a tool not started.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// weir's loader rejected the generated objects (a bug in the generator).
    #[error("the generated cluster does not load (a bug in the generator): {0}")]
    Generator(String),
    /// The measuring thread could not be pinned.
    #[error("could not pin the measuring thread to CPU {0}; choose another CPU or none")]
    Pin(usize),
    /// weir and the linear scan disagreed, or a timed pass changed its answers.
    #[error("wrong answers, so the figures would mean nothing: {0}")]
    WrongAnswer(String),
}

/// Runs the benchmark and returns its results and the notes a reader needs.
///
/// # Errors
/// See [`PolicyBenchError`]: when `cfg.dpdk` is set, DPDK's headers, `cc` or `pkg-config`
/// missing, or the anchor not building; a work directory that cannot be written, a CPU that
/// cannot be pinned, a generator bug, or wrong answers (weir's, the linear scan's or
/// `rte_acl`'s). An anchor run that fails or times out is a note, not an error.
pub fn run(cfg: &PolicyBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), PolicyBenchError> {
    if cfg.rules.is_empty() || cfg.rules.contains(&0) || cfg.packets == 0 || cfg.runs == 0 {
        return Err(PolicyBenchError::Config(format!(
            "rules ({:?}) must be a non-empty list of positive counts, packets ({}) and runs \
             ({}) at least 1",
            cfg.rules, cfg.packets, cfg.runs
        )));
    }
    if cfg.dpdk {
        for program in ["/usr/include/dpdk/rte_acl.h", "cc", "pkg-config"] {
            crate::tools::require(program)?;
        }
    }
    let made_workdir = cfg.dpdk && !cfg.keep_files && !cfg.workdir.exists();
    let acl_bin = if cfg.dpdk {
        std::fs::create_dir_all(&cfg.workdir).map_err(|e| io_error(&cfg.workdir, "creating", e))?;
        match acl::build_harness(&cfg.workdir) {
            Ok(bin) => Some(bin),
            Err(why) => {
                if made_workdir {
                    let _ = std::fs::remove_dir(&cfg.workdir);
                }
                return Err(PolicyBenchError::Harness(why));
            }
        }
    } else {
        None
    };
    let harness = acl_bin.clone();
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(id) = cfg.cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                    return Err(PolicyBenchError::Pin(id));
                }
            }
            measure::run_pinned(cfg, acl_bin)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    if let Some(bin) = harness {
        let _ = std::fs::remove_file(bin);
    }
    if made_workdir {
        let _ = std::fs::remove_dir(&cfg.workdir);
    }
    outcome
}

fn io_error(path: &Path, doing: &str, source: io::Error) -> PolicyBenchError {
    PolicyBenchError::Io {
        what: format!("{doing} {}", path.display()),
        source,
    }
}
