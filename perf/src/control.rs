//! `weir-bench control`: the control plane at cluster scale, through the real kube-rs
//! watchers against the project's fake API server.
//!
//! A generated cluster (by default 10 000 pods and 5 000 Kubernetes NetworkPolicies across
//! 500 namespaces, plus weir.dev tiers, global policies, network sets and global network
//! sets, and 100 nodes) is loaded into the fake API server. The agent's control loop
//! ([`weir_control::calc::drive`] with the Kubernetes source) then runs for node `node-0`,
//! which hosts 1 % of the pods, and the benchmark reports:
//!
//! - `control_initial_sync_ms`: from starting the watchers to the first published tables;
//! - `control_event_to_snapshot_us` (p50 and p99): 1 000 single changes made one at a time
//!   (a pod's labels, a new policy, a namespace's labels, a pod added, that pod deleted, in
//!   turn; an added pod on this node every other time), each from the moment
//!   the API server accepts it to the moment the tables that include it are published;
//!   anchor: a full recompute of the same state (this node's tables compiled with an empty
//!   selector cache), timed after a sample of the changes;
//! - `control_snapshot_build_us`: the calculation alone, per change;
//! - `control_memory_kib`: the heap bytes that became live between starting the watchers
//!   (the fake server's copy already loaded) and the initial sync, counted by weir-bench's
//!   allocator (see `alloc`), beside the goal of 2 KiB per pod plus 1 KiB per rule;
//! - `control_churn_growth_kib`: the memory soak. After the changes, `churn` pods (half
//!   of them on this node, attached, the others elsewhere) are created and deleted through
//!   the calculator, [`CHURN_BATCH`] at a time, the tables compiled after every batch; the
//!   figure is the heap that stayed live once every churned pod is gone (the cluster as it
//!   was), beside the heap the calculator and its tables held before (the watchers and the
//!   fake API server are stopped: their history is not counted);
//!   `control_churn_drift_kib`: the median heap with the cluster back as before (after each
//!   batch's deletions) over the soak's second half, less the same over its first half
//!   (what a longer soak would keep adding: tables that grow with churn show here, maps
//!   that kept their peak capacity do not); `control_churn_batch_ms`: the median time to
//!   apply one batch and compile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weir_control::calc::{drive, Calculator, Change, DriveState, Update};
use weir_control::k8s::source;
use weir_control::policy::compile::{compile_local, Cache, CompileTimes};
use weir_control::policy::load::{load_documents, Object};
use weir_testkit::fake_api::FakeApi;

use crate::report::{percentile, BenchResult};
use crate::rng::SplitMix64 as Rng;

/// The benchmark's scale and length.
#[derive(Debug, Clone)]
pub struct ControlBenchConfig {
    pub namespaces: usize,
    pub pods: usize,
    pub policies: usize,
    pub nodes: usize,
    /// Single changes measured.
    pub changes: usize,
    /// Changes after which the full recompute is timed too.
    pub full_recomputes: usize,
    /// The control loop's coalescing window.
    pub window: Duration,
    /// Rounds.
    pub runs: usize,
    /// Pods created and deleted after the changes, in batches of [`CHURN_BATCH`] (the
    /// memory soak; 0 leaves it out).
    pub churn: usize,
}

impl Default for ControlBenchConfig {
    fn default() -> Self {
        ControlBenchConfig {
            namespaces: 500,
            pods: 10_000,
            policies: 5_000,
            nodes: 100,
            changes: 1_000,
            full_recomputes: 50,
            window: Duration::from_micros(200),
            runs: 5,
            churn: 10_000,
        }
    }
}

/// The node whose tables are calculated.
pub const NODE: &str = "node-0";

const APPS: usize = 8;

/// Pods created (then deleted) at once in the memory soak.
pub const CHURN_BATCH: usize = 100;
const TEAMS: usize = 10;

