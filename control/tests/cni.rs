//! `weir-cni` driven as a container runtime drives it: through libcni (a small Go driver
//! built from Debian's libcni sources, `tests/cni/driver`), with a conflist that chains
//! Debian's `portmap` and `bandwidth` after weir, against a running `weir agent`.
//!
//! - ADD three pods; their addresses come from the IPPool; ping goes through the
//!   dataplane with the datastore's policy (db admits only app=web); the chained plugins
//!   got weir's result (portmap's DNAT rule exists).
//! - DEL all: no veth, no lease, no endpoint left; DEL again succeeds.
//! - 50 ADDs at once get 50 distinct addresses, and all are deleted again.
//! - 50 ADDs at once while a UDP flow runs between two other pods: the flow's longest
//!   silence is measured (printed with the figures) and must stay short.
//! - A plugin killed (SIGKILL) in the middle of ADD leaks nothing once the runtime's GC ran.
//! - An ADD against a stopped agent fails cleanly within the timeout, with CNI code 11.
//! - Ten pods survive a `kill -9` of the agent: the restarted agent restores them from
//!   their attachment records (the outage is measured and printed), nothing leaks.
//! - Records of pods that died while the agent was down are released at its start; a pod
//!   whose veth pair vanished gets a new one; a corrupt record is reported and skipped.
//!
//! Needs root, Go and Debian's CNI packages (the test command installs them); CI runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Agent;
use weir_testkit::flow::{socket_in, Echo, Flow};
use weir_testkit::lab::{output, require_root, run, NetnsGuard};

struct Lab {
    pid: u32,
    node: String,
    dir: PathBuf,
    /// Removes the pods' namespaces, then the node's (portmap's chains live there and go
    /// with it), then the directory.
    guard: NetnsGuard,
}

/// The scenarios of this file run one at a time: each starts an agent, tens of plugin
/// processes and, for the burst, measures a flow's silence, which the others' processes
/// on the same two cores would lengthen.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The driver, built once per test binary.
fn driver() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_driver).clone()
}

fn build_driver() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cni-driver");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cni/build.sh");
    let built = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "building the libcni driver: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

