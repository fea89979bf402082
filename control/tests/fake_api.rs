//! The fake Kubernetes API server (`weir_testkit::fake_api`) driven by real kube-rs code:
//! typed and dynamic `Api`s, `watcher` with its default backoff, the event `Recorder`.
//! Each wait is bounded, so a bug fails the test instead of hanging it.

use std::future::Future;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event as Note, EventType, Recorder};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use weir_testkit::fake_api::FakeApi;

/// Long enough for the watcher's first backoff steps (0.8 s, 1.6 s, with jitter).
const WAIT: Duration = Duration::from_secs(10);

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn pod(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": { "app": "web" } },
        "spec": { "containers": [{ "name": "c", "image": "i" }] },
    })
}

fn node(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name } })
}

fn status_code(error: &kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// What a pod watcher yields, read from a task that drives it as a controller would.
type Watcher = mpsc::UnboundedReceiver<Result<Event<Pod>, watcher::Error>>;

fn pod_watcher(api: &FakeApi) -> Watcher {
    let pods: Api<Pod> = Api::all(api.client());
    let mut stream = watcher::watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            if sender.send(item).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Waits until the server has answered `count` pod watch requests: from then on, the
/// last of them is open (unless it was refused).
async fn until_pod_watches(api: &FakeApi, count: usize) {
    bounded("a pod watch", async {
        while api.verb_count("watch", "/api/v1/pods") < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Reads the watcher until a whole initial list (Init ..= InitDone) has gone by; returns
/// the names listed and how many errors came before.
async fn initial_list(watcher: &mut Watcher) -> (Vec<String>, usize) {
    let (mut names, mut errors) = (Vec::new(), 0);
    loop {
        match bounded("an initial list", watcher.recv()).await {
            Some(Ok(Event::Init)) => names.clear(),
            Some(Ok(Event::InitApply(pod))) => names.push(pod.name_any()),
            Some(Ok(Event::InitDone)) => return (names, errors),
            Some(Ok(other)) => panic!("unexpected {other:?} before InitDone"),
            Some(Err(_)) => errors += 1,
            None => panic!("the watcher ended"),
        }
    }
}

/// The next event that is not an error; returns it and how many errors came before.
async fn next_event(watcher: &mut Watcher) -> (Event<Pod>, usize) {
    let mut errors = 0;
    loop {
        match bounded("a watch event", watcher.recv()).await {
            Some(Ok(event)) => return (event, errors),
            Some(Err(_)) => errors += 1,
            None => panic!("the watcher ended"),
        }
    }
}

fn describe(event: &Event<Pod>) -> String {
    match event {
        Event::Apply(pod) => format!("apply {} {}", pod.name_any(), pod.labels()["app"]),
        Event::Delete(pod) => format!("delete {}", pod.name_any()),
        Event::Init => "init".into(),
        Event::InitApply(pod) => format!("init-apply {}", pod.name_any()),
        Event::InitDone => "init-done".into(),
    }
}

#[tokio::test]
async fn lists_page_through_everything_in_order() {
    let api = FakeApi::new();
    for (namespace, name) in [
        ("b", "p2"),
        ("a", "p3"),
        ("b", "p1"),
        ("a", "p1"),
        ("c", "p0"),
    ] {
        api.apply(pod(namespace, name)).unwrap();
    }
    api.apply(node("n1")).unwrap();
    let pods: Api<Pod> = Api::all(api.client());

    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(2);
    let mut pages = 0;
    loop {
        let page = bounded("a page", pods.list(&params)).await.unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some("6"));
        pages += 1;
        seen.extend(
            page.items
                .iter()
                .map(|pod| format!("{}/{}", pod.namespace().unwrap(), pod.name_any())),
        );
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["a/p1", "a/p3", "b/p1", "b/p2", "c/p0"]);

    let in_b: Api<Pod> = Api::namespaced(api.client(), "b");
    let names: Vec<String> = in_b
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|pod| pod.name_any())
        .collect();
    assert_eq!(names, ["p1", "p2"]);
    let selected = pods
        .list(&ListParams::default().fields("metadata.name=p1"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 2);
    assert!(pods
        .list(&ListParams::default().labels("app=db"))
        .await
        .unwrap()
        .items
        .is_empty());

    // A continue token older than a compaction has expired, as on the real server.
    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    api.apply(node("n2")).unwrap();
    api.compact();
    let token = first.metadata.continue_.unwrap();
    let error = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(status_code(&error), 410);
}

#[tokio::test]
async fn objects_are_created_read_replaced_patched_and_deleted() {
    let api = FakeApi::new();
    let client = api.client();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut created: Pod = serde_json::from_value(pod("default", "web")).unwrap();
    created.metadata.namespace = None;
    let created = pods.create(&PostParams::default(), &created).await.unwrap();
    assert_eq!(created.resource_version().as_deref(), Some("1"));
    assert!(created.uid().is_some() && created.creation_timestamp().is_some());
    let error = pods
        .create(&PostParams::default(), &created)
        .await
        .unwrap_err();
    assert_eq!(
        (status_code(&error), error_reason(&error)),
        (409, "AlreadyExists".into())
    );

    let mut stale = pods.get("web").await.unwrap();
    api.apply(pod("default", "web")).unwrap();
    stale.labels_mut().insert("app".into(), "stale".into());
    let error = pods
        .replace("web", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(
        (status_code(&error), error_reason(&error)),
        (409, "Conflict".into())
    );
    let mut fresh = pods.get("web").await.unwrap();
    fresh.labels_mut().insert("app".into(), "fresh".into());
    let replaced = pods
        .replace("web", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(replaced.labels()["app"], "fresh");
    assert_eq!(replaced.uid(), created.uid());

    // The status subresource writes status only; the main resource keeps it.
    let status = json!({ "status": { "podIP": "198.18.0.7" } });
    pods.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let mut without_status = pods.get("web").await.unwrap();
    without_status.status = None;
    pods.replace("web", &PostParams::default(), &without_status)
        .await
        .unwrap();
    let stored = api.get("v1", "Pod", Some("default"), "web").unwrap();
    assert_eq!(stored["status"]["podIP"], "198.18.0.7");

    // The agent annotates its Node with a merge patch.
    api.apply(node("n1")).unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({ "metadata": { "annotations": { "weir.dev/wireguard-public-key": "k" } } });
    let patched = nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.annotations()["weir.dev/wireguard-public-key"], "k");
    let stored = api.get("v1", "Node", None, "n1").unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["weir.dev/wireguard-public-key"],
        "k"
    );
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        api.resource_version().to_string()
    );

    let stale = Preconditions {
        resource_version: Some("1".into()),
        uid: None,
    };
    let error = pods
        .delete("web", &DeleteParams::default().preconditions(stale))
        .await
        .unwrap_err();
    assert_eq!(status_code(&error), 409);
    let deleted = pods.delete("web", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        deleted.left().map(|pod| pod.name_any()).as_deref(),
        Some("web")
    );
    assert_eq!(status_code(&pods.get("web").await.unwrap_err()), 404);
    assert_eq!(
        status_code(
            &pods
                .delete("web", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        404
    );
    assert!(api.get("v1", "Pod", Some("default"), "web").is_none());
}

fn error_reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.reason.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_two_network_policy_kinds_stay_apart() {
    let api = FakeApi::new();
    let gvk = GroupVersionKind::gvk("weir.dev", "v1", "NetworkPolicy");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "networkpolicies");
    let weir: Api<DynamicObject> = Api::namespaced_with(api.client(), "default", &resource);
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": "deny" },
        "spec": { "order": 10 },
    }))
    .unwrap();
    weir.create(&PostParams::default(), &policy).await.unwrap();
    assert_eq!(
        weir.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let kubernetes: Api<k8s_openapi::api::networking::v1::NetworkPolicy> = Api::all(api.client());
    assert!(kubernetes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(api
        .get("weir.dev/v1", "NetworkPolicy", Some("default"), "deny")
        .is_some());
    assert!(api
        .get(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            Some("default"),
            "deny"
        )
        .is_none());
    assert!(api
        .apply(json!({ "apiVersion": "weir.dev/v1", "kind": "Nope", "metadata": { "name": "x" } }))
        .is_err());
    assert!(api
        .apply(json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "x" } }))
        .is_err());
}

