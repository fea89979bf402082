//! Selector resolution and named-port sets: what a selector, a Kubernetes peer or a port
//! name picks in the cluster, through the resolutions [`Cache`](super::Cache) keeps between
//! compilations (and, for a scope chosen by a namespaceSelector, keeps by namespace: see
//! [`Parts`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashSet;
use weir_dataplane::flow::FlowKey;
use weir_dataplane::policy::program::{NetSetId, PortMatch as CompiledPorts, PortSetId};
use weir_dataplane::policy::NetSet;

use super::cache::{is_endpoint, CacheKey, NamedKey, NamedPortSet, Parts};
use super::{Compiler, Scope};
use crate::policy::load::Cluster;
use crate::policy::model::{
    IpFamily, NamespaceScope, NamespacedName, Pod, PortMatch, Protocol, ServiceAccountMatch,
};
use crate::policy::selector::{Labels, Selector};

impl Compiler<'_> {
    /// The slot of a selector's resolution, resolved now if it is not held.
    pub(super) fn cached_slot(&mut self, key: CacheKey) -> usize {
        let id = match self.cache.valid_slot(&key) {
            Some(id) => {
                self.cache.hits += 1;
                id
            }
            None => {
                self.cache.misses += 1;
                let t = Instant::now();
                let (set, parts) = self.resolve(&key.scope, &key.selector, None, key.pods_only);
                self.cache.times.resolving += t.elapsed();
                self.cache.put(key, set, parts)
            }
        };
        if let Some(r) = &mut self.recording {
            r.slots.push((id, self.cache.slots[id].version));
        }
        id
    }

    /// The set id of the union of cached resolutions.
    pub(super) fn union_of_slots(&mut self, mut slots: Vec<usize>) -> NetSetId {
        slots.sort_unstable();
        slots.dedup();
        if let Some(&id) = self.slot_unions.get(&slots) {
            return id;
        }
        let mut set = NetSet::new();
        for &s in &slots {
            if let Some(part) = &self.cache.slots[s].set {
                set.extend(part);
            }
        }
        let id = self.intern(set);
        self.slot_unions.insert(slots, id);
        id
    }

    /// The addresses of the pods and network sets a selector picks in a scope, cached when
    /// no serviceAccounts match narrows it.
    pub(super) fn selected_set(
        &mut self,
        scope: &Scope,
        selector: &Selector,
        accounts: Option<&ServiceAccountMatch>,
    ) -> NetSet {
        if accounts.is_some() {
            if let Some(r) = &mut self.recording {
                r.uncached = true;
            }
            self.cache.uncached_reads = true;
            let t = Instant::now();
            let (set, _) = self.resolve(scope, selector, accounts, false);
            self.cache.times.resolving += t.elapsed();
            return set;
        }
        self.cached(CacheKey {
            scope: scope.clone(),
            selector: selector.clone(),
            pods_only: false,
        })
    }

    pub(super) fn cached(&mut self, key: CacheKey) -> NetSet {
        let slot = self.cached_slot(key);
        self.cache.slots[slot].set.clone().unwrap_or_default()
    }

    /// What a selector picks in a scope, walking the cluster's pods (and network sets
    /// unless `pods_only`): the set, and for a scope chosen by a namespaceSelector the same
    /// by namespace (see [`Parts`]).
    pub(super) fn resolve(
        &self,
        scope: &Scope,
        selector: &Selector,
        accounts: Option<&ServiceAccountMatch>,
        pods_only: bool,
    ) -> (NetSet, Option<Parts>) {
        resolve(self.cluster, scope, selector, accounts, pods_only)
    }

    /// Port ranges, and named ports as one (address, protocol, port) set: of this node's
    /// endpoints when `local` (the port is the local endpoint's own, see [`NamedKey`]),
    /// of every endpoint otherwise.
    pub(super) fn ports(
        &mut self,
        ports: &[PortMatch],
        protocol: Option<Protocol>,
        local: bool,
    ) -> CompiledPorts {
        let mut out = CompiledPorts::default();
        let mut names: Vec<&str> = Vec::new();
        for p in ports {
            match p {
                PortMatch::Range { first, last } => out.ranges.push((*first, *last)),
                PortMatch::Named(name) => names.push(name),
            }
        }
        if !names.is_empty() {
            names.sort_unstable();
            names.dedup();
            let key = (names.join(","), protocol.map(Protocol::number), local);
            let generation = self.cache.generation;
            let id = self.cache.named_ids.id(key, generation);
            self.named_set_held(id);
            if let Some(r) = &mut self.recording {
                r.named.push(id);
            }
            out.named = Some(id);
        }
        out
    }

    /// Makes sure the content of named-port set `id` is held (it is dropped when a pod's
    /// named ports or addresses change).
    pub(super) fn named_set_held(&mut self, id: PortSetId) {
        let Some(key) = self.cache.named_ids.get(id) else {
            return;
        };
        if self.cache.named.contains_key(key) {
            return;
        }
        let key = key.clone();
        let set = if key.2 {
            named_port_set(&key, self.endpoints.iter().map(|e| e.pod))
        } else {
            named_port_set(&key, self.cluster.pods.values())
        };
        self.cache.named.insert(key, Arc::new(set));
    }

    /// Takes the named-port sets of this node's endpoints again (a few pods each).
    pub(super) fn refresh_local_named_sets(&mut self) {
        let local: Vec<NamedKey> = self.cache.named.keys().filter(|k| k.2).cloned().collect();
        for key in local {
            let set = named_port_set(&key, self.endpoints.iter().map(|e| e.pod));
            if self.cache.named.get(&key).is_some_and(|held| **held != set) {
                self.cache.named.insert(key, Arc::new(set));
            }
        }
    }
}

