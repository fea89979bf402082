//! Compiled policy programs: for one endpoint and one direction, the ordered rules of every
//! tier that applies to it, with selectors already resolved to address sets and named
//! ports to numbers (or to address+port sets). Workers only evaluate; all the work that can
//! be done once is done by the control plane when it compiles.
//!
//! Evaluation (Calico's tiered model, which Kubernetes NetworkPolicy semantics map onto):
//! tiers run in order; within a tier the rules of the applicable policies run in order and
//! the first match decides — `Allow` and `Deny` end the evaluation, `Pass` skips to the next
//! tier, `Log` records and continues. A tier whose policies matched nothing ends with its
//! default action (`Deny`, or `Pass` to the next tier). After the last tier (all passed),
//! the packet is allowed, as it is for an endpoint no policy selects at all.
//!
//! A program holds only the policies that select its endpoint, so the cost of a lookup
//! depends on the endpoint's own rules, not on how many rules the cluster has.

use crate::flow::FlowKey;
use crate::policy::index::Index;
use crate::policy::netset::NetSet;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    /// Skip the rest of this tier; continue with the next one.
    Pass,
    /// Record the packet and continue with the next rule.
    Log,
}

/// The outcome of a classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

/// How a tier ends when none of its rules matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierEnd {
    Deny,
    Pass,
}

/// Index of a rule's description in `PolicyTables::rules` (tier, policy, rule number).
pub type RuleId = u32;
/// Index of an address set in `PolicyTables::nets`.
pub type NetSetId = u32;
/// An (address, protocol, port) set: the container ports that carry a name, with their
/// pods' addresses (in [`FlowKey::map_ip`] form).
pub type NamedPorts = rustc_hash::FxHashSet<([u8; 16], u8, u16)>;

/// Index of an address+port set in `PolicyTables::named_ports`.
pub type PortSetId = u32;

/// Port conditions: inclusive ranges, plus optionally named ports resolved to the
/// (address, protocol, port) triples of the pods that declare them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PortMatch {
    pub ranges: Vec<(u16, u16)>,
    pub named: Option<PortSetId>,
}

impl PortMatch {
    /// Whether there is any condition.
    pub fn is_any(&self) -> bool {
        self.ranges.is_empty() && self.named.is_none()
    }
}

/// ICMP type and optional code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpMatch {
    pub ty: u8,
    pub code: Option<u8>,
}

/// Everything a rule can test; every present condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Match {
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    /// 4 or 6.
    pub ip_version: Option<u8>,
    pub src_nets: Option<NetSetId>,
    pub not_src_nets: Option<NetSetId>,
    pub dst_nets: Option<NetSetId>,
    pub not_dst_nets: Option<NetSetId>,
    pub src_ports: PortMatch,
    pub not_src_ports: PortMatch,
    pub dst_ports: PortMatch,
    pub not_dst_ports: PortMatch,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub matches: Match,
    pub action: Action,
    pub id: RuleId,
}

/// One tier's slice of a program.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tier {
    /// Rules of the applicable policies, in policy then rule order.
    pub rules: Vec<Rule>,
    pub end: TierEnd,
    /// Describes the tier's end, for explanations.
    pub end_id: RuleId,
}

/// The program of one endpoint in one direction: its tiers, and the decision structure
/// built from them (see `index`). Endpoints with the same policies share one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    tiers: Vec<Tier>,
    index: Index,
    /// At most [`SCAN_RULES`] rules: testing them in turn is cheaper than the five field
    /// lookups of the decision structure.
    small: bool,
}

/// Programs with at most this many rules are classified by testing the rules in turn.
pub const SCAN_RULES: usize = 3;

/// The address sets and port sets programs refer to.
#[derive(Debug, Clone, Default)]
pub struct Sets {
    pub nets: Vec<NetSet>,
    /// Shared: a compilation keeps the sets that did not change (a named-port set can hold
    /// an entry per pod of the cluster).
    pub named_ports: Vec<std::sync::Arc<NamedPorts>>,
}

/// The result of a classification: the verdict, the rule (or tier end) that decided it,
/// and the `Log` rules passed on the way (at most [`MAX_LOGGED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// `None`: no tier applied, or every tier passed.
    pub rule: Option<RuleId>,
    pub logged: [Option<RuleId>; MAX_LOGGED],
}

