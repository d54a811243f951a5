//! Partial failure under tollgate, as an operator meets it: the decision
//! service killed and restarted under load, an upstream that resets in the
//! middle of its answer, an audit output that cannot be written.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_e2e::{resetting, Cut, DecisionService, Setup, TestPki, Tollgate, Upstream};

const PULLS: &str = "http://api.github.com/repos/acme/api/pulls";
const DELETE_REPO: &str = "http://api.github.com/repos/acme/api";

// ---------------------------------------------------------------------------
// The decision service killed and restarted under load

/// What one agent request got.
struct Answered {
    status: u16,
    reason: String,
    took: Duration,
    at: Instant,
}

/// An agent sending GETs through the proxy on a keep-alive connection, one
/// after the other, until `stop`; a new connection whenever one fails.
async fn agent_loop(proxy: SocketAddr, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Answered>>>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(proxy).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            let request = http::Request::get(PULLS)
                .header("host", "api.github.com")
                .body(Empty::new())
                .unwrap();
            let started = Instant::now();
            let Ok(response) = sender.send_request(request).await else {
                break;
            };
            let status = response.status().as_u16();
            let Ok(body) = response.into_body().collect().await else {
                break;
            };
            let reason = serde_json::from_slice::<serde_json::Value>(&body.to_bytes())
                .ok()
                .and_then(|v| v["reason"].as_str().map(str::to_string))
                .unwrap_or_default();
            log.lock().unwrap().push(Answered {
                status,
                reason,
                took: started.elapsed(),
                at: Instant::now(),
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_service_killed_under_load_forwards_nothing_undecided_and_serves_after_restart() {
    let upstream = Upstream::http().await;
    let mut service = DecisionService::start(Setup::default());
    // The harness's decision timeout (500 ms) bounds every wait on it.
    let tg = Tollgate::start(Setup {
        decision_endpoint: Some(service.url()),
        ..Setup::routing("api.github.com:80", upstream.addr)
    });
    let timeout = Duration::from_millis(500);

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let agents: Vec<_> = (0..4)
        .map(|_| tokio::spawn(agent_loop(tg.proxy, stop.clone(), log.clone())))
        .collect();
    let count = |status: u16| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|a| a.status == status)
            .count()
    };
    let wait_for = |what: &'static str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "never {what}:\n{}", tg.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("served before the kill", &|| count(200) >= 20);

    // kill -9: the proxy loses its channel and its revocation stream at
    // once, with requests in flight.
    service.stop();
    wait_for("refused while the service was away", &|| count(503) >= 50);

    service.restart();
    let restarted = Instant::now();
    wait_for("served again after the restart", &|| {
        log.lock()
            .unwrap()
            .iter()
            .any(|a| a.status == 200 && a.at > restarted)
    });
    let first_allowed = log
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.status == 200 && a.at > restarted)
        .map(|a| a.at - restarted)
        .min()
        .unwrap();
    // A figure, not a check: timing belongs to the benchmarks.
    eprintln!("first allowed answer {first_allowed:?} after the restarted service listened");
    stop.store(true, Ordering::Relaxed);
    for agent in agents {
        agent.await.unwrap();
    }

    let log = log.lock().unwrap();
    let allowed = log.iter().filter(|a| a.status == 200).count();
    // Every request the upstream saw is one the agent got a decided 200
    // for: nothing went out without a decision.
    assert_eq!(upstream.count(), allowed, "{}", tg.logs());
    for answer in log.iter().filter(|a| a.status != 200) {
        assert_eq!(
            (answer.status, answer.reason.as_str()),
            (503, "decision_unavailable")
        );
    }
    // Prompt: bounded by the decision deadline, with a margin for a busy
    // machine; a hang would blow far past it.
    let slowest = log.iter().map(|a| a.took).max().unwrap();
    assert!(slowest < timeout + Duration::from_secs(5), "{slowest:?}");
    // Each refusal has its audit line (written a few milliseconds later).
    let refused = log.iter().filter(|a| a.status == 503).count();
    let audited = || {
        tg.audit_lines()
            .iter()
            .filter(|l| l["reason"] == "decision_unavailable" && l["status"] == 503)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while audited() < refused && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(audited(), refused);
}

// ---------------------------------------------------------------------------
// An upstream that resets in the middle of its answer

/// A GET through the explicit proxy, written by hand: the answer's bytes
/// up to the point the proxy closed the connection.
async fn raw_get(proxy: SocketAddr) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(
            format!(
                "GET {PULLS} HTTP/1.1\r\nHost: api.github.com\r\nConnection: keep-alive\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    // Closed (or reset) by the proxy: read to the end, whatever ends it.
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got))
        .await
        .expect("the proxy must close a connection whose answer was cut");
    String::from_utf8_lossy(&got).into_owned()
}

const HEAD_AND_HALF: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nfifty bytes of a hundred, then the upstream resets";
const CHUNKED_HALF: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nsixteen bytes...\r\n";
const UNTIL_CLOSE_HALF: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nread until the close";

