//! Transparent interception: the agent's outbound TCP is redirected to
//! tollgate without the agent knowing. Real network namespaces, real
//! iptables, the built binary. Needs root, as CI runs it; without root the
//! tests fail saying why.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_e2e::{repo_root, tollgate_bin, Netns, Upstream};

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