/// `addr/32` or `addr/128` for each address of a pod.
pub(super) fn host_prefixes(pod: &Pod) -> impl Iterator<Item = (IpAddr, u8)> + '_ {
    pod.ips.iter().map(|&ip| {
        (
            ip,
            match IpFamily::of(ip) {
                IpFamily::V4 => 32,
                IpFamily::V6 => 128,
            },
        )
    })
}

/// (address, protocol, port) of the container ports of `pods` (endpoints among them) that
/// carry one of `key`'s names, over its protocol.
pub(super) fn named_port_set<'p>(
    key: &NamedKey,
    pods: impl Iterator<Item = &'p Pod>,
) -> NamedPortSet {
    let names: Vec<&str> = key.0.split(',').collect();
    let protocol = key.1.and_then(Protocol::from_number);
    let mut set = FxHashSet::default();
    for pod in pods.filter(|p| is_endpoint(p)) {
        for cp in &pod.container_ports {
            let named = cp.name.as_deref().is_some_and(|n| names.contains(&n));
            if named && protocol.is_none_or(|p| p == cp.protocol) {
                for &ip in &pod.ips {
                    set.insert((FlowKey::map_ip(ip), cp.protocol.number(), cp.port));
                }
            }
        }
    }
    set
}

/// The cache key of a Kubernetes peer's pod selection.
pub(super) fn k8s_key(namespace: &str, namespaces: &NamespaceScope, pods: &Selector) -> CacheKey {
    let scope = match namespaces {
        NamespaceScope::PolicyNamespace => Scope::Namespace(namespace.to_owned()),
        NamespaceScope::Selected(sel) => Scope::Namespaces(sel.clone()),
    };
    CacheKey {
        scope,
        selector: pods.clone(),
        pods_only: true,
    }
}

