//! Fuzz harnesses: one function per target under `fuzz/fuzz_targets/`,
//! each feeding bytes through the code the proxy runs on input it does not
//! control, and asserting what must hold for every input — not only that
//! nothing panics. They live in the crate so the targets stay one line and
//! the parsers they reach stay private; `tests.rs` replays the committed
//! seeds and every saved finding through them on each `cargo test`.
//! See `docs/fuzzing.md`.

mod catalog;
mod hello;
mod jwt;
mod policy;
mod target;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::catalog::Catalog;

pub use catalog::{catalog_file, classify};
pub use hello::client_hello;
pub use jwt::jwt;
pub use policy::policy;
pub use target::authority;

/// A harness: any bytes in, a panic for what must never happen.
pub type Harness = fn(&[u8]);

/// The harnesses by target name, for the replay test.
pub const TARGETS: [(&str, Harness); 7] = [
    ("classify", classify),
    ("catalog_file", catalog_file),
    ("config", config),
    ("policy", policy),
    ("authority", authority),
    ("client_hello", client_hello),
    ("jwt", jwt),
];

/// `tollgate.yaml` as `Config::load` reads it: YAML into the raw shape,
/// then validated. Nothing there reads another file, so any text is safe
/// to load.
pub fn config(data: &[u8]) {
    use crate::config::{yaml, Config, RawConfig};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz/tollgate.yaml");
    let load = || {
        yaml::parse::<RawConfig>("fuzz/tollgate.yaml", text)
            .map_err(crate::config::ConfigError::from)
            .and_then(|raw| Config::from_raw(file, raw))
    };
    match load() {
        Ok(config) => {
            // Loading is a function of the text: a reload of an unchanged
            // file must not look like a change needing a restart.
            let again = load().expect("the same text loads twice");
            assert_eq!(
                config.changed_outside_credentials(&again),
                Vec::<&str>::new()
            );
            assert!(
                !config.listeners.is_empty(),
                "a configuration serves something"
            );
        }
        Err(err) => {
            // Every refusal names the file, so an operator finds the line.
            let shown = err.to_string();
            assert!(shown.starts_with("fuzz/tollgate.yaml"), "{shown}");
        }
    }
}

/// The shipped catalog (`config/catalog/`), loaded once: classification
/// runs against what users actually deploy.
fn shipped_catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        Catalog::load_dir(&repo_path("config/catalog")).expect("the shipped catalog loads")
    })
}

/// A path in this repository, wherever the harness runs from.
fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the repository")
        .join(relative)
}

/// Input text split at its first `\n`: a first line and the rest.
fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}
