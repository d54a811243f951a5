//! Matching rules: what matchit does with our paths, the host trie, `when`
//! ordering, HEAD, normalization, and a large generated catalog.

use super::super::host::{HostMatcher, HostPattern};
use super::super::router::normalize_path;
use super::super::{Catalog, RiskClass};
use super::{classify, one};

/// The matchit 0.9 behaviour the router relies on.
#[test]
fn matchit_semantics_we_rely_on() {
    let mut r = matchit::Router::new();
    r.insert("/", "root").unwrap();
    r.insert("/{bucket}", "bucket").unwrap();
    r.insert("/{bucket}/{*key}", "object").unwrap();
    r.insert("/static/x", "static").unwrap();
    let at = |p: &str| r.at(p).ok().map(|m| *m.value);

    // `{param}` is exactly one non-empty segment: never `/`, never empty.
    assert_eq!(at("/b"), Some("bucket"));
    assert_eq!(r.at("/b%2Fc").unwrap().params.get("bucket"), Some("b%2Fc"));
    assert_eq!(at("//x"), None);
    // Catch-all takes the rest including `/`, but not nothing.
    let m = r.at("/b/k/l/m.txt").unwrap();
    assert_eq!(
        (*m.value, m.params.get("key")),
        ("object", Some("k/l/m.txt"))
    );
    assert_eq!(at("/b/"), None);
    // ...and keeps empty segments and dot segments literally, which is why
    // `normalize_path` refuses dot segments before matching.
    assert_eq!(r.at("/b/a//c").unwrap().params.get("key"), Some("a//c"));
    assert_eq!(r.at("/b/../c").unwrap().params.get("key"), Some("../c"));
    // Static beats parameter; a failed static branch backtracks.
    assert_eq!(at("/static/x"), Some("static"));
    assert_eq!(at("/static/y"), Some("object"));
    assert_eq!(at("/static"), Some("bucket"));

    // Backtracking through a parameter in the middle of a path.
    let mut r2 = matchit::Router::new();
    r2.insert("/a/{x}/c", "param").unwrap();
    r2.insert("/a/b/d", "static").unwrap();
    assert_eq!(r2.at("/a/b/c").map(|m| *m.value), Ok("param"));
    assert_eq!(r2.at("/a/b/d").map(|m| *m.value), Ok("static"));
    // Different names in one position are fine on different paths, and
    // each route reports its own names...
    r2.insert("/a/{y}/e", "other").unwrap();
    assert_eq!(r2.at("/a/q/e").unwrap().params.get("y"), Some("q"));
    assert_eq!(r2.at("/a/q/c").unwrap().params.get("x"), Some("q"));
    // ...but the same path with renamed parameters is a conflict, which the
    // catalog reports as an error.
    assert!(r2.insert("/a/{z}/c", "again").is_err());
    // Prefixed parameters in a segment (`admin.{method}` in slack.yaml).
    let mut r3 = matchit::Router::new();
    r3.insert("/api/admin.users.remove", "static").unwrap();
    r3.insert("/api/admin.{method}", "prefix").unwrap();
    r3.insert("/api/chat.postMessage", "chat").unwrap();
    assert_eq!(
        r3.at("/api/admin.users.remove").map(|m| *m.value),
        Ok("static")
    );
    assert_eq!(r3.at("/api/admin.x.y").map(|m| *m.value), Ok("prefix"));
    assert!(r3.at("/api/admin.").is_err(), "empty parameter");
    assert!(r3.at("/api/admin.x/y").is_err());

    // A trailing slash is a different path to matchit: we normalize first.
    assert_eq!(at("/b/"), None);
    assert_eq!(at(normalize_path("/b/").unwrap()), Some("bucket"));
}

