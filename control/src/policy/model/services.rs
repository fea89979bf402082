//! `v1` Service and `discovery.k8s.io/v1` EndpointSlice, reduced to what a service
//! dataplane needs (addresses, ports, endpoints and their conditions) and validated as the
//! API server does. Policy does not read them; they are kept for the service and NAT work.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

use crate::policy::selector::{
    validate_dns_label, validate_dns_subdomain, validate_label_key, validate_label_value, Labels,
};

use super::validate::{k8s_protocol, namespaced_identity, validate_dns_1035_label, Cx};
use super::{Kind, NamespacedName, ObjectRef, Protocol, ValidationError};

/// The label the EndpointSlice controller puts on every slice it manages, holding the name
/// of the Service the slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Labels with which kube-proxy leaves a Service alone, and so does weir: one that names
/// another proxy (`service.kubernetes.io/service-proxy-name`, any value), and the one that
/// marks a headless service (`service.kubernetes.io/headless`).
pub const NOT_PROXIED_LABELS: [&str; 2] = [
    "service.kubernetes.io/service-proxy-name",
    "service.kubernetes.io/headless",
];

/// `spec.type` of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServiceType {
    /// `ClusterIP` (the default): reachable on its cluster IPs.
    #[default]
    ClusterIp,
    /// `NodePort`: a cluster IP, and a port on every node.
    NodePort,
    /// `LoadBalancer`: a node port, and an external load balancer in front of it.
    LoadBalancer,
    /// `ExternalName`: a DNS alias; no addresses, no ports to forward.
    ExternalName,
}

/// `externalTrafficPolicy` or `internalTrafficPolicy` of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    /// `Cluster`: to any ready endpoint in the cluster.
    Cluster,
    /// `Local`: only to endpoints on the node the traffic arrived at.
    Local,
}

/// `spec.sessionAffinity` of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionAffinity {
    /// `None` (the default): each connection picks an endpoint afresh.
    #[default]
    None,
    /// `ClientIP`: connections from one client address go to one endpoint while it keeps
    /// coming back within the timeout.
    ClientIp {
        /// `spec.sessionAffinityConfig.clientIP.timeoutSeconds`, 10800 (3 hours) when unset.
        timeout_seconds: u32,
    },
}

/// The affinity timeout when `ClientIP` affinity names none (API reference,
/// ClientIPConfig.timeoutSeconds: "Default value is 10800(for 3 hours)").
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

/// A `v1` Service, reduced to what a service dataplane needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// `spec.type`, ClusterIP when unset.
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (or `spec.clusterIP` when only that is set), at most one per
    /// family, the primary first. Empty for a headless service, an ExternalName service,
    /// and one whose address is not allocated yet (as in a file datastore that leaves it
    /// out).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.clusterIP` is `None`: the service has no virtual address, and DNS names its
    /// endpoints directly.
    pub headless: bool,
    /// The label of [`NOT_PROXIED_LABELS`] the service carries, if any: then no node
    /// serves it (another proxy does, or it is headless), as with kube-proxy.
    pub not_proxied: Option<&'static str>,
    /// `spec.ports`, in order.
    pub ports: Vec<ServicePort>,
    /// `spec.selector`: the pods whose addresses become the endpoints. `None` when unset or
    /// empty, which means something other than the EndpointSlice controller manages the
    /// endpoints.
    pub selector: Option<Labels>,
    /// `spec.externalTrafficPolicy`; unset means Cluster.
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// `spec.internalTrafficPolicy`; unset means Cluster.
    pub internal_traffic_policy: Option<TrafficPolicy>,
    /// `spec.sessionAffinity`, with its timeout.
    pub session_affinity: SessionAffinity,
    /// `spec.externalIPs`: addresses outside the cluster's control that are routed to a
    /// node, where the service answers on its ports. Neither unspecified, loopback nor
    /// link-local (the API server's `ValidateNonSpecialIP`).
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` of a LoadBalancer service: the addresses its
    /// load balancer delivers traffic to, on the service's ports. Entries without an IP
    /// (a host name only) and those with `ipMode: Proxy` are left out: such a load
    /// balancer rewrites the destination to a node itself, and kube-proxy does not take
    /// the address (KEP-1860). Empty for the other types, whose status a controller may
    /// not have cleared yet.
    pub load_balancer_ips: Vec<IpAddr>,
}

/// One entry of a Service's `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// `name`, empty when unset (allowed only for a service's single port). EndpointSlice
    /// ports carry the same name, which is how the two are joined.
    pub name: String,
    /// `protocol`, TCP when unset.
    pub protocol: Protocol,
    /// `port`: the port the service listens on.
    pub port: u16,
    /// `targetPort`; the service port itself when unset (API reference: "If this is not
    /// specified, the value of the 'port' field is used (an identity map)").
    pub target_port: TargetPort,
    /// `nodePort`, for NodePort and LoadBalancer services once one is allocated.
    pub node_port: Option<u16>,
}

