//! A Redis server of the benchmark's own, for decision replicas that share
//! tasks through it: on a free loopback port, nothing persisted, gone with
//! the participant. Also what the server says it did, read over its own
//! protocol so the figures need no client library.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::process::{command, free_port, Participant};

/// `redis-server` on the `PATH`, else Debian's.
pub fn binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

/// Start `redis-server` (on `cpu` when pinning); ready when it accepts.
pub fn start(cpu: Option<&str>) -> anyhow::Result<Participant> {
    let bin = binary().context("redis-server is missing: apt-get install -y redis-server")?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut cmd = command(&bin, cpu);
    // No snapshots and no append-only file: the disk would be a participant
    // the rows never asked for.
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path());
    let server = Participant::at(cmd, SocketAddr::from(([127, 0, 0, 1], port)), Some(dir))?;
    // Accepting is not answering: it may still be loading. And the port
    // was free a moment ago only: whoever answers must be the server
    // started here, never another one on this machine (whose data every
    // row would then write into).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = info(server.addr, "server") {
            let pid = text
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .map(str::trim);
            anyhow::ensure!(
                pid == Some(server.pid().to_string().as_str()),
                "{} is answered by another Redis (process {pid:?}), not by ours",
                server.addr
            );
            return Ok(server);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "redis-server never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `state:` section of a tollgate configuration using `server`.
pub fn state_yaml(server: SocketAddr) -> String {
    format!("state:\n  redis:\n    url: \"redis://{server}/0\"\n")
}

/// Per command (`hgetall`, `evalsha`, …), how many times it ran and the
/// microseconds it spent, from `INFO commandstats`.
pub fn command_stats(server: SocketAddr) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let text = info(server, "commandstats")?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        // cmdstat_hgetall:calls=3,usec=12,usec_per_call=4.00,…
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| -> Option<u64> {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        let calls = field("calls").with_context(|| format!("calls in {line}"))?;
        let usec = field("usec").with_context(|| format!("usec in {line}"))?;
        out.insert(name.to_string(), (calls, usec));
    }
    Ok(out)
}

/// The text of `INFO <section>`.
fn info(server: SocketAddr, section: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(server)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n",
        section.len()
    )?;
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    reader.read_line(&mut head)?;
    // A bulk string: `$<length>\r\n<bytes>\r\n`; anything else is an error.
    let length: usize = head
        .trim_end()
        .strip_prefix('$')
        .with_context(|| format!("INFO answered {head:?}"))?
        .parse()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8(body)?)
}
