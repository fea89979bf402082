//! The Kubernetes datastore: one kube-rs watcher per kind, turned into [`Change`]s.
//!
//! Each kind is watched as a `DynamicObject` and validated by weir's own loader, object by
//! object: an object that does not decode or validate (a bad CIDR, selector or port) is
//! reported with the object and the field, as a log line and a Kubernetes Event on the
//! object, and everything else keeps flowing. Decoding the whole list into typed objects
//! would let one bad object fail every list of its kind.
//!
//! The calculator is the store: the watcher's list-then-watch protocol (resourceVersion,
//! bookmarks, relist on 410 Gone, retries with backoff while the API server is away) is
//! kube-rs's, and each complete list (`Init` … `InitDone`) becomes one
//! [`Change::Resync`], which the calculator applies in one step. A kube-rs reflector
//! `Store` beside it would hold every object twice.

use std::sync::mpsc::Sender;
use std::time::Instant;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};

use crate::calc::{Change, Update};
use crate::policy::load::{load_value, LoadError, Object};
use crate::policy::model::{Kind, ObjectRef};

/// The kinds the control plane reads, with their API resources.
pub fn watched() -> Vec<(Kind, ApiResource)> {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;
    use k8s_openapi::api::networking::v1 as net;
    let weir = |kind: &str, plural: &str| ApiResource {
        group: "weir.dev".into(),
        version: "v1".into(),
        api_version: "weir.dev/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    vec![
        (Kind::Namespace, ApiResource::erase::<core::Namespace>(&())),
        (Kind::Pod, ApiResource::erase::<core::Pod>(&())),
        (
            Kind::ServiceAccount,
            ApiResource::erase::<core::ServiceAccount>(&()),
        ),
        (Kind::Node, ApiResource::erase::<core::Node>(&())),
        (
            Kind::K8sNetworkPolicy,
            ApiResource::erase::<net::NetworkPolicy>(&()),
        ),
        (Kind::Tier, weir("Tier", "tiers")),
        (
            Kind::NetworkPolicy,
            weir("NetworkPolicy", "networkpolicies"),
        ),
        (
            Kind::GlobalNetworkPolicy,
            weir("GlobalNetworkPolicy", "globalnetworkpolicies"),
        ),
        (Kind::NetworkSet, weir("NetworkSet", "networksets")),
        (
            Kind::GlobalNetworkSet,
            weir("GlobalNetworkSet", "globalnetworksets"),
        ),
        (Kind::IpPool, weir("IPPool", "ippools")),
        (Kind::HostEndpoint, weir("HostEndpoint", "hostendpoints")),
        (Kind::Service, ApiResource::erase::<core::Service>(&())),
        (
            Kind::EndpointSlice,
            ApiResource::erase::<discovery::EndpointSlice>(&()),
        ),
        // Which node holds which block: the routes and WireGuard peers to other nodes.
        (Kind::IpamBlock, weir("IPAMBlock", "ipamblocks")),
    ]
}

/// Where objects read from the API say they came from.
pub const SOURCE: &str = "kubernetes";

/// Validates one object from the API with the loader. `Err` carries the object (when
/// its identity could be read) and the reason.
pub fn to_object(
    object: &DynamicObject,
    resource: &ApiResource,
) -> Result<Object, (Option<ObjectRef>, String)> {
    // The loader reads the object as it reads a document of the file datastore.
    let mut value = serde_yaml::to_value(object).map_err(|e| (None, e.to_string()))?;
    if let Some(map) = value.as_mapping_mut() {
        // List items come without their type; the loader wants it.
        map.insert("apiVersion".into(), resource.api_version.as_str().into());
        map.insert("kind".into(), resource.kind.as_str().into());
    }
    match load_value(value, SOURCE) {
        Ok(o) => Ok(o),
        Err(LoadError::Invalid { error, .. }) => {
            let message = format!("{}: {}", error.field, error.message);
            Err((Some(error.object), message))
        }
        Err(other) => Err((None, other.to_string())),
    }
}

fn object_ref(kind: Kind, object: &DynamicObject) -> ObjectRef {
    let name = object.name_any();
    match object.namespace() {
        Some(ns) if kind.is_namespaced() => ObjectRef::namespaced(kind, &ns, &name),
        _ => ObjectRef::cluster(kind, &name),
    }
}

