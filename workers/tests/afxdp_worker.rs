//! The AF_XDP worker on real veths (root; CI runs it): two pod namespaces pinging each other
//! hard through one worker, with the frame accounting checked after every round — every
//! UMEM frame is free, lent to a fill ring, in the batch, waiting to be sealed, staged, or
//! lent to a TX ring, and in exactly one of those places — and the packet accounting of the
//! pipeline's counters once the flood is over: every frame received, handed in or made was
//! sent, handed on, consumed or dropped for a named reason, on each worker, and what one
//! worker handed off the other took in. With two workers and a lane too short for the
//! flood, the overflow is dropped as `handoff_full` and the accounting still holds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_dataplane::snapshot::PodSpec;
use weir_dataplane::SnapshotBuilder;
use weir_dataplane::{Counters, DropReason};
use weir_testkit::lab::{mac_of, plumb_pod, require_root, setns, NetnsGuard};
use weir_workers::worker::{PortSpec, Worker, WorkerConfig};
use weir_workers::xsk::UmemConfig;

/// What the workers moved in one flood.
#[derive(Debug, Default)]
struct Moved {
    rx: u64,
    tx: u64,
    handoff_out: u64,
    handoff_in: u64,
    handoff_dropped: u64,
    /// The workers' pipeline counters, summed.
    counters: Counters,
    /// Echo replies pod a received.
    answered: u64,
}

/// How a flood is run.
struct Flood {
    workers: usize,
    count: u32,
    inflight: u32,
    /// Buffers per handoff lane.
    depth: usize,
    /// How long worker 1 waits before it first polls (its lane in fills meanwhile).
    stall: Duration,
    /// Whether every echo must be answered (not when lanes are meant to overflow).
    lossless: bool,
}

/// Two pods, `workers` workers (pod i's interface on worker i % workers), and a bounded
/// ping flood of `count` echo requests with `inflight` in flight from pod a to pod b,
/// every worker checking its frame accounting after every round and its packet accounting
/// at the end.
fn flood(tag: &str, f: Flood) -> Moved {
    let Flood {
        workers,
        count,
        inflight,
        depth,
        stall,
        lossless,
    } = f;
    require_root("the AF_XDP worker scenario (network namespaces, AF_XDP)");
    let pid = std::process::id();
    let (node, a, b) = (
        format!("weir-wn{tag}-{pid}"),
        format!("weir-wa{tag}-{pid}"),
        format!("weir-wb{tag}-{pid}"),
    );
    let mut lab = NetnsGuard::new();
    for ns in [&node, &a, &b] {
        lab.add_netns(ns).unwrap();
    }
    let hosts = [format!("wq{tag}a{pid}"), format!("wq{tag}b{pid}")];
    let addrs = ["198.18.7.1", "198.18.7.2"];
    for (i, ns) in [&a, &b].into_iter().enumerate() {
        plumb_pod(&node, ns, &hosts[i], addrs[i]).unwrap();
    }
    let mut builder = SnapshotBuilder::new();
    for (i, ns) in [&a, &b].into_iter().enumerate() {
        builder
            .pod(PodSpec {
                namespace: "t".into(),
                name: format!("p{i}"),
                interface: hosts[i].clone(),
                gateway_mac: mac_of(&node, &hosts[i]).unwrap(),
                mac: mac_of(ns, "eth0").unwrap(),
                ipv4: Some(addrs[i].parse().unwrap()),
                ipv6: None,
                mtu: 1500,
            })
            .unwrap();
    }
    let snapshot = std::sync::Arc::new(builder.build(1).unwrap());
    let owner: Vec<(String, usize)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.clone(), i % workers))
        .collect();
    let links = weir_workers::handoff::mesh(workers, depth, &owner).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drained = std::sync::Arc::new(std::sync::Barrier::new(workers));
    let mut threads = Vec::new();
    for (w, links) in links.into_iter().enumerate() {
        let ports: Vec<PortSpec> = owner
            .iter()
            .filter(|(_, o)| *o == w)
            .map(|(h, _)| PortSpec {
                name: h.clone(),
                uplink_filter: None,
            })
            .collect();
        let (node, snapshot, ready_tx, done, drained) = (
            node.clone(),
            snapshot.clone(),
            ready_tx.clone(),
            done.clone(),
            drained.clone(),
        );
        threads.push(std::thread::spawn(move || -> Result<Moved, String> {
            setns(&node).unwrap();
            // A small UMEM, so that frames are recycled many times over.
            let config = WorkerConfig {
                umem: UmemConfig {
                    frame_count: 1024,
                    ..UmemConfig::default()
                },
                ..WorkerConfig::default()
            };
            let mut wk = Worker::new(&ports, &snapshot, config).map_err(|e| e.to_string())?;
            wk.connect(&snapshot, links).map_err(|e| e.to_string())?;
            ready_tx.send(()).map_err(|e| e.to_string())?;
            if w == 1 {
                std::thread::sleep(stall);
            }
            let started = Instant::now();
            let mut rounds = 0u64;
            let mut failed = None;
            // Bounded: until the flood is over (signalled) or 90 s.
            while !done.load(std::sync::atomic::Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(90)
            {
                wk.poll_once(&snapshot, started.elapsed().as_nanos() as u64);
                rounds += 1;
                if let Err(e) = wk.check_accounting() {
                    // Reported after the barrier below, which the other workers wait at.
                    failed = Some(format!("worker {w} after round {rounds}: {e}"));
                    break;
                }
            }
            // Drain what is still in flight; then, once every worker has, once more for
            // the parcels the others handed over while draining. Then check once more.
            for _ in 0..1000 {
                wk.poll_once(&snapshot, started.elapsed().as_nanos() as u64);
            }
            drained.wait();
            for _ in 0..1000 {
                wk.poll_once(&snapshot, started.elapsed().as_nanos() as u64);
            }
            if let Some(e) = failed {
                return Err(e);
            }
            wk.check_accounting()?;
            let r = wk.report();
            r.pipeline
                .check_accounting()
                .map_err(|e| format!("worker {w}'s packet accounting: {e}"))?;
            Ok(Moved {
                rx: r.rx_frames,
                tx: r.tx_frames,
                handoff_out: r.handoff_out(),
                handoff_in: r.handoff_in(),
                handoff_dropped: r.handoff_dropped(),
                counters: r.pipeline,
                answered: 0,
            })
        }));
    }
    for _ in 0..workers {
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("worker started");
    }
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a,
            "ping",
            "-q",
            "-f",
            "-l",
            &inflight.to_string(),
            "-c",
            &count.to_string(),
            "-w",
            // A lossy flood stops at the deadline: some echoes never come back.
            if lossless { "60" } else { "5" },
            addrs[1],
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("ping");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut moved = Moved::default();
    for t in threads {
        let m = t.join().expect("worker thread").expect("worker");
        moved.rx += m.rx;
        moved.tx += m.tx;
        moved.handoff_out += m.handoff_out;
        moved.handoff_in += m.handoff_in;
        moved.handoff_dropped += m.handoff_dropped;
        moved.counters.merge(&m.counters);
    }
    let summary = String::from_utf8_lossy(&out.stdout);
    // With several in flight, ping sends a few more than the count and stops once the
    // count is answered, without waiting for the last few.
    let received: u64 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    if lossless {
        assert!(
            received >= u64::from(count),
            "echoes answered through weir: {summary} ({moved:?})"
        );
    }
    moved.answered = received;
    // Summed over the workers, with the lanes drained: every parcel handed off was taken
    // in, and the identity holds for the node as a whole.
    assert_eq!(
        moved.counters.handoff_out, moved.counters.handoff_in,
        "{moved:?}"
    );
    moved.counters.check_accounting().unwrap();
    drop(lab);
    moved
}

