//! The checks every family of objects shares: names, labels, selectors, CIDRs, ports and
//! protocols, and the rules and peers of both kinds of policy. [`Cx`] carries the object
//! being checked, so that each error names the object and the field path.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{self, Scalar};
use crate::policy::selector::{
    from_label_selector, validate_dns_label, validate_dns_subdomain, validate_label_key,
    validate_label_value, Labels, Selector,
};

use super::services::MAX_ENDPOINT_ADDRESSES;
use super::{
    Action, AddressType, Endpoint, EntityRule, IcmpMatch, IpFamily, K8sPeer, K8sPort, K8sRule,
    NamespaceScope, NamespacedName, ObjectRef, PolicySpec, PolicyTypes, PortMatch, Protocol, Rule,
    ServiceAccountMatch, ServicePort, ServiceType, TargetPort, ValidationError, DEFAULT_TIER,
};

/// The namespace and name of a namespaced object; the namespace defaults to `default`, as
/// `kubectl apply` does for a manifest that names none.
pub(super) fn namespaced_identity(meta: &ObjectMeta) -> (String, String) {
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

pub(super) fn parse_cidr_parts(text: &str, bare_ip_ok: bool) -> Result<IpNet, String> {
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
pub(super) fn validate_interface_name(name: &str) -> Result<(), String> {
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
pub(super) fn validate_policy_name(name: &str) -> Result<(), String> {
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
pub(super) fn validate_dns_1035_label(name: &str) -> Result<(), String> {
    validate_dns_label(name)?;
    if name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" must be a DNS-1035 label: a DNS label that starts with a letter"
        ))
    }
}

pub(super) fn k8s_protocol(text: &str) -> Result<Protocol, String> {
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
pub(super) struct Cx<'a> {
    pub(super) object: &'a ObjectRef,
}

impl Cx<'_> {
    pub(super) fn err(&self, field: &str, message: impl Into<String>) -> ValidationError {
        ValidationError {
            object: self.object.clone(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub(super) fn name(
        &self,
        name: &str,
        rule: impl Fn(&str) -> Result<(), String>,
    ) -> Result<(), ValidationError> {
        if name.is_empty() {
            return Err(self.err("metadata.name", "is required"));
        }
        rule(name).map_err(|why| self.err("metadata.name", why))
    }

    pub(super) fn labels(&self, meta: &ObjectMeta) -> Result<Labels, ValidationError> {
        let labels = meta.labels.clone().unwrap_or_default();
        for (key, value) in &labels {
            validate_label_key(key).map_err(|why| self.err("metadata.labels", why))?;
            validate_label_value(value)
                .map_err(|why| self.err(&format!("metadata.labels.{key}"), why))?;
        }
        Ok(labels.into_iter().collect())
    }

    pub(super) fn label_selector(
        &self,
        field: &str,
        ls: &LabelSelector,
    ) -> Result<Selector, ValidationError> {
        from_label_selector(ls).map_err(|e| self.err(&format!("{field}.{}", e.field), e.message))
    }

    /// Parses an optional weir selector. `global_ok`: `global()` may appear, and then only
    /// alone (Calico: "global() cannot be combined with other selectors").
    pub(super) fn selector(
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

    pub(super) fn order(
        &self,
        field: &str,
        order: Option<f64>,
    ) -> Result<Option<f64>, ValidationError> {
        match order {
            Some(o) if !o.is_finite() => {
                Err(self.err(field, format!("{o} is not a finite number")))
            }
            other => Ok(other),
        }
    }

    pub(super) fn nets(
        &self,
        field: &str,
        nets: Option<Vec<String>>,
    ) -> Result<Vec<IpNet>, ValidationError> {
        nets.unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, text)| {
                parse_cidr(text).map_err(|why| self.err(&format!("{field}[{i}]"), why))
            })
            .collect()
    }

    pub(super) fn k8s_rule(
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
    pub(super) fn cluster_ips(
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
    pub(super) fn service_port(
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
    pub(super) fn endpoint(
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

    pub(super) fn policy_spec(
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
    use super::*;

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
