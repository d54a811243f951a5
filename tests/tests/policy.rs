//! Policy behaviour end to end: evaluation errors deny, reloads are atomic
//! and a broken policy set never replaces a working one.

use tollgate_e2e::{shipped_policies, Setup, Tollgate, Upstream};

const PULLS: &str = "http://api.github.com/repos/acme/api/pulls";

fn github_at(upstream: &Upstream) -> Setup {
    Setup::routing("api.github.com:80", upstream.addr)
}

#[tokio::test]
async fn a_permit_that_errors_at_evaluation_denies() {
    let upstream = Upstream::http().await;
    // Valid under the schema, but the multiplication overflows at runtime.
    let tg = Tollgate::start(Setup {
        policies: Some(vec![(
            "overflow.cedar".into(),
            "@id(\"overflowing-permit\")\npermit(principal, action, resource) when { context.port * 9223372036854775807 > 1 };\n".into(),
        )]),
        ..github_at(&upstream)
    });
    let out = tg.curl(&[PULLS]).await;
    assert_eq!(out.status, 403, "{}", out.body);
    let body = out.json();
    assert_eq!(body["reason"], "policy_error");
    assert_eq!(body["policy_ids"][0], "overflowing-permit");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_forbid_that_errors_at_evaluation_still_denies() {
    // Cedar skips an erroring policy; without tollgate's rule the permit
    // below would win and the request would go out.
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        policies: Some(vec![(
            "p.cedar".into(),
            "@id(\"allow-all\")\npermit(principal, action, resource);\n@id(\"overflowing-forbid\")\nforbid(principal, action, resource) when { context.port * 9223372036854775807 > 1 };\n".into(),
        )]),
        ..github_at(&upstream)
    });
    let out = tg.curl(&[PULLS]).await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(out.json()["reason"], "policy_error");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn broken_reload_is_refused_and_a_good_one_applies() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(github_at(&upstream));
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);

    std::fs::write(
        tg.path("policies/zz-broken.cedar"),
        "// a typo\npermit(principal, action, resource) when { context.method == };\n",
    )
    .unwrap();
    tg.wait_log("reload refused");
    assert!(tg.logs().contains("zz-broken.cedar:2:"), "{}", tg.logs());
    // The running set still decides: reads allowed, deletes forbidden.
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);
    let out = tg
        .curl(&["-X", "DELETE", "http://api.github.com/repos/acme/api"])
        .await;
    assert_eq!(out.status, 403);

    std::fs::remove_file(tg.path("policies/zz-broken.cedar")).unwrap();
    std::fs::write(
        tg.path("policies/zz-no-reads.cedar"),
        "@id(\"no-reads\")\nforbid(principal, action in Action::\"read\", resource);\n",
    )
    .unwrap();
    tg.wait_log("catalog, policies and credentials reloaded");
    let out = tg.curl(&[PULLS]).await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(out.json()["policy_ids"][0], "no-reads");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn sighup_reloads_when_watching_is_off() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        watch: false,
        policies: Some(shipped_policies()),
        ..github_at(&upstream)
    });
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);
    std::fs::write(
        tg.path("policies/zz-no-reads.cedar"),
        "@id(\"no-reads\")\nforbid(principal, action in Action::\"read\", resource);\n",
    )
    .unwrap();
    // Without watching, the file alone changes nothing...
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);
    // ...until SIGHUP.
    tg.signal("HUP");
    tg.wait_log("catalog, policies and credentials reloaded");
    assert_eq!(tg.curl(&[PULLS]).await.status, 403);
}
