//! Network policy as the workers see it: compiled per-endpoint programs, the address and
//! port sets they refer to, and per-worker connection tracking. The control plane compiles
//! Kubernetes NetworkPolicies and weir's tiered policies into these; see `program` for the
//! evaluation model.

pub mod conntrack;
mod index;
pub mod netset;
pub mod program;

pub use conntrack::{Conntrack, ConntrackConfig, ConntrackStats};
pub use netset::NetSet;
pub use program::{Action, Decision, Program, Rule, RuleId, Sets, Tier, TierEnd, Verdict};

use std::sync::Arc;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// Everything the policy stage reads from a snapshot.
#[derive(Debug, Clone, Default)]
pub struct PolicyTables {
    /// Indexed by `EndpointId`; endpoints past the end have no policy.
    pub endpoints: Vec<EndpointPolicy>,
    pub sets: Sets,
    /// Indexed by `RuleId`.
    pub rules: Vec<RuleInfo>,
    /// Whether warming a batch's programs pays (see [`PolicyTables::warm_pays`]), worked
    /// out once.
    pub warm_pays: std::sync::OnceLock<bool>,
}

/// Above this many bytes of decision structures (distinct programs), loading a batch's
/// programs before deciding any pays: they miss the cache, and the misses then overlap.
/// Below, they mostly hit it, and the extra pass costs more than it saves. Measured with
/// `weir-bench policy --no-dpdk` (LTO, 2-vCPU VM): without the pass, one node's tables
/// (0.4–1.9 MiB at 1k–100k rules) classified 15–20% faster and the whole cluster at 10k
/// (1.8 MiB) no slower; at 100k (18 MiB) the pass saved a fifth.
pub const WARM_ABOVE_BYTES: usize = 4 << 20;

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

impl PolicyTables {
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
        let allow = PathDecision {
            verdict: Verdict::Allow,
            denied_by: None,
            egress: None,
            ingress: None,
        };
        if src.is_some() && src == dst {
            return allow;
        }
        let egress = src
            .and_then(|e| self.endpoint(e))
            .and_then(|p| p.egress.as_ref())
            .map(|p| p.classify(key, &self.sets));
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
        let ingress = dst
            .and_then(|e| self.endpoint(e))
            .and_then(|p| p.ingress.as_ref())
            .map(|p| p.classify(key, &self.sets));
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

    /// Whether the programs' decision structures are large enough (over
    /// [`WARM_ABOVE_BYTES`]) that a batch should warm its programs before deciding any.
    /// Worked out on the first call and kept.
    pub fn warm_pays(&self) -> bool {
        *self
            .warm_pays
            .get_or_init(|| self.decision_bytes() > WARM_ABOVE_BYTES)
    }

    /// Heap bytes of the decision structures of the distinct programs.
    pub fn decision_bytes(&self) -> usize {
        self.programs().map(|p| p.index_bytes()).sum()
    }

    /// Every distinct program, once (endpoints with the same policies share one).
    pub fn programs(&self) -> impl Iterator<Item = &Arc<Program>> + '_ {
        let mut seen = std::collections::HashSet::new();
        self.endpoints
            .iter()
            .flat_map(|e| [&e.ingress, &e.egress])
            .flatten()
            .filter(move |p| seen.insert(Arc::as_ptr(p)))
    }

    /// Loads the first cache lines of the programs that deciding traffic from `src` to
    /// `dst` will read (see `Program::warm`). Call it for a whole batch before evaluating
    /// any of it, and pass the results to `std::hint::black_box`.
    #[inline]
    pub fn warm(&self, src: Option<EndpointId>, dst: Option<EndpointId>) -> u32 {
        let egress = src
            .and_then(|e| self.endpoint(e))
            .and_then(|p| p.egress.as_deref())
            .map_or(0, Program::warm);
        let ingress = dst
            .and_then(|e| self.endpoint(e))
            .and_then(|p| p.ingress.as_deref())
            .map_or(0, Program::warm);
        egress ^ ingress
    }

    /// Decides a batch of packets, `(source endpoint, destination endpoint, key)` each,
    /// into `out` (cleared first). When it pays ([`PolicyTables::warm_pays`]), the
    /// programs of the whole batch are warmed before any is evaluated, so that their cache
    /// misses overlap.
    pub fn evaluate_batch(
        &self,
        queries: &[(Option<EndpointId>, Option<EndpointId>, crate::flow::FlowKey)],
        out: &mut Vec<PathDecision>,
    ) {
        out.clear();
        if self.warm_pays() {
            let mut warmth = 0u32;
            for &(src, dst, _) in queries {
                warmth ^= self.warm(src, dst);
            }
            std::hint::black_box(warmth);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowKey;
    use crate::policy::program::Match;

    fn tables(programs: usize) -> PolicyTables {
        let rule = |id| Rule {
            matches: Match {
                protocol: Some(6),
                ..Match::default()
            },
            action: Action::Deny,
            id,
        };
        let tier = |n: u32| Tier {
            rules: (0..n).map(rule).collect(),
            end: TierEnd::Pass,
            end_id: 1000,
        };
        let shared = Arc::new(Program::new(vec![tier(5)], &Sets::default()));
        PolicyTables {
            endpoints: (0..programs)
                .map(|i| EndpointPolicy {
                    // Every other endpoint shares one program.
                    ingress: Some(if i % 2 == 0 {
                        shared.clone()
                    } else {
                        Arc::new(Program::new(vec![tier(4 + i as u32)], &Sets::default()))
                    }),
                    egress: None,
                })
                .collect(),
            ..PolicyTables::default()
        }
    }

    #[test]
    fn programs_are_warmed_only_when_their_structures_outgrow_the_caches() {
        let empty = PolicyTables::default();
        assert_eq!(empty.decision_bytes(), 0);
        assert!(!empty.warm_pays());
        let small = tables(6);
        let one = small.endpoints[0].ingress.as_ref().unwrap().index_bytes();
        let distinct: usize = small
            .endpoints
            .iter()
            .skip(1)
            .step_by(2)
            .map(|e| e.ingress.as_ref().unwrap().index_bytes())
            .sum();
        assert_eq!(
            small.decision_bytes(),
            one + distinct,
            "a shared program counts once"
        );
        assert!(!small.warm_pays());
        // Warmed or not, a batch decides as one packet at a time does.
        let key = FlowKey {
            src: FlowKey::map_v4([198, 18, 0, 1]),
            dst: FlowKey::map_v4([198, 18, 0, 2]),
            src_port: 1000,
            dst_port: 80,
            proto: 6,
        };
        let queries: Vec<_> = (0..6).map(|i| (Some(5 - i), Some(i), key)).collect();
        let mut out = Vec::new();
        small.evaluate_batch(&queries, &mut out);
        for (q, d) in queries.iter().zip(&out) {
            assert_eq!(*d, small.evaluate(q.0, q.1, &q.2));
            assert_eq!(d.verdict, Verdict::Deny);
        }
    }
}
