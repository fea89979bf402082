//! The selector cache kept between compilations: what each selector resolved to, the
//! named-port sets, the programs of the last compilation, and the indexes that say which
//! of them a change to a pod, a namespace or a network set can affect (see the parent
//! module's doc).

use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use weir_dataplane::policy::program::PortSetId;
use weir_dataplane::policy::{
    Direction, NetSet, Program, Rule as CompiledRule, RuleId, RuleInfo, Tier as CompiledTier,
};

use super::super::load::Cluster;
use super::super::model::{K8sNetworkPolicy, NamespacedName, Pod, PolicySpec};
use super::super::selector::{Labels, Selector};
use super::Scope;

/// A cached selector resolution: what a selector picks in a scope, pods and network sets,
/// or pods only (a Kubernetes peer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CacheKey {
    pub(super) scope: Scope,
    pub(super) selector: Selector,
    pub(super) pods_only: bool,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) key: CacheKey,
    /// `None` once invalidated; resolved again when next asked for.
    pub(super) set: Option<NetSet>,
    /// For a scope chosen by a namespaceSelector, `set` by namespace (while `set` is held).
    pub(super) parts: Option<Parts>,
    /// The compilation that last asked for it.
    pub(super) used: u64,
    /// Changes whenever `set` does (resolved, or invalidated).
    pub(super) version: u64,
}

/// A resolution whose scope a namespaceSelector chooses, by namespace: what the selector
/// picks in each namespace in scope (only those where it picks something), and among the
/// global network sets (under [`super::resolve::GLOBAL_PART`]). A namespace whose labels
/// change, or whose pods or network sets do, is marked dirty; the next compilation takes
/// its part again (a walk over its own pods) and makes the union afresh if the part
/// differs, instead of walking every pod in scope. At 150 000 pods a namespaceSelector
/// such as `team != 'a'` spans most of them: a namespace label change re-resolved two
/// such selectors in about 10 ms.
#[derive(Debug, Default, Clone)]
pub(super) struct Parts {
    by_namespace: FxHashMap<String, Vec<(IpAddr, u8)>>,
    /// Namespaces to take again, in no order (`GLOBAL_PART` for the global sets).
    dirty: Vec<String>,
}

impl Parts {
    /// Sets `namespace`'s part (none when `prefixes` is empty).
    pub(super) fn set(&mut self, namespace: &str, prefixes: Vec<(IpAddr, u8)>) {
        if prefixes.is_empty() {
            self.by_namespace.remove(namespace);
        } else {
            self.by_namespace.insert(namespace.to_owned(), prefixes);
        }
    }

    /// The union of the parts.
    pub(super) fn union(&self) -> NetSet {
        NetSet::from_prefixes(self.by_namespace.values().flatten().copied())
    }

    fn mark(&mut self, namespace: &str) {
        if !self.dirty.iter().any(|d| d == namespace) {
            self.dirty.push(namespace.to_owned());
        }
    }
}

/// What a named-port set stands for: the names (sorted, joined by commas), the protocol,
/// and whether it holds this node's endpoints only (`true`: a destination port of an
/// ingress rule or a source port of an egress rule, which always name the local endpoint's
/// own port) or every endpoint of the cluster. A local set is taken again from this node's
/// endpoints at every compilation, so a pod added or deleted elsewhere neither walks the
/// cluster's pods nor rebuilds this node's programs for it.
pub(super) type NamedKey = (String, Option<u8>, bool);

/// The (address, protocol, port) of every endpoint container port that carries one of a
/// rule's port names; addresses in [`weir_dataplane::flow::FlowKey::map_ip`] form.
pub(super) type NamedPortSet = FxHashSet<([u8; 16], u8, u16)>;

