//! The control plane: the decision path with authentication and the durable log around
//! the engine, plus principals, keys and policy versions.

use std::sync::{Arc, RwLock};

use clearance_model::event::{DecisionEvent, Event};
use clearance_model::execution::{
    AuthorizeAndStartRequest, AuthorizeAndStartResponse, ExecutionState, Lease, RevocationKind,
};
use clearance_model::wire::{
    AuthorizeRequest, AuthorizeResponse, CreatePrincipal, IssuedKey, KeyView, PermittedRequest, PermittedResponse,
    PolicyActivated, PolicyBundle, PolicyPushed, PolicyValidated, PolicyView, PrincipalView,
};
use clearance_model::{Decision, ExecutionId, KeyId, PolicyVersion, PrincipalId, Role, Timestamp};
use clearance_policy::CompiledPolicy;

use crate::apikey::ApiKey;
use crate::engine::{Caller, DecisionEngine};
use crate::error::CoreError;
use crate::store::{ExecutionChange, ExecutionRecord, KeyRecord, LogAppend, PrincipalRecord, Store};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The policy the control plane decides with.
#[derive(Debug, Clone)]
pub enum PolicyState {
    /// Nothing activated yet: every request is denied.
    None,
    Active(Arc<CompiledPolicy>),
    /// The stored active version no longer compiles (for example after an engine
    /// upgrade): every request is denied until a valid version is activated.
    Broken {
        version: PolicyVersion,
        message: String,
    },
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub storage: Result<(), String>,
    pub policy: Result<Option<PolicyVersion>, String>,
    /// Err when the clearance signing key was revoked (nothing can be issued).
    pub signing_key: Result<(), String>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.storage.is_ok() && self.policy.is_ok() && self.signing_key.is_ok()
    }
}

/// The name of the principal `bootstrap` creates.
pub const BOOTSTRAP_ADMIN: &str = "admin";

pub struct ControlPlane {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) engine: DecisionEngine,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) log_signer: clearance_log::NoteSigner,
    policy: RwLock<PolicyState>,
    /// The latest revocation sequence number, announced to revocation streams.
    pub(crate) revocations: tokio::sync::watch::Sender<u64>,
    /// Whether the clearance signing key has been revoked.
    pub(crate) signing_key_revoked: std::sync::atomic::AtomicBool,
    /// Stage 1 from memory.
    pub(crate) keys: crate::keycache::KeyCache,
    /// The Merkle tree's upper nodes, for proofs.
    pub(crate) upper_nodes: crate::log::UpperNodes,
    /// The signing keys the current one replaced.
    pub(crate) keyring: crate::keyring::KeyRing,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// An enforcement point that asks to start what it asks a decision for.
#[derive(Debug, Clone, Copy)]
struct StartBy<'a> {
    enforcer: &'a Caller,
    lease_seconds: Option<u64>,
}

