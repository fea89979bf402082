//! The compiled classifier against a deliberately naive evaluator.
//!
//! The naive evaluator reads the API's words literally, object by object, for every probe:
//! no address sets, no flattening, no caching. Random clusters (Kubernetes
//! NetworkPolicies with every kind of peer and port, plus tiered GlobalNetworkPolicies with
//! Allow, Deny and Pass) and every pod pair, plus outside addresses, must get the same
//! verdict from both.

use std::net::IpAddr;

use proptest::prelude::*;
use weir_control::policy::eval::{evaluate, Probe};
use weir_control::policy::load::Cluster;
use weir_control::policy::model::{
    compare_order, Action, IpFamily, K8sPeer, K8sRule, NamespaceScope, Pod, PortMatch, Protocol,
    TierDefaultAction,
};

const APPS: [&str; 3] = ["a", "b", "c"];
const TEAMS: [&str; 2] = ["red", "blue"];
const PROTOS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const PORTS: [u16; 4] = [80, 443, 8080, 9000];

fn base_yaml() -> String {
    let mut y = String::new();
    for (i, ns) in ["n0", "n1", "n2"].iter().enumerate() {
        y += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{team: {}}}}}\n---\n",
            TEAMS[i % 2]
        );
    }
    // Six pods, two per namespace; each declares the named port "svc" on a different
    // number and protocol, so named-port resolution per destination matters.
    for i in 0..6usize {
        let ns = format!("n{}", i / 2);
        let proto = PROTOS[i % 3];
        let port = PORTS[i % 4];
        y += &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: {ns}, labels: {{app: {}, tier: t{}}}}}\nspec:\n  containers:\n  - name: c\n    image: i\n    ports: [{{name: svc, containerPort: {port}, protocol: {proto}}}]\nstatus: {{podIPs: [{{ip: 198.18.{}.{}}}, {{ip: \"2001:db8::{}:{}\"}}]}}\n---\n",
            APPS[i % 3],
            i % 2,
            i / 2,
            10 + i,
            i / 2,
            10 + i
        );
    }
    y
}

/// A random Kubernetes NetworkPolicy as YAML.
fn k8s_policy() -> impl Strategy<Value = String> {
    let selector = prop_oneof![
        Just("{}".to_owned()),
        (0..3usize).prop_map(|a| format!("{{matchLabels: {{app: {}}}}}", APPS[a])),
        (0..2usize).prop_map(|t| format!(
            "{{matchExpressions: [{{key: tier, operator: NotIn, values: [t{t}]}}]}}"
        )),
        Just("{matchExpressions: [{key: app, operator: In, values: [a, b]}]}".to_owned()),
        Just("{matchExpressions: [{key: zone, operator: DoesNotExist}]}".to_owned()),
    ];
    let ns_selector = prop_oneof![
        Just("{}".to_owned()),
        (0..2usize).prop_map(|t| format!("{{matchLabels: {{team: {}}}}}", TEAMS[t])),
        Just("{matchExpressions: [{key: team, operator: Exists}]}".to_owned()),
    ];
    let peer = prop_oneof![
        selector
            .clone()
            .prop_map(|s| format!("{{podSelector: {s}}}")),
        ns_selector
            .clone()
            .prop_map(|s| format!("{{namespaceSelector: {s}}}")),
        (selector.clone(), ns_selector)
            .prop_map(|(p, n)| format!("{{podSelector: {p}, namespaceSelector: {n}}}")),
        (0..3u8, 0..24u8).prop_map(|(net, ex)| format!(
            "{{ipBlock: {{cidr: 198.18.0.0/{}, except: [198.18.{}.0/24]}}}}",
            [16, 20, 22][net as usize],
            ex % 3
        )),
        Just("{ipBlock: {cidr: \"2001:db8::/100\", except: [\"2001:db8::1:0/112\"]}}".to_owned()),
    ];
    let port = prop_oneof![
        (0..4usize).prop_map(|p| format!("{{port: {}}}", PORTS[p])),
        (0..4usize, 0..3usize)
            .prop_map(|(p, pr)| format!("{{port: {}, protocol: {}}}", PORTS[p], PROTOS[pr])),
        (0..3usize).prop_map(|pr| format!("{{port: svc, protocol: {}}}", PROTOS[pr])),
        Just("{port: svc}".to_owned()),
        (0..3usize).prop_map(|pr| format!("{{protocol: {}}}", PROTOS[pr])),
        Just("{port: 400, endPort: 8080}".to_owned()),
    ];
    let peers = prop_oneof![Just(None), prop::collection::vec(peer, 1..3).prop_map(Some),];
    let ports = prop_oneof![Just(None), prop::collection::vec(port, 1..3).prop_map(Some),];
    let rule = (peers, ports).prop_map(|(peers, ports)| {
        let mut r = String::from("{");
        if let Some(p) = peers {
            r += &format!("PEERS: [{}], ", p.join(", "));
        }
        if let Some(p) = ports {
            r += &format!("ports: [{}]", p.join(", "));
        }
        r + "}"
    });
    let types = prop_oneof![
        Just(""),
        Just("  policyTypes: [Ingress]\n"),
        Just("  policyTypes: [Egress]\n"),
        Just("  policyTypes: [Ingress, Egress]\n"),
    ];
    (
        0..3usize,
        selector,
        types,
        prop::collection::vec(rule.clone(), 0..3),
        prop::collection::vec(rule, 0..3),
        any::<bool>(),
    )
        .prop_map(|(ns, sel, types, ingress, egress, with_egress)| {
            let mut spec = format!("  podSelector: {sel}\n{types}");
            spec += &format!(
                "  ingress: [{}]\n",
                ingress.join(", ").replace("PEERS", "from")
            );
            if with_egress {
                spec += &format!(
                    "  egress: [{}]\n",
                    egress.join(", ").replace("PEERS", "to")
                );
            }
            (ns, spec)
        })
        .prop_map(|(ns, spec)| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: NAME, namespace: n{ns}}}\nspec:\n{spec}---\n"
            )
        })
}