/// Watches every kind in [`watched`] until the receiving end of `updates` is dropped.
/// `node` names the reporting instance on Events.
pub async fn run(client: Client, node: String, updates: Sender<Update>) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "weir-agent".into(),
            instance: Some(node),
        },
    );
    let watches = watched().into_iter().map(|(kind, resource)| {
        watch_kind(
            client.clone(),
            kind,
            resource,
            updates.clone(),
            recorder.clone(),
        )
    });
    futures::future::join_all(watches).await;
}

async fn watch_kind(
    client: Client,
    kind: Kind,
    resource: ApiResource,
    updates: Sender<Update>,
    recorder: Recorder,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut stream = watcher::watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .boxed();
    let mut listing: Option<Vec<Object>> = None;
    let mut synced = false;
    while let Some(event) = stream.next().await {
        let noticed = Instant::now();
        let send = |u: Update| updates.send(u).is_ok();
        let refuse = |object: &DynamicObject, who: Option<ObjectRef>, message: String| {
            let who = who.unwrap_or_else(|| object_ref(kind, object));
            eprintln!("weir agent: {who} refused: {message}; its last good version stays");
            let reference = object.object_ref(&resource);
            let recorder = recorder.clone();
            let note = format!("refused by weir: {message}");
            tokio::spawn(async move {
                let event = KubeEvent {
                    type_: EventType::Warning,
                    reason: "InvalidObject".into(),
                    note: Some(note.chars().take(1000).collect()),
                    action: "Validate".into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&event, &reference).await {
                    eprintln!("weir agent: could not post an Event: {e}");
                }
            });
            send(Update::Invalid {
                object: Some(who),
                message,
            })
        };
        let alive = match event {
            Ok(Event::Init) => {
                listing = Some(Vec::new());
                true
            }
            Ok(Event::InitApply(o)) => match to_object(&o, &resource) {
                Ok(valid) => {
                    listing.get_or_insert_with(Vec::new).push(valid);
                    true
                }
                Err((who, message)) => refuse(&o, who, message),
            },
            Ok(Event::InitDone) => {
                let objects = listing.take().unwrap_or_default();
                let ok = send(Update::Change {
                    change: Change::Resync {
                        kinds: vec![kind],
                        objects,
                    },
                    noticed,
                });
                if ok && !synced {
                    synced = true;
                    send(Update::Synced(kind))
                } else {
                    ok
                }
            }
            Ok(Event::Apply(o)) => match to_object(&o, &resource) {
                Ok(valid) => send(Update::Change {
                    change: Change::Upsert(valid),
                    noticed,
                }),
                Err((who, message)) => refuse(&o, who, message),
            },
            Ok(Event::Delete(o)) => send(Update::Change {
                change: Change::Delete(object_ref(kind, &o)),
                noticed,
            }),
            Err(e) => send(Update::WatchError {
                kind,
                message: e.to_string(),
            }),
        };
        if !alive {
            return;
        }
    }
}

