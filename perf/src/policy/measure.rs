//! Measuring each size in interleaved rounds, and turning the samples into results and
//! notes.
//!
//! weir, the linear scan and DPDK are timed in the same rounds so that noise on a shared
//! machine hits them alike; this is also where the figures are made to mean something:
//! every probe's verdict is compared with the linear scan's before timing, and every timed
//! pass has to reproduce the checked answers.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weir_control::policy::compile::compile;
use weir_control::policy::load::Cluster;
use weir_dataplane::flow::FlowKey;
use weir_dataplane::policy::{
    Conntrack, ConntrackConfig, EndpointPolicy, PolicyTables, RuleInfo, Verdict,
};
use weir_dataplane::snapshot::EndpointId;

use super::acl::Acl;
use super::generate::{generate_cluster, generate_probes, Probe};
use super::linear::{flatten, merge_intervals, FlatRules, Tuple};
use super::{PolicyBenchConfig, PolicyBenchError};
use crate::report::{count_label, median_min_max, BenchResult};

/// Rule visits the linear scan makes per timed pass, which sizes its probe prefix.
pub const LINEAR_WORK: usize = 300_000_000;
/// How long `compile` may be repeated per size for the build figure (at least once).
pub const BUILD_BUDGET: Duration = Duration::from_secs(20);
/// The fewest probes the linear scan classifies per pass, however many rules there are.
const LINEAR_MIN_PROBES: usize = 1_000;
/// Established flows in the conntrack table of the established-flow figure: the allowed
/// probes' flows, at most this many, so that every size is timed on about the same number
/// (the figure grows with it: 64k flows spread over a default table of 16 MiB miss the
/// cache on every lookup).
const ESTABLISHED_FLOWS: usize = 16_384;
/// Conntrack lookups timed per round for the established-flow figure.
const ESTABLISHED_LOOKUPS: usize = 1_000_000;
/// The TCP flags of an established flow's packets.
const TCP_ACK: u8 = 0x10;
/// Probes classified, untimed, before each timed weir pass.
const WARM_UP_PROBES: usize = 200_000;
/// The seed of every generated cluster and, offset by the size, of its probes.
const SEED: u64 = 0x5745_4952_0070;

/// What the `rte_acl` anchor measured at one size.
pub(super) struct AclFigures {
    /// Rule lines (prefixes).
    pub(super) rules: usize,
    /// Plain first-match rules they were split from.
    pub(super) plain: usize,
    /// ns per packet, per algorithm.
    pub(super) algs: BTreeMap<&'static str, Vec<f64>>,
    pub(super) build_ms: Vec<f64>,
    pub(super) memory_bytes: Option<usize>,
}

impl AclFigures {
    /// The algorithm with the lowest median ns per packet.
    pub(super) fn best(&self) -> Option<(&'static str, &Vec<f64>)> {
        self.algs
            .iter()
            .map(|(&a, ns)| (a, ns, median_min_max(ns).0))
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .map(|(a, ns, _)| (a, ns))
    }
}

pub(super) fn run_pinned(
    cfg: &PolicyBenchConfig,
    acl_bin: Option<PathBuf>,
) -> Result<(Vec<BenchResult>, Vec<String>), PolicyBenchError> {
    let mut notes = vec![match cfg.cpu {
        Some(cpu) => format!("measuring thread and the rte_acl anchor pinned to CPU {cpu}"),
        None => "not pinned (the rte_acl anchor on CPU 0)".to_string(),
    }];
    let mut acl = acl_bin.map(|bin| Acl::new(bin, cfg));
    let mut sizes = Vec::new();
    let mut rules: Vec<usize> = cfg.rules.clone();
    rules.sort_unstable();
    rules.dedup();
    for &r in &rules {
        crate::progress::step(&format!("policy: {r} rules"));
        measure_size(cfg, r, acl.as_mut(), &mut notes, &mut sizes)?;
    }
    if let Some(acl) = acl {
        notes.extend(acl.finish());
    }
    notes.extend(acl_notes(&sizes));
    Ok((results(&sizes, &mut notes), notes))
}

