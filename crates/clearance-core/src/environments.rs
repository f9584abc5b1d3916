//! The environment registry and attestation (stage 5's IO half): register, update,
//! quarantine and release; one-time challenges; verifying signed evidence.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clearance_artifact::VerifyingKey;
use clearance_model::environment::{
    AttestRequest, AttestationView, Challenge, EnvironmentView, MAX_LABELS, MAX_MEASUREMENTS, Measurements,
    Quarantined, RegisterEnvironment, UpdateEnvironment, measurement_digest, mismatches,
};
use clearance_model::event::Event;
use clearance_model::execution::{RevocationKind, RevokeRequest};
use clearance_model::limits::MAX_ENVIRONMENT_BYTES;
use clearance_model::{Refusal, Role, Timestamp};

use crate::engine::{AttestedEnvironment, Caller, EnvironmentCheck};
use crate::error::CoreError;
use crate::service::{ControlPlane, entry, require};
use crate::store::{Attestation, ChallengeRefusal, EnvironmentRecord, StoreError};

/// How far an evidence's own time may be from the control plane's clock.
const MAX_EVIDENCE_SKEW_SECONDS: u64 = 60;

fn invalid(m: impl Into<String>) -> CoreError {
    CoreError::InvalidRequest(m.into())
}

fn refused(code: Refusal, message: impl Into<String>) -> CoreError {
    CoreError::Refused {
        code,
        message: message.into(),
    }
}

fn check_id(id: &str) -> Result<(), CoreError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ENVIRONMENT_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "environment id must be 1 to {MAX_ENVIRONMENT_BYTES} characters of [A-Za-z0-9-_.:]"
        )))
    }
}

fn check_measurements(what: &str, m: &Measurements) -> Result<(), CoreError> {
    if m.len() > MAX_MEASUREMENTS {
        return Err(invalid(format!("more than {MAX_MEASUREMENTS} {what}")));
    }
    if let Some(bad) = m.keys().find(|n| n.is_empty() || n.len() > 128 || n.contains('=')) {
        return Err(invalid(format!(
            "{what} name `{bad}` must be 1 to 128 bytes without `=`"
        )));
    }
    Ok(())
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), CoreError> {
    if labels.len() > MAX_LABELS {
        return Err(invalid(format!("more than {MAX_LABELS} labels")));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 128 || k.contains('=') || v.len() > 256 {
            return Err(invalid(format!(
                "label `{k}` must have a 1 to 128 byte key without `=` and a value up to 256 bytes"
            )));
        }
    }
    Ok(())
}

/// Everything about an attestation that needs no stored state: it names environment `id`,
/// its measurements are well formed, it is signed by `attestation_key` (the registered
/// key, base64url), and its time is within the allowed skew of `now`. Pure, so it can be
/// fuzzed with arbitrary requests.
pub fn check_evidence(id: &str, req: &AttestRequest, attestation_key: &str, now: Timestamp) -> Result<(), CoreError> {
    let e = &req.evidence;
    if e.environment != id {
        return Err(refused(
            Refusal::AttestationWrongEnvironment,
            format!("the evidence is for environment `{}`, not `{id}`", e.environment),
        ));
    }
    check_measurements("measurements", &e.measurements)?;
    let key = parse_attestation_key(attestation_key).map_err(CoreError::Internal)?;
    let signature = URL_SAFE_NO_PAD
        .decode(req.signature.trim())
        .ok()
        .and_then(|b| ed25519_dalek_signature(&b))
        .ok_or_else(|| {
            refused(
                Refusal::AttestationSignatureInvalid,
                "the signature is not 64 base64url bytes",
            )
        })?;
    let bytes = e.signed_bytes().map_err(|err| invalid(format!("evidence: {err}")))?;
    key.verify_strict(&bytes, &signature).map_err(|_| {
        refused(
            Refusal::AttestationSignatureInvalid,
            format!("the evidence is not signed by environment `{id}`'s registered attestation key"),
        )
    })?;
    // `abs_diff`: the evidence's time is the sender's, any i64; a subtraction overflowed
    // (a panic in debug builds, a wrapped skew that passed in release ones).
    if e.time.abs_diff(now.seconds()) > MAX_EVIDENCE_SKEW_SECONDS {
        return Err(refused(
            Refusal::AttestationTimeSkew,
            format!(
                "the evidence's time {} is more than {MAX_EVIDENCE_SKEW_SECONDS} s from now",
                e.time
            ),
        ));
    }
    Ok(())
}

