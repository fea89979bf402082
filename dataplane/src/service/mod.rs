//! Services as the workers see them: frontends (a cluster IP, a node port, a load
//! balancer or external IP, with a port and protocol) mapped to backend sets, each with
//! its Maglev table ([`maglev`]).
//!
//! The control plane describes one [`ServiceSpec`] per Service port (each port has its own
//! target ports, and a named target port may resolve to a different number per pod) and
//! changes a [`ServiceTable`] in place one Service at a time with [`ServiceTable::set`]:
//! backend sets that did not change are kept (no Maglev work), and sets that changed are
//! derived from their previous table ([`maglev::Maglev::update`]), so an endpoint that goes
//! away moves only its own share of new flows. [`ServiceTable::build`] compiles a whole
//! list (the same way, from a previous table). The snapshot holds the table behind an
//! `Arc`: a worker never sees it change (the agent changes a table no snapshot holds).
//!
//! Which backends a frontend offers (Kubernetes' "Virtual IPs and Service Proxies" and
//! the traffic policy KEPs 1669, 2086):
//! - **ready** endpoints; when none is ready, the ones that are **serving and
//!   terminating** (KEP-1669, "ProxyTerminatingEndpoints"); none else.
//! - `internalTrafficPolicy: Local` limits traffic from inside the cluster to a cluster IP
//!   to endpoints on this node; `externalTrafficPolicy: Local` limits traffic from outside
//!   (through the uplink) to node ports, load balancer and external IPs to endpoints on this
//!   node, and keeps the client's address (no source NAT). With `Cluster` (the default),
//!   traffic from outside is translated to the node's address, so replies come back
//!   through this node. Traffic from pods to a node port or load balancer IP is treated as
//!   `Cluster` (as kube-proxy does since KEP-1860's short circuit).

pub mod maglev;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::flow::FlowKey;
use maglev::{BackendKey, Maglev};

/// IP protocol numbers a service port may name.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;

/// One port of one Service, with its frontends and endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    /// The service port's name (empty for a single unnamed port).
    pub port_name: String,
    /// [`TCP`], [`UDP`] or [`SCTP`].
    pub protocol: u8,
    /// The addresses and ports the service answers on.
    pub frontends: Vec<FrontendSpec>,
    /// The endpoints, with the target port resolved for each.
    pub backends: Vec<BackendSpec>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `sessionAffinity: ClientIP` with its timeout in seconds.
    pub affinity_seconds: Option<u32>,
}

/// Where a service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrontendSpec {
    pub addr: IpAddr,
    pub port: u16,
    pub kind: FrontendKind,
}

/// What kind of address a frontend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrontendKind {
    /// A cluster IP (`spec.clusterIPs`).
    ClusterIp,
    /// A node address with a `nodePort`.
    NodePort,
    /// A `status.loadBalancer.ingress` IP.
    LoadBalancer,
    /// One of `spec.externalIPs`.
    ExternalIp,
}

impl FrontendKind {
    /// The name `weir services` prints.
    pub fn name(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::LoadBalancer => "LoadBalancer",
            FrontendKind::ExternalIp => "ExternalIP",
        }
    }
}

/// One endpoint of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    pub addr: IpAddr,
    /// The target port, resolved.
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node.
    pub local: bool,
}

impl BackendSpec {
    /// Whether the endpoint may take new connections when no endpoint is ready.
    fn fallback(&self) -> bool {
        self.serving && self.terminating
    }
}

/// A set of backends to choose from and its Maglev table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendSet {
    /// Address (key form) and port of each backend; Maglev's slots index this list.
    pub backends: Vec<BackendKey>,
    pub table: Maglev,
}

impl BackendSet {
    /// The backend for a flow hash, if the set has any.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<BackendKey> {
        self.table
            .pick(hash)
            .and_then(|i| self.backends.get(usize::from(i)).copied())
    }

    fn derive(previous: Option<&BackendSet>, backends: Vec<BackendKey>) -> Arc<BackendSet> {
        let table = match previous {
            Some(p) => p.table.update(&p.backends, &backends),
            None => Maglev::new(&backends),
        };
        Arc::new(BackendSet { backends, table })
    }
}

