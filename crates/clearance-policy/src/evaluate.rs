//! Evaluating one execution request.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Effect, EntityId, EntityTypeName, EntityUid, PolicySet, PrincipalConstraint,
    Request, ResourceConstraint,
};
use clearance_model::ResourceRef;
use serde_json::{Map, Value};

use crate::compile::CompiledPolicy;

/// What policy is asked about one request. Plain data: Cedar types stay inside.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRequest<'a> {
    pub principal: &'a str,
    pub action: &'a str,
    pub resource: &'a ResourceRef,
    pub arguments: &'a Value,
    pub context: &'a Value,
    /// Seconds since the Unix epoch.
    pub request_time: i64,
    /// Where the request sits in its lineage; a root request is depth 0 and its own root.
    pub lineage: Lineage<'a>,
    /// The target environment's attested facts, when the request names one.
    pub environment: Option<EnvironmentFacts<'a>>,
}

/// What a policy sees of the target environment, as `context.environment` (declared as
/// `environment: { id: String, labels: Set<String>, measurements: Set<String> }`):
/// labels as `"key=value"` and measurements as `"name=sha256:<hex>"`, so that a policy
/// can say `context.environment.labels.contains("pci=true")`.
#[derive(Debug, Clone, Copy)]
pub struct EnvironmentFacts<'a> {
    pub id: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub measurements: &'a clearance_model::environment::Measurements,
}

/// What a policy sees of the request's lineage, as `context.lineage` (declared in the
/// schema as `lineage: { depth: Long, root: String }`).
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    pub depth: u32,
    /// The principal that asked for the root execution.
    pub root: &'a str,
}

/// The policy stage's verdict. Policy ids are sorted so the outcome is deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// At least one permit matched and no forbid did.
    Permit { policies: Vec<String> },
    /// No permit matched.
    NotPermitted,
    /// A forbid matched.
    Forbidden { policies: Vec<String> },
    /// A policy failed to evaluate; the request is denied whatever the others say.
    EvaluationError { policies: Vec<String>, message: String },
    /// The request does not fit the schema (unknown action, ill-typed arguments, ...).
    InvalidRequest { message: String },
}

impl CompiledPolicy {
    /// Evaluate against only the policies that can apply to the request's action.
    pub fn evaluate(&self, req: &PolicyRequest<'_>) -> PolicyOutcome {
        match self.slices.get(req.action) {
            Some(slice) => self.run(req, &slice.uid, &slice.policies, slice.context),
            None => unknown_action(req.action),
        }
    }

    /// Evaluate against every policy of the bundle (`all`, from
    /// [`Self::all_policies`]). Same answer as [`Self::evaluate`] (a property test checks
    /// it); kept as the reference and the benchmark baseline.
    pub fn evaluate_unsliced(&self, all: &PolicySet, req: &PolicyRequest<'_>) -> PolicyOutcome {
        match self.slices.get(req.action) {
            Some(slice) => self.run(req, &slice.uid, all, slice.context),
            None => unknown_action(req.action),
        }
    }

