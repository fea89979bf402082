//! Reading policy objects from Kubernetes-style YAML, and gathering them into a
//! [`Cluster`].
//!
//! Input is what `kubectl apply -f` takes: any number of documents separated by `---`,
//! each an object with `apiVersion` and `kind`, or a `kind: List` (or `PodList`,
//! `NetworkPolicyList`, ...) whose `items` are objects, as `kubectl get -o yaml` prints.
//! Empty documents are skipped. Each object is decoded into its typed form and validated
//! ([`super::model`]); the first problem in a file stops that file with a [`LoadError`] that
//! names the file, the document (counted from 1 in file order, empty ones included) and,
//! inside a list, the item (`items[3]`), then the object and the field.
//!
//! Kubernetes kinds are decoded with `k8s-openapi`, which ignores fields it does not know;
//! so that a typo such as `podSelecter` cannot silently turn a policy into "select every
//! pod", the decoded object is written back and compared with the input, and any field that
//! did not survive is reported, as `kubectl`'s strict field validation would. weir.dev kinds
//! are decoded strictly in the first place.
//!
//! [`Cluster::from_objects`] then checks what only the whole set can show (duplicates,
//! references to tiers that do not exist, two pods with one address) and fills in what
//! Kubernetes and Calico create implicitly: a namespace for every namespace that objects
//! live in, the `default` tier, and a label-less service account for every one a pod names.

// Load errors carry the origin and the object's identity so that they can name both; they
// are built once per bad document, far from any hot path, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use super::model::{
    compare_order, EndpointSlice, GlobalNetworkPolicy, GlobalNetworkPolicyWire, GlobalNetworkSet,
    GlobalNetworkSetWire, HostEndpoint, HostEndpointWire, IpPool, IpPoolWire, IpamBlock,
    IpamBlockWire, K8sNetworkPolicy, Kind, Namespace, NamespacedName, NetworkPolicy,
    NetworkPolicyWire, NetworkSet, NetworkSetWire, Node, ObjectRef, Pod, Service, ServiceAccount,
    Tier, TierWire, ValidationError, DEFAULT_TIER,
};
use super::selector::Labels;

/// Where an object came from: file, document, and list item if it was in a List.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// The name the caller gave the input (normally its path).
    pub source: String,
    /// The document, counted from 1 in file order.
    pub document: usize,
    /// The index in the document's `items`, for objects inside a List.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.source, self.document)?;
        if let Some(item) = self.item {
            write!(f, " items[{item}]")?;
        }
        Ok(())
    }
}

/// One loaded object and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The file, document and item.
    pub origin: Origin,
    /// The validated object.
    pub resource: Resource,
}

/// A validated object of one of the kinds weir reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// `v1` Namespace.
    Namespace(Namespace),
    /// `v1` Pod.
    Pod(Pod),
    /// `v1` ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// `networking.k8s.io/v1` NetworkPolicy.
    K8sNetworkPolicy(K8sNetworkPolicy),
    /// `weir.dev/v1` Tier.
    Tier(Tier),
    /// `weir.dev/v1` NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
    /// `weir.dev/v1` GlobalNetworkPolicy.
    GlobalNetworkPolicy(GlobalNetworkPolicy),
    /// `weir.dev/v1` NetworkSet.
    NetworkSet(NetworkSet),
    /// `weir.dev/v1` GlobalNetworkSet.
    GlobalNetworkSet(GlobalNetworkSet),
    /// `v1` Node.
    Node(Node),
    /// `weir.dev/v1` IPPool.
    IpPool(IpPool),
    /// `weir.dev/v1` HostEndpoint.
    HostEndpoint(HostEndpoint),
    /// `v1` Service.
    Service(Service),
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// `weir.dev/v1` IPAMBlock.
    IpamBlock(IpamBlock),
}

impl Resource {
    /// Which object this is.
    pub fn object_ref(&self) -> ObjectRef {
        match self {
            Resource::Namespace(o) => ObjectRef::cluster(Kind::Namespace, &o.name),
            Resource::Pod(o) => ObjectRef::namespaced(Kind::Pod, &o.namespace, &o.name),
            Resource::ServiceAccount(o) => {
                ObjectRef::namespaced(Kind::ServiceAccount, &o.namespace, &o.name)
            }
            Resource::K8sNetworkPolicy(o) => {
                ObjectRef::namespaced(Kind::K8sNetworkPolicy, &o.namespace, &o.name)
            }
            Resource::Tier(o) => ObjectRef::cluster(Kind::Tier, &o.name),
            Resource::NetworkPolicy(o) => {
                ObjectRef::namespaced(Kind::NetworkPolicy, &o.namespace, &o.name)
            }
            Resource::GlobalNetworkPolicy(o) => {
                ObjectRef::cluster(Kind::GlobalNetworkPolicy, &o.name)
            }
            Resource::NetworkSet(o) => {
                ObjectRef::namespaced(Kind::NetworkSet, &o.namespace, &o.name)
            }
            Resource::GlobalNetworkSet(o) => ObjectRef::cluster(Kind::GlobalNetworkSet, &o.name),
            Resource::Node(o) => ObjectRef::cluster(Kind::Node, &o.name),
            Resource::IpPool(o) => ObjectRef::cluster(Kind::IpPool, &o.name),
            Resource::HostEndpoint(o) => ObjectRef::cluster(Kind::HostEndpoint, &o.name),
            Resource::Service(o) => ObjectRef::namespaced(Kind::Service, &o.namespace, &o.name),
            Resource::EndpointSlice(o) => {
                ObjectRef::namespaced(Kind::EndpointSlice, &o.namespace, &o.name)
            }
            Resource::IpamBlock(o) => ObjectRef::cluster(Kind::IpamBlock, &o.name),
        }
    }
}

