//! The calculation: cluster state in, this node's policy tables out, change by change.
//!
//! A [`Calculator`] holds the model (every validated object, by identity) and applies
//! [`Change`]s to it one object at a time, keeping the invariants
//! [`Cluster::from_objects`] establishes for a whole load: namespaced objects have their
//! namespace, pods their service account, policies their tier, and no two pods share an
//! address. A change that would break one is refused with a reason naming the object and
//! field, and the object's last good version stays (the rest of the change applies).
//!
//! Each change also tells the selector [`Cache`] what it touched, through its label index,
//! so that [`Calculator::compile`] re-resolves only the selectors whose result can differ
//! and compiles only the policies that select one of this node's pods. A relist (after a
//! watch expired, or the file datastore read again) is a [`Change::Resync`]: the calculator
//! works out the difference and applies it in the same step, so the tables go from the old
//! state to the new one without passing through an empty one.
//!
//! Which pods are this node's: those whose `spec.nodeName` is the node, or that have no
//! node name but carry the `weir.dev/interface` annotation (the file datastore's way of
//! saying "attached here"), and that have the annotation: a pod scheduled here but not yet
//! attached is not an endpoint, so nothing reaches it until its interface and its policy
//! arrive together in one snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::policy::compile::{compile_local, Cache, Compiled};
use crate::policy::load::{block_overlap, Cluster, Object, Origin, Resource};
use crate::policy::model::{
    Kind, Namespace, NamespacedName, ObjectRef, Pod, ServiceAccount, Tier, DEFAULT_TIER,
};
use crate::policy::selector::Labels;
use crate::services::index::{ServiceIndex, Touched};

/// The annotation that names a local pod's host-side interface.
pub const INTERFACE_ANNOTATION: &str = "weir.dev/interface";
/// The annotation that holds a local pod's MAC.
pub const MAC_ANNOTATION: &str = "weir.dev/mac";
/// Annotation with the MAC of the host end of a pod's interface (weir's gateway MAC on
/// that link), set from the attachment so that a publication reads no interface.
pub const HOST_MAC_ANNOTATION: &str = "weir.dev/host-mac";
/// Annotation with the MTU of a pod's interface, set from the attachment.
pub const MTU_ANNOTATION: &str = "weir.dev/mtu";

/// A pod attached on this node through the CNI plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The pod.
    pub pod: NamespacedName,
    /// The runtime's container id.
    pub container_id: String,
    /// The host-side interface.
    pub interface: String,
    /// The pod interface's MAC.
    pub mac: String,
    /// The host end's MAC, when known (records written before it was kept have none).
    pub host_mac: Option<String>,
    /// The interface's MTU, when known.
    pub mtu: Option<u16>,
    /// The pod's addresses.
    pub ips: Vec<IpAddr>,
}

/// A pod as attached: its addresses and interface from the attachment, on this node.
fn overlay(a: &Attachment, mut pod: Pod, node: &str) -> Pod {
    pod.ips = a.ips.clone();
    pod.host_network = false;
    pod.node_name = Some(node.to_owned());
    pod.annotations
        .insert(INTERFACE_ANNOTATION.to_owned(), a.interface.clone());
    pod.annotations
        .insert(MAC_ANNOTATION.to_owned(), a.mac.clone());
    if let Some(m) = &a.host_mac {
        pod.annotations
            .insert(HOST_MAC_ANNOTATION.to_owned(), m.clone());
    }
    if let Some(mtu) = a.mtu {
        pod.annotations
            .insert(MTU_ANNOTATION.to_owned(), mtu.to_string());
    }
    pod
}

/// The pod of an attachment the datastore does not know yet: no labels, default account.
fn bare_pod(a: &Attachment) -> Pod {
    Pod {
        namespace: a.pod.namespace.clone(),
        name: a.pod.name.clone(),
        labels: Labels::new(),
        ips: Vec::new(),
        container_ports: Vec::new(),
        service_account: "default".into(),
        host_network: false,
        node_name: None,
        annotations: BTreeMap::new(),
    }
}

/// One change to the cluster's state.
// An upsert carries its object inline: changes arrive once per object event, far from the
// packet path, and boxing would cost an allocation per change for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Change {
    /// An object as it now is, validated.
    Upsert(Object),
    /// An object is gone.
    Delete(ObjectRef),
    /// A pod attached here by the CNI plugin.
    Attach(Attachment),
    /// A pod detached by the CNI plugin.
    Detach(NamespacedName),
    /// Every object of these kinds, as listed now: what is not in the list is gone.
    Resync {
        /// The kinds the list covers.
        kinds: Vec<Kind>,
        /// Their objects.
        objects: Vec<Object>,
    },
}

