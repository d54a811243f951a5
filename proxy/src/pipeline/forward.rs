//! Forward: a pooled client over rustls toward upstreams. Every connection,
//! pooled, tunnelled or relayed, goes through `GuardedConnector`: resolve
//! (or take a configured override), then ask the guard (`super::guard`)
//! about each address right before dialling it — so a hostname that
//! resolves to 169.254.169.254 can never be reached through tollgate, and
//! a name that resolves differently the next time (DNS rebinding) is
//! judged again by what it resolves to then.

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
use tokio::net::TcpStream;

use super::guard::Guard;
use crate::body::ProxyBody;
use crate::config::ForwardConfig;
use crate::error::ProxyError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("{host} resolves to {address}, which is not allowed: {why}")]
    Blocked {
        host: String,
        address: IpAddr,
        why: String,
    },
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
            ConnectError::Blocked { host, address, why } => {
                ProxyError::DestinationBlocked { host, address, why }
            }
            ConnectError::Timeout { .. } => ProxyError::UpstreamTimeout,
            mismatch @ ConnectError::Mismatch { .. } => {
                ProxyError::DestinationMismatch(mismatch.to_string())
            }
            other => ProxyError::UpstreamConnect(other.to_string()),
        }
    }
}

struct Settings {
    resolve: HashMap<(String, u16), SocketAddr>,
    guard: Guard,
    connect_timeout: Duration,
}

#[derive(Clone)]
pub struct GuardedConnector {
    settings: Arc<Settings>,
}

impl GuardedConnector {
    pub fn new(config: &ForwardConfig) -> GuardedConnector {
        GuardedConnector {
            settings: Arc::new(Settings {
                resolve: config.resolve.clone(),
                guard: Guard::new(config.allow_networks.clone()),
                connect_timeout: config.connect_timeout,
            }),
        }
    }

    /// The guard every address passes before it is dialled: tell it where
    /// tollgate listens.
    pub fn guard(&self) -> &Guard {
        &self.settings.guard
    }

    fn blocked(&self, host: &str, addr: SocketAddr) -> Result<(), ConnectError> {
        self.settings
            .guard
            .check(addr)
            .map_err(|why| ConnectError::Blocked {
                host: host.to_string(),
                address: addr.ip(),
                why: why.to_string(),
            })
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
    /// `Host` does not open a way to another address. Nothing is dialled
    /// here: the request's own connection resolves and is checked again.
    pub async fn verify_destination(
        &self,
        host: &str,
        port: u16,
        original: SocketAddr,
    ) -> Result<(), ConnectError> {
        // Headed for a refused address: refused, whatever the name says.
        self.blocked(host, original)?;
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
        tokio::time::timeout(self.settings.connect_timeout, attempt)
            .await
            .map_err(|_| ConnectError::Timeout {
                host: host.to_string(),
            })?
    }

    /// A configured override, the literal address, or DNS.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Some(addr) = self.settings.resolve.get(&(host.to_string(), port)) {
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

    /// The only place an upstream is dialled: each candidate is checked
    /// right before it is dialled, so whatever resolved it, and however
    /// often, the address dialled is the address checked.
    async fn connect_first(
        &self,
        host: &str,
        candidates: Vec<SocketAddr>,
    ) -> Result<TcpStream, ConnectError> {
        let mut last = None;
        let mut blocked = None;
        for addr in candidates {
            if let Err(refused) = self.blocked(host, addr) {
                blocked.get_or_insert(refused);
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
            (None, Some(blocked)) => blocked,
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

    fn loopback_allowed() -> ForwardConfig {
        ForwardConfig {
            allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
            ..ForwardConfig::default()
        }
    }

    /// Nothing connected to `listener` (checked without waiting on it).
    fn untouched(listener: &tokio::net::TcpListener) -> bool {
        let waker = std::task::Waker::noop();
        listener
            .poll_accept(&mut Context::from_waker(waker))
            .is_pending()
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
        assert!(err.to_string().contains("cloud metadata"), "{err}");
    }

    #[tokio::test]
    async fn allow_networks_exempts_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connector = GuardedConnector::new(&ForwardConfig::default());
        assert!(matches!(
            connector.connect("127.0.0.1", port).await,
            Err(ConnectError::Blocked { .. })
        ));
        let connector = GuardedConnector::new(&loopback_allowed());
        assert!(connector.connect("127.0.0.1", port).await.is_ok());
    }

    /// The resolver reads these spellings as 127.0.0.1 and the guard sees
    /// what it resolved to, not what was written.
    #[tokio::test]
    async fn other_spellings_of_loopback_are_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connector = GuardedConnector::new(&ForwardConfig::default());
        for host in [
            "127.1",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "2130706433",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "0:0:0:0:0:ffff:127.0.0.1",
        ] {
            let err = connector.connect(host, port).await.unwrap_err();
            assert!(matches!(err, ConnectError::Blocked { .. }), "{host}: {err}");
        }
        assert!(untouched(&listener));
    }

    #[tokio::test]
    async fn tollgates_own_listener_is_refused_even_where_loopback_is_allowed() {
        let own = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = own.local_addr().unwrap();
        let connector = GuardedConnector::new(&loopback_allowed());
        connector.guard().own_listener(addr);
        for host in ["127.0.0.1", "::ffff:127.0.0.1", "0.0.0.0"] {
            let err = connector.connect(host, addr.port()).await.unwrap_err();
            assert!(
                err.to_string().contains("tollgate's own listener"),
                "{host}: {err}"
            );
            assert_eq!(ProxyError::from(err).reason(), "destination_blocked");
        }
        assert!(untouched(&own));
    }

    #[tokio::test]
    async fn a_redirected_connection_to_a_refused_address_is_refused() {
        let mut config = ForwardConfig::default();
        config.resolve.insert(
            ("api.example".into(), 80),
            "169.254.169.254:80".parse().unwrap(),
        );
        let connector = GuardedConnector::new(&config);
        let original = "169.254.169.254:80".parse().unwrap();
        let err = connector
            .verify_destination("api.example", 80, original)
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Blocked { .. }), "{err}");
        let err = connector
            .connect_redirected("api.example", 80, original, true)
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Blocked { .. }), "{err}");
    }
}