impl ControlPlane {
    /// Load the active policy version, fix the log origin (`default_origin` on first
    /// start, the stored one after), and refuse a log that no longer matches its latest
    /// signed checkpoint.
    pub async fn new(
        store: Arc<dyn Store>,
        engine: DecisionEngine,
        log_key: clearance_artifact::SigningKey,
        default_origin: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, CoreError> {
        let state = match store.active_policy().await? {
            None => PolicyState::None,
            Some((version, bundle)) => compile_active(version, bundle).await,
        };
        let origin = store.meta_or_init("log_origin", default_origin).await?;
        let log_signer = crate::log::log_signer(origin, log_key)?;
        let latest_revocation = store.latest_revocation().await?;
        let key_revoked = store
            .is_revoked(
                clearance_model::execution::RevocationKind::SigningKey,
                engine.signer().kid(),
            )
            .await?;
        let plane = Self {
            store,
            engine,
            clock,
            log_signer,
            policy: RwLock::new(state),
            revocations: tokio::sync::watch::Sender::new(latest_revocation),
            signing_key_revoked: std::sync::atomic::AtomicBool::new(key_revoked),
            keys: crate::keycache::KeyCache::default(),
            upper_nodes: crate::log::UpperNodes::default(),
            keyring: crate::keyring::KeyRing::default(),
        };
        plane.check_log_integrity().await?;
        Ok(plane)
    }

    pub fn engine(&self) -> &DecisionEngine {
        &self.engine
    }

    pub fn policy_state(&self) -> PolicyState {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn active(&self) -> Option<Arc<CompiledPolicy>> {
        match &*self.policy.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
            PolicyState::Active(p) => Some(Arc::clone(p)),
            PolicyState::None | PolicyState::Broken { .. } => None,
        }
    }

    /// Create the first admin principal and key when no principal exists. Returns the
    /// key when one was generated (to show once); a supplied key is not echoed. Whether a
    /// supplied key was ignored, [`ControlPlane::knows_key`] tells.
    pub async fn bootstrap(&self, supplied: Option<ApiKey>) -> Result<Option<ApiKey>, CoreError> {
        if self.store.principal_count().await? > 0 {
            return Ok(None);
        }
        let now = self.clock.now();
        let admin: PrincipalId = BOOTSTRAP_ADMIN
            .parse()
            .map_err(|e| CoreError::Internal(format!("{e}")))?;
        let record = PrincipalRecord {
            id: admin.clone(),
            roles: vec![Role::Admin],
            created_at: now,
        };
        let event = Event::PrincipalCreated {
            time: now.seconds(),
            by: admin.clone(),
            principal: admin.clone(),
            roles: vec![Role::Admin],
        };
        match self.store.create_principal(&record, entry(&event, now)?).await {
            Ok(_) => {}
            // Another node sharing the database bootstrapped first.
            Err(crate::store::StoreError::Exists(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let generated = supplied.is_none();
        let key = match supplied {
            Some(k) => k,
            None => ApiKey::generate()?,
        };
        self.store_key(&admin, &admin, &key, now).await?;
        Ok(if generated { Some(key) } else { None })
    }

    /// Whether `key` is a key this control plane issued (revoked or not).
    pub async fn knows_key(&self, key: &ApiKey) -> Result<bool, CoreError> {
        Ok(self.store.key_hash_known(&key.hash()).await?)
    }

    /// A new API key for the first admin principal, for an operator who lost every admin
    /// key: only someone holding the data directory (or the database) can call this, and
    /// the key is recorded in the log like any other (`key_issued`).
    pub async fn recover_admin_key(&self) -> Result<IssuedKey, CoreError> {
        let admin: PrincipalId = BOOTSTRAP_ADMIN
            .parse()
            .map_err(|e| CoreError::Internal(format!("{e}")))?;
        let Some(record) = self.store.principal(&admin).await? else {
            return Err(CoreError::NotFound(format!("principal `{admin}`")));
        };
        let caller = Caller {
            id: admin.clone(),
            roles: record.roles,
        };
        if !caller.has(Role::Admin) {
            return Err(CoreError::InvalidRequest(format!(
                "principal `{admin}` no longer has the admin role"
            )));
        }
        self.issue_key(&caller, &admin).await
    }

    /// Stage 1: turn a presented key into a caller, from memory when the key was seen
    /// valid before and nothing that could revoke it happened since.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Caller, CoreError> {
        let key = ApiKey::parse(presented.ok_or(CoreError::InvalidApiKey)?)?;
        let hash = key.hash();
        let generation = match self.keys.get(&hash) {
            Ok(caller) => return Ok(caller),
            Err(generation) => generation,
        };
        match self.store.principal_by_key(&hash).await? {
            Some((principal, stored)) if stored.ct_eq(&hash) => {
                let caller = Caller {
                    id: principal.id,
                    roles: principal.roles,
                };
                self.keys.insert(generation, hash, caller.clone());
                Ok(caller)
            }
            _ => Err(CoreError::InvalidApiKey),
        }
    }

    /// Which of the asked actions some permit policy could grant the caller on the
    /// resource (agent role). A query of the active policy: nothing is decided or logged.
    pub fn permitted(&self, caller: &Caller, req: &PermittedRequest) -> Result<PermittedResponse, CoreError> {
        require(caller, &[Role::Agent])?;
        let limits = clearance_model::limits::MAX_PERMITTED_ACTIONS;
        if req.actions.len() > limits {
            return Err(CoreError::InvalidRequest(format!(
                "at most {limits} actions per request, got {}",
                req.actions.len()
            )));
        }
        let Some(policy) = self.active() else {
            return Ok(PermittedResponse {
                policy_version: None,
                permitted: Vec::new(),
            });
        };
        let permitted = req
            .actions
            .iter()
            .filter(|a| policy.may_permit(caller.id.as_str(), a, &req.resource))
            .cloned()
            .collect();
        Ok(PermittedResponse {
            policy_version: Some(policy.version()),
            permitted,
        })
    }

    /// The decision path, stages 2 to 8. The decision (allow or deny) is durable in the
    /// log before this returns; a clearance is signed only after that.
    pub async fn authorize(&self, caller: &Caller, req: &AuthorizeRequest) -> Result<AuthorizeResponse, CoreError> {
        self.decide(caller, req, None).await.map(|(answer, _)| answer)
    }

    /// [`Self::authorize`] for `agent`, asked by `enforcer`, which on allow also starts the
    /// execution, in the decision's own commit: one request and one durable commit before
    /// the enforcement point may run the call. The clearance is consumed as by `start`.
    pub async fn authorize_and_start(
        &self,
        agent: &Caller,
        enforcer: &Caller,
        req: &AuthorizeAndStartRequest,
    ) -> Result<AuthorizeAndStartResponse, CoreError> {
        require(enforcer, &[Role::Enforcer])?;
        let start = StartBy {
            enforcer,
            lease_seconds: req.lease_seconds,
        };
        let (authorization, lease) = self.decide(agent, &req.request, Some(start)).await?;
        Ok(AuthorizeAndStartResponse { authorization, lease })
    }

    /// Stages 2 to 8, and with `start`, the start of an allowed execution in the same
    /// commit (its lease comes back).
    async fn decide(
        &self,
        caller: &Caller,
        req: &AuthorizeRequest,
        start: Option<StartBy<'_>>,
    ) -> Result<(AuthorizeResponse, Option<Lease>), CoreError> {
        let now = self.clock.now();
        if self.signing_key_revoked() {
            return Err(CoreError::SigningKeyRevoked);
        }
        let execution_id = ExecutionId::random().map_err(|e| CoreError::Internal(e.to_string()))?;
        let policy = self.active();
        // Only an agent's request gets its parent looked up; stage 2 denies the rest.
        let parent = if caller.has(Role::Agent) {
            self.check_parent(req.parent.as_deref(), now).await?
        } else {
            crate::engine::ParentCheck::None
        };
        let environment = if caller.has(Role::Agent) {
            self.check_environment(req.environment.as_deref(), now).await?
        } else {
            crate::engine::EnvironmentCheck::Unbound
        };
        let verdict = self
            .engine
            .decide(caller, req, &parent, &environment, policy.as_deref(), now);
        let expires = now.plus_seconds(verdict.ttl_seconds);
        let event = Event::Decision(Box::new(DecisionEvent {
            time: now.seconds(),
            execution_id: execution_id.clone(),
            principal: caller.id.clone(),
            action: truncate(&req.action, clearance_model::limits::MAX_ACTION_BYTES),
            resource: clearance_model::ResourceRef::new(
                truncate(&req.resource.kind, clearance_model::limits::MAX_RESOURCE_BYTES),
                truncate(&req.resource.id, clearance_model::limits::MAX_RESOURCE_BYTES),
            ),
            arguments: verdict.arguments,
            environment: req
                .environment
                .as_deref()
                .map(|e| truncate(e, clearance_model::limits::MAX_ENVIRONMENT_BYTES)),
            parent: parent.parent_id().cloned(),
            attestation: verdict.environment.as_ref().map(|e| e.attestation),
            measurements: verdict.environment.as_ref().map(|e| e.measurement_digest),
            decision: verdict.decision,
            reasons: verdict.reasons.clone(),
            policies: verdict.policies.clone(),
            policy_version: verdict.policy_version,
            expires: (verdict.decision == Decision::Allow).then_some(expires.seconds()),
        }));
        // Stage 7: no clearance without its durable log entry; an allow also records the
        // execution it authorizes, in the same commit.
        let append = LogAppend {
            execution: Some(execution_id.clone()),
            ..entry(&event, now)?
        };
        // With a start: until when the execution may run before it renews.
        let lease_until = start.map(|by| now.plus_seconds(self.lease_for(by.lease_seconds)).min(expires));
        let recorded = match (&verdict.placement, verdict.policy_version, verdict.decision) {
            (Some(placement), Some(policy_version), Decision::Allow) => {
                let record = ExecutionRecord {
                    id: execution_id.clone(),
                    principal: caller.id.clone(),
                    parent: placement.parent.clone(),
                    root_principal: placement.root_principal.clone(),
                    depth: placement.depth,
                    action: req.action.clone(),
                    resource: req.resource.clone(),
                    arguments: req.arguments.clone(),
                    context: req.context.clone(),
                    arguments_digest: verdict.arguments,
                    environment: req.environment.clone(),
                    delegation: placement.delegation.clone(),
                    kid: self.engine.signer().kid().to_owned(),
                    policy_version,
                    issued_at: now,
                    expires_at: expires,
                    state: ExecutionState::Authorized,
                    lease_until: None,
                    exit_code: None,
                    reason: None,
                };
                // Stage 8 runs inside the entry's own transaction, once its index is
                // known; the clearance is stored in that commit and comes back only
                // after it.
                let unsealed = self.engine.prepare(caller, req, &verdict, &execution_id, now)?;
                let seal: crate::store::Seal = Box::new(move |index| {
                    unsealed
                        .sign(crate::engine::Recorded::sequenced(index))
                        .map_err(|e| e.to_string())
                });
                let start = start
                    .zip(lease_until)
                    .map(|(by, lease_until)| {
                        let event = Event::ExecutionStarted {
                            time: now.seconds(),
                            execution_id: execution_id.clone(),
                            by: by.enforcer.id.clone(),
                            lease_expires: lease_until.seconds(),
                        };
                        let entry = LogAppend {
                            execution: Some(execution_id.clone()),
                            ..entry(&event, now)?
                        };
                        Ok::<_, CoreError>(crate::store::StartNow {
                            entry,
                            now,
                            lease_until,
                        })
                    })
                    .transpose()?;
                self.store
                    .append_sealed(
                        &execution_id,
                        append,
                        ExecutionChange::Authorize(Box::new(record)),
                        seal,
                        start,
                    )
                    .await
            }
            _ => self.store.append(append).await.map(|index| crate::store::Applied {
                index,
                parent: None,
                clearance: None,
                started: None,
            }),
        };
        // The append answered: the decision entry (and an allow's clearance) is durable.
        let applied = recorded.map_err(|e| CoreError::AuditUnavailable(e.to_string()))?;
        if applied.parent == Some(ExecutionState::Revoked) {
            // The parent was revoked after stage 4 checked it: the child is revoked before
            // its clearance leaves, so it cannot escape the cascade. If that revocation
            // cannot be recorded, no clearance is returned.
            let why = "parent execution was revoked while this request was decided";
            self.revoke_internal(&caller.id, RevocationKind::Execution, execution_id.as_str(), why)
                .await
                .map_err(|e| CoreError::AuditUnavailable(e.to_string()))?;
        }
        // A started execution that the cascade just revoked has no lease to run on.
        let lease = match (applied.started.zip(lease_until), applied.parent) {
            (Some((index, until)), parent) if parent != Some(ExecutionState::Revoked) => {
                Some(crate::executions::lease(&execution_id, until, index))
            }
            _ => None,
        };
        let clearance = applied.clearance;
        if verdict.decision == Decision::Allow && clearance.is_none() {
            return Err(CoreError::Internal(
                "an allowed decision was recorded without its clearance".into(),
            ));
        }
        let expires_at = clearance.as_ref().map(|_| expires.to_rfc3339());
        let answer = AuthorizeResponse {
            decision: verdict.decision,
            reasons: verdict.reasons,
            policies: verdict.policies,
            policy_version: verdict.policy_version,
            execution_id,
            log_index: Some(applied.index),
            clearance,
            expires_at,
            message: verdict.message,
        };
        Ok((answer, lease))
    }

    pub async fn create_principal(&self, caller: &Caller, req: &CreatePrincipal) -> Result<PrincipalView, CoreError> {
        require(caller, &[Role::Admin])?;
        let mut roles = req.roles.clone();
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(CoreError::InvalidRequest("a principal needs at least one role".into()));
        }
        if roles.contains(&Role::Approver) {
            // Reserved for human approvals, which do not exist yet: a principal given it
            // would hold a role that grants nothing while looking as if it did.
            return Err(CoreError::InvalidRequest(
                "the `approver` role is reserved for human approvals, which are not built yet".into(),
            ));
        }
        let now = self.clock.now();
        let record = PrincipalRecord {
            id: req.id.clone(),
            roles: roles.clone(),
            created_at: now,
        };
        let event = Event::PrincipalCreated {
            time: now.seconds(),
            by: caller.id.clone(),
            principal: req.id.clone(),
            roles,
        };
        self.store.create_principal(&record, entry(&event, now)?).await?;
        Ok(principal_view(record))
    }

    pub async fn list_principals(&self, caller: &Caller) -> Result<Vec<PrincipalView>, CoreError> {
        require(caller, &[Role::Admin, Role::Auditor])?;
        Ok(self
            .store
            .list_principals()
            .await?
            .into_iter()
            .map(principal_view)
            .collect())
    }

    pub async fn issue_key(&self, caller: &Caller, principal: &PrincipalId) -> Result<IssuedKey, CoreError> {
        require(caller, &[Role::Admin])?;
        if self.store.principal(principal).await?.is_none() {
            return Err(CoreError::NotFound(format!("principal `{principal}`")));
        }
        let key = ApiKey::generate()?;
        let key_id = self.store_key(&caller.id, principal, &key, self.clock.now()).await?;
        Ok(IssuedKey {
            key: key.expose().to_owned(),
            key_id,
            principal: principal.clone(),
        })
    }

    async fn store_key(
        &self,
        by: &PrincipalId,
        principal: &PrincipalId,
        key: &ApiKey,
        now: Timestamp,
    ) -> Result<KeyId, CoreError> {
        let key_id = KeyId::random().map_err(|e| CoreError::Internal(e.to_string()))?;
        let record = KeyRecord {
            key_id: key_id.clone(),
            principal: principal.clone(),
            created_at: now,
            revoked_at: None,
        };
        let event = Event::KeyIssued {
            time: now.seconds(),
            by: by.clone(),
            principal: principal.clone(),
            key_id: key_id.clone(),
        };
        self.store.add_key(&record, &key.hash(), entry(&event, now)?).await?;
        Ok(key_id)
    }

    pub async fn list_keys(&self, caller: &Caller, principal: &PrincipalId) -> Result<Vec<KeyView>, CoreError> {
        require(caller, &[Role::Admin, Role::Auditor])?;
        if self.store.principal(principal).await?.is_none() {
            return Err(CoreError::NotFound(format!("principal `{principal}`")));
        }
        Ok(self
            .store
            .list_keys(principal)
            .await?
            .into_iter()
            .map(|k| KeyView {
                key_id: k.key_id,
                principal: k.principal,
                created_at: k.created_at.to_rfc3339(),
                revoked_at: k.revoked_at.map(Timestamp::to_rfc3339),
            })
            .collect())
    }

    pub async fn revoke_key(&self, caller: &Caller, key_id: &KeyId) -> Result<(), CoreError> {
        require(caller, &[Role::Admin])?;
        let now = self.clock.now();
        let event = Event::KeyRevoked {
            time: now.seconds(),
            by: caller.id.clone(),
            key_id: key_id.clone(),
        };
        let revoked = self.store.revoke_key(key_id, entry(&event, now)?).await;
        // Even on an error: the commit may have happened before the answer was lost.
        self.keys.invalidate();
        revoked?;
        Ok(())
    }

    pub async fn validate_policy(&self, caller: &Caller, bundle: &PolicyBundle) -> Result<PolicyValidated, CoreError> {
        require(caller, &[Role::Admin])?;
        let compiled = compile(bundle.clone()).await?;
        Ok(PolicyValidated {
            version: compiled.version(),
            policy_ids: compiled.policy_ids().to_vec(),
            actions: compiled.actions(),
            warnings: compiled.warnings().to_vec(),
        })
    }

    /// Store a bundle as an immutable version. Does not activate it.
    pub async fn push_policy(&self, caller: &Caller, bundle: &PolicyBundle) -> Result<PolicyPushed, CoreError> {
        require(caller, &[Role::Admin])?;
        let compiled = compile(bundle.clone()).await?;
        let created = self
            .store
            .save_policy(&compiled.version(), bundle, self.clock.now())
            .await?;
        Ok(PolicyPushed {
            version: compiled.version(),
            created,
            policy_ids: compiled.policy_ids().to_vec(),
            warnings: compiled.warnings().to_vec(),
        })
    }

    pub async fn activate_policy(
        &self,
        caller: &Caller,
        version: &PolicyVersion,
    ) -> Result<PolicyActivated, CoreError> {
        require(caller, &[Role::Admin])?;
        let bundle = self
            .store
            .policy(version)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("policy version `{version}`")))?;
        let compiled = Arc::new(compile(bundle).await?);
        let now = self.clock.now();
        let event = Event::PolicyActivated {
            time: now.seconds(),
            by: caller.id.clone(),
            version: *version,
        };
        let log_index = self.store.activate_policy(version, entry(&event, now)?).await?;
        *self.policy.write().unwrap_or_else(std::sync::PoisonError::into_inner) = PolicyState::Active(compiled);
        Ok(PolicyActivated {
            version: *version,
            log_index,
        })
    }