/// What a datastore reports to the control loop.
// As with `Change`: one per object event, so the inline change is not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Update {
    /// A change to apply, and when it was received.
    Change {
        /// The change.
        change: Change,
        /// When the watch delivered it.
        noticed: Instant,
    },
    /// An object was refused by validation (already logged and reported as an Event).
    Invalid {
        /// The object, if its identity could be read.
        object: Option<ObjectRef>,
        /// Why, naming the field.
        message: String,
    },
    /// A change made on this node (a CNI attach or detach); `done` is answered once the
    /// tables that include it are published (or with why not).
    Local {
        /// The change.
        change: Change,
        /// Where the outcome goes.
        done: std::sync::mpsc::Sender<Result<(), String>>,
    },
    /// A kind's first complete list has been delivered.
    Synced(Kind),
    /// Something outside the datastore that the tables depend on changed (the kernel's
    /// routes or neighbours): recalculate with what the model holds.
    Recalculate(&'static str),
    /// A watch failed; kube-rs retries it with backoff.
    WatchError {
        /// The kind.
        kind: Kind,
        /// What went wrong.
        message: String,
    },
}

/// A change, or part of one, that was not applied; the object's last good version (if
/// any) stays in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The object.
    pub object: ObjectRef,
    /// The field at fault, if one is.
    pub field: String,
    /// Why.
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{}: {}: {}", self.object, self.field, self.message)
        }
    }
}

/// The model and the selector cache of one node. See the module doc.
#[derive(Debug)]
pub struct Calculator {
    node: String,
    cluster: Cluster,
    /// Endpoint addresses and the pod holding each.
    owners: HashMap<IpAddr, NamespacedName>,
    local: BTreeSet<NamespacedName>,
    cache: Cache,
    /// Pods attached by the CNI plugin, with their datastore version (if any).
    attached: BTreeMap<NamespacedName, (Attachment, Option<Pod>)>,
    /// Which Services changed since the service table was last derived, and its indexes.
    services: ServiceIndex,
    /// The last compilation's tables, while no change since can have changed them.
    last: Option<Compiled>,
    /// Compilations answered with the last tables.
    skipped: u64,
}

fn refusal(object: &ObjectRef, field: &str, message: String) -> Refusal {
    Refusal {
        object: object.clone(),
        field: field.to_owned(),
        message,
    }
}

impl Calculator {
    /// An empty model for node `node`.
    pub fn new(node: &str) -> Calculator {
        let mut cluster = Cluster::default();
        cluster
            .tiers
            .insert(DEFAULT_TIER.to_owned(), Tier::implicit_default());
        Calculator {
            node: node.to_owned(),
            cluster,
            owners: HashMap::new(),
            local: BTreeSet::new(),
            cache: Cache::default(),
            attached: BTreeMap::new(),
            services: ServiceIndex::default(),
            last: None,
            skipped: 0,
        }
    }

    /// The Services changed since the last call, and the indexes their derivation reads.
    pub fn service_changes(&mut self) -> (&Cluster, &ServiceIndex, Touched) {
        let touched = self.services.take();
        (&self.cluster, &self.services, touched)
    }

    /// The model as it stands.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The objects the model holds, by identity (copied out of the model).
    pub fn objects(&self) -> BTreeMap<ObjectRef, Object> {
        self.cluster
            .origins
            .iter()
            .filter_map(|(id, origin)| {
                let resource = self.held(id)?;
                Some((
                    id.clone(),
                    Object {
                        origin: origin.clone(),
                        resource,
                    },
                ))
            })
            .collect()
    }

    /// An object as the model holds it.
    fn held(&self, id: &ObjectRef) -> Option<Resource> {
        let c = &self.cluster;
        let key = || NamespacedName::new(id.namespace.clone().unwrap_or_default(), &id.name);
        Some(match id.kind {
            Kind::Namespace => Resource::Namespace(c.namespaces.get(&id.name)?.clone()),
            Kind::Pod => Resource::Pod(c.pods.get(&key())?.clone()),
            Kind::ServiceAccount => {
                Resource::ServiceAccount(c.service_accounts.get(&key())?.clone())
            }
            Kind::K8sNetworkPolicy => {
                Resource::K8sNetworkPolicy(c.k8s_policies.get(&key())?.clone())
            }
            Kind::Tier => Resource::Tier(c.tiers.get(&id.name)?.clone()),
            Kind::NetworkPolicy => Resource::NetworkPolicy(c.policies.get(&key())?.clone()),
            Kind::GlobalNetworkPolicy => {
                Resource::GlobalNetworkPolicy(c.global_policies.get(&id.name)?.clone())
            }
            Kind::NetworkSet => Resource::NetworkSet(c.network_sets.get(&key())?.clone()),
            Kind::GlobalNetworkSet => {
                Resource::GlobalNetworkSet(c.global_network_sets.get(&id.name)?.clone())
            }
            Kind::Node => Resource::Node(c.nodes.get(&id.name)?.clone()),
            Kind::IpPool => Resource::IpPool(c.ip_pools.get(&id.name)?.clone()),
            Kind::HostEndpoint => Resource::HostEndpoint(c.host_endpoints.get(&id.name)?.clone()),
            Kind::Service => Resource::Service(c.services.get(&key())?.clone()),
            Kind::EndpointSlice => Resource::EndpointSlice(c.endpoint_slices.get(&key())?.clone()),
            Kind::IpamBlock => Resource::IpamBlock(c.ipam_blocks.get(&id.name)?.clone()),
        })
    }

