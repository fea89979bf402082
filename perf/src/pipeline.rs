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

use std::sync::Arc;
use weir_dataplane::node::output::{Action, OutputMap, Owner};

use weir_dataplane::policy::program::{Match, PortMatch};
use weir_dataplane::policy::{
    Action as PolicyAction, Direction, EndpointPolicy, PolicyTables, Program, Rule, RuleInfo, Sets,
    Tier, TierEnd,
};
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
    /// Flow counts of the policy case: 64 B frames of that many flows, each admitted by
    /// its receiver's ingress policy once and then a conntrack hit, beside the same flows
    /// without policy.
    pub policy_flows: Vec<usize>,
}

impl Default for PipelineBenchConfig {
    fn default() -> Self {
        PipelineBenchConfig {
            runs: 5,
            duration: Duration::from_millis(1000),
            pods: 64,
            policy_flows: vec![1 << 10, 1 << 16],
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
        let templates = udp_templates(cfg.pods, frame_len);
        let (mut full, mut harness) = (Vec::new(), Vec::new());
        for _ in 0..cfg.runs {
            full.push(measure(&snapshot, &templates, cfg.duration, true, None));
            harness.push(measure(&snapshot, &templates, cfg.duration, false, None));
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
    out.extend(policy_cases(cfg));
    out
}

/// The policy case: 64 B UDP frames of `flows` flows (pod i to pod i+1, port 5201, the
/// source port telling them apart), through a node where every pod's ingress admits UDP
/// 5201 and nothing else, beside the same frames through the node without policy,
/// interleaved round by round. Every flow is classified once, untimed; each timed packet
/// is then a conntrack hit (checked), so the difference is what the policy stage costs an
/// established flow when the table holds that many.
fn policy_cases(cfg: &PipelineBenchConfig) -> Vec<BenchResult> {
    let (open, guarded) = (node(cfg.pods), node_with_policy(cfg.pods));
    let templates = udp_templates(cfg.pods, 60);
    let mut out = Vec::new();
    for &flows in &cfg.policy_flows {
        let flows = flows.div_ceil(BATCH_SIZE).max(1) * BATCH_SIZE;
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..cfg.runs {
            with.push(measure(
                &guarded,
                &templates,
                cfg.duration,
                true,
                Some(flows),
            ));
            without.push(measure(&open, &templates, cfg.duration, true, Some(flows)));
        }
        let cost: Vec<f64> = with.iter().zip(&without).map(|(w, o)| w - o).collect();
        let anchor =
            BenchResult::from_samples(format!("pipeline_{flows}_flows_ns"), "ns/pkt", without);
        out.push(
            BenchResult::from_samples(format!("pipeline_policy_{flows}_flows_ns"), "ns/pkt", with)
                .with_anchor(&anchor.name, anchor.value),
        );
        out.push(anchor);
        out.push(BenchResult::from_samples(
            format!("pipeline_policy_{flows}_flows_cost_ns"),
            "ns/pkt",
            cost,
        ));
    }
    out
}

/// `node` with an ingress policy on every pod: UDP to port 5201 allowed, the rest denied.
fn node_with_policy(pods: usize) -> Snapshot {
    let admit = Rule {
        matches: Match {
            protocol: Some(17),
            dst_ports: PortMatch {
                ranges: vec![(5201, 5201)],
                named: None,
            },
            ..Match::default()
        },
        action: PolicyAction::Allow,
        id: 0,
    };
    let program = Arc::new(Program::new(
        vec![Tier {
            rules: vec![admit],
            end: TierEnd::Deny,
            end_id: 1,
        }],
        &Sets::default(),
    ));
    let info = RuleInfo {
        tier: "default".into(),
        policy: "bench/admit-5201".into(),
        direction: Direction::Ingress,
        index: Some(0),
    };
    let mut b = node_builder(pods);
    b.policy(PolicyTables {
        endpoints: (0..pods)
            .map(|_| EndpointPolicy {
                ingress: Some(Arc::clone(&program)),
                egress: None,
            })
            .collect(),
        sets: Sets::default(),
        rules: vec![
            info.clone(),
            RuleInfo {
                index: None,
                ..info
            },
        ],
        warm_pays: Default::default(),
    });
    b.build(1).expect("bench node builds")
}

/// One batch of UDP frames, `frame_len` long: slot k from pod k to pod k+1, source port
/// 10000 + k, destination port 5201.
fn udp_templates(pods: usize, frame_len: usize) -> Vec<(u16, Vec<u8>)> {
    (0..BATCH_SIZE)
        .map(|k| {
            let i = k % pods;
            let j = (i + 1) % pods;
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
        .collect()
}

/// Rewrites an IPv4 UDP frame's source port and updates the UDP checksum incrementally
/// (RFC 1624, eq. 3: HC' = ~(~HC + ~m + m')); a zero checksum (none) stays zero.
pub fn set_udp4_sport(frame: &mut [u8], port: u16) {
    let old = u16::from_be_bytes([frame[34], frame[35]]);
    frame[34..36].copy_from_slice(&port.to_be_bytes());
    let hc = u16::from_be_bytes([frame[40], frame[41]]);
    if hc == 0 {
        return;
    }
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(port);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut new = !(sum as u16);
    if new == 0 {
        new = 0xffff;
    }
    frame[40..42].copy_from_slice(&new.to_be_bytes());
}

/// Nanoseconds per packet over `duration`; `pipeline = false` measures the harness alone.
/// With `flows` (a multiple of the batch), round r gives the batch's frames source port
/// 1024 + r mod (flows / batch), so the rounds cycle through that many flows; one untimed
/// pass over them comes first, and every timed packet must then be a conntrack hit where
/// the node has policy.
fn measure(
    snapshot: &Snapshot,
    templates: &[(u16, Vec<u8>)],
    duration: Duration,
    pipeline: bool,
    flows: Option<usize>,
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
    let mut start = Instant::now();
    let mut rounds = 0u32;
    // Template k goes from pod k mod `pods`: the `per` templates of a pod in a batch get
    // consecutive source ports, and each round the next `per`, so that every (template,
    // round of the cycle) is a flow of its own.
    let pods = templates
        .iter()
        .map(|(i, _)| usize::from(*i) + 1)
        .max()
        .unwrap_or(1);
    let per = templates.len().div_ceil(pods);
    let cycle = flows.map_or(1, |f| (f / templates.len()).max(1));
    assert!(
        cycle * per <= usize::from(u16::MAX) - 1024,
        "{flows:?} flows need more source ports than UDP has"
    );
    let warm_up = if flows.is_some() { cycle as u32 } else { 0 };
    let (mut classified_before, mut tracked) = (0, 0);
    loop {
        if rounds == warm_up && warm_up > 0 {
            start = Instant::now();
            packets = 0;
            classified_before = p.counters().policy_classified;
            tracked = p.policy_state().conntrack.stats().inserts;
        }
        for (k, (f, (ingress, t))) in frames.drain(..).zip(templates).enumerate() {
            let head = t.len().min(64);
            let mut f = f;
            f.set_len(t.len(), chunk);
            let d = region.data_mut(&f);
            d[..head].copy_from_slice(&t[..head]);
            if flows.is_some() {
                let r = rounds as usize % cycle;
                set_udp4_sport(d, (1024 + r * per + k / pods) as u16);
            }
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
        if rounds > warm_up && rounds % 64 == 0 && start.elapsed() >= duration {
            break;
        }
    }
    if pipeline {
        let evictions = p.policy_state().conntrack.stats().evictions;
        let c = p.counters();
        assert_eq!(
            c.total_drops(),
            0,
            "the benchmark's frames must all be forwarded: {c:?}"
        );
        if flows.is_some() && !snapshot.policy.endpoints.is_empty() {
            assert_eq!(
                Some(tracked as usize),
                flows,
                "every flow of the policy case is classified once and tracked: {c:?}"
            );
            // A flow the table evicted (a full probe window, which the default table
            // meets now and then at 64k flows) is classified again: that many may be.
            assert!(
                c.policy_classified - classified_before <= evictions,
                "every timed packet of the policy case is a conntrack hit, or one of a \
                 flow the table evicted ({evictions}): {c:?}"
            );
        }
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
            policy_flows: vec![1000],
        };
        let r = run(&cfg);
        assert_eq!(r.len(), 11);
        let names: Vec<&str> = r.iter().map(|x| x.name.as_str()).collect();
        assert!(
            names.contains(&"pipeline_policy_1024_flows_ns")
                && names.contains(&"pipeline_1024_flows_ns"),
            "flows rounded up to whole batches: {names:?}"
        );
        // The net figure is the pipeline run less the harness run, clamped at zero: on a
        // loaded machine a 5 ms harness run can take longer than the pipeline run.
        for x in &r {
            if x.name.ends_with("_cost_ns") {
                // With policy less without, per round: noise can make it negative.
                assert!(x.value.is_finite(), "{x:?}");
            } else if x.name.ends_with("_net_ns") {
                assert!(x.value >= 0.0 && x.value.is_finite(), "{x:?}");
            } else {
                assert!(x.value > 0.0 && x.value.is_finite(), "{x:?}");
            }
        }
    }
}

#[cfg(test)]
mod policy_case_tests {
    use super::*;

    /// The policy case measures conntrack hits of allowed flows: a node whose policy
    /// denies the frames is caught (they are dropped).
    #[test]
    #[should_panic(expected = "must all be forwarded")]
    fn a_policy_that_drops_the_frames_is_caught() {
        let mut templates = udp_templates(4, 60);
        for (_, t) in &mut templates {
            // UDP 5202: no rule admits it.
            t[36..38].copy_from_slice(&5202u16.to_be_bytes());
            t[40..42].fill(0);
        }
        measure(
            &node_with_policy(4),
            &templates,
            Duration::from_millis(5),
            true,
            Some(BATCH_SIZE),
        );
    }
}
