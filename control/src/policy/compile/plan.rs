//! Which policies apply to a node's endpoints, kept from one compilation to the next.
//!
//! A compilation first orders the policies of the node's namespaces (and the global ones)
//! and tests each against the endpoints it could select: a pass over about a thousand
//! policies at 10 000 pods, about a millisecond. Its outcome changes only when a policy
//! or a tier does (the Calculator says so) or when one of the node's endpoints does (its
//! labels, its namespace's or service account's labels, its addresses: compared here,
//! endpoint by endpoint). So the [`Plan`] is kept while the endpoints are the same ones:
//! a namespaced policy added, changed or deleted ([`super::Cache::policy_changed`]) is
//! taken out of its place and put into its new one alone, with what it selects now; the
//! endpoints whose labels or addresses changed are tested again, against the policies of
//! their namespace and the global ones. A tier or a global policy changed
//! ([`super::Cache::selection_changed`]) has the plan made afresh. A pod or namespace
//! elsewhere, which reaches the tables only through a selector resolution, costs no pass
//! at all.

use std::cmp::Ordering;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use weir_dataplane::policy::NetSet;

use super::resolve::host_prefixes;
use super::{cmp_place, Compiler, Endpoint, Entry, Place, Source};
use crate::policy::model::{
    GlobalNetworkPolicy, K8sNetworkPolicy, NamespacedName, NetworkPolicy, DEFAULT_TIER,
    K8S_POLICY_ORDER,
};
use crate::policy::selector::Labels;

/// Every policy that could select one of the node's endpoints, in evaluation order, with
/// the endpoints each selects, and what those endpoints were when it was made.
#[derive(Debug)]
pub(super) struct Plan {
    /// [`super::Cache::selection_epoch`] when it was made.
    pub(super) epoch: u64,
    /// The endpoints, in order, as they were.
    endpoints: Vec<Seen>,
    /// The policies of the endpoints' namespaces and the global ones.
    pub(super) all: Vec<Planned>,
    /// Positions in `all` of each namespace's policies, and of the global ones.
    by_namespace: FxHashMap<String, Vec<usize>>,
    globals: Vec<usize>,
}

/// One policy of a [`Plan`].
#[derive(Debug)]
pub(super) struct Planned {
    policy: PolicyRef,
    /// Its tier's index in the ordered tiers.
    tier: usize,
    /// Its order inside the tier.
    order: Option<f64>,
    /// Taken in anew by this compilation's update (a changed policy).
    pub(super) changed: bool,
    /// The endpoints it selects (indices, ascending).
    pub(super) selected: Vec<usize>,
    /// Their addresses.
    pub(super) set: NetSet,
}

/// Which object a policy is, to find it in the model again. The variants are in the order
/// the compilation lists policies of equal tier, order and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PolicyRef {
    K8s(NamespacedName),
    Weir(NamespacedName),
    Global(String),
}

/// An endpoint as a plan saw it: what selection and the selected sets read.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    name: NamespacedName,
    labels: Labels,
    ns_labels: Labels,
    sa_labels: Labels,
    ips: Vec<IpAddr>,
}

impl Seen {
    fn of(name: &NamespacedName, e: &Endpoint<'_>) -> Seen {
        Seen {
            name: name.clone(),
            labels: e.pod.labels.clone(),
            ns_labels: e.ns_labels.clone(),
            sa_labels: e.sa_labels.clone(),
            ips: e.pod.ips.clone(),
        }
    }

    fn is(&self, e: &Endpoint<'_>) -> bool {
        self.labels == e.pod.labels
            && self.ns_labels == *e.ns_labels
            && self.sa_labels == *e.sa_labels
            && self.ips == e.pod.ips
    }
}

impl<'a> Entry<'a> {
    pub(super) fn k8s(tier: usize, name: &'a NamespacedName, p: &'a K8sNetworkPolicy) -> Self {
        Entry {
            tier,
            namespace: Some(&p.namespace),
            source: Source::K8s(p),
            kind: "networking.k8s.io NetworkPolicy",
            name: (&name.namespace, Some(&name.name)),
        }
    }

    pub(super) fn weir(tier: usize, name: &'a NamespacedName, p: &'a NetworkPolicy) -> Self {
        Entry {
            tier,
            namespace: Some(&p.namespace),
            source: Source::Weir {
                namespace: Some(&p.namespace),
                namespace_selector: None,
                spec: &p.spec,
            },
            kind: "NetworkPolicy",
            name: (&name.namespace, Some(&name.name)),
        }
    }

    pub(super) fn global(tier: usize, name: &'a str, p: &'a GlobalNetworkPolicy) -> Self {
        Entry {
            tier,
            namespace: None,
            source: Source::Weir {
                namespace: None,
                namespace_selector: Some(&p.namespace_selector),
                spec: &p.spec,
            },
            kind: "GlobalNetworkPolicy",
            name: (name, None),
        }
    }

