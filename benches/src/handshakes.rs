//! A load generator of new TLS connections with a client certificate:
//! each of `connections` clients connects, completes a full handshake
//! (nothing is resumed), sends one request with `Connection: close`, reads
//! the answer until the server closes, and starts again. wrk has no TLS
//! client certificates, and oha keeps its connections (and would resume
//! sessions), so neither measures this.
//!
//! The generator does not check the server's certificate or handshake
//! signature. Those checks are the client's work, and on two shared cores
//! a client doing all of it spends about what the server spends per
//! handshake, so the generator rather than the proxy would set the pace.
//! The servers do all of their side: they verify the client's signature
//! and its certificate chain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wrk::LoadResult;

/// A connection that has not been answered and closed by then counts as
/// failed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// A client configuration presenting `identity` (certificate chain and
/// key), offering HTTP/1.1, never resuming a session and trusting any
/// server.
pub fn client_config(
    identity: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(schemes)))
        .with_client_auth_cert(identity.0, identity.1)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Takes any server certificate and handshake signature (see the module
/// comment).
#[derive(Debug)]
struct AnyServer(Vec<SignatureScheme>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

pub struct HandshakeRun<'a> {
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    /// The request head, sent as it is; it should say `Connection: close`.
    pub request: &'a str,
    pub connections: u32,
    pub duration: Duration,
}

impl HandshakeRun<'_> {
    /// Runs on the calling thread (one thread, like `wrk -t1`).
    /// `requests_per_sec` is connections per second; the latencies are
    /// from `connect` to the server's close.
    pub fn run(&self) -> anyhow::Result<LoadResult> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.drive())
    }

    async fn drive(&self) -> anyhow::Result<LoadResult> {
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let name = ServerName::from(self.addr.ip());
        let started = Instant::now();
        let deadline = started + self.duration;
        let clients: Vec<_> = (0..self.connections)
            .map(|_| {
                let (connector, name, addr) = (connector.clone(), name.clone(), self.addr);
                let request = self.request.as_bytes().to_vec();
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    while Instant::now() < deadline {
                        let begun = Instant::now();
                        let once = once(addr, &connector, name.clone(), &request);
                        match tokio::time::timeout(CONNECTION_TIMEOUT, once).await {
                            Ok(Ok(status)) if (200..300).contains(&status) => {
                                tally.latencies.push(begun.elapsed())
                            }
                            _ => tally.failed += 1,
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut all = Tally::default();
        for client in clients {
            let tally = client.await?;
            all.latencies.extend(tally.latencies);
            all.failed += tally.failed;
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.latencies.sort();
        let percentile = |p: f64| {
            let n = all.latencies.len();
            match n {
                0 => 0.0,
                _ => all.latencies[((n - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3,
            }
        };
        let requests = all.latencies.len() as u64 + all.failed;
        Ok(LoadResult {
            requests_per_sec: all.latencies.len() as f64 / elapsed,
            p50_ms: percentile(0.5),
            p99_ms: percentile(0.99),
            non_2xx: all.failed,
            requests,
        })
    }
}

/// Per client: how long each answered connection took, and how many
/// failed (an error, a timeout or a status other than 2xx).
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: u64,
}

/// One connection: handshake, request, the whole answer; its status.
async fn once(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    request: &[u8],
) -> anyhow::Result<u16> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(request).await?;
    tls.flush().await?;
    // The server closes after answering: it, not this side, keeps the
    // connection's TIME_WAIT, so the client's ports are not used up.
    let mut answer = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // A close without close_notify after a whole answer is still
            // an answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => break,
            Err(e) => return Err(e.into()),
        }
    }
    status(&answer)
}

/// The status code of an HTTP/1.1 response.
fn status(answer: &[u8]) -> anyhow::Result<u16> {
    let line = answer.split(|b| *b == b'\r').next().unwrap_or_default();
    let code = std::str::from_utf8(line)?
        .split(' ')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no status line"))?;
    Ok(code.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_line() {
        assert_eq!(
            status(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap(),
            200
        );
        assert_eq!(
            status(b"HTTP/1.1 407 Proxy Authentication Required\r\n").unwrap(),
            407
        );
        assert!(status(b"").is_err());
    }
}
