#![doc = include_str!("../README.md")]
// The decision path and the checks auditors rely on: no index that can panic, and every
// lint exception says why.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![deny(clippy::allow_attributes_without_reason)]

mod checkpoint;
mod frontier;
mod hash;
mod note;
mod proof;
mod tlog_proof;

pub use checkpoint::{Checkpoint, CheckpointError, VerifiedCheckpoint};
pub use frontier::{CompactTree, append_nodes, frontier};
pub use hash::{EMPTY_ROOT, Hash, MemoryTree, NodeId, NodeSource, RecordingSource, leaf_hash, node_hash, range_hash};
pub use note::{NoteError, NoteSigner, NoteVerifier, SignedNote};
pub use proof::{ProofError, consistency_proof, inclusion_proof, verify_consistency, verify_inclusion};
pub use tlog_proof::{TlogProof, TlogProofError};

#[cfg(test)]
mod tests;
