//! Cedar decisions with 10 and 1,000 policies over the 1,000-route catalog:
//! a cache miss (the engine evaluates) and a cache hit (the per-snapshot
//! decision cache answers). Requests cycle through 1,000 distinct ones, so a
//! miss is not one request's lucky path.
//!
//!     cargo bench -p tollgate-benches --bench decision
//!
//! After criterion's means, single-call percentiles are printed too: the
//! goals are stated as p99.

use std::hint::black_box;

use criterion::{criterion_group, Criterion};
use tollgate::decision::DecisionCache;
use tollgate_benches::fixtures;

const SIZES: [usize; 2] = [10, 1_000];

fn decide(c: &mut Criterion) {
    let catalog = fixtures::catalog();
    let requests = fixtures::requests(&catalog, 1_000);
    for policies in SIZES {
        let engine = fixtures::engine(&catalog, policies);
        let mut group = c.benchmark_group(format!("decision, {policies} policies"));
        let mut i = 0;
        group.bench_function("cache miss", |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                black_box(engine.evaluate(black_box(&requests[i])))
            })
        });
        let cache = DecisionCache::new(10_000);
        for r in &requests {
            cache.decide(&engine, r);
        }
        group.bench_function("cache hit", |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                black_box(cache.decide(&engine, black_box(&requests[i])))
            })
        });
        group.finish();
    }
}

fn print_percentiles() {
    let catalog = fixtures::catalog();
    let requests = fixtures::requests(&catalog, 1_000);
    println!("\nsingle-call latency, µs (mean / p50 / p99 over 100,000 calls):");
    for policies in SIZES {
        let engine = fixtures::engine(&catalog, policies);
        let cache = DecisionCache::new(10_000);
        for r in &requests {
            cache.decide(&engine, r);
        }
        let n = requests.len();
        let miss = fixtures::percentiles(100_000, |i| {
            black_box(engine.evaluate(&requests[i % n]));
        });
        let hit = fixtures::percentiles(100_000, |i| {
            black_box(cache.decide(&engine, &requests[i % n]));
        });
        for (what, p) in [("cache miss", miss), ("cache hit", hit)] {
            println!(
                "  {policies:>5} policies, {what}: {:.2} / {:.2} / {:.2}",
                p.mean, p.p50, p.p99
            );
        }
    }
}

criterion_group!(benches, decide);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench -- <filter>` and `--list` should not pay for this.
    if std::env::args().skip(1).all(|a| a == "--bench") {
        print_percentiles();
    }
}
