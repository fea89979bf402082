//! The AF_XDP worker on real veths (root; CI runs it): two pod namespaces pinging each other
//! hard through one worker, with the frame accounting checked after every round — every
//! UMEM frame is free, lent to a fill ring, in the batch, staged, or lent to a TX ring, and
//! in exactly one of those places.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_dataplane::snapshot::PodSpec;
use weir_dataplane::SnapshotBuilder;
use weir_workers::afxdp::{PortSpec, Worker, WorkerConfig};
use weir_workers::xsk::UmemConfig;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Lab {
    names: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn enter_netns(name: &str) {
    let f = File::open(format!("/var/run/netns/{name}")).expect("open netns");
    // SAFETY: `f` is an open namespace file; setns changes only the calling thread, which
    // is dedicated to the worker.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "cat",
            &format!("/sys/class/net/{dev}/address"),
        ])
        .output()
        .expect("read MAC");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mac = [0u8; 6];
    for (b, part) in mac.iter_mut().zip(text.trim().split(':')) {
        *b = u8::from_str_radix(part, 16).expect("MAC");
    }
    mac
}

#[test]
fn root_frames_are_accounted_for_under_a_ping_flood() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, AF_XDP); CI runs it as root"
    );
    let pid = std::process::id();
    let (node, a, b) = (
        format!("weir-wn-{pid}"),
        format!("weir-wa-{pid}"),
        format!("weir-wb-{pid}"),
    );
    let lab = Lab {
        names: vec![node.clone(), a.clone(), b.clone()],
    };
    for ns in &lab.names {
        ip(&["netns", "add", ns]);
    }
    let hosts = [format!("wqa{pid}"), format!("wqb{pid}")];
    let addrs = ["198.18.7.1", "198.18.7.2"];
    for (i, ns) in [&a, &b].into_iter().enumerate() {
        ip(&[
            "-n", &node, "link", "add", &hosts[i], "type", "veth", "peer", "name", "eth0", "netns",
            ns,
        ]);
        ip(&["-n", &node, "link", "set", &hosts[i], "up"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/32", addrs[i]),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ]);
    }
    let mut builder = SnapshotBuilder::new();
    for (i, ns) in [&a, &b].into_iter().enumerate() {
        builder
            .pod(PodSpec {
                namespace: "t".into(),
                name: format!("p{i}"),
                interface: hosts[i].clone(),
                gateway_mac: mac_of(&node, &hosts[i]),
                mac: mac_of(ns, "eth0"),
                ipv4: Some(addrs[i].parse().unwrap()),
                ipv6: None,
                mtu: 1500,
            })
            .unwrap();
    }
    let snapshot = builder.build(1).unwrap();
    let ports: Vec<PortSpec> = hosts
        .iter()
        .map(|h| PortSpec {
            name: h.clone(),
            uplink_filter: None,
        })
        .collect();

    let node_for_worker = node.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || -> Result<(u64, u64, u64), String> {
        enter_netns(&node_for_worker);
        // A small UMEM, so that frames are recycled many times over.
        let config = WorkerConfig {
            umem: UmemConfig {
                frame_count: 1024,
                ..UmemConfig::default()
            },
            ..WorkerConfig::default()
        };
        let mut w = Worker::new(&ports, &snapshot, config).map_err(|e| e.to_string())?;
        ready_tx.send(()).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut rounds = 0u64;
        // Bounded: until the flood is over (signalled) or 60 s.
        while done_rx.try_recv().is_err() && started.elapsed() < Duration::from_secs(60) {
            w.poll_once(&snapshot, started.elapsed().as_nanos() as u64);
            rounds += 1;
            w.check_accounting()
                .map_err(|e| format!("after round {rounds}: {e}"))?;
        }
        // Drain what is still in flight, then check once more.
        for _ in 0..1000 {
            w.poll_once(&snapshot, started.elapsed().as_nanos() as u64);
        }
        w.check_accounting()?;
        let r = w.report();
        Ok((r.rx_frames, r.tx_frames, r.pipeline.tx))
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("worker started");
    // A bounded flood: 20 000 echo requests with 16 in flight.
    let out = Command::new("ip")
        .args([
            "netns", "exec", &a, "ping", "-q", "-f", "-l", "16", "-c", "20000", "-w", "30",
            addrs[1],
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("ping");
    let _ = done_tx.send(());
    let (rx, tx, pipeline_tx) = worker.join().expect("worker thread").expect("worker");
    let summary = String::from_utf8_lossy(&out.stdout);
    // With 16 in flight, ping sends a few more than the count and stops once the count
    // is answered, without waiting for the last few.
    let received: u64 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        received >= 20_000,
        "echoes answered through weir: {summary}"
    );
    // Requests and replies, plus ARP.
    assert!(rx >= 40_000, "frames received: {rx}");
    assert!(tx >= 40_000 && pipeline_tx >= 40_000, "frames sent: {tx}");
    drop(lab);
}
