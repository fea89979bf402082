//! Ports attached to and detached from running workers (root; CI runs it): a pod veth made
//! after the workers started is attached through [`PortControl`], pods ping across it
//! (through one worker, and across the handoff between two), it is detached, and then
//! every UMEM frame is accounted for, none lost, and the interface has no XDP program
//! left. The snapshot that adds the pod puts it first, so every interface index moves
//! and the workers must re-map by name.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_dataplane::snapshot::{PodSpec, Publisher};
use weir_dataplane::SnapshotBuilder;
use weir_testkit::lab::{ip, mac_of, plumb_pod, require_root, setns, NetnsGuard};
use weir_workers::ports::PortControl;
use weir_workers::worker::{PortSpec, Worker, WorkerConfig, WorkerReport};
use weir_workers::xsk::UmemConfig;

const ANSWER: Duration = Duration::from_secs(5);

/// A node namespace and pod namespaces, removed on drop (with every veth in them); the
/// stop flags are raised first, so that no worker outlives a failed test.
struct Lab {
    node: String,
    pods: Vec<Pod>,
    stops: Vec<Arc<AtomicBool>>,
    guard: NetnsGuard,
}

#[derive(Clone)]
struct Pod {
    ns: String,
    host: String,
    addr: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for s in &self.stops {
            s.store(true, Ordering::SeqCst);
        }
        // The guard, dropped after this, deletes the namespaces.
    }
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let node = format!("weir-xn{tag}-{pid}");
        let mut guard = NetnsGuard::new();
        guard.add_netns(&node).unwrap();
        Lab {
            node,
            pods: Vec::new(),
            stops: Vec::new(),
            guard,
        }
    }

    /// Pod `letter`: its namespace, a veth whose host end is in the node namespace, its
    /// address `198.18.<net>.<host>` and a default route via weir's gateway.
    fn add_pod(&mut self, tag: &str, letter: char, net: u8, host: u8) -> Pod {
        let pid = std::process::id();
        let pod = Pod {
            ns: format!("weir-x{letter}{tag}-{pid}"),
            host: format!("wx{tag}{letter}{pid}"),
            addr: format!("198.18.{net}.{host}"),
        };
        self.guard.add_netns(&pod.ns).unwrap();
        plumb_pod(&self.node, &pod.ns, &pod.host, &pod.addr).unwrap();
        self.pods.push(pod.clone());
        pod
    }

    /// A snapshot builder with `pods`, in that order (which sets their indices).
    fn builder(&self, pods: &[&Pod]) -> SnapshotBuilder {
        let mut builder = SnapshotBuilder::new();
        for (i, p) in pods.iter().enumerate() {
            builder
                .pod(PodSpec {
                    namespace: "t".into(),
                    name: format!("p{i}-{}", p.host),
                    interface: p.host.clone(),
                    gateway_mac: mac_of(&self.node, &p.host).unwrap(),
                    mac: mac_of(&p.ns, "eth0").unwrap(),
                    ipv4: Some(p.addr.parse().unwrap()),
                    ipv6: None,
                    mtu: 1500,
                })
                .unwrap();
        }
        builder
    }

    /// Whether interface `host` of the node has an XDP program.
    fn has_xdp(&self, host: &str) -> bool {
        ip(&["-n", &self.node, "-d", "link", "show", "dev", host])
            .unwrap()
            .contains("xdp")
    }

    /// The id of the XDP program on interface `host` of the node (`ip -d link` prints
    /// `prog/xdp id N`).
    fn xdp_id(&self, host: &str) -> Option<String> {
        let shown = ip(&["-n", &self.node, "-d", "link", "show", "dev", host]).unwrap();
        let mut words = shown.split_whitespace();
        words.find(|w| *w == "prog/xdp")?;
        words.find(|w| *w == "id")?;
        words.next().map(str::to_owned)
    }

    /// A stop flag raised when the lab goes.
    fn stop_flag(&mut self) -> Arc<AtomicBool> {
        let s = Arc::new(AtomicBool::new(false));
        self.stops.push(s.clone());
        s
    }
}

/// Three echo requests from `from` to `to`, bounded to 10 s; whether all were answered.
fn ping(from: &Pod, to: &Pod) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", &from.ns, "ping", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-w", "10",
            &to.addr,
        ])
        .output()
        .expect("ping")
        .status
        .success()
}

