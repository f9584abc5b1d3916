//! C2SP tlog-proof text (`../shared/specs/c2sp-tlog-proof.md`): an offline-verifiable
//! inclusion proof with the checkpoint it leads to.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::checkpoint::{Checkpoint, CheckpointError, VerifiedCheckpoint};
use crate::hash::Hash;
use crate::note::NoteVerifier;
use crate::proof::{ProofError, verify_inclusion};

const HEADER: &str = "c2sp.org/tlog-proof@v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogProofError {
    #[error("tlog-proof is malformed: {0}")]
    Malformed(String),
    #[error("tlog-proof checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("tlog-proof inclusion: {0}")]
    Inclusion(#[from] ProofError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Unauthenticated application data.
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    pub fn encode(&self) -> String {
        let mut out = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", STANDARD.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.proof {
            out.push_str(&STANDARD.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    pub fn parse(text: &str) -> Result<Self, TlogProofError> {
        let bad = |m: &str| TlogProofError::Malformed(m.to_owned());
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(bad("the first line is not `c2sp.org/tlog-proof@v1`"));
        }
        let mut line = lines.next().ok_or_else(|| bad("no index line"))?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            extra = Some(STANDARD.decode(b64).map_err(|_| bad("extra is not base64"))?);
            line = lines.next().ok_or_else(|| bad("no index line"))?;
        }
        let index = line.strip_prefix("index ").ok_or_else(|| bad("no index line"))?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || (index.len() > 1 && index.starts_with('0'))
        {
            return Err(bad("the index is not a decimal without leading zeroes"));
        }
        let index = index.parse().map_err(|_| bad("the index is out of range"))?;
        let proof = lines
            .map(|l| {
                STANDARD
                    .decode(l)
                    .ok()
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| bad("a proof line is not a base64 hash"))
            })
            .collect::<Result<Vec<Hash>, _>>()?;
        Ok(Self {
            extra,
            index,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// Check the checkpoint with the log's key, then the inclusion of `leaf` in it.
    pub fn verify(&self, leaf: &Hash, verifier: &NoteVerifier) -> Result<VerifiedCheckpoint, TlogProofError> {
        let checkpoint = Checkpoint::open(&self.checkpoint, verifier)?;
        verify_inclusion(self.index, checkpoint.size, leaf, &self.proof, &checkpoint.root)?;
        Ok(checkpoint)
    }
}
