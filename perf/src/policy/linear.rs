//! The linear first-match scan: the same policy as plain 5-tuple rules.
//!
//! It is what weir's verdicts are checked against before anything is timed, the anchor of
//! the classification figures when DPDK does not run, and the rule list DPDK's rule file is
//! written from, so that all three classify the same rules. The parent module's doc says
//! how the policies are flattened and why the result decides exactly as weir does.

use weir_control::policy::compile::Compiled;
use weir_control::policy::load::Cluster;
use weir_control::policy::model::TierDefaultAction;
use weir_dataplane::flow::FlowKey;
use weir_dataplane::policy::program::{Match, PortMatch as CompiledPorts};
use weir_dataplane::policy::{
    Action as CompiledAction, NetSet, Rule as CompiledRule, Sets, Verdict,
};

/// An IPv4 5-tuple, host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    /// The tuple of an IPv4 flow key; `None` for IPv6.
    pub fn of(key: &FlowKey) -> Option<Tuple> {
        if !key.is_v4() {
            return None;
        }
        let v4 = |a: &[u8; 16]| u32::from_be_bytes([a[12], a[13], a[14], a[15]]);
        Some(Tuple {
            src: v4(&key.src),
            dst: v4(&key.dst),
            sport: key.src_port,
            dport: key.dst_port,
            proto: key.proto,
        })
    }
}

/// What a flat rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlatAction {
    Allow,
    Deny,
    /// Continue with the next rule.
    Log,
    /// Continue at rule `next` (past the end of this rule's tier).
    Pass {
        next: u32,
    },
}

/// One 5-tuple rule: inclusive intervals and ranges; `proto` 0 is any protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlatRule {
    pub src: (u32, u32),
    pub dst: (u32, u32),
    pub sport: (u16, u16),
    pub dport: (u16, u16),
    pub proto: u8,
    pub action: FlatAction,
}

impl FlatRule {
    /// Whether `t` is inside every range of the rule.
    #[inline]
    pub fn matches(&self, t: &Tuple) -> bool {
        (self.proto == 0 || self.proto == t.proto)
            && self.src.0 <= t.src
            && t.src <= self.src.1
            && self.dst.0 <= t.dst
            && t.dst <= self.dst.1
            && self.sport.0 <= t.sport
            && t.sport <= self.sport.1
            && self.dport.0 <= t.dport
            && t.dport <= self.dport.1
    }
}

/// The whole policy as first-match 5-tuple rules, in two sections.
#[derive(Debug, Clone, Default)]
pub struct FlatRules {
    /// Every egress rule, guarded by its policy's selected endpoints as the source.
    pub egress: Vec<FlatRule>,
    /// Every ingress rule, guarded by its policy's selected endpoints as the destination.
    pub ingress: Vec<FlatRule>,
    /// Conditions the 5-tuple form cannot express and that were dropped (named ports in a
    /// `notPorts`): zero for generated clusters.
    pub inexact: usize,
}

impl FlatRules {
    /// Rules in both sections.
    pub fn len(&self) -> usize {
        self.egress.len() + self.ingress.len()
    }

    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes of the two sections.
    pub fn memory_bytes(&self) -> usize {
        (self.egress.capacity() + self.ingress.capacity()) * std::mem::size_of::<FlatRule>()
    }

    /// The verdict for `t`: the egress section first (a Deny there decides), then the
    /// ingress section; no match in a section allows, as after weir's last tier.
    #[inline]
    pub fn classify(&self, t: &Tuple) -> Verdict {
        if scan(&self.egress, t) == Verdict::Deny {
            return Verdict::Deny;
        }
        scan(&self.ingress, t)
    }
}

