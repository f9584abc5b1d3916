#![doc = include_str!("../README.md")]

mod verify;

pub use verify::{ExpectedCall, VerifiedClearance, Verifier, VerifyError};

#[cfg(test)]
mod tests;
