//! Services on a real node (root; CI runs it): the agent in a "node" namespace with an
//! uplink to a "world" namespace, three pods (a is the client; b and c are the `backend`
//! endpoints), Services and an EndpointSlice in the file datastore, and kube-proxy nowhere.
//!
//! Proves: a cluster IP answers TCP and UDP from a pod through an endpoint chosen among the
//! ready ones (the named target port resolved per pod); a node port from the world is
//! translated to the node (`externalTrafficPolicy: Cluster`) or keeps the client's address
//! (`Local`), and a `Local` service without an endpoint on this node refuses; ClientIP
//! affinity pins a client; a pod reaches itself through its service; a service without
//! endpoints refuses at once (TCP reset, ICMP port unreachable), counted; network policy
//! applies to the endpoint's address after translation (admits one client, denies
//! another); removing an endpoint does not cut a stream to the one that stays. The agent
//! runs two workers.
//!
//! Names carry the process id; guards remove namespaces and stop the agent on failure.
//! Addresses: 198.18.0.0/15 only.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{attach_pod, http_get, start_lab_agent, Agent};
use weir_testkit::lab::{format_mac, in_netns, mac_of, require_root, run, NetnsGuard};

const A4: &str = "198.18.10.2";
const B4: &str = "198.18.10.3";
const C4: &str = "198.18.10.4";
const NODE4: &str = "198.18.200.2";
const GATEWAY4: &str = "198.18.200.1";
const WORLD4: &str = "198.19.255.1";

const API: &str = "198.19.0.10";
const EMPTY: &str = "198.19.0.11";
const SELF: &str = "198.19.0.12";
const STICKY: &str = "198.19.0.13";
const GUARDED: &str = "198.19.0.14";

const PODS: [(&str, &str); 3] = [("a", A4), ("b", B4), ("c", C4)];

/// The tests run one at a time: each agent busy-polls both cores, and two of them at once
/// starve the kernel's veth work that the probes need.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Lab {
    pid: u32,
    tag: char,
    node: String,
    world: String,
    pods: [String; 3],
    dir: PathBuf,
    agent: Option<Agent>,
    _guard: NetnsGuard,
}