/// Flattens the compiled policies of `cluster` (see the module doc). The tiers' default
/// actions come from `cluster`; `compiled.policies` must be in evaluation order, as
/// [`compile`](weir_control::policy::compile::compile) returns them.
pub fn flatten(compiled: &Compiled, cluster: &Cluster) -> FlatRules {
    let mut flat = FlatRules::default();
    let sets = &compiled.tables.sets;
    // Named-port sets as (IPv4 address, protocol, port), sorted, to take each rule's
    // addresses by range rather than scanning the whole set.
    let named: Vec<Vec<(u32, u8, u16)>> = sets
        .named_ports
        .iter()
        .map(|set| {
            let mut v: Vec<(u32, u8, u16)> = set
                .iter()
                .filter(|(a, _, _)| a[..12] == FlowKey::map_v4([0; 4])[..12])
                .map(|(a, proto, port)| {
                    (
                        u32::from_be_bytes([a[12], a[13], a[14], a[15]]),
                        *proto,
                        *port,
                    )
                })
                .collect();
            v.sort_unstable();
            v
        })
        .collect();
    for ingress in [false, true] {
        let mut out = Vec::new();
        let mut i = 0;
        let policies = &compiled.policies;
        while i < policies.len() {
            let tier = &policies[i].tier;
            let end = i + policies[i..].iter().take_while(|p| &p.tier == tier).count();
            // The tier's end covers every endpoint one of its policies selects.
            let mut applied: Vec<(u32, u32)> = Vec::new();
            let mut passes = Vec::new();
            for p in &policies[i..end] {
                let rules = if ingress { &p.ingress } else { &p.egress };
                let Some(rules) = rules else { continue };
                applied.extend_from_slice(p.selected.v4_intervals());
                for rule in rules.iter() {
                    let first = out.len();
                    flat.inexact += expand(rule, &p.selected, ingress, sets, &named, &mut out);
                    if rule.action == CompiledAction::Pass {
                        passes.extend(first..out.len());
                    }
                }
            }
            let denies = cluster
                .tiers
                .get(tier)
                .is_none_or(|t| t.default_action == TierDefaultAction::Deny);
            if denies {
                for own in merge_intervals(applied) {
                    let (src, dst) = if ingress { (ANY, own) } else { (own, ANY) };
                    out.push(FlatRule {
                        src,
                        dst,
                        sport: ANY_PORT,
                        dport: ANY_PORT,
                        proto: 0,
                        action: FlatAction::Deny,
                    });
                }
            }
            let next = out.len() as u32;
            for r in passes {
                out[r].action = FlatAction::Pass { next };
            }
            i = end;
        }
        if ingress {
            flat.ingress = out;
        } else {
            flat.egress = out;
        }
    }
    flat
}

/// The common part of two inclusive ranges, if they meet.
fn both<T: Ord + Copy>(a: (T, T), b: (T, T)) -> Option<(T, T)> {
    let r = (a.0.max(b.0), a.1.min(b.1));
    (r.0 <= r.1).then_some(r)
}

impl FlatRule {
    /// The rule that matches where both `self` and `other` do, with `other`'s action;
    /// `None` where they never both match.
    fn within(&self, other: &FlatRule) -> Option<FlatRule> {
        let proto = match (self.proto, other.proto) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        Some(FlatRule {
            src: both(self.src, other.src)?,
            dst: both(self.dst, other.dst)?,
            sport: both(self.sport, other.sport)?,
            dport: both(self.dport, other.dport)?,
            proto,
            action: other.action,
        })
    }
}