/// A Service port's `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetPort {
    /// A port number, 1-65535.
    Number(u16),
    /// A named port, resolved per pod through its containerPorts (name and protocol).
    Named(String),
}

impl Service {
    /// Validates a Service as parsed from the API, with the checks of the API server's
    /// `ValidateService` that concern what the dataplane reads.
    pub fn from_api(service: core::Service) -> Result<Service, ValidationError> {
        let (namespace, name) = namespaced_identity(&service.metadata);
        let object = ObjectRef::namespaced(Kind::Service, &namespace, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_1035_label)?;
        let labels = cx.labels(&service.metadata)?;
        let not_proxied = NOT_PROXIED_LABELS
            .into_iter()
            .find(|l| labels.contains_key(*l));
        let spec = service.spec.unwrap_or_default();

        let service_type = match spec.type_.as_deref() {
            None | Some("") | Some("ClusterIP") => ServiceType::ClusterIp,
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => ServiceType::ExternalName,
            Some(other) => {
                return Err(cx.err(
                    "spec.type",
                    format!(
                        "\"{other}\" is not a service type: use ClusterIP, NodePort, \
                         LoadBalancer or ExternalName (case matters)"
                    ),
                ))
            }
        };

        let (cluster_ips, headless) = cx.cluster_ips(&spec, service_type)?;
        let external_ips = spec
            .external_ips
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, text)| external_ip(&cx, &format!("spec.externalIPs[{i}]"), text))
            .collect::<Result<Vec<_>, _>>()?;
        let load_balancer_ips = load_balancer_ips(&cx, service.status.as_ref(), service_type)?;

        let listed = spec.ports.unwrap_or_default();
        if listed.is_empty() && !headless && service_type != ServiceType::ExternalName {
            return Err(cx.err(
                "spec.ports",
                "is required: a service that is not headless or ExternalName needs a port",
            ));
        }
        let require_name = listed.len() > 1;
        let mut ports: Vec<ServicePort> = Vec::new();
        for (i, port) in listed.into_iter().enumerate() {
            let port = cx.service_port(&format!("spec.ports[{i}]"), port, require_name)?;
            let field = format!("spec.ports[{i}]");
            if !port.name.is_empty() && ports.iter().any(|p| p.name == port.name) {
                return Err(cx.err(
                    &format!("{field}.name"),
                    format!("port name \"{}\" is used twice in this service", port.name),
                ));
            }
            if ports
                .iter()
                .any(|p| p.port == port.port && p.protocol == port.protocol)
            {
                return Err(cx.err(
                    &field,
                    format!("{} {} is listed twice", port.protocol, port.port),
                ));
            }
            if let Some(node_port) = port.node_port {
                if !matches!(
                    service_type,
                    ServiceType::NodePort | ServiceType::LoadBalancer
                ) {
                    return Err(cx.err(
                        &format!("{field}.nodePort"),
                        "may only be used when `type` is NodePort or LoadBalancer",
                    ));
                }
                if ports
                    .iter()
                    .any(|p| p.node_port == Some(node_port) && p.protocol == port.protocol)
                {
                    return Err(cx.err(
                        &format!("{field}.nodePort"),
                        format!("{} node port {node_port} is listed twice", port.protocol),
                    ));
                }
            }
            ports.push(port);
        }

        let selector = spec
            .selector
            .filter(|s| !s.is_empty())
            .map(|s| s.into_iter().collect::<Labels>());
        if let Some(selector) = &selector {
            for (key, value) in selector {
                validate_label_key(key).map_err(|why| cx.err("spec.selector", why))?;
                validate_label_value(value)
                    .map_err(|why| cx.err(&format!("spec.selector.{key}"), why))?;
            }
        }

        let traffic_policy = |field: &str, value: Option<String>| match value.as_deref() {
            None | Some("") => Ok(None),
            Some("Cluster") => Ok(Some(TrafficPolicy::Cluster)),
            Some("Local") => Ok(Some(TrafficPolicy::Local)),
            Some(other) => Err(cx.err(
                field,
                format!("\"{other}\" is not a traffic policy: use Cluster or Local (case matters)"),
            )),
        };
        let external_traffic_policy =
            traffic_policy("spec.externalTrafficPolicy", spec.external_traffic_policy)?;
        let internal_traffic_policy =
            traffic_policy("spec.internalTrafficPolicy", spec.internal_traffic_policy)?;

        let session_affinity = match spec.session_affinity.as_deref() {
            None | Some("") | Some("None") => SessionAffinity::None,
            Some("ClientIP") => {
                let field = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
                let timeout = spec
                    .session_affinity_config
                    .and_then(|c| c.client_ip)
                    .and_then(|c| c.timeout_seconds);
                // ValidateClientIPAffinityConfig: "must be greater than 0 and less than
                // 86400" (MaxClientIPServiceAffinitySeconds, inclusive).
                let timeout_seconds = match timeout {
                    None => DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                    Some(t) => u32::try_from(t)
                        .ok()
                        .filter(|t| (1..=86_400).contains(t))
                        .ok_or_else(|| cx.err(field, format!("{t} must be between 1 and 86400")))?,
                };
                SessionAffinity::ClientIp { timeout_seconds }
            }
            Some(other) => {
                return Err(cx.err(
                    "spec.sessionAffinity",
                    format!(
                        "\"{other}\" is not a session affinity: use ClientIP or None (case \
                         matters)"
                    ),
                ))
            }
        };

        Ok(Service {
            namespace,
            name,
            service_type,
            cluster_ips,
            headless,
            not_proxied,
            ports,
            selector,
            external_traffic_policy,
            internal_traffic_policy,
            session_affinity,
            external_ips,
            load_balancer_ips,
        })
    }
}

