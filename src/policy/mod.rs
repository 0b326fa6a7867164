//! Policy decisions: the only module that speaks Cedar.
//!
//! A [`PolicySnapshot`] is everything needed to decide a call, compiled once
//! per (re)load: the schema, the validated policy set, the entities of every
//! configured agent, group and route, and per-policy metadata read from
//! annotations. Deciding never touches the file system and never blocks.
//!
//! Cedar only answers Allow or Deny. Airlock adds **hold**: a `forbid`
//! annotated `@hold("why")` is a gate that a human may lift. A call is held
//! when Cedar denies it, every determining policy is a gate, and the call is
//! allowed once those gates are lifted. Any evaluation error is a deny
//! (Cedar alone would skip the failing policy, so a broken forbid would let
//! the call through).

mod decimals;
pub mod escalation;
mod index;
pub mod json_scan;
pub mod keys;
mod load;
mod memo;
mod reads;
mod scope;
pub mod value;
mod verdict;
mod visibility;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, Request, Response,
};
use sha2::{Digest, Sha256};

use index::{DecisionSets, PolicyIndex};
use memo::{DecisionMemo, Memoized};

pub use crate::problem::SourceProblem;
pub use escalation::{Escalation, EscalationError};
pub use load::{PolicyMeta, PolicyMode};
pub use reads::ContextNeeds;
pub use scope::ScopedPermit;
pub use verdict::{gate_text, DecideError, Decision, Gate, ShadowOutcome, Verdict};
pub use visibility::Visibility;

/// A principal as configured: the policy module's view of an agent.
#[derive(Debug, Clone)]
pub struct PrincipalSpec {
    pub id: String,
    pub groups: Vec<String>,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// The entities a snapshot is built over, taken from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub agents: Vec<PrincipalSpec>,
    pub routes: Vec<String>,
    /// Feeds the snapshot version, so that a config change is a new version.
    pub config_hash: String,
}

/// What a call is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Route(String),
    /// A tool of an MCP route: `Tool::"<route>/<tool>"`, a child of the route
    /// when the schema declares the tool.
    Tool {
        route: String,
        tool: String,
    },
}

impl Resource {
    fn uid(&self, types: &TypeNames) -> EntityUid {
        match self {
            Resource::Route(r) => {
                EntityUid::from_type_name_and_id(types.route.clone(), EntityId::new(r))
            }
            Resource::Tool { route, tool } => EntityUid::from_type_name_and_id(
                types.tool.clone(),
                EntityId::new(format!("{route}/{tool}")),
            ),
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Route(r) => write!(f, "Route::\"{r}\""),
            Resource::Tool { route, tool } => write!(f, "Tool::\"{route}/{tool}\""),
        }
    }
}

/// One call, as the policy sees it.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub agent: String,
    /// The Cedar action id, e.g. `POST`.
    pub action: String,
    pub resource: Resource,
    /// Becomes Cedar's `context` through [`value::record`].
    pub context: serde_json::Map<String, serde_json::Value>,
}

/// The policies chosen for one call, before its context is built (see
/// [`PolicySnapshot::plan`]).
#[derive(Clone)]
pub struct DecisionPlan {
    action: EntityUid,
    resource: EntityUid,
    enforced: Arc<DecisionSets>,
    shadow: Option<Arc<DecisionSets>>,
    indexed: bool,
    planning: Duration,
    /// The caller asked for [`Self::context_needs`], and so built the
    /// context to them: it is what pruning would leave of it.
    built_to_needs: bool,
}

impl DecisionPlan {
    /// What of the context the chosen policies can read: a context built
    /// to this is all they need. With shadow policies, everything. The
    /// caller builds the context to these needs, so the decision takes it
    /// as it is.
    pub fn context_needs(&mut self) -> ContextNeeds<'_> {
        self.built_to_needs = true;
        match self.shadow {
            Some(_) => ContextNeeds::everything(),
            None => ContextNeeds::of(&self.enforced.reads),
        }
    }

    /// This plan for another call with the same agent, action and resource
    /// in the same snapshot: a plan depends on nothing else. Its planning
    /// time is not counted again.
    pub fn reused(&self) -> DecisionPlan {
        DecisionPlan {
            planning: Duration::ZERO,
            built_to_needs: false,
            ..self.clone()
        }
    }
}

