//! Scope analysis: what a policy's scope (`principal`, `action`,
//! `resource`) can match, without looking at its conditions.
//!
//! Used twice: at load, to refuse a policy whose scope no request in the
//! schema can ever match (Cedar's strict validation accepts, for instance,
//! `principal == Group::"x"` when no action takes a group as principal);
//! and by `explain`, to list for a call that nothing permits the permits
//! scoped to its action and resource, the ones that came closest.

use std::path::PathBuf;

use cedar_policy::{
    ActionConstraint, Effect, Entities, EntityTypeName, EntityUid, Policy, PolicySet,
    PrincipalConstraint, RequestEnv, ResourceConstraint, Schema,
};
use serde::Serialize;

use super::{CallRequest, PolicySnapshot};

/// A principal or resource scope, whichever of the two it is.
enum Scope {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
    IsIn(EntityTypeName, EntityUid),
}

impl From<PrincipalConstraint> for Scope {
    fn from(c: PrincipalConstraint) -> Self {
        match c {
            PrincipalConstraint::Any => Scope::Any,
            PrincipalConstraint::Eq(u) => Scope::Eq(u),
            PrincipalConstraint::In(u) => Scope::In(u),
            PrincipalConstraint::Is(t) => Scope::Is(t),
            PrincipalConstraint::IsIn(t, u) => Scope::IsIn(t, u),
        }
    }
}

impl From<ResourceConstraint> for Scope {
    fn from(c: ResourceConstraint) -> Self {
        match c {
            ResourceConstraint::Any => Scope::Any,
            ResourceConstraint::Eq(u) => Scope::Eq(u),
            ResourceConstraint::In(u) => Scope::In(u),
            ResourceConstraint::Is(t) => Scope::Is(t),
            ResourceConstraint::IsIn(t, u) => Scope::IsIn(t, u),
        }
    }
}

impl Scope {
    /// Entity uids the scope names.
    fn uid(&self) -> Option<&EntityUid> {
        match self {
            Scope::Eq(u) | Scope::In(u) | Scope::IsIn(_, u) => Some(u),
            Scope::Any | Scope::Is(_) => None,
        }
    }
}

/// The schema's request shapes and action hierarchy, built once per load.
pub(crate) struct ScopeIndex {
    envs: Vec<RequestEnv>,
    actions: Entities,
    schema: Schema,
}

impl ScopeIndex {
    pub(crate) fn new(schema: &Schema) -> Result<ScopeIndex, String> {
        Ok(ScopeIndex {
            envs: schema.request_envs().collect(),
            actions: schema.action_entities().map_err(|e| e.to_string())?,
            schema: schema.clone(),
        })
    }

    /// Whether any request the schema allows can match `p`'s scope.
    pub(crate) fn can_apply(&self, p: &Policy) -> bool {
        let principal = Scope::from(p.principal_constraint());
        let resource = Scope::from(p.resource_constraint());
        let action = p.action_constraint();
        self.envs.iter().any(|env| {
            self.action_matches(&action, env.action())
                && self.type_fits(&principal, env.principal())
                && self.type_fits(&resource, env.resource())
        })
    }

    fn action_matches(&self, c: &ActionConstraint, action: &EntityUid) -> bool {
        match c {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(u) => u == action,
            ActionConstraint::In(us) => us
                .iter()
                .any(|u| u == action || self.actions.is_ancestor_of(u, action)),
        }
    }

    /// Whether an entity of type `ty` can satisfy `scope`.
    fn type_fits(&self, scope: &Scope, ty: &EntityTypeName) -> bool {
        match scope {
            Scope::Any => true,
            Scope::Eq(u) => u.type_name() == ty,
            Scope::In(u) => self.can_be_in(ty, u),
            Scope::Is(t) => t == ty,
            Scope::IsIn(t, u) => t == ty && self.can_be_in(ty, u),
        }
    }

    fn can_be_in(&self, ty: &EntityTypeName, target: &EntityUid) -> bool {
        target.type_name() == ty
            || self
                .schema
                .ancestors(ty)
                .is_some_and(|mut a| a.any(|t| t == target.type_name()))
    }
}

