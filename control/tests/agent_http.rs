//! The agent's HTTP endpoints as a client sees them: served from a real socket by the same
//! server the agent runs, over the same shared state (worker reports, control counters,
//! the published snapshot). No root, no namespaces: loopback only.
//!
//! What they prove: idle and half-sent connections do not delay `/healthz`; the
//! connection limit and the header timeout close what holds the server; `/metrics` is
//! well-formed exposition text with every documented family; `/healthz` names a stuck
//! worker; `/readyz` follows publication; a `Log` rule fired in the real pipeline comes
//! out as a log line and a counter named after its policy; `/services` shows the
//! published service table.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_control::agent::{ControlStats, Endpoints, HttpLimits, HttpServer};
use weir_control::policy::compile::compile;
use weir_control::policy::load::Cluster;
use weir_control::policy::model::IpFamily;
use weir_control::services::view::ServicesView;
use weir_dataplane::craft;
use weir_dataplane::service::ServiceTable;
use weir_dataplane::snapshot::PodSpec;
use weir_dataplane::{Publisher, SnapshotBuilder};
use weir_workers::worker::{SharedReport, WorkerReport};
use weir_workers::MemDriver;

/// Never set: each server is stopped by dropping it.
static STOP: AtomicBool = AtomicBool::new(false);

struct Server {
    addr: std::net::SocketAddr,
    reports: Vec<SharedReport>,
    control: Arc<Mutex<ControlStats>>,
    ready: Arc<AtomicBool>,
    publisher: Publisher,
    _server: HttpServer,
}

fn server(workers: usize, limits: HttpLimits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reports: Vec<SharedReport> = (0..workers)
        .map(|_| Arc::new(Mutex::new(WorkerReport::default())))
        .collect();
    let control = Arc::new(Mutex::new(ControlStats::default()));
    let ready = Arc::new(AtomicBool::new(false));
    let publisher = Publisher::new();
    let endpoints = Endpoints {
        reports: reports.clone(),
        control: control.clone(),
        ready: ready.clone(),
        snapshots: publisher.reader(),
    };
    let server = HttpServer::start(listener, endpoints, limits, &STOP).unwrap();
    Server {
        addr,
        reports,
        control,
        ready,
        publisher,
        _server: server,
    }
}

/// One HTTP/1.0 GET (as the agent tests and kubelet-style probes send it): status code
/// and body.
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

/// Whether the server closed `s` within `within` (a read sees EOF or a reset).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_and_half_sent_connections_do_not_delay_healthz() {
    let s = server(1, HttpLimits::default());
    let mut held: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    let mut half = TcpStream::connect(s.addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    held.push(half);
    // Let the server take them all first.
    std::thread::sleep(Duration::from_millis(200));
    for round in 0..5 {
        let started = Instant::now();
        let (status, body) = get(s.addr, "/healthz");
        let took = started.elapsed();
        assert_eq!((status, body.as_str()), (200, "ok\n"), "round {round}");
        assert!(
            took < Duration::from_millis(100),
            "round {round}: /healthz took {took:?} with {} connections held",
            held.len()
        );
    }
    drop(held);
}