    pub async fn list_policies(&self, caller: &Caller) -> Result<Vec<PolicyView>, CoreError> {
        require(caller, &[Role::Admin, Role::Auditor])?;
        Ok(self
            .store
            .list_policies()
            .await?
            .into_iter()
            .map(|p| PolicyView {
                version: p.version,
                created_at: p.created_at.to_rfc3339(),
                active: p.active,
            })
            .collect())
    }

    /// Bring this node's in-memory copy of deciding state up to what the database holds:
    /// the latest revocation (announced to this node's revocation streams), whether the
    /// signing key was revoked, and the active policy version (compiled and swapped in
    /// when another node activated a new one). Cheap: two indexed reads, and a compile
    /// only when the version changed.
    pub async fn sync_shared_state(&self) -> Result<(), CoreError> {
        self.keys.observe_revoked(self.store.revoked_key_count().await?);
        let latest = self.store.latest_revocation().await?;
        if latest > *self.revocations.borrow() {
            if self
                .store
                .is_revoked(RevocationKind::SigningKey, self.engine.signer().kid())
                .await?
            {
                self.mark_signing_key_revoked();
            }
            self.announce_revocation(latest);
        }
        let stored = self.store.active_policy_version().await?;
        let current = match self.policy_state() {
            PolicyState::None => None,
            PolicyState::Active(p) => Some(p.version()),
            PolicyState::Broken { version, .. } => Some(version),
        };
        if stored != current
            && let Some((version, bundle)) = self.store.active_policy().await?
        {
            let state = compile_active(version, bundle).await;
            tracing::info!(%version, "following the policy version activated on another node");
            *self.policy.write().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
        }
        Ok(())
    }

