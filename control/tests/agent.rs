//! `weir agent` on real interfaces (root; CI runs it): a "node" network namespace running
//! the agent with two workers (one per pod, so that pod-to-pod traffic crosses the
//! handoff between workers), two "pod" namespaces attached by veth pairs and configured Calico-style
//! (address/32 and /128, default routes via 169.254.1.1 and fe80::1, answered by weir).
//! Traffic: ping both ways over IPv4 and IPv6; TCP and UDP with iperf3 both ways over both
//! families, with veth TX offload on and off; a flow denied by policy (dropped and counted), a spoofed source
//! (dropped and counted), and SIGKILL of the agent mid-traffic (no XDP program left
//! behind; a restarted agent forwards again).
//!
//! Names carry the process id; a guard removes namespaces and stops the agent even when an
//! assertion fails. Addresses are from 198.18.0.0/15 and 2001:db8::/32 only.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::attach_pod;
use weir_testkit::lab::{
    format_mac, mac_of, output, require_root, run, stop, ChildGuard, NetnsGuard,
};

struct Lab {
    pid: u32,
    node: String,
    pods: [String; 2],
    dir: PathBuf,
    agent: Option<Child>,
    /// Removes the namespaces and the directory (after `Drop for Lab` stopped the agent).
    guard: NetnsGuard,
}

const A4: &str = "198.18.1.10";
const B4: &str = "198.18.1.11";
const A6: &str = "2001:db8:1::10";
const B6: &str = "2001:db8:1::11";

impl Lab {
    fn host_if(&self, i: usize) -> String {
        format!("wh{}{}", ["a", "b"][i], self.pid)
    }

    fn port(&self) -> u16 {
        20000 + (self.pid % 20000) as u16
    }

    fn new() -> Lab {
        require_root("this scenario test (network namespaces, AF_XDP)");
        let pid = std::process::id();
        let mut guard = NetnsGuard::new();
        let dir = guard.temp_dir("weir-agent-test").unwrap();
        std::fs::create_dir_all(dir.join("datastore")).unwrap();
        let mut lab = Lab {
            pid,
            node: format!("weir-n-{pid}"),
            pods: [format!("weir-a-{pid}"), format!("weir-b-{pid}")],
            dir,
            agent: None,
            guard,
        };
        lab.guard.add_netns(&lab.node).unwrap();
        run(&["ip", "-n", &lab.node, "link", "set", "lo", "up"]).unwrap();
        for (i, (v4, v6)) in [(A4, A6), (B4, B6)].into_iter().enumerate() {
            let (ns, host) = (&lab.pods[i], lab.host_if(i));
            attach_pod(&mut lab.guard, &lab.node, ns, &host, v4).unwrap();
            let v6 = format!("{v6}/128");
            run(&[
                "ip", "-n", ns, "-6", "addr", "add", &v6, "dev", "eth0", "nodad",
            ])
            .unwrap();
            run(&[
                "ip", "-n", ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
            ])
            .unwrap();
        }
        lab
    }

    fn pod_mac(&self, i: usize) -> String {
        format_mac(&mac_of(&self.pods[i], "eth0").unwrap())
    }

