//! Transparent capture against the explicit proxy. One tollgate serves an
//! explicit listener and a transparent one, inside a network namespace of
//! the section's own where `tollgate iptables --apply` redirects outbound
//! TCP to ports 80 and 443: each pair of rows sends the same load through
//! the same process, once as a proxy client and once as an agent that
//! knows nothing of a proxy, so the pair differs only in how connections
//! reach tollgate.
//!
//! The upstreams sit at addresses of the namespace's own (on `lo`; the
//! rules leave alone only 127.0.0.0/8, so connections to these are
//! redirected), where `forward.resolve` sends the named hosts: a
//! redirected connection must be headed for an address its host resolves
//! to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tollgate_benches::netns::Netns;
use tollgate_benches::oha::OhaRun;
use tollgate_benches::process::Participant;
use tollgate_benches::report::*;
use tollgate_benches::tollgate::{self, RunOptions, Transparent, BULK_AUTHORITY};
use tollgate_benches::{bulk, pki, upstream};

use super::{bulk_alternated, Bench, Contender};

/// The upstream of `bench.test`, plain on 80, TLS on 443.
const BENCH_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 213, 0, 2));
/// The bulk sender, behind `bulk.test:443`.
const BULK_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 213, 0, 3));
const NETWORK: &str = "10.213.0.0/24";

/// `tollgate iptables`' defaults: the transparent listener's port and the
/// uid whose connections go out unredirected.
const PROXY_PORT: u16 = 15001;
const PROXY_UID: u32 = 1337;

const PATH: &str = "/v1/items/42";

