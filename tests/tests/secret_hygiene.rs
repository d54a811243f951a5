//! No secret value ever leaves tollgate except in the one request it is
//! injected into: a scenario exercises every path that could print one
//! (allow, deny, an unreadable credential, a binding refusal, a reload
//! with a new credential source, a refused reload,
//! remote decisions, metrics, `validate` errors, a task token in use and
//! after its task ended, task administration, WebSockets), collects
//! everything tollgate wrote or answered, and searches it for every secret
//! in every encoding. To cover a new path, add a step that feeds `Collected`.

use tollgate_e2e::hygiene::{assert_no_secrets, leak_forms, Collected};
use tollgate_e2e::tasks::{end_task, start_task, task_cli, ADMIN_TOKEN};
use tollgate_e2e::{ask_to_switch, curl, DecisionService, Setup, Tollgate, Upstream, CODER};

/// The secrets and where they live.
struct Secrets {
    dir: tempfile::TempDir,
    bearer: String,
    user: String,
    password: String,
    header: String,
    query: String,
}

impl Secrets {
    fn new() -> Secrets {
        let s = Secrets {
            dir: tempfile::tempdir().unwrap(),
            bearer: tollgate_e2e::random_secret("bearer"),
            user: tollgate_e2e::random_secret("user"),
            password: tollgate_e2e::random_secret("password"),
            header: tollgate_e2e::random_secret("header-env"),
            query: tollgate_e2e::random_secret("query"),
        };
        let basic = s.dir.path().join("basic");
        std::fs::create_dir(&basic).unwrap();
        std::fs::write(basic.join("username"), &s.user).unwrap();
        std::fs::write(basic.join("password"), &s.password).unwrap();
        std::fs::write(s.dir.path().join("bearer"), &s.bearer).unwrap();
        std::fs::write(s.dir.path().join("query"), &s.query).unwrap();
        s
    }

    fn all(&self) -> Vec<&str> {
        vec![
            &self.bearer,
            &self.user,
            &self.password,
            &self.header,
            &self.query,
        ]
    }