/// Selector resolutions and named-port sets kept between compilations, with the indexes
/// that say which of them a change can affect. See the module doc.
#[derive(Debug, Default)]
pub struct Cache {
    pub(super) slots: Vec<Slot>,
    pub(super) ids: FxHashMap<CacheKey, usize>,
    /// Slots whose scope is one namespace, by that namespace.
    pub(super) by_namespace: FxHashMap<String, Vec<usize>>,
    /// Slots whose scope spans namespaces (a namespaceSelector, or the cluster).
    pub(super) cross: Vec<usize>,
    /// The label index: label key to the slots whose selector reads it.
    pub(super) by_key: FxHashMap<String, Vec<usize>>,
    /// Slots whose scope is chosen by a namespaceSelector.
    pub(super) by_ns_selector: Vec<usize>,
    /// Slots with dirty parts (see [`Parts`]), taken again by [`Cache::catch_up`].
    pub(super) dirty: Vec<usize>,
    pub(super) named: FxHashMap<NamedKey, Arc<NamedPortSet>>,
    /// The programs of the last compilation, by a hash of their tiers (see
    /// [`KeptProgram::content`]).
    pub(super) programs: FxHashMap<u64, Vec<KeptProgram>>,
    /// The same programs by the rule lists they were made of (see [`ProgramKey`]), where
    /// every list was cached.
    pub(super) programs_by_lists: FxHashMap<ProgramKey, KeptProgram>,
    /// Where rule list versions come from (see [`PolicyRules::version`]).
    pub(super) rule_versions: u64,
    /// Rule ids, by what they stand for.
    pub(super) rule_ids: StableIds<RuleInfo>,
    /// Address set ids, by content.
    pub(super) net_ids: StableIds<NetSet>,
    /// Named-port set ids, by [`NamedKey`]; their content is `named`'s.
    pub(super) named_ids: StableIds<NamedKey>,
    /// Each policy's compiled rules per direction, from the last compilation.
    pub(super) rules: FxHashMap<(String, Direction), PolicyRules>,
    /// Where slot versions come from.
    pub(super) versions: u64,
    pub(super) generation: u64,
    /// Resolutions answered from the cache, and computed.
    pub hits: u64,
    pub misses: u64,
    /// Policy rule lists (per direction) taken from the last compilation, and compiled.
    pub rules_kept: u64,
    pub rules_compiled: u64,
    /// Compilations that brought the last one's plan up to date, and that made one afresh
    /// (see `plan`).
    pub plans_kept: u64,
    pub plans_made: u64,
    /// Where the compilations' time went, summed over them.
    pub times: CompileTimes,
    /// Set when a resolution the last compilation used was invalidated, or the named-port
    /// sets were: that compilation's tables may be out of date.
    pub(super) stale: bool,
    /// Whether the last compilation resolved selectors outside the cache (a
    /// serviceAccounts match): then any pod, namespace or service account may change it.
    pub(super) uncached_reads: bool,
    /// Changes whenever a tier or a global policy may have changed, or everything was
    /// listed again (see [`Cache::selection_changed`]).
    pub(super) selection_epoch: u64,
    /// The last compilation's policies in evaluation order with the endpoints each
    /// selects (see `plan`).
    pub(super) plan: Option<super::plan::Plan>,
    /// Namespaced policies changed since the last compilation, for its plan to take in
    /// one by one (see [`Cache::policy_changed`]).
    pub(super) changed_policies: Vec<super::plan::PolicyRef>,
}

/// Where compilations spent their time, summed over compilations: the benchmark's split of
/// one change's cost. `resolving` is inside `rules` (resolutions are asked for while rule
/// lists are compiled); the rest of `total` is the pass every compilation makes over the
/// policies of the node's namespaces and its endpoints (ordering, selection, programs
/// looked up by content, the tables' id maps).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompileTimes {
    pub compilations: u64,
    pub total: std::time::Duration,
    /// Selector resolutions computed (cache misses, and those a serviceAccounts match keeps
    /// out of the cache).
    pub resolving: std::time::Duration,
    /// Policy rule lists compiled (not kept from the compilation before).
    pub rules: std::time::Duration,
    /// Programs (decision structures) built.
    pub programs: std::time::Duration,
    pub programs_built: u64,
}

