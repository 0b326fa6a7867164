//! A scope index, so that a decision evaluates only the policies that can
//! apply to its action and resource.
//!
//! Cedar evaluates every policy in the set it is given, so a decision's
//! cost would grow with the number of policies loaded. A policy whose
//! action or resource scope cannot match the request is never satisfied and
//! never errors (scope is checked before conditions), so leaving it out
//! changes nothing. At load, each policy is filed under the action and
//! resource its scope names (or under "any"). A request's slice is the
//! policies filed under its action or an ancestor of it (`in` groups), and
//! under its resource or an ancestor of it, plus the open ones. Slices are
//! built once per (action, resource) pair and cached for the life of the
//! snapshot. `Eq` scopes are filed like `in` scopes: a slice may be a little
//! larger than needed, never smaller, and Cedar still decides exactly.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use super::reads::ContextReads;
use cedar_policy::{
    ActionConstraint, Effect, Entities, EntityUid, Policy, PolicySet, ResourceConstraint,
};

/// The two sets a decision needs: the policies, and their permits alone.
pub(super) struct DecisionSets {
    pub main: PolicySet,
    /// Asks "would lifting the gates allow it?". That is asked only when
    /// every forbid `main` found satisfied was a `@hold` gate and nothing
    /// failed: the other forbids were then not satisfied, and would not be
    /// again, so with the gates lifted the call is allowed exactly when a
    /// permit is satisfied. Evaluating the permits alone says just that.
    pub permits: PolicySet,
    /// What of `context` the policies in `main` (a superset of `permits`)
    /// can read; everything for the full set, the unindexed reference.
    pub reads: ContextReads,
}

impl DecisionSets {
    /// Sets for one slice, with the context paths its policies read.
    fn build<'a>(policies: impl Iterator<Item = &'a Policy> + Clone) -> Result<Self, String> {
        let reads = ContextReads::of(policies.clone());
        Self::with_reads(policies, reads)
    }

    fn with_reads<'a>(
        policies: impl Iterator<Item = &'a Policy> + Clone,
        reads: ContextReads,
    ) -> Result<Self, String> {
        let main =
            PolicySet::from_policies(policies.clone().cloned()).map_err(|e| e.to_string())?;
        let permits = PolicySet::from_policies(
            policies
                .clone()
                .filter(|p| p.effect() == Effect::Permit)
                .cloned(),
        )
        .map_err(|e| e.to_string())?;
        Ok(DecisionSets {
            main,
            permits,
            reads,
        })
    }
}

/// Where a policy is filed for one scope element.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Any,
    Uid(EntityUid),
}

/// Caching more pairs than this stops; later pairs are sliced per call.
const CACHE_LIMIT: usize = 16_384;

pub(super) struct PolicyIndex {
    policies: Vec<Policy>,
    /// Every policy together: the reference the index must agree with.
    full: Arc<DecisionSets>,
    // foldhash: keys come from the policies' scopes, never from an agent.
    by_action: foldhash::HashMap<Key, Vec<usize>>,
    resource_keys: Vec<Vec<Key>>,
    // Read-mostly: after warm-up every request takes only the read lock;
    // a write happens once per new (action, resource) pair. A std RwLock
    // because no await happens while it is held. SipHash (std's default),
    // unlike `by_action`: agents choose the methods and tools inserted here.
    cache: RwLock<HashMap<(EntityUid, EntityUid), Arc<DecisionSets>>>,
}

impl PolicyIndex {
    pub fn new(policies: Vec<Policy>) -> Result<PolicyIndex, String> {
        // The full set is the reference decisions are checked against: it
        // sees the whole context, so its reads are not worked out (which
        // would walk every policy's syntax tree at each load).
        let full = Arc::new(DecisionSets::with_reads(
            policies.iter(),
            ContextReads::everything(),
        )?);
        let mut by_action: foldhash::HashMap<Key, Vec<usize>> = Default::default();
        let mut resource_keys = Vec::with_capacity(policies.len());
        for (i, p) in policies.iter().enumerate() {
            let action_keys = match p.action_constraint() {
                ActionConstraint::Any => vec![Key::Any],
                ActionConstraint::Eq(a) => vec![Key::Uid(a)],
                ActionConstraint::In(list) => list.into_iter().map(Key::Uid).collect(),
            };
            for k in action_keys {
                by_action.entry(k).or_default().push(i);
            }
            resource_keys.push(match p.resource_constraint() {
                ResourceConstraint::Eq(r) | ResourceConstraint::In(r) => vec![Key::Uid(r)],
                ResourceConstraint::IsIn(_, r) => vec![Key::Uid(r)],
                ResourceConstraint::Any | ResourceConstraint::Is(_) => vec![Key::Any],
            });
        }
        Ok(PolicyIndex {
            policies,
            full,
            by_action,
            resource_keys,
            cache: RwLock::new(HashMap::new()),
        })
    }

    pub fn full(&self) -> &Arc<DecisionSets> {
        &self.full
    }

    /// The sets holding every policy that can apply to this pair.
    pub fn sets_for(
        &self,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Result<Arc<DecisionSets>, String> {
        let key = (action.clone(), resource.clone());
        if let Ok(cache) = self.cache.read() {
            if let Some(s) = cache.get(&key) {
                return Ok(s.clone());
            }
        }
        let sets = Arc::new(self.slice(action, resource, entities)?);
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() < CACHE_LIMIT {
                cache.insert(key, sets.clone());
            }
        }
        Ok(sets)
    }

    fn slice(
        &self,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Result<DecisionSets, String> {
        let with_ancestors = |uid: &EntityUid| -> HashSet<Key> {
            let mut keys: HashSet<Key> = entities
                .ancestors(uid)
                .map(|it| it.cloned().map(Key::Uid).collect())
                .unwrap_or_default();
            keys.insert(Key::Uid(uid.clone()));
            keys.insert(Key::Any);
            keys
        };
        let action_keys = with_ancestors(action);
        let resource_keys = with_ancestors(resource);
        let mut chosen: Vec<usize> = action_keys
            .iter()
            .filter_map(|k| self.by_action.get(k))
            .flatten()
            .copied()
            .filter(|&i| {
                self.resource_keys[i]
                    .iter()
                    .any(|k| resource_keys.contains(k))
            })
            .collect();
        chosen.sort_unstable();
        chosen.dedup();
        DecisionSets::build(chosen.iter().map(|&i| &self.policies[i]))
    }
}
