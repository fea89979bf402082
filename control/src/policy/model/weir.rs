//! The weir.dev/v1 objects: tiers, policies, network sets, IP pools and host endpoints,
//! with the order tiers and policies run in. Each is decoded strictly from its wire form
//! (the CRD spec types of [`crate::crd`]) and validated with Calico's rules, so that a
//! typo cannot silently widen a rule.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::crd;
use crate::policy::selector::{validate_dns_label, validate_dns_subdomain, Labels, Selector};

use super::validate::{
    namespaced_identity, parse_cidr_parts, validate_interface_name, validate_policy_name, Cx,
};
use super::{
    IpFamily, Kind, ObjectRef, PolicyTypes, PortMatch, Protocol, ValidationError, DEFAULT_TIER,
    DEFAULT_TIER_ORDER,
};

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
    /// `spec.natOutgoing`: traffic from the pool to addresses outside every pool leaves
    /// with the node's address. Unset: true for the pools named as Calico names the ones
    /// it creates (`default-ipv4-ippool`, `default-ipv6-ippool`), false otherwise.
    pub nat_outgoing: bool,
}

/// A `weir.dev/v1` IPAMBlock as routing reads it: one block of a pool and the node that
/// holds it. Pod addresses in the block live on that node, so the block is the prefix
/// other nodes route (and accept through WireGuard) to it. The leases in the object are
/// IPAM's business (`crate::ipam`) and are not kept: a lease change leaves the model as it
/// was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamBlock {
    /// The name (IPAM names blocks after their CIDR: `198-18-64-0-26`).
    pub name: String,
    /// `spec.cidr`, with no host bits set.
    pub cidr: IpNet,
    /// `spec.node`: the node holding the block.
    pub node: String,
    /// `spec.pool`: the IPPool the block was cut from (the pool may be gone since: its
    /// blocks still route while pods use them).
    pub pool: String,
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
pub(crate) type IpamBlockWire = WireObject<crd::IpamBlockSpec>;

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
            cidr,
            block_size,
            node_selector,
            disabled: spec.disabled.unwrap_or(false),
            nat_outgoing: spec.nat_outgoing.unwrap_or(matches!(
                name.as_str(),
                "default-ipv4-ippool" | "default-ipv6-ippool"
            )),
            name,
        })
    }
}

impl IpamBlock {
    pub(crate) fn from_wire(wire: IpamBlockWire) -> Result<IpamBlock, ValidationError> {
        let name = wire.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef::cluster(Kind::IpamBlock, &name);
        let cx = Cx { object: &object };
        cx.name(&name, validate_dns_subdomain)?;
        cx.labels(&wire.metadata)?;
        let spec = wire.spec.ok_or_else(|| {
            cx.err(
                "spec",
                "is required: the block's cidr, pool and node (IPAM writes it)",
            )
        })?;
        let text = &spec.cidr;
        let cidr = parse_cidr_parts(text, false)
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
        if spec.node.is_empty() {
            return Err(cx.err("spec.node", "is required: the node holding the block"));
        }
        validate_dns_subdomain(&spec.node).map_err(|why| cx.err("spec.node", why))?;
        if spec.pool.is_empty() {
            return Err(cx.err("spec.pool", "is required: the IPPool the block belongs to"));
        }
        Ok(IpamBlock {
            name,
            cidr,
            node: spec.node,
            pool: spec.pool,
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

#[cfg(test)]
mod tests;
