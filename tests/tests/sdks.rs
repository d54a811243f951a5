//! Real agent SDKs through tollgate, as their developers point them at it:
//! the OpenAI and Anthropic Python SDKs and boto3 with `HTTPS_PROXY` and
//! tollgate's CA, and Node.js `https` and `fetch` with the proxy agents
//! docs/operations.md names. Loopback upstreams pose as the real hosts
//! (`forward.resolve`); each client runs under a guard that fails the test
//! if it looks up or connects to anything but loopback.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tollgate_e2e::clients::python_bin;
use tollgate_e2e::hygiene::{assert_no_secrets, Collected};
use tollgate_e2e::tasks::start_task;
use tollgate_e2e::{random_secret, repo_root, Setup, TestPki, Tollgate, Upstream, CODER};

const COMPLETION: &str = r#"{"id":"chatcmpl-tg1","object":"chat.completion","created":1765000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello from upstream"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}}"#;
const MESSAGE: &str = r#"{"id":"msg_tg1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hello from upstream"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":3}}"#;

const OPENAI: &str = "api.openai.com";
const ANTHROPIC: &str = "api.anthropic.com";
/// Where boto3 sends a virtual-hosted request for bucket `acme-data` in
/// us-west-2.
const BUCKET: &str = "acme-data.s3.us-west-2.amazonaws.com";

/// Model calls need a task and carry the credential policy names; objects
/// may be read with none. Nothing else is permitted.
fn policies() -> Vec<(String, String)> {
    let text = format!(
        r#"
@id("chat")
@credential("openai-key")
permit (principal == Workload::"{CODER}", action == Action::"openai:chat.completions.create", resource)
when {{ context has task }};

@id("messages")
@credential("anthropic-key")
permit (principal == Workload::"{CODER}", action == Action::"anthropic:messages.create", resource)
when {{ context has task }};

@id("objects")
permit (principal == Workload::"{CODER}", action == Action::"s3:GetObject", resource);
"#
    );
    vec![("sdks.cedar".into(), text)]
}

/// tollgate in front of one HTTPS upstream posing as all three APIs, with
/// an OpenAI key (bearer) and an Anthropic key (`x-api-key`) policy names.
struct Apis {
    tg: Tollgate,
    upstream: Upstream,
    openai_key: String,
    anthropic_key: String,
    _keys: tempfile::TempDir,
}

impl Apis {
    async fn start() -> Apis {
        let pki = TestPki::new();
        let upstream = Upstream::https(pki.server_config(&[OPENAI, ANTHROPIC, BUCKET])).await;
        upstream.answer("/v1/chat/completions", 200, "application/json", COMPLETION);
        upstream.answer("/v1/messages", 200, "application/json", MESSAGE);
        upstream.answer("/report.csv", 200, "text/csv", "region,total\nwest,42\n");
        let keys = tempfile::tempdir().unwrap();
        let openai_key = random_secret("sk-real-openai");
        let anthropic_key = random_secret("sk-ant-real");
        let key_file = |name: &str, value: &str| {
            let path = keys.path().join(name);
            std::fs::write(&path, value).unwrap();
            path.display().to_string()
        };
        let extra_yaml = format!(
            "credentials:\n  openai-key: {{ file: \"{}\", services: [openai] }}\n  \
             anthropic-key: {{ file: \"{}\", inject: {{ header: {{ name: x-api-key }} }}, services: [anthropic] }}\n",
            key_file("openai", &openai_key),
            key_file("anthropic", &anthropic_key),
        );
        let tg = Tollgate::start(Setup {
            policies: Some(policies()),
            resolve: [OPENAI, ANTHROPIC, BUCKET]
                .map(|host| (format!("{host}:443"), upstream.addr))
                .to_vec(),
            upstream_ca: Some(pki.ca_pem.clone()),
            tasks: true,
            extra_yaml,
            ..Setup::default()
        });
        Apis {
            tg,
            upstream,
            openai_key,
            anthropic_key,
            _keys: keys,
        }
    }

