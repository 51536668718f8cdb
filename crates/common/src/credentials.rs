//! Root credentials: taken from configuration, or generated once and kept in the data dir.
//!
//! The file `root-credentials` (mode 0600) holds `access_key\nsecret_key\n`. It is written
//! atomically (temp file, fsync, rename) so a crash on first start never leaves half a key.

use std::path::Path;

use rand::Rng;

pub const CREDENTIALS_FILE: &str = "root-credentials";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("credential file {path} is malformed")]
    Malformed { path: String },
}

#[derive(Clone, PartialEq, Eq)]
pub struct RootCredentials {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for RootCredentials {
    // The secret must never reach a log line, even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCredentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// How the credentials were obtained, so the caller knows whether to print them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Configured,
    Stored,
    Generated,
}

impl RootCredentials {
    /// Configured credentials win; otherwise the stored file; otherwise new ones are generated
    /// and persisted before they are returned.
    pub fn load_or_create(
        data_dir: &Path,
        configured: Option<(String, String)>,
    ) -> Result<(Self, CredentialSource), CredentialError> {
        if let Some((access_key, secret_key)) = configured {
            return Ok((
                Self {
                    access_key,
                    secret_key,
                },
                CredentialSource::Configured,
            ));
        }
        let path = data_dir.join(CREDENTIALS_FILE);
        let io = |source| CredentialError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut lines = text.lines();
                match (lines.next(), lines.next()) {
                    (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => Ok((
                        Self {
                            access_key: a.to_owned(),
                            secret_key: s.to_owned(),
                        },
                        CredentialSource::Stored,
                    )),
                    _ => Err(CredentialError::Malformed {
                        path: path.display().to_string(),
                    }),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let creds = Self::generate();
                let text = format!("{}\n{}\n", creds.access_key, creds.secret_key);
                crate::durable::write_file(&path, text.as_bytes(), true).map_err(io)?;
                Ok((creds, CredentialSource::Generated))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn generate() -> Self {
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut rng = rand::rng();
        let mut pick = |set: &[u8], n| -> String {
            (0..n)
                .map(|_| set[rng.random_range(0..set.len())] as char)
                .collect()
        };
        Self {
            access_key: format!("FY{}", pick(ALNUM, 18)),
            secret_key: pick(SECRET, 40),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("fy-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, src_a) = RootCredentials::load_or_create(&dir, None).unwrap();
        assert_eq!(src_a, CredentialSource::Generated);
        assert_eq!(a.access_key.len(), 20);
        assert_eq!(a.secret_key.len(), 40);
        let (b, src_b) = RootCredentials::load_or_create(&dir, None).unwrap();
        assert_eq!(src_b, CredentialSource::Stored);
        assert_eq!(a, b);
        assert!(!format!("{a:?}").contains(&a.secret_key));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
