//! `weir demo`: a two-node cluster on this machine, built from network namespaces.
//!
//! - Two node namespaces joined by an underlay veth (198.18.250.0/24), each running
//!   `weir agent` as its own process on its own core, with WireGuard between them
//!   (`required`: nothing crosses the underlay in clear).
//! - One file datastore shared by both agents, playing the API server: three namespaces, a
//!   `security` tier whose GlobalNetworkPolicy denies a quarantined scanner and Passes the
//!   rest, an `application` tier that admits the web front end to the api, and Kubernetes
//!   NetworkPolicies in the default tier (default deny in `billing`, two allows).
//! - Six pods, created as a runtime creates them: a network namespace, then `weir-cni` ADD,
//!   which gets the address from IPAM. The demo then writes each pod's `status.podIPs`, as
//!   the kubelet would, so the other node learns it.
//! - Two Services and a NodePort ([`SERVICES`], [`NODE_PORT`]), served by the agents in
//!   place of kube-proxy.
//! - Probes from inside the pods: TCP and UDP to every other pod and to the services'
//!   cluster IPs, printed as a matrix of expected versus seen (policy decides on the
//!   endpoint a service picks); the NodePort from node-b's own stack; iperf3 between two pods on one node and across the nodes; UDP
//!   round trips; the agents' WireGuard counters, which show that cross-node traffic was
//!   sealed.
//!
//! Everything is removed on exit, on error and on Ctrl-C (SIGINT/SIGTERM), by a guard.
//! `--keep` leaves it running and prints how to look at it; `weir demo --down` removes a
//! kept demo. Every name carries the demo's process id; every address is in 198.18.0.0/15.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::intent::{
    cluster_yaml, expected, pairs, pod_yaml, probed, render_matrix, NODES, NODE_PORT, PODS,
    PROBE_PORT, SERVICES, SERVICE_PORT,
};

/// A line on stdout; a closed stdout (`weir demo | head`) does not stop the demo, which
/// must still clean up.
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

