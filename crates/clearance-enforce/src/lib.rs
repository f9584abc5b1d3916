#![doc = include_str!("../README.md")]

mod evidence;
mod verify;

pub use evidence::{EvidenceError, EvidenceReport, EvidenceTrust, verify_evidence};
pub use verify::{ExpectedCall, VerifiedClearance, Verifier, VerifyError};

#[cfg(test)]
mod tests;
