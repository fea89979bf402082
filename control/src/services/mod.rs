//! This node's services, as the dataplane's service table wants them: one
//! [`ServiceSpec`] per Service port, computed from the Services, EndpointSlices and pods of
//! the model ([`node_services`]), and the agent's memory of the table it published last
//! ([`ServiceState`]), which keeps the Maglev tables of unchanged services and moves only
//! the share of an endpoint that went away (see `weir_dataplane::service`).
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

pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use weir_dataplane::service::{
    BackendSpec, FrontendKind, FrontendSpec, ServiceError, ServiceSpec, ServiceTable,
};

use crate::calc::INTERFACE_ANNOTATION;
use crate::policy::load::Cluster;
use crate::policy::model::{
    AddressType, EndpointSlice, Pod, Service, ServicePort, ServiceType, SessionAffinity,
    TargetPort, TrafficPolicy,
};

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
    let here = Here {
        node,
        local_pods: &local_pods,
    };
    let mut specs = Vec::new();
    for service in cluster.services.values() {
        if service.service_type == ServiceType::ExternalName
            || service.headless
            || service.not_proxied.is_some()
        {
            continue;
        }
        let owned = slices
            .get(&(service.namespace.as_str(), service.name.as_str()))
            .map(Vec::as_slice);
        for port in &service.ports {
            let backends = match owned {
                Some(owned) => from_slices(owned, port, &here),
                None => from_pods(
                    pods_by_namespace
                        .get(service.namespace.as_str())
                        .map_or(&[], Vec::as_slice),
                    service,
                    port,
                    &here,
                ),
            };
            let frontends = frontends(service, port, &node_addresses, &backends);
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
    }
    let key = |s: &ServiceSpec| {
        (
            s.namespace.clone(),
            s.name.clone(),
            s.port_name.clone(),
            s.protocol,
            s.frontends.first().is_some_and(|f| f.addr.is_ipv6()),
        )
    };
    specs.sort_by_key(key);
    specs
}

/// The service table the agent published last, and what it makes of new specs.
#[derive(Debug, Default)]
pub struct ServiceState {
    /// The specs `table` was built from.
    specs: Vec<ServiceSpec>,
    table: Arc<ServiceTable>,
    /// The latest specs that could not be built, and why: while the model gives the same
    /// ones, they are not tried (nor reported) again.
    refused: Option<(Vec<ServiceSpec>, String)>,
    /// Service tables refused since the start.
    refused_total: u64,
}

/// What new specs give (see [`ServiceState::change`]); the agent publishes
/// [`ServiceChange::table`] and, once published, [`ServiceState::commit`]s it.
#[derive(Debug)]
pub enum ServiceChange {
    /// The specs are those of the published table: it is reused.
    Same(Arc<ServiceTable>),
    /// A new table, built from the published one.
    Built(Vec<ServiceSpec>, Arc<ServiceTable>),
    /// The specs cannot be built (two services on one frontend): the published table
    /// stays. `fresh` is false when these very specs were refused before.
    Refused {
        specs: Vec<ServiceSpec>,
        why: String,
        fresh: bool,
        table: Arc<ServiceTable>,
    },
}

impl ServiceChange {
    /// The table to publish.
    pub fn table(&self) -> &Arc<ServiceTable> {
        match self {
            ServiceChange::Same(t) | ServiceChange::Built(_, t) => t,
            ServiceChange::Refused { table, .. } => table,
        }
    }
}

impl ServiceState {
    /// The table for `specs`: the published one when they did not change, else one built
    /// from it, else (refused) the published one with the reason.
    pub fn change(&self, specs: Vec<ServiceSpec>) -> ServiceChange {
        if specs == self.specs {
            return ServiceChange::Same(self.table.clone());
        }
        if let Some((refused, why)) = &self.refused {
            if *refused == specs {
                return ServiceChange::Refused {
                    specs,
                    why: why.clone(),
                    fresh: false,
                    table: self.table.clone(),
                };
            }
        }
        match ServiceTable::build(specs.clone(), Some(&self.table)) {
            Ok(table) => ServiceChange::Built(specs, Arc::new(table)),
            Err(e) => ServiceChange::Refused {
                specs,
                why: refusal(&e),
                fresh: true,
                table: self.table.clone(),
            },
        }
    }

    /// Remembers a change once the snapshot holding its table is published. Returns the
    /// reason when it is a refusal not reported before (to log).
    pub fn commit(&mut self, change: ServiceChange) -> Option<String> {
        match change {
            ServiceChange::Same(_) => {
                self.refused = None;
                None
            }
            ServiceChange::Built(specs, table) => {
                self.specs = specs;
                self.table = table;
                self.refused = None;
                None
            }
            ServiceChange::Refused {
                specs, why, fresh, ..
            } => {
                self.refused = Some((specs, why.clone()));
                if fresh {
                    self.refused_total += 1;
                    Some(why)
                } else {
                    None
                }
            }
        }
    }

    /// Why the model's latest services could not be built, while they cannot.
    pub fn refusal(&self) -> Option<&str> {
        self.refused.as_ref().map(|(_, why)| why.as_str())
    }

    /// Service tables refused since the start.
    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }
}

/// A refused table, for the log and `/services`.
fn refusal(e: &ServiceError) -> String {
    format!("the services could not be compiled ({e}); the last good service table keeps serving")
}

/// Whether a pod runs on `node`: scheduled there, or attached here without a node name
/// (as the agent's own attachments are in a file datastore).
fn pod_is_here(pod: &Pod, node: &str) -> bool {
    match &pod.node_name {
        Some(n) => n == node,
        None => pod.annotations.contains_key(INTERFACE_ANNOTATION),
    }
}

/// What tells a local endpoint.
struct Here<'a> {
    node: &'a str,
    local_pods: &'a BTreeSet<IpAddr>,
}

impl Here<'_> {
    fn local(&self, node_name: Option<&str>, addr: IpAddr) -> bool {
        node_name == Some(self.node) || self.local_pods.contains(&addr)
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
mod tests;