/// How many `Log` hits one decision records.
pub const MAX_LOGGED: usize = 2;

impl Default for Program {
    /// A program without tiers: everything is allowed.
    fn default() -> Self {
        Program::new(Vec::new(), &Sets::default())
    }
}

impl Program {
    /// The program of `tiers`, whose rules refer to `sets`.
    pub fn new(tiers: Vec<Tier>, sets: &Sets) -> Program {
        let index = Index::build(&tiers, sets);
        let small = tiers.iter().map(|t| t.rules.len()).sum::<usize>() <= SCAN_RULES;
        Program {
            tiers,
            index,
            small,
        }
    }

    /// The tiers, in evaluation order.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// Classifies the packet `key` (see `flow` for the byte order) through the decision
    /// structure: the cost does not grow with the number of rules.
    #[inline]
    pub fn classify(&self, key: &FlowKey, sets: &Sets) -> Decision {
        if self.small {
            self.classify_by_scan(key, sets)
        } else {
            self.index.classify(&self.tiers, key, sets)
        }
    }

    /// Classifies through the decision structure whatever the program's size.
    pub fn classify_indexed(&self, key: &FlowKey, sets: &Sets) -> Decision {
        self.index.classify(&self.tiers, key, sets)
    }

    /// See [`Index::warm`].
    #[inline]
    pub fn warm(&self) -> u32 {
        self.index.warm()
    }

    /// Heap bytes of the decision structure (the tiers not counted).
    pub fn index_bytes(&self) -> usize {
        self.index.memory_bytes()
    }

    /// Address intervals in the decision structure.
    pub fn address_intervals(&self) -> usize {
        self.index.address_intervals()
    }

    /// Classifies `key` by testing the rules one after another: the definition that the
    /// decision structure must agree with (tests hold them against each other).
    pub fn classify_by_scan(&self, key: &FlowKey, sets: &Sets) -> Decision {
        let mut logged = [None; MAX_LOGGED];
        let mut n_logged = 0;
        for tier in &self.tiers {
            let mut passed = false;
            for rule in &tier.rules {
                if !rule.matches.test(key, sets) {
                    continue;
                }
                match rule.action {
                    Action::Allow => {
                        return Decision {
                            verdict: Verdict::Allow,
                            rule: Some(rule.id),
                            logged,
                        }
                    }
                    Action::Deny => {
                        return Decision {
                            verdict: Verdict::Deny,
                            rule: Some(rule.id),
                            logged,
                        }
                    }
                    Action::Pass => {
                        passed = true;
                        break;
                    }
                    Action::Log => {
                        if n_logged < MAX_LOGGED {
                            logged[n_logged] = Some(rule.id);
                            n_logged += 1;
                        }
                    }
                }
            }
            if !passed && tier.end == TierEnd::Deny {
                return Decision {
                    verdict: Verdict::Deny,
                    rule: Some(tier.end_id),
                    logged,
                };
            }
        }
        Decision {
            verdict: Verdict::Allow,
            rule: None,
            logged,
        }
    }

    /// Number of rules over all tiers.
    pub fn rule_count(&self) -> usize {
        self.tiers.iter().map(|t| t.rules.len()).sum()
    }
}

