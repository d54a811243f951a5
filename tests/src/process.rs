//! `tollgate run` as a child process on ephemeral ports, with its audit
//! lines (stdout) and logs (stderr) captured for assertions.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{repo_root, tollgate_bin};

pub const CODER: &str = "spiffe://cluster.local/ns/agents/sa/coder";

/// The credentials the shipped policies name, with the values the harness
/// gives them (files in the process folder, bound to `github`).
pub const HARNESS_CREDENTIALS: [(&str, &str); 2] = [
    ("github-readonly", "harness-github-readonly-value"),
    ("github-pull-requests", "harness-github-pull-requests-value"),
];

/// What to run tollgate with. Defaults: the shipped catalog and policies,
/// the coder identity, loopback upstreams allowed.
pub struct Setup {
    /// `None`: the shipped `config/policies`. `Some`: exactly these files.
    pub policies: Option<Vec<(String, String)>>,
    /// Extra catalog files on top of the shipped `config/catalog`.
    pub extra_catalog: Vec<(String, String)>,
    pub identity: Option<String>,
    /// Extra lines (indented four spaces) under the `agents` listener:
    /// `tls:`, or an `identity:` of its own (with `identity: None`).
    pub listener_yaml: String,
    /// More listeners after `agents` (`  - name: …` items); the start waits
    /// until each has bound.
    pub more_listeners_yaml: String,
    /// Run the binary under this command (`ip netns exec <ns>`, say).
    pub launcher: Vec<String>,
    /// Run as this uid (and gid), the test folder handed over to it: the
    /// user `tollgate iptables` exempts from redirection.
    pub run_as: Option<u32>,
    /// `host:port` → where it really is (always loopback in tests).
    pub resolve: Vec<(String, SocketAddr)>,
    pub upstream_ca: Option<String>,
    pub allow_loopback: bool,
    pub intercept: bool,
    /// Appended under `forward:`.
    pub forward_extra: String,
    /// Reload on file change (polling every 200 ms); SIGHUP works either way.
    pub watch: bool,
    /// `run` asks this `tollgate decision` (URL) instead of deciding
    /// in-process.
    pub decision_endpoint: Option<String>,
    /// Extra lines (indented two spaces) under `decision:`.
    pub decision_yaml: String,
    /// Extra lines (indented two spaces) under `decision_service:`.
    pub decision_service_yaml: String,
    /// Appended verbatim at the top level (e.g. a `credentials:` section).
    /// Without a `credentials:` section of its own, the harness configures
    /// the credentials the shipped policies name ([`HARNESS_CREDENTIALS`]).
    pub extra_yaml: String,
    /// Environment for the process (credential values, for instance).
    pub env: Vec<(String, String)>,
    /// Keep tasks, administered with [`crate::tasks::ADMIN_TOKEN`]. For
    /// `run` deciding in-process, this also serves the decision API
    /// (`Tollgate::decision`).
    pub tasks: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            policies: None,
            extra_catalog: Vec::new(),
            identity: Some(CODER.to_string()),
            listener_yaml: String::new(),
            more_listeners_yaml: String::new(),
            launcher: Vec::new(),
            run_as: None,
            resolve: Vec::new(),
            upstream_ca: None,
            allow_loopback: true,
            intercept: true,
            forward_extra: String::new(),
            watch: true,
            decision_endpoint: None,
            decision_yaml: String::new(),
            decision_service_yaml: String::new(),
            extra_yaml: String::new(),
            env: Vec::new(),
            tasks: false,
        }
    }
}

impl Setup {
    /// The default setup with `host:port` sent to `upstream`.
    pub fn routing(host_port: &str, upstream: SocketAddr) -> Setup {
        Setup {
            resolve: vec![(host_port.to_string(), upstream)],
            ..Setup::default()
        }
    }
}

/// An HTTPS upstream for api.github.com with a certificate from a CA minted
/// for the test, and tollgate (set up as `base` says besides) trusting that
/// CA and sending api.github.com:443 there.
pub async fn github_tls(base: Setup) -> (crate::TestPki, crate::Upstream, Tollgate) {
    let pki = crate::TestPki::new();
    let upstream = crate::Upstream::https(pki.server_config(&["api.github.com"])).await;
    let tg = Tollgate::start(Setup {
        resolve: vec![("api.github.com:443".into(), upstream.addr)],
        upstream_ca: Some(pki.ca_pem.clone()),
        ..base
    });
    (pki, upstream, tg)
}