/// One compiled service port.
#[derive(Debug, Clone)]
pub struct ServicePort {
    pub spec: ServiceSpec,
    /// The backends for `Cluster` traffic policy.
    pub cluster: Arc<BackendSet>,
    /// The backends for `Local` traffic policy (this node's).
    pub local: Arc<BackendSet>,
    /// The affinity timeout in nanoseconds (0: no affinity).
    pub affinity_ns: u64,
}

/// What a new connection to a frontend needs, held in the frontend's own entry of the
/// lookup table: the first packet of a connection reads this entry, a Maglev slot and a
/// backend, not the service port as well (at 10k services each is a cache miss).
#[derive(Debug, Clone)]
struct FrontendEntry {
    index: u32,
    kind: FrontendKind,
    snat_external: bool,
    affinity_ns: u64,
    /// The backends for connections from inside the cluster (a pod or the node).
    inside: Arc<BackendSet>,
    /// The backends for connections from outside (through the uplink).
    outside: Arc<BackendSet>,
}

impl FrontendEntry {
    fn new(index: u32, kind: FrontendKind, port: &ServicePort) -> FrontendEntry {
        let spec = &port.spec;
        let set = |local: bool| Arc::clone(if local { &port.local } else { &port.cluster });
        let (inside, outside) = match kind {
            FrontendKind::ClusterIp => (set(spec.internal_local), set(spec.internal_local)),
            _ => (set(false), set(spec.external_local)),
        };
        FrontendEntry {
            index,
            kind,
            snat_external: kind != FrontendKind::ClusterIp && !spec.external_local,
            affinity_ns: port.affinity_ns,
            inside,
            outside,
        }
    }
}

/// What a frontend lookup answers.
#[derive(Debug, Clone, Copy)]
pub struct Frontend<'a> {
    /// The service port's index in [`ServiceTable::ports`].
    pub index: u32,
    pub kind: FrontendKind,
    entry: &'a FrontendEntry,
    table: &'a ServiceTable,
}

impl<'a> Frontend<'a> {
    /// The service port the frontend belongs to.
    pub fn port(&self) -> Option<&'a ServicePort> {
        self.table.ports.get(self.index as usize)?.as_ref()
    }

    /// The backends for a connection, from inside the cluster (`external` false: a pod or
    /// the node) or from outside (through the uplink).
    #[inline]
    pub fn backends(&self, external: bool) -> &'a BackendSet {
        if external {
            &self.entry.outside
        } else {
            &self.entry.inside
        }
    }

    /// Whether a connection from outside is translated to the node's address
    /// (`externalTrafficPolicy: Cluster`).
    #[inline]
    pub fn snat_external(&self) -> bool {
        self.entry.snat_external
    }

    /// The `ClientIP` affinity timeout in nanoseconds (0: no affinity).
    #[inline]
    pub fn affinity_ns(&self) -> u64 {
        self.entry.affinity_ns
    }
}

/// Why a service table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "service {namespace}/{name}: {addr} port {port}/{protocol} is already the frontend of \
         {other}"
    )]
    FrontendTwice {
        namespace: String,
        name: String,
        addr: IpAddr,
        port: u16,
        protocol: u8,
        other: String,
    },
    #[error("a port of service {spec} was given as one of service {service}")]
    Misfiled { service: String, spec: String },
    #[error(
        "service {namespace}/{name}: protocol {protocol} is not TCP (6), UDP (17) or SCTP (132)"
    )]
    Protocol {
        namespace: String,
        name: String,
        protocol: u8,
    },
}

/// The key of a frontend or a backend: address (key form), port, protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrPort {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
}

/// A Service: namespace and name. Its ports are replaced together ([`ServiceTable::set`]).
pub type ServiceName = (String, String);

/// Every service port of the cluster, compiled for lookups, and changed in place one
/// Service at a time ([`ServiceTable::set`]): the work of a change is that Service's, not
/// the cluster's.
#[derive(Debug, Clone, Default)]
pub struct ServiceTable {
    frontends: FxHashMap<AddrPort, FrontendEntry>,
    /// Every endpoint of every service (whatever its conditions), with the number of
    /// service ports listing it: flows to them are kept on one worker by their client's
    /// port (see `node::steer`), and a flow whose backend is no longer listed ends.
    endpoints: FxHashMap<AddrPort, u32>,
    /// The frontend addresses other than node ports', with the number of frontends on each
    /// (later fragments to them are dropped: they carry no port to look up).
    addresses: FxHashMap<[u8; 16], u32>,
    /// The ports some frontend listens on, and the ports some endpoint serves on, one bit
    /// each: most packets are not service traffic, and one bit test tells them so before
    /// any hash lookup.
    frontend_ports: PortSet,
    endpoint_ports: PortSet,
    /// The compiled ports by index; a Service's change keeps the index of each port that
    /// stays (so a `ClientIP` pin, keyed by it, stays too) and frees those that go.
    ports: Vec<Option<ServicePort>>,
    free: Vec<u32>,
    /// Each Service's port indices, in the order of its specs.
    by_service: BTreeMap<ServiceName, Vec<u32>>,
}