impl Match {
    /// Whether `key` satisfies every condition.
    #[inline]
    pub fn test(&self, key: &FlowKey, sets: &Sets) -> bool {
        let proto = key.proto;
        if self.protocol.is_some_and(|p| p != proto) || self.not_protocol == Some(proto) {
            return false;
        }
        if let Some(v) = self.ip_version {
            if (v == 4) != key.is_v4() {
                return false;
            }
        }
        let net = |id: Option<NetSetId>, addr: &[u8; 16]| {
            id.map(|i| sets.nets.get(i as usize).is_some_and(|s| s.contains(addr)))
        };
        if net(self.src_nets, &key.src) == Some(false)
            || net(self.not_src_nets, &key.src) == Some(true)
        {
            return false;
        }
        if net(self.dst_nets, &key.dst) == Some(false)
            || net(self.not_dst_nets, &key.dst) == Some(true)
        {
            return false;
        }
        let icmp = proto == 1 || proto == 58;
        if icmp {
            let (ty, code) = ((key.src_port >> 8) as u8, key.src_port as u8);
            let hit = |m: &IcmpMatch| m.ty == ty && m.code.is_none_or(|c| c == code);
            if self.icmp.as_ref().is_some_and(|m| !hit(m))
                || self.not_icmp.as_ref().is_some_and(hit)
            {
                return false;
            }
        } else if self.icmp.is_some() {
            return false;
        }
        // Ports only exist for TCP, UDP and SCTP; a port condition never matches others.
        let ported = matches!(proto, 6 | 17 | 132);
        let port_hit = |m: &PortMatch, addr: &[u8; 16], port: u16| {
            m.ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi)
                || m.named.is_some_and(|i| {
                    sets.named_ports
                        .get(i as usize)
                        .is_some_and(|s| s.contains(&(*addr, proto, port)))
                })
        };
        let required = |m: &PortMatch, addr: &[u8; 16], port: u16| {
            m.is_any() || (ported && port_hit(m, addr, port))
        };
        if !required(&self.src_ports, &key.src, key.src_port)
            || !required(&self.dst_ports, &key.dst, key.dst_port)
        {
            return false;
        }
        if !self.not_src_ports.is_any()
            && ported
            && port_hit(&self.not_src_ports, &key.src, key.src_port)
        {
            return false;
        }
        if !self.not_dst_ports.is_any()
            && ported
            && port_hit(&self.not_dst_ports, &key.dst, key.dst_port)
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            src: FlowKey::map_v4(src),
            dst: FlowKey::map_v4(dst),
            src_port: sport,
            dst_port: dport,
            proto,
        }
    }

    fn sets() -> Sets {
        let mut a = NetSet::new();
        a.insert("198.18.0.0".parse().unwrap(), 24);
        let mut named = rustc_hash::FxHashSet::default();
        named.insert((FlowKey::map_v4([198, 18, 1, 5]), 6, 8080));
        Sets {
            nets: vec![a],
            named_ports: vec![std::sync::Arc::new(named)],
        }
    }

    fn rule(m: Match, action: Action, id: RuleId) -> Rule {
        Rule {
            matches: m,
            action,
            id,
        }
    }

    #[test]
    fn first_match_decides_and_pass_skips_to_the_next_tier() {
        let s = sets();
        let from_a = Match {
            src_nets: Some(0),
            ..Match::default()
        };
        let tcp80 = Match {
            protocol: Some(6),
            dst_ports: PortMatch {
                ranges: vec![(80, 80)],
                named: None,
            },
            ..Match::default()
        };
        let p = Program::new(
            vec![
                Tier {
                    rules: vec![
                        rule(from_a.clone(), Action::Pass, 1),
                        rule(Match::default(), Action::Deny, 2),
                    ],
                    end: TierEnd::Deny,
                    end_id: 10,
                },
                Tier {
                    rules: vec![
                        rule(Match::default(), Action::Log, 3),
                        rule(tcp80, Action::Allow, 4),
                    ],
                    end: TierEnd::Deny,
                    end_id: 11,
                },
            ],
            &s,
        );
        let d = p.classify(&key([198, 18, 0, 1], [198, 18, 1, 1], 6, 1000, 80), &s);
        assert_eq!(
            (d.verdict, d.rule, d.logged[0]),
            (Verdict::Allow, Some(4), Some(3))
        );
        let d = p.classify(&key([198, 18, 0, 1], [198, 18, 1, 1], 6, 1000, 81), &s);
        assert_eq!(
            (d.verdict, d.rule),
            (Verdict::Deny, Some(11)),
            "end of tier 2"
        );
        let d = p.classify(&key([198, 18, 9, 1], [198, 18, 1, 1], 6, 1000, 80), &s);
        assert_eq!((d.verdict, d.rule), (Verdict::Deny, Some(2)));
        let passing = Program::new(
            vec![Tier {
                rules: vec![],
                end: TierEnd::Pass,
                end_id: 0,
            }],
            &s,
        );
        assert_eq!(
            passing
                .classify(&key([1, 1, 1, 1], [2, 2, 2, 2], 17, 1, 2), &s)
                .verdict,
            Verdict::Allow
        );
        assert_eq!(
            Program::default()
                .classify(&key([1, 1, 1, 1], [2, 2, 2, 2], 17, 1, 2), &s)
                .rule,
            None
        );
    }

    #[test]
    fn conditions_and_negations() {
        let s = sets();
        let k = key([198, 18, 0, 1], [198, 18, 1, 5], 6, 40000, 8080);
        let t = |m: Match| m.test(&k, &s);
        assert!(t(Match::default()));
        assert!(!t(Match {
            not_protocol: Some(6),
            ..Match::default()
        }));
        assert!(!t(Match {
            ip_version: Some(6),
            ..Match::default()
        }));
        assert!(!t(Match {
            not_src_nets: Some(0),
            ..Match::default()
        }));
        assert!(t(Match {
            not_dst_nets: Some(0),
            ..Match::default()
        }));
        assert!(
            t(Match {
                dst_ports: PortMatch {
                    ranges: vec![],
                    named: Some(0)
                },
                ..Match::default()
            }),
            "named port of 198.18.1.5"
        );
        assert!(!t(Match {
            not_dst_ports: PortMatch {
                ranges: vec![(8000, 9000)],
                named: None
            },
            ..Match::default()
        }));
        assert!(!t(Match {
            src_ports: PortMatch {
                ranges: vec![(1, 1024)],
                named: None
            },
            ..Match::default()
        }));
        assert!(
            !t(Match {
                icmp: Some(IcmpMatch { ty: 8, code: None }),
                ..Match::default()
            }),
            "ICMP condition on TCP"
        );
        let ping = key([198, 18, 0, 1], [198, 18, 1, 5], 1, 8 << 8, 7);
        assert!(Match {
            icmp: Some(IcmpMatch {
                ty: 8,
                code: Some(0)
            }),
            ..Match::default()
        }
        .test(&ping, &s));
        assert!(!Match {
            not_icmp: Some(IcmpMatch { ty: 8, code: None }),
            ..Match::default()
        }
        .test(&ping, &s));
        assert!(
            !Match {
                dst_ports: PortMatch {
                    ranges: vec![(0, 65535)],
                    named: None
                },
                ..Match::default()
            }
            .test(&ping, &s),
            "ports never match ICMP"
        );
    }

    mod against_the_scan {
        use super::*;
        use proptest::prelude::*;
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

        /// A small address space, so that generated sets and packets meet often.
        fn v4(i: u16) -> IpAddr {
            IpAddr::V4(Ipv4Addr::new(198, 18, (i >> 8) as u8 & 3, i as u8))
        }

        fn v6(i: u16) -> IpAddr {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                i >> 8 & 3,
                i & 0xff,
            ))
        }

        fn net_set() -> impl Strategy<Value = NetSet> {
            let prefix = (any::<bool>(), any::<u16>(), 22u8..=32).prop_map(|(six, i, len)| {
                if six {
                    (v6(i), len + 96)
                } else {
                    (v4(i), len)
                }
            });
            (
                prop::collection::vec(prefix.clone(), 0..6),
                prop::collection::vec(prefix, 0..3),
            )
                .prop_map(|(add, except)| {
                    let mut s = NetSet::from_prefixes(add);
                    for (a, l) in except {
                        s.remove(a, l);
                    }
                    s
                })
        }

        const PROTOS: [u8; 6] = [1, 6, 17, 58, 132, 47];

        fn ports() -> impl Strategy<Value = PortMatch> {
            prop_oneof![
                3 => Just(PortMatch::default()),
                2 => prop::collection::vec((0u16..40, 0u16..20), 1..3).prop_map(|r| PortMatch {
                    ranges: r.into_iter().map(|(lo, w)| (lo, lo + w)).collect(),
                    named: None,
                }),
                1 => (0u32..2, prop::collection::vec((0u16..40, 0u16..5), 0..2)).prop_map(
                    |(n, r)| PortMatch {
                        ranges: r.into_iter().map(|(lo, w)| (lo, lo + w)).collect(),
                        named: Some(n),
                    }
                ),
            ]
        }

        fn option<T: std::fmt::Debug + Clone>(
            s: impl Strategy<Value = T>,
        ) -> impl Strategy<Value = Option<T>> {
            prop_oneof![3 => Just(None), 1 => s.prop_map(Some)]
        }

        fn icmp() -> impl Strategy<Value = IcmpMatch> {
            (0u8..4, option(0u8..3)).prop_map(|(ty, code)| IcmpMatch { ty, code })
        }

        fn matches(sets: u32) -> impl Strategy<Value = Match> {
            let proto = prop::sample::select(PROTOS.to_vec());
            let set = 0..sets;
            (
                (
                    option(proto.clone()),
                    option(proto),
                    option(prop_oneof![Just(4u8), Just(6u8)]),
                ),
                (
                    option(set.clone()),
                    option(set.clone()),
                    option(set.clone()),
                    option(set),
                ),
                (ports(), ports(), ports(), ports()),
                (option(icmp()), option(icmp())),
            )
                .prop_map(
                    |((p, np, v), (sn, nsn, dn, ndn), (sp, nsp, dp, ndp), (i, ni))| Match {
                        protocol: p,
                        not_protocol: np,
                        ip_version: v,
                        src_nets: sn,
                        not_src_nets: nsn,
                        dst_nets: dn,
                        not_dst_nets: ndn,
                        src_ports: sp,
                        not_src_ports: nsp,
                        dst_ports: dp,
                        not_dst_ports: ndp,
                        icmp: i,
                        not_icmp: ni,
                    },
                )
        }

        fn action() -> impl Strategy<Value = Action> {
            prop_oneof![
                Just(Action::Allow),
                Just(Action::Deny),
                Just(Action::Pass),
                Just(Action::Log)
            ]
        }

        fn tiers(sets: u32) -> impl Strategy<Value = Vec<Tier>> {
            let tier = (
                // Up to 150 rules in one tier: bitmaps of more than one word.
                prop_oneof![4 => 0usize..8, 1 => 60usize..150],
                any::<bool>(),
            )
                .prop_flat_map(move |(n, deny)| {
                    prop::collection::vec((matches(sets), action()), n)
                        .prop_map(move |rules| (rules, deny))
                });
            prop::collection::vec(tier, 0..4).prop_map(|tiers| {
                let mut id = 0;
                tiers
                    .into_iter()
                    .map(|(rules, deny)| {
                        let rules = rules
                            .into_iter()
                            .map(|(matches, action)| {
                                id += 1;
                                Rule {
                                    matches,
                                    action,
                                    id,
                                }
                            })
                            .collect();
                        id += 1;
                        Tier {
                            rules,
                            end: if deny { TierEnd::Deny } else { TierEnd::Pass },
                            end_id: id,
                        }
                    })
                    .collect()
            })
        }

        fn flow_key() -> impl Strategy<Value = FlowKey> {
            (
                any::<bool>(),
                any::<u16>(),
                any::<u16>(),
                prop::sample::select(PROTOS.to_vec()),
                0u16..70,
                prop_oneof![0u16..70, (0u16..5, 0u16..4).prop_map(|(t, c)| t << 8 | c)],
            )
                .prop_map(|(six, s, d, proto, sp, dp)| {
                    let (src, dst) = if six { (v6(s), v6(d)) } else { (v4(s), v4(d)) };
                    FlowKey {
                        src: FlowKey::map_ip(src),
                        dst: FlowKey::map_ip(dst),
                        // For ICMP the source port field carries type and code.
                        src_port: if matches!(proto, 1 | 58) { dp } else { sp },
                        dst_port: dp,
                        proto,
                    }
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn the_decision_structure_decides_like_the_scan(
                (nets, program) in prop::collection::vec(net_set(), 1..6)
                    .prop_flat_map(|nets| {
                        let n = nets.len() as u32;
                        (Just(nets), tiers(n))
                    }),
                keys in prop::collection::vec(flow_key(), 64),
            ) {
                let named_set = |port: u16| {
                    (0..1024u16)
                        .step_by(3)
                        .flat_map(|i| {
                            [6u8, 17, 132].map(|p| (FlowKey::map_ip(v4(i)), p, port + i % 7))
                        })
                        .collect::<rustc_hash::FxHashSet<_>>()
                };
                let sets = Sets { nets, named_ports: vec![named_set(3).into(), named_set(30).into()] };
                let p = Program::new(program, &sets);
                for k in &keys {
                    prop_assert_eq!(p.classify_indexed(k, &sets), p.classify_by_scan(k, &sets), "{:?}", k);
                }
            }
        }
    }
}