    /// Whether the model holds exactly this version of the object (compared in place).
    fn holds(&self, r: &Resource) -> bool {
        let c = &self.cluster;
        let key = |ns: &str, name: &str| NamespacedName::new(ns, name);
        if !self.cluster.origins.contains_key(&r.object_ref()) {
            return false;
        }
        match r {
            Resource::Namespace(o) => c.namespaces.get(&o.name) == Some(o),
            Resource::Pod(o) => c.pods.get(&key(&o.namespace, &o.name)) == Some(o),
            Resource::ServiceAccount(o) => {
                c.service_accounts.get(&key(&o.namespace, &o.name)) == Some(o)
            }
            Resource::K8sNetworkPolicy(o) => {
                c.k8s_policies.get(&key(&o.namespace, &o.name)) == Some(o)
            }
            Resource::Tier(o) => c.tiers.get(&o.name) == Some(o),
            Resource::NetworkPolicy(o) => c.policies.get(&key(&o.namespace, &o.name)) == Some(o),
            Resource::GlobalNetworkPolicy(o) => c.global_policies.get(&o.name) == Some(o),
            Resource::NetworkSet(o) => c.network_sets.get(&key(&o.namespace, &o.name)) == Some(o),
            Resource::GlobalNetworkSet(o) => c.global_network_sets.get(&o.name) == Some(o),
            Resource::Node(o) => c.nodes.get(&o.name) == Some(o),
            Resource::IpPool(o) => c.ip_pools.get(&o.name) == Some(o),
            Resource::HostEndpoint(o) => c.host_endpoints.get(&o.name) == Some(o),
            Resource::Service(o) => c.services.get(&key(&o.namespace, &o.name)) == Some(o),
            Resource::EndpointSlice(o) => {
                c.endpoint_slices.get(&key(&o.namespace, &o.name)) == Some(o)
            }
            Resource::IpamBlock(o) => c.ipam_blocks.get(&o.name) == Some(o),
        }
    }

    /// Whether applying `change` would leave the model as it is: an upsert of exactly the
    /// version held, from the same origin. The control loop skips such changes instead of
    /// recalculating: an `IPAMBlock` is rewritten for every lease on its node, and the
    /// model (which keeps no leases) sees the same block each time.
    pub fn unchanged_by(&self, change: &Change) -> bool {
        match change {
            Change::Upsert(o) => {
                self.cluster.origins.get(&o.resource.object_ref()) == Some(&o.origin)
                    && self.holds(&o.resource)
            }
            _ => false,
        }
    }

    /// This node's attached pods, in name order (the endpoint order of [`Self::compile`]).
    pub fn local_pods(&self) -> impl Iterator<Item = &NamespacedName> {
        self.local.iter()
    }

    /// Selector resolutions cached.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Whether a pod is attached to this node.
    pub fn is_local(&self, pod: &Pod) -> bool {
        pod.annotations.contains_key(INTERFACE_ANNOTATION)
            && pod.node_name.as_ref().is_none_or(|n| *n == self.node)
    }

    /// Compiles this node's tables from the model as it is now. When no change since the
    /// last compilation can have changed them (see [`Calculator::reaches_tables`] and
    /// [`Cache::stale`]), they are the last compilation's, not compiled again: most of a
    /// cluster's changes are about pods and policies this node's endpoints never meet.
    pub fn compile(&mut self) -> Compiled {
        if !self.cache.stale() {
            if let Some(last) = &self.last {
                self.skipped += 1;
                return last.clone();
            }
        }
        let compiled = compile_local(&self.cluster, self.local.iter(), &mut self.cache);
        self.last = Some(compiled.clone());
        compiled
    }