/// Why input could not be loaded. Every variant says where: file and document, and the
/// object and field where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The text is not YAML.
    #[error("{source_name} document {document}: not valid YAML: {message}")]
    Yaml {
        /// The input's name.
        source_name: String,
        /// The document where parsing failed, counted from 1.
        document: usize,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A document is not an object with `apiVersion` and `kind`.
    #[error("{origin}: {message}")]
    NotAnObject {
        /// Where.
        origin: Origin,
        /// What is missing.
        message: String,
    },
    /// A document of a kind weir does not read.
    #[error(
        "{origin}: unknown kind \"{kind}\" (apiVersion \"{api_version}\"): weir reads v1 \
         Namespace, Pod, ServiceAccount, Node, Service and List; networking.k8s.io/v1 \
         NetworkPolicy; discovery.k8s.io/v1 EndpointSlice; and weir.dev/v1 Tier, \
         NetworkPolicy, GlobalNetworkPolicy, NetworkSet, GlobalNetworkSet, IPPool, \
         HostEndpoint and IPAMBlock"
    )]
    UnknownKind {
        /// Where.
        origin: Origin,
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
    /// An object that does not decode or does not validate.
    #[error("{origin}: {error}")]
    Invalid {
        /// Where.
        origin: Origin,
        /// Which object and field, and what is wrong.
        error: ValidationError,
    },
    /// Two objects with the same kind, namespace and name.
    #[error("{object} is defined twice: in {first} and in {second}")]
    Duplicate {
        /// The object.
        object: ObjectRef,
        /// Where it was first defined.
        first: Origin,
        /// Where it was defined again.
        second: Origin,
    },
}

/// Reads every object in a multi-document YAML text. `source` names the input in errors
/// (normally its path). Stops at the first problem.
pub fn load_documents(yaml: &str, source: &str) -> Result<Vec<Object>, LoadError> {
    load_documents_each(yaml, source).into_iter().collect()
}

/// Reads every object in a multi-document YAML text, one result per object: a document
/// that does not decode or validate is an error in its place and the others still load.
/// A YAML syntax error ends the text there (what follows cannot be read reliably).
pub fn load_documents_each(yaml: &str, source: &str) -> Vec<Result<Object, LoadError>> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let number = index + 1;
        let value = match Value::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                out.push(Err(LoadError::Yaml {
                    source_name: source.to_owned(),
                    document: number,
                    message: e.to_string(),
                }));
                break;
            }
        };
        let origin = Origin {
            source: source.to_owned(),
            document: number,
            item: None,
        };
        if value.is_null() {
            continue;
        }
        let (api_version, kind) = match type_of(&value, &origin, None) {
            Ok(t) => t,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        if kind == "List" || kind.ends_with("List") {
            let item_type = kind
                .strip_suffix("List")
                .filter(|k| !k.is_empty())
                .map(|k| (api_version.clone(), k.to_owned()));
            let items = match value.get("items") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Sequence(items)) => items.clone(),
                Some(_) => {
                    out.push(Err(LoadError::NotAnObject {
                        origin,
                        message: format!("items: a {kind}'s items must be a list"),
                    }));
                    continue;
                }
            };
            for (i, mut item) in items.into_iter().enumerate() {
                let origin = Origin {
                    item: Some(i),
                    ..origin.clone()
                };
                if let (Some((v, k)), Value::Mapping(map)) = (&item_type, &mut item) {
                    // Typed lists (`PodList`) may leave the items' type implicit.
                    map.entry("apiVersion".into())
                        .or_insert_with(|| v.as_str().into());
                    map.entry("kind".into())
                        .or_insert_with(|| k.as_str().into());
                }
                let (api_version, kind) = match type_of(&item, &origin, Some(i)) {
                    Ok(t) => t,
                    Err(e) => {
                        out.push(Err(e));
                        continue;
                    }
                };
                if kind.ends_with("List") {
                    out.push(Err(LoadError::NotAnObject {
                        origin,
                        message: format!("a {kind} inside a list is not supported"),
                    }));
                    continue;
                }
                out.push(decode_object(item, &api_version, &kind, origin));
            }
        } else {
            out.push(decode_object(value, &api_version, &kind, origin));
        }
    }
    out
}

/// Loads one object that is already a value (an object read from the API), as
/// [`load_documents_each`] loads a document holding it, without printing it and parsing
/// the text again (the YAML parser was a large part of an agent's initial sync).
pub fn load_value(value: Value, source: &str) -> Result<Object, LoadError> {
    let origin = Origin {
        source: source.to_owned(),
        document: 1,
        item: None,
    };
    let (api_version, kind) = type_of(&value, &origin, None)?;
    if kind.ends_with("List") {
        return Err(LoadError::NotAnObject {
            origin,
            message: format!("a {kind} is a list, not one object"),
        });
    }
    decode_object(value, &api_version, &kind, origin)
}