/// What one size measured, for the whole cluster or for one node's tables.
struct SizeFigures {
    rules: usize,
    /// One node's tables and the probes that touch its pods, rather than the whole cluster.
    node: bool,
    /// ns per packet of an established flow (a conntrack hit), per round.
    established_ns: Vec<f64>,
    classify_ns: Vec<f64>,
    linear_ns: Vec<f64>,
    build_ms: Vec<f64>,
    memory_bytes: usize,
    flatten_ms: f64,
    flat_rules: usize,
    flat_bytes: usize,
    acl: Option<AclFigures>,
}

fn measure_size(
    cfg: &PolicyBenchConfig,
    target: usize,
    mut acl: Option<&mut Acl>,
    notes: &mut Vec<String>,
    sizes: &mut Vec<SizeFigures>,
) -> Result<(), PolicyBenchError> {
    let label = count_label(target);
    let started = Instant::now();
    let generated = generate_cluster(target, SEED)?;
    let generate_ms = started.elapsed().as_secs_f64() * 1e3;

    // The first compile is timed too; later rounds add samples within the budget.
    let started = Instant::now();
    let compiled = compile(&generated.cluster);
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let memory = tables_memory(&compiled.tables);

    let started = Instant::now();
    let flat = flatten(&compiled, &generated.cluster);
    let flatten_ms = started.elapsed().as_secs_f64() * 1e3;

    let probes = generate_probes(&generated, &compiled, cfg.packets, SEED + target as u64);
    let programs = program_rules(&compiled.tables);
    let distinct = compiled.tables.programs().count();
    let index_bytes = compiled.tables.decision_bytes();
    let intervals: usize = compiled
        .tables
        .programs()
        .map(|p| p.address_intervals())
        .sum();
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
    let build_ms = vec![build_ms];
    sizes.push(measure_case(
        cfg,
        Case {
            target: generated.rules,
            label: label.clone(),
            node: false,
            tables: &compiled.tables,
            memory,
            flat: &flat,
            flatten_ms,
            probes: &probes,
            recompile: Some((&generated.cluster, build_ms)),
        },
        acl.as_deref_mut(),
        notes,
    )?);

    // One node's tables: the busiest node's pods, the programs that select them, the
    // rules they check, and the probes to or from them.
    let Some(pods) = generated.pods_by_node.iter().max_by_key(|p| p.len()) else {
        return Ok(());
    };
    let local: std::collections::HashSet<EndpointId> = pods
        .iter()
        .filter_map(|(name, _)| compiled.endpoint(name))
        .collect();
    let addresses = merge_intervals(pods.iter().map(|&(_, a)| (a, a)).collect());
    let tables = PolicyTables {
        endpoints: compiled
            .tables
            .endpoints
            .iter()
            .enumerate()
            .map(|(id, e)| {
                if local.contains(&(id as EndpointId)) {
                    e.clone()
                } else {
                    EndpointPolicy::default()
                }
            })
            .collect(),
        warm_pays: Default::default(),
        sets: compiled.tables.sets.clone(),
        rules: compiled.tables.rules.clone(),
    };
    let memory = tables_memory(&tables);
    let started = Instant::now();
    let node_flat = flat.on_node(&addresses);
    let flatten_ms = started.elapsed().as_secs_f64() * 1e3;
    let is_local = |e: Option<EndpointId>| e.is_some_and(|e| local.contains(&e));
    let node_probes: Vec<Probe> = probes
        .iter()
        .filter(|p| is_local(p.src) || is_local(p.dst))
        .copied()
        .collect();
    if node_probes.is_empty() {
        notes.push(format!(
            "{label} rules, one node: no probe touches its pods"
        ));
        return Ok(());
    }
    let node_rules = program_rules(&tables);
    notes.push(format!(
        "{label} rules, one node: the busiest of {} nodes, {} pods, {node_rules} rules over \
         their programs; flattened: {} egress + {} ingress 5-tuple rules; {} of the probes \
         touch its pods; its memory counts every address and named-port set of the cluster",
        generated.nodes,
        pods.len(),
        node_flat.egress.len(),
        node_flat.ingress.len(),
        node_probes.len(),
    ));
    sizes.push(measure_case(
        cfg,
        Case {
            target: generated.rules,
            label: format!("{label}-node"),
            node: true,
            tables: &tables,
            memory,
            flat: &node_flat,
            flatten_ms,
            probes: &node_probes,
            recompile: None,
        },
        acl,
        notes,
    )?);
    Ok(())
}