    /// How many compilations were answered with the last one's tables.
    pub fn compilations_skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether `change` can change this node's tables other than through the selector
    /// resolutions and named-port sets the cache tracks (which tell it themselves): the
    /// node's own pods (attached, or becoming so), the namespaces and policies that hold
    /// them, tiers, global policies and service accounts, and every relist. A pod, a
    /// namespace or a policy elsewhere reaches the tables only through a resolution.
    fn reaches_tables(&self, change: &Change) -> bool {
        let (id, new) = match change {
            Change::Resync { .. } | Change::Attach(_) | Change::Detach(_) => return true,
            Change::Upsert(o) => (o.resource.object_ref(), Some(&o.resource)),
            Change::Delete(id) => (id.clone(), None),
        };
        let namespace = id.namespace.as_deref().unwrap_or_default();
        match id.kind {
            Kind::Tier | Kind::GlobalNetworkPolicy | Kind::ServiceAccount => true,
            Kind::Pod => {
                self.local
                    .contains(&NamespacedName::new(namespace, &id.name))
                    || matches!(new, Some(Resource::Pod(p)) if self.is_local(p))
            }
            Kind::Namespace => self.hosts_in(&id.name),
            Kind::K8sNetworkPolicy | Kind::NetworkPolicy => self.hosts_in(namespace),
            Kind::NetworkSet
            | Kind::GlobalNetworkSet
            | Kind::Node
            | Kind::IpPool
            | Kind::HostEndpoint
            | Kind::Service
            | Kind::EndpointSlice
            | Kind::IpamBlock => false,
        }
    }

    /// Tells the compilation's cache of a policy or tier change that can reach the tables:
    /// a namespaced policy alone, a tier or a global policy as a change of them all.
    fn policy_touched(&mut self, id: &ObjectRef) {
        match (id.kind, id.namespace.as_deref()) {
            (Kind::K8sNetworkPolicy | Kind::NetworkPolicy, Some(namespace)) => {
                let name = NamespacedName::new(namespace, &id.name);
                self.cache
                    .policy_changed(id.kind == Kind::K8sNetworkPolicy, &name);
            }
            (
                Kind::Tier
                | Kind::GlobalNetworkPolicy
                | Kind::K8sNetworkPolicy
                | Kind::NetworkPolicy,
                _,
            ) => self.cache.selection_changed(),
            _ => {}
        }
    }

    /// Whether one of this node's pods is in `namespace`.
    fn hosts_in(&self, namespace: &str) -> bool {
        self.local
            .range(NamespacedName::new(namespace, "")..)
            .next()
            .is_some_and(|p| p.namespace == namespace)
    }

    /// Applies one change; returns what was refused.
    pub fn apply(&mut self, change: Change) -> Vec<Refusal> {
        if self.reaches_tables(&change) {
            self.last = None;
            // A policy or tier that can apply here: a namespaced policy is taken into the
            // compilation's kept plan alone, anything else has the policies ordered and
            // selected afresh (the compilation finds changes of its endpoints by itself).
            match &change {
                Change::Resync { .. } => self.cache.selection_changed(),
                Change::Upsert(o) => self.policy_touched(&o.resource.object_ref()),
                Change::Delete(id) => self.policy_touched(id),
                Change::Attach(_) | Change::Detach(_) => {}
            }
        }
        if matches!(
            &change,
            Change::Upsert(Object {
                resource: Resource::Pod(_) | Resource::Namespace(_) | Resource::ServiceAccount(_),
                ..
            }) | Change::Delete(ObjectRef {
                kind: Kind::Pod | Kind::Namespace | Kind::ServiceAccount,
                ..
            })
        ) {
            self.cache.model_changed();
        }
        let mut refused = Vec::new();
        match change {
            Change::Upsert(object) => self.upsert(object, &mut refused),
            Change::Delete(object) => self.delete(&object, &mut refused),
            Change::Resync { kinds, objects } => self.resync(&kinds, objects, &mut refused),
            Change::Attach(a) => self.attach(a, &mut refused),
            Change::Detach(pod) => self.detach(&pod, &mut refused),
        }
        refused
    }

    fn resync(&mut self, kinds: &[Kind], objects: Vec<Object>, refused: &mut Vec<Refusal>) {
        let listed: BTreeSet<ObjectRef> = objects.iter().map(|o| o.resource.object_ref()).collect();
        let gone: Vec<ObjectRef> = self
            .cluster
            .origins
            .keys()
            .filter(|o| kinds.contains(&o.kind) && !listed.contains(*o))
            .cloned()
            .collect();
        // Namespaces and tiers first, so that what lives in them finds them; deletions of
        // those last, after what lived in them is gone.
        let rank = |k: Kind| match k {
            Kind::Namespace | Kind::Tier => 0,
            _ => 1,
        };
        // Blocks that are gone leave first: a block released and an overlapping one
        // claimed in the same list (a pool re-cut with another block size) must not be
        // refused as an overlap with the block that is leaving.
        let (blocks_gone, gone): (Vec<ObjectRef>, Vec<ObjectRef>) =
            gone.into_iter().partition(|o| o.kind == Kind::IpamBlock);
        for o in blocks_gone {
            self.delete(&o, refused);
        }
        let mut objects = objects;
        objects.sort_by_key(|o| rank(o.resource.object_ref().kind));
        for o in objects {
            if self.holds(&o.resource) {
                continue;
            }
            self.upsert(o, refused);
        }
        let mut gone = gone;
        gone.sort_by_key(|o| std::cmp::Reverse(rank(o.kind)));
        for o in gone {
            self.delete(&o, refused);
        }
    }

