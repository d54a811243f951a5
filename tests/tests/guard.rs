//! The private-address guard against the running binary: the addresses an
//! agent must not reach, however it writes them, tollgate's own listeners,
//! and DNS rebinding — a nameserver that answers a harmless address, then
//! a forbidden one, with a TTL of 0.
//!
//! The rebinding tests build a network of their own (a namespace, so they
//! need root, as CI runs them): tollgate runs inside it and its ordinary
//! system resolver asks a nameserver the test serves on the namespace's
//! loopback. "Public" is 203.0.113.10 in a second namespace linked to it
//! (a documentation address, refused by default, so the configuration
//! exempts its /24); the forbidden addresses are 127.0.0.1 beside tollgate
//! and 169.254.169.254 beside the public upstream, each with listeners that
//! must never see a connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tollgate_e2e::{
    curl_in, require_namespaces, send_head, shipped_policies, tollgate_bin, CurlOutput, Netns,
    Rebinder, Setup, TestPki, Tollgate, Upstream, CODER,
};

/// Lets the coder open any tunnel: what stops one here is the guard.
fn permit_every_connect() -> Vec<(String, String)> {
    let mut policies = shipped_policies();
    policies.push((
        "connect.cedar".into(),
        format!("permit (principal == Workload::\"{CODER}\", action == Action::\"connect\", resource);\n"),
    ));
    policies
}