#[tokio::test]
async fn the_watcher_sees_changes_in_order() {
    let api = FakeApi::new();
    api.apply(pod("default", "old")).unwrap();
    let mut watcher = pod_watcher(&api);
    assert_eq!(
        initial_list(&mut watcher).await,
        (vec!["old".to_string()], 0)
    );

    api.apply(pod("default", "a")).unwrap();
    let mut changed = pod("default", "a");
    changed["metadata"]["labels"]["app"] = "db".into();
    api.apply(changed).unwrap();
    api.delete("v1", "Pod", Some("default"), "a").unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (event, errors) = next_event(&mut watcher).await;
        assert_eq!(errors, 0);
        seen.push(describe(&event));
    }
    assert_eq!(seen, ["apply a web", "apply a db", "delete a"]);
}

#[tokio::test]
async fn a_raw_watch_from_a_compacted_version_gets_410_then_ends() {
    let api = FakeApi::new();
    api.apply(pod("default", "a")).unwrap();
    api.apply(pod("default", "b")).unwrap();
    api.compact();
    let pods: Api<Pod> = Api::all(api.client());
    let events: Vec<WatchEvent<Pod>> = bounded(
        "the watch",
        pods.watch(&WatchParams::default(), "1")
            .await
            .unwrap()
            .try_collect(),
    )
    .await
    .unwrap();
    match events.as_slice() {
        [WatchEvent::Error(status)] => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected one 410 event, got {other:?}"),
    }
    // From the compaction point itself, nothing is missing.
    let mut stream = pods
        .watch(&WatchParams::default(), "2")
        .await
        .unwrap()
        .boxed();
    api.apply(pod("default", "c")).unwrap();
    match bounded("an event", stream.next()).await {
        Some(Ok(WatchEvent::Added(pod))) => assert_eq!(pod.name_any(), "c"),
        other => panic!("expected ADDED c, got {other:?}"),
    }
}

