//! Each endpoint's programs, kept from one compilation to the next.
//!
//! Endpoints selected by the same policies share one program (and its decision
//! structure). Across compilations a program is kept while its tiers are the same and so
//! is the content of every set they name: building the decision structure is what costs.
//! A program is first looked for by the rule lists it is made of ([`ProgramKey`]: each
//! list's version, kept with the list while the policy and the resolutions it read are
//! unchanged), which costs no copy of its rules; only when a list changed (or one was
//! not cached) are its tiers put together and the program found by them, or built.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use weir_dataplane::policy::{Direction, Program, RuleId, Sets, Tier as CompiledTier, TierEnd};

use super::cache::{content_hash, referenced_named_sets, Cache, KeptProgram, NamedKey, ProgramKey};
use super::CompiledPolicy;
use crate::policy::model::TierDefaultAction;

/// What one compilation's programs are made from.
pub(super) struct Inputs<'x> {
    /// The policies compiled, in evaluation order.
    pub(super) compiled: &'x [CompiledPolicy],
    /// Each compiled policy's tier (an index into `ends`).
    pub(super) placed: &'x [usize],
    /// Each compiled policy's rule list versions (ingress, egress); `None` when the list
    /// was not cached.
    pub(super) versions: &'x [[Option<u64>; 2]],
    /// Per tier: its default action and its end's rule ids (ingress, egress).
    pub(super) ends: &'x [(TierDefaultAction, [RuleId; 2])],
    pub(super) sets: &'x Sets,
    /// What each named-port set id stands for.
    pub(super) named_keys: &'x [NamedKey],
}

/// The programs of one compilation, made or taken from the one before.
pub(super) struct Programs {
    previous: FxHashMap<u64, Vec<KeptProgram>>,
    previous_by_key: FxHashMap<ProgramKey, KeptProgram>,
    kept: FxHashMap<u64, Vec<KeptProgram>>,
    kept_by_key: FxHashMap<ProgramKey, KeptProgram>,
    /// This compilation's, for the endpoints that share them.
    now_by_key: FxHashMap<ProgramKey, Arc<Program>>,
    now_by_content: FxHashMap<u64, Vec<Arc<Program>>>,
    built: u64,
    building: Duration,
}

impl Programs {
    /// Takes the last compilation's programs out of `cache`.
    pub(super) fn take(cache: &mut Cache) -> Programs {
        Programs {
            previous: std::mem::take(&mut cache.programs),
            previous_by_key: std::mem::take(&mut cache.programs_by_lists),
            kept: FxHashMap::default(),
            kept_by_key: FxHashMap::default(),
            now_by_key: FxHashMap::default(),
            now_by_content: FxHashMap::default(),
            built: 0,
            building: Duration::ZERO,
        }
    }

    /// Leaves this compilation's programs in `cache` for the next one (the last one's that
    /// were not used go), and what building them took.
    pub(super) fn give_back(self, cache: &mut Cache) {
        cache.programs = self.kept;
        cache.programs_by_lists = self.kept_by_key;
        cache.times.programs += self.building;
        cache.times.programs_built += self.built;
    }