/// A set of ports as a 65 536-bit map (8 KiB), with how many entries hold each port.
#[derive(Debug, Clone)]
pub struct PortSet {
    bits: Box<[u64; 1024]>,
    counts: FxHashMap<u16, u32>,
}

impl Default for PortSet {
    fn default() -> Self {
        PortSet {
            bits: Box::new([0; 1024]),
            counts: FxHashMap::default(),
        }
    }
}

impl PortSet {
    fn insert(&mut self, port: u16) {
        *self.counts.entry(port).or_default() += 1;
        self.bits[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    fn remove(&mut self, port: u16) {
        if let Some(n) = self.counts.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&port);
                self.bits[usize::from(port >> 6)] &= !(1 << (port & 63));
            }
        }
    }

    /// Whether `port` is in the set.
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }
}

/// Adds one to `key`'s count.
fn count_in<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, u32>, key: K) {
    *map.entry(key).or_default() += 1;
}

/// Takes one from `key`'s count, forgetting it at zero.
fn count_out<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// What tells two ports of one Service apart: port name, protocol, frontend family (a
/// dual-stack port is two specs, one per family).
fn port_key(s: &ServiceSpec) -> (&str, u8, bool) {
    (
        &s.port_name,
        s.protocol,
        s.frontends.first().is_some_and(|f| f.addr.is_ipv4()),
    )
}

impl ServiceTable {
    /// Compiles `specs`, sharing or deriving backend sets from `previous` (the table built
    /// last time, if any) where the same service port (namespace, name, port name,
    /// protocol, address family of its frontends) had one. All or nothing: the first
    /// Service that cannot be compiled is the error.
    pub fn build(
        specs: Vec<ServiceSpec>,
        previous: Option<&ServiceTable>,
    ) -> Result<Self, ServiceError> {
        let mut grouped: BTreeMap<ServiceName, Vec<ServiceSpec>> = BTreeMap::new();
        for spec in specs {
            grouped
                .entry((spec.namespace.clone(), spec.name.clone()))
                .or_default()
                .push(spec);
        }
        let mut t = ServiceTable::default();
        for (name, specs) in grouped {
            let before = previous.map_or_else(Vec::new, |p| p.service_ports(&name).collect());
            t.insert(&name, specs, &before)?;
        }
        Ok(t)
    }

    /// Replaces the ports of Service `name` with `specs` (none: the Service is gone), in
    /// place. A port that stays keeps its index, and its backend sets are shared when
    /// unchanged or derived from the old ones (Maglev moves only the share of an endpoint
    /// that went away). Refused, with nothing changed, when a spec has a protocol other
    /// than TCP, UDP and SCTP, names another Service, or answers on a frontend another
    /// Service holds.
    pub fn set(&mut self, name: &ServiceName, specs: Vec<ServiceSpec>) -> Result<(), ServiceError> {
        let old = self.by_service.get(name).cloned().unwrap_or_default();
        if old.len() == specs.len()
            && old.iter().zip(&specs).all(|(&i, s)| {
                self.ports[i as usize]
                    .as_ref()
                    .is_some_and(|p| p.spec == *s)
            })
        {
            return Ok(());
        }
        self.check(name, &specs)?;
        let before: Vec<ServicePort> = old.iter().filter_map(|&i| self.remove_port(i)).collect();
        self.by_service.remove(name);
        let before_ref: Vec<&ServicePort> = before.iter().collect();
        self.insert_at(name, specs, &before_ref, &old);
        Ok(())
    }

