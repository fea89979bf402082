//! The Kubernetes datastore end to end in one process: the real kube-rs watchers
//! (`k8s::source`) against the project's fake API server, feeding the control loop
//! (`calc::drive`) and the calculator, as the agent runs them. Covers the start-up gate
//! (nothing published before every kind is listed), an API outage (the last tables keep
//! serving, changes made meanwhile arrive after), an expired watch (relist, swapped in one
//! step, never through an empty state), malformed objects (refused with object and field,
//! an Event posted, the last good version kept, the rest flowing), two pods claiming one
//! address, and bookmarks.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weir_control::calc::{drive, Calculator, DriveState, Update};
use weir_control::k8s::source;
use weir_testkit::fake_api::FakeApi;

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(20);

/// What the control loop published, as the test sees it.
#[derive(Debug, Clone)]
struct Seen {
    /// Local endpoints in the tables.
    endpoints: usize,
    /// Pods in the model, with their `app` label.
    pods: Vec<(String, String)>,
    /// Refusals reported with this publication.
    refused: Vec<String>,
    /// Objects refused by validation.
    invalid: usize,
    /// Whether it was the first publication.
    first: bool,
    /// How many policies the tables were compiled from.
    policies: usize,
}

struct Harness {
    fake: FakeApi,
    /// Runs the watchers; dropped with the harness.
    _runtime: tokio::runtime::Runtime,
    seen: Receiver<Seen>,
    stop: Arc<AtomicBool>,
    control: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.control.take() {
            let _ = h.join();
        }
    }
}

fn pod(name: &str, app: &str, ip: &str, local: bool) -> Value {
    let mut annotations = json!({});
    if local {
        annotations = json!({"weir.dev/interface": format!("veth-{name}")});
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app},
            "annotations": annotations},
        "spec": {"nodeName": if local { NODE } else { "node-b" },
            "containers": [{"name": "c", "image": "x:1"}]},
        "status": {"podIPs": [{"ip": ip}]}})
}

fn policy(name: &str, app: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": app}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                "ports": [{"port": 5432}]}]}})
}

fn base(fake: &FakeApi) {
    fake.apply(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"team": "retail"}}}))
        .unwrap();
    fake.apply(pod("web", "web", "198.18.1.10", true)).unwrap();
    fake.apply(pod("db", "db", "198.18.1.11", true)).unwrap();
    fake.apply(pod("remote", "web", "198.18.2.10", false))
        .unwrap();
    fake.apply(policy("db-ingress", "db")).unwrap();
}

impl Harness {
    fn start(fake: FakeApi) -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = {
            let _guard = runtime.enter();
            fake.client()
        };
        let (tx, rx) = mpsc::channel::<Update>();
        runtime.spawn(source::run(client, NODE.to_owned(), tx));
        let (seen_tx, seen) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let loop_stop = stop.clone();
        let kinds: Vec<_> = source::watched().into_iter().map(|(k, _)| k).collect();
        let control = std::thread::spawn(move || {
            let mut calc = Calculator::new(NODE);
            let mut state = DriveState::default();
            drive(
                &rx,
                &mut calc,
                &kinds,
                Duration::from_millis(2),
                &loop_stop,
                &mut state,
                |calc, batch| {
                    let compiled = calc.compile();
                    let seen = Seen {
                        endpoints: compiled.endpoints.len(),
                        pods: calc
                            .cluster()
                            .pods
                            .values()
                            .map(|p| {
                                (
                                    p.name.clone(),
                                    p.labels.get("app").cloned().unwrap_or_default(),
                                )
                            })
                            .collect(),
                        refused: batch.refused.iter().map(ToString::to_string).collect(),
                        invalid: batch.invalid,
                        first: batch.first,
                        policies: compiled.policies.len(),
                    };
                    seen_tx.send(seen).is_ok()
                },
            );
        });
        Harness {
            fake,
            _runtime: runtime,
            seen,
            stop,
            control: Some(control),
        }
    }

    /// The next publication, within the bound.
    fn next(&self) -> Seen {
        self.seen
            .recv_timeout(WAIT)
            .expect("the control loop published nothing within the bound")
    }

    /// Publications until one satisfies `done`; fails after the bound. Returns all seen.
    fn until(&self, what: &str, done: impl Fn(&Seen) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + WAIT;
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(s) => {
                    let ok = done(&s);
                    all.push(s);
                    if ok {
                        return all;
                    }
                }
                Err(_) => panic!("no publication showed {what} within {WAIT:?}; saw {all:#?}"),
            }
        }
    }

    fn quiet(&self, for_: Duration) -> Option<Seen> {
        self.seen.recv_timeout(for_).ok()
    }
}

fn app_of(s: &Seen, pod: &str) -> Option<String> {
    s.pods
        .iter()
        .find(|(n, _)| n == pod)
        .map(|(_, a)| a.clone())
}

#[test]
fn first_publication_waits_for_every_kind_and_holds_the_whole_cluster() {
    let fake = FakeApi::new();
    base(&fake);
    // The API server is away when the agent starts: nothing may be published.
    fake.set_down(true);
    let h = Harness::start(fake.clone());
    assert!(
        h.quiet(Duration::from_millis(1500)).is_none(),
        "published without having listed anything"
    );
    fake.set_down(false);
    let first = h.next();
    assert!(first.first);
    assert_eq!(first.endpoints, 2, "web and db are local: {first:?}");
    assert_eq!(first.pods.len(), 3, "the remote pod is in the model too");
    assert_eq!(first.policies, 1);
    assert!(
        h.fake.verb_count("list", "/api/v1/pods") >= 1,
        "the first tables came from a list of the pods"
    );
}

