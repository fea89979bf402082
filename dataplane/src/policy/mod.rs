//! Network policy as the workers see it: compiled per-endpoint programs, the address and
//! port sets they refer to, and per-worker connection tracking. The control plane compiles
//! Kubernetes NetworkPolicies and weir's tiered policies into these; see `program` for the
//! evaluation model.

pub mod classes;
pub mod conntrack;
mod index;
mod matrix;
pub mod netset;
pub mod program;

pub use conntrack::{Conntrack, ConntrackConfig, ConntrackStats};
pub use netset::NetSet;
pub use program::{Action, Decision, Program, Rule, RuleId, Sets, Tier, TierEnd, Verdict};

use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::policy::classes::AddrClasses;
use crate::snapshot::EndpointId;

/// Which way a program looks at traffic, from its endpoint's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

/// One endpoint's programs. `None`: no tier applies to the endpoint in that direction, so
/// that direction is open (Kubernetes: "a pod selected by no policy is non-isolated").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    pub ingress: Option<Arc<Program>>,
    pub egress: Option<Arc<Program>>,
}

/// What a rule id stands for, for explanations and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub tier: String,
    /// `namespace/name` for namespaced policies, `name` for global ones; empty for the end
    /// of a tier.
    pub policy: String,
    pub direction: Direction,
    /// The rule's index in the policy's rule list; `None` for the end of a tier (its
    /// default action) or a policy's implicit end.
    pub index: Option<usize>,
}

impl std::fmt::Display for RuleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = match self.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        match (&self.index, self.policy.is_empty()) {
            (Some(i), false) => write!(
                f,
                "tier {}, policy {}, {dir} rule {i}",
                self.tier, self.policy
            ),
            (None, false) => write!(f, "tier {}, policy {}, {dir}", self.tier, self.policy),
            _ => write!(f, "tier {}, {dir}: end of tier (default action)", self.tier),
        }
    }
}

/// Everything the policy stage reads from a snapshot: the endpoints' programs, the sets
/// they refer to, and what decides fast (`Fast`).
#[derive(Debug, Clone, Default)]
pub struct PolicyTables {
    /// Indexed by `EndpointId`; endpoints past the end have no policy.
    endpoints: Vec<EndpointPolicy>,
    sets: Sets,
    /// Indexed by `RuleId`.
    rules: Vec<RuleInfo>,
    fast: Arc<Fast>,
    /// Why the address classes could not be built, if they could not: every program is
    /// then decided by its index or rule by rule.
    degraded: Option<String>,
}

/// The lookup structures of one snapshot's policy, laid out for the workers: the address
/// classes (`classes`), the decision matrices of the distinct programs one after another
/// in one array with their row maps bound to those classes (`matrix`), and two small
/// tables that lead from an endpoint or an address class to its programs. A lookup from
/// the raw 5-tuple reads the class table, one entry of `by_class` per address, and each
/// program's matrix: no pointer is followed.
#[derive(Debug, Default)]
struct Fast {
    classes: AddrClasses,
    /// The matrices (see `matrix::classify_at`).
    arena: Vec<u32>,
    /// Every decision a matrix can reach, numbered.
    decisions: Vec<Decision>,
    /// Per endpoint, where its `[egress, ingress]` programs are (see [`Place`]).
    by_endpoint: Vec<[u32; 2]>,
    /// Per address class: the endpoint it is (`NONE` if none), its `[egress, ingress]`
    /// programs, and a word of padding (16 bytes, one load).
    by_class: Vec<[u32; 4]>,
    /// Programs without a matrix.
    fallback: Vec<Arc<Program>>,
}

/// A program's place: `NONE` (no program: open), `FALLBACK | n` (`Fast::fallback[n]`), or
/// the offset of its matrix in `Fast::arena`.
const NONE: u32 = u32::MAX;
const FALLBACK: u32 = 1 << 31;

const EGRESS: usize = 0;
const INGRESS: usize = 1;

/// The combined verdict for traffic from one endpoint to another, with what decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathDecision {
    pub verdict: Verdict,
    /// The direction that decided a deny (egress of the source is checked first).
    pub denied_by: Option<Direction>,
    /// The deciding rule of the egress and the ingress check (`None` if that side has no
    /// program or every tier passed).
    pub egress: Option<Decision>,
    pub ingress: Option<Decision>,
}

impl PathDecision {
    /// Allowed, with no program deciding.
    pub const ALLOW: PathDecision = PathDecision {
        verdict: Verdict::Allow,
        denied_by: None,
        egress: None,
        ingress: None,
    };
}