/// Parse an attestation key: base64url (unpadded) of a 32-byte Ed25519 public key.
pub fn parse_attestation_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| "the attestation key is not base64url".to_owned())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the attestation key is not 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "the attestation key is not an Ed25519 point".to_owned())
}

impl ControlPlane {
    fn view(&self, e: EnvironmentRecord) -> EnvironmentView {
        let freshness = self.engine.config().attestation_freshness_seconds;
        EnvironmentView {
            id: e.id,
            attestation_key: e.attestation_key,
            expect: e.expect,
            labels: e.labels,
            quarantined: e.quarantined,
            quarantine_reason: e.quarantine_reason,
            attestation: e.attestation.map(|a| AttestationView {
                time: a.time.seconds(),
                fresh_until: a.time.plus_seconds(freshness).seconds(),
                measurements: a.measurements,
                measurement_digest: a.measurement_digest,
                matches: a.matches,
                mismatched: a.mismatched,
                log_index: a.log_index,
            }),
        }
    }

    pub async fn register_environment(
        &self,
        caller: &Caller,
        req: &RegisterEnvironment,
    ) -> Result<EnvironmentView, CoreError> {
        require(caller, &[Role::Admin])?;
        check_id(&req.id)?;
        parse_attestation_key(&req.attestation_key).map_err(invalid)?;
        check_measurements("expected measurements", &req.expect)?;
        check_labels(&req.labels)?;
        let now = self.clock.now();
        let record = EnvironmentRecord {
            id: req.id.clone(),
            attestation_key: req.attestation_key.trim().to_owned(),
            expect: req.expect.clone(),
            labels: req.labels.clone(),
            quarantined: false,
            quarantine_reason: None,
            attestation: None,
            released: None,
        };
        let event = Event::EnvironmentRegistered {
            time: now.seconds(),
            by: caller.id.clone(),
            environment: record.id.clone(),
            attestation_key: record.attestation_key.clone(),
            expect: record.expect.clone(),
            labels: record.labels.clone(),
        };
        self.store.create_environment(&record, entry(&event, now)?).await?;
        Ok(self.view(record))
    }

    pub async fn update_environment(
        &self,
        caller: &Caller,
        id: &str,
        req: &UpdateEnvironment,
    ) -> Result<EnvironmentView, CoreError> {
        require(caller, &[Role::Admin])?;
        let mut record = self.environment_record(id).await?;
        if let Some(expect) = &req.expect {
            check_measurements("expected measurements", expect)?;
            record.expect = expect.clone();
        }
        if let Some(labels) = &req.labels {
            check_labels(labels)?;
            record.labels = labels.clone();
        }
        let now = self.clock.now();
        let event = Event::EnvironmentUpdated {
            time: now.seconds(),
            by: caller.id.clone(),
            environment: record.id.clone(),
            expect: record.expect.clone(),
            labels: record.labels.clone(),
        };
        self.store.update_environment(&record, entry(&event, now)?).await?;
        Ok(self.view(record))
    }

