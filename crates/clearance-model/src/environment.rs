//! Runtime environments and their attestations (DESIGN.md sections 1 and 2, stage 5).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::canonical::{CanonicalError, Digest, canonical_json};
use crate::ids::LogIndex;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// How long an attestation keeps an environment fresh, by default.
pub const DEFAULT_ATTESTATION_FRESHNESS_SECONDS: u64 = 300;
/// How long a challenge may be answered.
pub const CHALLENGE_TTL_SECONDS: u64 = 60;
/// Most measurements an environment may declare or report.
pub const MAX_MEASUREMENTS: usize = 64;
/// Most labels per environment.
pub const MAX_LABELS: usize = 64;

/// Measurement name to SHA-256 digest. Ordered, so the set has one canonical form.
pub type Measurements = BTreeMap<String, Digest>;

/// The digest a clearance's `env` claim binds: SHA-256 of the RFC 8785 JSON of the
/// measurement set (`{"name": "sha256:..."}`).
pub fn measurement_digest(m: &Measurements) -> Result<Digest, CanonicalError> {
    canonical_json(m).map(|bytes| Digest::of(&bytes))
}

/// The `env` claim: where the clearance may run and what must be running there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvBinding {
    pub id: String,
    /// [`measurement_digest`] of the attested measurements.
    pub measurements: Digest,
}

/// `POST /v1/environments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterEnvironment {
    pub id: String,
    /// The environment's Ed25519 attestation key: base64url (no padding) of its 32 bytes.
    pub attestation_key: String,
    /// Expected measurements: name to `sha256:<hex>`.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub expect: Measurements,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `PATCH /v1/environments/{id}`: what is given replaces what was there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateEnvironment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<BTreeMap<String, String>>))]
    pub expect: Option<Measurements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The latest attestation the control plane accepted from an environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AttestationView {
    /// When it was verified (Unix seconds).
    pub time: i64,
    pub fresh_until: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub measurements: Measurements,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub measurement_digest: Digest,
    /// Whether the measurements equalled the expectations when attested.
    pub matches: bool,
    /// Names whose digests differed, were missing or were unexpected.
    pub mismatched: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub log_index: LogIndex,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnvironmentView {
    pub id: String,
    pub attestation_key: String,
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub expect: Measurements,
    pub labels: BTreeMap<String, String>,
    pub quarantined: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestationView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnvironmentList {
    pub environments: Vec<EnvironmentView>,
}

/// A one-time challenge for the next attestation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Challenge {
    pub environment: String,
    /// base64url of 32 random bytes.
    pub challenge: String,
    pub expires: i64,
}

/// What an environment says about itself. Signed as its RFC 8785 JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AttestationEvidence {
    pub environment: String,
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub measurements: Measurements,
    /// When the evidence was built (Unix seconds).
    pub time: i64,
    pub challenge: String,
}

impl AttestationEvidence {
    /// The bytes the attestation key signs.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, CanonicalError> {
        canonical_json(self)
    }
}

/// `POST /v1/environments/{id}/attest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    pub evidence: AttestationEvidence,
    /// base64url of the Ed25519 signature over [`AttestationEvidence::signed_bytes`].
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Quarantined {
    pub environment: String,
    pub quarantined: bool,
    /// Executions revoked because they ran there.
    pub revoked_executions: usize,
}

/// Compare reported measurements with expectations: the names that differ, are
/// missing, or were not expected, sorted.
pub fn mismatches(expected: &Measurements, reported: &Measurements) -> Vec<String> {
    let mut names: Vec<String> = expected
        .iter()
        .filter(|(name, digest)| reported.get(*name) != Some(digest))
        .map(|(name, _)| name.clone())
        .chain(reported.keys().filter(|n| !expected.contains_key(*n)).cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatches_name_changed_missing_and_unexpected() {
        let d = |s: &str| Digest::of(s.as_bytes());
        let expected: Measurements = [("a".into(), d("1")), ("b".into(), d("2"))].into();
        assert!(mismatches(&expected, &expected).is_empty());
        let reported: Measurements = [("a".into(), d("x")), ("c".into(), d("3"))].into();
        assert_eq!(mismatches(&expected, &reported), ["a", "b", "c"]);
        // The digest is of the canonical form: insertion order does not matter.
        assert_eq!(
            measurement_digest(&expected).unwrap(),
            measurement_digest(&[("b".into(), d("2")), ("a".into(), d("1"))].into()).unwrap()
        );
    }
}
