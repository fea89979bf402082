//! The policy benchmark: weir's compiled policy classifier on generated clusters of 10 to
//! 100k rules, beside a linear first-match scan of the same rules and `dpdk-test-acl`
//! (DPDK's `rte_acl`) on the equivalent 5-tuple rule set, in the same run, on the same core.
//!
//! Results, for each rule count R (named `10`, `1k`, `10k`, `100k`):
//! - `policy_<R>_rules_classify_rate` (classifications/s) and `policy_<R>_rules_classify_ns`
//!   (ns per classification): weir's [`PolicyTables::evaluate`] over the probe list, beside
//!   the best `dpdk-test-acl` algorithm classifying the same probes against the flattened
//!   rules. `_classify_ns_vs_linear`: the same figure beside the linear scan.
//! - `policy_<R>_rules_build_ms`: `compile(&cluster)`, beside `dpdk-test-acl`'s build (reading
//!   its rule file, `rte_acl_add_rules`, `rte_acl_build`); `_build_ms_vs_linear`: beside
//!   flattening the compiled policies into the linear list.
//! - `policy_<R>_rules_memory_mib`: the compiled tables, beside `rte_acl`'s runtime footprint
//!   as its build reports it; `_memory_mib_vs_linear`: beside the linear list.
//! - `policy_linear_<R>_rules_ns`: the linear scan itself, beside `dpdk-test-acl` (here a ratio
//!   above 1 means the linear scan beats DPDK, which it only does at tiny sizes).
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
//! - **DPDK** classifies the flattened list as one rule file (intervals split into CIDR
//!   prefixes, egress section first, priority in file order so the first match wins) and all
//!   the probes as its trace. It makes one lookup per packet over the whole set, where weir
//!   evaluates two programs (the source's egress and the destination's ingress), and where
//!   the linear scan walks two sections; the notes say how many rules each has. Its figure is
//!   the `pkt/sec` of its `search_ip5tuples` line; its build time is the time between the
//!   last configuration line it prints and `rte_acl_build(...) finished` (stdout line-buffered
//!   through `stdbuf`); its memory is the "total" of `rte_acl`'s runtime footprint log. The
//!   anchor is its best algorithm (`scalar`, `sse`, `avx2`, `avx512x16`, `avx512x32`: all
//!   run in the first round unless one run takes over [`ACL_ALL_ALGS_MAX`], and in later
//!   rounds while that fits [`ACL_BUDGET`] per size, otherwise only the fastest so far) and
//!   the others are listed in the notes. A build that fails, runs out of memory (its heap is
//!   capped at [`ACL_DATA_LIMIT_FRACTION`] of the available memory with `prlimit --data`) or
//!   passes `--acl-timeout` is reported in the notes, not as a failure.
//! - **Same core, interleaved rounds.** The measuring thread and `dpdk-test-acl` (`-l <cpu>`)
//!   run on the same CPU; each of `runs` rounds times weir, the linear scan and DPDK, so that
//!   noise on a shared VM hits all of them alike. weir's build time is `compile` once per
//!   round (within [`BUILD_BUDGET`]); its memory is the heap capacity of the tables (every
//!   program's tiers and rules, address sets, named-port sets, rule descriptions).
//!
//! `dpdk-test-acl` runs with `--in-memory` on hugepages, which the benchmark reserves as root
//! (raising `/proc/sys/vm/nr_hugepages` and putting it back afterwards, also on error), or
//! with `--no-huge`, which the notes then say. Its file prefix and the work directory carry
//! the process id; the work files are removed afterwards unless `keep_files` asks to keep the
//! rule and trace files for `perf/anchors/acl.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::hint::black_box;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use weir_control::policy::compile::{compile, Compiled};
use weir_control::policy::load::{Cluster, Object, Origin, Resource};
use weir_control::policy::model::{
    Action, ContainerPort, EntityRule, GlobalNetworkPolicy, K8sNetworkPolicy, K8sPeer, K8sPort,
    K8sRule, Namespace, NamespaceScope, NamespacedName, NetworkPolicy, Pod, PolicySpec,
    PolicyTypes, PortMatch, Protocol, Rule, Tier, TierDefaultAction, DEFAULT_TIER,
    NAMESPACE_NAME_LABEL,
};
use weir_control::policy::selector::{Labels, Selector};
use weir_dataplane::flow::FlowKey;
use weir_dataplane::policy::program::{Match, PortMatch as CompiledPorts};
use weir_dataplane::policy::{
    Action as CompiledAction, EndpointPolicy, NetSet, PolicyTables, Rule as CompiledRule, RuleInfo,
    Sets, Verdict,
};
use weir_dataplane::snapshot::EndpointId;

use crate::dpdk::{tail, HugepageReservation};
use crate::report::{count_label, median_min_max, BenchResult};
use crate::rng::SplitMix64;
use crate::tools::find_in_path;

/// What to run.
#[derive(Debug, Clone)]
pub struct PolicyBenchConfig {
    /// Rule counts to measure, each on its own generated cluster.
    pub rules: Vec<usize>,
    /// Probe 5-tuples per timed pass (weir and DPDK; the linear scan takes a prefix).
    pub packets: usize,
    /// Interleaved rounds; figures are medians over them.
    pub runs: usize,
    /// The CPU the measuring thread and `dpdk-test-acl` run on; `None` leaves both unpinned
    /// (DPDK then uses CPU 0).
    pub cpu: Option<usize>,
    /// Whether to run the `dpdk-test-acl` anchor.
    pub dpdk: bool,
    /// Where the rule and trace files for `dpdk-test-acl` go (removed afterwards, and the
    /// directory too if the benchmark made it).
    pub workdir: PathBuf,
    /// How long one `dpdk-test-acl` run (build and classification) may take.
    pub acl_timeout: Duration,
    /// Leave `dpdk-test-acl`'s rule and trace files in `workdir` (for `anchors/acl.sh`).
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
    /// The DPDK anchor was asked for but its tool is missing.
    #[error("the DPDK anchor cannot run: {0}; or run with --no-dpdk")]
    DpdkMissing(#[from] crate::tools::Missing),
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
/// See [`PolicyBenchError`]: a missing `dpdk-test-acl` when `cfg.dpdk` is set, a work
/// directory that cannot be written, a CPU that cannot be pinned, a generator bug, or wrong
/// answers. A `dpdk-test-acl` run that fails or times out is a note, not an error.
pub fn run(cfg: &PolicyBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), PolicyBenchError> {
    if cfg.rules.is_empty() || cfg.rules.contains(&0) || cfg.packets == 0 || cfg.runs == 0 {
        return Err(PolicyBenchError::Config(format!(
            "rules ({:?}) must be a non-empty list of positive counts, packets ({}) and runs \
             ({}) at least 1",
            cfg.rules, cfg.packets, cfg.runs
        )));
    }
    let acl_bin = if cfg.dpdk {
        Some(crate::tools::require("dpdk-test-acl")?)
    } else {
        None
    };
    let made_workdir = acl_bin.is_some() && !cfg.keep_files && !cfg.workdir.exists();
    if acl_bin.is_some() {
        std::fs::create_dir_all(&cfg.workdir).map_err(|e| io_error(&cfg.workdir, "creating", e))?;
    }
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(id) = cfg.cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                    return Err(PolicyBenchError::Pin(id));
                }
            }
            run_pinned(cfg, acl_bin)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    if made_workdir {
        let _ = std::fs::remove_dir(&cfg.workdir);
    }
    outcome
}

// ----------------------------------------------------------------------------------------
// The generated cluster
// ----------------------------------------------------------------------------------------

/// A generated cluster and what the probes need to know about it.
#[derive(Debug, Clone)]
pub struct GeneratedCluster {
    /// The objects, loaded and checked by weir's own loader.
    pub cluster: Cluster,
    /// Ingress plus egress rules over every policy (Kubernetes, weir.dev, global).
    pub rules: usize,
    /// Application namespaces (besides `kube-system`, `monitoring` and `ingress`).
    pub namespaces: usize,
    /// Pods, all with an IPv4 address.
    pub pods: usize,
    /// Nodes the pods were scheduled on.
    pub nodes: usize,
    /// Kubernetes NetworkPolicies, weir.dev NetworkPolicies, GlobalNetworkPolicies.
    pub policies: [usize; 3],
    /// The ports the rules name as (protocol, first, last), named ports resolved: where half
    /// of the probes aim.
    pub rule_ports: Vec<(u8, u16, u16)>,
    /// Each namespace's pods and their address (host order).
    pub pods_by_namespace: Vec<Vec<(NamespacedName, u32)>>,
}

/// Generates the cluster for `rules` rules (see the module doc for its shape).
///
/// # Errors
/// [`PolicyBenchError::Config`] if the pod range cannot hold the pods `rules` calls for
/// (several hundred thousand rules), [`PolicyBenchError::Generator`] if weir's loader
/// rejects the objects.
pub fn generate_cluster(rules: usize, seed: u64) -> Result<GeneratedCluster, PolicyBenchError> {
    Generator::new(rules, seed).run()
}

/// One probe: the flow key and the endpoints it goes between (`None`: outside the cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub key: FlowKey,
    pub src: Option<EndpointId>,
    pub dst: Option<EndpointId>,
}

/// `count` probes over a generated cluster (see the module doc for the mix).
///
/// # Panics
/// If a pod of `cluster` has no endpoint in `compiled` (they must come from the same
/// cluster).
pub fn generate_probes(
    cluster: &GeneratedCluster,
    compiled: &Compiled,
    count: usize,
    seed: u64,
) -> Vec<Probe> {
    let mut rng = SplitMix64(seed);
    let namespaces: Vec<Vec<(u32, EndpointId)>> = cluster
        .pods_by_namespace
        .iter()
        .map(|pods| {
            pods.iter()
                .map(|(name, addr)| {
                    let id = compiled
                        .endpoint(name)
                        .unwrap_or_else(|| panic!("pod {name} has no endpoint"));
                    (*addr, id)
                })
                .collect()
        })
        .collect();
    // Every pod with its namespace: a probe's source is a pod drawn uniformly, so traffic
    // follows where the pods are.
    let all: Vec<(usize, (u32, EndpointId))> = namespaces
        .iter()
        .enumerate()
        .flat_map(|(n, pods)| pods.iter().map(move |&p| (n, p)))
        .collect();
    let external = |rng: &mut SplitMix64| {
        EXTERNAL.0 + rng.below(u64::from(EXTERNAL.1 - EXTERNAL.0) + 1) as u32
    };
    let other = |rng: &mut SplitMix64, pods: &[(u32, EndpointId)], not: u32| loop {
        let p = *rng.pick(pods);
        if p.0 != not {
            break p;
        }
    };
    (0..count)
        .map(|_| {
            let kind = rng.below(100);
            let (n, from) = *rng.pick(&all);
            let (src, dst) = if kind < 72 && namespaces[n].len() >= 2 {
                (Some(from), Some(other(&mut rng, &namespaces[n], from.0)))
            } else if kind < 87 {
                let (_, to) = loop {
                    let to = *rng.pick(&all);
                    if to.1 .0 != from.0 {
                        break to;
                    }
                };
                (Some(from), Some(to))
            } else if kind < 95 {
                (None, Some(from))
            } else {
                (Some(from), None)
            };
            let (proto, dport) = if rng.chance(0.5) && !cluster.rule_ports.is_empty() {
                let &(proto, lo, hi) = rng.pick(&cluster.rule_ports);
                (proto, rng.range(u64::from(lo), u64::from(hi)) as u16)
            } else {
                let proto = if rng.chance(0.8) { 6 } else { 17 };
                (proto, rng.range(1, 65535) as u16)
            };
            let src_addr = src.map_or_else(|| external(&mut rng), |(a, _)| a);
            let dst_addr = dst.map_or_else(|| external(&mut rng), |(a, _)| a);
            Probe {
                key: FlowKey {
                    src: FlowKey::map_v4(src_addr.to_be_bytes()),
                    dst: FlowKey::map_v4(dst_addr.to_be_bytes()),
                    src_port: rng.range(32768, 60999) as u16,
                    dst_port: dport,
                    proto,
                },
                src: src.map(|(_, id)| id),
                dst: dst.map(|(_, id)| id),
            }
        })
        .collect()
}

// ----------------------------------------------------------------------------------------
// The flattened rule list (the linear scan and DPDK's rule file)
// ----------------------------------------------------------------------------------------