/// A section as plain first-match rules, `Allow` and `Deny` only, that decide every tuple
/// as the section does (no match still allows): what a classifier without `Pass` and `Log`
/// (`rte_acl`) is fed. `Log` rules decide nothing and go. A `Pass` rule `P` becomes, in its
/// place, the rules from its jump target on (already plain) each narrowed to where `P`
/// matches, then `P` itself as `Allow` (a tuple it passes that nothing later matches is
/// allowed), so that the rest of its tier is skipped exactly where `P` matches.
///
/// `None` if that takes more than `cap` rules: each `Pass` copies the rules after its tier
/// that overlap it.
pub fn first_match_only(section: &[FlatRule], cap: usize) -> Option<Vec<FlatRule>> {
    // Built backwards: `rev` reversed is the plain form of the rules from the current one
    // on, and `from[j]` how much of `rev` is the plain form of the rules from `j` on.
    let mut rev: Vec<FlatRule> = Vec::new();
    let mut from = vec![0usize; section.len() + 1];
    for (i, r) in section.iter().enumerate().rev() {
        match r.action {
            FlatAction::Allow | FlatAction::Deny => rev.push(*r),
            FlatAction::Log => {}
            FlatAction::Pass { next } => {
                rev.push(FlatRule {
                    action: FlatAction::Allow,
                    ..*r
                });
                let later = from.get(next as usize).copied().unwrap_or(0);
                for k in 0..later {
                    if let Some(narrowed) = r.within(&rev[k]) {
                        rev.push(narrowed);
                    }
                }
            }
        }
        if rev.len() > cap {
            return None;
        }
        from[i] = rev.len();
    }
    rev.reverse();
    Some(rev)
}

impl FlatRules {
    /// The rules one node checks: egress rules from `local` sources, ingress rules to
    /// `local` destinations (`local`: the node's pods' addresses, sorted disjoint
    /// intervals). A remote pod's egress is its own node's business.
    pub fn on_node(&self, local: &[(u32, u32)]) -> FlatRules {
        let section = |rules: &[FlatRule], ingress: bool| {
            let mut out = Vec::new();
            // Where each rule's narrowed copies start, for the `Pass` targets.
            let mut starts = Vec::with_capacity(rules.len() + 1);
            for r in rules {
                starts.push(out.len() as u32);
                let side = if ingress { r.dst } else { r.src };
                for part in local.iter().filter_map(|&own| both(own, side)) {
                    let mut narrowed = *r;
                    *(if ingress {
                        &mut narrowed.dst
                    } else {
                        &mut narrowed.src
                    }) = part;
                    out.push(narrowed);
                }
            }
            starts.push(out.len() as u32);
            for r in &mut out {
                if let FlatAction::Pass { next } = &mut r.action {
                    *next = starts
                        .get(*next as usize)
                        .copied()
                        .unwrap_or(starts[rules.len()]);
                }
            }
            out
        };
        FlatRules {
            egress: section(&self.egress, false),
            ingress: section(&self.ingress, true),
            inexact: self.inexact,
        }
    }
}

/// Any address.
pub(super) const ANY: (u32, u32) = (0, u32::MAX);
/// Any port.
pub(super) const ANY_PORT: (u16, u16) = (0, u16::MAX);

fn scan(rules: &[FlatRule], t: &Tuple) -> Verdict {
    let mut i = 0;
    while let Some(r) = rules.get(i) {
        if r.matches(t) {
            match r.action {
                FlatAction::Allow => return Verdict::Allow,
                FlatAction::Deny => return Verdict::Deny,
                FlatAction::Log => {}
                FlatAction::Pass { next } => {
                    i = next as usize;
                    continue;
                }
            }
        }
        i += 1;
    }
    Verdict::Allow
}

/// One port condition of a flat rule: a range, and for a named port the address and
/// protocol it belongs to.
#[derive(Debug, Clone, Copy)]
struct PortOption {
    range: (u16, u16),
    addr: Option<u32>,
    proto: Option<u8>,
}

