//! The one admission pipeline every enforcement point runs: `exec`, the HTTP proxy and
//! the MCP proxy are adapters over it. A call passes the control plane's decision (when
//! the enforcement point asks for the clearance itself), the local checks of
//! [`Gate::admit`] (signature and claims for exactly this call, the revocation view, the
//! environment's measurements, the replay cache), and the control plane's `start`, which
//! consumes the clearance once for everyone: for a clearance presented by the caller, in
//! that order; for one the point asks for itself, decision and start in one request
//! ([`Pipeline::authorize_and_admit`]), then the local checks. Only then is there an
//! [`Admission`], and code that spawns a process or forwards a request takes one;
//! completing consumes it. A new check goes here, once.

use std::future::Future;

use clearance_model::execution::{CompleteRequest, CompletionStatus, Lease, RenewRequest, RenewResponse, StartRequest};
use clearance_model::wire::{AuthorizeRequest, AuthorizeResponse};
use clearance_model::{ClearanceClaims, Decision, DenyReason, ErrorCode, ExecutionId, ResourceRef, Timestamp};

use crate::client::{CallError, ControlPlaneClient};
use crate::gate::Gate;
use clearance_verify::{ExpectedCall, VerifiedClearance, VerifyError};

/// An enforcement point's side of the control plane: the key that starts, renews and
/// completes executions, and the local checks.
#[derive(Debug)]
pub struct Pipeline {
    enforcer: ControlPlaneClient,
    gate: Gate,
    /// When the trusted keys came from the control plane: when they were last fetched
    /// again for a key this point did not know.
    key_refresh: Option<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// The least time between two fetches of the control plane's keys for unknown key ids:
/// a flood of forged key ids costs the control plane one request per interval.
pub const KEY_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// A call that passed every check and was started: the verified clearance, its token
/// (to hand on with the call) and its lease. Only [`Pipeline::admit`] makes one.
#[derive(Debug)]
#[must_use = "an admitted call must be run or forwarded, then completed"]
pub struct Admission {
    token: String,
    verified: VerifiedClearance,
    lease: Lease,
}

impl Admission {
    /// The clearance, as the upstream or the command may want to check it again.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn execution_id(&self) -> &ExecutionId {
        &self.verified.claims().jti
    }

    pub fn claims(&self) -> &ClearanceClaims {
        self.verified.claims()
    }

    /// The key id that signed the clearance.
    pub fn kid(&self) -> &str {
        self.verified.kid()
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }
}

/// Why nothing was let through.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotAdmitted {
    /// The control plane decided no (recorded, with its execution id).
    #[error("denied: {}: {message}", ErrorCode::of_deny(reasons))]
    Denied {
        reasons: Vec<DenyReason>,
        message: String,
        policies: Vec<String>,
        execution_id: ExecutionId,
    },
    /// The clearance failed a local check.
    #[error("{0}")]
    Rejected(VerifyError),
    /// The control plane refused a call (an unknown key, a clearance already started, ...).
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    /// The control plane could not be reached or answered nonsense.
    #[error("the control plane is unavailable: {0}")]
    Unavailable(String),
}

impl NotAdmitted {
    /// The stable code callers see.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Denied { reasons, .. } => ErrorCode::of_deny(reasons),
            Self::Rejected(e) => e.error_code(),
            Self::Refused { code, .. } => *code,
            Self::Unavailable(_) => ErrorCode::ControlPlaneUnavailable,
        }
    }
}

impl From<CallError> for NotAdmitted {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unavailable(m) => Self::Unavailable(m),
            CallError::Refused { code, message, .. } => Self::Refused { code, message },
        }
    }
}

/// The call an enforcement point is about to make.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub action: &'a str,
    pub resource: &'a ResourceRef,
    pub arguments: &'a serde_json::Value,
}

/// Ask `agent` for a clearance for `request`: the token on allow, else why not.
pub async fn authorize(agent: &ControlPlaneClient, request: &AuthorizeRequest) -> Result<String, NotAdmitted> {
    allowed(agent.authorize(request).await?)
}

/// The clearance of an allow, else why not.
fn allowed(answer: AuthorizeResponse) -> Result<String, NotAdmitted> {
    if answer.decision != Decision::Allow {
        return Err(NotAdmitted::Denied {
            reasons: answer.reasons,
            message: answer.message.unwrap_or_default(),
            policies: answer.policies,
            execution_id: answer.execution_id,
        });
    }
    answer
        .clearance
        .ok_or_else(|| NotAdmitted::Unavailable("an allow decision came without a clearance".into()))
}

impl Pipeline {
    pub fn new(enforcer: ControlPlaneClient, gate: Gate) -> Self {
        Self {
            enforcer,
            gate,
            key_refresh: None,
        }
    }

    /// The gate's keys came from the control plane's JWKS: when a clearance names a key
    /// they lack (the control plane rotated its signing key), fetch them again, at most
    /// once per [`KEY_REFRESH_INTERVAL`], and check once more.
    #[must_use]
    pub fn refreshing_keys(mut self) -> Self {
        self.key_refresh = Some(std::sync::Mutex::new(None));
        self
    }