impl std::ops::AddAssign for CompileTimes {
    fn add_assign(&mut self, other: CompileTimes) {
        self.compilations += other.compilations;
        self.total += other.total;
        self.resolving += other.resolving;
        self.rules += other.rules;
        self.programs += other.programs;
        self.programs_built += other.programs_built;
    }
}

impl CompileTimes {
    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &CompileTimes) -> CompileTimes {
        CompileTimes {
            compilations: self.compilations - earlier.compilations,
            total: self.total.saturating_sub(earlier.total),
            resolving: self.resolving.saturating_sub(earlier.resolving),
            rules: self.rules.saturating_sub(earlier.rules),
            programs: self.programs.saturating_sub(earlier.programs),
            programs_built: self.programs_built.saturating_sub(earlier.programs_built),
        }
    }
}

/// Ids that stay with what they name from one compilation to the next (rule ids, address
/// set ids), so that a change shifts no one else's: programs are kept by their rules, ids
/// included, and an id given out afresh would make every later program look new.
///
/// An id is held while a compilation uses it; one that a compilation did not use is freed
/// when it ends ([`StableIds::release_unused`]) and may name something else later. No kept
/// program can name a freed id: programs are kept only from the compilation before.
#[derive(Debug)]
pub(super) struct StableIds<K> {
    ids: FxHashMap<K, u32>,
    /// By id: what it names (`None` once freed), and the compilation that last used it.
    items: Vec<(Option<K>, u64)>,
    free: Vec<u32>,
}

impl<K> Default for StableIds<K> {
    fn default() -> Self {
        StableIds {
            ids: FxHashMap::default(),
            items: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> StableIds<K> {
    /// The id of `key`, given out now if it has none.
    pub(super) fn id(&mut self, key: K, generation: u64) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            self.items[id as usize].1 = generation;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.items[id as usize] = (Some(key.clone()), generation);
                id
            }
            None => {
                self.items.push((Some(key.clone()), generation));
                (self.items.len() - 1) as u32
            }
        };
        self.ids.insert(key, id);
        id
    }

    /// Marks an id given out earlier as used by `generation`.
    pub(super) fn touch(&mut self, id: u32, generation: u64) {
        if let Some((Some(_), used)) = self.items.get_mut(id as usize) {
            *used = generation;
        }
    }

    /// Whether `key` has an id held.
    pub(super) fn holds(&self, key: &K) -> bool {
        self.ids.contains_key(key)
    }

    /// What `id` names, if it is held.
    pub(super) fn get(&self, id: u32) -> Option<&K> {
        self.items.get(id as usize).and_then(|(k, _)| k.as_ref())
    }

    /// Whether `generation` used `id`.
    pub(super) fn used_by(&self, id: u32, generation: u64) -> bool {
        self.items
            .get(id as usize)
            .is_some_and(|(k, used)| k.is_some() && *used == generation)
    }

    /// Ids given out (held or free).
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// Frees the ids `generation` did not use.
    pub(super) fn release_unused(&mut self, generation: u64) {
        for (id, (key, used)) in self.items.iter_mut().enumerate() {
            if *used != generation {
                if let Some(k) = key.take() {
                    self.ids.remove(&k);
                    self.free.push(id as u32);
                }
            }
        }
    }

    /// Everything by id, a freed id holding `vacant`.
    pub(super) fn table(&self, vacant: &K) -> Vec<K> {
        self.items
            .iter()
            .map(|(k, _)| k.as_ref().unwrap_or(vacant).clone())
            .collect()
    }
}