/// What a selector picks in a scope (see [`Compiler::resolve`]).
pub(super) fn resolve(
    cluster: &Cluster,
    scope: &Scope,
    selector: &Selector,
    accounts: Option<&ServiceAccountMatch>,
    pods_only: bool,
) -> (NetSet, Option<Parts>) {
    match scope {
        Scope::Namespace(n) => (
            NetSet::from_prefixes(namespace_part(cluster, n, selector, accounts, pods_only)),
            None,
        ),
        Scope::Namespaces(sel) => {
            let mut parts = Parts::default();
            for (name, ns) in &cluster.namespaces {
                if sel.matches(&ns.labels) {
                    parts.set(
                        name,
                        namespace_part(cluster, name, selector, accounts, pods_only),
                    );
                }
            }
            // Network sets have no service account: a serviceAccounts match excludes them.
            if accounts.is_none() && !pods_only && sel.mentions_global() {
                parts.set(GLOBAL_PART, global_part(cluster, selector));
            }
            (parts.union(), Some(parts))
        }
        Scope::Cluster => {
            let mut prefixes = Vec::new();
            for pod in cluster.pods.values() {
                take_pod(cluster, pod, selector, accounts, &mut prefixes);
            }
            if accounts.is_none() && !pods_only {
                for set in cluster.network_sets.values() {
                    if selector.matches(&set.labels) {
                        prefixes.extend(set.nets.iter().map(|n| (n.addr(), n.prefix_len())));
                    }
                }
                prefixes.extend(global_part(cluster, selector));
            }
            (NetSet::from_prefixes(prefixes), None)
        }
    }
}

/// The key of the global network sets' part in [`Parts`] (no namespace has an empty name).
pub(super) const GLOBAL_PART: &str = "";

/// What a selector picks in one namespace: its pods (with `accounts`, those whose service
/// account matches too) and, unless `pods_only` or `accounts`, its network sets.
pub(super) fn namespace_part(
    cluster: &Cluster,
    namespace: &str,
    selector: &Selector,
    accounts: Option<&ServiceAccountMatch>,
    pods_only: bool,
) -> Vec<(IpAddr, u8)> {
    let mut prefixes = Vec::new();
    for (_, pod) in in_namespace(&cluster.pods, namespace) {
        take_pod(cluster, pod, selector, accounts, &mut prefixes);
    }
    if accounts.is_none() && !pods_only {
        for (_, set) in in_namespace(&cluster.network_sets, namespace) {
            if selector.matches(&set.labels) {
                prefixes.extend(set.nets.iter().map(|n| (n.addr(), n.prefix_len())));
            }
        }
    }
    prefixes
}

/// What a selector picks among the global network sets.
pub(super) fn global_part(cluster: &Cluster, selector: &Selector) -> Vec<(IpAddr, u8)> {
    cluster
        .global_network_sets
        .values()
        .filter(|set| selector.matches(&set.labels))
        .flat_map(|set| set.nets.iter().map(|n| (n.addr(), n.prefix_len())))
        .collect()
}

/// Adds `pod`'s addresses to `prefixes` if it is an endpoint that `selector` (and
/// `accounts`) pick.
pub(super) fn take_pod(
    cluster: &Cluster,
    pod: &Pod,
    selector: &Selector,
    accounts: Option<&ServiceAccountMatch>,
    prefixes: &mut Vec<(IpAddr, u8)>,
) {
    if !is_endpoint(pod) || !selector.matches(&pod.labels) {
        return;
    }
    if let Some(a) = accounts {
        let empty = Labels::new();
        let sa_labels = cluster
            .service_accounts
            .get(&NamespacedName::new(&pod.namespace, &pod.service_account))
            .map_or(&empty, |sa| &sa.labels);
        if !(a.names.is_empty() || a.names.contains(&pod.service_account))
            || !a.selector.as_ref().is_none_or(|s| s.matches(sa_labels))
        {
            return;
        }
    }
    prefixes.extend(host_prefixes(pod));
}

/// The objects of one namespace in a map keyed by namespace and name.
pub(super) fn in_namespace<'m, T>(
    map: &'m BTreeMap<NamespacedName, T>,
    namespace: &str,
) -> impl Iterator<Item = (&'m NamespacedName, &'m T)> + 'm {
    let namespace = namespace.to_owned();
    map.range(NamespacedName::new(namespace.clone(), String::new())..)
        .take_while(move |(k, _)| k.namespace == namespace)
}