#[tokio::test]
async fn an_upstream_reset_mid_answer_is_a_cut_answer_and_an_audit_line_saying_so() {
    for (case, bytes) in [
        ("content-length", HEAD_AND_HALF),
        ("chunked", CHUNKED_HALF),
        ("until close", UNTIL_CLOSE_HALF),
    ] {
        let upstream = resetting(Cut::Reset(bytes), None).await;
        let tg = Tollgate::start(Setup::routing("api.github.com:80", upstream));
        let answer = raw_get(tg.proxy).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{case}: {answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        // Never a body that looks complete: fewer bytes than declared, or
        // chunks without their last one.
        if let Some(length) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
            let length: usize = length.trim().parse().unwrap();
            assert!(body.len() < length, "{case}: {answer}");
        } else {
            assert!(
                head.contains("transfer-encoding: chunked"),
                "{case}: {head}"
            );
            assert!(!body.ends_with("0\r\n\r\n"), "{case}: {answer}");
        }
        let line = tg.wait_audit(|l| l["action"] == "github:pulls.list");
        assert_eq!(line["decision"], "allow", "{case}");
        assert_eq!(line["status"], 200, "{case}");
        let error = line["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("upstream response body failed"),
            "{case}: {line}"
        );
        assert!(error.contains("reset"), "{case}: {line}");
    }
}

#[tokio::test]
async fn an_upstream_reset_before_its_answer_is_a_502_with_the_reason() {
    let upstream = resetting(Cut::Reset(b""), None).await;
    let tg = Tollgate::start(Setup::routing("api.github.com:80", upstream));
    let out = tg.curl(&[PULLS]).await;
    assert_eq!(out.status, 502, "{}", out.body);
    assert_eq!(out.json()["error"], "upstream_failed");
    let line = tg.wait_audit(|l| l["action"] == "github:pulls.list");
    // Allowed by policy (`reason` says why), ended by the upstream.
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["status"], 502);
    let error = line["error"].as_str().unwrap();
    assert!(
        error.starts_with("upstream failed") && error.contains("reset"),
        "{line}"
    );
    assert_eq!(out.json()["decision_id"], line["decision_id"]);
}

/// Intercepted HTTPS, the agent speaking HTTP/1.1 and HTTP/2 to tollgate,
/// tollgate's upstream resetting its TCP connection (HTTP/1.1) or its
/// stream (HTTP/2): curl reports a cut transfer, never a complete one.
#[tokio::test]
async fn an_upstream_reset_through_interception_cuts_the_agents_answer() {
    let pki = TestPki::new();
    let server = pki.server_config(&["api.github.com"]);
    let url = "https://api.github.com/repos/acme/api/pulls";
    for (case, cut) in [
        ("tcp reset", Cut::Reset(HEAD_AND_HALF)),
        (
            "h2 stream reset",
            Cut::StreamReset {
                length: 100,
                sent: 40,
            },
        ),
    ] {
        let upstream = resetting(cut, Some(server.clone())).await;
        let tg = Tollgate::start(Setup {
            resolve: vec![("api.github.com:443".into(), upstream)],
            upstream_ca: Some(pki.ca_pem.clone()),
            ..Setup::default()
        });
        let ca = tg.ca_cert().display().to_string();
        for agent_version in ["--http1.1", "--http2"] {
            let out = tg.curl(&["--cacert", &ca, agent_version, url]).await;
            assert_eq!(out.status, 200, "{case} {agent_version}: {}", out.stderr);
            // curl's own words for a cut answer: 18, "transfer closed with
            // N bytes remaining" (HTTP/1.1); 92, "stream was not closed
            // cleanly" (HTTP/2, RST_STREAM).
            let cut_exit = if agent_version == "--http2" { 92 } else { 18 };
            assert_eq!(out.exit, cut_exit, "{case} {agent_version}: {}", out.stderr);
            assert!(out.size_download < 100, "{case} {agent_version}");
        }
        let cut = || {
            tg.audit_lines()
                .into_iter()
                .filter(|l| l["action"] == "github:pulls.list")
                .collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while cut().len() < 2 {
            assert!(Instant::now() < deadline, "{case}: {}", tg.stdout_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for line in cut() {
            assert_eq!(line["mode"], "intercept");
            let error = line["error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with("upstream response body failed"),
                "{case}: {line}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The audit output cannot be written

fn audit_to(output: &str, on_failure: &str) -> String {
    format!("audit: {{ output: \"{output}\", on_failure: {on_failure} }}\n")
}

async fn metric(tg: &Tollgate, name: &str) -> f64 {
    let out = tollgate_e2e::curl(&[&format!("http://{}/metrics", tg.admin)]).await;
    out.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{}", out.body))
}

/// A denied request: decided, answered and audited without reaching the
/// upstream, so its line is the first to meet the broken output.
async fn first_failed_write(tg: &Tollgate) {
    assert_eq!(tg.curl(&["-X", "DELETE", DELETE_REPO]).await.status, 403);
    tg.wait_log("audit output failed to write");
}

#[tokio::test]
async fn a_full_disk_under_the_audit_log_refuses_requests() {
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        extra_yaml: audit_to("/dev/full", "refuse"),
        ..Setup::routing("api.github.com:80", upstream.addr)
    });
    first_failed_write(&tg).await;
    for _ in 0..3 {
        let out = tg.curl(&[PULLS]).await;
        assert_eq!(out.status, 503, "{}", out.body);
        assert_eq!(out.json()["error"], "audit_unavailable");
    }
    assert_eq!(upstream.connections(), 0, "nothing reached the upstream");
    assert!(
        tg.logs().contains("No space left on device"),
        "{}",
        tg.logs()
    );
    assert!(metric(&tg, "tollgate_audit_write_failures_total").await >= 1.0);
}

#[tokio::test]
async fn a_full_disk_under_the_audit_log_with_forward_forwards_and_says_lines_are_lost() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        extra_yaml: audit_to("/dev/full", "forward"),
        ..Setup::routing("api.github.com:80", upstream.addr)
    });
    first_failed_write(&tg).await;
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);
    assert_eq!(upstream.count(), 2);
    assert!(
        tg.logs().contains("audit lines are being lost"),
        "{}",
        tg.logs()
    );
    assert!(metric(&tg, "tollgate_audit_write_failures_total").await >= 1.0);
}

/// A named pipe and a reader of it (`cat`, its output kept in a file).
struct Fifo {
    path: std::path::PathBuf,
    dir: tempfile::TempDir,
    reader: Option<std::process::Child>,
    readers: usize,
}

impl Fifo {
    fn new() -> Fifo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let mut fifo = Fifo {
            path,
            dir,
            reader: None,
            readers: 0,
        };
        fifo.read();
        fifo
    }

    /// Start a new reader; what it reads goes to `read-N`.
    fn read(&mut self) {
        self.readers += 1;
        let out = std::fs::File::create(self.output(self.readers)).unwrap();
        self.reader = Some(
            std::process::Command::new("cat")
                .arg(&self.path)
                .stdout(out)
                .spawn()
                .unwrap(),
        );
    }

    /// The reader goes away: the pipe's writer meets EPIPE.
    fn close(&mut self) {
        let mut reader = self.reader.take().unwrap();
        reader.kill().unwrap();
        reader.wait().unwrap();
    }

    fn output(&self, n: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("read-{n}"))
    }

    fn lines(&self, n: usize) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.output(n))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("whole JSON lines"))
            .collect()
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        if let Some(mut reader) = self.reader.take() {
            let _ = reader.kill();
            let _ = reader.wait();
        }
    }
}

