//! Forward: a pooled client over rustls toward upstreams. Every connection,
//! pooled or tunnelled, goes through `GuardedConnector`: resolve (or take a
//! configured override), refuse private / link-local / metadata addresses
//! unless allowed, then connect to the checked address — so a hostname that
//! resolves to 169.254.169.254 can never be reached through tollgate.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::config::ForwardConfig;
use crate::error::ProxyError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("{host} resolves to {address}, which is not allowed")]
    Blocked { host: String, address: IpAddr },
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("cannot connect to {host}: {message}")]
    Refused { host: String, message: String },
    #[error("connecting to {host} timed out")]
    Timeout { host: String },
    #[error(
        "the connection was addressed to {original}, and {host}:{port} does not resolve there"
    )]
    Mismatch {
        host: String,
        port: u16,
        original: SocketAddr,
    },
}

impl From<ConnectError> for ProxyError {
    fn from(err: ConnectError) -> ProxyError {
        match err {
            ConnectError::Blocked { host, address } => {
                ProxyError::DestinationBlocked { host, address }
            }
            ConnectError::Timeout { .. } => ProxyError::UpstreamTimeout,
            mismatch @ ConnectError::Mismatch { .. } => {
                ProxyError::DestinationMismatch(mismatch.to_string())
            }
            other => ProxyError::UpstreamConnect(other.to_string()),
        }
    }
}

struct Guard {
    resolve: HashMap<(String, u16), SocketAddr>,
    allow: Vec<IpNet>,
    connect_timeout: Duration,
}

#[derive(Clone)]
pub struct GuardedConnector {
    guard: Arc<Guard>,
}

/// Addresses an agent must not reach by naming them: loopback, private,
/// shared, link-local (cloud metadata lives there), and the like.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

impl GuardedConnector {
    pub fn new(config: &ForwardConfig) -> GuardedConnector {
        GuardedConnector {
            guard: Arc::new(Guard {
                resolve: config.resolve.clone(),
                allow: config.allow_networks.clone(),
                connect_timeout: config.connect_timeout,
            }),
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !is_internal(ip) || self.guard.allow.iter().any(|net| net.contains(&ip))
    }

    /// Resolve `host`, keep only permitted addresses, connect to the first
    /// that answers.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        self.within_timeout(host, async {
            let candidates = self.resolve(host, port).await?;
            self.connect_first(host, candidates).await
        })
        .await
    }

    /// For a redirected connection headed for `original`: connect there
    /// when `host` resolves to it, so the agent reaches the address it
    /// dialled and no other. When `host` does not, refuse unless `require`
    /// is off, then connect as [`connect`](Self::connect) does.
    pub async fn connect_redirected(
        &self,
        host: &str,
        port: u16,
        original: SocketAddr,
        require: bool,
    ) -> Result<TcpStream, ConnectError> {
        self.within_timeout(host, async {
            let candidates = self.resolve(host, port).await?;
            let candidates = if candidates.iter().any(|c| same_address(*c, original)) {
                vec![original]
            } else if require {
                return Err(mismatch(host, port, original));
            } else {
                candidates
            };
            self.connect_first(host, candidates).await
        })
        .await
    }

    /// A redirected connection's original destination must be one of the
    /// addresses `host` resolves to: naming an allowed host in SNI or
    /// `Host` does not open a way to another address.
    pub async fn verify_destination(
        &self,
        host: &str,
        port: u16,
        original: SocketAddr,
    ) -> Result<(), ConnectError> {
        self.within_timeout(host, async {
            let candidates = self.resolve(host, port).await?;
            if candidates.iter().any(|c| same_address(*c, original)) {
                Ok(())
            } else {
                Err(mismatch(host, port, original))
            }
        })
        .await
    }

    async fn within_timeout<T>(
        &self,
        host: &str,
        attempt: impl Future<Output = Result<T, ConnectError>>,
    ) -> Result<T, ConnectError> {
        tokio::time::timeout(self.guard.connect_timeout, attempt)
            .await
            .map_err(|_| ConnectError::Timeout {
                host: host.to_string(),
            })?
    }

    /// A configured override, the literal address, or DNS.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Some(addr) = self.guard.resolve.get(&(host.to_string(), port)) {
            return Ok(vec![*addr]);
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        Ok(tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ConnectError::Resolve {
                host: host.to_string(),
                message: e.to_string(),
            })?
            .collect())
    }

    async fn connect_first(
        &self,
        host: &str,
        candidates: Vec<SocketAddr>,
    ) -> Result<TcpStream, ConnectError> {
        let mut last = None;
        let mut blocked = None;
        for addr in candidates {
            if !self.allowed(addr.ip()) {
                blocked.get_or_insert(addr.ip());
                continue;
            }
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match (last, blocked) {
            (Some(e), _) => ConnectError::Refused {
                host: host.to_string(),
                message: e.to_string(),
            },
            (None, Some(address)) => ConnectError::Blocked {
                host: host.to_string(),
                address,
            },
            (None, None) => ConnectError::Resolve {
                host: host.to_string(),
                message: "no addresses".into(),
            },
        })
    }
}

fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

fn mismatch(host: &str, port: u16, original: SocketAddr) -> ConnectError {
    ConnectError::Mismatch {
        host: host.to_string(),
        port,
        original,
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let default_port = if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            };
            let port = uri.port_u16().unwrap_or(default_port);
            this.connect(&host, port).await.map(TokioIo::new)
        })
    }
}

/// The upstream side of the data plane.
pub struct Forwarder {
    client: Client<HttpsConnector<GuardedConnector>, ProxyBody>,
    /// HTTP/1.1 only, not pooled: a request to switch protocols exists only
    /// in HTTP/1.1, and a connection that switched is never reused.
    upgrade_client: Client<HttpsConnector<GuardedConnector>, ProxyBody>,
    connector: GuardedConnector,
    response_timeout: Duration,
}

impl Forwarder {
    pub fn new(config: &ForwardConfig, tls: Arc<rustls::ClientConfig>) -> Forwarder {
        let connector = GuardedConnector::new(config);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector.clone());
        let http1 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector.clone());
        let client = |https, max_idle_per_host| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(config.idle_timeout)
                .pool_max_idle_per_host(max_idle_per_host)
                .build(https)
        };
        Forwarder {
            client: client(https, config.max_idle_per_host),
            upgrade_client: client(http1, 0),
            connector,
            response_timeout: config.response_timeout,
        }
    }

    /// Send and wait for the response head; the body streams afterwards.
    /// `upgrade`: the request asks to switch protocols.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, ProxyError> {
        let client = if upgrade {
            &self.upgrade_client
        } else {
            &self.client
        };
        match tokio::time::timeout(self.response_timeout, client.request(request)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(client_error(err)),
        }
    }

    /// A raw TCP connection for a blind tunnel, through the same guard.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        Ok(self.connector.connect(host, port).await?)
    }

    /// The guard's connector, for what redirected connections need.
    pub fn connector(&self) -> &GuardedConnector {
        &self.connector
    }
}

fn client_error(err: hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut chain = Vec::new();
    while let Some(e) = source {
        if let Some(connect) = e.downcast_ref::<ConnectError>() {
            return ProxyError::from(connect.clone());
        }
        chain.push(e.to_string());
        source = e.source();
    }
    let message = chain.join(": ");
    if err.is_connect() {
        ProxyError::UpstreamConnect(message)
    } else {
        ProxyError::UpstreamFailed(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["140.82.112.6", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn resolved_private_address_is_refused_without_connecting() {
        let mut config = ForwardConfig::default();
        config.resolve.insert(
            ("metadata.example".into(), 80),
            "169.254.169.254:80".parse().unwrap(),
        );
        let connector = GuardedConnector::new(&config);
        let err = connector.connect("metadata.example", 80).await.unwrap_err();
        assert!(matches!(err, ConnectError::Blocked { .. }), "{err}");
    }

    #[tokio::test]
    async fn allow_networks_exempts_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = ForwardConfig::default();
        let connector = GuardedConnector::new(&config);
        assert!(matches!(
            connector.connect("127.0.0.1", port).await,
            Err(ConnectError::Blocked { .. })
        ));
        config.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
        let connector = GuardedConnector::new(&config);
        assert!(connector.connect("127.0.0.1", port).await.is_ok());
    }
}
