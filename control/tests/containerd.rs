//! weir under a real container runtime (root; CI runs it): Debian's containerd and runc
//! start busybox containers with `ctr run --rm --cni`, whose go-cni/libcni runs
//! `weir-cni` from `/etc/cni/net.d` as kubelet's runtime would, against a weir agent in a
//! "node" namespace with an uplink to a "world" namespace (the node's default gateway, and
//! an Internet host behind it).
//!
//! Proves: each container gets its address from weir's IPAM (the lease names the
//! container); a container reaches another one (ping, HTTP) through weir; the node's own
//! stack reaches a container's HTTP server through `weir0`; a container reaches a server on
//! the node's own address (seen from its own address) and the world (with its connection
//! translated to the node's address: SNAT); and once `ctr` is done, nothing is left: the
//! CNI DEL that `ctr run --rm --cni` sends when the task has exited released the lease,
//! the host interface and the attachment record, and containerd holds no task, container
//! or active snapshot.
//!
//! containerd 1.6's `ctr run --cni` (go-cni) sends ADD once the task is created, before it
//! starts (`CNI_NETNS` = `/proc/{pid}/ns/net`, `CNI_CONTAINERID` = `{namespace}-{id}`, no
//! `K8S_*` arguments, so weir names the pod `default/{container id}`), and, with `--rm` in
//! the foreground, DEL after the task exited, with an empty `CNI_NETNS` (the namespace is
//! gone by then). A failed DEL is only logged by `ctr`, which still exits 0: the leases and
//! host interfaces are what the test checks.
//!
//! containerd runs in the root namespace (runc needs the cgroup mounts `ip netns exec`
//! hides); `ctr` too: `weir-cni` only talks to the agent's socket, and the agent moves the
//! host end of the pod's veth into its own namespace. The image is built here from
//! `busybox-static` (nothing can be pulled). See `weir_testkit::containerd` for where
//! things live and how they are removed. The tests take turns: `ctr` reads the first
//! configuration in `/etc/cni/net.d` only.
//!
//! Names carry the process id; guards remove namespaces, containers and files and stop the
//! agent and containerd on failure. Addresses: 198.18.0.0/15 only.

mod common;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use common::{http_get, http_server_within, Agent};
use weir_testkit::containerd::{CniNetwork, Container, Containerd};
use weir_testkit::lab::{require_root, run, NetnsGuard};

const POOL: &str = "198.18.72.0/24";
const POOL_PREFIX: &str = "198.18.72.";
const NODE4: &str = "198.18.202.2";
const GATEWAY4: &str = "198.18.202.1";
const WORLD4: &str = "198.19.254.1";
const IMAGE: &str = "localhost/weir-busybox:test";

/// One lab at a time in this process (see the module doc).
static TURN: Mutex<()> = Mutex::new(());

/// Dropped in field order: containers' runtime first (its DELs need the agent and the CNI
/// files), then the CNI files, the agent, the namespaces and the directory.
struct Lab {
    containerd: Containerd,
    _cni: CniNetwork,
    agent: Agent,
    pid: u32,
    node: String,
    world: String,
    dir: PathBuf,
    _guard: NetnsGuard,
    _turn: MutexGuard<'static, ()>,
}