fn namespace(i: usize, team: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{i}"),
        "labels": {"team": format!("t{team}"), "kubernetes.io/metadata.name": format!("ns-{i}")}}})
}

/// Kubelet's default `maxPods`: the most pods a generated node may be expected to host.
pub const MAX_PODS_PER_NODE: usize = 110;

/// Pods a node hosts on average when `--nodes` is not given.
pub const DEFAULT_PODS_PER_NODE: usize = 100;

/// Pods with an IPv4 address (198.18.0.1 – 198.18.239.250, 250 per /24, the layout every
/// earlier run of this benchmark used); pods after them have an IPv6 address only
/// (2001:db8:1::/48). 198.18.240.0/24 and up hold the soak's pods and the nodes.
pub const IPV4_PODS: usize = 60_000;

/// Nodes with an IPv4 address (198.18.250.1 –) and pod CIDR (198.19.n.0/24, below the
/// network sets' 198.19.128.0/17); later nodes have IPv6 ones (2001:db8:2::/48,
/// 2001:db8:3::/48).
pub const IPV4_NODES: usize = 128;

/// Nodes for `pods` when none are given: a node for every [`DEFAULT_PODS_PER_NODE`]
/// pods (100 for the default 10 000).
pub fn default_nodes(pods: usize) -> usize {
    pods.div_ceil(DEFAULT_PODS_PER_NODE).max(1)
}

/// Refuses a cluster that the generator cannot describe or that no real node would run.
pub fn check(cfg: &ControlBenchConfig) -> Result<(), String> {
    if cfg.nodes == 0 || cfg.namespaces == 0 {
        return Err("give at least one node and one namespace".into());
    }
    if cfg.pods > cfg.nodes * MAX_PODS_PER_NODE {
        return Err(format!(
            "{} pods on {} nodes is {:.0} pods per node, above kubelet's default maximum of              {MAX_PODS_PER_NODE}: give --nodes {} or more",
            cfg.pods,
            cfg.nodes,
            cfg.pods as f64 / cfg.nodes as f64,
            cfg.pods.div_ceil(MAX_PODS_PER_NODE)
        ));
    }
    // Pod IPv6 addresses carry the index in 32 bits, node ones in 16.
    if cfg.pods > u32::MAX as usize || cfg.nodes > usize::from(u16::MAX) {
        return Err(format!("at most {} pods and {} nodes", u32::MAX, u16::MAX));
    }
    Ok(())
}

/// Pod `i`'s address (see [`IPV4_PODS`]).
pub fn pod_address(i: usize) -> String {
    if i < IPV4_PODS {
        format!("198.18.{}.{}", i / 250, i % 250 + 1)
    } else {
        format!("2001:db8:1::{:x}:{:x}", (i >> 16) + 1, i & 0xffff)
    }
}

/// Node `n`'s InternalIP and pod CIDR (see [`IPV4_NODES`]).
pub fn node_addresses(n: usize) -> (String, String) {
    if n < IPV4_NODES {
        (format!("198.18.250.{}", n + 1), format!("198.19.{n}.0/24"))
    } else {
        (
            format!("2001:db8:2::{:x}", n + 1),
            format!("2001:db8:3:{n:x}::/64"),
        )
    }
}

/// The node pod `i` runs on: spread by a hash, as a scheduler would.
fn node_of(cfg: &ControlBenchConfig, i: usize) -> usize {
    (Rng(i as u64 ^ 0xA5A5).next_u64() % cfg.nodes as u64) as usize
}

fn pod(cfg: &ControlBenchConfig, i: usize, app: usize) -> Value {
    pod_on(cfg, i, app, node_of(cfg, i))
}

