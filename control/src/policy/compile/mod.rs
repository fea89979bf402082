//! The policy compiler: a validated [`Cluster`] in, the dataplane's [`PolicyTables`] out.
//!
//! Everything that can be decided once is decided here, so that workers only evaluate:
//!
//! - **Selectors become address sets.** A peer (`podSelector`, `namespaceSelector`, both,
//!   `ipBlock` with `except`) or a weir.dev entity (`nets`, `selector`,
//!   `namespaceSelector`, `serviceAccounts`, network sets) is resolved to the exact
//!   [`NetSet`] of addresses it denotes, IPv4 and IPv6 together. Identical sets are stored
//!   once.
//! - **Named ports become (address, protocol, port) sets**, built from the containerPorts
//!   of every pod that declares the name with that protocol. A rule tests the packet's
//!   destination against it, which is exactly "resolved per destination pod".
//! - **Tiers are flattened per endpoint and direction.** For each pod, the policies that
//!   select it are gathered in evaluation order (tier order, then policy order, ties broken
//!   by name) into a [`Program`]. A tier none of whose policies selects the pod is left
//!   out, as in Calico; a pod selected by no policy in a direction gets no program and is
//!   open in that direction (Kubernetes: "non-isolated").
//!
//! Kubernetes NetworkPolicies live in the `default` tier at order 1000; each of their rules
//! compiles to `Allow` rules (one per port entry), and the tier's end (Deny) gives the
//! default deny of a selected pod. The union of all their rules is therefore what is
//! allowed, as the API specifies.
//!
//! The cost of classifying a packet depends on the rules of the policies that select its
//! two endpoints, not on how many rules the cluster has: that is what keeps lookups flat.
//!
//! # Compiling for one node, again and again
//!
//! An agent needs programs for its own pods only, while their rules still name pods
//! anywhere in the cluster. [`compile_local`] builds the endpoints of the pods it is given,
//! compiles only the policies that select one of them, and resolves selectors through a
//! [`Cache`] kept between compilations. Resolving a selector is what costs (it walks the
//! pods in scope); everything else is proportional to the node's share of the cluster.
//! The cache is kept exact by the calculation (`crate::calc`), which tells it what
//! changed: a label index maps each label key to the cached selectors that read it, so a
//! pod's label change re-resolves only the selectors whose result it can flip.
//!
//! The cache also keeps what the last compilation made, so that a change costs in
//! proportion to what it touches:
//! - **ids that stay**: a rule keeps its id (by tier, policy, direction and index), an
//!   address set its id (by content), a named-port set its id (by names and protocol) for
//!   as long as consecutive compilations use them; a policy added or removed renumbers
//!   nobody else's rules, so the programs of endpoints it does not select stay equal;
//! - **each policy's compiled rules**, taken again while the policy, its tier and every
//!   selector resolution it read (each carries a version) are unchanged;
//! - **programs**, found first by the versions of the rule lists they are made of (no copy
//!   of a rule), then by their rules (ids included): equal rules name equal sets, so only
//!   programs whose rules or sets changed build their decision structure again.
//!
//! And the cache says when the last compilation's tables cannot have changed
//! ([`Cache::stale`]: no resolution it used was invalidated, no named-port set changed, and
//! nothing it read outside the cache did); with the calculation's own view of the node's
//! pods, namespaces and policies, a change elsewhere in the cluster costs no compilation
//! at all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashMap;
use weir_dataplane::policy::program::{
    IcmpMatch as CompiledIcmp, Match, NetSetId, PortMatch as CompiledPorts, PortSetId,
};
use weir_dataplane::policy::{
    Action as CompiledAction, Direction, EndpointPolicy, NetSet, PolicyTables,
    Rule as CompiledRule, RuleId, RuleInfo, Sets,
};
use weir_dataplane::snapshot::EndpointId;

use super::load::Cluster;
use super::model::{
    compare_order, Action, EntityRule, IpFamily, K8sPeer, K8sRule, NamespacedName, Pod, PolicySpec,
    Protocol, Rule,
};
use super::selector::{Labels, Selector};

