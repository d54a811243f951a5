//! A real Envoy (`.venv/bin/envoy`, installed by scripts/setup-test-env) as a
//! child process: the shipped `deploy/envoy/envoy.yaml` with only its
//! addresses rewritten to loopback ones, its access log in a file the test
//! reads.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::repo_root;

/// The Envoy binary: `$ENVOY_BIN`, or the project's virtualenv.
pub fn envoy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let venv = repo_root().join(".venv/bin/envoy");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/setup-test-env",
        venv.display()
    );
    venv
}

/// The shipped egress gateway configuration.
pub fn shipped_gateway_config() -> PathBuf {
    repo_root().join("deploy/envoy/envoy.yaml")
}

/// `envoy --mode validate -c <path>`.
pub fn validate(path: &std::path::Path) -> Output {
    Command::new(envoy_bin())
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run envoy")
}

pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    /// The HTTP listener agents send to.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replace the one occurrence of `from`; a shipped file that no longer has
/// it exactly once fails the test instead of silently testing something else.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(
        n, 1,
        "deploy/envoy/envoy.yaml has {n} × {from:?}, expected 1"
    );
    text.replacen(from, to, 1)
}

/// Drop the line equal to `line` and the more indented lines under it.
fn remove_block(text: &str, line: &str) -> String {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut skipping: Option<usize> = None;
    let mut found = 0;
    for l in text.lines() {
        if let Some(level) = skipping {
            if l.trim().is_empty() || indent(l) > level {
                continue;
            }
            skipping = None;
        }
        if l == line {
            found += 1;
            skipping = Some(indent(l));
            continue;
        }
        out.push(l);
    }
    assert_eq!(
        found, 1,
        "deploy/envoy/envoy.yaml: {line:?} found {found} times"
    );
    out.join("\n") + "\n"
}

fn socket(addr: SocketAddr) -> String {
    format!(
        "socket_address: {{ address: {}, port_value: {} }}",
        addr.ip(),
        addr.port()
    )
}

impl Envoy {
    /// The shipped gateway: ext_authz asks `decision`; `api.github.com` is
    /// `github`, over plain HTTP. Everything else is the file as shipped.
    pub fn gateway(decision: SocketAddr, github: SocketAddr) -> Envoy {
        Envoy::gateway_edited(decision, github, |text| text)
    }

    /// The same, with `edit` applied to the file after the addresses.
    pub fn gateway_edited(
        decision: SocketAddr,
        github: SocketAddr,
        edit: impl FnOnce(String) -> String,
    ) -> Envoy {
        Envoy::gateway_from(&shipped_gateway_config(), decision, github, edit)
    }

    /// Another shipped gateway file (`deploy/envoy/…`), with the same
    /// addresses rewritten and then `edit` applied.
    pub fn gateway_from(
        shipped: &std::path::Path,
        decision: SocketAddr,
        github: SocketAddr,
        edit: impl FnOnce(String) -> String,
    ) -> Envoy {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let shipped = std::fs::read_to_string(shipped).unwrap();
        let mut text = replace_once(
            &shipped,
            "socket_address: { address: 0.0.0.0, port_value: 10000 }",
            "socket_address: { address: 127.0.0.1, port_value: 0 }",
        );
        text = replace_once(
            &text,
            "socket_address: { address: 127.0.0.1, port_value: 9902 }",
            "socket_address: { address: 127.0.0.1, port_value: 0 }",
        );
        text = replace_once(
            &text,
            "socket_address: { address: 127.0.0.1, port_value: 9191 }",
            &socket(decision),
        );
        text = replace_once(
            &text,
            "socket_address: { address: api.github.com, port_value: 443 }",
            &socket(github),
        );
        text = replace_once(
            &text,
            "path: /dev/stdout",
            &format!("path: {}", log.display()),
        );
        text = remove_block(&text, "    transport_socket:");
        Envoy::start(dir, &edit(text))
    }

    /// Run Envoy on `config` (listener and admin on port 0) with one worker
    /// and a base id of its own; wait until the listener accepts.
    pub fn start(dir: tempfile::TempDir, config: &str) -> Envoy {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let base_id = (std::process::id() % 100_000) * 100 + STARTED.fetch_add(1, Ordering::SeqCst);
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        let admin_file = dir.path().join("admin-address");
        let mut child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&path)
            .args(["--concurrency", "1", "-l", "info"])
            .arg("--base-id")
            .arg(base_id.to_string())
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-path")
            .arg(dir.path().join("envoy.log"))
            // Access log lines reach the file promptly.
            .args(["--file-flush-interval-msec", "50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        let deadline = Instant::now() + Duration::from_secs(30);
        let logs = || std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default();
        let (admin, addr) = loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("envoy exited with {status} at start:\n{}", logs());
            }
            assert!(
                Instant::now() < deadline,
                "envoy did not start:\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(50));
            let Some(admin) = std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            else {
                continue;
            };
            if admin_get(admin, "/ready").is_none_or(|b| b.trim() != "LIVE") {
                continue;
            }
            // `egress::127.0.0.1:41234`
            let Some(addr) = admin_get(admin, "/listeners").and_then(|b| {
                b.lines()
                    .find_map(|l| l.split_once("::"))
                    .and_then(|(_, a)| a.trim().parse::<SocketAddr>().ok())
            }) else {
                continue;
            };
            if TcpStream::connect(addr).is_ok() {
                break (admin, addr);
            }
        };
        Envoy {
            child,
            dir,
            addr,
            admin,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// The access log written so far, one JSON object per request.
    pub fn access_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log {l:?}: {e}")))
            .collect()
    }

    /// Wait (bounded) until an access log line satisfies `pred`; return it.
    pub fn wait_access_log(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.access_log().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching access log line; have:\n{:?}",
                self.access_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// GET on Envoy's admin interface; the body if the answer is 200.
fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "2", "--noproxy", "*"])
        .arg(format!("http://{admin}{path}"))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
