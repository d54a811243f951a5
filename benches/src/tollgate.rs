//! tollgate participants: `run` (embedded or remote decisions) and
//! `decision`, each with one worker thread.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::process::{command, Participant};
use crate::{repo_root, WORKLOAD};

/// The catalog every benchmark request is classified with.
pub const CATALOG: &str = r#"
tool: bench
description: benchmark upstream
endpoints:
  - hosts: [bench.test]
    routes:
      - { method: GET, path: "/v1/items/{id}", action: items.get, risk: read, resource: "items/{id}" }
"#;

fn binary() -> anyhow::Result<PathBuf> {
    let bin = repo_root().join("target/release/tollgate");
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run `cargo build --release --bins`",
        bin.display()
    );
    Ok(bin)
}

/// A folder with the bench catalog, the shipped guardrails plus one permit
/// (a realistic policy set, not a single rule), and `tollgate.yaml`.
fn prepare(config_body: &str) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let catalog = dir.path().join("catalog");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&catalog)?;
    std::fs::create_dir_all(&policies)?;
    std::fs::write(catalog.join("bench.yaml"), CATALOG)?;
    std::fs::copy(
        repo_root().join("config/policies/guardrails.cedar"),
        policies.join("guardrails.cedar"),
    )?;
    std::fs::write(
        policies.join("bench.cedar"),
        format!(
            "@id(\"bench-read\")\npermit (principal == Workload::\"{WORKLOAD}\", action in Action::\"read\", resource in Target::\"bench\");\n"
        ),
    )?;
    let config = format!(
        "{config_body}\naudit: {{ output: {} }}\n",
        dir.path().join("audit.log").display()
    );
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, config)?;
    Ok((dir, path))
}

/// `tollgate run`: explicit proxy to `upstream` for `bench.test`.
pub fn run(
    upstream: SocketAddr,
    cpu: Option<&str>,
    cache_size: usize,
    decision_endpoint: Option<SocketAddr>,
) -> anyhow::Result<Participant> {
    let remote = decision_endpoint
        .map(|a| format!(", endpoint: \"http://{a}\""))
        .unwrap_or_default();
    let (dir, path) = prepare(&format!(
        "listeners:\n  - name: bench\n    address: 127.0.0.1:0\n    identity: {{ static: \"{WORKLOAD}\" }}\n\
         admin: {{ address: 127.0.0.1:0 }}\n\
         tls: {{ ca_dir: no-ca, system_roots: false }}\n\
         forward:\n  allow_networks: [127.0.0.0/8]\n  resolve: {{ \"bench.test:80\": \"{upstream}\" }}\n\
         decision: {{ cache_size: {cache_size}{remote} }}"
    ))?;
    let mut cmd = command(&binary()?, cpu);
    cmd.args(["run", "--workers", "1", "--config"])
        .arg(path)
        .env("TOLLGATE_LOG", "warn,tollgate::cli=info");
    Participant::from_log(cmd, "listener=bench", Some(dir))
}

/// `tollgate decision` on an ephemeral port.
pub fn decision(cpu: Option<&str>) -> anyhow::Result<Participant> {
    let (dir, path) = prepare("decision_service: { address: 127.0.0.1:0, admin: 127.0.0.1:0 }")?;
    let mut cmd = command(&binary()?, cpu);
    cmd.args(["decision", "--workers", "1", "--config"])
        .arg(path)
        .env("TOLLGATE_LOG", "warn,tollgate::cli=info");
    Participant::from_log(cmd, "listener=\"decision\"", Some(dir))
}
