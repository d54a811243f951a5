//! Several `tollgate decision` replicas sharing tasks, budgets and
//! revocations through one real Redis: a task started on one is usable,
//! counted and ended on all; a replica that loses Redis refuses task-bound
//! requests rather than guess, and catches up when Redis is back. Each
//! replica has a proxy deciding on it, as a deployment with a replica per
//! zone would.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_e2e::hygiene::{assert_no_secrets, Collected};
use tollgate_e2e::redis::Reply;
use tollgate_e2e::tasks::{end_task, start_task, task_cli, ADMIN_TOKEN};
use tollgate_e2e::{
    random_secret, send_head, tcp_echo, tollgate_bin, CurlOutput, DecisionService, RedisOptions,
    RedisServer, Relay, Setup, Tollgate, Upstream, CODER,
};

const CATALOG: &str = r#"
tool: items
description: a test service
endpoints:
  - hosts: [items.test]
    routes:
      - { method: GET, path: "/items/{id}", action: items.get, risk: read, resource: "items/{id}" }
      - { method: POST, path: "/items", action: items.create, risk: write, resource: "items" }
      - { method: DELETE, path: "/items/{id}", action: items.delete, risk: prod_change, resource: "items/{id}" }
"#;

const POLICIES: &str = r#"
@id("coder-items")
permit (principal == Workload::"spiffe://cluster.local/ns/agents/sa/coder", action in Action::"items", resource);

@id("coder-tunnels-in-a-task")
permit (principal == Workload::"spiffe://cluster.local/ns/agents/sa/coder", action == Action::"connect", resource)
when { context has task };

@id("writes-need-a-task")
forbid (principal, action in Action::"write", resource) unless { context has task };

@id("no-deletes")
forbid (principal, action in Action::"prod_change", resource);
"#;

const ITEM: &str = "http://items.test/items/7";
const ITEMS: &str = "http://items.test/items";

/// How long anything a user waits for may take here: far more than it
/// should, so a slow machine does not fail a test, yet bounded.
const PATIENCE: Duration = Duration::from_secs(15);

fn setup(upstream: &Upstream) -> Setup {
    Setup {
        extra_catalog: vec![("items.yaml".into(), CATALOG.into())],
        policies: Some(vec![("items.cedar".into(), POLICIES.into())]),
        tasks: true,
        ..Setup::routing("items.test:80", upstream.addr)
    }
}

/// The `state:` section for the Redis at `url`, with `more` lines
/// (indented four spaces) under `redis:`.
fn state(url: &str, more: &str) -> String {
    format!("state:\n  redis:\n    url: \"{url}\"\n{more}")
}

/// One `tollgate decision` replica and a proxy deciding on it.
struct Replica {
    service: DecisionService,
    proxy: Tollgate,
}

impl Replica {
    fn start(upstream: &Upstream, state: String, env: Vec<(String, String)>) -> Replica {
        Replica::start_with(upstream, state, env, String::new())
    }

    /// With `decision_yaml` under the proxy's `decision:`.
    fn start_with(
        upstream: &Upstream,
        state: String,
        env: Vec<(String, String)>,
        decision_yaml: String,
    ) -> Replica {
        let service = DecisionService::start(Setup {
            extra_yaml: state,
            env,
            ..setup(upstream)
        });
        let proxy = Tollgate::start(Setup {
            decision_endpoint: Some(service.url()),
            decision_yaml,
            ..setup(upstream)
        });
        Replica { service, proxy }
    }

    /// Wait until the replica has the store and its proxy follows the
    /// replica's revocations.
    fn wait_connected(&self) {
        self.service.wait_log("state store connected");
        self.proxy.wait_log("following revocations");
    }

    fn url(&self) -> String {
        self.service.url()
    }
}

