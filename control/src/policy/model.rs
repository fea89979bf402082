//! The policy objects as typed, validated Rust values.
//!
//! Two families of objects feed the policy compiler, and a third is kept beside them:
//!
//! - **Kubernetes** (`v1` Namespace, Pod and ServiceAccount; `networking.k8s.io/v1`
//!   NetworkPolicy). They are parsed with `k8s-openapi`'s types, so field names and shapes
//!   are exactly the API's, then validated as the API server would (the checks of
//!   `pkg/apis/networking/validation` and `pkg/apis/core/validation` that matter for policy)
//!   and defaulted as the API server does (`SetDefaults_NetworkPolicy`, protocol TCP).
//! - **weir.dev/v1** (Tier, NetworkPolicy, GlobalNetworkPolicy, NetworkSet,
//!   GlobalNetworkSet, IPPool, HostEndpoint): Calico's `projectcalico.org/v3` shapes under
//!   weir's API group, with Calico's validation rules (`libcalico-go/lib/validator/v3`) and
//!   defaults. They are decoded into the CRD types of [`crate::crd`], strictly: unknown
//!   fields are errors, so a typo (`notNet`) cannot silently widen a rule. IP pools and host
//!   endpoints are kept in the model for IPAM and host policy; the policy compiler does not
//!   read them yet.
//! - **Services** (`v1` Service, `discovery.k8s.io/v1` EndpointSlice), reduced to what a
//!   service dataplane needs (addresses, ports, endpoints and their conditions) and
//!   validated as the API server does. They are kept in the model for the service and NAT
//!   work; policy does not read them.
//!
//! Validation happens once, here, at load time: selectors are parsed, CIDRs and ports
//! checked, defaults filled in. The compiler therefore works on values that cannot be
//! malformed. Every error is a [`ValidationError`] naming the object, the field path
//! (`spec.ingress[0].source.nets[1]`) and what to do.
//!
//! Two deliberate differences from the APIs, both stricter and both for the user's sake:
//! a CIDR with host bits set in a weir.dev object is an error ("did you mean
//! 10.0.0.0/24?") where Calico silently masks it; and a weir.dev policy whose `types` leave
//! out a direction that it has rules for is an error, where Calico ignores those rules.
//! Kubernetes objects get no such extras: what the API server accepts is accepted.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

use crate::crd::{self, Scalar};

use super::selector::{
    from_label_selector, validate_dns_label, validate_dns_subdomain, validate_label_key,
    validate_label_value, Labels, Selector,
};

/// The label Kubernetes puts on every namespace, holding the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The tier that policies name when they name none, and where Kubernetes NetworkPolicies
/// live.
pub const DEFAULT_TIER: &str = "default";

/// The `default` tier's order (Calico's `DefaultTierOrder`): user tiers with a lower order
/// run before it, tiers without an order after it.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

/// The order Kubernetes NetworkPolicies take inside the `default` tier, as in Calico (which
/// converts them to `knp.default.*` policies with order 1000).
pub const K8S_POLICY_ORDER: f64 = 1000.0;

/// The kinds of object weir reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` Namespace.
    Namespace,
    /// `v1` Pod.
    Pod,
    /// `v1` ServiceAccount.
    ServiceAccount,
    /// `networking.k8s.io/v1` NetworkPolicy.
    K8sNetworkPolicy,
    /// `weir.dev/v1` Tier.
    Tier,
    /// `weir.dev/v1` NetworkPolicy.
    NetworkPolicy,
    /// `weir.dev/v1` GlobalNetworkPolicy.
    GlobalNetworkPolicy,
    /// `weir.dev/v1` NetworkSet.
    NetworkSet,
    /// `weir.dev/v1` GlobalNetworkSet.
    GlobalNetworkSet,
    /// `v1` Node (where its pods are, how to reach it, its WireGuard key).
    Node,
    /// `weir.dev/v1` IPPool.
    IpPool,
    /// `weir.dev/v1` HostEndpoint.
    HostEndpoint,
    /// `v1` Service (kept for the service dataplane; policy does not read it).
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice (kept for the service dataplane; policy does not
    /// read it).
    EndpointSlice,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 14] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::ServiceAccount,
        Kind::K8sNetworkPolicy,
        Kind::Tier,
        Kind::NetworkPolicy,
        Kind::GlobalNetworkPolicy,
        Kind::NetworkSet,
        Kind::GlobalNetworkSet,
        Kind::Node,
        Kind::IpPool,
        Kind::HostEndpoint,
        Kind::Service,
        Kind::EndpointSlice,
    ];

    /// The `apiVersion` this kind is read under.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::ServiceAccount | Kind::Node | Kind::Service => "v1",
            Kind::K8sNetworkPolicy => "networking.k8s.io/v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "weir.dev/v1",
        }
    }

    /// The `kind` field's value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::K8sNetworkPolicy | Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Tier => "Tier",
            Kind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            Kind::NetworkSet => "NetworkSet",
            Kind::GlobalNetworkSet => "GlobalNetworkSet",
            Kind::Node => "Node",
            Kind::IpPool => "IPPool",
            Kind::HostEndpoint => "HostEndpoint",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }

    /// Looks a kind up by `apiVersion` and `kind`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Namespace
                | Kind::Tier
                | Kind::GlobalNetworkPolicy
                | Kind::GlobalNetworkSet
                | Kind::Node
                | Kind::IpPool
                | Kind::HostEndpoint
        )
    }
}

/// `NetworkPolicy` is ambiguous between the two API groups, so both spell out their
/// `apiVersion`; the other kinds are shown by name alone.
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::K8sNetworkPolicy | Kind::NetworkPolicy => {
                write!(f, "{} {}", self.api_version(), self.name())
            }
            _ => f.write_str(self.name()),
        }
    }
}

/// A namespace and a name: the key of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    /// The namespace.
    pub namespace: String,
    /// The name inside the namespace.
    pub name: String,
}

impl NamespacedName {
    /// Builds a key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> NamespacedName {
        NamespacedName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which object something is about: kind, namespace (for namespaced kinds) and name.
/// Displayed as `Pod shop/web` or `Tier security`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: Kind,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ObjectRef {
    /// A reference to a namespaced object.
    pub fn namespaced(kind: Kind, namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    /// A reference to a cluster-scoped object.
    pub fn cluster(kind: Kind, name: &str) -> ObjectRef {
        ObjectRef {
            kind,
            namespace: None,
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// An object that is not valid: which object, which field, what is wrong.
///
/// Displayed as `weir.dev/v1 NetworkPolicy shop/allow-web: spec.ingress[0].source.nets[1]:
/// "10.0.0.1/33" is not a CIDR: prefix length 33 exceeds 32`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct ValidationError {
    /// The object.
    pub object: ObjectRef,
    /// Path of the field inside the object, as written in YAML (`spec.ingress[0].ports[1]`).
    pub field: String,
    /// What is wrong, and where possible what to write instead.
    pub message: String,
}

/// An IP protocol number, shown by name where it has one.
///
/// Names and numbers are the same thing here: `protocol: TCP` and `protocol: 6` give the
/// same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocol(u8);

impl Protocol {
    /// ICMP (1).
    pub const ICMP: Protocol = Protocol(1);
    /// TCP (6).
    pub const TCP: Protocol = Protocol(6);
    /// UDP (17).
    pub const UDP: Protocol = Protocol(17);
    /// ICMPv6 (58).
    pub const ICMPV6: Protocol = Protocol(58);
    /// SCTP (132).
    pub const SCTP: Protocol = Protocol(132);
    /// UDP-Lite (136).
    pub const UDPLITE: Protocol = Protocol(136);

    const NAMED: [(&'static str, Protocol); 6] = [
        ("TCP", Protocol::TCP),
        ("UDP", Protocol::UDP),
        ("SCTP", Protocol::SCTP),
        ("ICMP", Protocol::ICMP),
        ("ICMPv6", Protocol::ICMPV6),
        ("UDPLite", Protocol::UDPLITE),
    ];

    /// The protocol with this number; `None` for 0, which is not a protocol a rule can name.
    pub fn from_number(number: u8) -> Option<Protocol> {
        (number != 0).then_some(Protocol(number))
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        self.0
    }

    /// The protocol with this exact (case-sensitive) name: TCP, UDP, SCTP, ICMP, ICMPv6 or
    /// UDPLite.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
    }

    /// Whether the protocol has ports, so that port matches mean something (TCP, UDP,
    /// SCTP, UDP-Lite).
    pub fn has_ports(self) -> bool {
        matches!(
            self,
            Protocol::TCP | Protocol::UDP | Protocol::SCTP | Protocol::UDPLITE
        )
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Protocol::NAMED.iter().find(|(_, p)| p == self) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> IpFamily {
        IpFamily::of(net.addr())
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// A port match: a range of numbers (a single port is a range of one) or a named port,
/// resolved per destination pod through its containerPorts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// Ports `first..=last`; `first <= last` always holds.
    Range {
        /// The first port in the range.
        first: u16,
        /// The last port in the range, inclusive.
        last: u16,
    },
    /// A named port (an IANA service name as in containerPorts' `name`).
    Named(String),
}

impl PortMatch {
    /// A single port.
    pub fn single(port: u16) -> PortMatch {
        PortMatch::Range {
            first: port,
            last: port,
        }
    }
}

impl fmt::Display for PortMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortMatch::Range { first, last } if first == last => write!(f, "{first}"),
            PortMatch::Range { first, last } => write!(f, "{first}:{last}"),
            PortMatch::Named(name) => f.write_str(name),
        }
    }
}

/// Which directions a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PolicyTypes {
    /// The policy applies to traffic into the selected endpoints.
    pub ingress: bool,
    /// The policy applies to traffic out of the selected endpoints.
    pub egress: bool,
}

// ---------------------------------------------------------------------------------------
// Kubernetes objects
// ---------------------------------------------------------------------------------------

/// A `v1` Namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace's name.
    pub name: String,
    /// Its labels, always including `kubernetes.io/metadata.name: <name>`, which the API
    /// server sets on every namespace.
    pub labels: Labels,
}

impl Namespace {
    /// A namespace that exists only because objects were found in it: its labels are just
    /// the automatic name label.
    pub fn implicit(name: &str) -> Namespace {
        Namespace {
            name: name.to_owned(),
            labels: Labels::from([(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned())]),
        }
    }

    /// Validates a Namespace as parsed from the API.
    pub fn from_api(namespace: core::Namespace) -> Result<Namespace, ValidationError> {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef::cluster(Kind::Namespace, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_label)?;
        let mut labels = cx.labels(&namespace.metadata)?;
        // The API server overwrites whatever the user wrote for this label.
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
        Ok(Namespace { name, labels })
    }
}

/// A `v1` ServiceAccount. Only its labels matter to policy (`serviceAccountSelector`,
/// `serviceAccounts.selector`); a pod naming a service account that was not loaded is
/// treated as naming one without labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The labels.
    pub labels: Labels,
}

impl ServiceAccount {
    /// Validates a ServiceAccount as parsed from the API.
    pub fn from_api(account: core::ServiceAccount) -> Result<ServiceAccount, ValidationError> {
        let (namespace, name) = namespaced_identity(&account.metadata);
        let object = ObjectRef::namespaced(Kind::ServiceAccount, &namespace, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        let labels = cx.labels(&account.metadata)?;
        Ok(ServiceAccount {
            namespace,
            name,
            labels,
        })
    }
}

/// A `v1` Pod, reduced to what policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The labels.
    pub labels: Labels,
    /// `status.podIPs` in order (or `status.podIP` when only that is set): at most one
    /// address per family. Empty for a pod that has no address yet.
    pub ips: Vec<IpAddr>,
    /// The ports of `spec.containers[*].ports`, which named ports resolve against.
    pub container_ports: Vec<ContainerPort>,
    /// `spec.serviceAccountName`, `"default"` when unset.
    pub service_account: String,
    /// `spec.hostNetwork`: such a pod uses its node's addresses and is not subject to pod
    /// network policy.
    pub host_network: bool,
    /// `spec.nodeName`: the node the pod runs on, `None` while unscheduled (and in file
    /// datastores that leave it out).
    pub node_name: Option<String>,
    /// `metadata.annotations` (the agent reads its `weir.dev/` keys).
    pub annotations: BTreeMap<String, String>,
}

/// One entry of a container's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerPort {
    /// The port's name, unique within the pod, if it has one.
    pub name: Option<String>,
    /// `containerPort`.
    pub port: u16,
    /// `protocol`, TCP when unset.
    pub protocol: Protocol,
}