macro_rules! say_raw {
    ($($t:tt)*) => {{
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// Where kept demos record what they left running.
const STATE_GLOB_DIR: &str = "/run";
const STATE_PREFIX: &str = "weir-demo-";
/// iperf3's port (admitted to the api by the application tier).
const IPERF_PORT: u16 = 5201;
const METRICS_PORT: u16 = 9180;

/// Options of `weir demo`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Leave the cluster running.
    pub keep: bool,
    /// Seconds of each iperf3 run.
    pub seconds: u32,
    /// UDP round trips timed per pair.
    pub round_trips: usize,
    /// Drop this policy (by file-less name) from the datastore before probing: the matrix
    /// must then differ, and the demo fail. For testing the demo itself.
    pub without_policy: Option<String>,
}

/// What a kept demo left running, for `weir demo --down`.
#[derive(Debug, Serialize, Deserialize, Default)]
struct State {
    dir: PathBuf,
    /// The demo's own children (agents, echo servers), by pid.
    pids: Vec<u32>,
    namespaces: Vec<String>,
}

/// The demo's resources. Dropping it removes all of them, unless it was kept.
struct Lab {
    pid: u32,
    dir: PathBuf,
    weir: PathBuf,
    cni: PathBuf,
    nodes: [String; 2],
    pod_ns: BTreeMap<&'static str, String>,
    agents: Vec<Child>,
    servers: Vec<Child>,
    namespaces: Vec<String>,
    kept: bool,
    stop: &'static AtomicBool,
    started: Instant,
}

/// A step's failure, or an interruption.
type Res<T> = Result<T, String>;

fn run_cmd(args: &[&str]) -> Res<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

impl Lab {
    fn check(&self) -> Res<()> {
        if self.stop.load(Ordering::SeqCst) {
            Err("interrupted".into())
        } else {
            Ok(())
        }
    }

    fn step(&self, n: usize, what: &str) {
        say!(
            "[{n}/9 {:>5.1} s] {what}",
            self.started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
    }

    fn netns(&mut self, name: String) -> Res<String> {
        run_cmd(&["ip", "netns", "add", &name])?;
        self.namespaces.push(name.clone());
        run_cmd(&["ip", "-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A command run inside namespace `ns`, in its own process group (a Ctrl-C in the
    /// terminal reaches the demo, which then stops everything in order).
    fn in_ns(&self, ns: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c.process_group(0).stdin(Stdio::null());
        c
    }

    fn underlay(&mut self) -> Res<[String; 2]> {
        let pid = self.pid;
        let a = self.netns(format!("wd-node-a-{pid}"))?;
        let b = self.netns(format!("wd-node-b-{pid}"))?;
        self.nodes = [a.clone(), b.clone()];
        run_cmd(&[
            "ip", "-n", &a, "link", "add", "up0", "type", "veth", "peer", "name", "up0", "netns",
            &b,
        ])?;
        let mut macs = [String::new(), String::new()];
        for (i, ns) in self.nodes.clone().iter().enumerate() {
            let addr = format!("{}/24", NODES[i].1);
            run_cmd(&["ip", "-n", ns, "addr", "add", &addr, "dev", "up0"])?;
            run_cmd(&["ip", "-n", ns, "link", "set", "up0", "up"])?;
            let link = run_cmd(&["ip", "-n", ns, "-o", "link", "show", "up0"])?;
            macs[i] = link
                .split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
                .ok_or_else(|| format!("no MAC for up0 in {ns}: {link}"))?
                .to_owned();
        }
        Ok(macs)
    }

    fn datastore(&self) -> PathBuf {
        self.dir.join("datastore")
    }

    /// Writes a datastore file atomically (the agents poll the directory).
    fn write_object(&self, file: &str, text: &str) -> Res<()> {
        let tmp = self.datastore().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, self.datastore().join(file)).map_err(|e| format!("{file}: {e}"))
    }

    fn agent_config(&self, i: usize) -> PathBuf {
        let (node, addr, _, core) = NODES[i];
        // One CPU: both workers share it.
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let core = core.min(cpus - 1);
        let text = format!(
            "node: {node}\ncores: [{core}]\ndatastore: {ds}\nlisten: 127.0.0.1:{METRICS_PORT}\n\
             uplink: up0\npodCidrs: [198.18.10.0/23]\nwireguard:\n  keyFile: {dir}/{node}.key\n  \
             address: {addr}\ncni:\n  socket: {dir}/cni-{node}.sock\n  ipamDir: {dir}/ipam\n",
            ds = self.datastore().display(),
            dir = self.dir.display(),
        );
        let path = self.dir.join(format!("agent-{node}.yaml"));
        let _ = std::fs::write(&path, text);
        path
    }

    fn metrics(&self, i: usize) -> Res<String> {
        let out = self
            .in_ns(&self.nodes[i], &self.weir)
            .args([
                "probe",
                "http",
                "--port",
                &METRICS_PORT.to_string(),
                "/metrics",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ready(&self, i: usize) -> bool {
        self.in_ns(&self.nodes[i], &self.weir)
            .args([
                "probe",
                "http",
                "--port",
                &METRICS_PORT.to_string(),
                "/readyz",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn agent_log(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("agent-{}.log", NODES[i].0)))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn spawn_agent(&self, i: usize) -> Res<Child> {
        let log = self.dir.join(format!("agent-{}.log", NODES[i].0));
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| e.to_string())?;
        self.in_ns(&self.nodes[i], &self.weir)
            .arg("agent")
            .arg("--config")
            .arg(self.agent_config(i))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting the agent: {e}"))
    }

    fn start_agents(&mut self) -> Res<()> {
        for i in 0..NODES.len() {
            let child = self.spawn_agent(i)?;
            self.agents.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, (node, ..)) in NODES.iter().enumerate() {
            while !self.ready(i) {
                self.check()?;
                if let Some(status) = self.agents[i].try_wait().ok().flatten() {
                    return Err(format!(
                        "the agent of {node} exited ({status}):\n{}",
                        self.agent_log(i)
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "the agent of {node} is not ready after 30 s:\n{}",
                        self.agent_log(i)
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// `weir-cni` ADD for a pod, as the runtime runs it: the pod's address.
    fn add_pod(&mut self, ns: &str, name: &'static str, node: usize) -> Res<Ipv4Addr> {
        let netns = self.netns(format!("wd-{name}-{}", self.pid))?;
        self.pod_ns.insert(name, netns.clone());
        let out = self.cni(ns, name, node, "ADD")?;
        let result: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| format!("weir-cni ADD for {ns}/{name}: not JSON ({e}): {out}"))?;
        result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .find_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| format!("weir-cni ADD for {ns}/{name}: no IPv4 address in {out}"))
    }

    fn cni(&self, ns: &str, name: &str, node: usize, verb: &str) -> Res<String> {
        let config = serde_json::json!({
            "cniVersion": "1.0.0", "name": "weir", "type": "weir-cni",
            "socket": self.dir.join(format!("cni-{}.sock", NODES[node].0)),
            "timeoutSeconds": 20,
        });
        let netns = format!("/var/run/netns/{}", self.pod_ns[name]);
        let mut child = Command::new(&self.cni)
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", format!("demo-{}-{name}", self.pid))
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
            )
            .env("CNI_PATH", self.cni.parent().unwrap_or(Path::new("/")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.cni.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(config.to_string().as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "weir-cni {verb} for {ns}/{name} failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(text)
    }

    fn generation(&self, i: usize) -> u64 {
        metric(
            &self.metrics(i).unwrap_or_default(),
            "weir_snapshot_generation",
        )
    }

    fn start_servers(&mut self, ips: &BTreeMap<&str, Ipv4Addr>, lifetime: u32) -> Res<()> {
        for (_, name, _) in PODS {
            let child = self
                .in_ns(&self.pod_ns[name], &self.weir)
                .args(["probe", "serve", "--port", &PROBE_PORT.to_string()])
                .args(["--seconds", &lifetime.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("echo server in {name}: {e}"))?;
            self.servers.push(child);
        }
        // Each server answers its own pod (the kernel's local route, not weir).
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, name, _) in PODS {
            while !self.probe(name, ips[name], "tcp", 300) {
                self.check()?;
                if Instant::now() > deadline {
                    return Err(format!("the echo server in {name} did not start"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    fn probe_command(&self, from: &str, to: Ipv4Addr, proto: &str, timeout_ms: u64) -> Command {
        self.probe_port(&self.pod_ns[from], to, PROBE_PORT, proto, timeout_ms)
    }

    /// A probe from namespace `ns` to `to`:`port`.
    fn probe_port(
        &self,
        ns: &str,
        to: Ipv4Addr,
        port: u16,
        proto: &str,
        timeout_ms: u64,
    ) -> Command {
        let mut c = self.in_ns(ns, &self.weir);
        c.args(["probe", proto, "--to", &format!("{to}:{port}")])
            .args(["--timeout-ms", &timeout_ms.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn probe(&self, from: &str, to: Ipv4Addr, proto: &str, timeout_ms: u64) -> bool {
        self.probe_command(from, to, proto, timeout_ms)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// iperf3 from `from` to `to` for the configured seconds: bits per second.
    fn iperf(&self, from: &str, to: &str, to_ip: Ipv4Addr, seconds: u32) -> Res<f64> {
        let iperf = Path::new("iperf3");
        let mut server = self
            .in_ns(&self.pod_ns[to], iperf)
            .args(["-s", "-1", "-p", &IPERF_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3 server in {to}: {e}"))?;
        std::thread::sleep(Duration::from_millis(300));
        let client = self
            .in_ns(&self.pod_ns[from], iperf)
            .args(["-c", &to_ip.to_string(), "-p", &IPERF_PORT.to_string()])
            .args([
                "-t",
                &seconds.to_string(),
                "-J",
                "--connect-timeout",
                "3000",
            ])
            .stderr(Stdio::null())
            .output();
        let _ = server.kill();
        let _ = server.wait();
        let out = client.map_err(|e| format!("iperf3 client in {from}: {e}"))?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("iperf3 {from} -> {to}: unreadable output ({e})"))?;
        if let Some(err) = json["error"].as_str() {
            return Err(format!("iperf3 {from} -> {to}: {err}"));
        }
        json["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .ok_or_else(|| format!("iperf3 {from} -> {to}: no received rate in its output"))
    }

    fn round_trips(&self, from: &str, to: Ipv4Addr, count: usize) -> Res<Vec<f64>> {
        let out = self
            .in_ns(&self.pod_ns[from], &self.weir)
            .args(["probe", "rtt", "--to", &format!("{to}:{PROBE_PORT}")])
            .args(["--count", &count.to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        let rtts: Vec<Option<f64>> = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("round trips from {from}: {e}"))?;
        Ok(rtts.into_iter().flatten().collect())
    }

    fn write_state(&self) {
        let state = State {
            dir: self.dir.clone(),
            pids: self
                .agents
                .iter()
                .chain(&self.servers)
                .map(Child::id)
                .collect(),
            namespaces: self.namespaces.clone(),
        };
        if let Ok(text) = serde_json::to_string_pretty(&state) {
            let _ = std::fs::write(self.dir.join("state.json"), text);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.kept {
            self.write_state();
            return;
        }
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let agents: Vec<Child> = self.agents.drain(..).collect();
        stop_agents(agents);
        for ns in self.namespaces.iter().rev() {
            let _ = run_cmd(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM to each agent (it detaches its XDP programs), SIGKILL after 5 s.
fn stop_agents(mut agents: Vec<Child>) {
    for a in &agents {
        let _ = run_cmd(&["kill", "-TERM", &a.id().to_string()]);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for a in &mut agents {
        while a.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = a.kill();
        let _ = a.wait();
    }
}

/// A metric's value summed over its label sets (0 when absent).
pub fn metric(text: &str, name: &str) -> u64 {
    metric_with(text, name, "")
}

/// A metric's value summed over the label sets that contain `labels` (0 when none).
pub fn metric_with(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| {
                (rest.starts_with(' ') || rest.starts_with('{')) && rest.contains(labels)
            })
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn gbits(bps: f64) -> String {
    format!("{:.2} Gbit/s", bps / 1e9)
}

/// Runs the demo. Returns the exit status: `Ok(true)` when every probe saw what was
/// expected and every figure was taken.
pub fn run(opts: &Options, stop: &'static AtomicBool) -> Res<bool> {
    if !is_root() {
        return Err("the demo builds network namespaces and needs root (sudo weir demo)".into());
    }
    for (program, package) in [
        ("ip", "iproute2"),
        ("iperf3", "iperf3"),
        ("nsenter", "util-linux"),
    ] {
        if !have(program) {
            return Err(format!(
                "`{program}` is not installed: it is in the Debian package `{package}` \
                 (scripts/demo.sh installs what the demo needs)"
            ));
        }
    }
    let weir = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
    let cni = weir.with_file_name("weir-cni");
    if !cni.is_file() {
        return Err(format!(
            "{} is missing: build it beside weir (cargo build --release -p weir-control)",
            cni.display()
        ));
    }
    let pid = std::process::id();
    let dir = PathBuf::from(STATE_GLOB_DIR).join(format!("{STATE_PREFIX}{pid}"));
    std::fs::create_dir_all(dir.join("datastore"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut lab = Lab {
        pid,
        dir,
        weir,
        cni,
        nodes: [String::new(), String::new()],
        pod_ns: BTreeMap::new(),
        agents: Vec::new(),
        servers: Vec::new(),
        namespaces: Vec::new(),
        kept: false,
        stop,
        started: Instant::now(),
    };
    let result = lab.go(opts);
    if result.is_ok() && opts.keep {
        lab.kept = true;
        say!("\n{}", keep_help(&lab));
    } else {
        say!("cleaning up: agents stopped, namespaces and files removed");
    }
    result
}

fn keep_help(lab: &Lab) -> String {
    let a = &lab.nodes[0];
    let web = lab.pod_ns.get("web").cloned().unwrap_or_default();
    format!(
        "The cluster is left running (state in {dir}/state.json). Look at it:\n  \
         ip netns exec {a} weir status                      # node-a's agent\n  \
         ip netns exec {a} weir probe http --port {METRICS_PORT} /metrics\n  \
         ip netns exec {web} ping -c 3 <address of another pod>\n  \
         ls {dir}/datastore                              # edit a policy: the agents reload it\n\
         Remove it with: weir demo --down",
        dir = lab.dir.display()
    )
}

impl Lab {
    fn go(&mut self, opts: &Options) -> Res<bool> {
        self.step(
            1,
            "underlay: two node namespaces joined by a veth (198.18.250.0/24)",
        );
        let macs = self.underlay()?;
        self.check()?;

        self.step(
            2,
            "datastore: namespaces, tiers, policies, nodes, IPPools; WireGuard keys",
        );
        let mut keys = [String::new(), String::new()];
        for (i, (node, ..)) in NODES.iter().enumerate() {
            let (key, _) =
                crate::wireguard::load_or_create_key(&self.dir.join(format!("{node}.key")))
                    .map_err(|e| e.to_string())?;
            keys[i] = key.public_base64();
        }
        let mut yaml = cluster_yaml(&keys, &macs);
        if let Some(name) = &opts.without_policy {
            yaml = without_document(&yaml, name)?;
        }
        self.write_object("cluster.yaml", &yaml)?;
        for (ns, name, node) in PODS {
            self.write_object(
                &format!("pod-{ns}-{name}.yaml"),
                &pod_yaml(ns, name, NODES[node].0, None),
            )?;
        }

        self.step(3, "agents: `weir agent` in each node namespace (one pinned worker each, WireGuard required)");
        self.start_agents()?;

        self.step(
            4,
            "pods: a network namespace each, attached by `weir-cni` ADD (address from IPAM)",
        );
        let mut ips = BTreeMap::new();
        for (ns, name, node) in PODS {
            self.check()?;
            let started = Instant::now();
            let ip = self.add_pod(ns, name, node)?;
            say!(
                "        {:<16} on {}  {ip:<15} ADD {} ms",
                format!("{ns}/{name}"),
                NODES[node].0,
                started.elapsed().as_millis()
            );
            ips.insert(name, ip);
        }
        // The kubelet's part: each pod's address goes into its status, and both nodes read
        // it (the other node needs it for routes and policy).
        let before = [self.generation(0), self.generation(1)];
        for (ns, name, node) in PODS {
            self.write_object(
                &format!("pod-{ns}-{name}.yaml"),
                &pod_yaml(ns, name, NODES[node].0, Some(ips[name])),
            )?;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while (0..2).any(|i| self.generation(i) <= before[i]) {
            self.check()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "the agents did not publish the pods' addresses within 15 s:\n{}\n{}",
                    self.agent_log(0),
                    self.agent_log(1)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        self.step(
            5,
            "echo servers (TCP and UDP 8080) in every pod; WireGuard handshake",
        );
        let lifetime = if opts.keep { 3600 } else { 300 };
        self.start_servers(&ips, lifetime)?;
        // The first packet across starts the handshake: wait until an allowed pair
        // (web -> api) answers, so that the probes measure policy, not the handshake.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.probe("web", ips["api"], "udp", 500) {
            self.check()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer across the nodes within 10 s (web -> api):\n{}\n{}",
                    self.agent_log(0),
                    self.agent_log(1)
                ));
            }
        }

        self.step(6, "probes: TCP and UDP from every pod to every other pod");
        let mut all_ok = self.matrix(&ips)?;

        self.step(
            7,
            "restart: node-a's agent killed (SIGKILL) and started again, pods kept",
        );
        all_ok &= self.restart(&ips)?;

        self.step(8, "throughput (iperf3, TCP) and UDP round trips");
        let same = self.iperf("web", "monitor", ips["monitor"], opts.seconds)?;
        self.check()?;
        let cross = self.iperf("web", "api", ips["api"], opts.seconds)?;
        say!(
            "        same node   shop/web -> ops/monitor  {}",
            gbits(same)
        );
        say!(
            "        cross node  shop/web -> shop/api     {}  (WireGuard)",
            gbits(cross)
        );
        for (label, to) in [("same node ", "monitor"), ("cross node", "api")] {
            self.check()?;
            let mut rtts = self.round_trips("web", ips[to], opts.round_trips)?;
            if rtts.is_empty() {
                return Err(format!("no UDP round trip from web to {to} answered"));
            }
            rtts.sort_by(f64::total_cmp);
            let lost = opts.round_trips - rtts.len();
            say!(
                "        {label}  web -> {to:<8} UDP round trip p50 {:.0} us, p99 {:.0} us, max {:.0} us ({} sent, {lost} lost)",
                percentile(&rtts, 50.0),
                percentile(&rtts, 99.0),
                rtts[rtts.len() - 1],
                opts.round_trips
            );
        }

        self.step(9, "what the agents counted");
        let mut sealed_ok = true;
        for (i, (node, ..)) in NODES.iter().enumerate() {
            let m = self.metrics(i)?;
            let sealed = metric(&m, "weir_wireguard_sealed_total");
            let opened = metric(&m, "weir_wireguard_opened_total");
            let handshakes = metric(&m, "weir_wireguard_handshakes_initiated_total")
                + metric(&m, "weir_wireguard_handshakes_answered_total");
            let denied = metric_with(&m, "weir_drops_total", "reason=\"policy_denied");
            say!(
                "        {node}: WireGuard sealed {sealed}, opened {opened}, handshakes {handshakes}; \
                 policy drops {denied}; snapshot generation {}",
                metric(&m, "weir_snapshot_generation")
            );
            sealed_ok &= sealed > 0 && opened > 0;
        }
        if !sealed_ok {
            say!("        FAILED: cross-node traffic was not sealed and opened by WireGuard");
        }
        let ok = all_ok && sealed_ok;
        say!(
            "\n{} in {:.1} s",
            if ok {
                "weir demo: every probe saw what the policies intend"
            } else {
                "weir demo: FAILED (see above)"
            },
            self.started.elapsed().as_secs_f64()
        );
        Ok(ok)
    }

    /// `kill -9` of node-a's agent and a new one with the same config: prints when a pod on
    /// it answers again (same node, and across with a new WireGuard handshake), then runs
    /// the matrix again; true when it is as intended.
    fn restart(&mut self, ips: &BTreeMap<&str, Ipv4Addr>) -> Res<bool> {
        let _ = self.agents[0].kill();
        let _ = self.agents[0].wait();
        let started = Instant::now();
        self.agents[0] = self.spawn_agent(0)?;
        let mut back = [("monitor", "same node", None), ("api", "across", None)];
        while back.iter().any(|b| b.2.is_none()) {
            self.check()?;
            if started.elapsed() > Duration::from_secs(15) {
                return Err(format!(
                    "no answer 15 s after the restart:\n{}",
                    self.agent_log(0)
                ));
            }
            for (to, _, at) in back.iter_mut().filter(|b| b.2.is_none()) {
                if self.probe("web", ips[*to], "udp", 50) {
                    *at = Some(started.elapsed().as_millis());
                }
            }
        }
        for (to, how, at) in back {
            let ms = at.unwrap_or_default();
            say!("        shop/web -> {to:<8} ({how:<9}) answers {ms} ms after the new agent started");
        }
        self.matrix(ips)
    }

    /// Every ordered pair of pods, TCP and UDP, all at once: prints the matrix and the
    /// differences; true when none differ.
    fn matrix(&self, ips: &BTreeMap<&str, Ipv4Addr>) -> Res<bool> {
        let mut running = Vec::new();
        for ((_, from), (_, to)) in pairs() {
            for proto in ["tcp", "udp"] {
                let child = self
                    .probe_command(from, ips[to], proto, 1500)
                    .spawn()
                    .map_err(|e| format!("probe {from} -> {to}: {e}"))?;
                running.push(((from, to, proto), child));
            }
        }
        for (_, from, _) in PODS {
            for (column, _, vip) in SERVICES.into_iter().filter(|s| probed(from, s.0)) {
                for proto in ["tcp", "udp"] {
                    let child = self
                        .probe_port(&self.pod_ns[from], vip, SERVICE_PORT, proto, 1500)
                        .spawn()
                        .map_err(|e| format!("probe {from} -> {column}: {e}"))?;
                    running.push(((from, column, proto), child));
                }
            }
        }
        let mut seen = BTreeMap::new();
        for (key, mut child) in running {
            let reached = child.wait().is_ok_and(|s| s.success());
            seen.insert(key, reached);
        }
        self.check()?;
        say_raw!("{}", render_matrix(&seen));
        // The NodePort, from outside the pods: node-b's own stack to node-a's address.
        let mut node_port = String::new();
        for proto in ["tcp", "udp"] {
            let reached = self
                .probe_port(&self.nodes[1], NODES[0].1, NODE_PORT, proto, 1500)
                .status()
                .is_ok_and(|s| s.success());
            node_port.push(match (reached, proto) {
                (true, "tcp") => 'T',
                (true, _) => 'U',
                (false, _) => '-',
            });
        }
        let node_port_ok = node_port == "TU";
        say!(
            "        NodePort: node-b's stack -> node-a {}:{NODE_PORT} (shop/web)  {node_port}{}",
            NODES[0].1,
            if node_port_ok {
                ""
            } else {
                "  FAILED: expected TU"
            }
        );
        Ok(node_port_ok
            && seen
                .iter()
                .all(|(&(from, to, proto), &got)| expected(from, to, proto == "tcp").0 == got))
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The YAML without the document whose `metadata.name` is `name`.
fn without_document(yaml: &str, name: &str) -> Res<String> {
    let needle = format!("\n  name: {name}\n");
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    let kept: Vec<&str> = docs
        .iter()
        .copied()
        .filter(|d| !d.contains(&needle))
        .collect();
    if kept.len() == docs.len() {
        return Err(format!(
            "--without-policy: the demo has no object named {name}"
        ));
    }
    Ok(kept.join("\n---\n"))
}

/// `weir demo --down`: removes every kept demo (its agents and servers by pid, its
/// namespaces, its files).
pub fn down() -> Res<String> {
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(STATE_GLOB_DIR).map_err(|e| e.to_string())?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(STATE_PREFIX) {
            continue;
        }
        let state_file = entry.path().join("state.json");
        let Ok(text) = std::fs::read_to_string(&state_file) else {
            continue;
        };
        let state: State =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", state_file.display()))?;
        for pid in &state.pids {
            // Only processes that are still the demo's (a recycled pid is left alone).
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let is_ours = String::from_utf8_lossy(&cmdline).contains("weir");
            if is_ours {
                let _ = run_cmd(&["kill", "-TERM", &pid.to_string()]);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while state
            .pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        for ns in state.namespaces.iter().rev() {
            let _ = run_cmd(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&state.dir);
        removed.push(state.dir.display().to_string());
    }
    Ok(if removed.is_empty() {
        "no kept demo found".into()
    } else {
        format!("removed {}", removed.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_document_removes_exactly_one_object() {
        let yaml = cluster_yaml(
            &[String::new(), String::new()],
            &[String::new(), String::new()],
        );
        let cut = without_document(&yaml, "security.quarantine").unwrap();
        assert!(!cut.contains("security.quarantine"));
        assert!(cut.contains("api-from-web"));
        assert!(without_document(&yaml, "nothing-by-that-name").is_err());
    }

    #[test]
    fn metric_sums_label_sets_and_ignores_prefixes() {
        let text = "weir_x_total{worker=\"0\"} 3\nweir_x_total{worker=\"1\"} 4\n\
                    weir_x_total_more 100\nweir_y 7\n";
        assert_eq!(metric(text, "weir_x_total"), 7);
        assert_eq!(metric(text, "weir_y"), 7);
        assert_eq!(metric(text, "weir_z"), 0);
        assert_eq!(metric_with(text, "weir_x_total", "worker=\"1\""), 4);
    }
}