/// `CONNECT target` by hand; the status and the JSON body of a refusal.
async fn connect(tg: &Tollgate, target: &str) -> (u16, Value) {
    let (mut stream, head) = send_head(
        tg.proxy,
        &format!("CONNECT {target} HTTP/1.1\r\n"),
        &[&format!("Host: {target}")],
    )
    .await;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{target}: no status in {head:?}"));
    if status == 200 {
        return (status, Value::Null);
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("{target}: no content-length in {head:?}"));
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn no_spelling_reaches_a_refused_address_and_tollgate_never_dials_itself() {
    let upstream = Upstream::http().await;
    // Loopback is exempted (as the quickstart does), and tasks are on, so
    // this process serves the decision API too.
    let tg = Tollgate::start(Setup {
        policies: Some(permit_every_connect()),
        tasks: true,
        ..Setup::default()
    });
    let up = upstream.addr.port();
    let proxy = tg.proxy.port();
    let admin = tg.admin.port();
    let decision = tg.decision.expect("the decision API").port();
    let cases: Vec<(String, Option<&str>)> = vec![
        // Exempted loopback, written plainly and IPv4-mapped.
        (format!("127.0.0.1:{up}"), None),
        (format!("[::ffff:127.0.0.1]:{up}"), None),
        // Forms that carry an IPv4 address, refused whatever it is.
        (format!("[::127.0.0.1]:{up}"), Some("IPv4-compatible")),
        (format!("[2002:7f00:1::1]:{up}"), Some("6to4")),
        (format!("[2001:0:7f00:1::1]:{up}"), Some("Teredo")),
        (format!("[64:ff9b:1::7f00:1]:{up}"), Some("local-use NAT64")),
        // Cloud metadata: no exemption covers it.
        ("169.254.169.254:80".into(), Some("cloud metadata")),
        ("[::ffff:169.254.169.254]:80".into(), Some("cloud metadata")),
        ("[::ffff:a9fe:a9fe]:80".into(), Some("cloud metadata")),
        ("[64:ff9b::a9fe:a9fe]:80".into(), Some("cloud metadata")),
        ("[fd00:ec2::254]:80".into(), Some("cloud metadata")),
        ("100.100.100.200:80".into(), Some("cloud metadata")),
        // tollgate's own listeners, though loopback is exempted.
        (
            format!("127.0.0.1:{proxy}"),
            Some("tollgate's own listener"),
        ),
        (
            format!("[::ffff:127.0.0.1]:{proxy}"),
            Some("tollgate's own listener"),
        ),
        (format!("0.0.0.0:{admin}"), Some("tollgate's own listener")),
        (
            format!("127.0.0.1:{admin}"),
            Some("tollgate's own listener"),
        ),
        (
            format!("127.0.0.1:{decision}"),
            Some("tollgate's own listener"),
        ),
    ];
    let mut wrong = Vec::new();
    for (target, refused) in &cases {
        let (status, body) = connect(&tg, target).await;
        let right = match refused {
            None => status == 200,
            Some(why) => {
                status == 403
                    && body["reason"] == "destination_blocked"
                    && body["message"].as_str().is_some_and(|m| m.contains(why))
            }
        };
        if !right {
            wrong.push(format!("{target}: want {refused:?}, got {status} {body}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}\n{}", wrong.join("\n"), tg.logs());
    assert_eq!(upstream.connections(), 2, "the two allowed tunnels only");
    // Each refusal has its audit line (written once its answer is sent).
    let blocked = || {
        tg.audit_lines()
            .into_iter()
            .filter(|l| l["reason"] == "destination_blocked")
            .count()
    };
    for _ in 0..100 {
        if blocked() >= cases.len() - 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(blocked(), cases.len() - 2, "{}", tg.stdout_text());
}

// --- DNS rebinding

const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The nameserver's answers, round and round: twice the public address,
/// then a forbidden one. A request resolving once sees every answer in
/// turn; one resolving twice (a redirected request: once to check where
/// the agent was going, once to connect) sees every pair.
const SCRIPT: [Ipv4Addr; 6] = [PUBLIC, PUBLIC, LOOPBACK, PUBLIC, PUBLIC, METADATA];

/// Enough requests to go round the script twice.
const ROUNDS: usize = 12;

struct Rebinding {
    // Dropped in this order: tollgate first, the namespace last.
    tg: Tollgate,
    dns: Rebinder,
    public: Upstream,
    public_tls: Upstream,
    forbidden: Vec<Upstream>,
    pki: TestPki,
    ns: Netns,
    _elsewhere: Netns,
}

impl Rebinding {
    /// The namespace, its nameserver and upstreams, and tollgate inside
    /// it; `transparent`: also a transparent listener with the agent's
    /// traffic redirected to it (tollgate as uid 1337, the sidecar shape).
    async fn start(transparent: bool) -> Rebinding {
        require_namespaces();
        let ns = Netns::new("rebind");
        let elsewhere = Netns::new("public");
        Netns::link(
            &ns,
            &["203.0.113.1/24", "169.254.0.1/16"],
            &elsewhere,
            &["203.0.113.10/24", "169.254.169.254/16"],
        );
        ns.hosts(&[]);
        ns.resolv_conf(IpAddr::V4(LOOPBACK));
        let dns = Rebinder::start(
            ns.bind_udp(SocketAddr::new(LOOPBACK.into(), 53)),
            SCRIPT.to_vec(),
        );
        let pki = TestPki::new();
        let tls = pki.server_config(&["rebind.test"]);
        let at = |ip: Ipv4Addr, port| {
            let inside = if ip == LOOPBACK { &ns } else { &elsewhere };
            inside.bind_tcp(SocketAddr::new(ip.into(), port))
        };
        let public = Upstream::http_on(at(PUBLIC, 80)).await;
        let public_tls = Upstream::https_on(at(PUBLIC, 443), tls.clone()).await;
        let mut forbidden = Vec::new();
        for ip in [LOOPBACK, METADATA] {
            forbidden.push(Upstream::http_on(at(ip, 80)).await);
            forbidden.push(Upstream::https_on(at(ip, 443), tls.clone()).await);
        }
        let listener = if transparent {
            format!(
                "  - name: redirected\n    kind: transparent\n    address: 127.0.0.1:15001\n    identity: {{ static: \"{CODER}\" }}\n"
            )
        } else {
            String::new()
        };
        let tg = Tollgate::start(Setup {
            policies: Some(permit_every_connect()),
            more_listeners_yaml: listener,
            launcher: ns.launcher(),
            run_as: transparent.then_some(1337),
            upstream_ca: Some(pki.ca_pem.clone()),
            allow_loopback: false,
            // No idle upstream connections: every request dials, so every
            // request resolves.
            forward_extra: "  allow_networks: [203.0.113.0/24]\n  max_idle_per_host: 0\n".into(),
            ..Setup::default()
        });
        if transparent {
            ns.run(&[tollgate_bin().to_str().unwrap(), "iptables", "--apply"]);
        }
        Rebinding {
            tg,
            dns,
            public,
            public_tls,
            forbidden,
            pki,
            ns,
            _elsewhere: elsewhere,
        }
    }

    /// curl inside the namespace.
    async fn curl(&self, args: &[&str]) -> CurlOutput {
        let launcher = self.ns.launcher();
        let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
        let ca = self.pki.write_ca(self.tg.dir.path());
        let mut all = vec!["--max-time", "10", "--cacert", ca.to_str().unwrap()];
        all.extend_from_slice(args);
        curl_in(&launcher, &all).await
    }

    /// curl inside the namespace with tollgate as its proxy.
    async fn through_proxy(&self, args: &[&str]) -> CurlOutput {
        let proxy = self.tg.proxy_url();
        let mut all = vec!["-x", proxy.as_str()];
        all.extend_from_slice(args);
        self.curl(&all).await
    }

    /// The nameserver was asked, and gave forbidden answers: otherwise the
    /// test proved nothing.
    fn rebinding_happened(&self, name: &str) {
        let answered = self.dns.answered();
        assert!(
            answered
                .iter()
                .any(|(asked, a)| asked == name && *a != PUBLIC),
            "tollgate never got a forbidden answer for {name}: {answered:?}\n{}",
            self.tg.logs()
        );
    }

    fn nothing_reached_a_forbidden_address(&self) {
        for upstream in &self.forbidden {
            assert_eq!(
                upstream.connections(),
                0,
                "a connection reached {}\n{}",
                upstream.addr,
                self.tg.logs()
            );
        }
    }

    /// The audit lines for `resource`, by reason.
    fn reasons(&self, resource: &str) -> Vec<String> {
        self.tg
            .audit_lines()
            .into_iter()
            .filter(|l| l["resource"] == resource)
            .map(|l| l["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// Tally of what happened to a run of requests.
#[derive(Debug, Default)]
struct Tally {
    served: usize,
    refused: usize,
}

impl Tally {
    fn both_happened(&self, r: &Rebinding) {
        assert!(
            self.served > 0 && self.refused > 0,
            "{self:?}: the script should make some requests pass and some fail\n{}",
            r.tg.logs()
        );
    }
}

#[tokio::test]
async fn a_rebinding_name_never_takes_a_proxied_request_to_a_forbidden_address() {
    let r = Rebinding::start(false).await;
    let mut tally = Tally::default();
    for _ in 0..ROUNDS {
        let out = r
            .through_proxy(&["http://api.github.com/repos/acme/widgets"])
            .await;
        match out.status {
            200 => {
                assert!(out.body.contains(r#""upstream":"ok""#), "{out:?}");
                tally.served += 1;
            }
            403 => {
                assert_eq!(out.json()["reason"], "destination_blocked", "{out:?}");
                tally.refused += 1;
            }
            _ => panic!("neither served nor refused: {out:?}\n{}", r.tg.logs()),
        }
    }
    tally.both_happened(&r);
    assert_eq!(r.public.count(), tally.served);
    r.rebinding_happened("api.github.com");
    r.nothing_reached_a_forbidden_address();
}

#[tokio::test]
async fn a_rebinding_name_never_takes_a_tunnel_to_a_forbidden_address() {
    let r = Rebinding::start(false).await;
    let mut tally = Tally::default();
    for _ in 0..ROUNDS {
        // CONNECT rebind.test:443, tunnelled blind to whatever it resolves to.
        let out = r
            .through_proxy(&["-p", "https://rebind.test/through-a-tunnel"])
            .await;
        if out.exit == 0 {
            assert_eq!(out.status, 200, "{out:?}");
            tally.served += 1;
        } else {
            assert!(out.stderr.contains("403"), "{out:?}\n{}", r.tg.logs());
            tally.refused += 1;
        }
    }
    tally.both_happened(&r);
    assert_eq!(r.public_tls.count(), tally.served);
    let reasons = r.reasons("rebind.test:443");
    assert_eq!(reasons.len(), ROUNDS, "{reasons:?}");
    let blocked = reasons
        .iter()
        .filter(|r| *r == "destination_blocked")
        .count();
    assert_eq!(blocked, tally.refused, "{reasons:?}");
    r.rebinding_happened("rebind.test");
    r.nothing_reached_a_forbidden_address();
}

#[tokio::test]
async fn a_rebinding_name_never_takes_a_redirected_connection_to_a_forbidden_address() {
    let r = Rebinding::start(true).await;
    // The agent dials the public address (its own lookup pinned, so only
    // tollgate's lookups rebind) and iptables hands the connection to
    // tollgate. A plain HTTP request is resolved twice: once to check the
    // agent was headed where the name leads, once to connect.
    let mut tally = Tally::default();
    for _ in 0..ROUNDS {
        let out = r
            .curl(&[
                "--resolve",
                "api.github.com:80:203.0.113.10",
                "http://api.github.com/repos/acme/widgets",
            ])
            .await;
        match out.status {
            200 => {
                assert!(out.body.contains(r#""upstream":"ok""#), "{out:?}");
                tally.served += 1;
            }
            403 => {
                let reason = &out.json()["reason"];
                assert!(
                    reason == "destination_blocked" || reason == "destination_mismatch",
                    "{out:?}"
                );
                tally.refused += 1;
            }
            _ => panic!("neither served nor refused: {out:?}\n{}", r.tg.logs()),
        }
    }
    tally.both_happened(&r);
    assert_eq!(r.public.count(), tally.served);

    // TLS to a host the catalog does not cover: decided as `connect`, then
    // relayed blind to the address the agent dialled, if the name still
    // leads there.
    let mut tally = Tally::default();
    for _ in 0..ROUNDS {
        let out = r
            .curl(&[
                "--resolve",
                "rebind.test:443:203.0.113.10",
                "https://rebind.test/relayed",
            ])
            .await;
        if out.exit == 0 {
            assert_eq!(out.status, 200, "{out:?}");
            tally.served += 1;
        } else {
            tally.refused += 1;
        }
    }
    tally.both_happened(&r);
    assert_eq!(r.public_tls.count(), tally.served);
    let reasons = r.reasons("rebind.test:443");
    let refused = reasons
        .iter()
        .filter(|r| *r == "destination_blocked" || *r == "destination_mismatch")
        .count();
    assert_eq!(refused, tally.refused, "{reasons:?}");
    r.rebinding_happened("api.github.com");
    r.rebinding_happened("rebind.test");
    r.nothing_reached_a_forbidden_address();
}