#[test]
fn root_frames_are_accounted_for_under_a_ping_flood() {
    let m = flood(
        "1",
        Flood {
            workers: 1,
            count: 20_000,
            inflight: 16,
            depth: 256,
            stall: Duration::ZERO,
            lossless: true,
        },
    );
    // Requests and replies, plus ARP.
    assert!(m.rx >= 40_000, "frames received: {m:?}");
    assert!(m.tx >= 40_000, "frames sent: {m:?}");
    assert_eq!(m.handoff_out, 0, "one worker hands nothing over");
}

#[test]
fn root_frames_are_accounted_for_across_two_workers_over_a_million_frame_moves() {
    // 250 000 requests and as many replies: every one received by one worker, handed
    // over, and sent by the other.
    let m = flood(
        "2",
        Flood {
            workers: 2,
            count: 250_000,
            inflight: 32,
            depth: 256,
            stall: Duration::ZERO,
            lossless: true,
        },
    );
    assert!(m.rx >= 500_000 && m.tx >= 500_000, "{m:?}");
    assert!(m.handoff_out >= 500_000, "{m:?}");
    assert_eq!(m.handoff_out, m.handoff_in, "{m:?}");
}

#[test]
fn root_a_full_lane_drops_as_handoff_full_and_every_frame_stays_accounted() {
    // Two buffers per lane, and worker 1 (pod b's) starts polling only after a second:
    // the requests worker 0 receives meanwhile overflow the lane to it.
    let m = flood(
        "3",
        Flood {
            workers: 2,
            count: 2_000,
            inflight: 64,
            depth: 2,
            stall: Duration::from_secs(1),
            lossless: false,
        },
    );
    let full = m.counters.dropped(DropReason::HandoffFull);
    assert!(full >= 1, "the lane overflowed: {m:?}");
    assert_eq!(
        m.handoff_dropped,
        full + m.counters.dropped(DropReason::HandoffStale)
    );
    assert!(
        m.answered >= 1,
        "the flood got through once worker 1 ran: {m:?}"
    );
}
