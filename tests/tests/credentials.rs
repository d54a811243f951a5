//! Just-in-time credentials through the proxy: whatever the agent sends is
//! stripped, the credential the permitting policy names is injected (each
//! injection style checked at a real upstream), only toward the tools it is
//! bound to, and a rotated secret is used by the very next request.

use std::path::{Path, PathBuf};

use tollgate_e2e::{
    DecisionService, Seen, Setup, TestPki, Tollgate, Upstream, CODER, HARNESS_CREDENTIALS,
};

/// One policy per injection style, each on its own GitHub action; the
/// bearer credential again on Slack, which it is not bound to; an
/// unreadable credential on `repos.get`; no credential on `commits.list`.
fn policies() -> Vec<(String, String)> {
    let permit = |id: &str, credential: Option<&str>, action: &str| {
        let annotation = credential.map_or(String::new(), |c| format!("@credential(\"{c}\")\n"));
        format!(
            "@id(\"{id}\")\n{annotation}permit (principal == Workload::\"{CODER}\", action == Action::\"{action}\", resource);\n"
        )
    };
    let text = [
        permit("bearer", Some("gh-bearer"), "github:pulls.list"),
        permit("basic", Some("gh-basic"), "github:pulls.get"),
        permit("header", Some("gh-header"), "github:issues.list"),
        permit("query", Some("gh-query"), "github:issues.get"),
        permit("none", None, "github:commits.list"),
        permit("broken", Some("gh-broken"), "github:repos.get"),
        permit("wrong-tool", Some("gh-bearer"), "slack:auth.test"),
    ]
    .concat();
    vec![("test.cedar".into(), text)]
}

/// The secret files, as Kubernetes mounts them: a `..data` symlink to a
/// timestamped folder, and one symlink per key into `..data`.
struct Secrets {
    dir: tempfile::TempDir,
    bearer: String,
    user: String,
    password: String,
    header: String,
    query: String,
    version: u32,
}

