//! The clearance signing keys over time: the one that signs now, and those it replaced.
//!
//! Rotation makes a new key sign from the next decision on. The key it replaces stays in
//! the JWKS until the last clearance it could have signed has expired (the longest
//! lifetime a clearance may have, plus the verifiers' clock leeway), so enforcement
//! points verify both through the overlap; it stays known to this control plane for
//! good, for lineage checks and evidence bundles of the executions it signed.

use std::sync::{Arc, PoisonError, RwLock};

use clearance_artifact::{ClearanceSigner, Jwk, Jwks};
use clearance_model::Role;
use clearance_model::limits::DEFAULT_LEEWAY_SECONDS;
use clearance_model::wire::SigningKeyRotated;
use serde::{Deserialize, Serialize};

use crate::engine::Caller;
use crate::error::CoreError;
use crate::service::{ControlPlane, require};

/// A signing key that no longer signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredKey {
    pub jwk: Jwk,
    /// When it stopped signing (Unix seconds).
    pub retired_at: i64,
    /// Until when it is published in the JWKS (Unix seconds).
    pub published_until: i64,
}

/// Where the signing key and the retired ones are kept across restarts.
pub trait SigningKeyStore: Send + Sync + std::fmt::Debug {
    /// Make `next` the signing key and `retired` the keys it replaced, durably, before
    /// `next` signs anything.
    fn save(&self, next: &ClearanceSigner, retired: &[RetiredKey]) -> Result<(), String>;
}

/// The keys the current one replaced, and where rotations are saved.
#[derive(Debug, Default)]
pub(crate) struct KeyRing {
    retired: RwLock<Vec<RetiredKey>>,
    store: Option<Arc<dyn SigningKeyStore>>,
    /// One rotation at a time.
    rotating: tokio::sync::Mutex<()>,
}

impl KeyRing {
    fn retired(&self) -> Vec<RetiredKey> {
        self.retired.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ControlPlane {
    /// Keep rotations in `store`, and know the keys the current one replaced (loaded from
    /// it at start). An entry for the current key itself (left by a rotation cut short
    /// between its two writes) is dropped.
    #[must_use]
    pub fn with_signing_key_store(mut self, retired: Vec<RetiredKey>, store: Arc<dyn SigningKeyStore>) -> Self {
        let current = self.engine.signer().kid().to_owned();
        let retired = retired.into_iter().filter(|r| r.jwk.kid != current).collect();
        self.keyring = KeyRing {
            retired: RwLock::new(retired),
            store: Some(store),
            rotating: tokio::sync::Mutex::new(()),
        };
        self
    }

    /// The keys verifiers should trust now: the current one, and each retired one until
    /// its `published_until`.
    pub fn published_keys(&self) -> Jwks {
        let now = self.clock.now().seconds();
        let mut keys = vec![self.engine.signer().jwk()];
        keys.extend(
            self.keyring
                .retired()
                .into_iter()
                .filter(|r| r.published_until > now)
                .map(|r| r.jwk),
        );
        Jwks { keys }
    }

    /// The public key `kid` names, if this control plane signs or ever signed with it.
    pub fn signing_key(&self, kid: &str) -> Option<Jwk> {
        let current = self.engine.signer();
        if current.kid() == kid {
            return Some(current.jwk());
        }
        self.keyring
            .retired()
            .into_iter()
            .find(|r| r.jwk.kid == kid)
            .map(|r| r.jwk)
    }

    /// Replace the clearance signing key (admin): a new key, saved before it signs
    /// anything, signs from the next decision on; the one it replaces stays published
    /// until every clearance it signed has expired. Also the way back after the signing
    /// key was revoked. Refused on a shared database, whose nodes must all sign with the
    /// same key.
    pub async fn rotate_signing_key(&self, caller: &Caller) -> Result<SigningKeyRotated, CoreError> {
        require(caller, &[Role::Admin])?;
        if self.store.subscribe().is_some() {
            return Err(CoreError::Conflict(
                "rotating the signing key of nodes sharing a database is not supported yet: every node must \
                 sign with the same key"
                    .into(),
            ));
        }
        let Some(store) = self.keyring.store.clone() else {
            return Err(CoreError::Conflict(
                "this control plane was started without a place to keep a new signing key".into(),
            ));
        };
        let _one = self.keyring.rotating.lock().await;
        let next = ClearanceSigner::generate().map_err(|e| CoreError::Internal(format!("a new signing key: {e}")))?;
        let now = self.clock.now().seconds();
        let current = self.engine.signer();
        let overlap = self
            .engine
            .config()
            .max_ttl_seconds
            .saturating_add(DEFAULT_LEEWAY_SECONDS);
        let published_until = now.saturating_add(i64::try_from(overlap).unwrap_or(i64::MAX));
        let mut retired = self.keyring.retired();
        retired.push(RetiredKey {
            jwk: current.jwk(),
            retired_at: now,
            published_until,
        });
        let saved = retired.clone();
        let next = tokio::task::spawn_blocking(move || store.save(&next, &saved).map(|()| next))
            .await
            .map_err(|e| CoreError::Internal(format!("saving the new signing key: {e}")))?
            .map_err(|e| CoreError::Internal(format!("saving the new signing key: {e}")))?;
        let kid = next.kid().to_owned();
        *self.keyring.retired.write().unwrap_or_else(PoisonError::into_inner) = retired;
        self.engine.replace_signer(next);
        // A new key is not revoked, whatever happened to the one it replaces.
        self.signing_key_revoked
            .store(false, std::sync::atomic::Ordering::Release);
        tracing::info!(%kid, previous = current.kid(), published_until, "rotated the clearance signing key");
        Ok(SigningKeyRotated {
            kid,
            previous: current.kid().to_owned(),
            previous_published_until: published_until,
        })
    }
}