    /// The compiled ports of Service `name`, in the order of its specs.
    fn service_ports(&self, name: &ServiceName) -> impl Iterator<Item = &ServicePort> {
        self.by_service
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.ports[i as usize].as_ref())
    }

    /// Why `specs` cannot replace Service `name`'s ports, if they cannot.
    fn check(&self, name: &ServiceName, specs: &[ServiceSpec]) -> Result<(), ServiceError> {
        let mut seen: FxHashSet<AddrPort> = FxHashSet::default();
        for spec in specs {
            if !matches!(spec.protocol, TCP | UDP | SCTP) {
                return Err(ServiceError::Protocol {
                    namespace: spec.namespace.clone(),
                    name: spec.name.clone(),
                    protocol: spec.protocol,
                });
            }
            if (&spec.namespace, &spec.name) != (&name.0, &name.1) {
                return Err(ServiceError::Misfiled {
                    service: format!("{}/{}", name.0, name.1),
                    spec: format!("{}/{}", spec.namespace, spec.name),
                });
            }
            for f in &spec.frontends {
                let key = AddrPort {
                    addr: FlowKey::map_ip(f.addr),
                    port: f.port,
                    proto: spec.protocol,
                };
                let other = match self.frontends.get(&key) {
                    Some(e) => self.ports[e.index as usize]
                        .as_ref()
                        .map(|p| (&p.spec.namespace, &p.spec.name))
                        .filter(|o| *o != (&name.0, &name.1))
                        .map(|(ns, n)| format!("{ns}/{n}")),
                    None => None,
                };
                let other =
                    other.or_else(|| (!seen.insert(key)).then(|| format!("{}/{}", name.0, name.1)));
                if let Some(other) = other {
                    return Err(ServiceError::FrontendTwice {
                        namespace: spec.namespace.clone(),
                        name: spec.name.clone(),
                        addr: f.addr,
                        port: f.port,
                        protocol: spec.protocol,
                        other,
                    });
                }
            }
        }
        Ok(())
    }

    /// Adds Service `name`'s ports (it has none in the table), deriving sets from `before`.
    fn insert(
        &mut self,
        name: &ServiceName,
        specs: Vec<ServiceSpec>,
        before: &[&ServicePort],
    ) -> Result<(), ServiceError> {
        self.check(name, &specs)?;
        self.insert_at(name, specs, before, &[]);
        Ok(())
    }

    /// Adds checked ports, deriving sets from `before`; `old` holds the index of each port
    /// of `before` that was in this table: a port that comes back keeps it, the others are
    /// freed.
    fn insert_at(
        &mut self,
        name: &ServiceName,
        specs: Vec<ServiceSpec>,
        before: &[&ServicePort],
        old: &[u32],
    ) {
        let mut indices = Vec::with_capacity(specs.len());
        let mut taken = vec![false; old.len()];
        for spec in specs {
            let was = before
                .iter()
                .position(|p| port_key(&p.spec) == port_key(&spec));
            let index = match was.filter(|&k| k < old.len() && !taken[k]) {
                Some(k) => {
                    taken[k] = true;
                    old[k]
                }
                None => self.free.pop().unwrap_or_else(|| {
                    self.ports.push(None);
                    (self.ports.len() - 1) as u32
                }),
            };
            let port = compile_port(spec, was.map(|k| before[k]));
            for f in &port.spec.frontends {
                let key = AddrPort {
                    addr: FlowKey::map_ip(f.addr),
                    port: f.port,
                    proto: port.spec.protocol,
                };
                self.frontends
                    .insert(key, FrontendEntry::new(index, f.kind, &port));
                self.frontend_ports.insert(f.port);
                if f.kind != FrontendKind::NodePort {
                    count_in(&mut self.addresses, key.addr);
                }
            }
            for b in &port.spec.backends {
                self.endpoint_ports.insert(b.port);
                count_in(
                    &mut self.endpoints,
                    AddrPort {
                        addr: FlowKey::map_ip(b.addr),
                        port: b.port,
                        proto: port.spec.protocol,
                    },
                );
            }
            self.ports[index as usize] = Some(port);
            indices.push(index);
        }
        if !indices.is_empty() {
            self.by_service.insert(name.clone(), indices);
        }
        for (k, &i) in old.iter().enumerate() {
            if !taken[k] {
                self.free.push(i);
            }
        }
    }

    /// Takes port `index` out of every lookup (its index is not freed here).
    fn remove_port(&mut self, index: u32) -> Option<ServicePort> {
        let port = self.ports.get_mut(index as usize)?.take()?;
        for f in &port.spec.frontends {
            let key = AddrPort {
                addr: FlowKey::map_ip(f.addr),
                port: f.port,
                proto: port.spec.protocol,
            };
            self.frontends.remove(&key);
            self.frontend_ports.remove(f.port);
            if f.kind != FrontendKind::NodePort {
                count_out(&mut self.addresses, &key.addr);
            }
        }
        for b in &port.spec.backends {
            self.endpoint_ports.remove(b.port);
            count_out(
                &mut self.endpoints,
                &AddrPort {
                    addr: FlowKey::map_ip(b.addr),
                    port: b.port,
                    proto: port.spec.protocol,
                },
            );
        }
        Some(port)
    }

    /// Whether some frontend listens on `port` (a quick test before [`Self::frontend`]).
    #[inline]
    pub fn is_frontend_port(&self, port: u16) -> bool {
        self.frontend_ports.contains(port)
    }

    /// Whether some endpoint serves on `port` (a quick test before [`Self::is_endpoint`]).
    #[inline]
    pub fn is_endpoint_port(&self, port: u16) -> bool {
        self.endpoint_ports.contains(port)
    }

    /// The frontend at `addr` (key form), `port`, `proto`.
    #[inline]
    pub fn frontend(&self, addr: &[u8; 16], port: u16, proto: u8) -> Option<Frontend<'_>> {
        if !self.frontend_ports.contains(port) {
            return None;
        }
        let entry = self.frontends.get(&AddrPort {
            addr: *addr,
            port,
            proto,
        })?;
        Some(Frontend {
            index: entry.index,
            kind: entry.kind,
            entry,
            table: self,
        })
    }

    /// Whether `addr`:`port` over `proto` is an endpoint of some service.
    #[inline]
    pub fn is_endpoint(&self, addr: &[u8; 16], port: u16, proto: u8) -> bool {
        self.endpoint_ports.contains(port)
            && self.endpoints.contains_key(&AddrPort {
                addr: *addr,
                port,
                proto,
            })
    }

    /// Whether `addr` (key form) is a service address (not counting node ports').
    #[inline]
    pub fn is_service_address(&self, addr: &[u8; 16]) -> bool {
        !self.addresses.is_empty() && self.addresses.contains_key(addr)
    }

    /// The number of frontends (address, port, protocol).
    #[inline]
    pub fn frontends(&self) -> usize {
        self.frontends.len()
    }

    /// Whether there is no frontend at all (the service stages then do nothing).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty()
    }

    /// The compiled service ports, by Service (namespace, name), each Service's in the
    /// order of its specs.
    pub fn ports(&self) -> impl Iterator<Item = &ServicePort> + '_ {
        self.by_service
            .values()
            .flatten()
            .filter_map(|&i| self.ports[i as usize].as_ref())
    }

    /// The number of compiled service ports.
    pub fn len(&self) -> usize {
        self.by_service.values().map(Vec::len).sum()
    }
}

