//! `weir-bench attach`: how long a pod waits for its network, from the runtime's ADD to
//! the first packet answered, with weir and with Debian's `bridge` + `host-local`.
//!
//! Both run through libcni (the project's Go driver, `control/tests/cni/driver`, built
//! from Debian's sources), in a node namespace of their own, with the same steps: a peer
//! pod is attached first and answers UDP probes (an echo on a socket of the benchmark's,
//! in the peer's namespace); then, for each level of `parallel`, `pods` pods are created
//! that many at a time, and for each the time from starting ADD to the first probe
//! answered is recorded. The probe is a UDP socket opened in the pod's namespace before
//! ADD, sending every 0.5 ms once ADD returns and waiting 0.5 ms for the answer, so the
//! figure is the plugin's, not the method's (a `ping` process per attempt costs several
//! milliseconds). weir's ADD returns once the pod's policy is programmed; bridge's once
//! its veth is on the bridge.
//!
//! The floor of the method is printed beside: the same driver running a no-op plugin
//! (what libcni and process start-up cost an ADD), one at a time and as many at once as
//! each level (the processes of a burst share the machine's cores: at 10 or 50 at a time
//! this floor alone can exceed an absolute goal), and the probe's round trip on an
//! attached pod. And while weir's pods are attached, a *witness* pod attached first
//! sends a probe every 0.1 ms to the peer: the longest silence between answers during
//! the bursts is the forwarding gap the attaches cause, beside the same flow through
//! bridge during its bursts (the plugin processes compete for the same two cores) and
//! the longest silence over as long a time with no attach (this machine's scheduling).
//!
//! The worker's own view of the same: how many rounds of its loop (port commands, then
//! one poll) took longer than 1 ms during each level (`weir_worker_slow_rounds_total`
//! from the agent's `/metrics`), which the measuring threads' own scheduling cannot blur,
//! and of those the rounds that served port commands (its own work when ports come); the
//! longest round less the time the worker's thread waited for a CPU in it
//! (`weir_worker_longest_stall_seconds`, the worker's own standstill, as of the level's
//! end), and how long the worker waited for a CPU during the level
//! (`weir_worker_cpu_wait_seconds_total`: its core taken by the burst's processes, since
//! the core is not isolated here).
//!
//! Root only; everything is made under names holding the process id and removed
//! afterwards, and every loop is bounded in time.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_testkit::flow::{socket_in, Echo, Flow};
use weir_testkit::lab::{in_netns, ip, ChildGuard, NetnsGuard};

use crate::report::{percentile, BenchResult};

/// The benchmark's shape.
#[derive(Debug, Clone)]
pub struct AttachBenchConfig {
    /// Pods timed per plugin.
    pub pods: usize,
    /// Pods created at once: one round of `pods` per level.
    pub parallel: Vec<usize>,
    /// The `weir` binary (the agent).
    pub weir: PathBuf,
    /// The directory holding `weir-cni`.
    pub plugin_dir: PathBuf,
    /// Scratch directory (removed afterwards).
    pub workdir: PathBuf,
}

fn driver(workdir: &Path) -> Result<PathBuf, String> {
    let out = workdir.join("cni-driver");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../control/tests/cni/build.sh");
    let built = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !built.status.success() {
        return Err(format!(
            "building the libcni driver: {}",
            String::from_utf8_lossy(&built.stderr).trim()
        ));
    }
    Ok(out)
}

struct Plugin<'a> {
    node: &'a str,
    driver: &'a Path,
    conflist: PathBuf,
    cni_path: String,
    cache: PathBuf,
}

impl Plugin<'_> {
    fn add(&self, netns: &str, id: &str, pod: &str) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", self.node])
            .arg(self.driver)
            .args(["add", "--conflist"])
            .arg(&self.conflist)
            .args([
                "--container-id",
                id,
                "--netns",
                &format!("/var/run/netns/{netns}"),
            ])
            .args([
                "--ifname",
                "eth0",
                "--cni-path",
                &self.cni_path,
                "--cache-dir",
            ])
            .arg(&self.cache)
            .args([
                "--args",
                &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod}"),
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "ADD {pod}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("ADD {pod}: {e}"))?;
        v["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .map(str::to_owned)
            .ok_or_else(|| format!("ADD {pod}: no address in {v}"))
    }
}