impl Lab {
    fn new() -> Lab {
        require_root("this scenario test (containerd, runc, network namespaces, AF_XDP)");
        let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        let mut guard = NetnsGuard::new();
        let dir = guard.temp_dir("weir-containerd-test").unwrap();
        std::fs::create_dir_all(dir.join("datastore")).unwrap();
        let (node, world) = (format!("wct-node-{pid}"), format!("wct-world-{pid}"));
        guard.add_netns(&node).unwrap();
        guard.add_netns(&world).unwrap();
        for ns in [&node, &world] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]).unwrap();
        }
        // The uplink: up0 in the node, upw in the world (the gateway); the Internet host
        // behind it; the pool routed to the node.
        guard.veth(&node, "up0", "upw", Some(&world)).unwrap();
        for (ns, dev, addr) in [(&node, "up0", NODE4), (&world, "upw", GATEWAY4)] {
            let addr = format!("{addr}/24");
            run(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]).unwrap();
            run(&["ip", "-n", ns, "link", "set", dev, "up"]).unwrap();
        }
        run(&[
            "ip", "-n", &node, "route", "add", "default", "via", GATEWAY4,
        ])
        .unwrap();
        let world_host = format!("{WORLD4}/32");
        run(&["ip", "-n", &world, "addr", "add", &world_host, "dev", "lo"]).unwrap();
        run(&["ip", "-n", &world, "route", "add", POOL, "via", NODE4]).unwrap();

        let node_name = format!("node-{pid}");
        std::fs::write(
            dir.join("datastore/cluster.yaml"),
            format!(
                "apiVersion: weir.dev/v1\nkind: IPPool\nmetadata:\n  name: pods\nspec:\n  \
                 cidr: {POOL}\n  blockSize: 26\n  natOutgoing: true\n---\napiVersion: v1\n\
                 kind: Node\nmetadata:\n  name: {node_name}\n"
            ),
        )
        .unwrap();
        let port = 30000 + (pid % 20000) as u16;
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "node: {node_name}\ncores: [0]\ndatastore: {}\nlisten: 127.0.0.1:{port}\n\
                 frames: 4096\nuplink: up0\npodCidrs: [{POOL}]\ncni:\n  socket: {}\n  \
                 ipamDir: {}\n",
                dir.join("datastore").display(),
                dir.join("cni.sock").display(),
                dir.join("ipam").display()
            ),
        )
        .unwrap();
        let agent = Agent::start(&node, &config, port, dir.join("agent.log"));

        let cni = CniNetwork::install(
            PathBuf::from(env!("CARGO_BIN_EXE_weir-cni")).as_path(),
            serde_json::json!({"socket": dir.join("cni.sock"), "timeoutSeconds": 20}),
        )
        .unwrap();
        let containerd = Containerd::start().unwrap();
        containerd.import_busybox(IMAGE).unwrap();
        Lab {
            containerd,
            _cni: cni,
            agent,
            pid,
            node,
            world,
            dir,
            _guard: guard,
            _turn: turn,
        }
    }

    /// Starts container `name` running `script` with CNI (`ctr run --rm --cni`).
    fn container(&self, name: &str, script: &str) -> Container {
        self.containerd
            .run(
                IMAGE,
                &format!("{name}-{}", self.pid),
                true,
                &["sh", "-c", script],
            )
            .unwrap()
    }

    /// The addresses IPAM leased to the container `name` (go-cni's container id).
    fn leases_of(&self, name: &str) -> Vec<String> {
        let id = self
            .containerd
            .cni_container_id(&format!("{name}-{}", self.pid));
        self.leases()
            .into_iter()
            .filter(|(_, holder)| *holder == id)
            .map(|(address, _)| address)
            .collect()
    }

    /// Every lease: (address, container id).
    fn leases(&self) -> Vec<(String, String)> {
        let path = self
            .dir
            .join("ipam")
            .join(format!("leases-node-{}.json", self.pid));
        let text = std::fs::read_to_string(path).unwrap_or_else(|_| "{}".into());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["leases"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(address, lease)| {
                        let holder = lease["containerId"].as_str().unwrap_or_default();
                        (address.clone(), holder.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pods' host interfaces in the node namespace (`w` + 14 hex digits).
    fn host_veths(&self) -> Vec<String> {
        run(&["ip", "-n", &self.node, "-o", "link", "show"])
            .unwrap()
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with('w') && n.len() == 15)
            .collect()
    }

    /// The address `container` printed (`ip -4 -o addr show dev eth0`).
    fn printed_address(lines: &[String]) -> Option<String> {
        lines.iter().find_map(|l| {
            let rest = l.split(" inet ").nth(1)?;
            Some(rest.split('/').next()?.to_owned())
        })
    }

    /// Asserts that once every container is gone, nothing of them is left: no lease, no
    /// host interface, no task, container or active snapshot.
    fn assert_nothing_left(&self) {
        assert_eq!(self.leases(), Vec::new(), "every lease released");
        assert_eq!(self.host_veths(), Vec::<String>::new(), "no host interface");
        let ctr = |args: &[&str]| self.containerd.ctr(args).unwrap();
        assert_eq!(ctr(&["task", "ls", "-q"]).trim(), "", "no task");
        assert_eq!(ctr(&["container", "ls", "-q"]).trim(), "", "no container");
        let snapshots = ctr(&["snapshot", "--snapshotter", "native", "ls"]);
        assert!(
            !snapshots.lines().skip(1).any(|l| l.contains("Active")),
            "only the image's committed layer: {snapshots}"
        );
        assert_eq!(
            self.records(),
            Vec::<PathBuf>::new(),
            "no attachment record"
        );
    }

    /// The attachment records the agent keeps for restarts (one file per attachment).
    fn records(&self) -> Vec<PathBuf> {
        common::attachment_records(&self.dir.join("ipam"), &format!("node-{}", self.pid))
    }
}

/// A shell line that prints the container's IPv4 address on eth0. (The containers bound
/// their `wget` with `timeout`: busybox 1.35's `wget -T` crashes, with a segmentation
/// fault, before it connects.)
const SHOW_ADDRESS: &str = "ip -4 -o addr show dev eth0";

#[test]
fn containers_started_by_containerd_get_weir_addresses_reach_each_other_and_the_node() {
    let lab = Lab::new();
    let within = Duration::from_secs(30);

    // A server container: its address, an HTTP server, then it waits for its stdin to
    // close (pid 1 exiting ends the container, httpd with it).
    let mut server = lab.container(
        "server",
        &format!(
            "{SHOW_ADDRESS}; mkdir -p /www && echo weir-containerd > /www/index.html && \
             httpd -p 8080 -h /www && echo server-ready; read line; echo server-done"
        ),
    );
    let lines = server
        .wait_for("server-ready", within)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", lab.agent.log(), lab.containerd.log()));
    let server_ip = Lab::printed_address(&lines).expect("the server printed its address");
    assert!(server_ip.starts_with(POOL_PREFIX), "{lines:?}");
    assert_eq!(
        lab.leases_of("server"),
        vec![server_ip.clone()],
        "IPAM leased the server's address to its container: {:?}",
        lab.leases()
    );

    // The node's own stack (a kubelet probe) reaches the container's HTTP server through
    // weir0.
    let got = http_get(
        &lab.node,
        &format!("{server_ip}:8080"),
        "/index.html",
        Duration::from_secs(5),
    );
    assert!(
        got.as_deref()
            .is_ok_and(|r| r.contains("200 OK") && r.contains("weir-containerd")),
        "node -> container HTTP: {got:?}\n{}",
        lab.agent.log()
    );

    // A client container reaches the server: ping and HTTP through weir.
    let mut client = lab.container(
        "client",
        &format!(
            "{SHOW_ADDRESS}; ok=no; for i in 1 2 3 4 5; do \
             ping -c 1 -W 2 {server_ip} && timeout 5 wget -q -O - http://{server_ip}:8080/index.html \
             && ok=yes && break; sleep 1; done; echo client-reached=$ok; read line; echo client-done"
        ),
    );
    let lines = client
        .wait_for("client-reached=", within)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.agent.log()));
    let client_ip = Lab::printed_address(&lines).expect("the client printed its address");
    assert!(client_ip.starts_with(POOL_PREFIX), "{lines:?}");
    assert_ne!(client_ip, server_ip);
    assert_eq!(lab.leases_of("client"), vec![client_ip.clone()]);
    assert!(
        lines.iter().any(|l| l == "client-reached=yes"),
        "container -> container ping and HTTP: {lines:?}\n{}",
        lab.agent.log()
    );
    assert!(
        lines.iter().any(|l| l.contains("weir-containerd")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("1 packets received")),
        "{lines:?}"
    );
    assert_eq!(
        lab.host_veths().len(),
        2,
        "one host interface per container"
    );
    assert_eq!(
        lab.records().len(),
        2,
        "one attachment record per container"
    );

    // The client exits: `ctr run --rm --cni` sends DEL, which releases its address.
    let (status, lines) = client.finish(within).unwrap();
    assert!(status.success(), "ctr run (client): {status}: {lines:?}");
    assert_eq!(
        lab.leases_of("client"),
        Vec::<String>::new(),
        "DEL released the client's lease: {lines:?}"
    );
    assert_eq!(lab.leases_of("server"), vec![server_ip.clone()]);
    assert_eq!(lab.host_veths().len(), 1);

    // And the server: nothing is left behind.
    let (status, lines) = server.finish(within).unwrap();
    assert!(status.success(), "ctr run (server): {status}: {lines:?}");
    assert!(lines.iter().any(|l| l == "server-done"), "{lines:?}");
    lab.assert_nothing_left();
    let refused = http_get(
        &lab.node,
        &format!("{server_ip}:8080"),
        "/",
        Duration::from_millis(500),
    );
    assert!(
        refused.is_err(),
        "the server's address is gone: {refused:?}"
    );
}

