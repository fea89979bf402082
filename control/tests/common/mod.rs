//! Helpers shared by the control-plane scenario tests: pods set up Calico-style in their
//! namespaces, and an agent run in a node namespace. The generic lab helpers (commands,
//! namespaces, MACs, the root check, guards) are `weir_testkit::lab`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_testkit::lab::{in_netns, ip, output, plumb_pod, ChildGuard, LabError, NetnsGuard};

/// A pod namespace `pod`, made and removed by `lab`, attached to namespace `node` by a
/// veth (`host` on the node side, `eth0` in the pod) and configured Calico-style: `v4`/32
/// and a default route via 169.254.1.1.
pub fn attach_pod(
    lab: &mut NetnsGuard,
    node: &str,
    pod: &str,
    host: &str,
    v4: &str,
) -> Result<(), LabError> {
    lab.add_netns(pod)?;
    ip(&["-n", pod, "link", "set", "lo", "up"])?;
    plumb_pod(node, pod, host, v4)
}

/// `weir agent` running in namespace `ns` with the config at `config`.
pub struct Agent {
    pub ns: String,
    pub port: u16,
    pub log: PathBuf,
    /// Stopped on drop: SIGTERM, then SIGKILL after 5 s.
    pub child: Option<ChildGuard>,
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
            child: Some(ChildGuard::with_grace(child, Duration::from_secs(5))),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = agent.http("/readyz");
            if ready.contains("ready") && !ready.contains("not") {
                return agent;
            }
            if let Some(Ok(Some(status))) = agent.child.as_mut().map(|c| c.child().try_wait()) {
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
        let out = output(&["ip", "netns", "exec", &self.ns, "bash", "-c", &script]).unwrap();
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

    /// SIGTERM, then SIGKILL after 5 s (also what dropping the agent does).
    pub fn stop(&mut self) {
        self.child.take();
    }
}
/// Writes `dir/agent.yaml` for a one-node lab (node `node`, two workers on cores 0 and 1,
/// the file datastore `dir/datastore`, the uplink `up0`, pod CIDR 198.18.10.0/24, then
/// `extra` YAML lines) and starts the agent in `ns`, listening on 127.0.0.1:`port`.
pub fn start_lab_agent(ns: &str, dir: &Path, node: &str, port: u16, extra: &str) -> Agent {
    let config = format!(
        "node: {node}\ncores: [0, 1]\ndatastore: {}\nlisten: 127.0.0.1:{port}\n\
         frames: 4096\nuplink: up0\npodCidrs: [198.18.10.0/24]\n{extra}",
        dir.join("datastore").display(),
    );
    std::fs::write(dir.join("agent.yaml"), config).unwrap();
    Agent::start(ns, &dir.join("agent.yaml"), port, dir.join("agent.log"))
}

/// The attachment records the agent keeps for `node` under `ipam_dir` (one JSON file per
/// attachment, see `control/src/attachments.rs`).
pub fn attachment_records(ipam_dir: &Path, node: &str) -> Vec<PathBuf> {
    let dir = ipam_dir.join(format!("attachments-{node}"));
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    all.retain(|p| p.extension().is_some_and(|e| e == "json"));
    all.sort();
    all
}

/// A one-connection TCP server in `ns` on `addr`: answers like an HTTP server (a body that
/// ends its line, for clients that print it) and returns the peer's address. Waits 10 s
/// for the connection.
pub fn http_server(ns: &str, addr: &str) -> JoinHandle<Result<SocketAddr, String>> {
    http_server_within(ns, addr, Duration::from_secs(10))
}

/// [`http_server`], waiting `within` for the connection.
pub fn http_server_within(
    ns: &str,
    addr: &str,
    within: Duration,
) -> JoinHandle<Result<SocketAddr, String>> {
    let listener = {
        let addr: SocketAddr = addr.parse().unwrap();
        in_netns(ns, move || TcpListener::bind(addr))
            .unwrap()
            .unwrap()
    };
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + within;
        loop {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).map_err(|e| e.to_string())?;
                    s.set_read_timeout(Some(Duration::from_secs(3)))
                        .map_err(|e| e.to_string())?;
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 6\r\n\r\nhello\n");
                    return Ok(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(format!("no connection in {within:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    })
}

/// An HTTP GET of `path` from namespace `ns` to `addr`, retried for up to `within`; the
/// response.
pub fn http_get(ns: &str, addr: &str, path: &str, within: Duration) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    in_netns(ns, move || {
        let deadline = Instant::now() + within;
        loop {
            let attempt = (|| -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(700))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(request.as_bytes())?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            })();
            match attempt {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() > deadline => return Err(format!("{addr}: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })
    .unwrap()
}
