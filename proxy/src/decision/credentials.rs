//! Named credentials the decision plane injects into allowed requests. The
//! agent never holds them; a policy names one with `@credential("…")`.
//!
//! Values live in [`Secret`]: never printed (Debug and Display show
//! `[redacted]`), zeroized when dropped. They are read from their source on
//! every use, so rotating a mounted Kubernetes Secret needs no restart.

use std::collections::HashMap;
use std::fmt;

use zeroize::Zeroizing;

use crate::config::{
    CredentialConfig as Credential, CredentialInjection as Injection, CredentialSource as Source,
};

/// A secret value. Deliberately not `Clone`-able into a plain `String`.
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// The value, for building the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("no credential named `{0}` is configured")]
    Unknown(String),
    /// Names the source, never the value.
    #[error("credential `{name}` cannot be read from {source_name}")]
    Unreadable { name: String, source_name: String },
}

#[derive(Debug, Clone, Default)]
pub struct CredentialStore {
    credentials: HashMap<String, Credential>,
}

impl CredentialStore {
    pub fn new(credentials: impl IntoIterator<Item = (String, Credential)>) -> CredentialStore {
        CredentialStore {
            credentials: credentials.into_iter().collect(),
        }
    }

    /// The header name and secret value to inject for `name`.
    pub fn header_for(&self, name: &str) -> Result<(String, Secret), CredentialError> {
        let credential = self
            .credentials
            .get(name)
            .ok_or_else(|| CredentialError::Unknown(name.to_string()))?;
        let unreadable = |source_name: String| CredentialError::Unreadable {
            name: name.to_string(),
            source_name,
        };
        let raw = match &credential.source {
            Source::Env(var) => Zeroizing::new(
                std::env::var(var)
                    .map_err(|_| unreadable(format!("environment variable {var}")))?,
            ),
            Source::File(path) => Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|_| unreadable(format!("file {}", path.display())))?,
            ),
        };
        let value = raw.trim();
        if value.is_empty() {
            return Err(unreadable("an empty source".into()));
        }
        Ok(match &credential.injection {
            Injection::Bearer => (
                "authorization".into(),
                Secret::new(format!("Bearer {value}")),
            ),
            Injection::Header(header) => (header.to_ascii_lowercase(), Secret::new(value.into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_credentials_are_read_on_each_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let store = CredentialStore::new(HashMap::from([(
            "gh".to_string(),
            Credential {
                source: Source::File(path.clone()),
                injection: Injection::Bearer,
            },
        )]));
        assert_eq!(store.header_for("gh").unwrap().1.expose(), "Bearer first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(store.header_for("gh").unwrap().1.expose(), "Bearer second");
        let err = store.header_for("nope").unwrap_err();
        assert_eq!(err, CredentialError::Unknown("nope".into()));
        std::fs::remove_file(&path).unwrap();
        let err = store.header_for("gh").unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
    }
}
