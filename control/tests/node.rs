//! A real node (root; CI runs it): the agent in a "node" namespace with an uplink to a
//! "world" namespace (the node's default gateway, and an Internet host behind it at
//! 198.19.255.1), two pods, one of them isolated by a default-deny ingress policy.
//!
//! Proves: the node's own stack reaches the isolated pod (a kubelet-style HTTP GET through
//! `weir0`) while the world cannot; a pod reaches a service on the node's address with its
//! own address; pods reach the world with TCP, UDP and ping, translated to the node's
//! address and a port of the SNAT range (the far end sees the node); the world reaches the
//! open pod by its own address when the pod CIDR is routed to the node, and the pod's
//! replies keep that address. The gateway's MAC is learned by the agent (nothing is
//! configured by hand), and the pods' default route comes from the kernel's. The agent
//! runs two workers, so flows whose ends are held by different workers (the uplink, the
//! host link, the pods) are steered to their owner, SNAT replies by their port.
//!
//! Names carry the process id; guards remove namespaces and stop the agent on failure.
//! Addresses: 198.18.0.0/15 and 2001:db8::/32 only.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use common::{attach_pod, http_get, http_server, start_lab_agent, Agent};
use weir_testkit::lab::{format_mac, in_netns, mac_of, output, require_root, run, NetnsGuard};

const A4: &str = "198.18.10.2";
const B4: &str = "198.18.10.3";
const NODE4: &str = "198.18.200.2";
const GATEWAY4: &str = "198.18.200.1";
const WORLD4: &str = "198.19.255.1";

struct Lab {
    pid: u32,
    node: String,
    world: String,
    pods: [String; 2],
    dir: PathBuf,
    agent: Option<Agent>,
    _guard: NetnsGuard,
}

impl Lab {
    fn new() -> Lab {
        require_root("this scenario test (network namespaces, AF_XDP)");
        let pid = std::process::id();
        let mut guard = NetnsGuard::new();
        let dir = guard.temp_dir("weir-node-test").unwrap();
        std::fs::create_dir_all(dir.join("datastore")).unwrap();
        let (node, world) = (format!("wn-node-{pid}"), format!("wn-world-{pid}"));
        let pods = [format!("wn-a-{pid}"), format!("wn-b-{pid}")];
        guard.add_netns(&node).unwrap();
        guard.add_netns(&world).unwrap();
        for ns in [&node, &world] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]).unwrap();
        }
        // The uplink: up0 in the node, upw in the world (the gateway).
        run(&[
            "ip", "-n", &node, "link", "add", "up0", "type", "veth", "peer", "name", "upw",
            "netns", &world,
        ])
        .unwrap();
        for (ns, dev, addr) in [(&node, "up0", NODE4), (&world, "upw", GATEWAY4)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ])
            .unwrap();
            run(&["ip", "-n", ns, "link", "set", dev, "up"]).unwrap();
        }
        run(&[
            "ip", "-n", &node, "route", "add", "default", "via", GATEWAY4,
        ])
        .unwrap();
        // The Internet host, and the pod CIDR routed to the node (for world -> pod).
        run(&[
            "ip",
            "-n",
            &world,
            "addr",
            "add",
            &format!("{WORLD4}/32"),
            "dev",
            "lo",
        ])
        .unwrap();
        run(&[
            "ip",
            "-n",
            &world,
            "route",
            "add",
            "198.18.10.0/24",
            "via",
            NODE4,
            // The Internet host opens the connections to pods (else the kernel picks
            // the gateway's address on upw).
            "src",
            WORLD4,
        ])
        .unwrap();
        for (i, addr) in [A4, B4].into_iter().enumerate() {
            attach_pod(&mut guard, &node, &pods[i], &Self::host_if(pid, i), addr).unwrap();
        }
        Lab {
            pid,
            node,
            world,
            pods,
            dir,
            agent: None,
            _guard: guard,
        }
    }

    fn host_if(pid: u32, i: usize) -> String {
        format!("wn{}{pid}", ["a", "b"][i])
    }

    fn start(&mut self) {
        let pod = |i: usize, name: &str, ip: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: shop\n  name: {name}\n  \
                 labels: {{app: {name}}}\n  annotations:\n    weir.dev/interface: {}\n    \
                 weir.dev/mac: \"{}\"\nstatus:\n  podIPs: [{{ip: \"{ip}\"}}]\n",
                Self::host_if(self.pid, i),
                format_mac(&mac_of(&self.pods[i], "eth0").unwrap())
            )
        };
        let text = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n{}---\n{}---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  namespace: \
             shop\n  name: isolate-a\nspec:\n  podSelector: {{matchLabels: {{app: a}}}}\n  \
             policyTypes: [Ingress]\n",
            pod(0, "a", A4),
            pod(1, "b", B4),
        );
        std::fs::write(self.dir.join("datastore/cluster.yaml"), text).unwrap();
        let port = 20000 + (self.pid % 20000) as u16;
        let node = format!("node-{}", self.pid);
        self.agent = Some(start_lab_agent(&self.node, &self.dir, &node, port, ""));
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().unwrap()
    }
}

