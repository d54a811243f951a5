//! Transparent interception: the agent's outbound TCP is redirected to
//! tollgate without the agent knowing. Real network namespaces, real
//! iptables, the built binary. Needs root, as CI runs it; without root the
//! tests fail saying why.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_e2e::hygiene::{assert_no_secrets, Collected};
use tollgate_e2e::{
    curl_in, python_in, random_secret, repo_root, require_namespaces, shipped_policies,
    tollgate_bin, CurlOutput, Netns, Setup, TestPki, Tollgate, Upstream, CODER, SIDECAR_PORT,
    SIDECAR_RULES, SIDECAR_UID,
};

/// Where the client meant to connect before REDIRECT rewrote the
/// destination: what a transparent listener reads on every connection.
fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let (level, name) = match stream.local_addr()? {
        SocketAddr::V4(_) => (libc::SOL_IP, libc::SO_ORIGINAL_DST),
        SocketAddr::V6(_) => (libc::SOL_IPV6, libc::IP6T_SO_ORIGINAL_DST),
    };
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe `addr`, which outlives
    // the call; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4 =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6 =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                0,
                0,
            )))
        }
        family => Err(io::Error::other(format!("address family {family}"))),
    }
}

/// curl inside `netns`, as root or as `uid` (the same gid, no groups),
/// with an environment holding only PATH: no proxy variable may steer it.
fn curl(netns: &Netns, uid: Option<u32>, url: &str) -> tokio::process::Command {
    let mut command = match uid {
        None => netns.command("curl"),
        Some(uid) => {
            let mut setpriv = netns.command("setpriv");
            setpriv.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "curl",
            ]);
            setpriv
        }
    };
    // -q first: no ~/.curlrc either.
    command
        .args(["-q", "-sS", "--max-time", "5", url])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Accepts one connection, answers `body` to the request on it, and
/// returns where it was meant to go.
async fn answer_one(listener: &TcpListener, body: &str) -> SocketAddr {
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("no connection reached the listener")
        .unwrap();
    let meant = original_dst(&stream).expect("SO_ORIGINAL_DST");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client closed before its request ended");
        head.extend_from_slice(&buf[..n]);
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    meant
}

// --- the rules

/// `tollgate iptables ARGS` inside `netns`; panics with its stderr unless
/// it succeeds.
fn tollgate_iptables(netns: &Netns, args: &[&str]) -> Output {
    let bin = tollgate_bin();
    let mut argv = vec![bin.to_str().unwrap(), "iptables"];
    argv.extend(args);
    netns.run(&argv)
}

/// The nat table as iptables and ip6tables list it.
fn nat_rules(netns: &Netns) -> (String, String) {
    let list = |program| text(&netns.run(&[program, "-t", "nat", "-S"]).stdout);
    (list("iptables"), list("ip6tables"))
}

fn count(listing: &str, rule: &str) -> usize {
    listing.lines().filter(|l| l.contains(rule)).count()
}

const JUMP: &str = "-A OUTPUT -p tcp -j TOLLGATE_OUTPUT";

/// Flags that use every kind of rule, so the comparisons below cover them.
const EVERY_RULE: [&str; 6] = [
    "--proxy-gid",
    "1338",
    "--exclude-cidr",
    "10.9.0.0/16",
    "--exclude-cidr",
    "fd00:9::/32",
];

#[test]
fn applying_twice_leaves_one_set_of_rules() {
    let agent = Netns::new("agent");
    tollgate_iptables(&agent, &["--apply"]);
    tollgate_iptables(&agent, &["--apply"]);
    let (v4, v6) = nat_rules(&agent);
    for listing in [&v4, &v6] {
        assert_eq!(count(listing, JUMP), 1, "{listing}");
        assert_eq!(count(listing, "-j REDIRECT"), 1, "{listing}");
        assert!(
            listing.contains("-m multiport --dports 80,443 -j REDIRECT --to-ports 15001"),
            "{listing}"
        );
    }
    assert!(v4.contains("-d 127.0.0.0/8 -j RETURN"), "{v4}");
    assert!(v6.contains("-d ::1/128 -j RETURN"), "{v6}");

    // Applying other flags replaces the rules instead of adding to them.
    tollgate_iptables(&agent, &["--apply", "--all-ports", "--proxy-port", "15006"]);
    let (v4, v6) = nat_rules(&agent);
    for listing in [&v4, &v6] {
        assert_eq!(count(listing, JUMP), 1, "{listing}");
        assert_eq!(count(listing, "-j REDIRECT"), 1, "{listing}");
        assert!(
            listing.contains("-A TOLLGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15006"),
            "{listing}"
        );
    }

    // Removing takes every copy of the jump, and twice is no error.
    agent.run(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-j",
        "TOLLGATE_OUTPUT",
    ]);
    tollgate_iptables(&agent, &["--remove"]);
    tollgate_iptables(&agent, &["--remove"]);
    let (v4, v6) = nat_rules(&agent);
    assert!(
        !v4.contains("TOLLGATE") && !v6.contains("TOLLGATE"),
        "{v4}{v6}"
    );
}

