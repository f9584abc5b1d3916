//! C2SP tlog-checkpoint notes (`../shared/specs/c2sp-tlog-checkpoint.md`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::hash::Hash;
use crate::note::{NoteError, NoteSigner, NoteVerifier};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    #[error("checkpoint text is malformed: {0}")]
    Malformed(String),
    #[error("checkpoint is for log `{got}`, not `{want}`")]
    WrongOrigin { got: String, want: String },
}

/// A log's tree head: origin, size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text ("Note text"): origin, size, base64 root, each followed by a newline.
    pub fn to_text(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root))
    }

    /// Strict parse of the note text. Extension lines are accepted and ignored.
    pub fn from_text(text: &str) -> Result<Self, CheckpointError> {
        let bad = |m: &str| CheckpointError::Malformed(m.to_owned());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("text does not end in a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(bad("fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(bad("empty origin"));
        }
        if lines.any(str::is_empty) {
            return Err(bad("empty extension line"));
        }
        // ASCII decimal without leading zeroes (unless the size is 0).
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad("the size is not a decimal without leading zeroes"));
        }
        let size = size.parse().map_err(|_| bad("the size is out of range"))?;
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("the root is not a base64 SHA-256 hash"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// The signed note for this checkpoint.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        Ok(signer.sign(&self.to_text())?)
    }

    /// Verify a checkpoint note with the log's key; the origin must be the key's name.
    /// The result is a different type from a parsed [`Checkpoint`]: code that must only
    /// trust a signed tree head takes a [`VerifiedCheckpoint`].
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<VerifiedCheckpoint, CheckpointError> {
        let text = verifier.verify(note)?;
        let checkpoint = Self::from_text(&text)?;
        if checkpoint.origin != verifier.name() {
            return Err(CheckpointError::WrongOrigin {
                got: checkpoint.origin,
                want: verifier.name().to_owned(),
            });
        }
        Ok(VerifiedCheckpoint(checkpoint))
    }
}

/// A checkpoint whose signature verified against the log's key: only
/// [`Checkpoint::open`] makes one. Reads as the [`Checkpoint`] it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint(Checkpoint);

impl VerifiedCheckpoint {
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.0
    }
}

impl std::ops::Deref for VerifiedCheckpoint {
    type Target = Checkpoint;

    fn deref(&self) -> &Checkpoint {
        &self.0
    }
}
