//! The control plane's clearance signing key.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clearance_model::ClearanceClaims;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::jwk::{Jwk, thumbprint};
use crate::token::{CLEARANCE_TYPE, JWS_ALGORITHM, TokenError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read signing key `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write signing key `{path}`: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("signing key `{path}` has mode {mode:o}, readable by others: refusing to use it (run `chmod 600` on it)")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("signing key `{path}` is not an Ed25519 PKCS#8 PEM key")]
    Format { path: PathBuf },
    #[error("cannot generate a key: {0}")]
    Random(String),
    #[error("cannot encode the key as PKCS#8")]
    Encode,
}

/// An Ed25519 signing key with its RFC 7638 key id. `Debug` never shows the key.
pub struct ClearanceSigner {
    key: SigningKey,
    kid: String,
}

impl fmt::Debug for ClearanceSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClearanceSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ClearanceSigner {
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_signing_key(SigningKey::from_bytes(&seed)))
    }

    pub fn from_signing_key(key: SigningKey) -> Self {
        let kid = thumbprint(&key.verifying_key());
        Self { key, kid }
    }

    /// Load the key at `path`, or create it (mode 0600) when the file does not exist.
    /// Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        let (key, created) = load_or_create_key(path)?;
        Ok((Self::from_signing_key(key), created))
    }

    /// Load a PKCS#8 PEM key, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        load_key(path).map(Self::from_signing_key)
    }

    /// Write the key to a new file with mode 0600. Never overwrites.
    pub fn save_new(&self, path: &Path) -> Result<(), KeyError> {
        save_new_key(&self.key, path)
    }

    /// Put this key in place of the file at `path`, atomically: written (mode 0600) and
    /// synced beside it, renamed over it, and the directory synced. A crash leaves the old
    /// key or the new one, never a torn file.
    pub fn replace(&self, path: &Path) -> Result<(), KeyError> {
        let pem = self.key.to_pkcs8_pem(LineEnding::LF).map_err(|_| KeyError::Encode)?;
        replace_private_file(path, pem.as_bytes()).map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as a JWK, for `/.well-known/jwks.json`.
    pub fn jwk(&self) -> Jwk {
        Jwk::from_verifying_key(&self.key.verifying_key())
    }

    /// Sign claims as a JWS compact clearance.
    pub fn sign(&self, claims: &ClearanceClaims) -> Result<String, TokenError> {
        // Fixed member order; JSON escaping of `kid` is a no-op (base64url alphabet).
        let header = format!(
            r#"{{"alg":"{JWS_ALGORITHM}","typ":"{CLEARANCE_TYPE}","kid":"{}"}}"#,
            self.kid
        );
        let payload = serde_json::to_vec(claims).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let mut token = String::with_capacity(512);
        URL_SAFE_NO_PAD.encode_string(header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }
}

/// Load the Ed25519 key at `path` (PKCS#8 PEM), or create it with mode 0600 when the
/// file does not exist. Returns whether it was created. Used for every key Clearance keeps.
pub fn load_or_create_key(path: &Path) -> Result<(SigningKey, bool), KeyError> {
    match fs::metadata(path) {
        Ok(_) => Ok((load_key(path)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
            let key = SigningKey::from_bytes(&seed);
            save_new_key(&key, path)?;
            Ok((key, true))
        }
        Err(source) => Err(KeyError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Load a PKCS#8 PEM key, refusing one that group or others can read.
pub fn load_key(path: &Path) -> Result<SigningKey, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = fs::metadata(path).map_err(read_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let pem = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(read_err)?);
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Format { path: path.to_owned() })
}

/// Put `bytes` in place of the file at `path`, atomically: written to a new file beside
/// it (mode 0600) and synced, renamed over it, and the directory synced. A crash leaves
/// the old contents or the new, never a torn file.
pub fn replace_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut next = path.as_os_str().to_owned();
    next.push(".next");
    let next = PathBuf::from(next);
    match fs::remove_file(&next) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&next)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&next, path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(dir)?.sync_all()
}

fn save_new_key(key: &SigningKey, path: &Path) -> Result<(), KeyError> {
    let write_err = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|_| KeyError::Encode)?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    file.write_all(pem.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_and_round_trips() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("signing.pem");
        let (a, created) = ClearanceSigner::load_or_create(&path)?;
        assert!(created);
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        let (b, created) = ClearanceSigner::load_or_create(&path)?;
        assert!(!created);
        assert_eq!(a.kid(), b.kid());
        // Replaced in place: the new key, still private, and no temporary file left.
        let c = ClearanceSigner::generate()?;
        c.replace(&path)?;
        assert_eq!(ClearanceSigner::load(&path)?.kid(), c.kid());
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path())?.count(), 1);
        assert!(!format!("{a:?}").contains("key:"));
        Ok(())
    }

    #[test]
    fn refuses_key_readable_by_others() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("signing.pem");
        ClearanceSigner::generate()?.save_new(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        match ClearanceSigner::load(&path) {
            Err(KeyError::Permissions { mode, .. }) => assert_eq!(mode, 0o644),
            other => panic!("expected a permissions error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn refuses_garbage_key() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("signing.pem");
        fs::write(&path, "not a key")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        assert!(matches!(ClearanceSigner::load(&path), Err(KeyError::Format { .. })));
        Ok(())
    }
}
