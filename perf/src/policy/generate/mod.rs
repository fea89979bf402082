//! The generated clusters and probes the policy benchmark measures on.
//!
//! A classifier's speed depends on the shape of its rules as much as on their number, so
//! the clusters look like real ones (namespaces of labelled pods scattered over the nodes'
//! IPAM blocks, a mix of Kubernetes, weir.dev and global policies) rather than random
//! 5-tuples, and the probes go where the pods are. Both are deterministic for a seed, so
//! that every round and every anchor sees the same input. The policies an application
//! namespace draws from are in `templates`.

mod templates;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use weir_control::policy::compile::Compiled;
use weir_control::policy::load::{Cluster, Object, Origin, Resource};
use weir_control::policy::model::{
    Action, ContainerPort, EntityRule, GlobalNetworkPolicy, K8sNetworkPolicy, K8sPeer, K8sPort,
    K8sRule, Namespace, NamespaceScope, NamespacedName, NetworkPolicy, Pod, PolicySpec,
    PolicyTypes, PortMatch, Protocol, Rule, Tier, TierDefaultAction, NAMESPACE_NAME_LABEL,
};
use weir_control::policy::selector::{Labels, Selector};
use weir_dataplane::flow::FlowKey;
use weir_dataplane::snapshot::EndpointId;

use super::PolicyBenchError;
use crate::rng::SplitMix64;
use templates::TEMPLATES;

/// A generated cluster and what the probes need to know about it.
#[derive(Debug, Clone)]
pub struct GeneratedCluster {
    /// The objects, loaded and checked by weir's own loader.
    pub cluster: Cluster,
    /// Ingress plus egress rules over every policy (Kubernetes, weir.dev, global).
    pub rules: usize,
    /// Application namespaces (besides `kube-system`, `monitoring` and `ingress`).
    pub namespaces: usize,
    /// Pods, all with an IPv4 address.
    pub pods: usize,
    /// Nodes the pods were scheduled on.
    pub nodes: usize,
    /// Kubernetes NetworkPolicies, weir.dev NetworkPolicies, GlobalNetworkPolicies.
    pub policies: [usize; 3],
    /// The ports the rules name as (protocol, first, last), named ports resolved: where half
    /// of the probes aim.
    pub rule_ports: Vec<(u8, u16, u16)>,
    /// Each namespace's pods and their address (host order).
    pub pods_by_namespace: Vec<Vec<(NamespacedName, u32)>>,
    /// Each node's pods and their address (host order).
    pub pods_by_node: Vec<Vec<(NamespacedName, u32)>>,
}

/// Generates the cluster for `rules` rules (see the module doc for its shape).
///
/// # Errors
/// [`PolicyBenchError::Config`] if the pod range cannot hold the pods `rules` calls for
/// (several hundred thousand rules), [`PolicyBenchError::Generator`] if weir's loader
/// rejects the objects.
pub fn generate_cluster(rules: usize, seed: u64) -> Result<GeneratedCluster, PolicyBenchError> {
    Generator::new(rules, seed).run()
}

/// One probe: the flow key and the endpoints it goes between (`None`: outside the cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub key: FlowKey,
    pub src: Option<EndpointId>,
    pub dst: Option<EndpointId>,
}