    fn ns_labels(&self, namespace: &str) -> Labels {
        self.cluster
            .namespace_labels(namespace)
            .cloned()
            .unwrap_or_default()
    }

    /// Makes sure a namespace used by an object exists (implicitly if not loaded).
    fn ensure_namespace(&mut self, namespace: &str) {
        if !self.cluster.namespaces.contains_key(namespace) {
            // A namespace nothing lived in contributed to no set: nothing to invalidate.
            self.cluster
                .namespaces
                .insert(namespace.to_owned(), Namespace::implicit(namespace));
        }
    }

    fn upsert(&mut self, object: Object, refused: &mut Vec<Refusal>) {
        let id = object.resource.object_ref();
        if let Some(namespace) = &id.namespace {
            self.ensure_namespace(namespace);
        }
        match &object.resource {
            Resource::Namespace(ns) => {
                let old = self.ns_labels(&ns.name);
                self.cache.namespace_changed(&ns.name, &old, &ns.labels);
                self.cluster.namespaces.insert(ns.name.clone(), ns.clone());
            }
            Resource::Pod(pod) => {
                let key = NamespacedName::new(&pod.namespace, &pod.name);
                let pod = match self.attached.get_mut(&key) {
                    Some((a, raw)) => {
                        *raw = Some(pod.clone());
                        overlay(a, pod.clone(), &self.node)
                    }
                    None => pod.clone(),
                };
                if !self.put_pod(&id, pod, refused) {
                    return;
                }
            }
            Resource::ServiceAccount(sa) => {
                self.cluster
                    .service_accounts
                    .insert(NamespacedName::new(&sa.namespace, &sa.name), sa.clone());
            }
            Resource::K8sNetworkPolicy(p) => {
                self.cluster
                    .k8s_policies
                    .insert(NamespacedName::new(&p.namespace, &p.name), p.clone());
            }
            Resource::Tier(t) => {
                self.cluster.tiers.insert(t.name.clone(), t.clone());
            }
            Resource::NetworkPolicy(p) => {
                if !self.cluster.tiers.contains_key(&p.spec.tier) {
                    refused.push(missing_tier(&id, &p.spec.tier));
                    return;
                }
                self.cluster
                    .policies
                    .insert(NamespacedName::new(&p.namespace, &p.name), p.clone());
            }
            Resource::GlobalNetworkPolicy(p) => {
                if !self.cluster.tiers.contains_key(&p.spec.tier) {
                    refused.push(missing_tier(&id, &p.spec.tier));
                    return;
                }
                self.cluster
                    .global_policies
                    .insert(p.name.clone(), p.clone());
            }
            Resource::NetworkSet(set) => {
                let key = NamespacedName::new(&set.namespace, &set.name);
                let labels = self.ns_labels(&set.namespace);
                let old = self
                    .cluster
                    .network_sets
                    .get(&key)
                    .map(|s| s.labels.clone());
                self.cache.network_set_changed(
                    Some((&set.namespace, &labels)),
                    old.as_ref(),
                    Some(&set.labels),
                );
                self.cluster.network_sets.insert(key, set.clone());
            }
            Resource::GlobalNetworkSet(set) => {
                let old = self
                    .cluster
                    .global_network_sets
                    .get(&set.name)
                    .map(|s| s.labels.clone());
                self.cache
                    .network_set_changed(None, old.as_ref(), Some(&set.labels));
                self.cluster
                    .global_network_sets
                    .insert(set.name.clone(), set.clone());
            }
            Resource::Node(n) => {
                self.cluster.nodes.insert(n.name.clone(), n.clone());
            }
            Resource::IpPool(pool) => {
                let clash = self.cluster.ip_pools.values().find(|p| {
                    p.name != pool.name
                        && (p.cidr.contains(&pool.cidr.network())
                            || pool.cidr.contains(&p.cidr.network()))
                });
                if let Some(other) = clash {
                    refused.push(refusal(
                        &id,
                        "spec.cidr",
                        format!(
                            "{} overlaps IPPool {} ({}): pools must not overlap",
                            pool.cidr, other.name, other.cidr
                        ),
                    ));
                    return;
                }
                self.cluster
                    .ip_pools
                    .insert(pool.name.clone(), pool.clone());
            }
            Resource::HostEndpoint(h) => {
                self.cluster
                    .host_endpoints
                    .insert(h.name.clone(), h.clone());
            }
            // Kept for the service dataplane; no compiled policy depends on them.
            Resource::Service(s) => {
                self.services.service(&s.namespace, &s.name);
                self.cluster
                    .services
                    .insert(NamespacedName::new(&s.namespace, &s.name), s.clone());
            }
            Resource::EndpointSlice(s) => {
                let old = self
                    .cluster
                    .endpoint_slices
                    .insert(NamespacedName::new(&s.namespace, &s.name), s.clone());
                self.services.slice(old.as_ref(), Some(s));
            }
            // Routes and WireGuard peers follow blocks: a block on one node routes its
            // addresses there, so two blocks over one address would send it two ways.
            Resource::IpamBlock(block) => {
                if let Some(why) = self
                    .cluster
                    .ipam_blocks
                    .values()
                    .find_map(|other| block_overlap(other, block))
                {
                    refused.push(refusal(&id, "spec.cidr", why));
                    return;
                }
                self.cluster
                    .ipam_blocks
                    .insert(block.name.clone(), block.clone());
            }
        }
        self.cluster.origins.insert(id, object.origin);
    }

