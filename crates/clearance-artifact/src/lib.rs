#![doc = include_str!("../README.md")]
// The decision path and the checks auditors rely on: no index that can panic, and every
// lint exception says why.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![deny(clippy::allow_attributes_without_reason)]

mod jwk;
mod key;
mod token;

pub use jwk::{Jwk, JwkError, Jwks};
pub use key::{ClearanceSigner, KeyError, load_key, load_or_create_key, replace_private_file};
pub use token::{CLEARANCE_TYPE, JWS_ALGORITHM, TokenError, UnverifiedToken};

pub use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