impl Pod {
    /// The pod's IPv4 address, if it has one.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    /// The pod's IPv6 address, if it has one.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ips.iter().find_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
    }

    /// The pod's address of one family, if it has one.
    pub fn ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(*ip) == family)
    }

    /// Resolves a named port on this pod. Kubernetes resolves a name together with the
    /// rule's protocol: a `dns` port declared for UDP does not match a TCP rule naming `dns`.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.container_ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name) && p.protocol == protocol)
            .map(|p| p.port)
    }

    /// Validates a Pod as parsed from the API.
    pub fn from_api(pod: core::Pod) -> Result<Pod, ValidationError> {
        let (namespace, name) = namespaced_identity(&pod.metadata);
        let object = ObjectRef::namespaced(Kind::Pod, &namespace, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        let labels = cx.labels(&pod.metadata)?;
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();

        let spec = pod.spec.unwrap_or_default();
        let service_account = spec
            .service_account_name
            .or(spec.service_account)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        if let Err(why) = validate_dns_subdomain(&service_account) {
            return Err(cx.err("spec.serviceAccountName", why));
        }

        let mut container_ports = Vec::new();
        let mut names = BTreeSet::new();
        for (c, container) in spec.containers.iter().enumerate() {
            for (p, port) in container.ports.iter().flatten().enumerate() {
                let field = format!("spec.containers[{c}].ports[{p}]");
                let number = u16::try_from(port.container_port)
                    .ok()
                    .filter(|n| *n != 0)
                    .ok_or_else(|| {
                        cx.err(
                            &format!("{field}.containerPort"),
                            format!("{} must be between 1 and 65535", port.container_port),
                        )
                    })?;
                let protocol = match port.protocol.as_deref() {
                    None => Protocol::TCP,
                    Some(text) => k8s_protocol(text)
                        .map_err(|why| cx.err(&format!("{field}.protocol"), why))?,
                };
                if let Some(port_name) = &port.name {
                    validate_port_name(port_name)
                        .map_err(|why| cx.err(&format!("{field}.name"), why))?;
                    if !names.insert(port_name.clone()) {
                        return Err(cx.err(
                            &format!("{field}.name"),
                            format!("port name \"{port_name}\" is used twice in this pod"),
                        ));
                    }
                }
                container_ports.push(ContainerPort {
                    name: port.name.clone(),
                    port: number,
                    protocol,
                });
            }
        }

        let status = pod.status.unwrap_or_default();
        let mut ips = Vec::new();
        let listed: Vec<(String, String)> = match status.pod_ips {
            Some(list) if !list.is_empty() => list
                .into_iter()
                .enumerate()
                .map(|(i, ip)| (format!("status.podIPs[{i}].ip"), ip.ip))
                .collect(),
            _ => status
                .pod_ip
                .filter(|ip| !ip.is_empty())
                .map(|ip| vec![("status.podIP".to_owned(), ip)])
                .unwrap_or_default(),
        };
        for (field, text) in listed {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| cx.err(&field, format!("\"{text}\" is not an IP address")))?;
            if ips
                .iter()
                .any(|seen| IpFamily::of(*seen) == IpFamily::of(ip))
            {
                return Err(cx.err(
                    &field,
                    format!(
                        "a pod has at most one {} address; {text} is a second one",
                        IpFamily::of(ip)
                    ),
                ));
            }
            ips.push(ip);
        }

        Ok(Pod {
            namespace,
            name,
            labels,
            ips,
            container_ports,
            service_account,
            host_network: spec.host_network.unwrap_or(false),
            node_name: spec.node_name.filter(|n| !n.is_empty()),
            annotations,
        })
    }
}

/// A `networking.k8s.io/v1` NetworkPolicy, validated and defaulted.
///
/// Semantics (from the API reference): a pod selected by at least one policy of a type is
/// isolated in that direction, and allowed exactly the union of the rules of the policies
/// that select it; rules only allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sNetworkPolicy {
    /// The namespace; the policy selects pods only here.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// `spec.podSelector`; an empty selector (or none) selects every pod in the namespace.
    pub pod_selector: Selector,
    /// `spec.policyTypes`, defaulted: when omitted (or empty), Ingress, plus Egress if the
    /// policy has at least one egress rule.
    pub types: PolicyTypes,
    /// `spec.ingress`: each rule's peers are sources.
    pub ingress: Vec<K8sRule>,
    /// `spec.egress`: each rule's peers are destinations.
    pub egress: Vec<K8sRule>,
}

/// One ingress or egress rule of a Kubernetes NetworkPolicy. Traffic matches when it
/// matches one of the peers **and** one of the ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sRule {
    /// `from` / `to`: `None` when the field is missing or empty, which matches every peer
    /// (any address, inside the cluster or not). Otherwise never empty; the peers are ORed.
    pub peers: Option<Vec<K8sPeer>>,
    /// `ports`: `None` when missing or empty, which matches every port and protocol.
    /// Otherwise never empty; the entries are ORed.
    pub ports: Option<Vec<K8sPort>>,
}

/// One peer of a Kubernetes NetworkPolicy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K8sPeer {
    /// Pods: `podSelector` and/or `namespaceSelector`. Both in one peer means pods matching
    /// `pods` **in** namespaces matching `namespaces` (AND); a peer with only a
    /// namespaceSelector has `pods == Selector::All`.
    Pods {
        /// Which namespaces the pods may be in.
        namespaces: NamespaceScope,
        /// Which pods, by their labels.
        pods: Selector,
    },
    /// `ipBlock`: addresses in `cidr` but in none of `except`. Kubernetes intends this for
    /// addresses outside the cluster; whether pod IPs match is implementation-defined (the
    /// API reference says so), and weir, like Calico, matches them.
    IpBlock {
        /// The block, masked to its prefix.
        cidr: IpNet,
        /// Sub-blocks excluded from it, each strictly inside `cidr`.
        except: Vec<IpNet>,
    },
}

/// The namespaces a Kubernetes peer's pods may be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceScope {
    /// No namespaceSelector: the policy's own namespace.
    PolicyNamespace,
    /// Namespaces whose labels match (`namespaceSelector: {}` is `Selected(All)`: every
    /// namespace).
    Selected(Selector),
}

/// One entry of a Kubernetes rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sPort {
    /// `protocol`, TCP when unset.
    pub protocol: Protocol,
    /// `port` (with `endPort`, a range); `None` matches every port of the protocol.
    pub port: Option<PortMatch>,
}

impl K8sNetworkPolicy {
    /// Validates and defaults a NetworkPolicy as parsed from the API. A policy without a
    /// `spec` is treated as having an empty one (selects every pod in the namespace, denies
    /// all ingress), which is what the API server stores for it.
    pub fn from_api(
        policy: networking::NetworkPolicy,
    ) -> Result<K8sNetworkPolicy, ValidationError> {
        let (namespace, name) = namespaced_identity(&policy.metadata);
        let object = ObjectRef::namespaced(Kind::K8sNetworkPolicy, &namespace, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        cx.labels(&policy.metadata)?;
        let spec = policy.spec.unwrap_or_default();

        let pod_selector =
            cx.label_selector("spec.podSelector", &spec.pod_selector.unwrap_or_default())?;

        let ingress = spec
            .ingress
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                cx.k8s_rule(&format!("spec.ingress[{i}]"), "from", rule.from, rule.ports)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let egress = spec
            .egress
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, rule)| cx.k8s_rule(&format!("spec.egress[{i}]"), "to", rule.to, rule.ports))
            .collect::<Result<Vec<_>, _>>()?;

        // API reference, NetworkPolicySpec.policyTypes: "If this field is not specified, it
        // will default based on the existence of ingress or egress rules; policies that
        // contain an egress section are assumed to affect egress, and all policies (whether
        // or not they contain an ingress section) are assumed to affect ingress."
        // SetDefaults_NetworkPolicy applies this when the list is empty, and tests
        // `len(spec.Egress) != 0`, so `egress: []` does not add Egress.
        let types = match spec.policy_types.filter(|t| !t.is_empty()) {
            None => PolicyTypes {
                ingress: true,
                egress: !egress.is_empty(),
            },
            Some(list) => {
                if list.len() > 2 {
                    return Err(cx.err(
                        "spec.policyTypes",
                        "may not specify more than two policyTypes (Ingress and Egress)",
                    ));
                }
                let mut types = PolicyTypes::default();
                for (i, t) in list.iter().enumerate() {
                    match t.as_str() {
                        "Ingress" => types.ingress = true,
                        "Egress" => types.egress = true,
                        other => {
                            return Err(cx.err(
                                &format!("spec.policyTypes[{i}]"),
                                format!(
                                    "\"{other}\" is not a policy type: use Ingress or Egress \
                                     (case matters)"
                                ),
                            ))
                        }
                    }
                }
                types
            }
        };

        Ok(K8sNetworkPolicy {
            namespace,
            name,
            pod_selector,
            types,
            ingress,
            egress,
        })
    }
}

// ---------------------------------------------------------------------------------------
// weir.dev/v1 objects
// ---------------------------------------------------------------------------------------

/// What a tier does with traffic that none of its policies' rules decided, for endpoints
/// that at least one of its policies selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TierDefaultAction {
    /// Drop it (the default).
    #[default]
    Deny,
    /// Hand it to the next tier.
    Pass,
}

/// A `weir.dev/v1` Tier: an ordered group of policies.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    /// The name (a DNS label: no dots).
    pub name: String,
    /// `spec.order`: lower runs first; `None` runs after every ordered tier. Ties are
    /// broken by name (see [`compare_order`]).
    pub order: Option<f64>,
    /// `spec.defaultAction`, Deny when unset.
    pub default_action: TierDefaultAction,
}

impl Tier {
    /// The `default` tier as it exists when no Tier object names it.
    pub fn implicit_default() -> Tier {
        Tier {
            name: DEFAULT_TIER.to_owned(),
            order: Some(DEFAULT_TIER_ORDER),
            default_action: TierDefaultAction::Deny,
        }
    }
}

/// The action of a weir.dev rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Accept the packet; stop evaluating.
    Allow,
    /// Drop the packet; stop evaluating.
    Deny,
    /// Skip the rest of this tier; continue with the next tier.
    Pass,
    /// Record the packet and continue with the next rule.
    Log,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
            Action::Log => "Log",
        })
    }
}

/// The fields shared by [`NetworkPolicy`] and [`GlobalNetworkPolicy`].
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// `spec.tier`, `"default"` when unset.
    pub tier: String,
    /// `spec.order`: lower runs first within the tier; `None` after every ordered policy.
    /// Ties are broken by name (see [`compare_order`]).
    pub order: Option<f64>,
    /// `spec.selector`: the endpoints the policy applies to (`all()` when unset).
    pub selector: Selector,
    /// `spec.serviceAccountSelector`: further restricts the endpoints to those whose
    /// service account's labels match (`all()` when unset).
    pub service_account_selector: Selector,
    /// `spec.types`, defaulted as Calico does when omitted: Ingress if there are no egress
    /// rules; Egress if there are egress rules and no ingress rules; both if both.
    pub types: PolicyTypes,
    /// `spec.ingress`, in order.
    pub ingress: Vec<Rule>,
    /// `spec.egress`, in order.
    pub egress: Vec<Rule>,
}

/// A `weir.dev/v1` NetworkPolicy: applies to endpoints in its own namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPolicy {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The policy proper.
    pub spec: PolicySpec,
}

/// A `weir.dev/v1` GlobalNetworkPolicy: applies to endpoints in every namespace that
/// `namespace_selector` matches.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalNetworkPolicy {
    /// The name.
    pub name: String,
    /// `spec.namespaceSelector`, matched against namespace labels (`all()` when unset).
    pub namespace_selector: Selector,
    /// The policy proper.
    pub spec: PolicySpec,
}

/// One rule of a weir.dev policy. Every present match must hold (AND); absent ones match
/// anything. The first rule that matches decides, except Log, which continues.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `action`.
    pub action: Action,
    /// `ipVersion`: restricts the rule to one family.
    pub ip_version: Option<IpFamily>,
    /// `protocol`.
    pub protocol: Option<Protocol>,
    /// `notProtocol`.
    pub not_protocol: Option<Protocol>,
    /// `icmp` (only with protocol ICMP or ICMPv6).
    pub icmp: Option<IcmpMatch>,
    /// `notICMP` (only with protocol ICMP or ICMPv6).
    pub not_icmp: Option<IcmpMatch>,
    /// `source`.
    pub source: EntityRule,
    /// `destination`.
    pub destination: EntityRule,
}

/// An ICMP type, and optionally code, to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpMatch {
    /// `type` (0-254); `None` matches any type (and then `code` is `None` too).
    pub icmp_type: Option<u8>,
    /// `code` (0-255); only with a type.
    pub code: Option<u8>,
}

/// A rule's `source` or `destination`.
///
/// Semantics, as in Calico: `nets` matches the address; `selector` matches endpoints (pods
/// and network sets) by label: in a NetworkPolicy, those in the policy's namespace; in a
/// GlobalNetworkPolicy, those anywhere. `namespaceSelector` switches the scope to the
/// matching namespaces (`global()`: the cluster-wide GlobalNetworkSets). All present fields
/// must match; the `not*` fields must not.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EntityRule {
    /// `nets`: the address is in one of them (empty: any address).
    pub nets: Vec<IpNet>,
    /// `notNets`: the address is in none of them.
    pub not_nets: Vec<IpNet>,
    /// `selector`.
    pub selector: Option<Selector>,
    /// `notSelector`.
    pub not_selector: Option<Selector>,
    /// `namespaceSelector`.
    pub namespace_selector: Option<Selector>,
    /// `ports`: the port matches one of them (empty: any port).
    pub ports: Vec<PortMatch>,
    /// `notPorts`: the port matches none of them.
    pub not_ports: Vec<PortMatch>,
    /// `serviceAccounts`: the endpoint runs as a matching service account.
    pub service_accounts: Option<ServiceAccountMatch>,
}

/// A rule's `serviceAccounts`: endpoints whose service account is named in `names` (if
/// any are listed) and whose labels match `selector` (if given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountMatch {
    /// `names`: service account names, in the endpoint's namespace.
    pub names: Vec<String>,
    /// `selector`, over service account labels.
    pub selector: Option<Selector>,
}

/// A `weir.dev/v1` NetworkSet: labelled CIDRs in a namespace, which selectors in that
/// namespace's policies can match like endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSet {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The labels selectors match.
    pub labels: Labels,
    /// `spec.nets`.
    pub nets: Vec<IpNet>,
}

/// A `weir.dev/v1` GlobalNetworkSet: labelled CIDRs matched by GlobalNetworkPolicy
/// selectors and by `namespaceSelector: global()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalNetworkSet {
    /// The name.
    pub name: String,
    /// The labels selectors match.
    pub labels: Labels,
    /// `spec.nets`.
    pub nets: Vec<IpNet>,
}

