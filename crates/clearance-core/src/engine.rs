//! The pure part of the decision path: stages 2 to 6, and stage 8 (issuing).

use std::sync::Arc;

use clearance_artifact::ClearanceSigner;
use clearance_model::environment::EnvBinding;
use clearance_model::execution::Delegation;
use clearance_model::limits::{MAX_ACTION_BYTES, MAX_ENVIRONMENT_BYTES, MAX_JSON_DEPTH, MAX_RESOURCE_BYTES};
use clearance_model::wire::AuthorizeRequest;
use clearance_model::{
    ClearanceClaims, Decision, DenyReason, Digest, ExecutionId, LogIndex, PolicyVersion, PrincipalId, ResourceRef,
    Role, Timestamp, argument_digest,
};
use clearance_policy::{CompiledPolicy, EnvironmentFacts, Lineage, PolicyOutcome, PolicyRequest};
use serde_json::Value;

use crate::error::CoreError;

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: PrincipalId,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The `iss` of every clearance: the control plane's origin.
    pub issuer: String,
    pub default_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
    /// Deepest lineage allowed (a root is depth 0).
    pub max_lineage_depth: u32,
    /// The lease an execution gets on start and on each renewal.
    pub lease_seconds: u64,
    /// Whether every request must name a target environment.
    pub require_environment: bool,
    /// How long an accepted attestation keeps an environment fresh.
    pub attestation_freshness_seconds: u64,
    /// How long an attestation challenge may be answered.
    pub challenge_ttl_seconds: u64,
}

impl Default for EngineConfig {
    /// The documented defaults (README, Configuration), for an issuer at the default
    /// listen address.
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:7700".to_owned(),
            default_ttl_seconds: clearance_model::limits::DEFAULT_TTL_SECONDS,
            max_ttl_seconds: clearance_model::limits::DEFAULT_MAX_TTL_SECONDS,
            max_lineage_depth: clearance_model::execution::DEFAULT_MAX_LINEAGE_DEPTH,
            lease_seconds: clearance_model::execution::DEFAULT_LEASE_SECONDS,
            require_environment: true,
            attestation_freshness_seconds: clearance_model::environment::DEFAULT_ATTESTATION_FRESHNESS_SECONDS,
            challenge_ttl_seconds: clearance_model::environment::CHALLENGE_TTL_SECONDS,
        }
    }
}

/// What the control plane found about the request's target environment (stage 5 needs
/// the registry; the rule itself stays pure).
#[derive(Debug, Clone, PartialEq)]
pub enum EnvironmentCheck {
    /// The request names none, and none is required.
    Unbound,
    /// The request names none, but one is required.
    Required,
    Unknown(String),
    Quarantined(String),
    Stale(String),
    Mismatch(String),
    Fresh(Box<AttestedEnvironment>),
}

/// A registered, unquarantined environment with a fresh attestation that matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedEnvironment {
    pub id: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub measurements: clearance_model::environment::Measurements,
    pub measurement_digest: Digest,
    /// The log entry of the attestation relied on.
    pub attestation: LogIndex,
}

/// What the control plane established about a request's parent clearance before the
/// pure stages run (stage 4 needs the parent's signature and stored state).
#[derive(Debug, Clone, PartialEq)]
pub enum ParentCheck {
    /// The request names no parent.
    None,
    /// The parent does not verify, is unknown, or is no longer live.
    Invalid(String),
    /// The parent (or an ancestor) was revoked.
    Revoked {
        parent: ExecutionId,
        message: String,
    },
    Live(Box<ParentFacts>),
}

/// A verified, live parent.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentFacts {
    pub claims: ClearanceClaims,
    /// Until when the parent may run: its lease if started, its expiry otherwise.
    pub live_until: Timestamp,
    pub root_principal: PrincipalId,
}

/// Where an allowed request sits in its lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub parent: Option<ExecutionId>,
    pub depth: u32,
    pub root_principal: PrincipalId,
    pub delegation: Option<Delegation>,
}

/// What stages 2 to 6 concluded about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reasons: Vec<DenyReason>,
    pub policies: Vec<String>,
    pub policy_version: Option<PolicyVersion>,
    pub message: Option<String>,
    /// Digest of the arguments as asked, recorded in the log for denies as well.
    pub arguments: Digest,
    pub ttl_seconds: u64,
    /// Lineage placement (set once stage 4 passed).
    pub placement: Option<Placement>,
    /// The attested target environment (set once stage 5 passed with one).
    pub environment: Option<Box<AttestedEnvironment>>,
}

