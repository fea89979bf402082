//! Flows stay on one worker, on real veths (root; CI runs it): pod a's interface is owned by
//! worker 0 and pod b's by worker 1, so a flow's request arrives on one worker and its
//! reply on the other. Both pods are isolated for ingress: a denies everything, b admits
//! one TCP and one UDP port. a's replies pass only as replies of a flow the conntrack that
//! saw the request knows: TCP and UDP from a to b's admitted ports work both ways, while a
//! connection from a to another port of b, and one from b to a, are dropped and counted
//! (`policy_denied_ingress`). The same with one worker.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use weir_dataplane::policy::program::{Match, PortMatch};
use weir_dataplane::policy::{
    Action, Direction, EndpointPolicy, PolicyTables, Program, Rule, RuleInfo, Sets, Tier, TierEnd,
};
use weir_dataplane::snapshot::PodSpec;
use weir_dataplane::{Counters, DropReason, SnapshotBuilder};
use weir_testkit::lab::{in_netns, mac_of, plumb_pod, require_root, setns, NetnsGuard};
use weir_workers::worker::{PortSpec, Worker, WorkerConfig};
use weir_workers::xsk::UmemConfig;

const A: &str = "198.18.17.1";
const B: &str = "198.18.17.2";
/// Connections (and UDP sockets) per test: each has its own source port, so with two
/// workers some flows are owned by one worker and some by the other.
const FLOWS: usize = 8;

/// What happened, summed over the workers.
#[derive(Debug)]
struct Outcome {
    counters: Counters,
    tcp_ok: usize,
    udp_ok: usize,
    denied_connect_failed: bool,
    denied_port_failed: bool,
}

/// Ingress default deny for the first pod; for the second, ingress admits TCP and UDP to
/// `port` only.
fn isolate_both_pods(port: u16) -> PolicyTables {
    let deny = Program::new(
        vec![Tier {
            rules: vec![],
            end: TierEnd::Deny,
            end_id: 0,
        }],
        &Sets::default(),
    );
    let admit = |protocol: u8, id: u32| Rule {
        matches: Match {
            protocol: Some(protocol),
            dst_ports: PortMatch {
                ranges: vec![(port, port)],
                named: None,
            },
            ..Match::default()
        },
        action: Action::Allow,
        id,
    };
    let admit_port = Program::new(
        vec![Tier {
            rules: vec![admit(6, 1), admit(17, 2)],
            end: TierEnd::Deny,
            end_id: 3,
        }],
        &Sets::default(),
    );
    let info = |policy: &str, index: Option<usize>| RuleInfo {
        tier: "default".into(),
        policy: policy.into(),
        direction: Direction::Ingress,
        index,
    };
    PolicyTables {
        endpoints: vec![
            EndpointPolicy {
                ingress: Some(Arc::new(deny)),
                egress: None,
            },
            EndpointPolicy {
                ingress: Some(Arc::new(admit_port)),
                egress: None,
            },
        ],
        warm_pays: Default::default(),
        sets: Sets::default(),
        rules: vec![
            info("t/deny-all", None),
            info("t/admit-port", Some(0)),
            info("t/admit-port", Some(1)),
            info("", None),
        ],
    }
}