/// One of `spec.externalIPs`, checked as the API server's `ValidateNonSpecialIP` does.
fn external_ip(cx: &Cx<'_>, field: &str, text: &str) -> Result<IpAddr, ValidationError> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| cx.err(field, format!("\"{text}\" is not an IP address")))?;
    let special = match ip {
        IpAddr::V4(a) if a.is_unspecified() => Some("may not be unspecified (0.0.0.0)"),
        IpAddr::V6(a) if a.is_unspecified() => Some("may not be unspecified (::)"),
        IpAddr::V4(a) if a.is_loopback() => {
            Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")
        }
        IpAddr::V6(a) if a.is_loopback() => {
            Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")
        }
        IpAddr::V4(a) if a.is_link_local() => {
            Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
        }
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
            Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
        }
        IpAddr::V4(a) if a.octets()[..3] == [224, 0, 0] => {
            Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
        }
        IpAddr::V6(a) if a.segments()[0] & 0xff0f == 0xff02 => {
            Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
        }
        _ => None,
    };
    match special {
        Some(why) => Err(cx.err(field, format!("{ip} {why}"))),
        None => Ok(ip),
    }
}

/// `status.loadBalancer.ingress[].ip` of a LoadBalancer service, each a valid IP, with
/// `ipMode` `VIP` (the default) or `Proxy` (left out; see [`Service::load_balancer_ips`]).
fn load_balancer_ips(
    cx: &Cx<'_>,
    status: Option<&core::ServiceStatus>,
    service_type: ServiceType,
) -> Result<Vec<IpAddr>, ValidationError> {
    let ingress = status
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let mut ips = Vec::new();
    for (i, entry) in ingress.into_iter().flatten().enumerate() {
        let field = format!("status.loadBalancer.ingress[{i}]");
        let ip = match entry.ip.as_deref().filter(|ip| !ip.is_empty()) {
            Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                cx.err(
                    &format!("{field}.ip"),
                    format!("\"{text}\" is not an IP address"),
                )
            })?),
            None => None,
        };
        let proxy = match entry.ip_mode.as_deref() {
            None => false,
            Some(_) if ip.is_none() => {
                return Err(cx.err(
                    &format!("{field}.ipMode"),
                    "may not be set when `ip` is not set",
                ))
            }
            Some("VIP") => false,
            Some("Proxy") => true,
            Some(other) => {
                return Err(cx.err(
                    &format!("{field}.ipMode"),
                    format!("\"{other}\" is not an IP mode: use VIP or Proxy (case matters)"),
                ))
            }
        };
        if let Some(ip) = ip.filter(|_| !proxy && service_type == ServiceType::LoadBalancer) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    Ok(ips)
}

/// `addressType` of an EndpointSlice: every address in the slice is of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressType {
    /// `IPv4`.
    Ipv4,
    /// `IPv6`.
    Ipv6,
    /// `FQDN`: deprecated, with no semantics defined; kube-proxy ignores such slices.
    Fqdn,
}

/// A `discovery.k8s.io/v1` EndpointSlice, reduced to what a service dataplane needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    /// The namespace (the service's).
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The Service the slice belongs to: its `kubernetes.io/service-name` label.
    pub service: Option<String>,
    /// `addressType`.
    pub address_type: AddressType,
    /// `endpoints`, in order.
    pub endpoints: Vec<Endpoint>,
    /// `ports`: the ports every endpoint of the slice exposes.
    pub ports: Vec<EndpointPort>,
}

/// One entry of an EndpointSlice's `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `addresses`, each of the slice's family (at least one; the API reference: "No
    /// semantics are defined for additional addresses beyond the first, and kube-proxy does
    /// not look at them"). Empty in FQDN slices, whose host names are checked but not
    /// kept.
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; unset means true (API reference: "A nil value should be
    /// interpreted as \"true\"").
    pub ready: bool,
    /// `conditions.serving`; unset means true (API reference: "A nil value should be
    /// interpreted as \"true\"").
    pub serving: bool,
    /// `conditions.terminating`; unset means false (API reference: "A nil value should be
    /// interpreted as \"false\"").
    pub terminating: bool,
    /// `nodeName`: the node hosting the endpoint.
    pub node_name: Option<String>,
    /// The pod behind the endpoint: `targetRef` when its kind is Pod (its namespace is the
    /// slice's when the reference names none).
    pub pod: Option<NamespacedName>,
}