#[test]
fn normalize_path_rules() {
    assert_eq!(normalize_path(""), Some("/"));
    assert_eq!(normalize_path("/"), Some("/"));
    assert_eq!(normalize_path("/a/"), Some("/a"));
    assert_eq!(
        normalize_path("/a//"),
        Some("/a/"),
        "only one slash is dropped"
    );
    for bad in [
        "/..",
        "/a/../b",
        "/a/./b",
        "/a/%2e%2E/b",
        "/a/.%2e",
        "/%2E",
        "/a/..",
    ] {
        assert_eq!(normalize_path(bad), None, "{bad}");
    }
    for ok in ["/a/...", "/a/.b", "/a/b.", "/a/%2e%2e%2e", "/a/e2"] {
        assert_eq!(normalize_path(ok), Some(ok), "{ok}");
    }
}

fn matcher(patterns: &[&str]) -> HostMatcher {
    let mut m = HostMatcher::default();
    for (i, p) in patterns.iter().enumerate() {
        m.insert(&HostPattern::parse(p).unwrap(), i).unwrap();
    }
    m
}

fn find(m: &HostMatcher, host: &str) -> Option<(usize, Vec<(String, String)>)> {
    m.find(host).map(|found| {
        let caps = found
            .captures
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        (found.endpoint, caps)
    })
}

#[test]
fn host_exact_beats_wildcard() {
    let m = matcher(&["api.example.com", "*.example.com", "{x}.api.example.com"]);
    assert_eq!(find(&m, "api.example.com"), Some((0, vec![])));
    assert_eq!(find(&m, "www.example.com"), Some((1, vec![])));
    assert_eq!(
        find(&m, "v2.api.example.com"),
        Some((2, vec![("x".into(), "v2".into())]))
    );
    // One label per wildcard: not zero, not two.
    assert_eq!(find(&m, "example.com"), None);
    assert_eq!(find(&m, "a.b.example.com"), None);
    assert_eq!(find(&m, ".example.com"), None);
    assert_eq!(find(&m, "api.example.com.evil"), None);
}

#[test]
fn host_captures_several_labels() {
    let m = matcher(&[
        "{bucket}.s3.{region}.amazonaws.com",
        "s3.{region}.amazonaws.com",
    ]);
    assert_eq!(
        find(&m, "logs.s3.eu-west-1.amazonaws.com"),
        Some((
            0,
            vec![
                ("bucket".into(), "logs".into()),
                ("region".into(), "eu-west-1".into())
            ]
        ))
    );
    assert_eq!(
        find(&m, "s3.eu-west-1.amazonaws.com"),
        Some((1, vec![("region".into(), "eu-west-1".into())]))
    );
    // Bytes a hostname cannot contain never reach a capture.
    assert_eq!(find(&m, "lo/gs.s3.eu-west-1.amazonaws.com"), None);
    assert_eq!(find(&m, "logs.s3.eu-west-1.amazonaws.com:443"), None);
}

#[test]
fn host_backtracks_from_exact_to_wildcard() {
    // For a.b.example.com the exact `b` branch (from x.b / *.b) is tried
    // first; a.*.example.com must still win when that branch dead-ends.
    let m = matcher(&["a.*.example.com", "x.b.example.com"]);
    assert_eq!(find(&m, "a.b.example.com"), Some((0, vec![])));
    assert_eq!(find(&m, "x.b.example.com"), Some((1, vec![])));
    assert_eq!(find(&m, "y.b.example.com"), None);

    // Both `a.*` and `*.b` match a.b.example.com: the exact label nearer
    // the root (`b`) decides, as DNS delegation would.
    let m = matcher(&["a.*.example.com", "*.b.example.com"]);
    assert_eq!(find(&m, "a.b.example.com"), Some((1, vec![])));
    assert_eq!(find(&m, "a.c.example.com"), Some((0, vec![])));
    assert_eq!(find(&m, "z.b.example.com"), Some((1, vec![])));
    assert_eq!(find(&m, "z.c.example.com"), None);

    // Deeper backtrack: two levels of exact dead ends.
    let m = matcher(&[
        "*.*.c.example.com",
        "p.q.c.example.com",
        "r.*.c.example.com",
    ]);
    assert_eq!(find(&m, "p.z.c.example.com"), Some((0, vec![])));
    assert_eq!(find(&m, "r.q.c.example.com"), Some((2, vec![])));
    assert_eq!(find(&m, "p.q.c.example.com"), Some((1, vec![])));
}