/// The block size of an IPv4 pool that names none (Calico's default: blocks of 64
/// addresses).
pub const DEFAULT_IPV4_BLOCK_SIZE: u8 = 26;

/// The block size of an IPv6 pool that names none (Calico's default: blocks of 64
/// addresses).
pub const DEFAULT_IPV6_BLOCK_SIZE: u8 = 122;

/// A `weir.dev/v1` IPPool: a range pod addresses are allocated from, in blocks of
/// `block_size`, on the nodes `node_selector` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    /// The name.
    pub name: String,
    /// `spec.cidr`, with no host bits set.
    pub cidr: IpNet,
    /// `spec.blockSize`: a prefix length between the pool's own and 32 (IPv4) or 128
    /// (IPv6); [`DEFAULT_IPV4_BLOCK_SIZE`] or [`DEFAULT_IPV6_BLOCK_SIZE`] when unset.
    pub block_size: u8,
    /// `spec.nodeSelector`, over node labels (`all()` when unset).
    pub node_selector: Selector,
    /// `spec.disabled`: no new addresses come from this pool (false when unset).
    pub disabled: bool,
}

/// A `weir.dev/v1` HostEndpoint: one of a node's interfaces, or a set of its addresses,
/// which selectors match by the endpoint's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpoint {
    /// The name.
    pub name: String,
    /// The labels selectors match.
    pub labels: Labels,
    /// `spec.node`: the node the endpoint is on.
    pub node: String,
    /// `spec.interfaceName`: the interface (`*` for all of the node's interfaces, as in
    /// Calico). At least one of this and `expected_ips` is present.
    pub interface_name: Option<String>,
    /// `spec.expectedIPs`.
    pub expected_ips: Vec<IpAddr>,
}

/// Orders tiers or policies: lower `order` first; no order after every ordered one; equal
/// orders (including two unordered) by name.
pub fn compare_order(a: (Option<f64>, &str), b: (Option<f64>, &str)) -> Ordering {
    let by_order = match (a.0, b.0) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    by_order.then_with(|| a.1.cmp(b.1))
}

// ---------------------------------------------------------------------------------------
// weir.dev wire format (what the YAML says, the spec types of `crate::crd`) and its
// validation
// ---------------------------------------------------------------------------------------

/// A weir.dev document: `apiVersion`, `kind`, `metadata`, `spec`; nothing else.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct WireObject<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: Option<S>,
}

pub(crate) type TierWire = WireObject<crd::TierSpec>;
pub(crate) type NetworkPolicyWire = WireObject<crd::NetworkPolicySpec>;
pub(crate) type GlobalNetworkPolicyWire = WireObject<crd::GlobalNetworkPolicySpec>;
pub(crate) type NetworkSetWire = WireObject<crd::NetworkSetSpec>;
pub(crate) type GlobalNetworkSetWire = WireObject<crd::GlobalNetworkSetSpec>;
pub(crate) type IpPoolWire = WireObject<crd::IpPoolSpec>;
pub(crate) type HostEndpointWire = WireObject<crd::HostEndpointSpec>;

impl Tier {
    pub(crate) fn from_wire(wire: TierWire) -> Result<Tier, ValidationError> {
        let name = wire.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef::cluster(Kind::Tier, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_label)?;
        cx.labels(&wire.metadata)?;
        let spec = wire.spec.unwrap_or_default();
        let mut order = cx.order("spec.order", spec.order)?;
        if name == DEFAULT_TIER {
            match order {
                None => order = Some(DEFAULT_TIER_ORDER),
                Some(o) if o == DEFAULT_TIER_ORDER => {}
                Some(o) => {
                    return Err(cx.err(
                        "spec.order",
                        format!(
                            "the default tier's order is fixed at {DEFAULT_TIER_ORDER}; {o} \
                             is not allowed (give other tiers lower or higher orders instead)"
                        ),
                    ))
                }
            }
        }
        let default_action = match spec.default_action.as_deref() {
            None | Some("Deny") => TierDefaultAction::Deny,
            Some("Pass") => TierDefaultAction::Pass,
            Some(other) => {
                return Err(cx.err(
                    "spec.defaultAction",
                    format!("\"{other}\" is not a tier default action: use Deny or Pass"),
                ))
            }
        };
        Ok(Tier {
            name,
            order,
            default_action,
        })
    }
}

impl NetworkPolicy {
    pub(crate) fn from_wire(wire: NetworkPolicyWire) -> Result<NetworkPolicy, ValidationError> {
        let (namespace, name) = namespaced_identity(&wire.metadata);
        let object = ObjectRef::namespaced(Kind::NetworkPolicy, &namespace, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_policy_name)?;
        cx.labels(&wire.metadata)?;
        let spec = wire.spec.unwrap_or_default();
        if spec.namespace_selector.is_some() {
            return Err(cx.err(
                "spec.namespaceSelector",
                "a NetworkPolicy applies to its own namespace only; use a \
                 GlobalNetworkPolicy to select namespaces",
            ));
        }
        let spec = cx.policy_spec(spec.into())?;
        Ok(NetworkPolicy {
            namespace,
            name,
            spec,
        })
    }
}

impl GlobalNetworkPolicy {
    pub(crate) fn from_wire(
        wire: GlobalNetworkPolicyWire,
    ) -> Result<GlobalNetworkPolicy, ValidationError> {
        let name = wire.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef::cluster(Kind::GlobalNetworkPolicy, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_policy_name)?;
        cx.labels(&wire.metadata)?;
        let mut spec = wire.spec.unwrap_or_default();
        let namespace_selector = cx.selector(
            "spec.namespaceSelector",
            spec.namespace_selector.take(),
            false,
        )?;
        let spec = cx.policy_spec(spec)?;
        Ok(GlobalNetworkPolicy {
            name,
            namespace_selector: namespace_selector.unwrap_or(Selector::All),
            spec,
        })
    }
}

impl NetworkSet {
    pub(crate) fn from_wire(wire: NetworkSetWire) -> Result<NetworkSet, ValidationError> {
        let (namespace, name) = namespaced_identity(&wire.metadata);
        let object = ObjectRef::namespaced(Kind::NetworkSet, &namespace, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        let labels = cx.labels(&wire.metadata)?;
        let nets = cx.nets("spec.nets", wire.spec.unwrap_or_default().nets)?;
        Ok(NetworkSet {
            namespace,
            name,
            labels,
            nets,
        })
    }
}

impl GlobalNetworkSet {
    pub(crate) fn from_wire(
        wire: GlobalNetworkSetWire,
    ) -> Result<GlobalNetworkSet, ValidationError> {
        let name = wire.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef::cluster(Kind::GlobalNetworkSet, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        let labels = cx.labels(&wire.metadata)?;
        let nets = cx.nets("spec.nets", wire.spec.unwrap_or_default().nets)?;
        Ok(GlobalNetworkSet { name, labels, nets })
    }
}

impl IpPool {
    pub(crate) fn from_wire(wire: IpPoolWire) -> Result<IpPool, ValidationError> {
        let name = wire.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef::cluster(Kind::IpPool, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        cx.labels(&wire.metadata)?;
        let spec = wire.spec.unwrap_or_default();
        let text = spec.cidr.ok_or_else(|| {
            cx.err(
                "spec.cidr",
                "is required: the pool's network, e.g. 10.244.0.0/16",
            )
        })?;
        let cidr = parse_cidr_parts(&text, false)
            .and_then(|net| {
                if net.trunc() == net {
                    Ok(net)
                } else {
                    Err(format!(
                        "\"{text}\" has bits set after the /{} prefix: did you mean \"{}\"?",
                        net.prefix_len(),
                        net.trunc()
                    ))
                }
            })
            .map_err(|why| cx.err("spec.cidr", why))?;
        let max = cidr.max_prefix_len();
        let block_size = match spec.block_size {
            None if max == 32 => DEFAULT_IPV4_BLOCK_SIZE,
            None => DEFAULT_IPV6_BLOCK_SIZE,
            Some(n) => u8::try_from(n)
                .ok()
                .filter(|n| (cidr.prefix_len()..=max).contains(n))
                .ok_or_else(|| {
                    cx.err(
                        "spec.blockSize",
                        format!(
                            "{n} is not a block size for {cidr}: use a prefix length from {} \
                             (the pool's own) to {max}",
                            cidr.prefix_len()
                        ),
                    )
                })?,
        };
        if block_size < cidr.prefix_len() {
            // Only the defaults can get here: a pool smaller than one default block.
            return Err(cx.err(
                "spec.blockSize",
                format!(
                    "the default block size /{block_size} is larger than the pool {cidr}: set \
                     blockSize between {} and {max}",
                    cidr.prefix_len()
                ),
            ));
        }
        let node_selector = cx
            .selector("spec.nodeSelector", spec.node_selector, false)?
            .unwrap_or(Selector::All);
        Ok(IpPool {
            name,
            cidr,
            block_size,
            node_selector,
            disabled: spec.disabled.unwrap_or(false),
        })
    }
}

impl HostEndpoint {
    pub(crate) fn from_wire(wire: HostEndpointWire) -> Result<HostEndpoint, ValidationError> {
        let name = wire.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef::cluster(Kind::HostEndpoint, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        let labels = cx.labels(&wire.metadata)?;
        let spec = wire.spec.unwrap_or_default();
        let node = spec
            .node
            .filter(|n| !n.is_empty())
            .ok_or_else(|| cx.err("spec.node", "is required: the name of the endpoint's node"))?;
        validate_dns_subdomain(&node).map_err(|why| cx.err("spec.node", why))?;
        if let Some(interface) = &spec.interface_name {
            validate_interface_name(interface).map_err(|why| cx.err("spec.interfaceName", why))?;
        }
        let mut expected_ips: Vec<IpAddr> = Vec::new();
        for (i, text) in spec.expected_ips.unwrap_or_default().iter().enumerate() {
            let field = format!("spec.expectedIPs[{i}]");
            let ip: IpAddr = text
                .parse()
                .map_err(|_| cx.err(&field, format!("\"{text}\" is not an IP address")))?;
            if expected_ips.contains(&ip) {
                return Err(cx.err(&field, format!("{ip} is listed twice")));
            }
            expected_ips.push(ip);
        }
        if spec.interface_name.is_none() && expected_ips.is_empty() {
            return Err(cx.err(
                "spec",
                "a host endpoint needs spec.interfaceName, spec.expectedIPs or both",
            ));
        }
        Ok(HostEndpoint {
            name,
            labels,
            node,
            interface_name: spec.interface_name,
            expected_ips,
        })
    }
}

/// A `v1` Node, reduced to what the agent needs to reach it and its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The name.
    pub name: String,
    /// The labels.
    pub labels: Labels,
    /// `metadata.annotations` (the agent reads `weir.dev/wireguard-public-key` and
    /// `weir.dev/underlay-mac`).
    pub annotations: BTreeMap<String, String>,
    /// `spec.podCIDRs` (or the older `spec.podCIDR`).
    pub pod_cidrs: Vec<IpNet>,
    /// `status.addresses` of type `InternalIP`, in order.
    pub internal_ips: Vec<IpAddr>,
}

impl Node {
    /// Validates a Node as parsed from the API.
    pub fn from_api(node: core::Node) -> Result<Node, ValidationError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef::cluster(Kind::Node, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        let labels = cx.labels(&node.metadata)?;
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        let spec = node.spec.unwrap_or_default();
        let (field, cidrs) = match spec.pod_cidrs {
            Some(list) if !list.is_empty() => ("spec.podCIDRs", list),
            _ => ("spec.podCIDR", spec.pod_cidr.into_iter().collect()),
        };
        let pod_cidrs = cx.nets(field, Some(cidrs))?;
        let mut internal_ips = Vec::new();
        for (i, a) in node
            .status
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if a.type_ == "InternalIP" {
                let ip = a.address.parse().map_err(|_| {
                    cx.err(
                        &format!("status.addresses[{i}].address"),
                        format!("{:?} is not an IP address", a.address),
                    )
                })?;
                internal_ips.push(ip);
            }
        }
        Ok(Node {
            name,
            labels,
            annotations,
            pod_cidrs,
            internal_ips,
        })
    }
}

/// The label the EndpointSlice controller puts on every slice it manages, holding the name
/// of the Service the slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

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
        cx.labels(&service.metadata)?;
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

        let selector = spec.selector.filter(|s| !s.is_empty());
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
            ports,
            selector,
            external_traffic_policy,
            internal_traffic_policy,
            session_affinity,
        })
    }
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
const MAX_ENDPOINT_ADDRESSES: usize = 100;

/// The namespace and name of a namespaced object; the namespace defaults to `default`, as
/// `kubectl apply` does for a manifest that names none.
pub(crate) fn namespaced_identity(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Parses a CIDR for a weir.dev object: `addr/len` with no bits set past the prefix, or a
/// bare address meaning a single host.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let net = parse_cidr_parts(text, true)?;
    let masked = net.trunc();
    if masked != net {
        return Err(format!(
            "\"{text}\" has bits set after the /{} prefix: did you mean \"{masked}\"?",
            net.prefix_len()
        ));
    }
    Ok(net)
}

/// Parses an `ipBlock` CIDR the way the Kubernetes API server does by default
/// (`IsValidCIDRForLegacyField` without `StrictIPCIDRValidation`): a prefix length is
/// required, and an address with host bits set ("interface address" form, e.g.
/// `10.0.0.1/24`) is accepted and means its network (`10.0.0.0/24`), as Go's
/// `net.ParseCIDR` reads it.
pub fn parse_k8s_cidr(text: &str) -> Result<IpNet, String> {
    Ok(parse_cidr_parts(text, false)?.trunc())
}