#[test]
fn past_the_limit_connections_are_closed_and_counted_and_silent_ones_time_out() {
    let limits = HttpLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_millis(500),
        connection_lifetime: Duration::from_secs(60),
    };
    let s = server(1, limits);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = TcpStream::connect(s.addr).unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(300)),
        "the fifth connection is closed at once"
    );
    // The silent ones are closed by the header timeout, and the server answers again.
    let started = Instant::now();
    for c in &mut held {
        assert!(
            closed_within(c, Duration::from_secs(2)),
            "a silent connection is closed after the header timeout"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    let (status, text) = get(s.addr, "/metrics");
    assert_eq!(status, 200);
    let refused = sample(&text, "weir_http_connections_refused_total").unwrap_or(0.0);
    assert!(refused >= 1.0, "refused connections are counted: {text}");
}

/// Every family the docs, the deploy guide and the other tests name.
const DOCUMENTED: &[&str] = &[
    "weir_rx_packets_total",
    "weir_tx_packets_total",
    "weir_drops_total",
    "weir_xsk_rx_frames_total",
    "weir_xsk_tx_frames_total",
    "weir_tx_ring_full_total",
    "weir_fill_starved_total",
    "weir_worker_sleeps_total",
    "weir_handoff_out_total",
    "weir_handoff_in_total",
    "weir_handoff_dropped_total",
    "weir_unowned_output_total",
    "weir_detach_dropped_total",
    "weir_frames_lost_total",
    "weir_generated_total",
    "weir_consumed_total",
    "weir_wireguard_sealed_total",
    "weir_wireguard_opened_total",
    "weir_wireguard_control_total",
    "weir_wireguard_no_peer_total",
    "weir_wireguard_malformed_total",
    "weir_wireguard_drops_total",
    "weir_wireguard_handshakes_initiated_total",
    "weir_wireguard_handshakes_answered_total",
    "weir_wireguard_cookie_replies_total",
    "weir_wireguard_peer_updates_total",
    "weir_wireguard_peer_updates_refused_total",
    "weir_xsk_rx_ring_full_total",
    "weir_datastore_changes_applied_total",
    "weir_datastore_changes_rejected_total",
    "weir_datastore_objects_refused_total",
    "weir_services_refused_total",
    "weir_snapshot_generation",
    "weir_datastore_apply_seconds_count",
    "weir_datastore_apply_seconds_bucket",
    "weir_policy_logs_suppressed_total",
    "weir_http_connections_refused_total",
];

#[test]
fn metrics_are_well_formed_exposition_text_with_every_documented_family() {
    let s = server(2, HttpLimits::default());
    if let Ok(mut r) = s.reports[1].lock() {
        r.pipeline.rx = 42;
        r.ports = vec![weir_workers::worker::PortReport {
            name: "uplink0".into(),
            rx_ring_full: 3,
            ..Default::default()
        }];
    }
    if let Ok(mut c) = s.control.lock() {
        c.applied = 2;
        c.observe(0.003);
    }
    let (status, text) = get(s.addr, "/metrics");
    assert_eq!(status, 200);
    let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for family in DOCUMENTED {
        assert!(
            samples.iter().any(|(name, _, _)| name == family),
            "{family} missing from /metrics:\n{text}"
        );
    }
    let find = |name: &str, labels: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|s| s.2)
    };
    assert_eq!(find("weir_rx_packets_total", "worker=\"1\""), Some(42.0));
    assert_eq!(
        find(
            "weir_xsk_rx_ring_full_total",
            "worker=\"1\",interface=\"uplink0\""
        ),
        Some(3.0)
    );
    assert_eq!(find("weir_datastore_changes_applied_total", ""), Some(2.0));
    assert_eq!(find("weir_datastore_apply_seconds_count", ""), Some(1.0));
    assert_eq!(
        find("weir_datastore_apply_seconds_bucket", "le=\"+Inf\""),
        Some(1.0)
    );
}

