//! What keeping a flow on one worker costs (`weir_dataplane::node::steer`), measured with
//! in-memory drivers joined by the workers' own handoff lanes, on one core (the drivers are
//! polled in turn, so the figure is the CPU work of both workers per packet, not a
//! latency).
//!
//! UDP 64 B frames between pairs of pods (pod 2m to pod 2m+1), injected into driver 0 by
//! the batch. The cases:
//! - `alone`: one worker (no steering stage at all): the anchor.
//! - `owned_here`: two workers, every interface and every flow worker 0's: the steering
//!   stage's hash per packet, nothing handed over.
//! - `two_hops`: every interface worker 0's, every flow worker 1's: the worst case, each
//!   packet goes to its owner and back (parse twice, two copies each way).
//! - `cross_processed_then_handed`: sending pods on worker 0, receiving pods on worker 1,
//!   flows owned by worker 0: processed where received, handed to the output's worker (the
//!   one hop a pod-to-pod flow across workers always takes, with or without steering).
//! - `cross_steered`: the same pods, flows owned by worker 1: steered unprocessed, then
//!   processed and sent by the owner: the same one hop, plus a parse on the way in.
//!
//! Each driver's `inject` copies the frame in, in every case alike; the differences between
//! cases are what steering adds.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use weir_dataplane::flow::FlowKey;
use weir_dataplane::node::steer::flow_owner;
use weir_dataplane::snapshot::{Mac, PodSpec};
use weir_dataplane::{craft, Snapshot, SnapshotBuilder, BATCH_SIZE};
use weir_workers::handoff::mesh;
use weir_workers::mem::run_workers;
use weir_workers::MemDriver;

use crate::report::BenchResult;

const GW_MAC: Mac = [0xee; 6];
const PODS: usize = 16;

/// The cases, in the order they are reported.
pub const CASES: [&str; 5] = [
    "alone",
    "owned_here",
    "two_hops",
    "cross_processed_then_handed",
    "cross_steered",
];

fn pod_mac(i: usize) -> Mac {
    [0x02, 0, 0, 0, 0, i as u8]
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 30, i as u8 + 1)
}

fn node() -> Snapshot {
    let mut b = SnapshotBuilder::new();
    for i in 0..PODS {
        b.pod(PodSpec {
            namespace: "bench".into(),
            name: format!("pod-{i}"),
            interface: format!("veth{i}"),
            gateway_mac: GW_MAC,
            mac: pod_mac(i),
            ipv4: Some(pod_ip(i)),
            ipv6: None,
            mtu: 1500,
        })
        .expect("bench pods are valid");
    }
    b.build(1).expect("bench node builds")
}

/// A batch of frames from even pods to the next odd one, from source ports whose flows
/// worker `owner` of two owns.
fn frames(owner: u16) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::with_capacity(BATCH_SIZE);
    let mut port = 10_000u16;
    while out.len() < BATCH_SIZE {
        let i = (out.len() % (PODS / 2)) * 2;
        let key = FlowKey {
            src: FlowKey::map_v4(pod_ip(i).octets()),
            dst: FlowKey::map_v4(pod_ip(i + 1).octets()),
            src_port: port,
            dst_port: 5201,
            proto: 17,
        };
        if flow_owner(&key, false, 2) == owner {
            out.push((
                i as u16,
                craft::udp4(pod_mac(i), GW_MAC, pod_ip(i), pod_ip(i + 1), port, 5201, 60),
            ));
        }
        port += 1;
    }
    out
}

/// The drivers of `case`, and the frames to inject into driver 0.
fn setup(case: &str) -> (Vec<MemDriver>, Vec<(u16, Vec<u8>)>) {
    let new = || MemDriver::new(4 * BATCH_SIZE, 2 * BATCH_SIZE);
    if case == "alone" {
        return (vec![new()], frames(0));
    }
    let cross = case.starts_with("cross");
    let owners: Vec<(String, usize)> = (0..PODS)
        .map(|i| (format!("veth{i}"), usize::from(cross && i % 2 == 1)))
        .collect();
    let drivers = mesh(2, 2 * BATCH_SIZE, &owners)
        .expect("eventfds for the handoff lanes")
        .into_iter()
        .map(|links| {
            let mut d = new();
            d.connect(links);
            d
        })
        .collect();
    let owner = u16::from(matches!(case, "two_hops" | "cross_steered"));
    (drivers, frames(owner))
}

/// Nanoseconds of both workers' work per packet over `duration`.
fn measure(snapshot: &Snapshot, case: &str, duration: Duration) -> f64 {
    let (mut drivers, frames) = setup(case);
    let mut packets = 0u64;
    let start = Instant::now();
    loop {
        for (ingress, f) in &frames {
            drivers[0].inject(*ingress, f).expect("room for one batch");
        }
        run_workers(&mut drivers, snapshot, 1);
        let sent: usize = drivers.iter_mut().map(MemDriver::complete_all).sum();
        assert_eq!(sent, frames.len(), "{case}: every frame is delivered");
        packets += frames.len() as u64;
        if packets % (64 * BATCH_SIZE as u64) == 0 && start.elapsed() >= duration {
            break;
        }
    }
    start.elapsed().as_nanos() as f64 / packets as f64
}

/// `runs` measurements of `duration` per case, interleaved; one result per case (ns per
/// packet, with `alone` as the anchor of the others).
pub fn run(runs: usize, duration: Duration) -> Vec<BenchResult> {
    let snapshot = node();
    let mut samples = vec![Vec::new(); CASES.len()];
    for _ in 0..runs.max(1) {
        for (case, s) in CASES.iter().zip(samples.iter_mut()) {
            s.push(measure(&snapshot, case, duration));
        }
    }
    let mut alone = samples[0].clone();
    alone.sort_by(f64::total_cmp);
    let anchor = alone[alone.len() / 2];
    CASES
        .iter()
        .zip(samples)
        .map(|(case, s)| {
            let r = BenchResult::from_samples(format!("steer_{case}_64B_ns"), "ns/pkt", s);
            if *case == "alone" {
                r
            } else {
                r.with_anchor("one worker", anchor)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_delivers_every_frame() {
        let r = run(1, Duration::from_millis(5));
        assert_eq!(r.len(), CASES.len());
        for x in &r {
            assert!(x.value > 0.0 && x.value.is_finite(), "{x:?}");
        }
    }
}