/// The UDP port the peer's echo answers on.
const ECHO_PORT: u16 = 7;
/// How often a waiting pod probes, and how long it waits for each answer.
const PROBE_EVERY: Duration = Duration::from_micros(500);
/// How long a pod may take to be answered before the benchmark gives up.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// The witness's send interval.
const WITNESS_EVERY: Duration = Duration::from_micros(100);

/// Where the peer's echo answers.
fn echo_at(addr: &str) -> Result<SocketAddr, String> {
    format!("{addr}:{ECHO_PORT}")
        .parse()
        .map_err(|e| format!("{addr}: {e}"))
}

/// A flow's longest silence within `from..=to`, in ms.
fn silence_ms(flow: &Flow, from: Instant, to: Instant) -> f64 {
    flow.silence(from, to).0.as_secs_f64() * 1e3
}

/// A UDP socket in namespace `ns` (bound to any address: the pod has none yet).
fn probe_socket(ns: &str) -> Result<UdpSocket, String> {
    let any: SocketAddr = ([0, 0, 0, 0], 0).into();
    let socket = socket_in(ns, any).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(PROBE_EVERY))
        .map_err(|e| e.to_string())?;
    Ok(socket)
}

/// Probes `to` from `socket` until answered (or the deadline); returns when the answer
/// came.
fn first_answer(socket: &UdpSocket, to: SocketAddr, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 64];
    let mut seq = 0u64;
    while Instant::now() < deadline {
        seq += 1;
        // Refused while the pod has no route yet: try again.
        let _ = socket.send_to(&seq.to_be_bytes(), to);
        match socket.recv_from(&mut buf) {
            Ok((8, _)) => return Some(Instant::now()),
            // An error that came at once (an ICMP error queued on the socket): wait as a
            // timeout would, so that the loop never spins.
            Err(e)
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                std::thread::sleep(PROBE_EVERY)
            }
            _ => {}
        }
    }
    None
}

/// One pod's figures.
struct Timed {
    /// ADD start to the first answer.
    total_ms: f64,
    /// ADD start to ADD's return.
    add_ms: f64,
    /// A second probe's round trip, once attached.
    rtt_ms: f64,
}

/// Attaches `cfg.pods` pods `parallel` at a time with one plugin set-up.
fn measure(
    cfg: &AttachBenchConfig,
    plugin: &Plugin<'_>,
    tag: &str,
    parallel: usize,
    peer: SocketAddr,
    made: &mut NetnsGuard,
) -> Result<Vec<Timed>, String> {
    let pid = std::process::id();
    let mut times = Vec::with_capacity(cfg.pods);
    let mut next = 0;
    while next < cfg.pods {
        let batch: Vec<usize> = (next..(next + parallel).min(cfg.pods)).collect();
        next += batch.len();
        let mut pods = Vec::new();
        for i in &batch {
            let ns = format!("wb{tag}{parallel}x{i}-{pid}");
            made.add_netns(&ns)?;
            let socket = probe_socket(&ns)?;
            pods.push((*i, ns, socket));
        }
        let outcomes: Vec<Timed> = std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .map(|(i, ns, socket)| {
                    s.spawn(move || -> Result<Timed, String> {
                        let t0 = Instant::now();
                        let id = format!("c{tag}{parallel}x{i}-{pid}");
                        plugin.add(ns, &id, &format!("p{parallel}x{i}"))?;
                        let added = t0.elapsed();
                        let answered = first_answer(socket, peer, t0 + PROBE_DEADLINE)
                            .ok_or_else(|| format!("pod {i} ({tag}) never reached its peer"))?;
                        let t1 = Instant::now();
                        let rtt = first_answer(socket, peer, t1 + PROBE_DEADLINE)
                            .map_or(f64::NAN, |t| (t - t1).as_secs_f64() * 1e3);
                        Ok(Timed {
                            total_ms: (answered - t0).as_secs_f64() * 1e3,
                            add_ms: added.as_secs_f64() * 1e3,
                            rtt_ms: rtt,
                        })
                    })
                })
                .collect();
            joined(handles)
        })?;
        times.extend(outcomes);
    }
    Ok(times)
}

/// Each timing thread's figure, or the first error (a panicked thread is one).
fn joined<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T, String>>>,
) -> Result<Vec<T>, String> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err("a timing thread panicked".into()))
        })
        .collect()
}

