//! The per-installation secret: the key of every hash the sensor stores (session ids, hashed
//! values, exchange ids).

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading the installation secret {path}")]
    ReadSecret {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the installation secret {0} is not 32 bytes; remove it to make a new one (ids change)"
    )]
    BadSecret(String),
    #[error("creating the installation secret {path}")]
    WriteSecret {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("no random source for the installation secret: {0}")]
    Random(String),
}

/// The per-installation key of every hash the sensor stores. Share it across a fleet to get the
/// same session ids for the same users everywhere.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    pub const FILE: &str = "secret";

    /// Reads `data_dir/secret`, or creates it (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, SecretError> {
        let path = data_dir.join(Self::FILE);
        let name = path.display().to_string();
        match fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadSecret(name))?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| SecretError::Random(e.to_string()))?;
                let write = || -> io::Result<()> {
                    // create_new: two processes starting at once must not overwrite each other.
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)?;
                    file.write_all(&key)?;
                    file.sync_all()
                };
                match write() {
                    Ok(()) => Ok(Self(key)),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(data_dir)
                    }
                    Err(source) => Err(SecretError::WriteSecret { path: name, source }),
                }
            }
            Err(source) => Err(SecretError::ReadSecret { path: name, source }),
        }
    }

    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// Keyed hash of length-prefixed parts (so ("ab","c") and ("a","bc") differ).
    pub fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }

    /// A value that must not be stored raw: `h:` and 32 hex digits of its keyed hash.
    pub fn hashed_value(&self, value: &str) -> String {
        let hash = self.hash(&[b"value", value.as_bytes()]);
        format!("h:{}", hex(&hash[..16]))
    }
}

/// Lower-case hex digits of `bytes` (session ids, hashed values, cut index keys).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_secret_is_created_once_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("apis-secret-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let first = Secret::load_or_create(&dir).unwrap();
        let mode = fs::metadata(dir.join(Secret::FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Secret::load_or_create(&dir).unwrap();
        assert_eq!(first.0, again.0);
        fs::write(dir.join(Secret::FILE), b"short").unwrap();
        assert!(matches!(
            Secret::load_or_create(&dir),
            Err(SecretError::BadSecret(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
