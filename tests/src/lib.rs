//! Test harness for end-to-end tests: the built `tollgate` binary as a real
//! process, real upstream servers (HTTP and HTTPS with a CA minted per
//! test), and real clients (curl, Python `requests`). Everything listens on
//! 127.0.0.1 with ephemeral ports, except in tests that need a real network:
//! those build it from network namespaces ([`netns`]). Decision replicas
//! that share state get a real Redis of their own ([`redis`]).

pub mod approvals;
pub mod clients;
pub mod console;
pub mod dns;
pub mod envoy;
pub mod grpc;
pub mod hygiene;
pub mod identity;
pub mod mcp;
pub mod netns;
pub mod pki;
pub mod process;
pub mod redis;
pub mod tasks;
pub mod upstream;

use std::path::PathBuf;

pub use clients::{
    ask_to_switch, curl, curl_answer, curl_in, python, python_in, read_head, send_head, Answer,
    CurlOutput,
};
pub use dns::Rebinder;
pub use identity::{JwksServer, JwtIssuer};
pub use netns::{require_namespaces, Netns};
pub use pki::{ClientSvid, MtlsFiles, SvidOptions, TestPki};
pub use process::{
    github_tls, shipped_policies, DecisionService, Setup, Tollgate, CODER, HARNESS_CREDENTIALS,
};
pub use redis::{RedisOptions, RedisServer, Relay};

pub use upstream::{resetting, tcp_echo, Cut, Seen, Upstream};

/// The sidecar shape, as the transparent-interception tests run it and as
/// the Helm chart deploys it: `tollgate` with these arguments, once, in the
/// pod's network namespace (the chart's init container); tollgate itself as
/// [`SIDECAR_UID`], which the rules exempt, with transparent listeners on
/// [`SIDECAR_PORT`], where the rules send TCP 80/443. tests/tests/deploy.rs
/// holds the chart to these, tests/tests/transparent.rs runs them.
pub const SIDECAR_RULES: [&str; 2] = ["iptables", "--apply"];
pub const SIDECAR_UID: u32 = 1337;
pub const SIDECAR_PORT: u16 = 15001;

/// A value no test could have written down in advance: `<prefix>-` and 128
/// random bits in hex. Secret-hygiene searches for it then mean something.
pub fn random_secret(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let part = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    format!("{prefix}-{:016x}{:016x}", part(), part())
}

/// The repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The `tollgate` binary built in the same profile as this test.
pub fn tollgate_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TOLLGATE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/tollgate
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("tollgate"))
        .expect("target layout");
    assert!(
        bin.exists(),
        "{} is missing: build it first (scripts/test does `cargo build --release --bins`)",
        bin.display()
    );
    bin
}