    /// Puts a pod's version in the model, unless one of its addresses belongs to another
    /// pod (refused; returns false).
    fn put_pod(&mut self, id: &ObjectRef, pod: Pod, refused: &mut Vec<Refusal>) -> bool {
        let key = NamespacedName::new(&pod.namespace, &pod.name);
        if !pod.host_network {
            if let Some((ip, owner)) = pod
                .ips
                .iter()
                .find_map(|ip| self.owners.get(ip).filter(|o| **o != key).map(|o| (ip, o)))
            {
                refused.push(refusal(
                    id,
                    "status.podIPs",
                    format!(
                        "{ip} is also the address of Pod {owner}; pod addresses must be \
                         unique, so this version is not applied"
                    ),
                ));
                return false;
            }
        }
        let old = self.cluster.pods.get(&key).cloned();
        self.cache
            .pod_changed(old.as_ref(), Some(&pod), &self.ns_labels(&pod.namespace));
        if let Some(old) = &old {
            if !old.host_network {
                for ip in &old.ips {
                    self.owners.remove(ip);
                }
            }
        }
        if !pod.host_network {
            for ip in &pod.ips {
                self.owners.insert(*ip, key.clone());
            }
        }
        let account = NamespacedName::new(&pod.namespace, &pod.service_account);
        self.cluster
            .service_accounts
            .entry(account)
            .or_insert_with(|| ServiceAccount {
                namespace: pod.namespace.clone(),
                name: pod.service_account.clone(),
                labels: Labels::new(),
            });
        if self.is_local(&pod) {
            self.local.insert(key.clone());
        } else {
            self.local.remove(&key);
        }
        self.services.pod(old.as_ref(), Some(&pod), &self.node);
        self.cluster.pods.insert(key, pod);
        true
    }

    /// Attaches a pod here (from the CNI plugin): the pod's datastore version, or a bare
    /// one while the datastore has none yet, with the attachment's addresses and interface.
    fn attach(&mut self, a: Attachment, refused: &mut Vec<Refusal>) {
        let key = a.pod.clone();
        let id = ObjectRef::namespaced(Kind::Pod, &key.namespace, &key.name);
        self.ensure_namespace(&key.namespace);
        let raw = match self.attached.get(&key) {
            Some((_, raw)) => raw.clone(),
            None => self.cluster.pods.get(&key).cloned(),
        };
        let pod = overlay(&a, raw.clone().unwrap_or_else(|| bare_pod(&a)), &self.node);
        if !self.put_pod(&id, pod, refused) {
            return;
        }
        self.cluster.origins.entry(id).or_insert_with(|| Origin {
            source: "cni".into(),
            document: 0,
            item: None,
        });
        self.attached.insert(key, (a, raw));
    }

    /// Undoes [`Self::attach`]: the pod goes back to its datastore version (or away).
    fn detach(&mut self, key: &NamespacedName, refused: &mut Vec<Refusal>) {
        let Some((_, raw)) = self.attached.remove(key) else {
            return;
        };
        let id = ObjectRef::namespaced(Kind::Pod, &key.namespace, &key.name);
        match raw {
            Some(pod) => {
                self.put_pod(&id, pod, refused);
            }
            None => self.delete(&id, refused),
        }
    }