/// The compiled form of a cluster's policy.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// What the workers (and `weir policy eval`) classify with.
    pub tables: PolicyTables,
    /// The endpoint id of every pod that has an address and is not on the host network.
    pub endpoints: BTreeMap<NamespacedName, EndpointId>,
    /// Each policy once, in evaluation order (tier order, then policy order), before its
    /// rules were copied into the programs of the endpoints it selects.
    pub policies: Vec<CompiledPolicy>,
}

/// One policy as compiled.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// Its tier.
    pub tier: String,
    /// `namespace/name` for namespaced policies, `name` for global ones.
    pub name: String,
    /// The addresses of the endpoints it selects.
    pub selected: NetSet,
    /// Its ingress rules; `None` if it does not apply to ingress.
    pub ingress: Option<Arc<[CompiledRule]>>,
    /// Its egress rules; `None` if it does not apply to egress.
    pub egress: Option<Arc<[CompiledRule]>>,
}

impl Compiled {
    /// The endpoint id of a pod.
    pub fn endpoint(&self, pod: &NamespacedName) -> Option<EndpointId> {
        self.endpoints.get(pod).copied()
    }
}

/// Which policy object a [`CompiledPolicy`] came from.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    K8s(&'a super::model::K8sNetworkPolicy),
    Weir {
        namespace: Option<&'a str>,
        namespace_selector: Option<&'a Selector>,
        spec: &'a PolicySpec,
    },
}

/// A policy in evaluation order, with what the compiler needs to place it.
struct Entry<'a> {
    tier: usize,
    namespace: Option<&'a str>,
    source: Source<'a>,
    /// The kind, as explanations name it (`Kind namespace/name`).
    kind: &'static str,
    /// (namespace, name), or (name, None) for a global policy: made into a string only
    /// for the policies compiled.
    name: (&'a str, Option<&'a str>),
}

impl Entry<'_> {
    /// `namespace/name`, or `name`.
    fn name(&self) -> String {
        match self.name {
            (ns, Some(name)) => format!("{ns}/{name}"),
            (name, None) => name.to_owned(),
        }
    }

    fn label(&self) -> String {
        format!("{} {}", self.kind, self.name())
    }
}

/// A policy as [`RulesSource`] keeps it, borrowed.
enum RulesSourceRef<'a> {
    K8s(&'a super::model::K8sNetworkPolicy),
    Weir(Option<&'a str>, &'a PolicySpec),
}

impl RulesSourceRef<'_> {
    fn is(&self, kept: &RulesSource) -> bool {
        match (self, kept) {
            (RulesSourceRef::K8s(p), RulesSource::K8s(k)) => *p == k,
            (RulesSourceRef::Weir(ns, spec), RulesSource::Weir(kns, kspec)) => {
                *ns == kns.as_deref() && *spec == kspec
            }
            _ => false,
        }
    }

    fn to_owned(&self) -> RulesSource {
        match self {
            RulesSourceRef::K8s(p) => RulesSource::K8s((*p).clone()),
            RulesSourceRef::Weir(ns, spec) => {
                RulesSource::Weir(ns.map(str::to_owned), (*spec).clone())
            }
        }
    }
}

/// One endpoint: a pod with an address.
struct Endpoint<'a> {
    pod: &'a Pod,
    ns_labels: &'a Labels,
    sa_labels: &'a Labels,
}

/// Where a weir.dev entity selector looks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    /// Pods and network sets of one namespace.
    Namespace(String),
    /// Pods and network sets of the namespaces a selector matches; `global()` adds the
    /// global network sets.
    Namespaces(Selector),
    /// Every pod and the global network sets (a GlobalNetworkPolicy without a
    /// namespaceSelector).
    Cluster,
}

mod cache;
mod plan;
mod programs;
mod resolve;

use cache::{is_endpoint, CacheKey, NamedPortSet, PolicyRules, Recording, RulesSource};
pub use cache::{Cache, CompileTimes};
use resolve::{in_namespace, k8s_key};