/// Everything that was loaded, checked as a whole, keyed for lookup.
///
/// Invariants after [`Cluster::from_objects`]: every namespaced object's namespace is in
/// `namespaces`; every pod's service account is in `service_accounts`; `tiers` contains
/// `default` and every tier a policy names; no two pods (outside the host network) share
/// an address; no two IP pools overlap; no two IPAM blocks overlap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    /// Namespaces by name, including implicit ones (only the name label).
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods.
    pub pods: BTreeMap<NamespacedName, Pod>,
    /// Service accounts, including a label-less one for each name a pod uses that was not
    /// loaded.
    pub service_accounts: BTreeMap<NamespacedName, ServiceAccount>,
    /// Kubernetes NetworkPolicies.
    pub k8s_policies: BTreeMap<NamespacedName, K8sNetworkPolicy>,
    /// weir.dev NetworkPolicies.
    pub policies: BTreeMap<NamespacedName, NetworkPolicy>,
    /// weir.dev GlobalNetworkPolicies by name.
    pub global_policies: BTreeMap<String, GlobalNetworkPolicy>,
    /// Tiers by name, including the implicit `default` tier.
    pub tiers: BTreeMap<String, Tier>,
    /// weir.dev NetworkSets.
    pub network_sets: BTreeMap<NamespacedName, NetworkSet>,
    /// weir.dev GlobalNetworkSets by name.
    pub global_network_sets: BTreeMap<String, GlobalNetworkSet>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// weir.dev IPPools by name; no two overlap.
    pub ip_pools: BTreeMap<String, IpPool>,
    /// weir.dev HostEndpoints by name.
    pub host_endpoints: BTreeMap<String, HostEndpoint>,
    /// Services (kept for the service dataplane; policy does not read them).
    pub services: BTreeMap<NamespacedName, Service>,
    /// EndpointSlices (kept for the service dataplane; policy does not read them).
    pub endpoint_slices: BTreeMap<NamespacedName, EndpointSlice>,
    /// weir.dev IPAMBlocks by name: which node holds which block, the prefixes routed to
    /// each node (`crate::wireguard::remote_nodes`); no two overlap.
    pub ipam_blocks: BTreeMap<String, IpamBlock>,
    /// Where each loaded object came from (implicit objects have no entry).
    pub origins: BTreeMap<ObjectRef, Origin>,
}

