//! Several `tollgate decision` replicas sharing tasks, budgets and
//! revocations through one real Redis: a task started on one is usable,
//! counted and ended on all; a replica that loses Redis refuses task-bound
//! requests rather than guess, and catches up when Redis is back.

use tollgate_e2e::redis::Reply;
use tollgate_e2e::{RedisOptions, RedisServer, Relay};

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
    });
    assert!(
        redis.url().starts_with("rediss://127.0.0.1:"),
        "{}",
        redis.url()
    );
    assert!(redis.ca_file().unwrap().exists());
    let mut client = redis.client().unwrap();
    client.command(&["SET", "fixture:tls", "yes"]).unwrap();
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
