//! Executions after their decision (DESIGN.md section 4): start consumes the clearance,
//! renew re-checks lineage and policy before extending the lease, complete records the
//! outcome, revoke cascades down the lineage and is pushed to enforcement points.

use clearance_artifact::UnverifiedToken;
use clearance_model::event::Event;
use clearance_model::execution::{
    CompleteRequest, Completed, CompletionStatus, ExecutionState, ExecutionView, Lease, LineageView, RenewRequest,
    RenewResponse, RevocationKind, RevocationList, RevocationRecord, RevokeRequest, Revoked, StartRequest,
};
use clearance_model::{ClearanceClaims, ExecutionId, LogIndex, PrincipalId, Refusal, Role, StopReason, Timestamp};
use clearance_policy::{EnvironmentFacts, Lineage, PolicyRequest};

use crate::engine::{AttestedEnvironment, Caller, EnvironmentCheck, ParentCheck, ParentFacts};
use crate::error::CoreError;
use crate::service::{ControlPlane, entry, require};
use crate::store::{ExecutionChange, ExecutionRecord, LogAppend, RevocationTx, StoreError};

/// Most revocation records one list call returns.
pub const MAX_REVOCATIONS_PER_PAGE: u32 = 1000;
/// Longest free-text revocation reason.
const MAX_REASON_BYTES: usize = 512;

impl ControlPlane {
    /// Check a clearance this control plane signed: structure, key, signature, issuer.
    /// Time is the caller's business (start and lineage check it against stored state).
    pub(crate) fn verify_own(&self, token: &str) -> Result<ClearanceClaims, String> {
        let parsed = UnverifiedToken::parse(token).map_err(|e| e.to_string())?;
        // The current key, or one it replaced whose clearances may still be live.
        let key = self
            .signing_key(parsed.kid())
            .and_then(|jwk| jwk.verifying_key().ok())
            .ok_or("the clearance was not signed by a key of this control plane")?;
        let claims = parsed.verify_signature(&key).map_err(|e| e.to_string())?;
        if claims.iss != self.engine.config().issuer {
            return Err(format!(
                "the clearance was issued by `{}`, not by this control plane",
                claims.iss
            ));
        }
        Ok(claims)
    }

    /// Everything stage 4 needs to know about a parent clearance that takes IO.
    pub(crate) async fn check_parent(&self, token: Option<&str>, now: Timestamp) -> Result<ParentCheck, CoreError> {
        let Some(token) = token else {
            return Ok(ParentCheck::None);
        };
        let claims = match self.verify_own(token) {
            Ok(c) => c,
            Err(m) => {
                return Ok(ParentCheck::Invalid(format!(
                    "the parent clearance does not verify: {m}"
                )));
            }
        };
        let Some(record) = self.store.execution(&claims.jti).await? else {
            return Ok(ParentCheck::Invalid(format!(
                "parent execution `{}` is unknown to this control plane",
                claims.jti
            )));
        };
        let live_until = match record.state {
            ExecutionState::Revoked => {
                return Ok(ParentCheck::Revoked {
                    message: format!(
                        "parent execution `{}` was revoked: {}",
                        record.id,
                        record.reason.as_deref().unwrap_or("no reason given")
                    ),
                    parent: record.id,
                });
            }
            ExecutionState::Authorized => record.expires_at,
            ExecutionState::Started => record.lease_until.unwrap_or(record.expires_at),
            ExecutionState::Completed | ExecutionState::Failed | ExecutionState::Expired => {
                return Ok(ParentCheck::Invalid(format!(
                    "parent execution `{}` has finished ({})",
                    record.id, record.state
                )));
            }
        };
        if live_until <= now {
            return Ok(ParentCheck::Invalid(format!(
                "parent execution `{}` is no longer live (it ran out at {live_until})",
                record.id
            )));
        }
        Ok(ParentCheck::Live(Box::new(ParentFacts {
            claims,
            live_until,
            root_principal: record.root_principal,
        })))
    }