struct Compiler<'a> {
    cluster: &'a Cluster,
    endpoints: Vec<Endpoint<'a>>,
    by_namespace: BTreeMap<&'a str, Vec<usize>>,
    /// What the policy being compiled reads, for [`Cache`]'s kept rules.
    recording: Option<Recording>,
    /// Resolved selectors without a serviceAccounts match: many rules repeat a selector,
    /// and resolving one walks every pod in its scope.
    cache: Cache,
    /// Unions of cached resolutions (by their sorted slots) interned in this compilation.
    slot_unions: FxHashMap<Vec<usize>, NetSetId>,
    /// Whether every pod is an endpoint here (then every policy is compiled, even one
    /// that selects nothing, so that explanations can name it).
    whole: bool,
}

/// Compiles a validated cluster, every pod an endpoint. Infallible: every object was
/// validated when it was loaded, and whatever the combination of objects, it has a meaning.
pub fn compile(cluster: &Cluster) -> Compiled {
    let all: Vec<&NamespacedName> = cluster.pods.keys().collect();
    compile_with(cluster, all, &mut Cache::default(), true)
}

/// Compiles for one node: only the pods named in `local` (in that order, those with an
/// address and their own network) become endpoints, and only the policies that select one
/// of them are compiled. Selectors resolve against the whole cluster through `cache`,
/// which must have been told of every change since it was last used (see [`Cache`]).
pub fn compile_local<'n>(
    cluster: &Cluster,
    local: impl IntoIterator<Item = &'n NamespacedName>,
    cache: &mut Cache,
) -> Compiled {
    compile_with(cluster, local, cache, false)
}

