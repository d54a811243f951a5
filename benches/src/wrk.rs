//! Running wrk and reading its report.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One load run, whichever generator made it (wrk here, oha in `oha.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadResult {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub requests: u64,
}

pub struct WrkRun<'a> {
    pub url: &'a str,
    pub connections: u32,
    pub duration: Duration,
    pub script: Option<&'a Path>,
    /// Extra request headers (`-H`), each `Name: value`.
    pub headers: &'a [String],
    /// `taskset -c CPU` for the load generator, when pinning.
    pub cpu: Option<&'a str>,
}

impl WrkRun<'_> {
    pub fn run(&self) -> anyhow::Result<LoadResult> {
        let mut cmd = match self.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu, "wrk"]);
                c
            }
            None => Command::new("wrk"),
        };
        cmd.args(["-t1", "--latency"])
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.duration.as_secs().max(1)));
        if let Some(script) = self.script {
            cmd.arg("-s").arg(script);
        }
        for header in self.headers {
            cmd.arg("-H").arg(header);
        }
        cmd.arg(self.url);
        let out = cmd.output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "wrk failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse(&text).ok_or_else(|| anyhow::anyhow!("cannot read wrk output:\n{text}"))
    }
}

fn millis(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = value.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

pub fn parse(text: &str) -> Option<LoadResult> {
    let mut result = LoadResult {
        requests_per_sec: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        non_2xx: 0,
        requests: 0,
    };
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => result.requests_per_sec = v.parse().ok()?,
            (Some("50.000%"), Some(v)) | (Some("50%"), Some(v)) => result.p50_ms = millis(v)?,
            (Some("99.000%"), Some(v)) | (Some("99%"), Some(v)) => result.p99_ms = millis(v)?,
            (Some("Non-2xx"), _) => {
                result.non_2xx = line.rsplit(' ').next()?.parse().ok()?;
            }
            (Some(n), Some("requests")) => result.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    (result.requests_per_sec > 0.0).then_some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let text = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n  Latency Distribution\n     50%  210.00us\n     75%  300.00us\n     90%    1.20ms\n     99%    2.50ms\n  120000 requests in 1.00s, 10.00MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec: 119999.50\n";
        let r = parse(text).unwrap();
        assert_eq!(r.requests_per_sec, 119999.5);
        assert_eq!(r.p50_ms, 0.21);
        assert_eq!(r.p99_ms, 2.5);
        assert_eq!(r.non_2xx, 3);
        assert_eq!(r.requests, 120000);
    }
}
