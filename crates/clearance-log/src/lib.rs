#![doc = include_str!("../README.md")]

mod checkpoint;
mod frontier;
mod hash;
mod note;
mod proof;
mod tlog_proof;

pub use checkpoint::{Checkpoint, CheckpointError, VerifiedCheckpoint};
pub use frontier::{append_nodes, frontier};
pub use hash::{EMPTY_ROOT, Hash, MemoryTree, NodeId, NodeSource, RecordingSource, leaf_hash, node_hash, range_hash};
pub use note::{NoteError, NoteSigner, NoteVerifier, SignedNote};
pub use proof::{ProofError, consistency_proof, inclusion_proof, verify_consistency, verify_inclusion};
pub use tlog_proof::{TlogProof, TlogProofError};

#[cfg(test)]
mod tests;