/// `count` probes over a generated cluster (see the module doc for the mix).
///
/// # Panics
/// If a pod of `cluster` has no endpoint in `compiled` (they must come from the same
/// cluster).
pub fn generate_probes(
    cluster: &GeneratedCluster,
    compiled: &Compiled,
    count: usize,
    seed: u64,
) -> Vec<Probe> {
    let mut rng = SplitMix64(seed);
    let namespaces: Vec<Vec<(u32, EndpointId)>> = cluster
        .pods_by_namespace
        .iter()
        .map(|pods| {
            pods.iter()
                .map(|(name, addr)| {
                    let id = compiled
                        .endpoint(name)
                        .unwrap_or_else(|| panic!("pod {name} has no endpoint"));
                    (*addr, id)
                })
                .collect()
        })
        .collect();
    // Every pod with its namespace: a probe's source is a pod drawn uniformly, so traffic
    // follows where the pods are.
    let all: Vec<(usize, (u32, EndpointId))> = namespaces
        .iter()
        .enumerate()
        .flat_map(|(n, pods)| pods.iter().map(move |&p| (n, p)))
        .collect();
    let external = |rng: &mut SplitMix64| {
        EXTERNAL.0 + rng.below(u64::from(EXTERNAL.1 - EXTERNAL.0) + 1) as u32
    };
    let other = |rng: &mut SplitMix64, pods: &[(u32, EndpointId)], not: u32| loop {
        let p = *rng.pick(pods);
        if p.0 != not {
            break p;
        }
    };
    (0..count)
        .map(|_| {
            let kind = rng.below(100);
            let (n, from) = *rng.pick(&all);
            let (src, dst) = if kind < 72 && namespaces[n].len() >= 2 {
                (Some(from), Some(other(&mut rng, &namespaces[n], from.0)))
            } else if kind < 87 {
                let (_, to) = loop {
                    let to = *rng.pick(&all);
                    if to.1 .0 != from.0 {
                        break to;
                    }
                };
                (Some(from), Some(to))
            } else if kind < 95 {
                (None, Some(from))
            } else {
                (Some(from), None)
            };
            let (proto, dport) = if rng.chance(0.5) && !cluster.rule_ports.is_empty() {
                let &(proto, lo, hi) = rng.pick(&cluster.rule_ports);
                (proto, rng.range(u64::from(lo), u64::from(hi)) as u16)
            } else {
                let proto = if rng.chance(0.8) { 6 } else { 17 };
                (proto, rng.range(1, 65535) as u16)
            };
            let src_addr = src.map_or_else(|| external(&mut rng), |(a, _)| a);
            let dst_addr = dst.map_or_else(|| external(&mut rng), |(a, _)| a);
            Probe {
                key: FlowKey {
                    src: FlowKey::map_v4(src_addr.to_be_bytes()),
                    dst: FlowKey::map_v4(dst_addr.to_be_bytes()),
                    src_port: rng.range(32768, 60999) as u16,
                    dst_port: dport,
                    proto,
                },
                src: src.map(|(_, id)| id),
                dst: dst.map(|(_, id)| id),
            }
        })
        .collect()
}

/// Pods get addresses from here (198.18.0.0 – 198.19.127.255).
const POD_POOL: (u32, u32) = (0xc612_0000, 0xc613_7fff);
/// "Outside the cluster": 198.19.128.0/17.
const EXTERNAL: (u32, u32) = (0xc613_8000, 0xc613_ffff);
/// IPAM block per node, as Calico's default /26.
const BLOCK_SIZE: u32 = 64;

/// An application a namespace may run: its labels and containerPorts.
struct App {
    name: &'static str,
    tier: &'static str,
    ports: &'static [(Option<&'static str>, u16, Protocol)],
}

const APPS: [App; 6] = [
    App {
        name: "web",
        tier: "frontend",
        ports: &[
            (Some("http"), 8080, Protocol::TCP),
            (Some("metrics"), 9090, Protocol::TCP),
        ],
    },
    App {
        name: "api",
        tier: "backend",
        ports: &[
            (Some("https"), 8443, Protocol::TCP),
            (Some("grpc"), 50051, Protocol::TCP),
            (Some("metrics"), 9090, Protocol::TCP),
        ],
    },
    App {
        name: "worker",
        tier: "backend",
        ports: &[(Some("metrics"), 9090, Protocol::TCP)],
    },
    App {
        name: "db",
        tier: "data",
        ports: &[(Some("postgres"), 5432, Protocol::TCP)],
    },
    App {
        name: "cache",
        tier: "data",
        ports: &[(None, 6379, Protocol::TCP)],
    },
    App {
        name: "batch",
        tier: "backend",
        ports: &[],
    },
];

/// The system namespaces: no rules of their own, but peers of everyone's. Two pods each,
/// labelled `key: value`.
struct SystemApp {
    namespace: &'static str,
    key: &'static str,
    value: &'static str,
    ports: &'static [(Option<&'static str>, u16, Protocol)],
}