#[test]
fn healthz_names_the_worker_whose_loop_stopped_turning() {
    let s = server(2, HttpLimits::default());
    s.ready.store(true, Ordering::SeqCst);
    // Worker 0 beats ten times a second as a running worker does; worker 1 never does.
    let beating = s.reports[0].clone();
    let done = Arc::new(AtomicBool::new(false));
    let done_beating = done.clone();
    let beat = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done_beating.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok(mut r) = beating.lock() {
                r.heartbeat += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert_eq!(get(s.addr, "/healthz").0, 200);
    let deadline = Instant::now() + Duration::from_secs(8);
    let (status, body) = loop {
        let (status, body) = get(s.addr, "/healthz");
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    done.store(true, Ordering::Relaxed);
    beat.join().unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("worker 1: its loop has not turned"), "{body}");
    assert!(!body.contains("worker 0"), "{body}");
    // A heartbeat makes it healthy again.
    if let Ok(mut r) = s.reports[1].lock() {
        r.heartbeat += 1;
    }
    if let Ok(mut r) = s.reports[0].lock() {
        r.heartbeat += 1;
    }
    assert_eq!(get(s.addr, "/healthz").0, 200);
}

#[test]
fn readyz_waits_for_the_first_tables_and_reports_a_change_that_could_not_be_published() {
    let s = server(1, HttpLimits::default());
    let (status, body) = get(s.addr, "/readyz");
    assert_eq!(status, 503);
    assert!(body.starts_with("not ready: waiting for"), "{body}");
    s.ready.store(true, Ordering::SeqCst);
    assert_eq!(get(s.addr, "/readyz"), (200, "ready\n".to_owned()));
    if let Ok(mut c) = s.control.lock() {
        c.last_rejection = Some("the snapshot could not be built: too many interfaces".into());
    }
    let (status, body) = get(s.addr, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("too many interfaces"), "{body}");
    if let Ok(mut c) = s.control.lock() {
        c.last_rejection = None;
    }
    assert_eq!(get(s.addr, "/readyz").0, 200);
    assert_eq!(get(s.addr, "/nothing").0, 404);
}

const PODS_AND_AUDIT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
status: {podIP: 198.18.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
status: {podIP: 198.18.0.11}
---
apiVersion: weir.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: audit}
spec:
  selector: app == 'db'
  ingress:
  - {action: Log, protocol: TCP}
  - {action: Allow}
"#;

/// What the global log subscriber of this test binary wrote.
static LOGGED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Logged;

impl Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGGED.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_log_rule_fired_in_the_pipeline_becomes_a_log_line_and_a_counter_named_after_its_policy() {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(|| Logged)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let mut s = server(1, HttpLimits::default());

    let cluster = Cluster::from_sources([("t.yaml", PODS_AND_AUDIT)]).unwrap();
    let compiled = compile(&cluster);
    let mut b = SnapshotBuilder::new();
    let mut ports = Vec::new();
    for name in compiled.endpoints.keys() {
        let pod = &cluster.pods[name];
        let Some(std::net::IpAddr::V4(ip)) = pod.ip(IpFamily::V4) else {
            panic!("fixture pods are IPv4")
        };
        let mac = [0x02, 0, 0, 0, 0, ports.len() as u8 + 1];
        let (ifindex, _) = b
            .pod(PodSpec {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                interface: format!("veth-{}", pod.name),
                gateway_mac: [0xee; 6],
                mac,
                ipv4: Some(ip),
                ipv6: None,
                mtu: 1500,
            })
            .unwrap();
        ports.push((ifindex, ip, mac));
    }
    b.policy(compiled.tables);
    let snapshot = s.publisher.publish(b).unwrap();
    let [(client_if, client_ip, client_mac), (db_if, db_ip, _)] = ports[..] else {
        panic!("two pods")
    };
    let mut d = MemDriver::new(64, 64);
    for port in 0..30u16 {
        let f = craft::tcp4(
            client_mac,
            [0xee; 6],
            client_ip,
            db_ip,
            40000 + port,
            5432,
            60,
        );
        d.inject(client_if, &f).unwrap();
    }
    d.run(&snapshot, 1_000);
    assert_eq!(d.take_tx(db_if).len(), 30);
    // What a worker's report carries to the agent.
    let logs = d.pipeline().policy_state().take_logs();
    assert_eq!(logs.len(), 20, "the log rate limit's burst");
    if let Ok(mut r) = s.reports[0].lock() {
        r.pipeline = d.counters().clone();
        r.logs = logs;
    }

    let want = "weir_policy_log_records_total{tier=\"default\",\
                policy=\"GlobalNetworkPolicy audit\",direction=\"ingress\",rule=\"0\"}";
    let deadline = Instant::now() + Duration::from_secs(3);
    let text = loop {
        let (_, text) = get(s.addr, "/metrics");
        if text.contains(want) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(sample(&text, want), Some(20.0), "{text}");
    assert_eq!(
        sample(&text, "weir_policy_logs_suppressed_total{worker=\"0\"}"),
        Some(10.0),
        "{text}"
    );
    assert!(s.reports[0].lock().unwrap().logs.is_empty());
    let logged = String::from_utf8(LOGGED.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("weir::policy_log"))
        .collect();
    assert_eq!(lines.len(), 20, "{logged}");
    for want in [
        "worker=0",
        "tier=\"default\"",
        "policy=\"GlobalNetworkPolicy audit\"",
        "direction=\"ingress\"",
        "rule=\"0\"",
        "verdict=\"allow\"",
        "proto=6",
        "src=198.18.0.10",
        "dst=198.18.0.11",
        "dst_port=5432",
    ] {
        assert!(lines[0].contains(want), "{want} missing from {}", lines[0]);
    }
}

/// A sample's value, by its name and labels as written.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.strip_prefix(name_and_labels)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Parses OpenMetrics text as Prometheus reads it: `# HELP`/`# TYPE` before each
/// family's samples, a sample's name is its family's (with `_total` for a counter,
/// `_bucket`/`_sum`/`_count` for a histogram), labels `key="value"` separated by commas,
/// a numeric value, a histogram's buckets cumulative, and `# EOF` last. Returns every sample: name, labels as written, value.
fn parse_exposition(text: &str) -> Result<Vec<(String, String, f64)>, String> {
    let mut samples = Vec::new();
    let mut family: Option<(String, String)> = None;
    let mut seen_families = std::collections::BTreeSet::new();
    let mut lines = text.lines().peekable();
    let mut last_bucket: Option<f64> = None;
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            if lines.peek().is_some() {
                return Err("text after # EOF".into());
            }
            return Ok(samples);
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !seen_families.insert(name.to_owned()) {
                return Err(format!("family {name} declared twice"));
            }
            let Some(t) = lines.next().and_then(|l| l.strip_prefix("# TYPE ")) else {
                return Err(format!("# HELP {name} without # TYPE after it"));
            };
            let (tname, kind) = t.split_once(' ').ok_or(format!("bad TYPE line {t}"))?;
            if tname != name {
                return Err(format!("TYPE {tname} after HELP {name}"));
            }
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("unexpected type {kind}"));
            }
            family = Some((name.to_owned(), kind.to_owned()));
            last_bucket = None;
            continue;
        }
        if line.starts_with('#') {
            return Err(format!("unexpected comment {line}"));
        }
        let (fname, kind) = family
            .as_ref()
            .ok_or(format!("sample before any family: {line}"))?;
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
        let value: f64 = value.parse().map_err(|_| format!("bad value in {line}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                l.strip_suffix('}')
                    .ok_or(format!("unclosed labels: {line}"))?,
            ),
            None => (series, ""),
        };
        let suffix = name
            .strip_prefix(fname.as_str())
            .ok_or(format!("sample {name} outside family {fname}"))?;
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            _ => &["_bucket", "_sum", "_count"],
        };
        if !allowed.contains(&suffix) {
            return Err(format!("sample {name} in {kind} family {fname}"));
        }
        for pair in split_labels(labels) {
            let (k, v) = pair.split_once('=').ok_or(format!("bad label {pair}"))?;
            let ok_key = !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit());
            if !(ok_key && v.len() >= 2 && v.starts_with('"') && v.ends_with('"')) {
                return Err(format!("bad label {pair} in {line}"));
            }
        }
        if suffix == "_bucket" {
            if last_bucket.is_some_and(|b| value < b) {
                return Err(format!("buckets not cumulative at {line}"));
            }
            last_bucket = Some(value);
        }
        samples.push((name.to_owned(), labels.to_owned(), value));
    }
    Err("no # EOF at the end".into())
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in labels.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}