#[tokio::test]
async fn after_compaction_the_watcher_relists() {
    let api = FakeApi::new();
    api.apply(pod("default", "a")).unwrap();
    let mut watcher = pod_watcher(&api);
    initial_list(&mut watcher).await;
    until_pod_watches(&api, 1).await;
    assert_eq!(api.verb_count("list", "/api/v1/pods"), 1);

    // A change to another kind moves the cluster past the pod watch's position, so the
    // compaction leaves that watch unable to resume.
    api.apply(node("n1")).unwrap();
    api.compact();
    api.apply(pod("default", "b")).unwrap();
    let (names, errors) = initial_list(&mut watcher).await;
    assert_eq!(names, ["a", "b"]);
    assert!(errors >= 1, "the 410 reaches the watcher as an error");
    assert_eq!(api.verb_count("list", "/api/v1/pods"), 2);
    assert!(
        api.request_count("GET /api/v1/pods") >= 3,
        "two lists, at least one watch"
    );
}

#[tokio::test]
async fn the_watcher_rides_out_an_outage() {
    let api = FakeApi::new();
    api.apply(pod("default", "a")).unwrap();
    let mut watcher = pod_watcher(&api);
    initial_list(&mut watcher).await;
    until_pod_watches(&api, 1).await;

    api.set_down(true);
    let pods: Api<Pod> = Api::all(api.client());
    assert_eq!(status_code(&pods.get("a").await.unwrap_err()), 503);
    // The closed stream makes the watcher watch again, which fails while down.
    until_pod_watches(&api, 2).await;
    api.apply(pod("default", "b")).unwrap();
    api.delete("v1", "Pod", Some("default"), "a").unwrap();
    api.set_down(false);

    let (first, errors) = next_event(&mut watcher).await;
    assert!(errors >= 1, "the outage reaches the watcher as errors");
    let (second, _) = next_event(&mut watcher).await;
    assert_eq!(
        [describe(&first), describe(&second)],
        ["apply b web", "delete a"]
    );
    assert_eq!(
        api.verb_count("list", "/api/v1/pods"),
        1,
        "a resumed watch, not a relist"
    );
}