/// The worker's view from the agent's `/metrics` (read inside the node's namespace).
#[derive(Debug, Clone, Copy)]
struct WorkerView {
    /// `weir_worker_slow_rounds_total`, summed over workers.
    slow: f64,
    /// `weir_worker_slow_port_rounds_total`, summed over workers.
    slow_port: f64,
    /// `weir_worker_longest_stall_seconds`, the longest of the workers', in ms.
    stall_ms: f64,
    /// `weir_worker_cpu_wait_seconds_total`, summed over workers, in ms.
    cpu_wait_ms: f64,
    /// `weir_worker_longest_port_stall_seconds`, the longest of the workers', in ms.
    port_stall_ms: f64,
}

fn worker_view(node: &str, port: u16) -> Result<WorkerView, String> {
    let text = in_netns(node, move || -> Result<String, String> {
        use std::io::{Read as _, Write as _};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("the agent's metrics: {e}"))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut body = String::new();
        c.read_to_string(&mut body).map_err(|e| e.to_string())?;
        Ok(body)
    })
    .map_err(|e| e.to_string())??;
    let values = |family: &str| -> Result<Vec<f64>, String> {
        let found: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        if found.is_empty() {
            return Err(format!("the agent's metrics have no {family}"));
        }
        Ok(found)
    };
    let sum = |family: &str| Ok::<f64, String>(values(family)?.iter().sum());
    Ok(WorkerView {
        slow: sum("weir_worker_slow_rounds_total")?,
        slow_port: sum("weir_worker_slow_port_rounds_total")?,
        stall_ms: values("weir_worker_longest_stall_seconds")?
            .into_iter()
            .fold(0.0, f64::max)
            * 1e3,
        cpu_wait_ms: sum("weir_worker_cpu_wait_seconds_total")? * 1e3,
        port_stall_ms: values("weir_worker_longest_port_stall_seconds")?
            .into_iter()
            .fold(0.0, f64::max)
            * 1e3,
    })
}

/// The no-op plugin of the floor: reads its configuration, answers one address.
const NOOP_PLUGIN: &str = "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"198.18.250.1/32\"}]}'\n";

/// ADD through the driver with a plugin that does nothing: what the method costs, one at
/// a time (first) and at each of `cfg.parallel`'s levels.
fn noop_floor(
    cfg: &AttachBenchConfig,
    driver: &Path,
    made: &mut NetnsGuard,
) -> Result<Vec<Vec<f64>>, String> {
    let pid = std::process::id();
    let dir = cfg.workdir.join("noop");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let plugin = dir.join("weir-bench-noop");
    std::fs::write(&plugin, NOOP_PLUGIN).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let list = dir.join("noop.conflist");
    std::fs::write(
        &list,
        serde_json::json!({"cniVersion": "1.0.0", "name": "noop",
            "plugins": [{"type": "weir-bench-noop"}]})
        .to_string(),
    )
    .map_err(|e| e.to_string())?;
    let node = format!("wbf-{pid}");
    made.add_netns(&node)?;
    let noop = Plugin {
        node: &node,
        driver,
        conflist: list,
        cni_path: dir.display().to_string(),
        cache: dir.join("cache"),
    };
    // One at a time, then each level's concurrency: what the driver and the process
    // starts cost an ADD when as many run at once on these cores.
    let mut levels = Vec::new();
    for (l, parallel) in std::iter::once(1)
        .chain(cfg.parallel.iter().copied())
        .enumerate()
    {
        let count = cfg.pods.min(50).max(parallel.min(cfg.pods));
        let mut times = Vec::with_capacity(count);
        let mut next = 0;
        while next < count {
            let batch: Vec<usize> = (next..(next + parallel).min(count)).collect();
            next += batch.len();
            let mut spaces = Vec::with_capacity(batch.len());
            for i in &batch {
                let ns = format!("wbf{l}x{i}-{pid}");
                made.add_netns(&ns)?;
                spaces.push((*i, ns));
            }
            let outcomes: Vec<f64> = std::thread::scope(|s| {
                let noop = &noop;
                let handles: Vec<_> = spaces
                    .iter()
                    .map(|(i, ns)| {
                        s.spawn(move || -> Result<f64, String> {
                            let t0 = Instant::now();
                            noop.add(ns, &format!("f{l}x{i}-{pid}"), &format!("f{l}x{i}"))?;
                            Ok(t0.elapsed().as_secs_f64() * 1e3)
                        })
                    })
                    .collect();
                joined(handles)
            })?;
            times.extend(outcomes);
        }
        levels.push(times);
    }
    Ok(levels)
}