const SYSTEM_APPS: [SystemApp; 3] = [
    SystemApp {
        namespace: "kube-system",
        key: "k8s-app",
        value: "kube-dns",
        ports: &[
            (Some("dns"), 53, Protocol::UDP),
            (Some("dns-tcp"), 53, Protocol::TCP),
            (Some("metrics"), 9153, Protocol::TCP),
        ],
    },
    SystemApp {
        namespace: "monitoring",
        key: "app",
        value: "prometheus",
        ports: &[(Some("web"), 9090, Protocol::TCP)],
    },
    SystemApp {
        namespace: "ingress",
        key: "app",
        value: "ingress-nginx",
        ports: &[
            (Some("http"), 80, Protocol::TCP),
            (Some("https"), 443, Protocol::TCP),
        ],
    },
];

/// External ranges the `security` tier denies both ways (inside [`EXTERNAL`]).
const BLOCKLIST: [(Ipv4Addr, u8); 4] = [
    (Ipv4Addr::new(198, 19, 240, 0), 24),
    (Ipv4Addr::new(198, 19, 241, 0), 24),
    (Ipv4Addr::new(198, 19, 242, 0), 23),
    (Ipv4Addr::new(198, 19, 244, 0), 22),
];

/// A policy a template produced, before it is counted and truncated.
enum Drafted {
    K8s {
        name: String,
        pod_selector: Selector,
        ingress_type: bool,
        rules: Vec<(bool, K8sRule)>,
    },
    Weir {
        name: String,
        tier: &'static str,
        order: f64,
        selector: Selector,
        rules: Vec<(bool, Rule)>,
    },
}

struct Generator {
    target: usize,
    rng: SplitMix64,
    objects: Vec<Resource>,
    rules: usize,
    rule_ports: BTreeSet<(u8, u16, u16)>,
    pods_by_namespace: Vec<Vec<(NamespacedName, u32)>>,
    pods_by_node: Vec<Vec<(NamespacedName, u32)>>,
    nodes: Vec<(u32, u32)>,
    next_block: u32,
    policies: [usize; 3],
}

impl Generator {
    fn new(target: usize, seed: u64) -> Self {
        Generator {
            target,
            rng: SplitMix64(seed ^ (target as u64).wrapping_mul(0x9e37_79b9)),
            objects: Vec::new(),
            rules: 0,
            rule_ports: BTreeSet::new(),
            pods_by_namespace: Vec::new(),
            pods_by_node: Vec::new(),
            nodes: Vec::new(),
            next_block: POD_POOL.0,
            policies: [0; 3],
        }
    }