    fn policy_ref(&self) -> PolicyRef {
        match (self.source, self.name) {
            (Source::K8s(_), (ns, Some(name))) => PolicyRef::K8s(NamespacedName::new(ns, name)),
            (_, (ns, Some(name))) => PolicyRef::Weir(NamespacedName::new(ns, name)),
            (_, (name, None)) => PolicyRef::Global(name.to_owned()),
        }
    }

    /// Its order inside its tier.
    fn order(&self) -> Option<f64> {
        match self.source {
            Source::K8s(_) => Some(K8S_POLICY_ORDER),
            Source::Weir { spec, .. } => spec.order,
        }
    }

    /// Where it goes in evaluation order (see [`super::cmp_place`]).
    pub(super) fn place(&self) -> Place<'_> {
        let rank = match self.source {
            Source::K8s(_) => 0,
            Source::Weir {
                namespace: Some(_), ..
            } => 1,
            Source::Weir {
                namespace: None, ..
            } => 2,
        };
        (self.tier, self.order(), self.name, rank)
    }
}

impl PolicyRef {
    /// (name parts as [`super::cmp_names`] takes them, rank among kinds).
    fn name(&self) -> ((&str, Option<&str>), u8) {
        match self {
            PolicyRef::K8s(n) => ((&n.namespace, Some(&n.name)), 0),
            PolicyRef::Weir(n) => ((&n.namespace, Some(&n.name)), 1),
            PolicyRef::Global(n) => ((n, None), 2),
        }
    }
}

impl Plan {
    /// Makes the positions of each namespace's policies and of the global ones from `all`.
    fn index(&mut self) {
        self.by_namespace.clear();
        self.globals.clear();
        for (position, p) in self.all.iter().enumerate() {
            match &p.policy {
                PolicyRef::K8s(n) | PolicyRef::Weir(n) => {
                    match self.by_namespace.get_mut(n.namespace.as_str()) {
                        Some(positions) => positions.push(position),
                        None => {
                            self.by_namespace
                                .insert(n.namespace.clone(), vec![position]);
                        }
                    }
                }
                PolicyRef::Global(_) => self.globals.push(position),
            }
        }
    }
}

impl Planned {
    /// Where it goes in evaluation order (see [`super::cmp_place`]).
    fn place(&self) -> Place<'_> {
        let (name, rank) = self.policy.name();
        (self.tier, self.order, name, rank)
    }
}