#[test]
fn the_printed_script_installs_what_apply_does() {
    let applied = Netns::new("apply");
    tollgate_iptables(&applied, &[&["--apply"][..], &EVERY_RULE].concat());

    let printed = Command::new(tollgate_bin())
        .arg("iptables")
        .args(EVERY_RULE)
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let script = text(&printed.stdout);
    assert!(
        script.starts_with("#!/bin/sh\n# tollgate iptables:"),
        "{script}"
    );
    let scripted = Netns::new("script");
    // Twice: the script, too, replaces rather than adds.
    for _ in 0..2 {
        scripted.run(&["sh", "-c", &script]);
    }

    let (v4, v6) = nat_rules(&applied);
    assert_eq!(nat_rules(&scripted), (v4.clone(), v6.clone()));
    assert!(v4.contains("--gid-owner 1338 -j RETURN"), "{v4}");
    assert!(v4.contains("-d 10.9.0.0/16 -j RETURN"), "{v4}");
    assert!(v6.contains("-d fd00:9::/32 -j RETURN"), "{v6}");
    assert!(!v4.contains("fd00:9::") && !v6.contains("10.9.0.0"));
}

#[test]
fn the_documented_script_is_the_printed_one() {
    let printed = Command::new(tollgate_bin())
        .arg("iptables")
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let page = std::fs::read_to_string(repo_root().join("docs/transparent.md")).unwrap();
    let start = page
        .find("```sh\n#!/bin/sh\n")
        .expect("the script in the page")
        + "```sh\n".len();
    let end = start + page[start..].find("```").unwrap();
    assert_eq!(&page[start..end], text(&printed.stdout));
}

/// An agent namespace linked to an upstream namespace, an upstream at
/// port 80 there, and a listener standing in for tollgate at port 15001
/// on the agent's loopback.
struct Sidecar {
    agent: Netns,
    upstream: Upstream,
    proxy: TcpListener,
    url: &'static str,
    _upstream_ns: Netns,
}

impl Sidecar {
    async fn new(agent_cidr: &str, upstream_cidr: &str) -> Sidecar {
        let agent = Netns::new("agent");
        let upstream_ns = Netns::new("up");
        Netns::link(&agent, &[agent_cidr], &upstream_ns, &[upstream_cidr]);
        let upstream_ip: IpAddr = upstream_cidr.split('/').next().unwrap().parse().unwrap();
        agent.hosts(&[(&upstream_ip.to_string(), "upstream.test")]);
        let upstream = Upstream::http_on(upstream_ns.bind_tcp((upstream_ip, 80).into())).await;
        let loopback = match upstream_ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        let proxy = TcpListener::from_std(agent.bind_tcp((loopback, 15001).into())).unwrap();
        Sidecar {
            agent,
            upstream,
            proxy,
            url: "http://upstream.test/",
            _upstream_ns: upstream_ns,
        }
    }

