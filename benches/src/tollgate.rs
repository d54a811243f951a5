//! tollgate participants: `run` (embedded or remote decisions; a listener
//! that knows its caller statically, by a JWT or by an mTLS client
//! certificate; beside it, a transparent listener; merges held for
//! approval; an API served both as REST and as MCP) and `decision` (also serving tasks and approvals), each with
//! one worker thread.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::approvals::{self, Gate};
use crate::mcp;
use crate::pki::SvidFiles;
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

/// The host the tunnel row reaches: not in the catalog, so a `CONNECT` to
/// it is decided as the built-in `connect` action and tunnelled blind.
pub const BULK_AUTHORITY: &str = "bulk.test:443";

/// The tollgate binary built with this harness: next to it in the same
/// target folder (so `CARGO_TARGET_DIR` and copies of both binaries work),
/// else in the repository's `target/release`.
pub fn binary() -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe()?.with_file_name("tollgate");
    if beside.exists() {
        return Ok(beside);
    }
    let bin = repo_root().join("target/release/tollgate");
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run `cargo build --release --bins`",
        bin.display()
    );
    Ok(bin)
}

/// A folder with the bench catalog, the shipped guardrails plus the
/// permits the rows need (a realistic policy set, not a single rule), and
/// `tollgate.yaml` (its folder: `catalog/`, `policies/`, `audit.log`).
pub fn prepare(config_body: &str) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    prepare_with(config_body, "")
}

/// [`prepare`], with more Cedar policies after the permits.
pub fn prepare_with(
    config_body: &str,
    extra_policies: &str,
) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
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
            "@id(\"bench-read\")\npermit (principal == Workload::\"{WORKLOAD}\", action in Action::\"read\", resource in Target::\"bench\");\n\
             @id(\"bench-bulk-tunnel\")\npermit (principal == Workload::\"{WORKLOAD}\", action == Action::\"connect\", resource == Target::\"{BULK_AUTHORITY}\");\n\
             {extra_policies}"
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

/// The `iss` of the bench's workload tokens (`identity.issuers`, kind
/// `svid`: the token's `sub` is the workload's SPIFFE ID).
pub const JWT_ISSUER: &str = "https://issuer.bench.test";

/// The audience tollgate takes workload tokens for.
pub const JWT_AUDIENCE: &str = "tollgate";

/// How the listener of a `tollgate run` participant knows its callers.
/// Whichever it is, they are [`WORKLOAD`], so the same policies apply.
#[derive(Clone, Copy)]
pub enum Identify<'a> {
    /// `identity: { static: WORKLOAD }`: everyone on the listener.
    Static,
    /// Only a JWT in `Proxy-Authorization` from [`JWT_ISSUER`], ES256,
    /// verified against the JWKS in this file.
    Jwt { jwks: &'a Path },
    /// An HTTPS proxy listener with these files taking only X.509-SVID
    /// client certificates signed by their CA.
    Mtls(&'a SvidFiles),
}

impl Identify<'_> {
    /// The listener's lines (`tls`, `identity`) and the top-level
    /// `identity:` section, if one is needed.
    fn yaml(&self) -> (String, String) {
        match self {
            Identify::Static => (
                format!("    identity: {{ static: \"{WORKLOAD}\" }}\n"),
                String::new(),
            ),
            Identify::Jwt { jwks } => (
                "    identity: { jwt: [bench] }\n".to_string(),
                format!(
                    "identity:\n  issuers:\n\
                     \x20   - {{ name: bench, issuer: \"{JWT_ISSUER}\", audiences: [{JWT_AUDIENCE}], kind: svid,\n\
                     \x20        algorithms: [ES256], jwks: {{ file: \"{}\" }} }}\n",
                    jwks.display()
                ),
            ),
            Identify::Mtls(files) => (
                format!(
                    "    tls: {{ cert: \"{}\", key: \"{}\" }}\n    identity: {{ mtls: {{ trust_bundle: \"{}\" }} }}\n",
                    files.server_cert.display(),
                    files.server_key.display(),
                    files.ca.display()
                ),
                String::new(),
            ),
        }
    }
}

/// The name of the transparent listener of a [`RunOptions::transparent`]
/// participant, as its audit lines carry it.
pub const TRANSPARENT_LISTENER: &str = "redirected";

/// A `kind: transparent` listener beside the explicit one, in the same
/// process: rows through one and through the other then differ only in
/// how connections reach tollgate. It knows its callers statically as
/// [`WORKLOAD`], like the explicit listener.
#[derive(Clone, Copy)]
pub struct Transparent<'a> {
    /// Where it listens: the port the namespace's rules redirect to.
    pub address: SocketAddr,
    /// The uid (and gid) tollgate runs as: the one the rules exempt, so
    /// tollgate's own upstream connections are not sent back to it.
    pub uid: u32,
    /// Where the upstreams live, for `forward.allow_networks`.
    pub network: &'a str,
}

