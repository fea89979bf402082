//! The end-to-end WireGuard benchmark (`weir-bench wireguard`, part b, root): TCP
//! throughput between two pods on two nodes, with iperf3 (one stream), over
//!
//! - **weir, WireGuard on**: two `weir agent`s in two node namespaces joined by an underlay
//!   veth, node a's agent on the first CPU and node b's on the second;
//! - **weir, WireGuard off**: the same, routing in clear over the underlay;
//! - **wireguard-go**: the reference implementation in its usual set-up, a TUN device per
//!   namespace, the two namespaces joined the same way, each process pinned like the
//!   agents, iperf3 between the two TUN addresses.
//!
//! Rounds interleave the three; medians are reported. The iperf3 processes are not
//! pinned (on two CPUs they share the cores with the forwarders in every variant alike).
//! Names carry the process id; a guard removes everything made, also on error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_crypto::NodeKey;
use weir_testkit::lab::{self, format_mac, ip, mac_of, ns_exec, ChildGuard, NetnsGuard};

use crate::report::BenchResult;

const UNDERLAY: [&str; 2] = ["198.18.240.1", "198.18.240.2"];
const POD: [&str; 2] = ["198.18.20.5", "198.18.21.5"];
const CIDR: [&str; 2] = ["198.18.20.0/24", "198.18.21.0/24"];
const TUN_ADDR: [&str; 2] = ["198.18.22.1", "198.18.22.2"];

/// What to run.
#[derive(Debug, Clone)]
pub struct E2eConfig {
    pub runs: usize,
    /// Seconds per iperf3 run.
    pub seconds: u32,
    /// The `weir` binary.
    pub weir: PathBuf,
    /// The two CPUs (node a, node b).
    pub cpus: [usize; 2],
    pub workdir: PathBuf,
}

struct Topology {
    pid: u32,
    nodes: [String; 2],
    pods: [String; 2],
    dir: PathBuf,
    /// Removes the namespaces on drop.
    made: NetnsGuard,
}

impl Topology {
    fn uplink(&self, i: usize) -> String {
        format!("weu{}{}", ["a", "b"][i], self.pid)
    }

    fn host(&self, i: usize) -> String {
        format!("wep{}{}", ["a", "b"][i], self.pid)
    }

    fn create(dir: &Path) -> Result<Topology, String> {
        let pid = std::process::id();
        let mut t = Topology {
            pid,
            nodes: [format!("weir-e2e-na-{pid}"), format!("weir-e2e-nb-{pid}")],
            pods: [format!("weir-e2e-pa-{pid}"), format!("weir-e2e-pb-{pid}")],
            dir: dir.to_path_buf(),
            made: NetnsGuard::new(),
        };
        for ns in t.nodes.clone().iter().chain(t.pods.clone().iter()) {
            t.made.add_netns(ns)?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "-n",
            &t.nodes[0],
            "link",
            "add",
            &t.uplink(0),
            "type",
            "veth",
            "peer",
            "name",
            &t.uplink(1),
            "netns",
            &t.nodes[1],
        ])?;
        for i in 0..2 {
            let (node, pod, up, host) = (&t.nodes[i], &t.pods[i], t.uplink(i), t.host(i));
            ns_exec(
                node,
                &[
                    "sysctl",
                    "-q",
                    "-w",
                    &format!("net.ipv6.conf.{up}.disable_ipv6=1"),
                ],
            )?;
            ip(&[
                "-n",
                node,
                "addr",
                "add",
                &format!("{}/24", UNDERLAY[i]),
                "dev",
                &up,
            ])?;
            ip(&["-n", node, "link", "set", &up, "up"])?;
            lab::plumb_pod(node, pod, &host, POD[i])?;
        }
        Ok(t)
    }

    fn mac(&self, ns: &str, dev: &str) -> Result<String, String> {
        Ok(format_mac(&mac_of(ns, dev)?))
    }

    /// Node `i`'s config and datastore; `wireguard` on or off.
    fn agent_config(
        &self,
        i: usize,
        cpu: usize,
        keys: &[NodeKey; 2],
        wireguard: bool,
    ) -> Result<PathBuf, String> {
        let ds = self.dir.join(format!("datastore-{i}"));
        std::fs::create_dir_all(&ds).map_err(|e| e.to_string())?;
        let mut nodes = String::new();
        for (j, key) in keys.iter().enumerate() {
            nodes.push_str(&format!(
                "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-{j}\n  annotations:\n    \
                 weir.dev/wireguard-public-key: \"{}\"\n    weir.dev/underlay-mac: \"{}\"\n\
                 spec:\n  podCIDRs: [\"{}\"]\nstatus:\n  addresses: [{{type: InternalIP, address: \
                 \"{}\"}}]\n",
                key.public_base64(),
                self.mac(&self.nodes[j], &self.uplink(j))?,
                CIDR[j],
                UNDERLAY[j]
            ));
        }
        let text = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n---\napiVersion: v1\n\
             kind: Pod\nmetadata:\n  namespace: bench\n  name: pod-{i}\n  annotations:\n    \
             weir.dev/interface: {}\n    weir.dev/mac: \"{}\"\nstatus:\n  podIPs: [{{ip: \"{}\"}}]\n{nodes}",
            self.host(i),
            self.mac(&self.pods[i], "eth0")?,
            POD[i]
        );
        std::fs::write(ds.join("cluster.yaml"), text).map_err(|e| e.to_string())?;
        let key_file = self.dir.join(format!("node-{i}.key"));
        if !key_file.exists() {
            std::fs::write(&key_file, format!("{}\n", keys[i].secret_base64()))
                .map_err(|e| e.to_string())?;
            lab::run(&["chmod", "600", &key_file.display().to_string()])?;
        }
        let config = self.dir.join(format!("agent-{i}.yaml"));
        let wg = if wireguard {
            format!(
                "wireguard:\n  keyFile: {}\n  address: {}\n",
                key_file.display(),
                UNDERLAY[i]
            )
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "node: node-{i}\ncores: [{cpu}]\ndatastore: {}\nuplink: {}\npodCidrs: \
                 [198.18.20.0/23]\n{wg}",
                ds.display(),
                self.uplink(i)
            ),
        )
        .map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// A child process stopped on drop: SIGTERM, then SIGKILL after 5 s.
