//! The service stage in memory: the per-packet cost of the whole pipeline on frames from
//! pods to a service's cluster IP, at 10 to 10k services × 10 endpoints, beside the same
//! pipeline on the same frames addressed straight to a backend pod (no service in the
//! snapshot). The difference is what the service stage costs a packet.
//!
//! The node has [`PODS`] pods: the first half are the services' endpoints (service `i`
//! has pods `(3i + j) mod 32`, j < endpoints, on [`BACKEND_PORT`]), the second half send
//! (no client is its own backend: hairpin is another path). Frames come from a pool of
//! [`FLOWS`] templates, 256 per batch in turn; template `t` goes from pod `32 + t mod 32`
//! to service `7919 t mod n` (so at 10k services the traffic touches 4096 services, not
//! one hot entry), UDP port 80. The direct frames go to the backend the service stage
//! chose for the same flow (read from a verification pass), port [`BACKEND_PORT`].
//!
//! Two cases, each with the same harness work on both sides:
//! - **established**: the 4096 flows repeat; after the first pass every packet finds its
//!   flow in conntrack (warm), the clock advancing 1 µs per batch.
//! - **first packets**: every packet has a source port never used before within the
//!   UDP timeout, so every packet is a new connection: a frontend lookup, a Maglev pick
//!   and two entries created in the worker's service connection table. The clock advances
//!   0.94 s per batch, so that a connection expires (UDP, 120 s) after 32k newer ones:
//!   the table (2^17 entries, two per connection) fills, is swept of the expired half, and
//!   fills again, the sweep's cost spread over the packets as on a node at that churn. A
//!   source port comes back only after 2M packets (about 2 simulated hours).
//!
//! Before timing, one pass checks the answer: every frame to a service leaves addressed
//! to one of that service's endpoints on [`BACKEND_PORT`], and no packet is dropped.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_dataplane::node::output::{OutputMap, Owner};
use weir_dataplane::service::{
    BackendSpec, FrontendKind, FrontendSpec, ServiceSpec, ServiceTable, UDP,
};
use weir_dataplane::{craft, Batch, Frame, FrameRegion, Pipeline, Snapshot, BATCH_SIZE};

use super::model::{cluster_ip, TARGET_PORT};
use crate::pipeline::{node_builder, pod_ip, pod_mac, GW_MAC};
use crate::report::BenchResult;

/// Pods on the node: the first half are endpoints, the second half clients.
pub const PODS: usize = 64;
/// The endpoints' port.
pub const BACKEND_PORT: u16 = 5201;
/// Flow templates the batches cycle through.
pub const FLOWS: usize = 4096;
/// The goal for the stage's cost per packet, in ns.
pub const GOAL_STAGE_NS: f64 = 10.0;
/// The goal for the cost at 10k services over the cost at 10.
pub const GOAL_FLAT_RATIO: f64 = 1.2;

const CLIENTS: usize = PODS / 2;
const BACKENDS: usize = PODS / 2;
/// The service table's UDP timeout (source NAT's, `node::nat`).
const UDP_TIMEOUT_NS: u64 = 120_000_000_000;
/// Connections the first-packet case keeps alive: a quarter of the table's entries (two
/// per connection), so the table fills with half expired.
const LIVE_FLOWS: u64 = (weir_dataplane::node::service::MAX_ENTRIES / 4) as u64;
const FIRST_STEP_NS: u64 = UDP_TIMEOUT_NS * BATCH_SIZE as u64 / LIVE_FLOWS;
const CHUNK: usize = 2048;

/// What to run.
#[derive(Debug, Clone)]
pub struct StageBenchConfig {
    /// Rounds (the median is reported).
    pub runs: usize,
    /// Length of one measurement.
    pub duration: Duration,
    /// Service counts.
    pub services: Vec<usize>,
    /// Endpoints per service (at most 32).
    pub endpoints: usize,
    /// Frame length in memory (60: 64 B on the wire).
    pub frame_len: usize,
    /// The cases to measure (both by default).
    pub cases: Vec<Case>,
}

/// Which packets a measurement sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Case {
    /// The same 4096 flows over and over.
    Established,
    /// A new flow every packet.
    First,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Established => "established",
            Case::First => "first_packet",
        }
    }
}