/// A random GlobalNetworkPolicy in tier `t1` or `default`.
fn global_policy() -> impl Strategy<Value = String> {
    let action = prop_oneof![Just("Allow"), Just("Deny"), Just("Pass")];
    let entity = prop_oneof![
        Just(String::new()),
        (0..3usize).prop_map(|a| format!("source: {{selector: app == '{}'}}", APPS[a])),
        (0..2usize).prop_map(|t| format!("source: {{namespaceSelector: team == '{}'}}", TEAMS[t])),
        (0..3u8).prop_map(|n| format!("source: {{nets: [198.18.{n}.0/24]}}")),
        (0..3u8).prop_map(|n| format!("destination: {{notNets: [198.18.{n}.0/24]}}")),
        (0..4usize).prop_map(|p| format!("protocol: TCP, destination: {{ports: [{}]}}", PORTS[p])),
        Just("protocol: UDP".to_owned()),
    ];
    let rule = (action, entity).prop_map(|(a, e)| {
        if e.is_empty() {
            format!("{{action: {a}}}")
        } else {
            format!("{{action: {a}, {e}}}")
        }
    });
    (
        any::<bool>(),
        0..3u8,
        (0..3usize),
        prop::collection::vec(rule.clone(), 0..3),
        prop::collection::vec(rule, 0..3),
        0..3u8,
    )
        .prop_map(|(in_t1, order, app, ingress, egress, types)| {
            let tier = if in_t1 { "t1" } else { "default" };
            let (names, has_in, has_out) =
                [("[Ingress]", true, false), ("[Egress]", false, true), ("[Ingress, Egress]", true, true)]
                    [types as usize];
            let mut y = format!(
                "apiVersion: weir.dev/v1\nkind: GlobalNetworkPolicy\nmetadata: {{name: NAME}}\nspec:\n  tier: {tier}\n  order: {order}\n  selector: app != '{}'\n  types: {names}\n",
                APPS[app]
            );
            if has_in {
                y += &format!("  ingress: [{}]\n", ingress.join(", "));
            }
            if has_out {
                y += &format!("  egress: [{}]\n", egress.join(", "));
            }
            y + "---\n"
        })
}

fn cluster_yaml() -> impl Strategy<Value = (String, bool)> {
    (
        prop::collection::vec(k8s_policy(), 0..4),
        prop::collection::vec(global_policy(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(k8s, global, t1_pass)| {
            let mut y = base_yaml();
            y += &format!(
                "apiVersion: weir.dev/v1\nkind: Tier\nmetadata: {{name: t1}}\nspec: {{order: 10, defaultAction: {}}}\n---\n",
                if t1_pass { "Pass" } else { "Deny" }
            );
            for (i, p) in k8s.iter().enumerate() {
                y += &p.replace("NAME", &format!("k{i}"));
            }
            for (i, p) in global.iter().enumerate() {
                y += &p.replace("NAME", &format!("g{i}"));
            }
            (y, t1_pass)
        })
}

/// A probe endpoint for the naive evaluator.
#[derive(Clone, Copy)]
struct End<'a> {
    ip: IpAddr,
    pod: Option<&'a Pod>,
}

fn ns_labels<'a>(c: &'a Cluster, pod: &Pod) -> &'a weir_control::policy::selector::Labels {
    &c.namespaces[&pod.namespace].labels
}