    fn run(
        &self,
        req: &PolicyRequest<'_>,
        action: &EntityUid,
        policies: &PolicySet,
        shape: crate::context::ContextShape,
    ) -> PolicyOutcome {
        let invalid = |message: String| PolicyOutcome::InvalidRequest { message };
        let mut context = Map::new();
        for (declared, name, value) in [
            (shape.arguments, "arguments", req.arguments),
            (shape.context, "context", req.context),
        ] {
            if declared {
                context.insert(name.into(), value.clone());
            } else if value.as_object().is_none_or(|o| !o.is_empty()) {
                return invalid(format!(
                    "action `{}` declares no `{name}`, but the request carries some",
                    req.action
                ));
            }
        }
        if shape.request_time {
            context.insert("request_time".into(), Value::from(req.request_time));
        }
        if shape.environment {
            let Some(env) = req.environment else {
                return invalid(format!(
                    "action `{}` declares `environment`, but the request names no environment",
                    req.action
                ));
            };
            let labels: Vec<String> = env.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let measurements: Vec<String> = env.measurements.iter().map(|(k, v)| format!("{k}={v}")).collect();
            context.insert(
                "environment".into(),
                serde_json::json!({ "id": env.id, "labels": labels, "measurements": measurements }),
            );
        }
        if shape.lineage {
            context.insert(
                "lineage".into(),
                serde_json::json!({ "depth": req.lineage.depth, "root": req.lineage.root }),
            );
        }
        let context = match Context::from_json_value(Value::Object(context), Some((&self.schema, action))) {
            Ok(c) => c,
            Err(e) => return invalid(self.misfit(req, &e)),
        };
        let principal = EntityUid::from_type_name_and_id(self.principal_type.clone(), EntityId::new(req.principal));
        let resource_type = match EntityTypeName::from_str(&req.resource.kind) {
            Ok(t) => t,
            Err(_) => {
                return invalid(format!(
                    "resource type `{}` is not a valid entity type name",
                    req.resource.kind
                ));
            }
        };
        let resource = EntityUid::from_type_name_and_id(resource_type, EntityId::new(&req.resource.id));
        let request = match Request::new(principal, action.clone(), resource, context, Some(&self.schema)) {
            Ok(r) => r,
            Err(e) => return invalid(self.misfit(req, &e)),
        };
        let response = Authorizer::new().is_authorized(&request, policies, &self.action_entities);
        let diagnostics = response.diagnostics();
        let mut errored: Vec<String> = diagnostics.errors().map(|e| policy_of(e).to_string()).collect();
        if !errored.is_empty() {
            errored.sort();
            errored.dedup();
            let message = diagnostics
                .errors()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return PolicyOutcome::EvaluationError {
                policies: errored,
                message,
            };
        }
        let mut determining: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
        determining.sort();
        match (response.decision(), determining.is_empty()) {
            (Decision::Allow, _) => PolicyOutcome::Permit { policies: determining },
            (Decision::Deny, true) => PolicyOutcome::NotPermitted,
            (Decision::Deny, false) => PolicyOutcome::Forbidden { policies: determining },
        }
    }
}

impl CompiledPolicy {
    /// Why a request does not fit its action, naming the field that does not fit; Cedar's
    /// own message (`cedar`) quotes the whole context, values and all, without saying
    /// which, and is the fallback.
    fn misfit(&self, req: &PolicyRequest<'_>, cedar: &dyn std::fmt::Display) -> String {
        let why = self
            .slices
            .get(req.action)
            .and_then(|s| s.inputs.mismatch(req.arguments, req.context))
            .unwrap_or_else(|| cedar.to_string());
        format!("request does not match action `{}`: {why}", req.action)
    }

    /// Whether some permit policy's scope takes in this principal, action and resource:
    /// whether any call of `action` could be permitted to `principal`, whatever its
    /// arguments and context. Conditions are not evaluated (a permit whose `when` never
    /// holds still counts) and forbids are not consulted, so this can only over-approximate
    /// what is permitted: it decides what an agent is shown, never what it may do. The
    /// scope is matched as evaluation matches it: requests carry no entity hierarchy, so
    /// `in` holds only for the entity itself.
    pub fn may_permit(&self, principal: &str, action: &str, resource: &ResourceRef) -> bool {
        let Some(slice) = self.slices.get(action) else {
            return false;
        };
        let Ok(resource_type) = EntityTypeName::from_str(&resource.kind) else {
            return false;
        };
        let principal = EntityUid::from_type_name_and_id(self.principal_type.clone(), EntityId::new(principal));
        let resource = EntityUid::from_type_name_and_id(resource_type, EntityId::new(&resource.id));
        slice.policies.policies().any(|p| {
            let principal_fits = match p.principal_constraint() {
                PrincipalConstraint::Any => true,
                PrincipalConstraint::In(u) | PrincipalConstraint::Eq(u) => u == principal,
                PrincipalConstraint::Is(t) => &t == principal.type_name(),
                PrincipalConstraint::IsIn(t, u) => &t == principal.type_name() && u == principal,
            };
            let resource_fits = match p.resource_constraint() {
                ResourceConstraint::Any => true,
                ResourceConstraint::In(u) | ResourceConstraint::Eq(u) => u == resource,
                ResourceConstraint::Is(t) => &t == resource.type_name(),
                ResourceConstraint::IsIn(t, u) => &t == resource.type_name() && u == resource,
            };
            p.effect() == Effect::Permit && principal_fits && resource_fits
        })
    }
}

fn policy_of(e: &cedar_policy::AuthorizationError) -> &cedar_policy::PolicyId {
    match e {
        cedar_policy::AuthorizationError::PolicyEvaluationError(inner) => inner.policy_id(),
    }
}

fn unknown_action(action: &str) -> PolicyOutcome {
    PolicyOutcome::InvalidRequest {
        message: format!(
            "action `{}` is not declared in the active policy schema",
            action.chars().take(128).collect::<String>()
        ),
    }
}