fn scenario(tag: &str, workers: usize) -> Outcome {
    require_root("the AF_XDP steering scenario (network namespaces, AF_XDP)");
    let pid = std::process::id();
    let (node, a, b) = (
        format!("weir-sn{tag}-{pid}"),
        format!("weir-sa{tag}-{pid}"),
        format!("weir-sb{tag}-{pid}"),
    );
    let mut lab = NetnsGuard::new();
    for ns in [&node, &a, &b] {
        lab.add_netns(ns).unwrap();
    }
    let hosts = [format!("ws{tag}a{pid}"), format!("ws{tag}b{pid}")];
    for (i, ns) in [&a, &b].into_iter().enumerate() {
        plumb_pod(&node, ns, &hosts[i], [A, B][i]).unwrap();
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
                ipv4: Some([A, B][i].parse().unwrap()),
                ipv6: None,
                mtu: 1500,
            })
            .unwrap();
    }
    // The servers' port in pod b, the one its policy admits; the next one is denied.
    // (Each test's pods are namespaces of their own: the two tests cannot collide.)
    let port = 20000 + (pid % 20000) as u16;
    builder.policy(isolate_both_pods(port));
    let snapshot = Arc::new(builder.build(1).unwrap());
    let owner: Vec<(String, usize)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.clone(), i % workers))
        .collect();
    let links = weir_workers::handoff::mesh(workers, 256, &owner).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let drained = Arc::new(Barrier::new(workers));
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
        threads.push(std::thread::spawn(move || -> Result<Counters, String> {
            setns(&node).map_err(|e| e.to_string())?;
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
            // Bounded: until the scenario is over (signalled) or 60 s.
            while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                wk.poll_once(&snapshot, started.elapsed().as_nanos() as u64);
                // Not a busy loop: the machine is shared, and the traffic here is light.
                std::thread::sleep(Duration::from_micros(50));
            }
            for _ in 0..200 {
                wk.poll_once(&snapshot, started.elapsed().as_nanos() as u64);
            }
            drained.wait();
            for _ in 0..200 {
                wk.poll_once(&snapshot, started.elapsed().as_nanos() as u64);
            }
            wk.check_accounting()?;
            let r = wk.report();
            r.pipeline
                .check_accounting()
                .map_err(|e| format!("worker {w}'s packet accounting: {e}"))?;
            Ok(r.pipeline)
        }));
    }
    for _ in 0..workers {
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("worker started");
    }

    let timeout = Duration::from_secs(3);
    // Servers in pod b: a TCP echo and a UDP echo.
    let listener = in_netns(&b, move || TcpListener::bind((B, port)).unwrap()).unwrap();
    let tcp_at = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..FLOWS {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..n]);
            }
        }
    });
    let udp_server = in_netns(&b, move || UdpSocket::bind((B, port)).unwrap()).unwrap();
    let udp_at = udp_server.local_addr().unwrap();
    udp_server
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let udp_done = Arc::new(AtomicBool::new(false));
    let udp_echo = {
        let udp_done = udp_done.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut buf = [0u8; 64];
            while !udp_done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                if let Ok((n, from)) = udp_server.recv_from(&mut buf) {
                    let _ = udp_server.send_to(&buf[..n], from);
                }
            }
        })
    };

    // From isolated pod a: each connection's replies come back from the other worker.
    let mut tcp_ok = 0;
    for i in 0..FLOWS {
        let message = format!("tcp {i}");
        let got = in_netns(&a, move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&tcp_at, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.write_all(message.as_bytes())?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .unwrap();
        match got {
            Ok(text) if text == format!("tcp {i}") => tcp_ok += 1,
            other => eprintln!("TCP connection {i}: {other:?}"),
        }
    }
    let mut udp_ok = 0;
    for i in 0..FLOWS {
        let message = format!("udp {i}");
        let got = in_netns(&a, move || -> std::io::Result<String> {
            let s = UdpSocket::bind((A, 0))?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            let mut buf = [0u8; 64];
            // A first datagram may wait for ARP: try a few times.
            for _ in 0..5 {
                s.send_to(message.as_bytes(), udp_at)?;
                if let Ok(n) = s.recv(&mut buf) {
                    return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
            Err(std::io::ErrorKind::TimedOut.into())
        })
        .unwrap();
        match got {
            Ok(text) if text == format!("udp {i}") => udp_ok += 1,
            other => eprintln!("UDP socket {i}: {other:?}"),
        }
    }

    // Towards another port of pod b: refused by b's ingress policy (the SYN never arrives).
    let listener_b = in_netns(&b, move || TcpListener::bind((B, port + 1)).unwrap()).unwrap();
    let other_port: SocketAddr = listener_b.local_addr().unwrap();
    let denied_port_failed = in_netns(&a, move || {
        TcpStream::connect_timeout(&other_port, Duration::from_secs(1)).is_err()
    })
    .unwrap();

    // Towards isolated pod a: refused by its ingress policy (the SYN never arrives).
    let listener_a = in_netns(&a, || TcpListener::bind((A, 0)).unwrap()).unwrap();
    let a_at: SocketAddr = listener_a.local_addr().unwrap();
    let denied_connect_failed = in_netns(&b, move || {
        TcpStream::connect_timeout(&a_at, Duration::from_secs(1)).is_err()
    })
    .unwrap();

    done.store(true, Ordering::SeqCst);
    udp_done.store(true, Ordering::SeqCst);
    let mut counters = Counters::default();
    for t in threads {
        counters.merge(&t.join().expect("worker thread").expect("worker"));
    }
    udp_echo.join().unwrap();
    // The server thread ends on its own once FLOWS connections were served; if some never
    // arrived it would wait in accept: closing the namespaces does not end it, so only join
    // it when every connection came.
    if tcp_ok == FLOWS {
        server.join().unwrap();
    }
    drop(listener_a);
    drop(listener_b);
    drop(lab);
    Outcome {
        counters,
        tcp_ok,
        udp_ok,
        denied_connect_failed,
        denied_port_failed,
    }
}

fn check(o: &Outcome) {
    assert_eq!(o.tcp_ok, FLOWS, "TCP echoes through weir: {o:?}");
    assert_eq!(o.udp_ok, FLOWS, "UDP echoes through weir: {o:?}");
    assert!(o.denied_connect_failed, "b reached isolated a: {o:?}");
    assert!(
        o.denied_port_failed,
        "a reached a port b does not admit: {o:?}"
    );
    // Each refused SYN and its retransmissions within the second: at least one per refusal.
    assert!(
        o.counters.dropped(DropReason::PolicyDeniedIngress) >= 2,
        "{o:?}"
    );
    assert_eq!(o.counters.handoff_out, o.counters.handoff_in, "{o:?}");
    assert_eq!(o.counters.dropped(DropReason::HandoffFull), 0, "{o:?}");
    o.counters.check_accounting().unwrap();
}

#[test]
fn root_replies_to_an_isolated_pod_pass_when_its_flows_cross_two_workers() {
    let o = scenario("2", 2);
    check(&o);
    assert!(o.counters.handoff_out > 0, "the workers handed over: {o:?}");
}

#[test]
fn root_replies_to_an_isolated_pod_pass_on_one_worker() {
    let o = scenario("1", 1);
    check(&o);
    assert_eq!(o.counters.handoff_out, 0, "{o:?}");
}