impl PolicyTables {
    /// The tables of `endpoints` (indexed by `EndpointId`), whose programs refer to `sets`
    /// and whose rule ids to `rules`; `addresses` are the local endpoints' addresses, which
    /// [`PolicyTables::evaluate_flow`] finds the endpoints of a packet by.
    ///
    /// The matrices of one snapshot take at most 64 MiB; programs past that are decided
    /// by their bit-vector index ([`PolicyTables::index_programs`] counts them).
    pub fn new(
        endpoints: Vec<EndpointPolicy>,
        sets: Sets,
        rules: Vec<RuleInfo>,
        addresses: &[(EndpointId, IpAddr)],
    ) -> PolicyTables {
        Self::with_budget(endpoints, sets, rules, addresses, matrix::ARENA_BUDGET)
    }

    /// [`PolicyTables::new`] with the matrices' arena limited to `budget` words.
    pub(crate) fn with_budget(
        endpoints: Vec<EndpointPolicy>,
        sets: Sets,
        rules: Vec<RuleInfo>,
        addresses: &[(EndpointId, IpAddr)],
        budget: usize,
    ) -> PolicyTables {
        let keyed: Vec<(EndpointId, [u8; 16])> = addresses
            .iter()
            .map(|&(e, ip)| (e, crate::flow::FlowKey::map_ip(ip)))
            .collect();
        let (classes, degraded) = match AddrClasses::build(&sets, &keyed) {
            Ok(c) => (c, None),
            Err(e) => (
                // Without addresses, no class has an endpoint: `evaluate_flow` then finds
                // none, so it is not used (see `degraded`).
                AddrClasses::build(&Sets::default(), &[]).unwrap_or_default(),
                Some(format!(
                    "policy address classes could not be built ({e}): every program is \
                     decided by its bit-vector index, exact but slower"
                )),
            ),
        };
        let mut fast = Fast {
            classes,
            ..Fast::default()
        };
        let mut numbers: FxHashMap<Decision, u32> = FxHashMap::default();
        let mut places: FxHashMap<*const Program, u32> = FxHashMap::default();
        let mut maps = matrix::RowMaps::default();
        let mut place = |p: &Option<Arc<Program>>, fast: &mut Fast| -> u32 {
            let Some(p) = p else { return NONE };
            if let Some(&at) = places.get(&Arc::as_ptr(p)) {
                return at;
            }
            let emitted = p.matrix().filter(|_| degraded.is_none()).and_then(|m| {
                let Fast {
                    classes,
                    arena,
                    decisions,
                    ..
                } = fast;
                m.emit(classes, arena, &mut maps, budget, |d| {
                    *numbers.entry(*d).or_insert_with(|| {
                        decisions.push(*d);
                        (decisions.len() - 1) as u32
                    })
                })
            });
            let at = match emitted {
                Some(at) => at as u32,
                None => {
                    fast.fallback.push(p.clone());
                    FALLBACK | (fast.fallback.len() - 1) as u32
                }
            };
            places.insert(Arc::as_ptr(p), at);
            at
        };
        let by_endpoint: Vec<[u32; 2]> = endpoints
            .iter()
            .map(|e| [place(&e.egress, &mut fast), place(&e.ingress, &mut fast)])
            .collect();
        fast.by_class = (0..fast.classes.len() as u32)
            .map(|c| match fast.classes.endpoint(c) {
                Some(e) => {
                    let [eg, ing] = by_endpoint.get(e as usize).copied().unwrap_or([NONE; 2]);
                    [e, eg, ing, 0]
                }
                None => [NONE, NONE, NONE, 0],
            })
            .collect();
        fast.by_endpoint = by_endpoint;
        PolicyTables {
            endpoints,
            sets,
            rules,
            fast: Arc::new(fast),
            degraded,
        }
    }

    /// The programs, indexed by `EndpointId`.
    pub fn endpoints(&self) -> &[EndpointPolicy] {
        &self.endpoints
    }

    /// The address and port sets the programs refer to.
    pub fn sets(&self) -> &Sets {
        &self.sets
    }

    /// What each rule id stands for.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }

    /// The address classes the programs are decided with.
    pub fn classes(&self) -> &AddrClasses {
        &self.fast.classes
    }

