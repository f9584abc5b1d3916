//! C2SP signed notes (`../shared/specs/c2sp-signed-note.md`) with Ed25519 signatures.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// Largest note accepted for parsing.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// Most signature lines accepted (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 64;
/// Signature type byte for Ed25519 ("Signature types").
const ED25519: u8 = 0x01;
const EM_DASH_SPACE: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("note is {got} bytes, more than the limit of {max}")]
    TooLarge { got: usize, max: usize },
    #[error("note is malformed: {0}")]
    Malformed(String),
    #[error("key name `{0}` is invalid: it must be non-empty, without spaces or `+`")]
    BadKeyName(String),
    #[error("verifier key is malformed: {0}")]
    BadVerifierKey(String),
    #[error("the signature by `{name}` does not verify")]
    BadSignature { name: String },
    #[error("the note has no signature by `{name}` (key id {key_id:08x})")]
    NoKnownSignature { name: String, key_id: u32 },
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

/// A parsed (not yet verified) signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The text, including its final newline.
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::BadKeyName(name.chars().take(80).collect()));
    }
    Ok(())
}

/// key ID = SHA-256(key name || 0x0A || 0x01 || public key)[:4] ("Ed25519 signatures").
fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(key.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    let [a, b, c, e, ..] = d;
    u32::from_be_bytes([a, b, c, e])
}

impl SignedNote {
    /// Strict parse ("Format"): UTF-8 without control characters but newline, text
    /// ending in newline, a blank line, then signature lines `— name base64`.
    pub fn parse(note: &str) -> Result<Self, NoteError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                got: note.len(),
                max: MAX_NOTE_BYTES,
            });
        }
        let bad = |m: &str| NoteError::Malformed(m.to_owned());
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad("control characters other than newline"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let (text, sigs) = (&note[..=split], &note[split + 2..]);
        if text.trim().is_empty() {
            return Err(bad("empty text"));
        }
        if !sigs.ends_with('\n') {
            return Err(bad("the last signature line does not end in a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            let rest = line
                .strip_prefix(EM_DASH_SPACE)
                .ok_or_else(|| bad("a signature line does not start with `— `"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad("a signature line has no signature"))?;
            check_name(name)?;
            let raw = STANDARD.decode(b64).map_err(|_| bad("a signature is not base64"))?;
            let Some(([a, b, c, d], signature)) = raw.split_first_chunk::<4>().filter(|(_, s)| !s.is_empty()) else {
                return Err(bad("a signature is shorter than its key id"));
            };
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: u32::from_be_bytes([*a, *b, *c, *d]),
                signature: signature.to_vec(),
            });
            if signatures.len() > MAX_SIGNATURES {
                return Err(bad("too many signatures"));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }
}

/// Signs note texts with one Ed25519 key under one name.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    key_id: u32,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, NoteError> {
        let name = name.into();
        check_name(&name)?;
        let key_id = key_id(&name, &key.verifying_key());
        Ok(Self { name, key, key_id })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The note: `text`, a blank line, and this key's signature line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') || text.contains("\n\n") || text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::Malformed(
                "note text must be non-blank lines, each ending in a newline".into(),
            ));
        }
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.key.sign(text.as_bytes()).to_bytes());
        Ok(format!(
            "{text}\n{EM_DASH_SPACE}{} {}\n",
            self.name,
            STANDARD.encode(raw)
        ))
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }
}

/// Verifies notes signed by one known key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parse a verifier key `name+hex(key id)+base64(0x01 || public key)` ("Verifier keys").
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::BadVerifierKey(m.to_owned());
        // The name has no `+` and the id is 8 hex digits, but base64 may contain `+`:
        // split at most twice.
        let mut parts = vkey.trim_end_matches('\n').splitn(3, '+');
        let (Some(name), Some(id), Some(key), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+keyid+key"));
        };
        check_name(name)?;
        if id.len() != 8 {
            return Err(bad("the key id is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("the key id is not hex"))?;
        let raw = STANDARD.decode(key).map_err(|_| bad("the key is not base64"))?;
        let (&kind, public) = raw.split_first().ok_or_else(|| bad("the key is empty"))?;
        if kind != ED25519 {
            return Err(bad("not an Ed25519 key"));
        }
        let public: [u8; 32] = public.try_into().map_err(|_| bad("the Ed25519 key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| bad("not a valid Ed25519 point"))?;
        if key_id(name, &key) != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key string.
    pub fn to_vkey(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, STANDARD.encode(raw))
    }

    /// Verify `note` and return its text. Signatures by other keys are ignored; a bad
    /// signature by this key rejects the note ("Signatures").
    pub fn verify(&self, note: &str) -> Result<String, NoteError> {
        let parsed = SignedNote::parse(note)?;
        let mut verified = false;
        for sig in parsed
            .signatures
            .iter()
            .filter(|s| s.name == self.name && s.key_id == self.key_id)
        {
            let signature = Signature::from_slice(&sig.signature).map_err(|_| NoteError::BadSignature {
                name: self.name.clone(),
            })?;
            self.key
                .verify_strict(parsed.text.as_bytes(), &signature)
                .map_err(|_| NoteError::BadSignature {
                    name: self.name.clone(),
                })?;
            verified = true;
        }
        if verified {
            Ok(parsed.text)
        } else {
            Err(NoteError::NoKnownSignature {
                name: self.name.clone(),
                key_id: self.key_id,
            })
        }
    }
}