    /// The pods attached through the CNI plugin, with their attachment.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.attached.values().map(|(a, _)| a)
    }

    fn delete(&mut self, id: &ObjectRef, refused: &mut Vec<Refusal>) {
        if !self.cluster.origins.contains_key(id) {
            return;
        }
        let named =
            |ns: &Option<String>| NamespacedName::new(ns.clone().unwrap_or_default(), &id.name);
        match id.kind {
            Kind::Namespace => {
                let used = self
                    .cluster
                    .origins
                    .keys()
                    .any(|o| o.namespace.as_deref() == Some(id.name.as_str()));
                let old = self.ns_labels(&id.name);
                if used {
                    // Its objects are still here (their deletions follow): it stays, bare.
                    let bare = Namespace::implicit(&id.name);
                    self.cache.namespace_changed(&id.name, &old, &bare.labels);
                    self.cluster.namespaces.insert(id.name.clone(), bare);
                } else {
                    self.cluster.namespaces.remove(&id.name);
                }
            }
            Kind::Pod => {
                let key = named(&id.namespace);
                if let Some((a, raw)) = self.attached.get_mut(&key) {
                    // Still attached: it stays, bare, until the plugin's DEL.
                    if raw.take().is_some() {
                        let pod = overlay(a, bare_pod(a), &self.node);
                        self.put_pod(id, pod, refused);
                    }
                    return;
                }
                if let Some(old) = self.cluster.pods.remove(&key) {
                    self.services.pod(Some(&old), None, &self.node);
                    self.cache
                        .pod_changed(Some(&old), None, &self.ns_labels(&old.namespace));
                    for ip in &old.ips {
                        if self.owners.get(ip) == Some(&key) {
                            self.owners.remove(ip);
                        }
                    }
                }
                self.local.remove(&key);
            }
            Kind::ServiceAccount => {
                let key = named(&id.namespace);
                let used = self
                    .cluster
                    .pods
                    .values()
                    .any(|p| p.namespace == key.namespace && p.service_account == key.name);
                if used {
                    if let Some(sa) = self.cluster.service_accounts.get_mut(&key) {
                        sa.labels.clear();
                    }
                } else {
                    self.cluster.service_accounts.remove(&key);
                }
            }
            Kind::K8sNetworkPolicy => {
                self.cluster.k8s_policies.remove(&named(&id.namespace));
            }
            Kind::Tier => {
                let users: Vec<String> = self
                    .cluster
                    .policies
                    .values()
                    .filter(|p| p.spec.tier == id.name)
                    .map(|p| format!("NetworkPolicy {}/{}", p.namespace, p.name))
                    .chain(
                        self.cluster
                            .global_policies
                            .values()
                            .filter(|p| p.spec.tier == id.name)
                            .map(|p| format!("GlobalNetworkPolicy {}", p.name)),
                    )
                    .collect();
                if !users.is_empty() {
                    refused.push(refusal(
                        id,
                        "",
                        format!(
                            "deleted while {} still use it; it stays in force until they are \
                             gone",
                            users.join(", ")
                        ),
                    ));
                    return;
                }
                if id.name == DEFAULT_TIER {
                    self.cluster
                        .tiers
                        .insert(DEFAULT_TIER.to_owned(), Tier::implicit_default());
                } else {
                    self.cluster.tiers.remove(&id.name);
                }
            }
            Kind::NetworkPolicy => {
                self.cluster.policies.remove(&named(&id.namespace));
            }
            Kind::GlobalNetworkPolicy => {
                self.cluster.global_policies.remove(&id.name);
            }
            Kind::NetworkSet => {
                let key = named(&id.namespace);
                if let Some(old) = self.cluster.network_sets.remove(&key) {
                    let labels = self.ns_labels(&old.namespace);
                    self.cache.network_set_changed(
                        Some((&old.namespace, &labels)),
                        Some(&old.labels),
                        None,
                    );
                }
            }
            Kind::GlobalNetworkSet => {
                if let Some(old) = self.cluster.global_network_sets.remove(&id.name) {
                    self.cache
                        .network_set_changed(None, Some(&old.labels), None);
                }
            }
            Kind::Node => {
                self.cluster.nodes.remove(&id.name);
            }
            Kind::IpPool => {
                self.cluster.ip_pools.remove(&id.name);
            }
            Kind::HostEndpoint => {
                self.cluster.host_endpoints.remove(&id.name);
            }
            Kind::Service => {
                let key = named(&id.namespace);
                if self.cluster.services.remove(&key).is_some() {
                    self.services.service(&key.namespace, &key.name);
                }
            }
            Kind::EndpointSlice => {
                let old = self.cluster.endpoint_slices.remove(&named(&id.namespace));
                self.services.slice(old.as_ref(), None);
            }
            Kind::IpamBlock => {
                self.cluster.ipam_blocks.remove(&id.name);
            }
        }
        self.cluster.origins.remove(id);
    }
}

fn missing_tier(id: &ObjectRef, tier: &str) -> Refusal {
    refusal(
        id,
        "spec.tier",
        format!("tier \"{tier}\" does not exist: define a Tier named {tier}"),
    )
}

