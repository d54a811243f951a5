//! Data-plane stages without sockets: classification against a 1,000-route
//! catalog (100 tools × 10 routes), and the spot for credential handling.
//!
//!     cargo bench -p tollgate-benches --bench pipeline

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
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

// ─── SPOT: credential strip + inject ─────────────────────────────────────
// To be added once the credential work lands in `pipeline/credentials.rs`:
// strip every credential an agent sent (Authorization, Proxy-Authorization,
// the tool's credential_headers) and inject the one the decision names,
// on a realistic header map. Add it as `fn credentials(c: &mut Criterion)`
// and list it in `criterion_group!` below.
// ─────────────────────────────────────────────────────────────────────────

criterion_group!(benches, classify);
criterion_main!(benches);
