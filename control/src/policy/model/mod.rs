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
//!   GlobalNetworkSet, IPPool, HostEndpoint, IPAMBlock): Calico's `projectcalico.org/v3`
//!   shapes under weir's API group, with Calico's validation rules
//!   (`libcalico-go/lib/validator/v3`) and defaults. They are decoded into the CRD types of [`crate::crd`], strictly: unknown
//!   fields are errors, so a typo (`notNet`) cannot silently widen a rule. IP pools and host
//!   endpoints are kept in the model for IPAM and host policy; the policy compiler does not
//!   read them yet. IPAMBlocks (written by IPAM) say which node holds which block: the
//!   routes and WireGuard allowed IPs to other nodes are built from them.
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
//!
//! The model is divided by family: `kubernetes` (the policy inputs of the Kubernetes API),
//! `weir` (weir.dev objects and their wire format), `services`, `nodes`, and `validate`,
//! the checks every family shares. The types every family uses (object identities,
//! errors, protocols, ports) are here; every public item is re-exported here, so paths
//! stay `policy::model::X`.

mod kubernetes;
mod nodes;
mod services;
mod validate;
mod weir;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

pub use self::kubernetes::{
    ContainerPort, K8sNetworkPolicy, K8sPeer, K8sPort, K8sRule, Namespace, NamespaceScope, Pod,
    ServiceAccount, NAMESPACE_NAME_LABEL,
};
pub use self::nodes::Node;
pub use self::services::{
    AddressType, Endpoint, EndpointPort, EndpointSlice, Service, ServicePort, ServiceType,
    SessionAffinity, TargetPort, TrafficPolicy, DEFAULT_AFFINITY_TIMEOUT_SECONDS,
    SERVICE_NAME_LABEL,
};
pub use self::validate::{parse_cidr, parse_k8s_cidr, validate_port_name};
pub use self::weir::{
    compare_order, Action, EntityRule, GlobalNetworkPolicy, GlobalNetworkSet, HostEndpoint,
    IcmpMatch, IpPool, IpamBlock, NetworkPolicy, NetworkSet, PolicySpec, Rule, ServiceAccountMatch,
    Tier, TierDefaultAction, DEFAULT_IPV4_BLOCK_SIZE, DEFAULT_IPV6_BLOCK_SIZE,
};
pub(crate) use self::weir::{
    GlobalNetworkPolicyWire, GlobalNetworkSetWire, HostEndpointWire, IpPoolWire, IpamBlockWire,
    NetworkPolicyWire, NetworkSetWire, TierWire,
};

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
    /// `weir.dev/v1` IPAMBlock (a node's block of an IP pool: what other nodes route to it).
    IpamBlock,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 15] = [
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
        Kind::IpamBlock,
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
            Kind::IpamBlock => "IPAMBlock",
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
                | Kind::IpamBlock
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

#[cfg(test)]
mod tests;
