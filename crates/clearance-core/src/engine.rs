//! The pure part of the decision path: stages 2 to 6, and stage 8 (issuing).

use clearance_artifact::ClearanceSigner;
use clearance_model::limits::{MAX_ACTION_BYTES, MAX_ENVIRONMENT_BYTES, MAX_JSON_DEPTH, MAX_RESOURCE_BYTES};
use clearance_model::wire::AuthorizeRequest;
use clearance_model::{
    ClearanceClaims, Decision, DenyReason, Digest, ExecutionId, LogIndex, PolicyVersion, PrincipalId, Role, Timestamp,
    argument_digest,
};
use clearance_policy::{CompiledPolicy, PolicyOutcome, PolicyRequest};
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
        }
    }
}

#[derive(Debug)]
pub struct DecisionEngine {
    signer: ClearanceSigner,
    config: EngineConfig,
}

impl DecisionEngine {
    pub fn new(signer: ClearanceSigner, config: EngineConfig) -> Self {
        Self { signer, config }
    }

    pub fn signer(&self) -> &ClearanceSigner {
        &self.signer
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
        // Stage 4 (lineage) and stage 5 (environment) are slots: this version accepts no
        // parent and binds the named environment as the audience without a registry.
        if req.parent.is_some() || req.delegate.is_some() {
            return Verdict::deny(
                DenyReason::InvalidRequest,
                "`parent` and `delegate` are not supported by this control plane version",
                arguments,
            );
        }
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
        });
        let version = Some(policy.version());
        let (decision, reason, policies, message) = match outcome {
            PolicyOutcome::Permit { policies } => (Decision::Allow, None, policies, None),
            PolicyOutcome::NotPermitted => (
                Decision::Deny,
                Some(DenyReason::PolicyDenied),
                Vec::new(),
                Some("no policy permits this request".to_owned()),
            ),
            PolicyOutcome::Forbidden { policies } => {
                let message = format!("forbidden by policy {}", quoted(&policies));
                (
                    Decision::Deny,
                    Some(DenyReason::PolicyForbidden),
                    policies,
                    Some(message),
                )
            }
            PolicyOutcome::EvaluationError { policies, message } => {
                (Decision::Deny, Some(DenyReason::PolicyError), policies, Some(message))
            }
            PolicyOutcome::InvalidRequest { message } => (
                Decision::Deny,
                Some(DenyReason::InvalidRequest),
                Vec::new(),
                Some(message),
            ),
        };
        Verdict {
            decision,
            reasons: reason.into_iter().collect(),
            policies,
            policy_version: version,
            message,
            arguments,
            ttl_seconds: if decision == Decision::Allow { ttl } else { 0 },
        }
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
    pub fn issue(
        &self,
        caller: &Caller,
        req: &AuthorizeRequest,
        verdict: &Verdict,
        execution_id: &ExecutionId,
        log: LogIndex,
        now: Timestamp,
    ) -> Result<(String, Timestamp), CoreError> {
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
            pol,
            log,
            dep: 0,
        };
        let token = self
            .signer
            .sign(&claims)
            .map_err(|e| CoreError::Internal(format!("signing: {e}")))?;
        Ok((token, exp))
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

fn quoted(ids: &[String]) -> String {
    ids.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
}