impl<'a> Compiler<'a> {
    /// This compilation's plan: `kept` brought up to date when it can be (see the module
    /// doc), else made afresh. Returns it, the policies that apply (with their position
    /// in the plan) in evaluation order, and whether it was kept (then no policy changed
    /// since the last compilation).
    pub(super) fn planned(
        &self,
        kept: Option<Plan>,
        changed_policies: &[PolicyRef],
        names: &[&'a NamespacedName],
        tiers: &[&super::super::model::Tier],
        epoch: u64,
    ) -> (Plan, Vec<(Entry<'a>, usize)>, bool) {
        let kept = kept.filter(|p| {
            !self.whole
                && p.endpoints.len() == names.len()
                && p.endpoints.iter().zip(names).all(|(s, n)| s.name == **n)
        });
        // The endpoints as they are now, the last plan's records kept where they still
        // hold (copying every endpoint's labels costs more than comparing them).
        let seen = match kept {
            Some(mut plan) => {
                let changed = self.refresh(&mut plan.endpoints);
                if plan.epoch == epoch {
                    let taken = self.take_in(&mut plan, changed_policies, tiers);
                    if let Some(applying) =
                        taken.and_then(|()| self.update(&mut plan, &changed, tiers.len()))
                    {
                        return (plan, applying, true);
                    }
                }
                plan.endpoints
            }
            None => names
                .iter()
                .zip(&self.endpoints)
                .map(|(n, e)| Seen::of(n, e))
                .collect(),
        };
        let plan = self.fresh(seen, tiers, epoch);
        let applying = self
            .applying(&plan, tiers.len())
            .expect("a fresh plan names only policies of the model");
        (plan, applying, false)
    }

    /// A plan made from the model: every policy ordered and tested.
    fn fresh(&self, seen: Vec<Seen>, tiers: &[&super::super::model::Tier], epoch: u64) -> Plan {
        let mut plan = Plan {
            epoch,
            endpoints: seen,
            all: Vec::new(),
            by_namespace: FxHashMap::default(),
            globals: Vec::new(),
        };
        for entry in self.ordered_entries(tiers) {
            let selected: Vec<usize> = self
                .candidates(&entry)
                .filter(|&e| self.selects(&entry, e))
                .collect();
            plan.all.push(Planned {
                policy: entry.policy_ref(),
                tier: entry.tier,
                order: entry.order(),
                changed: false,
                set: self.addresses(&selected),
                selected,
            });
        }
        plan.index();
        plan
    }

    /// Takes changed namespaced policies into a kept plan, each out of its old place and
    /// into its new one with what it selects now; `None` if one cannot be placed (the
    /// caller then plans afresh).
    fn take_in(
        &self,
        plan: &mut Plan,
        changed: &[PolicyRef],
        tiers: &[&super::super::model::Tier],
    ) -> Option<()> {
        for p in &mut plan.all {
            p.changed = false;
        }
        if changed.is_empty() {
            return Some(());
        }
        let tier_of = |name: &str| tiers.iter().position(|t| t.name == name);
        for policy in changed {
            if let Some(at) = plan.all.iter().position(|p| p.policy == *policy) {
                plan.all.remove(at);
            }
            let cluster = self.cluster;
            let entry = match policy {
                PolicyRef::K8s(n) => match cluster.k8s_policies.get_key_value(n) {
                    Some((name, k)) => Some(Entry::k8s(tier_of(DEFAULT_TIER)?, name, k)),
                    None => None,
                },
                PolicyRef::Weir(n) => match cluster.policies.get_key_value(n) {
                    Some((name, w)) => Some(Entry::weir(tier_of(&w.spec.tier)?, name, w)),
                    None => None,
                },
                // Global policies change the plan through the epoch.
                PolicyRef::Global(_) => return None,
            };
            // Gone, or in a namespace without an endpoint here: not in the plan.
            let Some(entry) = entry.filter(|e| {
                e.namespace
                    .is_some_and(|ns| self.by_namespace.contains_key(ns))
            }) else {
                continue;
            };
            let selected: Vec<usize> = self
                .candidates(&entry)
                .filter(|&e| self.selects(&entry, e))
                .collect();
            let item = Planned {
                policy: entry.policy_ref(),
                tier: entry.tier,
                order: entry.order(),
                changed: true,
                set: self.addresses(&selected),
                selected,
            };
            let at = plan
                .all
                .partition_point(|p| cmp_place(p.place(), item.place()) != Ordering::Greater);
            plan.all.insert(at, item);
        }
        // Positions moved.
        plan.index();
        Some(())
    }

    /// Brings the records of the same endpoints up to date; returns which changed.
    fn refresh(&self, seen: &mut [Seen]) -> Vec<usize> {
        let mut changed = Vec::new();
        for (e, (s, endpoint)) in seen.iter_mut().zip(&self.endpoints).enumerate() {
            if !s.is(endpoint) {
                let name = s.name.clone();
                *s = Seen::of(&name, endpoint);
                changed.push(e);
            }
        }
        changed
    }

    /// Brings a kept plan up to date with the endpoints that changed; `None` if a policy
    /// it names is gone (the caller then plans afresh; the epoch says none can be).
    fn update(
        &self,
        plan: &mut Plan,
        changed: &[usize],
        tiers: usize,
    ) -> Option<Vec<(Entry<'a>, usize)>> {
        for &e in changed {
            let endpoint = &self.endpoints[e];
            let candidates: Vec<usize> = plan
                .by_namespace
                .get(&endpoint.pod.namespace)
                .into_iter()
                .flatten()
                .chain(&plan.globals)
                .copied()
                .collect();
            for i in candidates {
                let entry = self.entry_of(&plan.all[i], tiers)?;
                let selects = self.selects(&entry, e);
                let item = &mut plan.all[i];
                let at = item.selected.binary_search(&e);
                match (at, selects) {
                    (Ok(at), false) => {
                        item.selected.remove(at);
                    }
                    (Err(at), true) => item.selected.insert(at, e),
                    (Ok(_), true) => {}
                    (Err(_), false) => continue,
                }
                // Selected before or now: its addresses may have changed with it.
                item.set = self.addresses(&item.selected);
            }
        }
        self.applying(plan, tiers)
    }

    /// The policies of a plan that apply (all of them when every pod is an endpoint),
    /// found in the model.
    fn applying(&self, plan: &Plan, tiers: usize) -> Option<Vec<(Entry<'a>, usize)>> {
        plan.all
            .iter()
            .enumerate()
            .filter(|(_, p)| self.whole || !p.selected.is_empty())
            .map(|(i, p)| Some((self.entry_of(p, tiers)?, i)))
            .collect()
    }

    /// A planned policy as the model holds it now.
    fn entry_of(&self, p: &Planned, tiers: usize) -> Option<Entry<'a>> {
        if p.tier >= tiers {
            return None;
        }
        let cluster = self.cluster;
        match &p.policy {
            PolicyRef::K8s(n) => cluster
                .k8s_policies
                .get_key_value(n)
                .map(|(name, k)| Entry::k8s(p.tier, name, k)),
            PolicyRef::Weir(n) => cluster
                .policies
                .get_key_value(n)
                .map(|(name, w)| Entry::weir(p.tier, name, w)),
            PolicyRef::Global(n) => cluster
                .global_policies
                .get_key_value(n)
                .map(|(name, g)| Entry::global(p.tier, name, g)),
        }
    }

    /// The addresses of some endpoints.
    fn addresses(&self, selected: &[usize]) -> NetSet {
        if selected.is_empty() {
            return NetSet::new();
        }
        NetSet::from_prefixes(
            selected
                .iter()
                .flat_map(|&e| host_prefixes(self.endpoints[e].pod)),
        )
    }
}