    /// Why the tables decide without address classes, if they do.
    pub fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }

    /// Heap bytes of everything the workers read or the tables keep: the address classes,
    /// the matrix arena and the tables leading to it, every distinct program (its rules
    /// with their port ranges, its matrix or index as built), the address sets, the
    /// named-port sets (hash table capacity) and the rule descriptions. Programs shared by
    /// endpoints count once.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let f = &*self.fast;
        let mut bytes = f.classes.memory_bytes()
            + f.arena.capacity() * 4
            + f.decisions.capacity() * size_of::<Decision>()
            + f.by_endpoint.capacity() * 8
            + f.by_class.capacity() * 16
            + f.fallback.capacity() * 8
            + self.endpoints.capacity() * size_of::<EndpointPolicy>();
        let mut seen: FxHashMap<*const Program, ()> = FxHashMap::default();
        for p in self
            .endpoints
            .iter()
            .flat_map(|e| [&e.egress, &e.ingress])
            .flatten()
        {
            if seen.insert(Arc::as_ptr(p), ()).is_none() {
                bytes += size_of::<Program>() + p.index_bytes() + p.rules_bytes();
            }
        }
        bytes += self.sets.nets.capacity() * size_of::<NetSet>();
        bytes += self
            .sets
            .nets
            .iter()
            .map(NetSet::memory_bytes)
            .sum::<usize>();
        bytes += self.sets.named_ports.capacity()
            * size_of::<rustc_hash::FxHashSet<([u8; 16], u8, u16)>>();
        for set in &self.sets.named_ports {
            // hashbrown: one control byte per bucket beside each slot.
            bytes += set.capacity() * (size_of::<([u8; 16], u8, u16)>() + 1);
        }
        bytes += self.rules.capacity() * size_of::<RuleInfo>();
        for info in &self.rules {
            bytes += info.tier.capacity() + info.policy.capacity();
        }
        bytes
    }

    /// Bytes of what a lookup reads: the address classes, the matrix arena and the tables
    /// leading to it (programs without a matrix not counted).
    pub fn lookup_bytes(&self) -> usize {
        let f = &*self.fast;
        f.classes.memory_bytes()
            + f.arena.len() * 4
            + f.decisions.len() * std::mem::size_of::<Decision>()
            + f.by_endpoint.len() * 8
            + f.by_class.len() * 16
    }

    /// How many distinct programs this snapshot decides through their bit-vector index
    /// rather than a matrix (too large a matrix or row map, the arena's budget spent, or
    /// no address classes).
    pub fn index_programs(&self) -> usize {
        self.fast.fallback.len()
    }

    /// The policy of an endpoint.
    pub fn endpoint(&self, id: EndpointId) -> Option<&EndpointPolicy> {
        self.endpoints.get(id as usize)
    }

    /// Decides a packet `key` from endpoint `src` (egress checked if it is local) to
    /// endpoint `dst` (ingress checked if local). Both must allow. An endpoint always
    /// reaches itself.
    #[inline]
    pub fn evaluate(
        &self,
        src: Option<EndpointId>,
        dst: Option<EndpointId>,
        key: &crate::flow::FlowKey,
    ) -> PathDecision {
        if src.is_some() && src == dst {
            return PathDecision::ALLOW;
        }
        let f = &*self.fast;
        let place = |e: Option<EndpointId>, dir: usize| {
            e.and_then(|e| f.by_endpoint.get(e as usize))
                .map_or(NONE, |p| p[dir])
        };
        let (egress, ingress) = (place(src, EGRESS), place(dst, INGRESS));
        if egress == NONE && ingress == NONE {
            return PathDecision::ALLOW;
        }
        let classes = (f.classes.class_of(&key.src), f.classes.class_of(&key.dst));
        self.decide(egress, ingress, classes, key)
    }

    /// Decides a packet from its 5-tuple alone, as a packet between two endpoints of this
    /// node, or between one of them and the outside, is decided: the endpoints and their
    /// programs are found from the addresses' classes, then as [`PolicyTables::evaluate`].
    #[inline]
    pub fn evaluate_flow(&self, key: &crate::flow::FlowKey) -> PathDecision {
        let f = &*self.fast;
        let (s, d) = (f.classes.class_of(&key.src), f.classes.class_of(&key.dst));
        let none = [NONE; 4];
        let sc = f.by_class.get(s as usize).unwrap_or(&none);
        let dc = f.by_class.get(d as usize).unwrap_or(&none);
        if sc[0] != NONE && s == d {
            return PathDecision::ALLOW;
        }
        self.decide(sc[1 + EGRESS], dc[1 + INGRESS], (s, d), key)
    }

    /// Decides every key of `keys` as [`PolicyTables::evaluate_flow`] does, into `out`
    /// (cleared first). The keys go in batches of [`classes::BATCH`]: the classes of a
    /// batch's addresses are looked up together first (`AddrClasses::class_pairs`, whose
    /// cache misses overlap), then each key is decided.
    pub fn evaluate_flows(&self, keys: &[crate::flow::FlowKey], out: &mut Vec<PathDecision>) {
        out.clear();
        let f = &*self.fast;
        let none = [NONE; 4];
        let mut pairs = [(0u32, 0u32); classes::BATCH];
        for chunk in keys.chunks(classes::BATCH) {
            let pairs = &mut pairs[..chunk.len()];
            f.classes.class_pairs(chunk, pairs);
            out.extend(chunk.iter().zip(pairs.iter()).map(|(key, &(s, d))| {
                let sc = f.by_class.get(s as usize).unwrap_or(&none);
                let dc = f.by_class.get(d as usize).unwrap_or(&none);
                let (egress, ingress) = (sc[1 + EGRESS], dc[1 + INGRESS]);
                if (sc[0] != NONE && s == d) || (egress == NONE && ingress == NONE) {
                    PathDecision::ALLOW
                } else {
                    self.decide(egress, ingress, (s, d), key)
                }
            }));
        }
    }

    /// The path decision of an egress decision and the ingress one (asked for only when the
    /// egress does not deny).
    #[inline(always)]
    fn combine(
        &self,
        egress: Option<Decision>,
        ingress: impl FnOnce() -> Option<Decision>,
    ) -> PathDecision {
        if let Some(d) = egress.filter(|d| d.verdict == Verdict::Deny) {
            return PathDecision {
                verdict: Verdict::Deny,
                denied_by: Some(Direction::Egress),
                egress: Some(d),
                ingress: None,
            };
        }
        let ingress = ingress();
        let denied = ingress.is_some_and(|d| d.verdict == Verdict::Deny);
        PathDecision {
            verdict: if denied {
                Verdict::Deny
            } else {
                Verdict::Allow
            },
            denied_by: denied.then_some(Direction::Ingress),
            egress,
            ingress,
        }
    }

    /// Decides through the programs at `egress` and `ingress` (places).
    #[inline(always)]
    fn decide(
        &self,
        egress: u32,
        ingress: u32,
        classes: (u32, u32),
        key: &crate::flow::FlowKey,
    ) -> PathDecision {
        self.combine(self.classify(egress, classes, key), || {
            self.classify(ingress, classes, key)
        })
    }

    #[inline(always)]
    fn classify(
        &self,
        place: u32,
        (src, dst): (u32, u32),
        key: &crate::flow::FlowKey,
    ) -> Option<Decision> {
        let f = &*self.fast;
        if place == NONE {
            None
        } else if place & FALLBACK != 0 {
            let p = &f.fallback[(place & !FALLBACK) as usize];
            Some(p.classify(key, &self.sets))
        } else {
            let n = matrix::classify_at(&f.arena, place as usize, src, dst, key);
            Some(f.decisions[n as usize])
        }
    }

    /// Loads the first cache line of the programs that deciding traffic from `src` to
    /// `dst` will read. Call it for a whole batch before evaluating any of it, and pass
    /// the results to `std::hint::black_box`.
    #[inline]
    pub fn warm(&self, src: Option<EndpointId>, dst: Option<EndpointId>) -> u32 {
        let f = &*self.fast;
        let warm = |e: Option<EndpointId>, dir: usize| match e
            .and_then(|e| f.by_endpoint.get(e as usize))
            .map(|p| p[dir])
        {
            Some(NONE) | None => 0,
            Some(p) if p & FALLBACK != 0 => f.fallback[(p & !FALLBACK) as usize].warm(),
            Some(p) => matrix::warm_at(&f.arena, p as usize),
        };
        warm(src, EGRESS) ^ warm(dst, INGRESS)
    }

    /// Decides a batch of packets, `(source endpoint, destination endpoint, key)` each,
    /// into `out` (cleared first): the programs of the whole batch are warmed before any is
    /// evaluated, so their cache misses overlap.
    pub fn evaluate_batch(
        &self,
        queries: &[(Option<EndpointId>, Option<EndpointId>, crate::flow::FlowKey)],
        out: &mut Vec<PathDecision>,
    ) {
        out.clear();
        let mut warmth = 0u32;
        for &(src, dst, _) in queries {
            warmth ^= self.warm(src, dst);
        }
        std::hint::black_box(warmth);
        out.extend(
            queries
                .iter()
                .map(|(src, dst, key)| self.evaluate(*src, *dst, key)),
        );
    }

    /// Whether any endpoint has a program (a snapshot without policy skips the stage).
    pub fn is_empty(&self) -> bool {
        self.endpoints
            .iter()
            .all(|e| e.ingress.is_none() && e.egress.is_none())
    }
}
