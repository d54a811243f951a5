//! Running oha and reading its JSON report. oha is the generator for the
//! rows wrk cannot drive: wrk has no `CONNECT`, oha tunnels `https://` URLs
//! through `-x` and sends `http://` ones in absolute form, so the plain and
//! the intercepted tollgate rows are measured by the same client. With an
//! `https://` proxy it speaks TLS to the proxy itself, with `--cacert`
//! and, given `--cert`/`--key`, a client certificate: the plain and the
//! mTLS proxy listener rows.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::wrk::LoadResult;

/// oha on `PATH`, else where `cargo install` puts it (which is not always
/// on the `PATH` a test runs with).
pub fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("oha"))
            .find(|p| p.is_file())
    });
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    on_path.or_else(|| {
        cargo_home
            .map(|c| c.join("bin/oha"))
            .filter(|p| p.is_file())
    })
}

pub struct OhaRun<'a> {
    pub url: &'a str,
    /// `http://ip:port` (or `https://`) of a forward proxy, or none for
    /// direct.
    pub proxy: Option<&'a str>,
    /// CA the client trusts for `https://` URLs and an `https://` proxy.
    pub cacert: Option<&'a Path>,
    /// Client certificate and key, presented in every TLS handshake.
    pub client_cert: Option<(&'a Path, &'a Path)>,
    /// `host:port:ip:port`: where to connect for the URL's `host:port`
    /// instead of resolving it, as `curl --connect-to` (the name stays in
    /// SNI and `Host`). A thread that entered a network namespace still
    /// resolves with the machine's own hosts file.
    pub connect_to: Option<&'a str>,
    pub connections: u32,
    pub duration: Duration,
    /// `taskset -c CPU` for the load generator, when pinning.
    pub cpu: Option<&'a str>,
}

impl OhaRun<'_> {
    pub fn run(&self) -> anyhow::Result<LoadResult> {
        let oha =
            binary().context("oha is missing: cargo install oha --version 1.16.0 --locked")?;
        let mut cmd = match self.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu]).arg(oha);
                c
            }
            None => Command::new(oha),
        };
        // One runtime thread, like `wrk -t1`; `-w` lets requests in flight
        // at the deadline finish instead of counting as errors.
        cmd.args(["--no-tui", "--output-format", "json", "-w"])
            .args(["--worker-threads", "1", "--http-version", "1.1"])
            .arg("-c")
            .arg(self.connections.to_string())
            .arg("-z")
            .arg(format!("{}ms", self.duration.as_millis().max(1)));
        if let Some(proxy) = self.proxy {
            // The proxy resolves the target; oha would otherwise look it up first.
            cmd.arg("-x").arg(proxy).arg("--no-pre-lookup");
        }
        if let Some(ca) = self.cacert {
            cmd.arg("--cacert").arg(ca);
        }
        if let Some((cert, key)) = self.client_cert {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(target) = self.connect_to {
            cmd.arg("--connect-to").arg(target);
        }
        cmd.arg(self.url);
        let out = cmd.output().context("running oha")?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "oha failed: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse(&text).with_context(|| format!("cannot read oha output:\n{text}"))
    }
}

pub fn parse(text: &str) -> anyhow::Result<LoadResult> {
    let v: Value = serde_json::from_str(text)?;
    let number = |pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_f64)
            .with_context(|| format!("no {pointer}"))
    };
    let mut ok = 0u64;
    let mut non_2xx = 0u64;
    for (code, n) in v["statusCodeDistribution"]
        .as_object()
        .context("no statusCodeDistribution")?
    {
        let n = n.as_u64().unwrap_or(0);
        if code.starts_with('2') {
            ok += n
        } else {
            non_2xx += n
        }
    }
    // A connection error or a broken response is as much a failure as a
    // wrong status: count it with the non-2xx answers.
    if let Some(errors) = v["errorDistribution"].as_object() {
        non_2xx += errors.values().filter_map(Value::as_u64).sum::<u64>();
    }
    Ok(LoadResult {
        requests_per_sec: number("/summary/requestsPerSec")?,
        p50_ms: number("/metrics/latency_ms/p50")?,
        p99_ms: number("/metrics/latency_ms/p99")?,
        non_2xx,
        requests: ok + non_2xx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_oha_report() {
        let text = r#"{"summary":{"successRate":1.0,"requestsPerSec":30123.5},
            "metrics":{"success_rate":1.0,"requests_per_sec":30123.5,
              "latency_ms":{"min":0.1,"mean":1.0,"p50":0.9,"p95":1.5,"p99":2.25,"max":9.0}},
            "statusCodeDistribution":{"200":301230,"403":2},
            "errorDistribution":{"connection closed":1}}"#;
        let r = parse(text).unwrap();
        assert_eq!(r.requests_per_sec, 30123.5);
        assert_eq!((r.p50_ms, r.p99_ms), (0.9, 2.25));
        assert_eq!((r.non_2xx, r.requests), (3, 301233));
    }
}