    async fn environment_record(&self, id: &str) -> Result<EnvironmentRecord, CoreError> {
        self.store
            .environment(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("environment `{id}`")))
    }

    pub async fn environment(&self, caller: &Caller, id: &str) -> Result<EnvironmentView, CoreError> {
        require(caller, &[Role::Admin, Role::Auditor, Role::Enforcer])?;
        Ok(self.view(self.environment_record(id).await?))
    }

    pub async fn list_environments(&self, caller: &Caller) -> Result<Vec<EnvironmentView>, CoreError> {
        require(caller, &[Role::Admin, Role::Auditor, Role::Enforcer])?;
        let all = self.store.list_environments().await?;
        Ok(all.into_iter().map(|e| self.view(e)).collect())
    }

    /// Quarantine: new requests for the environment are denied and every live execution
    /// bound to it is revoked (pushed to enforcement points like any revocation).
    pub async fn quarantine_environment(
        &self,
        caller: &Caller,
        id: &str,
        req: &RevokeRequest,
    ) -> Result<Quarantined, CoreError> {
        let revoked = self.revoke(caller, RevocationKind::Environment, id, req).await?;
        Ok(Quarantined {
            environment: id.to_owned(),
            quarantined: true,
            revoked_executions: revoked
                .revocations
                .iter()
                .filter(|r| r.kind == RevocationKind::Execution)
                .count(),
        })
    }

    pub async fn release_environment(&self, caller: &Caller, id: &str) -> Result<Quarantined, CoreError> {
        require(caller, &[Role::Admin])?;
        let now = self.clock.now();
        let event = Event::EnvironmentReleased {
            time: now.seconds(),
            by: caller.id.clone(),
            environment: id.to_owned(),
        };
        self.store.release_environment(id, entry(&event, now)?).await?;
        Ok(Quarantined {
            environment: id.to_owned(),
            quarantined: false,
            revoked_executions: 0,
        })
    }

    /// A one-time challenge for the environment's next attestation (enforcer).
    pub async fn challenge(&self, caller: &Caller, id: &str) -> Result<Challenge, CoreError> {
        require(caller, &[Role::Enforcer])?;
        self.environment_record(id).await?;
        let nonce = clearance_model::ids::random_bytes::<32>().map_err(|e| CoreError::Internal(e.to_string()))?;
        let nonce = URL_SAFE_NO_PAD.encode(nonce);
        let expires = self
            .clock
            .now()
            .plus_seconds(self.engine.config().challenge_ttl_seconds);
        self.store.save_challenge(id, &nonce, expires).await?;
        Ok(Challenge {
            environment: id.to_owned(),
            challenge: nonce,
            expires: expires.seconds(),
        })
    }

    /// Verify signed evidence and record the result. A verified attestation is recorded
    /// whether or not its measurements match; a mismatch makes the environment refuse
    /// authorizations (`measurement_mismatch`) until a matching one arrives.
    pub async fn attest(&self, caller: &Caller, id: &str, req: &AttestRequest) -> Result<AttestationView, CoreError> {
        require(caller, &[Role::Enforcer])?;
        let record = self.environment_record(id).await?;
        let now = self.clock.now();
        check_evidence(id, req, &record.attestation_key, now)?;
        let e = &req.evidence;
        let mismatched = mismatches(&record.expect, &e.measurements);
        let digest = measurement_digest(&e.measurements).map_err(|err| invalid(format!("measurements: {err}")))?;
        let event = Event::EnvironmentAttested {
            time: now.seconds(),
            by: caller.id.clone(),
            environment: id.to_owned(),
            measurements: e.measurements.clone(),
            measurement_digest: digest,
            matches: mismatched.is_empty(),
            mismatched: mismatched.clone(),
        };
        let attestation = Attestation {
            time: now,
            measurements: e.measurements.clone(),
            measurement_digest: digest,
            matches: mismatched.is_empty(),
            mismatched,
            log_index: clearance_model::LogIndex(0),
        };
        let log_index = match self
            .store
            .record_attestation(id, &e.challenge, &attestation, entry(&event, now)?)
            .await
        {
            Ok(i) => i,
            Err(StoreError::Challenge(why)) => {
                let code = match why {
                    ChallengeRefusal::Replayed => Refusal::ChallengeReplayed,
                    ChallengeRefusal::Expired => Refusal::ChallengeExpired,
                    ChallengeRefusal::Unknown => Refusal::ChallengeUnknown,
                };
                return Err(refused(code, format!("the challenge is not valid for `{id}` ({code})")));
            }
            Err(StoreError::Unavailable(why)) => return Err(CoreError::AuditUnavailable(why)),
            Err(other) => return Err(other.into()),
        };
        let freshness = self.engine.config().attestation_freshness_seconds;
        Ok(AttestationView {
            time: now.seconds(),
            fresh_until: now.plus_seconds(freshness).seconds(),
            measurements: attestation.measurements,
            measurement_digest: digest,
            matches: attestation.matches,
            mismatched: attestation.mismatched,
            log_index,
        })
    }

    /// Stage 5's facts for a request naming `environment`.
    pub(crate) async fn check_environment(
        &self,
        environment: Option<&str>,
        now: Timestamp,
    ) -> Result<EnvironmentCheck, CoreError> {
        let Some(id) = environment else {
            return Ok(if self.engine.config().require_environment {
                EnvironmentCheck::Required
            } else {
                EnvironmentCheck::Unbound
            });
        };
        let Some(env) = self.store.environment(id).await? else {
            return Ok(EnvironmentCheck::Unknown(format!(
                "environment `{id}` is not registered"
            )));
        };
        if env.quarantined {
            return Ok(EnvironmentCheck::Quarantined(format!(
                "environment `{id}` is quarantined: {}",
                env.quarantine_reason.as_deref().unwrap_or("no reason given")
            )));
        }
        let freshness = self.engine.config().attestation_freshness_seconds;
        let Some(a) = env.attestation.filter(|a| a.time.plus_seconds(freshness) > now) else {
            return Ok(EnvironmentCheck::Stale(format!(
                "environment `{id}` has no attestation from the last {freshness} s: run `clearance env attest` \
                 on it (add --every to keep it fresh)"
            )));
        };
        // What was attested before a quarantine says nothing about the environment now.
        if let Some(released) = env.released
            && a.log_index < released
        {
            return Ok(EnvironmentCheck::Stale(format!(
                "environment `{id}` was released from quarantine (log entry {released}) and has not attested since: \
                 run `clearance env attest` on it"
            )));
        }
        // Against the expectations as they are now (they may have changed since).
        let mismatched = mismatches(&env.expect, &a.measurements);
        if !mismatched.is_empty() {
            return Ok(EnvironmentCheck::Mismatch(format!(
                "environment `{id}` attested measurements that differ from the expected ones: {}",
                mismatched.join(", ")
            )));
        }
        Ok(EnvironmentCheck::Fresh(Box::new(AttestedEnvironment {
            id: env.id,
            labels: env.labels,
            measurements: a.measurements,
            measurement_digest: a.measurement_digest,
            attestation: a.log_index,
        })))
    }
}