fn compile_with<'n>(
    cluster: &Cluster,
    local: impl IntoIterator<Item = &'n NamespacedName>,
    cache: &mut Cache,
    whole: bool,
) -> Compiled {
    let started = Instant::now();
    let empty = Labels::new();
    let mut endpoints = Vec::new();
    let mut ids = BTreeMap::new();
    let mut by_namespace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut names = Vec::new();
    for name in local {
        let Some((name, pod)) = cluster.pods.get_key_value(name) else {
            continue;
        };
        if !is_endpoint(pod) {
            continue;
        }
        let index = endpoints.len();
        ids.insert(name.clone(), index as EndpointId);
        names.push(name);
        by_namespace
            .entry(pod.namespace.as_str())
            .or_default()
            .push(index);
        endpoints.push(Endpoint {
            pod,
            ns_labels: cluster.namespace_labels(&pod.namespace).unwrap_or(&empty),
            sa_labels: cluster
                .service_accounts
                .get(&NamespacedName::new(&pod.namespace, &pod.service_account))
                .map_or(&empty, |sa| &sa.labels),
        });
    }
    cache.catch_up(cluster);
    cache.generation += 1;
    cache.uncached_reads = false;
    let mut c = Compiler {
        cluster,
        endpoints,
        by_namespace,
        recording: None,
        cache: std::mem::take(cache),
        slot_unions: FxHashMap::default(),
        whole,
    };
    c.refresh_local_named_sets();

    let tiers = cluster.ordered_tiers();
    // The policies that apply and what each selects: the last compilation's while nothing
    // they were found from changed (see `Plan`), else found afresh.
    let kept = c.cache.plan.take();
    let changed = std::mem::take(&mut c.cache.changed_policies);
    let (plan, planned, sources_kept) =
        c.planned(kept, &changed, &names, &tiers, c.cache.selection_epoch);
    if sources_kept {
        c.cache.plans_kept += 1;
    } else {
        c.cache.plans_made += 1;
    }

    // Tier ends: one rule id per tier and direction.
    let tier_ends: Vec<[RuleId; 2]> = tiers
        .iter()
        .map(|t| {
            [Direction::Ingress, Direction::Egress].map(|direction| {
                c.rule_id(RuleInfo {
                    tier: t.name.clone(),
                    policy: String::new(),
                    direction,
                    index: None,
                })
            })
        })
        .collect();

    // Each policy's rules, compiled once; for one node, only the policies that select
    // one of its endpoints.
    let mut compiled = Vec::with_capacity(planned.len());
    let mut placed = Vec::with_capacity(planned.len());
    let mut versions: Vec<[Option<u64>; 2]> = Vec::with_capacity(planned.len());
    for (entry, at) in &planned {
        let item = &plan.all[*at];
        let tier = &tiers[entry.tier].name;
        // A policy the kept plan took in anew is compared with its kept rules' source.
        let kept_source = sources_kept && !item.changed;
        let (ingress, in_version) = c.policy_rules(entry, Direction::Ingress, tier, kept_source);
        let (egress, out_version) = c.policy_rules(entry, Direction::Egress, tier, kept_source);
        versions.push([in_version, out_version]);
        compiled.push(CompiledPolicy {
            tier: tier.clone(),
            name: entry.name(),
            selected: item.set.clone(),
            ingress,
            egress,
        });
        placed.push(entry.tier);
    }

    // Per endpoint, the entries that select it, in evaluation order.
    let mut applies: Vec<Vec<usize>> = vec![Vec::new(); c.endpoints.len()];
    for (p, (_, at)) in planned.iter().enumerate() {
        for &e in &plan.all[*at].selected {
            applies[e].push(p);
        }
    }
    let generation = c.cache.generation;
    c.cache.rule_ids.release_unused(generation);
    c.cache.net_ids.release_unused(generation);
    c.cache.named_ids.release_unused(generation);
    // A named-port set no rule names any more is not kept (nor taken again).
    let named_ids = &c.cache.named_ids;
    c.cache.named.retain(|key, _| named_ids.holds(key));
    c.cache.rules.retain(|_, kept| kept.used == generation);
    let empty_named = Arc::new(NamedPortSet::default());
    let named_ports = (0..c.cache.named_ids.len() as PortSetId)
        .map(|id| {
            c.cache
                .named_ids
                .get(id)
                .filter(|_| c.cache.named_ids.used_by(id, generation))
                .and_then(|key| c.cache.named.get(key))
                .cloned()
                .unwrap_or_else(|| empty_named.clone())
        })
        .collect();
    let sets = Sets {
        nets: c.cache.net_ids.table(&NetSet::new()),
        named_ports,
    };
    // Endpoints selected by the same policies share one program (and its decision
    // structure): the pods of one workload usually do; across compilations, a program is
    // kept while what it is made of is the same (see `programs`).
    let named_keys = c.cache.named_ids.table(&(String::new(), None, false));
    let inputs = programs::Inputs {
        compiled: &compiled,
        placed: &placed,
        versions: &versions,
        ends: &tiers
            .iter()
            .zip(&tier_ends)
            .map(|(t, ends)| (t.default_action, *ends))
            .collect::<Vec<_>>(),
        sets: &sets,
        named_keys: &named_keys,
    };
    let mut made = programs::Programs::take(&mut c.cache);
    let endpoint_policies = applies
        .iter()
        .map(|list| EndpointPolicy {
            ingress: made.program(&inputs, Direction::Ingress, list),
            egress: made.program(&inputs, Direction::Egress, list),
        })
        .collect();
    made.give_back(&mut c.cache);

    let rules = c.cache.rule_ids.table(&RuleInfo {
        tier: String::new(),
        policy: String::new(),
        direction: Direction::Ingress,
        index: None,
    });
    if !whole {
        c.cache.plan = Some(plan);
    }
    c.cache.trim();
    c.cache.compiled();
    c.cache.times.compilations += 1;
    c.cache.times.total += started.elapsed();
    *cache = c.cache;
    Compiled {
        tables: PolicyTables {
            endpoints: endpoint_policies,
            warm_pays: Default::default(),
            sets,
            rules,
        },
        endpoints: ids,
        policies: compiled,
    }
}

/// Where a policy goes in evaluation order: its tier's index, its order in the tier, its
/// name (`namespace/name` or `name`) and its kind (networking.k8s.io, weir.dev namespaced,
/// global: how they are listed when all else is equal).
type Place<'n> = (usize, Option<f64>, (&'n str, Option<&'n str>), u8);

/// Evaluation order: by tier, then order, then name, then kind.
fn cmp_place(a: Place<'_>, b: Place<'_>) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
        .then_with(|| compare_order((a.1, ""), (b.1, "")))
        .then_with(|| cmp_names(a.2, b.2))
        .then_with(|| a.3.cmp(&b.3))
}