    /// What every client is given: the proxy and the CA, nothing else from
    /// this machine's environment.
    fn agent_env(&self) -> Vec<(&'static str, String)> {
        let ca = self.tg.ca_cert().display().to_string();
        let home = self.tg.path("home");
        std::fs::create_dir_all(&home).unwrap();
        vec![
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", home.display().to_string()),
            ("HTTPS_PROXY", self.tg.proxy_url()),
            ("SSL_CERT_FILE", ca.clone()),
            ("NODE_EXTRA_CA_CERTS", ca.clone()),
            ("AWS_CA_BUNDLE", ca),
        ]
    }

    /// Requests the upstream received for `host`.
    fn seen_by(&self, host: &str) -> Vec<tollgate_e2e::Seen> {
        self.upstream
            .requests()
            .into_iter()
            .filter(|r| r.host == host)
            .collect()
    }

    fn everything_said(&self) -> Collected {
        let mut collected = Collected::new();
        collected.add("tollgate logs", self.tg.logs());
        collected.add("audit lines", self.tg.stdout_text());
        collected
    }
}

/// Runs `program args` with exactly `env`; its stdout parsed as one JSON
/// line. Exit 3 is the loopback guard: the client tried to go elsewhere.
async fn run_agent(
    program: &Path,
    args: &[&str],
    env: &[(&'static str, String)],
    dir: &Path,
) -> Value {
    let out = agent_output(program, args, env, dir).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {args:?} exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
        program.display(),
        out.status.code()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// Runs `program args` in `dir` with exactly `env`.
async fn agent_output(
    program: &Path,
    args: &[&str],
    env: &[(&'static str, String)],
    dir: &Path,
) -> std::process::Output {
    tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

async fn python_agent(scenario: &str, env: &[(&'static str, String)]) -> Value {
    let script = repo_root().join("tests/py/sdk_agent.py");
    run_agent(
        &python_bin(),
        &[script.to_str().unwrap(), scenario],
        env,
        &repo_root(),
    )
    .await
}

fn node_dir() -> PathBuf {
    let dir = repo_root().join("tests/js");
    assert!(
        dir.join("node_modules/undici").exists(),
        "{}/node_modules is missing: run scripts/setup-test-env",
        dir.display()
    );
    dir
}

#[tokio::test]
async fn the_openai_sdk_holding_a_task_token_gets_its_answer_and_tollgates_refusals() {
    let apis = Apis::start().await;
    let task = start_task(&apis.tg.decision_url(), CODER, &[]);
    let mut env = apis.agent_env();
    env.push(("OPENAI_API_KEY", task.token.clone()));
    let out = python_agent("openai", &env).await;

    assert_eq!(out["id"], "chatcmpl-tg1", "{out}");
    assert_eq!(out["content"], "hello from upstream");
    let seen = apis.seen_by(OPENAI);
    assert_eq!(seen.len(), 1, "only the permitted call went on: {seen:?}");
    assert_eq!(seen[0].path_and_query, "/v1/chat/completions");
    let authorization = format!("Bearer {}", apis.openai_key);
    assert_eq!(
        seen[0].header("authorization"),
        Some(authorization.as_str())
    );
    assert!(seen[0]
        .headers
        .iter()
        .all(|(_, v)| !v.contains(&task.token)));

    // The refusal reaches the developer as the SDK's own error: tollgate's
    // message as its text, the reason and decision id in its body.
    let denied = &out["denied"];
    assert_eq!(denied["status"], 403, "{out}");
    let message = denied["message"].as_str().unwrap();
    assert!(
        message.contains("no policy permits `openai:models.delete`"),
        "{message}"
    );
    assert_eq!(denied["body"]["reason"], "no_permit", "{out}");
    let line = apis
        .tg
        .wait_audit(|l| l["action"] == "openai:models.delete");
    assert_eq!(denied["body"]["decision_id"], line["decision_id"]);

    // Without the proxy variable the SDK goes for the real host: the guard
    // stops it at the lookup, before anything leaves this machine.
    let direct: Vec<_> = env
        .iter()
        .filter(|(k, _)| *k != "HTTPS_PROXY")
        .cloned()
        .collect();
    let escaped = agent_output(
        &python_bin(),
        &[
            repo_root().join("tests/py/sdk_agent.py").to_str().unwrap(),
            "openai",
        ],
        &direct,
        &repo_root(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&escaped.stderr);
    assert_eq!(escaped.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("not loopback: the client looked up 'api.openai.com'"),
        "{stderr}"
    );
    assert_eq!(apis.seen_by(OPENAI).len(), 1);

    let mut said = apis.everything_said();
    said.add("what the SDK got", out.to_string());
    said.add("what it said going direct", out_text(&escaped));
    assert_no_secrets(&[&task.token, &apis.openai_key], &said);
}

fn out_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn the_anthropic_sdk_sends_its_key_as_a_bearer_token_and_the_upstream_gets_x_api_key() {
    let apis = Apis::start().await;
    let task = start_task(&apis.tg.decision_url(), CODER, &[]);
    let mut env = apis.agent_env();
    env.push(("ANTHROPIC_API_KEY", task.token.clone()));
    let out = python_agent("anthropic", &env).await;

    assert_eq!(out["id"], "msg_tg1", "{out}");
    assert_eq!(out["content"], "hello from upstream");
    let seen = apis.seen_by(ANTHROPIC);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].header("x-api-key"),
        Some(apis.anthropic_key.as_str())
    );
    assert_eq!(
        seen[0].header("authorization"),
        None,
        "the SDK's bearer token is gone"
    );
    assert!(seen[0]
        .headers
        .iter()
        .all(|(_, v)| !v.contains(&task.token)));
    let line = apis
        .tg
        .wait_audit(|l| l["action"] == "anthropic:messages.create");
    assert_eq!(
        line["task"],
        task.id.as_str(),
        "the token in Authorization named the task"
    );

    let denied = &out["denied"];
    assert_eq!(denied["status"], 403, "{out}");
    assert_eq!(denied["body"]["reason"], "no_permit", "{out}");
    assert!(
        denied["message"]
            .as_str()
            .unwrap()
            .contains("no policy permits `anthropic:models.get`"),
        "{out}"
    );

    let mut said = apis.everything_said();
    said.add("what the SDK got", out.to_string());
    assert_no_secrets(&[&task.token, &apis.anthropic_key], &said);
}

#[tokio::test]
async fn boto3_reads_an_object_without_its_keys_leaving_and_a_presigned_url_is_refused() {
    let apis = Apis::start().await;
    let secret_key = random_secret("agent-aws-secret");
    let session_token = random_secret("agent-aws-session");
    let mut env = apis.agent_env();
    env.extend([
        ("AWS_ACCESS_KEY_ID", "AKIAAGENTOWNKEY00001".to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret_key.clone()),
        ("AWS_SESSION_TOKEN", session_token.clone()),
        // No file on this machine may change what boto3 does.
        ("AWS_CONFIG_FILE", "/dev/null".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_string()),
    ]);
    let out = python_agent("s3", &env).await;

    assert_eq!(out["body"], "region,total\nwest,42\n", "{out}");
    let seen = apis.seen_by(BUCKET);
    assert_eq!(seen.len(), 1, "only GetObject went on: {seen:?}");
    assert_eq!(seen[0].method, "GET");
    // The agent's SigV4 signature and session token stayed behind.
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(seen[0].header("x-amz-security-token"), None);
    assert!(seen[0]
        .headers
        .iter()
        .all(|(_, v)| !v.contains("AKIAAGENTOWNKEY00001")));

    // tollgate refuses S3 calls in S3's own error format, so boto3 raises
    // its usual error, carrying tollgate's reason.
    let denied = &out["denied"];
    assert_eq!(denied["status"], 403, "{out}");
    let message = denied["message"].as_str().unwrap();
    assert!(
        message.contains("An error occurred (AccessDenied) when calling the DeleteObject operation: no policy permits `s3:DeleteObject`"),
        "{message}"
    );
    let line = apis
        .tg
        .wait_audit(|l| l["action"] == "s3:DeleteObject" && l["reason"] == "no_permit");
    assert_eq!(denied["request_id"], line["decision_id"]);

    // A presigned URL carries the agent's key and signature in its query:
    // refused, saying which parameters, before anything is decided.
    let presigned = &out["presigned"];
    assert_eq!(presigned["status"], 403, "{out}");
    let message = presigned["body"].as_str().unwrap();
    assert!(message.contains("<Code>AccessDenied</Code>"), "{message}");
    assert!(
        message.contains("<Reason>credential_in_query</Reason>"),
        "{message}"
    );
    // boto3 presigns with SigV2 or SigV4 as its version and the region
    // say: every credential parameter the URL has is named.
    let credentials = [
        "awsaccesskeyid",
        "signature",
        "x-amz-credential",
        "x-amz-signature",
        "x-amz-security-token",
    ];
    let named: Vec<&str> = presigned["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|p| credentials.contains(&p.to_ascii_lowercase().as_str()))
        .collect();
    assert!(named.len() >= 3, "{presigned}");
    for name in named {
        assert!(message.contains(name), "{name}: {message}");
    }
    let line = apis.tg.wait_audit(|l| l["reason"] == "credential_in_query");
    assert_eq!(line["action"], "s3:GetObject");
    assert_eq!(line["decision"], "deny");
    assert_eq!(
        apis.seen_by(BUCKET).len(),
        1,
        "the presigned GET never left"
    );

    let mut said = apis.everything_said();
    said.add("what boto3 got", out.to_string());
    assert_no_secrets(
        &[&secret_key, &session_token, "AKIAAGENTOWNKEY00001"],
        &said,
    );
}

#[tokio::test]
async fn node_https_and_fetch_reach_the_api_only_through_a_proxy_agent() {
    let apis = Apis::start().await;
    let task = start_task(&apis.tg.decision_url(), CODER, &[]);
    let mut env = apis.agent_env();
    env.push(("OPENAI_API_KEY", task.token.clone()));
    let dir = node_dir();
    let node = |scenario: &'static str| {
        let env = env.clone();
        let dir = dir.clone();
        async move {
            run_agent(
                Path::new("node"),
                &[
                    "--require",
                    "./loopback-only.cjs",
                    "agent.mjs",
                    scenario,
                    "https://api.openai.com/v1/chat/completions",
                ],
                &env,
                &dir,
            )
            .await
        }
    };
    for scenario in ["https", "fetch"] {
        let out = node(scenario).await;
        assert_eq!(out["status"], 200, "{scenario}: {out}");
        assert_eq!(
            out["body"]["choices"][0]["message"]["content"],
            "hello from upstream"
        );
    }
    let seen = apis.seen_by(OPENAI);
    assert_eq!(seen.len(), 2);
    let authorization = format!("Bearer {}", apis.openai_key);
    for request in &seen {
        assert_eq!(
            request.header("authorization"),
            Some(authorization.as_str())
        );
    }
    let intercepted = apis
        .tg
        .audit_lines()
        .into_iter()
        .filter(|l| l["action"] == "openai:chat.completions.create" && l["mode"] == "intercept")
        .count();
    assert_eq!(intercepted, 2, "both came through CONNECT");

    // Node 20's global fetch ignores HTTPS_PROXY: it goes straight for the
    // host, which the guard stops before anything is resolved.
    let bare = agent_output(
        Path::new("node"),
        &[
            "--require",
            "./loopback-only.cjs",
            "agent.mjs",
            "fetch-bare",
            "https://api.openai.com/v1/chat/completions",
        ],
        &env,
        &dir,
    )
    .await;
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert_eq!(bare.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("not loopback: the client connected to api.openai.com"),
        "{stderr}"
    );
    assert_eq!(apis.seen_by(OPENAI).len(), 2);
}