/// The specs of `n` UDP services on port 80, `endpoints` endpoints each among the node's
/// backend pods.
pub fn specs(n: usize, endpoints: usize) -> Vec<ServiceSpec> {
    (0..n)
        .map(|i| ServiceSpec {
            namespace: "bench".into(),
            name: format!("svc-{i}"),
            port_name: "p".into(),
            protocol: UDP,
            frontends: vec![FrontendSpec {
                addr: IpAddr::V4(cluster_ip(i)),
                port: TARGET_PORT,
                kind: FrontendKind::ClusterIp,
            }],
            backends: (0..endpoints)
                .map(|j| BackendSpec {
                    addr: IpAddr::V4(pod_ip((3 * i + j) % BACKENDS)),
                    port: BACKEND_PORT,
                    ready: true,
                    serving: true,
                    terminating: false,
                    local: true,
                })
                .collect(),
            external_local: false,
            internal_local: false,
            affinity_seconds: None,
        })
        .collect()
}

/// The node with `n` services (none when `n` is 0).
pub fn snapshot(n: usize, endpoints: usize) -> Result<Snapshot, String> {
    let mut b = node_builder(PODS);
    if n > 0 {
        let table = ServiceTable::build(specs(n, endpoints), None).map_err(|e| e.to_string())?;
        b.services(Arc::new(table));
    }
    b.build(1).map_err(|e| format!("{e:?}"))
}

/// Runs the benchmark: per service count, per case, the pipeline to the service beside the
/// pipeline straight to the backend, interleaved per round.
pub fn run(cfg: &StageBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), String> {
    if cfg.endpoints == 0 || cfg.endpoints > BACKENDS {
        return Err(format!("endpoints must be 1..={BACKENDS}"));
    }
    if cfg.services.is_empty() || cfg.services.contains(&0) || cfg.runs == 0 {
        return Err("give at least one run and service counts above 0".into());
    }
    if cfg.cases.is_empty() {
        return Err("give at least one case (established, first)".into());
    }
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let direct_snapshot = snapshot(0, cfg.endpoints)?;
    // The stage's delta per packet, per (case, services), for the flatness ratio.
    let mut deltas: Vec<(Case, usize, Vec<f64>, Vec<f64>)> = Vec::new();
    for &n in &cfg.services {
        crate::progress::step(&format!("services stage: {n} services"));
        let svc_snapshot = snapshot(n, cfg.endpoints)?;
        let to_service = templates(n, cfg.frame_len, None);
        let chosen = verify(&svc_snapshot, &to_service, n, cfg.endpoints)?;
        let direct = templates(n, cfg.frame_len, Some(&chosen));
        verify_direct(&direct_snapshot, &direct, &chosen)?;
        let count = crate::report::count_label(n);
        for &case in &cfg.cases {
            let (mut svc, mut base) = (Vec::new(), Vec::new());
            for _ in 0..cfg.runs {
                svc.push(measure(&svc_snapshot, &to_service, case, cfg.duration)?);
                base.push(measure(&direct_snapshot, &direct, case, cfg.duration)?);
            }
            let name = format!("services_stage_{count}_{}", case.label());
            let delta: Vec<f64> = svc.iter().zip(&base).map(|(s, b)| s - b).collect();
            let base_median = crate::report::median_min_max(&base).0;
            out.push(
                BenchResult::from_samples(format!("{name}_ns"), "ns/pkt", svc.clone()).with_anchor(
                    format!("direct_to_backend_{}_ns", case.label()),
                    base_median,
                ),
            );
            out.push(BenchResult::from_samples(
                format!("direct_to_backend_{count}_{}_ns", case.label()),
                "ns/pkt",
                base.clone(),
            ));
            out.push(
                BenchResult::from_samples(format!("{name}_cost_ns"), "ns/pkt", delta.clone())
                    .with_anchor("goal", GOAL_STAGE_NS),
            );
            deltas.push((case, n, svc, delta));
        }
    }
    // Flatness: the largest count over the smallest, for the whole pipeline and the stage.
    let (lo, hi) = (
        *cfg.services.iter().min().expect("not empty"),
        *cfg.services.iter().max().expect("not empty"),
    );
    if hi > lo {
        for &case in &cfg.cases {
            let get = |n: usize| deltas.iter().find(|d| d.0 == case && d.1 == n);
            let (Some(a), Some(b)) = (get(lo), get(hi)) else {
                continue;
            };
            let ratio = |x: &[f64], y: &[f64]| -> Vec<f64> {
                x.iter().zip(y).map(|(x, y)| y / x.max(1e-9)).collect()
            };
            let name = format!(
                "services_stage_{}_over_{}_{}",
                crate::report::count_label(hi),
                crate::report::count_label(lo),
                case.label()
            );
            out.push(
                BenchResult::from_samples(name.clone(), "slowdown", ratio(&a.2, &b.2))
                    .with_anchor("goal", GOAL_FLAT_RATIO),
            );
            out.push(
                BenchResult::from_samples(format!("{name}_cost"), "slowdown", ratio(&a.3, &b.3))
                    .with_anchor("goal", GOAL_FLAT_RATIO),
            );
        }
    }
    notes.push(format!(
        "services_stage_*: the whole pipeline in memory (parse … service … route … rewrite, \
         output plan) on {}-byte frames, {} per batch, from {CLIENTS} client pods to the \
         services' cluster IPs (UDP 80 → {BACKEND_PORT}); direct_to_backend_*: the same \
         pipeline without services, the same flows addressed to the backend the stage chose; \
         *_cost_ns is the difference per round (the service stage's cost, conntrack included)",
        cfg.frame_len, BATCH_SIZE
    ));
    notes.push(format!(
        "established: {FLOWS} flows repeating (warm service connection table); first_packet: \
         every packet a new connection, the simulated clock moving {:.0} ms per batch so that \
         {LIVE_FLOWS} connections are alive (UDP timeout 120 s) and the table ({} entries, \
         two per connection) fills with half expired and is swept, the sweep included",
        FIRST_STEP_NS as f64 / 1e6,
        weir_dataplane::node::service::MAX_ENTRIES
    ));
    Ok((out, notes))
}