    /// Consume a clearance: exactly one start ever succeeds for a `jti`, however many
    /// race. Returns the lease.
    pub async fn start(&self, caller: &Caller, id: &ExecutionId, req: &StartRequest) -> Result<Lease, CoreError> {
        require(caller, &[Role::Enforcer])?;
        let claims = self
            .verify_own(&req.clearance)
            .map_err(|m| refused(Refusal::ClearanceInvalid, m))?;
        if &claims.jti != id {
            return Err(refused(
                Refusal::ClearanceInvalid,
                format!("the clearance is for execution `{}`, not `{id}`", claims.jti),
            ));
        }
        let now = self.clock.now();
        let lease_until = now
            .plus_seconds(self.lease_for(req.lease_seconds))
            .min(Timestamp(claims.exp));
        let event = Event::ExecutionStarted {
            time: now.seconds(),
            execution_id: id.clone(),
            by: caller.id.clone(),
            lease_expires: lease_until.seconds(),
        };
        let change = ExecutionChange::Start { now, lease_until };
        let log_index = self.append_change(id, event, change).await?;
        Ok(lease(id, lease_until, log_index))
    }

    /// Extend a lease after checking, again, the execution, its ancestors and the active
    /// policy. A "no" is an answer (`renewed: false`), not an error: the executor must stop.
    pub async fn renew(
        &self,
        caller: &Caller,
        id: &ExecutionId,
        req: &RenewRequest,
    ) -> Result<RenewResponse, CoreError> {
        require(caller, &[Role::Enforcer])?;
        let now = self.clock.now();
        let record = self
            .store
            .execution(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("execution `{id}`")))?;
        match record.state {
            ExecutionState::Started => {}
            ExecutionState::Revoked => {
                return Ok(stop(StopReason::ExecutionRevoked, record.reason.unwrap_or_default()));
            }
            ExecutionState::Authorized => {
                return Err(refused(
                    Refusal::NotStarted,
                    format!("execution `{id}` was never started"),
                ));
            }
            ExecutionState::Completed | ExecutionState::Failed | ExecutionState::Expired => {
                return Ok(stop(
                    StopReason::ExecutionFinished,
                    format!("execution `{id}` has finished"),
                ));
            }
        }
        if record.lease_until.is_none_or(|l| l <= now) {
            return Ok(stop(
                StopReason::LeaseExpired,
                format!("the lease of execution `{id}` ran out before this renewal"),
            ));
        }
        let (ancestors, _) = self.store.lineage(id).await?;
        if let Some(a) = ancestors.iter().find(|a| a.state == ExecutionState::Revoked) {
            // The cascade marks descendants at revocation time; this catches a child
            // recorded in the same instant.
            let why = format!("ancestor execution `{}` was revoked", a.id);
            self.revoke_internal(&caller.id, RevocationKind::Execution, id.as_str(), &why)
                .await?;
            return Ok(stop(StopReason::ParentRevoked, why));
        }
        // The environment must still be trusted, fresh and matching.
        let environment = match self.check_environment(record.environment.as_deref(), now).await? {
            EnvironmentCheck::Fresh(e) => Some(e),
            EnvironmentCheck::Unbound | EnvironmentCheck::Required => None,
            EnvironmentCheck::Unknown(why) => {
                return self
                    .stop_revoking(caller, id, StopReason::EnvironmentUnknown, why)
                    .await;
            }
            EnvironmentCheck::Quarantined(why) => {
                return self
                    .stop_revoking(caller, id, StopReason::EnvironmentUntrusted, why)
                    .await;
            }
            EnvironmentCheck::Stale(why) => {
                return self.stop_revoking(caller, id, StopReason::AttestationStale, why).await;
            }
            EnvironmentCheck::Mismatch(why) => {
                return self
                    .stop_revoking(caller, id, StopReason::MeasurementMismatch, why)
                    .await;
            }
        };
        if let Some((code, why)) = self.still_allowed(&record, environment.as_deref(), now) {
            let why = format!("the active policy no longer allows this execution: {why}");
            self.revoke_internal(&caller.id, RevocationKind::Execution, id.as_str(), &why)
                .await?;
            return Ok(stop(code, why));
        }
        let lease_until = now.plus_seconds(self.lease_for(req.lease_seconds));
        let event = Event::ExecutionRenewed {
            time: now.seconds(),
            execution_id: id.clone(),
            by: caller.id.clone(),
            lease_expires: lease_until.seconds(),
        };
        let change = ExecutionChange::Renew { now, lease_until };
        match self.record_change(id, event, change).await? {
            Ok(log_index) => Ok(RenewResponse {
                renewed: true,
                lease: Some(lease(id, lease_until, log_index)),
                reason: None,
                message: None,
            }),
            // Revoked, finished or lapsed between the read above and the write.
            Err(found) => Ok(stop(
                match found {
                    ExecutionState::Revoked => StopReason::ExecutionRevoked,
                    ExecutionState::Completed | ExecutionState::Failed => StopReason::ExecutionFinished,
                    ExecutionState::Authorized | ExecutionState::Started | ExecutionState::Expired => {
                        StopReason::LeaseExpired
                    }
                },
                format!("execution `{id}` can no longer be renewed: it is {found}"),
            )),
        }
    }

    async fn stop_revoking(
        &self,
        caller: &Caller,
        id: &ExecutionId,
        code: StopReason,
        why: String,
    ) -> Result<RenewResponse, CoreError> {
        self.revoke_internal(&caller.id, RevocationKind::Execution, id.as_str(), &why)
            .await?;
        Ok(stop(code, why))
    }

    /// `None` if the active policy still permits the stored request; else why to stop.
    fn still_allowed(
        &self,
        r: &ExecutionRecord,
        environment: Option<&AttestedEnvironment>,
        now: Timestamp,
    ) -> Option<(StopReason, String)> {
        let Some(policy) = self.active() else {
            return Some((StopReason::NoActivePolicy, "no policy version is active".into()));
        };
        let outcome = policy.evaluate(&PolicyRequest {
            principal: r.principal.as_str(),
            action: &r.action,
            resource: &r.resource,
            arguments: &r.arguments,
            context: &r.context,
            request_time: now.seconds(),
            lineage: Lineage {
                depth: r.depth,
                root: r.root_principal.as_str(),
            },
            environment: environment.map(|e| EnvironmentFacts {
                id: &e.id,
                labels: &e.labels,
                measurements: &e.measurements,
            }),
        });
        let (reason, _, message) = crate::engine::policy_verdict(outcome).err()?;
        // Every policy reason has its stop; were one missing, stopping is still right.
        Some((
            StopReason::from_deny(reason).unwrap_or(StopReason::PolicyDenied),
            message,
        ))
    }

    /// Record how an execution ended. A revoked execution that was started may still
    /// report how it stopped.
    pub async fn complete(
        &self,
        caller: &Caller,
        id: &ExecutionId,
        req: &CompleteRequest,
    ) -> Result<Completed, CoreError> {
        require(caller, &[Role::Enforcer])?;
        let now = self.clock.now();
        let state = match req.status {
            CompletionStatus::Succeeded => ExecutionState::Completed,
            CompletionStatus::Failed | CompletionStatus::Stopped => ExecutionState::Failed,
        };
        let event = Event::ExecutionCompleted {
            time: now.seconds(),
            execution_id: id.clone(),
            by: caller.id.clone(),
            status: req.status,
            exit_code: req.exit_code,
            output_digest: req.output_digest,
        };
        let change = ExecutionChange::Complete {
            now,
            state,
            exit_code: req.exit_code,
        };
        let log_index = self.append_change(id, event, change).await?;
        let state = match self.store.execution(id).await? {
            Some(r) => r.state,
            None => state,
        };
        Ok(Completed {
            execution_id: id.clone(),
            state,
            log_index,
        })
    }

    /// Append a lifecycle entry with its state change: the index, or the state that
    /// refused the change (nothing written).
    async fn record_change(
        &self,
        id: &ExecutionId,
        event: Event,
        change: ExecutionChange,
    ) -> Result<Result<LogIndex, ExecutionState>, CoreError> {
        let append = LogAppend {
            execution: Some(id.clone()),
            ..entry(&event, self.clock.now())?
        };
        match self.store.append_change(id, append, change).await {
            Ok(applied) => Ok(Ok(applied.index)),
            Err(StoreError::ExecutionState { found }) => Ok(Err(found)),
            Err(StoreError::Unavailable(why)) => Err(CoreError::AuditUnavailable(why)),
            Err(other) => Err(other.into()),
        }
    }

    /// [`Self::record_change`] for start and complete: a refusing state is a refusal.
    async fn append_change(
        &self,
        id: &ExecutionId,
        event: Event,
        change: ExecutionChange,
    ) -> Result<LogIndex, CoreError> {
        self.record_change(id, event, change)
            .await?
            .map_err(|found| match found {
                ExecutionState::Started | ExecutionState::Completed | ExecutionState::Failed => refused(
                    Refusal::Replayed,
                    format!("execution `{id}` was already started ({found})"),
                ),
                ExecutionState::Revoked => refused(Refusal::ExecutionRevoked, format!("execution `{id}` was revoked")),
                ExecutionState::Authorized => refused(
                    Refusal::ExecutionExpired,
                    format!("the clearance of execution `{id}` has expired"),
                ),
                ExecutionState::Expired => refused(Refusal::ExecutionExpired, format!("execution `{id}` is {found}")),
            })
    }

    pub(crate) fn lease_for(&self, asked: Option<u64>) -> u64 {
        let max = self.engine.config().lease_seconds;
        asked.map_or(max, |a| a.clamp(1, max))
    }

    /// Revoke an execution (and its subtree), a principal (its keys and executions) or a
    /// signing key (every clearance it signed). Admin only.
    pub async fn revoke(
        &self,
        caller: &Caller,
        kind: RevocationKind,
        id: &str,
        req: &RevokeRequest,
    ) -> Result<Revoked, CoreError> {
        require(caller, &[Role::Admin])?;
        let reason = match req.reason.as_deref().map(str::trim) {
            Some(r) if r.len() > MAX_REASON_BYTES => {
                return Err(CoreError::InvalidRequest(format!(
                    "`reason` is longer than {MAX_REASON_BYTES} bytes"
                )));
            }
            Some(r) if !r.is_empty() => r.to_owned(),
            _ => format!("revoked by `{}`", caller.id),
        };
        if id.is_empty() || id.len() > 256 {
            return Err(CoreError::InvalidRequest(
                "the id to revoke must be 1 to 256 bytes".into(),
            ));
        }
        let revocations = self.revoke_internal(&caller.id, kind, id, &reason).await?;
        Ok(Revoked { revocations })
    }

    /// Revoke `id` of `kind` and everything it covers, in one transaction. The cascade
    /// is decided here: which executions a target covers, the reason each one gets, which
    /// records and log entries are written.
    pub(crate) async fn revoke_internal(
        &self,
        by: &PrincipalId,
        kind: RevocationKind,
        id: &str,
        reason: &str,
    ) -> Result<Vec<RevocationRecord>, CoreError> {
        let now = self.clock.now();
        let mut tx = self.store.begin_revocation().await.map_err(audit)?;
        let own_key = kind == RevocationKind::SigningKey && self.signing_key(id).is_some();
        let records = plan_revocation(tx.as_mut(), own_key, by, kind, id, reason, now).await?;
        let committed = tx.commit().await;
        if kind == RevocationKind::Principal {
            // The principal's keys are revoked with it; even on an error, since the
            // commit may have happened before the answer was lost.
            self.keys.invalidate();
        }
        committed.map_err(audit)?;
        if let Some(last) = records.last() {
            self.announce_revocation(last.seq);
        }
        if kind == RevocationKind::SigningKey && id == self.engine.signer().kid() {
            self.mark_signing_key_revoked();
        }
        Ok(records)
    }

    /// Tell the revocation streams of this node about sequence number `seq`.
    pub(crate) fn announce_revocation(&self, seq: u64) {
        self.revocations.send_if_modified(|current| {
            let newer = seq > *current;
            if newer {
                *current = seq;
            }
            newer
        });
    }

    pub(crate) fn mark_signing_key_revoked(&self) {
        let was = self.signing_key_revoked.swap(true, std::sync::atomic::Ordering::AcqRel);
        if !was {
            tracing::error!(
                kid = self.engine.signer().kid(),
                "the clearance signing key was revoked: no clearance will be issued until it is replaced"
            );
        }
    }

    /// Revocation records after `since`, for enforcement points catching up.
    pub async fn revocations(
        &self,
        caller: &Caller,
        since: u64,
        limit: Option<u32>,
    ) -> Result<RevocationList, CoreError> {
        require(caller, &[Role::Enforcer, Role::Admin, Role::Auditor])?;
        let limit = limit
            .unwrap_or(MAX_REVOCATIONS_PER_PAGE)
            .clamp(1, MAX_REVOCATIONS_PER_PAGE);
        let latest = self.store.latest_revocation().await?;
        let revocations = self.store.revocations_since(since, limit).await?;
        Ok(RevocationList { revocations, latest })
    }

    /// The latest revocation sequence number; changes whenever a revocation commits.
    pub fn watch_revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Is the key that signs clearances revoked? Then nothing is issued. Read from
    /// storage once at start and kept current by `revoke` (one control plane per
    /// database today), so the decision path pays no query for it.
    pub(crate) fn signing_key_revoked(&self) -> bool {
        self.signing_key_revoked.load(std::sync::atomic::Ordering::Acquire)
    }

    pub async fn lineage(&self, caller: &Caller, id: &ExecutionId) -> Result<LineageView, CoreError> {
        require(caller, &[Role::Admin, Role::Auditor, Role::Enforcer])?;
        let now = self.clock.now();
        let record = self
            .store
            .execution(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("execution `{id}`")))?;
        let (ancestors, descendants) = self.store.lineage(id).await?;
        Ok(LineageView {
            execution: view(record, now),
            ancestors: ancestors.into_iter().map(|r| view(r, now)).collect(),
            descendants: descendants.into_iter().map(|r| view(r, now)).collect(),
        })
    }
}

