//! The AF_XDP worker on real veths (root; CI runs it): two pod namespaces pinging each other
//! hard through one worker, with the frame accounting checked after every round — every
//! UMEM frame is free, lent to a fill ring, in the batch, staged, or lent to a TX ring, and
//! in exactly one of those places.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_dataplane::snapshot::PodSpec;
use weir_dataplane::SnapshotBuilder;
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
}

/// Two pods, `workers` workers (pod i's interface on worker i % workers), and a bounded
/// ping flood of `count` echo requests with `inflight` in flight from pod a to pod b,
/// every worker checking its frame accounting after every round.
fn flood(tag: &str, workers: usize, count: u32, inflight: u32) -> Moved {
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
    let links = weir_workers::handoff::mesh(workers, 256, &owner).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
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
        let (node, snapshot, ready_tx, done) = (
            node.clone(),
            snapshot.clone(),
            ready_tx.clone(),
            done.clone(),
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
            let started = Instant::now();
            let mut rounds = 0u64;
            // Bounded: until the flood is over (signalled) or 90 s.
            while !done.load(std::sync::atomic::Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(90)
            {
                wk.poll_once(&snapshot, started.elapsed().as_nanos() as u64);
                rounds += 1;
                wk.check_accounting()
                    .map_err(|e| format!("worker {w} after round {rounds}: {e}"))?;
            }
            // Drain what is still in flight, then check once more.
            for _ in 0..1000 {
                wk.poll_once(&snapshot, started.elapsed().as_nanos() as u64);
            }
            wk.check_accounting()?;
            let r = wk.report();
            Ok(Moved {
                rx: r.rx_frames,
                tx: r.tx_frames,
                handoff_out: r.handoff_out(),
                handoff_in: r.handoff_in(),
                handoff_dropped: r.handoff_dropped(),
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
            "60",
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
    }
    let summary = String::from_utf8_lossy(&out.stdout);
    // With several in flight, ping sends a few more than the count and stops once the
    // count is answered, without waiting for the last few.
    let received: u64 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        received >= u64::from(count),
        "echoes answered through weir: {summary} ({moved:?})"
    );
    drop(lab);
    moved
}

#[test]
fn root_frames_are_accounted_for_under_a_ping_flood() {
    let m = flood("1", 1, 20_000, 16);
    // Requests and replies, plus ARP.
    assert!(m.rx >= 40_000, "frames received: {m:?}");
    assert!(m.tx >= 40_000, "frames sent: {m:?}");
    assert_eq!(m.handoff_out, 0, "one worker hands nothing over");
}

#[test]
fn root_frames_are_accounted_for_across_two_workers_over_a_million_frame_moves() {
    // 250 000 requests and as many replies: every one received by one worker, handed
    // over, and sent by the other.
    let m = flood("2", 2, 250_000, 32);
    assert!(m.rx >= 500_000 && m.tx >= 500_000, "{m:?}");
    assert!(m.handoff_out >= 500_000, "{m:?}");
    assert_eq!(m.handoff_out, m.handoff_in + m.handoff_dropped, "{m:?}");
}