pub(super) fn transparent(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let netns = Netns::new(&[&format!("{BENCH_IP}/32"), &format!("{BULK_IP}/32")])?;
    // setns moves only the calling thread: a thread of its own enters the
    // namespace and runs the section there, and everything it starts (the
    // upstreams' threads, tollgate, the load generators) is born inside.
    let (rows, bulk_rows) = std::thread::scope(|s| {
        s.spawn(|| {
            netns.enter()?;
            inside(bench, &netns)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the transparent section's thread panicked"))?
    })
    .with_context(|| format!("transparent section, in network namespace {}", netns.name()))?;
    report.transparent = rows;
    report.transparent_bulk = bulk_rows;
    Ok(())
}

fn inside(bench: &Bench, netns: &Netns) -> anyhow::Result<(Vec<ProxyRow>, Vec<BulkRow>)> {
    let pki = pki::BenchPki::new()?;
    let plain = upstream::start_at(SocketAddr::new(BENCH_IP, 80), None)?;
    let tls = upstream::start_at(
        SocketAddr::new(BENCH_IP, 443),
        Some(pki.server_config("bench.test")?),
    )?;
    let sender = bulk::start_at(SocketAddr::new(BULK_IP, 443), None)?;
    let t = tollgate::run(
        &RunOptions {
            tls: Some((tls, pki.ca_dir())),
            bulk: Some(sender),
            transparent: Some(Transparent {
                address: SocketAddr::from(([127, 0, 0, 1], PROXY_PORT)),
                uid: PROXY_UID,
                network: NETWORK,
            }),
            ..RunOptions::plain(plain)
        },
        bench.proxy_cpu,
    )?;
    // The rules below catch every connection made in the namespace: a
    // tollgate outside it would be measured on a different path.
    anyhow::ensure!(
        netns.holds(t.pid())?,
        "tollgate (pid {}) did not start inside the namespace",
        t.pid()
    );
    redirect(netns)?;

    // Keep-alive HTTP: absolute-form to the explicit listener, origin-form
    // with `Host: bench.test` to the address bench.test resolves to.
    let explicit_url = format!("http://{}/", t.addr);
    let redirected_url = format!("http://{BENCH_IP}{PATH}");
    let mut rows = bench.alternated(&[
        Contender {
            name: TP_HTTP_EXPLICIT,
            pid: t.pid(),
            run: Box::new(|d| bench.wrk_once(&explicit_url, true, &[], d)),
        },
        Contender {
            name: TP_HTTP,
            pid: t.pid(),
            run: Box::new(|d| bench.wrk_once(&redirected_url, false, &[], d)),
        },
    ])?;

    // HTTPS, intercepted: through `CONNECT`, and dialled straight at
    // bench.test's address with the name in SNI and `Host`.
    let ca = pki.ca_cert();
    let proxy = format!("http://{}", t.addr);
    let connect_to = format!("bench.test:443:{BENCH_IP}:443");
    let oha = |proxy, connect_to, duration| {
        OhaRun {
            url: &format!("https://bench.test{PATH}"),
            proxy,
            cacert: Some(&ca),
            client_cert: None,
            connect_to,
            connections: bench.o.connections,
            duration,
            cpu: bench.load_cpu,
        }
        .run()
    };
    rows.extend(bench.alternated(&[
        Contender {
            name: TP_HTTPS_EXPLICIT,
            pid: t.pid(),
            run: Box::new(|d| oha(Some(&proxy), None, d)),
        },
        Contender {
            name: TP_HTTPS,
            pid: t.pid(),
            run: Box::new(|d| oha(None, Some(&connect_to), d)),
        },
    ])?);

    // The blind relay: a `CONNECT` to bulk.test, and a connection to its
    // address. The sender speaks first, so the redirected one names
    // nothing: tollgate waits a second for the client to speak, then
    // decides `connect` on the address (the bulk reader's clock starts at
    // the first byte).
    let bulk_rows = bulk_alternated(
        bench,
        &[
            (
                TP_BULK_EXPLICIT,
                bulk::Route::Connect(t.addr, BULK_AUTHORITY),
            ),
            (TP_BULK, bulk::Route::Direct(sender)),
        ],
    )?;

    // Answers alone would not tell a redirected request from one that
    // slipped past the rules straight to the upstream (which answers the
    // same): the audit log must show tollgate took each kind through its
    // transparent listener and decided it as the explicit one does.
    expect_transparent(
        &t,
        TP_HTTP,
        "bench:items.get",
        SocketAddr::new(BENCH_IP, 80),
    )?;
    expect_transparent(
        &t,
        TP_HTTPS,
        "bench:items.get",
        SocketAddr::new(BENCH_IP, 443),
    )?;
    expect_transparent(&t, TP_BULK, "connect", sender)?;
    Ok((rows, bulk_rows))
}

/// `tollgate iptables --apply` with its defaults, inside the namespace.
/// Run through `ip netns exec` rather than from the section's thread: the
/// namespace is then named on the command line, and nothing depends on
/// which thread started it.
fn redirect(netns: &Netns) -> anyhow::Result<()> {
    let out = netns
        .command(tollgate::binary()?)
        .args(["iptables", "--apply"])
        .output()
        .context("running `tollgate iptables --apply`")?;
    anyhow::ensure!(
        out.status.success(),
        "`tollgate iptables --apply` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Some request of `row` reached the transparent listener headed for
/// `original` and was allowed as `action`.
fn expect_transparent(
    t: &Participant,
    row: &str,
    action: &str,
    original: SocketAddr,
) -> anyhow::Result<()> {
    // Lines are written in batches a millisecond apart, a blind relay's
    // when it ends.
    std::thread::sleep(Duration::from_millis(200));
    let audit = std::fs::read_to_string(t.dir().context("config dir")?.join("audit.log"))?;
    let original = original.to_string();
    let mut redirected = audit
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["listener"] == tollgate::TRANSPARENT_LISTENER)
        .peekable();
    let first = redirected.peek().cloned();
    let found = redirected.any(|line| {
        line["mode"] == "transparent"
            && line["action"] == action
            && line["decision"] == "allow"
            && line["original_destination"] == original.as_str()
    });
    anyhow::ensure!(
        found,
        "{row}: no allowed `{action}` through the transparent listener to {original} in the audit log (its first line there: {})",
        first.map_or("none".into(), |l| l.to_string())
    );
    Ok(())
}