impl Lab {
    /// A node namespace `weir-c<tag>-<pid>` and a scratch directory with a file datastore
    /// (the IPPool `cidr` and the Node) and the agent's config; returns the lab, the node's
    /// name, the config and the agent's port.
    fn with_pool(tag: &str, cidr: &str) -> (Lab, String, PathBuf, u16) {
        let pid = std::process::id();
        let mut guard = NetnsGuard::new();
        let dir = guard.temp_dir(&format!("weir-cni-{tag}")).unwrap();
        std::fs::create_dir_all(dir.join("datastore")).unwrap();
        let mut lab = Lab {
            pid,
            node: format!("weir-c{tag}-{pid}"),
            dir,
            guard,
        };
        lab.guard.add_netns(&lab.node).unwrap();
        run(&["ip", "-n", &lab.node, "link", "set", "lo", "up"]).unwrap();
        let node = format!("node-{tag}-{pid}");
        std::fs::write(
            lab.dir.join("datastore/cluster.yaml"),
            format!(
                "apiVersion: weir.dev/v1\nkind: IPPool\nmetadata:\n  name: pods\nspec:\n  cidr: \
                 {cidr}\n  blockSize: 26\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: \
                 {node}\n"
            ),
        )
        .unwrap();
        let port = 40000 + (pid % 20000) as u16;
        let config = lab.dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "node: {node}\ncores: [0, 1]\ndatastore: {}\nlisten: 127.0.0.1:{port}\nframes: \
                 4096\ncni:\n  socket: {}\n  ipamDir: {}\n",
                lab.dir.join("datastore").display(),
                lab.dir.join("cni.sock").display(),
                lab.dir.join("ipam").display()
            ),
        )
        .unwrap();
        lab.write_conflist("1.0.0");
        lab.write_conflist("1.1.0");
        (lab, node, config, port)
    }

    /// The attachment records of `node`.
    fn records(&self, node: &str) -> Vec<PathBuf> {
        common::attachment_records(&self.dir.join("ipam"), node)
    }

    fn pod_ns(&mut self, name: &str) -> String {
        let ns = format!("weir-c{name}-{}", self.pid);
        self.guard.add_netns(&ns).unwrap();
        ns
    }

    /// The conflist at `version` (written once, before any plugin runs).
    fn conflist(&self, version: &str) -> PathBuf {
        self.dir.join(format!("weir-{version}.conflist"))
    }

    fn write_conflist(&self, version: &str) {
        let path = self.conflist(version);
        let weir = serde_json::json!(
            {"type": "weir-cni", "socket": self.dir.join("cni.sock"), "timeoutSeconds": 10}
        );
        // Debian's portmap and bandwidth speak CNI 1.0 and reject GC (new in 1.1): the 1.1
        // list, used for GC, holds weir alone.
        let plugins = if version == "1.1.0" {
            serde_json::json!([weir])
        } else {
            serde_json::json!([
                weir,
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}}
            ])
        };
        let text = serde_json::json!({"cniVersion": version, "name": "weir", "plugins": plugins});
        std::fs::write(&path, text.to_string()).unwrap();
    }

    /// The driver inside the node's namespace, as the kubelet's runtime would run it on
    /// the node, with `args` and the plugin path and cache.
    fn driver_command(&self, driver: &Path, args: &[&str]) -> Command {
        let cni_path = format!(
            "{}:/usr/lib/cni",
            Path::new(env!("CARGO_BIN_EXE_weir-cni"))
                .parent()
                .unwrap()
                .display()
        );
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.node])
            .arg(driver)
            .args(args)
            .args(["--cni-path", &cni_path, "--cache-dir"])
            .arg(self.dir.join("cni-cache"));
        command
    }

    fn cni(&self, driver: &Path, args: &[&str]) -> Output {
        self.driver_command(driver, args).output().unwrap()
    }

    /// `verb` (add, check, del) for pod `pod` (container `id`) in namespace `ns`, through
    /// the 1.0.0 list; ADD and CHECK carry the capability arguments a runtime passes.
    fn attachment(&self, driver: &Path, verb: &str, ns: &str, pod: &str, id: &str) -> Command {
        let conflist = self.conflist("1.0.0");
        let netns = format!("/var/run/netns/{ns}");
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={pod}");
        let mut all = vec![
            verb,
            "--conflist",
            conflist.to_str().unwrap(),
            "--container-id",
            id,
            "--netns",
            &netns,
            "--ifname",
            "eth0",
            "--args",
            &args,
        ];
        if verb != "del" {
            all.extend([
                "--cap",
                r#"portMappings=[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]"#,
                "--cap",
                r#"bandwidth={"ingressRate":100000000,"ingressBurst":1000000,"egressRate":100000000,"egressBurst":1000000}"#,
            ]);
        }
        self.driver_command(driver, &all)
    }

    fn add(&self, driver: &Path, ns: &str, pod: &str, id: &str) -> serde_json::Value {
        added(
            pod,
            self.attachment(driver, "add", ns, pod, id)
                .output()
                .unwrap(),
        )
    }

    /// [`Lab::add`] run at the lowest CPU priority (`nice -n 19`): fifty of them at once
    /// must not starve the flow a test measures of the CPU.
    fn add_niced(&self, driver: &Path, ns: &str, pod: &str, id: &str) -> serde_json::Value {
        let inner = self.attachment(driver, "add", ns, pod, id);
        let mut niced = Command::new("nice");
        niced
            .args(["-n", "19"])
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                niced.env(k, v);
            }
        }
        added(pod, niced.output().unwrap())
    }

    fn del(&self, driver: &Path, ns: &str, pod: &str, id: &str) {
        let out = self
            .attachment(driver, "del", ns, pod, id)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "DEL {pod}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ping(&self, from: &str, to: &str) -> bool {
        output(&[
            "ip", "netns", "exec", from, "ping", "-c", "1", "-W", "1", to,
        ])
        .unwrap()
        .status
        .success()
    }

    fn host_veths(&self) -> Vec<String> {
        run(&["ip", "-n", &self.node, "-o", "link", "show"])
            .unwrap()
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with('w') && n.len() == 15)
            .collect()
    }

    fn leases(&self, node: &str) -> usize {
        let path = self.dir.join("ipam").join(format!("leases-{node}.json"));
        let text = std::fs::read_to_string(path).unwrap_or_else(|_| "{}".into());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["leases"].as_object().map_or(0, |m| m.len())
    }
}

