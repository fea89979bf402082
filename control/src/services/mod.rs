//! This node's services, as the dataplane's service table wants them: one
//! [`ServiceSpec`] per Service port, computed from the Services, EndpointSlices and pods of
//! the model ([`node_services`]), and the agent's memory of the table it published last
//! ([`ServiceState`]), which changes only the Services that changed, in place, keeping the
//! Maglev tables of unchanged ports and moving only the share of an endpoint that went away
//! (see `weir_dataplane::service`).
//!
//! # What a Service port becomes
//!
//! - **Frontends**: each cluster IP on the service port; with a `nodePort`, each of this
//!   node's addresses of a family the service has (its cluster IPs' families; when the
//!   datastore allocated none, its endpoints' families, else both) on the node port; each
//!   load balancer ingress IP and each external IP on the service port. ExternalName and
//!   headless services have none and are left out, as are services with no cluster IP
//!   and no other frontend (a file datastore that allocates no address).
//! - **Backends** come from the EndpointSlices labelled `kubernetes.io/service-name` with
//!   the service's name, as kube-proxy reads them: a slice port is joined to the service
//!   port by name and protocol; FQDN slices are ignored; only an endpoint's first address
//!   counts (the API reference: "kube-proxy does not look at them"); an endpoint in two
//!   slices (while the controller moves it) counts once, ready if either copy is.
//! - **No slice at all** for a service with a selector: the file datastore has no
//!   EndpointSlice controller, so the endpoints are derived as that controller would:
//!   the pods of the service's namespace that match the selector, have an address and do
//!   not use the host's network, ready (a file datastore's pods carry no conditions); a
//!   named `targetPort` is resolved per pod through its container ports (name and
//!   protocol), and a pod without that port is left out.
//! - A backend is **local** when its `nodeName` is this node or its address is one of
//!   this node's pods. Traffic policies and session affinity are carried over.
//! - **Dual-stack**: a port with frontends of both families becomes two specs, IPv4
//!   frontends with IPv4 endpoints and IPv6 with IPv6: the dataplane translates
//!   addresses, never families, and one backend set per spec must not mix them. The
//!   service table tells the two apart by their frontends' family when it looks for the
//!   previous set, so each family's Maglev table is shared or updated, never rebuilt.
//!
//! Everything is sorted, so the same model gives equal specs, and the agent then reuses
//! the published table without building anything.

pub mod index;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use weir_dataplane::service::{
    BackendSpec, FrontendKind, FrontendSpec, ServiceError, ServiceName, ServiceSpec, ServiceTable,
};

use crate::calc::Calculator;
use crate::calc::INTERFACE_ANNOTATION;
use crate::policy::load::Cluster;
use crate::policy::model::{
    AddressType, EndpointSlice, NamespacedName, Pod, Service, ServicePort, ServiceType,
    SessionAffinity, TargetPort, TrafficPolicy,
};
use index::ServiceIndex;