/// A policy's rules in one direction as the last compilation compiled them, with what they
/// were compiled from: kept while the policy, its tier and every selector resolution it
/// read are unchanged (and it was compiled in the compilation just before, so that every id
/// it names is still held).
#[derive(Debug)]
pub(super) struct PolicyRules {
    pub(super) source: RulesSource,
    pub(super) tier: String,
    /// (slot, version) of every resolution read.
    pub(super) slots: Vec<(usize, u64)>,
    pub(super) rule_ids: Vec<RuleId>,
    pub(super) named: Vec<PortSetId>,
    pub(super) rules: Option<std::sync::Arc<[CompiledRule]>>,
    pub(super) used: u64,
    /// Given when the list is compiled, kept with it: the list's name in [`ProgramKey`]s.
    pub(super) version: u64,
}

/// The policy a [`PolicyRules`] was compiled from.
#[derive(Debug, PartialEq)]
pub(super) enum RulesSource {
    K8s(K8sNetworkPolicy),
    Weir(Option<String>, PolicySpec),
}

/// The ids a policy's rules name, collected while they are compiled.
#[derive(Debug, Default)]
pub(super) struct Recording {
    pub(super) slots: Vec<(usize, u64)>,
    pub(super) rule_ids: Vec<RuleId>,
    pub(super) named: Vec<PortSetId>,
    /// False when a set was resolved outside the cache (a serviceAccounts match).
    pub(super) uncached: bool,
}

/// A program kept for the next compilation, with what its named-port sets stood for.
#[derive(Debug, Clone)]
pub(super) struct KeptProgram {
    /// What each named-port set it names stood for (ids are given out per compilation).
    /// Not their content: a program's decision structure admits every port for a named
    /// port and its rule's full test reads the set from the tables, so a program stays
    /// right when the content changes.
    pub(super) named: Vec<NamedKey>,
    pub(super) program: Arc<Program>,
    /// A hash of its tiers (equal tiers, equal hash).
    pub(super) content: u64,
}

/// What a program is made of, named without its rules: the direction, then per policy
/// in evaluation order its tier (the tier end's rule id and default action) and the
/// version of its rule list in that direction. Equal keys, equal tiers: a version names
/// one compiled list (kept lists keep theirs), and rule and set ids keep their meaning
/// while a program is kept. Looking a program up by this key spares building its tiers
/// (copies of every rule) and hashing them, which every endpoint of every compilation did.
pub(super) type ProgramKey = Vec<u64>;

/// The hash a [`KeptProgram`] is found by.
pub(super) fn content_hash(tiers: &[CompiledTier]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(tiers)
}

/// The named-port sets a program's rules name, in order of first use.
pub(super) fn referenced_named_sets(tiers: &[CompiledTier]) -> Vec<PortSetId> {
    let mut named = Vec::new();
    for rule in tiers.iter().flat_map(|t| &t.rules) {
        let m = &rule.matches;
        for ports in [
            &m.src_ports,
            &m.not_src_ports,
            &m.dst_ports,
            &m.not_dst_ports,
        ] {
            if let Some(id) = ports.named {
                if !named.contains(&id) {
                    named.push(id);
                }
            }
        }
    }
    named
}

/// Whether a pod is an endpoint (has an address and its own network).
pub(super) fn is_endpoint(pod: &Pod) -> bool {
    !pod.host_network && !pod.ips.is_empty()
}

impl Cache {
    /// Number of cached selector resolutions (valid or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether the last compilation's tables may be out of date through what this cache
    /// tracks (see the parent module's doc): a resolution it used was invalidated, the
    /// named-port sets changed, or `model_changed` was told of a change it may have read.
    pub fn stale(&self) -> bool {
        self.stale
    }

    /// A pod, namespace or service account changed: the last compilation is out of date if
    /// it read such objects outside the resolutions this cache tracks.
    pub fn model_changed(&mut self) {
        self.stale |= self.uncached_reads;
    }

    /// A tier or a global policy may have changed (or everything was listed again): the
    /// next compilation orders and selects the policies afresh instead of keeping the last
    /// one's plan. Endpoints the compilation compares itself; namespaced policies are
    /// told one by one ([`Cache::policy_changed`]).
    pub fn selection_changed(&mut self) {
        self.selection_epoch += 1;
    }

