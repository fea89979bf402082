//! `weir agent` with `kubernetes:` as its datastore, end to end: the project's fake API
//! server is served over HTTP inside the node's network namespace, the agent reads it
//! through a kubeconfig, and pods in their own namespaces ping each other through the
//! dataplane while objects change in the API.
//!
//! - The API server is away when the agent starts: it is not ready until the server
//!   answers and every kind has been listed.
//! - A NetworkPolicy created in the API isolates pod b (ping stops); relabelling pod a so
//!   that the policy admits it lets ping through again, without a restart.
//! - With WireGuard on and no `wireguard.address`, the agent takes its underlay address
//!   from its Node's InternalIP and publishes its public key on the Node (merge patch).
//! - A malformed policy is refused: a log line with object and field, a Kubernetes Event,
//!   `weir_datastore_objects_refused_total`, and the tables keep working.
//!
//! Needs root (network namespaces, AF_XDP); CI runs it as root.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{attach_pod, Agent};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use weir_testkit::fake_api::FakeApi;
use weir_testkit::lab::{format_mac, in_netns, mac_of, output, require_root, run, NetnsGuard};

const A4: &str = "198.18.3.10";
const B4: &str = "198.18.3.11";

struct Lab {
    pid: u32,
    node: String,
    pods: [String; 2],
    dir: PathBuf,
    /// Removes the namespaces and the directory.
    guard: NetnsGuard,
}

impl Lab {
    fn host_if(&self, i: usize) -> String {
        format!("wk{}{}", ["a", "b"][i], self.pid)
    }

    fn ping(&self, from: usize, to: &str) -> bool {
        output(&[
            "ip",
            "netns",
            "exec",
            &self.pods[from],
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            to,
        ])
        .unwrap()
        .status
        .success()
    }

    /// Pings until `want` (reachable or not) holds, for at most 10 s.
    fn ping_until(&self, want: bool, what: &str, agent: &Agent) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping(0, B4) != want {
            assert!(Instant::now() < deadline, "{what}: {}", agent.log());
        }
    }
}

/// Binds a TCP listener inside network namespace `ns`, from a thread that enters it (the
/// socket stays in that namespace whichever thread uses it later).
fn listen_in(ns: &str) -> std::net::TcpListener {
    in_netns(ns, || std::net::TcpListener::bind("127.0.0.1:0").unwrap()).unwrap()
}

/// Serves the fake API server over HTTP/1.1 on `listener`.
async fn serve(fake: FakeApi, listener: std::net::TcpListener) {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let fake = fake.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let mut fake = fake.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let bytes = body.collect().await?.to_bytes();
                        let request = http::Request::from_parts(
                            parts,
                            kube::client::Body::from(bytes.to_vec()),
                        );
                        let response = tower::Service::call(&mut fake, request)
                            .await
                            .unwrap_or_else(|e| match e {});
                        Ok::<_, hyper::Error>(response)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn pod(lab: &Lab, i: usize, name: &str, app: &str, ip: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app},
            "annotations": {"weir.dev/interface": lab.host_if(i),
                "weir.dev/mac": format_mac(&mac_of(&lab.pods[i], "eth0").unwrap())}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x:1"}]},
        "status": {"podIPs": [{"ip": ip}]}})
}

fn isolate_b(from_app: &str, cidr: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "b-ingress", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": from_app}}},
                                  {"ipBlock": {"cidr": cidr}}]}]}})
}