impl Cluster {
    /// Gathers objects into a cluster, reporting every problem found rather than the first.
    pub fn from_objects(objects: Vec<Object>) -> Result<Cluster, Vec<LoadError>> {
        let mut cluster = Cluster::default();
        let mut errors = Vec::new();
        for Object { origin, resource } in objects {
            let object = resource.object_ref();
            if let Some(first) = cluster.origins.get(&object) {
                errors.push(LoadError::Duplicate {
                    object,
                    first: first.clone(),
                    second: origin,
                });
                continue;
            }
            cluster.origins.insert(object, origin);
            let key = |ns: &str, name: &str| NamespacedName::new(ns, name);
            match resource {
                Resource::Namespace(o) => {
                    cluster.namespaces.insert(o.name.clone(), o);
                }
                Resource::Pod(o) => {
                    cluster.pods.insert(key(&o.namespace, &o.name), o);
                }
                Resource::ServiceAccount(o) => {
                    cluster
                        .service_accounts
                        .insert(key(&o.namespace, &o.name), o);
                }
                Resource::K8sNetworkPolicy(o) => {
                    cluster.k8s_policies.insert(key(&o.namespace, &o.name), o);
                }
                Resource::Tier(o) => {
                    cluster.tiers.insert(o.name.clone(), o);
                }
                Resource::NetworkPolicy(o) => {
                    cluster.policies.insert(key(&o.namespace, &o.name), o);
                }
                Resource::GlobalNetworkPolicy(o) => {
                    cluster.global_policies.insert(o.name.clone(), o);
                }
                Resource::NetworkSet(o) => {
                    cluster.network_sets.insert(key(&o.namespace, &o.name), o);
                }
                Resource::GlobalNetworkSet(o) => {
                    cluster.global_network_sets.insert(o.name.clone(), o);
                }
                Resource::Node(o) => {
                    cluster.nodes.insert(o.name.clone(), o);
                }
                Resource::IpPool(o) => {
                    cluster.ip_pools.insert(o.name.clone(), o);
                }
                Resource::HostEndpoint(o) => {
                    cluster.host_endpoints.insert(o.name.clone(), o);
                }
                Resource::Service(o) => {
                    cluster.services.insert(key(&o.namespace, &o.name), o);
                }
                Resource::EndpointSlice(o) => {
                    cluster
                        .endpoint_slices
                        .insert(key(&o.namespace, &o.name), o);
                }
                Resource::IpamBlock(o) => {
                    cluster.ipam_blocks.insert(o.name.clone(), o);
                }
            }
        }

        cluster
            .tiers
            .entry(DEFAULT_TIER.to_owned())
            .or_insert_with(Tier::implicit_default);

        let used_namespaces: Vec<String> = cluster
            .origins
            .keys()
            .filter_map(|o| o.namespace.clone())
            .collect();
        for ns in used_namespaces {
            cluster
                .namespaces
                .entry(ns.clone())
                .or_insert_with(|| Namespace::implicit(&ns));
        }

        for pod in cluster.pods.values() {
            cluster
                .service_accounts
                .entry(NamespacedName::new(&pod.namespace, &pod.service_account))
                .or_insert_with(|| ServiceAccount {
                    namespace: pod.namespace.clone(),
                    name: pod.service_account.clone(),
                    labels: Labels::new(),
                });
        }

        let tier_refs = cluster
            .policies
            .values()
            .map(|p| {
                (
                    ObjectRef::namespaced(Kind::NetworkPolicy, &p.namespace, &p.name),
                    &p.spec.tier,
                )
            })
            .chain(cluster.global_policies.values().map(|p| {
                (
                    ObjectRef::cluster(Kind::GlobalNetworkPolicy, &p.name),
                    &p.spec.tier,
                )
            }));
        for (object, tier) in tier_refs {
            if !cluster.tiers.contains_key(tier) {
                errors.push(cluster.invalid(
                    object,
                    "spec.tier",
                    format!("tier \"{tier}\" does not exist: define a Tier named {tier}"),
                ));
            }
        }

        let mut owners: BTreeMap<IpAddr, &Pod> = BTreeMap::new();
        let mut clashes = Vec::new();
        for pod in cluster.pods.values().filter(|p| !p.host_network) {
            for ip in &pod.ips {
                if let Some(owner) = owners.insert(*ip, pod) {
                    clashes.push((
                        ObjectRef::namespaced(Kind::Pod, &pod.namespace, &pod.name),
                        format!(
                            "{ip} is also the address of Pod {}/{}; pod addresses must be unique",
                            owner.namespace, owner.name
                        ),
                    ));
                }
            }
        }
        for (object, message) in clashes {
            errors.push(cluster.invalid(object, "status.podIPs", message));
        }

        // Each address belongs to at most one pool, so IPAM never has to choose. Reported
        // on the later pool by name, naming the earlier.
        let pools: Vec<&IpPool> = cluster.ip_pools.values().collect();
        let mut overlaps = Vec::new();
        for (i, later) in pools.iter().enumerate() {
            for earlier in &pools[..i] {
                if earlier.cidr.contains(&later.cidr.network())
                    || later.cidr.contains(&earlier.cidr.network())
                {
                    overlaps.push((
                        ObjectRef::cluster(Kind::IpPool, &later.name),
                        format!(
                            "{} overlaps IPPool {} ({}): pools must not overlap",
                            later.cidr, earlier.name, earlier.cidr
                        ),
                    ));
                }
            }
        }
        for (object, message) in overlaps {
            errors.push(cluster.invalid(object, "spec.cidr", message));
        }

        // A pod address routes to one node: blocks never overlap (IPAM cuts them from
        // pools that do not). Reported on the later block by name, naming the earlier.
        let mut overlaps = Vec::new();
        let mut kept: Vec<&IpamBlock> = Vec::new();
        for block in cluster.ipam_blocks.values() {
            match kept.iter().find(|k| block_overlap(k, block).is_some()) {
                Some(earlier) => overlaps.push((
                    ObjectRef::cluster(Kind::IpamBlock, &block.name),
                    block_overlap(earlier, block).unwrap_or_default(),
                )),
                None => kept.push(block),
            }
        }
        for (object, message) in overlaps {
            errors.push(cluster.invalid(object, "spec.cidr", message));
        }

        if errors.is_empty() {
            Ok(cluster)
        } else {
            Err(errors)
        }
    }