/// Pod `i` on node `node` (this node's pods carry the attachment annotations).
fn pod_on(cfg: &ControlBenchConfig, i: usize, app: usize, node: usize) -> Value {
    let ns = i % cfg.namespaces;
    let mut annotations = json!({});
    if node == 0 {
        annotations =
            json!({"weir.dev/interface": format!("p{i}"), "weir.dev/mac": "02:00:00:00:00:01"});
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "namespace": format!("ns-{ns}"),
            "labels": {"app": format!("a{app}"), "tier": if i % 3 == 0 { "front" } else { "back" }},
            "annotations": annotations},
        "spec": {"nodeName": format!("node-{node}"), "containers": [{"name": "c", "image": "app:1",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"podIPs": [{"ip": pod_address(i)}]}})
}

fn k8s_policy(cfg: &ControlBenchConfig, i: usize, rng: &mut Rng) -> Value {
    let ns = i % cfg.namespaces;
    let (app, from, team) = (
        rng.below(APPS as u64),
        rng.below(APPS as u64),
        rng.below(TEAMS as u64),
    );
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("np-{i}"), "namespace": format!("ns-{ns}")},
        "spec": {"podSelector": {"matchLabels": {"app": format!("a{app}")}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": format!("a{from}")}}}],
                 "ports": [{"port": 8080, "protocol": "TCP"}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{team}")}},
                           "podSelector": {"matchLabels": {"tier": "front"}}}],
                 "ports": [{"port": "http"}]}]}})
}