impl Lab {
    /// A lab whose names carry the process id and `tag` (one per test: the tests of this
    /// file run in parallel threads of one process).
    fn new(tag: char) -> Lab {
        require_root("this scenario test (network namespaces, AF_XDP)");
        let pid = std::process::id();
        let mut guard = NetnsGuard::new();
        let dir = guard.temp_dir("weir-services-test").unwrap();
        std::fs::create_dir_all(dir.join("datastore")).unwrap();
        let (node, world) = (
            format!("ws{tag}-node-{pid}"),
            format!("ws{tag}-world-{pid}"),
        );
        let pods = PODS.map(|(name, _)| format!("ws{tag}-{name}-{pid}"));
        guard.add_netns(&node).unwrap();
        guard.add_netns(&world).unwrap();
        for ns in [&node, &world] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]).unwrap();
        }
        run(&[
            "ip", "-n", &node, "link", "add", "up0", "type", "veth", "peer", "name", "upw",
            "netns", &world,
        ])
        .unwrap();
        for (ns, dev, addr) in [(&node, "up0", NODE4), (&world, "upw", GATEWAY4)] {
            let cidr = format!("{addr}/24");
            run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", dev]).unwrap();
            run(&["ip", "-n", ns, "link", "set", dev, "up"]).unwrap();
        }
        run(&[
            "ip", "-n", &node, "route", "add", "default", "via", GATEWAY4,
        ])
        .unwrap();
        let host = format!("{WORLD4}/32");
        run(&["ip", "-n", &world, "addr", "add", &host, "dev", "lo"]).unwrap();
        // The world's client connects from its own address (not the gateway's).
        let node_host = format!("{NODE4}/32");
        run(&[
            "ip", "-n", &world, "route", "add", &node_host, "dev", "upw", "src", WORLD4,
        ])
        .unwrap();
        for (i, (_, addr)) in PODS.iter().enumerate() {
            attach_pod(
                &mut guard,
                &node,
                &pods[i],
                &Self::host_if(tag, pid, i),
                addr,
            )
            .unwrap();
        }
        Lab {
            pid,
            tag,
            node,
            world,
            pods,
            dir,
            agent: None,
            _guard: guard,
        }
    }

    fn host_if(tag: char, pid: u32, i: usize) -> String {
        format!("ws{tag}{}{pid}", PODS[i].0)
    }

    /// The datastore: the pods (all but `without`), the services, the remote-only slice,
    /// and the policy that admits only a to c.
    fn write_datastore(&self, without: &[&str]) {
        let pod = |i: usize| {
            let (name, ip) = PODS[i];
            let role = if name == "a" { "client" } else { "backend" };
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: shop\n  name: {name}\n  \
                 labels: {{app: {name}, role: {role}}}\n  annotations:\n    \
                 weir.dev/interface: {}\n    weir.dev/mac: \"{}\"\nspec:\n  containers:\n  \
                 - name: main\n    image: none\n    ports:\n    - {{name: http, \
                 containerPort: 8080}}\n    - {{name: dns, containerPort: 5353, protocol: \
                 UDP}}\nstatus:\n  podIPs: [{{ip: \"{ip}\"}}]\n---\n",
                Self::host_if(self.tag, self.pid, i),
                format_mac(&mac_of(&self.pods[i], "eth0").unwrap())
            )
        };
        let service = |name: &str, spec: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: shop\n  name: \
                 {name}\nspec:\n{spec}---\n"
            )
        };
        let mut text =
            String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n");
        for (i, (name, _)) in PODS.iter().enumerate() {
            if !without.contains(name) {
                text += &pod(i);
            }
        }
        text += &service(
            "api",
            &format!(
                "  clusterIP: {API}\n  selector: {{role: backend}}\n  ports:\n  - {{name: \
                 http, port: 80, targetPort: http}}\n  - {{name: dns, port: 53, protocol: \
                 UDP, targetPort: dns}}\n"
            ),
        );
        text += &service(
            "empty",
            &format!(
                "  clusterIP: {EMPTY}\n  selector: {{role: nobody}}\n  ports:\n  - {{name: \
                 http, port: 80, targetPort: 8080}}\n  - {{name: dns, port: 53, protocol: \
                 UDP, targetPort: 5353}}\n"
            ),
        );
        text += &service(
            "self",
            &format!("  clusterIP: {SELF}\n  selector: {{app: a}}\n  ports: [{{port: 80, targetPort: 8090}}]\n"),
        );
        text += &service(
            "sticky",
            &format!(
                "  clusterIP: {STICKY}\n  selector: {{role: backend}}\n  sessionAffinity: \
                 ClientIP\n  ports: [{{port: 80, targetPort: 8080}}]\n"
            ),
        );
        text += &service(
            "guarded",
            &format!("  clusterIP: {GUARDED}\n  selector: {{app: c}}\n  ports: [{{port: 80, targetPort: 8081}}]\n"),
        );
        text += &service(
            "np",
            "  type: NodePort\n  clusterIP: 198.19.0.20\n  selector: {role: backend}\n  \
             ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n",
        );
        text += &service(
            "np-local",
            "  type: NodePort\n  clusterIP: 198.19.0.21\n  externalTrafficPolicy: Local\n  \
             selector: {role: backend}\n  ports: [{port: 80, targetPort: 8080, nodePort: \
             30081}]\n",
        );
        // No selector: the slice names one endpoint, on another node.
        text += &service(
            "remote-only",
            "  type: NodePort\n  clusterIP: 198.19.0.22\n  externalTrafficPolicy: Local\n  \
             ports: [{port: 80, targetPort: 8080, nodePort: 30082}]\n",
        );
        text += "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
                 namespace: shop\n  name: remote-only-1\n  labels: \
                 {kubernetes.io/service-name: remote-only}\naddressType: IPv4\nendpoints:\n\
                 - addresses: [198.18.64.9]\n  nodeName: elsewhere\nports: [{port: 8080}]\n---\n";
        // c admits only a.
        text += "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  \
                 namespace: shop\n  name: c-from-a\nspec:\n  podSelector: {matchLabels: {app: \
                 c}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: \
                 {matchLabels: {app: a}}\n";
        let path = self.dir.join("datastore/cluster.yaml");
        let tmp = self.dir.join("cluster.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    fn start(&mut self) {
        self.write_datastore(&[]);
        let port = 20000 + (self.pid % 20000) as u16 * 2 + u16::from(self.tag == 'b');
        let node = format!("node-{}", self.pid);
        let extra = "serviceCidrs: [198.19.0.0/24]\n";
        self.agent = Some(start_lab_agent(&self.node, &self.dir, &node, port, extra));
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().unwrap()
    }

    fn pod(&self, name: &str) -> &str {
        &self.pods[PODS.iter().position(|(n, _)| *n == name).unwrap()]
    }

    fn drops(&self, reason: &str) -> u64 {
        (0..2)
            .map(|w| {
                self.agent().metric(&format!(
                    "weir_drops_total{{worker=\"{w}\",reason=\"{reason}\"}}"
                ))
            })
            .sum()
    }
}

