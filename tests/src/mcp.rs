//! A real MCP server (the official Python SDK, `tests/py/mcp_server.py`,
//! streamable HTTP over TLS) with its catalog and policies, and the SDK's
//! client (`tests/py/mcp_client.py`), for the MCP tests of every front.

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients::python_bin;
use crate::{repo_root, Setup, TestPki, Tollgate, CODER};

pub const HOST: &str = "mcp.issues.test";

/// An MCP server on the catalog's hosts: two tools, one read and one that
/// changes production; the search declares the arguments policies see.
pub const CATALOG: &str = r#"
tool: issues
endpoints:
  - hosts: [mcp.issues.test]
    mcp:
      path: /mcp
      tools:
        - name: search_issues
          risk: read
          resource: "repos/{repo}"
          arguments: { repo: string, query: string }
        - { name: merge_pull_request, risk: prod_change, resource: "repos/{repo}" }
    routes: []
"#;

/// The protocol's own messages are permitted; searching only in acme's
/// repositories; nothing else.
pub fn policies() -> Vec<(String, String)> {
    vec![(
        "mcp.cedar".into(),
        format!(
            "@id(\"mcp-protocol\")\npermit (principal == Workload::\"{CODER}\", action == Action::\"issues:mcp.protocol\", resource);\n\
             @id(\"search-acme\")\npermit (principal == Workload::\"{CODER}\", action == Action::\"issues:search_issues\", resource)\n  \
             when {{ context.arguments.repo like \"acme/*\" }};\n"
        ),
    )]
}

pub struct McpServer {
    child: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
    calls: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl McpServer {
    /// On a free loopback port. `json`: answers as JSON bodies rather than
    /// SSE streams.
    pub fn start(pki: &TestPki, json: bool) -> McpServer {
        McpServer::start_in(&[], free_port(), pki, json)
    }

    /// On a free loopback port with `env` (see [`McpServer::start_at`]).
    pub fn start_with(pki: &TestPki, env: &[(&str, &str)]) -> McpServer {
        McpServer::start_at(free_port(), pki, env)
    }

    /// Started through `launcher` (a network namespace's, say), on `addr`.
    pub fn start_in(launcher: &[String], addr: SocketAddr, pki: &TestPki, json: bool) -> McpServer {
        McpServer::launch(launcher, addr, pki, json, &[])
    }

    /// On `addr` (a port another run used: the same server started again)
    /// with `env` (`SEARCH_DESCRIPTION`, `STREAM_TOOL`: see
    /// `tests/py/mcp_server.py`), answering over SSE.
    pub fn start_at(addr: SocketAddr, pki: &TestPki, env: &[(&str, &str)]) -> McpServer {
        McpServer::launch(&[], addr, pki, false, env)
    }

    /// The file that lets `watch_build` answer once it exists.
    pub fn release_file(&self) -> std::path::PathBuf {
        self.calls.with_extension("jsonl.go")
    }

    fn launch(
        launcher: &[String],
        addr: SocketAddr,
        pki: &TestPki,
        json: bool,
        env: &[(&str, &str)],
    ) -> McpServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pki.issue_pem(&[HOST]);
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        let calls = dir.path().join("calls.jsonl");
        let mut command = match launcher.split_first() {
            Some((program, rest)) => {
                let mut c = std::process::Command::new(program);
                c.args(rest).arg(python_bin());
                c
            }
            None => std::process::Command::new(python_bin()),
        };
        let child = command
            .arg(repo_root().join("tests/py/mcp_server.py"))
            .arg(addr.to_string())
            .args([&cert_file, &key_file, &calls])
            .args(json.then_some("json"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let server = McpServer {
            child,
            addr,
            calls,
            _dir: dir,
        };
        // Up once it answers for its name: the listening socket may be in
        // another namespace, so ask the way a client would.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.listening(launcher) {
            assert!(Instant::now() < deadline, "the MCP server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn listening(&self, launcher: &[String]) -> bool {
        if launcher.is_empty() {
            return std::net::TcpStream::connect(self.addr).is_ok();
        }
        let (program, rest) = launcher.split_first().unwrap();
        std::process::Command::new(program)
            .args(rest)
            .arg(python_bin())
            .args(["-c", "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)"])
            .arg(self.addr.ip().to_string())
            .arg(self.addr.port().to_string())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The tool calls that reached the server.
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// tollgate with the MCP server's catalog and policies, reaching `server`
/// for the catalog's host and trusting its certificate.
pub fn proxying(server: &McpServer, pki: &TestPki) -> Setup {
    Setup {
        policies: Some(policies()),
        extra_catalog: vec![("issues.yaml".into(), CATALOG.into())],
        resolve: vec![(format!("{HOST}:443"), server.addr)],
        upstream_ca: Some(pki.ca_pem.clone()),
        ..Setup::default()
    }
}

/// The SDK's client making `calls` through tollgate's explicit proxy; its
/// printed answer (`{"tools": [...], "results": [...]}`).
pub async fn client(tg: &Tollgate, calls: Value) -> Value {
    client_with(tg, calls, &[]).await
}

/// [`client`] with `env` (`RELEASE_FILE`: see `tests/py/mcp_client.py`).
pub async fn client_with(tg: &Tollgate, calls: Value, env: &[(&str, &str)]) -> Value {
    let ca = tg.ca_cert().display().to_string();
    let mut command = tokio::process::Command::new(python_bin());
    command
        .env("HTTPS_PROXY", tg.proxy_url())
        .env("SSL_CERT_FILE", ca)
        .envs(env.iter().copied());
    run_client(command, calls, &tg.logs()).await
}

/// The same client inside a network namespace (`launcher`) with no proxy
/// setting, trusting `trust`, allowed by the loopback guard to reach the
/// namespaces' `network` (a CIDR) and the server's name.
pub async fn client_in(launcher: &[String], trust: &str, network: &str, calls: Value) -> Value {
    let (program, rest) = launcher.split_first().expect("a launcher");
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .arg(python_bin())
        .env("SSL_CERT_FILE", trust)
        .env("LOOPBACK_ONLY_ALSO", format!("{network} {HOST}"));
    run_client(command, calls, "").await
}

async fn run_client(mut command: tokio::process::Command, calls: Value, logs: &str) -> Value {
    let out = command
        .arg(repo_root().join("tests/py/mcp_client.py"))
        .arg(format!("https://{HOST}/mcp"))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CALLS", calls.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client: {stdout}\n{stderr}\n{logs}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}