/// The generated cluster, as API objects in creation order.
pub fn generate(cfg: &ControlBenchConfig) -> Vec<Value> {
    let mut rng = Rng(0xC0_7701);
    let mut out = Vec::new();
    for (name, order) in [("security", 100), ("platform", 200)] {
        out.push(
            json!({"apiVersion": "weir.dev/v1", "kind": "Tier", "metadata": {"name": name},
            "spec": {"order": order, "defaultAction": "Pass"}}),
        );
    }
    for n in 0..cfg.nodes {
        let (address, cidr) = node_addresses(n);
        out.push(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{n}")},
            "spec": {"podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]}}),
        );
    }
    for i in 0..cfg.namespaces {
        out.push(namespace(i, i % TEAMS));
    }
    for i in 0..cfg.pods {
        out.push(pod(cfg, i, rng.below(APPS as u64) as usize));
    }
    for i in 0..cfg.policies {
        out.push(k8s_policy(cfg, i, &mut rng));
    }
    for i in 0..50 {
        out.push(json!({"apiVersion": "weir.dev/v1", "kind": "GlobalNetworkSet",
            "metadata": {"name": format!("gset-{i}"), "labels": {"role": if i % 2 == 0 { "blocked" } else { "partner" }}},
            "spec": {"nets": [format!("198.19.{}.0/24", 128 + i)]}}));
    }
    for i in 0..cfg.namespaces / 5 {
        out.push(json!({"apiVersion": "weir.dev/v1", "kind": "NetworkSet",
            "metadata": {"name": format!("set-{i}"), "namespace": format!("ns-{}", i * 5), "labels": {"role": "partner"}},
            "spec": {"nets": [format!("198.19.{}.{}/32", 200 + i / 250, i % 250)]}}));
    }
    for i in 0..20 {
        let tier = if i % 2 == 0 { "security" } else { "platform" };
        out.push(json!({"apiVersion": "weir.dev/v1", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": format!("{tier}.g{i}")},
            "spec": {"tier": tier, "order": i, "selector": format!("app == 'a{}'", i % APPS),
                "namespaceSelector": format!("team != 't{}'", i % TEAMS),
                "egress": [
                    {"action": "Deny", "destination": {"selector": "role == 'blocked'", "namespaceSelector": "global()"}},
                    {"action": "Allow", "destination": {"selector": "role == 'partner'"}},
                    {"action": "Pass"}],
                "ingress": [{"action": "Pass"}]}}));
    }
    out
}

/// Rules in the generated cluster (each Kubernetes rule counts once per port entry).
fn rule_count(cfg: &ControlBenchConfig) -> usize {
    cfg.policies * 2 + 20 * 4
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn live_kib() -> f64 {
    crate::alloc::live_bytes() as f64 / 1024.0
}

/// One publication seen by the benchmark.
struct Published {
    at: Instant,
    build: Duration,
    /// Where the compilation's time went.
    split: CompileTimes,
    /// Whether the tables before were taken as they were.
    skipped: bool,
}

/// Runs the benchmark: `cfg.runs` rounds, each on a fresh server and control loop; each
/// figure is the median of the rounds' figures (min and max beside it).
pub fn run(cfg: &ControlBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), String> {
    check(cfg)?;
    let mut rounds = Vec::new();
    let mut notes = Vec::new();
    for _ in 0..cfg.runs.max(1) {
        let (results, n) = round(cfg)?;
        rounds.push(results);
        notes = n;
    }
    let mut merged = Vec::new();
    for (i, first) in rounds[0].iter().enumerate() {
        let values: Vec<f64> = rounds.iter().map(|r| r[i].value).collect();
        let mut result = BenchResult::from_samples(first.name.clone(), first.unit.clone(), values);
        if let Some(anchor) = &first.anchor {
            let anchors: Vec<f64> = rounds
                .iter()
                .filter_map(|r| r[i].anchor.as_ref().map(|a| a.value))
                .collect();
            let value = crate::report::median_min_max(&anchors).0;
            result = result.with_anchor(anchor.name.clone(), value);
        }
        merged.push(result);
    }
    notes.push(format!(
        "{} round(s), each on a fresh fake API server and control loop; per figure the median \
         of the rounds' figures",
        rounds.len()
    ));
    Ok((merged, notes))
}

fn round(cfg: &ControlBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let fake = FakeApi::new();
    let objects = generate(cfg);
    // What each pod's `app` and each namespace's `team` label is now: every change below
    // moves one to a different value (re-applying an object the model already holds
    // publishes nothing, rightly, and would be no change to time).
    let label_of = |o: &Value, kind: &str, key: &str| -> Option<(String, usize)> {
        (o["kind"] == kind).then_some(())?;
        let name = o["metadata"]["name"].as_str()?.to_owned();
        let value = o["metadata"]["labels"][key].as_str()?;
        Some((name, value[1..].parse().ok()?))
    };
    let mut apps: HashMap<String, usize> = objects
        .iter()
        .filter_map(|o| label_of(o, "Pod", "app"))
        .collect();
    let mut teams: HashMap<String, usize> = objects
        .iter()
        .filter_map(|o| label_of(o, "Namespace", "team"))
        .collect();
    for o in &objects {
        fake.apply(o.clone())
            .map_err(|e| format!("loading the fake API server: {e}"))?;
    }
    drop(objects);
    let rss_before = peak_rss_kib();
    let live_before = live_kib();

    let (tx, rx) = mpsc::channel::<Update>();
    let (pub_tx, pub_rx) = mpsc::channel::<Published>();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let client = {
        let _guard = runtime.enter();
        fake.client()
    };
    runtime.spawn(source::run(client, NODE.to_owned(), tx));
    let kinds: Vec<_> = source::watched().into_iter().map(|(k, _)| k).collect();
    let loop_stop = stop.clone();
    let window = cfg.window;
    let control = std::thread::spawn(move || {
        let mut calc = Calculator::new(NODE);
        let mut state = DriveState::default();
        drive(
            &rx,
            &mut calc,
            &kinds,
            window,
            &loop_stop,
            &mut state,
            |calc, _batch| {
                let before = calc.cache().times;
                let skipped = calc.compilations_skipped();
                let t = Instant::now();
                let compiled = calc.compile();
                let build = t.elapsed();
                std::hint::black_box(&compiled);
                pub_tx
                    .send(Published {
                        at: Instant::now(),
                        build,
                        split: calc.cache().times.since(&before),
                        skipped: calc.compilations_skipped() > skipped,
                    })
                    .is_ok()
            },
        );
        calc
    });

    let first = pub_rx
        .recv_timeout(Duration::from_secs(300))
        .map_err(|_| "no tables published within 300 s of starting the watchers".to_string())?;
    let initial_ms = (first.at - started).as_secs_f64() * 1e3;
    let rss_after = peak_rss_kib();
    let live_after = live_kib();

    // Single changes, one at a time.
    let local_pods: Vec<usize> = (0..cfg.pods).filter(|&i| node_of(cfg, i) == 0).collect();
    if local_pods.is_empty() {
        return Err(format!("no pod of the generated cluster runs on {NODE}"));
    }
    let mut rng = Rng(0x5EED);
    let mut latencies = Vec::with_capacity(cfg.changes);
    let mut builds = Vec::with_capacity(cfg.changes);
    let mut kinds_done = [0usize; KINDS.len()];
    let mut by_kind: [Vec<f64>; KINDS.len()] = Default::default();
    let mut split_by_kind = [CompileTimes::default(); KINDS.len()];
    let mut skipped_by_kind = [0u64; KINDS.len()];
    for c in 0..cfg.changes {
        let which = c % KINDS.len();
        // A pod added by change `c` (and deleted by the next one): an index no generated
        // pod has, so an address no pod has; on this node every other time.
        let added = |c: usize| cfg.pods + c;
        let object = match which {
            0 => {
                // A pod's labels: half the time one of this node's pods.
                let i = if c % 2 == 0 {
                    local_pods[rng.below(local_pods.len() as u64) as usize]
                } else {
                    rng.below(cfg.pods as u64) as usize
                };
                let app = apps.entry(format!("pod-{i}")).or_default();
                *app = (*app + 1 + rng.below(APPS as u64 - 1) as usize) % APPS;
                pod(cfg, i, *app)
            }
            1 => k8s_policy(cfg, cfg.policies + c, &mut rng),
            2 => {
                let i = rng.below(cfg.namespaces as u64) as usize;
                let team = teams.entry(format!("ns-{i}")).or_default();
                *team = (*team + 1 + rng.below(TEAMS as u64 - 1) as usize) % TEAMS;
                namespace(i, *team)
            }
            3 => {
                let i = added(c);
                let node = if (c / KINDS.len()) % 2 == 0 {
                    0
                } else {
                    node_of(cfg, i)
                };
                pod_on(cfg, i, rng.below(APPS as u64) as usize, node)
            }
            // The pod the change before added.
            _ => Value::Null,
        };
        // Drain anything stale (there should be nothing).
        while pub_rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        if object.is_null() {
            let i = added(c - 1);
            let ns = format!("ns-{}", i % cfg.namespaces);
            fake.delete("v1", "Pod", Some(&ns), &format!("pod-{i}"))
                .ok_or_else(|| format!("change {c}: pod-{i} was not there to delete"))?;
        } else {
            fake.apply(object).map_err(|e| format!("change {c}: {e}"))?;
        }
        let seen = pub_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("change {c}: no tables published within 10 s"))?;
        latencies.push((seen.at - t0).as_secs_f64() * 1e6);
        by_kind[which].push((seen.at - t0).as_secs_f64() * 1e6);
        builds.push(seen.build.as_secs_f64() * 1e6);
        kinds_done[which] += 1;
        split_by_kind[which] += seen.split;
        skipped_by_kind[which] += u64::from(seen.skipped);
    }
    stop.store(true, Ordering::SeqCst);
    let mut calc = control
        .join()
        .map_err(|_| "the control loop panicked".to_string())?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(fake);
    let churn = soak(cfg, &mut calc)?;

    // The anchor: the same state compiled from scratch.
    let local: Vec<_> = calc.local_pods().cloned().collect();
    let mut full = Vec::new();
    for _ in 0..cfg.full_recomputes.max(1) {
        let t = Instant::now();
        let compiled = compile_local(calc.cluster(), local.iter(), &mut Cache::default());
        full.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(compiled);
    }
    let full_median = crate::report::median_min_max(&full).0;

    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    let rules = rule_count(cfg);
    let grown_kib = live_after - live_before;
    if live_before == 0.0 {
        return Err("memory is counted by weir-bench's allocator: run this from weir-bench".into());
    }
    let budget_kib = (2 * cfg.pods + rules) as f64;
    let results = vec![
        BenchResult::from_samples("control_initial_sync_ms", "ms", vec![initial_ms]),
        BenchResult::from_samples("control_event_to_snapshot_p50_us", "us", vec![p50])
            .with_anchor("full recompute of the same state", full_median),
        BenchResult::from_samples("control_event_to_snapshot_p99_us", "us", vec![p99])
            .with_anchor("goal: 10 ms", 10_000.0),
        BenchResult::from_samples(
            "control_snapshot_build_us",
            "us",
            vec![crate::report::median_min_max(&builds).0],
        )
        .with_anchor("full recompute of the same state", full_median),
        BenchResult::from_samples("control_memory_kib", "KiB", vec![grown_kib])
            .with_anchor("goal: 2 KiB per pod + 1 KiB per rule", budget_kib),
    ];
    let mut results = results;
    if let Some(s) = &churn {
        results.push(
            BenchResult::from_samples("control_churn_growth_kib", "KiB", vec![s.growth_kib])
                .with_anchor("heap of the calculator and its tables before", s.before_kib),
        );
        results.push(BenchResult::from_samples(
            "control_churn_drift_kib",
            "KiB",
            vec![s.drift_kib],
        ));
        results.push(BenchResult::from_samples(
            "control_churn_batch_ms",
            "ms",
            vec![s.batch_ms],
        ));
    }
    let notes = vec![
        format!(
            "p99 event to snapshot by change: {}",
            KINDS
                .iter()
                .zip(&by_kind)
                .map(|(kind, l)| format!("{kind} {:.0} us", percentile(l, 0.99)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "where a change's compilation went, mean per change (resolutions are inside rule \
             lists; the pass is the rest; a change answered with the tables before counts 0): \
             {}",
            KINDS
                .iter()
                .zip(&split_by_kind)
                .zip(kinds_done)
                .map(|((kind, t), n)| {
                    let per = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
                    format!(
                        "{kind} {:.0} us = rule lists {:.0} (resolutions {:.0}) + programs {:.0} \
                         ({:.1} built) + pass {:.0}",
                        per(t.total),
                        per(t.rules),
                        per(t.resolving),
                        per(t.programs),
                        t.programs_built as f64 / n.max(1) as f64,
                        per(t.total.saturating_sub(t.rules + t.programs))
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        ),
        format!(
            "cluster: {} pods, {} Kubernetes NetworkPolicies ({rules} rules with the weir.dev \
             global policies) in {} namespaces, {} nodes; node {NODE} hosts {} pods",
            cfg.pods,
            cfg.policies,
            cfg.namespaces,
            cfg.nodes,
            local.len()
        ),
        format!(
            "changes: {} pod label changes, {} policy adds, {} namespace label changes, {} pods \
             added, {} deleted (on this node every other time), one at a time; coalescing \
             window {} us; full recompute timed {} times",
            kinds_done[0],
            kinds_done[1],
            kinds_done[2],
            kinds_done[3],
            kinds_done[4],
            cfg.window.as_micros(),
            full.len()
        ),
        format!(
            "memory: heap live bytes from before the watchers start (fake API server loaded, \
             {live_before:.0} KiB) to after the initial sync ({live_after:.0} KiB): the model, \
             the selector cache, the tables, the watchers; {:.0} B per pod+rule; peak RSS \
             {rss_before} KiB then {rss_after} KiB; {} selector resolutions cached",
            grown_kib * 1024.0 / (cfg.pods + rules) as f64,
            calc.cache().len()
        ),
        format!(
            "policy rule lists (per policy and direction) over the whole round: {} taken from \
             the compilation before, {} compiled; {} of the changes' compilations answered \
             with the tables before (nothing they read had changed), by kind: {}",
            calc.cache().rules_kept,
            calc.cache().rules_compiled,
            skipped_by_kind.iter().sum::<u64>(),
            KINDS
                .iter()
                .zip(skipped_by_kind)
                .zip(kinds_done)
                .map(|((kind, n), of)| format!("{kind} {n} of {of}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    let mut notes = notes;
    if let Some(s) = &churn {
        notes.push(format!(
            "churn: {} pods created and deleted, {CHURN_BATCH} at a time, tables compiled after \
             each batch; heap {:.0} KiB before, {:.0} KiB at the peak, {:.0} KiB after, \
             {:.0} to {:.0} KiB each time the cluster was back as before; {} tables compiled",
            cfg.churn,
            s.before_kib,
            s.peak_kib,
            s.before_kib + s.growth_kib,
            s.settled_min_kib,
            s.settled_max_kib,
            s.compilations
        ));
    }
    Ok((results, notes))
}

/// The kinds of single change, in the order they are made in turn.
const KINDS: [&str; 5] = [
    "pod label",
    "policy add",
    "namespace label",
    "pod add",
    "pod delete",
];

/// What the memory soak measured.
struct Soak {
    before_kib: f64,
    peak_kib: f64,
    growth_kib: f64,
    /// The median heap with the cluster as before over the soak's second half, less the
    /// same over its first half: what a longer soak would keep adding.
    drift_kib: f64,
    settled_min_kib: f64,
    settled_max_kib: f64,
    batch_ms: f64,
    compilations: usize,
}

/// A pod of the soak: even ones on this node (attached), odd ones elsewhere; addresses
/// from a range the generated cluster does not use.
fn churn_pod(cfg: &ControlBenchConfig, k: usize) -> Result<Object, String> {
    let ns = k % cfg.namespaces.max(1);
    let local = k % 2 == 0;
    let annotations = if local {
        json!({"weir.dev/interface": format!("c{k}"), "weir.dev/mac": "02:00:00:00:00:02"})
    } else {
        json!({})
    };
    let slot = k % (4 * CHURN_BATCH);
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("churn-{k}"), "namespace": format!("ns-{ns}"),
            "labels": {"app": format!("a{}", k % APPS), "tier": "back"},
            "annotations": annotations},
        "spec": {"nodeName": if local { NODE.to_owned() } else { "node-1".to_owned() },
            "containers": [{"name": "c", "image": "app:1",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"podIPs": [{"ip": format!("198.18.{}.{}", 240 + slot / 250, slot % 250 + 1)}]}});
    load_documents(&pod.to_string(), "churn")
        .map_err(|e| format!("churn pod {k}: {e}"))?
        .pop()
        .ok_or_else(|| format!("churn pod {k}: nothing decoded"))
}

/// The memory soak (see the module doc); `None` when `cfg.churn` is 0.
fn soak(cfg: &ControlBenchConfig, calc: &mut Calculator) -> Result<Option<Soak>, String> {
    if cfg.churn == 0 {
        return Ok(None);
    }
    let refused = |r: Vec<weir_control::calc::Refusal>, what: &str| {
        if r.is_empty() {
            Ok(())
        } else {
            Err(format!("churn: {what} refused: {}", r[0]))
        }
    };
    let mut compiled = calc.compile();
    let before = live_kib();
    let mut peak = before;
    let mut times = Vec::new();
    let mut compilations = 0;
    // The heap each time the cluster is back as it was (after a batch's deletions).
    let mut settled = Vec::new();
    let mut k = 0;
    while k < cfg.churn {
        let batch: Vec<usize> = (k..(k + CHURN_BATCH).min(cfg.churn)).collect();
        k += batch.len();
        let t = Instant::now();
        let mut refs = Vec::with_capacity(batch.len());
        for &i in &batch {
            let pod = churn_pod(cfg, i)?;
            refs.push(pod.resource.object_ref());
            refused(calc.apply(Change::Upsert(pod)), "a pod")?;
        }
        drop(compiled);
        compiled = calc.compile();
        compilations += 1;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        peak = peak.max(live_kib());
        let t = Instant::now();
        for r in refs {
            refused(calc.apply(Change::Delete(r)), "a deletion")?;
        }
        drop(compiled);
        compiled = calc.compile();
        compilations += 1;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        settled.push(live_kib());
    }
    drop(compiled);
    compiled = calc.compile();
    let after = live_kib();
    std::hint::black_box(&compiled);
    Ok(Some(Soak {
        before_kib: before,
        peak_kib: peak,
        growth_kib: after - before,
        drift_kib: {
            let half = settled.len() / 2;
            let median = |v: &[f64]| crate::report::median_min_max(v).0;
            if half == 0 {
                0.0
            } else {
                median(&settled[half..]) - median(&settled[..half])
            }
        },
        settled_min_kib: settled.iter().copied().fold(f64::INFINITY, f64::min),
        settled_max_kib: settled.iter().copied().fold(0.0, f64::max),
        batch_ms: crate::report::median_min_max(&times).0,
        compilations: compilations + 1,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn the_largest_kubernetes_cluster_gets_distinct_valid_addresses() {
        let mut seen = HashSet::new();
        for i in 0..150_000 {
            let a: IpAddr = pod_address(i)
                .parse()
                .unwrap_or_else(|e| panic!("pod {i}: {e}"));
            assert!(seen.insert(a), "pod {i}: {a} given twice");
        }
        let mut cidrs = HashSet::new();
        for n in 0..5_000 {
            let (address, cidr) = node_addresses(n);
            let a: IpAddr = address.parse().unwrap_or_else(|e| panic!("node {n}: {e}"));
            assert!(seen.insert(a), "node {n}: {a} given twice");
            let (net, len) = cidr.split_once('/').expect("a CIDR");
            let _: IpAddr = net.parse().unwrap_or_else(|e| panic!("node {n}: {e}"));
            assert!(len.parse::<u8>().is_ok(), "node {n}: {cidr}");
            assert!(cidrs.insert(cidr.clone()), "node {n}: {cidr} given twice");
        }
        // The soak's pods use 198.18.240.0/23, which no generated pod or node has.
        assert!(seen
            .iter()
            .all(|a| !a.to_string().starts_with("198.18.240.")
                && !a.to_string().starts_with("198.18.241.")));
    }

    #[test]
    fn more_pods_per_node_than_kubelet_allows_are_refused_with_the_nodes_to_give() {
        let cfg = ControlBenchConfig {
            pods: 60_000,
            nodes: 100,
            ..ControlBenchConfig::default()
        };
        let e = check(&cfg).expect_err("600 pods per node");
        assert!(e.contains("--nodes 546"), "{e}");
        let cfg = ControlBenchConfig {
            pods: 150_000,
            nodes: default_nodes(150_000),
            ..ControlBenchConfig::default()
        };
        assert_eq!(cfg.nodes, 1_500);
        check(&cfg).expect("100 pods per node");
        assert_eq!(default_nodes(ControlBenchConfig::default().pods), 100);
    }

    #[test]
    fn a_cluster_past_the_ipv4_pods_and_nodes_decodes_whole() {
        let cfg = ControlBenchConfig {
            pods: IPV4_PODS + 300,
            nodes: IPV4_NODES + 500,
            namespaces: 20,
            policies: 10,
            ..ControlBenchConfig::default()
        };
        check(&cfg).expect("a valid size");
        let objects = generate(&cfg);
        let text = objects
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n");
        let decoded = load_documents(&text, "generated").expect("every object decodes");
        assert_eq!(decoded.len(), objects.len());
    }
}
