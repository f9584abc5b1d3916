#![doc = include_str!("../README.md")]

#[cfg(feature = "runtime")]
pub mod client;
mod evidence;
#[cfg(feature = "runtime")]
pub mod exec;
mod gate;
mod measure;
#[cfg(feature = "runtime")]
mod pipeline;
#[cfg(feature = "runtime")]
pub mod proxy;
mod state;
mod verify;

#[cfg(feature = "runtime")]
pub use client::{CallError, ClientOptions, ControlPlaneClient};
pub use evidence::{EvidenceError, EvidenceReport, EvidenceTrust, Step, verify_evidence};
pub use gate::Gate;
pub use measure::{Measurer, Source};
#[cfg(feature = "runtime")]
pub use pipeline::{Admission, Call, NotAdmitted, Pipeline, authorize};
pub use state::{ReplayCache, RevocationView};
pub use verify::{ExpectedCall, VerifiedClearance, Verifier, VerifyError};

#[cfg(test)]
mod tests;