/// The frame templates: flow `t` from client pod `32 + t mod 32` to service `7919 t mod n`
/// (`direct`: to the backend chosen for it), with its ingress interface.
fn templates(n: usize, frame_len: usize, direct: Option<&[Ipv4Addr]>) -> Vec<(u16, Vec<u8>)> {
    (0..FLOWS)
        .map(|t| {
            let client = BACKENDS + t % CLIENTS;
            let sport = 10_000 + (t / CLIENTS) as u16;
            let (dst, dport) = match direct {
                Some(chosen) => (chosen[t], BACKEND_PORT),
                None => (cluster_ip(service_of(t, n)), TARGET_PORT),
            };
            let f = craft::udp4(
                pod_mac(client),
                GW_MAC,
                pod_ip(client),
                dst,
                sport,
                dport,
                frame_len,
            );
            (client as u16, f)
        })
        .collect()
}

fn service_of(t: usize, n: usize) -> usize {
    (t * 7919) % n
}

/// The source port of template `t` in the first-packet case for packet generation `g`
/// (the number of passes over the templates so far): unique per client pod for 500
/// generations.
fn first_sport(t: usize, g: u64) -> u16 {
    let per_gen = (FLOWS / CLIENTS) as u64;
    1024 + ((g * per_gen + (t / CLIENTS) as u64) % 64_000) as u16
}

/// One pass over every template through the pipeline with services: checks that nothing
/// is dropped and that each frame leaves to an endpoint of its service on the backend
/// port; returns the endpoint chosen for each flow.
fn verify(
    snapshot: &Snapshot,
    templates: &[(u16, Vec<u8>)],
    n: usize,
    endpoints: usize,
) -> Result<Vec<Ipv4Addr>, String> {
    let sent = run_once(snapshot, templates)?;
    let mut chosen = Vec::with_capacity(templates.len());
    for (t, (dst, dport)) in sent.into_iter().enumerate() {
        let svc = service_of(t, n);
        let backends: Vec<Ipv4Addr> = (0..endpoints)
            .map(|j| pod_ip((3 * svc + j) % BACKENDS))
            .collect();
        if dport != BACKEND_PORT || !backends.contains(&dst) {
            return Err(format!(
                "flow {t} to service {svc} ({}:{TARGET_PORT}) left to {dst}:{dport}, not to one \
                 of its endpoints on port {BACKEND_PORT}: is the service stage in the pipeline?",
                cluster_ip(svc)
            ));
        }
        chosen.push(dst);
    }
    Ok(chosen)
}

/// The direct frames leave untouched to their backend.
fn verify_direct(
    snapshot: &Snapshot,
    templates: &[(u16, Vec<u8>)],
    chosen: &[Ipv4Addr],
) -> Result<(), String> {
    for (t, (dst, dport)) in run_once(snapshot, templates)?.into_iter().enumerate() {
        if (dst, dport) != (chosen[t], BACKEND_PORT) {
            return Err(format!(
                "direct flow {t} left to {dst}:{dport}, not {}:{BACKEND_PORT}",
                chosen[t]
            ));
        }
    }
    Ok(())
}