/// A TCP server in `ns` on `addr` that answers every connection for `secs` seconds with
/// `name` and the peer's address, then stops.
fn named_server(
    ns: &str,
    addr: &str,
    name: &'static str,
    secs: u64,
) -> JoinHandle<Vec<SocketAddr>> {
    let listener = {
        let addr: SocketAddr = addr.parse().unwrap();
        in_netns(ns, move || TcpListener::bind(addr))
            .unwrap()
            .unwrap()
    };
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut peers = Vec::new();
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 256];
                    let _ = s.read(&mut buf);
                    let _ = write!(s, "HTTP/1.0 200 OK\r\n\r\n{name} {peer}\n");
                    peers.push(peer);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => break,
            }
        }
        peers
    })
}

/// The body line of an HTTP answer: "<name> <peer>".
fn body(answer: &str) -> (String, String) {
    let line = answer.lines().last().unwrap_or_default();
    let mut parts = line.split(' ');
    (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    )
}

/// A UDP echo in `ns` on `addr` for `secs` seconds, answering with `name`.
fn udp_named(ns: &str, addr: &str, name: &'static str, secs: u64) -> JoinHandle<()> {
    let addr: SocketAddr = addr.parse().unwrap();
    let sock = in_netns(ns, move || UdpSocket::bind(addr))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(name.as_bytes(), from);
            }
        }
    })
}

/// A TCP connection from `ns` to `to` within 2 s: opened, or why not.
fn tcp_connect(ns: &str, to: &str) -> Result<(), ErrorKind> {
    let addr: SocketAddr = to.parse().unwrap();
    in_netns(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(|_| ())
    })
    .unwrap()
    .map_err(|e| e.kind())
}

/// One UDP request from `ns` to `to`; the answer or the error.
fn udp_ask(ns: &str, to: &str) -> std::io::Result<String> {
    let to: SocketAddr = to.parse().unwrap();
    in_netns(ns, move || {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        s.connect(to)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut last = Err(std::io::Error::from(ErrorKind::TimedOut));
        for _ in 0..5 {
            s.send(b"?")?;
            let mut buf = [0u8; 64];
            match s.recv(&mut buf) {
                Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(e),
                Err(e) => last = Err(e),
            }
        }
        last
    })
    .unwrap()
}