#[tokio::test]
async fn bookmarks_are_accepted_and_keep_a_watch_resumable() {
    let api = FakeApi::new();
    api.apply(pod("default", "a")).unwrap();
    let mut watcher = pod_watcher(&api);
    initial_list(&mut watcher).await;
    until_pod_watches(&api, 1).await;

    // After a bookmark at the current version, compaction does not cut the watch.
    api.apply(node("n1")).unwrap();
    api.bookmark();
    api.compact();
    api.apply(pod("default", "b")).unwrap();
    let (event, errors) = next_event(&mut watcher).await;
    assert_eq!((describe(&event), errors), ("apply b web".to_string(), 0));
    assert_eq!(api.verb_count("list", "/api/v1/pods"), 1);

    // A raw watch sees the bookmark itself.
    let pods: Api<Pod> = Api::all(api.client());
    let params = WatchParams::default();
    let mut stream = pods
        .watch(&params, &api.resource_version().to_string())
        .await
        .unwrap()
        .boxed();
    api.bookmark();
    match bounded("a bookmark", stream.next()).await {
        Some(Ok(WatchEvent::Bookmark(bookmark))) => {
            assert_eq!(
                bookmark.metadata.resource_version,
                api.resource_version().to_string()
            );
            assert!(bookmark.metadata.annotations.is_empty());
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn recorded_events_are_kept() {
    let api = FakeApi::new();
    let recorder = Recorder::new(api.client(), "weir-agent".into());
    let note = Note {
        type_: EventType::Warning,
        reason: "PolicyRejected".into(),
        note: Some("bad CIDR".into()),
        action: "Compile".into(),
        secondary: None,
    };
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some("default".into()),
        name: Some("web".into()),
        ..ObjectReference::default()
    };
    bounded("publishing", recorder.publish(&note, &reference))
        .await
        .unwrap();
    // The second one is a series: a merge patch of the first.
    bounded("publishing", recorder.publish(&note, &reference))
        .await
        .unwrap();
    let events = api.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["apiVersion"], "events.k8s.io/v1");
    assert_eq!(events[0]["reason"], "PolicyRejected");
    assert_eq!(events[0]["series"]["count"], 2);
    assert_eq!(
        api.verb_count("create", "/apis/events.k8s.io/v1/namespaces/default/events"),
        1
    );
}

#[tokio::test]
async fn a_streaming_list_needs_no_list_request() {
    let api = FakeApi::new();
    api.apply(pod("default", "a")).unwrap();
    api.apply(pod("other", "b")).unwrap();
    let pods: Api<Pod> = Api::all(api.client());
    let config = watcher::Config::default().streaming_lists();
    let mut stream = watcher::watcher(pods, config).boxed();
    let mut seen = Vec::new();
    loop {
        match bounded("the initial events", stream.next()).await {
            Some(Ok(Event::InitDone)) => break,
            Some(Ok(event)) => seen.push(describe(&event)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["init", "init-apply a", "init-apply b"]);
    assert_eq!(api.verb_count("list", "/api/v1/pods"), 0);
}

#[tokio::test]
async fn a_selected_watch_sees_objects_enter_and_leave() {
    let api = FakeApi::new();
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    let params = WatchParams::default().labels("app=web");
    let version = api.resource_version().to_string();
    let mut stream = pods.watch(&params, &version).await.unwrap().boxed();
    let mut db = pod("default", "a");
    db["metadata"]["labels"]["app"] = "db".into();
    api.apply(db.clone()).unwrap();
    api.apply(pod("other", "a")).unwrap();
    api.apply(pod("default", "a")).unwrap();
    api.apply(pod("default", "a")).unwrap();
    api.apply(db).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        match bounded("an event", stream.next()).await {
            Some(Ok(WatchEvent::Added(pod))) => {
                seen.push(format!("added {}", pod.resource_version().unwrap()))
            }
            Some(Ok(WatchEvent::Modified(pod))) => {
                seen.push(format!("modified {}", pod.resource_version().unwrap()))
            }
            Some(Ok(WatchEvent::Deleted(pod))) => {
                seen.push(format!("deleted {}", pod.resource_version().unwrap()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["added 3", "modified 4", "deleted 5"]);
}