/// Every template once through a fresh pipeline; the destination each left with. Fails
/// on any drop.
fn run_once(
    snapshot: &Snapshot,
    templates: &[(u16, Vec<u8>)],
) -> Result<Vec<(Ipv4Addr, u16)>, String> {
    let mut mem = vec![0u8; BATCH_SIZE * CHUNK];
    let mut region = FrameRegion::new(&mut mem, CHUNK);
    let mut p = Pipeline::new();
    let map = output_map(snapshot);
    let mut plan = Vec::with_capacity(BATCH_SIZE);
    let mut batch = Batch::new();
    let mut out = Vec::with_capacity(templates.len());
    for chunk in templates.chunks(BATCH_SIZE) {
        let mut frames: Vec<Frame> = Vec::with_capacity(BATCH_SIZE);
        for (k, (ingress, t)) in chunk.iter().enumerate() {
            let f = region
                .fill((k * CHUNK) as u64, 256, t)
                .map_err(|e| format!("a template does not fit its frame: {e:?}"))?;
            batch
                .push(f, *ingress)
                .map_err(|_| "the batch is full".to_string())?;
        }
        p.process(snapshot, &mut region, &mut batch, 1_000);
        p.output(snapshot, &batch, &map, &mut plan);
        batch.drain(|f, _| frames.push(f));
        for f in &frames {
            let d = region.data_mut(f);
            out.push((
                Ipv4Addr::new(d[30], d[31], d[32], d[33]),
                u16::from_be_bytes([d[36], d[37]]),
            ));
        }
    }
    let c = p.counters();
    if c.total_drops() != 0 {
        return Err(format!(
            "the benchmark's frames must all be forwarded: {c:?}"
        ));
    }
    Ok(out)
}

/// One worker owning every interface, as `weir-bench pipeline` measures.
fn output_map(snapshot: &Snapshot) -> OutputMap {
    let mut map = OutputMap::new();
    map.reset(snapshot.generation, snapshot.interfaces.len(), false);
    for i in 0..snapshot.interfaces.len() as u16 {
        map.set(i, Owner::Here { port: i });
    }
    map
}

