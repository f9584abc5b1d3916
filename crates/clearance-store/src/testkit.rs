//! A control plane over a store, built the one way tests and benchmarks need it: a fresh
//! clearance signing key, a fixed log key, the documented defaults with no environment
//! required, and the system clock. Public so that other crates' tests (the server's, the
//! benchmarks) build it the same way.

use std::sync::Arc;

use clearance_artifact::{ClearanceSigner, SigningKey};
use clearance_core::{Caller, ControlPlane, CoreError, DecisionEngine, EngineConfig, Store, SystemClock};
use clearance_model::wire::{CreatePrincipal, PolicyBundle};
use clearance_model::{PrincipalId, Role};

/// The log key every test plane signs checkpoints with.
pub const LOG_KEY: [u8; 32] = [5; 32];

/// The engine configuration of test planes: defaults, `issuer`, no environment required.
pub fn engine_config(issuer: &str) -> EngineConfig {
    EngineConfig {
        issuer: issuer.to_owned(),
        require_environment: false,
        ..EngineConfig::default()
    }
}

/// A control plane over `store` signing with `signer`, logging as `{issuer host}/log`.
pub async fn plane_with(
    store: Arc<dyn Store>,
    signer: ClearanceSigner,
    issuer: &str,
) -> Result<ControlPlane, CoreError> {
    let origin = format!("{}/log", issuer.split_once("://").map_or(issuer, |(_, host)| host));
    ControlPlane::new(
        store,
        DecisionEngine::new(signer, engine_config(issuer)),
        SigningKey::from_bytes(&LOG_KEY),
        &origin,
        Arc::new(SystemClock),
    )
    .await
}

/// A control plane over `store` with a fresh signing key.
pub async fn plane(store: Arc<dyn Store>, issuer: &str) -> Result<ControlPlane, CoreError> {
    let signer = ClearanceSigner::generate().map_err(|e| CoreError::Internal(e.to_string()))?;
    plane_with(store, signer, issuer).await
}

/// A control plane with its callers: an admin (bootstrapped), an agent `bot`, an
/// enforcer `enforcer`, and an active policy.
#[derive(Debug)]
pub struct World {
    pub cp: ControlPlane,
    pub admin: Caller,
    pub bot: Caller,
    pub enforcer: Caller,
}

/// Populate `cp` (over an empty store): bootstrap, the two principals with a key each,
/// and the bundle `schema` + `policies` pushed and activated.
pub async fn world(cp: ControlPlane, schema: &str, policies: &str) -> Result<World, CoreError> {
    let missing = || CoreError::Internal("the store already had principals".into());
    let key = cp.bootstrap(None).await?.ok_or_else(missing)?;
    let admin = cp.authenticate(Some(key.expose())).await?;
    let mut callers = Vec::new();
    for (id, role) in [("bot", Role::Agent), ("enforcer", Role::Enforcer)] {
        let id: PrincipalId = id.parse().map_err(|e| CoreError::Internal(format!("{e}")))?;
        let principal = CreatePrincipal {
            id: id.clone(),
            roles: vec![role],
        };
        cp.create_principal(&admin, &principal).await?;
        let issued = cp.issue_key(&admin, &id).await?;
        callers.push(cp.authenticate(Some(&issued.key)).await?);
    }
    let bundle = PolicyBundle {
        schema: schema.to_owned(),
        policies: policies.to_owned(),
    };
    let version = cp.push_policy(&admin, &bundle).await?.version;
    cp.activate_policy(&admin, &version).await?;
    let (enforcer, bot) = (callers.pop().ok_or_else(missing)?, callers.pop().ok_or_else(missing)?);
    Ok(World {
        cp,
        admin,
        bot,
        enforcer,
    })
}

impl World {
    /// Another node of this world's cluster: its own control plane `cp` over the same
    /// database, the same callers.
    pub fn node(&self, cp: ControlPlane) -> Self {
        Self {
            cp,
            admin: self.admin.clone(),
            bot: self.bot.clone(),
            enforcer: self.enforcer.clone(),
        }
    }
}