/// Two replicas on `redis`, each with its proxy, both connected.
fn two_replicas(upstream: &Upstream, redis: &RedisServer) -> (Replica, Replica) {
    let a = Replica::start(upstream, state(&redis.url(), ""), vec![]);
    let b = Replica::start(upstream, state(&redis.url(), ""), vec![]);
    a.wait_connected();
    b.wait_connected();
    (a, b)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// The `reason` of a refusal (empty for anything else).
fn reason(out: &CurlOutput) -> String {
    serde_json::from_str::<Value>(&out.body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(String::from))
        .unwrap_or_default()
}

async fn get(proxy: &Tollgate, token: &str) -> CurlOutput {
    proxy.curl(&["-H", &bearer(token), ITEM]).await
}

async fn post(proxy: &Tollgate, token: &str) -> CurlOutput {
    proxy
        .curl(&["-X", "POST", "-H", &bearer(token), "-d", "{}", ITEMS])
        .await
}

/// Send `args` through `proxy` until `done` holds for the answer, or
/// [`PATIENCE`] has passed; the last answer.
async fn until(proxy: &Tollgate, args: &[&str], done: impl Fn(&CurlOutput) -> bool) -> CurlOutput {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = proxy.curl(args).await;
        if done(&out) || Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The answer once `proxy` has its replica back after a restart: a
/// decision rather than `decision_unavailable`.
async fn decided(proxy: &Tollgate, args: &[&str]) -> CurlOutput {
    until(proxy, args, |out| reason(out) != "decision_unavailable").await
}

async fn readyz(service: &DecisionService) -> u16 {
    tollgate_e2e::curl(&[&format!("http://{}/readyz", service.admin)])
        .await
        .status
}

async fn wait_readyz(service: &DecisionService, want: u16) {
    let deadline = Instant::now() + PATIENCE;
    while readyz(service).await != want {
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {want}:\n{}",
            service.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A CONNECT tunnel through `proxy` to `echo` under the task `token`,
/// seen to carry bytes both ways.
async fn open_tunnel(proxy: &Tollgate, echo: SocketAddr, token: &str) -> TcpStream {
    let (mut tunnel, head) = send_head(
        proxy.proxy,
        &format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n"),
        &[&format!("Proxy-Authorization: Bearer {token}")],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnel.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    tunnel
}

/// `proxy` closes `tunnel` within [`PATIENCE`], and its audit line says it
/// was for the end of task `id`.
async fn closed_for_the_end(proxy: &Tollgate, tunnel: TcpStream, id: &str) {
    assert!(
        closes(tunnel).await,
        "the tunnel stayed open after its task ended"
    );
    let line = proxy.wait_audit(|l| l["mode"] == "tunnel" && l["task"] == id);
    assert!(
        line["error"].as_str().unwrap_or("").contains("ended"),
        "{line}"
    );
}

/// Whether the proxy closes `tunnel` within [`PATIENCE`].
async fn closes(mut tunnel: TcpStream) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, tunnel.read_to_end(&mut rest))
        .await
        .is_ok()
}

#[test]
fn the_redis_fixture_keeps_its_data_over_a_restart() {
    let mut redis = RedisServer::start();
    let mut client = redis.client().unwrap();
    assert_eq!(
        client.command(&["SET", "fixture:kept", "yes"]).unwrap(),
        Reply::Status("OK".into())
    );
    redis.stop();
    assert!(redis.client().is_err(), "stopped, yet it answers");
    redis.start_again();
    let kept = redis.client().unwrap().command(&["GET", "fixture:kept"]);
    assert_eq!(
        kept.unwrap().text().as_deref(),
        Some("yes"),
        "{}",
        redis.logs()
    );
    assert_eq!(redis.keys("fixture:*"), ["fixture:kept"]);
}

#[test]
fn the_redis_fixture_speaks_tls_to_its_acl_user_only() {
    let redis = RedisServer::with(RedisOptions {
        user: Some(("tollgate".into(), "fixture-password-0123".into())),
        tls: true,
        ..RedisOptions::default()
    });
    assert!(
        redis.url().starts_with("rediss://127.0.0.1:"),
        "{}",
        redis.url()
    );
    assert!(redis.ca_file().unwrap().exists());
    let mut client = redis.client().unwrap();
    client.command(&["SET", "fixture:tls", "yes"]).unwrap();
    let user = client.command(&["AUTH", "tollgate", "fixture-password-0123"]);
    assert_eq!(user.unwrap(), Reply::Status("OK".into()));
    assert_eq!(redis.keys("fixture:*"), ["fixture:tls"]);
    let wrong = client
        .command(&["AUTH", "tollgate", "not-the-password"])
        .unwrap();
    assert!(
        matches!(&wrong, Reply::Error(e) if e.starts_with("WRONGPASS")),
        "{wrong:?}"
    );
    // The default user is off: no way in without the password.
    let anonymous = client.command(&["AUTH", "default", ""]).unwrap();
    assert!(matches!(anonymous, Reply::Error(_)), "{anonymous:?}");
}

#[test]
fn the_relay_cuts_every_connection_and_restores() {
    let redis = RedisServer::start();
    let relay = Relay::to(redis.addr());
    let ping = |client: &mut tollgate_e2e::redis::RedisClient| {
        client
            .command(&["PING"])
            .map(|r| r.text().unwrap_or_default())
    };
    let mut before = redis.client_via(relay.addr).unwrap();
    assert_eq!(ping(&mut before).unwrap(), "PONG");
    assert_eq!(relay.open_connections(), 1);

    relay.cut();
    assert!(
        ping(&mut before).is_err(),
        "a relayed connection outlived the cut"
    );
    let during = redis.client_via(relay.addr).and_then(|mut c| ping(&mut c));
    assert!(during.is_err(), "a new connection got through: {during:?}");
    // Direct connections are not the relay's business.
    assert_eq!(ping(&mut redis.client().unwrap()).unwrap(), "PONG");

    relay.restore();
    let mut after = redis.client_via(relay.addr).unwrap();
    assert_eq!(ping(&mut after).unwrap(), "PONG");
}

#[tokio::test]
async fn a_task_started_on_one_replica_is_used_and_ended_on_the_other() {
    let redis = RedisServer::start();
    let upstream = Upstream::http().await;
    let echo = tcp_echo().await;
    let (a, b) = two_replicas(&upstream, &redis);

    let task = start_task(&a.url(), CODER, &["--ttl", "10m"]);
    // B never saw the start: it reads the task from the store.
    for proxy in [&b.proxy, &a.proxy] {
        let out = get(proxy, &task.token).await;
        assert_eq!(out.status, 200, "{}", out.body);
    }
    let shown = task_cli(&b.url(), Some(ADMIN_TOKEN), &["get", &task.id]);
    assert_eq!(shown.json["state"], "active", "{}", shown.stderr);
    let tunnel = open_tunnel(&a.proxy, echo, &task.token).await;

    let ended = end_task(&b.url(), &task.id);
    assert_eq!(ended["state"], "ended");
    // A's proxy hears of it from A, which heard of it through the store.
    a.proxy.wait_log("task ended; its token is refused");
    b.proxy.wait_log("task ended; its token is refused");
    for proxy in [&a.proxy, &b.proxy] {
        let out = get(proxy, &task.token).await;
        assert_eq!(out.status, 401, "{}", out.body);
        assert_eq!(reason(&out), "task_ended");
    }
    closed_for_the_end(&a.proxy, tunnel, &task.id).await;
    let listed = task_cli(&a.url(), Some(ADMIN_TOKEN), &["list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.json["tasks"][0]["id"], task.id.as_str());
    assert_eq!(listed.json["tasks"][0]["state"], "ended");
    assert_eq!(upstream.count(), 2, "nothing after the end");
}

#[tokio::test]
async fn a_budget_is_exact_across_replicas_under_concurrent_load() {
    const LIMIT: usize = 20;
    const SENT: usize = 60;
    let redis = RedisServer::start();
    let upstream = Upstream::http().await;
    // Sixty requests at once on a small machine may take a replica longer
    // than the harness's 500 ms to decide; a proxy timing out would refuse
    // with decision_unavailable and blur the count this test is about.
    let patient = || "  timeout: 5s\n".to_string();
    let a = Replica::start_with(&upstream, state(&redis.url(), ""), vec![], patient());
    let b = Replica::start_with(&upstream, state(&redis.url(), ""), vec![], patient());
    a.wait_connected();
    b.wait_connected();

    let task = start_task(&a.url(), CODER, &["--budget", &format!("write={LIMIT}")]);
    let auth = bearer(&task.token);
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..SENT {
        let proxy = [&a, &b][i % 2].proxy.proxy_url();
        let auth = auth.clone();
        sent.spawn(async move {
            let args = ["-x", &proxy, "-X", "POST", "-H", &auth, "-d", "{}", ITEMS];
            tollgate_e2e::curl(&args).await
        });
    }
    let (mut allowed, mut exhausted, mut other) = (0, 0, Vec::new());
    while let Some(out) = sent.join_next().await {
        let out = out.unwrap();
        match (out.status, reason(&out).as_str()) {
            (200, _) => allowed += 1,
            (403, "budget_exhausted") => exhausted += 1,
            _ => other.push(format!("{} {}", out.status, out.body)),
        }
    }
    assert!(
        other.is_empty(),
        "neither allowed nor over budget: {other:?}"
    );
    assert_eq!(allowed, LIMIT, "{exhausted} over budget");
    assert_eq!(exhausted, SENT - LIMIT);
    let posts = upstream.requests();
    let posts = posts.iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, LIMIT, "writes that reached the upstream");

    for replica in [&a, &b] {
        let shown = task_cli(&replica.url(), Some(ADMIN_TOKEN), &["get", &task.id]);
        assert_eq!(shown.code, 0, "{}", shown.stderr);
        let write = &shown.json["budgets"]["write"];
        assert_eq!(write["used"], LIMIT, "{}", shown.json);
        assert_eq!(write["limit"], LIMIT, "{}", shown.json);
    }
}

#[tokio::test]
async fn restarting_every_replica_loses_no_task() {
    let redis = RedisServer::start();
    let upstream = Upstream::http().await;
    let (mut a, mut b) = two_replicas(&upstream, &redis);
    let task = start_task(&a.url(), CODER, &["--ttl", "10m", "--budget", "write=3"]);
    assert_eq!(post(&a.proxy, &task.token).await.status, 200);

    // Every replica down at once: no memory of the task is left but the
    // store's.
    a.service.stop();
    b.service.stop();
    a.service.restart();
    b.service.restart();
    a.service.wait_log("state store connected");
    b.service.wait_log("state store connected");

    let auth = bearer(&task.token);
    for replica in [&a, &b] {
        let out = decided(&replica.proxy, &["-H", &auth, ITEM]).await;
        assert_eq!(out.status, 200, "{}\n{}", out.body, replica.service.logs());
    }
    // The budget kept the write made before the restart.
    for proxy in [&b.proxy, &a.proxy] {
        assert_eq!(post(proxy, &task.token).await.status, 200);
    }
    let out = post(&b.proxy, &task.token).await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(reason(&out), "budget_exhausted");

    end_task(&b.url(), &task.id);
    for replica in [&a, &b] {
        replica.proxy.wait_log("task ended; its token is refused");
        let out = get(&replica.proxy, &task.token).await;
        assert_eq!(out.status, 401, "{}", out.body);
        assert_eq!(reason(&out), "task_ended");
    }
    assert_eq!(upstream.count(), 5);
}

#[tokio::test]
async fn a_replica_cut_off_from_redis_refuses_tasks_and_catches_up_when_it_is_back() {
    let redis = RedisServer::start();
    let relay = Relay::to(redis.addr());
    let upstream = Upstream::http().await;
    let echo = tcp_echo().await;
    let a = Replica::start(&upstream, state(&redis.url_via(relay.addr), ""), vec![]);
    let b = Replica::start(&upstream, state(&redis.url(), ""), vec![]);
    a.wait_connected();
    b.wait_connected();

    let task = start_task(&b.url(), CODER, &["--ttl", "10m"]);
    const SHORT_TTL: Duration = Duration::from_secs(5);
    let short_ttl = format!("{}s", SHORT_TTL.as_secs());
    let short = start_task(&b.url(), CODER, &["--ttl", &short_ttl]);
    let short_over = Instant::now() + SHORT_TTL;
    // Both in use through A, its proxy's cache warm with them.
    for token in [&task.token, &short.token] {
        let out = get(&a.proxy, token).await;
        assert_eq!(out.status, 200, "{}", out.body);
    }
    let tunnel = open_tunnel(&a.proxy, echo, &task.token).await;

    relay.cut();
    wait_readyz(&a.service, 503).await;
    a.service.wait_log("state store unreachable");
    assert_eq!(readyz(&b.service).await, 200, "B has its store");

    // Whether the task still holds cannot be known without the store.
    let auth = bearer(&task.token);
    let out = until(&a.proxy, &["-H", &auth, ITEM], |out| out.status != 200).await;
    assert_eq!(out.status, 503, "{}", out.body);
    assert_eq!(reason(&out), "state_unavailable");
    // Without a task, policy alone decides, as ever.
    let out = a.proxy.curl(&["http://items.test/items/8"]).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let out = a
        .proxy
        .curl(&["-X", "DELETE", "http://items.test/items/8"])
        .await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(reason(&out), "forbidden");
    // Task administration on A says what is wrong rather than half-work.
    for args in [
        vec!["list"],
        vec!["get", &task.id],
        vec!["start", "--workload", CODER],
        vec!["end", &task.id],
    ] {
        let out = task_cli(&a.url(), Some(ADMIN_TOKEN), &args);
        assert_ne!(out.code, 0, "task {args:?} worked on A without its store");
        assert!(
            out.stderr.contains("unavailable"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("state store"),
            "{args:?}: {}",
            out.stderr
        );
    }

    // Ended elsewhere while A cannot hear of it.
    end_task(&b.url(), &task.id);
    b.proxy.wait_log("task ended; its token is refused");
    assert_eq!(get(&b.proxy, &task.token).await.status, 401);
    let out = get(&a.proxy, &task.token).await;
    assert_eq!(out.status, 503, "{}", out.body);
    assert_eq!(reason(&out), "state_unavailable");
    // And the short task's TTL passes during the outage.
    tokio::time::sleep_until((short_over + Duration::from_millis(500)).into()).await;

    relay.restore();
    wait_readyz(&a.service, 200).await;
    let out = until(&a.proxy, &["-H", &auth, ITEM], |out| out.status != 503).await;
    assert_eq!(out.status, 401, "{}", out.body);
    assert_eq!(reason(&out), "task_ended");
    // Closed for the task's end, not for the outage.
    closed_for_the_end(&a.proxy, tunnel, &task.id).await;
    for proxy in [&a.proxy, &b.proxy] {
        let out = get(proxy, &short.token).await;
        assert_eq!(out.status, 401, "{}", out.body);
        assert_eq!(reason(&out), "task_ended");
    }
    let listed = task_cli(&a.url(), Some(ADMIN_TOKEN), &["get", &task.id]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.json["state"], "ended");
    // The two warm-up reads and the read without a task: nothing else.
    assert_eq!(upstream.count(), 3);

    // Back for good: a task ended on B from now on reaches A as it
    // happens, not only through the catching up.
    ended_on_b_closes_on_a(&a, &b, echo).await;
}

/// A task started on A, carried by a tunnel through A's proxy and ended
/// on B: A's proxy refuses it and closes the tunnel.
async fn ended_on_b_closes_on_a(a: &Replica, b: &Replica, echo: SocketAddr) {
    let task = start_task(&a.url(), CODER, &[]);
    let tunnel = open_tunnel(&a.proxy, echo, &task.token).await;
    end_task(&b.url(), &task.id);
    assert!(
        closes(tunnel).await,
        "the tunnel on A stayed open after the task ended on B"
    );
    let out = get(&a.proxy, &task.token).await;
    assert_eq!(out.status, 401, "{}", out.body);
    assert_eq!(reason(&out), "task_ended");
}

#[tokio::test]
async fn a_replica_started_before_redis_can_be_reached_serves_tasks_once_it_can() {
    let redis = RedisServer::start();
    let relay = Relay::to(redis.addr());
    relay.cut();
    let upstream = Upstream::http().await;
    let echo = tcp_echo().await;
    let a = Replica::start(&upstream, state(&redis.url_via(relay.addr), ""), vec![]);
    let b = Replica::start(&upstream, state(&redis.url(), ""), vec![]);
    b.wait_connected();
    let task = start_task(&b.url(), CODER, &[]);
    wait_readyz(&a.service, 503).await;
    let out = decided(&a.proxy, &["-H", &bearer(&task.token), ITEM]).await;
    assert_eq!(out.status, 503, "{}", out.body);
    assert_eq!(reason(&out), "state_unavailable");

    relay.restore();
    wait_readyz(&a.service, 200).await;
    a.wait_connected();
    let out = decided(&a.proxy, &["-H", &bearer(&task.token), ITEM]).await;
    assert_eq!(out.status, 200, "{}", out.body);
    ended_on_b_closes_on_a(&a, &b, echo).await;
}

#[tokio::test]
async fn a_redis_restart_keeps_every_task_and_the_replicas_follow_it_again() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::http().await;
    let echo = tcp_echo().await;
    let (a, b) = two_replicas(&upstream, &redis);
    let task = start_task(&a.url(), CODER, &["--budget", "write=2"]);
    assert_eq!(post(&b.proxy, &task.token).await.status, 200);

    redis.stop();
    for replica in [&a, &b] {
        wait_readyz(&replica.service, 503).await;
        replica.service.wait_log("state store unreachable");
    }
    redis.start_again();
    for replica in [&a, &b] {
        wait_readyz(&replica.service, 200).await;
    }
    // Still there, with its budget as used before.
    let auth = bearer(&task.token);
    let out = decided(&a.proxy, &["-H", &auth, ITEM]).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(post(&a.proxy, &task.token).await.status, 200);
    let out = decided(&b.proxy, &["-X", "POST", "-H", &auth, "-d", "{}", ITEMS]).await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(reason(&out), "budget_exhausted");

    ended_on_b_closes_on_a(&a, &b, echo).await;
}

#[tokio::test]
async fn replicas_sign_in_over_tls_and_never_show_the_password() {
    const PREFIX: &str = "tg-replicas-e2e";
    let password = random_secret("redis-password");
    let wrong = random_secret("wrong-redis-password");
    // The user docs/state.md tells operators to make, with its key
    // pattern and channels under this prefix.
    let rules = "~{PREFIX}:* &{PREFIX}:revocations &{PREFIX}:approvals -@all +@read +@write \
                 +@pubsub +@scripting +@connection +@transaction -@dangerous"
        .replace("PREFIX", PREFIX);
    let redis = RedisServer::with(RedisOptions {
        user: Some(("tollgate".into(), password.clone())),
        rules: Some(rules),
        tls: true,
    });
    let upstream = Upstream::http().await;
    let ca = redis.ca_file().unwrap();
    let redis_yaml = |password: &str| {
        format!(
            "    username: tollgate\n    password: {password}\n    ca_file: \"{}\"\n    \
             key_prefix: {PREFIX}\n",
            ca.display()
        )
    };
    let from_env = redis_yaml("{ env: TOLLGATE_REDIS_PASSWORD }");
    let with = |password: &str| vec![("TOLLGATE_REDIS_PASSWORD".into(), password.to_string())];
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("redis-password");
    std::fs::write(&password_file, &password).unwrap();
    let from_file = redis_yaml(&format!("{{ file: \"{}\" }}", password_file.display()));

    let a = Replica::start(&upstream, state(&redis.url(), &from_env), with(&password));
    let b = Replica::start(&upstream, state(&redis.url(), &from_file), vec![]);
    a.wait_connected();
    b.wait_connected();
    let task = start_task(&a.url(), CODER, &["--budget", "write=1"]);
    let out = get(&b.proxy, &task.token).await;
    assert_eq!(out.status, 200, "{}", out.body);
    // Budgets too work within the user's rights.
    assert_eq!(post(&b.proxy, &task.token).await.status, 200);
    let out = post(&a.proxy, &task.token).await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(reason(&out), "budget_exhausted");
    // The store holds the task under the configured prefix (as a hash tag
    // or not), and keeps the token out of its key names.
    let keys = redis.keys("*");
    assert!(!keys.is_empty(), "nothing stored in Redis");
    let prefixed = |k: &String| k.trim_start_matches('{').starts_with(PREFIX);
    assert!(keys.iter().all(prefixed), "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains(&task.token)), "{keys:?}");

    let c = Replica::start(&upstream, state(&redis.url(), &from_env), with(&wrong));
    // Why, on the line about the store: Redis's WRONGPASS, or the
    // replica's own words for a refused sign-in.
    let says_why = |line: &str| {
        let lower = line.to_lowercase();
        line.contains("state store")
            && ["wrongpass", "auth", "password"]
                .iter()
                .any(|w| lower.contains(w))
    };
    let deadline = Instant::now() + PATIENCE;
    while !c.service.logs().lines().any(says_why) {
        assert!(
            Instant::now() < deadline,
            "no word of the refused sign-in:\n{}",
            c.service.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!c.service.logs().contains("state store connected"));
    assert_eq!(readyz(&c.service).await, 503);
    let auth = bearer(&task.token);
    let refused = decided(&c.proxy, &["-H", &auth, ITEM]).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(reason(&refused), "state_unavailable");
    let listed_on_c = task_cli(&c.url(), Some(ADMIN_TOKEN), &["list"]);
    assert_ne!(listed_on_c.code, 0);
    assert_eq!(
        readyz(&c.service).await,
        503,
        "signed in with a wrong password"
    );

    end_task(&b.url(), &task.id);
    a.proxy.wait_log("task ended; its token is refused");
    let ended = get(&a.proxy, &task.token).await;
    assert_eq!(ended.status, 401, "{}", ended.body);
    let shown = task_cli(&a.url(), Some(ADMIN_TOKEN), &["get", &task.id]);

    let mut collected = Collected::new();
    for (name, replica) in [("A", &a), ("B", &b), ("C", &c)] {
        collected.add(format!("{name} service log"), replica.service.logs());
        collected.add(
            format!("{name} service audit"),
            replica.service.stdout_text(),
        );
        collected.add(format!("{name} proxy log"), replica.proxy.logs());
        collected.add(format!("{name} proxy audit"), replica.proxy.stdout_text());
        for path in ["readyz", "metrics"] {
            let url = format!("http://{}/{path}", replica.service.admin);
            let answer = tollgate_e2e::curl(&[&url]).await.body;
            collected.add(format!("{name} /{path}"), answer);
        }
    }
    for (label, out) in [("refusal on C", &refused), ("refusal on A", &ended)] {
        collected.add(label, out.body.clone());
    }
    for (label, out) in [("task list on C", &listed_on_c), ("task get on A", &shown)] {
        collected.add(format!("{label} (stdout)"), out.json.to_string());
        collected.add(format!("{label} (stderr)"), out.stderr.clone());
    }
    assert_no_secrets(&[&password, &wrong], &collected);
}

#[tokio::test]
async fn a_password_in_the_redis_url_is_refused_at_load() {
    // A URL is printed, logged and pasted; a password has its own field.
    let redis = RedisServer::start();
    let upstream = Upstream::http().await;
    // A folder that works, to break one line of.
    let good = DecisionService::start(Setup {
        extra_yaml: state(&redis.url(), ""),
        ..setup(&upstream)
    });
    let config = std::fs::read_to_string(good.path("tollgate.yaml")).unwrap();
    let secret = random_secret("url-password");
    let port = redis.port;
    let mut collected = Collected::new();
    for url in [
        format!("redis://:{secret}@127.0.0.1:{port}/0"),
        format!("redis://tollgate:{secret}@127.0.0.1:{port}/0"),
        format!("rediss://tollgate:{secret}@127.0.0.1:{port}/0"),
    ] {
        let bad = good.path("bad.yaml");
        std::fs::write(&bad, config.replace(&redis.url(), &url)).unwrap();
        let validated = Command::new(tollgate_bin())
            .args(["validate", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&validated.stderr).into_owned();
        assert_eq!(validated.status.code(), Some(64), "validate: {stderr}");
        assert!(stderr.to_lowercase().contains("password"), "{stderr}");
        collected.add("validate (stderr)", stderr);
        collected.add(
            "validate (stdout)",
            String::from_utf8_lossy(&validated.stdout),
        );

        // The service itself stops at load instead of serving.
        let mut decision = Command::new(tollgate_bin())
            .args(["decision", "--workers", "1", "--config"])
            .arg(&bad)
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        while decision.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = decision.kill();
                let _ = decision.wait();
                panic!("tollgate decision started with a password in its Redis URL");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = decision.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(64), "decision: {stderr}");
        collected.add("decision (stderr)", stderr);
        collected.add("decision (stdout)", String::from_utf8_lossy(&out.stdout));
    }
    assert_no_secrets(&[&secret], &collected);
}

#[tokio::test]
async fn a_proxy_deciding_in_process_shares_the_store_with_the_replicas() {
    // `tollgate run` with tasks and no remote decision is a replica of its
    // own: it decides under the tasks in Redis and closes its own tunnels
    // when a task ends anywhere.
    let redis = RedisServer::start();
    let upstream = Upstream::http().await;
    let echo = tcp_echo().await;
    let embedded = Tollgate::start(Setup {
        extra_yaml: state(&redis.url(), ""),
        ..setup(&upstream)
    });
    let b = Replica::start(&upstream, state(&redis.url(), ""), vec![]);
    embedded.wait_log("state store connected");
    b.wait_connected();

    let budgets = ["--budget", "write=1", "--budget", "prod_change=1"];
    let task = start_task(&embedded.decision_url(), CODER, &budgets);
    assert_eq!(post(&b.proxy, &task.token).await.status, 200);
    let out = post(&embedded, &task.token).await;
    assert_eq!(out.status, 403, "one budget across both: {}", out.body);
    assert_eq!(reason(&out), "budget_exhausted");
    // A request policy refuses uses none of its class's budget, though
    // Redis takes the unit when it admits the request.
    for proxy in [&embedded, &b.proxy] {
        let delete = ["-X", "DELETE", "-H", &bearer(&task.token), ITEM];
        let out = proxy.curl(&delete).await;
        assert_eq!(reason(&out), "forbidden", "{}", out.body);
    }
    let shown = task_cli(&b.url(), Some(ADMIN_TOKEN), &["get", &task.id]);
    let budgets = &shown.json["budgets"];
    assert_eq!(budgets["prod_change"]["used"], 0, "{}", shown.json);
    assert_eq!(budgets["write"]["used"], 1, "{}", shown.json);
    assert_eq!(get(&embedded, &task.token).await.status, 200);
    let tunnel = open_tunnel(&embedded, echo, &task.token).await;

    end_task(&b.url(), &task.id);
    assert!(
        closes(tunnel).await,
        "the in-process proxy kept the tunnel of a task ended on a replica"
    );
    let out = get(&embedded, &task.token).await;
    assert_eq!(out.status, 401, "{}", out.body);
    assert_eq!(reason(&out), "task_ended");
}