/// Compiles one port, sharing or deriving its backend sets from `before` (the same port as
/// compiled last time, if any).
fn compile_port(spec: ServiceSpec, before: Option<&ServicePort>) -> ServicePort {
    let cluster = chosen(&spec.backends, |_| true);
    let local = chosen(&spec.backends, |b| b.local);
    let reuse = |set: Vec<BackendKey>, old: Option<&Arc<BackendSet>>| match old {
        Some(o) if o.backends == set => Arc::clone(o),
        _ => BackendSet::derive(old.map(|o| &**o), set),
    };
    let cluster = reuse(cluster, before.map(|p| &p.cluster));
    // Every endpoint local (a one-node cluster, a DaemonSet): one table serves both.
    let local = if local == cluster.backends {
        Arc::clone(&cluster)
    } else {
        reuse(local, before.map(|p| &p.local))
    };
    let affinity_ns = spec
        .affinity_seconds
        .map_or(0, |s| u64::from(s) * 1_000_000_000);
    ServicePort {
        spec,
        cluster,
        local,
        affinity_ns,
    }
}

/// The backends new connections may go to: the ready ones among those `keep` accepts, or
/// when none is ready, the serving and terminating ones.
fn chosen(backends: &[BackendSpec], keep: impl Fn(&BackendSpec) -> bool) -> Vec<BackendKey> {
    let key = |b: &BackendSpec| (FlowKey::map_ip(b.addr), b.port);
    let ready: Vec<BackendKey> = backends
        .iter()
        .filter(|b| keep(b) && b.ready)
        .map(key)
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    backends
        .iter()
        .filter(|b| keep(b) && b.fallback())
        .map(key)
        .collect()
}