    /// Loads and gathers several inputs, given as `(name, yaml)`: every file is read (each
    /// stops at its own first problem) and all problems are returned together.
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Cluster, Vec<LoadError>> {
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        for (name, yaml) in sources {
            match load_documents(yaml, name) {
                Ok(loaded) => objects.extend(loaded),
                Err(e) => errors.push(e),
            }
        }
        match Cluster::from_objects(objects) {
            Ok(cluster) if errors.is_empty() => Ok(cluster),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// The tiers in evaluation order: by `order`, unordered last, ties by name.
    pub fn ordered_tiers(&self) -> Vec<&Tier> {
        let mut tiers: Vec<&Tier> = self.tiers.values().collect();
        tiers.sort_by(|a, b| compare_order((a.order, &a.name), (b.order, &b.name)));
        tiers
    }

    /// The labels of a namespace (`None` if there is no such namespace).
    pub fn namespace_labels(&self, namespace: &str) -> Option<&Labels> {
        self.namespaces.get(namespace).map(|ns| &ns.labels)
    }

    fn invalid(&self, object: ObjectRef, field: &str, message: String) -> LoadError {
        let origin = self
            .origins
            .get(&object)
            .cloned()
            .unwrap_or_else(|| Origin {
                source: String::new(),
                document: 0,
                item: None,
            });
        LoadError::Invalid {
            origin,
            error: ValidationError {
                object,
                field: field.to_owned(),
                message,
            },
        }
    }
}

/// Why `later` may not join the model beside `earlier` (another block over some of the same
/// addresses), or `None` when it may.
pub fn block_overlap(earlier: &IpamBlock, later: &IpamBlock) -> Option<String> {
    let overlap = earlier.name != later.name
        && (earlier.cidr.contains(&later.cidr.network())
            || later.cidr.contains(&earlier.cidr.network()));
    overlap.then(|| {
        format!(
            "{} (node {}) overlaps IPAMBlock {} ({}, node {}): a pod address routes to one \
             node, so blocks must not overlap",
            later.cidr, later.node, earlier.name, earlier.cidr, earlier.node
        )
    })
}

/// Reads `apiVersion` and `kind`.
fn type_of(
    value: &Value,
    origin: &Origin,
    item: Option<usize>,
) -> Result<(String, String), LoadError> {
    let what = if item.is_some() {
        "list item"
    } else {
        "document"
    };
    if !value.is_mapping() {
        return Err(LoadError::NotAnObject {
            origin: origin.clone(),
            message: format!(
                "the {what} is not a Kubernetes object (a mapping with apiVersion and kind)"
            ),
        });
    }
    let field = |name: &str| match value.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(LoadError::NotAnObject {
            origin: origin.clone(),
            message: format!("the {what} has no `{name}`: every object needs apiVersion and kind"),
        }),
    };
    Ok((field("apiVersion")?, field("kind")?))
}

/// Decodes and validates one object of a known type.
fn decode_object(
    value: Value,
    api_version: &str,
    kind: &str,
    origin: Origin,
) -> Result<Object, LoadError> {
    let Some(kind) = Kind::from_type(api_version, kind) else {
        return Err(LoadError::UnknownKind {
            origin,
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    };
    let object = object_ref_of(&value, kind);
    let fail = |error: ValidationError| LoadError::Invalid {
        origin: origin.clone(),
        error,
    };
    let resource = match kind {
        Kind::Namespace => Resource::Namespace(
            Namespace::from_api(decode_k8s(value, &object, &origin)?).map_err(fail)?,
        ),
        Kind::Pod => {
            Resource::Pod(Pod::from_api(decode_k8s(value, &object, &origin)?).map_err(fail)?)
        }
        Kind::ServiceAccount => Resource::ServiceAccount(
            ServiceAccount::from_api(decode_k8s(value, &object, &origin)?).map_err(fail)?,
        ),
        Kind::K8sNetworkPolicy => Resource::K8sNetworkPolicy(
            K8sNetworkPolicy::from_api(decode_k8s(value, &object, &origin)?).map_err(fail)?,
        ),
        Kind::Tier => Resource::Tier(
            Tier::from_wire(decode::<TierWire>(value, &object, &origin)?).map_err(fail)?,
        ),
        Kind::NetworkPolicy => Resource::NetworkPolicy(
            NetworkPolicy::from_wire(decode::<NetworkPolicyWire>(value, &object, &origin)?)
                .map_err(fail)?,
        ),
        Kind::GlobalNetworkPolicy => Resource::GlobalNetworkPolicy(
            GlobalNetworkPolicy::from_wire(decode::<GlobalNetworkPolicyWire>(
                value, &object, &origin,
            )?)
            .map_err(fail)?,
        ),
        Kind::NetworkSet => Resource::NetworkSet(
            NetworkSet::from_wire(decode::<NetworkSetWire>(value, &object, &origin)?)
                .map_err(fail)?,
        ),
        Kind::GlobalNetworkSet => Resource::GlobalNetworkSet(
            GlobalNetworkSet::from_wire(decode::<GlobalNetworkSetWire>(value, &object, &origin)?)
                .map_err(fail)?,
        ),
        Kind::Node => {
            Resource::Node(Node::from_api(decode_k8s(value, &object, &origin)?).map_err(fail)?)
        }
        Kind::IpPool => Resource::IpPool(
            IpPool::from_wire(decode::<IpPoolWire>(value, &object, &origin)?).map_err(fail)?,
        ),
        Kind::HostEndpoint => Resource::HostEndpoint(
            HostEndpoint::from_wire(decode::<HostEndpointWire>(value, &object, &origin)?)
                .map_err(fail)?,
        ),
        Kind::Service => Resource::Service(
            Service::from_api(decode_k8s(value, &object, &origin)?).map_err(fail)?,
        ),
        Kind::EndpointSlice => Resource::EndpointSlice(
            EndpointSlice::from_api(decode_k8s(value, &object, &origin)?).map_err(fail)?,
        ),
        Kind::IpamBlock => Resource::IpamBlock(
            IpamBlock::from_wire(decode::<IpamBlockWire>(value, &object, &origin)?)
                .map_err(fail)?,
        ),
    };
    Ok(Object { origin, resource })
}

/// The object a document describes, read before decoding so that decode errors can name
/// it.
fn object_ref_of(value: &Value, kind: Kind) -> ObjectRef {
    let meta = |name: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = meta("name").unwrap_or_default();
    if kind.is_namespaced() {
        ObjectRef::namespaced(kind, meta("namespace").unwrap_or("default"), name)
    } else {
        ObjectRef::cluster(kind, name)
    }
}

/// Decodes a document strictly into `T`, reporting the path of a failure.
fn decode<T: DeserializeOwned>(
    value: Value,
    object: &ObjectRef,
    origin: &Origin,
) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        LoadError::Invalid {
            origin: origin.clone(),
            error: ValidationError {
                object: object.clone(),
                field: if path == "." {
                    "(top level)".to_owned()
                } else {
                    path
                },
                message: e.into_inner().to_string(),
            },
        }
    })
}