/// One entry of an EndpointSlice's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointPort {
    /// `name`, empty when unset: the name of the Service port this is the target of.
    pub name: String,
    /// `protocol`, TCP when unset.
    pub protocol: Protocol,
    /// `port`; `None` when unset, which the API reference allows for slices not derived
    /// from a Service ("EndpointSlices used for other purposes may have a nil port").
    pub port: Option<u16>,
}

impl EndpointSlice {
    /// Validates an EndpointSlice as parsed from the API, with the checks of the API
    /// server's `ValidateEndpointSlice` that concern what the dataplane reads.
    pub fn from_api(slice: discovery::EndpointSlice) -> Result<EndpointSlice, ValidationError> {
        let (namespace, name) = namespaced_identity(&slice.metadata);
        let object = ObjectRef::namespaced(Kind::EndpointSlice, &namespace, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        let labels = cx.labels(&slice.metadata)?;
        let service = labels.get(SERVICE_NAME_LABEL).cloned();

        let address_type = match slice.address_type.as_str() {
            "IPv4" => AddressType::Ipv4,
            "IPv6" => AddressType::Ipv6,
            "FQDN" => AddressType::Fqdn,
            "" => return Err(cx.err("addressType", "is required: IPv4, IPv6 or FQDN")),
            other => {
                return Err(cx.err(
                    "addressType",
                    format!(
                        "\"{other}\" is not an address type: use IPv4, IPv6 or FQDN (case \
                         matters)"
                    ),
                ))
            }
        };

        let listed = slice.endpoints.unwrap_or_default();
        if listed.len() > MAX_SLICE_ENDPOINTS {
            return Err(cx.err(
                "endpoints",
                format!(
                    "has {} items: a slice holds at most {MAX_SLICE_ENDPOINTS}",
                    listed.len()
                ),
            ));
        }
        let endpoints = listed
            .into_iter()
            .enumerate()
            .map(|(i, e)| cx.endpoint(&format!("endpoints[{i}]"), e, address_type, &namespace))
            .collect::<Result<Vec<_>, _>>()?;

        let listed = slice.ports.unwrap_or_default();
        if listed.len() > MAX_SLICE_PORTS {
            return Err(cx.err(
                "ports",
                format!(
                    "has {} items: a slice holds at most {MAX_SLICE_PORTS}",
                    listed.len()
                ),
            ));
        }
        let mut ports: Vec<EndpointPort> = Vec::new();
        for (i, port) in listed.into_iter().enumerate() {
            let field = format!("ports[{i}]");
            let name = port.name.unwrap_or_default();
            if !name.is_empty() {
                validate_dns_label(&name).map_err(|why| cx.err(&format!("{field}.name"), why))?;
            }
            if ports.iter().any(|p| p.name == name) {
                return Err(cx.err(
                    &format!("{field}.name"),
                    format!("port name \"{name}\" is used twice in this slice"),
                ));
            }
            let protocol = match port.protocol.as_deref() {
                None => Protocol::TCP,
                Some(text) => {
                    k8s_protocol(text).map_err(|why| cx.err(&format!("{field}.protocol"), why))?
                }
            };
            let number = port
                .port
                .map(|n| {
                    u16::try_from(n).map_err(|_| {
                        cx.err(
                            &format!("{field}.port"),
                            format!("{n} must be between 0 and 65535"),
                        )
                    })
                })
                .transpose()?;
            ports.push(EndpointPort {
                name,
                protocol,
                port: number,
            });
        }

        Ok(EndpointSlice {
            namespace,
            name,
            service,
            address_type,
            endpoints,
            ports,
        })
    }
}

/// The API server's limits on a slice (`maxEndpoints`, `maxPorts`, `maxAddresses` in
/// `pkg/apis/discovery/validation`).
const MAX_SLICE_ENDPOINTS: usize = 1000;
const MAX_SLICE_PORTS: usize = 100;
pub(super) const MAX_ENDPOINT_ADDRESSES: usize = 100;

#[cfg(test)]
mod tests {
    use crate::policy::load::Object;

    use super::super::tests::load_one;
    use super::*;

