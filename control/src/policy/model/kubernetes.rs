//! The Kubernetes objects policy reads: `v1` Namespace, ServiceAccount and Pod, and
//! `networking.k8s.io/v1` NetworkPolicy. They arrive as `k8s-openapi` values and are
//! validated and defaulted as the API server would, so that what the API server accepts is
//! accepted here and nothing more.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;

use crate::policy::selector::{validate_dns_label, validate_dns_subdomain, Labels, Selector};

use super::validate::{k8s_protocol, namespaced_identity, Cx};
use super::{
    validate_port_name, IpFamily, Kind, ObjectRef, PolicyTypes, PortMatch, Protocol,
    ValidationError,
};

/// The label Kubernetes puts on every namespace, holding the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

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

#[cfg(test)]
mod tests {
    use super::super::tests::{as_k8s, invalid, k8s, k8s_policy, load_one};
    use super::*;

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
    fn pods() {
        let pod = |yaml: &str| {
            load_one(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: shop, labels: \
                 {{app: web}}}}\n{yaml}"
            ))
            .map(|o| match o.resource {
                crate::policy::load::Resource::Pod(p) => p,
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
        let crate::policy::load::Resource::Namespace(ns) = o.resource else {
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
}