/// Does a Kubernetes rule admit traffic from/to `remote`, with `local` the selected pod?
fn k8s_rule_admits(
    c: &Cluster,
    ns: &str,
    rule: &K8sRule,
    remote: End<'_>,
    dst: End<'_>,
    proto: Protocol,
    port: u16,
) -> bool {
    let peer_ok = match &rule.peers {
        None => true,
        Some(peers) => peers.iter().any(|peer| match peer {
            K8sPeer::IpBlock { cidr, except } => {
                cidr.contains(&remote.ip) && !except.iter().any(|e| e.contains(&remote.ip))
            }
            K8sPeer::Pods { namespaces, pods } => remote.pod.is_some_and(|r| {
                let ns_ok = match namespaces {
                    NamespaceScope::PolicyNamespace => r.namespace == ns,
                    NamespaceScope::Selected(s) => s.matches(ns_labels(c, r)),
                };
                ns_ok && pods.matches(&r.labels)
            }),
        }),
    };
    let port_ok = match &rule.ports {
        None => true,
        Some(ports) => ports.iter().any(|p| {
            p.protocol == proto
                && match &p.port {
                    None => true,
                    Some(PortMatch::Range { first, last }) => (*first..=*last).contains(&port),
                    Some(PortMatch::Named(n)) => {
                        dst.pod.and_then(|d| d.named_port(n, proto)) == Some(port)
                    }
                }
        }),
    };
    peer_ok && port_ok
}

/// What a weir.dev rule's conditions (the subset generated above) say.
fn weir_rule_matches(
    c: &Cluster,
    rule: &weir_control::policy::model::Rule,
    src: End<'_>,
    dst: End<'_>,
    proto: Protocol,
    port: u16,
) -> bool {
    if rule.protocol.is_some_and(|p| p != proto) {
        return false;
    }
    let s = &rule.source;
    if !s.nets.is_empty() && !s.nets.iter().any(|n| n.contains(&src.ip)) {
        return false;
    }
    if s.selector.is_some() || s.namespace_selector.is_some() {
        let Some(pod) = src.pod else { return false };
        if s.selector
            .as_ref()
            .is_some_and(|sel| !sel.matches(&pod.labels))
        {
            return false;
        }
        if s.namespace_selector
            .as_ref()
            .is_some_and(|sel| !sel.matches(ns_labels(c, pod)))
        {
            return false;
        }
    }
    let d = &rule.destination;
    if d.not_nets.iter().any(|n| n.contains(&dst.ip)) {
        return false;
    }
    if !d.ports.is_empty() {
        let hit = d.ports.iter().any(|p| match p {
            PortMatch::Range { first, last } => (*first..=*last).contains(&port),
            PortMatch::Named(_) => unreachable!("not generated"),
        });
        if !hit {
            return false;
        }
    }
    true
}

/// One policy's decision for the probe: a step, or `None` if no rule matched.
type Decider<'a> = Box<dyn Fn() -> Option<Step> + 'a>;

enum Step {
    Allow,
    Deny,
    NextTier,
}