    fn service(spec: &str) -> Result<Service, String> {
        match load_one(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\n{spec}"
        ))? {
            Object {
                resource: crate::policy::load::Resource::Service(s),
                ..
            } => Ok(s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn services_keep_addresses_ports_and_policies() {
        let s = service(
            "spec:\n  type: NodePort\n  clusterIP: 198.19.0.10\n  clusterIPs: [198.19.0.10, \
             '2001:db8::10']\n  selector: {app: web}\n  externalTrafficPolicy: Local\n  \
             internalTrafficPolicy: Cluster\n  sessionAffinity: ClientIP\n  \
             sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports:\n  - {name: \
             http, port: 80, targetPort: 8080, nodePort: 30080}\n  - {name: dns, protocol: UDP, \
             port: 53, targetPort: dns}\n  - {name: https, port: 443}\n",
        )
        .unwrap();
        assert_eq!(
            s,
            Service {
                namespace: "shop".into(),
                name: "web".into(),
                service_type: ServiceType::NodePort,
                cluster_ips: vec![
                    "198.19.0.10".parse().unwrap(),
                    "2001:db8::10".parse().unwrap()
                ],
                headless: false,
                not_proxied: None,
                ports: vec![
                    ServicePort {
                        name: "http".into(),
                        protocol: Protocol::TCP,
                        port: 80,
                        target_port: TargetPort::Number(8080),
                        node_port: Some(30080),
                    },
                    ServicePort {
                        name: "dns".into(),
                        protocol: Protocol::UDP,
                        port: 53,
                        target_port: TargetPort::Named("dns".into()),
                        node_port: None,
                    },
                    ServicePort {
                        name: "https".into(),
                        protocol: Protocol::TCP,
                        port: 443,
                        target_port: TargetPort::Number(443),
                        node_port: None,
                    },
                ],
                selector: Some(Labels::from([("app".to_owned(), "web".to_owned())])),
                external_traffic_policy: Some(TrafficPolicy::Local),
                internal_traffic_policy: Some(TrafficPolicy::Cluster),
                session_affinity: SessionAffinity::ClientIp {
                    timeout_seconds: 60
                },
                external_ips: Vec::new(),
                load_balancer_ips: Vec::new(),
            }
        );

        // Defaults: ClusterIP, no affinity, a single unnamed port, targetPort = port.
        let s = service("spec:\n  clusterIP: 198.19.0.11\n  ports: [{port: 80}]\n").unwrap();
        assert_eq!(s.service_type, ServiceType::ClusterIp);
        assert_eq!(s.cluster_ips, ["198.19.0.11".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.session_affinity, SessionAffinity::None);
        assert_eq!(s.ports[0].name, "");
        assert_eq!(s.ports[0].target_port, TargetPort::Number(80));
        assert_eq!(s.selector, None);
        assert_eq!(
            (s.external_traffic_policy, s.internal_traffic_policy),
            (None, None)
        );
        let s = service("spec:\n  sessionAffinity: ClientIP\n  ports: [{port: 80}]\n").unwrap();
        assert_eq!(
            s.session_affinity,
            SessionAffinity::ClientIp {
                timeout_seconds: DEFAULT_AFFINITY_TIMEOUT_SECONDS
            }
        );
        assert!(s.cluster_ips.is_empty() && !s.headless, "not allocated yet");

        // Headless: "None" is no address, and ports may be left out.
        let s = service("spec: {clusterIP: None, selector: {}}").unwrap();
        assert!(s.headless && s.cluster_ips.is_empty());
        assert_eq!(s.selector, None, "an empty selector is no selector");
        let s = service("spec: {clusterIPs: [None]}").unwrap();
        assert!(s.headless);
        let s = service("spec: {type: ExternalName, externalName: db.example.com}").unwrap();
        assert_eq!(s.service_type, ServiceType::ExternalName);
        // targetPort 0 or "" is defaulted to the port, as the API server does.
        let s = service("spec:\n  ports: [{port: 80, targetPort: 0}]\n").unwrap();
        assert_eq!(s.ports[0].target_port, TargetPort::Number(80));
    }

    #[test]
    fn external_ips_and_load_balancer_ingress_ips_are_kept() {
        let s = service(
            "spec:\n  type: LoadBalancer\n  externalIPs: [198.18.250.7, '2001:db8::7']\n  ports: \
             [{port: 80}]\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: 198.18.200.1\n    \
             - {ip: '2001:db8::200', ipMode: VIP}\n    - hostname: lb.example.com\n    - {ip: \
             198.18.200.2, ipMode: Proxy}\n    - ip: 198.18.200.1\n",
        )
        .unwrap();
        let ips =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|a| a.parse().unwrap()).collect() };
        assert_eq!(s.external_ips, ips(&["198.18.250.7", "2001:db8::7"]));
        assert_eq!(
            s.load_balancer_ips,
            ips(&["198.18.200.1", "2001:db8::200"]),
            "host names and Proxy mode are left out, a repeated address is kept once"
        );
        let s = service(
            "spec:\n  type: NodePort\n  ports: [{port: 80}]\nstatus: {loadBalancer: {ingress: \
             [{ip: 198.18.200.1}]}}\n",
        )
        .unwrap();
        assert!(
            s.load_balancer_ips.is_empty(),
            "only a LoadBalancer service takes its ingress addresses"
        );
    }

    #[test]
    fn invalid_services_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "spec: {type: Headless, ports: [{port: 80}]}",
                "spec.type",
                "\"Headless\" is not a service type",
            ),
            (
                "spec: {clusterIP: 198.19.0.300, ports: [{port: 80}]}",
                "spec.clusterIP",
                "\"198.19.0.300\" is not an IP address",
            ),
            (
                "spec: {clusterIPs: [198.19.0.1, 198.19.0.2], ports: [{port: 80}]}",
                "spec.clusterIPs[1]",
                "a service has at most one IPv4 cluster IP; 198.19.0.2 is a second one",
            ),
            (
                "spec: {clusterIP: 198.19.0.1, clusterIPs: ['2001:db8::1'], ports: [{port: 80}]}",
                "spec.clusterIPs[0]",
                "must match spec.clusterIP",
            ),
            (
                "spec: {clusterIPs: [None, 198.19.0.1]}",
                "spec.clusterIPs[0]",
                "must be the only cluster IP",
            ),
            (
                "spec: {type: ExternalName, clusterIP: 198.19.0.1}",
                "spec.clusterIP",
                "must not be set for an ExternalName service",
            ),
            ("spec: {clusterIP: 198.19.0.1}", "spec.ports", "is required"),
            ("spec: {ports: []}", "spec.ports", "is required"),
            (
                "spec:\n  ports: [{port: 80}, {port: 0, name: b}]\n",
                "spec.ports[0].name",
                "is required when a service has more than one port",
            ),
            (
                "spec:\n  ports: [{name: a, port: 80}, {name: b, port: 0}]\n",
                "spec.ports[1].port",
                "0 must be between 1 and 65535",
            ),
            (
                "spec:\n  ports: [{port: 70000}]\n",
                "spec.ports[0].port",
                "70000 must be between 1 and 65535",
            ),
            (
                "spec:\n  ports: [{port: 80, targetPort: 65536}]\n",
                "spec.ports[0].targetPort",
                "65536 must be between 1 and 65535",
            ),
            (
                "spec:\n  ports: [{port: 80, targetPort: '8080'}]\n",
                "spec.ports[0].targetPort",
                "port name \"8080\" must contain at least one letter",
            ),
            (
                "spec:\n  ports: [{port: 80, targetPort: Web}]\n",
                "spec.ports[0].targetPort",
                "port name \"Web\"",
            ),
            (
                "spec:\n  ports: [{port: 80, protocol: tcp}]\n",
                "spec.ports[0].protocol",
                "\"tcp\" is not a supported protocol: use TCP, UDP or SCTP",
            ),
            (
                "spec:\n  ports: [{name: Web, port: 80}]\n",
                "spec.ports[0].name",
                "must be a DNS label",
            ),
            (
                "spec:\n  ports: [{name: a, port: 80}, {name: a, port: 81}]\n",
                "spec.ports[1].name",
                "port name \"a\" is used twice in this service",
            ),
            (
                "spec:\n  ports: [{name: a, port: 80}, {name: b, port: 80}]\n",
                "spec.ports[1]",
                "TCP 80 is listed twice",
            ),
            (
                "spec:\n  ports: [{port: 80, nodePort: 30080}]\n",
                "spec.ports[0].nodePort",
                "may only be used when `type` is NodePort or LoadBalancer",
            ),
            (
                "spec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 70000}]\n",
                "spec.ports[0].nodePort",
                "70000 must be between 1 and 65535",
            ),
            (
                "spec:\n  type: LoadBalancer\n  ports: [{name: a, port: 80, nodePort: 30080}, \
                 {name: b, port: 81, nodePort: 30080}]\n",
                "spec.ports[1].nodePort",
                "TCP node port 30080 is listed twice",
            ),
            (
                "spec:\n  selector: {app: 'a b'}\n  ports: [{port: 80}]\n",
                "spec.selector.app",
                "label value \"a b\"",
            ),
            (
                "spec:\n  externalTrafficPolicy: local\n  ports: [{port: 80}]\n",
                "spec.externalTrafficPolicy",
                "\"local\" is not a traffic policy: use Cluster or Local",
            ),
            (
                "spec:\n  internalTrafficPolicy: Node\n  ports: [{port: 80}]\n",
                "spec.internalTrafficPolicy",
                "\"Node\" is not a traffic policy",
            ),
            (
                "spec:\n  sessionAffinity: Cookie\n  ports: [{port: 80}]\n",
                "spec.sessionAffinity",
                "\"Cookie\" is not a session affinity: use ClientIP or None",
            ),
            (
                "spec:\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: \
                 {timeoutSeconds: 0}}\n  ports: [{port: 80}]\n",
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                "0 must be between 1 and 86400",
            ),
            (
                "spec:\n  externalIPs: [198.18.0.1, 198.18.0.300]\n  ports: [{port: 80}]\n",
                "spec.externalIPs[1]",
                "\"198.18.0.300\" is not an IP address",
            ),
            (
                "spec:\n  externalIPs: [0.0.0.0]\n  ports: [{port: 80}]\n",
                "spec.externalIPs[0]",
                "0.0.0.0 may not be unspecified",
            ),
            (
                "spec:\n  externalIPs: ['::1']\n  ports: [{port: 80}]\n",
                "spec.externalIPs[0]",
                "::1 may not be in the loopback range",
            ),
            (
                "spec:\n  externalIPs: [169.254.1.1]\n  ports: [{port: 80}]\n",
                "spec.externalIPs[0]",
                "169.254.1.1 may not be in the link-local range",
            ),
            (
                "spec:\n  externalIPs: ['fe80::1']\n  ports: [{port: 80}]\n",
                "spec.externalIPs[0]",
                "fe80::1 may not be in the link-local range",
            ),
            (
                "spec:\n  externalIPs: ['ff02::1']\n  ports: [{port: 80}]\n",
                "spec.externalIPs[0]",
                "ff02::1 may not be in the link-local multicast range",
            ),
            (
                "spec:\n  externalIPs: [224.0.0.5]\n  ports: [{port: 80}]\n",
                "spec.externalIPs[0]",
                "224.0.0.5 may not be in the link-local multicast range",
            ),
            (
                "spec:\n  type: LoadBalancer\n  ports: [{port: 80}]\nstatus: {loadBalancer: \
                 {ingress: [{ip: 198.18.200.1}, {ip: lb.example.com}]}}\n",
                "status.loadBalancer.ingress[1].ip",
                "\"lb.example.com\" is not an IP address",
            ),
            (
                "spec:\n  type: LoadBalancer\n  ports: [{port: 80}]\nstatus: {loadBalancer: \
                 {ingress: [{ip: 198.18.200.1, ipMode: vip}]}}\n",
                "status.loadBalancer.ingress[0].ipMode",
                "\"vip\" is not an IP mode: use VIP or Proxy",
            ),
            (
                "spec:\n  type: LoadBalancer\n  ports: [{port: 80}]\nstatus: {loadBalancer: \
                 {ingress: [{hostname: lb.example.com, ipMode: VIP}]}}\n",
                "status.loadBalancer.ingress[0].ipMode",
                "may not be set when `ip` is not set",
            ),
            (
                "spec:\n  ports: [{port: 80, targetPrt: 8080}]\n",
                "spec.ports[0].targetPrt",
                "unknown field",
            ),
        ];
        for (spec, field, message) in cases {
            let e = service(spec).unwrap_err();
            assert!(
                e.contains(&format!("Service shop/web: {field}: ")) && e.contains(message),
                "{spec}: {e}"
            );
        }
        let e = load_one(
            "apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\nspec: {ports: [{port: 80}]}\n",
        )
        .unwrap_err();
        assert!(
            e.contains("Service default/1web: metadata.name: \"1web\" must be a DNS-1035 label"),
            "{e}"
        );
    }

    fn endpoint_slice(body: &str) -> Result<EndpointSlice, String> {
        match load_one(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-abc, \
             namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\n{body}"
        ))? {
            Object {
                resource: crate::policy::load::Resource::EndpointSlice(s),
                ..
            } => Ok(s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn endpoint_slices_default_their_conditions_as_the_api_reference_says() {
        let s = endpoint_slice(
            "addressType: IPv4\nendpoints:\n- addresses: [198.18.1.10]\n  nodeName: node-a\n  \
             targetRef: {kind: Pod, name: web-1}\n- addresses: [198.18.1.11]\n  conditions: \
             {ready: false, serving: true, terminating: true}\n  targetRef: {kind: Pod, \
             namespace: other, name: web-2}\n- addresses: [198.18.1.12]\n  targetRef: {kind: \
             Node, name: node-a}\nports:\n- {name: http, port: 8080}\n- {name: dns, protocol: \
             UDP, port: 53}\n- {name: any}\n",
        )
        .unwrap();
        assert_eq!(s.service.as_deref(), Some("web"));
        assert_eq!(s.address_type, AddressType::Ipv4);
        assert_eq!(
            s.endpoints[0],
            Endpoint {
                addresses: vec!["198.18.1.10".parse().unwrap()],
                ready: true,
                serving: true,
                terminating: false,
                node_name: Some("node-a".into()),
                pod: Some(NamespacedName::new("shop", "web-1")),
            },
            "unset conditions: ready and serving, not terminating"
        );
        let e = &s.endpoints[1];
        assert_eq!((e.ready, e.serving, e.terminating), (false, true, true));
        assert_eq!(e.pod, Some(NamespacedName::new("other", "web-2")));
        assert_eq!(s.endpoints[2].pod, None, "only Pod references name a pod");
        assert_eq!(
            s.ports,
            [
                EndpointPort {
                    name: "http".into(),
                    protocol: Protocol::TCP,
                    port: Some(8080)
                },
                EndpointPort {
                    name: "dns".into(),
                    protocol: Protocol::UDP,
                    port: Some(53)
                },
                EndpointPort {
                    name: "any".into(),
                    protocol: Protocol::TCP,
                    port: None
                },
            ]
        );

        let s = endpoint_slice("addressType: IPv6\nendpoints: [{addresses: ['2001:db8::5']}]\n")
            .unwrap();
        assert_eq!(
            s.endpoints[0].addresses,
            ["2001:db8::5".parse::<IpAddr>().unwrap()]
        );
        let s = endpoint_slice("addressType: FQDN\nendpoints: [{addresses: [db.example.com]}]\n")
            .unwrap();
        assert!(s.endpoints[0].addresses.is_empty());
        let s = endpoint_slice("addressType: IPv4\n").unwrap();
        assert!(s.endpoints.is_empty() && s.ports.is_empty());
        assert_eq!(
            endpoint_slice("addressType: IPv4\nports: [{port: 0}]\n")
                .unwrap()
                .ports[0],
            EndpointPort {
                name: String::new(),
                protocol: Protocol::TCP,
                port: Some(0)
            }
        );
        let unowned = load_one(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: x}\n\
             addressType: IPv4\n",
        )
        .unwrap();
        let crate::policy::load::Resource::EndpointSlice(unowned) = unowned.resource else {
            panic!("{unowned:?}");
        };
        assert_eq!(unowned.service, None);
    }

    #[test]
    fn invalid_endpoint_slices_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("endpoints: []\n", "addressType", "is required"),
            (
                "addressType: ipv4\n",
                "addressType",
                "\"ipv4\" is not an address type: use IPv4, IPv6 or FQDN",
            ),
            (
                "addressType: IPv4\nendpoints: [{addresses: [198.18.1.300]}]\n",
                "endpoints[0].addresses[0]",
                "\"198.18.1.300\" is not an IP address",
            ),
            (
                "addressType: IPv4\nendpoints: [{addresses: [198.18.1.1]}, {addresses: \
                 [198.18.1.2, '2001:db8::1']}]\n",
                "endpoints[1].addresses[1]",
                "2001:db8::1 is an IPv6 address but the slice's addressType is IPv4",
            ),
            (
                "addressType: IPv6\nendpoints: [{addresses: [198.18.1.1]}]\n",
                "endpoints[0].addresses[0]",
                "198.18.1.1 is an IPv4 address but the slice's addressType is IPv6",
            ),
            (
                "addressType: FQDN\nendpoints: [{addresses: [Not_A_Name]}]\n",
                "endpoints[0].addresses[0]",
                "must be a DNS subdomain",
            ),
            (
                "addressType: IPv4\nendpoints: [{addresses: []}]\n",
                "endpoints[0].addresses",
                "must hold at least one address",
            ),
            (
                "addressType: IPv4\nendpoints: [{addresses: [198.18.1.1], nodeName: Node_A}]\n",
                "endpoints[0].nodeName",
                "must be a DNS subdomain",
            ),
            (
                "addressType: IPv4\nports: [{port: 70000}]\n",
                "ports[0].port",
                "70000 must be between 0 and 65535",
            ),
            (
                "addressType: IPv4\nports: [{port: -1}]\n",
                "ports[0].port",
                "-1 must be between 0 and 65535",
            ),
            (
                "addressType: IPv4\nports: [{name: a, port: 80, protocol: ICMP}]\n",
                "ports[0].protocol",
                "\"ICMP\" is not a supported protocol",
            ),
            (
                "addressType: IPv4\nports: [{name: a, port: 80}, {name: a, port: 81}]\n",
                "ports[1].name",
                "port name \"a\" is used twice in this slice",
            ),
            (
                "addressType: IPv4\nports: [{port: 80}, {port: 81}]\n",
                "ports[1].name",
                "port name \"\" is used twice in this slice",
            ),
            (
                "addressType: IPv4\nports: [{name: HTTP, port: 80}]\n",
                "ports[0].name",
                "must be a DNS label",
            ),
            (
                "addressType: IPv4\nendpoints: [{addresses: [198.18.1.1], ready: true}]\n",
                "endpoints[0].ready",
                "unknown field",
            ),
        ];
        for (body, field, message) in cases {
            let e = endpoint_slice(body).unwrap_err();
            assert!(
                e.contains(&format!("EndpointSlice shop/web-abc: {field}: "))
                    && e.contains(message),
                "{body}: {e}"
            );
        }
        let many: String = (0..=MAX_SLICE_ENDPOINTS)
            .map(|i| format!("- addresses: [198.18.{}.{}]\n", i / 250, i % 250 + 1))
            .collect();
        let e = endpoint_slice(&format!("addressType: IPv4\nendpoints:\n{many}")).unwrap_err();
        assert!(
            e.contains("endpoints: has 1001 items: a slice holds at most 1000"),
            "{e}"
        );
    }
}