    fn yaml(&self) -> String {
        let p = |name: &str| self.dir.path().join(name).display().to_string();
        format!(
            "credentials:
  bearer: {{ file: \"{}\", services: [github] }}
  basic: {{ dir: \"{}\", inject: basic, services: [github] }}
  header: {{ env: HYGIENE_HEADER_SECRET, inject: {{ header: {{ name: x-token, template: \"t {{value}}\" }} }}, services: [github] }}
  query: {{ file: \"{}\", inject: {{ query: {{ param: key }} }}, services: [github] }}
  unreadable: {{ file: \"{}\", services: [github] }}
",
            p("bearer"),
            p("basic"),
            p("query"),
            p("missing"),
        )
    }
}

fn policies() -> Vec<(String, String)> {
    let permit = |credential: &str, action: &str| {
        format!(
            "@id(\"{action}\")\n@credential(\"{credential}\")\npermit (principal == Workload::\"{CODER}\", action == Action::\"{action}\", resource);\n"
        )
    };
    let text = [
        permit("bearer", "github:pulls.list"),
        permit("basic", "github:pulls.get"),
        permit("header", "github:issues.list"),
        permit("query", "github:issues.get"),
        permit("unreadable", "github:repos.get"),
        // The binding refusal: a GitHub credential named for Slack.
        permit("bearer", "slack:auth.test"),
    ]
    .concat();
    vec![("hygiene.cedar".into(), text)]
}

/// Every request the scenario makes, with what the agent sends.
const REQUESTS: [(&str, &str, u16); 7] = [
    ("GET", "http://api.github.com/repos/acme/api/pulls", 200),
    ("GET", "http://api.github.com/repos/acme/api/pulls/1", 200),
    ("GET", "http://api.github.com/repos/acme/api/issues", 200),
    (
        "GET",
        "http://api.github.com/repos/acme/api/issues/2?key=agent",
        200,
    ),
    ("GET", "http://api.github.com/repos/acme/api", 503),
    ("GET", "http://slack.com/api/auth.test", 403),
    (
        "DELETE",
        "http://api.github.com/repos/acme/api/issues/2",
        403,
    ),
];

/// Send every request; collect each answer (headers and body).
async fn traffic(tg: &Tollgate, collected: &mut Collected, round: &str, agent_key: &str) {
    let auth = format!("Authorization: Bearer {agent_key}");
    for (method, url, status) in REQUESTS {
        let out = tg.curl(&["-i", "-X", method, "-H", &auth, url]).await;
        assert_eq!(out.status, status, "{method} {url}: {}", out.body);
        collected.add(format!("{round}: answer to {method} {url}"), out.body);
        collected.add(format!("{round}: curl stderr for {url}"), out.stderr);
    }
    // A WebSocket: the credential goes into its opening request, and the
    // session's audit line is written when it closes.
    let head = websocket_ping(tg, &auth).await;
    collected.add(format!("{round}: answer to a WebSocket request"), head);
}

/// Open a WebSocket to the pulls route, see one echo, close it; the head
/// of the answer.
async fn websocket_ping(tg: &Tollgate, auth: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = "http://api.github.com/repos/acme/api/pulls";
    let (mut socket, head) = ask_to_switch(tg.proxy, url, "websocket", &[auth]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    socket.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    socket.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    head
}

fn collect_process(collected: &mut Collected, name: &str, logs: String, stdout: String) {
    assert!(
        !logs.is_empty() && !stdout.is_empty(),
        "{name} wrote nothing"
    );
    collected.add(format!("{name} stderr (logs)"), logs);
    collected.add(format!("{name} stdout (audit lines)"), stdout);
}

#[tokio::test]
async fn no_secret_appears_in_any_log_audit_line_answer_or_error() {
    let upstream = Upstream::http().await;
    let secrets = Secrets::new();
    let env = vec![("HYGIENE_HEADER_SECRET".to_string(), secrets.header.clone())];
    let setup = || Setup {
        policies: Some(policies()),
        resolve: vec![
            ("api.github.com:80".into(), upstream.addr),
            ("slack.com:80".into(), upstream.addr),
        ],
        extra_yaml: secrets.yaml(),
        env: env.clone(),
        tasks: true,
        ..Setup::default()
    };
    let mut collected = Collected::new();

    // Embedded decisions: allow (every style), unreadable, unbound, deny.
    let tg = Tollgate::start(setup());
    traffic(&tg, &mut collected, "embedded", "agent-fake-key").await;
    // The injected values did reach the upstream: the search is not vacuous.
    let seen = upstream.requests();
    assert!(seen[0]
        .headers
        .iter()
        .any(|(_, v)| v.contains(&secrets.bearer)));
    assert!(seen[3].path_and_query.contains(&secrets.query));

    // A reload (SIGHUP) that points the bearer credential at a new file,
    // then the same traffic on the new snapshot.
    let reloaded = tollgate_e2e::random_secret("bearer-reloaded");
    let (old_file, new_file) = (
        secrets.dir.path().join("bearer"),
        secrets.dir.path().join("bearer-2"),
    );
    std::fs::write(&new_file, &reloaded).unwrap();
    tg.rewrite("tollgate.yaml", |text| {
        text.replace(
            &format!("\"{}\"", old_file.display()),
            &format!("\"{}\"", new_file.display()),
        )
    });
    tg.signal("HUP");
    tg.wait_log("trigger=\"sighup\"");
    traffic(&tg, &mut collected, "after reload", "agent-fake-key").await;
    assert!(upstream
        .requests()
        .iter()
        .any(|r| r.headers.iter().any(|(_, v)| v.contains(&reloaded))));
    // A reload refused for a bad binding: its error is searched too.
    tg.rewrite("tollgate.yaml", |text| {
        text.replace("services: [github] }", "services: [gihtub] }")
    });
    tg.signal("HUP");
    tg.wait_log("reload refused");
    let metrics = curl(&[&format!("http://{}/metrics", tg.admin)]).await;
    collected.add("metrics", metrics.body);

    // Remote decisions: the service never holds the secrets, but its logs
    // and answers are searched all the same.
    let service = DecisionService::start(setup());
    let remote = Tollgate::start(Setup {
        decision_endpoint: Some(service.url()),
        ..setup()
    });
    traffic(&remote, &mut collected, "remote", "agent-fake-key").await;

    // A task: the agent's key is the task token; then the task ends. The
    // token and the admin token are secrets like the credentials.
    let task = start_task(&service.url(), CODER, &["--ttl", "5m"]);
    traffic(&remote, &mut collected, "in a task", &task.token).await;
    let ended = end_task(&service.url(), &task.id);
    collected.add("task end output", ended.to_string());
    remote.wait_log("task ended; its token is refused");
    let out = remote
        .curl(&[
            "-i",
            "-H",
            &format!("Authorization: Bearer {}", task.token),
            "http://api.github.com/repos/acme/api/pulls",
        ])
        .await;
    assert_eq!(out.status, 401, "{}", out.body);
    collected.add("answer after the task ended", out.body);
    let listed = task_cli(&service.url(), Some(ADMIN_TOKEN), &["list"]);
    collected.add("task list output", listed.json.to_string());
    collected.add("task list stderr", listed.stderr);
    let refused = task_cli(&service.url(), Some(&task.token), &["list"]);
    assert_ne!(refused.code, 0);
    collected.add("task list with a task token", refused.stderr);

    // An error message about the credential configuration: the file the
    // refused reload read.
    let validate = std::process::Command::new(tollgate_e2e::tollgate_bin())
        .args(["validate", "--config"])
        .arg(tg.path("tollgate.yaml"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert_eq!(validate.status.code(), Some(64));
    collected.add(
        "validate error",
        String::from_utf8_lossy(&validate.stderr).into_owned(),
    );

    tg.wait_audit(|l| l["reason"] == "credential_not_bound");
    // The WebSockets' lines are written when they close.
    tg.wait_audit(|l| l["status"] == 101);
    remote.wait_audit(|l| l["status"] == 101);
    collect_process(&mut collected, "run", tg.logs(), tg.stdout_text());
    collect_process(
        &mut collected,
        "remote run",
        remote.logs(),
        remote.stdout_text(),
    );
    collect_process(
        &mut collected,
        "decision",
        service.logs(),
        service.stdout_text(),
    );

    let mut all = secrets.all();
    all.extend([reloaded.as_str(), task.token.as_str(), ADMIN_TOKEN]);
    assert_no_secrets(&all, &collected);
}

#[test]
fn the_checker_finds_a_secret_inside_an_encoded_value() {
    use base64::Engine as _;
    let secret = "s3cr3t-value-0123";
    for prefix in ["", "u", "us", "user:"] {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{secret}:tail"));
        let mut collected = Collected::new();
        collected.add("header", format!("Authorization: Basic {basic}"));
        let caught = std::panic::catch_unwind(|| assert_no_secrets(&[secret], &collected));
        assert!(caught.is_err(), "missed with prefix {prefix:?}");
    }
    let mut collected = Collected::new();
    collected.add("percent-encoded", "?q=s3cr3t-value-0123%21".to_string());
    assert!(
        std::panic::catch_unwind(|| assert_no_secrets(&["s3cr3t-value-0123!"], &collected))
            .is_err()
    );
    let mut clean = Collected::new();
    clean.add("log", "nothing to see");
    assert_no_secrets(&[secret], &clean);
    assert!(leak_forms(secret).len() >= 4);
}