fn stopped_on_drop(child: std::process::Child) -> ChildGuard {
    ChildGuard::with_grace(child, Duration::from_secs(5))
}

fn start_agent(weir: &Path, ns: &str, config: &Path, log: &Path) -> Result<ChildGuard, String> {
    let file = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(weir)
        .arg("agent")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(|e| format!("weir agent: {e}"))?;
    let mut proc = stopped_on_drop(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("forwarding on core") {
            return Ok(proc);
        }
        if let Ok(Some(status)) = proc.child().try_wait() {
            return Err(format!("weir agent in {ns} exited ({status}): {text}"));
        }
        if Instant::now() > deadline {
            return Err(format!("weir agent in {ns} not up in 20 s: {text}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// iperf3 TCP, one stream, `secs` seconds, from `client_ns` to `addr` served in
/// `server_ns`; Gbit/s received.
fn iperf3(client_ns: &str, server_ns: &str, addr: &str, secs: u32) -> Result<f64, String> {
    let server = Command::new("ip")
        .args(["netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3: {e}"))?;
    let _server = stopped_on_drop(server);
    std::thread::sleep(Duration::from_millis(300));
    let secs = secs.to_string();
    let text = ns_exec(
        client_ns,
        &[
            "iperf3",
            "-c",
            addr,
            "-t",
            &secs,
            "-J",
            "--connect-timeout",
            "3000",
        ],
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("iperf3 JSON: {e}"))?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| format!("iperf3 gave no rate: {text}"))
}

/// Two namespaces with wireguard-go, each pinned, joined by a veth; `made` stops the
/// processes and removes the namespaces on drop.
struct WgGo {
    nodes: [String; 2],
    made: NetnsGuard,
}

fn wireguard_go(dir: &Path, cpus: [usize; 2]) -> Result<WgGo, String> {
    let pid = std::process::id();
    let mut g = WgGo {
        nodes: [format!("weir-e2e-ga-{pid}"), format!("weir-e2e-gb-{pid}")],
        made: NetnsGuard::new(),
    };
    let keys = [
        NodeKey::from_bytes([0x61; 32]),
        NodeKey::from_bytes([0x62; 32]),
    ];
    for ns in &g.nodes {
        g.made.add_netns(ns)?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    let under = [format!("wgu{pid}a"), format!("wgu{pid}b")];
    ip(&[
        "-n",
        &g.nodes[0],
        "link",
        "add",
        &under[0],
        "type",
        "veth",
        "peer",
        "name",
        &under[1],
        "netns",
        &g.nodes[1],
    ])?;
    for i in 0..2 {
        let ns = g.nodes[i].clone();
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", UNDERLAY[i]),
            "dev",
            &under[i],
        ])?;
        ip(&["-n", &ns, "link", "set", &under[i], "up"])?;
        let tun = format!("wgt{pid}{}", ["a", "b"][i]);
        crate::tools::require("wireguard-go").map_err(|e| e.to_string())?;
        crate::tools::require("taskset").map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "taskset", "-c", &cpus[i].to_string()])
            .args(["wireguard-go", &tun])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("wireguard-go (Debian package wireguard-go): {e}"))?;
        g.made.adopt(stopped_on_drop(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while ip(&["-n", &ns, "link", "show", &tun]).is_err() {
            if Instant::now() > deadline {
                return Err("wireguard-go made no interface".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let key_file = dir.join(format!("wg-go-{i}.key"));
        std::fs::write(&key_file, keys[i].secret_base64()).map_err(|e| e.to_string())?;
        let other = 1 - i;
        ns_exec(
            &ns,
            &[
                "wg",
                "set",
                &tun,
                "private-key",
                &key_file.display().to_string(),
                "listen-port",
                "51820",
                "peer",
                &keys[other].public_base64(),
                "endpoint",
                &format!("{}:51820", UNDERLAY[other]),
                "allowed-ips",
                &format!("{}/32", TUN_ADDR[other]),
            ],
        )?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/32", TUN_ADDR[i]),
            "dev",
            &tun,
        ])?;
        ip(&["-n", &ns, "link", "set", &tun, "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            &format!("{}/32", TUN_ADDR[other]),
            "dev",
            &tun,
        ])?;
    }
    Ok(g)
}

/// Lets the calling thread (and the processes it starts) run on every CPU again.
fn unpin_current_thread() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it; the
    // call reads `size_of::<cpu_set_t>()` bytes from it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Runs part (b); returns results and notes.
pub fn run(cfg: &E2eConfig) -> Result<(Vec<BenchResult>, Vec<String>), String> {
    // The forwarders pin themselves; iperf3 must not inherit the harness's pinning.
    unpin_current_thread();
    if !cfg.weir.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p weir-control`",
            cfg.weir.display()
        ));
    }
    std::fs::create_dir_all(&cfg.workdir).map_err(|e| e.to_string())?;
    let keys = [
        NodeKey::from_bytes([0x71; 32]),
        NodeKey::from_bytes([0x72; 32]),
    ];
    let topo = Topology::create(&cfg.workdir)?;
    let (mut on, mut off, mut go) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..cfg.runs {
        for (wg, samples) in [(true, &mut on), (false, &mut off)] {
            crate::progress::step(&format!(
                "wireguard e2e round {}/{}: weir, WireGuard {}",
                round + 1,
                cfg.runs,
                if wg { "on" } else { "off" }
            ));
            let mut agents = Vec::new();
            for i in 0..2 {
                let config = topo.agent_config(i, cfg.cpus[i], &keys, wg)?;
                let log = cfg.workdir.join(format!("agent-{i}.log"));
                agents.push(start_agent(&cfg.weir, &topo.nodes[i], &config, &log)?);
            }
            // A first exchange completes the handshake before the timed run.
            let _ = ns_exec(
                &topo.pods[0],
                &["ping", "-c", "2", "-i", "0.2", "-W", "2", POD[1]],
            );
            samples.push(iperf3(&topo.pods[0], &topo.pods[1], POD[1], cfg.seconds)?);
            drop(agents);
        }
        crate::progress::step(&format!(
            "wireguard e2e round {}/{}: wireguard-go",
            round + 1,
            cfg.runs
        ));
        let g = wireguard_go(&cfg.workdir, cfg.cpus)?;
        let _ = ns_exec(
            &g.nodes[0],
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", TUN_ADDR[1]],
        );
        go.push(iperf3(&g.nodes[0], &g.nodes[1], TUN_ADDR[1], cfg.seconds)?);
        drop(g);
    }
    drop(topo);
    let med = |v: &[f64]| crate::report::median_min_max(v).0;
    let results = vec![
        BenchResult::from_samples("wireguard_e2e_weir_tcp_gbps", "Gbit/s", on.clone())
            .with_anchor("wireguard_go_tcp", med(&go)),
        BenchResult::from_samples("wireguard_e2e_weir_tcp_gbps_vs_cleartext", "Gbit/s", on)
            .with_anchor("weir_wireguard_off_tcp", med(&off)),
        BenchResult::from_samples("wireguard_e2e_weir_cleartext_tcp_gbps", "Gbit/s", off),
        BenchResult::from_samples("wireguard_e2e_wireguard_go_tcp_gbps", "Gbit/s", go),
    ];
    let notes = vec![format!(
        "end to end: iperf3 TCP, one stream, {} s, pod to pod across two nodes joined by a \
         veth; node a's forwarder on CPU {}, node b's on CPU {} (weir agents and wireguard-go \
         alike); iperf3 unpinned",
        cfg.seconds, cfg.cpus[0], cfg.cpus[1]
    )];
    Ok((results, notes))
}
