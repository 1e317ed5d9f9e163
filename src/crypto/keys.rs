//! The service's Ed25519 key files.
//!
//! The service owns two Ed25519 keys in its state directory (mode 0600, created at first
//! start): one signs JWTs (EdDSA), one signs PoOT epoch roots. Node key pairs made by
//! `keygen` use the same file format: the 32-byte seed as standard base64 on one line.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// File names inside `DATA_DIR/keys/`.
pub const JWT_KEY_FILE: &str = "jwt_ed25519.key";
pub const PROOF_KEY_FILE: &str = "proof_ed25519.key";

/// Writes `contents` to `path` with mode 0600, atomically (temp file, fsync, rename), so a
/// crash never leaves a half-written key.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a signing key file (base64 of the 32-byte seed).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    let seed = B64
        .decode(text.trim())
        .map_err(|_| format!("key file {} is not base64", path.display()))?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| format!("key file {} does not hold a 32-byte seed", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A fresh random Ed25519 key.
pub fn generate_signing_key() -> SigningKey {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

/// Writes a key pair: `path` (seed, 0600) and `path.pub` (public key, base64).
pub fn write_key_pair(path: &Path, key: &SigningKey) -> std::io::Result<PathBuf> {
    write_secret_file(path, format!("{}\n", B64.encode(key.to_bytes())).as_bytes())?;
    let pub_path = PathBuf::from(format!("{}.pub", path.display()));
    std::fs::write(
        &pub_path,
        format!("{}\n", B64.encode(key.verifying_key().to_bytes())),
    )?;
    Ok(pub_path)
}

fn load_or_create_key(path: &Path) -> Result<SigningKey, String> {
    if path.exists() {
        let mode = std::fs::metadata(path)
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "key file is readable by others; tightening to 0600");
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        return read_signing_key(path);
    }
    let key = generate_signing_key();
    write_secret_file(path, format!("{}\n", B64.encode(key.to_bytes())).as_bytes())
        .map_err(|e| format!("cannot write key file {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "created service key");
    Ok(key)
}

/// Short identifier of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public_key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public_key.as_bytes())[..8])
}

/// The service's own keys.
pub struct ServiceKeys {
    pub jwt: SigningKey,
    pub proof: SigningKey,
}

impl ServiceKeys {
    /// Loads the keys from `data_dir/keys`, creating any that are missing.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, String> {
        let dir = data_dir.join("keys");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        Ok(Self {
            jwt: load_or_create_key(&dir.join(JWT_KEY_FILE))?,
            proof: load_or_create_key(&dir.join(PROOF_KEY_FILE))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_private_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ServiceKeys::load_or_create(dir.path()).unwrap();
        let again = ServiceKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(keys.jwt.to_bytes(), again.jwt.to_bytes());
        assert_ne!(keys.jwt.to_bytes(), keys.proof.to_bytes());
        let mode = std::fs::metadata(dir.path().join("keys").join(JWT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
