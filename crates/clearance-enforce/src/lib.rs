#![doc = include_str!("../README.md")]

#[cfg(feature = "runtime")]
pub mod client;
#[cfg(feature = "runtime")]
pub mod exec;
mod gate;
mod measure;
#[cfg(feature = "runtime")]
mod pipeline;
#[cfg(feature = "runtime")]
pub mod proxy;
mod state;

#[doc(hidden)]
pub use clearance_verify::Sample;
pub use clearance_verify::{
    EvidenceError, EvidenceReport, EvidenceTrust, ExpectedCall, Step, VerifiedClearance, Verifier, VerifyError,
    verify_evidence,
};
#[cfg(feature = "runtime")]
pub use client::{CallError, ClientOptions, ControlPlaneClient, POOL_IDLE_TIMEOUT};
pub use gate::Gate;
pub use measure::{Measurer, Source};
#[cfg(feature = "runtime")]
pub use pipeline::{Admission, Call, NotAdmitted, Pipeline, authorize};
pub use state::{ReplayCache, RevocationView};

#[cfg(test)]
mod tests;