    /// A namespaced policy that can apply here was added, changed or deleted (`kubernetes`:
    /// a networking.k8s.io one): the next compilation puts it in (or takes it out of) the
    /// kept plan alone, instead of ordering and selecting every policy afresh.
    pub fn policy_changed(&mut self, kubernetes: bool, policy: &NamespacedName) {
        let r = if kubernetes {
            super::plan::PolicyRef::K8s(policy.clone())
        } else {
            super::plan::PolicyRef::Weir(policy.clone())
        };
        if !self.changed_policies.contains(&r) {
            self.changed_policies.push(r);
        }
    }

    /// A compilation's tables are what they were compiled from.
    pub(super) fn compiled(&mut self) {
        self.stale = false;
    }

    pub(super) fn admits(scope: &Scope, namespace: &str, ns_labels: &Labels) -> bool {
        match scope {
            Scope::Namespace(n) => n == namespace,
            Scope::Namespaces(sel) => sel.matches(ns_labels),
            Scope::Cluster => true,
        }
    }

    pub(super) fn invalidate(&mut self, slot: usize) {
        self.stale |= self.slots[slot].used == self.generation;
        self.versions += 1;
        self.slots[slot].set = None;
        self.slots[slot].parts = None;
        self.slots[slot].version = self.versions;
    }

    /// `namespace`'s part of a held resolution kept by parts may differ: marked for
    /// [`Cache::catch_up`]; any other resolution is invalidated.
    fn touch_namespace(&mut self, slot: usize, namespace: &str) {
        let s = &mut self.slots[slot];
        match (&s.set, &mut s.parts) {
            (Some(_), Some(parts)) => {
                if parts.dirty.is_empty() {
                    self.dirty.push(slot);
                }
                parts.mark(namespace);
                self.stale |= s.used == self.generation;
            }
            _ => self.invalidate(slot),
        }
    }

    /// Takes the dirty parts again from `cluster` (as it is now), and makes a resolution's
    /// set afresh (a new version) where a part differs.
    pub(super) fn catch_up(&mut self, cluster: &Cluster) {
        for slot in std::mem::take(&mut self.dirty) {
            let Some(s) = self.slots.get_mut(slot) else {
                continue;
            };
            let (Some(set), Some(parts)) = (&mut s.set, &mut s.parts) else {
                continue;
            };
            let Scope::Namespaces(sel) = &s.key.scope else {
                continue;
            };
            let mut changed = false;
            for namespace in std::mem::take(&mut parts.dirty) {
                let part = if namespace == super::resolve::GLOBAL_PART {
                    if s.key.pods_only || !sel.mentions_global() {
                        Vec::new()
                    } else {
                        super::resolve::global_part(cluster, &s.key.selector)
                    }
                } else if cluster
                    .namespaces
                    .get(&namespace)
                    .is_some_and(|ns| sel.matches(&ns.labels))
                {
                    super::resolve::namespace_part(
                        cluster,
                        &namespace,
                        &s.key.selector,
                        None,
                        s.key.pods_only,
                    )
                } else {
                    Vec::new()
                };
                let old = parts
                    .by_namespace
                    .get(&namespace)
                    .map_or(&[][..], Vec::as_slice);
                if old != part.as_slice() {
                    parts.set(&namespace, part);
                    changed = true;
                }
            }
            if changed {
                *set = parts.union();
                self.versions += 1;
                s.version = self.versions;
            }
        }
    }

    /// Whether every resolution recorded is held as it was.
    pub(super) fn unchanged(&self, slots: &[(usize, u64)]) -> bool {
        slots.iter().all(|&(s, version)| {
            self.slots
                .get(s)
                .is_some_and(|slot| slot.version == version && slot.set.is_some())
        })
    }

