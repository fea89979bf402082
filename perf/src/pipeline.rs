//! The in-memory pipeline benchmark: parse + anti-spoof + route + rewrite per core, on
//! 64-byte and 1500-byte UDP frames between pods of one node, through the same stages the
//! workers run.
//!
//! The harness keeps one batch of 256 frames in a frame region and, per round, restores
//! the first 64 bytes of each frame from its template (the pipeline decremented the TTL
//! and rewrote the MACs), pushes them into the batch, runs the pipeline and settles every
//! packet as a driver would. The harness work alone is measured too (`harness_*`), so the
//! reader can see what the pipeline itself costs.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use weir_dataplane::node::output::{Action, OutputMap, Owner};
use weir_dataplane::snapshot::{Mac, PodSpec};
use weir_dataplane::{
    craft, Batch, Frame, FrameRegion, Pipeline, Snapshot, SnapshotBuilder, BATCH_SIZE,
};

use crate::report::BenchResult;

/// What to run.
#[derive(Debug, Clone)]
pub struct PipelineBenchConfig {
    /// Rounds of measurement per frame size (the median is reported).
    pub runs: usize,
    /// Length of one measurement.
    pub duration: Duration,
    /// Pods on the node (frames go from pod i to pod i+1).
    pub pods: usize,
}

impl Default for PipelineBenchConfig {
    fn default() -> Self {
        PipelineBenchConfig {
            runs: 5,
            duration: Duration::from_millis(1000),
            pods: 64,
        }
    }
}

/// The stated goal the pipeline figures are set beside (no kernel or DPDK program runs
/// this exact pipeline; VPP's per-packet cost for comparable L3 work is in this range).
pub const GOAL_NS_PER_PKT: f64 = 30.0;

/// The MAC the pods' gateway (weir) answers with.
pub const GW_MAC: Mac = [0xee; 6];

/// The MAC of pod `i`.
pub fn pod_mac(i: usize) -> Mac {
    [0x02, 0, 0, 0, (i >> 8) as u8, i as u8]
}

/// The IPv4 address of pod `i`.
pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8 + 1)
}

/// A node with `pods` pods (IPv4 and IPv6 each).
pub fn node(pods: usize) -> Snapshot {
    node_builder(pods).build(1).expect("bench node builds")
}

/// The builder of [`node`], for callers that add tables (services) before building.
pub fn node_builder(pods: usize) -> SnapshotBuilder {
    let mut b = SnapshotBuilder::new();
    for i in 0..pods {
        b.pod(PodSpec {
            namespace: "bench".into(),
            name: format!("pod-{i}"),
            interface: format!("veth{i}"),
            gateway_mac: GW_MAC,
            mac: pod_mac(i),
            ipv4: Some(pod_ip(i)),
            ipv6: Some(
                format!("2001:db8::{:x}", i + 1)
                    .parse()
                    .expect("valid IPv6"),
            ),
            mtu: 1500,
        })
        .expect("bench pods are valid");
    }
    b
}

/// Runs the benchmark; returns results in ns/pkt and Mpps for each frame size.
pub fn run(cfg: &PipelineBenchConfig) -> Vec<BenchResult> {
    let snapshot = node(cfg.pods);
    let mut out = Vec::new();
    // 64 B: the minimum Ethernet frame (60 bytes + FCS). 1500 B: a full-MTU IP packet.
    for (size, frame_len) in [(64usize, 60usize), (1500, 1514)] {
        let templates: Vec<(u16, Vec<u8>)> = (0..BATCH_SIZE)
            .map(|k| {
                let i = k % cfg.pods;
                let j = (i + 1) % cfg.pods;
                (
                    i as u16,
                    craft::udp4(
                        pod_mac(i),
                        GW_MAC,
                        pod_ip(i),
                        pod_ip(j),
                        10000 + k as u16,
                        5201,
                        frame_len,
                    ),
                )
            })
            .collect();
        let (mut full, mut harness) = (Vec::new(), Vec::new());
        for _ in 0..cfg.runs {
            full.push(measure(&snapshot, &templates, cfg.duration, true));
            harness.push(measure(&snapshot, &templates, cfg.duration, false));
        }
        let name = format!("pipeline_udp4_{size}B");
        let goal = "goal: VPP-class per-packet cost";
        // Paired per round: each pipeline run minus the harness run right after it.
        let net: Vec<f64> = full
            .iter()
            .zip(&harness)
            .map(|(f, h)| (f - h).max(0.0))
            .collect();
        out.push(
            BenchResult::from_samples(format!("{name}_ns"), "ns/pkt", full.clone())
                .with_anchor(goal, GOAL_NS_PER_PKT),
        );
        out.push(
            BenchResult::from_samples(
                format!("{name}_rate"),
                "Mpps",
                full.iter().map(|ns| 1e3 / ns).collect(),
            )
            .with_anchor(goal, 1e3 / GOAL_NS_PER_PKT),
        );
        out.push(
            BenchResult::from_samples(format!("{name}_net_ns"), "ns/pkt", net)
                .with_anchor(goal, GOAL_NS_PER_PKT),
        );
        out.push(BenchResult::from_samples(
            format!("harness_only_{size}B_ns"),
            "ns/pkt",
            harness,
        ));
    }
    out
}