/// An IPv4 5-tuple, host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    /// The tuple of an IPv4 flow key; `None` for IPv6.
    pub fn of(key: &FlowKey) -> Option<Tuple> {
        if !key.is_v4() {
            return None;
        }
        let v4 = |a: &[u8; 16]| u32::from_be_bytes([a[12], a[13], a[14], a[15]]);
        Some(Tuple {
            src: v4(&key.src),
            dst: v4(&key.dst),
            sport: key.src_port,
            dport: key.dst_port,
            proto: key.proto,
        })
    }
}

/// What a flat rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlatAction {
    Allow,
    Deny,
    /// Continue with the next rule.
    Log,
    /// Continue at rule `next` (past the end of this rule's tier).
    Pass {
        next: u32,
    },
}

/// One 5-tuple rule: inclusive intervals and ranges; `proto` 0 is any protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlatRule {
    pub src: (u32, u32),
    pub dst: (u32, u32),
    pub sport: (u16, u16),
    pub dport: (u16, u16),
    pub proto: u8,
    pub action: FlatAction,
}

impl FlatRule {
    /// Whether `t` is inside every range of the rule.
    #[inline]
    pub fn matches(&self, t: &Tuple) -> bool {
        (self.proto == 0 || self.proto == t.proto)
            && self.src.0 <= t.src
            && t.src <= self.src.1
            && self.dst.0 <= t.dst
            && t.dst <= self.dst.1
            && self.sport.0 <= t.sport
            && t.sport <= self.sport.1
            && self.dport.0 <= t.dport
            && t.dport <= self.dport.1
    }
}

/// The whole policy as first-match 5-tuple rules, in two sections.
#[derive(Debug, Clone, Default)]
pub struct FlatRules {
    /// Every egress rule, guarded by its policy's selected endpoints as the source.
    pub egress: Vec<FlatRule>,
    /// Every ingress rule, guarded by its policy's selected endpoints as the destination.
    pub ingress: Vec<FlatRule>,
    /// Conditions the 5-tuple form cannot express and that were dropped (named ports in a
    /// `notPorts`): zero for generated clusters.
    pub inexact: usize,
}

impl FlatRules {
    /// Rules in both sections.
    pub fn len(&self) -> usize {
        self.egress.len() + self.ingress.len()
    }

    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes of the two sections.
    pub fn memory_bytes(&self) -> usize {
        (self.egress.capacity() + self.ingress.capacity()) * std::mem::size_of::<FlatRule>()
    }

    /// The verdict for `t`: the egress section first (a Deny there decides), then the
    /// ingress section; no match in a section allows, as after weir's last tier.
    #[inline]
    pub fn classify(&self, t: &Tuple) -> Verdict {
        if scan(&self.egress, t) == Verdict::Deny {
            return Verdict::Deny;
        }
        scan(&self.ingress, t)
    }
}

/// Flattens the compiled policies of `cluster` (see the module doc). The tiers' default
/// actions come from `cluster`; `compiled.policies` must be in evaluation order, as
/// [`compile`] returns them.
pub fn flatten(compiled: &Compiled, cluster: &Cluster) -> FlatRules {
    let mut flat = FlatRules::default();
    let sets = &compiled.tables.sets;
    // Named-port sets as (IPv4 address, protocol, port), sorted, to take each rule's
    // addresses by range rather than scanning the whole set.
    let named: Vec<Vec<(u32, u8, u16)>> = sets
        .named_ports
        .iter()
        .map(|set| {
            let mut v: Vec<(u32, u8, u16)> = set
                .iter()
                .filter(|(a, _, _)| a[..12] == FlowKey::map_v4([0; 4])[..12])
                .map(|(a, proto, port)| {
                    (
                        u32::from_be_bytes([a[12], a[13], a[14], a[15]]),
                        *proto,
                        *port,
                    )
                })
                .collect();
            v.sort_unstable();
            v
        })
        .collect();
    for ingress in [false, true] {
        let mut out = Vec::new();
        let mut i = 0;
        let policies = &compiled.policies;
        while i < policies.len() {
            let tier = &policies[i].tier;
            let end = i + policies[i..].iter().take_while(|p| &p.tier == tier).count();
            // The tier's end covers every endpoint one of its policies selects.
            let mut applied: Vec<(u32, u32)> = Vec::new();
            let mut passes = Vec::new();
            for p in &policies[i..end] {
                let rules = if ingress { &p.ingress } else { &p.egress };
                let Some(rules) = rules else { continue };
                applied.extend_from_slice(p.selected.v4_intervals());
                for rule in rules {
                    let first = out.len();
                    flat.inexact += expand(rule, &p.selected, ingress, sets, &named, &mut out);
                    if rule.action == CompiledAction::Pass {
                        passes.extend(first..out.len());
                    }
                }
            }
            let denies = cluster
                .tiers
                .get(tier)
                .is_none_or(|t| t.default_action == TierDefaultAction::Deny);
            if denies {
                for own in merge_intervals(applied) {
                    let (src, dst) = if ingress { (ANY, own) } else { (own, ANY) };
                    out.push(FlatRule {
                        src,
                        dst,
                        sport: ANY_PORT,
                        dport: ANY_PORT,
                        proto: 0,
                        action: FlatAction::Deny,
                    });
                }
            }
            let next = out.len() as u32;
            for r in passes {
                out[r].action = FlatAction::Pass { next };
            }
            i = end;
        }
        if ingress {
            flat.ingress = out;
        } else {
            flat.egress = out;
        }
    }
    flat
}

/// The CIDR prefixes that exactly cover `lo..=hi`, fewest first-to-last (at most 62).
pub fn interval_prefixes(lo: u32, hi: u32) -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    let (mut cur, end) = (u64::from(lo), u64::from(hi));
    while cur <= end {
        let mut bits = if cur == 0 {
            32
        } else {
            cur.trailing_zeros().min(32)
        };
        while cur + (1u64 << bits) - 1 > end {
            bits -= 1;
        }
        out.push((cur as u32, (32 - bits) as u8));
        cur += 1u64 << bits;
    }
    out
}

/// Writes the flattened rules as a `dpdk-test-acl` rule file (`@src/len dst/len splo : sphi
/// dplo : dphi proto/mask`), egress section first, each interval split into prefixes; returns
/// the number of lines. The file order is the priority order.
///
/// # Errors
/// If the file cannot be written.
pub fn write_acl_rules(path: &Path, flat: &FlatRules) -> io::Result<usize> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut lines = 0;
    for r in flat.egress.iter().chain(&flat.ingress) {
        let srcs = interval_prefixes(r.src.0, r.src.1);
        let dsts = interval_prefixes(r.dst.0, r.dst.1);
        let mask = if r.proto == 0 { 0 } else { 0xff };
        for &(s, sl) in &srcs {
            for &(d, dl) in &dsts {
                writeln!(
                    w,
                    "@{}/{sl} {}/{dl} {} : {} {} : {} 0x{:02x}/0x{mask:02x}",
                    Ipv4Addr::from(s),
                    Ipv4Addr::from(d),
                    r.sport.0,
                    r.sport.1,
                    r.dport.0,
                    r.dport.1,
                    r.proto
                )?;
                lines += 1;
            }
        }
    }
    w.flush()?;
    Ok(lines)
}

/// Writes probes as a `dpdk-test-acl` trace file: `src dst sport dport proto`, addresses as
/// host-order numbers. IPv6 probes are left out.
///
/// # Errors
/// If the file cannot be written.
pub fn write_acl_trace(path: &Path, probes: &[Probe]) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for t in probes.iter().filter_map(|p| Tuple::of(&p.key)) {
        writeln!(w, "{} {} {} {} {}", t.src, t.dst, t.sport, t.dport, t.proto)?;
    }
    w.flush()
}

/// The `pkt/sec` figure of `dpdk-test-acl`'s `search_ip5tuples` line.
pub fn parse_acl_rate(stdout: &str) -> Option<f64> {
    let line = stdout.lines().find(|l| l.contains("search_ip5tuples"))?;
    let (before, _) = line.split_once(" pkt/sec")?;
    before.rsplit([' ', ',']).next()?.parse().ok()
}