/// Storage failing during a revocation: nothing was revoked and nothing was logged.
fn audit(e: StoreError) -> CoreError {
    match e {
        StoreError::Unavailable(why) => CoreError::AuditUnavailable(why),
        other => other.into(),
    }
}

/// The cascade (DESIGN.md section 4): the target's own record, then every live execution
/// it covers and their subtrees, each with a record, a state change and a log entry.
async fn plan_revocation(
    tx: &mut dyn RevocationTx,
    own_key: bool,
    by: &PrincipalId,
    kind: RevocationKind,
    target: &str,
    reason: &str,
    now: Timestamp,
) -> Result<Vec<RevocationRecord>, CoreError> {
    let (noun, roots) = match kind {
        RevocationKind::Execution => {
            let id: ExecutionId = target
                .parse()
                .map_err(|_| CoreError::NotFound(format!("execution `{target}`")))?;
            if !tx.execution_exists(&id).await.map_err(audit)? {
                return Err(CoreError::NotFound(format!("execution `{target}`")));
            }
            let mut records = Vec::new();
            revoke_subtree(tx, by, &id, reason, now, &mut records).await?;
            return Ok(records);
        }
        RevocationKind::Principal => {
            if !tx.revoke_principal(target, now).await.map_err(audit)? {
                return Err(CoreError::NotFound(format!("principal `{target}`")));
            }
            ("principal", tx.executions_of(kind, target).await.map_err(audit)?)
        }
        RevocationKind::SigningKey => {
            // A signing key is known if it is (or was) this control plane's, or signed a
            // clearance.
            let signed = tx.executions_of(kind, target).await.map_err(audit)?;
            if signed.is_empty() && !own_key {
                return Err(CoreError::NotFound(format!("signing key `{target}`")));
            }
            ("signing key", signed)
        }
        RevocationKind::Environment => {
            if !tx.quarantine_environment(target, reason, now).await.map_err(audit)? {
                return Err(CoreError::NotFound(format!("environment `{target}`")));
            }
            ("environment", tx.executions_of(kind, target).await.map_err(audit)?)
        }
    };
    let mut records = Vec::new();
    // A principal or signing key is recorded once; every quarantine is recorded (a
    // release and a new quarantine are both news to enforcement points).
    if kind == RevocationKind::Environment || !tx.has_revocation(kind, target).await.map_err(audit)? {
        records.push(record(tx, by, kind, target, reason, now).await?);
    }
    let cascade = format!("{noun} `{target}` was revoked: {reason}");
    for root in &roots {
        revoke_subtree(tx, by, root, &cascade, now, &mut records).await?;
    }
    Ok(records)
}

