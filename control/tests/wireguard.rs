//! WireGuard between two weir nodes (root; CI runs it): two "node" namespaces, each running
//! `weir agent` with one pod, joined through a bridge in a "wire" namespace (the underlay).
//! The capture runs on that bridge: AF_XDP sends and XDP receives bypass the packet taps
//! of the nodes' own interfaces, so only a third party sees what really crosses. Pod-to-pod traffic across the
//! nodes (ping both ways, TCP and UDP with iperf3) is sealed by one agent and opened by
//! the other, and `tcpdump` on the underlay sees nothing but WireGuard (and ARP). Then
//! node b's key is taken out of node a's datastore: in `required` mode node a drops its
//! traffic to b (counted) and still nothing leaves in clear.
//!
//! Routes from IPAM blocks: the same two nodes share one pool (no podCIDRs at all); each
//! takes its pod's address from its own block through IPAM's file store, and the agents
//! route each other's block over WireGuard. A block released (its file removed) takes the
//! route away and a block claimed brings it back, with the agents running.
//!
//! Names carry the process id; guards remove namespaces and stop agents and captures even
//! when an assertion fails. Addresses are from 198.18.0.0/15 only.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{attach_pod, Agent};
use weir_control::ipam::Ipam;
use weir_control::policy::model::IpPool;
use weir_control::policy::selector::{Labels, Selector};
use weir_crypto::NodeKey;
use weir_testkit::lab::{format_mac, mac_of, output, require_root, run, ChildGuard, NetnsGuard};

const UNDERLAY: [&str; 2] = ["198.18.250.1", "198.18.250.2"];
const POD: [&str; 2] = ["198.18.10.5", "198.18.11.5"];
const CIDR: [&str; 2] = ["198.18.10.0/24", "198.18.11.0/24"];
const NODE: [&str; 2] = ["node-a", "node-b"];
/// What must not cross the underlay: anything carrying a pod address, and anything that is
/// not WireGuard (ARP and the kernels' IGMP membership reports aside).
const CLEAR: &str = "net 198.18.10.0/23 or not (udp port 51820 or arp or igmp)";

/// The pool the shared-pool lab's nodes take blocks of, and what must not cross its
/// underlay in clear.
const SHARED_POOL: &str = "198.18.64.0/18";
const SHARED_CLEAR: &str = "net 198.18.64.0/18 or not (udp port 51820 or arp or igmp)";

struct Lab {
    pid: u32,
    /// The pods' addresses.
    pod_ips: [String; 2],
    /// IPAM's state directory shared by the nodes, when the pods' addresses come from one
    /// pool's blocks (the nodes then have no podCIDRs).
    ipam: Option<PathBuf>,
    /// Tells apart the labs of tests running at once in one process.
    tag: char,
    nodes: [String; 2],
    pods: [String; 2],
    wire: String,
    dir: PathBuf,
    keys: [NodeKey; 2],
    /// Removes the namespaces and the directory.
    guard: NetnsGuard,
}

impl Lab {
    fn uplink(&self, i: usize) -> String {
        format!("wu{}{}{}", self.tag, ["a", "b"][i], self.pid)
    }

    fn host_if(&self, i: usize) -> String {
        format!("wp{}{}{}", self.tag, ["a", "b"][i], self.pid)
    }

    fn new(tag: char) -> Lab {
        Lab::build(tag, false)
    }

    /// A lab whose nodes share one pool: each pod's address comes from its node's block,
    /// claimed through IPAM's file store before the agents start.
    fn shared_pool(tag: char) -> Lab {
        Lab::build(tag, true)
    }