#[test]
fn services_replace_kube_proxy_for_pods_and_the_world() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new('a');
    lab.start();
    let log = || lab.agent().log();
    let secs = 40;
    let servers = [
        named_server(lab.pod("b"), &format!("{B4}:8080"), "b", secs),
        named_server(lab.pod("c"), &format!("{C4}:8080"), "c", secs),
        named_server(lab.pod("a"), &format!("{A4}:8090"), "a", secs),
        named_server(lab.pod("c"), &format!("{C4}:8081"), "c-guarded", secs),
    ];
    let udp = [
        udp_named(lab.pod("b"), &format!("{B4}:5353"), "b", secs),
        udp_named(lab.pod("c"), &format!("{C4}:5353"), "c", secs),
    ];
    let get = |ns: &str, addr: &str| http_get(ns, addr, "/", Duration::from_secs(5));

    // Cluster IP, TCP: from a, through both endpoints, with a's address.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..16 {
        let answer = get(lab.pod("a"), &format!("{API}:80"));
        let (name, peer) = body(
            answer
                .as_deref()
                .unwrap_or_else(|e| panic!("{e}\n{}", log())),
        );
        assert!(
            peer.starts_with(&format!("{A4}:")),
            "the endpoint sees the pod: {peer}"
        );
        seen.insert(name);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["b", "c"],
        "{}",
        log()
    );

    // Cluster IP, UDP (the named target port `dns`).
    let answer = udp_ask(lab.pod("a"), &format!("{API}:53"));
    assert!(
        matches!(answer.as_deref(), Ok("b" | "c")),
        "{answer:?}\n{}",
        log()
    );

    // Affinity: ten connections, one endpoint.
    let pinned: std::collections::BTreeSet<String> = (0..10)
        .map(|_| body(&get(lab.pod("a"), &format!("{STICKY}:80")).unwrap()).0)
        .collect();
    assert_eq!(pinned.len(), 1, "{pinned:?}");

    // Hairpin: a reaches itself through its service, from the service's address.
    let answer =
        get(lab.pod("a"), &format!("{SELF}:80")).unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let (name, peer) = body(&answer);
    assert_eq!(name, "a");
    assert!(peer.starts_with(&format!("{SELF}:")), "{peer}");

    // No endpoints: refused at once, TCP and UDP, and counted.
    let refused = tcp_connect(lab.pod("a"), &format!("{EMPTY}:80"));
    assert_eq!(refused, Err(ErrorKind::ConnectionRefused), "{}", log());
    let refused = udp_ask(lab.pod("a"), &format!("{EMPTY}:53"));
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused)
    );
    let until = Instant::now() + Duration::from_secs(3);
    while lab.drops("service_no_endpoints") < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lab.drops("service_no_endpoints") >= 2, "{}", log());

    // Policy after translation: c admits a, not b.
    let answer = get(lab.pod("a"), &format!("{GUARDED}:80"));
    assert_eq!(body(&answer.unwrap()).0, "c-guarded");
    let denied_before = lab.drops("policy_denied_ingress");
    let denied = http_get(
        lab.pod("b"),
        &format!("{GUARDED}:80"),
        "/",
        Duration::from_millis(1500),
    );
    assert!(
        denied.is_err(),
        "b must not reach c through the service: {denied:?}"
    );
    assert!(
        lab.drops("policy_denied_ingress") > denied_before,
        "{}",
        log()
    );

    // Node port from the world, externalTrafficPolicy Cluster: from the node's address.
    let answer =
        get(&lab.world, &format!("{NODE4}:30080")).unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let (_, peer) = body(&answer);
    assert!(
        peer.starts_with(&format!("{NODE4}:")),
        "translated to the node: {peer}"
    );
    // externalTrafficPolicy Local: the client's own address.
    let answer =
        get(&lab.world, &format!("{NODE4}:30081")).unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let (_, peer) = body(&answer);
    assert!(
        peer.starts_with(&format!("{WORLD4}:")),
        "the client's address: {peer}"
    );
    // Local with no endpoint on this node: refused.
    let refused = tcp_connect(&lab.world, &format!("{NODE4}:30082"));
    assert_eq!(refused, Err(ErrorKind::ConnectionRefused), "{}", log());

    // The node's own stack reaches a cluster IP through the host link (serviceCidrs).
    let answer = get(&lab.node, &format!("{API}:80")).unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let (name, _) = body(&answer);
    assert!(matches!(name.as_str(), "b" | "c"), "{answer}");

    // `weir services` lists them with their endpoints.
    let listing = lab.agent().http("/services");
    for needle in ["shop/api", "198.19.0.10", "198.18.10.3", "shop/remote-only"] {
        assert!(listing.contains(needle), "{needle} in {listing}");
    }

    // Two services on one frontend: the newcomer is refused, logged and counted, and the
    // good one keeps serving.
    let clash = "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: shop\n  name: \
                 clash\nspec:\n  clusterIP: 198.19.0.10\n  selector: {role: backend}\n  \
                 ports: [{name: http, port: 80, targetPort: 8080}]\n";
    std::fs::write(lab.dir.join("clash.yaml.tmp"), clash).unwrap();
    std::fs::rename(
        lab.dir.join("clash.yaml.tmp"),
        lab.dir.join("datastore/clash.yaml"),
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while lab.agent().metric("weir_services_refused_total") < 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        lab.agent().metric("weir_services_refused_total"),
        1,
        "{}",
        log()
    );
    let listing = lab.agent().http("/services");
    assert!(
        listing.contains("198.19.0.10 port 80/6 is already the frontend of shop/"),
        "{listing}"
    );
    let answer = get(lab.pod("a"), &format!("{API}:80")).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(body(&answer).0.as_str(), "b" | "c"), "{answer}");
    drop(servers);
    drop(udp);
}