/// Appends the flat rules of one compiled rule; returns the number of conditions dropped.
fn expand(
    rule: &CompiledRule,
    selected: &NetSet,
    ingress: bool,
    sets: &Sets,
    named: &[Vec<(u32, u8, u16)>],
    out: &mut Vec<FlatRule>,
) -> usize {
    let m: &Match = &rule.matches;
    // Never true for IPv4 TCP/UDP/SCTP.
    if m.ip_version == Some(6) || m.icmp.is_some() {
        return 0;
    }
    let side = |nets: Option<u32>, not: Option<u32>, own: bool| {
        let mut s = if own { selected.clone() } else { NetSet::all() };
        if let Some(id) = nets {
            s = s.intersection(&sets.nets[id as usize]);
        }
        if let Some(id) = not {
            s.subtract(&sets.nets[id as usize]);
        }
        s
    };
    let src = side(m.src_nets, m.not_src_nets, !ingress);
    let dst = side(m.dst_nets, m.not_dst_nets, ingress);
    if src.v4_intervals().is_empty() || dst.v4_intervals().is_empty() {
        return 0;
    }
    let mut dropped = 0;
    let sports = port_options(&m.src_ports, &m.not_src_ports, named, &src, &mut dropped);
    let dports = port_options(&m.dst_ports, &m.not_dst_ports, named, &dst, &mut dropped);
    let ported = !(m.src_ports.is_any()
        && m.dst_ports.is_any()
        && m.not_src_ports.is_any()
        && m.not_dst_ports.is_any());
    let protos: Vec<u8> = match (m.protocol, m.not_protocol) {
        (Some(p), np) if np != Some(p) => vec![p],
        (Some(_), _) => return dropped,
        (None, np) if ported || np.is_some() => [6, 17, 132]
            .into_iter()
            .filter(|&p| Some(p) != np)
            .collect(),
        (None, _) => vec![0],
    };
    let action = match rule.action {
        CompiledAction::Allow => FlatAction::Allow,
        CompiledAction::Deny => FlatAction::Deny,
        CompiledAction::Log => FlatAction::Log,
        CompiledAction::Pass => FlatAction::Pass { next: 0 },
    };
    // A named port's address is in its side's set already (see `port_options`).
    let addrs = |set: &NetSet, pinned: Option<u32>| -> Vec<(u32, u32)> {
        match pinned {
            None => set.v4_intervals().to_vec(),
            Some(a) => vec![(a, a)],
        }
    };
    for &proto in &protos {
        for sp in &sports {
            for dp in &dports {
                let mut p = proto;
                let mut clash = false;
                for named in [sp.proto, dp.proto].into_iter().flatten() {
                    if p == 0 || p == named {
                        p = named;
                    } else {
                        clash = true;
                    }
                }
                if clash {
                    continue;
                }
                for &s in &addrs(&src, sp.addr) {
                    for &d in &addrs(&dst, dp.addr) {
                        out.push(FlatRule {
                            src: s,
                            dst: d,
                            sport: sp.range,
                            dport: dp.range,
                            proto: p,
                            action,
                        });
                    }
                }
            }
        }
    }
    dropped
}

/// The port options of one side: the positive ranges (any port if none) minus the negative
/// ranges, and one option per (address, protocol, port) of a named port set whose address
/// is in `side`.
fn port_options(
    positive: &CompiledPorts,
    negative: &CompiledPorts,
    named: &[Vec<(u32, u8, u16)>],
    side: &NetSet,
    dropped: &mut usize,
) -> Vec<PortOption> {
    if negative.named.is_some() {
        *dropped += 1;
    }
    let allowed = complement(&negative.ranges);
    let allows = |port: u16| allowed.iter().any(|&(l, h)| l <= port && port <= h);
    let mut out = Vec::new();
    let ranges: &[(u16, u16)] = if positive.is_any() {
        &[ANY_PORT]
    } else {
        &positive.ranges
    };
    for &(lo, hi) in ranges {
        for &(alo, ahi) in &allowed {
            let (l, h) = (lo.max(alo), hi.min(ahi));
            if l <= h {
                out.push(PortOption {
                    range: (l, h),
                    addr: None,
                    proto: None,
                });
            }
        }
    }
    if let Some(set) = positive.named.and_then(|id| named.get(id as usize)) {
        for &(lo, hi) in side.v4_intervals() {
            let first = set.partition_point(|e| e.0 < lo);
            for &(addr, proto, port) in set[first..].iter().take_while(|e| e.0 <= hi) {
                if allows(port) {
                    out.push(PortOption {
                        range: (port, port),
                        addr: Some(addr),
                        proto: Some(proto),
                    });
                }
            }
        }
    }
    out
}