    /// curl from the agent namespace; its stdout, after it succeeded.
    async fn curl(&self, uid: Option<u32>) -> String {
        let out = curl(&self.agent, uid, self.url).output().await.unwrap();
        assert!(
            out.status.success(),
            "curl as {uid:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    async fn nothing_waiting_at_the_proxy(&self) {
        let waiting = tokio::time::timeout(Duration::from_millis(200), self.proxy.accept()).await;
        assert!(waiting.is_err(), "a connection reached the proxy's port");
    }
}

async fn the_redirect_happens_and_remove_restores_direct_egress(
    agent_cidr: &str,
    upstream_cidr: &str,
) {
    let sidecar = Sidecar::new(agent_cidr, upstream_cidr).await;
    let meant: SocketAddr = (sidecar.upstream.addr.ip(), 80).into();
    tollgate_iptables(&sidecar.agent, &["--apply"]);

    // The agent (root here) connects to the upstream and lands on the
    // proxy, which can still tell where it was going.
    let agent = curl(&sidecar.agent, None, sidecar.url).output();
    let agent = tokio::spawn(agent);
    assert_eq!(answer_one(&sidecar.proxy, "from the proxy").await, meant);
    let out = agent.await.unwrap().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from the proxy");
    assert_eq!(sidecar.upstream.connections(), 0);

    // The proxy's own uid goes out directly: no loop.
    let body = sidecar.curl(Some(1337)).await;
    assert!(body.contains(r#""upstream":"ok""#), "{body}");
    assert_eq!(sidecar.upstream.connections(), 1);
    sidecar.nothing_waiting_at_the_proxy().await;

    tollgate_iptables(&sidecar.agent, &["--remove"]);
    let body = sidecar.curl(None).await;
    assert!(body.contains(r#""upstream":"ok""#), "{body}");
    assert_eq!(sidecar.upstream.connections(), 2);
    sidecar.nothing_waiting_at_the_proxy().await;
    let (v4, v6) = nat_rules(&sidecar.agent);
    assert!(
        !v4.contains("TOLLGATE") && !v6.contains("TOLLGATE"),
        "{v4}{v6}"
    );
}

#[tokio::test]
async fn ipv4_the_redirect_happens_and_remove_restores_direct_egress() {
    the_redirect_happens_and_remove_restores_direct_egress("10.213.0.1/24", "10.213.0.2/24").await;
}

#[tokio::test]
async fn ipv6_the_redirect_happens_and_remove_restores_direct_egress() {
    the_redirect_happens_and_remove_restores_direct_egress("fd13::1/64", "fd13::2/64").await;
}

#[tokio::test]
async fn an_excluded_cidr_goes_out_directly() {
    let sidecar = Sidecar::new("10.213.0.1/24", "10.213.0.2/24").await;
    tollgate_iptables(
        &sidecar.agent,
        &["--apply", "--exclude-cidr", "10.213.0.2/32"],
    );
    let body = sidecar.curl(None).await;
    assert!(body.contains(r#""upstream":"ok""#), "{body}");
    assert_eq!(sidecar.upstream.connections(), 1);
    sidecar.nothing_waiting_at_the_proxy().await;
}

#[test]
fn without_net_admin_apply_says_what_iptables_said() {
    let agent = Netns::new("agent");
    let out = agent
        .command("setpriv")
        .args(["--reuid=1337", "--regid=1337", "--clear-groups"])
        .arg(tollgate_bin())
        .args(["iptables", "--apply"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`iptables -t nat -F TOLLGATE_OUTPUT` failed"),
        "{stderr}"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_bad_cidr_is_refused_with_a_clear_message() {
    // In a namespace of its own, so a regression could not touch the
    // machine's rules.
    let agent = Netns::new("bad");
    for (args, expected) in [
        (
            &["--exclude-cidr", "10.0.0.0/33"][..],
            "'10.0.0.0/33' for '--exclude-cidr <CIDR>': not an address range",
        ),
        (
            &["--exclude-cidr", "example.com"],
            "'example.com' for '--exclude-cidr <CIDR>'",
        ),
        (
            &["--no-ipv6", "--exclude-cidr", "fd00::/8"],
            "--exclude-cidr fd00::/8 is IPv6, but --no-ipv6",
        ),
    ] {
        for action in [&[][..], &["--apply"]] {
            let out = agent
                .command(tollgate_bin())
                .arg("iptables")
                .args(action)
                .args(args)
                .output()
                .unwrap();
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(expected), "{args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        }
    }
    let (v4, v6) = nat_rules(&agent);
    assert!(
        !v4.contains("TOLLGATE") && !v6.contains("TOLLGATE"),
        "{v4}{v6}"
    );
}

// --- the listener
//
// The sidecar shape: tollgate runs in the agent's network namespace as
// uid 1337 with a `kind: transparent` listener on port 15001, and the
// rules `tollgate iptables --apply` installs there send the agent's
// outbound TCP 80/443 to it. The agent (curl, Python `requests`) has no
// proxy setting at all. Its upstreams live in a namespace of their own:
// 10.213.0.2 is where the names resolve, 10.213.0.3 is somewhere else.

const UPSTREAM: &str = "10.213.0.2";
const ELSEWHERE: &str = "10.213.0.3";
/// Where the MCP server listens, under its catalog name.
const MCP_SERVER: &str = "10.213.0.4";

/// Lets the coder reach one host the catalog does not cover, blind.
const PERMIT_BLIND: &str = r#"
permit (
  principal == Workload::"spiffe://cluster.local/ns/agents/sa/coder",
  action == Action::"connect",
  resource == Target::"blind.test:443"
);
"#;

struct Redirected {
    agent: Netns,
    upstreams: Netns,
    pki: TestPki,
    tg: Tollgate,
    http: Upstream,
    https: Upstream,
    elsewhere_http: Upstream,
    elsewhere_https: Upstream,
    /// What the agent trusts: tollgate's interception CA and the CA of the
    /// upstreams' own certificates (for the blind tunnel).
    trust: String,
}

impl Redirected {
    async fn start() -> Redirected {
        Redirected::with_listener_yaml("").await
    }

    /// `extra`: more lines (indented four spaces) for the transparent
    /// listener.
    async fn with_listener_yaml(extra: &str) -> Redirected {
        Redirected::with_yaml(extra, "").await
    }

    /// `listener`: as for [`Redirected::with_listener_yaml`]; `top`: more
    /// top-level configuration.
    async fn with_yaml(extra: &str, top: &str) -> Redirected {
        Redirected::with_setup(extra, top, Setup::default()).await
    }

    /// As [`Redirected::with_yaml`], with `more`'s catalog files and
    /// policies besides the shipped ones.
    async fn with_setup(extra: &str, top: &str, more: Setup) -> Redirected {
        require_namespaces();
        let agent = Netns::new("a");
        let upstreams = Netns::new("u");
        Netns::link(
            &agent,
            &["10.213.0.1/24"],
            &upstreams,
            &["10.213.0.2/24", "10.213.0.3/24", "10.213.0.4/24"],
        );
        let names = ["api.github.com", "blind.test", "closed.test"];
        let mut hosts = names.map(|name| (UPSTREAM, name)).to_vec();
        hosts.push((MCP_SERVER, tollgate_e2e::mcp::HOST));
        agent.hosts(&hosts);
        let pki = TestPki::new();
        let tls = pki.server_config(&names);
        let at = |ip: &str, port| upstreams.bind_tcp(SocketAddr::new(ip.parse().unwrap(), port));
        let http = Upstream::http_on(at(UPSTREAM, 80)).await;
        let https = Upstream::https_on(at(UPSTREAM, 443), tls.clone()).await;
        let elsewhere_http = Upstream::http_on(at(ELSEWHERE, 80)).await;
        let elsewhere_https = Upstream::https_on(at(ELSEWHERE, 443), tls).await;

        let mut policies = shipped_policies();
        policies.push(("blind.cedar".into(), PERMIT_BLIND.into()));
        policies.extend(more.policies.unwrap_or_default());
        let mcp = SocketAddr::new(MCP_SERVER.parse().unwrap(), 443);
        let mcp_name = format!("{}:443", tollgate_e2e::mcp::HOST);
        let resolve = [
            ("api.github.com:80", http.addr),
            ("api.github.com:443", https.addr),
            ("blind.test:443", https.addr),
            ("closed.test:443", https.addr),
            (mcp_name.as_str(), mcp),
        ];
        let tg = Tollgate::start(Setup {
            policies: Some(policies),
            more_listeners_yaml: format!(
                "  - name: redirected\n    kind: transparent\n    address: 127.0.0.1:{SIDECAR_PORT}\n    identity: {{ static: \"{CODER}\" }}\n{extra}"
            ),
            launcher: agent.launcher(),
            run_as: Some(SIDECAR_UID),
            resolve: resolve.map(|(k, v)| (k.to_string(), v)).to_vec(),
            upstream_ca: Some(pki.ca_pem.clone()),
            allow_loopback: false,
            forward_extra: "  allow_networks: [10.213.0.0/24]\n".into(),
            extra_yaml: top.into(),
            extra_catalog: more.extra_catalog,
            ..Setup::default()
        });
        apply_rules(&agent);

        let trust = tg.path("agent-trust.pem");
        let ca = std::fs::read_to_string(tg.ca_cert()).unwrap();
        std::fs::write(&trust, format!("{ca}{}", pki.ca_pem)).unwrap();
        Redirected {
            agent,
            upstreams,
            pki,
            tg,
            http,
            https,
            elsewhere_http,
            elsewhere_https,
            trust: trust.display().to_string(),
        }
    }

    /// curl inside the agent's namespace: no proxy variables, names
    /// resolved through its hosts file.
    async fn curl(&self, args: &[&str]) -> CurlOutput {
        let launcher = self.agent.launcher();
        let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
        let mut all = vec!["--max-time", "10", "--cacert", &self.trust];
        all.extend_from_slice(args);
        curl_in(&launcher, &all).await
    }

    async fn python(&self, code: &str, env: &[(&str, String)]) -> (i32, String, String) {
        let launcher = self.agent.launcher();
        let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
        python_in(&launcher, code, env).await
    }

    /// Open a connection from the agent to `ip:port`, send `bytes`, and say
    /// whether tollgate `closed` it or left it `open`.
    async fn send_raw(&self, ip: &str, port: u16, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let (code, out, err) = self
            .python(
                "import os, socket\n\
                 s = socket.create_connection((os.environ['IP'], int(os.environ['PORT'])), timeout=5)\n\
                 s.sendall(bytes.fromhex(os.environ['BYTES']))\n\
                 try:\n    print('closed' if s.recv(1) == b'' else 'answered')\n\
                 except socket.timeout:\n    print('open')\n\
                 except ConnectionResetError:\n    print('closed')\n",
                &[
                    ("IP", ip.to_string()),
                    ("PORT", port.to_string()),
                    ("BYTES", hex),
                ],
            )
            .await;
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    }

    fn audit_for(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.tg
            .wait_audit(|l| l["mode"] == "transparent" && pred(l))
    }
}

/// What the chart's init container runs (deploy.rs checks it is the same).
fn apply_rules(agent: &Netns) {
    let out = agent
        .command(tollgate_bin())
        .args(SIDECAR_RULES)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tollgate iptables --apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn plain_http_is_decided_per_request_with_no_proxy_setting() {
    let r = Redirected::start().await;
    // The agent's own key (as an SDK would send it) never goes on.
    let agent_key = random_secret("agent-key");
    let header = format!("Authorization: Bearer {agent_key}");
    let allowed = r
        .curl(&["-H", &header, "http://api.github.com/repos/acme/widgets"])
        .await;
    assert_eq!(allowed.status, 200, "{allowed:?}\n{}", r.tg.logs());
    let seen = r.http.requests();
    assert_eq!(
        seen.len(),
        1,
        "one request, not looped back through tollgate"
    );
    assert_eq!(seen[0].path_and_query, "/repos/acme/widgets");
    // The credential policy names went in instead.
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer harness-github-readonly-value")
    );
    let line = r.audit_for(|l| l["action"] == "github:repos.get");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["original_destination"], "10.213.0.2:80");
    assert_eq!(line["workload"], CODER);
    assert_eq!(line["identity_source"], "static");

    let denied = r
        .curl(&["-X", "DELETE", "http://api.github.com/repos/acme/widgets"])
        .await;
    assert_eq!(denied.status, 403, "{denied:?}");
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body["action"], "github:repos.delete");
    assert_eq!(
        r.http.count(),
        1,
        "a denied request never reaches the upstream"
    );
    r.audit_for(|l| l["action"] == "github:repos.delete" && l["decision"] == "deny");
    // HTTP/2 with prior knowledge, decided the same way.
    let h2c = r
        .curl(&[
            "--http2-prior-knowledge",
            "http://api.github.com/repos/acme/widgets/pulls",
        ])
        .await;
    assert_eq!(
        (h2c.status, h2c.http_version.as_str()),
        (200, "2"),
        "{h2c:?}"
    );
    r.audit_for(|l| l["action"] == "github:pulls.list");
    // tollgate's own connections to the upstream went straight there: the
    // only transparent lines are the agent's three requests.
    let transparent =
        r.tg.audit_lines()
            .into_iter()
            .filter(|l| l["mode"] == "transparent")
            .count();
    assert_eq!(transparent, 3, "{}", r.tg.stdout_text());

    let mut collected = Collected::new();
    collected.add("tollgate logs", r.tg.logs());
    collected.add("audit lines", r.tg.stdout_text());
    collected.add("allowed answer", allowed.body);
    collected.add("denied answer", denied.body);
    assert_no_secrets(&[&agent_key, "harness-github-readonly-value"], &collected);
}

#[tokio::test]
async fn https_to_a_catalog_host_is_intercepted_and_every_request_decided() {
    let r = Redirected::start().await;
    let (code, out, err) = r
        .python(
            "import os, requests\n\
             url = 'https://api.github.com/repos/acme/widgets'\n\
             ok = requests.get(url, verify=os.environ['TRUST'])\n\
             no = requests.delete(url, verify=os.environ['TRUST'])\n\
             print(ok.status_code, no.status_code, no.json()['action'])\n",
            &[("TRUST", r.trust.clone())],
        )
        .await;
    assert_eq!(code, 0, "{err}\n{}", r.tg.logs());
    assert_eq!(out.trim(), "200 403 github:repos.delete");
    let seen = r.https.requests();
    assert_eq!(seen.len(), 1, "only the allowed request went on");
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer harness-github-readonly-value")
    );

    // HTTP/2 from the agent, decided the same way.
    let h2 = r
        .curl(&["--http2", "https://api.github.com/repos/acme/widgets/pulls"])
        .await;
    assert_eq!((h2.status, h2.http_version.as_str()), (200, "2"), "{h2:?}");
    let line = r.audit_for(|l| l["action"] == "github:pulls.list");
    assert_eq!(line["original_destination"], "10.213.0.2:443");
    assert_eq!(r.https.count(), 2);
}

#[tokio::test]
async fn other_hosts_are_tunnelled_blind_when_connect_is_permitted_and_closed_when_not() {
    let r = Redirected::start().await;
    let blind = r.curl(&["https://blind.test/anything"]).await;
    assert_eq!(blind.status, 200, "{blind:?}\n{}", r.tg.logs());
    // Not intercepted: the upstream's own certificate, the agent's request
    // as it sent it.
    let seen = r.https.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path_and_query, "/anything");
    let line = r.audit_for(|l| l["resource"] == "blind.test:443");
    assert_eq!(
        (&line["action"], &line["decision"]),
        (&json!("connect"), &json!("allow"))
    );

    let connections = r.https.connections();
    let closed = r.curl(&["https://closed.test/anything"]).await;
    assert_ne!(closed.exit, 0, "{closed:?}");
    let line = r.audit_for(|l| l["resource"] == "closed.test:443");
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["original_destination"], "10.213.0.2:443");
    assert_eq!(
        r.https.connections(),
        connections,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn naming_an_allowed_host_does_not_reach_another_address() {
    let r = Redirected::start().await;
    for (url, pin) in [
        (
            "http://api.github.com/repos/acme/widgets",
            "api.github.com:80:10.213.0.3",
        ),
        (
            "https://api.github.com/repos/acme/widgets",
            "api.github.com:443:10.213.0.3",
        ),
    ] {
        let out = r.curl(&["--resolve", pin, url]).await;
        assert_eq!(out.status, 403, "{url}: {out:?}");
        let body: Value = serde_json::from_str(&out.body).unwrap();
        assert_eq!(body["reason"], "destination_mismatch", "{url}");
    }
    // A blind tunnel's name is held to the same rule.
    let out = r
        .curl(&[
            "--resolve",
            "blind.test:443:10.213.0.3",
            "https://blind.test/",
        ])
        .await;
    assert_ne!(out.exit, 0, "{out:?}");
    let line = r.audit_for(|l| {
        l["original_destination"] == "10.213.0.3:443" && l["resource"] == "blind.test:443"
    });
    assert_eq!(line["reason"], "destination_mismatch");

    assert_eq!(r.elsewhere_http.connections(), 0);
    assert_eq!(r.elsewhere_https.connections(), 0);
    assert_eq!(r.http.connections() + r.https.connections(), 0);
}

#[tokio::test]
async fn report_mode_forwards_policy_denials_but_never_a_destination_mismatch() {
    let r = Redirected::with_yaml("", "enforcement:\n  mode: report\n").await;
    r.tg.wait_log("report mode: policy denials for these tools");
    // What enforce mode refuses 403 above goes on, plain and intercepted,
    // and is audited as what it would have been.
    for (url, upstream) in [
        ("http://api.github.com/repos/acme/widgets", &r.http),
        ("https://api.github.com/repos/acme/widgets", &r.https),
    ] {
        let out = r.curl(&["-X", "DELETE", url]).await;
        assert_eq!(out.status, 200, "{url}: {out:?}\n{}", r.tg.logs());
        let seen = upstream.requests();
        assert_eq!(seen.len(), 1, "{url}");
        assert_eq!(seen[0].method, "DELETE");
        let destination = if url.starts_with("https") {
            "10.213.0.2:443"
        } else {
            "10.213.0.2:80"
        };
        let line = r.audit_for(|l| {
            l["action"] == "github:repos.delete" && l["original_destination"] == destination
        });
        assert_eq!(line["decision"], "would_deny", "{line}");
        assert_eq!(line["status"], 200, "{line}");
    }
    // A host `connect` is not permitted to: tunnelled blind, reported.
    let closed = r.curl(&["https://closed.test/anything"]).await;
    assert_eq!(closed.status, 200, "{closed:?}");
    let line = r.audit_for(|l| l["resource"] == "closed.test:443");
    assert_eq!(line["decision"], "would_deny", "{line}");

    // The destination check is no policy denial: still refused.
    let connections = r.http.connections() + r.https.connections();
    let out = r
        .curl(&[
            "--resolve",
            "api.github.com:80:10.213.0.3",
            "http://api.github.com/repos/acme/widgets",
        ])
        .await;
    assert_eq!(out.status, 403, "{out:?}");
    let line = r.audit_for(|l| l["original_destination"] == "10.213.0.3:80");
    assert_eq!(
        (&line["decision"], &line["reason"]),
        (&json!("deny"), &json!("destination_mismatch"))
    );
    assert_eq!(r.elsewhere_http.connections(), 0);
    assert_eq!(r.http.connections() + r.https.connections(), connections);
}

#[tokio::test]
async fn without_the_destination_check_a_named_host_is_still_reached_only_at_its_own_address() {
    let r = Redirected::with_listener_yaml("    require_original_destination: false\n").await;
    let out = r
        .curl(&[
            "--resolve",
            "api.github.com:80:10.213.0.3",
            "http://api.github.com/repos/acme/widgets",
        ])
        .await;
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(r.http.count(), 1, "served where api.github.com resolves");
    assert_eq!(
        r.elsewhere_http.connections(),
        0,
        "never where the agent dialled"
    );
    let line = r.audit_for(|l| l["action"] == "github:repos.get");
    assert_eq!(line["original_destination"], "10.213.0.3:80");
}

#[tokio::test]
async fn openings_that_name_nothing_are_decided_on_the_address_and_the_proxy_keeps_serving() {
    let r = Redirected::start().await;
    // No SNI: curl sends none to an IP address.
    let out = r.curl(&["-k", "https://10.213.0.2/"]).await;
    assert_ne!(out.exit, 0, "{out:?}");
    // An IP literal written into the server name.
    assert_eq!(
        r.send_raw(UPSTREAM, 443, &hello_naming_ip()).await,
        "closed"
    );
    // Bytes that are neither TLS nor HTTP, and a client that says nothing.
    assert_eq!(r.send_raw(UPSTREAM, 443, b"hello?\n").await, "closed");
    assert_eq!(r.send_raw(UPSTREAM, 80, b"").await, "closed");

    let lines: Vec<Value> = (0..100)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            r.tg.audit_lines()
        })
        .find(|lines| lines.len() >= 4)
        .unwrap_or_else(|| panic!("four audit lines:\n{}", r.tg.stdout_text()));
    for line in &lines {
        assert_eq!(line["action"], "connect", "{line}");
        assert_eq!(line["decision"], "deny", "{line}");
        assert_eq!(line["host"], UPSTREAM, "{line}");
    }
    assert_eq!(r.http.connections() + r.https.connections(), 0);

    let ok = r.curl(&["http://api.github.com/repos/acme/widgets"]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
}

/// A ClientHello whose server name is `10.213.0.2`: rustls will not send
/// one, so a well-formed hello for a name of the same length is patched.
fn hello_naming_ip() -> Vec<u8> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("abcdefghij").unwrap();
    let mut client = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut bytes = Vec::new();
    client.write_tls(&mut bytes).unwrap();
    let at = bytes.windows(10).position(|w| w == b"abcdefghij").unwrap();
    bytes[at..at + 10].copy_from_slice(UPSTREAM.as_bytes());
    bytes
}

#[tokio::test]
async fn ipv6_connections_are_redirected_and_identified_by_source_address() {
    require_namespaces();
    let agent = Netns::new("a6");
    let upstreams = Netns::new("u6");
    Netns::link(&agent, &["fd13::1/64"], &upstreams, &["fd13::2/64"]);
    let http = Upstream::http_on(upstreams.bind_tcp("[fd13::2]:80".parse().unwrap())).await;
    let tg = Tollgate::start(Setup {
        more_listeners_yaml: format!(
            "  - name: redirected6\n    kind: transparent\n    address: \"[::1]:15001\"\n    identity:\n      source_addresses: {{ \"fd13::1/128\": \"{CODER}\" }}\n"
        ),
        launcher: agent.launcher(),
        run_as: Some(1337),
        resolve: vec![("api.github.com:80".into(), http.addr)],
        allow_loopback: false,
        forward_extra: "  allow_networks: [\"fd13::/64\"]\n".into(),
        ..Setup::default()
    });
    apply_rules(&agent);
    let launcher = agent.launcher();
    let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
    let out = curl_in(
        &launcher,
        &[
            "--max-time",
            "10",
            "-H",
            "Host: api.github.com",
            "http://[fd13::2]/repos/acme/widgets",
        ],
    )
    .await;
    assert_eq!(out.status, 200, "{out:?}\n{}", tg.logs());
    assert_eq!(http.count(), 1);
    let line = tg.wait_audit(|l| l["mode"] == "transparent");
    assert_eq!(line["original_destination"], "[fd13::2]:80");
    assert_eq!(line["identity_source"], "source_address");
    assert_eq!(line["workload"], CODER);
}

/// An MCP client with no proxy setting: its calls are redirected,
/// intercepted, named from their messages and decided like the explicit
/// proxy's, and its listing filtered.
#[tokio::test]
async fn mcp_calls_are_decided_and_listings_filtered_with_no_proxy_setting() {
    use tollgate_e2e::mcp::{client_in, policies, McpServer, CATALOG};
    let r = Redirected::with_setup(
        "",
        "",
        Setup {
            policies: Some(policies()),
            extra_catalog: vec![("issues.yaml".into(), CATALOG.into())],
            ..Setup::default()
        },
    )
    .await;
    let addr = SocketAddr::new(MCP_SERVER.parse().unwrap(), 443);
    let server = McpServer::start_in(&r.upstreams.launcher(), addr, &r.pki, false);
    let answer = client_in(
        &r.agent.launcher(),
        &r.trust,
        "10.213.0.0/24",
        json!([
            ["search_issues", {"repo": "acme/api", "query": "crash"}],
            ["merge_pull_request", {"repo": "acme/api", "number": 7}],
        ]),
    )
    .await;
    assert_eq!(answer["tools"], json!(["search_issues"]), "{answer}");
    let results = &answer["results"];
    assert_eq!(
        results[0]["text"], "3 issues in acme/api match 'crash'",
        "{answer}"
    );
    assert_eq!(results[1]["error"]["code"], -32001, "{answer}");
    // The shipped guardrails are in force here too.
    assert_eq!(
        results[1]["error"]["data"]["policy_ids"],
        json!(["forbid-prod-change"]),
        "{answer}"
    );
    assert_eq!(
        server.calls().len(),
        1,
        "only the allowed call reached the server"
    );
    let line = r.audit_for(|l| l["action"] == "issues:search_issues");
    assert_eq!(line["original_destination"], format!("{MCP_SERVER}:443"));
    assert_eq!(line["mcp"]["name"], "search_issues");
}