/// Decodes a Kubernetes object with k8s-openapi and rejects fields it dropped.
fn decode_k8s<T: DeserializeOwned + serde::Serialize>(
    value: Value,
    object: &ObjectRef,
    origin: &Origin,
) -> Result<T, LoadError> {
    let typed: T = decode(value.clone(), object, origin)?;
    // Serialising a k8s-openapi value into a YAML value cannot fail (string keys only); if
    // it somehow did, the strictness check is skipped rather than the object rejected.
    if let Ok(known) = serde_yaml::to_value(&typed) {
        if let Some(field) = first_unknown_field(&value, &known, "") {
            return Err(LoadError::Invalid {
                origin: origin.clone(),
                error: ValidationError {
                    object: object.clone(),
                    field,
                    message: "unknown field (Kubernetes would reject it under strict field \
                              validation)"
                        .to_owned(),
                },
            });
        }
    }
    Ok(typed)
}

/// The path of the first field present (and not null) in `input` but missing in `known`.
fn first_unknown_field(input: &Value, known: &Value, path: &str) -> Option<String> {
    match (input, known) {
        (Value::Mapping(input), Value::Mapping(known)) => {
            for (key, value) in input {
                if value.is_null() {
                    continue;
                }
                let name = match key {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                let here = if path.is_empty() {
                    name
                } else {
                    format!("{path}.{name}")
                };
                match known.get(key) {
                    None => return Some(here),
                    Some(inner) => {
                        if let Some(found) = first_unknown_field(value, inner, &here) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        (Value::Sequence(input), Value::Sequence(known)) => input
            .iter()
            .zip(known)
            .enumerate()
            .find_map(|(i, (a, b))| first_unknown_field(a, b, &format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{PolicyTypes, TargetPort, TierDefaultAction, NAMESPACE_NAME_LABEL};
    use super::super::selector::Selector;
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/policy/all-kinds.yaml");

    fn load(yaml: &str) -> Result<Vec<Object>, LoadError> {
        load_documents(yaml, "in.yaml")
    }

    fn cluster(yaml: &str) -> Result<Cluster, Vec<String>> {
        Cluster::from_objects(load(yaml).unwrap())
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_node_with_a_bad_pod_cidr_or_address_is_refused_by_field() {
        let node = |cidr: &str, addr: &str| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\nspec: {{podCIDRs: \
                 [\"{cidr}\"]}}\nstatus: {{addresses: [{{type: InternalIP, address: \"{addr}\"}}]}}\n"
            )
        };
        let e = load(&node("198.18.0.1/24", "198.18.250.1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.podCIDRs[0]"), "{e}");
        let e = load(&node("198.18.0.0/24", "not-an-ip"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("status.addresses[0].address"), "{e}");
        assert!(load(&node("198.18.0.0/24", "198.18.250.1")).is_ok());
    }

    #[test]
    fn fixture_with_every_kind_loads() {
        let objects = load_documents(FIXTURE, "all-kinds.yaml").unwrap();
        let mut kinds: Vec<Kind> = objects
            .iter()
            .map(|o| o.resource.object_ref().kind)
            .collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds, Kind::ALL.to_vec(), "one of each kind");
        let c = Cluster::from_objects(objects).unwrap();
        let node = &c.nodes["node-b"];
        assert_eq!(node.pod_cidrs.len(), 2);
        assert_eq!(
            node.internal_ips,
            ["198.18.250.2".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(node
            .annotations
            .contains_key("weir.dev/wireguard-public-key"));
        assert_eq!(c.namespaces["shop"].labels["team"], "retail");
        assert_eq!(c.namespaces["shop"].labels[NAMESPACE_NAME_LABEL], "shop");
        let web = &c.pods[&NamespacedName::new("shop", "web")];
        assert_eq!(web.ips.len(), 2);
        assert_eq!(web.service_account, "web-sa");
        assert_eq!(
            c.service_accounts[&NamespacedName::new("shop", "web-sa")].labels["tier"],
            "front"
        );
        let knp = &c.k8s_policies[&NamespacedName::new("shop", "db-ingress")];
        assert_eq!(
            knp.types,
            PolicyTypes {
                ingress: true,
                egress: false
            }
        );
        let np = &c.policies[&NamespacedName::new("shop", "allow-web")];
        assert_eq!(np.spec.tier, "security");
        let gnp = &c.global_policies["security.deny-external"];
        assert!(gnp.spec.types.egress);
        assert_eq!(c.tiers["security"].default_action, TierDefaultAction::Pass);
        let order: Vec<&str> = c.ordered_tiers().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(order, ["security", "default"]);
        assert_eq!(c.network_sets.len(), 1);
        assert_eq!(c.global_network_sets.len(), 1);
        let pool = &c.ip_pools["pods-v4"];
        assert_eq!(
            (pool.cidr.to_string(), pool.block_size, pool.disabled),
            ("198.18.64.0/18".to_owned(), 24, false)
        );
        assert_eq!(pool.node_selector.to_string(), "zone == \"b\"");
        let hep = &c.host_endpoints["node-b-uplink"];
        assert_eq!(
            (hep.node.as_str(), hep.interface_name.as_deref()),
            ("node-b", Some("eth0"))
        );
        assert_eq!(hep.labels["role"], "uplink");
        let db = &c.services[&NamespacedName::new("shop", "db")];
        assert_eq!(db.cluster_ips.len(), 2);
        assert_eq!(db.ports[0].target_port, TargetPort::Named("pg".into()));
        let slice = &c.endpoint_slices[&NamespacedName::new("shop", "db-x7k2p")];
        assert_eq!(slice.service.as_deref(), Some("db"));
        assert_eq!(
            slice.endpoints[0].pod,
            Some(NamespacedName::new("shop", "db"))
        );
        assert_eq!(
            c.origins[&ObjectRef::cluster(Kind::Tier, "security")].to_string(),
            "all-kinds.yaml document 1"
        );
        let block = &c.ipam_blocks["198-18-64-0-24"];
        assert_eq!(
            (block.cidr.to_string().as_str(), block.node.as_str()),
            ("198.18.64.0/24", "node-b")
        );
    }

    fn block(name: &str, cidr: &str, node: &str) -> String {
        format!(
            "apiVersion: weir.dev/v1\nkind: IPAMBlock\nmetadata: {{name: {name}}}\nspec: \
             {{cidr: \"{cidr}\", pool: p, node: \"{node}\"}}\n---\n"
        )
    }

    #[test]
    fn a_malformed_or_overlapping_ipam_block_is_refused_by_field() {
        let e = load(&block("b1", "198.18.64.1/26", "n1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("IPAMBlock b1") && e.contains("spec.cidr") && e.contains("198.18.64.0/26"),
            "{e}"
        );
        let e = load(&block("b1", "198.18.64.0/26", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.node"), "{e}");
        let e = load(&block("b1", "198.18.64.0/26", "Not_A_Node"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.node"), "{e}");
        let e = load("apiVersion: weir.dev/v1\nkind: IPAMBlock\nmetadata: {name: b1}\nspec: {cidr: \"198.18.64.0/26\", pool: p, node: n1, owner: x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("owner"), "an unknown field is an error: {e}");
        // Two nodes' blocks of one pool side by side are fine; one block over another is not.
        let side_by_side = format!(
            "{}{}",
            block("b1", "198.18.64.0/26", "n1"),
            block("b2", "198.18.64.64/26", "n2")
        );
        assert_eq!(cluster(&side_by_side).unwrap().ipam_blocks.len(), 2);
        let over = format!(
            "{}{}",
            block("b1", "198.18.64.0/26", "n1"),
            block("b2", "198.18.64.0/25", "n2")
        );
        let errors = cluster(&over).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("IPAMBlock b2")
                && errors[0].contains("spec.cidr")
                && errors[0].contains("overlaps IPAMBlock b1"),
            "{errors:?}"
        );
    }

    #[test]
    fn documents_lists_and_empty_documents() {
        let yaml = "---\n# a comment only\n---\napiVersion: v1\nkind: Namespace\nmetadata: \
                    {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  \
                    kind: Namespace\n  metadata: {name: b}\n- apiVersion: weir.dev/v1\n  kind: \
                    Tier\n  metadata: {name: t}\n---\napiVersion: v1\nkind: PodList\nitems:\n- \
                    metadata: {name: p, namespace: b}\n";
        let objects = load(yaml).unwrap();
        let refs: Vec<String> = objects
            .iter()
            .map(|o| format!("{} @ {}", o.resource.object_ref(), o.origin))
            .collect();
        assert_eq!(
            refs,
            [
                "Namespace a @ in.yaml document 2",
                "Namespace b @ in.yaml document 4 items[0]",
                "Tier t @ in.yaml document 4 items[1]",
                "Pod b/p @ in.yaml document 5 items[0]",
            ]
        );
        assert_eq!(load("").unwrap(), vec![]);
        assert_eq!(
            load("apiVersion: v1\nkind: List\nitems: []\n").unwrap(),
            vec![]
        );
    }

    #[test]
    fn unknown_kinds_name_the_kind_file_and_document() {
        let e = load(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: \
                      apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
        )
        .unwrap_err();
        assert!(matches!(&e, LoadError::UnknownKind { kind, .. } if kind == "Deployment"));
        assert!(e.to_string().starts_with(
            "in.yaml document 2: unknown kind \"Deployment\" (apiVersion \"apps/v1\"): weir reads"
        ));
        let e = load("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\n").unwrap_err();
        assert!(e.to_string().contains(
            "unknown kind \"NetworkPolicy\" (apiVersion \
                                        \"projectcalico.org/v3\")"
        ));
        let e = load("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n")
            .unwrap_err();
        assert!(e
            .to_string()
            .starts_with("in.yaml document 1 items[0]: unknown kind \"ConfigMap\""));
        let e = load("apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\n").unwrap_err();
        assert!(matches!(e, LoadError::UnknownKind { .. }), "{e}");
    }

    #[test]
    fn malformed_documents() {
        let e = load("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkey: [unclosed\n")
            .unwrap_err();
        assert!(matches!(e, LoadError::Yaml { document: 2, .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("in.yaml document 2: not valid YAML: "),
            "{e}"
        );
        let e = load("- just\n- a list\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "in.yaml document 1: the document is not a Kubernetes object (a mapping with \
             apiVersion and kind)"
        );
        let e = load("kind: Pod\nmetadata: {name: a}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "in.yaml document 1: the document has no `apiVersion`: every object needs \
             apiVersion and kind"
        );
        let e = load("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: 3}\n")
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "in.yaml document 1: Pod default/a: spec.containers: \
                                           invalid type: integer `3`"
            ),
            "{e}"
        );
    }

    #[test]
    fn duplicates_are_errors_across_files() {
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
        let errors = Cluster::from_sources([("one.yaml", ns), ("two.yaml", ns)]).unwrap_err();
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["Namespace a is defined twice: in one.yaml document 1 and in two.yaml document 1"]
        );
        // The same name in two kinds or two namespaces is fine.
        let c = cluster(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n---\n\
             apiVersion: weir.dev/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n---\n\
             apiVersion: weir.dev/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n",
        )
        .unwrap();
        assert_eq!((c.k8s_policies.len(), c.policies.len()), (1, 2));
    }

    #[test]
    fn implicit_namespaces_tier_and_service_accounts() {
        let c = cluster(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: orphan, labels: {a: \
             b}}\nspec: {serviceAccountName: robot, containers: []}\n---\napiVersion: \
             weir.dev/v1\nkind: NetworkSet\nmetadata: {name: s, namespace: other}\n",
        )
        .unwrap();
        assert_eq!(c.namespaces["orphan"], Namespace::implicit("orphan"));
        assert_eq!(
            c.namespace_labels("orphan"),
            Some(&Labels::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                "orphan".to_owned()
            )]))
        );
        assert!(c.namespaces.contains_key("other"));
        assert_eq!(c.tiers["default"], Tier::implicit_default());
        assert!(c.service_accounts[&NamespacedName::new("orphan", "robot")]
            .labels
            .is_empty());
        let sel = Selector::parse("kubernetes.io/metadata.name == 'orphan'").unwrap();
        assert!(sel.matches(&c.namespaces["orphan"].labels));
    }

    #[test]
    fn services_and_slices_are_keyed_by_namespace_and_name() {
        let svc = |ns: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec: \
                 {{ports: [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: \
                 EndpointSlice\nmetadata: {{name: web-1, namespace: {ns}}}\naddressType: IPv4\n---\n"
            )
        };
        let c = cluster(&format!("{}{}", svc("a"), svc("b"))).unwrap();
        assert_eq!((c.services.len(), c.endpoint_slices.len()), (2, 2));
        assert!(c.namespaces.contains_key("a") && c.namespaces.contains_key("b"));
        assert!(c
            .endpoint_slices
            .contains_key(&NamespacedName::new("b", "web-1")));
        let errors = cluster(&format!("{}{}", svc("a"), svc("a"))).unwrap_err();
        assert_eq!(
            errors,
            [
                "Service a/web is defined twice: in in.yaml document 1 and in in.yaml document 3",
                "EndpointSlice a/web-1 is defined twice: in in.yaml document 2 and in in.yaml \
                 document 4",
            ]
        );
    }

    #[test]
    fn overlapping_ip_pools_are_errors_naming_both() {
        let pool = |name: &str, cidr: &str| {
            format!("apiVersion: weir.dev/v1\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: \"{cidr}\"}}\n---\n")
        };
        let ok = format!(
            "{}{}{}",
            pool("a", "198.18.0.0/16"),
            pool("b", "198.19.0.0/16"),
            pool("c", "2001:db8::/48")
        );
        assert_eq!(cluster(&ok).unwrap().ip_pools.len(), 3);
        let errors = cluster(&format!(
            "{}{}{}",
            pool("wide", "198.18.0.0/15"),
            pool("inner", "198.19.4.0/24"),
            pool("v6", "2001:db8::/48")
        ))
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "in.yaml document 1: IPPool wide: spec.cidr: 198.18.0.0/15 overlaps IPPool inner \
              (198.19.4.0/24): pools must not overlap"
            ]
        );
    }

    #[test]
    fn cluster_checks_tiers_and_pod_addresses() {
        let errors = cluster(
            "apiVersion: weir.dev/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec: \
             {tier: missing}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\nstatus: \
             {podIP: 10.0.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\nstatus: \
             {podIP: 10.0.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: h}\nspec: \
             {hostNetwork: true, containers: []}\nstatus: {podIP: 10.0.0.1}\n",
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "in.yaml document 1: GlobalNetworkPolicy g: spec.tier: tier \"missing\" does \
                 not exist: define a Tier named missing",
                "in.yaml document 3: Pod default/b: status.podIPs: 10.0.0.1 is also the address \
                 of Pod default/a; pod addresses must be unique",
            ]
        );
    }
}