/// Nanoseconds per packet over `duration`; `pipeline = false` measures the harness alone.
fn measure(
    snapshot: &Snapshot,
    templates: &[(u16, Vec<u8>)],
    duration: Duration,
    pipeline: bool,
) -> f64 {
    let chunk = 2048;
    let mut mem = vec![0u8; templates.len() * chunk];
    let mut region = FrameRegion::new(&mut mem, chunk);
    let mut frames: Vec<Frame> = templates
        .iter()
        .enumerate()
        .map(|(k, (_, t))| {
            region
                .fill((k * chunk) as u64, 256, t)
                .expect("template fits")
        })
        .collect();
    let mut batch = Batch::new();
    let mut p = Pipeline::new();
    // One worker that owns every interface, as in `MemDriver`: the output stage's plan is
    // part of the per-packet path being measured.
    let mut map = OutputMap::new();
    map.reset(snapshot.generation, snapshot.interfaces.len(), false);
    for i in 0..snapshot.interfaces.len() as u16 {
        map.set(i, Owner::Here { port: i });
    }
    let mut plan = Vec::with_capacity(weir_dataplane::BATCH_SIZE);
    let mut packets = 0u64;
    let mut now = 0u64;
    let start = Instant::now();
    let mut rounds = 0u32;
    loop {
        for (f, (ingress, t)) in frames.drain(..).zip(templates) {
            let head = t.len().min(64);
            let mut f = f;
            f.set_len(t.len(), chunk);
            region.data_mut(&f)[..head].copy_from_slice(&t[..head]);
            batch
                .push(f, *ingress)
                .expect("a batch holds BATCH_SIZE templates");
        }
        if pipeline {
            p.process(snapshot, &mut region, &mut batch, now);
            p.output(snapshot, &batch, &map, &mut plan);
        }
        let mut sent = 0u64;
        let mut i = 0;
        batch.drain(|f, m| {
            if pipeline {
                if let Some(Action::Send { .. }) = plan.get(i) {
                    sent += 1;
                }
                i += 1;
            } else {
                sent += u64::from(black_box(m.ingress) != u16::MAX);
            }
            frames.push(f);
        });
        black_box(sent);
        packets += templates.len() as u64;
        now += 1000;
        rounds += 1;
        if rounds % 64 == 0 && start.elapsed() >= duration {
            break;
        }
    }
    if pipeline {
        let c = p.counters();
        assert_eq!(
            c.total_drops(),
            0,
            "the benchmark's frames must all be forwarded: {c:?}"
        );
    }
    start.elapsed().as_nanos() as f64 / packets as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_frames_are_all_forwarded() {
        let cfg = PipelineBenchConfig {
            runs: 1,
            duration: Duration::from_millis(5),
            pods: 4,
        };
        let r = run(&cfg);
        assert_eq!(r.len(), 8);
        // The net figure is the pipeline run less the harness run, clamped at zero: on a
        // loaded machine a 5 ms harness run can take longer than the pipeline run.
        for x in &r {
            if x.name.ends_with("_net_ns") {
                assert!(x.value >= 0.0 && x.value.is_finite(), "{x:?}");
            } else {
                assert!(x.value > 0.0 && x.value.is_finite(), "{x:?}");
            }
        }
    }
}