/// Rules over every endpoint's programs (a program shared by endpoints counts for each).
fn program_rules(tables: &PolicyTables) -> usize {
    tables
        .endpoints
        .iter()
        .map(|e| {
            e.ingress.as_ref().map_or(0, |p| p.rule_count())
                + e.egress.as_ref().map_or(0, |p| p.rule_count())
        })
        .sum()
}

/// What one case classifies: the whole cluster's tables, or one node's.
struct Case<'a> {
    target: usize,
    /// `10k`, or `10k-node` for one node's tables.
    label: String,
    node: bool,
    tables: &'a PolicyTables,
    memory: usize,
    flat: &'a FlatRules,
    flatten_ms: f64,
    probes: &'a [Probe],
    /// The cluster to compile again in later rounds (within [`BUILD_BUDGET`]), with the
    /// first compile's time; `None`: no build figure.
    recompile: Option<(&'a Cluster, Vec<f64>)>,
}

/// Checks weir's answers against the linear scan, then times weir, the linear scan and the
/// `rte_acl` anchor in interleaved rounds.
fn measure_case(
    cfg: &PolicyBenchConfig,
    case: Case<'_>,
    mut acl: Option<&mut Acl>,
    notes: &mut Vec<String>,
) -> Result<SizeFigures, PolicyBenchError> {
    let Case {
        target,
        label,
        node,
        tables,
        memory,
        flat,
        flatten_ms,
        probes,
        recompile,
    } = case;
    let who = if node {
        format!("{} rules, one node", count_label(target))
    } else {
        format!("{} rules", count_label(target))
    };
    let (cluster, mut build_ms) = match recompile {
        Some((cluster, ms)) => (Some(cluster), ms),
        None => (None, Vec::new()),
    };
    let linear_n = (LINEAR_WORK / flat.len().max(1))
        .max(LINEAR_MIN_PROBES)
        .min(probes.len());
    let tuples: Vec<Tuple> = probes[..linear_n]
        .iter()
        .map(|p| Tuple::of(&p.key).expect("generated probes are IPv4"))
        .collect();

    // Right answers first: weir on every probe, the linear scan on its prefix.
    let (mut allowed, mut linear_allowed) = (0u64, 0u64);
    let mut verdicts = Vec::with_capacity(probes.len());
    let mut decided = 0usize;
    for (i, p) in probes.iter().enumerate() {
        let d = tables.evaluate(p.src, p.dst, &p.key);
        verdicts.push(d.verdict);
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
                    "{who}, probe {i} ({} -> {}, proto {}, port {} -> {}): weir \
                     says {:?} ({}), the linear scan {linear:?}",
                    p.key.src_ip(),
                    p.key.dst_ip(),
                    p.key.proto,
                    p.key.src_port,
                    p.key.dst_port,
                    d.verdict,
                    explain(tables, &d),
                )));
            }
        }
    }
    notes.push(format!(
        "{who}: {} probes, {:.1}% allowed, {:.1}% decided by a rule (the rest: no \
         policy selects either end, or every tier passed); the linear scan classified the \
         first {linear_n} and agreed with weir on every one",
        probes.len(),
        allowed as f64 * 100.0 / probes.len() as f64,
        decided as f64 * 100.0 / probes.len() as f64,
    ));

    // DPDK's input files.
    let mut acl_case = None;
    if let Some(acl) = acl.as_deref_mut() {
        match acl.prepare(&label, flat, probes, &verdicts) {
            Ok(case) => acl_case = Some(case),
            Err(why) => notes.push(format!("{who}: rte_acl not run: {why}")),
        }
    }

    let mut classify_ns = Vec::new();
    let mut linear_ns = Vec::new();
    let mut established_ns = Vec::new();
    let established: Vec<FlowKey> = probes
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| **v == Verdict::Allow)
        .map(|(p, _)| p.key)
        .take(ESTABLISHED_FLOWS)
        .collect();
    let mut acl_figures = acl_case.as_ref().map(|c| AclFigures {
        rules: c.rules,
        plain: c.plain,
        algs: BTreeMap::new(),
        build_ms: Vec::new(),
        memory_bytes: None,
    });
    for round in 0..cfg.runs {
        let spent: f64 = build_ms.iter().sum();
        let next = build_ms.last().copied().unwrap_or(0.0);
        if let Some(cluster) =
            cluster.filter(|_| round > 0 && spent + next <= BUILD_BUDGET.as_secs_f64() * 1e3)
        {
            let started = Instant::now();
            let again = compile(black_box(cluster));
            build_ms.push(started.elapsed().as_secs_f64() * 1e3);
            drop(black_box(again));
        }
        let (ns, sum) = time_weir(tables, probes);
        classify_ns.push(check_sum("weir", target, sum, allowed, ns)?);
        if !established.is_empty() {
            let (ns, hits) = time_established(&established);
            established_ns.push(check_sum(
                "established-flow",
                target,
                hits,
                ESTABLISHED_LOOKUPS as u64,
                ns,
            )?);
        }
        let (ns, sum) = time_linear(flat, &tuples);
        linear_ns.push(check_sum("linear scan", target, sum, linear_allowed, ns)?);
        if let (Some(acl), Some(case), Some(figures)) =
            (acl.as_deref_mut(), acl_case.as_mut(), acl_figures.as_mut())
        {
            acl.round(case, figures, round, cfg.runs)?;
        }
    }
    if cluster.is_some() && build_ms.len() < cfg.runs {
        notes.push(format!(
            "{who}: compile timed {} times (of {} rounds) to stay within {} s",
            build_ms.len(),
            cfg.runs,
            BUILD_BUDGET.as_secs()
        ));
    }
    let (lmed, lmin, lmax) = median_min_max(&linear_ns);
    notes.push(format!(
        "{who}: linear scan {lmed:.1} ns per classification [{lmin:.1} - {lmax:.1}] \
         over {} rules, {:.2} MiB",
        flat.len(),
        mib(flat.memory_bytes())
    ));
    if let (Some(acl), Some(case)) = (acl, acl_case) {
        notes.extend(acl.close(case));
    }
    let acl_figures = acl_figures.filter(|f| !f.algs.is_empty());
    Ok(SizeFigures {
        rules: target,
        node,
        established_ns,
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

/// ns per packet and hits of [`ESTABLISHED_LOOKUPS`] conntrack lookups over `flows`, all
/// inserted first: what the policy stage does for every packet of a flow it allowed
/// before, instead of classifying (a TCP ACK, the table at its default size). The flows
/// the table did not keep (a full probe sequence) are left out, so every lookup must hit.
fn time_established(flows: &[FlowKey]) -> (f64, u64) {
    let mut table = Conntrack::new(ConntrackConfig::default());
    for f in flows {
        table.insert(f, 1, 0);
    }
    let kept: Vec<FlowKey> = flows
        .iter()
        .filter(|f| table.lookup(f, TCP_ACK, 1).is_some())
        .copied()
        .collect();
    if kept.is_empty() {
        return (0.0, 0);
    }
    let flows = &kept[..];
    let mut pass = |n: usize| {
        let mut hits = 0u64;
        for f in flows.iter().cycle().take(n) {
            hits += u64::from(table.lookup(black_box(f), TCP_ACK, 1).is_some());
        }
        black_box(hits)
    };
    pass(flows.len());
    let started = Instant::now();
    let hits = pass(ESTABLISHED_LOOKUPS);
    (
        started.elapsed().as_secs_f64() * 1e9 / ESTABLISHED_LOOKUPS as f64,
        hits,
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
    for program in t.programs() {
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
        // One node's figures: `policy_<R>_rules_node_...`, `policy_linear_<R>_rules_node_ns`.
        let label = format!("{}_rules{}", count_label(s.rules), node_infix(s));
        let name = |what: &str| format!("policy_{label}_{what}");
        let linear_name = format!("linear scan ({} 5-tuple rules)", s.flat_rules);
        let acl_best = s
            .acl
            .as_ref()
            .and_then(|a| a.best().map(|(alg, ns)| (a, alg, ns)));
        let classify_anchor: (String, &Vec<f64>) = match acl_best {
            Some((a, alg, ns)) => (acl_anchor(a, alg), ns),
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
        if !s.established_ns.is_empty() {
            out.push(
                BenchResult::from_samples(name("established_ns"), "ns", s.established_ns.clone())
                    .with_anchor("weir, a new flow (classified)", med(&s.classify_ns)),
            );
        }
        out.push(
            BenchResult::from_samples(name("classify_ns_vs_linear"), "ns", s.classify_ns.clone())
                .with_anchor(linear_name.clone(), med(&s.linear_ns)),
        );
        let mut linear = BenchResult::from_samples(
            format!("policy_linear_{label}_ns"),
            "ns",
            s.linear_ns.clone(),
        );
        if let Some((a, alg, ns)) = acl_best {
            linear = linear.with_anchor(acl_anchor(a, alg), med(ns));
        }
        out.push(linear);

        // One node's tables are not compiled on their own: no build figure.
        if !s.build_ms.is_empty() {
            let mut build = BenchResult::from_samples(name("build_ms"), "ms", s.build_ms.clone());
            if let Some(a) = s.acl.as_ref().filter(|a| !a.build_ms.is_empty()) {
                build = build.with_anchor(
                    format!("rte_acl build ({} rules)", a.rules),
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
        }
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
    let whole: Vec<&SizeFigures> = sizes.iter().filter(|s| !s.node).collect();
    if let (Some(small), Some(large)) = (whole.first(), whole.last()) {
        if whole.len() > 1 {
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
                    others.push(format!("rte_acl {:.1}x", ratio(x, y)));
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
    for s in sizes.iter().filter(|s| s.rules == 10_000) {
        if let Some((_, alg, ns)) = s
            .acl
            .as_ref()
            .and_then(|a| a.best().map(|(alg, ns)| (a, alg, ns)))
        {
            let r = med(ns) / med(&s.classify_ns);
            notes.push(format!(
                "goal at 10k rules{}: at least 1.0x rte_acl's rate, both directions decided; \
                 weir is at {r:.2}x of its {alg} ({})",
                if s.node {
                    ", one node's tables"
                } else {
                    ", whole cluster"
                },
                if r >= 1.0 { "met" } else { "not met" }
            ));
        }
    }
    notes.push(
        "per packet, weir evaluates two programs (egress of the source, ingress of the \
         destination), the linear scan walks two sections, and rte_acl classifies two \
         categories (the egress rules, the ingress rules) in one call, on the flattened rules \
         with Pass and Log compiled out; its first run at each size had every answer checked \
         against weir's verdict"
            .into(),
    );
    out
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
                "{} rules{}: rte_acl on {} rule lines ({} plain first-match rules from {} \
                 flattened): {}; build {}; runtime {}",
                count_label(s.rules),
                if s.node { ", one node" } else { "" },
                a.rules,
                a.plain,
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

/// The name of the `rte_acl` anchor's figure.
fn acl_anchor(a: &AclFigures, alg: &str) -> String {
    format!("rte_acl {alg}, both directions ({} rules)", a.rules)
}

/// `_node` in the names of one node's figures.
fn node_infix(s: &SizeFigures) -> &'static str {
    if s.node {
        "_node"
    } else {
        ""
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}
