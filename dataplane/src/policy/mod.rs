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
}

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