/// Entities a policy's principal or resource scope names that `entities`
/// does not hold (a typo, or an agent, group or route not configured).
pub(crate) fn unknown_entities(p: &Policy, entities: &Entities) -> Vec<EntityUid> {
    [
        Scope::from(p.principal_constraint()),
        Scope::from(p.resource_constraint()),
    ]
    .iter()
    .filter_map(|s| s.uid().cloned())
    .filter(|u| entities.get(u).is_none())
    .collect()
}

/// A permit scoped to a call's action and resource that still did not
/// permit it.
#[derive(Debug, Clone, Serialize)]
pub struct ScopedPermit {
    pub policy: String,
    /// Whether the call's agent is in the permit's principal scope too; if
    /// so, only its `when`/`unless` conditions kept it from applying.
    pub principal_in_scope: bool,
    pub file: PathBuf,
    pub line: usize,
}

// === impl PolicySnapshot ===

impl PolicySnapshot {
    /// The enforced permits whose action and resource scope match `call`,
    /// closest first: those whose principal scope matches too come before
    /// those scoped to other principals.
    pub fn scoped_permits(&self, call: &CallRequest) -> Vec<ScopedPermit> {
        let (action, resource) = self.scope_uids(call);
        let Ok(request) = self.request(call, &call.context, &action, &resource) else {
            return Vec::new();
        };
        let (Some(principal), Some(action), Some(resource)) =
            (request.principal(), request.action(), request.resource())
        else {
            return Vec::new();
        };
        let mut out: Vec<ScopedPermit> = permits(&self.enforced.full().main)
            .filter(|p| self.scope.action_matches(&p.action_constraint(), action))
            .filter(|p| self.entity_fits(&p.resource_constraint().into(), resource))
            .filter_map(|p| {
                let meta = self.meta.get(p.id())?;
                Some(ScopedPermit {
                    policy: meta.id.clone(),
                    principal_in_scope: self
                        .entity_fits(&p.principal_constraint().into(), principal),
                    file: meta.file.clone(),
                    line: meta.line,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.principal_in_scope
                .cmp(&a.principal_in_scope)
                .then_with(|| a.policy.cmp(&b.policy))
        });
        out
    }

    fn entity_fits(&self, scope: &Scope, uid: &EntityUid) -> bool {
        let within =
            |target: &EntityUid| target == uid || self.entities.is_ancestor_of(target, uid);
        match scope {
            Scope::Any => true,
            Scope::Eq(u) => u == uid,
            Scope::In(u) => within(u),
            Scope::Is(t) => t == uid.type_name(),
            Scope::IsIn(t, u) => t == uid.type_name() && within(u),
        }
    }
}

fn permits(set: &PolicySet) -> impl Iterator<Item = &Policy> {
    set.policies().filter(|p| p.effect() == Effect::Permit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn index() -> ScopeIndex {
        let text = include_str!("../../policies/schema.cedarschema");
        let (schema, _) = Schema::from_cedarschema_str(text).unwrap();
        ScopeIndex::new(&schema).unwrap()
    }

    fn applies(text: &str) -> bool {
        index().can_apply(&Policy::from_str(text).unwrap())
    }

    #[test]
    fn scopes_that_fit_some_request_apply() {
        assert!(applies("permit(principal, action, resource);"));
        assert!(applies(
            r#"permit(principal in Group::"support", action in Action::"read", resource == Route::"crm");"#
        ));
        assert!(applies(
            r#"permit(principal is Agent in Group::"x", action == Action::"GET", resource is Route);"#
        ));
        assert!(applies(
            r#"permit(principal, action in [Action::"write", Action::"read"], resource);"#
        ));
    }

    #[test]
    fn scopes_no_request_can_match_do_not_apply() {
        // Groups and routes are never principals; agents never resources.
        assert!(!applies(
            r#"permit(principal == Group::"support", action, resource);"#
        ));
        assert!(!applies(r#"permit(principal is Route, action, resource);"#));
        assert!(!applies(
            r#"permit(principal, action, resource in Agent::"bot");"#
        ));
        // An action group is never a request's action itself.
        assert!(!applies(
            r#"permit(principal, action == Action::"read", resource);"#
        ));
        // A route cannot be in a group.
        assert!(!applies(
            r#"permit(principal, action, resource in Group::"support");"#
        ));
    }
}