fn spec(pod: &Pod) -> PortSpec {
    PortSpec {
        name: pod.host.clone(),
        uplink_filter: None,
    }
}

/// Starts worker `w` in the node namespace on `ports`, running one [`Worker::run`] per
/// stop flag in `phases`; after each it checks the frame accounting and sends its report
/// (or what failed) on the returned channel.
fn start_worker(
    lab: &Lab,
    w: usize,
    ports: Vec<PortSpec>,
    publisher: &Publisher,
    links: weir_workers::handoff::Links,
    control: &PortControl,
    phases: Vec<Arc<AtomicBool>>,
) -> (
    Receiver<Result<WorkerReport, String>>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = channel();
    let (node, reader, mailbox) = (lab.node.clone(), publisher.reader(), control.mailbox(w));
    let handle = std::thread::spawn(move || {
        setns(&node).unwrap();
        let snapshot = Arc::clone(&reader.load());
        let config = WorkerConfig {
            // Small, so that a frame kept anywhere would show.
            umem: UmemConfig {
                frame_count: 1024,
                ..UmemConfig::default()
            },
            ..WorkerConfig::default()
        };
        let mut wk = match Worker::new(&ports, &snapshot, config)
            .and_then(|mut wk| wk.connect(&snapshot, links).map(|()| wk))
        {
            Ok(wk) => wk,
            Err(e) => {
                let _ = tx.send(Err(format!("worker {w}: {e}")));
                return;
            }
        };
        wk.set_port_mailbox(mailbox);
        let _ = tx.send(Ok(wk.report()));
        let shared = Mutex::new(WorkerReport::default());
        for (i, stop) in phases.iter().enumerate() {
            wk.run(&reader, stop, &shared);
            // Both ledgers: every UMEM frame is somewhere, and every packet that came in
            // went out, was handed on or was dropped for a named reason.
            let r = wk
                .check_accounting()
                .map(|()| wk.report())
                .and_then(|r| r.pipeline.check_accounting().map(|()| r))
                .map_err(|e| format!("worker {w} after phase {i}: {e}"));
            let _ = tx.send(r);
        }
    });
    (rx, handle)
}

fn next_report(rx: &Receiver<Result<WorkerReport, String>>) -> WorkerReport {
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the worker answers")
        .expect("the worker")
}