/// Entity type names, parsed once.
#[derive(Clone)]
struct TypeNames {
    agent: EntityTypeName,
    group: EntityTypeName,
    route: EntityTypeName,
    tool: EntityTypeName,
    action: EntityTypeName,
}

impl TypeNames {
    fn new() -> Result<Self, String> {
        let p = |s: &str| EntityTypeName::from_str(s).map_err(|e| e.to_string());
        Ok(TypeNames {
            agent: p("Agent")?,
            group: p("Group")?,
            route: p("Route")?,
            tool: p("Tool")?,
            action: p("Action")?,
        })
    }
}

/// Everything needed to decide calls, compiled once per load.
pub struct PolicySnapshot {
    version: Arc<str>,
    loaded_at: SystemTime,
    enforced: PolicyIndex,
    /// Present when some policies are `@mode("shadow")`: the index with
    /// those policies enforced too.
    shadow: Option<PolicyIndex>,
    meta: HashMap<PolicyId, PolicyMeta>,
    entities: Entities,
    types: TypeNames,
    agents: HashSet<String>,
    /// Every action the schema declares, so that MCP calls can use a
    /// per-tool action when one exists.
    actions: HashSet<String>,
    /// The declared actions whose names are upper case (HTTP methods), few
    /// enough that a scan beats a hash.
    upper_case_actions: Box<[Box<str>]>,
    /// Context paths each action declares `decimal`.
    decimals: decimals::DecimalPaths,
    /// Every attribute name the schema declares.
    names: keys::DeclaredNames,
    authorizer: Authorizer,
    policy_count: usize,
    scope: scope::ScopeIndex,
    /// Suspicious but loadable: scopes naming agents, groups or routes the
    /// configuration does not have.
    warnings: Vec<SourceProblem>,
    /// Recent decisions of this snapshot (see `memo`).
    memo: DecisionMemo,
    /// The permits with `@sample`, few enough that a scan beats a hash.
    sampled: Box<[(Box<str>, crate::rate::Rate)]>,
}

/// A `@hold` gate without `@approvers` is lifted by the admin token alone:
/// no approver can list, read or decide its approvals.
fn gates_without_approvers(meta: &HashMap<PolicyId, PolicyMeta>) -> Vec<SourceProblem> {
    let mut found: Vec<&PolicyMeta> = meta
        .values()
        .filter(|m| m.hold.is_some() && m.approvers.is_none())
        .collect();
    found.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    found
        .into_iter()
        .map(|m| SourceProblem {
            file: m.file.clone(),
            line: m.line,
            column: 1,
            message: format!(
                "gate `{}` has no `@approvers`: only the admin token can list, read or decide the calls it holds; name the group that decides them",
                m.id
            ),
        })
        .collect()
}

// === impl PolicySnapshot ===

