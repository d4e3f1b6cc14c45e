//! `proplet keygen` and `proplet sign`: the operator's side of binary signatures
//! (see [`crate::sandbox::admission`]). Offline, with files only.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;

use crate::runtime::Digest;
use crate::sandbox::admission;

/// Why a key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The secret key file is malformed.
    #[error("{}: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No randomness from the operating system.
    #[error("cannot get random bytes: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates a new secret key file (mode 0600, never overwriting) and returns the public key
/// in the form `PROPLET_TRUSTED_KEYS` takes.
pub fn keygen(secret: &Path) -> Result<String, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secret)
        .map_err(io(secret))?;
    writeln!(file, "{}", STANDARD.encode(seed)).map_err(io(secret))?;
    Ok(admission::encode_public_key(&key.verifying_key()))
}

/// A binary's digest and its signature by the key in `secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `sha256:<hex>`: the start's `digest` field.
    pub digest: String,
    /// Base64 ed25519 signature: the start's `signature` field.
    pub signature: String,
}

/// Signs the binary at `file` with the secret key at `secret`.
pub fn sign(secret: &Path, file: &Path) -> Result<Signed, KeyError> {
    let text = std::fs::read_to_string(secret).map_err(io(secret))?;
    let key = admission::secret_key(&text).map_err(|reason| KeyError::BadKey {
        path: secret.to_owned(),
        reason,
    })?;
    let bytes = std::fs::read(file).map_err(io(file))?;
    let digest = Digest::of(&bytes).to_string();
    let signature = admission::sign(&key, &digest);
    Ok(Signed { digest, signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_what_its_public_half_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("key");
        let public = keygen(&secret).expect("keygen");
        assert!(keygen(&secret).is_err(), "never overwrites a key");
        let mode = std::fs::metadata(&secret).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let wasm = dir.path().join("x.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").expect("write");
        let signed = sign(&secret, &wasm).expect("sign");
        let key = admission::public_key(&public).expect("public key");
        let policy = crate::sandbox::Policy::new("inline", true, vec![key]).expect("policy");
        assert!(
            policy
                .check_binary(
                    &signed.digest,
                    Some(&signed.digest),
                    Some(&signed.signature)
                )
                .is_ok()
        );
    }
}
