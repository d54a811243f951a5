//! Approvals as the console tests drive them: approvers in configuration, a
//! gate policy on opening pull requests, approvals asked for through the
//! gRPC `Decide` exactly as a holding proxy asks, and the console's HTTP
//! endpoints spoken with curl, with and without a session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::{curl_answer, random_secret, repo_root, shipped_policies, Answer, Setup, CODER};

/// Opening a pull request needs a person's yes.
pub const GATE_POLICY: &str = r#"
@id("approve-pull-requests")
@reason("a person reviews every pull request before it is opened")
forbid (principal, action == Action::"github:pulls.create", resource) unless { context.approved };
"#;

/// `base` with the shipped policies plus [`GATE_POLICY`], and one approver
/// per name, each with a fresh random token given through the environment.
/// Returns the setup and name → token.
pub fn with_approvers(base: Setup, names: &[&str]) -> (Setup, HashMap<String, String>) {
    let mut policies = shipped_policies();
    policies.push(("gate.cedar".into(), GATE_POLICY.into()));
    let mut yaml = String::from("approvals:\n  approvers:\n");
    let mut env = base.env.clone();
    let mut tokens = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let var = format!("TG_TEST_APPROVER_{i}");
        let token = random_secret("approver");
        yaml.push_str(&format!(
            "    - {{ name: \"{name}\", token: {{ env: {var} }} }}\n"
        ));
        env.push((var, token.clone()));
        tokens.insert(name.to_string(), token);
    }
    let setup = Setup {
        policies: Some(policies),
        extra_yaml: format!("{}{yaml}", base.extra_yaml),
        env,
        ..base
    };
    (setup, tokens)
}

/// `grpcurl` against the decision API at `addr`, with an approver's or
/// admin's bearer token when given; the JSON answer, or grpcurl's error.
pub fn grpcurl(
    addr: SocketAddr,
    bearer: Option<&str>,
    method: &str,
    body: &Value,
) -> Result<Value, String> {
    let grpcurl = repo_root().join(".venv/bin/grpcurl");
    assert!(grpcurl.exists(), "run scripts/setup-test-env");
    let mut cmd = Command::new(grpcurl);
    cmd.arg("-plaintext");
    if let Some(token) = bearer {
        cmd.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let out = cmd
        .args(["-d", &body.to_string()])
        .arg(addr.to_string())
        .arg(format!("tollgate.authz.v1.DecisionService/{method}"))
        .output()
        .expect("run grpcurl");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// What a pull request to acme/api asks for, as a proxy holding it sends
/// `Decide` (with the body's digest and the query), under `task_token`.
pub fn held_pull_request(task_token: Option<&str>, body: &str) -> Value {
    let digest = |bytes: &[u8]| STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, bytes));
    let mut request = json!({
        "principal": CODER,
        "action": "github:pulls.create",
        "resource": "github/repos/acme/api",
        "context": {"method": "POST", "host": "api.github.com", "port": 443,
                    "path": "/repos/acme/api/pulls", "tool": "github", "risk": "write",
                    "sensitivity": "internal"},
        "held": {"bodySha256": digest(body.as_bytes()), "query": "draft=false"},
    });
    if let Some(token) = task_token {
        request["taskTokenSha256"] = json!(digest(token.as_bytes()));
    }
    request
}

/// Ask for approval of [`held_pull_request`]; the approval's id.
pub fn ask_approval(decision: SocketAddr, task_token: Option<&str>, body: &str) -> String {
    let answer = grpcurl(
        decision,
        None,
        "Decide",
        &held_pull_request(task_token, body),
    )
    .expect("Decide");
    assert_eq!(answer["outcome"], "OUTCOME_APPROVAL_REQUIRED", "{answer}");
    answer["approval"]["approvalId"]
        .as_str()
        .expect("an approval id")
        .to_string()
}

/// The console at an admin listener, signed in or not.
pub struct ConsoleClient {
    base: String,
    cookie: Option<String>,
    pub csrf: String,
    /// Every answer seen, to search for secrets afterwards.
    pub seen: std::sync::Mutex<Vec<String>>,
}

impl ConsoleClient {
    pub fn at(admin: SocketAddr) -> ConsoleClient {
        ConsoleClient {
            base: format!("http://{admin}"),
            cookie: None,
            csrf: String::new(),
            seen: Default::default(),
        }
    }

    /// This browser's origin, as it would send it.
    pub fn origin(&self) -> String {
        self.base.clone()
    }

    async fn send(&self, args: &[&str], path: &str) -> Answer {
        let url = format!("{}{path}", self.base);
        let cookie = self
            .cookie
            .as_ref()
            .map(|c| format!("Cookie: {c}"))
            .unwrap_or_else(|| "X-No-Cookie: 1".into());
        let mut all = vec!["-H", &cookie];
        all.extend_from_slice(args);
        all.push(&url);
        let answer = curl_answer(&all).await;
        self.seen
            .lock()
            .unwrap()
            .push(format!("{}\n{}", answer.headers, answer.out.body));
        answer
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(&[], path).await
    }

    /// A POST with exactly `headers` besides the session cookie.
    pub async fn post(&self, path: &str, headers: &[&str], body: &str) -> Answer {
        let mut args = vec!["-X", "POST", "--data-binary", body];
        for h in headers {
            args.extend(["-H", h]);
        }
        self.send(&args, path).await
    }

    /// A change as the console's script sends it: same origin, CSRF token.
    pub async fn change(&self, path: &str, body: &Value) -> Answer {
        let csrf = format!("X-CSRF-Token: {}", self.csrf);
        let origin = format!("Origin: {}", self.origin());
        let headers = [
            csrf.as_str(),
            origin.as_str(),
            "Sec-Fetch-Site: same-origin",
            "Content-Type: application/json",
        ];
        self.post(path, &headers, &body.to_string()).await
    }

    /// Submit the login form with `token`, as a browser on this origin.
    pub async fn submit_login(&self, token: &str) -> Answer {
        let origin = format!("Origin: {}", self.origin());
        let form = format!("token={}", urlencode(token));
        self.post(
            "/console/login",
            &[
                &origin,
                "Sec-Fetch-Site: same-origin",
                "Content-Type: application/x-www-form-urlencoded",
            ],
            &form,
        )
        .await
    }

    /// Sign in with `token` (which must be an approver's) and read the
    /// session's CSRF token.
    pub async fn login(admin: SocketAddr, token: &str) -> ConsoleClient {
        let mut console = ConsoleClient::at(admin);
        let answer = console.submit_login(token).await;
        assert_eq!(answer.out.status, 303, "{}", answer.out.body);
        assert_eq!(answer.header("location").as_deref(), Some("/console"));
        let set = answer.header("set-cookie").expect("a session cookie");
        let pair = set.split(';').next().unwrap().trim().to_string();
        console.cookie = Some(pair);
        let session = console.get("/console/api/session").await;
        assert_eq!(session.out.status, 200, "{}", session.out.body);
        console.csrf = session.out.json()["csrf_token"]
            .as_str()
            .unwrap()
            .to_string();
        console
    }

    /// The session cookie (`name=value`), once signed in.
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
