//! A real `redis-server` (Debian's package, installed by
//! scripts/setup-test-env) for decision replicas that share tasks, budgets
//! and revocations; and a [`Relay`] in front of it, so one replica can lose
//! Redis while the others keep it.
//!
//! The server is configured on its command line only: a config file of the
//! machine's own Redis can then change nothing a test relies on. Data lives
//! in an append-only file in the server's temp folder, so a restart on the
//! same port finds what was there before.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::process::capture;
use crate::TestPki;

/// How the server lets clients in.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// An ACL user `(name, password)`. The default user is then switched
    /// off, so nothing gets in without a password.
    pub user: Option<(String, String)>,
    /// That user's ACL rules (`~{tollgate}:* -@all +@read …`, split on
    /// whitespace); none: every key, channel and command.
    pub rules: Option<String>,
    /// TLS only (no plaintext port), with a certificate for 127.0.0.1 from
    /// a CA minted for the test; clients are not asked for certificates.
    pub tls: bool,
}

/// The certificate files of a TLS server, kept in its folder.
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: Arc<rustls::ClientConfig>,
}

pub struct RedisServer {
    pub port: u16,
    options: RedisOptions,
    /// The test side's own user (when the default one is off): a user with
    /// narrow rules could not look at everything a test checks.
    inspector: (String, String),
    tls: Option<TlsFiles>,
    child: Option<Child>,
    /// The server's log (it logs to stdout), kept across restarts.
    output: Vec<Arc<Mutex<Vec<String>>>>,
    dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl RedisServer {
    /// Plain TCP, no password.
    pub fn start() -> RedisServer {
        RedisServer::with(RedisOptions::default())
    }

    pub fn with(options: RedisOptions) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let tls = options.tls.then(|| {
            let pki = TestPki::new();
            let (cert, key) = pki.issue_pem(&["127.0.0.1", "localhost"]);
            let write = |name: &str, text: &str| {
                let path = dir.path().join(name);
                std::fs::write(&path, text).unwrap();
                path
            };
            TlsFiles {
                ca: write("redis-ca.pem", &pki.ca_pem),
                cert: write("redis.pem", &cert),
                key: write("redis.key", &key),
                client: pki.client_config(),
            }
        });
        let mut server = RedisServer {
            port: 0,
            options,
            inspector: ("fixture".into(), crate::random_secret("redis-fixture")),
            tls,
            child: None,
            output: Vec::new(),
            dir,
        };
        // The port is picked free, then let go before Redis binds it:
        // another process may take it in between, so try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().is_ok() {
                return server;
            }
        }
        panic!("redis-server did not start:\n{}", server.logs());
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL a replica is given: `redis://` or `rediss://`, database 0.
    pub fn url(&self) -> String {
        self.url_via(self.addr())
    }

    /// The URL with `addr` in place of the server's (a [`Relay`]'s).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{addr}/0")
    }

    /// The CA that verifies a TLS server's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|t| t.ca.clone())
    }

    /// Shut the server down cleanly (its data stays in its folder).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM: Redis flushes the append-only file and exits.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start again on the same port with the same data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop() first");
        if let Err(e) = self.spawn() {
            panic!("redis-server did not start again: {e}\n{}", self.logs());
        }
    }

    /// Everything the server logged, every run of it.
    pub fn logs(&self) -> String {
        self.output
            .iter()
            .map(|o| o.lock().unwrap().join("\n"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A connection from the test side, with every right: to look at what
    /// the replicas stored.
    pub fn client(&self) -> std::io::Result<RedisClient> {
        self.client_via(self.addr())
    }

    /// [`RedisServer::client`] through `addr` (a [`Relay`]'s).
    pub fn client_via(&self, addr: SocketAddr) -> std::io::Result<RedisClient> {
        let mut client = RedisClient::connect(addr, self.tls.as_ref().map(|t| &t.client))?;
        if self.options.user.is_some() {
            let (user, password) = &self.inspector;
            match client.command(&["AUTH", user, password])? {
                Reply::Status(_) => {}
                other => return Err(std::io::Error::other(format!("AUTH: {other:?}"))),
            }
        }
        Ok(client)
    }

    /// The names of the keys matching `pattern` (`KEYS`: fine for the few
    /// keys a test makes).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.client().unwrap().command(&["KEYS", pattern]).unwrap() {
            Reply::Array(Some(items)) => items.into_iter().filter_map(Reply::text).collect(),
            other => panic!("KEYS {pattern}: {other:?}"),
        }
    }

    /// Start `redis-server` and wait until it answers PING; an error when
    /// it exits first (its port taken, say).
    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.path().display().to_string(),
            // No snapshots; the append-only file alone carries data over a
            // restart.
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "yes".into(),
            "--daemonize".into(),
            "no".into(),
            "--logfile".into(),
            "".into(),
        ];
        match &self.tls {
            Some(tls) => args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port,
                "--tls-cert-file".into(),
                tls.cert.display().to_string(),
                "--tls-key-file".into(),
                tls.key.display().to_string(),
                "--tls-ca-cert-file".into(),
                tls.ca.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]),
            None => args.extend(["--port".into(), port]),
        }
        if let Some((user, password)) = &self.options.user {
            args.extend(["--user", "default", "off"].map(String::from));
            let all = "~* &* +@all";
            let rules = self.options.rules.as_deref().unwrap_or(all);
            args.extend(["--user".into(), user.clone(), "on".into()]);
            args.push(format!(">{password}"));
            args.extend(rules.split_whitespace().map(String::from));
            let (inspector, password) = &self.inspector;
            args.extend(["--user".into(), inspector.clone(), "on".into()]);
            args.push(format!(">{password}"));
            args.extend(all.split_whitespace().map(String::from));
        }
        let mut child = Command::new("redis-server")
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-server is installed (scripts/setup-test-env)");
        self.output.push(capture(child.stdout.take().unwrap()));
        self.output.push(capture(child.stderr.take().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("redis-server exited with {status}"));
            }
            // It answers LOADING while it replays the append-only file.
            let pong = self.client().and_then(|mut c| c.command(&["PING"]));
            if matches!(&pong, Ok(Reply::Status(s)) if s == "PONG") {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no PONG from redis-server: {pong:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Redis answer (RESP2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A status or bulk string as text.
    pub fn text(self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
            _ => None,
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A blocking RESP2 client, just enough to look into the store.
pub struct RedisClient {
    stream: BufReader<Box<dyn Stream>>,
}

impl RedisClient {
    fn connect(
        addr: SocketAddr,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> std::io::Result<RedisClient> {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let stream: Box<dyn Stream> = match tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(std::io::Error::other)?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
            None => Box::new(tcp),
        };
        Ok(RedisClient {
            stream: BufReader::new(stream),
        })
    }

    pub fn command(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let stream = self.stream.get_mut();
        stream.write_all(&out)?;
        stream.flush()?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut line = String::new();
        if self.stream.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1.min(line.len()));
        let number = || {
            rest.parse::<i64>()
                .map_err(|_| std::io::Error::other(format!("bad RESP line {line:?}")))
        };
        Ok(match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Integer(number()?),
            "$" => match number()? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut bytes = vec![0; n as usize + 2];
                    self.stream.read_exact(&mut bytes)?;
                    bytes.truncate(n as usize);
                    Reply::Bulk(Some(bytes))
                }
            },
            "*" => match number()? {
                n if n < 0 => Reply::Array(None),
                n => Reply::Array(Some(
                    (0..n)
                        .map(|_| self.read_reply())
                        .collect::<Result<_, _>>()?,
                )),
            },
            _ => return Err(std::io::Error::other(format!("bad RESP line {line:?}"))),
        })
    }
}

/// A loopback TCP relay in front of `target`, on its own runtime so it
/// keeps relaying while a test blocks its own thread (running the task
/// command line, waiting on a log).
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<tokio::sync::watch::Sender<bool>>,
    open: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async test.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Counts a relayed connection while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Relay {
    pub fn to(target: SocketAddr) -> Relay {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(tokio::sync::watch::Sender::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let (cut_, open_) = (cut.clone(), open.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut inbound, _)) = listener.accept().await {
                // Counted before the flag is read: `cut` then either sees
                // this connection or it sees the flag.
                let counted = Open(open_.clone());
                open_.fetch_add(1, Ordering::SeqCst);
                if *cut_.borrow() {
                    continue;
                }
                let mut cut = cut_.subscribe();
                tokio::spawn(async move {
                    let _counted = counted;
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay {
            addr,
            cut,
            open,
            runtime: Some(runtime),
        }
    }

    /// Close every relayed connection, and every new one as soon as it is
    /// accepted, until [`Relay::restore`]. Returns once none is left open.
    pub fn cut(&self) {
        self.cut.send_replace(true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.open_connections() > 0 {
            assert!(Instant::now() < deadline, "relayed connections stay open");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Relay new connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// Connections being relayed now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}
