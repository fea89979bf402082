//! The kinds of object the fake serves, and the key objects are stored under.

use serde_json::Value;

/// One kind of object the server serves.
#[derive(Debug)]
pub(super) struct ResourceType {
    /// The API group, "" for core.
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    pub(super) plural: &'static str,
    pub(super) kind: &'static str,
    pub(super) namespaced: bool,
    /// Whether writes to `status` go through the `status` subresource only.
    pub(super) status_subresource: bool,
}

impl ResourceType {
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// As the API server names a resource in messages: `pods`, `networkpolicies.weir.dev`.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const fn resource(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status_subresource: bool,
) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
        status_subresource,
    }
}

/// Everything served. Stored objects are keyed by their index here, so that the two
/// `NetworkPolicy` kinds (networking.k8s.io and weir.dev) stay apart.
pub(super) const RESOURCES: &[ResourceType] = &[
    resource("", "namespaces", "Namespace", false, true),
    resource("", "pods", "Pod", true, true),
    resource("", "nodes", "Node", false, true),
    resource("", "services", "Service", true, true),
    resource("", "serviceaccounts", "ServiceAccount", true, false),
    resource("", "events", "Event", true, false),
    resource(
        "networking.k8s.io",
        "networkpolicies",
        "NetworkPolicy",
        true,
        false,
    ),
    resource(
        "discovery.k8s.io",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
    ),
    resource("events.k8s.io", "events", "Event", true, false),
    resource("weir.dev", "networkpolicies", "NetworkPolicy", true, false),
    resource(
        "weir.dev",
        "globalnetworkpolicies",
        "GlobalNetworkPolicy",
        false,
        false,
    ),
    resource("weir.dev", "tiers", "Tier", false, false),
    resource("weir.dev", "networksets", "NetworkSet", true, false),
    resource(
        "weir.dev",
        "globalnetworksets",
        "GlobalNetworkSet",
        false,
        false,
    ),
    resource("weir.dev", "ippools", "IPPool", false, false),
    resource("weir.dev", "hostendpoints", "HostEndpoint", false, false),
    resource("weir.dev", "ipamblocks", "IPAMBlock", false, false),
];

pub(super) fn resource_by_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|resource| resource.api_version() == api_version && resource.kind == kind)
}

pub(super) fn resource_by_plural(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES.iter().position(|resource| {
        resource.group == group && resource.version == version && resource.plural == plural
    })
}

/// (namespace, "" for cluster-scoped; name): the order of lists.
pub(super) type Key = (String, String);

pub(super) fn key_of(object: &Value) -> Key {
    let metadata = &object["metadata"];
    (
        metadata["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        metadata["name"].as_str().unwrap_or_default().to_string(),
    )
}