/// Revoke the live executions under `root` (itself included). The root gets `reason`;
/// its descendants are told which ancestor was revoked.
async fn revoke_subtree(
    tx: &mut dyn RevocationTx,
    by: &PrincipalId,
    root: &ExecutionId,
    reason: &str,
    now: Timestamp,
    records: &mut Vec<RevocationRecord>,
) -> Result<(), CoreError> {
    for id in tx.live_subtree(root).await.map_err(audit)? {
        let why = if &id == root {
            reason.to_owned()
        } else {
            format!("ancestor execution `{root}` was revoked: {reason}")
        };
        let change = ExecutionChange::Revoke {
            now,
            reason: why.clone(),
        };
        tx.change(&id, &change).await.map_err(audit)?;
        records.push(record(tx, by, RevocationKind::Execution, id.as_str(), &why, now).await?);
    }
    Ok(())
}

/// One revocation record and its log entry.
async fn record(
    tx: &mut dyn RevocationTx,
    by: &PrincipalId,
    kind: RevocationKind,
    target: &str,
    reason: &str,
    now: Timestamp,
) -> Result<RevocationRecord, CoreError> {
    let seq = tx.add_revocation(kind, target, reason, now).await.map_err(audit)?;
    let record = RevocationRecord {
        seq,
        kind,
        id: target.to_owned(),
        reason: reason.to_owned(),
        time: now.seconds(),
    };
    let event = Event::Revocation {
        time: record.time,
        seq,
        by: by.clone(),
        kind,
        id: record.id.clone(),
        reason: record.reason.clone(),
    };
    let execution = match kind {
        RevocationKind::Execution => target.parse().ok(),
        RevocationKind::Principal | RevocationKind::SigningKey | RevocationKind::Environment => None,
    };
    tx.append(&[LogAppend {
        execution,
        ..entry(&event, now)?
    }])
    .await
    .map_err(audit)?;
    Ok(record)
}

