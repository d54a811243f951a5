//! The load harness must keep working: a smoke run (1 s per row, no
//! warm-up) where every participant — direct, Envoy bare, Envoy + no-op
//! ext_authz, Envoy + tollgate decision (alone, and alternated with the no-op
//! stack), tollgate embedded with and without the cache, tollgate remote,
//! a REST `POST` and an MCP `tools/call` with 4 KiB bodies (each run's last
//! request audited as allowed: a refused call would be a JSON-RPC error in
//! a 200) — answers every request with 2xx, and every bulk route (direct, the minimal
//! relay, Envoy's `CONNECT` tunnel, tollgate's) delivers bytes and says how
//! busy each CPU was; so does every transparent row, redirected by
//! `tollgate iptables` in a network namespace the harness makes (root, as
//! CI runs the suite: without it the harness fails saying why); and every
//! row under a task, with tasks kept in memory and in a Redis server the
//! harness starts (redis-server, which `scripts/setup-test-env` installs);
//! and requests held for approval, every verdict answered as given, and
//! released in each deployment shape; normal traffic beside idle and
//! slowloris connections; the decision service killed and started again
//! under a proxy. No timing is asserted.

use std::process::Command;

/// Run one of the bench binaries built beside tollgate with `args`; it must
/// succeed. Its standard output and error.
fn bench(name: &str, args: &[&str]) -> (String, String) {
    let bin = tollgate_e2e::tollgate_bin().with_file_name(name);
    assert!(
        bin.exists(),
        "{} missing: cargo build --release --bins",
        bin.display()
    );
    let out = Command::new(&bin).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn every_benchmark_participant_answers() {
    let (stdout, stderr) = bench("loadbench", &["--smoke"]);
    for row in [
        "| direct |",
        "| Envoy bare route |",
        "| Envoy + no-op ext_authz |",
        "| Envoy + tollgate decision |",
        "| **Envoy + no-op ext_authz, median** |",
        "| **Envoy + tollgate decision, median** |",
        "| tollgate full authz |",
        "| tollgate full authz, no decision cache |",
        "| tollgate, remote decision (warm cache) |",
        "| REST `POST` of the same size |",
        "| MCP `tools/call`, 4 KiB of arguments, one read by policy |",
        "| MCP `tools/call` with 4 KiB of arguments ÷ REST `POST` of the same size, both wrk (req/s) |",
        "| minimal splice relay (no HTTP, no decision) |",
        "| Envoy `CONNECT` tunnel |",
        "| tollgate tunnel (`connect` action) |",
        "| round 2: all closed again |",
        "| transparent listener, redirected HTTP (wrk) |",
        "| transparent listener, redirected HTTPS intercepted (oha) |",
        "| transparent listener, redirected and relayed blind |",
        "| no task (tasks in memory) |",
        "| task with a budget, tasks in memory |",
        "| task with a budget, tasks in Redis |",
        "| task without budgets, tasks in memory |",
        "| task without budgets, tasks in Redis |",
        "| task with a budget (never cached): tasks in Redis ÷ in memory (req/s) |",
        "| 20 gated requests held at once: one tollgate run, 1 worker, deciding in-process | value |",
        "| approved: 200 through the upstream, once each / denied: 403 `approval_denied`, never upstream | 10 / 10 |",
        "| one process: tollgate run deciding in-process | 10 |",
        "| tollgate run asking one tollgate decision | 10 |",
        "| tollgate run asking replica A, Approve sent to replica B, both on one Redis | 10 |",
        "| RSS per held request, its body excluded (KiB) |",
        "| `Approve` → upstream p99, one process deciding in-process (ms) |",
        "| `Approve` → upstream p99, two decision replicas on Redis, Approve on the other (ms) |",
        "| tollgate (1000 idle, 100 slowloris) |",
        "| Envoy bare route (1000 idle, 100 slowloris) |",
        "| its `listening` log line → proxy's first 200 |",
    ] {
        assert!(stdout.contains(row), "no row {row}:\n{stdout}\n{stderr}");
    }
    // The bulk rows say which CPU ran out: a share for each CPU, as a %.
    let direct = stdout
        .lines()
        .find(|l| l.starts_with("| direct |") && l.contains(" % |"))
        .unwrap_or_else(|| panic!("no bulk row with CPU shares:\n{stdout}"));
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(direct.matches(" % |").count(), cpus, "{direct}");
    // And how deep the reader's queue ran, in MiB.
    assert!(
        stdout.contains(" busy | reader queue MiB |"),
        "no reader queue column:\n{stdout}"
    );
}

/// Pinned, the tunnel table also has a direct download whose sender runs on
/// the proxy CPU: it delivers bytes, and the tollgate row still does.
#[test]
fn the_pinned_tunnel_section_has_the_cross_cpu_row() {
    let (stdout, stderr) = bench("loadbench", &["--smoke", "--pin", "--only", "tunnel"]);
    for row in [
        "| direct |",
        "| direct, sender on the proxy CPU |",
        "| tollgate tunnel (`connect` action) |",
    ] {
        assert!(stdout.contains(row), "no row {row}:\n{stdout}\n{stderr}");
    }
}

/// Pinned, tollgate runs under `taskset` and `setpriv` at once (the uid
/// the rules exempt): every transparent row and the explicit row it is
/// held against answer, and the goals are reported.
#[test]
fn the_pinned_transparent_section_runs() {
    let (stdout, stderr) = bench("loadbench", &["--smoke", "--pin", "--only", "transparent"]);
    for row in [
        "| explicit listener, absolute-form HTTP (wrk) |",
        "| transparent listener, redirected HTTP (wrk) |",
        "| explicit listener, `CONNECT`, HTTPS intercepted (oha) |",
        "| transparent listener, redirected HTTPS intercepted (oha) |",
        "| explicit listener, `CONNECT` tunnel |",
        "| transparent listener, redirected and relayed blind |",
        "| tollgate transparent ÷ explicit listener, keep-alive HTTP, both wrk (req/s) |",
        "| tollgate transparent ÷ `CONNECT`, intercepted HTTPS, both oha (req/s) |",
        "| tollgate transparent blind relay ÷ `CONNECT` tunnel (bytes/s) |",
    ] {
        assert!(stdout.contains(row), "no row {row}:\n{stdout}\n{stderr}");
    }
}

/// The calibration stand-in (a no-op ext_authz server that sends tollgate's
/// metadata, burns CPU and reads memory, over tonic or over bare HTTP/2)
/// answers too, in tollgate decision's place: every request through its
/// Envoy must be allowed.
#[test]
fn the_ext_authz_calibration_runs() {
    for work in ["metadata,spin-us=2,touch-kib=16", "h2,metadata"] {
        let args = ["--smoke", "--only", "ext_authz", "--calibrate", work];
        let (stdout, stderr) = bench("loadbench", &args);
        let row = "| **Envoy + no-op ext_authz doing calibration work, median** |";
        assert!(
            stdout.contains(row),
            "{work}: no row {row}:\n{stdout}\n{stderr}"
        );
        assert!(!stdout.contains("Envoy + tollgate decision"), "{stdout}");
    }
}

/// tollgate decision against the bare-HTTP/2 no-op instead of tonic's: both
/// stacks answer every request, and the output says which no-op it was.
#[test]
fn the_ext_authz_pairs_run_against_the_bare_noop() {
    let (stdout, stderr) = bench(
        "loadbench",
        &["--smoke", "--only", "ext_authz", "--noop", "h2"],
    );
    assert!(
        stderr.contains("the no-op ext_authz server does: h2"),
        "{stderr}"
    );
    for row in [
        "| **Envoy + no-op ext_authz, median** |",
        "| **Envoy + tollgate decision, median** |",
    ] {
        assert!(stdout.contains(row), "no row {row}:\n{stdout}\n{stderr}");
    }
}

/// The revocation benchmark with two trials, in both shapes: every proxy
/// must see the task end (a 401) after `EndTask`, the one asking the other
/// Redis replica too; how fast is the benchmark's business.
#[test]
fn the_revocation_benchmark_runs() {
    let (stdout, stderr) = bench("revocation", &["--trials", "2"]);
    for line in [
        "one decision service, 2 trials x 2 proxies (4 samples)",
        "EndTask on A, proxy asking A (2 samples)",
        "EndTask on A, proxy asking B (across replicas) (2 samples)",
    ] {
        assert!(stdout.contains(line), "no {line}:\n{stdout}\n{stderr}");
    }
}
