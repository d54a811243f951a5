//! Real agent-side clients: curl and Python `requests`; and, for what they
//! cannot be made to send, HTTP/1.1 written by hand on a socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::repo_root;

#[derive(Debug)]
pub struct CurlOutput {
    pub status: u16,
    pub body: String,
    /// curl's exit code (0 unless the transfer failed).
    pub exit: i32,
    pub stderr: String,
    /// `%{http_version}` as curl reports it: `1.1` or `2`.
    pub http_version: String,
    /// New connections curl opened for the last URL (0: reused).
    pub num_connects: u32,
    /// Body bytes received for the last URL.
    pub size_download: u64,
}

impl CurlOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// An answer as curl saw it, with the response headers.
pub struct Answer {
    pub out: CurlOutput,
    pub headers: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// curl with `args`, keeping the response headers; the transfer must
/// succeed.
pub async fn curl_answer(args: &[&str]) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let mut all = vec!["-D", headers.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = curl(&all).await;
    assert_eq!(out.exit, 0, "curl failed: {}", out.stderr);
    Answer {
        out,
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
    }
}

/// Run curl with `args`; status, HTTP version and connection count are
/// appended by `-w` (with several URLs, the last one's).
pub async fn curl(args: &[&str]) -> CurlOutput {
    curl_in(&[], args).await
}

/// A program run under `launcher` (`ip netns exec <ns>`), or directly.
fn launched(launcher: &[&str], program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    match launcher.split_first() {
        Some((first, rest)) => {
            let mut cmd = tokio::process::Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
        None => tokio::process::Command::new(program),
    }
}

/// [`curl`] run under `launcher` (inside a network namespace, say).
pub async fn curl_in(launcher: &[&str], args: &[&str]) -> CurlOutput {
    let marker = "\n--tollgate-test--";
    let out = launched(launcher, "curl")
        .args(["-sS", "--max-time", "60", "--noproxy", ""])
        .args(args)
        .arg("-w")
        .arg(format!(
            "{marker}%{{http_code}} %{{http_version}} %{{num_connects}} %{{size_download}}"
        ))
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("curl is installed (scripts/setup-test-env)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = stdout.rsplit_once(marker).unwrap_or((&stdout, "0 0"));
    let mut tail = tail.split_whitespace();
    CurlOutput {
        status: tail.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        http_version: tail.next().unwrap_or("").to_string(),
        num_connects: tail.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        size_download: tail.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        body: body.to_string(),
        exit: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The Python interpreter with `requests` (the project's virtualenv).
pub fn python_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/setup-test-env",
        venv.display()
    );
    venv
}

/// Run a Python snippet with `env`; returns (exit code, stdout, stderr).
pub async fn python(code: &str, env: &[(&str, String)]) -> (i32, String, String) {
    python_in(&[], code, env).await
}

/// [`python`] run under `launcher` (inside a network namespace, say).
pub async fn python_in(
    launcher: &[&str],
    code: &str,
    env: &[(&str, String)],
) -> (i32, String, String) {
    let mut cmd = launched(launcher, python_bin());
    cmd.arg("-c").arg(code).stdin(Stdio::null());
    for key in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(key);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run python");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Read an HTTP/1.1 head, up to and including its blank line, and no
/// further: what follows belongs to whatever the connection carries next.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed mid-head");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Send `head` (a request line and headers, each ending in CRLF) and
/// `headers` (`Name: value`) to the proxy at `proxy` by hand; the stream
/// and the answer's head.
pub async fn send_head(proxy: SocketAddr, head: &str, headers: &[&str]) -> (TcpStream, String) {
    let mut request = head.to_string();
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_head(&mut stream).await;
    (stream, answer)
}

/// Ask the explicit proxy at `proxy` to switch the absolute `url` to
/// `protocol`, sending `headers` (`Name: value`) besides; the stream and
/// the answer's head.
pub async fn ask_to_switch(
    proxy: SocketAddr,
    url: &str,
    protocol: &str,
    headers: &[&str],
) -> (TcpStream, String) {
    let uri: http::Uri = url.parse().unwrap();
    let host = uri.host().unwrap();
    let head = format!(
        "GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    send_head(proxy, &head, headers).await
}
