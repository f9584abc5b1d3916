#![doc = include_str!("../README.md")]

mod evidence;
mod verify;

pub use clearance_artifact::{Jwk, Jwks, TokenError, UnverifiedToken};
pub use clearance_log::{
    Checkpoint, CheckpointError, NoteVerifier, ProofError, TlogProof, TlogProofError, VerifiedCheckpoint, leaf_hash,
    verify_consistency, verify_inclusion,
};
pub use evidence::{EvidenceError, EvidenceReport, EvidenceTrust, Step, verify_evidence};
pub use verify::{ExpectedCall, VerifiedClearance, Verifier, VerifyError};

#[cfg(test)]
mod tests;