/// Nanoseconds per packet over `duration` (the harness included, as on both sides), after
/// one untimed pass over the templates.
fn measure(
    snapshot: &Snapshot,
    templates: &[(u16, Vec<u8>)],
    case: Case,
    duration: Duration,
) -> Result<f64, String> {
    let mut mem = vec![0u8; BATCH_SIZE * CHUNK];
    let mut region = FrameRegion::new(&mut mem, CHUNK);
    let mut frames: Vec<Frame> = (0..BATCH_SIZE)
        .map(|k| {
            region
                .fill((k * CHUNK) as u64, 256, &templates[k].1)
                .map_err(|e| format!("a template does not fit its frame: {e:?}"))
        })
        .collect::<Result<_, _>>()?;
    let mut batch = Batch::new();
    let mut p = Pipeline::new();
    let map = output_map(snapshot);
    let mut plan = Vec::with_capacity(BATCH_SIZE);
    let step = match case {
        Case::Established => 1_000,
        Case::First => FIRST_STEP_NS,
    };
    // The clock starts past one timeout, so that nothing counts as expired before its time.
    let mut now = UDP_TIMEOUT_NS;
    let (mut packets, mut rounds, mut next) = (0u64, 0u64, 0usize);
    // One untimed pass over the templates first: the flows of the established case are in
    // the table, and the tables' first allocations are made.
    let warm_up = (templates.len() / BATCH_SIZE) as u64;
    let mut start = Instant::now();
    loop {
        if rounds == warm_up {
            start = Instant::now();
            packets = 0;
        }
        for (k, f) in frames.drain(..).enumerate() {
            let t = (next + k) % templates.len();
            let (ingress, tpl) = &templates[t];
            let head = tpl.len().min(64);
            let mut f = f;
            f.set_len(tpl.len(), CHUNK);
            let d = region.data_mut(&f);
            d[..head].copy_from_slice(&tpl[..head]);
            if case == Case::First {
                let generation = ((next + k) / templates.len()) as u64;
                crate::pipeline::set_udp4_sport(d, first_sport(t, generation));
            }
            batch
                .push(f, *ingress)
                .map_err(|_| "the batch is full".to_string())?;
        }
        next += BATCH_SIZE;
        p.process(snapshot, &mut region, &mut batch, now);
        p.output(snapshot, &batch, &map, &mut plan);
        black_box(&plan);
        batch.drain(|f, _| frames.push(f));
        packets += BATCH_SIZE as u64;
        now += step;
        rounds += 1;
        if rounds > warm_up && rounds % 64 == 0 && start.elapsed() >= duration {
            break;
        }
    }
    let elapsed = start.elapsed();
    let c = p.counters();
    if c.total_drops() != 0 {
        return Err(format!(
            "{} case: the benchmark's frames must all be forwarded: {c:?}",
            case.label()
        ));
    }
    Ok(elapsed.as_nanos() as f64 / packets as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_spread_over_the_backend_pods_and_clients_are_never_backends() {
        let s = specs(1000, 10);
        assert_eq!(s.len(), 1000);
        for spec in &s {
            assert_eq!(spec.backends.len(), 10);
            let mut a: Vec<_> = spec.backends.iter().map(|b| b.addr).collect();
            a.sort();
            a.dedup();
            assert_eq!(a.len(), 10, "distinct endpoints");
            for b in &spec.backends {
                let IpAddr::V4(v4) = b.addr else { panic!() };
                assert!((0..BACKENDS).any(|i| pod_ip(i) == v4));
                assert!((BACKENDS..PODS).all(|i| pod_ip(i) != v4));
            }
        }
        let t = templates(1000, 60, None);
        assert_eq!(t.len(), FLOWS);
        assert!(t.iter().all(|(i, _)| usize::from(*i) >= BACKENDS));
        let touched: std::collections::BTreeSet<usize> =
            (0..FLOWS).map(|t| service_of(t, 10_000)).collect();
        assert_eq!(
            touched.len(),
            FLOWS,
            "at 10k services every flow has its own"
        );
    }

    #[test]
    fn first_packet_ports_do_not_repeat_within_a_timeout() {
        let per_client_per_gen = FLOWS / CLIENTS;
        let mut seen = std::collections::HashSet::new();
        // Generations within one UDP timeout of simulated time.
        let batches = UDP_TIMEOUT_NS / FIRST_STEP_NS + 1;
        let gens = batches * BATCH_SIZE as u64 / FLOWS as u64 + 1;
        assert!(gens < 500, "{gens}");
        for g in 0..gens {
            for t in (0..FLOWS).step_by(CLIENTS) {
                assert!(seen.insert(first_sport(t, g)), "t {t} g {g}");
            }
        }
        assert_eq!(seen.len(), gens as usize * per_client_per_gen);
    }

    #[test]
    fn the_source_port_rewrite_keeps_the_udp_checksum_valid() {
        let mut f = craft::udp4(
            pod_mac(40),
            GW_MAC,
            pod_ip(40),
            cluster_ip(3),
            10_000,
            80,
            60,
        );
        crate::pipeline::set_udp4_sport(&mut f, 31_337);
        let ip = smoltcp::wire::Ipv4Packet::new_checked(&f[14..]).unwrap();
        let udp = smoltcp::wire::UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.src_port(), 31_337);
        let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
        assert!(udp.verify_checksum(&src, &dst));
    }

    #[test]
    fn every_frame_reaches_an_endpoint_of_its_service_and_every_figure_is_reported() {
        let cfg = StageBenchConfig {
            runs: 1,
            duration: Duration::from_millis(5),
            services: vec![10, 100],
            endpoints: 10,
            frame_len: 60,
            cases: vec![Case::Established, Case::First],
        };
        let (results, notes) = run(&cfg).unwrap();
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        for n in ["10", "100"] {
            for case in ["established", "first_packet"] {
                for what in ["ns", "cost_ns"] {
                    let name = format!("services_stage_{n}_{case}_{what}");
                    assert!(names.contains(&name.as_str()), "{name} in {names:?}");
                }
                let name = format!("direct_to_backend_{n}_{case}_ns");
                assert!(names.contains(&name.as_str()), "{name}");
            }
        }
        assert!(names.contains(&"services_stage_100_over_10_first_packet_cost"));
        for r in &results {
            assert!(r.value.is_finite(), "{r:?}");
            if r.unit == "ns/pkt" && !r.name.ends_with("cost_ns") {
                assert!(r.value > 0.0, "{r:?}");
            }
        }
        assert_eq!(notes.len(), 2);
    }

    #[test]
    fn a_pipeline_without_the_service_is_caught_by_the_check() {
        // Frames to cluster IPs through a node that has no services: not one reaches an
        // endpoint, and the check says so instead of timing them.
        let no_services = snapshot(0, 10).unwrap();
        let to_service = templates(10, 60, None);
        assert!(verify(&no_services, &to_service, 10, 10).is_err());
    }
}