/// The union of intervals, sorted, disjoint and not adjacent.
pub(super) fn merge_intervals(mut intervals: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    intervals.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(intervals.len());
    for (lo, hi) in intervals {
        match out.last_mut() {
            Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The ports in none of `ranges`.
fn complement(ranges: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let mut next: u32 = 0;
    for (lo, hi) in sorted {
        if u32::from(lo) > next {
            out.push((next as u16, lo - 1));
        }
        next = next.max(u32::from(hi) + 1);
    }
    if next <= u32::from(u16::MAX) {
        out.push((next as u16, u16::MAX));
    }
    out
}

#[cfg(test)]
mod tests {
    use weir_control::policy::compile::compile;

    use super::*;
    use crate::policy::generate::{generate_cluster, generate_probes};

    #[test]
    fn port_complement() {
        assert_eq!(complement(&[]), vec![(0, 65535)]);
        assert_eq!(complement(&[(0, 65535)]), vec![]);
        assert_eq!(
            complement(&[(80, 80), (0, 10), (75, 90)]),
            vec![(11, 74), (91, 65535)]
        );
        assert_eq!(complement(&[(65535, 65535)]), vec![(0, 65534)]);
    }

    /// The linear scan is built to compute weir's verdicts exactly for IPv4 TCP/UDP; the
    /// benchmark checks it on every run, and this checks it on a cluster with every kind of
    /// rule the generator makes (Kubernetes and weir.dev, Deny/Allow/Log/Pass, named ports,
    /// endPort ranges, except and notNets, a tier that passes and tiers that deny).
    #[test]
    fn flattened_rules_decide_like_the_compiled_tables() {
        let g = generate_cluster(400, 11).unwrap();
        let compiled = compile(&g.cluster);
        let flat = flatten(&compiled, &g.cluster);
        assert_eq!(flat.inexact, 0);
        assert!(flat
            .egress
            .iter()
            .any(|r| matches!(r.action, FlatAction::Pass { .. })));
        assert!(flat.ingress.iter().any(|r| r.action == FlatAction::Log));
        let probes = generate_probes(&g, &compiled, 30_000, 12);
        let mut allowed = 0;
        for p in &probes {
            let weir = compiled.tables.evaluate(p.src, p.dst, &p.key).verdict;
            let linear = flat.classify(&Tuple::of(&p.key).unwrap());
            assert_eq!(weir, linear, "{p:?}");
            allowed += usize::from(weir == Verdict::Allow);
        }
        let share = allowed as f64 / probes.len() as f64;
        assert!((0.05..0.95).contains(&share), "allowed share {share}");
    }

    /// The plain form decides like the section it was made from, on the generated cluster
    /// (Pass, Log and tier ends of every kind) and on a hand-made nest of passes.
    #[test]
    fn plain_first_match_rules_decide_like_the_section() {
        let g = generate_cluster(400, 11).unwrap();
        let compiled = compile(&g.cluster);
        let flat = flatten(&compiled, &g.cluster);
        let probes = generate_probes(&g, &compiled, 20_000, 13);
        for section in [&flat.egress, &flat.ingress] {
            let plain = first_match_only(section, 10_000_000).unwrap();
            assert!(plain
                .iter()
                .all(|r| matches!(r.action, FlatAction::Allow | FlatAction::Deny)));
            for p in &probes {
                let t = Tuple::of(&p.key).unwrap();
                assert_eq!(scan(&plain, &t), scan(section, &t), "{t:?}");
            }
        }
        assert_eq!(first_match_only(&flat.egress, 10), None, "over the cap");

        let rule = |src: (u32, u32), dport: (u16, u16), action| FlatRule {
            src,
            dst: ANY,
            sport: ANY_PORT,
            dport,
            proto: 6,
            action,
        };
        let section = vec![
            rule((0, 5), (0, 100), FlatAction::Pass { next: 3 }),
            rule((0, 9), ANY_PORT, FlatAction::Deny),
            rule((3, 3), (50, 60), FlatAction::Allow),
            // tier 2
            rule((4, 8), ANY_PORT, FlatAction::Pass { next: 6 }),
            rule((0, 9), (0, 70), FlatAction::Log),
            rule((0, 9), (0, 80), FlatAction::Deny),
            // tier 3
            rule((5, 5), ANY_PORT, FlatAction::Deny),
            rule((2, 2), (90, 200), FlatAction::Deny),
        ];
        let plain = first_match_only(&section, 1000).unwrap();
        for src in 0..11 {
            for dport in [0, 55, 65, 75, 85, 95, 150, 300] {
                let t = Tuple {
                    src,
                    dst: 1,
                    sport: 1,
                    dport,
                    proto: 6,
                };
                assert_eq!(scan(&plain, &t), scan(&section, &t), "{t:?}");
            }
        }
    }

    /// A node's rules decide its pods' traffic as the whole list decides it with the other
    /// end's direction left open: egress checked for local sources, ingress for local
    /// destinations.
    #[test]
    fn a_nodes_rules_decide_its_pods_traffic() {
        let g = generate_cluster(400, 11).unwrap();
        let compiled = compile(&g.cluster);
        let flat = flatten(&compiled, &g.cluster);
        let mut local: Vec<u32> = g.pods_by_node[0].iter().map(|(_, a)| *a).collect();
        local.sort_unstable();
        let intervals = merge_intervals(local.iter().map(|&a| (a, a)).collect());
        let node = flat.on_node(&intervals);
        assert!(node.len() < flat.len() && !node.is_empty());
        let probes = generate_probes(&g, &compiled, 20_000, 14);
        let mut seen = 0;
        for p in &probes {
            let t = Tuple::of(&p.key).unwrap();
            let (src_local, dst_local) = (
                local.binary_search(&t.src).is_ok(),
                local.binary_search(&t.dst).is_ok(),
            );
            if !src_local && !dst_local {
                continue;
            }
            seen += 1;
            let egress = if src_local {
                scan(&flat.egress, &t)
            } else {
                Verdict::Allow
            };
            let ingress = if dst_local {
                scan(&flat.ingress, &t)
            } else {
                Verdict::Allow
            };
            let want = if egress == Verdict::Deny || ingress == Verdict::Deny {
                Verdict::Deny
            } else {
                Verdict::Allow
            };
            assert_eq!(node.classify(&t), want, "{t:?}");
        }
        assert!(seen > 100, "{seen} probes touch the node");
    }

    #[test]
    fn pass_jumps_past_its_tier_end() {
        let rule = |src: (u32, u32), action| FlatRule {
            src,
            dst: ANY,
            sport: ANY_PORT,
            dport: ANY_PORT,
            proto: 6,
            action,
        };
        let flat = FlatRules {
            egress: vec![
                rule((1, 1), FlatAction::Pass { next: 2 }),
                rule((0, 10), FlatAction::Deny),
                rule((1, 1), FlatAction::Log),
                rule((2, 2), FlatAction::Deny),
            ],
            ingress: vec![],
            inexact: 0,
        };
        let t = |src| Tuple {
            src,
            dst: 9,
            sport: 1,
            dport: 2,
            proto: 6,
        };
        assert_eq!(
            flat.classify(&t(1)),
            Verdict::Allow,
            "passed, logged, allowed at the end"
        );
        assert_eq!(flat.classify(&t(3)), Verdict::Deny, "tier end");
        assert_eq!(flat.classify(&t(11)), Verdict::Allow);
    }
}