/// Where a `tollgate run` deciding in-process keeps its tasks. Either way
/// it serves the decision API (tasks administered with
/// [`crate::tasks::ADMIN_TOKEN`]) on a listener of its own, named
/// `decision` among [`Participant::listener`]s.
#[derive(Clone, Copy)]
pub enum Tasks {
    InMemory,
    /// `state: redis` with the server at this address.
    InRedis(SocketAddr),
}

/// What one `tollgate run` participant talks to.
pub struct RunOptions<'a> {
    /// Plain HTTP upstream for `http://bench.test`.
    pub upstream: SocketAddr,
    /// HTTPS upstream for `https://bench.test` (intercepted), with the CA
    /// folder tollgate intercepts with and that signed the upstream.
    pub tls: Option<(SocketAddr, &'a Path)>,
    /// Bulk sender behind [`BULK_AUTHORITY`].
    pub bulk: Option<SocketAddr>,
    pub cache_size: usize,
    pub decision_endpoint: Option<SocketAddr>,
    pub identify: Identify<'a>,
    pub transparent: Option<Transparent<'a>>,
    pub tasks: Option<Tasks>,
    /// Merges on [`approvals::HOST`] held for an approval.
    pub gate: Option<Gate>,
    /// The REST and MCP API on [`mcp::HOST`], served by this upstream.
    pub mcp: Option<SocketAddr>,
    /// Appended at the top level of the configuration (a `limits:`
    /// section, say).
    pub extra_yaml: &'a str,
}

impl RunOptions<'_> {
    pub fn plain(upstream: SocketAddr) -> RunOptions<'static> {
        RunOptions {
            upstream,
            tls: None,
            bulk: None,
            cache_size: 10_000,
            decision_endpoint: None,
            identify: Identify::Static,
            transparent: None,
            tasks: None,
            gate: None,
            mcp: None,
            extra_yaml: "",
        }
    }
}

/// `tollgate run`: explicit proxy to the upstreams named in `o`.
pub fn run(o: &RunOptions<'_>, cpu: Option<&str>) -> anyhow::Result<Participant> {
    let remote = o
        .decision_endpoint
        .map(|a| format!(", endpoint: \"http://{a}\""))
        .unwrap_or_default();
    let mut resolve = format!("\"bench.test:80\": \"{}\"", o.upstream);
    let tls = match o.tls {
        Some((addr, ca_dir)) => {
            resolve.push_str(&format!(", \"bench.test:443\": \"{addr}\""));
            format!(
                "{{ ca_dir: \"{}\", upstream_ca_files: [\"{}\"], system_roots: false }}",
                ca_dir.display(),
                ca_dir.join("ca.crt").display()
            )
        }
        None => "{ ca_dir: no-ca, system_roots: false }".to_string(),
    };
    if let Some(bulk) = o.bulk {
        resolve.push_str(&format!(", \"{BULK_AUTHORITY}\": \"{bulk}\""));
    }
    let (listener, identity) = o.identify.yaml();
    let (mut transparent, mut networks, mut policies) =
        (String::new(), "127.0.0.0/8".to_string(), String::new());
    if let Some(t) = o.transparent {
        transparent = format!(
            "  - name: {TRANSPARENT_LISTENER}\n    kind: transparent\n    address: {}\n    identity: {{ static: \"{WORKLOAD}\" }}\n",
            t.address
        );
        networks.push_str(&format!(", {}", t.network));
        // The bulk sender speaks first, so a redirected connection to it
        // never names a host: it is decided as `connect` on its address.
        if let Some(bulk) = o.bulk {
            policies = format!(
                "@id(\"bench-bulk-redirected\")\npermit (principal == Workload::\"{WORKLOAD}\", action == Action::\"connect\", resource == Target::\"{bulk}\");\n"
            );
        }
    }
    let mut gate = String::new();
    if let Some(g) = o.gate {
        resolve.push_str(&format!(", \"{}:80\": \"{}\"", approvals::HOST, g.upstream));
        policies.push_str(&approvals::policies());
        gate = approvals::yaml(g.hold);
    }
    if let Some(upstream) = o.mcp {
        resolve.push_str(&format!(", \"{}:80\": \"{upstream}\"", mcp::HOST));
        policies.push_str(&mcp::policies());
    }
    let tasks = match o.tasks {
        None => String::new(),
        Some(store) => {
            let state = match store {
                Tasks::InMemory => String::new(),
                Tasks::InRedis(server) => crate::redis::state_yaml(server),
            };
            format!(
                "decision_service: {{ address: 127.0.0.1:0 }}\n{}{state}",
                crate::tasks::TASKS_YAML
            )
        }
    };
    // The explicit listener last: the harness waits for its "listening"
    // line, and by then every listener (the decision API's too) is bound.
    let (dir, path) = prepare_with(
        &format!(
            "listeners:\n{transparent}  - name: bench\n    address: 127.0.0.1:0\n{listener}\
             {identity}{tasks}{gate}\
             admin: {{ address: 127.0.0.1:0 }}\n\
             tls: {tls}\n\
             forward:\n  allow_networks: [{networks}]\n  resolve: {{ {resolve} }}\n\
             decision: {{ cache_size: {}{remote} }}\n{}",
            o.cache_size, o.extra_yaml
        ),
        &policies,
    )?;
    if o.gate.is_some() {
        std::fs::write(
            dir.path().join("catalog").join(approvals::CATALOG_FILE),
            approvals::CATALOG,
        )?;
    }
    if o.mcp.is_some() {
        std::fs::write(
            dir.path().join("catalog").join(mcp::CATALOG_FILE),
            mcp::CATALOG,
        )?;
    }
    let mut cmd = match o.transparent {
        None => command(&binary()?, cpu),
        Some(t) => as_uid(t.uid, dir.path(), o.tls.map(|(_, ca)| ca), cpu)?,
    };
    cmd.args(["run", "--workers", "1", "--config"])
        .arg(path)
        .env("TOLLGATE_ADMIN_TOKEN", crate::tasks::ADMIN_TOKEN)
        .env(approvals::APPROVER_ENV, approvals::APPROVER_TOKEN)
        .env("TOLLGATE_LOG", "warn,tollgate::cli=info");
    Participant::from_log(cmd, "listener=bench", Some(dir))
}