#[test]
fn an_outage_keeps_the_tables_and_changes_made_meanwhile_arrive_after() {
    let fake = FakeApi::new();
    base(&fake);
    let h = Harness::start(fake.clone());
    let first = h.next();
    assert_eq!(first.endpoints, 2);

    fake.set_down(true);
    // Changes the agent cannot see yet.
    fake.apply(pod("db", "database", "198.18.1.11", true))
        .unwrap();
    fake.apply(pod("cache", "cache", "198.18.1.12", true))
        .unwrap();
    assert!(
        h.quiet(Duration::from_millis(1500)).is_none(),
        "nothing can be published while the API server is away"
    );
    fake.set_down(false);
    let seen = h.until("both changes made during the outage", |s| {
        app_of(s, "db").as_deref() == Some("database") && app_of(s, "cache").is_some()
    });
    let last = seen.last().unwrap();
    assert_eq!(last.endpoints, 3);
    assert!(
        seen.iter().all(|s| s.endpoints >= 2),
        "never lost endpoints: {seen:?}"
    );
}

#[test]
fn an_expired_watch_relists_and_swaps_in_one_step() {
    let fake = FakeApi::new();
    base(&fake);
    let h = Harness::start(fake.clone());
    assert_eq!(h.next().endpoints, 2);
    let lists_before = fake.verb_count("list", "/api/v1/pods");

    // The agent misses these: the history is compacted past them while it is away.
    fake.set_down(true);
    fake.apply(pod("web", "frontend", "198.18.1.10", true))
        .unwrap();
    fake.delete("v1", "Pod", Some("shop"), "remote");
    fake.compact();
    fake.set_down(false);

    let seen = h.until("the relisted state", |s| {
        app_of(s, "web").as_deref() == Some("frontend") && app_of(s, "remote").is_none()
    });
    assert!(
        fake.verb_count("list", "/api/v1/pods") > lists_before,
        "the pod watcher relisted after 410 Gone"
    );
    for s in &seen {
        assert!(
            s.endpoints == 2 && s.pods.len() >= 2,
            "a publication passed through a partial state: {s:?}"
        );
    }
}

#[test]
fn a_malformed_object_is_refused_with_its_field_and_an_event_while_the_rest_flows() {
    let fake = FakeApi::new();
    base(&fake);
    let h = Harness::start(fake.clone());
    assert_eq!(h.next().policies, 1);

    // A bad edit of a good policy, then a good change.
    let mut bad = policy("db-ingress", "db");
    bad["spec"]["ingress"][0]["from"] = json!([{"ipBlock": {"cidr": "198.18.0.0/33"}}]);
    fake.apply(bad).unwrap();
    fake.apply(policy("web-ingress", "web")).unwrap();
    let seen = h.until("the good policy", |s| s.policies == 2);
    assert!(
        seen.iter().map(|s| s.invalid).sum::<usize>() >= 1,
        "the bad edit was counted: {seen:?}"
    );
    // The Event names the object's field.
    let deadline = Instant::now() + WAIT;
    loop {
        let events = fake.events();
        let found = events.iter().any(|e| {
            let text = e.to_string();
            text.contains("db-ingress")
                && text.contains("ipBlock")
                && text.contains("InvalidObject")
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Event for the refused object: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A pod with an address that does not parse: refused; its last good version stays.
    fake.apply(pod("db", "db2", "198.18.1.300", true)).unwrap();
    fake.apply(pod("late", "late", "198.18.1.20", true))
        .unwrap();
    let seen = h.until("the pod added after the bad one", |s| {
        app_of(s, "late").is_some()
    });
    let last = seen.last().unwrap();
    assert_eq!(
        app_of(last, "db").as_deref(),
        Some("db"),
        "db kept its last good version"
    );
    assert_eq!(last.endpoints, 3);
}

#[test]
fn two_pods_claiming_one_address_are_reported_and_the_first_keeps_it() {
    let fake = FakeApi::new();
    base(&fake);
    let h = Harness::start(fake.clone());
    h.next();
    fake.apply(pod("thief", "web", "198.18.1.11", true))
        .unwrap();
    let seen = h.until("the clash reported", |s| !s.refused.is_empty());
    let last = seen.last().unwrap();
    assert!(
        last.refused.iter().any(|r| r.contains("Pod shop/thief")
            && r.contains("status.podIPs")
            && r.contains("198.18.1.11 is also the address of Pod shop/db")),
        "{last:?}"
    );
    assert!(app_of(last, "thief").is_none());
    assert_eq!(app_of(last, "db").as_deref(), Some("db"));
}

#[test]
fn bookmarks_cause_no_publication_and_no_relist() {
    let fake = FakeApi::new();
    base(&fake);
    let h = Harness::start(fake.clone());
    h.next();
    let lists = fake.verb_count("list", "/api/v1/pods");
    for _ in 0..5 {
        fake.bookmark();
    }
    assert!(h.quiet(Duration::from_millis(800)).is_none());
    assert_eq!(fake.verb_count("list", "/api/v1/pods"), lists);
    fake.apply(pod("after", "x", "198.18.1.30", false)).unwrap();
    let seen = h.until("the change after the bookmarks", |s| {
        app_of(s, "after").is_some()
    });
    assert_eq!(seen.last().unwrap().endpoints, 2);
}