    /// [`Gate::admit`], with one more try after fetching the keys when the clearance's
    /// key is unknown (nothing is consumed by a refusal at the signature check).
    async fn gate_admit(&self, token: &str, expected: &ExpectedCall<'_>) -> Result<VerifiedClearance, VerifyError> {
        match self.gate.admit(token, expected, Timestamp::now().seconds()) {
            Err(VerifyError::UnknownKey { kid }) => {
                if self.refresh_keys().await {
                    self.gate.admit(token, expected, Timestamp::now().seconds())
                } else {
                    Err(VerifyError::UnknownKey { kid })
                }
            }
            other => other,
        }
    }

    /// Fetch the control plane's keys into the gate, unless that is off or was done less
    /// than [`KEY_REFRESH_INTERVAL`] ago. Whether new keys were taken.
    async fn refresh_keys(&self) -> bool {
        let Some(last) = &self.key_refresh else { return false };
        {
            let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < KEY_REFRESH_INTERVAL) {
                return false;
            }
            *last = Some(std::time::Instant::now());
        }
        match self.enforcer.jwks().await {
            Ok(jwks) => {
                tracing::info!(
                    keys = jwks.keys.len(),
                    "fetched the control plane's keys for an unknown key id"
                );
                self.gate.replace_keys(jwks);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not fetch the control plane's keys");
                false
            }
        }
    }

    /// The enforcer's client (the MCP proxy derives each caller's client from it).
    pub fn enforcer(&self) -> &ControlPlaneClient {
        &self.enforcer
    }

    /// Ask for a clearance for `request` in `agent`'s name and have it started in the
    /// same request (one round trip, one commit at the control plane), then make every
    /// local check for exactly that call. The clearance never leaves this process before
    /// it is consumed here too; if a local check refuses it, the started execution is
    /// reported failed so that it does not stay open.
    pub async fn authorize_and_admit(
        &self,
        agent: &ControlPlaneClient,
        request: &AuthorizeRequest,
        lease_seconds: Option<u64>,
    ) -> Result<Admission, NotAdmitted> {
        let answer = self.enforcer.authorize_and_start(agent, request, lease_seconds).await?;
        let token = allowed(answer.authorization)?;
        let Some(lease) = answer.lease else {
            // An allow without a lease: the cascade revoked it as it was recorded.
            return Err(NotAdmitted::Rejected(VerifyError::Revoked(
                "the execution was revoked as it was authorized (its parent was revoked)".into(),
            )));
        };
        let checked = match ExpectedCall::new(&request.action, &request.resource, &request.arguments) {
            Ok(expected) => self.gate_admit(&token, &expected).await,
            Err(e) => Err(e),
        };
        match checked {
            Ok(verified) => Ok(Admission { token, verified, lease }),
            Err(refused) => {
                let failed = CompleteRequest {
                    status: CompletionStatus::Failed,
                    exit_code: None,
                    output_digest: None,
                };
                if let Err(e) = self.enforcer.complete(&lease.execution_id, &failed).await {
                    tracing::warn!(execution_id = %lease.execution_id, error = %e, "could not report a refused start");
                }
                Err(NotAdmitted::Rejected(refused))
            }
        }
    }

    /// Check `token` for exactly `call` (every local check), then have the control plane
    /// start it. The clearance is consumed locally before `start`, so a second
    /// presentation is refused here even if the control plane cannot be reached.
    pub async fn admit(
        &self,
        token: String,
        call: Call<'_>,
        lease_seconds: Option<u64>,
    ) -> Result<Admission, NotAdmitted> {
        let expected = ExpectedCall::new(call.action, call.resource, call.arguments).map_err(NotAdmitted::Rejected)?;
        let verified = self
            .gate_admit(&token, &expected)
            .await
            .map_err(NotAdmitted::Rejected)?;
        let start = StartRequest {
            clearance: token,
            lease_seconds,
        };
        let lease = self.enforcer.start(&verified.claims().jti, &start).await?;
        Ok(Admission {
            token: start.clearance,
            verified,
            lease,
        })
    }

    /// Ask for the lease to go on. `Ok` with `renewed: false` is a "stop".
    pub async fn renew(&self, admission: &Admission, lease_seconds: Option<u64>) -> Result<RenewResponse, CallError> {
        self.enforcer
            .renew(admission.execution_id(), &RenewRequest { lease_seconds })
            .await
    }

    /// Report how the admitted call ended; consumes the admission. The returned future
    /// owns everything it needs, so it can be spawned after the answer has left. Best
    /// effort: a report that fails is logged, and the outcome stands.
    pub fn complete(&self, admission: Admission, report: CompleteRequest) -> impl Future<Output = ()> + Send + 'static {
        let enforcer = self.enforcer.clone();
        async move {
            let id = admission.execution_id();
            if let Err(e) = enforcer.complete(id, &report).await {
                tracing::warn!(execution_id = %id, error = %e, "could not report the completion");
            }
        }
    }
}
