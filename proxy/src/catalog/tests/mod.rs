//! Catalog tests. The shipped catalogs (`config/catalog/`) are tested as
//! tables, one file per catalog; errors, matching rules and scale have
//! their own files.

mod ai;
mod demo;
mod errors;
mod github;
mod kubernetes;
mod matching;
mod mcp;
mod s3;
mod slack;

use std::path::PathBuf;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{Catalog, CatalogError, QueryCredentialRule, RiskClass};

/// `(method, host, path?query, headers, action, risk, resource, sensitivity)`.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
    RiskClass,
    &'static str,
    &'static str,
);

fn catalog_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/catalog")
}

/// The shipped catalogs, loaded once for all table tests.
fn shipped() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| Catalog::load_dir(&catalog_dir()).expect("shipped catalogs load"))
}

fn headers(names: &[&str]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for name in names {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static("x"),
        );
    }
    map
}

/// Classify `method host path?query` with the named headers present.
fn classify(
    catalog: &Catalog,
    method: &str,
    host: &str,
    target: &str,
    with: &[&str],
) -> Option<super::Classification> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    catalog.classify(host, &method, path, query, &headers(with))
}

fn check_table(catalog: &Catalog, rows: &[Row]) {
    let mut failures = Vec::new();
    for &(method, host, target, with, action, risk, resource, sensitivity) in rows {
        let got = classify(catalog, method, host, target, with);
        let got = got.as_ref().map(|c| {
            (
                &*c.action,
                c.risk,
                c.resource.as_str(),
                &*c.sensitivity,
                &*c.tool,
            )
        });
        let tool = action.split(':').next().unwrap();
        let want = Some((action, risk, resource, sensitivity, tool));
        if got != want {
            failures.push(format!(
                "{method} {host}{target} {with:?}\n   got  {got:?}\n   want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Build a catalog from one in-memory file.
fn one(yaml: &str) -> Result<Catalog, CatalogError> {
    Catalog::from_sources(&[("test.yaml".to_owned(), yaml.to_owned())])
}

#[test]
fn shipped_catalogs_load() {
    let catalog = shipped();
    let tools: Vec<String> = catalog.tools().iter().map(|t| t.to_string()).collect();
    assert_eq!(
        tools,
        [
            "anthropic",
            "demo",
            "gemini",
            "github",
            "github-mcp",
            "kubernetes",
            "openai",
            "s3",
            "slack"
        ]
    );
    assert!(catalog.route_count() > 200, "{}", catalog.route_count());
}

#[test]
fn actions_are_sorted_unique_and_include_unknown() {
    let actions = shipped().actions();
    let names: Vec<&str> = actions.iter().map(|a| &*a.name).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(names, sorted, "sorted, no duplicates");
    for tool in shipped().tools() {
        let unknown = format!("{tool}:unknown");
        let info = actions.iter().find(|a| *a.name == *unknown).unwrap();
        assert_eq!(info.risk, RiskClass::Unknown);
        assert_eq!(info.tool, tool);
    }
    for a in actions {
        assert!(a.name.starts_with(&format!("{}:", a.tool)), "{}", a.name);
    }
    let find = |n: &str| actions.iter().find(|a| &*a.name == n).map(|a| a.risk);
    assert_eq!(find("s3:GetObject"), Some(RiskClass::DataExport));
    assert_eq!(find("github:pulls.merge"), Some(RiskClass::Write));
    assert_eq!(find("kubernetes:pods.exec"), Some(RiskClass::CodeExec));
}

#[test]
fn covered_and_uncovered_hosts() {
    let c = shipped();
    for host in [
        "api.github.com",
        "API.GITHUB.COM",
        "api.github.com.",
        "slack.com",
        "files.slack.com",
        "logs.s3.eu-west-1.amazonaws.com",
        "s3.eu-west-1.amazonaws.com",
        "kubernetes",
    ] {
        assert!(c.covers(host), "{host}");
    }
    for host in [
        "example.com",
        "github.com",
        "uploads.github.com",
        "api.github.com.evil.com",
        "evilapi.github.com",
        "my.bucket.s3.amazonaws.com",
        "amazonaws.com",
        "s3.amazonaws.com.evil",
        "kubernetes.default.svc.cluster",
        "",
    ] {
        assert!(!c.covers(host), "{host}");
        assert_eq!(classify(c, "GET", host, "/", &[]), None, "{host}");
    }
}

#[test]
fn credential_headers_and_descriptions() {
    let c = shipped();
    assert_eq!(
        c.credential_headers("anthropic").unwrap(),
        [HeaderName::from_static("x-api-key")]
    );
    assert_eq!(
        c.credential_headers("s3").unwrap(),
        [HeaderName::from_static("x-amz-security-token")]
    );
    assert_eq!(
        c.credential_headers("github").unwrap(),
        &[] as &[HeaderName]
    );
    assert_eq!(c.credential_headers("nope"), None);
    let (s3, rule) = c.credential_query("s3").unwrap();
    assert!(s3.iter().any(|p| p == "X-Amz-Signature"), "{s3:?}");
    assert_eq!(
        rule,
        QueryCredentialRule::Refuse,
        "refused unless a tool says"
    );
    assert_eq!(c.credential_query("gemini").unwrap().0, ["key"]);
    assert_eq!(c.credential_query("nope"), None);
    assert_eq!(c.description("github"), Some("GitHub REST API"));
}

#[test]
fn load_dir_reads_yaml_and_yml_only_sorted_and_empty_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let empty = Catalog::load_dir(dir.path()).unwrap();
    assert!(empty.tools().is_empty());
    assert!(empty.actions().is_empty());
    assert_eq!(empty.route_count(), 0);
    assert!(!empty.covers("api.github.com"));

    let tool = |name: &str, host: &str| {
        format!(
            "tool: {name}\nendpoints:\n  - hosts: [{host}]\n    routes:\n      - {{ method: GET, path: /, action: root, risk: read }}\n"
        )
    };
    std::fs::write(dir.path().join("b.yml"), tool("bee", "b.example.com")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), tool("ay", "a.example.com")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml").unwrap();
    std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
    let c = Catalog::load_dir(dir.path()).unwrap();
    assert_eq!(
        c.tools(),
        vec!["ay".into(), "bee".into()] as Vec<std::sync::Arc<str>>
    );
    assert_eq!(c.route_count(), 2);

    // Two files claiming one host: the later file (by name) is the one blamed.
    std::fs::write(dir.path().join("c.yaml"), tool("sea", "a.example.com")).unwrap();
    let err = Catalog::load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("c.yaml:3:13: host `a.example.com`"), "{err}");
    assert!(err.contains("already claimed by tool `ay`"), "{err}");

    let missing = Catalog::load_dir(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(missing, CatalogError::Io { .. }), "{missing}");
}