fn parse_cidr_parts(text: &str, bare_ip_ok: bool) -> Result<IpNet, String> {
    let (addr_text, len_text) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a CIDR: \"{addr_text}\" is not an IP address"))?;
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match len_text {
        None if bare_ip_ok => max,
        None => {
            return Err(format!(
                "\"{text}\" is not a CIDR: it needs a prefix length, e.g. \"{text}/{max}\""
            ))
        }
        Some(len) => {
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "\"{text}\" is not a CIDR: prefix length \"{len}\" is not a number"
                ));
            }
            match len.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "\"{text}\" is not a CIDR: prefix length {len} exceeds {max}"
                    ))
                }
            }
        }
    };
    IpNet::new(addr, len).map_err(|e| format!("\"{text}\" is not a CIDR: {e}"))
}

/// Checks a named port the way Kubernetes does (`IsValidPortName`, an IANA service name):
/// 1-15 lower-case letters, digits and `-`, at least one letter, no `-` at either end and
/// no `--`.
pub fn validate_port_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let problem = if name.is_empty() || name.len() > 15 {
        Some("must be 1 to 15 characters")
    } else if !ok_chars {
        Some("must contain only lower-case letters, digits and '-'")
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        Some("must contain at least one letter")
    } else if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        Some("must not start or end with '-' or contain \"--\"")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(format!("port name \"{name}\" {why}")),
    }
}

/// A host endpoint's interface: `*` (every interface of the node, as in Calico), or a Linux
/// interface name, which Calico restricts to 1-15 of letters, digits, `_`, `.` and `-`.
fn validate_interface_name(name: &str) -> Result<(), String> {
    let ok = name == "*"
        || (!name.is_empty()
            && name.len() <= 15
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not an interface name: use 1 to 15 letters, digits, '_', '.' or '-', \
             or * for every interface"
        ))
    }
}

/// Calico's policy names: a DNS label, or two joined by one dot (`tier.policy`).
fn validate_policy_name(name: &str) -> Result<(), String> {
    let mut parts = name.split('.');
    let ok = match (parts.next(), parts.next(), parts.next()) {
        (Some(a), None, _) => validate_dns_label(a).is_ok(),
        (Some(a), Some(b), None) => validate_dns_label(a).is_ok() && validate_dns_label(b).is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" must be a DNS label (lower-case alphanumeric characters or '-'), or two \
             of them joined by one '.'"
        ))
    }
}

/// Checks a DNS-1035 label, which Service names must be (`ValidateServiceName`): a DNS
/// label that starts with a letter.
fn validate_dns_1035_label(name: &str) -> Result<(), String> {
    validate_dns_label(name)?;
    if name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" must be a DNS-1035 label: a DNS label that starts with a letter"
        ))
    }
}

fn k8s_protocol(text: &str) -> Result<Protocol, String> {
    match text {
        "TCP" => Ok(Protocol::TCP),
        "UDP" => Ok(Protocol::UDP),
        "SCTP" => Ok(Protocol::SCTP),
        other => Err(format!(
            "\"{other}\" is not a supported protocol: use TCP, UDP or SCTP (case matters)"
        )),
    }
}

/// Error-building context: the object being validated.
struct Cx<'a> {
    object: &'a ObjectRef,
}

impl Cx<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> ValidationError {
        ValidationError {
            object: self.object.clone(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn name(
        &self,
        name: &str,
        rule: impl Fn(&str) -> Result<(), String>,
    ) -> Result<(), ValidationError> {
        if name.is_empty() {
            return Err(self.err("metadata.name", "is required"));
        }
        rule(name).map_err(|why| self.err("metadata.name", why))
    }

    fn labels(&self, meta: &ObjectMeta) -> Result<Labels, ValidationError> {
        let labels = meta.labels.clone().unwrap_or_default();
        for (key, value) in &labels {
            validate_label_key(key).map_err(|why| self.err("metadata.labels", why))?;
            validate_label_value(value)
                .map_err(|why| self.err(&format!("metadata.labels.{key}"), why))?;
        }
        Ok(labels)
    }

    fn label_selector(&self, field: &str, ls: &LabelSelector) -> Result<Selector, ValidationError> {
        from_label_selector(ls).map_err(|e| self.err(&format!("{field}.{}", e.field), e.message))
    }

    /// Parses an optional weir selector. `global_ok`: `global()` may appear, and then only
    /// alone (Calico: "global() cannot be combined with other selectors").
    fn selector(
        &self,
        field: &str,
        text: Option<String>,
        global_ok: bool,
    ) -> Result<Option<Selector>, ValidationError> {
        let Some(text) = text else {
            return Ok(None);
        };
        let selector = Selector::parse(&text)
            .map_err(|e| self.err(field, format!("invalid selector: {e}")))?;
        if selector.mentions_global() && !(global_ok && selector == Selector::Global) {
            return Err(self.err(
                field,
                if global_ok {
                    "global() cannot be combined with other selectors"
                } else {
                    "global() can only be used, alone, in a rule's namespaceSelector"
                },
            ));
        }
        Ok(Some(selector))
    }

    fn order(&self, field: &str, order: Option<f64>) -> Result<Option<f64>, ValidationError> {
        match order {
            Some(o) if !o.is_finite() => {
                Err(self.err(field, format!("{o} is not a finite number")))
            }
            other => Ok(other),
        }
    }

    fn nets(&self, field: &str, nets: Option<Vec<String>>) -> Result<Vec<IpNet>, ValidationError> {
        nets.unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, text)| {
                parse_cidr(text).map_err(|why| self.err(&format!("{field}[{i}]"), why))
            })
            .collect()
    }