impl Verdict {
    fn deny(reason: DenyReason, message: impl Into<String>, arguments: Digest) -> Self {
        Self {
            decision: Decision::Deny,
            reasons: vec![reason],
            policies: Vec::new(),
            policy_version: None,
            message: Some(message.into()),
            arguments,
            ttl_seconds: 0,
            placement: None,
            environment: None,
        }
    }
}

#[derive(Debug)]
pub struct DecisionEngine {
    /// The key that signs clearances; replaced when the control plane rotates it.
    signer: std::sync::RwLock<Arc<ClearanceSigner>>,
    config: EngineConfig,
}

impl ParentCheck {
    /// The parent execution, when its clearance verified (recorded with the decision,
    /// allow or deny).
    pub fn parent_id(&self) -> Option<&ExecutionId> {
        match self {
            Self::Live(f) => Some(&f.claims.jti),
            Self::Revoked { parent, .. } => Some(parent),
            Self::None | Self::Invalid(_) => None,
        }
    }
}

impl DecisionEngine {
    pub fn new(signer: ClearanceSigner, config: EngineConfig) -> Self {
        Self {
            signer: std::sync::RwLock::new(Arc::new(signer)),
            config,
        }
    }

    /// The key that signs clearances now.
    pub fn signer(&self) -> Arc<ClearanceSigner> {
        Arc::clone(&self.signer.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Sign with `next` from now on; the key it replaces is returned.
    pub(crate) fn replace_signer(&self, next: ClearanceSigner) -> Arc<ClearanceSigner> {
        let mut current = self.signer.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *current, Arc::new(next))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Stages 2 to 6. Deterministic: no clock, no randomness, no IO. Every path that is
    /// not an explicit permit from stage 6 ends in `Deny`.
    pub fn decide(
        &self,
        caller: &Caller,
        req: &AuthorizeRequest,
        parent: &ParentCheck,
        environment: &EnvironmentCheck,
        policy: Option<&CompiledPolicy>,
        now: Timestamp,
    ) -> Verdict {
        // The log records what was asked even when it is refused early, so the digest
        // comes first. Canonicalizing a parsed JSON value does not fail in practice; if it
        // ever did, the request is invalid and the digest of `null` is recorded.
        let digest = argument_digest(&req.arguments);
        let arguments = digest.as_ref().ok().copied().unwrap_or_else(|| Digest::of(b"null"));
        // Stage 2: the caller must be an agent.
        if !caller.has(Role::Agent) {
            return Verdict::deny(
                DenyReason::UnauthorizedRole,
                "authorize needs the `agent` role",
                arguments,
            );
        }
        // Stage 3: shape and limits.
        let checked = digest
            .map_err(|e| format!("`arguments`: {e}"))
            .and_then(|_| self.validate(req));
        let ttl = match checked {
            Ok(ttl) => ttl,
            Err(message) => return Verdict::deny(DenyReason::InvalidRequest, message, arguments),
        };
        // Stage 4: lineage.
        let (placement, ttl) = match self.place(caller, req, parent, ttl, now) {
            Ok(p) => p,
            Err((reason, message)) => return Verdict::deny(reason, message, arguments),
        };
        // Stage 5: the target environment.
        let attested = match environment {
            EnvironmentCheck::Unbound => None,
            EnvironmentCheck::Fresh(env) if req.environment.as_deref() == Some(env.id.as_str()) => Some(env),
            EnvironmentCheck::Fresh(_) => {
                return Verdict::deny(
                    DenyReason::EnvironmentUnknown,
                    "the environment checked is not the one requested",
                    arguments,
                );
            }
            EnvironmentCheck::Required => {
                return Verdict::deny(
                    DenyReason::InvalidRequest,
                    "`environment` is required: name the environment that will execute this",
                    arguments,
                );
            }
            EnvironmentCheck::Unknown(m) => return Verdict::deny(DenyReason::EnvironmentUnknown, m.clone(), arguments),
            EnvironmentCheck::Quarantined(m) => {
                return Verdict::deny(DenyReason::EnvironmentUntrusted, m.clone(), arguments);
            }
            EnvironmentCheck::Stale(m) => return Verdict::deny(DenyReason::AttestationStale, m.clone(), arguments),
            EnvironmentCheck::Mismatch(m) => {
                return Verdict::deny(DenyReason::MeasurementMismatch, m.clone(), arguments);
            }
        };
        // Stage 6: policy.
        let Some(policy) = policy else {
            return Verdict::deny(
                DenyReason::NoActivePolicy,
                "no policy version is active: everything is denied",
                arguments,
            );
        };
        let outcome = policy.evaluate(&PolicyRequest {
            principal: caller.id.as_str(),
            action: &req.action,
            resource: &req.resource,
            arguments: &req.arguments,
            context: &req.context,
            request_time: now.seconds(),
            lineage: Lineage {
                depth: placement.depth,
                root: placement.root_principal.as_str(),
            },
            environment: attested.map(|e| EnvironmentFacts {
                id: &e.id,
                labels: &e.labels,
                measurements: &e.measurements,
            }),
        });
        let version = Some(policy.version());
        let (decision, reason, policies, message) = match policy_verdict(outcome) {
            Ok(policies) => (Decision::Allow, None, policies, None),
            Err((reason, policies, message)) => (Decision::Deny, Some(reason), policies, Some(message)),
        };
        Verdict {
            decision,
            reasons: reason.into_iter().collect(),
            policies,
            policy_version: version,
            message,
            arguments,
            ttl_seconds: if decision == Decision::Allow { ttl } else { 0 },
            placement: Some(placement),
            environment: attested.cloned(),
        }
    }

    /// Stage 4. A root is depth 0 and its own root principal. A child must name a live
    /// parent whose `dlg` covers its action and resource, with a lifetime inside the
    /// parent's and a depth inside both the parent's delegation and the global bound;
    /// whatever it asks to delegate further must be narrower again.
    fn place(
        &self,
        caller: &Caller,
        req: &AuthorizeRequest,
        parent: &ParentCheck,
        ttl: u64,
        now: Timestamp,
    ) -> Result<(Placement, u64), (DenyReason, String)> {
        let max_depth = self.config.max_lineage_depth;
        let facts = match (parent, &req.parent) {
            (ParentCheck::None, None) => {
                if let Some(d) = &req.delegate {
                    self.check_delegation_shape(d)?;
                    if d.depth > max_depth {
                        return Err((
                            DenyReason::LineageTooDeep,
                            format!("`delegate.depth` {} exceeds the lineage bound of {max_depth}", d.depth),
                        ));
                    }
                }
                return Ok((
                    Placement {
                        parent: None,
                        depth: 0,
                        root_principal: caller.id.clone(),
                        delegation: req.delegate.clone(),
                    },
                    ttl,
                ));
            }
            (ParentCheck::Invalid(m), _) => return Err((DenyReason::ParentInvalid, m.clone())),
            (ParentCheck::Revoked { message, .. }, _) => return Err((DenyReason::ParentRevoked, message.clone())),
            (ParentCheck::Live(facts), Some(_)) => facts,
            (ParentCheck::None | ParentCheck::Live(_), _) => {
                return Err((
                    DenyReason::ParentInvalid,
                    "the parent clearance was not checked".to_owned(),
                ));
            }
        };
        let p = &facts.claims;
        let scope = |m: String| (DenyReason::ScopeExceedsParent, m);
        let Some(dlg) = &p.dlg else {
            return Err(scope(format!("parent execution `{}` may not delegate", p.jti)));
        };
        let depth = p.dep.saturating_add(1);
        if depth > max_depth {
            return Err((
                DenyReason::LineageTooDeep,
                format!("a child of depth {depth} exceeds the lineage bound of {max_depth}"),
            ));
        }
        if !dlg.actions.iter().any(|a| a == &req.action) {
            return Err(scope(format!(
                "action `{}` is not among the parent's delegable actions {}",
                req.action,
                quoted(&dlg.actions)
            )));
        }
        let allowed = delegable_resources(dlg, &p.res);
        if !allowed.contains(&req.resource) {
            return Err(scope(format!(
                "resource {} is not among the parent's delegable resources",
                req.resource
            )));
        }
        let remaining = u64::try_from(facts.live_until.seconds().saturating_sub(now.seconds())).unwrap_or(0);
        if remaining == 0 {
            return Err((
                DenyReason::ParentInvalid,
                format!("parent execution `{}` is no longer live", p.jti),
            ));
        }
        let cap = dlg.ttl_seconds.map_or(remaining, |t| t.min(remaining));
        let ttl = match req.ttl_seconds {
            Some(asked) if asked > cap => {
                return Err(scope(format!(
                    "`ttl_seconds` {asked} outlives what the parent allows ({cap} s)"
                )));
            }
            Some(asked) => asked,
            None => ttl.min(cap),
        };
        if let Some(child) = &req.delegate {
            self.check_delegation_shape(child)?;
            if child.depth >= dlg.depth {
                return Err((
                    DenyReason::LineageTooDeep,
                    format!(
                        "`delegate.depth` {} must be below the parent's remaining delegation depth {}",
                        child.depth, dlg.depth
                    ),
                ));
            }
            if let Some(a) = child.actions.iter().find(|a| !dlg.actions.contains(a)) {
                return Err(scope(format!(
                    "`delegate.actions` names `{a}`, which the parent cannot delegate"
                )));
            }
            let child_resources = delegable_resources(child, &req.resource);
            if let Some(r) = child_resources.iter().find(|r| !allowed.contains(r)) {
                return Err(scope(format!(
                    "`delegate.resources` names {r}, which the parent cannot delegate"
                )));
            }
            if let (Some(parent_ttl), child_ttl) = (dlg.ttl_seconds, child.ttl_seconds)
                && child_ttl.is_none_or(|t| t > parent_ttl)
            {
                return Err(scope(format!(
                    "`delegate.ttl_seconds` must be at most the parent's {parent_ttl}"
                )));
            }
        }
        Ok((
            Placement {
                parent: Some(p.jti.clone()),
                depth,
                root_principal: facts.root_principal.clone(),
                delegation: req.delegate.clone(),
            },
            ttl,
        ))
    }

    fn check_delegation_shape(&self, d: &Delegation) -> Result<(), (DenyReason, String)> {
        let invalid = |m: String| (DenyReason::InvalidRequest, m);
        if d.actions.is_empty() {
            return Err(invalid("`delegate.actions` must name at least one action".into()));
        }
        if d.depth == 0 {
            return Err(invalid("`delegate.depth` must be at least 1".into()));
        }
        for a in &d.actions {
            bounded("delegate action", a, MAX_ACTION_BYTES).map_err(invalid)?;
        }
        for r in d.resources.iter().flatten() {
            bounded("delegate resource type", &r.kind, MAX_RESOURCE_BYTES).map_err(invalid)?;
            bounded("delegate resource id", &r.id, MAX_RESOURCE_BYTES).map_err(invalid)?;
        }
        if d.actions.len() + d.resources.as_ref().map_or(0, Vec::len) > 256 {
            return Err(invalid("`delegate` names more than 256 actions and resources".into()));
        }
        if let Some(t) = d.ttl_seconds
            && (t == 0 || t > self.config.max_ttl_seconds)
        {
            return Err(invalid(format!(
                "`delegate.ttl_seconds` must be between 1 and {}",
                self.config.max_ttl_seconds
            )));
        }
        Ok(())
    }

    /// Stage 3 limits; returns the clearance lifetime to grant.
    fn validate(&self, req: &AuthorizeRequest) -> Result<u64, String> {
        bounded("action", &req.action, MAX_ACTION_BYTES)?;
        bounded("resource type", &req.resource.kind, MAX_RESOURCE_BYTES)?;
        bounded("resource id", &req.resource.id, MAX_RESOURCE_BYTES)?;
        if let Some(env) = &req.environment {
            bounded("environment", env, MAX_ENVIRONMENT_BYTES)?;
        }
        for (name, value) in [("arguments", &req.arguments), ("context", &req.context)] {
            if !value.is_object() {
                return Err(format!("`{name}` must be a JSON object"));
            }
            if depth(value) > MAX_JSON_DEPTH {
                return Err(format!("`{name}` nests deeper than {MAX_JSON_DEPTH} levels"));
            }
        }
        let ttl = req.ttl_seconds.unwrap_or(self.config.default_ttl_seconds);
        if ttl == 0 || ttl > self.config.max_ttl_seconds {
            return Err(format!(
                "`ttl_seconds` must be between 1 and {}, got {ttl}",
                self.config.max_ttl_seconds
            ));
        }
        Ok(ttl)
    }

    /// Stage 8: sign the clearance for an allowed request whose decision is durable at
    /// `log`. Refuses anything but an allow.
    /// The claims a clearance for an allowed verdict carries, bound to the log entry at
    /// `log`. Signs nothing; refuses any verdict but allow.
    pub fn claims(
        &self,
        caller: &Caller,
        req: &AuthorizeRequest,
        verdict: &Verdict,
        execution_id: &ExecutionId,
        log: LogIndex,
        now: Timestamp,
    ) -> Result<ClearanceClaims, CoreError> {
        let (Decision::Allow, Some(pol)) = (verdict.decision, verdict.policy_version) else {
            return Err(CoreError::Internal(
                "refusing to sign a clearance for a request that was not allowed".into(),
            ));
        };
        let exp = now.plus_seconds(verdict.ttl_seconds);
        let claims = ClearanceClaims {
            iss: self.config.issuer.clone(),
            sub: caller.id.to_string(),
            aud: req.environment.clone(),
            jti: execution_id.clone(),
            iat: now.seconds(),
            nbf: now.seconds(),
            exp: exp.seconds(),
            act: req.action.clone(),
            res: req.resource.clone(),
            args: verdict.arguments,
            env: verdict.environment.as_ref().map(|e| EnvBinding {
                id: e.id.clone(),
                measurements: e.measurement_digest,
            }),
            pol,
            log,
            par: verdict.placement.as_ref().and_then(|p| p.parent.clone()),
            dep: verdict.placement.as_ref().map_or(0, |p| p.depth),
            dlg: verdict.placement.as_ref().and_then(|p| p.delegation.clone()),
        };
        Ok(claims)
    }

    /// Stage 8, prepared: the claims of an allowed verdict's clearance, complete but for
    /// the index of the log entry that will record the decision, which only the store's
    /// write transaction knows. Refuses a verdict that is not an allow.
    pub fn prepare(
        &self,
        caller: &Caller,
        req: &AuthorizeRequest,
        verdict: &Verdict,
        execution_id: &ExecutionId,
        now: Timestamp,
    ) -> Result<Unsealed, CoreError> {
        let claims = self.claims(caller, req, verdict, execution_id, LogIndex(0), now)?;
        Ok(Unsealed {
            claims,
            signer: self.signer(),
        })
    }
}

/// A clearance's claims waiting for the index of the decision's log entry.
#[derive(Debug)]
pub struct Unsealed {
    claims: ClearanceClaims,
    signer: Arc<ClearanceSigner>,
}

impl Unsealed {
    pub const fn expires(&self) -> Timestamp {
        Timestamp(self.claims.exp)
    }

    /// Stage 8: sign the clearance, bound to the decision's log entry. It takes a
    /// [`Recorded`] index, which only the control plane's seal makes, inside the store
    /// transaction that writes that entry; the store hands the token back only after
    /// the transaction committed. A clearance cannot leave for a decision not in the log.
    pub fn sign(mut self, recorded: Recorded) -> Result<String, CoreError> {
        self.claims.log = recorded.index();
        self.signer
            .sign(&self.claims)
            .map_err(|e| CoreError::Internal(format!("signing: {e}")))
    }
}

/// The log index of a decision entry, known inside the store transaction that writes
/// it (together with the clearance signed with it): required to sign that clearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded(LogIndex);

impl Recorded {
    /// Only in a [`crate::Seal`], which the store runs inside the entry's transaction.
    pub(crate) const fn sequenced(index: LogIndex) -> Self {
        Self(index)
    }

    pub const fn index(self) -> LogIndex {
        self.0
    }
}

fn bounded(name: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{name}` must not be empty"));
    }
    if value.len() > max {
        return Err(format!(
            "`{name}` is {} bytes, more than the limit of {max}",
            value.len()
        ));
    }
    Ok(())
}

fn depth(value: &Value) -> usize {
    // Iterative, so a hostile document cannot exhaust the stack here.
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// The resources a delegation covers: those it names, or else only the holder's own.
fn delegable_resources(d: &Delegation, own: &ResourceRef) -> Vec<ResourceRef> {
    d.resources.clone().unwrap_or_else(|| vec![own.clone()])
}

fn quoted(ids: &[String]) -> String {
    ids.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
}

/// The one mapping from a policy outcome to its verdict, for decisions and renewals
/// alike: the permitting policies, or the deny reason with the determining policies and
/// a message.
pub(crate) fn policy_verdict(outcome: PolicyOutcome) -> Result<Vec<String>, (DenyReason, Vec<String>, String)> {
    match outcome {
        PolicyOutcome::Permit { policies } => Ok(policies),
        PolicyOutcome::NotPermitted => Err((
            DenyReason::PolicyDenied,
            Vec::new(),
            "no policy permits this request".to_owned(),
        )),
        PolicyOutcome::Forbidden { policies } => {
            let message = format!("forbidden by policy {}", quoted(&policies));
            Err((DenyReason::PolicyForbidden, policies, message))
        }
        PolicyOutcome::EvaluationError { policies, message } => Err((DenyReason::PolicyError, policies, message)),
        PolicyOutcome::InvalidRequest { message } => Err((DenyReason::InvalidRequest, Vec::new(), message)),
    }
}
