#![doc = include_str!("../README.md")]
// The decision path and the checks auditors rely on: no index that can panic, and every
// lint exception says why.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![deny(clippy::allow_attributes_without_reason)]

mod evidence;
mod sample;
mod verify;

pub use clearance_artifact::{Jwk, Jwks, TokenError, UnverifiedToken};
pub use clearance_log::{
    Checkpoint, CheckpointError, NoteVerifier, ProofError, TlogProof, TlogProofError, VerifiedCheckpoint, leaf_hash,
    verify_consistency, verify_inclusion,
};
pub use evidence::{EvidenceError, EvidenceReport, EvidenceTrust, Step, verify_evidence};
#[doc(hidden)]
pub use sample::{Sample, SampleError};
pub use verify::{ExpectedCall, VerifiedClearance, Verifier, VerifyError};

#[cfg(test)]
mod tests;