    fn build(tag: char, shared_pool: bool) -> Lab {
        require_root("the WireGuard scenario");
        let pid = std::process::id();
        let mut guard = NetnsGuard::new();
        let dir = guard.temp_dir(&format!("weir-wg-test-{tag}")).unwrap();
        let (pod_ips, ipam) = if shared_pool {
            let ipam = dir.join("ipam");
            let pool = IpPool {
                name: "shared".into(),
                cidr: SHARED_POOL.parse().unwrap(),
                block_size: 26,
                node_selector: Selector::All,
                disabled: false,
                nat_outgoing: false,
            };
            let ips = NODE.map(|node| {
                let mut state = Ipam::open(&ipam, node).unwrap();
                let ips = state
                    .allocate(&[&pool], &Labels::new(), "c1", "eth0", Some("demo/pod"))
                    .unwrap();
                ips[0].to_string()
            });
            (ips, Some(ipam))
        } else {
            (POD.map(str::to_owned), None)
        };
        let mut lab = Lab {
            pid,
            pod_ips,
            ipam,
            tag,
            nodes: [
                format!("weir-wg{tag}n-a-{pid}"),
                format!("weir-wg{tag}n-b-{pid}"),
            ],
            pods: [
                format!("weir-wg{tag}p-a-{pid}"),
                format!("weir-wg{tag}p-b-{pid}"),
            ],
            wire: format!("weir-wg{tag}w-{pid}"),
            dir,
            keys: [
                NodeKey::from_bytes([0x31; 32]),
                NodeKey::from_bytes([0x32; 32]),
            ],
            guard,
        };
        for ns in &lab.nodes {
            lab.guard.add_netns(ns).unwrap();
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]).unwrap();
        }
        let wire = lab.wire.clone();
        lab.guard.add_netns(&wire).unwrap();
        for key in ["all", "default"] {
            let setting = format!("net.ipv6.conf.{key}.disable_ipv6=1");
            run(&["ip", "netns", "exec", &wire, "sysctl", "-q", "-w", &setting]).unwrap();
        }
        run(&["ip", "-n", &wire, "link", "add", "br0", "type", "bridge"]).unwrap();
        run(&["ip", "-n", &wire, "link", "set", "br0", "up"]).unwrap();
        for i in 0..2 {
            let (ns, up) = (&lab.nodes[i], lab.uplink(i));
            let port = format!("w{}", ["a", "b"][i]);
            let veth = [
                "link", "add", &port, "type", "veth", "peer", "name", &up, "netns", ns,
            ];
            run(&[&["ip", "-n", &wire][..], &veth[..]].concat()).unwrap();
            run(&["ip", "-n", &wire, "link", "set", &port, "master", "br0"]).unwrap();
            run(&["ip", "-n", &wire, "link", "set", &port, "up"]).unwrap();
            // No IPv6 chatter (router solicitations, MLD) on the underlay: every frame on
            // it must be WireGuard or ARP.
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv6.conf.{up}.disable_ipv6=1"),
            ])
            .unwrap();
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", UNDERLAY[i]),
                "dev",
                &up,
            ])
            .unwrap();
            run(&["ip", "-n", ns, "link", "set", &up, "up"]).unwrap();
            let host = lab.host_if(i);
            let pod_ip = lab.pod_ips[i].clone();
            attach_pod(&mut lab.guard, ns, &lab.pods[i], &host, &pod_ip).unwrap();
        }
        lab.write_keys();
        lab
    }

    /// Writes both nodes' key files (mode 0600).
    fn write_keys(&self) {
        for (name, key) in NODE.iter().zip(&self.keys) {
            let key_file = self.dir.join(format!("{name}.key"));
            let _ = std::fs::remove_file(&key_file);
            std::fs::write(&key_file, format!("{}\n", key.secret_base64())).unwrap();
            run(&["chmod", "600", key_file.to_str().unwrap()]).unwrap();
        }
    }

    /// Node `i`'s datastore: its pod, and both nodes (b's key left out when `hide_b_key`);
    /// with a shared pool, the pool and no podCIDRs, and the agent reads IPAM's blocks.
    fn write_config(&self, i: usize, hide_b_key: bool) -> PathBuf {
        let ds = self.dir.join(format!("datastore-{i}"));
        std::fs::create_dir_all(&ds).unwrap();
        let node = |j: usize| {
            let key = if j == 1 && hide_b_key {
                String::new()
            } else {
                format!(
                    "    weir.dev/wireguard-public-key: \"{}\"\n",
                    self.keys[j].public_base64()
                )
            };
            let spec = match &self.ipam {
                None => format!("spec:\n  podCIDRs: [\"{}\"]\n", CIDR[j]),
                Some(_) => String::new(),
            };
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n  annotations:\n{key}    \
                 weir.dev/underlay-mac: \"{}\"\n{spec}status:\n  \
                 addresses: [{{type: InternalIP, address: \"{}\"}}]\n",
                NODE[j],
                format_mac(&mac_of(&self.nodes[j], &self.uplink(j)).unwrap()),
                UNDERLAY[j]
            )
        };
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: demo\n  name: pod-{i}\n  \
             annotations:\n    weir.dev/interface: {}\n    weir.dev/mac: \"{}\"\nstatus:\n  \
             podIPs: [{{ip: \"{}\"}}]\n",
            self.host_if(i),
            format_mac(&mac_of(&self.pods[i], "eth0").unwrap()),
            self.pod_ips[i]
        );
        let mut text = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n---\n{pod}---\n{}---\n{}",
            node(0),
            node(1)
        );
        let (pod_cidrs, cni) = match &self.ipam {
            None => ("198.18.10.0/23", String::new()),
            Some(ipam) => {
                text.push_str(&format!(
                    "---\napiVersion: weir.dev/v1\nkind: IPPool\nmetadata:\n  name: shared\n\
                     spec:\n  cidr: {SHARED_POOL}\n  blockSize: 26\n"
                ));
                let cni = format!(
                    "cni:\n  socket: {}\n  ipamDir: {}\n",
                    self.dir.join(format!("cni-{i}.sock")).display(),
                    ipam.display()
                );
                (SHARED_POOL, cni)
            }
        };
        std::fs::write(ds.join("cluster.yaml"), text).unwrap();
        let config = self.dir.join(format!("agent-{i}.yaml"));
        std::fs::write(
            &config,
            format!(
                "node: {}\ncores: [1]\ndatastore: {}\nuplink: {}\npodCidrs: [{pod_cidrs}]\n\
                 wireguard:\n  keyFile: {}\n  address: {}\n{cni}",
                NODE[i],
                ds.display(),
                self.uplink(i),
                self.dir.join(format!("{}.key", NODE[i])).display(),
                UNDERLAY[i]
            ),
        )
        .unwrap();
        config
    }

    fn agent(&self, i: usize, hide_b_key: bool) -> Agent {
        let config = self.write_config(i, hide_b_key);
        Agent::start(
            &self.nodes[i],
            &config,
            9180,
            self.dir.join(format!("agent-{i}.log")),
        )
    }

    fn ping(&self, from: usize, to: &str, count: &str) -> bool {
        output(&[
            "ip",
            "netns",
            "exec",
            &self.pods[from],
            "ping",
            "-c",
            count,
            "-i",
            "0.2",
            "-W",
            "2",
            to,
        ])
        .unwrap()
        .status
        .success()
    }

    /// Starts tcpdump on the underlay's bridge, writing `name`.
    fn capture(&self, name: &str) -> (ChildGuard, PathBuf) {
        let file = self.dir.join(name);
        let child = Command::new("ip")
            .args([
                "netns", "exec", &self.wire, "tcpdump", "-i", "br0", "-n", "-U", "-w",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump (Debian package tcpdump)");
        std::thread::sleep(Duration::from_millis(1000));
        (ChildGuard::new(child), file)
    }
}

/// Stops a capture and lists the packets in it that match `filter`.
fn matching(capture: (ChildGuard, PathBuf), filter: &str) -> Vec<String> {
    let (mut child, file) = capture;
    let _ = output(&["kill", "-INT", &child.id().to_string()]).unwrap();
    let _ = child.child().wait();
    let out = output(&["tcpdump", "-r", file.to_str().unwrap(), "-n", filter]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// iperf3 from `client_ns` to a one-shot server on `addr` in `server_ns`, one second, TCP
/// or UDP at 10 Mbit/s, the client sending or (`reverse`) receiving; the client's
/// end-of-test summary.
fn iperf3(
    client_ns: &str,
    server_ns: &str,
    addr: &str,
    udp: bool,
    reverse: bool,
) -> serde_json::Value {
    let server = Command::new("ip")
        .args(["netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = ChildGuard::new(server);
    std::thread::sleep(Duration::from_millis(300));
    let mut args = vec![
        "ip",
        "netns",
        "exec",
        client_ns,
        "iperf3",
        "-c",
        addr,
        "-t",
        "1",
        "-J",
        "--connect-timeout",
        "3000",
    ];
    if udp {
        args.extend(["-u", "-b", "10M"]);
    }
    if reverse {
        args.push("-R");
    }
    let out = output(&args).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 to {addr} (udp {udp}, reverse {reverse}): {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["end"][if udp { "sum" } else { "sum_received" }].clone()
}

/// TCP and UDP, both directions, between `client_ns` and `addr` in `server_ns`.
fn check_tcp_udp(client_ns: &str, server_ns: &str, addr: &str) {
    for reverse in [false, true] {
        let tcp = iperf3(client_ns, server_ns, addr, false, reverse);
        let bytes = tcp["bytes"].as_u64().unwrap_or(0);
        assert!(bytes > 100_000, "TCP with {addr}, reverse {reverse}: {tcp}");
        let udp = iperf3(client_ns, server_ns, addr, true, reverse);
        let packets = udp["packets"].as_u64().unwrap_or(0);
        let lost = udp["lost_percent"].as_f64().unwrap_or(100.0);
        assert!(packets > 100, "UDP with {addr}, reverse {reverse}: {udp}");
        assert!(lost < 5.0, "UDP with {addr}, reverse {reverse}: {udp}");
    }
}

#[test]
fn pods_on_two_nodes_talk_over_wireguard_and_nothing_leaves_in_clear() {
    let mut lab = Lab::new('1');
    let a = lab.agent(0, false);
    let b = lab.agent(1, false);
    let cap = lab.capture("underlay.pcap");

    assert!(
        lab.ping(0, POD[1], "3"),
        "a -> b across nodes: {}\n{}",
        a.log(),
        b.log()
    );
    assert!(
        lab.ping(1, POD[0], "3"),
        "b -> a across nodes: {}\n{}",
        a.log(),
        b.log()
    );
    check_tcp_udp(&lab.pods[0], &lab.pods[1], POD[1]);

    for (name, agent) in [("a", &a), ("b", &b)] {
        let sealed = agent.metric("weir_wireguard_sealed_total{worker=\"0\"}");
        let opened = agent.metric("weir_wireguard_opened_total{worker=\"0\"}");
        assert!(
            sealed > 100 && opened > 100,
            "node {name}: sealed {sealed}, opened {opened}"
        );
    }
    let handshakes = a.metric("weir_wireguard_handshakes_initiated_total{worker=\"0\"}")
        + b.metric("weir_wireguard_handshakes_initiated_total{worker=\"0\"}");
    assert!(handshakes >= 1, "a handshake took place");

    // The underlay carried WireGuard, and nothing else but ARP.
    let file = cap.1.clone();
    let clear = matching(cap, CLEAR);
    assert!(
        clear.is_empty(),
        "frames on the underlay that are not WireGuard: {clear:#?}"
    );
    let wg = output(&[
        "tcpdump",
        "-r",
        file.to_str().unwrap(),
        "-n",
        "udp port 51820",
    ])
    .unwrap();
    let n = String::from_utf8_lossy(&wg.stdout).lines().count();
    assert!(n > 200, "{n} WireGuard packets seen on the underlay");

    // Required mode, node b's key gone from node a's datastore: a drops, never clear.
    drop(a);
    let a = lab.agent(0, true);
    let cap = lab.capture("underlay-nokey.pcap");
    assert!(
        !lab.ping(0, POD[1], "2"),
        "no peer for node b: traffic must not pass"
    );
    assert!(
        a.metric("weir_wireguard_no_peer_total{worker=\"0\"}") >= 2,
        "dropped and counted: {}",
        a.log()
    );
    let clear = matching(cap, CLEAR);
    assert!(
        clear.is_empty(),
        "nothing in clear on the underlay: {clear:#?}"
    );

    // Live edits of node a's datastore, the agent running all along:
    // b's key comes back, and b becomes reachable without a restart.
    lab.write_config(0, false);
    wait_for_log(&a, "datastore reloaded", 1);
    assert!(lab.ping(0, POD[1], "3"), "peer added live: {}", a.log());
    // b changes its key (b restarts; a only sees its datastore change).
    drop(b);
    lab.keys[1] = NodeKey::from_bytes([0x33; 32]);
    lab.write_keys();
    let b = lab.agent(1, false);
    lab.write_config(0, false);
    wait_for_log(&a, "datastore reloaded", 2);
    assert!(
        lab.ping(0, POD[1], "3"),
        "re-keyed live: {}\n{}",
        a.log(),
        b.log()
    );
    // A malformed new object is refused with its reason; the rest of the edit applies.
    let bad = lab.dir.join("datastore-0/zz-bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Node\nmetadata: {name: bad}\nspec: {podCIDRs: [\"198.18.300.0/24\"]}\n",
    )
    .unwrap();
    wait_for_log(&a, "; not applied", 1);
    assert!(
        a.log().contains("spec.podCIDRs[0]"),
        "the reason names the field: {}",
        a.log()
    );
    assert!(lab.ping(0, POD[1], "2"), "still forwarding: {}", a.log());
    // A malformed edit of node b itself: b's last good version stays in force, and so
    // does the route to its pods.
    let file = lab.dir.join("datastore-0/cluster.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let broken = text.replace(&format!("\"{}\"", CIDR[1]), "\"198.18.11.0/33\"");
    assert_ne!(text, broken);
    std::fs::write(&file, broken).unwrap();
    wait_for_log(&a, "its last good version stays in force", 1);
    assert!(
        lab.ping(0, POD[1], "2"),
        "node b's last good version keeps serving: {}",
        a.log()
    );
    lab.write_config(0, false);
    std::fs::remove_file(&bad).unwrap();
    // Each applied change was counted and timed; the refusals too.
    wait_for_log(&a, "datastore reloaded", 5);
    let applied = a.metric("weir_datastore_changes_applied_total");
    let timed = a.metric("weir_datastore_apply_seconds_count");
    let refused = a.metric("weir_datastore_objects_refused_total");
    assert!(
        applied >= 5 && timed == applied,
        "applied {applied}, timed {timed}"
    );
    assert!(refused >= 2, "objects refused: {refused}");
    drop(a);
    drop(b);
}

#[test]
fn two_nodes_sharing_one_pool_route_each_others_blocks_over_wireguard_both_ways() {
    let lab = Lab::shared_pool('3');
    let [ip_a, ip_b] = lab.pod_ips.clone();
    // One pool, two nodes, a block each: 198.18.64.0/26 on a, 198.18.64.64/26 on b.
    assert_eq!(
        (ip_a.as_str(), ip_b.as_str()),
        ("198.18.64.1", "198.18.64.64")
    );
    let a = lab.agent(0, false);
    let b = lab.agent(1, false);
    let cap = lab.capture("shared-pool.pcap");

    assert!(
        lab.ping(0, &ip_b, "3"),
        "a -> b's block: {}\n{}",
        a.log(),
        b.log()
    );
    assert!(
        lab.ping(1, &ip_a, "3"),
        "b -> a's block: {}\n{}",
        a.log(),
        b.log()
    );
    check_tcp_udp(&lab.pods[0], &lab.pods[1], &ip_b);
    for (name, agent) in [("a", &a), ("b", &b)] {
        let sealed = agent.metric("weir_wireguard_sealed_total{worker=\"0\"}");
        let opened = agent.metric("weir_wireguard_opened_total{worker=\"0\"}");
        assert!(
            sealed > 100 && opened > 100,
            "node {name}: sealed {sealed}, opened {opened}"
        );
    }
    let clear = matching(cap, SHARED_CLEAR);
    assert!(
        clear.is_empty(),
        "frames on the underlay that are not WireGuard: {clear:#?}"
    );

    // b's block released (its file gone): a no longer routes it, without a restart.
    let ipam = lab.ipam.clone().unwrap();
    let block_file = ipam.join("blocks").join("198.18.64.64_26");
    let held = std::fs::read_to_string(&block_file).unwrap();
    assert!(held.starts_with("node-b shared"), "{held}");
    let reloads = a.log().matches("datastore reloaded").count();
    std::fs::remove_file(&block_file).unwrap();
    wait_for_log(&a, "datastore reloaded", reloads + 1);
    let no_route = "weir_drops_total{worker=\"0\",reason=\"no_route\"}";
    let before = a.metric(no_route);
    assert!(
        !lab.ping(0, &ip_b, "2"),
        "b's block released: a must not route it: {}",
        a.log()
    );
    assert!(
        a.metric(no_route) > before,
        "dropped as no_route: {}",
        a.log()
    );
    // Claimed again (as IPAM writes a claim): the route and b's allowed IPs come back.
    let reloads = a.log().matches("datastore reloaded").count();
    std::fs::write(&block_file, &held).unwrap();
    wait_for_log(&a, "datastore reloaded", reloads + 1);
    assert!(
        lab.ping(0, &ip_b, "3"),
        "b's block claimed again: {}\n{}",
        a.log(),
        b.log()
    );
    assert!(lab.ping(1, &ip_a, "2"), "and back: {}", b.log());
    drop(a);
    drop(b);
}

/// Waits (at most 10 s) until the agent's log holds `line` at least `times` times.
fn wait_for_log(agent: &Agent, line: &str, times: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
        if log.matches(line).count() >= times {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {line:?} ({times}) in 10 s: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The wireguard-go side of the interop test: its TUN device in node b's namespace.
struct WireGuardGo {
    ns: String,
    tun: String,
    key_file: PathBuf,
    child: Option<ChildGuard>,
}

impl WireGuardGo {
    /// Starts wireguard-go in `ns` as node b: its key in `key_file`, listening on node b's
    /// underlay address, its TUN holding WG_GO_ADDR, node a (`peer_key`, pods
    /// 198.18.10.0/24) as its peer.
    fn start(ns: &str, tun: &str, key_file: PathBuf, peer_key: &str) -> WireGuardGo {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "wireguard-go", tun])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wireguard-go (Debian package wireguard-go)");
        let wg = WireGuardGo {
            ns: ns.to_owned(),
            tun: tun.to_owned(),
            key_file,
            child: Some(ChildGuard::new(child)),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !output(&["ip", "-n", ns, "link", "show", tun])
            .unwrap()
            .status
            .success()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "wireguard-go made no interface"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let endpoint = format!("{}:51820", UNDERLAY[0]);
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "wg",
            "set",
            tun,
            "private-key",
            wg.key_file.to_str().unwrap(),
            "listen-port",
            "51820",
            "peer",
            peer_key,
            "endpoint",
            &endpoint,
            "allowed-ips",
            CIDR[0],
        ])
        .unwrap();
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{WG_GO_ADDR}/32"),
            "dev",
            tun,
        ])
        .unwrap();
        run(&["ip", "-n", ns, "link", "set", tun, "up"]).unwrap();
        run(&["ip", "-n", ns, "route", "replace", CIDR[0], "dev", tun]).unwrap();
        wg
    }

    fn stop(&mut self) {
        self.child.take();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while output(&["ip", "-n", &self.ns, "link", "show", &self.tun])
            .unwrap()
            .status
            .success()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The address behind wireguard-go (in node b's pod CIDR).
const WG_GO_ADDR: &str = "198.18.11.1";

#[test]
fn a_weir_node_and_wireguard_go_carry_pod_traffic_both_ways_and_recover_from_a_restart() {
    let lab = Lab::new('2');
    let a = lab.agent(0, false);
    let cap = lab.capture("interop.pcap");
    let tun = format!("wgg{}{}", lab.tag, lab.pid);
    let key_file = lab.dir.join("node-b.key");
    let node_a_key = lab.keys[0].public_base64();
    let mut wg = WireGuardGo::start(&lab.nodes[1], &tun, key_file.clone(), &node_a_key);

    // weir initiates: a pod on node a pings the address behind wireguard-go.
    assert!(
        lab.ping(0, WG_GO_ADDR, "3"),
        "pod a -> wireguard-go: {}",
        a.log()
    );
    // wireguard-go's side pings the pod.
    let from_wg = output(&[
        "ip",
        "netns",
        "exec",
        &lab.nodes[1],
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        POD[0],
    ])
    .unwrap();
    assert!(
        from_wg.status.success(),
        "wireguard-go -> pod a: {}",
        a.log()
    );
    check_tcp_udp(&lab.pods[0], &lab.nodes[1], WG_GO_ADDR);
    let shown = run(&[
        "ip",
        "netns",
        "exec",
        &lab.nodes[1],
        "wg",
        "show",
        &tun,
        "latest-handshakes",
    ])
    .unwrap();
    assert!(shown.contains(&node_a_key), "wg knows node a: {shown}");

    // wireguard-go restarts with the same key and no session; it initiates again and
    // weir answers.
    wg.stop();
    let mut wg = WireGuardGo::start(&lab.nodes[1], &tun, key_file, &node_a_key);
    let again = output(&[
        "ip",
        "netns",
        "exec",
        &lab.nodes[1],
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "3",
        POD[0],
    ])
    .unwrap();
    assert!(
        again.status.success(),
        "after wireguard-go restarted: {}",
        a.log()
    );
    assert!(
        a.metric("weir_wireguard_handshakes_answered_total{worker=\"0\"}") >= 1,
        "weir answered the restarted peer's handshake: {}",
        a.log()
    );
    let clear = matching(cap, CLEAR);
    assert!(
        clear.is_empty(),
        "frames on the underlay that are not WireGuard: {clear:#?}"
    );
    wg.stop();
    drop(a);
}