    /// A pod was added (`old` None), removed (`new` None) or changed; `ns_labels` are its
    /// namespace's labels. Invalidates exactly the resolutions whose result can differ.
    pub fn pod_changed(&mut self, old: Option<&Pod>, new: Option<&Pod>, ns_labels: &Labels) {
        let (old_ep, new_ep) = (
            old.filter(|p| is_endpoint(p)),
            new.filter(|p| is_endpoint(p)),
        );
        let Some(namespace) = old.or(new).map(|p| p.namespace.clone()) else {
            return;
        };
        let named =
            |p: Option<&Pod>| p.is_some_and(|p| p.container_ports.iter().any(|c| c.name.is_some()));
        if (named(old) || named(new))
            && (old_ep.map(|p| (&p.ips, &p.container_ports))
                != new_ep.map(|p| (&p.ips, &p.container_ports)))
        {
            // Sets of the cluster's endpoints are taken again when next asked for; sets
            // of this node's endpoints are compared at every compilation (which this
            // forces: the pod may be one of them).
            self.stale |= !self.named.is_empty();
            let cluster: Vec<NamedKey> = self.named.keys().filter(|k| !k.2).cloned().collect();
            for key in cluster {
                self.named.remove(&key);
            }
        }
        if old_ep.is_none() && new_ep.is_none() {
            return;
        }
        let candidates: Vec<usize> = match (old_ep, new_ep) {
            (Some(a), Some(b)) if a.ips == b.ips => {
                // Same addresses: only selectors reading a changed label can flip.
                let mut changed: Vec<&str> = a
                    .labels
                    .iter()
                    .filter(|(k, v)| b.labels.get(*k) != Some(*v))
                    .map(|(k, _)| k.as_str())
                    .chain(
                        b.labels
                            .keys()
                            .filter(|k| !a.labels.contains_key(*k))
                            .map(String::as_str),
                    )
                    .collect();
                changed.sort_unstable();
                changed.dedup();
                let mut c: Vec<usize> = changed
                    .iter()
                    .filter_map(|k| self.by_key.get(*k))
                    .flatten()
                    .copied()
                    .collect();
                c.sort_unstable();
                c.dedup();
                c.retain(|&s| {
                    let sel = &self.slots[s].key.selector;
                    sel.matches(&a.labels) != sel.matches(&b.labels)
                });
                c
            }
            _ => {
                let hit =
                    |sel: &Selector, p: Option<&Pod>| p.is_some_and(|p| sel.matches(&p.labels));
                self.by_namespace
                    .get(&namespace)
                    .into_iter()
                    .flatten()
                    .chain(self.cross.iter())
                    .copied()
                    .filter(|&s| {
                        let sel = &self.slots[s].key.selector;
                        hit(sel, old_ep) || hit(sel, new_ep)
                    })
                    .collect()
            }
        };
        for s in candidates {
            if Self::admits(&self.slots[s].key.scope, &namespace, ns_labels) {
                self.touch_namespace(s, &namespace);
            }
        }
    }

    /// A namespace's labels changed (or it appeared or went): the resolutions scoped by a
    /// namespaceSelector that now picks it differently.
    pub fn namespace_changed(&mut self, namespace: &str, old: &Labels, new: &Labels) {
        let hit: Vec<usize> = self
            .by_ns_selector
            .iter()
            .copied()
            .filter(|&s| match &self.slots[s].key.scope {
                Scope::Namespaces(sel) => sel.matches(old) != sel.matches(new),
                _ => false,
            })
            .collect();
        for s in hit {
            self.touch_namespace(s, namespace);
        }
    }