#[test]
fn root_a_pod_attached_to_a_running_worker_pings_then_detaches_without_losing_a_frame() {
    require_root("the AF_XDP port scenario (network namespaces, AF_XDP)");
    let mut lab = Lab::new("p");
    let a = lab.add_pod("p", 'a', 9, 1);
    let b = lab.add_pod("p", 'b', 9, 2);
    let mut publisher = Publisher::new();
    publisher.publish(lab.builder(&[&a, &b])).unwrap();
    let owner = vec![(a.host.clone(), 0), (b.host.clone(), 0)];
    let links = weir_workers::handoff::mesh(1, 64, &owner).unwrap();
    let control = PortControl::new(&links);
    let phases = vec![lab.stop_flag(), lab.stop_flag()];
    let (reports, worker) = start_worker(
        &lab,
        0,
        vec![spec(&a), spec(&b)],
        &publisher,
        links.into_iter().next().unwrap(),
        &control,
        phases.clone(),
    );
    next_report(&reports);
    assert!(ping(&a, &b), "the pods the worker started with");

    // A pod arrives: its veth, then a snapshot that names it (first, so that every index
    // moves), then the port.
    let c = lab.add_pod("p", 'c', 9, 3);
    publisher.publish(lab.builder(&[&c, &a, &b])).unwrap();
    control.attach(0, &spec(&c), ANSWER).expect("attach");
    assert!(lab.has_xdp(&c.host));
    // One program for all of the worker's pod interfaces: attaching loads none.
    let ids: Vec<_> = [&a, &b, &c].iter().map(|p| lab.xdp_id(&p.host)).collect();
    assert!(ids[0].is_some(), "{ids:?}");
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert!(ping(&c, &a), "to the new pod's neighbour");
    assert!(ping(&a, &c), "from it");
    assert!(ping(&b, &a), "the old pods, at their new indices");
    assert!(control.attach(0, &spec(&c), ANSWER).is_err(), "twice");

    control.detach(0, &c.host, ANSWER).expect("detach");
    assert!(!lab.has_xdp(&c.host), "no XDP program left after detach");
    assert!(control.detach(0, &c.host, ANSWER).is_err(), "twice");
    phases[0].store(true, Ordering::SeqCst);
    let r = next_report(&reports);
    assert_eq!(r.frames_lost, 0, "{r:?}");
    assert_eq!(r.ports.len(), 2, "{:?}", r.ports);

    // Attached again, it works again; detached again in the middle of a flood (frames in
    // its RX, fill and TX rings), everything is still accounted for.
    control.attach(0, &spec(&c), ANSWER).expect("re-attach");
    assert!(ping(&c, &b));
    let mut flood = Command::new("ip")
        .args([
            "netns", "exec", &c.ns, "ping", "-q", "-f", "-l", "16", "-c", "200000", "-w", "3",
            &a.addr,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ping flood");
    std::thread::sleep(Duration::from_millis(500));
    let detached = control.detach(0, &c.host, ANSWER);
    let _ = flood.wait();
    detached.expect("detach under load");
    assert!(!lab.has_xdp(&c.host));
    assert!(ping(&a, &b), "the others are undisturbed");
    phases[1].store(true, Ordering::SeqCst);
    let r = next_report(&reports);
    assert_eq!(r.frames_lost, 0, "{r:?}");
    assert!(r.rx_frames >= 1000 && r.tx_frames >= 1000, "{r:?}");
    worker.join().unwrap();
}

#[test]
fn root_a_port_attached_to_the_second_worker_reaches_the_first_over_the_handoff() {
    require_root("the AF_XDP port scenario (network namespaces, AF_XDP)");
    let mut lab = Lab::new("q");
    let a = lab.add_pod("q", 'a', 10, 1);
    let b = lab.add_pod("q", 'b', 10, 2);
    let mut publisher = Publisher::new();
    publisher.publish(lab.builder(&[&a, &b])).unwrap();
    let owner = vec![(a.host.clone(), 0), (b.host.clone(), 1)];
    let links = weir_workers::handoff::mesh(2, 64, &owner).unwrap();
    let control = PortControl::new(&links);
    let stop = lab.stop_flag();
    let mut workers = Vec::new();
    for (w, l) in links.into_iter().enumerate() {
        let ports = vec![spec(if w == 0 { &a } else { &b })];
        workers.push(start_worker(
            &lab,
            w,
            ports,
            &publisher,
            l,
            &control,
            vec![stop.clone()],
        ));
    }
    for (reports, _) in &workers {
        next_report(reports);
    }
    assert!(ping(&a, &b), "across the workers before any change");

    let c = lab.add_pod("q", 'c', 10, 3);
    publisher.publish(lab.builder(&[&c, &a, &b])).unwrap();
    control.attach(1, &spec(&c), ANSWER).expect("attach");
    assert!(ping(&c, &a), "worker 1 to worker 0 and back");
    assert!(ping(&a, &c), "worker 0 to worker 1 and back");
    control.detach(1, &c.host, ANSWER).expect("detach");
    assert!(!lab.has_xdp(&c.host));
    assert!(ping(&a, &b), "the others are undisturbed");
    // The snapshot still routes to c, but no worker owns it now: a counted drop.
    let once = Command::new("ip")
        .args([
            "netns", "exec", &a.ns, "ping", "-q", "-c", "1", "-W", "1", &c.addr,
        ])
        .output()
        .expect("ping");
    assert!(!once.status.success(), "nothing answers for a detached pod");

    stop.store(true, Ordering::SeqCst);
    // Counted by the worker that owns the ping's flow (see `node::steer`): either one.
    let mut unowned = 0;
    for (w, (reports, handle)) in workers.into_iter().enumerate() {
        let r = next_report(&reports);
        assert_eq!(r.frames_lost, 0, "worker {w}: {r:?}");
        assert!(
            r.handoff_out() >= 6 && r.handoff_in() >= 6,
            "worker {w}: {r:?}"
        );
        unowned += r
            .pipeline
            .dropped(weir_dataplane::DropReason::UnownedOutput);
        handle.join().unwrap();
    }
    assert!(unowned >= 1, "the ping to the detached pod");
}