/// The verdict of `local`'s policies in one direction, read literally.
fn naive_direction(
    c: &Cluster,
    local: &Pod,
    ingress: bool,
    src: End<'_>,
    dst: End<'_>,
    proto: Protocol,
    port: u16,
) -> bool {
    let remote = if ingress { src } else { dst };
    for tier in c.ordered_tiers() {
        // (order, name, step function) of every policy of this tier that selects `local`.
        let mut policies: Vec<(Option<f64>, String, Decider<'_>)> = Vec::new();
        if tier.name == "default" {
            for (name, p) in &c.k8s_policies {
                let applies = if ingress {
                    p.types.ingress
                } else {
                    p.types.egress
                };
                if p.namespace != local.namespace
                    || !applies
                    || !p.pod_selector.matches(&local.labels)
                {
                    continue;
                }
                let rules = if ingress { &p.ingress } else { &p.egress };
                let ns = p.namespace.clone();
                policies.push((
                    Some(1000.0),
                    name.to_string(),
                    Box::new(move || {
                        rules
                            .iter()
                            .any(|r| k8s_rule_admits(c, &ns, r, remote, dst, proto, port))
                            .then_some(Step::Allow)
                    }),
                ));
            }
        }
        for (name, p) in &c.global_policies {
            let applies = if ingress {
                p.spec.types.ingress
            } else {
                p.spec.types.egress
            };
            if p.spec.tier != tier.name || !applies || !p.spec.selector.matches(&local.labels) {
                continue;
            }
            let rules = if ingress {
                &p.spec.ingress
            } else {
                &p.spec.egress
            };
            policies.push((
                p.spec.order,
                name.clone(),
                Box::new(move || {
                    for r in rules {
                        if weir_rule_matches(c, r, src, dst, proto, port) {
                            return match r.action {
                                Action::Allow => Some(Step::Allow),
                                Action::Deny => Some(Step::Deny),
                                Action::Pass => Some(Step::NextTier),
                                Action::Log => continue,
                            };
                        }
                    }
                    None
                }),
            ));
        }
        if policies.is_empty() {
            continue;
        }
        policies.sort_by(|a, b| compare_order((a.0, &a.1), (b.0, &b.1)));
        let mut step = None;
        for (_, _, decide) in &policies {
            step = decide();
            if step.is_some() {
                break;
            }
        }
        match step {
            Some(Step::Allow) => return true,
            Some(Step::Deny) => return false,
            Some(Step::NextTier) => continue,
            None => match tier.default_action {
                TierDefaultAction::Deny => return false,
                TierDefaultAction::Pass => continue,
            },
        }
    }
    true
}

fn naive(c: &Cluster, src: End<'_>, dst: End<'_>, proto: Protocol, port: u16) -> bool {
    if let (Some(a), Some(b)) = (src.pod, dst.pod) {
        if a.namespace == b.namespace && a.name == b.name {
            return true;
        }
    }
    let egress = src
        .pod
        .is_none_or(|p| naive_direction(c, p, false, src, dst, proto, port));
    let ingress = dst
        .pod
        .is_none_or(|p| naive_direction(c, p, true, src, dst, proto, port));
    egress && ingress
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn compiled_classifier_agrees_with_the_naive_evaluator((yaml, _) in cluster_yaml(), v6 in any::<bool>()) {
        let cluster = Cluster::from_sources([("gen.yaml", yaml.as_str())])
            .map_err(|e| TestCaseError::fail(format!("{e:?}\n{yaml}")))?;
        let family = if v6 { IpFamily::V6 } else { IpFamily::V4 };
        let pods: Vec<&Pod> = cluster.pods.values().collect();
        let outside: Vec<IpAddr> = if v6 {
            vec!["2001:db8::1:99".parse().unwrap(), "2001:db8:5::1".parse().unwrap()]
        } else {
            vec!["198.18.1.99".parse().unwrap(), "198.19.0.1".parse().unwrap()]
        };
        let mut ends: Vec<(String, End<'_>)> = pods
            .iter()
            .map(|p| (format!("{}/{}", p.namespace, p.name), End { ip: p.ip(family).unwrap(), pod: Some(*p) }))
            .collect();
        ends.extend(outside.iter().map(|ip| (ip.to_string(), End { ip: *ip, pod: None })));
        let mut probes = Vec::new();
        let mut expected = Vec::new();
        for (from, src) in &ends {
            for (to, dst) in &ends {
                if src.pod.is_none() && dst.pod.is_none() {
                    continue;
                }
                for (proto, port) in [("TCP", 80u16), ("UDP", 443), ("SCTP", 8080), ("TCP", 9000), ("TCP", 5000)] {
                    probes.push(Probe {
                        from: from.clone(),
                        to: to.clone(),
                        port: Some(u32::from(port)),
                        src_port: None,
                        code: None,
                        protocol: Some(serde_json::Value::String(proto.to_owned())),
                    });
                    let p = Protocol::from_name(proto).unwrap();
                    expected.push(if naive(&cluster, *src, *dst, p, port) { "allow" } else { "deny" });
                }
            }
        }
        let report = evaluate(&cluster, &probes, family, "gen").unwrap();
        for (i, (got, want)) in report.verdicts.iter().zip(&expected).enumerate() {
            prop_assert_eq!(
                got, want,
                "probe {} {} -> {} {:?} {:?}: {}\n{}",
                i, probes[i].from, probes[i].to, probes[i].protocol, probes[i].port,
                report.explanations[i], yaml
            );
        }
    }
}