#[test]
fn host_pattern_clashes_name_the_first_claim() {
    let mut m = HostMatcher::default();
    m.insert(&HostPattern::parse("*.example.com").unwrap(), 0)
        .unwrap();
    let clash = m.insert(&HostPattern::parse("{sub}.EXAMPLE.com").unwrap(), 1);
    assert_eq!(clash.unwrap_err().as_ref(), "*.example.com");
    m.insert(&HostPattern::parse("example.com").unwrap(), 2)
        .unwrap();
    assert!(m
        .insert(&HostPattern::parse("Example.COM").unwrap(), 3)
        .is_err());
}

/// A small catalog exercising `when`, HEAD and sensitivity rules.
const RULES: &str = r#"
tool: t
endpoints:
  - hosts: [t.example.com]
    defaults: { sensitivity: public }
    routes:
      # fallback declared first: order in the file does not matter
      - { method: PUT, path: "/{*key}", action: put, risk: write, resource: "k/{key}" }
      - { method: PUT, path: "/{*key}", action: copy, risk: write, resource: "k/{key}", when: { headers: [X-Copy] } }
      - { method: PUT, path: "/{*key}", action: part, risk: write, resource: "k/{key}", when: { query: [part, id] } }
      - { method: PUT, path: "/{*key}", action: part_copy, risk: write, resource: "k/{key}", when: { query: [part, id], headers: [x-copy] } }
      - { method: GET, path: "/v", action: v2, risk: read, when: { query: ["version=2"] } }
      - { method: GET, path: "/v", action: any_version, risk: read, when: { query: [version] } }
      - { method: GET, path: "/only-when", action: only_when, risk: read, when: { query: [x] } }
      - { method: GET, path: "/doc", action: get, risk: read, sensitivity: secret }
      - { method: HEAD, path: "/head", action: head, risk: read }
      - { method: GET, path: "/head", action: get_head, risk: read }
"#;

#[test]
fn when_most_specific_first_fallback_last() {
    let c = one(RULES).unwrap();
    let action = |m: &str, target: &str, h: &[&str]| {
        classify(&c, m, "t.example.com", target, h).map(|c| c.action.to_string())
    };
    assert_eq!(action("PUT", "/a/b", &[]).as_deref(), Some("t:put"));
    assert_eq!(
        action("PUT", "/a/b", &["x-copy"]).as_deref(),
        Some("t:copy")
    );
    assert_eq!(
        action("PUT", "/a?part=1&id=2", &[]).as_deref(),
        Some("t:part")
    );
    assert_eq!(
        action("PUT", "/a?id=2&part=1", &["x-copy"]).as_deref(),
        Some("t:part_copy")
    );
    // A condition is all-or-nothing.
    assert_eq!(action("PUT", "/a?part=1", &[]).as_deref(), Some("t:put"));
    // `key=value` compares the raw value; a bare key accepts any value.
    assert_eq!(action("GET", "/v?version=2", &[]).as_deref(), Some("t:v2"));
    assert_eq!(
        action("GET", "/v?version=3", &[]).as_deref(),
        Some("t:any_version")
    );
    assert_eq!(
        action("GET", "/v?version", &[]).as_deref(),
        Some("t:any_version")
    );
    assert_eq!(
        action("GET", "/v?versions=2", &[]).as_deref(),
        Some("t:unknown")
    );
    // A path whose routes all have `when`, none holding: unknown.
    assert_eq!(
        action("GET", "/only-when", &[]).as_deref(),
        Some("t:unknown")
    );
    assert_eq!(
        action("GET", "/only-when?x", &[]).as_deref(),
        Some("t:only_when")
    );
}