    fn write_datastore(&self) {
        let pod = |i: usize, name: &str, v4: &str, v6: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: shop\n  name: {name}\n  \
                 labels: {{app: {name}}}\n  annotations:\n    weir.dev/interface: {}\n    \
                 weir.dev/mac: \"{}\"\nstatus:\n  podIPs: [{{ip: \"{v4}\"}}, {{ip: \"{v6}\"}}]\n",
                self.host_if(i),
                self.pod_mac(i)
            )
        };
        let text = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n{}---\n{}---\n\
             apiVersion: weir.dev/v1\nkind: NetworkPolicy\nmetadata:\n  namespace: shop\n  \
             name: no-udp-9999\nspec:\n  selector: app == 'b'\n  types: [Ingress]\n  \
             ingress:\n  - action: Deny\n    protocol: UDP\n    destination:\n      \
             ports: [9999]\n  - action: Allow\n",
            pod(0, "a", A4, A6),
            pod(1, "b", B4, B6),
        );
        std::fs::write(self.dir.join("datastore/cluster.yaml"), text).unwrap();
        let config = format!(
            "node: node-{}\ncores: [0, 1]\ndatastore: {}\nlisten: 127.0.0.1:{}\nframes: 4096\n",
            self.pid,
            self.dir.join("datastore").display(),
            self.port()
        );
        std::fs::write(self.dir.join("agent.yaml"), config).unwrap();
    }

    fn start_agent(&mut self) {
        let log = std::fs::File::create(self.dir.join("agent.log")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node,
                env!("CARGO_BIN_EXE_weir"),
                "agent",
                "--config",
            ])
            .arg(self.dir.join("agent.yaml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.http("/readyz").contains("ready") && !self.http("/readyz").contains("not") {
                return;
            }
            if let Some(Ok(Some(status))) = self.agent.as_mut().map(Child::try_wait) {
                panic!("the agent exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready in 10 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The agent's log and its non-zero metrics, for failure messages.
    fn log(&self) -> String {
        let metrics: Vec<String> = self
            .http("/metrics")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
            .map(str::to_owned)
            .collect();
        format!(
            "{}\nmetrics:\n{}",
            std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default(),
            metrics.join("\n")
        )
    }

    fn http(&self, path: &str) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && \
             timeout 2 cat <&3",
            self.port()
        );
        let out = output(&["ip", "netns", "exec", &self.node, "bash", "-c", &script]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn metric(&self, name_and_labels: &str) -> u64 {
        self.http("/metrics")
            .lines()
            .find(|l| l.starts_with(name_and_labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn in_pod(&self, i: usize, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.pods[i]];
        all.extend_from_slice(args);
        output(&all).unwrap()
    }

    /// One iperf3 test against a one-shot server on pod b at `to` (its IPv4 or IPv6
    /// address): TCP or UDP (10 Mbit/s), a -> b or with `reverse` b -> a, one second.
    /// Returns the client's end-of-test summary (`end.sum_received` for TCP, `end.sum`
    /// for UDP, which carries the receiver's loss).
    fn iperf3(&self, to: &str, udp: bool, reverse: bool) -> Result<serde_json::Value, String> {
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.pods[1],
                "iperf3",
                "-s",
                "-1",
                "-B",
                to,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let server = ChildGuard::new(server);
        std::thread::sleep(Duration::from_millis(300));
        let mut args = vec![
            "iperf3",
            "-c",
            to,
            "-t",
            "1",
            "-J",
            "--connect-timeout",
            "2000",
        ];
        if udp {
            args.extend(["-u", "-b", "10M"]);
        }
        if reverse {
            args.push("-R");
        }
        let run = self.in_pod(0, &args);
        drop(server);
        let out = String::from_utf8_lossy(&run.stdout);
        if !run.status.success() {
            return Err(format!("iperf3 failed: {out}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("iperf3 JSON: {e}: {out}"))?;
        let key = if udp { "sum" } else { "sum_received" };
        Ok(v["end"][key].clone())
    }

    fn ping(&self, from: usize, to: &str) -> bool {
        self.in_pod(from, &["ping", "-c", "3", "-i", "0.2", "-W", "1", to])
            .status
            .success()
    }

    /// Counter values are published every 100 ms.
    fn settle(&self) {
        std::thread::sleep(Duration::from_millis(300));
    }

    fn xdp_attached(&self, i: usize) -> bool {
        run(&["ip", "-n", &self.node, "link", "show", &self.host_if(i)])
            .unwrap()
            .contains("xdp")
    }

    /// Sends the agent `signal` ("KILL", "TERM"), then SIGKILL if it has not exited in 5 s.
    fn kill_agent(&mut self, signal: &str) {
        if let Some(mut child) = self.agent.take() {
            // `ip netns exec` execs the agent, so the child's pid is the agent's.
            stop(&mut child, signal, Duration::from_secs(5));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_agent("KILL");
    }
}

#[test]
fn pods_talk_through_the_agent_with_policy_antispoofing_and_crash_safety() {
    let mut lab = Lab::new();
    lab.write_datastore();
    lab.start_agent();
    assert!(
        lab.xdp_attached(0) && lab.xdp_attached(1),
        "XDP on both host veths"
    );

    // Ping both ways, both families.
    assert!(lab.ping(0, B4), "a -> b IPv4: {}", lab.log());
    assert!(lab.ping(1, A4), "b -> a IPv4");
    assert!(lab.ping(0, B6), "a -> b IPv6");
    assert!(lab.ping(1, A6), "b -> a IPv6");
    // Two workers, one pod each: everything between the pods crossed a handoff lane, in
    // both directions, and none was dropped there.
    lab.settle();
    for w in ["0", "1"] {
        let out = lab.metric(&format!("weir_handoff_out_total{{worker=\"{w}\"}}"));
        let inn = lab.metric(&format!("weir_handoff_in_total{{worker=\"{w}\"}}"));
        assert!(
            out >= 12 && inn >= 12,
            "worker {w}: handed out {out}, in {inn}"
        );
        let dropped = lab.metric(&format!("weir_handoff_dropped_total{{worker=\"{w}\"}}"));
        assert_eq!(dropped, 0, "worker {w}: handoff drops");
    }

    // TCP and UDP, both ways (-R: b sends), both families, with the pods' TX offload on
    // (partial checksums) and then off.
    for (offload, runs) in [
        ("on", [(B4, false), (B6, true)]),
        ("off", [(B4, true), (B6, false)]),
    ] {
        if offload == "off" {
            for i in 0..2 {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &lab.pods[i],
                    "ethtool",
                    "-K",
                    "eth0",
                    "tx",
                    "off",
                ])
                .unwrap();
            }
        }
        for (to, reverse) in runs {
            for udp in [false, true] {
                let what = format!(
                    "iperf3 {} {} {to}, tx offload {offload}",
                    if udp { "UDP" } else { "TCP" },
                    if reverse {
                        "b -> a (reverse) from"
                    } else {
                        "a -> b to"
                    },
                );
                let sum = lab.iperf3(to, udp, reverse);
                let sum = sum.unwrap_or_else(|e| panic!("{what}: {e}\n{}", lab.log()));
                if udp {
                    let packets = sum["packets"].as_u64().unwrap_or(0);
                    let lost = sum["lost_percent"].as_f64().unwrap_or(100.0);
                    assert!(packets >= 100, "{what}: {packets} datagrams");
                    assert!(lost < 5.0, "{what}: {lost}% lost");
                } else {
                    let bytes = sum["bytes"].as_u64().unwrap_or(0);
                    assert!(bytes >= 1_000_000, "{what}: only {bytes} bytes");
                }
            }
        }
    }

    // A denied flow: UDP to b's port 9999 is dropped and counted; other UDP is not. Each
    // datagram is a flow of its own (a new source port), counted by the worker that owns it.
    lab.settle();
    let denied = || {
        ["0", "1"]
            .iter()
            .map(|w| {
                lab.metric(&format!(
                    "weir_drops_total{{worker=\"{w}\",reason=\"policy_denied_ingress\"}}"
                ))
            })
            .sum::<u64>()
    };
    let before = denied();
    let udp = |port: u16| {
        let script = format!("for i in 1 2 3 4 5; do echo probe > /dev/udp/{B4}/{port}; done");
        lab.in_pod(0, &["bash", "-c", &script]);
    };
    udp(9999);
    lab.settle();
    assert_eq!(denied(), before + 5, "five UDP datagrams to 9999 denied");
    udp(9998);
    lab.settle();
    assert_eq!(denied(), before + 5, "UDP to 9998 is allowed");

    // Anti-spoofing: a sends with an address that is not its own.
    let spoofed = "weir_drops_total{worker=\"0\",reason=\"spoofed_ip\"}";
    let before = lab.metric(spoofed);
    run(&[
        "ip",
        "-n",
        &lab.pods[0],
        "addr",
        "add",
        "198.18.1.99/32",
        "dev",
        "eth0",
    ])
    .unwrap();
    assert!(
        !lab.in_pod(
            0,
            &[
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                "198.18.1.99",
                B4
            ]
        )
        .status
        .success(),
        "a spoofed ping gets no answer"
    );
    lab.settle();
    assert!(lab.metric(spoofed) >= before + 2, "spoofed frames counted");

    // Long past the stall limit, through idle and busy spells: every worker's heartbeat
    // kept moving, so the agent is healthy.
    let health = lab.http("/healthz");
    assert!(
        health.starts_with("HTTP/1.0 200") && health.ends_with("\r\n\r\nok\n"),
        "{health}"
    );

    // SIGKILL mid-traffic: the kernel detaches the programs; a new agent forwards again.
    let flood = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.pods[0],
            "ping",
            "-i",
            "0.01",
            "-c",
            "300",
            "-W",
            "1",
            B4,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut flood = ChildGuard::new(flood);
    std::thread::sleep(Duration::from_millis(500));
    lab.kill_agent("KILL");
    let deadline = Instant::now() + Duration::from_secs(5);
    while (lab.xdp_attached(0) || lab.xdp_attached(1)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !lab.xdp_attached(0) && !lab.xdp_attached(1),
        "no XDP program left after SIGKILL"
    );
    let _ = flood.child().kill();
    let _ = flood.child().wait();
    lab.start_agent();
    assert!(
        lab.ping(0, B4),
        "forwarding again after a restart: {}",
        lab.log()
    );

    // SIGTERM: a clean stop, programs detached.
    lab.kill_agent("TERM");
    assert!(!lab.xdp_attached(0) && !lab.xdp_attached(1));
    assert!(
        lab.log().contains("stopped"),
        "clean shutdown: {}",
        lab.log()
    );
}
