//! The policies an application namespace draws from, and the builders only they use.
//!
//! Each template is one policy a team would write for the apps of a namespace (its peers,
//! ports and actions); what varies from namespace to namespace is which of them apply, in
//! what order, and how often they repeat to reach the namespace's rule budget. They are
//! kept apart from the generator's bookkeeping (addresses, budgets, counts) because they
//! are the cluster's content, data written as code, and most of its length.

use std::net::Ipv4Addr;

use weir_control::policy::model::{
    Action, EntityRule, K8sPeer, K8sPort, K8sRule, PortMatch, Protocol, DEFAULT_TIER,
    NAMESPACE_NAME_LABEL,
};
use weir_control::policy::selector::Selector;

use super::{
    eq, k8s_rule, pods_here, pods_in, rule, v4net, Drafted, Generator, BLOCKLIST, EXTERNAL,
};

/// How many templates [`Generator::template`] knows.
pub(super) const TEMPLATES: usize = 9;

impl Generator {
    /// Template `t` for a namespace running `apps`; `None` if it does not apply there.
    pub(super) fn template(
        &mut self,
        t: usize,
        round: usize,
        team: &str,
        apps: &[&str],
    ) -> Option<Drafted> {
        let has = |a: &str| apps.contains(&a);
        let suffix = if round == 0 {
            String::new()
        } else {
            format!("-{round}")
        };
        let partner = self.partner_block();
        let k8s = |name: &str, pod_selector: Selector, ingress_type: bool, rules| {
            Some(Drafted::K8s {
                name: format!("{name}{suffix}"),
                pod_selector,
                ingress_type,
                rules,
            })
        };
        match t {
            0 if has("web") => k8s(
                "allow-web",
                eq("app", "web"),
                true,
                vec![
                    (
                        true,
                        k8s_rule(
                            vec![pods_in(
                                eq(NAMESPACE_NAME_LABEL, "ingress"),
                                eq("app", "ingress-nginx"),
                            )],
                            vec![self.named(Protocol::TCP, "http", 8080)],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![pods_here(Selector::All)],
                            vec![self.port(Protocol::TCP, 8080, 8080)],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![partner.clone()],
                            vec![self.port(Protocol::TCP, 8080, 8089)],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![pods_in(
                                eq(NAMESPACE_NAME_LABEL, "monitoring"),
                                eq("app", "prometheus"),
                            )],
                            vec![self.named(Protocol::TCP, "metrics", 9090)],
                        ),
                    ),
                ],
            ),
            1 if has("api") => k8s(
                "allow-api",
                eq("app", "api"),
                true,
                vec![
                    (
                        true,
                        k8s_rule(
                            vec![pods_here(eq("app", "web"))],
                            vec![
                                self.named(Protocol::TCP, "https", 8443),
                                self.port(Protocol::TCP, 50051, 50051),
                            ],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![pods_in(eq("team", team), eq("tier", "frontend"))],
                            vec![self.port(Protocol::TCP, 8443, 8443)],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![pods_in(
                                eq(NAMESPACE_NAME_LABEL, "monitoring"),
                                Selector::All,
                            )],
                            vec![self.port(Protocol::TCP, 9090, 9090)],
                        ),
                    ),
                ],
            ),
            2 if has("db") => k8s(
                "allow-db",
                eq("app", "db"),
                true,
                vec![
                    (false, self.dns_rule()),
                    (
                        true,
                        k8s_rule(
                            vec![pods_here(eq("tier", "backend"))],
                            vec![self.named(Protocol::TCP, "postgres", 5432)],
                        ),
                    ),
                    (
                        false,
                        k8s_rule(
                            vec![partner.clone()],
                            vec![self.port(Protocol::TCP, 5432, 5432)],
                        ),
                    ),
                ],
            ),
            3 if has("api") || has("worker") || has("batch") => k8s(
                "backend-egress",
                eq("tier", "backend"),
                false,
                vec![
                    (false, self.dns_rule()),
                    (
                        false,
                        k8s_rule(
                            vec![pods_here(eq("tier", "data"))],
                            vec![
                                self.port(Protocol::TCP, 5432, 5432),
                                self.port(Protocol::TCP, 6379, 6379),
                            ],
                        ),
                    ),
                    (
                        false,
                        k8s_rule(
                            vec![K8sPeer::IpBlock {
                                cidr: v4net(Ipv4Addr::from(EXTERNAL.0), 17),
                                except: BLOCKLIST.iter().map(|&(a, l)| v4net(a, l)).collect(),
                            }],
                            vec![self.port(Protocol::TCP, 443, 443)],
                        ),
                    ),
                    (
                        false,
                        k8s_rule(
                            vec![pods_here(eq("app", "api"))],
                            vec![self.port(Protocol::TCP, 8443, 8443)],
                        ),
                    ),
                    (
                        false,
                        k8s_rule(
                            vec![pods_in(eq("team", team), eq("app", "api"))],
                            vec![self.named(Protocol::TCP, "https", 8443)],
                        ),
                    ),
                ],
            ),
            4 if has("cache") => k8s(
                "allow-cache",
                eq("app", "cache"),
                true,
                vec![
                    (
                        true,
                        k8s_rule(
                            vec![
                                pods_here(eq("tier", "backend")),
                                pods_here(eq("app", "web")),
                            ],
                            vec![self.port(Protocol::TCP, 6379, 6379)],
                        ),
                    ),
                    (
                        true,
                        k8s_rule(
                            vec![pods_here(eq("app", "worker"))],
                            vec![self.port(Protocol::UDP, 7000, 7010)],
                        ),
                    ),
                ],
            ),
            5 => k8s(
                "allow-same-namespace",
                Selector::All,
                true,
                vec![(
                    true,
                    K8sRule {
                        peers: Some(vec![pods_here(Selector::All)]),
                        ports: None,
                    },
                )],
            ),
            6 if has("db") => {
                let rules = vec![
                    (
                        true,
                        rule(
                            Action::Deny,
                            None,
                            EntityRule {
                                nets: BLOCKLIST.iter().map(|&(a, l)| v4net(a, l)).collect(),
                                ..EntityRule::default()
                            },
                            EntityRule::default(),
                        ),
                    ),
                    (
                        true,
                        rule(
                            Action::Allow,
                            Some(Protocol::TCP),
                            EntityRule {
                                selector: Some(eq("tier", "backend")),
                                ..EntityRule::default()
                            },
                            self.dst_ports(Protocol::TCP, &[(5432, 5432)]),
                        ),
                    ),
                    (
                        true,
                        rule(
                            Action::Allow,
                            Some(Protocol::TCP),
                            EntityRule {
                                namespace_selector: Some(eq("team", team)),
                                selector: Some(eq("app", "api")),
                                ..EntityRule::default()
                            },
                            EntityRule {
                                ports: vec![self.named_match(Protocol::TCP, "postgres", 5432)],
                                ..EntityRule::default()
                            },
                        ),
                    ),
                    (
                        false,
                        rule(
                            Action::Allow,
                            Some(Protocol::UDP),
                            EntityRule::default(),
                            self.dst_ports(Protocol::UDP, &[(53, 53)]),
                        ),
                    ),
                    (
                        false,
                        rule(
                            Action::Deny,
                            None,
                            EntityRule::default(),
                            EntityRule::default(),
                        ),
                    ),
                ];
                Some(Drafted::Weir {
                    name: format!("guard-db{suffix}"),
                    tier: DEFAULT_TIER,
                    order: 500.0,
                    selector: eq("app", "db"),
                    rules,
                })
            }
            7 => {
                let K8sPeer::IpBlock { cidr, .. } = &partner else {
                    unreachable!("partner is a block")
                };
                let rules = vec![
                    (
                        true,
                        rule(
                            Action::Deny,
                            Some(Protocol::TCP),
                            EntityRule {
                                nets: vec![v4net(Ipv4Addr::from(EXTERNAL.0), 17)],
                                not_nets: vec![*cidr],
                                ..EntityRule::default()
                            },
                            self.dst_ports(Protocol::TCP, &[(22, 22)]),
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
                    (
                        false,
                        rule(
                            Action::Deny,
                            Some(Protocol::UDP),
                            EntityRule::default(),
                            self.dst_ports(Protocol::UDP, &[(1900, 1900), (5353, 5353)]),
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
                ];
                Some(Drafted::Weir {
                    name: format!("platform-baseline{suffix}"),
                    tier: "platform",
                    order: 100.0,
                    selector: Selector::All,
                    rules,
                })
            }
            8 if has("api") => {
                let K8sPeer::IpBlock { cidr, .. } = &partner else {
                    unreachable!("partner is a block")
                };
                let rules = vec![
                    (
                        true,
                        rule(
                            Action::Log,
                            None,
                            EntityRule {
                                nets: vec![v4net(Ipv4Addr::from(EXTERNAL.0), 17)],
                                ..EntityRule::default()
                            },
                            EntityRule::default(),
                        ),
                    ),
                    (
                        true,
                        rule(
                            Action::Allow,
                            Some(Protocol::TCP),
                            EntityRule {
                                selector: Some(Selector::In(
                                    "app".into(),
                                    ["web".to_string(), "worker".to_string()].into(),
                                )),
                                ..EntityRule::default()
                            },
                            self.dst_ports(Protocol::TCP, &[(8443, 8443), (50051, 50051)]),
                        ),
                    ),
                    (
                        true,
                        rule(
                            Action::Allow,
                            Some(Protocol::TCP),
                            EntityRule {
                                nets: vec![*cidr],
                                ..EntityRule::default()
                            },
                            self.dst_ports(Protocol::TCP, &[(8443, 8443)]),
                        ),
                    ),
                ];
                Some(Drafted::Weir {
                    name: format!("api-clients{suffix}"),
                    tier: DEFAULT_TIER,
                    order: 500.0,
                    selector: eq("app", "api"),
                    rules,
                })
            }
            _ => None,
        }
    }

    /// A partner's external /20 with one /24 excepted.
    fn partner_block(&mut self) -> K8sPeer {
        let block = EXTERNAL.0 + (self.rng.below(6) as u32) * 4096;
        let hole = block + (self.rng.below(16) as u32) * 256;
        K8sPeer::IpBlock {
            cidr: v4net(Ipv4Addr::from(block), 20),
            except: vec![v4net(Ipv4Addr::from(hole), 24)],
        }
    }

    fn dns_rule(&mut self) -> K8sRule {
        K8sRule {
            peers: Some(vec![pods_in(
                eq(NAMESPACE_NAME_LABEL, "kube-system"),
                eq("k8s-app", "kube-dns"),
            )]),
            ports: Some(vec![
                self.port(Protocol::UDP, 53, 53),
                self.port(Protocol::TCP, 53, 53),
            ]),
        }
    }

    fn port(&mut self, protocol: Protocol, first: u16, last: u16) -> K8sPort {
        self.rule_ports.insert((protocol.number(), first, last));
        K8sPort {
            protocol,
            port: Some(PortMatch::Range { first, last }),
        }
    }

    fn named(&mut self, protocol: Protocol, name: &str, number: u16) -> K8sPort {
        K8sPort {
            protocol,
            port: Some(self.named_match(protocol, name, number)),
        }
    }

    fn named_match(&mut self, protocol: Protocol, name: &str, number: u16) -> PortMatch {
        self.rule_ports.insert((protocol.number(), number, number));
        PortMatch::Named(name.into())
    }
}