    /// Changes other nodes commit, as the store announces them (`None` for a store with
    /// no other writer, such as SQLite).
    pub fn shared_changes(&self) -> Option<tokio::sync::broadcast::Receiver<crate::store::SharedChange>> {
        self.store.subscribe()
    }

    /// Sign a checkpoint if this node holds the checkpointer role (one node at a time
    /// across a cluster, held through the database). `None` when another node holds it.
    pub async fn checkpoint_if_leader(&self) -> Result<Option<crate::store::StoredCheckpoint>, CoreError> {
        if !self.store.hold_checkpointer().await? {
            return Ok(None);
        }
        self.checkpoint().await.map(Some)
    }

    /// True once the store's log writer has stopped: nothing can be decided any more,
    /// and the process should exit for its supervisor to restart it.
    pub fn writer_stopped(&self) -> bool {
        self.store.writer_stopped()
    }

    pub async fn readiness(&self) -> Readiness {
        let storage = self
            .store
            .check_writable(self.clock.now())
            .await
            .map_err(|e| e.to_string());
        let policy = match self.policy_state() {
            PolicyState::None => Ok(None),
            PolicyState::Active(p) => Ok(Some(p.version())),
            PolicyState::Broken { version, message } => Err(format!("active policy `{version}` is invalid: {message}")),
        };
        let signing_key = if self.signing_key_revoked() {
            Err(CoreError::SigningKeyRevoked.to_string())
        } else {
            Ok(())
        };
        Readiness {
            storage,
            policy,
            signing_key,
        }
    }
}