/// The result of a successful ADD of `pod`.
fn added(pod: &str, out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "ADD {pod}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn address_of(result: &serde_json::Value) -> String {
    let cidr = result["ips"][0]["address"].as_str().unwrap();
    cidr.split('/').next().unwrap().to_owned()
}

#[test]
fn pods_attached_through_libcni_with_chained_plugins_and_nothing_left_behind() {
    require_root("the CNI scenario");
    let _alone = one_at_a_time();
    let driver = driver();
    let pid = std::process::id();
    let mut guard = NetnsGuard::new();
    let dir = guard.temp_dir("weir-cni-test").unwrap();
    std::fs::create_dir_all(dir.join("datastore")).unwrap();
    let mut lab = Lab {
        pid,
        node: format!("weir-cn-{pid}"),
        dir,
        guard,
    };
    lab.guard.add_netns(&lab.node).unwrap();
    run(&["ip", "-n", &lab.node, "link", "set", "lo", "up"]).unwrap();
    let node = format!("node-{pid}");
    // The pool, and the pods' labels (the runtime creates them; their addresses come from
    // weir). db admits only app=web.
    let pods_yaml: String = [("web", "web"), ("db", "db"), ("other", "other")]
        .iter()
        .map(|(name, app)| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  \
                 labels: {{app: {app}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n"
            )
        })
        .collect();
    std::fs::write(
        lab.dir.join("datastore/cluster.yaml"),
        format!(
            "apiVersion: weir.dev/v1\nkind: IPPool\nmetadata:\n  name: pods\nspec:\n  cidr: \
             198.18.64.0/24\n  blockSize: 26\n---\napiVersion: v1\nkind: Node\nmetadata:\n  \
             name: {node}\n{pods_yaml}---\napiVersion: networking.k8s.io/v1\nkind: \
             NetworkPolicy\nmetadata:\n  name: db\n  namespace: shop\nspec:\n  podSelector:\n    \
             matchLabels: {{app: db}}\n  ingress:\n  - from:\n    - podSelector:\n        \
             matchLabels: {{app: web}}\n"
        ),
    )
    .unwrap();
    let port = 40000 + (pid % 20000) as u16;
    let config = lab.dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "node: {node}\ncores: [0, 1]\ndatastore: {}\nlisten: 127.0.0.1:{port}\nframes: \
             4096\ncni:\n  socket: {}\n  ipamDir: {}\n",
            lab.dir.join("datastore").display(),
            lab.dir.join("cni.sock").display(),
            lab.dir.join("ipam").display()
        ),
    )
    .unwrap();
    let mut agent = Agent::start(&lab.node, &config, port, lab.dir.join("agent.log"));
    // 1.0.0 for ADD, CHECK and DEL (Debian's libcni cannot read 1.1.0 results); 1.1.0 for
    // GC, which is new in 1.1.
    lab.write_conflist("1.0.0");
    lab.write_conflist("1.1.0");

    // Three pods attached as a runtime does.
    let names = ["web", "db", "other"];
    let nss: Vec<String> = names.iter().map(|n| lab.pod_ns(n)).collect();
    let mut ips = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let started = Instant::now();
        let result = lab.add(&driver, &nss[i], name, &format!("ctr-{name}-{pid}"));
        let ip = address_of(&result);
        assert!(ip.starts_with("198.18.64."), "{result}");
        assert!(started.elapsed() < Duration::from_secs(10));
        ips.push(ip);
    }
    // The chained plugins ran with weir's result: portmap's DNAT chain names the pod.
    let nat = output(&[
        "ip",
        "netns",
        "exec",
        &lab.node,
        "iptables-save",
        "-t",
        "nat",
    ])
    .unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert!(nat.contains(&ips[0]), "portmap's rules: {nat}");
    // Traffic through the dataplane, with policy.
    assert!(
        lab.ping(&nss[0], &ips[1]),
        "web reaches db: {}",
        agent.log()
    );
    assert!(
        !lab.ping(&nss[2], &ips[1]),
        "other is denied by db's policy"
    );
    assert!(lab.ping(&nss[2], &ips[0]), "other reaches web (no policy)");
    // The denied pings are counted under their drop reason (summed over workers).
    let denied: u64 = agent
        .http("/metrics")
        .lines()
        .filter(|l| {
            l.starts_with("weir_drops_total{") && l.contains("reason=\"policy_denied_ingress\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(denied > 0, "the denied pings are counted: {}", agent.log());
    // CHECK passes on a healthy attachment.
    // A runtime passes the same capability arguments as for ADD.
    let check = lab
        .attachment(&driver, "check", &nss[0], "web", &format!("ctr-web-{pid}"))
        .output()
        .unwrap();
    let check_err = String::from_utf8_lossy(&check.stderr);
    // Debian's portmap cannot CHECK IPv4-only pods (containernetworking/plugins#819);
    // everything before it in the chain must pass.
    assert!(
        check.status.success() || check_err.contains("could not check ipv6 dnat"),
        "CHECK: {check_err}"
    );

    // DEL everything: nothing left; DEL again is fine. "other"'s namespace is gone first,
    // as when a runtime cleans up after a crashed sandbox.
    run(&["ip", "netns", "del", &nss[2]]).unwrap();
    for (i, name) in names.iter().enumerate() {
        lab.del(&driver, &nss[i], name, &format!("ctr-{name}-{pid}"));
        lab.del(&driver, &nss[i], name, &format!("ctr-{name}-{pid}"));
    }
    assert!(lab.host_veths().is_empty(), "{:?}", lab.host_veths());
    assert_eq!(lab.leases(&node), 0);
    assert!(!lab.ping(&nss[0], &ips[1]));

    // 50 ADDs at once: 50 distinct addresses; then 50 DELs at once.
    let many: Vec<String> = (0..50).map(|i| lab.pod_ns(&format!("m{i}"))).collect();
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = many
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (lab, driver) = (&lab, &driver);
                s.spawn(move || lab.add(driver, ns, &format!("m{i}"), &format!("ctr-m{i}-{pid}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addresses: Vec<String> = results.iter().map(address_of).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 50, "50 distinct addresses");
    assert_eq!(lab.host_veths().len(), 50);
    let a0 = address_of(&results[0]);
    let a1 = address_of(&results[1]);
    let a2 = address_of(&results[2]);
    assert!(
        lab.ping(&many[0], &a1) && lab.ping(&many[2], &a0) && lab.ping(&many[1], &a2),
        "pods attached together reach each other: {}\n{}",
        agent.log(),
        run(&["ip", "-n", &many[0], "addr"]).unwrap()
    );
    std::thread::scope(|s| {
        for (i, ns) in many.iter().enumerate() {
            let (lab, driver) = (&lab, &driver);
            s.spawn(move || lab.del(driver, ns, &format!("m{i}"), &format!("ctr-m{i}-{pid}")));
        }
    });
    assert!(lab.host_veths().is_empty());
    assert_eq!(lab.leases(&node), 0);

    // A plugin killed mid-ADD: the runtime's GC (nothing valid) reclaims what it made.
    let victim = lab.pod_ns("kill");
    let mut child = lab
        .attachment(&driver, "add", &victim, "kill", &format!("ctr-kill-{pid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the agent has leased its address (mid-ADD), plugin and driver both.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.leases(&node) == 0 {
        assert!(
            Instant::now() < deadline,
            "the killed ADD never reached IPAM"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // `ip netns exec` execs the driver: the child's pid is the driver's, and the plugin
    // is its child.
    let _ = output(&["pkill", "-KILL", "-P", &child.id().to_string()]).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // Whatever the agent finished, GC with no valid attachment removes it.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lab.leases(&node),
        1,
        "the killed ADD left its lease for GC to find"
    );
    let gc_list = lab.conflist("1.1.0");
    let gc = lab.cni(
        &driver,
        &["gc", "--conflist", gc_list.to_str().unwrap(), "--valid", ""],
    );
    assert!(
        gc.status.success(),
        "GC: {}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert_eq!(lab.leases(&node), 0, "GC reclaimed the killed ADD's lease");
    assert!(lab.host_veths().is_empty(), "{:?}", lab.host_veths());

    // A stopped agent: ADD fails with "try again later" well within the timeout.
    agent.stop();
    let late = lab.pod_ns("late");
    let started = Instant::now();
    let out = lab
        .attachment(&driver, "add", &late, "late", &format!("ctr-late-{pid}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"code\":11"), "{err}");
    assert!(err.contains("not reachable"), "{err}");
}

/// `kill -9` of the agent (a crash, or a DaemonSet rollout that does not wait): the pid is
/// signalled directly, as the kernel's OOM killer or `kubectl delete --force` would.
fn kill_agent(agent: &mut Agent) {
    let mut child = agent.child.take().expect("the agent runs");
    run(&["kill", "-KILL", &child.id().to_string()]).unwrap();
    let status = child.child().wait().unwrap();
    assert!(!status.success(), "the agent died of SIGKILL: {status}");
}

/// Pings `to` from namespace `from` every 10 ms until the first reply (at most `limit`);
/// returns when the reply arrived, or `None`.
fn first_reply(from: &str, to: &str, limit: Duration) -> Option<Instant> {
    let deadline = format!("{}", limit.as_secs().max(1));
    let out = output(&[
        "ip", "netns", "exec", from, "ping", "-n", "-q", "-c", "1", "-i", "0.01", "-w", &deadline,
        to,
    ])
    .unwrap();
    out.status.success().then(Instant::now)
}

#[test]
fn ten_pods_survive_a_kill_9_of_the_agent_and_nothing_leaks() {
    require_root("the CNI restart scenario");
    let _alone = one_at_a_time();
    let driver = driver();
    let (mut lab, node, config, port) = Lab::with_pool("r", "198.18.65.0/24");
    let pid = lab.pid;
    let mut agent = Agent::start(&lab.node, &config, port, lab.dir.join("agent.log"));
    let nss: Vec<String> = (0..10).map(|i| lab.pod_ns(&format!("r{i}"))).collect();
    // The first ADD alone: portmap creates its chains in the node's namespace on its first
    // ADD, and concurrent first ADDs race each other there ("chain ... File exists").
    let first = address_of(&lab.add(&driver, &nss[0], "r0", &format!("ctr-r0-{pid}")));
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = nss
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, ns)| {
                let (lab, driver) = (&lab, &driver);
                s.spawn(move || {
                    address_of(&lab.add(driver, ns, &format!("r{i}"), &format!("ctr-r{i}-{pid}")))
                })
            })
            .collect();
        std::iter::once(first)
            .chain(handles.into_iter().map(|h| h.join().unwrap()))
            .collect()
    });
    let reach_all = |lab: &Lab, when: &str, log: &dyn Fn() -> String| {
        for i in 0..nss.len() {
            let j = (i + 1) % nss.len();
            assert!(
                lab.ping(&nss[i], &ips[j]),
                "{when}: r{i} reaches r{j} ({}): {}",
                ips[j],
                log()
            );
        }
    };
    reach_all(&lab, "before the restart", &|| agent.log());
    let leak_check = |lab: &Lab, n: usize| {
        assert_eq!(lab.host_veths().len(), n, "{:?}", lab.host_veths());
        assert_eq!(lab.leases(&node), n);
        assert_eq!(lab.records(&node).len(), n, "{:?}", lab.records(&node));
    };
    leak_check(&lab, 10);

    kill_agent(&mut agent);
    let log_before = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(
        !lab.ping(&nss[0], &ips[1]),
        "no agent, no forwarding: the outage is real"
    );
    // Same config, same namespace; the pods are not touched and no ADD runs again.
    let restarted = Instant::now();
    let (outage, ready) = std::thread::scope(|s| {
        let pinger = s.spawn(|| first_reply(&nss[0], &ips[1], Duration::from_secs(15)));
        let log = lab.dir.join("agent-2.log");
        agent = Agent::start(&lab.node, &config, port, log);
        let ready = restarted.elapsed();
        (pinger.join().unwrap(), ready)
    });
    let outage = outage
        .unwrap_or_else(|| panic!("no reply within 15 s of the restart: {}", agent.log()))
        .duration_since(restarted);
    let mut figure =
        format!(
        "restart outage: first reply {} ms after the new agent was started (/readyz seen at {} \
         ms, polled every 100 ms; 10 pods, {} build)\n",
        outage.as_millis(),
        ready.as_millis(),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    if let Some(line) = agent
        .log()
        .lines()
        .find(|l| l.contains("attachment(s) restored"))
    {
        figure.push_str(&format!("restart outage: the agent said: {line}\n"));
    }
    print!("{figure}");
    // Where `scripts/test.sh` shows it after the tests (cargo keeps a passing test's output
    // to itself).
    let figures = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures");
    std::fs::create_dir_all(&figures).unwrap();
    std::fs::write(figures.join("restart-outage.txt"), &figure).unwrap();
    assert!(
        outage < Duration::from_secs(5),
        "traffic back within 5 s: {} ms",
        outage.as_millis()
    );
    reach_all(&lab, "after the restart", &|| agent.log());
    assert!(
        agent.log().contains("10 attachment(s) restored"),
        "{}\nbefore the kill:\n{log_before}",
        agent.log()
    );
    leak_check(&lab, 10);
    // CHECK answers from the records (Debian's portmap cannot CHECK IPv4-only pods, see
    // above; weir comes first in the chain).
    let check = lab
        .attachment(&driver, "check", &nss[3], "r3", &format!("ctr-r3-{pid}"))
        .output()
        .unwrap();
    let check_err = String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success() || check_err.contains("could not check ipv6 dnat"),
        "CHECK after the restart: {check_err}"
    );
    // DEL after the restart takes everything; DEL of an unknown container succeeds.
    for (i, ns) in nss.iter().enumerate() {
        lab.del(&driver, ns, &format!("r{i}"), &format!("ctr-r{i}-{pid}"));
    }
    lab.del(&driver, &nss[0], "never", &format!("ctr-never-{pid}"));
    leak_check(&lab, 0);
    assert!(!lab.ping(&nss[0], &ips[1]));
}

#[test]
fn a_restart_releases_pods_that_died_meanwhile_and_repairs_lost_interfaces() {
    require_root("the CNI restart clean-up scenario");
    let _alone = one_at_a_time();
    let driver = driver();
    let (mut lab, node, config, port) = Lab::with_pool("g", "198.18.66.0/24");
    let pid = lab.pid;
    let mut agent = Agent::start(&lab.node, &config, port, lab.dir.join("agent.log"));
    let nss: Vec<String> = (0..3).map(|i| lab.pod_ns(&format!("g{i}"))).collect();
    let results: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            lab.add(
                &driver,
                &nss[i],
                &format!("g{i}"),
                &format!("ctr-g{i}-{pid}"),
            )
        })
        .collect();
    let ips: Vec<String> = results.iter().map(address_of).collect();
    assert!(lab.ping(&nss[0], &ips[1]), "{}", agent.log());
    assert_eq!(lab.leases(&node), 3);

    kill_agent(&mut agent);
    // While no agent runs: g2's pod dies (its namespace, and with it the veth pair, go);
    // g1's veth pair is deleted by hand; a corrupt record appears beside the others.
    run(&["ip", "netns", "del", &nss[2]]).unwrap();
    let g1_host = results[1]["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&["ip", "-n", &lab.node, "link", "del", &g1_host]).unwrap();
    let corrupt = lab
        .dir
        .join("ipam")
        .join(format!("attachments-{node}"))
        .join("w00000000000000.json");
    std::fs::write(&corrupt, b"{\"version\": 1, \"contain").unwrap();

    agent = Agent::start(&lab.node, &config, port, lab.dir.join("agent-2.log"));
    let log = agent.log();
    assert!(
        log.contains("2 attachment(s) restored") && log.contains("1 whose pod is gone released"),
        "{log}"
    );
    assert!(
        log.contains("w00000000000000.json skipped: not JSON"),
        "the corrupt record is reported: {log}"
    );
    assert!(
        corrupt.exists(),
        "the corrupt record stays for the operator"
    );
    std::fs::remove_file(&corrupt).unwrap();
    // g2's address and record are gone, g1 has a pair again and both pods talk.
    assert_eq!(lab.leases(&node), 2);
    assert_eq!(lab.records(&node).len(), 2);
    assert_eq!(lab.host_veths().len(), 2, "{:?}", lab.host_veths());
    assert!(
        lab.host_veths().contains(&g1_host),
        "{:?}",
        lab.host_veths()
    );
    assert!(lab.ping(&nss[0], &ips[1]), "g0 reaches g1: {}", agent.log());
    assert!(lab.ping(&nss[1], &ips[0]), "g1 reaches g0: {}", agent.log());
    // The released address is handed out again.
    let again = lab.pod_ns("g3");
    let g3 = address_of(&lab.add(&driver, &again, "g3", &format!("ctr-g3-{pid}")));
    assert_eq!(g3, ips[2], "g2's address was released and is reused");
    for (i, ns) in nss.iter().enumerate() {
        lab.del(&driver, ns, &format!("g{i}"), &format!("ctr-g{i}-{pid}"));
    }
    lab.del(&driver, &again, "g3", &format!("ctr-g3-{pid}"));
    assert_eq!(lab.leases(&node), 0);
    assert!(lab.records(&node).is_empty());
    assert!(lab.host_veths().is_empty(), "{:?}", lab.host_veths());
}

#[test]
fn fifty_pods_attach_at_once_while_a_flow_runs_and_the_flow_keeps_going() {
    require_root("the CNI burst scenario");
    let _alone = one_at_a_time();
    let driver = driver();
    let (mut lab, node, config, port) = Lab::with_pool("f", "198.18.66.0/24");
    let pid = lab.pid;
    let agent = Agent::start(&lab.node, &config, port, lab.dir.join("agent.log"));
    let (a, b) = (lab.pod_ns("fa"), lab.pod_ns("fb"));
    lab.add(&driver, &a, "fa", &format!("ctr-fa-{pid}"));
    let b_addr = address_of(&lab.add(&driver, &b, "fb", &format!("ctr-fb-{pid}")));
    // A probe every 0.2 ms from a to an echo in b.
    let echo_at: std::net::SocketAddr = format!("{b_addr}:7").parse().unwrap();
    let echo = Echo::start(&b, echo_at).unwrap();
    let any: std::net::SocketAddr = ([0, 0, 0, 0], 0).into();
    let flow = Flow::start(
        socket_in(&a, any).unwrap(),
        echo_at,
        Duration::from_micros(200),
    )
    .unwrap();
    // The flow runs before the burst.
    let warm = Instant::now();
    while flow.answered() < 100 {
        assert!(
            warm.elapsed() < Duration::from_secs(10),
            "the flow never ran: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // The workers' longest rounds and stalls so far (the agent's start, the first pods'
    // ports): the burst's own are known only where they beat them.
    let worker_max = |family: &str| -> f64 {
        agent
            .http("/metrics")
            .lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, f64::max)
    };
    let longest_round = || worker_max("weir_worker_longest_round_seconds");
    let longest_stall = || worker_max("weir_worker_longest_stall_seconds");
    let waited = || worker_max("weir_worker_cpu_wait_seconds_total");
    let (stall_before, waited_before) = (longest_stall(), waited());
    let before_burst = longest_round();
    let many: Vec<String> = (0..50).map(|i| lab.pod_ns(&format!("f{i}"))).collect();
    let t0 = Instant::now();
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = many
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (lab, driver) = (&lab, &driver);
                s.spawn(move || {
                    lab.add_niced(driver, ns, &format!("f{i}"), &format!("ctr-f{i}-{pid}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let (gap, answered) = flow.silence(t0, t1);
    let (_, after) = flow.silence(t1, Instant::now());
    let sent = flow.sent();
    drop(flow);
    drop(echo);
    assert_eq!(results.len(), 50);
    let metrics = agent.http("/metrics");
    let samples = |family: &str| -> Vec<f64> {
        metrics
            .lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect()
    };
    let slow: f64 = samples("weir_worker_slow_rounds_total").iter().sum();
    let (longest, stall) = (longest_round(), longest_stall());
    let figure = format!(
        "50 pods attached at once in {} ms while a flow ran (a probe every 0.2 ms): longest \
         silence {:.1} ms, {answered} answers during the burst, {sent} probes sent in all; \
         worker rounds over 1 ms since the agent started (debug build): {slow}, the longest \
         {:.1} ms ({:.1} ms before the burst), of which the longest stall of the worker's own \
         {:.1} ms ({:.1} before); the busiest worker waited {:.0} ms for a CPU during the \
         burst\n",
        (t1 - t0).as_millis(),
        gap.as_secs_f64() * 1e3,
        longest * 1e3,
        before_burst * 1e3,
        stall * 1e3,
        stall_before * 1e3,
        (waited() - waited_before) * 1e3
    );
    print!("{figure}");
    let figures = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures");
    std::fs::create_dir_all(&figures).unwrap();
    std::fs::write(figures.join("attach-burst-gap.txt"), &figure).unwrap();
    assert!(after > 0, "the flow runs after the burst: {}", agent.log());
    // Debug build, two workers on two shared cores, fifty (niced) plugin processes. What
    // is bounded is the worker's own standstill during the burst (its rounds less the time
    // the scheduler gave its core to others): a worker waiting for the kernel's RTNL lock
    // while it binds a port stood still 100-700 ms here, joining its bind helpers up to
    // 34 ms (release), a lock held by a preempted poster 31 ms; since, 2-5 ms of its own in
    // this debug build. Rounds as a whole reached 100-110 ms in the burst, the core taken
    // by the burst's processes; the flow's silence
    // also counts its own threads waiting for a core (62-172 ms on one day, 21-48 on
    // another, with the same code): it is bounded only as "not cut".
    assert!(
        stall <= stall_before || stall < 0.02,
        "a worker stood still for {:.1} ms of its own during the attaches: {}",
        stall * 1e3,
        agent.log()
    );
    assert!(
        gap < Duration::from_secs(1),
        "the flow went silent for {} ms during the attaches: {}",
        gap.as_millis(),
        agent.log()
    );
    assert_eq!(lab.leases(&node), 52);
}