/// One service port: `backends` as (last byte, ready, terminating, local).
fn service_table(name: &str, backends: &[(u8, bool, bool, bool)]) -> ServiceTable {
    use weir_dataplane::service::{BackendSpec, FrontendKind, FrontendSpec, ServiceSpec, TCP};
    let spec = ServiceSpec {
        namespace: "shop".into(),
        name: name.into(),
        port_name: "http".into(),
        protocol: TCP,
        frontends: vec![FrontendSpec {
            addr: "198.19.0.10".parse().unwrap(),
            port: 80,
            kind: FrontendKind::ClusterIp,
        }],
        backends: backends
            .iter()
            .map(|&(last, ready, terminating, local)| BackendSpec {
                addr: std::net::IpAddr::from([198, 18, 1, last]),
                port: 8080,
                ready,
                serving: true,
                terminating,
                local,
            })
            .collect(),
        external_local: false,
        internal_local: true,
        affinity_seconds: None,
    };
    ServiceTable::build(vec![spec], None).unwrap()
}

#[test]
fn services_shows_the_published_table_its_endpoints_and_a_refused_change() {
    let mut s = server(1, HttpLimits::default());
    let (status, body) = get(s.addr, "/services");
    assert_eq!(status, 200, "{body}");
    let empty: ServicesView = serde_json::from_str(&body).unwrap();
    assert!(
        empty.services.is_empty() && empty.refused.is_none(),
        "{body}"
    );

    let mut b = SnapshotBuilder::new();
    b.services(Arc::new(service_table(
        "api",
        &[(1, false, true, true), (2, true, false, false)],
    )));
    let published = s.publisher.publish(b).unwrap();
    if let Ok(mut c) = s.control.lock() {
        c.services_refused = Some("service shop/web: 198.19.0.10 port 80/6 clashes".into());
    }
    let (status, body) = get(s.addr, "/services");
    assert_eq!(status, 200, "{body}");
    let v: ServicesView = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v.generation, published.generation);
    assert!(
        v.refused.as_deref().unwrap_or("").contains("clashes"),
        "{body}"
    );
    let api = &v.services[0];
    assert_eq!(
        (
            api.name.as_str(),
            api.port_name.as_str(),
            api.protocol.as_str()
        ),
        ("api", "http", "TCP")
    );
    assert_eq!(api.frontends[0].kind, "ClusterIP");
    assert_eq!(api.internal_traffic_policy, "Local");
    assert_eq!(
        (api.cluster.set.as_str(), api.cluster.backends),
        ("ready", 1)
    );
    assert_eq!(
        (api.local.set.as_str(), api.local.backends),
        ("terminating", 1),
        "the local endpoint is terminating and none local is ready"
    );
    let b1 = &api.backends[0];
    assert!(
        !b1.ready && b1.serving && b1.terminating && b1.local,
        "{body}"
    );
}