/// A tollgate process (`run` or `decision`) with its output captured.
pub struct Process {
    child: Child,
    pub dir: tempfile::TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Listener name → bound address, from the `listening` log lines.
    listeners: HashMap<String, SocketAddr>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tollgate run`: the data plane.
pub struct Tollgate {
    process: Process,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The decision API (tasks), when it decides in-process with tasks on.
    pub decision: Option<SocketAddr>,
}

impl std::ops::Deref for Tollgate {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

/// `tollgate decision`: the gRPC decision plane.
pub struct DecisionService {
    process: Option<Process>,
    pub addr: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin: SocketAddr,
    dir: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
}

impl std::ops::Deref for DecisionService {
    type Target = Process;
    fn deref(&self) -> &Process {
        self.process.as_ref().expect("decision service is stopped")
    }
}

impl DecisionService {
    pub fn start(setup: Setup) -> DecisionService {
        let env = env_of(&setup);
        let dir = prepare(&setup);
        let process = Process::spawn(
            &["decision", "decision-admin"],
            dir,
            &env,
            (&[], &tollgate_bin()),
            &["decision"],
        );
        let addr = process.listeners["decision"];
        let admin = process.listeners["decision-admin"];
        DecisionService {
            process: Some(process),
            addr,
            admin,
            dir: None,
            env,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kill the service (its folder is kept for `restart`).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.child.kill();
            let _ = process.child.wait();
            // Keep the folder: take it out before the process is dropped.
            let dir = std::mem::replace(&mut process.dir, tempfile::tempdir().unwrap());
            self.dir = Some(dir);
        }
    }

    /// Start again on the same address, with the same files.
    pub fn restart(&mut self) {
        let dir = self.dir.take().expect("stop() first");
        let config = dir.path().join("tollgate.yaml");
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "decision_service:\n  address: 127.0.0.1:0\n",
            &format!("decision_service:\n  address: {}\n", self.addr),
        );
        std::fs::write(&config, text).unwrap();
        self.process = Some(Process::spawn(
            &["decision", "decision-admin"],
            dir,
            &self.env,
            (&[], &tollgate_bin()),
            &["decision"],
        ));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

pub(crate) fn capture(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

fn env_of(setup: &Setup) -> Vec<(String, String)> {
    let mut env = setup.env.clone();
    if setup.tasks {
        env.push((
            "TOLLGATE_ADMIN_TOKEN".into(),
            crate::tasks::ADMIN_TOKEN.into(),
        ));
    }
    env
}

/// Lay out a folder with the catalog, policies and `tollgate.yaml`.
fn prepare(setup: &Setup) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    copy_dir(&root.join("config/catalog"), &dir.path().join("catalog"));
    for (name, text) in &setup.extra_catalog {
        std::fs::write(dir.path().join("catalog").join(name), text).unwrap();
    }
    match &setup.policies {
        None => copy_dir(&root.join("config/policies"), &dir.path().join("policies")),
        Some(files) => {
            std::fs::create_dir_all(dir.path().join("policies")).unwrap();
            for (name, text) in files {
                std::fs::write(dir.path().join("policies").join(name), text).unwrap();
            }
        }
    }
    let config = config_yaml(setup, dir.path());
    std::fs::write(dir.path().join("tollgate.yaml"), config).unwrap();
    dir
}

impl Tollgate {
    pub fn start(setup: Setup) -> Tollgate {
        let dir = prepare(&setup);
        let serves_tasks = setup.tasks && setup.decision_endpoint.is_none();
        let mut wanted = vec!["admin", "agents"];
        if serves_tasks {
            wanted.push("decision");
        }
        wanted.extend(
            setup
                .more_listeners_yaml
                .lines()
                .filter_map(|l| l.trim().strip_prefix("- name:"))
                .map(str::trim),
        );
        let mut launcher = setup.launcher.clone();
        let mut bin = tollgate_bin();
        if let Some(uid) = setup.run_as {
            let as_uid = [
                "setpriv".to_string(),
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_string(),
            ];
            // A clone under a private folder (root's home) keeps its build
            // out of other users' reach: run a copy from the test folder.
            let reachable = Command::new(&as_uid[0])
                .args(&as_uid[1..])
                .arg("test")
                .arg("-x")
                .arg(&bin)
                .status()
                .is_ok_and(|s| s.success());
            if !reachable {
                let copy = dir.path().join("tollgate");
                std::fs::copy(&bin, &copy).unwrap();
                bin = copy;
            }
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{uid}"))
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the test folder to {uid}");
            launcher.extend(as_uid);
        }
        let process = Process::spawn(&wanted, dir, &env_of(&setup), (&launcher, &bin), &["run"]);
        Tollgate::of(process, serves_tasks)
    }

    /// Start with `setup`, which must fail: the exit status and what it
    /// said on stderr. Panics if it is still running after 30 s.
    pub fn fails_to_start(setup: Setup) -> (std::process::ExitStatus, String) {
        let dir = prepare(&setup);
        let mut child = Command::new(tollgate_bin())
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("tollgate.yaml"))
            .envs(env_of(&setup))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tollgate");
        let stderr = capture(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "tollgate kept running:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The capture thread reads to the end of the closed pipe.
        std::thread::sleep(Duration::from_millis(100));
        let said = stderr.lock().unwrap().join("\n");
        (status, said)
    }

    /// Run with a folder already holding `tollgate.yaml`.
    pub fn spawn(dir: tempfile::TempDir, env: &[(String, String)]) -> Tollgate {
        Tollgate::of(
            Process::spawn(
                &["admin", "agents"],
                dir,
                env,
                (&[], &tollgate_bin()),
                &["run"],
            ),
            false,
        )
    }

    fn of(process: Process, serves_tasks: bool) -> Tollgate {
        let admin = process.listeners["admin"];
        let proxy = process.listeners["agents"];
        let decision = serves_tasks.then(|| process.listeners["decision"]);
        Tollgate {
            process,
            proxy,
            admin,
            decision,
        }
    }

    /// The decision API's URL (tasks), when this process serves it.
    pub fn decision_url(&self) -> String {
        format!("http://{}", self.decision.expect("started without tasks"))
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// curl with this tollgate as its proxy.
    pub async fn curl(&self, args: &[&str]) -> crate::CurlOutput {
        let proxy = self.proxy_url();
        let mut all = vec!["-x", proxy.as_str()];
        all.extend_from_slice(args);
        crate::curl(&all).await
    }

    /// Where the listener `name` is bound.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.process.listeners[name]
    }

    /// The interception CA agents must trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.path("ca/ca.crt")
    }
}

impl Process {
    /// Start `tollgate <verb>` in `dir` and wait until every `wanted`
    /// listener has logged its bound address.
    fn spawn(
        wanted: &[&str],
        dir: tempfile::TempDir,
        env: &[(String, String)],
        (launcher, bin): (&[String], &Path),
        verb: &[&str],
    ) -> Process {
        let mut command = match launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin);
                command
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args(verb)
            .arg("--config")
            .arg(dir.path().join("tollgate.yaml"))
            // `run` on the multi-threaded runtime, `decision` on the
            // single-threaded one (`--workers 1`): both paths are tested.
            .arg("--workers")
            .arg(if verb == ["decision"] { "1" } else { "2" })
            .env("TOLLGATE_LOG", "info,tollgate=debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tollgate");
        let stdout = capture(child.stdout.take().unwrap());
        let stderr = capture(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut listeners = HashMap::new();
        while !wanted.iter().all(|w| listeners.contains_key(*w)) {
            if let Ok(Some(status)) = child.try_wait() {
                // Released before panicking: a lock poisoned here would
                // bury this message under the capture thread's panic.
                let said = stderr.lock().unwrap().join("\n");
                panic!("tollgate exited with {status} at start:\n{said}");
            }
            assert!(
                Instant::now() < deadline,
                "tollgate did not start listening"
            );
            for line in stderr.lock().unwrap().iter() {
                if !line.contains(" listening") {
                    continue;
                }
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|t| t.strip_prefix(name))
                        .map(|v| v.trim_matches('"').to_string())
                };
                if let (Some(name), Some(Ok(addr))) = (
                    field("listener="),
                    field("address=").map(|a| a.parse::<SocketAddr>()),
                ) {
                    listeners.insert(name, addr);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Process {
            child,
            dir,
            stdout,
            stderr,
            listeners,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Edit a file in the process's folder and replace it in one rename,
    /// as a ConfigMap update does, so a reload never reads half of it.
    pub fn rewrite(&self, relative: &str, edit: impl FnOnce(String) -> String) {
        let path = self.path(relative);
        let text = edit(std::fs::read_to_string(&path).unwrap());
        let staged = path.with_extension("staged");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &path).unwrap();
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect()
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Wait (bounded) until an audit line satisfies `pred`; return it.
    pub fn wait_audit(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.audit_lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching audit line; have:\n{}\nlogs:\n{}",
                self.stdout_text(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (bounded) until at least `count` audit lines are written
    /// (by their own thread, after the answer); return them all.
    pub fn wait_audit_lines(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.audit_lines();
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} audit lines, not {count}:\n{}\nlogs:\n{}",
                lines.len(),
                self.stdout_text(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (bounded) until the logs contain `needle`.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Peak resident memory of the process (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory of the process now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"))
    }
}

fn config_yaml(setup: &Setup, dir: &Path) -> String {
    let mut y = String::new();
    y.push_str("listeners:\n  - name: agents\n    address: 127.0.0.1:0\n");
    if let Some(id) = &setup.identity {
        y.push_str(&format!("    identity: {{ static: \"{id}\" }}\n"));
    }
    y.push_str(&setup.listener_yaml);
    y.push_str(&setup.more_listeners_yaml);
    y.push_str("admin: { address: 127.0.0.1:0 }\ncatalog: catalog\npolicies: policies\n");
    y.push_str("decision_service:\n  address: 127.0.0.1:0\n  admin: 127.0.0.1:0\n");
    y.push_str(&setup.decision_service_yaml);
    if let Some(endpoint) = &setup.decision_endpoint {
        y.push_str(&format!("decision:\n  endpoint: \"{endpoint}\"\n"));
        if !setup.decision_yaml.contains("timeout:") {
            y.push_str("  timeout: 500ms\n");
        }
        y.push_str(&setup.decision_yaml);
    }
    y.push_str(&setup.extra_yaml);
    y.push('\n');
    if setup.tasks {
        y.push_str("tasks:\n  admin_token: { env: TOLLGATE_ADMIN_TOKEN }\n  max_ttl: 1h\n");
    }
    if !setup.extra_yaml.contains("credentials:") {
        y.push_str("credentials:\n");
        for (name, value) in HARNESS_CREDENTIALS {
            let file = dir.join("harness-secrets").join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, value).unwrap();
            y.push_str(&format!(
                "  {name}: {{ file: \"{}\", services: [github] }}\n",
                file.display()
            ));
        }
    }
    y.push_str(&format!(
        "reload: {{ interval: 200ms, watch: {} }}\n",
        setup.watch
    ));
    y.push_str("tls:\n  system_roots: false\n");
    if setup.intercept {
        y.push_str("  create_ca_if_missing: true\n");
    } else {
        y.push_str("  ca_dir: no-ca\n");
    }
    if let Some(pem) = &setup.upstream_ca {
        let path = dir.join("upstream-ca.pem");
        std::fs::write(&path, pem).unwrap();
        y.push_str(&format!("  upstream_ca_files: [\"{}\"]\n", path.display()));
    }
    y.push_str("forward:\n");
    if setup.allow_loopback {
        y.push_str("  allow_networks: [127.0.0.0/8]\n");
    }
    if !setup.resolve.is_empty() {
        y.push_str("  resolve:\n");
        for (from, to) in &setup.resolve {
            y.push_str(&format!("    \"{from}\": \"{to}\"\n"));
        }
    }
    y.push_str(&setup.forward_extra);
    y
}

/// The shipped policy files, to extend in a test.
pub fn shipped_policies() -> Vec<(String, String)> {
    let dir = repo_root().join("config/policies");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cedar"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}