/// Orders two policy names as their strings `namespace/name` (or `name`) order, without
/// making them: the first parts are compared as slices (most pairs differ there, or are
/// equal and differ in the second), and only when one first part is a prefix of the other
/// are the rest compared byte by byte. Sorting a node's thousand policies by their joined
/// bytes took half a millisecond of every compilation that ordered them.
fn cmp_names(a: (&str, Option<&str>), b: (&str, Option<&str>)) -> std::cmp::Ordering {
    let (a0, b0) = (a.0.as_bytes(), b.0.as_bytes());
    let n = a0.len().min(b0.len());
    a0[..n].cmp(&b0[..n]).then_with(|| {
        if a0.len() == b0.len() {
            // What follows is `/second`, or nothing.
            a.1.map(str::as_bytes).cmp(&b.1.map(str::as_bytes))
        } else {
            name_rest(&a0[n..], a.1).cmp(name_rest(&b0[n..], b.1))
        }
    })
}

/// The bytes of a policy name from some point of its first part on: `first` (what is left
/// of the first part), then `/second` if it has a second.
fn name_rest<'s>(first: &'s [u8], second: Option<&'s str>) -> impl Iterator<Item = u8> + 's {
    let tail = second.map(|s| std::iter::once(b'/').chain(s.bytes()));
    first.iter().copied().chain(tail.into_iter().flatten())
}

impl<'a> Compiler<'a> {
    /// A rule's id: the one it had in the last compilation, if it had one.
    fn rule_id(&mut self, info: RuleInfo) -> RuleId {
        let generation = self.cache.generation;
        let id = self.cache.rule_ids.id(info, generation);
        if let Some(r) = &mut self.recording {
            r.rule_ids.push(id);
        }
        id
    }

    /// An address set's id: the one a set of this content had in the last compilation, if
    /// one had.
    fn intern(&mut self, set: NetSet) -> NetSetId {
        let generation = self.cache.generation;
        self.cache.net_ids.id(set, generation)
    }