#[test]
fn head_falls_back_to_get_only_without_a_head_route() {
    let c = one(RULES).unwrap();
    let action = |m: &str, p: &str| classify(&c, m, "t.example.com", p, &[]).unwrap().action;
    assert_eq!(&*action("HEAD", "/head"), "t:head");
    assert_eq!(&*action("GET", "/head"), "t:get_head");
    assert_eq!(&*action("HEAD", "/doc"), "t:get");
    assert_eq!(&*action("HEAD", "/nothing"), "t:unknown");
}

#[test]
fn sensitivity_route_then_endpoint_default() {
    let c = one(RULES).unwrap();
    let get = |p: &str| classify(&c, "GET", "t.example.com", p, &[]).unwrap();
    assert_eq!(&*get("/doc").sensitivity, "secret");
    assert_eq!(&*get("/v?version=2").sensitivity, "public");
    // Unknown requests take the endpoint default too.
    let unknown = get("/elsewhere");
    assert_eq!(
        (&*unknown.sensitivity, unknown.risk),
        ("public", RiskClass::Unknown)
    );
    assert_eq!(unknown.resource, "t");
}

#[test]
fn parameters_are_used_raw() {
    let c = one(RULES).unwrap();
    let put = classify(&c, "PUT", "t.example.com", "/dir/a%20b%2F..%2Fc", &[]).unwrap();
    assert_eq!(put.resource, "t/k/dir/a%20b%2F..%2Fc");
}

/// 1,000 tools × 4 routes, exact and wildcard hosts mixed: every tool is
/// still found and named correctly.
#[test]
fn scale_thousand_tools() {
    let sources: Vec<(String, String)> = (0..1000)
        .map(|i| {
            let host = if i % 2 == 0 {
                format!("svc{i}.example.com")
            } else {
                format!("\"{{tenant}}.svc{i}.example.net\"")
            };
            let yaml = format!(
                "tool: tool{i}\nendpoints:\n  - hosts: [{host}]\n    routes:\n\
                 \x20     - {{ method: GET, path: \"/items\", action: items.list, risk: read }}\n\
                 \x20     - {{ method: GET, path: \"/items/{{id}}\", action: items.get, risk: read, resource: \"items/{{id}}\" }}\n\
                 \x20     - {{ method: POST, path: \"/items\", action: items.create, risk: write }}\n\
                 \x20     - {{ method: DELETE, path: \"/items/{{id}}\", action: items.delete, risk: prod_change, resource: \"items/{{id}}\" }}\n"
            );
            (format!("tool{i}.yaml"), yaml)
        })
        .collect();
    let c = Catalog::from_sources(&sources).unwrap();
    assert_eq!(c.tools().len(), 1000);
    assert_eq!(c.route_count(), 4000);
    assert_eq!(c.actions().len(), 5000, "4 actions + unknown per tool");

    for i in [0, 1, 2, 499, 500, 998, 999] {
        let host = if i % 2 == 0 {
            format!("svc{i}.example.com")
        } else {
            format!("acme.svc{i}.example.net")
        };
        let got = classify(&c, "DELETE", &host, "/items/42", &[]).unwrap();
        assert_eq!(&*got.tool, format!("tool{i}"));
        assert_eq!(&*got.action, format!("tool{i}:items.delete"));
        assert_eq!(got.risk, RiskClass::ProdChange);
        assert_eq!(got.resource, format!("tool{i}/items/42"));
        let unknown = classify(&c, "PATCH", &host, "/items/42", &[]).unwrap();
        assert_eq!(&*unknown.action, format!("tool{i}:unknown"));
    }
    assert!(classify(&c, "GET", "svc1.example.com", "/items", &[]).is_none());
    assert!(classify(&c, "GET", "svc1000.example.com", "/items", &[]).is_none());
    assert!(classify(&c, "GET", "a.b.svc1.example.net", "/items", &[]).is_none());
}
