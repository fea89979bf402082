//! Helpers shared by the scenario tests: commands, a child killed on drop, pods set up
//! Calico-style in their namespaces, and an agent run in a node namespace.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

pub fn ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Panics unless the test runs as root.
pub fn require_root(what: &str) {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .unwrap_or_default();
    assert_eq!(uid, "0", "{what} needs root; CI runs it as root");
}

/// The MAC of `dev` in namespace `ns`.
pub fn mac_of(ns: &str, dev: &str) -> String {
    ok(&[
        "ip",
        "netns",
        "exec",
        ns,
        "cat",
        &format!("/sys/class/net/{dev}/address"),
    ])
    .trim()
    .to_owned()
}

/// A pod namespace `pod` attached to namespace `node` by a veth (`host` on the node side,
/// `eth0` in the pod), configured Calico-style: `v4`/32 and a default route via
/// 169.254.1.1.
pub fn attach_pod(node: &str, pod: &str, host: &str, v4: &str) {
    ok(&["ip", "netns", "add", pod]);
    ok(&[
        "ip", "-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod,
    ]);
    ok(&["ip", "-n", node, "link", "set", host, "up"]);
    ok(&["ip", "-n", pod, "link", "set", "lo", "up"]);
    ok(&["ip", "-n", pod, "link", "set", "eth0", "up"]);
    ok(&[
        "ip",
        "-n",
        pod,
        "addr",
        "add",
        &format!("{v4}/32"),
        "dev",
        "eth0",
    ]);
    ok(&[
        "ip",
        "-n",
        pod,
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    ok(&[
        "ip",
        "-n",
        pod,
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
}

/// `weir agent` running in namespace `ns` with the config at `config`.
pub struct Agent {
    pub ns: String,
    pub port: u16,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Agent {
    /// Starts the agent and waits until `/readyz` says ready.
    pub fn start(ns: &str, config: &Path, port: u16, log: PathBuf) -> Agent {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                env!("CARGO_BIN_EXE_weir"),
                "agent",
                "--config",
            ])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut agent = Agent {
            ns: ns.to_owned(),
            port,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = agent.http("/readyz");
            if ready.contains("ready") && !ready.contains("not") {
                return agent;
            }
            if let Some(Ok(Some(status))) = agent.child.as_mut().map(Child::try_wait) {
                panic!("the agent in {ns} exited ({status}): {}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready in 10 s: {}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An HTTP GET on the agent's listener, from inside its namespace.
    pub fn http(&self, path: &str) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && \
             timeout 2 cat <&3",
            self.port
        );
        let out = sh(&["ip", "netns", "exec", &self.ns, "bash", "-c", &script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A metric's value (0 when absent).
    pub fn metric(&self, name_and_labels: &str) -> u64 {
        self.http("/metrics")
            .lines()
            .find(|l| l.starts_with(name_and_labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The log and the non-zero metrics, for failure messages.
    pub fn log(&self) -> String {
        let metrics: Vec<String> = self
            .http("/metrics")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
            .map(str::to_owned)
            .collect();
        format!(
            "{}\nmetrics:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            metrics.join("\n")
        )
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = sh(&["kill", "-TERM", &child.id().to_string()]);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}