    fn k8s_rule(
        &self,
        field: &str,
        peers_name: &str,
        peers: Option<Vec<networking::NetworkPolicyPeer>>,
        ports: Option<Vec<networking::NetworkPolicyPort>>,
    ) -> Result<K8sRule, ValidationError> {
        let peers = peers
            .filter(|p| !p.is_empty())
            .map(|list| {
                list.into_iter()
                    .enumerate()
                    .map(|(j, peer)| self.k8s_peer(&format!("{field}.{peers_name}[{j}]"), peer))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let ports = ports
            .filter(|p| !p.is_empty())
            .map(|list| {
                list.into_iter()
                    .enumerate()
                    .map(|(j, port)| self.k8s_port(&format!("{field}.ports[{j}]"), port))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(K8sRule { peers, ports })
    }

    /// `ValidateNetworkPolicyPeer`: at least one of podSelector, namespaceSelector and
    /// ipBlock; ipBlock alone.
    fn k8s_peer(
        &self,
        field: &str,
        peer: networking::NetworkPolicyPeer,
    ) -> Result<K8sPeer, ValidationError> {
        let count = usize::from(peer.pod_selector.is_some())
            + usize::from(peer.namespace_selector.is_some())
            + usize::from(peer.ip_block.is_some());
        if count == 0 {
            return Err(self.err(
                field,
                "must specify a peer: podSelector, namespaceSelector or ipBlock",
            ));
        }
        if let Some(block) = peer.ip_block {
            if count > 1 {
                return Err(self.err(
                    field,
                    "may not specify both ipBlock and another peer; list them as separate peers",
                ));
            }
            return self.ip_block(&format!("{field}.ipBlock"), block);
        }
        let pods = match &peer.pod_selector {
            Some(ls) => self.label_selector(&format!("{field}.podSelector"), ls)?,
            None => Selector::All,
        };
        let namespaces = match &peer.namespace_selector {
            Some(ls) => NamespaceScope::Selected(
                self.label_selector(&format!("{field}.namespaceSelector"), ls)?,
            ),
            None => NamespaceScope::PolicyNamespace,
        };
        Ok(K8sPeer::Pods { namespaces, pods })
    }

    /// `ValidateIPBlock`: a valid cidr; every except a valid CIDR that is a strict subset of
    /// it ("must be a strict subset of `cidr`").
    fn ip_block(
        &self,
        field: &str,
        block: networking::IPBlock,
    ) -> Result<K8sPeer, ValidationError> {
        if block.cidr.is_empty() {
            return Err(self.err(&format!("{field}.cidr"), "is required"));
        }
        let cidr =
            parse_k8s_cidr(&block.cidr).map_err(|why| self.err(&format!("{field}.cidr"), why))?;
        let mut except = Vec::new();
        for (i, text) in block.except.unwrap_or_default().iter().enumerate() {
            let at = format!("{field}.except[{i}]");
            let net = parse_k8s_cidr(text).map_err(|why| self.err(&at, why))?;
            if !cidr.contains(&net.network()) || net.prefix_len() <= cidr.prefix_len() {
                return Err(self.err(
                    &at,
                    format!("\"{text}\" must be a strict subset of `cidr` ({cidr})"),
                ));
            }
            except.push(net);
        }
        Ok(K8sPeer::IpBlock { cidr, except })
    }

    /// `ValidateNetworkPolicyPort`: protocol TCP/UDP/SCTP (default TCP); port 1-65535 or a
    /// port name; endPort only with a numeric port, 1-65535 and `>= port`.
    fn k8s_port(
        &self,
        field: &str,
        port: networking::NetworkPolicyPort,
    ) -> Result<K8sPort, ValidationError> {
        let protocol = match port.protocol.as_deref() {
            None => Protocol::TCP,
            Some(text) => {
                k8s_protocol(text).map_err(|why| self.err(&format!("{field}.protocol"), why))?
            }
        };
        let in_range = |n: i32, sub: &str| {
            u16::try_from(n).ok().filter(|p| *p != 0).ok_or_else(|| {
                self.err(
                    &format!("{field}.{sub}"),
                    format!("{n} must be between 1 and 65535"),
                )
            })
        };
        let matched = match (port.port, port.end_port) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(self.err(
                    &format!("{field}.port"),
                    "must be specified when endPort is specified",
                ))
            }
            (Some(IntOrString::Int(n)), end) => {
                let first = in_range(n, "port")?;
                let last = match end {
                    None => first,
                    Some(e) => {
                        let last = in_range(e, "endPort")?;
                        if last < first {
                            return Err(self.err(
                                &format!("{field}.endPort"),
                                format!("{e} must be greater than or equal to `port` ({n})"),
                            ));
                        }
                        last
                    }
                };
                Some(PortMatch::Range { first, last })
            }
            (Some(IntOrString::String(name)), end) => {
                if end.is_some() {
                    return Err(self.err(
                        &format!("{field}.endPort"),
                        format!("may not be specified when `port` is non-numeric (\"{name}\")"),
                    ));
                }
                validate_port_name(&name).map_err(|why| self.err(&format!("{field}.port"), why))?;
                Some(PortMatch::Named(name))
            }
        };
        Ok(K8sPort {
            protocol,
            port: matched,
        })
    }

    /// `spec.clusterIPs` (or `spec.clusterIP`): addresses, one per family at most, or the
    /// single entry `None` for a headless service. Returns the addresses and whether the
    /// service is headless.
    fn cluster_ips(
        &self,
        spec: &core::ServiceSpec,
        service_type: ServiceType,
    ) -> Result<(Vec<IpAddr>, bool), ValidationError> {
        let single = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty());
        let listed: Vec<(String, &str)> = match &spec.cluster_ips {
            Some(list) if !list.is_empty() => {
                if let Some(ip) = single.filter(|ip| *ip != list[0]) {
                    return Err(self.err(
                        "spec.clusterIPs[0]",
                        format!(
                            "\"{}\" must match spec.clusterIP (\"{ip}\"): the first cluster IP \
                             is the primary one",
                            list[0]
                        ),
                    ));
                }
                list.iter()
                    .enumerate()
                    .map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip.as_str()))
                    .collect()
            }
            _ => single
                .map(|ip| vec![("spec.clusterIP".to_owned(), ip)])
                .unwrap_or_default(),
        };
        if listed.is_empty() {
            return Ok((Vec::new(), false));
        }
        if service_type == ServiceType::ExternalName {
            return Err(self.err(
                &listed[0].0,
                "must not be set for an ExternalName service (it has no cluster IP)",
            ));
        }
        if let Some((field, _)) = listed.iter().find(|(_, ip)| *ip == "None") {
            if listed.len() > 1 {
                return Err(self.err(
                    field,
                    "\"None\" (a headless service) must be the only cluster IP",
                ));
            }
            return Ok((Vec::new(), true));
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        for (field, text) in listed {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| self.err(&field, format!("\"{text}\" is not an IP address")))?;
            let family = IpFamily::of(ip);
            if ips.iter().any(|seen| IpFamily::of(*seen) == family) {
                return Err(self.err(
                    &field,
                    format!("a service has at most one {family} cluster IP; {ip} is a second one"),
                ));
            }
            ips.push(ip);
        }
        Ok((ips, false))
    }

    /// `validateServicePort`: a name (a DNS label, required when the service has more than
    /// one port), protocol TCP/UDP/SCTP (default TCP), port 1-65535, targetPort a number
    /// 1-65535 or a port name (the port itself when unset), nodePort 1-65535 when set.
    fn service_port(
        &self,
        field: &str,
        port: core::ServicePort,
        require_name: bool,
    ) -> Result<ServicePort, ValidationError> {
        let at = |sub: &str| format!("{field}.{sub}");
        let name = port.name.unwrap_or_default();
        if name.is_empty() {
            if require_name {
                return Err(self.err(
                    &at("name"),
                    "is required when a service has more than one port",
                ));
            }
        } else {
            validate_dns_label(&name).map_err(|why| self.err(&at("name"), why))?;
        }
        let protocol = match port.protocol.as_deref() {
            None => Protocol::TCP,
            Some(text) => k8s_protocol(text).map_err(|why| self.err(&at("protocol"), why))?,
        };
        let in_range = |n: i32, sub: &str| {
            u16::try_from(n)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| self.err(&at(sub), format!("{n} must be between 1 and 65535")))
        };
        let number = in_range(port.port, "port")?;
        // SetDefaults_Service: a targetPort of 0 or "" is the port itself, as is none.
        let target_port = match port.target_port {
            None | Some(IntOrString::Int(0)) => TargetPort::Number(number),
            Some(IntOrString::String(name)) if name.is_empty() => TargetPort::Number(number),
            Some(IntOrString::Int(n)) => TargetPort::Number(in_range(n, "targetPort")?),
            Some(IntOrString::String(name)) => {
                validate_port_name(&name).map_err(|why| self.err(&at("targetPort"), why))?;
                TargetPort::Named(name)
            }
        };
        // A nodePort of 0 asks the API server to allocate one.
        let node_port = match port.node_port {
            None | Some(0) => None,
            Some(n) => Some(in_range(n, "nodePort")?),
        };
        Ok(ServicePort {
            name,
            protocol,
            port: number,
            target_port,
            node_port,
        })
    }

    /// `validateEndpoints` for one endpoint: 1-100 addresses of the slice's type, a node
    /// name that is a DNS subdomain; conditions defaulted as the API reference says.
    fn endpoint(
        &self,
        field: &str,
        endpoint: discovery::Endpoint,
        address_type: AddressType,
        namespace: &str,
    ) -> Result<Endpoint, ValidationError> {
        let at = |sub: &str| format!("{field}.{sub}");
        if endpoint.addresses.is_empty() {
            return Err(self.err(&at("addresses"), "must hold at least one address"));
        }
        if endpoint.addresses.len() > MAX_ENDPOINT_ADDRESSES {
            return Err(self.err(
                &at("addresses"),
                format!(
                    "has {} items: an endpoint holds at most {MAX_ENDPOINT_ADDRESSES}",
                    endpoint.addresses.len()
                ),
            ));
        }
        let mut addresses = Vec::new();
        for (j, text) in endpoint.addresses.iter().enumerate() {
            let here = at(&format!("addresses[{j}]"));
            let want = match address_type {
                AddressType::Fqdn => {
                    validate_dns_subdomain(text).map_err(|why| self.err(&here, why))?;
                    continue;
                }
                AddressType::Ipv4 => IpFamily::V4,
                AddressType::Ipv6 => IpFamily::V6,
            };
            let ip: IpAddr = text
                .parse()
                .map_err(|_| self.err(&here, format!("\"{text}\" is not an IP address")))?;
            if IpFamily::of(ip) != want {
                return Err(self.err(
                    &here,
                    format!(
                        "{ip} is an {} address but the slice's addressType is {want}",
                        IpFamily::of(ip)
                    ),
                ));
            }
            addresses.push(ip);
        }
        let node_name = endpoint.node_name.filter(|n| !n.is_empty());
        if let Some(node) = &node_name {
            validate_dns_subdomain(node).map_err(|why| self.err(&at("nodeName"), why))?;
        }
        let pod = endpoint
            .target_ref
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| {
                let name = r.name.filter(|n| !n.is_empty())?;
                let ns = r
                    .namespace
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or_else(|| namespace.to_owned());
                Some(NamespacedName::new(ns, name))
            });
        let conditions = endpoint.conditions.unwrap_or_default();
        Ok(Endpoint {
            addresses,
            ready: conditions.ready.unwrap_or(true),
            serving: conditions.serving.unwrap_or(true),
            terminating: conditions.terminating.unwrap_or(false),
            node_name,
            pod,
        })
    }

    fn policy_spec(
        &self,
        spec: crd::GlobalNetworkPolicySpec,
    ) -> Result<PolicySpec, ValidationError> {
        let tier = spec.tier.unwrap_or_else(|| DEFAULT_TIER.to_owned());
        validate_dns_label(&tier).map_err(|why| self.err("spec.tier", why))?;
        let order = self.order("spec.order", spec.order)?;
        let selector = self
            .selector("spec.selector", spec.selector, false)?
            .unwrap_or(Selector::All);
        let service_account_selector = self
            .selector(
                "spec.serviceAccountSelector",
                spec.service_account_selector,
                false,
            )?
            .unwrap_or(Selector::All);
        let ingress = spec
            .ingress
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, r)| self.rule(&format!("spec.ingress[{i}]"), r))
            .collect::<Result<Vec<_>, _>>()?;
        let egress = spec
            .egress
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, r)| self.rule(&format!("spec.egress[{i}]"), r))
            .collect::<Result<Vec<_>, _>>()?;

        // Calico's defaulting of an empty `types` (its NetworkPolicy reference):
        // no egress rules → [Ingress]; egress rules only → [Egress]; both → both.
        let types = match spec.types.filter(|t| !t.is_empty()) {
            None => PolicyTypes {
                ingress: !ingress.is_empty() || egress.is_empty(),
                egress: !egress.is_empty(),
            },
            Some(list) => {
                let mut types = PolicyTypes::default();
                for (i, t) in list.iter().enumerate() {
                    let slot = match t.as_str() {
                        "Ingress" => &mut types.ingress,
                        "Egress" => &mut types.egress,
                        other => {
                            return Err(self.err(
                                &format!("spec.types[{i}]"),
                                format!(
                                    "\"{other}\" is not a policy type: use Ingress or Egress \
                                     (case matters)"
                                ),
                            ))
                        }
                    };
                    if *slot {
                        return Err(self.err(
                            &format!("spec.types[{i}]"),
                            format!("'{t}' type specified more than once"),
                        ));
                    }
                    *slot = true;
                }
                if !types.ingress && !ingress.is_empty() {
                    return Err(self.err(
                        "spec.ingress",
                        "the policy has ingress rules but spec.types does not include \
                         Ingress, so they would never apply: add Ingress to spec.types or \
                         remove the rules",
                    ));
                }
                if !types.egress && !egress.is_empty() {
                    return Err(self.err(
                        "spec.egress",
                        "the policy has egress rules but spec.types does not include Egress, \
                         so they would never apply: add Egress to spec.types or remove the \
                         rules",
                    ));
                }
                types
            }
        };

        Ok(PolicySpec {
            tier,
            order,
            selector,
            service_account_selector,
            types,
            ingress,
            egress,
        })
    }

    /// Calico's `validateRule`, `validateICMPFields` and `validateEntityRule`.
    fn rule(&self, field: &str, rule: crd::Rule) -> Result<Rule, ValidationError> {
        let at = |sub: &str| format!("{field}.{sub}");
        let action = match rule.action.as_deref() {
            Some("Allow") => Action::Allow,
            Some("Deny") => Action::Deny,
            Some("Pass") => Action::Pass,
            Some("Log") => Action::Log,
            None => {
                return Err(self.err(&at("action"), "is required: Allow, Deny, Pass or Log"));
            }
            Some(other) => {
                return Err(self.err(
                    &at("action"),
                    format!("\"{other}\" is not an action: use Allow, Deny, Pass or Log"),
                ))
            }
        };
        let ip_version = match rule.ip_version {
            None => None,
            Some(4) => Some(IpFamily::V4),
            Some(6) => Some(IpFamily::V6),
            Some(n) => return Err(self.err(&at("ipVersion"), format!("{n} is not 4 or 6"))),
        };
        let protocol = rule
            .protocol
            .as_ref()
            .map(|p| weir_protocol(p).map_err(|why| self.err(&at("protocol"), why)))
            .transpose()?;
        let not_protocol = rule
            .not_protocol
            .as_ref()
            .map(|p| weir_protocol(p).map_err(|why| self.err(&at("notProtocol"), why)))
            .transpose()?;

        let is_icmp = |p: Option<Protocol>| matches!(p, Some(Protocol::ICMP | Protocol::ICMPV6));
        let icmp = self.icmp(&at("icmp"), rule.icmp, is_icmp(protocol))?;
        let not_icmp = self.icmp(&at("notICMP"), rule.not_icmp, is_icmp(protocol))?;
        let mentions = |p: Protocol| protocol == Some(p) || not_protocol == Some(p);
        if mentions(Protocol::ICMP) && ip_version == Some(IpFamily::V6) {
            return Err(self.err(
                &at("ipVersion"),
                "must be 4 with protocol ICMP (ICMPv6 is the IPv6 protocol)",
            ));
        }
        if mentions(Protocol::ICMPV6) && ip_version == Some(IpFamily::V4) {
            return Err(self.err(
                &at("ipVersion"),
                "must be 6 with protocol ICMPv6 (ICMP is the IPv4 protocol)",
            ));
        }

        let source = self.entity(&at("source"), rule.source.unwrap_or_default(), protocol)?;
        let destination = self.entity(
            &at("destination"),
            rule.destination.unwrap_or_default(),
            protocol,
        )?;

        // All nets of a rule are of one family, and of ipVersion's if it is set.
        let mut seen: Option<(IpFamily, String)> = None;
        for (name, nets) in [
            ("source.nets", &source.nets),
            ("source.notNets", &source.not_nets),
            ("destination.nets", &destination.nets),
            ("destination.notNets", &destination.not_nets),
        ] {
            for (i, net) in nets.iter().enumerate() {
                let family = IpFamily::of_net(net);
                let here = at(&format!("{name}[{i}]"));
                if let Some(v) = ip_version.filter(|v| *v != family) {
                    return Err(self.err(
                        &here,
                        format!("{net} is {family} but the rule's ipVersion is {v}"),
                    ));
                }
                match &seen {
                    Some((first, where_first)) if *first != family => {
                        return Err(self.err(
                            &here,
                            format!(
                                "{net} is {family} but {where_first} is {first}: a rule's nets \
                                 must all be of one IP version; split it into two rules"
                            ),
                        ))
                    }
                    Some(_) => {}
                    None => seen = Some((family, here)),
                }
            }
        }

        Ok(Rule {
            action,
            ip_version,
            protocol,
            not_protocol,
            icmp,
            not_icmp,
            source,
            destination,
        })
    }

    fn icmp(
        &self,
        field: &str,
        icmp: Option<crd::IcmpFields>,
        protocol_is_icmp: bool,
    ) -> Result<Option<IcmpMatch>, ValidationError> {
        let Some(icmp) = icmp else {
            return Ok(None);
        };
        if !protocol_is_icmp {
            return Err(self.err(
                field,
                "rules that match ICMP fields must set protocol to ICMP or ICMPv6",
            ));
        }
        let icmp_type =
            icmp.icmp_type
                .map(|t| {
                    u8::try_from(t).ok().filter(|t| *t <= 254).ok_or_else(|| {
                        self.err(&format!("{field}.type"), format!("{t} is not 0-254"))
                    })
                })
                .transpose()?;
        let code = icmp
            .code
            .map(|c| {
                u8::try_from(c)
                    .map_err(|_| self.err(&format!("{field}.code"), format!("{c} is not 0-255")))
            })
            .transpose()?;
        if code.is_some() && icmp_type.is_none() {
            return Err(self.err(
                &format!("{field}.code"),
                "an ICMP code needs an ICMP type: set type as well",
            ));
        }
        Ok(Some(IcmpMatch { icmp_type, code }))
    }

    fn entity(
        &self,
        field: &str,
        entity: crd::EntityRule,
        protocol: Option<Protocol>,
    ) -> Result<EntityRule, ValidationError> {
        let at = |sub: &str| format!("{field}.{sub}");
        let nets = self.nets(&at("nets"), entity.nets)?;
        let not_nets = self.nets(&at("notNets"), entity.not_nets)?;
        let selector = self.selector(&at("selector"), entity.selector, false)?;
        let not_selector = self.selector(&at("notSelector"), entity.not_selector, false)?;
        let namespace_selector =
            self.selector(&at("namespaceSelector"), entity.namespace_selector, true)?;
        let mut port_lists = [Vec::new(), Vec::new()];
        for (slot, (name, list)) in port_lists
            .iter_mut()
            .zip([("ports", entity.ports), ("notPorts", entity.not_ports)])
        {
            let list = list.unwrap_or_default();
            if list.is_empty() {
                continue;
            }
            if !protocol.is_some_and(Protocol::has_ports) {
                return Err(self.err(
                    &at(name),
                    "rules that match ports must set protocol to TCP, UDP, SCTP or UDPLite",
                ));
            }
            for (i, port) in list.iter().enumerate() {
                slot.push(
                    weir_port(port).map_err(|why| self.err(&at(&format!("{name}[{i}]")), why))?,
                );
            }
        }
        let [ports, not_ports] = port_lists;
        let service_accounts = entity
            .service_accounts
            .map(|sa| {
                let names = sa.names.unwrap_or_default();
                for (i, name) in names.iter().enumerate() {
                    validate_dns_subdomain(name).map_err(|why| {
                        self.err(&at(&format!("serviceAccounts.names[{i}]")), why)
                    })?;
                }
                let selector =
                    self.selector(&at("serviceAccounts.selector"), sa.selector, false)?;
                Ok(ServiceAccountMatch { names, selector })
            })
            .transpose()?;
        Ok(EntityRule {
            nets,
            not_nets,
            selector,
            not_selector,
            namespace_selector,
            ports,
            not_ports,
            service_accounts,
        })
    }
}

/// A weir.dev protocol: a name (TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite; case matters, as
/// in Calico) or a number 1-255.
fn weir_protocol(value: &Scalar) -> Result<Protocol, String> {
    let number = match value {
        Scalar::Int(n) => Some(*n),
        Scalar::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.parse::<i64>().unwrap_or(i64::MAX))
        }
        Scalar::Str(s) => {
            return Protocol::from_name(s).ok_or_else(|| {
                format!(
                    "\"{s}\" is not a protocol: use TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite \
                     (case matters) or a number 1-255"
                )
            })
        }
    };
    number
        .and_then(|n| u8::try_from(n).ok())
        .and_then(Protocol::from_number)
        .ok_or_else(|| format!("{value} is not a protocol number: use 1-255"))
}

