//! Workload identity material for end-to-end tests: signing keys and JWTs
//! from a real library (`tests/py/jwt_issuer.py`, PyJWT + cryptography),
//! claim sets laid out as Kubernetes and SPIRE issue them, and an HTTPS
//! JWKS / OIDC discovery server that can rotate keys and go down.
//! Client certificates shaped like X.509-SVIDs are in [`crate::pki`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::clients::python_bin;
use crate::process::capture;
use crate::{repo_root, TestPki};

fn issuer_script() -> PathBuf {
    repo_root().join("tests/py/jwt_issuer.py")
}

/// Seconds since the Unix epoch, as JWT time claims count them.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A random UUID-shaped string (Kubernetes object UIDs, `jti`).
fn random_uuid() -> String {
    let hex = crate::random_secret("u")[2..].to_string();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// `(iat, exp)` for a token living `ttl_secs` from now. A negative TTL
/// gives a token that expired that long ago and was issued a minute before.
fn lifetime(ttl_secs: i64) -> (i64, i64) {
    let now = unix_now();
    let exp = now + ttl_secs;
    (now.min(exp - 60), exp)
}

/// A token issuer: signing keys in a folder of its own, tokens minted with
/// them. Every call runs `jwt_issuer.py` once (~0.2 s).
pub struct JwtIssuer {
    dir: tempfile::TempDir,
}

impl Default for JwtIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtIssuer {
    pub fn new() -> JwtIssuer {
        JwtIssuer {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Where the keys and `jwks.json` are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, verb: &str, args: &[&str]) -> String {
        let out = Command::new(python_bin())
            .arg(issuer_script())
            .arg(verb)
            .arg("--dir")
            .arg(self.dir.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tests/py/jwt_issuer.py");
        assert!(
            out.status.success(),
            "jwt_issuer.py {verb} {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A new signing key `kid` for `alg` (RS256, PS256, ES256, ES384 or
    /// EdDSA); its public JWK (with `kid`, `alg`, `use: "sig"`).
    pub fn add_key(&self, kid: &str, alg: &str) -> Value {
        serde_json::from_str(&self.run("keys", &["--kid", kid, "--alg", alg])).unwrap()
    }

    /// The JWKS document of these keys (added before with [`add_key`]).
    ///
    /// [`add_key`]: JwtIssuer::add_key
    pub fn jwks(&self, kids: &[&str]) -> Value {
        serde_json::from_str(&self.run("jwks", kids)).unwrap()
    }

    /// Write the JWKS of `kids` to [`jwks_path`](JwtIssuer::jwks_path) in
    /// one rename (a [`JwksServer`] serves it from the next request on).
    pub fn write_jwks(&self, kids: &[&str]) -> PathBuf {
        let document = self.jwks(kids);
        self.write_jwks_raw(&document.to_string())
    }

    /// Write any text as `jwks.json`: a malformed or hostile document.
    pub fn write_jwks_raw(&self, text: &str) -> PathBuf {
        let path = self.jwks_path();
        let staged = path.with_extension("staged");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &path).unwrap();
        path
    }

    pub fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    /// A token signed by key `kid` with `alg`; the header names `kid`.
    pub fn mint(&self, kid: &str, alg: &str, claims: Value) -> String {
        let claims = claims.to_string();
        self.run(
            "mint",
            &["--kid", kid, "--alg", alg, "--claims", claims.as_str()],
        )
    }

    /// As [`mint`](JwtIssuer::mint), with no `kid` in the header.
    pub fn mint_without_kid(&self, kid: &str, alg: &str, claims: Value) -> String {
        let claims = claims.to_string();
        self.run(
            "mint",
            &["--kid", kid, "--alg", alg, "--no-kid", "--claims", &claims],
        )
    }

    /// As [`mint`](JwtIssuer::mint), with `header` merged over the header
    /// after signing is decided: a `null` removes a field, `"alg"` may lie
    /// about the algorithm, `"kid"` may name a key that does not exist.
    pub fn mint_with_header(&self, kid: &str, alg: &str, header: Value, claims: Value) -> String {
        let (header, claims) = (header.to_string(), claims.to_string());
        self.run(
            "mint",
            &[
                "--kid", kid, "--alg", alg, "--header", &header, "--claims", &claims,
            ],
        )
    }

    /// An unsigned token: `alg: none` and an empty signature.
    pub fn mint_none(&self, claims: Value) -> String {
        let claims = claims.to_string();
        self.run("mint", &["--alg", "none", "--claims", &claims])
    }

    /// The algorithm-confusion attack: `alg: HS256`, `kid`, and an HMAC
    /// keyed with the PEM of key `kid`'s public half (which a verifier
    /// holds, and must never use as an HMAC secret).
    pub fn mint_hs256_with_public_key(&self, kid: &str, claims: Value) -> String {
        let claims = claims.to_string();
        self.run(
            "mint",
            &["--hs256-with-public-key", kid, "--claims", &claims],
        )
    }
}

/// The claims of a projected service-account token as a Kubernetes 1.30+
/// API server issues them (`kubectl create token`, or a projected volume),
/// with fresh UIDs and `jti`, valid for `ttl_secs` (negative: expired).
/// `warnafter` is set as for a token whose lifetime the API server extended.
pub fn kubernetes_claims(
    issuer: &str,
    audience: &str,
    namespace: &str,
    service_account: &str,
    pod: &str,
    ttl_secs: i64,
) -> Value {
    let (iat, exp) = lifetime(ttl_secs);
    json!({
        "aud": [audience],
        "exp": exp,
        "iat": iat,
        "iss": issuer,
        "jti": random_uuid(),
        "kubernetes.io": {
            "namespace": namespace,
            "node": { "name": "tollgate-test-node", "uid": random_uuid() },
            "pod": { "name": pod, "uid": random_uuid() },
            "serviceaccount": { "name": service_account, "uid": random_uuid() },
            "warnafter": exp.min(iat + 3607),
        },
        "nbf": iat,
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
    })
}

/// The claims of a JWT-SVID (SPIFFE JWT-SVID spec; SPIRE's layout):
/// `sub` the SPIFFE ID, `aud` a list, `exp`, `iat`, and `iss` when the
/// server is configured with one.
pub fn svid_claims(issuer: Option<&str>, audience: &str, spiffe_id: &str, ttl_secs: i64) -> Value {
    let (iat, exp) = lifetime(ttl_secs);
    let mut claims = json!({ "aud": [audience], "exp": exp, "iat": iat, "sub": spiffe_id });
    if let Some(issuer) = issuer {
        claims["iss"] = json!(issuer);
    }
    claims
}

/// `jwt_issuer.py serve` over HTTPS on 127.0.0.1: the issuer's `jwks.json`
/// (re-read per request), OIDC discovery, request counts, and a switch
/// making `/jwks.json` answer 503. The [`JwtIssuer`] must outlive it.
pub struct JwksServer {
    child: Child,
    port: u16,
    issuer_path: String,
    jwks_dir: PathBuf,
    tls: Arc<rustls::ClientConfig>,
    ca: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl JwksServer {
    /// Serve `issuer`'s keys with a certificate for 127.0.0.1 from `pki`;
    /// discovery at `/.well-known/openid-configuration`.
    pub fn start(issuer: &JwtIssuer, pki: &TestPki) -> JwksServer {
        JwksServer::start_with_issuer_path(issuer, pki, "")
    }

    /// As [`start`](JwksServer::start), with the issuer URL ending in
    /// `path` (`/k8s`): discovery at `<path>/.well-known/openid-configuration`,
    /// the way OIDC appends it to an issuer with a path.
    pub fn start_with_issuer_path(issuer: &JwtIssuer, pki: &TestPki, path: &str) -> JwksServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pki.issue_pem(&["127.0.0.1"]);
        let write = |name: &str, text: &str| {
            let file = dir.path().join(name);
            std::fs::write(&file, text).unwrap();
            file
        };
        let cert = write("server.pem", &cert);
        let key = write("server.key", &key);
        let ca = write("ca.pem", &pki.ca_pem);
        let mut child = Command::new(python_bin())
            .arg(issuer_script())
            .arg("serve")
            .arg("--dir")
            .arg(issuer.dir())
            .args(["--port", "0", "--issuer-path", path])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tests/py/jwt_issuer.py serve");
        let stderr = capture(child.stderr.take().unwrap());
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let Some(port) = serde_json::from_str::<Value>(&first)
            .ok()
            .and_then(|v| v["port"].as_u64())
        else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "jwt_issuer.py serve said {first:?}:\n{}",
                stderr.lock().unwrap().join("\n")
            );
        };
        JwksServer {
            child,
            port: port as u16,
            issuer_path: path.trim_end_matches('/').to_string(),
            jwks_dir: issuer.dir().to_path_buf(),
            tls: pki.client_config(),
            ca,
            stderr,
            _dir: dir,
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The issuer URL the discovery document names (`url()` + the path).
    pub fn issuer(&self) -> String {
        format!("{}{}", self.url(), self.issuer_path)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.url())
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    /// The CA file that verifies this server's certificate.
    pub fn ca_path(&self) -> &Path {
        &self.ca
    }

    /// Requests served so far, by path (`/jwks.json`, discovery, …);
    /// reading them is not counted.
    pub fn stats(&self) -> Value {
        let (status, body) = self.request("GET", "/stats");
        assert_eq!(status, 200, "/stats: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// How many times `/jwks.json` was asked for (served or refused).
    pub fn jwks_fetches(&self) -> u64 {
        self.stats()["/jwks.json"].as_u64().unwrap_or(0)
    }

    /// From now on `/jwks.json` answers 503.
    pub fn down(&self) {
        assert_eq!(self.request("POST", "/down").0, 200);
    }

    /// `/jwks.json` is served again.
    pub fn up(&self) {
        assert_eq!(self.request("POST", "/up").0, 200);
    }

    /// Serve `document` as the discovery document instead of the true one
    /// (a wrong `issuer`, a missing `jwks_uri`). The file lives in the
    /// issuer's folder: every server of that issuer serves it.
    pub fn override_discovery(&self, document: &Value) {
        let path = self.discovery_override();
        let staged = path.with_extension("staged");
        std::fs::write(&staged, document.to_string()).unwrap();
        std::fs::rename(&staged, &path).unwrap();
    }

    /// Serve the true discovery document again.
    pub fn restore_discovery(&self) {
        let _ = std::fs::remove_file(self.discovery_override());
    }

    fn discovery_override(&self) -> PathBuf {
        self.jwks_dir.join("openid-configuration.json")
    }

    /// The server's request log (stderr), for failure messages.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// One HTTPS request on a fresh connection: status and body.
    fn request(&self, method: &str, path: &str) -> (u16, String) {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = "127.0.0.1".try_into().unwrap();
        let conn = rustls::ClientConnection::new(self.tls.clone(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut raw = Vec::new();
        // Python closes without a TLS close_notify: an EOF rustls reports
        // as unexpected. The Content-Length check below finds truncation.
        if let Err(e) = tls.read_to_end(&mut raw) {
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{path}: {e}");
        }
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
        let length = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>())
        });
        assert_eq!(length, Some(Ok(body.len())), "{path}: truncated answer");
        (status.expect("a status code"), body.to_string())
    }
}