    fn run(mut self) -> Result<GeneratedCluster, PolicyBenchError> {
        let namespaces = (self.target / 20).max(1);
        // A handful of pods per namespace, about 40 per node.
        let nodes = ((namespaces * 11 / 2 + 6) / 40).max(2);
        self.nodes = vec![(0, 0); nodes];
        self.pods_by_node = vec![Vec::new(); nodes];

        // The system namespaces: no rules of their own, but peers of everyone's.
        for app in &SYSTEM_APPS {
            self.namespace(app.namespace, &[("purpose", "system")]);
            let mut pods = Vec::new();
            for i in 0..2 {
                pods.push(self.pod(
                    app.namespace,
                    &format!("{}-{i}", app.value),
                    &[(app.key, app.value)],
                    app.ports,
                )?);
            }
            self.pods_by_namespace.push(pods);
        }

        let global = (self.target / 10).clamp(1, 10).min(self.target);
        let global_budget = self.global_policies(global);
        let per_namespace = self.target - global_budget;
        for n in 0..namespaces {
            let budget = per_namespace / namespaces + usize::from(n < per_namespace % namespaces);
            self.app_namespace(n, budget)?;
        }

        let pods = self.pods_by_namespace.iter().map(Vec::len).sum();
        let objects = self
            .objects
            .into_iter()
            .enumerate()
            .map(|(i, resource)| Object {
                origin: Origin {
                    source: "generated".into(),
                    document: i + 1,
                    item: None,
                },
                resource,
            })
            .collect();
        let cluster = Cluster::from_objects(objects).map_err(|errors| {
            PolicyBenchError::Generator(
                errors
                    .iter()
                    .take(3)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(GeneratedCluster {
            cluster,
            rules: self.rules,
            namespaces,
            pods,
            nodes,
            policies: self.policies,
            rule_ports: self.rule_ports.into_iter().collect(),
            pods_by_namespace: self.pods_by_namespace,
            pods_by_node: self.pods_by_node,
        })
    }

    fn namespace(&mut self, name: &str, labels: &[(&str, &str)]) {
        let mut all = labels_of(labels);
        all.insert(NAMESPACE_NAME_LABEL.into(), name.into());
        self.objects.push(Resource::Namespace(Namespace {
            name: name.into(),
            labels: all,
        }));
    }

    /// A pod on a random node, addressed from the node's IPAM block.
    fn pod(
        &mut self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        ports: &[(Option<&str>, u16, Protocol)],
    ) -> Result<(NamespacedName, u32), PolicyBenchError> {
        let node = self.rng.below(self.nodes.len() as u64) as usize;
        let (next, end) = &mut self.nodes[node];
        if next == end {
            if self.next_block + BLOCK_SIZE - 1 > POD_POOL.1 {
                return Err(PolicyBenchError::Config(format!(
                    "{} rules need more pods than 198.18.0.0-198.19.127.255 holds in /26 \
                     blocks; use fewer rules",
                    self.target
                )));
            }
            *next = self.next_block;
            *end = self.next_block + BLOCK_SIZE;
            self.next_block += BLOCK_SIZE;
        }
        let addr = *next;
        *next += 1;
        self.objects.push(Resource::Pod(Pod {
            namespace: namespace.into(),
            name: name.into(),
            labels: labels_of(labels),
            ips: vec![IpAddr::V4(Ipv4Addr::from(addr))],
            container_ports: ports
                .iter()
                .map(|&(name, port, protocol)| ContainerPort {
                    name: name.map(Into::into),
                    port,
                    protocol,
                })
                .collect(),
            service_account: "default".into(),
            host_network: false,
            node_name: None,
            annotations: Default::default(),
        }));
        let pod = (NamespacedName::new(namespace, name), addr);
        self.pods_by_node[node].push(pod.clone());
        Ok(pod)
    }

    /// The `security` tier and its GlobalNetworkPolicies, truncated to `budget` rules;
    /// returns the rules placed.
    fn global_policies(&mut self, budget: usize) -> usize {
        self.objects.push(Resource::Tier(Tier {
            name: "security".into(),
            order: Some(100.0),
            default_action: TierDefaultAction::Pass,
        }));
        self.objects.push(Resource::Tier(Tier {
            name: "platform".into(),
            order: Some(200.0),
            default_action: TierDefaultAction::Pass,
        }));
        let blocklist: Vec<IpNet> = BLOCKLIST.iter().map(|&(a, l)| v4net(a, l)).collect();
        let mut guard = vec![
            (
                false,
                rule(
                    Action::Deny,
                    None,
                    EntityRule::default(),
                    EntityRule {
                        nets: blocklist.clone(),
                        ..EntityRule::default()
                    },
                ),
            ),
            (
                true,
                rule(
                    Action::Deny,
                    None,
                    EntityRule {
                        nets: blocklist,
                        ..EntityRule::default()
                    },
                    EntityRule::default(),
                ),
            ),
            (
                false,
                rule(
                    Action::Deny,
                    Some(Protocol::TCP),
                    EntityRule::default(),
                    self.dst_ports(Protocol::TCP, &[(25, 25), (465, 465), (587, 587)]),
                ),
            ),
            (
                true,
                rule(
                    Action::Allow,
                    Some(Protocol::TCP),
                    EntityRule {
                        namespace_selector: Some(eq(NAMESPACE_NAME_LABEL, "monitoring")),
                        selector: Some(eq("app", "prometheus")),
                        ..EntityRule::default()
                    },
                    self.dst_ports(Protocol::TCP, &[(9090, 9090), (9153, 9153)]),
                ),
            ),
            (
                false,
                rule(
                    Action::Pass,
                    None,
                    EntityRule::default(),
                    EntityRule::default(),
                ),
            ),
            (
                true,
                rule(
                    Action::Pass,
                    None,
                    EntityRule::default(),
                    EntityRule::default(),
                ),
            ),
        ];
        let dns = vec![
            (
                true,
                rule(
                    Action::Allow,
                    Some(Protocol::UDP),
                    EntityRule::default(),
                    self.dst_ports(Protocol::UDP, &[(53, 53)]),
                ),
            ),
            (
                true,
                rule(
                    Action::Allow,
                    Some(Protocol::TCP),
                    EntityRule::default(),
                    self.dst_ports(Protocol::TCP, &[(53, 53)]),
                ),
            ),
        ];
        let mut left = budget;
        guard.truncate(left);
        left -= guard.len();
        let mut dns = dns;
        dns.truncate(left);
        left -= dns.len();
        let mut placed = 0;
        for (name, namespace_selector, selector, rules) in [
            ("security-guard", Selector::All, Selector::All, guard),
            (
                "allow-cluster-dns",
                eq(NAMESPACE_NAME_LABEL, "kube-system"),
                eq("k8s-app", "kube-dns"),
                dns,
            ),
        ] {
            if rules.is_empty() {
                continue;
            }
            placed += rules.len();
            let spec = self.spec("security", 100.0, selector, rules);
            self.objects
                .push(Resource::GlobalNetworkPolicy(GlobalNetworkPolicy {
                    name: name.into(),
                    namespace_selector,
                    spec,
                }));
            self.policies[2] += 1;
        }
        debug_assert_eq!(budget - left, placed);
        self.rules += placed;
        placed
    }

    /// Application namespace `n`: its pods, then policies worth `budget` rules.
    fn app_namespace(&mut self, n: usize, budget: usize) -> Result<(), PolicyBenchError> {
        let ns = format!("app-{n:05}");
        let team = format!("team-{}", n / 4);
        let env = ["prod", "staging", "dev"][n % 3];
        self.namespace(&ns, &[("team", &team), ("env", env)]);
        let mut apps: Vec<usize> = (0..APPS.len()).collect();
        crate::rng::shuffle(&mut apps, self.rng.next_u64());
        apps.truncate(self.rng.range(2, 4) as usize);
        let mut pods = Vec::new();
        for (k, &a) in apps.iter().enumerate() {
            let app = &APPS[a];
            let replicas = self.rng.range(if k == 0 { 2 } else { 1 }, 3);
            for r in 0..replicas {
                let version = if r % 2 == 0 { "v1" } else { "v2" };
                pods.push(self.pod(
                    &ns,
                    &format!("{}-{r}", app.name),
                    &[("app", app.name), ("tier", app.tier), ("version", version)],
                    app.ports,
                )?);
            }
        }
        self.pods_by_namespace.push(pods);
        let present: Vec<&str> = apps.iter().map(|&a| APPS[a].name).collect();

        // Most namespaces deny ingress by default; the first always does, so that the
        // smallest cluster is isolated like the others.
        if self.rng.chance(0.7) || n == 0 {
            self.add_k8s(
                &ns,
                "default-deny-ingress".into(),
                Selector::All,
                true,
                vec![],
                &mut 0,
            );
        }
        let mut left = budget;
        let mut templates: Vec<usize> = (0..TEMPLATES).collect();
        crate::rng::shuffle(&mut templates, self.rng.next_u64());
        let mut round = 0;
        while left > 0 {
            for &t in &templates {
                if left == 0 {
                    break;
                }
                if let Some(draft) = self.template(t, round, &team, &present) {
                    self.place(&ns, draft, &mut left);
                }
            }
            round += 1;
        }
        Ok(())
    }

    /// Counts and truncates a drafted policy to the budget left, then adds it.
    fn place(&mut self, ns: &str, draft: Drafted, left: &mut usize) {
        match draft {
            Drafted::K8s {
                name,
                pod_selector,
                ingress_type,
                mut rules,
            } => {
                rules.truncate(*left);
                self.add_k8s(ns, name, pod_selector, ingress_type, rules, left);
            }
            Drafted::Weir {
                name,
                tier,
                order,
                selector,
                mut rules,
            } => {
                rules.truncate(*left);
                *left -= rules.len();
                self.rules += rules.len();
                let spec = self.spec(tier, order, selector, rules);
                self.objects.push(Resource::NetworkPolicy(NetworkPolicy {
                    namespace: ns.into(),
                    name,
                    spec,
                }));
                self.policies[1] += 1;
            }
        }
    }

    fn add_k8s(
        &mut self,
        ns: &str,
        name: String,
        pod_selector: Selector,
        ingress_type: bool,
        rules: Vec<(bool, K8sRule)>,
        left: &mut usize,
    ) {
        *left -= rules.len();
        self.rules += rules.len();
        let (ingress, egress): (Vec<_>, Vec<_>) = rules.into_iter().partition(|(i, _)| *i);
        self.objects
            .push(Resource::K8sNetworkPolicy(K8sNetworkPolicy {
                namespace: ns.into(),
                name,
                pod_selector,
                types: PolicyTypes {
                    ingress: ingress_type || !ingress.is_empty(),
                    egress: !egress.is_empty(),
                },
                ingress: ingress.into_iter().map(|(_, r)| r).collect(),
                egress: egress.into_iter().map(|(_, r)| r).collect(),
            }));
        self.policies[0] += 1;
    }

    fn spec(
        &self,
        tier: &str,
        order: f64,
        selector: Selector,
        rules: Vec<(bool, Rule)>,
    ) -> PolicySpec {
        let (ingress, egress): (Vec<_>, Vec<_>) = rules.into_iter().partition(|(i, _)| *i);
        PolicySpec {
            tier: tier.into(),
            order: Some(order),
            selector,
            service_account_selector: Selector::All,
            types: PolicyTypes {
                ingress: !ingress.is_empty(),
                egress: !egress.is_empty(),
            },
            ingress: ingress.into_iter().map(|(_, r)| r).collect(),
            egress: egress.into_iter().map(|(_, r)| r).collect(),
        }
    }

    fn dst_ports(&mut self, protocol: Protocol, ranges: &[(u16, u16)]) -> EntityRule {
        for &(first, last) in ranges {
            self.rule_ports.insert((protocol.number(), first, last));
        }
        EntityRule {
            ports: ranges
                .iter()
                .map(|&(first, last)| PortMatch::Range { first, last })
                .collect(),
            ..EntityRule::default()
        }
    }
}

fn rule(
    action: Action,
    protocol: Option<Protocol>,
    source: EntityRule,
    destination: EntityRule,
) -> Rule {
    Rule {
        action,
        ip_version: None,
        protocol,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        source,
        destination,
    }
}

fn k8s_rule(peers: Vec<K8sPeer>, ports: Vec<K8sPort>) -> K8sRule {
    K8sRule {
        peers: Some(peers),
        ports: Some(ports),
    }
}

fn eq(key: &str, value: &str) -> Selector {
    Selector::Eq(key.into(), value.into())
}

fn pods_here(pods: Selector) -> K8sPeer {
    K8sPeer::Pods {
        namespaces: NamespaceScope::PolicyNamespace,
        pods,
    }
}

fn pods_in(namespaces: Selector, pods: Selector) -> K8sPeer {
    K8sPeer::Pods {
        namespaces: NamespaceScope::Selected(namespaces),
        pods,
    }
}

fn v4net(addr: Ipv4Addr, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(addr, len).expect("prefix length at most 32"))
}

fn labels_of(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_clusters_have_exactly_the_rules_asked_for_and_are_deterministic() {
        for rules in [1, 10, 37, 1000] {
            let g = generate_cluster(rules, 1).unwrap();
            assert_eq!(g.rules, rules);
            let c = &g.cluster;
            let counted: usize = c
                .k8s_policies
                .values()
                .map(|p| p.ingress.len() + p.egress.len())
                .chain(
                    c.policies
                        .values()
                        .map(|p| p.spec.ingress.len() + p.spec.egress.len()),
                )
                .chain(
                    c.global_policies
                        .values()
                        .map(|p| p.spec.ingress.len() + p.spec.egress.len()),
                )
                .sum();
            assert_eq!(counted, rules, "rules counted in the objects");
            assert!(c
                .k8s_policies
                .contains_key(&NamespacedName::new("app-00000", "default-deny-ingress")));
            for pods in &g.pods_by_namespace {
                for (_, addr) in pods {
                    assert!((POD_POOL.0..=POD_POOL.1).contains(addr));
                }
            }
        }
        let (a, b) = (
            generate_cluster(1000, 3).unwrap(),
            generate_cluster(1000, 3).unwrap(),
        );
        assert_eq!(a.cluster, b.cluster);
        assert_eq!(a.rule_ports, b.rule_ports);
        let g = generate_cluster(1000, 3).unwrap();
        assert!(g.policies.iter().all(|&n| n > 0), "{:?}", g.policies);
    }
}