    /// A NetworkSet (`namespace` Some) or GlobalNetworkSet changed; the labels before and
    /// after, `None` where it did not exist.
    pub fn network_set_changed(
        &mut self,
        namespace: Option<(&str, &Labels)>,
        old: Option<&Labels>,
        new: Option<&Labels>,
    ) {
        let hit: Vec<usize> = (0..self.slots.len())
            .filter(|&s| {
                let key = &self.slots[s].key;
                if key.pods_only {
                    return false;
                }
                let in_scope = match (namespace, &key.scope) {
                    (Some((ns, labels)), scope) => Self::admits(scope, ns, labels),
                    (None, Scope::Cluster) => true,
                    (None, Scope::Namespaces(sel)) => sel.mentions_global(),
                    (None, Scope::Namespace(_)) => false,
                };
                in_scope
                    && (old.is_some_and(|l| key.selector.matches(l))
                        || new.is_some_and(|l| key.selector.matches(l)))
            })
            .collect();
        let part = namespace.map_or(super::resolve::GLOBAL_PART, |(ns, _)| ns);
        for s in hit {
            self.touch_namespace(s, part);
        }
    }

    /// The slot of a resolution that is held and valid (marked used).
    pub(super) fn valid_slot(&mut self, key: &CacheKey) -> Option<usize> {
        let generation = self.generation;
        let &id = self.ids.get(key)?;
        let slot = &mut self.slots[id];
        slot.used = generation;
        slot.set.is_some().then_some(id)
    }

    /// Stores a resolution; returns its slot.
    pub(super) fn put(&mut self, key: CacheKey, set: NetSet, parts: Option<Parts>) -> usize {
        self.versions += 1;
        if let Some(&id) = self.ids.get(&key) {
            self.slots[id].set = Some(set);
            self.slots[id].parts = parts;
            self.slots[id].version = self.versions;
            return id;
        }
        let id = self.slots.len();
        match &key.scope {
            Scope::Namespace(ns) => self.by_namespace.entry(ns.clone()).or_default().push(id),
            Scope::Namespaces(_) => {
                self.cross.push(id);
                self.by_ns_selector.push(id);
            }
            Scope::Cluster => self.cross.push(id),
        }
        let mut keys = Vec::new();
        key.selector.keys(&mut keys);
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            self.by_key.entry(k.to_owned()).or_default().push(id);
        }
        self.ids.insert(key.clone(), id);
        self.slots.push(Slot {
            key,
            set: Some(set),
            parts,
            used: self.generation,
            version: self.versions,
        });
        id
    }

    /// Drops the resolutions the last compilation did not use once they outnumber the
    /// used ones, so that policies that come and go do not make the cache grow forever.
    pub(super) fn trim(&mut self) {
        let used = self
            .slots
            .iter()
            .filter(|s| s.used == self.generation)
            .count();
        if self.slots.len() - used <= used.max(256) {
            return;
        }
        let generation = self.generation;
        let keep: Vec<Slot> = std::mem::take(&mut self.slots)
            .into_iter()
            .filter(|s| s.used == generation)
            .collect();
        let (hits, misses, named) = (self.hits, self.misses, std::mem::take(&mut self.named));
        let (rules_kept, rules_compiled) = (self.rules_kept, self.rules_compiled);
        let programs = std::mem::take(&mut self.programs);
        let programs_by_lists = std::mem::take(&mut self.programs_by_lists);
        let rule_ids = std::mem::take(&mut self.rule_ids);
        let net_ids = std::mem::take(&mut self.net_ids);
        let named_ids = std::mem::take(&mut self.named_ids);
        // The kept rules name slots by index, which change here: they are compiled again.
        *self = Cache {
            hits,
            misses,
            rules_kept,
            rules_compiled,
            named,
            programs,
            programs_by_lists,
            rule_versions: self.rule_versions,
            times: self.times,
            stale: self.stale,
            uncached_reads: self.uncached_reads,
            rule_ids,
            net_ids,
            named_ids,
            versions: self.versions,
            generation,
            ..Cache::default()
        };
        for slot in keep {
            if let Some(set) = slot.set {
                let id = self.put(slot.key, set, slot.parts);
                if self.slots[id]
                    .parts
                    .as_ref()
                    .is_some_and(|p| !p.dirty.is_empty())
                {
                    self.dirty.push(id);
                }
            }
        }
    }
}