#[cfg(test)]
mod update_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(last: u8, ready: bool, terminating: bool, local: bool) -> BackendSpec {
        BackendSpec {
            addr: IpAddr::from([198, 18, 10, last]),
            port: 8080,
            ready,
            serving: true,
            terminating,
            local,
        }
    }

    fn spec(backends: Vec<BackendSpec>) -> ServiceSpec {
        ServiceSpec {
            namespace: "shop".into(),
            name: "api".into(),
            port_name: "http".into(),
            protocol: TCP,
            frontends: vec![FrontendSpec {
                addr: IpAddr::from([198, 19, 0, 10]),
                port: 80,
                kind: FrontendKind::ClusterIp,
            }],
            backends,
            external_local: false,
            internal_local: false,
            affinity_seconds: None,
        }
    }

    fn vip() -> [u8; 16] {
        FlowKey::map_v4([198, 19, 0, 10])
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let t = ServiceTable::build(
            vec![spec(vec![
                backend(1, true, false, true),
                backend(2, false, true, false),
            ])],
            None,
        )
        .unwrap();
        let f = t.frontend(&vip(), 80, TCP).unwrap();
        assert_eq!(f.backends(false).backends.len(), 1);
        assert!(t.is_endpoint(&FlowKey::map_v4([198, 18, 10, 2]), 8080, TCP));
        let t =
            ServiceTable::build(vec![spec(vec![backend(2, false, true, false)])], None).unwrap();
        let f = t.frontend(&vip(), 80, TCP).unwrap();
        assert_eq!(f.backends(false).backends.len(), 1, "the terminating one");
        // externalTrafficPolicy Cluster: traffic from outside uses the same set.
        assert_eq!(f.backends(true).backends.len(), 1);
        assert!(
            t.frontend(&vip(), 80, UDP).is_none(),
            "protocol is part of the key"
        );
    }

    #[test]
    fn a_port_whose_endpoints_are_all_local_has_one_table_for_both_policies() {
        let t = ServiceTable::build(vec![spec(vec![backend(1, true, false, true)])], None).unwrap();
        let p = t.ports().next().unwrap();
        assert!(Arc::ptr_eq(&p.cluster, &p.local));
        let t = ServiceTable::build(
            vec![spec(vec![
                backend(1, true, false, true),
                backend(2, true, false, false),
            ])],
            None,
        )
        .unwrap();
        let p = t.ports().next().unwrap();
        assert_eq!(p.local.backends.len(), 1);
        assert_eq!(p.cluster.backends.len(), 2);
    }

    #[test]
    fn an_unchanged_set_is_shared_with_the_previous_table() {
        let a = ServiceTable::build(vec![spec(vec![backend(1, true, false, true)])], None).unwrap();
        let b =
            ServiceTable::build(vec![spec(vec![backend(1, true, false, true)])], Some(&a)).unwrap();
        let (a, b) = (a.ports().next().unwrap(), b.ports().next().unwrap());
        assert!(Arc::ptr_eq(&a.cluster, &b.cluster));
    }

    #[test]
    fn the_two_families_of_a_dual_stack_port_keep_their_own_sets() {
        let mut v6 = spec(vec![BackendSpec {
            addr: "2001:db8::3".parse().unwrap(),
            ..backend(1, true, false, true)
        }]);
        v6.frontends[0].addr = "2001:db8:ffff::10".parse().unwrap();
        let both = || vec![spec(vec![backend(1, true, false, true)]), v6.clone()];
        let a = ServiceTable::build(both(), None).unwrap();
        let b = ServiceTable::build(both(), Some(&a)).unwrap();
        assert_eq!(a.len(), 2);
        for (i, (a, b)) in a.ports().zip(b.ports()).enumerate() {
            assert!(Arc::ptr_eq(&a.cluster, &b.cluster), "family {i}");
        }
    }

    #[test]
    fn two_services_on_one_frontend_are_refused_with_both_names() {
        let mut other = spec(vec![]);
        other.name = "web".into();
        let e = ServiceTable::build(vec![spec(vec![]), other], None).unwrap_err();
        assert!(
            e.to_string().contains("already the frontend of shop/api"),
            "{e}"
        );
    }
}