/// Compile a bundle on a thread of its own: a bundle of thousands of policies takes
/// long enough to stall every request sharing a runtime thread with it.
async fn compile(bundle: PolicyBundle) -> Result<CompiledPolicy, CoreError> {
    tokio::task::spawn_blocking(move || CompiledPolicy::compile(&bundle))
        .await
        .map_err(|e| CoreError::Internal(format!("compiling the policy bundle: {e}")))?
        .map_err(CoreError::from)
}

/// The state of a stored active version: compiled, or broken (everything denied).
async fn compile_active(version: PolicyVersion, bundle: PolicyBundle) -> PolicyState {
    match compile(bundle).await {
        Ok(p) => PolicyState::Active(Arc::new(p)),
        Err(e) => {
            tracing::error!(%version, error = %e, "the active policy version does not compile: denying everything");
            PolicyState::Broken {
                version,
                message: e.to_string(),
            }
        }
    }
}

pub(crate) fn require(caller: &Caller, any_of: &[Role]) -> Result<(), CoreError> {
    match any_of.iter().find(|r| caller.has(**r)) {
        Some(_) => Ok(()),
        None => Err(CoreError::UnauthorizedRole {
            required: any_of.first().copied().unwrap_or(Role::Admin),
        }),
    }
}

/// The log entry of an event that happened at `time` (concerning no execution).
pub(crate) fn entry(event: &Event, time: Timestamp) -> Result<LogAppend, CoreError> {
    Ok(LogAppend {
        entry: event
            .to_entry_bytes()
            .map_err(|e| CoreError::Internal(format!("log entry: {e}")))?,
        time,
        execution: None,
    })
}

fn principal_view(p: PrincipalRecord) -> PrincipalView {
    PrincipalView {
        id: p.id,
        roles: p.roles,
        created_at: p.created_at.to_rfc3339(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