/// tollgate to be started as `uid` (gid the same, no supplementary groups)
/// through `setpriv`, under `taskset` when pinned; each execs the next, so
/// the child's pid is tollgate's. What it reads and writes, `dir` and the
/// CA folder, becomes the uid's. When the uid cannot reach the binary
/// where it was built (a target folder under root's home), a copy in `dir`
/// is run instead.
fn as_uid(
    uid: u32,
    dir: &Path,
    ca_dir: Option<&Path>,
    cpu: Option<&str>,
) -> anyhow::Result<Command> {
    let setpriv = |program: &Path| {
        let mut cmd = command(Path::new("setpriv"), cpu);
        cmd.args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
        ])
        .arg(program);
        cmd
    };
    let mut bin = binary()?;
    let reachable = setpriv(Path::new("test"))
        .arg("-x")
        .arg(&bin)
        .status()
        .context("running setpriv (util-linux)")?
        .success();
    if !reachable {
        let copy = dir.join("tollgate");
        std::fs::copy(&bin, &copy)?;
        bin = copy;
    }
    chown_all(dir, uid)?;
    if let Some(ca_dir) = ca_dir {
        chown_all(ca_dir, uid)?;
    }
    Ok(setpriv(&bin))
}

/// `chown -R uid:uid path`.
fn chown_all(path: &Path, uid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_all(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

/// `tollgate decision` on an ephemeral port.
pub fn decision(cpu: Option<&str>) -> anyhow::Result<Participant> {
    decision_at("127.0.0.1:0".parse()?, cpu)
}

/// `tollgate decision` listening on `address` (to start it again where a
/// proxy already looks for it).
pub fn decision_at(address: SocketAddr, cpu: Option<&str>) -> anyhow::Result<Participant> {
    let (dir, path) = prepare(&format!(
        "decision_service: {{ address: \"{address}\", admin: 127.0.0.1:0 }}"
    ))?;
    let mut cmd = command(&binary()?, cpu);
    cmd.args(["decision", "--workers", "1", "--config"])
        .arg(path)
        .env("TOLLGATE_LOG", "warn,tollgate::cli=info");
    Participant::from_log(cmd, "listener=\"decision\"", Some(dir))
}

/// `tollgate decision` serving tasks (kept as `tasks` says) and approvals
/// of merges held up to `hold` by the proxies asking it.
pub fn gated_decision(
    tasks: Tasks,
    hold: std::time::Duration,
    cpu: Option<&str>,
) -> anyhow::Result<Participant> {
    let state = match tasks {
        Tasks::InMemory => String::new(),
        Tasks::InRedis(server) => crate::redis::state_yaml(server),
    };
    let (dir, path) = prepare_with(
        &format!(
            "decision_service: {{ address: 127.0.0.1:0, admin: 127.0.0.1:0 }}\n{}{state}{}",
            crate::tasks::TASKS_YAML,
            approvals::yaml(hold)
        ),
        &approvals::policies(),
    )?;
    std::fs::write(
        dir.path().join("catalog").join(approvals::CATALOG_FILE),
        approvals::CATALOG,
    )?;
    let mut cmd = command(&binary()?, cpu);
    cmd.args(["decision", "--workers", "1", "--config"])
        .arg(path)
        .env("TOLLGATE_ADMIN_TOKEN", crate::tasks::ADMIN_TOKEN)
        .env(approvals::APPROVER_ENV, approvals::APPROVER_TOKEN)
        .env("TOLLGATE_LOG", "warn,tollgate::cli=info");
    Participant::from_log(cmd, "listener=\"decision\"", Some(dir))
}