/// Runs the benchmark (root).
pub fn run(cfg: &AttachBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), String> {
    if cfg.pods == 0
        || cfg.pods > 250
        || cfg.parallel.is_empty()
        || cfg.parallel.len() > 4
        || cfg.parallel.contains(&0)
    {
        return Err(
            "attach: --pods must be 1..=250 and --parallel one to four levels of at least 1".into(),
        );
    }
    std::fs::create_dir_all(&cfg.workdir).map_err(|e| e.to_string())?;
    let driver = driver(&cfg.workdir)?;
    let pid = std::process::id();
    // Namespaces and processes made by one plugin's run, removed on drop.
    let mut made = NetnsGuard::new();

    // weir: an agent in its own node namespace, serving weir-cni.
    let node = format!("wbn-{pid}");
    made.add_netns(&node)?;
    ip(&["-n", &node, "link", "set", "lo", "up"])?;
    let ds = cfg.workdir.join("datastore");
    std::fs::create_dir_all(&ds).map_err(|e| e.to_string())?;
    std::fs::write(
        ds.join("cluster.yaml"),
        format!(
            "apiVersion: weir.dev/v1\nkind: IPPool\nmetadata:\n  name: bench\nspec:\n  cidr: \
             198.18.128.0/20\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: bench-{pid}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let socket = cfg.workdir.join("cni.sock");
    let config = cfg.workdir.join("agent.yaml");
    let metrics_port = (20000 + pid % 20000) as u16;
    let planned = cfg.pods * cfg.parallel.len() + 2;
    std::fs::write(
        &config,
        format!(
            "node: bench-{pid}\ncores: [1]\ndatastore: {}\nlisten: 127.0.0.1:{}\nframes: \
             8192\ncni:\n  socket: {}\n  ipamDir: {}\n  portsPerWorker: {planned}\n",
            ds.display(),
            metrics_port,
            socket.display(),
            cfg.workdir.join("ipam").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(cfg.workdir.join("agent.log")).map_err(|e| e.to_string())?;
    let agent = Command::new("ip")
        .args(["netns", "exec", &node])
        .arg(&cfg.weir)
        .args(["agent", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", cfg.weir.display()))?;
    made.adopt(ChildGuard::with_grace(agent, Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(cfg.workdir.join("agent.log")).unwrap_or_default();
            return Err(format!("the agent did not start serving weir-cni: {log}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cni_path = format!("{}:/usr/lib/cni", cfg.plugin_dir.display());
    let weir_list = cfg.workdir.join("weir.conflist");
    std::fs::write(
        &weir_list,
        serde_json::json!({"cniVersion": "1.0.0", "name": "weir", "plugins": [
            {"type": "weir-cni", "socket": socket, "timeoutSeconds": 20}]})
        .to_string(),
    )
    .map_err(|e| e.to_string())?;
    let weir = Plugin {
        node: &node,
        driver: &driver,
        conflist: weir_list,
        cni_path: cni_path.clone(),
        cache: cfg.workdir.join("cache-weir"),
    };
    let (peer_ns, witness_ns) = (format!("wbpw-{pid}"), format!("wbww-{pid}"));
    made.add_netns(&peer_ns)?;
    made.add_netns(&witness_ns)?;
    let peer_ip = weir.add(&peer_ns, &format!("peerw-{pid}"), "peer")?;
    let peer = echo_at(&peer_ip)?;
    let echo = Echo::start(&peer_ns, peer).map_err(|e| e.to_string())?;
    let witness_socket = probe_socket(&witness_ns)?;
    weir.add(&witness_ns, &format!("witness-{pid}"), "witness")?;
    first_answer(&witness_socket, peer, Instant::now() + PROBE_DEADLINE)
        .ok_or("the witness pod never reached its peer")?;
    let witness = Flow::start(witness_socket, peer, WITNESS_EVERY).map_err(|e| e.to_string())?;
    // As long a quiet span as the bursts take, for the machine's own silences.
    let mut weir_ms = Vec::new();
    let mut gaps = Vec::new();
    let mut spans = Vec::new();
    let mut slow = Vec::new();
    for &parallel in &cfg.parallel {
        let before = worker_view(&node, metrics_port)?;
        let t0 = Instant::now();
        weir_ms.push(measure(cfg, &weir, "w", parallel, peer, &mut made)?);
        let t1 = Instant::now();
        gaps.push(silence_ms(&witness, t0, t1));
        spans.push(t1 - t0);
        // The worker publishes its report ten times a second.
        std::thread::sleep(Duration::from_millis(250));
        let after = worker_view(&node, metrics_port)?;
        slow.push(WorkerView {
            slow: after.slow - before.slow,
            slow_port: after.slow_port - before.slow_port,
            stall_ms: after.stall_ms,
            cpu_wait_ms: after.cpu_wait_ms - before.cpu_wait_ms,
            port_stall_ms: after.port_stall_ms,
        });
    }
    let quiet = spans.iter().copied().max().unwrap_or_default();
    let q0 = Instant::now();
    std::thread::sleep(quiet.min(Duration::from_secs(30)));
    let idle_gap = silence_ms(&witness, q0, Instant::now());
    drop(witness);
    drop(echo);
    drop(made);
    if let Ok(log) = std::fs::read_to_string(cfg.workdir.join("agent.log")) {
        let _ = std::fs::write(
            std::env::temp_dir().join("weir-bench-attach-agent.log"),
            log,
        );
    }

    // The anchor: Debian's bridge + host-local in a node namespace of their own.
    let mut made = NetnsGuard::new();
    let bnode = format!("wbb-{pid}");
    made.add_netns(&bnode)?;
    ip(&["-n", &bnode, "link", "set", "lo", "up"])?;
    let bridge_list = cfg.workdir.join("bridge.conflist");
    std::fs::write(
        &bridge_list,
        serde_json::json!({"cniVersion": "1.0.0", "name": "bench-bridge", "plugins": [
            {"type": "bridge", "bridge": format!("wbr{}", pid % 100_000), "isGateway": true,
             "ipam": {"type": "host-local", "subnet": "198.18.160.0/20",
                      "dataDir": cfg.workdir.join("host-local"),
                      "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.160.1"}]}}]})
        .to_string(),
    )
    .map_err(|e| e.to_string())?;
    let bridge = Plugin {
        node: &bnode,
        driver: &driver,
        conflist: bridge_list,
        cni_path,
        cache: cfg.workdir.join("cache-bridge"),
    };
    let bpeer_ns = format!("wbpb-{pid}");
    made.add_netns(&bpeer_ns)?;
    let bpeer_ip = bridge.add(&bpeer_ns, &format!("peerb-{pid}"), "peer")?;
    let bpeer = echo_at(&bpeer_ip)?;
    let becho = Echo::start(&bpeer_ns, bpeer).map_err(|e| e.to_string())?;
    let bwitness_ns = format!("wbwb-{pid}");
    made.add_netns(&bwitness_ns)?;
    let bwitness_socket = probe_socket(&bwitness_ns)?;
    bridge.add(&bwitness_ns, &format!("witnessb-{pid}"), "witness")?;
    first_answer(&bwitness_socket, bpeer, Instant::now() + PROBE_DEADLINE)
        .ok_or("the bridge's witness pod never reached its peer")?;
    let bwitness = Flow::start(bwitness_socket, bpeer, WITNESS_EVERY).map_err(|e| e.to_string())?;
    let mut bridge_ms = Vec::new();
    let mut bridge_gaps = Vec::new();
    for &parallel in &cfg.parallel {
        let t0 = Instant::now();
        bridge_ms.push(measure(cfg, &bridge, "b", parallel, bpeer, &mut made)?);
        bridge_gaps.push(silence_ms(&bwitness, t0, Instant::now()));
    }
    drop(bwitness);
    drop(becho);
    let floor = noop_floor(cfg, &driver, &mut made)?;
    drop(made);

    let pick = |t: &[Timed], f: fn(&Timed) -> f64| -> Vec<f64> { t.iter().map(f).collect() };
    let noop_p50 = percentile(&floor[0], 0.5);
    let mut results = Vec::new();
    for (i, &parallel) in cfg.parallel.iter().enumerate() {
        let w = pick(&weir_ms[i], |t| t.total_ms);
        let b = pick(&bridge_ms[i], |t| t.total_ms);
        let goal = if parallel <= 10 { 50.0 } else { 100.0 };
        let at = format!("at_{parallel}");
        results.extend([
            BenchResult::from_samples(
                format!("attach_weir_p50_ms_{at}"),
                "ms",
                vec![percentile(&w, 0.5)],
            )
            .with_anchor("bridge + host-local p50", percentile(&b, 0.5)),
            BenchResult::from_samples(
                format!("attach_weir_p99_ms_{at}"),
                "ms",
                vec![percentile(&w, 0.99)],
            )
            .with_anchor("bridge + host-local p99", percentile(&b, 0.99)),
            BenchResult::from_samples(
                format!("attach_weir_p99_vs_goal_ms_{at}"),
                "ms",
                vec![percentile(&w, 0.99)],
            )
            .with_anchor(format!("goal: {goal} ms"), goal),
            BenchResult::from_samples(
                format!("attach_noop_p99_ms_{at}"),
                "ms",
                vec![percentile(&floor[i + 1], 0.99)],
            )
            .with_anchor(
                "weir's ADD → first answer p99 (the floor's share of it)",
                percentile(&w, 0.99),
            ),
            BenchResult::from_samples(
                format!("attach_noop_p50_ms_{at}"),
                "ms",
                vec![percentile(&floor[i + 1], 0.5)],
            )
            .with_anchor("weir's ADD → first answer p50", percentile(&w, 0.5)),
            BenchResult::from_samples(
                format!("attach_weir_add_p50_ms_{at}"),
                "ms",
                vec![percentile(&pick(&weir_ms[i], |t| t.add_ms), 0.5)],
            )
            .with_anchor("no-op plugin ADD p50 (the driver's floor)", noop_p50),
            BenchResult::from_samples(
                format!("attach_forwarding_gap_ms_{at}"),
                "ms",
                vec![gaps[i]],
            )
            .with_anchor(
                "bridge + host-local: the same during its attaches",
                bridge_gaps[i],
            ),
            BenchResult::from_samples(
                format!("attach_worker_rounds_over_1ms_{at}"),
                "rounds",
                vec![slow[i].slow],
            )
            .with_anchor("goal: none", 0.0),
            BenchResult::from_samples(
                format!("attach_worker_longest_stall_ms_{at}"),
                "ms",
                vec![slow[i].stall_ms],
            )
            .with_anchor("goal: 1 ms", 1.0),
            BenchResult::from_samples(
                format!("attach_worker_longest_port_stall_ms_{at}"),
                "ms",
                vec![slow[i].port_stall_ms],
            )
            .with_anchor("the longest stall of any round", slow[i].stall_ms),
            BenchResult::from_samples(
                format!("attach_worker_cpu_wait_ms_{at}"),
                "ms",
                vec![slow[i].cpu_wait_ms],
            )
            .with_anchor("the level's span", spans[i].as_secs_f64() * 1e3),
            BenchResult::from_samples(
                format!("attach_worker_port_rounds_over_1ms_{at}"),
                "rounds",
                vec![slow[i].slow_port],
            )
            .with_anchor("all rounds over 1 ms", slow[i].slow),
            BenchResult::from_samples(
                format!("attach_forwarding_gap_vs_idle_ms_{at}"),
                "ms",
                vec![gaps[i]],
            )
            .with_anchor("longest silence with no attach (this machine)", idle_gap),
        ]);
    }
    let rtt: Vec<f64> = weir_ms
        .iter()
        .flatten()
        .map(|t| t.rtt_ms)
        .filter(|r| r.is_finite())
        .collect();
    let brtt: Vec<f64> = bridge_ms
        .iter()
        .flatten()
        .map(|t| t.rtt_ms)
        .filter(|r| r.is_finite())
        .collect();
    results.push(
        BenchResult::from_samples("attach_probe_rtt_p50_ms", "ms", vec![percentile(&rtt, 0.5)])
            .with_anchor(
                "bridge + host-local probe round trip p50",
                percentile(&brtt, 0.5),
            ),
    );
    let notes = vec![format!(
        "{} pods per plugin and level, {:?} at a time, through libcni; ADD start to the first \
         UDP probe answered by a peer pod (a socket opened in the pod's namespace before ADD, \
         probing every {} us after ADD returns); weir: agent with 1 worker on CPU 1 and a UMEM \
         of 8192 frames (above that each pod socket's bind costs the kernel 6-11 ms under its \
         RTNL lock, docs/cni.md), ADD returns once the pod's policy is programmed and its port \
         attached; no-op floor: the same driver with a plugin that does nothing, as many at \
         once as each level. Forwarding gap: the longest \
         silence in a witness pod's probes (one per {} us to the peer) during each level's \
         attaches; anchors: the same flow through bridge during its attaches, and the longest \
         silence over a span as long with no attach",
        cfg.pods,
        cfg.parallel,
        PROBE_EVERY.as_micros(),
        WITNESS_EVERY.as_micros()
    )];
    Ok((results, notes))
}