/// A client for the API server: from `kubeconfig` when given, else inferred (the pod's
/// service account in a cluster, or `$KUBECONFIG` / `~/.kube/config`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no API server configuration found: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("API client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calc::Calculator;
    use crate::policy::load::Resource;
    use weir_testkit::fake_api::FakeApi;

    /// The next change from the watches that `pick` takes, within 10 s; the others (and
    /// what is not a change) are applied to `calc` and passed over.
    async fn next_change(
        rx: &std::sync::mpsc::Receiver<Update>,
        calc: &mut Calculator,
        pick: impl Fn(&Change) -> bool,
    ) -> Change {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while Instant::now() < deadline {
            match rx.try_recv() {
                Ok(Update::Change { change, .. }) if pick(&change) => return change,
                Ok(Update::Change { change, .. }) => {
                    calc.apply(change);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        panic!("no such change in 10 s");
    }

    fn touches_blocks(change: &Change) -> bool {
        match change {
            Change::Upsert(o) => matches!(o.resource, Resource::IpamBlock(_)),
            Change::Delete(id) => id.kind == Kind::IpamBlock,
            Change::Resync { kinds, .. } => kinds == &[Kind::IpamBlock],
            _ => false,
        }
    }

    #[tokio::test]
    async fn a_block_claimed_and_released_in_the_api_changes_the_prefixes_routed_to_its_node() {
        let fake = FakeApi::new();
        let block = serde_json::json!({
            "apiVersion": "weir.dev/v1", "kind": "IPAMBlock",
            "metadata": {"name": "198-18-64-64-26"},
            "spec": {"cidr": "198.18.64.64/26", "pool": "shared", "node": "node-b", "leases": {}},
        });
        fake.apply(block.clone()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let watching = tokio::spawn(run(fake.client(), "node-a".into(), tx));
        let mut calc = Calculator::new("node-a");
        let routed = |calc: &Calculator| {
            crate::wireguard::node_prefixes("node-b", calc.cluster(), &mut Vec::new())
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        // The first list holds b's block.
        let listed = next_change(&rx, &mut calc, touches_blocks).await;
        assert!(calc.apply(listed).is_empty());
        assert_eq!(routed(&calc), ["198.18.64.64/26"]);
        // A lease written in b's block: the same block in the model (leases are IPAM's).
        let before = calc.cluster().ipam_blocks.clone();
        let mut leased = block.clone();
        leased["spec"]["leases"] = serde_json::json!({
            "198.18.64.64": {"containerID": "c1", "ifname": "eth0"}
        });
        fake.apply(leased).unwrap();
        let lease = next_change(&rx, &mut calc, touches_blocks).await;
        assert!(calc.apply(lease).is_empty());
        assert_eq!(calc.cluster().ipam_blocks, before);
        // b claims a second block (its IPAM store creates the object).
        let mut second = block.clone();
        second["metadata"]["name"] = "198-18-64-128-26".into();
        second["spec"]["cidr"] = "198.18.64.128/26".into();
        fake.apply(second).unwrap();
        let claimed = next_change(&rx, &mut calc, touches_blocks).await;
        assert!(calc.apply(claimed).is_empty());
        assert_eq!(routed(&calc), ["198.18.64.64/26", "198.18.64.128/26"]);
        // Released: the object is deleted, the prefix is routed to b no more.
        fake.delete("weir.dev/v1", "IPAMBlock", None, "198-18-64-64-26")
            .unwrap();
        let released = next_change(&rx, &mut calc, touches_blocks).await;
        assert!(calc.apply(released).is_empty());
        assert_eq!(routed(&calc), ["198.18.64.128/26"]);
        watching.abort();
    }

    fn ipam_block(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1",
            "kind": "IPAMBlock",
            "metadata": {"name": "198-18-64-64-26", "resourceVersion": "7"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn ipam_blocks_are_watched_and_a_malformed_one_is_refused_with_its_field() {
        let (_, resource) = watched()
            .into_iter()
            .find(|(k, _)| *k == Kind::IpamBlock)
            .expect("IPAMBlocks are watched: they are the routes to other nodes");
        // As the IPAM store writes it, leases and all.
        let written = ipam_block(serde_json::json!({
            "cidr": "198.18.64.64/26", "pool": "shared", "node": "node-b",
            "leases": {"198.18.64.64": {"containerID": "c1", "ifname": "eth0", "pod": "shop/web"}},
        }));
        match to_object(&written, &resource).map(|o| o.resource) {
            Ok(Resource::IpamBlock(b)) => {
                assert_eq!(b.cidr.to_string(), "198.18.64.64/26");
                assert_eq!(b.node, "node-b");
            }
            other => panic!("{other:?}"),
        }
        let bad = ipam_block(serde_json::json!({
            "cidr": "198.18.64.65/26", "pool": "shared", "node": "node-b",
        }));
        let (who, why) = to_object(&bad, &resource).unwrap_err();
        assert_eq!(
            who,
            Some(ObjectRef::cluster(Kind::IpamBlock, "198-18-64-64-26"))
        );
        assert!(
            why.starts_with("spec.cidr:") && why.contains("198.18.64.64/26"),
            "{why}"
        );
    }
}