#[tokio::test]
async fn a_pipe_whose_reader_left_refuses_requests_until_a_reader_is_back() {
    let mut fifo = Fifo::new();
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        extra_yaml: audit_to(fifo.path.to_str().unwrap(), "refuse"),
        ..Setup::routing("api.github.com:80", upstream.addr)
    });
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fifo.lines(1).is_empty() {
        assert!(Instant::now() < deadline, "the reader got no line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fifo.close();
    first_failed_write(&tg).await;
    let out = tg.curl(&[PULLS]).await;
    assert_eq!(out.status, 503, "{}", out.body);
    let refused_id = out.json()["decision_id"].as_str().unwrap().to_string();
    assert_eq!(out.json()["error"], "audit_unavailable");
    assert_eq!(upstream.count(), 1);

    // A new reader: the pipe is opened again, the lines held meanwhile
    // reach it, and requests are served again.
    fifo.read();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = tg.curl(&[PULLS]).await;
        if out.status == 200 {
            break;
        }
        assert_eq!(out.json()["error"], "audit_unavailable");
        assert!(
            Instant::now() < deadline,
            "never served again:\n{}",
            tg.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tg.logs().contains("audit output writable again"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = fifo.lines(2);
        let held = lines.iter().any(|l| l["action"] == "github:repos.delete")
            && lines
                .iter()
                .any(|l| l["decision_id"] == refused_id.as_str());
        if held {
            let refused = lines
                .iter()
                .find(|l| l["decision_id"] == refused_id.as_str())
                .unwrap();
            assert_eq!(refused["reason"], "audit_unavailable");
            assert_eq!(refused["status"], 503);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "held lines never came: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_pipe_whose_reader_left_with_forward_forwards_and_says_lines_are_lost() {
    let mut fifo = Fifo::new();
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        extra_yaml: audit_to(fifo.path.to_str().unwrap(), "forward"),
        ..Setup::routing("api.github.com:80", upstream.addr)
    });
    fifo.close();
    first_failed_write(&tg).await;
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);
    assert_eq!(upstream.count(), 1);
    assert!(tg.logs().contains("audit lines are being lost"));
}

#[test]
fn an_audit_output_that_cannot_be_opened_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder/audit.log");
    let (status, said) = Tollgate::fails_to_start(Setup {
        extra_yaml: audit_to(missing.to_str().unwrap(), "refuse"),
        ..Setup::default()
    });
    assert!(!status.success());
    assert!(
        said.contains("cannot open the audit output") && said.contains("no-such-folder"),
        "{said}"
    );
}