#[test]
fn pods_reach_the_node_and_the_world_and_the_node_reaches_pods() {
    let mut lab = Lab::new();
    lab.start();
    let agent_log = || lab.agent().log();

    // The node's own stack (kubelet's probe) reaches the isolated pod through weir0.
    let server = http_server(&lab.pods[0], &format!("{A4}:8080"));
    let got = http_get(
        &lab.node,
        &format!("{A4}:8080"),
        "/",
        Duration::from_secs(5),
    );
    assert!(
        got.as_deref().is_ok_and(|r| r.contains("200 OK")),
        "node -> isolated pod: {got:?}\n{}",
        agent_log()
    );
    let peer = server.join().unwrap().unwrap();
    assert_eq!(
        peer.ip().to_string(),
        NODE4,
        "the probe comes from the node"
    );

    // The world cannot open a connection to the isolated pod; the drop is counted.
    let server = http_server(&lab.pods[0], &format!("{A4}:8081"));
    let got = http_get(
        &lab.world,
        &format!("{A4}:8081"),
        "/",
        Duration::from_secs(1),
    );
    assert!(got.is_err(), "world -> isolated pod must fail: {got:?}");
    assert!(server.join().unwrap().is_err());
    assert!(
        (0..2)
            .map(|w| lab.agent().metric(&format!(
                "weir_drops_total{{worker=\"{w}\",reason=\"policy_denied_ingress\"}}"
            )))
            .sum::<u64>()
            > 0,
        "{}",
        agent_log()
    );

    // A pod reaches a service on the node's address, with its own address.
    let server = http_server(&lab.node, &format!("{NODE4}:8082"));
    let got = http_get(
        &lab.pods[0],
        &format!("{NODE4}:8082"),
        "/",
        Duration::from_secs(5),
    );
    assert!(got.is_ok_and(|r| r.contains("200 OK")), "{}", agent_log());
    assert_eq!(server.join().unwrap().unwrap().ip().to_string(), A4);

    // A pod reaches the world with TCP, translated to the node's address and a SNAT port.
    let server = http_server(&lab.world, &format!("{WORLD4}:8083"));
    let got = http_get(
        &lab.pods[0],
        &format!("{WORLD4}:8083"),
        "/",
        Duration::from_secs(8),
    );
    assert!(
        got.as_deref().is_ok_and(|r| r.contains("200 OK")),
        "pod -> world TCP: {got:?}\n{}",
        agent_log()
    );
    let peer = server.join().unwrap().unwrap();
    assert_eq!(peer.ip().to_string(), NODE4, "the far end sees the node");
    assert!(
        (61000..=65535).contains(&peer.port()),
        "port {} from the SNAT range",
        peer.port()
    );

    // UDP: a datagram out and its answer back.
    let echo = in_netns(&lab.world, || UdpSocket::bind((WORLD4, 8084)))
        .unwrap()
        .unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let echoer = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = echo.recv_from(&mut buf).map_err(|e| e.to_string())?;
        echo.send_to(&buf[..n], from).map_err(|e| e.to_string())?;
        Ok::<SocketAddr, String>(from)
    });
    let answer = in_netns(&lab.pods[0], || {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send_to(b"ping", (WORLD4, 8084))?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok::<Vec<u8>, std::io::Error>(buf[..n].to_vec())
    })
    .unwrap();
    assert_eq!(answer.unwrap(), b"ping", "{}", agent_log());
    assert_eq!(echoer.join().unwrap().unwrap().ip().to_string(), NODE4);

    // Ping: the echo identifier is translated and the reply finds the pod.
    let ping = output(&[
        "ip",
        "netns",
        "exec",
        &lab.pods[0],
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        WORLD4,
    ])
    .unwrap();
    assert!(ping.status.success(), "pod -> world ping\n{}", agent_log());

    // The world reaches the open pod by its own address; its replies keep it.
    let server = http_server(&lab.pods[1], &format!("{B4}:8085"));
    let got = http_get(
        &lab.world,
        &format!("{B4}:8085"),
        "/",
        Duration::from_secs(5),
    );
    assert!(got.is_ok_and(|r| r.contains("200 OK")), "{}", agent_log());
    assert_eq!(server.join().unwrap().unwrap().ip().to_string(), WORLD4);
}
