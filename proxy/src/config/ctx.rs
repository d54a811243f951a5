//! What every section's reader shares: the file name for errors, the
//! folder relative paths resolve against, and the readers of the values
//! many sections hold (addresses, durations, TLS files).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{raw, ConfigError, TlsFiles};

/// What the sections share: the file name for errors and the folder that
/// relative paths resolve against.
pub(super) struct Ctx<'a> {
    pub(super) file: String,
    base: &'a Path,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(path: &'a Path) -> Ctx<'a> {
        Ctx {
            file: path.display().to_string(),
            base: path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        }
    }

    pub(super) fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// A folder the file may name, or `default` beside the file.
    pub(super) fn dir(&self, given: Option<PathBuf>, default: &str) -> PathBuf {
        self.resolve_path(given.as_deref().unwrap_or(Path::new(default)))
    }

    pub(super) fn invalid(&self, field: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            field: field.to_string(),
            message,
        }
    }

    pub(super) fn socket(&self, field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        value
            .parse()
            .map_err(|_| self.invalid(field, format!("`{value}` is not an ip:port address")))
    }

    pub(super) fn duration(
        &self,
        field: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v)
                .map_err(|e| self.invalid(field, format!("`{v}` is not a duration: {e}"))),
        }
    }

    /// `need_identity`: a server, which must have its own `cert` and `key`.
    pub(super) fn tls_files(
        &self,
        field: &str,
        raw: Option<raw::RawTlsFiles>,
        need_identity: bool,
    ) -> Result<Option<TlsFiles>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        if raw.cert.is_some() != raw.key.is_some() {
            return Err(self.invalid(field, "give both `cert` and `key`, or neither".into()));
        }
        if need_identity && raw.cert.is_none() {
            return Err(self.invalid(field, "a TLS server needs `cert` and `key`".into()));
        }
        Ok(Some(TlsFiles {
            cert: raw.cert.as_deref().map(|p| self.resolve_path(p)),
            key: raw.key.as_deref().map(|p| self.resolve_path(p)),
            ca: raw.ca.as_deref().map(|p| self.resolve_path(p)),
        }))
    }
}
