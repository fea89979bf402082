//! Services as the workers see them: frontends (a cluster IP, a node port, a load
//! balancer or external IP, with a port and protocol) mapped to backend sets, each with
//! its Maglev table ([`maglev`]).
//!
//! The control plane describes one [`ServiceSpec`] per Service port (each port has its own
//! target ports, and a named target port may resolve to a different number per pod) and
//! builds a [`ServiceTable`] with [`ServiceTable::build`], passing the table it built last
//! time: backend sets that did not change are shared with it (no Maglev work), and sets
//! that changed are derived from their previous table ([`maglev::Maglev::update`]), so an
//! endpoint that goes away moves only its own share of new flows. The snapshot holds the
//! table behind an `Arc`: a publication that changes no service reuses it whole.
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

/// What a frontend lookup answers.
#[derive(Debug, Clone, Copy)]
pub struct Frontend<'a> {
    /// The service port's index in [`ServiceTable::ports`].
    pub index: u32,
    pub port: &'a ServicePort,
    pub kind: FrontendKind,
}

impl Frontend<'_> {
    /// The backends for a connection, from inside the cluster (`external` false: a pod or
    /// the node) or from outside (through the uplink).
    #[inline]
    pub fn backends(&self, external: bool) -> &BackendSet {
        let spec = &self.port.spec;
        let local = match self.kind {
            FrontendKind::ClusterIp => spec.internal_local,
            _ => external && spec.external_local,
        };
        if local {
            &self.port.local
        } else {
            &self.port.cluster
        }
    }

    /// Whether a connection from outside is translated to the node's address
    /// (`externalTrafficPolicy: Cluster`).
    #[inline]
    pub fn snat_external(&self) -> bool {
        self.kind != FrontendKind::ClusterIp && !self.port.spec.external_local
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

/// Every service port of the cluster, compiled for lookups.
#[derive(Debug, Clone, Default)]
pub struct ServiceTable {
    frontends: FxHashMap<AddrPort, (u32, FrontendKind)>,
    /// Every endpoint of every service (whatever its conditions): flows to them are kept
    /// on one worker by their client's port (see `node::steer`), and a flow whose backend
    /// is no longer listed ends.
    endpoints: FxHashSet<AddrPort>,
    /// The frontend addresses other than node ports' (later fragments to them are
    /// dropped: they carry no port to look up).
    addresses: FxHashSet<[u8; 16]>,
    /// The ports some frontend listens on, and the ports some endpoint serves on, one bit
    /// each: most packets are not service traffic, and one bit test tells them so before
    /// any hash lookup.
    frontend_ports: PortSet,
    endpoint_ports: PortSet,
    ports: Vec<ServicePort>,
}

/// A set of ports as a 65 536-bit map (8 KiB).
#[derive(Debug, Clone)]
pub struct PortSet(Box<[u64; 1024]>);

impl Default for PortSet {
    fn default() -> Self {
        PortSet(Box::new([0; 1024]))
    }
}

impl PortSet {
    fn insert(&mut self, port: u16) {
        self.0[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    /// Whether `port` is in the set.
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }
}

impl ServiceTable {
    /// Compiles `specs`, sharing or deriving backend sets from `previous` (the table built
    /// last time, if any) where the same service port (namespace, name, port name,
    /// protocol, address family of its frontends) had one.
    pub fn build(
        specs: Vec<ServiceSpec>,
        previous: Option<&ServiceTable>,
    ) -> Result<Self, ServiceError> {
        // A dual-stack port is two specs, one per family: the family is part of the key.
        type Key<'k> = (&'k str, &'k str, &'k str, u8, bool);
        let v4 = |s: &ServiceSpec| s.frontends.first().is_some_and(|f| f.addr.is_ipv4());
        let mut by_name: FxHashMap<Key<'_>, &ServicePort> = FxHashMap::default();
        if let Some(p) = previous {
            for port in &p.ports {
                let s = &port.spec;
                by_name.insert(
                    (&s.namespace, &s.name, &s.port_name, s.protocol, v4(s)),
                    port,
                );
            }
        }
        let mut t = ServiceTable::default();
        for spec in specs {
            if !matches!(spec.protocol, TCP | UDP | SCTP) {
                return Err(ServiceError::Protocol {
                    namespace: spec.namespace,
                    name: spec.name,
                    protocol: spec.protocol,
                });
            }
            let index = t.ports.len() as u32;
            for f in &spec.frontends {
                let key = AddrPort {
                    addr: FlowKey::map_ip(f.addr),
                    port: f.port,
                    proto: spec.protocol,
                };
                if let Some(&(other, _)) = t.frontends.get(&key) {
                    let o = &t.ports[other as usize].spec;
                    return Err(ServiceError::FrontendTwice {
                        namespace: spec.namespace.clone(),
                        name: spec.name.clone(),
                        addr: f.addr,
                        port: f.port,
                        protocol: spec.protocol,
                        other: format!("{}/{}", o.namespace, o.name),
                    });
                }
                t.frontends.insert(key, (index, f.kind));
                t.frontend_ports.insert(f.port);
                if f.kind != FrontendKind::NodePort {
                    t.addresses.insert(key.addr);
                }
            }
            for b in &spec.backends {
                t.endpoint_ports.insert(b.port);
                t.endpoints.insert(AddrPort {
                    addr: FlowKey::map_ip(b.addr),
                    port: b.port,
                    proto: spec.protocol,
                });
            }
            let before = by_name
                .get(&(
                    spec.namespace.as_str(),
                    spec.name.as_str(),
                    spec.port_name.as_str(),
                    spec.protocol,
                    v4(&spec),
                ))
                .copied();
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
            t.ports.push(ServicePort {
                spec,
                cluster,
                local,
                affinity_ns,
            });
        }
        Ok(t)
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
        let (index, kind) = *self.frontends.get(&AddrPort {
            addr: *addr,
            port,
            proto,
        })?;
        Some(Frontend {
            index,
            port: &self.ports[index as usize],
            kind,
        })
    }

    /// Whether `addr`:`port` over `proto` is an endpoint of some service.
    #[inline]
    pub fn is_endpoint(&self, addr: &[u8; 16], port: u16, proto: u8) -> bool {
        self.endpoint_ports.contains(port)
            && self.endpoints.contains(&AddrPort {
                addr: *addr,
                port,
                proto,
            })
    }

    /// Whether `addr` (key form) is a service address (not counting node ports').
    #[inline]
    pub fn is_service_address(&self, addr: &[u8; 16]) -> bool {
        !self.addresses.is_empty() && self.addresses.contains(addr)
    }

    /// Whether there is no frontend at all (the service stages then do nothing).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty()
    }

    /// The compiled service ports, in the order of the specs.
    pub fn ports(&self) -> &[ServicePort] {
        &self.ports
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
        assert!(Arc::ptr_eq(&t.ports[0].cluster, &t.ports[0].local));
        let t = ServiceTable::build(
            vec![spec(vec![
                backend(1, true, false, true),
                backend(2, true, false, false),
            ])],
            None,
        )
        .unwrap();
        assert_eq!(t.ports[0].local.backends.len(), 1);
        assert_eq!(t.ports[0].cluster.backends.len(), 2);
    }

    #[test]
    fn an_unchanged_set_is_shared_with_the_previous_table() {
        let a = ServiceTable::build(vec![spec(vec![backend(1, true, false, true)])], None).unwrap();
        let b =
            ServiceTable::build(vec![spec(vec![backend(1, true, false, true)])], Some(&a)).unwrap();
        assert!(Arc::ptr_eq(&a.ports[0].cluster, &b.ports[0].cluster));
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
        for i in 0..2 {
            assert!(
                Arc::ptr_eq(&a.ports[i].cluster, &b.ports[i].cluster),
                "family {i}"
            );
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