impl Secrets {
    fn new() -> Secrets {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Secrets {
            dir,
            bearer: tollgate_e2e::random_secret("bearer"),
            user: tollgate_e2e::random_secret("user"),
            password: tollgate_e2e::random_secret("password"),
            header: tollgate_e2e::random_secret("header"),
            query: tollgate_e2e::random_secret("query"),
            version: 0,
        };
        std::fs::write(s.file("bearer-token"), format!("{}\n", s.bearer)).unwrap();
        std::fs::write(s.file("header-token"), &s.header).unwrap();
        std::fs::write(s.file("query-token"), &s.query).unwrap();
        std::fs::create_dir(s.file("basic")).unwrap();
        s.swap_basic();
        s
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write the current user/password into a new version folder and point
    /// `..data` at it in one rename, as the kubelet does.
    fn swap_basic(&mut self) {
        self.version += 1;
        let basic = self.file("basic");
        let version = format!("..2025_{}", self.version);
        std::fs::create_dir(basic.join(&version)).unwrap();
        std::fs::write(basic.join(&version).join("username"), &self.user).unwrap();
        std::fs::write(basic.join(&version).join("password"), &self.password).unwrap();
        std::os::unix::fs::symlink(&version, basic.join("..data_tmp")).unwrap();
        std::fs::rename(basic.join("..data_tmp"), basic.join("..data")).unwrap();
        for key in ["username", "password"] {
            if !basic.join(key).exists() {
                std::os::unix::fs::symlink(format!("..data/{key}"), basic.join(key)).unwrap();
            }
        }
    }

    fn yaml(&self) -> String {
        let p = |name: &str| self.file(name).display().to_string();
        format!(
            "credentials:
  gh-bearer: {{ file: \"{}\", services: [github] }}
  gh-basic: {{ dir: \"{}\", inject: basic, services: [github] }}
  gh-header:
    file: \"{}\"
    inject: {{ header: {{ name: X-Upstream-Token, template: \"token {{value}}\" }} }}
    services: [github]
  gh-query: {{ file: \"{}\", inject: {{ query: {{ param: access_token }} }}, services: [github] }}
  gh-broken: {{ file: \"{}\", services: [github] }}
",
            p("bearer-token"),
            p("basic"),
            p("header-token"),
            p("query-token"),
            p("missing"),
        )
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

const AGENT_HEADERS: [&str; 8] = [
    "-H",
    "Authorization: Bearer agent-fake-key",
    "-H",
    "Cookie: session=agent-cookie",
    "-H",
    "X-Api-Key: agent-api-key",
    "-H",
    "X-Agent-Trace: kept",
];

fn setup(upstream: &Upstream, secrets: &Secrets) -> Setup {
    Setup {
        policies: Some(policies()),
        resolve: vec![
            ("api.github.com:80".into(), upstream.addr),
            ("slack.com:80".into(), upstream.addr),
        ],
        extra_yaml: secrets.yaml(),
        ..Setup::default()
    }
}

/// Nothing the agent sent as a credential reached the upstream.
fn assert_agent_credentials_gone(seen: &Seen) {
    for (name, value) in &seen.headers {
        assert!(
            !value.contains("agent-"),
            "the agent's {name} went upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(seen.header("x-agent-trace"), Some("kept"));
}

async fn get(tg: &Tollgate, url: &str) -> tollgate_e2e::CurlOutput {
    let mut args = AGENT_HEADERS.to_vec();
    args.push(url);
    tg.curl(&args).await
}

#[tokio::test]
async fn each_injection_style_replaces_the_agents_credentials() {
    let upstream = Upstream::http().await;
    let secrets = Secrets::new();
    let tg = Tollgate::start(setup(&upstream, &secrets));
    let base = "http://api.github.com/repos/acme/api";
    let cases = [
        (
            format!("{base}/pulls"),
            "authorization",
            format!("Bearer {}", secrets.bearer),
        ),
        (
            format!("{base}/pulls/7"),
            "authorization",
            basic(&secrets.user, &secrets.password),
        ),
        (
            format!("{base}/issues"),
            "x-upstream-token",
            format!("token {}", secrets.header),
        ),
    ];
    for (i, (url, header, want)) in cases.iter().enumerate() {
        let out = get(&tg, url).await;
        assert_eq!(out.status, 200, "{url}: {}\n{}", out.body, tg.logs());
        let seen = &upstream.requests()[i];
        assert_eq!(seen.header(header), Some(want.as_str()), "{url}");
        assert_agent_credentials_gone(seen);
    }

    // Query: the agent's own access_token (however spelled) is replaced.
    let out = get(
        &tg,
        &format!("{base}/issues/3?state=open&access_token=agent-q&access%5Ftoken=agent-q2"),
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(
        seen.path_and_query,
        format!(
            "/repos/acme/api/issues/3?state=open&access_token={}",
            secrets.query
        )
    );
    assert_eq!(seen.header("authorization"), None);
    assert_agent_credentials_gone(&seen);

    // A permit naming no credential: the agent's are stripped all the same.
    let out = get(&tg, &format!("{base}/commits")).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.header("authorization"), None);
    assert_agent_credentials_gone(&seen);
    assert_eq!(upstream.count(), 5);
}

#[tokio::test]
async fn a_credential_never_goes_to_a_tool_outside_its_binding() {
    let upstream = Upstream::http().await;
    let secrets = Secrets::new();
    let tg = Tollgate::start(setup(&upstream, &secrets));
    // Policy allows Slack's auth.test with the GitHub-bound credential.
    let out = get(&tg, "http://slack.com/api/auth.test").await;
    assert_eq!(out.status, 403, "{}", out.body);
    let body = out.json();
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["reason"], "credential_not_bound");
    assert!(
        body["message"].as_str().unwrap().contains("`gh-bearer`"),
        "{body}"
    );
    assert_eq!(upstream.count(), 0, "the request was forwarded");

    let line = tg.wait_audit(|l| l["action"] == "slack:auth.test");
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["reason"], "credential_not_bound");
    assert_eq!(line["status"], 403);
    assert_eq!(line["decision_id"], body["decision_id"]);
}

#[tokio::test]
async fn an_unreadable_credential_refuses_the_request() {
    let upstream = Upstream::http().await;
    let secrets = Secrets::new();
    let tg = Tollgate::start(setup(&upstream, &secrets));
    let out = get(&tg, "http://api.github.com/repos/acme/api").await;
    assert_eq!(out.status, 503, "{}", out.body);
    assert_eq!(out.json()["error"], "credential_unavailable");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_rotated_secret_is_used_by_the_very_next_request() {
    let upstream = Upstream::http().await;
    let mut secrets = Secrets::new();
    let tg = Tollgate::start(setup(&upstream, &secrets));
    let pulls = "http://api.github.com/repos/acme/api/pulls";
    let pull = "http://api.github.com/repos/acme/api/pulls/1";
    for round in 0..3 {
        assert_eq!(get(&tg, pulls).await.status, 200);
        assert_eq!(get(&tg, pull).await.status, 200);
        let seen = upstream.requests();
        let n = seen.len();
        assert_eq!(
            seen[n - 2].header("authorization"),
            Some(format!("Bearer {}", secrets.bearer).as_str()),
            "round {round}"
        );
        assert_eq!(
            seen[n - 1].header("authorization"),
            Some(basic(&secrets.user, &secrets.password).as_str()),
            "round {round}"
        );
        // Rewritten in place (same length, so only content differs)…
        secrets.bearer = tollgate_e2e::random_secret("bearer");
        std::fs::write(secrets.file("bearer-token"), &secrets.bearer).unwrap();
        // …and the basic-auth Secret swapped the way the kubelet does it.
        secrets.password = tollgate_e2e::random_secret("password");
        secrets.swap_basic();
    }
}

/// `text` with each line that starts with `prefix` (after its indent)
/// passed through `edit`; `None` drops the line.
fn edit_line(text: &str, prefix: &str, edit: impl Fn(&str) -> Option<String>) -> String {
    text.lines()
        .filter_map(|line| {
            if line.trim_start().starts_with(prefix) {
                edit(line)
            } else {
                Some(line.to_string())
            }
        })
        .map(|line| line + "\n")
        .collect()
}

#[tokio::test]
async fn sighup_reloads_the_credentials_section_and_refuses_a_bad_one() {
    let upstream = Upstream::http().await;
    let secrets = Secrets::new();
    let tg = Tollgate::start(Setup {
        watch: false,
        ..setup(&upstream, &secrets)
    });
    let repo = "http://api.github.com/repos/acme/api";
    let issue = "http://api.github.com/repos/acme/api/issues/3";
    let slack = "http://slack.com/api/auth.test";
    assert_eq!(get(&tg, repo).await.status, 503);
    assert_eq!(get(&tg, issue).await.status, 200);
    assert_eq!(
        get(&tg, slack).await.json()["reason"],
        "credential_not_bound"
    );

    // The operator points the broken credential at a real file, drops the
    // query credential, binds the bearer one to Slack too, and turns on
    // `Via` (which only a restart applies).
    let later = tollgate_e2e::random_secret("later");
    std::fs::write(secrets.file("later-token"), &later).unwrap();
    let missing = secrets.file("missing").display().to_string();
    let later_file = secrets.file("later-token").display().to_string();
    tg.rewrite("tollgate.yaml", |text| {
        let text = edit_line(&text, "gh-bearer:", |l| {
            Some(l.replace("[github]", "[github, slack]"))
        });
        let text = edit_line(&text, "gh-query:", |_| None);
        text.replace(&missing, &later_file)
            .replace("forward:\n", "forward:\n  via: true\n")
    });
    tg.signal("HUP");
    tg.wait_log("catalog, policies and credentials reloaded");
    // The warning names the one section that changed, and only it.
    let logs = tg.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("take effect on restart"))
        .unwrap_or_else(|| panic!("no restart warning:\n{logs}"));
    assert!(warning.ends_with("sections=\"forward\""), "{warning}");

    let out = get(&tg, repo).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {later}").as_str())
    );
    assert_eq!(seen.header("via"), None, "a forward setting was reloaded");
    let out = get(&tg, issue).await;
    assert_eq!(out.status, 503, "{}", out.body);
    assert!(out.body.contains("`gh-query`"), "{}", out.body);
    let out = get(&tg, slack).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(
        upstream.requests().pop().unwrap().header("authorization"),
        Some(format!("Bearer {}", secrets.bearer).as_str())
    );

    // A binding to a tool the catalog lacks: refused whole, with its line;
    // the running credentials keep working.
    tg.rewrite("tollgate.yaml", |text| {
        edit_line(&text, "gh-basic:", |l| {
            Some(l.replace("[github]", "[github, gihtub]"))
        })
    });
    tg.signal("HUP");
    tg.wait_log("reload refused");
    assert!(
        tg.logs()
            .contains("credentials.gh-basic.services: `gihtub` is not a tool in the catalog"),
        "{}",
        tg.logs()
    );
    let out = get(&tg, repo).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(get(&tg, slack).await.status, 200);
    assert_eq!(upstream.count(), 5);
}

#[tokio::test]
async fn intercepted_https_gets_the_credential_too() {
    let pki = TestPki::new();
    let upstream = Upstream::https(pki.server_config(&["api.github.com"])).await;
    let secrets = Secrets::new();
    let tg = Tollgate::start(Setup {
        resolve: vec![("api.github.com:443".into(), upstream.addr)],
        upstream_ca: Some(pki.ca_pem.clone()),
        ..setup(&upstream, &secrets)
    });
    let ca = tg.ca_cert().display().to_string();
    let mut args = vec!["--cacert", ca.as_str()];
    args.extend_from_slice(&AGENT_HEADERS);
    args.push("https://api.github.com/repos/acme/api/pulls");
    let out = tg.curl(&args).await;
    assert_eq!(out.status, 200, "{} {}", out.body, out.stderr);
    let seen = &upstream.requests()[0];
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", secrets.bearer).as_str())
    );
    assert_agent_credentials_gone(seen);
}

#[tokio::test]
async fn in_remote_mode_the_proxy_injects_from_its_own_store() {
    let upstream = Upstream::http().await;
    let secrets = Secrets::new();
    // The decision service knows the policies, and none of the secrets.
    let service = DecisionService::start(Setup {
        policies: Some(policies()),
        ..Setup::default()
    });
    let tg = Tollgate::start(Setup {
        decision_endpoint: Some(service.url()),
        ..setup(&upstream, &secrets)
    });
    let out = get(&tg, "http://api.github.com/repos/acme/api/pulls").await;
    assert_eq!(out.status, 200, "{}\n{}", out.body, tg.logs());
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some(format!("Bearer {}", secrets.bearer).as_str())
    );
    let out = get(&tg, "http://slack.com/api/auth.test").await;
    assert_eq!(out.json()["reason"], "credential_not_bound");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn the_shipped_policies_inject_the_harness_credentials() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup::routing("api.github.com:80", upstream.addr));
    let out = get(&tg, "http://api.github.com/repos/acme/api/pulls").await;
    assert_eq!(out.status, 200, "{}", out.body);
    let (_, value) = HARNESS_CREDENTIALS[0];
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
}

#[test]
fn validate_refuses_a_binding_to_an_unknown_tool_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = tollgate_e2e::repo_root().join("config");
    let config = std::fs::read_to_string(root.join("tollgate.yaml"))
        .unwrap()
        .replace(
            "catalog: catalog",
            &format!("catalog: {}", root.join("catalog").display()),
        )
        .replace(
            "policies: policies",
            &format!("policies: {}", root.join("policies").display()),
        )
        .replace("services: [github]  ", "services: [gihtub]  ");
    let path: &Path = &dir.path().join("tollgate.yaml");
    std::fs::write(path, &config).unwrap();
    let line = config
        .lines()
        .position(|l| l.contains("[gihtub]"))
        .expect("the example config binds a credential to github")
        + 1;
    let out = std::process::Command::new(tollgate_e2e::tollgate_bin())
        .args(["validate", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("tollgate.yaml:{line}:")),
        "{stderr}"
    );
    assert!(
        stderr.contains("`gihtub` is not a tool in the catalog"),
        "{stderr}"
    );
}

/// Two tools whose URLs may carry a signature: `vault` refuses an agent's
/// own (the default), `shares` forwards it (presigned links a security
/// team accepts).
const SIGNED_TOOLS: [(&str, &str); 2] = [
    (
        "vault.yaml",
        "tool: vault\ncredential_query: [sig]\nendpoints:\n  - hosts: [vault.test]\n    routes:\n      - { method: GET, path: \"/f/{name}\", action: files.get, risk: read }\n",
    ),
    (
        "shares.yaml",
        "tool: shares\ncredential_query: [sig]\nagent_query_credentials: forward\nendpoints:\n  - hosts: [shares.test]\n    routes:\n      - { method: GET, path: \"/f/{name}\", action: files.get, risk: read }\n",
    ),
];

#[tokio::test]
async fn an_agents_query_credential_is_refused_unless_its_tool_forwards_them() {
    let upstream = Upstream::http().await;
    let permits = format!(
        "@id(\"files\")\npermit (principal == Workload::\"{CODER}\", action in [Action::\"vault:files.get\", Action::\"shares:files.get\"], resource);\n"
    );
    let tg = Tollgate::start(Setup {
        policies: Some(vec![("files.cedar".into(), permits)]),
        extra_catalog: SIGNED_TOOLS.map(|(f, t)| (f.into(), t.into())).to_vec(),
        resolve: vec![
            ("vault.test:80".into(), upstream.addr),
            ("shares.test:80".into(), upstream.addr),
        ],
        tasks: true,
        ..Setup::default()
    });

    // The tool's own parameter, and one every tool has, however spelled.
    for query in ["x=1&sig=agent-signature", "API%5FKEY=agent-key"] {
        let out = tg.curl(&[&format!("http://vault.test/f/a?{query}")]).await;
        assert_eq!(out.status, 403, "{query}: {}", out.body);
        assert_eq!(out.json()["reason"], "credential_in_query", "{}", out.body);
        assert!(!out.body.contains("agent-"), "{}", out.body);
    }
    let line =
        tg.wait_audit(|l| l["reason"] == "credential_in_query" && l["action"] == "vault:files.get");
    assert_eq!(line["decision"], "deny");
    assert_eq!(upstream.count(), 0, "nothing left");

    // Where the tool forwards them, the presigned link works as sent.
    let out = tg
        .curl(&["http://shares.test/f/a?sig=agent-signature"])
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(
        upstream.requests()[0].path_and_query,
        "/f/a?sig=agent-signature"
    );

    // A task token in such a parameter is tollgate's own: it names the task
    // and goes no further.
    let task = tollgate_e2e::tasks::start_task(&tg.decision_url(), CODER, &[]);
    let out = tg
        .curl(&[&format!("http://vault.test/f/b?x=1&sig={}", task.token)])
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(upstream.requests()[1].path_and_query, "/f/b?x=1");
    let line = tg.wait_audit(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/f/b")));
    assert_eq!(line["task"], task.id.as_str());
    assert_eq!(line["removed_query"], serde_json::json!(["sig"]));
    assert!(!tg.stdout_text().contains(&task.token));
    assert!(!tg.logs().contains("agent-signature"), "{}", tg.logs());
}
