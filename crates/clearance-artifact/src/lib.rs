#![doc = include_str!("../README.md")]

mod jwk;
mod key;
mod token;

pub use jwk::{Jwk, JwkError, Jwks};
pub use key::{ClearanceSigner, KeyError, load_key, load_or_create_key};
pub use token::{CLEARANCE_TYPE, JWS_ALGORITHM, TokenError, UnverifiedToken};

pub use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