#[test]
fn removing_an_endpoint_does_not_cut_a_stream_to_the_one_that_stays() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new('b');
    lab.start();
    let log = || lab.agent().log();
    // Echo servers on b and c: each echoes what it reads until the peer closes or 30 s.
    let echo = |ns: &str, addr: &str| {
        let addr: SocketAddr = addr.parse().unwrap();
        let l = in_netns(ns, move || TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        let mut buf = [0u8; 64];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        return true;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            false
        })
    };
    let b = echo(lab.pod("b"), &format!("{B4}:8080"));
    let c = echo(lab.pod("c"), &format!("{C4}:8080"));
    let a = lab.pod("a").to_owned();
    let mut stream = in_netns(&a, || {
        let addr: SocketAddr = format!("{API}:80").parse().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut round = |i: u8| -> std::io::Result<()> {
        stream.write_all(&[i])?;
        let mut got = [0u8; 1];
        stream.read_exact(&mut got)?;
        assert_eq!(got[0], i);
        Ok(())
    };
    round(1).unwrap();
    // Which endpoint holds the stream: the other one goes away.
    let served_by = {
        let out = weir_testkit::lab::output(&[
            "ip",
            "netns",
            "exec",
            lab.pod("b"),
            "ss",
            "-Htn",
            "state",
            "established",
        ])
        .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(":8080") {
            "b"
        } else {
            "c"
        }
    };
    let other = if served_by == "b" { "c" } else { "b" };
    lab.write_datastore(&[other]);
    // The agent republishes within a second or two; the stream goes on meanwhile.
    let until = Instant::now() + Duration::from_secs(4);
    let mut i = 2u8;
    while Instant::now() < until {
        round(i).unwrap_or_else(|e| panic!("round {i} after removing {other}: {e}\n{}", log()));
        i = i.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(100));
    }
    // New connections go to the endpoint that stays.
    let listing = lab.agent().http("/services");
    assert!(
        !listing.contains(if other == "b" { B4 } else { C4 }),
        "{other} removed from the listing: {listing}"
    );
    drop(stream);
    let _ = (b.join(), c.join());
}