/// What one published calculation covered.
#[derive(Debug)]
pub struct Batch {
    /// Changes applied.
    pub changes: usize,
    /// When the first of them was received.
    pub first_noticed: Instant,
    /// What the calculator refused.
    pub refused: Vec<Refusal>,
    /// Objects the datastore refused (failed validation).
    pub invalid: usize,
    /// Whether this is the first publication (every kind listed once).
    pub first: bool,
    /// Callers waiting for this publication (local changes).
    pub done: Vec<std::sync::mpsc::Sender<Result<(), String>>>,
}

impl Batch {
    /// An empty batch whose first update was received at `noticed`.
    fn starting(noticed: Instant) -> Batch {
        Batch {
            changes: 0,
            first_noticed: noticed,
            refused: Vec::new(),
            invalid: 0,
            first: false,
            done: Vec::new(),
        }
    }
}

/// How long [`drive`] waits for an update when nothing is due (it looks at `stop` after
/// each wait).
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// What [`drive`] remembers between calls: the kinds listed so far, and whether it has
/// published.
#[derive(Debug, Default)]
pub struct DriveState {
    synced: BTreeSet<Kind>,
    published: bool,
}

/// The control loop: takes updates from a datastore, applies them, and after every burst
/// (updates arriving within `window` of the first; for a burst someone waits on, such as
/// a pod's ADD, the updates ready now) hands the calculator to `publish` once,
/// from the moment every one of `kinds` has been listed once: nothing is published
/// from a partial view of the cluster. Returns when `stop` is set, the datastore goes
/// away, or `publish` returns false.
pub fn drive(
    updates: &Receiver<Update>,
    calc: &mut Calculator,
    kinds: &[Kind],
    window: Duration,
    stop: &AtomicBool,
    state: &mut DriveState,
    mut publish: impl FnMut(&mut Calculator, Batch) -> bool,
) {
    let DriveState { synced, published } = state;
    let mut pending: Option<Batch> = None;
    while !stop.load(Ordering::Relaxed) {
        let wait = match &pending {
            // Nothing is published before every kind has been listed, and only an update
            // says so: wait for one. (A batch that fell due meanwhile would otherwise set a
            // wait of zero, and the loop would spin, taking a core from the watchers for
            // the whole initial sync: a fifth of its time at 150 000 pods.)
            Some(_) if !kinds.iter().all(|k| synced.contains(k)) => IDLE_WAIT,
            // Someone waits for this batch (a pod's ADD): published as soon as no update
            // is ready, not at the end of the window; what arrives meanwhile joins the
            // next one.
            Some(b) if !b.done.is_empty() => Duration::ZERO,
            Some(b) => window.saturating_sub(b.first_noticed.elapsed()),
            None => IDLE_WAIT,
        };
        let update = match updates.recv_timeout(wait) {
            Ok(u) => Some(u),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Nothing was ready: a batch someone waits on is due now.
        let idle = update.is_none();
        match update {
            Some(Update::Change { change, .. }) if calc.unchanged_by(&change) => continue,
            Some(Update::Change { change, noticed }) => {
                let batch = pending.get_or_insert_with(|| Batch::starting(noticed));
                batch.changes += 1;
                batch.refused.extend(calc.apply(change));
            }
            Some(Update::Local { change, done }) => {
                let refused = calc.apply(change);
                if !refused.is_empty() {
                    let why: Vec<String> = refused.iter().map(ToString::to_string).collect();
                    let _ = done.send(Err(why.join("; ")));
                    continue;
                }
                let batch = pending.get_or_insert_with(|| Batch::starting(Instant::now()));
                batch.changes += 1;
                batch.done.push(done);
            }
            Some(Update::Invalid { .. }) => {
                // Reported with the next publication (a refusal alone makes one, so that
                // it is counted at once; the tables come out the same).
                let batch = pending.get_or_insert_with(|| Batch::starting(Instant::now()));
                batch.invalid += 1;
            }
            Some(Update::Synced(kind)) => {
                synced.insert(kind);
            }
            Some(Update::Recalculate(_)) => {
                pending.get_or_insert_with(|| Batch::starting(Instant::now()));
            }
            Some(Update::WatchError { kind, message }) => {
                eprintln!("weir agent: watching {kind}: {message}; retrying with backoff, the last tables keep serving");
                continue;
            }
            None => {}
        }
        let all_synced = kinds.iter().all(|k| synced.contains(k));
        // The window bounds a burst even while updates keep coming.
        let due = pending
            .as_ref()
            .is_some_and(|b| (idle && !b.done.is_empty()) || b.first_noticed.elapsed() >= window);
        if all_synced && (due || (!*published && pending.is_some())) {
            if let Some(mut batch) = pending.take() {
                batch.first = !*published;
                *published = true;
                if !publish(calc, batch) {
                    return;
                }
            }
        }
    }
}
