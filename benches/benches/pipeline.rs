//! Data-plane stages without sockets: classification against a 1,000-route
//! catalog (100 tools × 10 routes), an MCP `tools/call` named from its body
//! against the shipped GitHub MCP catalog, and credential strip + inject.
//!
//!     cargo bench -p tollgate-benches --bench pipeline

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderName, Method, Uri};
use tollgate::config::{BoundService, CredentialConfig, CredentialInjection, CredentialSource};
use tollgate::core::plan::CredentialPlan;
use tollgate::decision::credentials::CredentialStore;
use tollgate_benches::fixtures;

fn classify(c: &mut Criterion) {
    let catalog = fixtures::catalog();
    assert_eq!(catalog.route_count(), 1_000);
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("classify, 1,000 routes");
    for (name, host, method, path) in [
        (
            "GET with one parameter",
            "api-t042.bench.test",
            Method::GET,
            "/v1/items/42",
        ),
        (
            "GET with a catch-all path",
            "api-t099.bench.test",
            Method::GET,
            "/v1/users/u1/repos/r1/files/src/lib/main.rs",
        ),
        (
            "no matching route",
            "api-t000.bench.test",
            Method::PUT,
            "/v2/nothing/here",
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(catalog.classify(
                    black_box(host),
                    &method,
                    black_box(path),
                    None,
                    &headers,
                ))
            })
        });
    }
    group.finish();
}

/// An MCP `tools/call` with 4 KiB of arguments, as the proxy names it:
/// read and bound-checked from its body, then named with its declared
/// arguments projected for the decision (the goal: 20 µs).
fn classify_mcp(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/catalog");
    let catalog = tollgate::catalog::Catalog::load_dir(&root).expect("shipped catalog loads");
    let target = tollgate::core::classify::RequestTarget {
        tls: true,
        host: "api.githubcopilot.com".into(),
        port: 443,
    };
    let uri = Uri::from_static("/mcp/");
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 17,
        "method": "tools/call",
        "params": {
            "name": "create_issue",
            "arguments": {
                "owner": "acme",
                "repo": "api",
                "title": "Crash on start",
                "body": "x".repeat(4096 - 64),
                "labels": ["bug", "p1"],
            },
        },
    })
    .to_string();
    let mut group = c.benchmark_group("classify an MCP message");
    group.bench_function("tools/call, 4 KiB of arguments", |b| {
        b.iter(|| {
            let call = tollgate::core::classify::read_mcp(
                &catalog,
                &target,
                &Method::POST,
                &uri,
                Some(black_box(body.as_bytes())),
                None,
            )
            .unwrap()
            .unwrap();
            black_box(call.named().unwrap())
        })
    });
    group.finish();
}

/// Strip the agent's credentials and inject the one the decision names, on
/// the headers an SDK sends, from a file source (one `metadata()` call per
/// use to notice rotation) and from an environment variable (cached).
fn credentials(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "ghs_benchmark_credential_value_0123456789").unwrap();
    std::env::set_var(
        "BENCH_CREDENTIAL",
        "sk-benchmark-credential-value-0123456789",
    );
    let bound = |source, injection| CredentialConfig {
        source,
        injection,
        services: vec![BoundService {
            tool: "github".into(),
            at: String::new(),
        }],
    };
    let store = CredentialStore::new([
        (
            "file-bearer".to_string(),
            bound(CredentialSource::File(file), CredentialInjection::Bearer),
        ),
        (
            "env-header".to_string(),
            bound(
                CredentialSource::Env("BENCH_CREDENTIAL".into()),
                CredentialInjection::Header {
                    name: "x-api-key".into(),
                    template: "{value}".into(),
                },
            ),
        ),
    ]);
    let mut agent = HeaderMap::new();
    for (k, v) in [
        ("host", "api.github.com"),
        ("user-agent", "octokit-rest.js/20.0.0"),
        ("accept", "application/vnd.github+json"),
        (
            "authorization",
            "Bearer tgt_0123456789abcdef0123456789abcdef",
        ),
        ("x-api-key", "agent-key"),
        ("cookie", "session=agent"),
        ("content-type", "application/json"),
    ] {
        agent.insert(k, v.parse().unwrap());
    }
    let uri: Uri = "https://api.github.com/repos/acme/api/pulls"
        .parse()
        .unwrap();
    let tool_headers = [HeaderName::from_static("x-github-token")];
    let mut group = c.benchmark_group("credential strip + inject");
    for (name, credential) in [
        ("strip only (no credential named)", None),
        ("bearer from a file", Some("file-bearer")),
        ("header from the environment", Some("env-header")),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || (agent.clone(), uri.clone()),
                |(headers, uri)| {
                    CredentialPlan::new(
                        &store,
                        Some("github"),
                        &tool_headers,
                        Vec::new(),
                        credential,
                    )
                    .unwrap()
                    .apply(headers, uri)
                    .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, classify, classify_mcp, credentials);
criterion_main!(benches);