/// A weir.dev port: a number 0-65535, a range `"lo:hi"` with `lo <= hi`, or a port name.
fn weir_port(value: &Scalar) -> Result<PortMatch, String> {
    let number = |text: &str| -> Result<u16, String> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{value} is not a port: \"{text}\" is not a number"));
        }
        text.parse::<u16>()
            .map_err(|_| format!("{value} is not a port: {text} exceeds 65535"))
    };
    match value {
        Scalar::Int(n) => u16::try_from(*n)
            .map(PortMatch::single)
            .map_err(|_| format!("{n} is not a port: use 0-65535")),
        Scalar::Str(s) => {
            if let Some((lo, hi)) = s.split_once(':') {
                let (first, last) = (number(lo)?, number(hi)?);
                if first > last {
                    return Err(format!(
                        "{value} is not a port range: the first port must not exceed the last"
                    ));
                }
                Ok(PortMatch::Range { first, last })
            } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                number(s).map(PortMatch::single)
            } else {
                validate_port_name(s)?;
                Ok(PortMatch::Named(s.clone()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::{load_documents, LoadError, Object};
    use super::*;

    /// Loads one YAML document and returns the single object or the error's text.
    fn load_one(yaml: &str) -> Result<Object, String> {
        match load_documents(yaml, "test.yaml") {
            Ok(mut objects) => {
                assert_eq!(objects.len(), 1, "{yaml}");
                Ok(objects.remove(0))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn invalid(yaml: &str) -> ValidationError {
        match load_documents(yaml, "test.yaml") {
            Err(LoadError::Invalid { error, .. }) => error,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn k8s_policy(spec: &str) -> String {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  \
             namespace: shop\nspec:\n{}",
            indent(spec)
        )
    }

    fn weir_policy(spec: &str) -> String {
        format!(
            "apiVersion: weir.dev/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-web\n  \
             namespace: shop\nspec:\n{}",
            indent(spec)
        )
    }

    fn indent(text: &str) -> String {
        text.lines().map(|l| format!("  {l}\n")).collect()
    }

    fn as_k8s(object: Object) -> K8sNetworkPolicy {
        match object.resource {
            super::super::load::Resource::K8sNetworkPolicy(p) => p,
            other => panic!("not a k8s policy: {other:?}"),
        }
    }

    fn as_weir(object: Object) -> NetworkPolicy {
        match object.resource {
            super::super::load::Resource::NetworkPolicy(p) => p,
            other => panic!("not a weir policy: {other:?}"),
        }
    }

    fn k8s(spec: &str) -> K8sNetworkPolicy {
        as_k8s(load_one(&k8s_policy(spec)).unwrap())
    }

    fn weir(spec: &str) -> NetworkPolicy {
        as_weir(load_one(&weir_policy(spec)).unwrap())
    }

    #[test]
    fn k8s_policy_types_default_from_the_api_reference() {
        let types = |spec: &str| k8s(spec).types;
        let both = PolicyTypes {
            ingress: true,
            egress: true,
        };
        let ingress_only = PolicyTypes {
            ingress: true,
            egress: false,
        };
        assert_eq!(types("podSelector: {}"), ingress_only);
        assert_eq!(types("podSelector: {}\ningress: [{}]"), ingress_only);
        assert_eq!(
            types("podSelector: {}\negress: [{}]"),
            both,
            "egress adds Egress"
        );
        assert_eq!(
            types("podSelector: {}\negress: []"),
            ingress_only,
            "an empty egress list does not"
        );
        assert_eq!(
            types("podSelector: {}\npolicyTypes: []\negress: [{}]"),
            both
        );
        assert_eq!(
            types("podSelector: {}\npolicyTypes: [Egress]"),
            PolicyTypes {
                ingress: false,
                egress: true
            }
        );
        assert_eq!(
            types("podSelector: {}\npolicyTypes: [Egress]\ningress: [{}]"),
            PolicyTypes {
                ingress: false,
                egress: true
            },
            "the API accepts rules for a type it does not list (they never apply)"
        );
    }

    #[test]
    fn k8s_policy_rules_peers_and_ports() {
        let p = k8s("podSelector:\n  matchLabels: {app: db}\ningress:\n- from:\n  - podSelector: \
                     {matchLabels: {app: web}}\n    namespaceSelector: {matchLabels: {team: a}}\n  \
                     - podSelector: {}\n  - namespaceSelector: {}\n  - ipBlock: {cidr: \
                     10.0.0.0/8, except: [10.1.0.0/16]}\n  ports:\n  - port: 5432\n  - protocol: \
                     UDP\n    port: 8000\n    endPort: 8100\n  - port: metrics\n  - protocol: SCTP\n- {}");
        assert_eq!(p.pod_selector.to_string(), "app == \"db\"");
        let rule = &p.ingress[0];
        let peers = rule.peers.as_ref().unwrap();
        assert_eq!(
            peers[0],
            K8sPeer::Pods {
                namespaces: NamespaceScope::Selected(Selector::parse("team == 'a'").unwrap()),
                pods: Selector::parse("app == 'web'").unwrap(),
            }
        );
        assert_eq!(
            peers[1],
            K8sPeer::Pods {
                namespaces: NamespaceScope::PolicyNamespace,
                pods: Selector::All
            }
        );
        assert_eq!(
            peers[2],
            K8sPeer::Pods {
                namespaces: NamespaceScope::Selected(Selector::All),
                pods: Selector::All
            }
        );
        assert_eq!(
            peers[3],
            K8sPeer::IpBlock {
                cidr: "10.0.0.0/8".parse().unwrap(),
                except: vec!["10.1.0.0/16".parse().unwrap()]
            }
        );
        let ports = rule.ports.as_ref().unwrap();
        assert_eq!(
            ports[0],
            K8sPort {
                protocol: Protocol::TCP,
                port: Some(PortMatch::single(5432))
            },
            "protocol defaults to TCP"
        );
        assert_eq!(
            ports[1],
            K8sPort {
                protocol: Protocol::UDP,
                port: Some(PortMatch::Range {
                    first: 8000,
                    last: 8100
                })
            }
        );
        assert_eq!(ports[2].port, Some(PortMatch::Named("metrics".into())));
        assert_eq!(
            ports[3],
            K8sPort {
                protocol: Protocol::SCTP,
                port: None
            }
        );
        assert_eq!(
            p.ingress[1],
            K8sRule {
                peers: None,
                ports: None
            },
            "an empty rule matches everything"
        );
    }

    #[test]
    fn k8s_missing_pod_selector_or_spec_selects_all() {
        assert_eq!(k8s("ingress: []").pod_selector, Selector::All);
        let p = as_k8s(
            load_one(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n",
            )
            .unwrap(),
        );
        assert_eq!(p.namespace, "default", "namespace defaults as with kubectl");
        assert_eq!(p.pod_selector, Selector::All);
        assert!(p.types.ingress && !p.types.egress);
    }

    #[test]
    fn k8s_ipblock_accepts_host_bits_like_the_api_server() {
        let p = k8s("egress:\n- to:\n  - ipBlock: {cidr: 10.0.0.1/24, except: [10.0.0.9/30]}");
        assert_eq!(
            p.egress[0].peers.as_ref().unwrap()[0],
            K8sPeer::IpBlock {
                cidr: "10.0.0.0/24".parse().unwrap(),
                except: vec!["10.0.0.8/30".parse().unwrap()]
            }
        );
        let v6 = k8s(
            "egress:\n- to:\n  - ipBlock: {cidr: '2001:db8::/32', except: ['2001:db8:1::/48']}",
        );
        assert!(matches!(
            v6.egress[0].peers.as_ref().unwrap()[0],
            K8sPeer::IpBlock { .. }
        ));
    }

    #[test]
    fn k8s_validation_errors() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "ingress:\n- ports:\n  - port: 80\n    endPort: 79",
                "spec.ingress[0].ports[0].endPort",
                "79 must be greater than or equal to `port` (80)",
            ),
            (
                "ingress:\n- ports:\n  - port: http\n    endPort: 90",
                "spec.ingress[0].ports[0].endPort",
                "may not be specified when `port` is non-numeric (\"http\")",
            ),
            (
                "ingress:\n- ports:\n  - endPort: 90",
                "spec.ingress[0].ports[0].port",
                "must be specified when endPort is specified",
            ),
            (
                "ingress:\n- ports:\n  - port: 0",
                "spec.ingress[0].ports[0].port",
                "0 must be between 1 and 65535",
            ),
            (
                "ingress:\n- ports:\n  - port: 80\n    endPort: 70000",
                "spec.ingress[0].ports[0].endPort",
                "70000 must be between 1 and 65535",
            ),
            (
                "ingress:\n- ports:\n  - port: \"80\"",
                "spec.ingress[0].ports[0].port",
                "port name \"80\" must contain at least one letter",
            ),
            (
                "ingress:\n- ports:\n  - protocol: tcp",
                "spec.ingress[0].ports[0].protocol",
                "\"tcp\" is not a supported protocol: use TCP, UDP or SCTP (case matters)",
            ),
            (
                "ingress:\n- ports:\n  - protocol: ICMP",
                "spec.ingress[0].ports[0].protocol",
                "\"ICMP\" is not a supported protocol: use TCP, UDP or SCTP (case matters)",
            ),
            (
                "egress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}",
                "spec.egress[0].to[0].ipBlock.except[0]",
                "\"192.168.0.0/16\" must be a strict subset of `cidr` (10.0.0.0/8)",
            ),
            (
                "egress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}",
                "spec.egress[0].to[0].ipBlock.except[0]",
                "\"10.0.0.0/8\" must be a strict subset of `cidr` (10.0.0.0/8)",
            ),
            (
                "egress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/8, except: ['2001:db8::/64']}",
                "spec.egress[0].to[0].ipBlock.except[0]",
                "\"2001:db8::/64\" must be a strict subset of `cidr` (10.0.0.0/8)",
            ),
            (
                "egress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/33}",
                "spec.egress[0].to[0].ipBlock.cidr",
                "\"10.0.0.0/33\" is not a CIDR: prefix length 33 exceeds 32",
            ),
            (
                "egress:\n- to:\n  - ipBlock: {cidr: 10.0.0.1}",
                "spec.egress[0].to[0].ipBlock.cidr",
                "\"10.0.0.1\" is not a CIDR: it needs a prefix length, e.g. \"10.0.0.1/32\"",
            ),
            (
                "egress:\n- to:\n  - ipBlock: {cidr: ''}",
                "spec.egress[0].to[0].ipBlock.cidr",
                "is required",
            ),
            (
                "egress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/8}\n    podSelector: {}",
                "spec.egress[0].to[0]",
                "may not specify both ipBlock and another peer; list them as separate peers",
            ),
            (
                "ingress:\n- from:\n  - {}",
                "spec.ingress[0].from[0]",
                "must specify a peer: podSelector, namespaceSelector or ipBlock",
            ),
            (
                "ingress:\n- from:\n  - podSelector:\n      matchExpressions:\n      - {key: a, \
                 operator: In}",
                "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
                "must be specified when `operator` is 'In' (an empty set would match nothing)",
            ),
            (
                "podSelector:\n  matchExpressions:\n  - {key: a, operator: Exists, values: [x]}",
                "spec.podSelector.matchExpressions[0].values",
                "may not be specified when `operator` is 'Exists'; remove the values",
            ),
            (
                "policyTypes: [Ingress, Sideways]",
                "spec.policyTypes[1]",
                "\"Sideways\" is not a policy type: use Ingress or Egress (case matters)",
            ),
            (
                "policyTypes: [Ingress, Egress, Ingress]",
                "spec.policyTypes",
                "may not specify more than two policyTypes (Ingress and Egress)",
            ),
        ];
        for (spec, field, message) in cases {
            let e = invalid(&k8s_policy(spec));
            assert_eq!(
                (e.field.as_str(), e.message.as_str()),
                (*field, *message),
                "{spec}"
            );
            assert_eq!(
                e.object,
                ObjectRef::namespaced(Kind::K8sNetworkPolicy, "shop", "p")
            );
        }
    }

    #[test]
    fn weir_error_display_names_object_field_and_problem() {
        let e = invalid(&weir_policy(
            "ingress:\n- action: Allow\n  source:\n    nets: [10.0.0.0/8, 10.0.0.1/33]",
        ));
        assert_eq!(
            e.to_string(),
            "weir.dev/v1 NetworkPolicy shop/allow-web: spec.ingress[0].source.nets[1]: \
             \"10.0.0.1/33\" is not a CIDR: prefix length 33 exceeds 32"
        );
    }

    #[test]
    fn weir_policy_defaults() {
        let p = weir("");
        assert_eq!(p.spec.tier, "default");
        assert_eq!(p.spec.order, None);
        assert_eq!(p.spec.selector, Selector::All);
        assert_eq!(p.spec.service_account_selector, Selector::All);
        let ingress = PolicyTypes {
            ingress: true,
            egress: false,
        };
        let egress = PolicyTypes {
            ingress: false,
            egress: true,
        };
        let both = PolicyTypes {
            ingress: true,
            egress: true,
        };
        assert_eq!(p.spec.types, ingress, "no rules: Ingress");
        assert_eq!(weir("ingress: [{action: Allow}]").spec.types, ingress);
        assert_eq!(
            weir("egress: [{action: Allow}]").spec.types,
            egress,
            "Calico: egress only"
        );
        assert_eq!(
            weir("ingress: [{action: Allow}]\negress: [{action: Deny}]")
                .spec
                .types,
            both
        );
        assert_eq!(
            weir("types: []\negress: [{action: Allow}]").spec.types,
            egress
        );
        assert_eq!(weir("types: [Egress, Ingress]").spec.types, both);
        let p = weir("tier: security\norder: 10.5\nselector: app == 'web'");
        assert_eq!(p.spec.tier, "security");
        assert_eq!(p.spec.order, Some(10.5));
        assert_eq!(p.spec.selector, Selector::parse("app == 'web'").unwrap());
    }

    #[test]
    fn weir_rule_fields() {
        let p = weir(
            "ingress:\n- action: Allow\n  protocol: TCP\n  ipVersion: 4\n  source:\n    nets: \
             [10.0.0.0/8, 192.168.1.1]\n    notNets: [10.9.0.0/16]\n    selector: role == \
             'fe'\n    notSelector: has(test)\n    namespaceSelector: global()\n    ports: [80, \
             '8000:8080', http, '443']\n    notPorts: [8001]\n    serviceAccounts:\n      \
             names: [api]\n      selector: team == 'a'\n- action: Log\n  protocol: 58\n  icmp: \
             {type: 128, code: 0}\n- action: Pass\n  notProtocol: UDPLite\n- action: Deny\n  \
             protocol: ICMP\n  notICMP: {type: 8}\n  destination: {nets: ['10.0.0.0/8']}",
        );
        let r = &p.spec.ingress[0];
        assert_eq!(r.action, Action::Allow);
        assert_eq!(r.protocol, Some(Protocol::TCP));
        assert_eq!(r.ip_version, Some(IpFamily::V4));
        assert_eq!(
            r.source.nets,
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.168.1.1/32".parse().unwrap()
            ]
        );
        assert_eq!(r.source.namespace_selector, Some(Selector::Global));
        assert_eq!(
            r.source.ports,
            vec![
                PortMatch::single(80),
                PortMatch::Range {
                    first: 8000,
                    last: 8080
                },
                PortMatch::Named("http".into()),
                PortMatch::single(443)
            ]
        );
        assert_eq!(r.source.not_ports, vec![PortMatch::single(8001)]);
        assert_eq!(
            r.source.service_accounts,
            Some(ServiceAccountMatch {
                names: vec!["api".into()],
                selector: Some(Selector::parse("team == 'a'").unwrap())
            })
        );
        assert_eq!(r.destination, EntityRule::default());
        let log = &p.spec.ingress[1];
        assert_eq!(
            (log.action, log.protocol),
            (Action::Log, Some(Protocol::ICMPV6))
        );
        assert_eq!(
            log.icmp,
            Some(IcmpMatch {
                icmp_type: Some(128),
                code: Some(0)
            })
        );
        assert_eq!(p.spec.ingress[2].not_protocol, Some(Protocol::UDPLITE));
        assert_eq!(
            p.spec.ingress[3].not_icmp,
            Some(IcmpMatch {
                icmp_type: Some(8),
                code: None
            })
        );
        assert_eq!(Protocol::ICMPV6.to_string(), "ICMPv6");
        assert_eq!(Protocol::from_number(99).unwrap().to_string(), "99");
    }

    #[test]
    fn weir_validation_errors() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "ingress: [{action: Allow, source: {nets: [10.0.0.1/24]}}]",
                "spec.ingress[0].source.nets[0]",
                "\"10.0.0.1/24\" has bits set after the /24 prefix: did you mean \"10.0.0.0/24\"?",
            ),
            (
                "ingress: [{action: Allow, source: {nets: [10.0.0/24]}}]",
                "spec.ingress[0].source.nets[0]",
                "\"10.0.0/24\" is not a CIDR: \"10.0.0\" is not an IP address",
            ),
            (
                "ingress: [{action: Allow, source: {nets: ['10.0.0.0/x']}}]",
                "spec.ingress[0].source.nets[0]",
                "\"10.0.0.0/x\" is not a CIDR: prefix length \"x\" is not a number",
            ),
            (
                "egress: [{action: Allow, destination: {notNets: ['2001:db8::/129']}}]",
                "spec.egress[0].destination.notNets[0]",
                "\"2001:db8::/129\" is not a CIDR: prefix length 129 exceeds 128",
            ),
            (
                "ingress: [{action: Allow, source: {selector: app = 'x'}}]",
                "spec.ingress[0].source.selector",
                "invalid selector: at position 4: expected \"==\", \"!=\", \"in\", \"not in\", \
                 \"starts with\", \"ends with\" or \"contains\" but found \"=\" (selector: app = \
                 'x')",
            ),
            (
                "selector: has(app",
                "spec.selector",
                "invalid selector: at position 7: expected \")\" but found the end of the \
                 selector (selector: has(app)",
            ),
            (
                "selector: global()",
                "spec.selector",
                "global() can only be used, alone, in a rule's namespaceSelector",
            ),
            (
                "ingress: [{action: Allow, source: {namespaceSelector: global() || has(a)}}]",
                "spec.ingress[0].source.namespaceSelector",
                "global() cannot be combined with other selectors",
            ),
            (
                "serviceAccountSelector: a in {",
                "spec.serviceAccountSelector",
                "invalid selector: at position 6: expected a quoted string but found the end \
                 of the selector (selector: a in {)",
            ),
            (
                "ingress: [{action: Allow, protocol: TCP, destination: {ports: ['90:80']}}]",
                "spec.ingress[0].destination.ports[0]",
                "\"90:80\" is not a port range: the first port must not exceed the last",
            ),
            (
                "ingress: [{action: Allow, protocol: TCP, destination: {ports: [70000]}}]",
                "spec.ingress[0].destination.ports[0]",
                "70000 is not a port: use 0-65535",
            ),
            (
                "ingress: [{action: Allow, protocol: TCP, destination: {ports: ['1:70000']}}]",
                "spec.ingress[0].destination.ports[0]",
                "\"1:70000\" is not a port: 70000 exceeds 65535",
            ),
            (
                "ingress: [{action: Allow, protocol: TCP, destination: {ports: [Web_Port]}}]",
                "spec.ingress[0].destination.ports[0]",
                "port name \"Web_Port\" must contain only lower-case letters, digits and '-'",
            ),
            (
                "ingress: [{action: Allow, destination: {ports: [80]}}]",
                "spec.ingress[0].destination.ports",
                "rules that match ports must set protocol to TCP, UDP, SCTP or UDPLite",
            ),
            (
                "ingress: [{action: Allow, protocol: ICMP, source: {notPorts: [80]}}]",
                "spec.ingress[0].source.notPorts",
                "rules that match ports must set protocol to TCP, UDP, SCTP or UDPLite",
            ),
            (
                "ingress: [{action: Allow, protocol: tcp}]",
                "spec.ingress[0].protocol",
                "\"tcp\" is not a protocol: use TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite (case \
                 matters) or a number 1-255",
            ),
            (
                "ingress: [{action: Allow, notProtocol: 256}]",
                "spec.ingress[0].notProtocol",
                "256 is not a protocol number: use 1-255",
            ),
            (
                "ingress: [{action: Allow, protocol: 0}]",
                "spec.ingress[0].protocol",
                "0 is not a protocol number: use 1-255",
            ),
            (
                "ingress: [{action: Allow, protocol: ICMP, icmp: {code: 1}}]",
                "spec.ingress[0].icmp.code",
                "an ICMP code needs an ICMP type: set type as well",
            ),
            (
                "ingress: [{action: Allow, protocol: ICMP, icmp: {type: 255}}]",
                "spec.ingress[0].icmp.type",
                "255 is not 0-254",
            ),
            (
                "ingress: [{action: Allow, protocol: TCP, icmp: {type: 8}}]",
                "spec.ingress[0].icmp",
                "rules that match ICMP fields must set protocol to ICMP or ICMPv6",
            ),
            (
                "ingress: [{action: Allow, notICMP: {type: 8}}]",
                "spec.ingress[0].notICMP",
                "rules that match ICMP fields must set protocol to ICMP or ICMPv6",
            ),
            (
                "ingress: [{action: Allow, protocol: ICMP, ipVersion: 6}]",
                "spec.ingress[0].ipVersion",
                "must be 4 with protocol ICMP (ICMPv6 is the IPv6 protocol)",
            ),
            (
                "ingress: [{action: Allow, protocol: ICMPv6, ipVersion: 4}]",
                "spec.ingress[0].ipVersion",
                "must be 6 with protocol ICMPv6 (ICMP is the IPv4 protocol)",
            ),
            (
                "ingress: [{action: Allow, ipVersion: 5}]",
                "spec.ingress[0].ipVersion",
                "5 is not 4 or 6",
            ),
            (
                "ingress: [{action: Allow, ipVersion: 6, source: {nets: [10.0.0.0/8]}}]",
                "spec.ingress[0].source.nets[0]",
                "10.0.0.0/8 is IPv4 but the rule's ipVersion is IPv6",
            ),
            (
                "ingress: [{action: Allow, source: {nets: [10.0.0.0/8]}, destination: {notNets: \
                 ['::/0']}}]",
                "spec.ingress[0].destination.notNets[0]",
                "::/0 is IPv6 but spec.ingress[0].source.nets[0] is IPv4: a rule's nets must all \
                 be of one IP version; split it into two rules",
            ),
            (
                "ingress: [{protocol: TCP}]",
                "spec.ingress[0].action",
                "is required: Allow, Deny, Pass or Log",
            ),
            (
                "egress: [{action: Accept}]",
                "spec.egress[0].action",
                "\"Accept\" is not an action: use Allow, Deny, Pass or Log",
            ),
            (
                "types: [Ingress, Ingress]",
                "spec.types[1]",
                "'Ingress' type specified more than once",
            ),
            (
                "types: [ingress]",
                "spec.types[0]",
                "\"ingress\" is not a policy type: use Ingress or Egress (case matters)",
            ),
            (
                "types: [Ingress]\negress: [{action: Allow}]",
                "spec.egress",
                "the policy has egress rules but spec.types does not include Egress, so they \
                 would never apply: add Egress to spec.types or remove the rules",
            ),
            ("order: .nan", "spec.order", "NaN is not a finite number"),
            (
                "tier: Security",
                "spec.tier",
                "\"Security\" must be a DNS label: at most 63 lower-case alphanumeric \
                 characters or '-', starting and ending with an alphanumeric character",
            ),
            (
                "namespaceSelector: all()",
                "spec.namespaceSelector",
                "a NetworkPolicy applies to its own namespace only; use a GlobalNetworkPolicy \
                 to select namespaces",
            ),
            (
                "ingress: [{action: Allow, source: {serviceAccounts: {names: [Bad]}}}]",
                "spec.ingress[0].source.serviceAccounts.names[0]",
                "\"Bad\" must be a DNS subdomain: lower-case alphanumeric characters, '-' and \
                 '.', starting and ending with an alphanumeric character",
            ),
        ];
        for (spec, field, message) in cases {
            let e = invalid(&weir_policy(spec));
            assert_eq!(
                (e.field.as_str(), e.message.as_str()),
                (*field, *message),
                "{spec}"
            );
        }
    }

    #[test]
    fn unknown_and_mistyped_fields_are_decode_errors() {
        let e = load_documents(
            &weir_policy("ingress: [{action: Allow, source: {notNet: [10.0.0.0/8]}}]"),
            "f.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "f.yaml document 1: weir.dev/v1 NetworkPolicy shop/allow-web: \
                               spec.ingress[0].source.notNet: unknown field `notNet`"
            ),
            "{e}"
        );
        let e = load_documents(&weir_policy("order: high"), "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.order: invalid type: string \"high\""),
            "{e}"
        );
        let e = load_documents(&k8s_policy("podSelecter: {}"), "f.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "f.yaml document 1: networking.k8s.io/v1 NetworkPolicy shop/p: spec.podSelecter: \
             unknown field (Kubernetes would reject it under strict field validation)"
        );
    }

    #[test]
    fn tiers() {
        let tier = |yaml: &str| match load_one(&format!(
            "apiVersion: weir.dev/v1\nkind: Tier\nmetadata: {{name: security}}\n{yaml}"
        )) {
            Ok(Object {
                resource: super::super::load::Resource::Tier(t),
                ..
            }) => Ok(t),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(
            tier("").unwrap(),
            Tier {
                name: "security".into(),
                order: None,
                default_action: TierDefaultAction::Deny
            }
        );
        assert_eq!(
            tier("spec: {order: 100, defaultAction: Pass}").unwrap(),
            Tier {
                name: "security".into(),
                order: Some(100.0),
                default_action: TierDefaultAction::Pass
            }
        );
        let e = tier("spec: {defaultAction: Allow}").unwrap_err();
        assert!(
            e.ends_with(
                "Tier security: spec.defaultAction: \"Allow\" is not a tier default \
                             action: use Deny or Pass"
            ),
            "{e}"
        );
        let e =
            load_one("apiVersion: weir.dev/v1\nkind: Tier\nmetadata: {name: a.b}\n").unwrap_err();
        assert!(
            e.contains("Tier a.b: metadata.name: \"a.b\" must be a DNS label"),
            "{e}"
        );
        let e = load_one(
            "apiVersion: weir.dev/v1\nkind: Tier\nmetadata: {name: default}\nspec: {order: 5}\n",
        )
        .unwrap_err();
        assert!(
            e.contains("the default tier's order is fixed at 1000000"),
            "{e}"
        );
    }

    #[test]
    fn network_sets_and_global_policies() {
        let objects = load_documents(
            "apiVersion: weir.dev/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.block}\n\
             spec:\n  namespaceSelector: team == 'a'\n  egress: [{action: Deny}]\n---\n\
             apiVersion: weir.dev/v1\nkind: GlobalNetworkSet\nmetadata: {name: ext, labels: \
             {kind: ext}}\nspec: {nets: ['192.0.2.0/24', '2001:db8::/32']}\n---\n\
             apiVersion: weir.dev/v1\nkind: NetworkSet\nmetadata: {name: office, namespace: \
             shop}\nspec: {nets: [198.51.100.7]}\n",
            "sets.yaml",
        )
        .unwrap();
        let super::super::load::Resource::GlobalNetworkPolicy(g) = &objects[0].resource else {
            panic!("{:?}", objects[0]);
        };
        assert_eq!(g.namespace_selector.to_string(), "team == \"a\"");
        assert!(g.spec.types.egress && !g.spec.types.ingress);
        let super::super::load::Resource::GlobalNetworkSet(s) = &objects[1].resource else {
            panic!("{:?}", objects[1]);
        };
        assert_eq!(s.nets.len(), 2);
        assert_eq!(s.labels.get("kind").map(String::as_str), Some("ext"));
        let super::super::load::Resource::NetworkSet(n) = &objects[2].resource else {
            panic!("{:?}", objects[2]);
        };
        assert_eq!(n.nets, vec!["198.51.100.7/32".parse::<IpNet>().unwrap()]);
        let e = load_documents(
            "apiVersion: weir.dev/v1\nkind: NetworkSet\nmetadata: {name: s}\nspec: {nets: \
             [192.0.2.1/24]}\n",
            "s.yaml",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "s.yaml document 1: NetworkSet default/s: spec.nets[0]: \"192.0.2.1/24\" has bits \
             set after the /24 prefix: did you mean \"192.0.2.0/24\"?"
        );
    }

    fn ip_pool(spec: &str) -> Result<IpPool, String> {
        match load_one(&format!(
            "apiVersion: weir.dev/v1\nkind: IPPool\nmetadata: {{name: pool}}\n{spec}"
        ))? {
            Object {
                resource: super::super::load::Resource::IpPool(p),
                ..
            } => Ok(p),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ip_pools_default_their_block_size_by_family() {
        let v4 = ip_pool("spec: {cidr: 198.18.0.0/16}").unwrap();
        assert_eq!(
            v4,
            IpPool {
                name: "pool".into(),
                cidr: "198.18.0.0/16".parse().unwrap(),
                block_size: DEFAULT_IPV4_BLOCK_SIZE,
                node_selector: Selector::All,
                disabled: false,
            }
        );
        let v6 = ip_pool("spec: {cidr: '2001:db8::/48', disabled: true}").unwrap();
        assert_eq!(
            (v6.block_size, v6.disabled),
            (DEFAULT_IPV6_BLOCK_SIZE, true)
        );
        let exact =
            ip_pool("spec: {cidr: 198.18.0.0/24, blockSize: 24, nodeSelector: \"zone == 'a'\"}")
                .unwrap();
        assert_eq!(exact.block_size, 24);
        assert_eq!(exact.node_selector.to_string(), "zone == \"a\"");
        assert_eq!(
            ip_pool("spec: {cidr: 198.18.0.0/24, blockSize: 32}")
                .unwrap()
                .block_size,
            32
        );
    }

    #[test]
    fn invalid_ip_pools_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "spec.cidr", "is required"),
            ("spec: {blockSize: 26}", "spec.cidr", "is required"),
            (
                "spec: {cidr: 198.18.0.1/16}",
                "spec.cidr",
                "did you mean \"198.18.0.0/16\"?",
            ),
            (
                "spec: {cidr: 198.18.0.0}",
                "spec.cidr",
                "needs a prefix length",
            ),
            (
                "spec: {cidr: 198.18.0.0/33}",
                "spec.cidr",
                "prefix length 33 exceeds 32",
            ),
            ("spec: {cidr: pods}", "spec.cidr", "is not an IP address"),
            (
                "spec: {cidr: 198.18.0.0/16, blockSize: 12}",
                "spec.blockSize",
                "12 is not a block size for 198.18.0.0/16: use a prefix length from 16",
            ),
            (
                "spec: {cidr: 198.18.0.0/16, blockSize: 33}",
                "spec.blockSize",
                "to 32",
            ),
            (
                "spec: {cidr: '2001:db8::/48', blockSize: 129}",
                "spec.blockSize",
                "to 128",
            ),
            (
                "spec: {cidr: 198.18.0.0/16, blockSize: -1}",
                "spec.blockSize",
                "-1 is not",
            ),
            (
                "spec: {cidr: 198.18.0.0/28}",
                "spec.blockSize",
                "the default block size /26 is larger than the pool 198.18.0.0/28",
            ),
            (
                "spec: {cidr: 198.18.0.0/16, nodeSelector: 'zone =='}",
                "spec.nodeSelector",
                "invalid selector",
            ),
        ];
        for (spec, field, message) in cases {
            let e = ip_pool(spec).unwrap_err();
            assert!(
                e.contains(&format!("IPPool pool: {field}: ")) && e.contains(message),
                "{spec}: {e}"
            );
        }
        let e = ip_pool("spec: {cidr: 198.18.0.0/16, vxlanMode: Always}").unwrap_err();
        assert!(e.contains("spec.vxlanMode: unknown field"), "{e}");
        let e = ip_pool("spec: {cidr: 198.18.0.0/16, disabled: 'no'}").unwrap_err();
        assert!(e.contains("spec.disabled: invalid type"), "{e}");
    }

    fn host_endpoint(spec: &str) -> Result<HostEndpoint, String> {
        match load_one(&format!(
            "apiVersion: weir.dev/v1\nkind: HostEndpoint\nmetadata: {{name: hep, labels: {{role: \
             edge}}}}\n{spec}"
        ))? {
            Object {
                resource: super::super::load::Resource::HostEndpoint(h),
                ..
            } => Ok(h),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn host_endpoints() {
        let hep = host_endpoint(
            "spec: {node: n1, interfaceName: eth0, expectedIPs: [198.18.0.1, '2001:db8::1']}",
        )
        .unwrap();
        assert_eq!(
            hep,
            HostEndpoint {
                name: "hep".into(),
                labels: Labels::from([("role".to_owned(), "edge".to_owned())]),
                node: "n1".into(),
                interface_name: Some("eth0".into()),
                expected_ips: vec![
                    "198.18.0.1".parse().unwrap(),
                    "2001:db8::1".parse().unwrap()
                ],
            }
        );
        assert!(host_endpoint("spec: {node: n1, interfaceName: '*'}").is_ok());
        assert_eq!(
            host_endpoint("spec: {node: n1, expectedIPs: [198.18.0.1]}")
                .unwrap()
                .interface_name,
            None
        );
        let cases: &[(&str, &str, &str)] = &[
            ("", "spec.node", "is required"),
            ("spec: {interfaceName: eth0}", "spec.node", "is required"),
            ("spec: {node: N_1, interfaceName: eth0}", "spec.node", "N_1"),
            (
                "spec: {node: n1}",
                "spec",
                "needs spec.interfaceName, spec.expectedIPs or both",
            ),
            (
                "spec: {node: n1, expectedIPs: []}",
                "spec",
                "needs spec.interfaceName",
            ),
            (
                "spec: {node: n1, interfaceName: 'eth 0'}",
                "spec.interfaceName",
                "is not an interface name",
            ),
            (
                "spec: {node: n1, interfaceName: a-very-long-interface}",
                "spec.interfaceName",
                "is not an interface name",
            ),
            (
                "spec: {node: n1, expectedIPs: [198.18.0.0/24]}",
                "spec.expectedIPs[0]",
                "is not an IP address",
            ),
            (
                "spec: {node: n1, expectedIPs: [198.18.0.1, 198.18.0.1]}",
                "spec.expectedIPs[1]",
                "198.18.0.1 is listed twice",
            ),
        ];
        for (spec, field, message) in cases {
            let e = host_endpoint(spec).unwrap_err();
            assert!(
                e.contains(&format!("HostEndpoint hep: {field}: ")) && e.contains(message),
                "{spec}: {e}"
            );
        }
    }

    fn service(spec: &str) -> Result<Service, String> {
        match load_one(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\n{spec}"
        ))? {
            Object {
                resource: super::super::load::Resource::Service(s),
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
                resource: super::super::load::Resource::EndpointSlice(s),
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
        let super::super::load::Resource::EndpointSlice(unowned) = unowned.resource else {
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

    #[test]
    fn pods() {
        let pod = |yaml: &str| {
            load_one(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: shop, labels: \
                 {{app: web}}}}\n{yaml}"
            ))
            .map(|o| match o.resource {
                super::super::load::Resource::Pod(p) => p,
                other => panic!("{other:?}"),
            })
        };
        let p = pod(
            "spec:\n  containers:\n  - name: c\n    ports:\n    - {containerPort: 80, name: \
             http}\n    - {containerPort: 53, name: dns, protocol: UDP}\nstatus:\n  podIPs: [{ip: \
             10.1.0.5}, {ip: 'fd00::5'}]\n",
        )
        .unwrap();
        assert_eq!(p.service_account, "default");
        assert_eq!(p.ipv4(), Some(Ipv4Addr::new(10, 1, 0, 5)));
        assert_eq!(p.ipv6(), Some("fd00::5".parse().unwrap()));
        assert_eq!(p.ip(IpFamily::V6), p.ipv6().map(IpAddr::V6));
        assert_eq!(p.named_port("http", Protocol::TCP), Some(80));
        assert_eq!(p.named_port("dns", Protocol::UDP), Some(53));
        assert_eq!(
            p.named_port("dns", Protocol::TCP),
            None,
            "name and protocol together"
        );
        assert!(!p.host_network);

        let p = pod("spec:\n  serviceAccountName: api\n  hostNetwork: true\n  containers: []\nstatus: {podIP: 10.0.0.1}\n")
            .unwrap();
        assert_eq!(p.service_account, "api");
        assert!(p.host_network);
        assert_eq!(p.ips, vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);
        assert!(pod("").unwrap().ips.is_empty());

        let e = pod("status:\n  podIPs: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]\n").unwrap_err();
        assert!(
            e.ends_with(
                "Pod shop/web: status.podIPs[1].ip: a pod has at most one IPv4 \
                             address; 10.0.0.2 is a second one"
            ),
            "{e}"
        );
        let e = pod("status:\n  podIPs: [{ip: 10.0.0.300}]\n").unwrap_err();
        assert!(
            e.ends_with("status.podIPs[0].ip: \"10.0.0.300\" is not an IP address"),
            "{e}"
        );
        let e = pod("spec:\n  containers:\n  - name: c\n    ports: [{containerPort: 70000}]\n")
            .unwrap_err();
        assert!(
            e.ends_with(
                "spec.containers[0].ports[0].containerPort: 70000 must be between \
                             1 and 65535"
            ),
            "{e}"
        );
        let e = pod(
            "spec:\n  containers:\n  - name: c\n    ports: [{containerPort: 80, name: \
                     a, protocol: ICMP}]\n",
        )
        .unwrap_err();
        assert!(
            e.ends_with(
                "spec.containers[0].ports[0].protocol: \"ICMP\" is not a supported \
                             protocol: use TCP, UDP or SCTP (case matters)"
            ),
            "{e}"
        );
        let e = pod(
            "spec:\n  containers:\n  - name: c\n    ports: [{containerPort: 80, name: \
                     web}]\n  - name: d\n    ports: [{containerPort: 81, name: web}]\n",
        )
        .unwrap_err();
        assert!(
            e.ends_with(
                "spec.containers[1].ports[0].name: port name \"web\" is used twice \
                             in this pod"
            ),
            "{e}"
        );
    }

    #[test]
    fn namespaces_always_carry_their_name_label() {
        let o = load_one(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a, \
             kubernetes.io/metadata.name: wrong}}\n",
        )
        .unwrap();
        let super::super::load::Resource::Namespace(ns) = o.resource else {
            panic!("{o:?}");
        };
        assert_eq!(
            ns.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
            Some("shop")
        );
        assert_eq!(ns.labels.get("team").map(String::as_str), Some("a"));
        let e = load_one("apiVersion: v1\nkind: Namespace\nmetadata: {name: Shop}\n").unwrap_err();
        assert!(
            e.contains("Namespace Shop: metadata.name: \"Shop\" must be a DNS label"),
            "{e}"
        );
        let e =
            load_one("apiVersion: v1\nkind: Namespace\nmetadata: {labels: {a: b}}\n").unwrap_err();
        assert!(e.ends_with("Namespace : metadata.name: is required"), "{e}");
        let e =
            load_one("apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {a: 'x y'}}\n")
                .unwrap_err();
        assert!(e.contains("metadata.labels.a: label value \"x y\""), "{e}");
    }

    #[test]
    fn ordering_puts_unordered_last_and_breaks_ties_by_name() {
        let mut items = vec![
            (None, "b"),
            (Some(10.0), "z"),
            (None, "a"),
            (Some(1.0), "y"),
            (Some(10.0), "m"),
        ];
        items.sort_by(|a, b| compare_order(*a, *b));
        assert_eq!(
            items,
            vec![
                (Some(1.0), "y"),
                (Some(10.0), "m"),
                (Some(10.0), "z"),
                (None, "a"),
                (None, "b")
            ]
        );
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("10.0.0.0/8"), Ok("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_cidr("::1"), Ok("::1/128".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/+8").is_err());
        assert!(parse_cidr("10.0.0.0/").is_err());
        assert!(parse_cidr("").is_err());
        assert_eq!(
            parse_k8s_cidr("10.0.0.1/8"),
            Ok("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse_k8s_cidr("10.0.0.0/08"),
            Ok("10.0.0.0/8".parse().unwrap())
        );
        assert!(parse_k8s_cidr("10.0.0.0").is_err());
    }
}
