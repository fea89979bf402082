//! The generated cluster of `weir-bench services`: `n` services of `endpoints` endpoints
//! each, one of which (the *target*, in the middle of the list) is the one the traffic goes
//! to. The same list feeds every forwarder: kube-proxy's nftables and iptables rulesets
//! ([`super::kube_proxy`]), weir's datastore ([`super::datastore`]) and the in-memory
//! service table ([`super::stage`]), so that all of them hold the same services.
//!
//! Addresses (all in the benchmarking ranges):
//! - cluster IPs from 198.19.0.0/16 (the service CIDR), service `i` at
//!   198.19.`i / 250`.`i % 250 + 1`;
//! - endpoints of the other services from 198.18.128.0/17 (not routed anywhere: those
//!   services only make the tables realistic), each (address, port) distinct;
//! - the target's endpoint is the caller's backend (the sink pod, on [`UDP_PORT`]).
//!
//! Services alternate TCP and UDP on ports 80 and 443, as a cluster's mix of web and DNS-ish
//! services would; the target is UDP port [`TARGET_PORT`], translated to the backend's
//! port, so the destination port is rewritten too.
//!
//! [`UDP_PORT`]: crate::forward::traffic::UDP_PORT

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The service CIDR (the cluster IPs' range).
pub const SERVICE_CIDR: &str = "198.19.0.0/16";
/// The cluster CIDR kube-proxy is told (`--cluster-cidr`): pods' traffic from inside it is
/// not masqueraded. It holds the lab's pods (198.18.9.0/24).
pub const CLUSTER_CIDR: &str = "198.18.0.0/16";
/// The target service's port (UDP); its endpoint listens on the backend's port.
pub const TARGET_PORT: u16 = 80;
/// The namespace of every generated service.
pub const NAMESPACE: &str = "bench";
/// The name of the target service's port (every generated port is named).
pub const PORT_NAME: &str = "p";

/// One service port with its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchService {
    pub name: String,
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// Address and target port of each endpoint.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

impl BenchService {
    /// `tcp` or `udp`, as nftables and iptables spell it.
    pub fn proto_name(&self) -> &'static str {
        if self.protocol == 17 {
            "udp"
        } else {
            "tcp"
        }
    }
}

/// The generated services and which one the traffic goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSet {
    pub services: Vec<BenchService>,
    /// Index of the target service in `services`.
    pub target: usize,
}

impl ServiceSet {
    /// `n` services (at least 1) of `endpoints` endpoints each; the target, at `n / 2`, has
    /// one endpoint: `backend` (the traffic must all reach the sink, and a kernel forwarder
    /// picks at random).
    pub fn generate(n: usize, endpoints: usize, backend: (Ipv4Addr, u16)) -> ServiceSet {
        ServiceSet::generate_with(n, endpoints, vec![backend])
    }

    /// As [`ServiceSet::generate`], the target's endpoints given.
    pub fn generate_with(
        n: usize,
        endpoints: usize,
        target_endpoints: Vec<(Ipv4Addr, u16)>,
    ) -> ServiceSet {
        let n = n.max(1);
        let target = n / 2;
        let mut next_endpoint = 0usize;
        let services = (0..n)
            .map(|i| {
                if i == target {
                    return BenchService {
                        name: target_name(),
                        protocol: 17,
                        cluster_ip: cluster_ip(i),
                        port: TARGET_PORT,
                        endpoints: target_endpoints.clone(),
                    };
                }
                let eps = (0..endpoints)
                    .map(|_| {
                        let e = endpoint(next_endpoint);
                        next_endpoint += 1;
                        e
                    })
                    .collect();
                BenchService {
                    name: format!("svc-{i}"),
                    protocol: if i % 2 == 0 { 6 } else { 17 },
                    cluster_ip: cluster_ip(i),
                    port: if i % 4 < 2 { 80 } else { 443 },
                    endpoints: eps,
                }
            })
            .collect();
        ServiceSet { services, target }
    }

    /// The service the traffic goes to.
    pub fn target(&self) -> &BenchService {
        &self.services[self.target]
    }

    /// Endpoints over all services.
    pub fn endpoint_count(&self) -> usize {
        self.services.iter().map(|s| s.endpoints.len()).sum()
    }
}

/// The target service's name.
pub fn target_name() -> String {
    "target".to_string()
}

/// The cluster IP of service `i` (`i` < 63,750).
pub fn cluster_ip(i: usize) -> Ipv4Addr {
    assert!(i < 250 * 255, "at most 63,750 services fit the addressing");
    Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Endpoint number `k` of the other services: an address in 198.18.128.0/17 and a port,
/// distinct for every `k`.
fn endpoint(k: usize) -> (Ipv4Addr, u16) {
    // 127 × 254 usable addresses; the port moves on when they are used up.
    const SPAN: usize = 127 * 254;
    let a = k % SPAN;
    let addr = Ipv4Addr::new(198, 18, 128 + (a / 254) as u8, (a % 254 + 1) as u8);
    (addr, 8080 + (k / SPAN) as u16)
}

/// Whether `addr` is in `cidr` (one of this module's constants).
pub fn in_cidr(cidr: &str, addr: Ipv4Addr) -> bool {
    cidr.parse::<Ipv4Net>()
        .expect("the module's CIDRs parse")
        .contains(&addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINK: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 9, 2), 9);

    #[test]
    fn services_are_distinct_and_the_target_points_at_the_backend_alone() {
        let set = ServiceSet::generate(10_000, 10, SINK);
        assert_eq!(set.services.len(), 10_000);
        assert_eq!(set.target, 5_000);
        let t = set.target();
        assert_eq!(t.endpoints, vec![SINK]);
        assert_eq!((t.protocol, t.port), (17, TARGET_PORT));
        assert_eq!(set.endpoint_count(), 9_999 * 10 + 1);
        let mut frontends: Vec<_> = set
            .services
            .iter()
            .map(|s| (s.cluster_ip, s.port, s.protocol))
            .collect();
        frontends.sort();
        frontends.dedup();
        assert_eq!(frontends.len(), 10_000);
        let mut eps: Vec<_> = set
            .services
            .iter()
            .flat_map(|s| s.endpoints.iter().copied())
            .collect();
        eps.sort();
        eps.dedup();
        assert_eq!(
            eps.len(),
            set.endpoint_count(),
            "every endpoint is distinct"
        );
        for s in &set.services {
            assert!(in_cidr(SERVICE_CIDR, s.cluster_ip), "{}", s.cluster_ip);
            for &(a, _) in &s.endpoints {
                if s.name != target_name() {
                    assert!(in_cidr("198.18.128.0/17", a), "{a}");
                }
            }
        }
    }

    #[test]
    fn one_service_is_the_target_alone() {
        let set = ServiceSet::generate(1, 10, SINK);
        assert_eq!(set.services.len(), 1);
        assert_eq!(set.target().endpoints, vec![SINK]);
        assert_eq!(ServiceSet::generate(0, 10, SINK).services.len(), 1);
    }
}