/// Every service port of `cluster` as this node serves it. `node` is this node's name,
/// `node_addresses` the addresses its node ports answer on.
pub fn node_services(cluster: &Cluster, node: &str, node_addresses: &[IpAddr]) -> Vec<ServiceSpec> {
    let mut node_addresses = node_addresses.to_vec();
    node_addresses.sort();
    node_addresses.dedup();
    let local_pods: BTreeSet<IpAddr> = cluster
        .pods
        .values()
        .filter(|p| pod_is_here(p, node))
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in cluster.endpoint_slices.values() {
        if let Some(service) = &slice.service {
            slices
                .entry((slice.namespace.as_str(), service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    let mut pods_by_namespace: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in cluster.pods.values() {
        pods_by_namespace
            .entry(pod.namespace.as_str())
            .or_default()
            .push(pod);
    }
    let is_local = |a: &IpAddr| local_pods.contains(a);
    let here = Here {
        node,
        local_pods: &is_local,
    };
    let mut specs = Vec::new();
    for service in cluster.services.values() {
        let owned = slices
            .get(&(service.namespace.as_str(), service.name.as_str()))
            .map(Vec::as_slice);
        let pods = pods_by_namespace
            .get(service.namespace.as_str())
            .map_or(&[][..], Vec::as_slice);
        specs.extend(service_specs(service, owned, pods, &node_addresses, &here));
    }
    specs.sort_by_key(spec_order);
    specs
}

/// The order of specs: by Service, then port name, protocol, family (IPv4 first).
fn spec_order(s: &ServiceSpec) -> (String, String, String, u8, bool) {
    (
        s.namespace.clone(),
        s.name.clone(),
        s.port_name.clone(),
        s.protocol,
        s.frontends.first().is_some_and(|f| f.addr.is_ipv6()),
    )
}

/// The specs of Service `name` alone, read through the calculator's index (its slices,
/// this node's pod addresses) and the pods of its namespace: what [`node_services`] gives
/// for it, without a pass over the cluster.
fn one_service(
    cluster: &Cluster,
    index: &ServiceIndex,
    name: &ServiceName,
    node: &str,
    node_addresses: &[IpAddr],
) -> Specs {
    let Some(service) = cluster.services.get(&NamespacedName::new(&name.0, &name.1)) else {
        return Vec::new();
    };
    let slices: Vec<&EndpointSlice> = index
        .slices_of(name)
        .filter_map(|s| {
            cluster
                .endpoint_slices
                .get(&NamespacedName::new(&name.0, s))
        })
        .collect();
    let owned = (!slices.is_empty()).then_some(slices.as_slice());
    // Only a Service without slices reads the pods (and only with a selector).
    let pods: Vec<&Pod> = if owned.is_none() && service.selector.is_some() {
        cluster
            .pods
            .range(NamespacedName::new(&name.0, "")..)
            .take_while(|(k, _)| k.namespace == name.0)
            .map(|(_, p)| p)
            .collect()
    } else {
        Vec::new()
    };
    let is_local = |a: &IpAddr| index.is_here(a);
    let here = Here {
        node,
        local_pods: &is_local,
    };
    let mut specs = service_specs(service, owned, &pods, node_addresses, &here);
    specs.sort_by_key(spec_order);
    specs
}

/// The specs of one Service: one per port and family (none for the Services kube-proxy
/// leaves alone). `slices` are its EndpointSlices (`None`: it has none), `pods` those of
/// its namespace (read only without slices), `node_addresses` sorted and distinct.
fn service_specs(
    service: &Service,
    owned: Option<&[&EndpointSlice]>,
    pods: &[&Pod],
    node_addresses: &[IpAddr],
    here: &Here<'_>,
) -> Vec<ServiceSpec> {
    let mut specs = Vec::new();
    if service.service_type == ServiceType::ExternalName
        || service.headless
        || service.not_proxied.is_some()
    {
        return specs;
    }
    for port in &service.ports {
        let backends = match owned {
            Some(owned) => from_slices(owned, port, here),
            None => from_pods(pods, service, port, here),
        };
        let frontends = frontends(service, port, node_addresses, &backends);
        // One spec per family: a frontend's connections go to endpoints of its own
        // family (the dataplane translates addresses, never families).
        for v4 in [true, false] {
            let frontends: Vec<FrontendSpec> = frontends
                .iter()
                .filter(|f| f.addr.is_ipv4() == v4)
                .copied()
                .collect();
            if frontends.is_empty() {
                continue;
            }
            specs.push(ServiceSpec {
                namespace: service.namespace.clone(),
                name: service.name.clone(),
                port_name: port.name.clone(),
                protocol: port.protocol.number(),
                frontends,
                backends: backends
                    .iter()
                    .filter(|b| b.addr.is_ipv4() == v4)
                    .copied()
                    .collect(),
                external_local: service.external_traffic_policy == Some(TrafficPolicy::Local),
                internal_local: service.internal_traffic_policy == Some(TrafficPolicy::Local),
                affinity_seconds: match service.session_affinity {
                    SessionAffinity::None => None,
                    SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
                },
            });
        }
    }
    specs
}

/// A Service's ports as the model gives them (none: gone).
type Specs = Vec<ServiceSpec>;

/// The most Services a spare table catches up on; past that, the next change is made in a
/// copy of the published table.
const MAX_BEHIND: usize = 64;

/// Services changed, with their new specs.
type Changes = Vec<(ServiceName, Specs)>;

/// The service table the agent published last, and what it makes of new specs.
///
/// A change is made **in place**, one Service at a time ([`ServiceTable::set`]), in the
/// table published before the current one (the *spare*), once no snapshot holds it any
/// more: the spare first catches up with the Services changed since it was published,
/// then takes the new changes, and is published; the table it replaces becomes the spare.
/// Workers never see a table change under them, and a change costs the Services it
/// touches, not the cluster's. When a snapshot still holds the spare (a worker slow to
/// let go), the change is made in a copy of the published table instead, and counted
/// ([`ServiceState::copies`]).
#[derive(Debug, Default)]
pub struct ServiceState {
    /// What each Service of the published table was compiled from.
    specs: BTreeMap<ServiceName, Specs>,
    table: Arc<ServiceTable>,
    /// The table published before `table`, with the changes `table` has and it lacks.
    spare: Option<(Arc<ServiceTable>, Changes)>,
    /// Services whose latest specs were refused, with why: not tried again while the
    /// model gives the same specs, unless another change is made (it may have freed what
    /// they clashed with).
    refused: BTreeMap<ServiceName, (Specs, String)>,
    /// Services refused since the start.
    refused_total: u64,
    /// Changes made in a copy because a snapshot still held the spare.
    copies: u64,
    /// The node addresses the published specs were derived with (`None`: derive all
    /// again).
    node_addresses: Option<Vec<IpAddr>>,
    /// A change was handed out and not committed (its publication failed): what it had
    /// taken from the calculator is lost, so the next refresh derives everything.
    handed_out: bool,
    /// The Services listing each endpoint address (to find those whose endpoint moved to
    /// or from this node).
    by_endpoint: BTreeMap<IpAddr, BTreeSet<ServiceName>>,
}

/// What new specs give (see [`ServiceState::change`]); the agent publishes
/// [`ServiceChange::table`] and, once published, [`ServiceState::commit`]s it.
#[derive(Debug)]
pub struct ServiceChange {
    table: Arc<ServiceTable>,
    /// The Services the table changed, with their new specs; empty when the table is the
    /// published one.
    applied: Changes,
    /// The refusals once this change is published.
    refused: BTreeMap<ServiceName, (Specs, String)>,
    /// Refusals not reported before.
    fresh: Vec<String>,
    /// The node addresses of a full derivation, to remember once committed.
    node_addresses: Option<Vec<IpAddr>>,
}

impl ServiceChange {
    /// The table to publish.
    pub fn table(&self) -> &Arc<ServiceTable> {
        &self.table
    }

    /// Whether the table differs from the published one.
    pub fn is_new(&self) -> bool {
        !self.applied.is_empty()
    }

    /// The Services changed.
    pub fn changed(&self) -> usize {
        self.applied.len()
    }
}

impl ServiceState {
    /// The table for `specs` (every service port of the model): the published one when no
    /// Service changed (or every changed one was refused), else the published one with the
    /// changed Services replaced. A Service that cannot be compiled (a frontend another
    /// holds) is refused alone: its last good version keeps serving.
    pub fn change(&mut self, specs: Vec<ServiceSpec>) -> ServiceChange {
        let mut want: BTreeMap<ServiceName, Specs> = BTreeMap::new();
        for spec in specs {
            want.entry((spec.namespace.clone(), spec.name.clone()))
                .or_default()
                .push(spec);
        }
        let mut names: Vec<ServiceName> = want
            .keys()
            .chain(self.specs.keys())
            .chain(self.refused.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        let candidates = names
            .into_iter()
            .map(|n| {
                let specs = want.remove(&n).unwrap_or_default();
                (n, specs)
            })
            .collect();
        self.apply(candidates)
    }

    /// The table for the calculator's model now, deriving only the Services that may have
    /// changed since the last refresh: those the calculator reports touched (the Service
    /// or its slices changed), those without slices in a namespace whose pods changed,
    /// and those listing an address that became or stopped being this node's pod's.
    /// Everything is derived again the first time, when the node's addresses changed, and
    /// after a change that was not committed.
    pub fn refresh(
        &mut self,
        calc: &mut Calculator,
        node: &str,
        node_addresses: &[IpAddr],
    ) -> ServiceChange {
        let (cluster, index, touched) = calc.service_changes();
        let mut addresses = node_addresses.to_vec();
        addresses.sort();
        addresses.dedup();
        let full = self.handed_out || self.node_addresses.as_ref() != Some(&addresses);
        self.handed_out = true;
        if full {
            let mut change = self.change(node_services(cluster, node, &addresses));
            change.node_addresses = Some(addresses);
            return change;
        }
        let mut names = touched.services;
        for ns in &touched.pod_namespaces {
            names.extend(
                cluster
                    .services
                    .range(NamespacedName::new(ns, "")..)
                    .take_while(|(k, _)| &k.namespace == ns)
                    .filter(|(_, s)| s.selector.is_some())
                    .map(|(k, _)| (k.namespace.clone(), k.name.clone()))
                    .filter(|n| index.slices_of(n).next().is_none()),
            );
        }
        for ip in &touched.moved {
            names.extend(self.by_endpoint.get(ip).into_iter().flatten().cloned());
        }
        let candidates = names
            .into_iter()
            .map(|n| {
                let specs = one_service(cluster, index, &n, node, &addresses);
                (n, specs)
            })
            .collect();
        self.apply(candidates)
    }

    /// Replaces the Services of `candidates` (each with its specs now) that differ from
    /// the published ones.
    fn apply(&mut self, candidates: Changes) -> ServiceChange {
        let empty = Vec::new();
        // Refusals of Services not among the candidates stand (their model is unchanged).
        let mut refused: BTreeMap<ServiceName, (Specs, String)> = self
            .refused
            .iter()
            .filter(|(n, _)| !candidates.iter().any(|(c, _)| c == *n))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        // Services whose specs differ from the published ones; those refused before with
        // these very specs wait for another change.
        let mut todo: Changes = Vec::new();
        for (name, new) in candidates {
            if new == *self.specs.get(&name).unwrap_or(&empty) {
                continue;
            }
            match self.refused.get(&name) {
                Some((specs, why)) if *specs == new => {
                    refused.insert(name, (specs.clone(), why.clone()));
                }
                _ => todo.push((name, new)),
            }
        }
        let retry: Changes = refused
            .iter()
            .map(|(n, (specs, _))| (n.clone(), specs.clone()))
            .collect();
        let mut change = ServiceChange {
            table: Arc::clone(&self.table),
            applied: Vec::new(),
            refused,
            fresh: Vec::new(),
            node_addresses: None,
        };
        if todo.is_empty() {
            return change;
        }
        let (mut table, copied) = self.working_table();
        let t = Arc::get_mut(&mut table).expect("the working table is not shared");
        for (name, specs) in todo {
            match t.set(&name, specs.clone()) {
                Ok(()) => change.applied.push((name, specs)),
                Err(e) => {
                    let why = refusal(&name, &e);
                    change.fresh.push(why.clone());
                    change.refused.insert(name, (specs, why));
                }
            }
        }
        if !change.applied.is_empty() {
            for (name, specs) in retry {
                if t.set(&name, specs.clone()).is_ok() {
                    change.refused.remove(&name);
                    change.applied.push((name, specs));
                }
            }
        }
        if change.applied.is_empty() {
            // Nothing changed after all: the caught-up table is a spare with nothing to
            // catch up on.
            if !copied {
                self.spare = Some((table, Vec::new()));
            }
        } else {
            change.table = table;
        }
        change
    }

    /// A table equal to the published one that no snapshot holds: the spare, caught up,
    /// or (`true`) a copy.
    fn working_table(&mut self) -> (Arc<ServiceTable>, bool) {
        if let Some((mut spare, behind)) = self.spare.take() {
            if let Some(t) = Arc::get_mut(&mut spare) {
                // Each of these was accepted by the published table, made from this one.
                if behind
                    .into_iter()
                    .all(|(name, specs)| t.set(&name, specs).is_ok())
                {
                    return (spare, false);
                }
            }
        }
        self.copies += 1;
        (Arc::new((*self.table).clone()), true)
    }

    /// Remembers a change once the snapshot holding its table is published. Returns the
    /// refusals not reported before (to log).
    pub fn commit(&mut self, change: ServiceChange) -> Option<String> {
        self.handed_out = false;
        if change.node_addresses.is_some() {
            self.node_addresses = change.node_addresses;
        }
        self.refused = change.refused;
        self.refused_total += change.fresh.len() as u64;
        if !change.applied.is_empty() {
            let old = std::mem::replace(&mut self.table, change.table);
            for (name, specs) in &change.applied {
                let before = self.specs.get(name).into_iter().flatten();
                for b in before.flat_map(|s| s.backends.iter()) {
                    if let Some(set) = self.by_endpoint.get_mut(&b.addr) {
                        set.remove(name);
                        if set.is_empty() {
                            self.by_endpoint.remove(&b.addr);
                        }
                    }
                }
                for b in specs.iter().flat_map(|s| s.backends.iter()) {
                    self.by_endpoint
                        .entry(b.addr)
                        .or_default()
                        .insert(name.clone());
                }
                if specs.is_empty() {
                    self.specs.remove(name);
                } else {
                    self.specs.insert(name.clone(), specs.clone());
                }
            }
            // The old table's spare (if any) was taken by the change or is a copy's
            // leftover: the table just replaced is the spare now, unless catching it up
            // would cost more than copying (a full derivation changed many Services: each
            // would be compiled again, Maglev tables included, where a copy shares them).
            self.spare = (change.applied.len() <= MAX_BEHIND).then_some((old, change.applied));
        }
        (!change.fresh.is_empty()).then(|| change.fresh.join("; "))
    }

    /// Why some of the model's latest services could not be compiled, while they cannot.
    pub fn refusal(&self) -> Option<String> {
        if self.refused.is_empty() {
            return None;
        }
        Some(
            self.refused
                .values()
                .map(|(_, why)| why.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// Services refused since the start.
    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }

    /// Changes made in a copy of the published table because a snapshot still held the
    /// spare, since the start.
    pub fn copies(&self) -> u64 {
        self.copies
    }

    /// The published table.
    pub fn table(&self) -> &Arc<ServiceTable> {
        &self.table
    }
}

/// A refused Service, for the log and `/services`.
fn refusal(name: &ServiceName, e: &ServiceError) -> String {
    format!(
        "service {}/{} could not be compiled ({e}); its last good version keeps serving",
        name.0, name.1
    )
}

/// Whether a pod runs on `node`: scheduled there, or attached here without a node name
/// (as the agent's own attachments are in a file datastore).
pub(crate) fn pod_is_here(pod: &Pod, node: &str) -> bool {
    match &pod.node_name {
        Some(n) => n == node,
        None => pod.annotations.contains_key(INTERFACE_ANNOTATION),
    }
}

/// What tells a local endpoint.
struct Here<'a> {
    node: &'a str,
    /// Whether an address is one of this node's pods'.
    local_pods: &'a dyn Fn(&IpAddr) -> bool,
}

impl Here<'_> {
    fn local(&self, node_name: Option<&str>, addr: IpAddr) -> bool {
        node_name == Some(self.node) || (self.local_pods)(&addr)
    }
}

/// The backends of `port` from the service's slices.
fn from_slices(slices: &[&EndpointSlice], port: &ServicePort, here: &Here<'_>) -> Vec<BackendSpec> {
    let mut found: BTreeMap<(IpAddr, u16), BackendSpec> = BTreeMap::new();
    for slice in slices {
        if slice.address_type == AddressType::Fqdn {
            continue;
        }
        let Some(number) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
            .and_then(|p| p.port)
            .filter(|&n| n != 0)
        else {
            continue;
        };
        for e in &slice.endpoints {
            let Some(&addr) = e.addresses.first() else {
                continue;
            };
            let backend = BackendSpec {
                addr,
                port: number,
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                local: here.local(e.node_name.as_deref(), addr),
            };
            // kube-proxy's endpoint slice cache: a copy in another slice replaces the one
            // kept only when it is ready.
            match found.get(&(addr, number)) {
                Some(kept) if kept.ready || !backend.ready => {}
                _ => {
                    found.insert((addr, number), backend);
                }
            }
        }
    }
    found.into_values().collect()
}

/// The backends of `port` as the EndpointSlice controller would list them: the pods (of
/// the service's namespace) the selector picks. None without a selector.
fn from_pods(
    pods: &[&Pod],
    service: &Service,
    port: &ServicePort,
    here: &Here<'_>,
) -> Vec<BackendSpec> {
    let Some(selector) = &service.selector else {
        return Vec::new();
    };
    let families: BTreeSet<bool> = service.cluster_ips.iter().map(IpAddr::is_ipv4).collect();
    let mut backends = Vec::new();
    for pod in pods {
        if pod.host_network || !selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v)) {
            continue;
        }
        let number = match &port.target_port {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Named(name) => pod
                .container_ports
                .iter()
                .find(|c| c.name.as_deref() == Some(name.as_str()) && c.protocol == port.protocol)
                .map(|c| c.port),
        };
        let Some(number) = number else {
            continue;
        };
        for &addr in &pod.ips {
            if !families.is_empty() && !families.contains(&addr.is_ipv4()) {
                continue;
            }
            backends.push(BackendSpec {
                addr,
                port: number,
                ready: true,
                serving: true,
                terminating: false,
                local: pod_is_here(pod, here.node) || here.local(None, addr),
            });
        }
    }
    backends.sort_by_key(|b| (b.addr, b.port));
    backends.dedup_by_key(|b| (b.addr, b.port));
    backends
}

/// Where `port` of `service` answers on this node.
fn frontends(
    service: &Service,
    port: &ServicePort,
    node_addresses: &[IpAddr],
    backends: &[BackendSpec],
) -> Vec<FrontendSpec> {
    let mut out: Vec<FrontendSpec> = Vec::new();
    let mut add = |addr: IpAddr, port: u16, kind: FrontendKind| {
        if !out.iter().any(|f| f.addr == addr && f.port == port) {
            out.push(FrontendSpec { addr, port, kind });
        }
    };
    for &ip in &service.cluster_ips {
        add(ip, port.port, FrontendKind::ClusterIp);
    }
    if let Some(node_port) = port.node_port {
        let mut families: BTreeSet<bool> =
            service.cluster_ips.iter().map(IpAddr::is_ipv4).collect();
        if families.is_empty() {
            families = backends.iter().map(|b| b.addr.is_ipv4()).collect();
        }
        for &addr in node_addresses {
            if families.is_empty() || families.contains(&addr.is_ipv4()) {
                add(addr, node_port, FrontendKind::NodePort);
            }
        }
    }
    for &ip in &service.load_balancer_ips {
        add(ip, port.port, FrontendKind::LoadBalancer);
    }
    for &ip in &service.external_ips {
        add(ip, port.port, FrontendKind::ExternalIp);
    }
    out
}

#[cfg(test)]
mod refresh_tests;
#[cfg(test)]
mod tests;