fn ed25519_dalek_signature(bytes: &[u8]) -> Option<clearance_artifact::Signature> {
    let bytes: [u8; 64] = bytes.try_into().ok()?;
    Some(clearance_artifact::Signature::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use clearance_artifact::Signer as _;
    use clearance_model::environment::{AttestationEvidence, Measurements};

    fn signed(key: &clearance_artifact::SigningKey, time: i64) -> AttestRequest {
        let evidence = AttestationEvidence {
            environment: "prod".into(),
            measurements: Measurements::new(),
            time,
            challenge: "c".into(),
        };
        let signature = key.sign(&evidence.signed_bytes().unwrap());
        AttestRequest {
            evidence,
            signature: URL_SAFE_NO_PAD.encode(signature.to_bytes()),
        }
    }

    /// Seen while writing the `attestation` fuzz target: a time near `i64::MIN` overflowed the skew
    /// check. Every time outside the allowed skew is refused, whatever its size.
    #[test]
    fn evidence_time_far_from_now_is_skew_whatever_its_size() {
        let key = clearance_artifact::SigningKey::from_bytes(&[7; 32]);
        let public = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        let now = Timestamp(1_800_000_000);
        check_evidence("prod", &signed(&key, now.seconds() - 30), &public, now).unwrap();
        for time in [i64::MIN, i64::MIN + now.seconds(), i64::MAX, now.seconds() + 61] {
            let e = check_evidence("prod", &signed(&key, time), &public, now).unwrap_err();
            assert!(
                matches!(
                    e,
                    CoreError::Refused {
                        code: Refusal::AttestationTimeSkew,
                        ..
                    }
                ),
                "{time}: {e:?}"
            );
        }
    }
}