#[test]
fn the_agent_follows_the_kubernetes_api_and_survives_its_faults() {
    require_root("the Kubernetes datastore scenario");
    let pid = std::process::id();
    let mut guard = NetnsGuard::new();
    let dir = guard.temp_dir("weir-k8s-test").unwrap();
    let mut lab = Lab {
        pid,
        node: format!("weir-kn-{pid}"),
        pods: [format!("weir-ka-{pid}"), format!("weir-kb-{pid}")],
        dir,
        guard,
    };
    lab.guard.add_netns(&lab.node).unwrap();
    run(&["ip", "-n", &lab.node, "link", "set", "lo", "up"]).unwrap();
    for (i, v4) in [A4, B4].into_iter().enumerate() {
        let host = lab.host_if(i);
        attach_pod(&mut lab.guard, &lab.node, &lab.pods[i], &host, v4).unwrap();
    }
    // An uplink for WireGuard (nothing else on it: there is no other node).
    run(&[
        "ip", "-n", &lab.node, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
    ])
    .unwrap();
    for dev in ["up0", "up1"] {
        run(&["ip", "-n", &lab.node, "link", "set", dev, "up"]).unwrap();
    }

    let node = format!("node-{pid}");
    let fake = FakeApi::new();
    fake.apply(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
        "spec": {"podCIDRs": ["198.18.3.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "198.18.251.7"}]}}),
    )
    .unwrap();
    fake.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}))
        .unwrap();
    fake.apply(pod(&lab, 0, "a", "a", A4, &node)).unwrap();
    fake.apply(pod(&lab, 1, "b", "b", B4, &node)).unwrap();
    // A pod of another node: a peer only, never attached here.
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "far", "namespace": "shop", "labels": {"app": "a"}},
        "spec": {"nodeName": "elsewhere", "containers": [{"name": "c", "image": "x:1"}]},
        "status": {"podIPs": [{"ip": "198.18.9.9"}]}}))
        .unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = listen_in(&lab.node);
    let api_port = listener.local_addr().unwrap().port();
    runtime.spawn(serve(fake.clone(), listener));
    let kubeconfig = lab.dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: \
             http://127.0.0.1:{api_port}\nusers:\n- name: weir\n  user: {{}}\ncontexts:\n- \
             name: fake\n  context: {{cluster: fake, user: weir}}\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    let port = 30000 + (pid % 20000) as u16;
    let config = lab.dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "node: {node}\ncores: [0, 1]\nkubernetes:\n  kubeconfig: {}\nlisten: \
             127.0.0.1:{port}\nframes: 4096\nuplink: up0\npodCidrs: [198.18.3.0/24]\n\
             wireguard:\n  keyFile: {}\n",
            kubeconfig.display(),
            lab.dir.join("wg.key").display()
        ),
    )
    .unwrap();

    // The API server is away at start: the agent must wait, not serve a partial view.
    fake.set_down(true);
    let up_after = Duration::from_secs(2);
    let reviver = {
        let fake = fake.clone();
        std::thread::spawn(move || {
            std::thread::sleep(up_after);
            fake.set_down(false);
        })
    };
    let started = Instant::now();
    let agent = Agent::start(&lab.node, &config, port, lab.dir.join("agent.log"));
    reviver.join().unwrap();
    assert!(
        started.elapsed() >= up_after,
        "ready before the API server answered: {}",
        agent.log()
    );
    assert!(agent
        .log()
        .contains("waiting for the first full list of every kind"));
    lab.ping_until(true, "a reaches b with no policy", &agent);

    // The key is published on the Node, and the underlay address came from it.
    let log = agent.log();
    let public = log
        .split("WireGuard public key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key in the log: {log}"));
    let published = fake.get("v1", "Node", None, &node).unwrap();
    assert_eq!(
        published["metadata"]["annotations"]["weir.dev/wireguard-public-key"], public,
        "{log}"
    );
    assert!(log.contains(&format!(
        "published WireGuard public key {public} on Node {node}"
    )));
    assert!(log.contains("198.18.251.7 port 51820"), "{log}");

    // A policy created in the API isolates b.
    fake.apply(isolate_b("c", "198.18.200.0/24")).unwrap();
    lab.ping_until(false, "the new policy isolates b", &agent);
    // Pod a becomes app=c: admitted again, live.
    fake.apply(pod(&lab, 0, "a", "c", A4, &node)).unwrap();
    lab.ping_until(true, "a, relabelled, is admitted", &agent);

    // A malformed edit of the policy: refused, its last good version stays (a still in).
    fake.apply(isolate_b("x", "198.18.200.0/33")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.metric("weir_datastore_objects_refused_total") < 1 {
        assert!(
            Instant::now() < deadline,
            "refusal not counted: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        lab.ping(0, B4),
        "the last good policy keeps serving: {}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains("NetworkPolicy shop/b-ingress refused")
            && log.contains("spec.ingress[0].from[1].ipBlock.cidr"),
        "{log}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fake
        .events()
        .iter()
        .any(|e| e.to_string().contains("b-ingress") && e.to_string().contains("InvalidObject"))
    {
        assert!(Instant::now() < deadline, "no Event: {:?}", fake.events());
        std::thread::sleep(Duration::from_millis(100));
    }

    // An outage: traffic keeps flowing on the last tables; a change made meanwhile lands.
    fake.set_down(true);
    assert!(lab.ping(0, B4));
    fake.apply(pod(&lab, 0, "a", "a", A4, &node)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(lab.ping(0, B4), "the tables keep serving during the outage");
    fake.set_down(false);
    lab.ping_until(false, "the relabel made during the outage lands", &agent);
    drop(agent);
    runtime.shutdown_timeout(Duration::from_secs(1));
}