impl PolicySnapshot {
    /// Loads, validates and compiles the policies in `dir` over `directory`.
    /// Nothing is returned unless everything validates.
    pub fn load(dir: &Path, directory: &Directory) -> Result<PolicySnapshot, Vec<SourceProblem>> {
        let loaded = load::load_dir(dir)?;
        let at_schema = |message: String| SourceProblem {
            file: dir.join("schema.cedarschema"),
            line: 1,
            column: 1,
            message,
        };
        let types = TypeNames::new().map_err(|e| vec![at_schema(e)])?;
        let entities =
            build_entities(&types, directory, &loaded.schema).map_err(|e| vec![at_schema(e)])?;

        let mut hasher = Sha256::new();
        for (path, text) in &loaded.sources {
            hasher.update(
                path.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
        }
        hasher.update(directory.config_hash.as_bytes());
        let version: Arc<str> = hex::encode(&hasher.finalize()[..8]).into();

        let meta = loaded.meta;
        let mode = |p: &cedar_policy::Policy| meta.get(p.id()).map(|m| m.mode);
        let build = |include_shadow: bool| -> Result<PolicyIndex, String> {
            let chosen = loaded
                .policies
                .iter()
                .filter(|p| include_shadow || mode(p) != Some(PolicyMode::Shadow))
                .cloned()
                .collect();
            PolicyIndex::new(chosen)
        };
        let enforced = build(false).map_err(|e| vec![at_schema(e)])?;
        let has_shadow = meta.values().any(|m| m.mode == PolicyMode::Shadow);
        let shadow = if has_shadow {
            Some(build(true).map_err(|e| vec![at_schema(e)])?)
        } else {
            None
        };
        let mut warnings: Vec<SourceProblem> = loaded
            .policies
            .iter()
            .flat_map(|p| {
                let m = meta.get(p.id());
                scope::unknown_entities(p, &entities)
                    .into_iter()
                    .map(move |uid| SourceProblem {
                        file: m.map(|m| m.file.clone()).unwrap_or_default(),
                        line: m.map_or(1, |m| m.line),
                        column: 1,
                        message: format!(
                            "policy `{}` names `{uid}`, which the configuration does not define",
                            p.id()
                        ),
                    })
            })
            .collect();
        warnings.extend(gates_without_approvers(&meta));
        let sampled = meta
            .values()
            .filter_map(|m| Some((m.id.as_str().into(), m.sample?)))
            .collect();
        Ok(PolicySnapshot {
            sampled,
            scope: loaded.scope,
            warnings,
            memo: DecisionMemo::default(),
            version,
            loaded_at: SystemTime::now(),
            policy_count: loaded.policies.len(),
            enforced,
            shadow,
            meta,
            entities,
            types,
            agents: directory.agents.iter().map(|a| a.id.clone()).collect(),
            upper_case_actions: loaded
                .schema
                .actions()
                .map(|a| a.id().unescaped())
                .filter(|a| is_upper_case(a))
                .map(Into::into)
                .collect(),
            actions: loaded
                .schema
                .actions()
                .map(|a| a.id().unescaped().to_string())
                .collect(),
            decimals: loaded.decimals,
            names: loaded.names,
            authorizer: Authorizer::new(),
        })
    }

    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    pub fn policy_count(&self) -> usize {
        self.policy_count
    }

    /// The highest `@sample` rate among `policies` (a decision's
    /// determining permits); `None` when none of them samples.
    pub fn sample_rate(&self, policies: &[String]) -> Option<crate::rate::Rate> {
        if self.sampled.is_empty() {
            return None;
        }
        self.sampled
            .iter()
            .filter(|(id, _)| policies.iter().any(|p| p.as_str() == &**id))
            .map(|(_, r)| *r)
            .max()
    }

    pub fn meta(&self, id: &str) -> Option<&PolicyMeta> {
        self.meta.get(&PolicyId::new(id))
    }

    /// Problems that do not stop loading, `file:line:col` each.
    /// Every attribute name the schema declares: a key that is not one of
    /// them but folds to one is refused (see [`keys`]).
    pub fn declared_names(&self) -> &keys::DeclaredNames {
        &self.names
    }

    pub fn warnings(&self) -> &[SourceProblem] {
        &self.warnings
    }

    /// The ids of the gates annotated `@elicit`, sorted.
    pub fn elicit_gates(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .meta
            .values()
            .filter(|m| m.elicit)
            .map(|m| m.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Every policy id, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.meta.values().map(|m| m.id.clone()).collect();
        ids.sort();
        ids
    }

    pub fn has_agent(&self, id: &str) -> bool {
        self.agents.contains(id)
    }

    /// Whether the schema declares `Action::"<id>"`.
    pub fn has_action(&self, id: &str) -> bool {
        self.actions.contains(id)
    }

    /// Whether `name` is upper case and declared as an action: what an
    /// HTTP method must be to be judged at all.
    pub fn declares_upper_case_action(&self, name: &str) -> bool {
        self.upper_case_actions.iter().any(|a| **a == *name)
    }

    /// The first half of every decision: picks the policies that can apply
    /// to `call` (its context is not read) and says, through
    /// [`DecisionPlan::context_needs`], what of the context they can read.
    /// [`Self::decide`] finishes it.
    pub fn plan(&self, call: &CallRequest) -> Result<DecisionPlan, DecideError> {
        self.plan_with(call, true)
    }

    /// Decides `call` by the policies `plan` chose for it. A context built
    /// to the plan's [`DecisionPlan::context_needs`] is taken as it is; any
    /// other is cut down to what the chosen policies read first.
    pub fn decide(&self, call: &CallRequest, plan: DecisionPlan) -> Result<Decision, DecideError> {
        self.decide_with(call, plan)
    }

    /// Decides with every policy in the set, bypassing the scope index: the
    /// reference that the index must agree with (see the property test).
    #[doc(hidden)]
    pub fn decide_unindexed(&self, call: &CallRequest) -> Result<Decision, DecideError> {
        let plan = self.plan_with(call, false)?;
        self.decide_with(call, plan)
    }

    /// `plan` then `decide`, for tests.
    #[cfg(test)]
    pub(crate) fn decide_now(&self, call: &CallRequest) -> Result<Decision, DecideError> {
        let plan = self.plan(call)?;
        self.decide(call, plan)
    }

    fn plan_with(&self, call: &CallRequest, indexed: bool) -> Result<DecisionPlan, DecideError> {
        let started = Instant::now();
        if !self.agents.contains(&call.agent) {
            return Err(DecideError::UnknownAgent(call.agent.clone()));
        }
        let (action, resource) = self.scope_uids(call);
        let pick = |index: &PolicyIndex| -> Result<Arc<DecisionSets>, DecideError> {
            if indexed {
                index
                    .sets_for(&action, &resource, &self.entities)
                    .map_err(DecideError::Request)
            } else {
                Ok(index.full().clone())
            }
        };
        let enforced = pick(&self.enforced)?;
        let shadow = match &self.shadow {
            Some(index) => Some(pick(index)?),
            None => None,
        };
        Ok(DecisionPlan {
            action,
            resource,
            enforced,
            shadow,
            indexed,
            planning: started.elapsed(),
            built_to_needs: false,
        })
    }

    fn decide_with(&self, call: &CallRequest, plan: DecisionPlan) -> Result<Decision, DecideError> {
        let started = Instant::now();
        let elapsed = || {
            let total = started.elapsed() + plan.planning;
            u64::try_from(total.as_micros()).unwrap_or(u64::MAX)
        };
        let (enforced, shadow_sets) = (&plan.enforced, &plan.shadow);
        // Only what the chosen policies can read is converted (the full,
        // unindexed set reads everything). With shadow policies the one
        // request serves two slices, so it stays whole.
        let context = if shadow_sets.is_none() && !plan.built_to_needs {
            enforced.reads.prune(&call.context)
        } else {
            std::borrow::Cow::Borrowed(&call.context)
        };
        // A repeated call skips Cedar. Only the indexed path without shadow
        // policies memoizes: the unindexed path is the reference the index
        // (and so the memo) is checked against.
        let memo_key = if plan.indexed && shadow_sets.is_none() {
            DecisionMemo::key(call, &context)
        } else {
            None
        };
        if let Some(hit) = memo_key.as_deref().and_then(|k| self.memo.get(k)) {
            return Ok(Decision {
                verdict: hit.verdict,
                policies: hit.policies,
                errors: hit.errors,
                shadow: None,
                snapshot: self.version.clone(),
                eval_micros: elapsed(),
                memoized: true,
            });
        }
        let request = self.request(call, &context, &plan.action, &plan.resource)?;
        let (verdict, policies, errors) = self.classify(enforced, &request, call);
        if let Some(key) = memo_key {
            self.memo.put(
                key,
                Memoized {
                    verdict: verdict.clone(),
                    policies: policies.clone(),
                    errors: errors.clone(),
                },
            );
        }
        let shadow = shadow_sets.as_ref().and_then(|sets| {
            let (v, p, _) = self.classify(sets, &request, call);
            (v.name() != verdict.name() || p != policies).then(|| ShadowOutcome {
                verdict: v.name(),
                policies: p,
            })
        });
        Ok(Decision {
            verdict,
            policies,
            errors,
            shadow,
            snapshot: self.version.clone(),
            eval_micros: elapsed(),
            memoized: false,
        })
    }

    /// The call's action and resource as Cedar entities.
    fn scope_uids(&self, call: &CallRequest) -> (EntityUid, EntityUid) {
        let action = EntityUid::from_type_name_and_id(
            self.types.action.clone(),
            EntityId::new(&call.action),
        );
        (action, call.resource.uid(&self.types))
    }

    /// The Cedar request for `call`, with `context` (the call's context, or
    /// the part of it the chosen policies read).
    fn request(
        &self,
        call: &CallRequest,
        context: &serde_json::Map<String, serde_json::Value>,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Result<Request, DecideError> {
        let principal =
            EntityUid::from_type_name_and_id(self.types.agent.clone(), EntityId::new(&call.agent));
        // Numbers where the schema declares `decimal` become decimals.
        let paths: Vec<&[String]> = self
            .decimals
            .get(&call.action)
            .map(|p| p.iter().map(Vec::as_slice).collect())
            .unwrap_or_default();
        let context = Context::from_pairs(context.iter().filter_map(|(k, v)| {
            let below: Vec<&[String]> = paths
                .iter()
                .filter_map(|p| p.split_first())
                .filter(|(first, _)| *first == k)
                .map(|(_, rest)| rest)
                .collect();
            decimals::typed(v, &below).map(|v| (k.clone(), v))
        }))
        .map_err(|e| DecideError::Request(e.to_string()))?;
        // The context is not validated against the schema here: policies were
        // validated at load, and a value of the wrong type makes the policy
        // that reads it fail, which is a deny below.
        Request::new(principal, action.clone(), resource.clone(), context, None)
            .map_err(|e| DecideError::Request(e.to_string()))
    }

    fn classify(
        &self,
        sets: &DecisionSets,
        request: &Request,
        call: &CallRequest,
    ) -> (Verdict, Vec<String>, Vec<String>) {
        let resp = self
            .authorizer
            .is_authorized(request, &sets.main, &self.entities);
        if let Some(denied) = self.errors_to_deny(&resp) {
            return denied;
        }
        // Sorted, so that answers and audit records do not depend on the
        // order Cedar happens to report them in.
        let mut determining: Vec<&PolicyId> = resp.diagnostics().reason().collect();
        determining.sort_by(|a, b| AsRef::<str>::as_ref(*a).cmp(AsRef::<str>::as_ref(*b)));
        let ids: Vec<String> = determining.iter().map(|id| id_text(id)).collect();
        match resp.decision() {
            CedarDecision::Allow => (Verdict::Allow, ids, Vec::new()),
            CedarDecision::Deny if determining.is_empty() => {
                let reason = format!(
                    "no policy permits agent `{}` to `{}` on `{}`",
                    call.agent, call.action, call.resource
                );
                (
                    Verdict::Deny {
                        reasons: vec![reason],
                    },
                    ids,
                    Vec::new(),
                )
            }
            CedarDecision::Deny => {
                let gates: Vec<Gate> = determining
                    .iter()
                    .filter_map(|id| {
                        let m = self.meta.get(*id)?;
                        Some(Gate {
                            policy: m.id.clone(),
                            reason: m.hold.clone()?,
                            approvers: m.approvers.clone(),
                            timeout: m.timeout,
                            elicit: m.elicit,
                        })
                    })
                    .collect();
                if gates.len() == determining.len() {
                    // Only gates stand in the way: lifted, would a permit
                    // allow it? (see `DecisionSets::permits`)
                    let lifted =
                        self.authorizer
                            .is_authorized(request, &sets.permits, &self.entities);
                    if let Some(denied) = self.errors_to_deny(&lifted) {
                        return denied;
                    }
                    if lifted.decision() == CedarDecision::Allow {
                        return (Verdict::Hold { gates }, ids, Vec::new());
                    }
                    let mut reasons = vec![format!(
                        "no policy permits agent `{}` to `{}` on `{}`, even with approval",
                        call.agent, call.action, call.resource
                    )];
                    reasons.extend(gates.iter().map(|g| self.deny_reason(&g.policy)));
                    return (Verdict::Deny { reasons }, ids, Vec::new());
                }
                // Plain forbids first: they are the ones no approval lifts.
                let mut sorted = ids.clone();
                sorted.sort_by_key(|id| self.meta(id).is_some_and(|m| m.hold.is_some()));
                let reasons = sorted.iter().map(|id| self.deny_reason(id)).collect();
                (Verdict::Deny { reasons }, sorted, Vec::new())
            }
        }
    }

    fn errors_to_deny(&self, resp: &Response) -> Option<(Verdict, Vec<String>, Vec<String>)> {
        let errs: Vec<_> = resp.diagnostics().errors().collect();
        if errs.is_empty() {
            return None;
        }
        let mut policies = Vec::new();
        let mut errors = Vec::new();
        let mut errs = errs;
        errs.sort_by(|a, b| {
            let id = |e: &&cedar_policy::AuthorizationError| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => {
                    id_text(pe.policy_id())
                }
            };
            id(a).cmp(&id(b))
        });
        for e in errs {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
            policies.push(id_text(pe.policy_id()));
            errors.push(e.to_string());
        }
        let reasons = policies
            .iter()
            .zip(&errors)
            .map(|(id, e)| {
                format!("policy `{id}` could not be evaluated, so the call is denied: {e}")
            })
            .collect();
        Some((Verdict::Deny { reasons }, policies, errors))
    }

    fn deny_reason(&self, id: &str) -> String {
        match self.meta(id) {
            Some(PolicyMeta { hold: Some(h), .. }) => {
                format!("`{id}` requires human approval: {h}")
            }
            Some(PolicyMeta {
                reason: Some(r), ..
            }) => format!("`{id}`: {r}"),
            _ => format!("forbidden by policy `{id}`"),
        }
    }
}

/// A policy's id as written in its `@id`: `PolicyId`'s `Display` escapes
/// quotes, backslashes and control characters, which would name a policy
/// its metadata does not know (and costs a formatter per id).
pub(crate) fn id_text(id: &PolicyId) -> String {
    AsRef::<str>::as_ref(id).to_owned()
}

fn build_entities(
    types: &TypeNames,
    directory: &Directory,
    schema: &cedar_policy::Schema,
) -> Result<Entities, String> {
    let mut entities = Vec::new();
    let mut groups = HashSet::new();
    for a in &directory.agents {
        let uid = EntityUid::from_type_name_and_id(types.agent.clone(), EntityId::new(&a.id));
        let parents = a
            .groups
            .iter()
            .map(|g| {
                groups.insert(g.clone());
                EntityUid::from_type_name_and_id(types.group.clone(), EntityId::new(g))
            })
            .collect();
        let attrs = a
            .attributes
            .iter()
            .filter_map(|(k, v)| value::to_cedar(v).map(|v| (k.clone(), v)))
            .collect();
        let e = Entity::new(uid, attrs, parents).map_err(|e| format!("agent `{}`: {e}", a.id))?;
        entities.push(e);
    }
    for g in groups {
        let uid = EntityUid::from_type_name_and_id(types.group.clone(), EntityId::new(&g));
        entities.push(Entity::new_no_attrs(uid, HashSet::new()));
    }
    for r in &directory.routes {
        let uid = EntityUid::from_type_name_and_id(types.route.clone(), EntityId::new(r));
        entities.push(Entity::new_no_attrs(uid, HashSet::new()));
    }
    // A tool exists as an entity, under its route, when the schema declares
    // its per-tool action `Action::"<route>/<tool>"` (what `airlock schema
    // pull` writes); built here once, not per request.
    let routes: HashSet<&str> = directory.routes.iter().map(String::as_str).collect();
    for action in schema.actions() {
        let id = action.id().unescaped();
        let Some((route, _tool)) = id.split_once('/') else {
            continue;
        };
        if !routes.contains(route) {
            continue;
        }
        let uid = EntityUid::from_type_name_and_id(types.tool.clone(), EntityId::new(id));
        let parent = EntityUid::from_type_name_and_id(types.route.clone(), EntityId::new(route));
        entities.push(Entity::new_no_attrs(uid, HashSet::from([parent])));
    }
    Entities::from_entities(entities, Some(schema)).map_err(|e| {
        let mut msg = format!("the configured agents and routes do not fit the schema: {e}");
        if let Some(help) = miette::Diagnostic::help(&e) {
            msg.push_str(&format!(" (help: {help})"));
        }
        msg
    })
}

/// No lower-case letter and at least one upper-case one.
fn is_upper_case(name: &str) -> bool {
    name.chars().any(char::is_uppercase) && !name.chars().any(char::is_lowercase)
}

#[cfg(test)]
mod tests;