    /// Every policy in evaluation order: by tier, then by (order, name) inside the tier.
    fn ordered_entries(&self, tiers: &[&super::model::Tier]) -> Vec<Entry<'a>> {
        let tier_index: FxHashMap<&str, usize> = tiers
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let default_tier = tier_index[super::model::DEFAULT_TIER];
        let mut entries: Vec<Entry<'a>> = Vec::new();
        for (name, p) in self.in_endpoint_namespaces(&self.cluster.k8s_policies) {
            entries.push(Entry::k8s(default_tier, name, p));
        }
        for (name, p) in self.in_endpoint_namespaces(&self.cluster.policies) {
            let tier = tier_index[p.spec.tier.as_str()];
            entries.push(Entry::weir(tier, name, p));
        }
        for (name, p) in &self.cluster.global_policies {
            let tier = tier_index[p.spec.tier.as_str()];
            entries.push(Entry::global(tier, name, p));
        }
        entries.sort_by(|a, b| cmp_place(a.place(), b.place()));
        entries
    }

    /// A map's namespaced objects; for one node, only those in a namespace where it has an
    /// endpoint (the others cannot select any).
    fn in_endpoint_namespaces<'m, T>(
        &self,
        map: &'m BTreeMap<NamespacedName, T>,
    ) -> Vec<(&'m NamespacedName, &'m T)> {
        if self.whole {
            return map.iter().collect();
        }
        self.by_namespace
            .keys()
            .flat_map(|ns| in_namespace(map, ns))
            .collect()
    }

    /// The endpoints a policy could select: its namespace's, or all for a global one.
    fn candidates(&self, entry: &Entry<'a>) -> Box<dyn Iterator<Item = usize> + '_> {
        match entry.namespace {
            Some(ns) => Box::new(
                self.by_namespace
                    .get(ns)
                    .map(|v| v.as_slice())
                    .unwrap_or(&[])
                    .iter()
                    .copied(),
            ),
            None => Box::new(0..self.endpoints.len()),
        }
    }

    fn selects(&self, entry: &Entry<'a>, e: usize) -> bool {
        let ep = &self.endpoints[e];
        match entry.source {
            Source::K8s(p) => p.pod_selector.matches(&ep.pod.labels),
            Source::Weir {
                namespace_selector,
                spec,
                ..
            } => {
                namespace_selector.is_none_or(|s| s.matches(ep.ns_labels))
                    && spec.selector.matches(&ep.pod.labels)
                    && spec.service_account_selector.matches(ep.sa_labels)
            }
        }
    }

    /// A policy's compiled rules in one direction; `None` if it does not apply to it. The
    /// last compilation's are taken when nothing they were compiled from changed.
    /// `sources_kept`: the policy did not change since then (the plan was kept and did not
    /// take it in anew), so it need not be compared with the copy kept with its rules.
    fn policy_rules(
        &mut self,
        entry: &Entry<'a>,
        direction: Direction,
        tier: &str,
        sources_kept: bool,
    ) -> (Option<Arc<[CompiledRule]>>, Option<u64>) {
        let generation = self.cache.generation;
        let key = (entry.label(), direction);
        let source = match entry.source {
            Source::K8s(p) => RulesSourceRef::K8s(p),
            Source::Weir {
                namespace, spec, ..
            } => RulesSourceRef::Weir(namespace, spec),
        };
        let fresh = self.cache.rules.get(&key).is_some_and(|kept| {
            kept.used + 1 == generation
                && kept.tier == tier
                && (sources_kept || source.is(&kept.source))
                && self.cache.unchanged(&kept.slots)
        });
        if let Some(kept) = self.cache.rules.get_mut(&key).filter(|_| fresh) {
            kept.used = generation;
            let version = kept.version;
            // The resolutions it read are this compilation's too: kept by `trim`, and
            // their invalidation makes its tables stale (see `Cache::stale`).
            for &(s, _) in &kept.slots {
                if let Some(slot) = self.cache.slots.get_mut(s) {
                    slot.used = generation;
                }
            }
            self.cache.rules_kept += 1;
            let rules = kept.rules.clone();
            let (rule_ids, named) = (kept.rule_ids.clone(), kept.named.clone());
            for id in rule_ids {
                self.cache.rule_ids.touch(id, generation);
            }
            for id in rules.iter().flat_map(|r| r.iter()).flat_map(|r| {
                let m = &r.matches;
                [m.src_nets, m.not_src_nets, m.dst_nets, m.not_dst_nets]
                    .into_iter()
                    .flatten()
            }) {
                self.cache.net_ids.touch(id, generation);
            }
            for id in named {
                self.cache.named_ids.touch(id, generation);
                self.named_set_held(id);
            }
            return (rules, Some(version));
        }
        self.cache.rules_compiled += 1;
        self.recording = Some(Recording::default());
        let t = Instant::now();
        let rules: Option<Arc<[CompiledRule]>> = self
            .compile_policy_rules(entry, direction, tier)
            .map(Arc::from);
        self.cache.times.rules += t.elapsed();
        let recorded = self.recording.take().unwrap_or_default();
        if recorded.uncached {
            return (rules, None);
        }
        self.cache.rule_versions += 1;
        let version = self.cache.rule_versions;
        {
            self.cache.rules.insert(
                key,
                PolicyRules {
                    source: source.to_owned(),
                    tier: tier.to_owned(),
                    slots: recorded.slots,
                    rule_ids: recorded.rule_ids,
                    named: recorded.named,
                    rules: rules.clone(),
                    used: generation,
                    version,
                },
            );
        }
        (rules, Some(version))
    }

    fn compile_policy_rules(
        &mut self,
        entry: &Entry<'a>,
        direction: Direction,
        tier: &str,
    ) -> Option<Vec<CompiledRule>> {
        let ingress = direction == Direction::Ingress;
        let label = entry.label();
        match entry.source {
            Source::K8s(p) => {
                let applies = if ingress {
                    p.types.ingress
                } else {
                    p.types.egress
                };
                if !applies {
                    return None;
                }
                let rules = if ingress { &p.ingress } else { &p.egress };
                let mut out = Vec::new();
                for (i, rule) in rules.iter().enumerate() {
                    let id = self.rule_id(RuleInfo {
                        tier: tier.to_owned(),
                        policy: label.clone(),
                        direction,
                        index: Some(i),
                    });
                    self.k8s_rule(&p.namespace, rule, ingress, id, &mut out);
                }
                Some(out)
            }
            Source::Weir {
                namespace, spec, ..
            } => {
                let applies = if ingress {
                    spec.types.ingress
                } else {
                    spec.types.egress
                };
                if !applies {
                    return None;
                }
                let rules = if ingress { &spec.ingress } else { &spec.egress };
                let scope = match namespace {
                    Some(ns) => Scope::Namespace(ns.to_owned()),
                    None => Scope::Cluster,
                };
                let mut out = Vec::with_capacity(rules.len());
                for (i, rule) in rules.iter().enumerate() {
                    let id = self.rule_id(RuleInfo {
                        tier: tier.to_owned(),
                        policy: label.clone(),
                        direction,
                        index: Some(i),
                    });
                    out.push(self.weir_rule(&scope, rule, ingress, id));
                }
                Some(out)
            }
        }
    }

    /// A Kubernetes rule: the peers' union as the remote side, one Allow rule per port
    /// entry (one with no port condition if the rule lists no ports).
    fn k8s_rule(
        &mut self,
        namespace: &str,
        rule: &K8sRule,
        ingress: bool,
        id: RuleId,
        out: &mut Vec<CompiledRule>,
    ) {
        let peers = rule.peers.as_ref().map(|peers| {
            // Peers that are all selectors (the common case) are named by their cache
            // slots: a union met before in this compilation is not made again.
            let slots: Option<Vec<usize>> = peers
                .iter()
                .map(|peer| match peer {
                    K8sPeer::Pods { namespaces, pods } => {
                        Some(self.cached_slot(k8s_key(namespace, namespaces, pods)))
                    }
                    K8sPeer::IpBlock { .. } => None,
                })
                .collect();
            match slots {
                Some(slots) => self.union_of_slots(slots),
                None => {
                    let mut set = NetSet::new();
                    for peer in peers {
                        set.extend(&self.k8s_peer(namespace, peer));
                    }
                    self.intern(set)
                }
            }
        });
        let base = Match {
            src_nets: if ingress { peers } else { None },
            dst_nets: if ingress { None } else { peers },
            ..Match::default()
        };
        let Some(ports) = &rule.ports else {
            out.push(CompiledRule {
                matches: base,
                action: CompiledAction::Allow,
                id,
            });
            return;
        };
        for port in ports {
            let dst_ports = match &port.port {
                None => CompiledPorts::default(),
                Some(p) => self.ports(std::slice::from_ref(p), Some(port.protocol), ingress),
            };
            out.push(CompiledRule {
                matches: Match {
                    protocol: Some(port.protocol.number()),
                    dst_ports,
                    ..base.clone()
                },
                action: CompiledAction::Allow,
                id,
            });
        }
    }

    fn k8s_peer(&mut self, namespace: &str, peer: &K8sPeer) -> NetSet {
        match peer {
            K8sPeer::IpBlock { cidr, except } => {
                let mut set = NetSet::from_prefixes([(cidr.addr(), cidr.prefix_len())]);
                for e in except {
                    set.remove(e.addr(), e.prefix_len());
                }
                set
            }
            K8sPeer::Pods { namespaces, pods } => self.cached(k8s_key(namespace, namespaces, pods)),
        }
    }

    fn weir_rule(&mut self, scope: &Scope, rule: &Rule, ingress: bool, id: RuleId) -> CompiledRule {
        let protocol = rule.protocol;
        let (src_nets, not_src_nets) = self.entity_sets(scope, &rule.source);
        let (dst_nets, not_dst_nets) = self.entity_sets(scope, &rule.destination);
        let icmp =
            |m: &super::model::IcmpMatch| m.icmp_type.map(|ty| CompiledIcmp { ty, code: m.code });
        CompiledRule {
            matches: Match {
                protocol: protocol.map(Protocol::number),
                not_protocol: rule.not_protocol.map(Protocol::number),
                ip_version: rule.ip_version.map(|f| match f {
                    IpFamily::V4 => 4,
                    IpFamily::V6 => 6,
                }),
                src_nets,
                not_src_nets,
                dst_nets,
                not_dst_nets,
                src_ports: self.ports(&rule.source.ports, protocol, !ingress),
                not_src_ports: self.ports(&rule.source.not_ports, protocol, !ingress),
                dst_ports: self.ports(&rule.destination.ports, protocol, ingress),
                not_dst_ports: self.ports(&rule.destination.not_ports, protocol, ingress),
                icmp: rule.icmp.as_ref().and_then(icmp),
                not_icmp: rule.not_icmp.as_ref().and_then(icmp),
            },
            action: match rule.action {
                Action::Allow => CompiledAction::Allow,
                Action::Deny => CompiledAction::Deny,
                Action::Pass => CompiledAction::Pass,
                Action::Log => CompiledAction::Log,
            },
            id,
        }
    }

    /// The positive and negative address sets of a weir.dev entity. Positive: `nets`
    /// and the selected endpoints and network sets, both required when both are given.
    /// Negative: `notNets` and what `notSelector` selects.
    fn entity_sets(
        &mut self,
        scope: &Scope,
        entity: &EntityRule,
    ) -> (Option<NetSetId>, Option<NetSetId>) {
        let selects = entity.selector.is_some()
            || entity.namespace_selector.is_some()
            || entity.service_accounts.is_some();
        let scope_of = || match &entity.namespace_selector {
            Some(sel) => Scope::Namespaces(sel.clone()),
            None => scope.clone(),
        };
        // A selection alone (the common case) is named by its cache slot, so that a set
        // met before in this compilation is not copied and hashed again.
        if entity.nets.is_empty() && entity.not_nets.is_empty() && entity.service_accounts.is_none()
        {
            let key = |selector: &Selector| CacheKey {
                scope: scope_of(),
                selector: selector.clone(),
                pods_only: false,
            };
            let positive = selects.then(|| {
                let slot =
                    self.cached_slot(key(entity.selector.as_ref().unwrap_or(&Selector::All)));
                self.union_of_slots(vec![slot])
            });
            let negative = entity.not_selector.as_ref().map(|sel| {
                let slot = self.cached_slot(key(sel));
                self.union_of_slots(vec![slot])
            });
            return (positive, negative);
        }
        let nets = (!entity.nets.is_empty())
            .then(|| NetSet::from_prefixes(entity.nets.iter().map(|n| (n.addr(), n.prefix_len()))));
        let selected = selects.then(|| {
            let scope = match &entity.namespace_selector {
                Some(sel) => Scope::Namespaces(sel.clone()),
                None => scope.clone(),
            };
            let selector = entity.selector.clone().unwrap_or(Selector::All);
            self.selected_set(&scope, &selector, entity.service_accounts.as_ref())
        });
        let positive = match (nets, selected) {
            (None, None) => None,
            (Some(a), None) | (None, Some(a)) => Some(a),
            (Some(a), Some(b)) => Some(a.intersection(&b)),
        };
        let mut negative = (!entity.not_nets.is_empty()).then(|| {
            NetSet::from_prefixes(entity.not_nets.iter().map(|n| (n.addr(), n.prefix_len())))
        });
        if let Some(not_selector) = &entity.not_selector {
            let scope = match &entity.namespace_selector {
                Some(sel) => Scope::Namespaces(sel.clone()),
                None => scope.clone(),
            };
            let set = self.selected_set(&scope, not_selector, None);
            negative.get_or_insert_with(NetSet::new).extend(&set);
        }
        (
            positive.map(|s| self.intern(s)),
            negative.map(|s| self.intern(s)),
        )
    }
}

#[cfg(test)]
mod names {
    use super::cmp_names;

    #[test]
    fn policy_names_order_as_their_joined_strings() {
        let joined = |n: (&str, Option<&str>)| match n.1 {
            Some(s) => format!("{}/{s}", n.0),
            None => n.0.to_owned(),
        };
        let names = [
            ("ns", Some("a")),
            ("ns", Some("b")),
            ("ns", None),
            ("ns-1", Some("a")),
            ("ns-1", None),
            ("ns0", Some("a")),
            ("n", Some("s/a")),
            ("n", Some("s")),
            ("nsz", None),
            ("", Some("x")),
            ("", None),
            ("ns", Some("")),
        ];
        for a in names {
            for b in names {
                assert_eq!(
                    cmp_names(a, b),
                    joined(a).cmp(&joined(b)),
                    "{a:?} against {b:?}"
                );
            }
        }
    }
}