#[test]
fn container_reaches_the_world_through_snat_and_the_node_on_its_address() {
    let lab = Lab::new();
    let within = Duration::from_secs(30);
    // Both wait as long as the container may take to start and try them in turn.
    let server = http_server_within(&lab.world, &format!("{WORLD4}:8083"), within);
    // A service on the node's own address (the API server, a node-local DNS): reached
    // through the host link, with the pod's own address (no translation towards the node).
    let on_node = http_server_within(&lab.node, &format!("{NODE4}:8084"), within);
    let mut client = lab.container(
        "world-client",
        &format!(
            "{SHOW_ADDRESS}; ok=no; for i in 1 2 3; do \
             timeout 4 wget -q -O - http://{WORLD4}:8083/ && ok=yes && break; sleep 1; done; \
             echo client-reached=$ok; nok=no; for i in 1 2 3; do \
             timeout 4 wget -q -O - http://{NODE4}:8084/ && nok=yes && break; sleep 1; done; \
             echo node-reached=$nok"
        ),
    );
    let lines = client
        .wait_for("node-reached=", within)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.agent.log()));
    let client_ip = Lab::printed_address(&lines).expect("the client printed its address");
    assert!(client_ip.starts_with(POOL_PREFIX), "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "client-reached=yes"),
        "container -> world HTTP: {lines:?}\n{}",
        lab.agent.log()
    );
    assert!(
        lines.iter().any(|l| l == "node-reached=yes"),
        "container -> node HTTP: {lines:?}\n{}",
        lab.agent.log()
    );
    let from = on_node.join().unwrap().unwrap();
    assert_eq!(
        from.ip().to_string(),
        client_ip,
        "the node sees the container's own address"
    );
    let peer = server.join().unwrap().unwrap();
    assert_eq!(peer.ip().to_string(), NODE4, "the far end sees the node");
    assert!(
        (61000..=65535).contains(&peer.port()),
        "port {} from the SNAT range",
        peer.port()
    );
    let (status, lines) = client.finish(within).unwrap();
    assert!(status.success(), "ctr run: {status}: {lines:?}");
    lab.assert_nothing_left();
}
