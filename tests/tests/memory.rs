//! A burst of agent connections beyond the open-file limit tollgate
//! inherited is served, and does not leave its memory behind: once it has
//! ended, tollgate gives the heap the connections used back to the system,
//! so a pod's resident memory follows its traffic.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_e2e::{Setup, Tollgate, Upstream};

/// Above the 1,000 closed connections below which tollgate does not bother.
const BURST: usize = 2_000;

/// One allowed request on a new connection, answered 200; the connection
/// stays open and idle.
async fn idle_connection_after_one_request(proxy: &str) -> TcpStream {
    // A proxy out of descriptors may not even accept: then no answer comes.
    tokio::time::timeout(Duration::from_secs(10), one_request(proxy))
        .await
        .expect("no answer from tollgate in 10 s")
}

async fn one_request(proxy: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(b"GET http://api.github.com/repos/acme/api/pulls HTTP/1.1\r\nHost: api.github.com\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "tollgate closed the connection");
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        if got.len() >= end + 4 + length {
            return stream;
        }
    }
}

/// Set this process's soft limit on open files (children inherit it).
fn soft_open_files(wanted: u64) {
    // SAFETY: getrlimit/setrlimit read and write the struct passed in only.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max >= wanted,
            "the hard limit on open files ({}) is below {wanted}",
            limit.rlim_max
        );
        limit.rlim_cur = wanted;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

#[tokio::test]
async fn a_burst_beyond_the_inherited_file_limit_is_served_and_its_memory_given_back() {
    // tollgate starts under the common soft limit of 1,024 open files, below
    // the burst: it has to lift its own. This process then lifts its own to
    // hold the agents' ends.
    soft_open_files(1_024);
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup::routing("api.github.com:80", upstream.addr));
    soft_open_files(BURST as u64 + 1_024);
    let proxy = tg.proxy_url().trim_start_matches("http://").to_string();
    // What serving allocates once (pools, caches) belongs to the baseline.
    drop(idle_connection_after_one_request(&proxy).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = tg.rss_kib();

    let mut burst = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        burst.push(idle_connection_after_one_request(&proxy).await);
    }
    let open = tg.rss_kib();
    assert!(
        open > before + BURST as u64 * 4,
        "{BURST} open connections should show in RSS: {before} KiB before, {open} KiB open"
    );
    drop(burst);

    let grown = open - before;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = tg.rss_kib();
    while now > before + grown / 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        now = tg.rss_kib();
    }
    assert!(
        now <= before + grown / 4,
        "RSS {before} KiB before the burst, {open} KiB during it, still {now} KiB after it ended"
    );
}