fn refused(code: Refusal, message: impl Into<String>) -> CoreError {
    CoreError::Refused {
        code,
        message: message.into(),
    }
}

fn stop(code: StopReason, message: String) -> RenewResponse {
    RenewResponse {
        renewed: false,
        lease: None,
        reason: Some(code),
        message: Some(message),
    }
}

pub(crate) fn lease(id: &ExecutionId, until: Timestamp, log_index: LogIndex) -> Lease {
    Lease {
        execution_id: id.clone(),
        lease_expires: until.seconds(),
        lease_expires_at: until.to_rfc3339(),
        log_index,
    }
}

/// The state as seen now: an authorized clearance past its expiry, or a started
/// execution past its lease, is expired.
fn view(r: ExecutionRecord, now: Timestamp) -> ExecutionView {
    let state = match r.state {
        ExecutionState::Authorized if r.expires_at <= now => ExecutionState::Expired,
        ExecutionState::Started if r.lease_until.is_none_or(|l| l <= now) => ExecutionState::Expired,
        s => s,
    };
    ExecutionView {
        execution_id: r.id,
        parent: r.parent,
        principal: r.principal,
        depth: r.depth,
        action: r.action,
        resource: r.resource,
        state,
        expires_at: r.expires_at.to_rfc3339(),
        lease_expires_at: r.lease_until.map(Timestamp::to_rfc3339),
        exit_code: r.exit_code,
        reason: r.reason,
    }
}
