//! Interception certificates: minting a leaf (key generation, signing, a
//! rustls server configuration) and answering from the leaf cache.
//!
//!     cargo bench -p tollgate-benches --bench tls

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::tls::{CertificateAuthority, LeafCache};

fn leaves(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    CertificateAuthority::create(dir.path(), false).unwrap();
    let load = || CertificateAuthority::load(dir.path()).unwrap();
    let mut group = c.benchmark_group("leaf certificate");
    // A cache of one that is always asked for a new name: every call mints.
    let minting = LeafCache::new(load(), 1);
    let mut n = 0u64;
    group.bench_function("mint", |b| {
        b.iter(|| {
            n += 1;
            black_box(minting.server_config(&format!("h{n}.bench.test")).unwrap())
        })
    });
    let cached = LeafCache::new(load(), 1_000);
    cached.server_config("api.github.com").unwrap();
    group.bench_function("cache hit", |b| {
        b.iter(|| black_box(cached.server_config(black_box("api.github.com")).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, leaves);
criterion_main!(benches);
