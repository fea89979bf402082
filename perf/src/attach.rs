//! `weir-bench attach`: how long a pod waits for its network, from the runtime's ADD to
//! the first packet answered, with weir and with Debian's `bridge` + `host-local`.
//!
//! Both run through libcni (the project's Go driver, `control/tests/cni/driver`, built
//! from Debian's sources), in a node namespace of their own, with the same steps: a peer
//! pod is attached first; then `pods` pods are created `parallel` at a time, and for each
//! the time from starting ADD to the first ping answered by the peer (pings every 1 ms
//! after ADD returns) is recorded. weir's ADD returns once the pod's policy is programmed;
//! bridge's once its veth is on the bridge. Root only; everything is made under names
//! holding the process id and removed afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_testkit::lab::{ip, ChildGuard, NetnsGuard};

use crate::report::{percentile, BenchResult};

/// The benchmark's shape.
#[derive(Debug, Clone)]
pub struct AttachBenchConfig {
    /// Pods timed per plugin.
    pub pods: usize,
    /// Pods created at once.
    pub parallel: usize,
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

/// Times `cfg.pods` attachments with one plugin set-up; returns milliseconds per pod.
fn measure(
    cfg: &AttachBenchConfig,
    plugin: &Plugin<'_>,
    tag: &str,
    made: &mut NetnsGuard,
) -> Result<Vec<f64>, String> {
    let pid = std::process::id();
    let peer_ns = format!("wbp{tag}-{pid}");
    made.add_netns(&peer_ns)?;
    let peer = plugin.add(&peer_ns, &format!("peer{tag}-{pid}"), "peer")?;
    let mut times = Vec::with_capacity(cfg.pods);
    let mut next = 0;
    while next < cfg.pods {
        let batch: Vec<usize> = (next..(next + cfg.parallel).min(cfg.pods)).collect();
        next += batch.len();
        let mut names = Vec::new();
        for i in &batch {
            let ns = format!("wb{tag}{i}-{pid}");
            made.add_netns(&ns)?;
            names.push(ns);
        }
        let outcomes: Vec<Result<f64, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .zip(&names)
                .map(|(i, ns)| {
                    let peer = peer.clone();
                    s.spawn(move || -> Result<f64, String> {
                        let t0 = Instant::now();
                        plugin.add(ns, &format!("c{tag}{i}-{pid}"), &format!("p{i}"))?;
                        let deadline = t0 + Duration::from_secs(10);
                        loop {
                            let ok = Command::new("ip")
                                .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "0.2", &peer])
                                .stdout(Stdio::null())
                                .stderr(Stdio::null())
                                .status()
                                .is_ok_and(|s| s.success());
                            if ok {
                                return Ok(t0.elapsed().as_secs_f64() * 1e3);
                            }
                            if Instant::now() > deadline {
                                return Err(format!("pod {i} ({tag}) never reached its peer"));
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a timing thread panicked".into()))
                })
                .collect()
        });
        for o in outcomes {
            times.push(o?);
        }
    }
    Ok(times)
}

/// Runs the benchmark (root).
pub fn run(cfg: &AttachBenchConfig) -> Result<(Vec<BenchResult>, Vec<String>), String> {
    if cfg.pods == 0 || cfg.parallel == 0 || cfg.pods > 250 {
        return Err("attach: --pods must be 1..=250 and --parallel at least 1".into());
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
    std::fs::write(
        &config,
        format!(
            "node: bench-{pid}\ncores: [1]\ndatastore: {}\nlisten: 127.0.0.1:{}\nframes: \
             16384\ncni:\n  socket: {}\n  ipamDir: {}\n  portsPerWorker: 160\n",
            ds.display(),
            20000 + pid % 20000,
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
    let weir_ms = measure(cfg, &weir, "w", &mut made)?;
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
    let bridge_ms = measure(cfg, &bridge, "b", &mut made)?;
    drop(made);

    let (w, b) = (&weir_ms, &bridge_ms);
    let results = vec![
        BenchResult::from_samples("attach_weir_p50_ms", "ms", vec![percentile(w, 0.5)])
            .with_anchor("bridge + host-local p50", percentile(b, 0.5)),
        BenchResult::from_samples("attach_weir_p99_ms", "ms", vec![percentile(w, 0.99)])
            .with_anchor("bridge + host-local p99", percentile(b, 0.99)),
        BenchResult::from_samples(
            "attach_weir_p99_vs_goal_ms",
            "ms",
            vec![percentile(w, 0.99)],
        )
        .with_anchor("goal: 100 ms", 100.0),
    ];
    let notes = vec![format!(
        "{} pods per plugin, {} at a time, through libcni; ADD start to the first ping answered \
         by a peer pod (pings every ~1 ms after ADD returns); weir: agent with 1 worker on CPU 1, ADD \
         returns once the pod's policy is programmed",
        cfg.pods, cfg.parallel
    )];
    Ok((results, notes))
}