    /// The program of an endpoint in `direction`, from the compiled policies that select
    /// it (`list`, in evaluation order); `None` when none of them applies to `direction`.
    pub(super) fn program(
        &mut self,
        inputs: &Inputs<'_>,
        direction: Direction,
        list: &[usize],
    ) -> Option<Arc<Program>> {
        let side = usize::from(direction == Direction::Egress);
        let rules_of = |p: usize| match direction {
            Direction::Ingress => inputs.compiled[p].ingress.as_ref(),
            Direction::Egress => inputs.compiled[p].egress.as_ref(),
        };
        // The key, unless a rule list in it was not cached (it has no version).
        let mut key: Option<ProgramKey> = Some(vec![side as u64]);
        for &p in list {
            if rules_of(p).is_none() {
                continue;
            }
            let (action, ends) = inputs.ends[inputs.placed[p]];
            let deny = u64::from(action == TierDefaultAction::Deny);
            match (&mut key, inputs.versions[p][side]) {
                (Some(k), Some(v)) => k.extend([u64::from(ends[side]) << 1 | deny, v]),
                _ => key = None,
            }
        }
        if let Some(k) = &key {
            if k.len() == 1 {
                return None;
            }
            if let Some(shared) = self.now_by_key.get(k) {
                return Some(shared.clone());
            }
            // Its rule lists name the same ids, and ids keep their meaning while a
            // program is kept (see `StableIds`).
            if let Some(o) = self.previous_by_key.remove(k) {
                return Some(self.keep(o, key));
            }
        }

        let mut tiers: Vec<CompiledTier> = Vec::new();
        let mut current: Option<usize> = None;
        for &p in list {
            let Some(rules) = rules_of(p) else { continue };
            let tier = inputs.placed[p];
            if current != Some(tier) {
                current = Some(tier);
                let (action, ends) = inputs.ends[tier];
                tiers.push(CompiledTier {
                    rules: Vec::new(),
                    end: match action {
                        TierDefaultAction::Deny => TierEnd::Deny,
                        TierDefaultAction::Pass => TierEnd::Pass,
                    },
                    end_id: ends[side],
                });
            }
            if let Some(t) = tiers.last_mut() {
                t.rules.extend(rules.iter().cloned());
            }
        }
        if tiers.is_empty() {
            return None;
        }
        let content = content_hash(&tiers);
        let shared = self
            .now_by_content
            .get(&content)
            .and_then(|same| same.iter().find(|p| p.tiers() == tiers.as_slice()).cloned());
        if let Some(shared) = shared {
            let kept = self.kept.get(&content).and_then(|same| {
                same.iter()
                    .find(|o| Arc::ptr_eq(&o.program, &shared))
                    .cloned()
            });
            if let (Some(k), Some(o)) = (key, kept) {
                self.now_by_key.insert(k.clone(), shared.clone());
                self.kept_by_key.insert(k, o);
            }
            return Some(shared);
        }
        // Address set ids name one content for as long as a program can be kept (see
        // `StableIds`): equal tiers name equal sets. Named-port sets are checked by their
        // names and the epoch of their content.
        let named: Vec<NamedKey> = referenced_named_sets(&tiers)
            .iter()
            .map(|&id| inputs.named_keys[id as usize].clone())
            .collect();
        let same = |k: &KeptProgram| k.program.tiers() == tiers.as_slice() && k.named == named;
        let found = self
            .previous
            .get_mut(&content)
            .and_then(|c| c.iter().position(same).map(|i| c.swap_remove(i)));
        let kept = match found {
            Some(o) => o,
            None => {
                let t = Instant::now();
                let program = Arc::new(Program::new(tiers, inputs.sets));
                self.building += t.elapsed();
                self.built += 1;
                KeptProgram {
                    named,
                    program,
                    content,
                }
            }
        };
        Some(self.keep(kept, key))
    }

    /// Keeps `o` for the next compilation (once, whichever way it was reached) and shares
    /// it with this compilation's endpoints of the same key or tiers.
    fn keep(&mut self, o: KeptProgram, key: Option<ProgramKey>) -> Arc<Program> {
        let program = o.program.clone();
        let same = self.now_by_content.entry(o.content).or_default();
        if !same.iter().any(|p| Arc::ptr_eq(p, &program)) {
            same.push(program.clone());
        }
        let kept = self.kept.entry(o.content).or_default();
        if !kept.iter().any(|k| Arc::ptr_eq(&k.program, &program)) {
            kept.push(o.clone());
        }
        if let Some(k) = key {
            self.now_by_key.insert(k.clone(), program.clone());
            self.kept_by_key.insert(k, o);
        }
        program
    }
}
