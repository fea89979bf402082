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
use crate::policy::matrix::Binding;
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
/// they refer to, and what decides fast: the address classes of the sets and endpoints
/// (`classes`), with each program's decision matrix bound to them (`matrix`).
#[derive(Debug, Clone, Default)]
pub struct PolicyTables {
    /// Indexed by `EndpointId`; endpoints past the end have no policy.
    endpoints: Vec<EndpointPolicy>,
    sets: Sets,
    /// Indexed by `RuleId`.
    rules: Vec<RuleInfo>,
    classes: Arc<AddrClasses>,
    /// Per endpoint, its `[egress, ingress]` programs bound to `classes` (shared by the
    /// endpoints of one program).
    bound: Vec<[Option<Arc<Bound>>; 2]>,
    /// Why the classes could not be built, if they could not: every program is then
    /// decided by its index or rule by rule, and `weir status` says so.
    degraded: Option<String>,
}

/// A program with the row maps of its matrix for one snapshot's classes.
#[derive(Debug)]
struct Bound {
    program: Arc<Program>,
    binding: Option<Binding>,
}

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
    pub fn new(
        endpoints: Vec<EndpointPolicy>,
        sets: Sets,
        rules: Vec<RuleInfo>,
        addresses: &[(EndpointId, IpAddr)],
    ) -> PolicyTables {
        let keyed: Vec<(EndpointId, [u8; 16])> = addresses
            .iter()
            .map(|&(e, ip)| (e, crate::flow::FlowKey::map_ip(ip)))
            .collect();
        let (classes, degraded) = match AddrClasses::build(&sets, &keyed) {
            Ok(c) => (c, None),
            Err(e) => (
                AddrClasses::default(),
                Some(format!(
                    "policy address classes could not be built ({e}); programs are decided \
                     without them"
                )),
            ),
        };
        let mut shared: FxHashMap<*const Program, Arc<Bound>> = FxHashMap::default();
        let mut bind = |p: &Option<Arc<Program>>| {
            let p = p.as_ref()?;
            let bound = shared.entry(Arc::as_ptr(p)).or_insert_with(|| {
                Arc::new(Bound {
                    program: p.clone(),
                    binding: p
                        .matrix()
                        .filter(|_| degraded.is_none())
                        .map(|m| m.bind(&classes)),
                })
            });
            Some(bound.clone())
        };
        let bound = endpoints
            .iter()
            .map(|e| [bind(&e.egress), bind(&e.ingress)])
            .collect();
        PolicyTables {
            endpoints,
            sets,
            rules,
            classes: Arc::new(classes),
            bound,
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
        &self.classes
    }

    /// Why the tables decide without address classes, if they do.
    pub fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }

    /// Heap bytes of everything the workers read: the address classes, every distinct
    /// program (its rules with their port ranges, its matrix or index, its row maps), the
    /// address sets, the named-port sets (hash table capacity) and the rule descriptions.
    /// Programs shared by endpoints count once.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let mut seen: FxHashMap<*const Bound, ()> = FxHashMap::default();
        let mut bytes = self.classes.memory_bytes()
            + self.bound.capacity() * size_of::<[Option<Arc<Bound>>; 2]>()
            + self.endpoints.capacity() * size_of::<EndpointPolicy>();
        for b in self.bound.iter().flatten().flatten() {
            if seen.insert(Arc::as_ptr(b), ()).is_none() {
                bytes += size_of::<Bound>()
                    + size_of::<Program>()
                    + b.program.index_bytes()
                    + b.program.rules_bytes()
                    + b.binding.as_ref().map_or(0, Binding::bytes);
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

    /// The policy of an endpoint.
    pub fn endpoint(&self, id: EndpointId) -> Option<&EndpointPolicy> {
        self.endpoints.get(id as usize)
    }

    /// Decides a packet `key` from endpoint `src` (egress checked if it is local) to
    /// endpoint `dst` (ingress checked if local). Both must allow. An endpoint always
    /// reaches itself.
    pub fn evaluate(
        &self,
        src: Option<EndpointId>,
        dst: Option<EndpointId>,
        key: &crate::flow::FlowKey,
    ) -> PathDecision {
        let allow = PathDecision::ALLOW;
        if src.is_some() && src == dst {
            return allow;
        }
        let egress_program = self.bound_of(src, EGRESS);
        let ingress_program = self.bound_of(dst, INGRESS);
        if egress_program.is_none() && ingress_program.is_none() {
            return allow;
        }
        let classes = (
            self.classes.class_of(&key.src),
            self.classes.class_of(&key.dst),
        );
        self.decide(egress_program, ingress_program, classes, key)
    }

    /// Decides a packet from its addresses alone, as a packet between two endpoints of this
    /// node, or between one of them and the outside, is decided: the endpoints are found
    /// from the address classes (no other lookup), then as [`PolicyTables::evaluate`].
    pub fn evaluate_flow(&self, key: &crate::flow::FlowKey) -> PathDecision {
        let classes = (
            self.classes.class_of(&key.src),
            self.classes.class_of(&key.dst),
        );
        let src = self.classes.endpoint(classes.0);
        let dst = self.classes.endpoint(classes.1);
        if src.is_some() && src == dst {
            return PathDecision::ALLOW;
        }
        self.decide(
            self.bound_of(src, EGRESS),
            self.bound_of(dst, INGRESS),
            classes,
            key,
        )
    }

    #[inline(always)]
    fn bound_of(&self, endpoint: Option<EndpointId>, dir: usize) -> Option<&Bound> {
        self.bound.get(endpoint? as usize)?[dir].as_deref()
    }

    #[inline(always)]
    fn classify(
        &self,
        bound: Option<&Bound>,
        (src, dst): (u32, u32),
        key: &crate::flow::FlowKey,
    ) -> Option<Decision> {
        let b = bound?;
        Some(match (b.program.matrix(), &b.binding) {
            (Some(m), Some(binding)) => m.classify(binding, src, dst, key),
            _ => b.program.classify(key, &self.sets),
        })
    }

    #[inline(always)]
    fn decide(
        &self,
        egress_program: Option<&Bound>,
        ingress_program: Option<&Bound>,
        classes: (u32, u32),
        key: &crate::flow::FlowKey,
    ) -> PathDecision {
        let allow = PathDecision::ALLOW;
        let egress = self.classify(egress_program, classes, key);
        if let Some(d) = egress {
            if d.verdict == Verdict::Deny {
                return PathDecision {
                    verdict: Verdict::Deny,
                    denied_by: Some(Direction::Egress),
                    egress,
                    ingress: None,
                };
            }
        }
        let ingress = self.classify(ingress_program, classes, key);
        if let Some(d) = ingress {
            if d.verdict == Verdict::Deny {
                return PathDecision {
                    verdict: Verdict::Deny,
                    denied_by: Some(Direction::Ingress),
                    egress,
                    ingress,
                };
            }
        }
        PathDecision {
            egress,
            ingress,
            ..allow
        }
    }

    /// Loads the first cache lines of the programs that deciding traffic from `src` to
    /// `dst` will read (see `Program::warm`). Call it for a whole batch before evaluating
    /// any of it, and pass the results to `std::hint::black_box`.
    #[inline]
    pub fn warm(&self, src: Option<EndpointId>, dst: Option<EndpointId>) -> u32 {
        let egress = self.bound_of(src, EGRESS).map_or(0, |b| b.program.warm());
        let ingress = self.bound_of(dst, INGRESS).map_or(0, |b| b.program.warm());
        egress ^ ingress
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