/// The "total" of `rte_acl`'s runtime memory footprint (logged at debug level), in bytes.
pub fn parse_acl_memory(log: &str) -> Option<usize> {
    let rest = &log[log.find("runtime memory footprint")?..];
    rest.lines()
        .find_map(|l| l.trim().strip_prefix("total:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

// ----------------------------------------------------------------------------------------

/// Rule visits the linear scan makes per timed pass, which sizes its probe prefix.
pub const LINEAR_WORK: usize = 300_000_000;
/// The fewest probes the linear scan classifies per pass, however many rules there are.
const LINEAR_MIN_PROBES: usize = 1_000;
/// Probes classified, untimed, before each timed weir pass.
const WARM_UP_PROBES: usize = 200_000;
/// How long `compile` may be repeated per size for the build figure (at least once).
pub const BUILD_BUDGET: Duration = Duration::from_secs(20);
/// A first-round `dpdk-test-acl` run longer than this stops the other algorithms from
/// running at that size.
pub const ACL_ALL_ALGS_MAX: Duration = Duration::from_secs(10);
/// How long the `dpdk-test-acl` runs of one size may take together (at least one runs).
pub const ACL_BUDGET: Duration = Duration::from_secs(60);
/// The share of the available memory `dpdk-test-acl`'s heap (its build) may take.
pub const ACL_DATA_LIMIT_FRACTION: f64 = 0.5;
/// `rte_acl` classification algorithms, best last.
const ACL_ALGS: [&str; 5] = ["scalar", "sse", "avx2", "avx512x16", "avx512x32"];
/// Pods get addresses from here (198.18.0.0 – 198.19.127.255).
const POD_POOL: (u32, u32) = (0xc612_0000, 0xc613_7fff);
/// "Outside the cluster": 198.19.128.0/17.
const EXTERNAL: (u32, u32) = (0xc613_8000, 0xc613_ffff);
/// IPAM block per node, as Calico's default /26.
const BLOCK_SIZE: u32 = 64;
const ANY: (u32, u32) = (0, u32::MAX);
const ANY_PORT: (u16, u16) = (0, u16::MAX);
const SEED: u64 = 0x5745_4952_0070;

fn scan(rules: &[FlatRule], t: &Tuple) -> Verdict {
    let mut i = 0;
    while let Some(r) = rules.get(i) {
        if r.matches(t) {
            match r.action {
                FlatAction::Allow => return Verdict::Allow,
                FlatAction::Deny => return Verdict::Deny,
                FlatAction::Log => {}
                FlatAction::Pass { next } => {
                    i = next as usize;
                    continue;
                }
            }
        }
        i += 1;
    }
    Verdict::Allow
}

/// One port condition of a flat rule: a range, and for a named port the address and
/// protocol it belongs to.
#[derive(Debug, Clone, Copy)]
struct PortOption {
    range: (u16, u16),
    addr: Option<u32>,
    proto: Option<u8>,
}

/// Appends the flat rules of one compiled rule; returns the number of conditions dropped.
fn expand(
    rule: &CompiledRule,
    selected: &NetSet,
    ingress: bool,
    sets: &Sets,
    named: &[Vec<(u32, u8, u16)>],
    out: &mut Vec<FlatRule>,
) -> usize {
    let m: &Match = &rule.matches;
    // Never true for IPv4 TCP/UDP/SCTP.
    if m.ip_version == Some(6) || m.icmp.is_some() {
        return 0;
    }
    let side = |nets: Option<u32>, not: Option<u32>, own: bool| {
        let mut s = if own { selected.clone() } else { NetSet::all() };
        if let Some(id) = nets {
            s = s.intersection(&sets.nets[id as usize]);
        }
        if let Some(id) = not {
            s.subtract(&sets.nets[id as usize]);
        }
        s
    };
    let src = side(m.src_nets, m.not_src_nets, !ingress);
    let dst = side(m.dst_nets, m.not_dst_nets, ingress);
    if src.v4_intervals().is_empty() || dst.v4_intervals().is_empty() {
        return 0;
    }
    let mut dropped = 0;
    let sports = port_options(&m.src_ports, &m.not_src_ports, named, &src, &mut dropped);
    let dports = port_options(&m.dst_ports, &m.not_dst_ports, named, &dst, &mut dropped);
    let ported = !(m.src_ports.is_any()
        && m.dst_ports.is_any()
        && m.not_src_ports.is_any()
        && m.not_dst_ports.is_any());
    let protos: Vec<u8> = match (m.protocol, m.not_protocol) {
        (Some(p), np) if np != Some(p) => vec![p],
        (Some(_), _) => return dropped,
        (None, np) if ported || np.is_some() => [6, 17, 132]
            .into_iter()
            .filter(|&p| Some(p) != np)
            .collect(),
        (None, _) => vec![0],
    };
    let action = match rule.action {
        CompiledAction::Allow => FlatAction::Allow,
        CompiledAction::Deny => FlatAction::Deny,
        CompiledAction::Log => FlatAction::Log,
        CompiledAction::Pass => FlatAction::Pass { next: 0 },
    };
    // A named port's address is in its side's set already (see `port_options`).
    let addrs = |set: &NetSet, pinned: Option<u32>| -> Vec<(u32, u32)> {
        match pinned {
            None => set.v4_intervals().to_vec(),
            Some(a) => vec![(a, a)],
        }
    };
    for &proto in &protos {
        for sp in &sports {
            for dp in &dports {
                let mut p = proto;
                let mut clash = false;
                for named in [sp.proto, dp.proto].into_iter().flatten() {
                    if p == 0 || p == named {
                        p = named;
                    } else {
                        clash = true;
                    }
                }
                if clash {
                    continue;
                }
                for &s in &addrs(&src, sp.addr) {
                    for &d in &addrs(&dst, dp.addr) {
                        out.push(FlatRule {
                            src: s,
                            dst: d,
                            sport: sp.range,
                            dport: dp.range,
                            proto: p,
                            action,
                        });
                    }
                }
            }
        }
    }
    dropped
}

/// The port options of one side: the positive ranges (any port if none) minus the negative
/// ranges, and one option per (address, protocol, port) of a named port set whose address
/// is in `side`.
fn port_options(
    positive: &CompiledPorts,
    negative: &CompiledPorts,
    named: &[Vec<(u32, u8, u16)>],
    side: &NetSet,
    dropped: &mut usize,
) -> Vec<PortOption> {
    if negative.named.is_some() {
        *dropped += 1;
    }
    let allowed = complement(&negative.ranges);
    let allows = |port: u16| allowed.iter().any(|&(l, h)| l <= port && port <= h);
    let mut out = Vec::new();
    let ranges: &[(u16, u16)] = if positive.is_any() {
        &[ANY_PORT]
    } else {
        &positive.ranges
    };
    for &(lo, hi) in ranges {
        for &(alo, ahi) in &allowed {
            let (l, h) = (lo.max(alo), hi.min(ahi));
            if l <= h {
                out.push(PortOption {
                    range: (l, h),
                    addr: None,
                    proto: None,
                });
            }
        }
    }
    if let Some(set) = positive.named.and_then(|id| named.get(id as usize)) {
        for &(lo, hi) in side.v4_intervals() {
            let first = set.partition_point(|e| e.0 < lo);
            for &(addr, proto, port) in set[first..].iter().take_while(|e| e.0 <= hi) {
                if allows(port) {
                    out.push(PortOption {
                        range: (port, port),
                        addr: Some(addr),
                        proto: Some(proto),
                    });
                }
            }
        }
    }
    out
}

/// The union of intervals, sorted, disjoint and not adjacent.
fn merge_intervals(mut intervals: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    intervals.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(intervals.len());
    for (lo, hi) in intervals {
        match out.last_mut() {
            Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The ports in none of `ranges`.
fn complement(ranges: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let mut next: u32 = 0;
    for (lo, hi) in sorted {
        if u32::from(lo) > next {
            out.push((next as u16, lo - 1));
        }
        next = next.max(u32::from(hi) + 1);
    }
    if next <= u32::from(u16::MAX) {
        out.push((next as u16, u16::MAX));
    }
    out
}

// ----------------------------------------------------------------------------------------
// The generator
// ----------------------------------------------------------------------------------------

/// An application a namespace may run: its labels and containerPorts.
struct App {
    name: &'static str,
    tier: &'static str,
    ports: &'static [(Option<&'static str>, u16, Protocol)],
}

const APPS: [App; 6] = [
    App {
        name: "web",
        tier: "frontend",
        ports: &[
            (Some("http"), 8080, Protocol::TCP),
            (Some("metrics"), 9090, Protocol::TCP),
        ],
    },
    App {
        name: "api",
        tier: "backend",
        ports: &[
            (Some("https"), 8443, Protocol::TCP),
            (Some("grpc"), 50051, Protocol::TCP),
            (Some("metrics"), 9090, Protocol::TCP),
        ],
    },
    App {
        name: "worker",
        tier: "backend",
        ports: &[(Some("metrics"), 9090, Protocol::TCP)],
    },
    App {
        name: "db",
        tier: "data",
        ports: &[(Some("postgres"), 5432, Protocol::TCP)],
    },
    App {
        name: "cache",
        tier: "data",
        ports: &[(None, 6379, Protocol::TCP)],
    },
    App {
        name: "batch",
        tier: "backend",
        ports: &[],
    },
];

/// The system namespaces: no rules of their own, but peers of everyone's. Two pods each,
/// labelled `key: value`.
struct SystemApp {
    namespace: &'static str,
    key: &'static str,
    value: &'static str,
    ports: &'static [(Option<&'static str>, u16, Protocol)],
}

const SYSTEM_APPS: [SystemApp; 3] = [
    SystemApp {
        namespace: "kube-system",
        key: "k8s-app",
        value: "kube-dns",
        ports: &[
            (Some("dns"), 53, Protocol::UDP),
            (Some("dns-tcp"), 53, Protocol::TCP),
            (Some("metrics"), 9153, Protocol::TCP),
        ],
    },
    SystemApp {
        namespace: "monitoring",
        key: "app",
        value: "prometheus",
        ports: &[(Some("web"), 9090, Protocol::TCP)],
    },
    SystemApp {
        namespace: "ingress",
        key: "app",
        value: "ingress-nginx",
        ports: &[
            (Some("http"), 80, Protocol::TCP),
            (Some("https"), 443, Protocol::TCP),
        ],
    },
];

/// External ranges the `security` tier denies both ways (inside [`EXTERNAL`]).
const BLOCKLIST: [(Ipv4Addr, u8); 4] = [
    (Ipv4Addr::new(198, 19, 240, 0), 24),
    (Ipv4Addr::new(198, 19, 241, 0), 24),
    (Ipv4Addr::new(198, 19, 242, 0), 23),
    (Ipv4Addr::new(198, 19, 244, 0), 22),
];

/// A policy a template produced, before it is counted and truncated.
enum Drafted {
    K8s {
        name: String,
        pod_selector: Selector,
        ingress_type: bool,
        rules: Vec<(bool, K8sRule)>,
    },
    Weir {
        name: String,
        tier: &'static str,
        order: f64,
        selector: Selector,
        rules: Vec<(bool, Rule)>,
    },
}

struct Generator {
    target: usize,
    rng: SplitMix64,
    objects: Vec<Resource>,
    rules: usize,
    rule_ports: BTreeSet<(u8, u16, u16)>,
    pods_by_namespace: Vec<Vec<(NamespacedName, u32)>>,
    nodes: Vec<(u32, u32)>,
    next_block: u32,
    policies: [usize; 3],
}

impl Generator {
    fn new(target: usize, seed: u64) -> Self {
        Generator {
            target,
            rng: SplitMix64(seed ^ (target as u64).wrapping_mul(0x9e37_79b9)),
            objects: Vec::new(),
            rules: 0,
            rule_ports: BTreeSet::new(),
            pods_by_namespace: Vec::new(),
            nodes: Vec::new(),
            next_block: POD_POOL.0,
            policies: [0; 3],
        }
    }

    fn run(mut self) -> Result<GeneratedCluster, PolicyBenchError> {
        let namespaces = (self.target / 20).max(1);
        // A handful of pods per namespace, about 40 per node.
        let nodes = ((namespaces * 11 / 2 + 6) / 40).max(2);
        self.nodes = vec![(0, 0); nodes];

        // The system namespaces: no rules of their own, but peers of everyone's.
        for app in &SYSTEM_APPS {
            self.namespace(app.namespace, &[("purpose", "system")]);
            let mut pods = Vec::new();
            for i in 0..2 {
                pods.push(self.pod(
                    app.namespace,
                    &format!("{}-{i}", app.value),
                    &[(app.key, app.value)],
                    app.ports,
                )?);
            }
            self.pods_by_namespace.push(pods);
        }

        let global = (self.target / 10).clamp(1, 10).min(self.target);
        let global_budget = self.global_policies(global);
        let per_namespace = self.target - global_budget;
        for n in 0..namespaces {
            let budget = per_namespace / namespaces + usize::from(n < per_namespace % namespaces);
            self.app_namespace(n, budget)?;
        }

        let pods = self.pods_by_namespace.iter().map(Vec::len).sum();
        let objects = self
            .objects
            .into_iter()
            .enumerate()
            .map(|(i, resource)| Object {
                origin: Origin {
                    source: "generated".into(),
                    document: i + 1,
                    item: None,
                },
                resource,
            })
            .collect();
        let cluster = Cluster::from_objects(objects).map_err(|errors| {
            PolicyBenchError::Generator(
                errors
                    .iter()
                    .take(3)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(GeneratedCluster {
            cluster,
            rules: self.rules,
            namespaces,
            pods,
            nodes,
            policies: self.policies,
            rule_ports: self.rule_ports.into_iter().collect(),
            pods_by_namespace: self.pods_by_namespace,
        })
    }

    fn namespace(&mut self, name: &str, labels: &[(&str, &str)]) {
        let mut all = labels_of(labels);
        all.insert(NAMESPACE_NAME_LABEL.into(), name.into());
        self.objects.push(Resource::Namespace(Namespace {
            name: name.into(),
            labels: all,
        }));
    }

    /// A pod on a random node, addressed from the node's IPAM block.
    fn pod(
        &mut self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        ports: &[(Option<&str>, u16, Protocol)],
    ) -> Result<(NamespacedName, u32), PolicyBenchError> {
        let node = self.rng.below(self.nodes.len() as u64) as usize;
        let (next, end) = &mut self.nodes[node];
        if next == end {
            if self.next_block + BLOCK_SIZE - 1 > POD_POOL.1 {
                return Err(PolicyBenchError::Config(format!(
                    "{} rules need more pods than 198.18.0.0-198.19.127.255 holds in /26 \
                     blocks; use fewer rules",
                    self.target
                )));
            }
            *next = self.next_block;
            *end = self.next_block + BLOCK_SIZE;
            self.next_block += BLOCK_SIZE;
        }
        let addr = *next;
        *next += 1;
        self.objects.push(Resource::Pod(Pod {
            namespace: namespace.into(),
            name: name.into(),
            labels: labels_of(labels),
            ips: vec![IpAddr::V4(Ipv4Addr::from(addr))],
            container_ports: ports
                .iter()
                .map(|&(name, port, protocol)| ContainerPort {
                    name: name.map(Into::into),
                    port,
                    protocol,
                })
                .collect(),
            service_account: "default".into(),
            host_network: false,
            node_name: None,
            annotations: Default::default(),
        }));
        Ok((NamespacedName::new(namespace, name), addr))
    }

    /// The `security` tier and its GlobalNetworkPolicies, truncated to `budget` rules;
    /// returns the rules placed.
    fn global_policies(&mut self, budget: usize) -> usize {
        self.objects.push(Resource::Tier(Tier {
            name: "security".into(),
            order: Some(100.0),
            default_action: TierDefaultAction::Pass,
        }));
        self.objects.push(Resource::Tier(Tier {
            name: "platform".into(),
            order: Some(200.0),
            default_action: TierDefaultAction::Pass,
        }));
        let blocklist: Vec<IpNet> = BLOCKLIST.iter().map(|&(a, l)| v4net(a, l)).collect();
        let mut guard = vec![
            (
                false,
                rule(
                    Action::Deny,
                    None,
                    EntityRule::default(),
                    EntityRule {
                        nets: blocklist.clone(),
                        ..EntityRule::default()
                    },
                ),
            ),
            (
                true,
                rule(
                    Action::Deny,
                    None,
                    EntityRule {
                        nets: blocklist,
                        ..EntityRule::default()
                    },
                    EntityRule::default(),
                ),
            ),
            (
                false,
                rule(
                    Action::Deny,
                    Some(Protocol::TCP),
                    EntityRule::default(),
                    self.dst_ports(Protocol::TCP, &[(25, 25), (465, 465), (587, 587)]),
                ),
            ),
            (
                true,
                rule(
                    Action::Allow,
                    Some(Protocol::TCP),
                    EntityRule {
                        namespace_selector: Some(eq(NAMESPACE_NAME_LABEL, "monitoring")),
                        selector: Some(eq("app", "prometheus")),
                        ..EntityRule::default()
                    },
                    self.dst_ports(Protocol::TCP, &[(9090, 9090), (9153, 9153)]),
                ),
            ),
            (
                false,
                rule(
                    Action::Pass,
                    None,
                    EntityRule::default(),
                    EntityRule::default(),
                ),
            ),
            (
                true,
                rule(
                    Action::Pass,
                    None,
                    EntityRule::default(),
                    EntityRule::default(),
                ),
            ),
        ];
        let dns = vec![
            (
                true,
                rule(
                    Action::Allow,
                    Some(Protocol::UDP),
                    EntityRule::default(),
                    self.dst_ports(Protocol::UDP, &[(53, 53)]),
                ),
            ),
            (
                true,
                rule(
                    Action::Allow,
                    Some(Protocol::TCP),
                    EntityRule::default(),
                    self.dst_ports(Protocol::TCP, &[(53, 53)]),
                ),
            ),
        ];
        let mut left = budget;
        guard.truncate(left);
        left -= guard.len();
        let mut dns = dns;
        dns.truncate(left);
        left -= dns.len();
        let mut placed = 0;
        for (name, namespace_selector, selector, rules) in [
            ("security-guard", Selector::All, Selector::All, guard),
            (
                "allow-cluster-dns",
                eq(NAMESPACE_NAME_LABEL, "kube-system"),
                eq("k8s-app", "kube-dns"),
                dns,
            ),
        ] {
            if rules.is_empty() {
                continue;
            }
            placed += rules.len();
            let spec = self.spec("security", 100.0, selector, rules);
            self.objects
                .push(Resource::GlobalNetworkPolicy(GlobalNetworkPolicy {
                    name: name.into(),
                    namespace_selector,
                    spec,
                }));
            self.policies[2] += 1;
        }
        debug_assert_eq!(budget - left, placed);
        self.rules += placed;
        placed
    }

    /// Application namespace `n`: its pods, then policies worth `budget` rules.
    fn app_namespace(&mut self, n: usize, budget: usize) -> Result<(), PolicyBenchError> {
        let ns = format!("app-{n:05}");
        let team = format!("team-{}", n / 4);
        let env = ["prod", "staging", "dev"][n % 3];
        self.namespace(&ns, &[("team", &team), ("env", env)]);
        let mut apps: Vec<usize> = (0..APPS.len()).collect();
        crate::rng::shuffle(&mut apps, self.rng.next_u64());
        apps.truncate(self.rng.range(2, 4) as usize);
        let mut pods = Vec::new();
        for (k, &a) in apps.iter().enumerate() {
            let app = &APPS[a];
            let replicas = self.rng.range(if k == 0 { 2 } else { 1 }, 3);
            for r in 0..replicas {
                let version = if r % 2 == 0 { "v1" } else { "v2" };
                pods.push(self.pod(
                    &ns,
                    &format!("{}-{r}", app.name),
                    &[("app", app.name), ("tier", app.tier), ("version", version)],
                    app.ports,
                )?);
            }
        }
        self.pods_by_namespace.push(pods);
        let present: Vec<&str> = apps.iter().map(|&a| APPS[a].name).collect();

        // Most namespaces deny ingress by default; the first always does, so that the
        // smallest cluster is isolated like the others.
        if self.rng.chance(0.7) || n == 0 {
            self.add_k8s(
                &ns,
                "default-deny-ingress".into(),
                Selector::All,
                true,
                vec![],
                &mut 0,
            );
        }
        let mut left = budget;
        let mut templates: Vec<usize> = (0..TEMPLATES).collect();
        crate::rng::shuffle(&mut templates, self.rng.next_u64());
        let mut round = 0;
        while left > 0 {
            for &t in &templates {
                if left == 0 {
                    break;
                }
                if let Some(draft) = self.template(t, round, &team, &present) {
                    self.place(&ns, draft, &mut left);
                }
            }
            round += 1;
        }
        Ok(())
    }

    /// Counts and truncates a drafted policy to the budget left, then adds it.
    fn place(&mut self, ns: &str, draft: Drafted, left: &mut usize) {
        match draft {
            Drafted::K8s {
                name,
                pod_selector,
                ingress_type,
                mut rules,
            } => {
                rules.truncate(*left);
                self.add_k8s(ns, name, pod_selector, ingress_type, rules, left);
            }
            Drafted::Weir {
                name,
                tier,
                order,
                selector,
                mut rules,
            } => {
                rules.truncate(*left);
                *left -= rules.len();
                self.rules += rules.len();
                let spec = self.spec(tier, order, selector, rules);
                self.objects.push(Resource::NetworkPolicy(NetworkPolicy {
                    namespace: ns.into(),
                    name,
                    spec,
                }));
                self.policies[1] += 1;
            }
        }
    }

    fn add_k8s(
        &mut self,
        ns: &str,
        name: String,
        pod_selector: Selector,
        ingress_type: bool,
        rules: Vec<(bool, K8sRule)>,
        left: &mut usize,
    ) {
        *left -= rules.len();
        self.rules += rules.len();
        let (ingress, egress): (Vec<_>, Vec<_>) = rules.into_iter().partition(|(i, _)| *i);
        self.objects
            .push(Resource::K8sNetworkPolicy(K8sNetworkPolicy {
                namespace: ns.into(),
                name,
                pod_selector,
                types: PolicyTypes {
                    ingress: ingress_type || !ingress.is_empty(),
                    egress: !egress.is_empty(),
                },
                ingress: ingress.into_iter().map(|(_, r)| r).collect(),
                egress: egress.into_iter().map(|(_, r)| r).collect(),
            }));
        self.policies[0] += 1;
    }

    fn spec(
        &self,
        tier: &str,
        order: f64,
        selector: Selector,
        rules: Vec<(bool, Rule)>,
    ) -> PolicySpec {
        let (ingress, egress): (Vec<_>, Vec<_>) = rules.into_iter().partition(|(i, _)| *i);
        PolicySpec {
            tier: tier.into(),
            order: Some(order),
            selector,
            service_account_selector: Selector::All,
            types: PolicyTypes {
                ingress: !ingress.is_empty(),
                egress: !egress.is_empty(),
            },
            ingress: ingress.into_iter().map(|(_, r)| r).collect(),
            egress: egress.into_iter().map(|(_, r)| r).collect(),
        }
    }

    /// Template `t` for a namespace running `apps`; `None` if it does not apply there.
    fn template(&mut self, t: usize, round: usize, team: &str, apps: &[&str]) -> Option<Drafted> {
        let has = |a: &str| apps.contains(&a);
        let suffix = if round == 0 {
            String::new()
        } else {
            format!("-{round}")
        };
        let partner = self.partner_block();
        let k8s = |name: &str, pod_selector: Selector, ingress_type: bool, rules| {
            Some(Drafted::K8s {
                name: format!("{name}{suffix}"),
                pod_selector,
                ingress_type,
                rules,
            })
        };
        match t {
            0 if has("web") => k8s(
                "allow-web",
                eq("app", "web"),
                true,
                vec![
                    (
                        true,
                        k8s_rule(
                            vec![pods_in(
                                eq(NAMESPACE_NAME_LABEL, "ingress"),
                                eq("app", "ingress-nginx"),
                            )],
                            vec![self.named(Protocol::TCP, "http", 8080)],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![pods_here(Selector::All)],
                            vec![self.port(Protocol::TCP, 8080, 8080)],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![partner.clone()],
                            vec![self.port(Protocol::TCP, 8080, 8089)],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![pods_in(
                                eq(NAMESPACE_NAME_LABEL, "monitoring"),
                                eq("app", "prometheus"),
                            )],
                            vec![self.named(Protocol::TCP, "metrics", 9090)],
                        ),
                    ),
                ],
            ),
            1 if has("api") => k8s(
                "allow-api",
                eq("app", "api"),
                true,
                vec![
                    (
                        true,
                        k8s_rule(
                            vec![pods_here(eq("app", "web"))],
                            vec![
                                self.named(Protocol::TCP, "https", 8443),
                                self.port(Protocol::TCP, 50051, 50051),
                            ],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![pods_in(eq("team", team), eq("tier", "frontend"))],
                            vec![self.port(Protocol::TCP, 8443, 8443)],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![pods_in(
                                eq(NAMESPACE_NAME_LABEL, "monitoring"),
                                Selector::All,
                            )],
                            vec![self.port(Protocol::TCP, 9090, 9090)],
                        ),
                    ),
                ],
            ),
            2 if has("db") => k8s(
                "allow-db",
                eq("app", "db"),
                true,
                vec![
                    (false, self.dns_rule()),
                    (
                        true,
                        k8s_rule(
                            vec![pods_here(eq("tier", "backend"))],
                            vec![self.named(Protocol::TCP, "postgres", 5432)],
                        ),
                    ),
                    (
                        false,
                        k8s_rule(
                            vec![partner.clone()],
                            vec![self.port(Protocol::TCP, 5432, 5432)],
                        ),
                    ),
                ],
            ),
            3 if has("api") || has("worker") || has("batch") => k8s(
                "backend-egress",
                eq("tier", "backend"),
                false,
                vec![
                    (false, self.dns_rule()),
                    (
                        false,
                        k8s_rule(
                            vec![pods_here(eq("tier", "data"))],
                            vec![
                                self.port(Protocol::TCP, 5432, 5432),
                                self.port(Protocol::TCP, 6379, 6379),
                            ],
                        ),
                    ),
                    (
                        false,
                        k8s_rule(
                            vec![K8sPeer::IpBlock {
                                cidr: v4net(Ipv4Addr::from(EXTERNAL.0), 17),
                                except: BLOCKLIST.iter().map(|&(a, l)| v4net(a, l)).collect(),
                            }],
                            vec![self.port(Protocol::TCP, 443, 443)],
                        ),
                    ),
                    (
                        false,
                        k8s_rule(
                            vec![pods_here(eq("app", "api"))],
                            vec![self.port(Protocol::TCP, 8443, 8443)],
                        ),
                    ),
                    (
                        false,
                        k8s_rule(
                            vec![pods_in(eq("team", team), eq("app", "api"))],
                            vec![self.named(Protocol::TCP, "https", 8443)],
                        ),
                    ),
                ],
            ),
            4 if has("cache") => k8s(
                "allow-cache",
                eq("app", "cache"),
                true,
                vec![
                    (
                        true,
                        k8s_rule(
                            vec![
                                pods_here(eq("tier", "backend")),
                                pods_here(eq("app", "web")),
                            ],
                            vec![self.port(Protocol::TCP, 6379, 6379)],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![pods_here(eq("app", "worker"))],
                            vec![self.port(Protocol::UDP, 7000, 7010)],
                        ),
                    ),
                ],
            ),
            5 => k8s(
                "allow-same-namespace",
                Selector::All,
                true,
                vec![(
                    true,
                    K8sRule {
                        peers: Some(vec![pods_here(Selector::All)]),
                        ports: None,
                    },
                )],
            ),
            6 if has("db") => {
                let rules = vec![
                    (
                        true,
                        rule(
                            Action::Deny,
                            None,
                            EntityRule {
                                nets: BLOCKLIST.iter().map(|&(a, l)| v4net(a, l)).collect(),
                                ..EntityRule::default()
                            },
                            EntityRule::default(),
                        ),
                    ),
                    (
                        true,
                        rule(
                            Action::Allow,
                            Some(Protocol::TCP),
                            EntityRule {
                                selector: Some(eq("tier", "backend")),
                                ..EntityRule::default()
                            },
                            self.dst_ports(Protocol::TCP, &[(5432, 5432)]),
                        ),
                    ),
                    (
                        true,
                        rule(
                            Action::Allow,
                            Some(Protocol::TCP),
                            EntityRule {
                                namespace_selector: Some(eq("team", team)),
                                selector: Some(eq("app", "api")),
                                ..EntityRule::default()
                            },
                            EntityRule {
                                ports: vec![self.named_match(Protocol::TCP, "postgres", 5432)],
                                ..EntityRule::default()
                            },
                        ),
                    ),
                    (
                        false,
                        rule(
                            Action::Allow,
                            Some(Protocol::UDP),
                            EntityRule::default(),
                            self.dst_ports(Protocol::UDP, &[(53, 53)]),
                        ),
                    ),
                    (
                        false,
                        rule(
                            Action::Deny,
                            None,
                            EntityRule::default(),
                            EntityRule::default(),
                        ),
                    ),
                ];
                Some(Drafted::Weir {
                    name: format!("guard-db{suffix}"),
                    tier: DEFAULT_TIER,
                    order: 500.0,
                    selector: eq("app", "db"),
                    rules,
                })
            }
            7 => {
                let K8sPeer::IpBlock { cidr, .. } = &partner else {
                    unreachable!("partner is a block")
                };
                let rules = vec![
                    (
                        true,
                        rule(
                            Action::Deny,
                            Some(Protocol::TCP),
                            EntityRule {
                                nets: vec![v4net(Ipv4Addr::from(EXTERNAL.0), 17)],
                                not_nets: vec![*cidr],
                                ..EntityRule::default()
                            },
                            self.dst_ports(Protocol::TCP, &[(22, 22)]),
                        ),
                    ),
                    (
                        true,
                        rule(
                            Action::Pass,
                            None,
                            EntityRule::default(),
                            EntityRule::default(),
                        ),
                    ),
                    (
                        false,
                        rule(
                            Action::Deny,
                            Some(Protocol::UDP),
                            EntityRule::default(),
                            self.dst_ports(Protocol::UDP, &[(1900, 1900), (5353, 5353)]),
                        ),
                    ),
                    (
                        false,
                        rule(
                            Action::Pass,
                            None,
                            EntityRule::default(),
                            EntityRule::default(),
                        ),
                    ),
                ];
                Some(Drafted::Weir {
                    name: format!("platform-baseline{suffix}"),
                    tier: "platform",
                    order: 100.0,
                    selector: Selector::All,
                    rules,
                })
            }
            8 if has("api") => {
                let K8sPeer::IpBlock { cidr, .. } = &partner else {
                    unreachable!("partner is a block")
                };
                let rules = vec![
                    (
                        true,
                        rule(
                            Action::Log,
                            None,
                            EntityRule {
                                nets: vec![v4net(Ipv4Addr::from(EXTERNAL.0), 17)],
                                ..EntityRule::default()
                            },
                            EntityRule::default(),
                        ),
                    ),
                    (
                        true,
                        rule(
                            Action::Allow,
                            Some(Protocol::TCP),
                            EntityRule {
                                selector: Some(Selector::In(
                                    "app".into(),
                                    ["web".to_string(), "worker".to_string()].into(),
                                )),
                                ..EntityRule::default()
                            },
                            self.dst_ports(Protocol::TCP, &[(8443, 8443), (50051, 50051)]),
                        ),
                    ),
                    (
                        true,
                        rule(
                            Action::Allow,
                            Some(Protocol::TCP),
                            EntityRule {
                                nets: vec![*cidr],
                                ..EntityRule::default()
                            },
                            self.dst_ports(Protocol::TCP, &[(8443, 8443)]),
                        ),
                    ),
                ];
                Some(Drafted::Weir {
                    name: format!("api-clients{suffix}"),
                    tier: DEFAULT_TIER,
                    order: 500.0,
                    selector: eq("app", "api"),
                    rules,
                })
            }
            _ => None,
        }
    }

    /// A partner's external /20 with one /24 excepted.
    fn partner_block(&mut self) -> K8sPeer {
        let block = EXTERNAL.0 + (self.rng.below(6) as u32) * 4096;
        let hole = block + (self.rng.below(16) as u32) * 256;
        K8sPeer::IpBlock {
            cidr: v4net(Ipv4Addr::from(block), 20),
            except: vec![v4net(Ipv4Addr::from(hole), 24)],
        }
    }

    fn dns_rule(&mut self) -> K8sRule {
        K8sRule {
            peers: Some(vec![pods_in(
                eq(NAMESPACE_NAME_LABEL, "kube-system"),
                eq("k8s-app", "kube-dns"),
            )]),
            ports: Some(vec![
                self.port(Protocol::UDP, 53, 53),
                self.port(Protocol::TCP, 53, 53),
            ]),
        }
    }

    fn port(&mut self, protocol: Protocol, first: u16, last: u16) -> K8sPort {
        self.rule_ports.insert((protocol.number(), first, last));
        K8sPort {
            protocol,
            port: Some(PortMatch::Range { first, last }),
        }
    }

    fn named(&mut self, protocol: Protocol, name: &str, number: u16) -> K8sPort {
        K8sPort {
            protocol,
            port: Some(self.named_match(protocol, name, number)),
        }
    }

    fn named_match(&mut self, protocol: Protocol, name: &str, number: u16) -> PortMatch {
        self.rule_ports.insert((protocol.number(), number, number));
        PortMatch::Named(name.into())
    }

    fn dst_ports(&mut self, protocol: Protocol, ranges: &[(u16, u16)]) -> EntityRule {
        for &(first, last) in ranges {
            self.rule_ports.insert((protocol.number(), first, last));
        }
        EntityRule {
            ports: ranges
                .iter()
                .map(|&(first, last)| PortMatch::Range { first, last })
                .collect(),
            ..EntityRule::default()
        }
    }
}

/// How many templates [`Generator::template`] knows.
const TEMPLATES: usize = 9;

fn rule(
    action: Action,
    protocol: Option<Protocol>,
    source: EntityRule,
    destination: EntityRule,
) -> Rule {
    Rule {
        action,
        ip_version: None,
        protocol,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        source,
        destination,
    }
}

fn k8s_rule(peers: Vec<K8sPeer>, ports: Vec<K8sPort>) -> K8sRule {
    K8sRule {
        peers: Some(peers),
        ports: Some(ports),
    }
}

fn eq(key: &str, value: &str) -> Selector {
    Selector::Eq(key.into(), value.into())
}

fn pods_here(pods: Selector) -> K8sPeer {
    K8sPeer::Pods {
        namespaces: NamespaceScope::PolicyNamespace,
        pods,
    }
}

fn pods_in(namespaces: Selector, pods: Selector) -> K8sPeer {
    K8sPeer::Pods {
        namespaces: NamespaceScope::Selected(namespaces),
        pods,
    }
}

fn v4net(addr: Ipv4Addr, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(addr, len).expect("prefix length at most 32"))
}

fn labels_of(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ----------------------------------------------------------------------------------------
// Measuring
// ----------------------------------------------------------------------------------------

/// What one size measured.
struct SizeFigures {
    rules: usize,
    classify_ns: Vec<f64>,
    linear_ns: Vec<f64>,
    build_ms: Vec<f64>,
    memory_bytes: usize,
    flatten_ms: f64,
    flat_rules: usize,
    flat_bytes: usize,
    acl: Option<AclFigures>,
}

/// What `dpdk-test-acl` measured at one size.
struct AclFigures {
    rules: usize,
    /// ns per packet, per algorithm.
    algs: BTreeMap<&'static str, Vec<f64>>,
    build_ms: Vec<f64>,
    memory_bytes: Option<usize>,
}

impl AclFigures {
    /// The algorithm with the lowest median ns per packet.
    fn best(&self) -> Option<(&'static str, &Vec<f64>)> {
        self.algs
            .iter()
            .map(|(&a, ns)| (a, ns, median_min_max(ns).0))
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .map(|(a, ns, _)| (a, ns))
    }
}

fn run_pinned(
    cfg: &PolicyBenchConfig,
    acl_bin: Option<PathBuf>,
) -> Result<(Vec<BenchResult>, Vec<String>), PolicyBenchError> {
    let mut notes = vec![match cfg.cpu {
        Some(cpu) => format!("measuring thread and dpdk-test-acl pinned to CPU {cpu}"),
        None => "not pinned (dpdk-test-acl on CPU 0)".to_string(),
    }];
    let mut acl = acl_bin.map(|bin| Acl::new(bin, cfg));
    let mut sizes = Vec::new();
    let mut rules: Vec<usize> = cfg.rules.clone();
    rules.sort_unstable();
    rules.dedup();
    for &r in &rules {
        crate::progress::step(&format!("policy: {r} rules"));
        sizes.push(measure_size(cfg, r, acl.as_mut(), &mut notes)?);
    }
    if let Some(acl) = acl {
        notes.extend(acl.finish());
    }
    notes.extend(acl_notes(&sizes));
    Ok((results(&sizes, &mut notes), notes))
}

fn measure_size(
    cfg: &PolicyBenchConfig,
    target: usize,
    mut acl: Option<&mut Acl>,
    notes: &mut Vec<String>,
) -> Result<SizeFigures, PolicyBenchError> {
    let label = count_label(target);
    let started = Instant::now();
    let generated = generate_cluster(target, SEED)?;
    let generate_ms = started.elapsed().as_secs_f64() * 1e3;

    // The first compile is timed too; later rounds add samples within the budget.
    let started = Instant::now();
    let compiled = compile(&generated.cluster);
    let mut build_ms = vec![started.elapsed().as_secs_f64() * 1e3];
    let memory = tables_memory(&compiled.tables);

    let started = Instant::now();
    let flat = flatten(&compiled, &generated.cluster);
    let flatten_ms = started.elapsed().as_secs_f64() * 1e3;

    let probes = generate_probes(&generated, &compiled, cfg.packets, SEED + target as u64);
    let linear_n = (LINEAR_WORK / flat.len().max(1))
        .max(LINEAR_MIN_PROBES)
        .min(probes.len());
    let tuples: Vec<Tuple> = probes[..linear_n]
        .iter()
        .map(|p| Tuple::of(&p.key).expect("generated probes are IPv4"))
        .collect();

    // Right answers first: weir on every probe, the linear scan on its prefix.
    let (mut allowed, mut linear_allowed) = (0u64, 0u64);
    let mut decided = 0usize;
    for (i, p) in probes.iter().enumerate() {
        let d = compiled.tables.evaluate(p.src, p.dst, &p.key);
        allowed += u64::from(d.verdict == Verdict::Allow);
        decided += usize::from(
            [d.egress, d.ingress]
                .iter()
                .flatten()
                .any(|d| d.rule.is_some()),
        );
        if i < linear_n {
            let linear = flat.classify(&tuples[i]);
            linear_allowed += u64::from(linear == Verdict::Allow);
            if linear != d.verdict {
                return Err(PolicyBenchError::WrongAnswer(format!(
                    "{target} rules, probe {i} ({} -> {}, proto {}, port {} -> {}): weir \
                     says {:?} ({}), the linear scan {linear:?}",
                    p.key.src_ip(),
                    p.key.dst_ip(),
                    p.key.proto,
                    p.key.src_port,
                    p.key.dst_port,
                    d.verdict,
                    explain(&compiled.tables, &d),
                )));
            }
        }
    }
    let programs: usize = compiled
        .tables
        .endpoints
        .iter()
        .map(|e| {
            e.ingress.as_ref().map_or(0, |p| p.rule_count())
                + e.egress.as_ref().map_or(0, |p| p.rule_count())
        })
        .sum();
    let (distinct, index_bytes, intervals) = {
        let mut seen = std::collections::HashSet::new();
        let (mut bytes, mut intervals) = (0usize, 0usize);
        for e in &compiled.tables.endpoints {
            for p in [&e.ingress, &e.egress].into_iter().flatten() {
                if seen.insert(std::sync::Arc::as_ptr(p)) {
                    bytes += p.index_bytes();
                    intervals += p.address_intervals();
                }
            }
        }
        (seen.len(), bytes, intervals)
    };
    notes.push(format!(
        "{label} rules: {distinct} distinct programs, their decision structures {:.1} MiB with \
         {:.1} address intervals each on average",
        mib(index_bytes),
        intervals as f64 / distinct.max(1) as f64
    ));
    notes.push(format!(
        "{label} rules: {} application namespaces (+3 system), {} pods on {} nodes, {} \
         Kubernetes + {} weir.dev + {} global policies, {} rules (generated in {generate_ms:.0} \
         ms); compiled: {} endpoints, {} address sets, {} named-port sets, {programs} rules \
         over all programs; flattened: {} egress + {} ingress 5-tuple rules ({flatten_ms:.0} \
         ms{})",
        generated.namespaces,
        generated.pods,
        generated.nodes,
        generated.policies[0],
        generated.policies[1],
        generated.policies[2],
        generated.rules,
        compiled.endpoints.len(),
        compiled.tables.sets.nets.len(),
        compiled.tables.sets.named_ports.len(),
        flat.egress.len(),
        flat.ingress.len(),
        if flat.inexact > 0 {
            format!(", {} conditions dropped", flat.inexact)
        } else {
            String::new()
        }
    ));
    notes.push(format!(
        "{label} rules: {} probes, {:.1}% allowed, {:.1}% decided by a rule (the rest: no \
         policy selects either end, or every tier passed); the linear scan classified the \
         first {linear_n} and agreed with weir on every one",
        probes.len(),
        allowed as f64 * 100.0 / probes.len() as f64,
        decided as f64 * 100.0 / probes.len() as f64,
    ));

    // DPDK's input files.
    let mut acl_case = None;
    if let Some(acl) = acl.as_deref_mut() {
        match acl.prepare(&label, &flat, &probes) {
            Ok(case) => acl_case = Some(case),
            Err(why) => notes.push(format!("{label} rules: dpdk-test-acl not run: {why}")),
        }
    }

    let mut classify_ns = Vec::new();
    let mut linear_ns = Vec::new();
    let mut acl_figures = acl_case.as_ref().map(|c| AclFigures {
        rules: c.rules,
        algs: BTreeMap::new(),
        build_ms: Vec::new(),
        memory_bytes: None,
    });
    for round in 0..cfg.runs {
        let spent: f64 = build_ms.iter().sum();
        let next = build_ms.last().copied().unwrap_or(0.0);
        if round > 0 && spent + next <= BUILD_BUDGET.as_secs_f64() * 1e3 {
            let started = Instant::now();
            let again = compile(black_box(&generated.cluster));
            build_ms.push(started.elapsed().as_secs_f64() * 1e3);
            drop(black_box(again));
        }
        let (ns, sum) = time_weir(&compiled.tables, &probes);
        classify_ns.push(check_sum("weir", target, sum, allowed, ns)?);
        let (ns, sum) = time_linear(&flat, &tuples);
        linear_ns.push(check_sum("linear scan", target, sum, linear_allowed, ns)?);
        if let (Some(acl), Some(case), Some(figures)) =
            (acl.as_deref_mut(), acl_case.as_mut(), acl_figures.as_mut())
        {
            acl.round(case, figures, round, cfg.runs);
        }
    }
    if build_ms.len() < cfg.runs {
        notes.push(format!(
            "{label} rules: compile timed {} times (of {} rounds) to stay within {} s",
            build_ms.len(),
            cfg.runs,
            BUILD_BUDGET.as_secs()
        ));
    }
    let (lmed, lmin, lmax) = median_min_max(&linear_ns);
    notes.push(format!(
        "{label} rules: linear scan {lmed:.1} ns per classification [{lmin:.1} - {lmax:.1}] \
         over {} rules, {:.2} MiB",
        flat.len(),
        mib(flat.memory_bytes())
    ));
    if let (Some(acl), Some(case)) = (acl, acl_case) {
        notes.extend(acl.close(case));
    }
    let acl_figures = acl_figures.filter(|f| !f.algs.is_empty());
    Ok(SizeFigures {
        rules: generated.rules,
        classify_ns,
        linear_ns,
        build_ms,
        memory_bytes: memory,
        flatten_ms,
        flat_rules: flat.len(),
        flat_bytes: flat.memory_bytes(),
        acl: acl_figures,
    })
}

/// The deciding rules of a decision, for error messages.
fn explain(tables: &PolicyTables, d: &weir_dataplane::policy::PathDecision) -> String {
    let rule = |d: Option<weir_dataplane::policy::Decision>| {
        d.and_then(|d| d.rule)
            .and_then(|id| tables.rules.get(id as usize))
            .map_or_else(|| "none".to_string(), RuleInfo::to_string)
    };
    format!("egress: {}; ingress: {}", rule(d.egress), rule(d.ingress))
}

/// ns per classification and allowed count of one pass over `probes` in batches of 256 (as
/// the workers classify), after an untimed warm-up.
fn time_weir(tables: &PolicyTables, probes: &[Probe]) -> (f64, u64) {
    type Query = (Option<EndpointId>, Option<EndpointId>, FlowKey);
    let queries: Vec<Query> = probes.iter().map(|p| (p.src, p.dst, p.key)).collect();
    let mut out = Vec::with_capacity(256);
    let mut pass = |queries: &[Query]| {
        let mut allowed = 0u64;
        for chunk in queries.chunks(256) {
            tables.evaluate_batch(black_box(chunk), &mut out);
            allowed += out.iter().filter(|d| d.verdict == Verdict::Allow).count() as u64;
        }
        black_box(allowed)
    };
    pass(&queries[..queries.len().min(WARM_UP_PROBES)]);
    let started = Instant::now();
    let allowed = pass(&queries);
    (
        started.elapsed().as_secs_f64() * 1e9 / probes.len() as f64,
        allowed,
    )
}

/// ns per classification and allowed count of one linear pass (its warm-up is the first
/// tenth, untimed).
fn time_linear(flat: &FlatRules, tuples: &[Tuple]) -> (f64, u64) {
    let pass = |tuples: &[Tuple]| {
        let allowed = tuples
            .iter()
            .filter(|t| flat.classify(black_box(t)) == Verdict::Allow)
            .count() as u64;
        black_box(allowed)
    };
    pass(&tuples[..tuples.len().div_ceil(10)]);
    let started = Instant::now();
    let allowed = pass(tuples);
    (
        started.elapsed().as_secs_f64() * 1e9 / tuples.len() as f64,
        allowed,
    )
}

fn check_sum(
    what: &str,
    rules: usize,
    got: u64,
    want: u64,
    ns: f64,
) -> Result<f64, PolicyBenchError> {
    if got == want {
        Ok(ns)
    } else {
        Err(PolicyBenchError::WrongAnswer(format!(
            "{rules} rules: a timed {what} pass allowed {got} probes, the checked pass {want}"
        )))
    }
}

/// Heap bytes of the tables: every distinct program's tiers and rules (with their port
/// ranges) and decision structure, the address sets, the named-port sets (hash table
/// capacity) and the rule descriptions. Programs shared by endpoints count once.
fn tables_memory(t: &PolicyTables) -> usize {
    use std::mem::size_of;
    fn cap<T>(v: &Vec<T>) -> usize {
        v.capacity() * size_of::<T>()
    }
    let mut bytes = cap(&t.endpoints);
    let mut seen = std::collections::HashSet::new();
    for e in &t.endpoints {
        let EndpointPolicy { ingress, egress } = e;
        for program in [ingress, egress].into_iter().flatten() {
            if !seen.insert(std::sync::Arc::as_ptr(program)) {
                continue;
            }
            bytes += size_of::<weir_dataplane::policy::Program>() + program.index_bytes();
            bytes += std::mem::size_of_val(program.tiers());
            for tier in program.tiers() {
                bytes += cap(&tier.rules);
                for r in &tier.rules {
                    let m = &r.matches;
                    bytes += [
                        &m.src_ports,
                        &m.not_src_ports,
                        &m.dst_ports,
                        &m.not_dst_ports,
                    ]
                    .iter()
                    .map(|p| cap(&p.ranges))
                    .sum::<usize>();
                }
            }
        }
    }
    bytes += cap(&t.sets.nets);
    for set in &t.sets.nets {
        bytes += set.v4_intervals().len() * 8 + set.v6_intervals().len() * 32;
    }
    bytes += cap(&t.sets.named_ports);
    for set in &t.sets.named_ports {
        // hashbrown: one control byte per bucket beside each slot.
        bytes += set.capacity() * (size_of::<([u8; 16], u8, u16)>() + 1);
    }
    bytes += cap(&t.rules);
    for info in &t.rules {
        bytes += info.tier.capacity() + info.policy.capacity();
    }
    bytes
}

fn results(sizes: &[SizeFigures], notes: &mut Vec<String>) -> Vec<BenchResult> {
    let mut out = Vec::new();
    let rate = |ns: &[f64]| ns.iter().map(|ns| 1e9 / ns).collect::<Vec<_>>();
    let med = |v: &[f64]| median_min_max(v).0;
    for s in sizes {
        let label = count_label(s.rules);
        let name = |what: &str| format!("policy_{label}_rules_{what}");
        let linear_name = format!("linear scan ({} 5-tuple rules)", s.flat_rules);
        let acl_best = s
            .acl
            .as_ref()
            .and_then(|a| a.best().map(|(alg, ns)| (a, alg, ns)));
        let classify_anchor: (String, &Vec<f64>) = match acl_best {
            Some((a, alg, ns)) => (format!("dpdk-test-acl {alg} ({} rules)", a.rules), ns),
            None => (linear_name.clone(), &s.linear_ns),
        };
        out.push(
            BenchResult::from_samples(
                name("classify_rate"),
                "classifications/s",
                rate(&s.classify_ns),
            )
            .with_anchor(classify_anchor.0.clone(), med(&rate(classify_anchor.1))),
        );
        out.push(
            BenchResult::from_samples(name("classify_ns"), "ns", s.classify_ns.clone())
                .with_anchor(classify_anchor.0.clone(), med(classify_anchor.1)),
        );
        out.push(
            BenchResult::from_samples(name("classify_ns_vs_linear"), "ns", s.classify_ns.clone())
                .with_anchor(linear_name.clone(), med(&s.linear_ns)),
        );
        let mut linear = BenchResult::from_samples(
            format!("policy_linear_{label}_rules_ns"),
            "ns",
            s.linear_ns.clone(),
        );
        if let Some((a, alg, ns)) = acl_best {
            linear =
                linear.with_anchor(format!("dpdk-test-acl {alg} ({} rules)", a.rules), med(ns));
        }
        out.push(linear);

        let mut build = BenchResult::from_samples(name("build_ms"), "ms", s.build_ms.clone());
        if let Some(a) = s.acl.as_ref().filter(|a| !a.build_ms.is_empty()) {
            build = build.with_anchor(
                format!("dpdk-test-acl build ({} rules)", a.rules),
                med(&a.build_ms),
            );
        }
        out.push(build);
        out.push(
            BenchResult::from_samples(name("build_ms_vs_linear"), "ms", s.build_ms.clone())
                .with_anchor(
                    format!("flattening to {} rules", s.flat_rules),
                    s.flatten_ms,
                ),
        );
        let mut memory =
            BenchResult::from_samples(name("memory_mib"), "MiB", vec![mib(s.memory_bytes)]);
        if let Some(bytes) = s.acl.as_ref().and_then(|a| a.memory_bytes) {
            memory = memory.with_anchor(
                format!(
                    "rte_acl runtime ({} rules)",
                    s.acl.as_ref().map_or(0, |a| a.rules)
                ),
                mib(bytes),
            );
        }
        out.push(memory);
        out.push(
            BenchResult::from_samples(
                name("memory_mib_vs_linear"),
                "MiB",
                vec![mib(s.memory_bytes)],
            )
            .with_anchor(linear_name, mib(s.flat_bytes)),
        );
    }
    if let (Some(small), Some(large)) = (sizes.first(), sizes.last()) {
        if sizes.len() > 1 {
            let span = format!(
                "{}_to_{}",
                count_label(small.rules),
                count_label(large.rules)
            );
            let ratios: Vec<f64> = small
                .classify_ns
                .iter()
                .zip(&large.classify_ns)
                .map(|(a, b)| b / a)
                .collect();
            out.push(
                BenchResult::from_samples(
                    format!("policy_slowdown_{span}_rules"),
                    "slowdown",
                    ratios,
                )
                .with_anchor("goal: at most 1.5 (stated)", 1.5),
            );
            let ratio = |a: &[f64], b: &[f64]| med(b) / med(a);
            let mut others = vec![format!(
                "linear scan {:.1}x",
                ratio(&small.linear_ns, &large.linear_ns)
            )];
            if let (Some(a), Some(b)) = (small.acl.as_ref(), large.acl.as_ref()) {
                if let (Some((_, x)), Some((_, y))) = (a.best(), b.best()) {
                    others.push(format!("dpdk-test-acl {:.1}x", ratio(x, y)));
                }
            }
            notes.push(format!(
                "slowdown from {} to {} rules, same span: {}",
                small.rules,
                large.rules,
                others.join(", ")
            ));
        }
    }
    if let Some(s) = sizes.iter().find(|s| s.rules == 10_000) {
        if let Some((_, alg, ns)) = s
            .acl
            .as_ref()
            .and_then(|a| a.best().map(|(alg, ns)| (a, alg, ns)))
        {
            let r = med(ns) / med(&s.classify_ns);
            notes.push(format!(
                "goal at 10k rules: at least 1.0x dpdk-test-acl's rate; weir is at {r:.2}x of \
                 its {alg} ({})",
                if r >= 1.0 { "met" } else { "not met" }
            ));
        }
    }
    notes.push(
        "per packet, weir evaluates two programs (egress of the source, ingress of the \
         destination) and the linear scan walks two sections; dpdk-test-acl makes one lookup \
         over the whole flattened set (both sections), so it does less work per packet than \
         the policy asks for"
            .into(),
    );
    out
}

// ----------------------------------------------------------------------------------------
// dpdk-test-acl
// ----------------------------------------------------------------------------------------

/// The `dpdk-test-acl` anchor: its runs, its hugepages, its notes.
struct Acl {
    bin: PathBuf,
    stdbuf: Option<PathBuf>,
    prlimit: Option<PathBuf>,
    cpu: usize,
    workdir: PathBuf,
    file_prefix: String,
    timeout: Duration,
    /// Where the thread reading its output runs: any CPU but `cpu`.
    reader_cpu: Option<usize>,
    keep_files: bool,
    unsupported: BTreeSet<&'static str>,
    /// What `HugepageReservation` said at each size (raised, or why not).
    hugepage_notes: Vec<String>,
}

/// One size's DPDK inputs and state.
struct AclCase {
    label: String,
    rules_file: PathBuf,
    trace_file: PathBuf,
    log_file: PathBuf,
    rules: usize,
    traces: usize,
    mem_mb: usize,
    no_huge: bool,
    /// Puts `nr_hugepages` back when the size is done, however it ends.
    _hugepages: Option<HugepageReservation>,
    /// Time spent in this size's runs.
    spent: Duration,
    /// Why the runs stopped, once they did.
    stopped: Option<String>,
    /// Runs that measured something.
    runs: usize,
    all_algs: bool,
}

/// One `dpdk-test-acl` run.
enum AclOutcome {
    Ran {
        ns: f64,
        build_ms: Option<f64>,
        memory: Option<usize>,
        wall: Duration,
    },
    Unsupported,
    Failed(String),
}

impl Acl {
    fn new(bin: PathBuf, cfg: &PolicyBenchConfig) -> Self {
        let cpu = cfg.cpu.unwrap_or(0);
        let cpus = crate::report::Machine::detect(None).logical_cpus;
        Acl {
            bin,
            stdbuf: find_in_path("stdbuf"),
            prlimit: find_in_path("prlimit"),
            cpu,
            reader_cpu: (0..cpus).find(|&c| c != cpu),
            keep_files: cfg.keep_files,
            workdir: cfg.workdir.clone(),
            file_prefix: format!("weiracl{}", std::process::id()),
            timeout: cfg.acl_timeout,
            unsupported: BTreeSet::new(),
            hugepage_notes: Vec::new(),
        }
    }

    /// Writes the rule and trace files and reserves hugepages; an error is a note.
    fn prepare(
        &mut self,
        label: &str,
        flat: &FlatRules,
        probes: &[Probe],
    ) -> Result<AclCase, String> {
        let path = |what: &str| self.workdir.join(format!("acl-{label}-{what}"));
        let (rules_file, trace_file, log_file) =
            (path("rules.txt"), path("trace.txt"), path("log.txt"));
        let mut case = AclCase {
            label: label.to_string(),
            rules_file,
            trace_file,
            log_file,
            rules: 0,
            traces: probes.len(),
            mem_mb: 0,
            no_huge: false,
            _hugepages: None,
            spent: Duration::ZERO,
            stopped: None,
            runs: 0,
            all_algs: true,
        };
        case.rules = write_acl_rules(&case.rules_file, flat)
            .map_err(|e| format!("writing {}: {e}", case.rules_file.display()))?;
        write_acl_trace(&case.trace_file, probes)
            .map_err(|e| format!("writing {}: {e}", case.trace_file.display()))?;
        // EAL's own needs, the rules (96 B each in the context), the traces (16 B each) and
        // room for the runtime tables: 5.7 MiB for the 1.1M rules of 100k, but rte_acl's
        // tables grow fast with overlapping ranges, so 256 B more per rule.
        case.mem_mb = 512 + (case.rules * (96 + 256) + case.traces * 16) / (1 << 20);
        match HugepageReservation::ensure(case.mem_mb, "dpdk-test-acl") {
            Ok((reservation, note)) => {
                self.hugepage_notes.extend(note);
                case._hugepages = reservation;
            }
            Err(why) => {
                self.hugepage_notes.push(format!(
                    "dpdk-test-acl ran with --no-huge (4 KiB pages): {why}"
                ));
                case.no_huge = true;
            }
        }
        Ok(case)
    }

    /// One round at one size. Round 0 runs every algorithm, best first, unless one run takes
    /// over [`ACL_ALL_ALGS_MAX`]; later rounds run every algorithm while that still fits
    /// [`ACL_BUDGET`], else the fastest so far; no round starts once the budget is spent.
    fn round(&mut self, case: &mut AclCase, figures: &mut AclFigures, round: usize, rounds: usize) {
        if case.stopped.is_some() {
            return;
        }
        if round > 0 && case.spent >= ACL_BUDGET {
            case.stopped = Some(format!(
                "ran {} times in {:.0} s, then stopped (budget {} s per size)",
                case.runs,
                case.spent.as_secs_f64(),
                ACL_BUDGET.as_secs()
            ));
            return;
        }
        if round > 0 && case.all_algs && case.runs > 0 {
            let per_run = case.spent / case.runs as u32;
            let per_round = per_run * figures.algs.len().max(1) as u32;
            if case.spent + per_round * (rounds - round) as u32 > ACL_BUDGET {
                case.all_algs = false;
            }
        }
        let algs: Vec<&'static str> = if case.all_algs {
            ACL_ALGS.iter().rev().copied().collect()
        } else {
            figures.best().map(|(a, _)| a).into_iter().collect()
        };
        for alg in algs {
            if self.unsupported.contains(alg) {
                continue;
            }
            crate::progress::step(&format!(
                "policy: dpdk-test-acl on {} rules, {alg}, round {}/{rounds}",
                case.rules,
                round + 1
            ));
            match self.run_once(case, alg) {
                Ok(AclOutcome::Ran {
                    ns,
                    build_ms,
                    memory,
                    wall,
                }) => {
                    case.runs += 1;
                    case.spent += wall;
                    figures.algs.entry(alg).or_default().push(ns);
                    figures.build_ms.extend(build_ms);
                    figures.memory_bytes = figures.memory_bytes.or(memory);
                    if round == 0 && wall > ACL_ALL_ALGS_MAX {
                        case.all_algs = false;
                        break;
                    }
                }
                Ok(AclOutcome::Unsupported) => {
                    self.unsupported.insert(alg);
                }
                Ok(AclOutcome::Failed(why)) => {
                    case.stopped = Some(why);
                    return;
                }
                Err(e) => {
                    case.stopped = Some(e.to_string());
                    return;
                }
            }
        }
    }

    /// Notes about a size's runs; removes its files.
    fn close(&mut self, case: AclCase) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(why) = &case.stopped {
            notes.push(format!(
                "{} rules: dpdk-test-acl on {} rules: {}{why}",
                case.label,
                case.rules,
                if case.runs == 0 { "no figure: " } else { "" }
            ));
        }
        if !case.all_algs && case.runs > 0 {
            notes.push(format!(
                "{} rules: dpdk-test-acl took {:.1} s per run (EAL start, reading {} rules and \
                 {} probes, build, classification), so not every algorithm ran in every round",
                case.label,
                case.spent.as_secs_f64() / case.runs as f64,
                case.rules,
                case.traces
            ));
        }
        let _ = std::fs::remove_file(&case.log_file);
        if self.keep_files {
            notes.push(format!(
                "{} rules: dpdk-test-acl's inputs kept: {} and {} (perf/anchors/acl.sh runs them)",
                case.label,
                case.rules_file.display(),
                case.trace_file.display()
            ));
        } else {
            let _ = std::fs::remove_file(&case.rules_file);
            let _ = std::fs::remove_file(&case.trace_file);
        }
        notes
    }

    /// One run of `alg` on `case`.
    fn run_once(&self, case: &AclCase, alg: &str) -> Result<AclOutcome, PolicyBenchError> {
        let mut cmd = match &self.prlimit {
            Some(prlimit) => {
                let mut c = Command::new(prlimit);
                c.arg(format!(
                    "--data={}",
                    acl_data_limit(case.mem_mb, case.no_huge)
                ));
                c.arg("--");
                c
            }
            None => Command::new(self.stdbuf.as_deref().unwrap_or(&self.bin)),
        };
        match (&self.prlimit, &self.stdbuf) {
            (Some(_), Some(stdbuf)) => {
                cmd.arg(stdbuf).arg("-oL").arg(&self.bin);
            }
            (Some(_), None) => {
                cmd.arg(&self.bin);
            }
            (None, Some(_)) => {
                cmd.arg("-oL").arg(&self.bin);
            }
            (None, None) => {}
        }
        cmd.arg("-l")
            .arg(self.cpu.to_string())
            .args(["--no-pci", "--file-prefix", &self.file_prefix])
            .args(["--force-max-simd-bitwidth=512", "--log-level=lib.acl:debug"])
            .args(["-m".to_string(), case.mem_mb.to_string()])
            .arg(if case.no_huge {
                "--no-huge"
            } else {
                "--in-memory"
            })
            .arg("--")
            .arg(format!("--rulesf={}", case.rules_file.display()))
            .arg(format!("--tracef={}", case.trace_file.display()))
            .arg(format!("--rulenum={}", case.rules.max(1)))
            .arg(format!("--tracenum={}", case.traces))
            .arg(format!(
                "--iter={}",
                (4_000_000 / case.traces.max(1)).clamp(1, 100)
            ))
            .arg(format!("--alg={alg}"))
            .arg("--verbose=0");
        let command = format!("{cmd:?}").replace('"', "");
        let log =
            File::create(&case.log_file).map_err(|e| io_error(&case.log_file, "creating", e))?;
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| PolicyBenchError::Io {
                what: format!("starting {command}"),
                source: e,
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // The reader timestamps the lines that bound the build. On the measuring CPU it
        // would only run when dpdk-test-acl yields, so it runs on another one.
        let elsewhere = self.reader_cpu;
        let reader = std::thread::spawn(move || {
            if let Some(id) = elsewhere {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let deadline = started + self.timeout;
        let mut lines = Vec::new();
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
            }
        }
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if !timed_out && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    timed_out = true;
                    break None;
                }
            }
        };
        let _ = reader.join();
        let wall = started.elapsed();
        let runtime = Path::new("/var/run/dpdk").join(&self.file_prefix);
        if runtime.is_dir() {
            let _ = std::fs::remove_dir_all(runtime);
        }
        let stdout: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        let log = std::fs::read_to_string(&case.log_file).unwrap_or_default();
        let both = format!("{stdout}{log}");
        if timed_out {
            return Ok(AclOutcome::Failed(format!(
                "did not finish within {} s (build too slow at this size?) and was killed{}",
                self.timeout.as_secs(),
                if lines.iter().any(|(_, l)| l.starts_with("rte_acl_build(")) {
                    " after its build"
                } else {
                    " during its build"
                }
            )));
        }
        if both.contains(&format!("failed to setup {alg} method")) {
            return Ok(AclOutcome::Unsupported);
        }
        let build_line = lines
            .iter()
            .position(|(_, l)| l.starts_with("rte_acl_build("));
        if let Some(i) = build_line {
            if !lines[i].1.ends_with("finished with 0") {
                return Ok(AclOutcome::Failed(format!(
                    "its build failed ({}); its log ends: {}",
                    lines[i].1,
                    tail(&log, 3).replace('\n', " | ")
                )));
            }
        }
        let status = status.expect("not timed out");
        let Some(pps) = parse_acl_rate(&stdout).filter(|_| status.success()) else {
            return Ok(AclOutcome::Failed(format!(
                "`{command}` failed ({status}); its output ends: {}",
                tail(&both, 4).replace('\n', " | ")
            )));
        };
        let build_ms = build_line
            .filter(|&i| i > 0)
            .map(|i| (lines[i].0 - lines[i - 1].0).as_secs_f64() * 1e3)
            .filter(|_| self.stdbuf.is_some());
        Ok(AclOutcome::Ran {
            ns: 1e9 / pps,
            build_ms,
            memory: parse_acl_memory(&log),
            wall,
        })
    }

    /// Notes about every size: algorithms skipped, hugepages, how build time was taken.
    fn finish(self) -> Vec<String> {
        // One note for all sizes: the first, and how many sizes said the same kind of thing.
        let mut notes = Vec::new();
        if let Some(first) = self.hugepage_notes.first() {
            let more = self.hugepage_notes.len() - 1;
            notes.push(if more == 0 {
                first.clone()
            } else {
                format!("{first} (at the first size; likewise for {more} more, each on its own)")
            });
        }
        if !self.unsupported.is_empty() {
            notes.push(format!(
                "dpdk-test-acl algorithms this CPU or build cannot run, skipped: {}",
                self.unsupported.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if self.stdbuf.is_none() {
            notes.push("no stdbuf on PATH: dpdk-test-acl's build time was not measured".into());
        } else if self.reader_cpu.is_none() {
            notes.push(
                "one CPU only: dpdk-test-acl's output was read on its own CPU, so its build \
                 times may be late by up to its classification time"
                    .into(),
            );
        }
        notes
    }
}

/// The heap `dpdk-test-acl` may use (`prlimit --data`): what its build needs at most, so
/// that an infeasible build fails instead of pushing the machine into the OOM killer.
fn acl_data_limit(mem_mb: usize, no_huge: bool) -> u64 {
    let available_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    let share = (available_kb as f64 * 1024.0 * ACL_DATA_LIMIT_FRACTION) as u64;
    // Without hugepages, EAL's own memory is ordinary heap too.
    share + if no_huge { (mem_mb as u64) << 20 } else { 0 }
}

fn acl_notes(sizes: &[SizeFigures]) -> Vec<String> {
    sizes
        .iter()
        .filter_map(|s| {
            let a = s.acl.as_ref()?;
            let best = a.best().map(|(alg, _)| alg);
            let listed: Vec<String> = a
                .algs
                .iter()
                .map(|(alg, ns)| {
                    let (med, min, max) = median_min_max(ns);
                    format!(
                        "{alg}: {med:.2} ns [{min:.2} - {max:.2}] ({} runs){}",
                        ns.len(),
                        if Some(*alg) == best { " (anchor)" } else { "" }
                    )
                })
                .collect();
            Some(format!(
                "{} rules: dpdk-test-acl on {} rules (from {} flattened): {}; build {}; runtime {}",
                count_label(s.rules),
                a.rules,
                s.flat_rules,
                listed.join("; "),
                if a.build_ms.is_empty() {
                    "not measured".to_string()
                } else {
                    format!("{:.0} ms", median_min_max(&a.build_ms).0)
                },
                a.memory_bytes.map_or_else(
                    || "not reported".to_string(),
                    |b| format!("{:.1} MiB", mib(b))
                ),
            ))
        })
        .collect()
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn io_error(path: &Path, doing: &str, source: io::Error) -> PolicyBenchError {
    PolicyBenchError::Io {
        what: format!("{doing} {}", path.display()),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_prefixes_cover_exactly_against_a_naive_check() {
        let mut rng = SplitMix64(7);
        let mut cases = vec![
            (0, u32::MAX),
            (0, 0),
            (u32::MAX, u32::MAX),
            (1, u32::MAX - 1),
        ];
        for _ in 0..300 {
            let base = match rng.below(3) {
                0 => 0,
                1 => u32::MAX - 5000,
                _ => rng.next_u64() as u32 & !0xfff,
            };
            let lo = base + rng.below(2000) as u32;
            let hi = lo + rng.below(3000) as u32;
            cases.push((lo, hi));
        }
        for (lo, hi) in cases {
            let prefixes = interval_prefixes(lo, hi);
            assert!(
                prefixes.len() <= 62,
                "{lo}-{hi}: {} prefixes",
                prefixes.len()
            );
            let mut next = u64::from(lo);
            for &(addr, len) in &prefixes {
                let size = 1u64 << (32 - u32::from(len));
                assert_eq!(u64::from(addr) % size, 0, "{addr}/{len} is not aligned");
                assert_eq!(
                    u64::from(addr),
                    next,
                    "{lo}-{hi}: gap or overlap at {addr}/{len}"
                );
                next += size;
            }
            assert_eq!(next, u64::from(hi) + 1, "{lo}-{hi} not covered to its end");
            if hi - lo < 5000 {
                // The naive check: every address near the interval, one by one.
                let covered = |a: u32| {
                    prefixes.iter().any(|&(p, l)| {
                        let host = u32::MAX.checked_shr(u32::from(l)).unwrap_or(0);
                        a & !host == p
                    })
                };
                for a in lo.saturating_sub(20)..=hi.saturating_add(20) {
                    assert_eq!(covered(a), lo <= a && a <= hi, "{a} in {lo}-{hi}");
                }
            }
        }
        assert_eq!(interval_prefixes(0, u32::MAX), vec![(0, 0)]);
        assert_eq!(
            interval_prefixes(0xc612_0001, 0xc612_0006),
            vec![
                (0xc612_0001, 32),
                (0xc612_0002, 31),
                (0xc612_0004, 31),
                (0xc612_0006, 32)
            ]
        );
    }

    #[test]
    fn port_complement() {
        assert_eq!(complement(&[]), vec![(0, 65535)]);
        assert_eq!(complement(&[(0, 65535)]), vec![]);
        assert_eq!(
            complement(&[(80, 80), (0, 10), (75, 90)]),
            vec![(11, 74), (91, 65535)]
        );
        assert_eq!(complement(&[(65535, 65535)]), vec![(0, 65534)]);
    }

    #[test]
    fn generated_clusters_have_exactly_the_rules_asked_for_and_are_deterministic() {
        for rules in [1, 10, 37, 1000] {
            let g = generate_cluster(rules, 1).unwrap();
            assert_eq!(g.rules, rules);
            let c = &g.cluster;
            let counted: usize = c
                .k8s_policies
                .values()
                .map(|p| p.ingress.len() + p.egress.len())
                .chain(
                    c.policies
                        .values()
                        .map(|p| p.spec.ingress.len() + p.spec.egress.len()),
                )
                .chain(
                    c.global_policies
                        .values()
                        .map(|p| p.spec.ingress.len() + p.spec.egress.len()),
                )
                .sum();
            assert_eq!(counted, rules, "rules counted in the objects");
            assert!(c
                .k8s_policies
                .contains_key(&NamespacedName::new("app-00000", "default-deny-ingress")));
            for pods in &g.pods_by_namespace {
                for (_, addr) in pods {
                    assert!((POD_POOL.0..=POD_POOL.1).contains(addr));
                }
            }
        }
        let (a, b) = (
            generate_cluster(1000, 3).unwrap(),
            generate_cluster(1000, 3).unwrap(),
        );
        assert_eq!(a.cluster, b.cluster);
        assert_eq!(a.rule_ports, b.rule_ports);
        let g = generate_cluster(1000, 3).unwrap();
        assert!(g.policies.iter().all(|&n| n > 0), "{:?}", g.policies);
    }

    /// The linear scan is built to compute weir's verdicts exactly for IPv4 TCP/UDP; the
    /// benchmark checks it on every run, and this checks it on a cluster with every kind of
    /// rule the generator makes (Kubernetes and weir.dev, Deny/Allow/Log/Pass, named ports,
    /// endPort ranges, except and notNets, a tier that passes and tiers that deny).
    #[test]
    fn flattened_rules_decide_like_the_compiled_tables() {
        let g = generate_cluster(400, 11).unwrap();
        let compiled = compile(&g.cluster);
        let flat = flatten(&compiled, &g.cluster);
        assert_eq!(flat.inexact, 0);
        assert!(flat
            .egress
            .iter()
            .any(|r| matches!(r.action, FlatAction::Pass { .. })));
        assert!(flat.ingress.iter().any(|r| r.action == FlatAction::Log));
        let probes = generate_probes(&g, &compiled, 30_000, 12);
        let mut allowed = 0;
        for p in &probes {
            let weir = compiled.tables.evaluate(p.src, p.dst, &p.key).verdict;
            let linear = flat.classify(&Tuple::of(&p.key).unwrap());
            assert_eq!(weir, linear, "{p:?}");
            allowed += usize::from(weir == Verdict::Allow);
        }
        let share = allowed as f64 / probes.len() as f64;
        assert!((0.05..0.95).contains(&share), "allowed share {share}");
    }

    #[test]
    fn pass_jumps_past_its_tier_end() {
        let rule = |src: (u32, u32), action| FlatRule {
            src,
            dst: ANY,
            sport: ANY_PORT,
            dport: ANY_PORT,
            proto: 6,
            action,
        };
        let flat = FlatRules {
            egress: vec![
                rule((1, 1), FlatAction::Pass { next: 2 }),
                rule((0, 10), FlatAction::Deny),
                rule((1, 1), FlatAction::Log),
                rule((2, 2), FlatAction::Deny),
            ],
            ingress: vec![],
            inexact: 0,
        };
        let t = |src| Tuple {
            src,
            dst: 9,
            sport: 1,
            dport: 2,
            proto: 6,
        };
        assert_eq!(
            flat.classify(&t(1)),
            Verdict::Allow,
            "passed, logged, allowed at the end"
        );
        assert_eq!(flat.classify(&t(3)), Verdict::Deny, "tier end");
        assert_eq!(flat.classify(&t(11)), Verdict::Allow);
    }

    #[test]
    fn acl_files_and_output() {
        let dir = std::env::temp_dir().join(format!("weir-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flat = FlatRules {
            egress: vec![FlatRule {
                src: (0xc612_0001, 0xc612_0002),
                dst: ANY,
                sport: ANY_PORT,
                dport: (8080, 8089),
                proto: 6,
                action: FlatAction::Allow,
            }],
            ingress: vec![FlatRule {
                src: ANY,
                dst: (0xc612_0000, 0xc612_00ff),
                sport: ANY_PORT,
                dport: ANY_PORT,
                proto: 0,
                action: FlatAction::Deny,
            }],
            inexact: 0,
        };
        let rules = dir.join("rules.txt");
        assert_eq!(write_acl_rules(&rules, &flat).unwrap(), 3);
        assert_eq!(
            std::fs::read_to_string(&rules).unwrap(),
            "@198.18.0.1/32 0.0.0.0/0 0 : 65535 8080 : 8089 0x06/0xff\n\
             @198.18.0.2/32 0.0.0.0/0 0 : 65535 8080 : 8089 0x06/0xff\n\
             @0.0.0.0/0 198.18.0.0/24 0 : 65535 0 : 65535 0x00/0x00\n"
        );
        let trace = dir.join("trace.txt");
        let key = FlowKey {
            src: FlowKey::map_v4([198, 18, 0, 1]),
            dst: FlowKey::map_v4([198, 18, 0, 2]),
            src_port: 40000,
            dst_port: 80,
            proto: 6,
        };
        write_acl_trace(
            &trace,
            &[Probe {
                key,
                src: None,
                dst: None,
            }],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&trace).unwrap(),
            "3323068417 3323068418 40000 80 6\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(parse_acl_rate(CAPTURED_STDOUT), Some(31_415_899.36));
        assert_eq!(parse_acl_rate("rte_acl_build(3) finished with 0\n"), None);
        assert_eq!(parse_acl_memory(CAPTURED_LOG), Some(77_232));
        assert_eq!(parse_acl_memory("total: 5 bytes\n"), None);
    }

    /// `dpdk-test-acl ... --verbose=0` on 1000 ClassBench-style rules, as captured (stdout).
    const CAPTURED_STDOUT: &str = "\
dump_config:
rulesf:r.txt
tracef:t.txt
rulenum:65536
tracenum:100000
tracestep:256
bldcat:3
runcat:1
maxsize:0
iter:10
verbose:0
alg:7(avx512x32)
ipv6:0
rte_acl_build(3) finished with 0
acl context <TESTACL>@0x11bfbd9a80
  socket_id=-1
  alg=7
  first_load_sz=4
  max_rules=65536
  rule_size=96
  num_rules=1000
  num_categories=3
  num_tries=1
search_ip5tuples  @lcore 1: 10 iterations, 1000000 pkts, 1 categories, 82760642 cycles (0.03 sec), 82.76 cycles/pkt, 31415899.36 pkt/sec
";

    /// Its stderr with `--log-level=lib.acl:debug`, on the 1k-rule generated cluster.
    const CAPTURED_LOG: &str = "\
TELEMETRY: No legacy callbacks, legacy socket not created
ACL: Gen phase for ACL \"TESTACL\":
runtime memory footprint on socket -1:
single nodes/bytes used: 628/5024
quad nodes/vectors/bytes used: 358/1134/9072
DFA nodes/group64/bytes used: 17/68/36872
match nodes/bytes used: 172/22016
total: 77232 bytes
max limit: 18446744073709551615 bytes
ACL: Build phase for ACL \"TESTACL\":
node limit for tree split: 2048
nodes created: 1175
memory consumed: 8388615
ACL: trie 0: number of rules: 8806, indexes: 4
";
}
