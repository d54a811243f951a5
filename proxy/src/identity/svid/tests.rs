use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme, SupportedProtocolVersion};
use time::OffsetDateTime;

use super::*;

const ID: &str = "spiffe://cluster.local/ns/agents/sa/coder";

type Chain = Vec<CertificateDer<'static>>;

/// A CA minted for one test; `path` holds the certificates a leaf it
/// issues sends after itself (its own, for an intermediate).
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
    path: Chain,
}

impl Ca {
    fn root(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            path: Vec::new(),
            issuer: Issuer::new(params, key),
        }
    }

    fn intermediate(&self, name: &str, edit: impl FnOnce(&mut CertificateParams)) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = ca_params(name);
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut path = vec![cert.der().clone()];
        path.extend(self.path.iter().cloned());
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            path,
            issuer: Issuer::new(params, key),
        }
    }

    /// The chain (leaf first) and the leaf's key.
    fn issue(&self, params: &CertificateParams) -> (Chain, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.path.iter().cloned());
        (chain, key)
    }

    fn bundle(&self) -> TrustBundle {
        TrustBundle::from_pem(self.pem.as_bytes()).unwrap()
    }
}

fn hours(n: i64) -> time::Duration {
    time::Duration::hours(n)
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - hours(24);
    params.not_after = now + hours(24);
    params
}

/// A well-formed SVID's parameters for `uris`, valid for the hour around now.
fn svid(uris: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|uri| SanType::URI(uri.to_string().try_into().unwrap()))
        .collect();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - hours(1);
    params.not_after = now + hours(1);
    params
}

fn edited(uris: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> CertificateParams {
    let mut params = svid(uris);
    edit(&mut params);
    params
}

fn any_domain(
    chain: &[CertificateDer<'_>],
    bundle: &TrustBundle,
) -> Result<Verified, IdentityError> {
    verify(chain, bundle, &TrustDomains::default(), UnixTime::now())
}

/// The ID on success, the reason code on failure: what a caller acts on.
fn outcome(result: Result<Verified, IdentityError>) -> Result<String, &'static str> {
    result.map(|v| v.id.to_string()).map_err(|e| e.reason())
}

#[test]
fn leaves_judged_as_x509_svids() {
    let root = Ca::root("root");
    let bundle = root.bundle();
    let cases: Vec<(&str, CertificateParams, Result<String, &str>)> = vec![
        ("a valid SVID", svid(&[ID]), Ok(ID.into())),
        (
            "a DNS name beside the ID",
            edited(&[ID], |p| {
                p.subject_alt_names
                    .push(SanType::DnsName("coder.agents".try_into().unwrap()))
            }),
            Ok(ID.into()),
        ),
        (
            "an explicit cA=false",
            edited(&[ID], |p| p.is_ca = IsCa::ExplicitNoCa),
            Ok(ID.into()),
        ),
        (
            "the clientAuth EKU",
            edited(&[ID], |p| {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]
            }),
            Ok(ID.into()),
        ),
        (
            "only the serverAuth EKU",
            edited(&[ID], |p| {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
            }),
            Err("identity_untrusted"),
        ),
        (
            "expired",
            edited(&[ID], |p| {
                p.not_before = OffsetDateTime::now_utc() - hours(2);
                p.not_after = OffsetDateTime::now_utc() - hours(1);
            }),
            Err("identity_expired"),
        ),
        (
            "not yet valid",
            edited(&[ID], |p| {
                p.not_before = OffsetDateTime::now_utc() + hours(1);
                p.not_after = OffsetDateTime::now_utc() + hours(2);
            }),
            Err("identity_not_yet_valid"),
        ),
        (
            "two URI SANs",
            svid(&[ID, "spiffe://cluster.local/ns/agents/sa/other"]),
            Err("identity_not_svid"),
        ),
        (
            "no URI SAN",
            edited(&[], |p| {
                p.subject_alt_names = vec![SanType::DnsName("coder.agents".try_into().unwrap())]
            }),
            Err("identity_not_svid"),
        ),
        (
            "an http URI",
            svid(&["http://cluster.local/ns/agents"]),
            Err("identity_not_svid"),
        ),
        (
            "a CA leaf",
            edited(&[ID], |p| {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
            }),
            Err("identity_not_svid"),
        ),
        (
            "keyCertSign",
            edited(&[ID], |p| p.key_usages.push(KeyUsagePurpose::KeyCertSign)),
            Err("identity_not_svid"),
        ),
        (
            "cRLSign",
            edited(&[ID], |p| p.key_usages.push(KeyUsagePurpose::CrlSign)),
            Err("identity_not_svid"),
        ),
        (
            "no digitalSignature",
            edited(&[ID], |p| {
                p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]
            }),
            Err("identity_not_svid"),
        ),
        (
            "no key usage",
            edited(&[ID], |p| p.key_usages.clear()),
            Err("identity_not_svid"),
        ),
    ];
    for (name, params, expected) in cases {
        let (chain, _) = root.issue(&params);
        assert_eq!(outcome(any_domain(&chain, &bundle)), expected, "{name}");
    }
}

#[test]
fn a_refusal_never_quotes_the_certificate() {
    let root = Ca::root("root");
    let (chain, _) = root.issue(&svid(&["http://secret-host.example/x"]));
    let message = any_domain(&chain, &root.bundle()).unwrap_err().to_string();
    assert!(!message.contains("secret-host"), "{message}");
    assert_eq!(
        message,
        "the certificate is not an X.509-SVID: not a SPIFFE ID: the scheme must be `spiffe://`"
    );
}

#[test]
fn another_ca_is_untrusted() {
    let (chain, _) = Ca::root("root").issue(&svid(&[ID]));
    let other = Ca::root("root");
    assert_eq!(
        any_domain(&chain, &other.bundle()),
        Err(IdentityError::Untrusted(
            "a signature in the chain does not verify".into()
        ))
    );
    let stranger = Ca::root("stranger");
    assert_eq!(
        any_domain(&chain, &stranger.bundle()),
        Err(IdentityError::Untrusted(
            "issued by no CA in the trust bundle".into()
        ))
    );
}

#[test]
fn trust_domains_filter_trusted_ids() {
    let root = Ca::root("root");
    let (chain, _) = root.issue(&svid(&[ID]));
    let now = UnixTime::now();
    let elsewhere = TrustDomains::new(vec!["example.org".into()]);
    assert_eq!(
        verify(&chain, &root.bundle(), &elsewhere, now),
        Err(IdentityError::TrustDomainRefused("cluster.local".into()))
    );
    let here = TrustDomains::new(vec!["example.org".into(), "cluster.local".into()]);
    assert!(verify(&chain, &root.bundle(), &here, now).is_ok());
    assert!(TrustDomains::default().allows("anything"));
}

#[test]
fn an_intermediate_ca_bounds_the_expiry() {
    let root = Ca::root("root");
    let soon = OffsetDateTime::now_utc() + time::Duration::minutes(30);
    let intermediate = root.intermediate("intermediate", |p| p.not_after = soon);
    let (chain, _) = intermediate.issue(&svid(&[ID]));
    let verified = any_domain(&chain, &root.bundle()).unwrap();
    assert_eq!(verified.id.as_str(), ID);
    // ASN.1 times have whole seconds.
    let expected = UNIX_EPOCH + Duration::from_secs(soon.unix_timestamp() as u64);
    assert_eq!(verified.not_after, expected);

    assert_eq!(
        outcome(any_domain(&chain[..1], &root.bundle())),
        Err("identity_untrusted"),
        "without its intermediate"
    );
}

#[test]
fn the_leaf_bounds_the_expiry_without_intermediates() {
    let root = Ca::root("root");
    let params = svid(&[ID]);
    let (chain, _) = root.issue(&params);
    let verified = any_domain(&chain, &root.bundle()).unwrap();
    let expected = UNIX_EPOCH + Duration::from_secs(params.not_after.unix_timestamp() as u64);
    assert_eq!(verified.not_after, expected);
}

#[test]
fn no_chain_is_no_identity() {
    let bundle = Ca::root("root").bundle();
    assert_eq!(any_domain(&[], &bundle), Err(IdentityError::Missing));
}

#[test]
fn bundles_hold_every_certificate_and_refuse_none() {
    let (a, b) = (Ca::root("a"), Ca::root("b"));
    let both = TrustBundle::from_pem(format!("{}{}", a.pem, b.pem).as_bytes()).unwrap();
    assert_eq!(both.len(), 2);
    for ca in [&a, &b] {
        let (chain, _) = ca.issue(&svid(&[ID]));
        assert!(any_domain(&chain, &both).is_ok());
    }

    let key = KeyPair::generate().unwrap().serialize_pem();
    let error = TrustBundle::from_pem(key.as_bytes()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the trust bundle (PEM text): holds no PEM certificate"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    assert!(matches!(
        TrustBundle::load(&missing),
        Err(TrustBundleError::Read { .. })
    ));
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a bundle").unwrap();
    let message = TrustBundle::load(&garbage).unwrap_err().to_string();
    assert!(
        message.contains("garbage.pem: holds no PEM certificate"),
        "{message}"
    );
}

#[test]
fn the_handle_follows_the_file_and_keeps_the_last_good_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.pem");
    let (first, second) = (Ca::root("first"), Ca::root("second"));
    let (second_leaf, _) = second.issue(&svid(&[ID]));
    std::fs::write(&path, &first.pem).unwrap();
    let handle = TrustBundleHandle::load(&path).unwrap();
    assert_eq!(handle.path(), path);
    assert!(any_domain(&second_leaf, &handle.current()).is_err());
    assert!(!handle.reload_if_changed(), "nothing changed");

    std::fs::write(&path, &second.pem).unwrap();
    assert!(handle.reload_if_changed());
    assert!(any_domain(&second_leaf, &handle.current()).is_ok());
    assert!(!handle.reload_if_changed(), "already loaded");

    for broken in ["garbage", ""] {
        std::fs::write(&path, broken).unwrap();
        assert!(!handle.reload_if_changed(), "{broken:?}");
        assert!(
            any_domain(&second_leaf, &handle.current()).is_ok(),
            "{broken:?}"
        );
    }
    std::fs::remove_file(&path).unwrap();
    assert!(!handle.reload_if_changed());
    assert!(any_domain(&second_leaf, &handle.current()).is_ok());

    std::fs::write(&path, &first.pem).unwrap();
    assert!(handle.reload_if_changed(), "a good file again");
    assert!(any_domain(&second_leaf, &handle.current()).is_err());
}

// --- the handshake ---

/// A server configuration for `localhost` and the roots a client trusts it by.
fn listener() -> (rustls::ServerConfig, RootCertStore) {
    let server_ca = Ca::root("server ca");
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let (chain, key) = server_ca.issue(&params);
    let config = server_config(chain, pkcs8(&key)).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.der.clone()).unwrap();
    (config, roots)
}

fn pkcs8(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

fn client_builder(
    version: &'static SupportedProtocolVersion,
    roots: RootCertStore,
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
}

/// What the server side of a handshake ended with: the client's chain
/// (`None` when it sent none) and the protocol agreed, or the server's error.
async fn handshake(
    server: rustls::ServerConfig,
    mut client: ClientConfig,
) -> std::io::Result<(Option<Chain>, Option<Vec<u8>>)> {
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from("localhost").unwrap();
    let (accepted, _) = tokio::join!(
        acceptor.accept(server_io),
        connector.connect(name, client_io)
    );
    let tls = accepted?;
    let connection = tls.get_ref().1;
    Ok((
        connection.peer_certificates().map(|chain| chain.to_vec()),
        connection.alpn_protocol().map(|p| p.to_vec()),
    ))
}

const VERSIONS: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test]
async fn a_client_certificate_is_verified_after_the_handshake() {
    let workloads = Ca::root("workloads");
    let (chain, key) = workloads
        .intermediate("intermediate", |_| {})
        .issue(&svid(&[ID]));
    for version in VERSIONS {
        let (server, roots) = listener();
        let client = client_builder(version, roots)
            .with_client_auth_cert(chain.clone(), pkcs8(&key))
            .unwrap();
        let (presented, alpn) = handshake(server, client).await.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        let presented = presented.expect("the client sent its chain");
        let verified = any_domain(&presented, &workloads.bundle()).unwrap();
        assert_eq!(verified.id.as_str(), ID, "{version:?}");
    }
}

#[tokio::test]
async fn an_untrusted_certificate_still_completes_the_handshake() {
    let (chain, key) = Ca::root("stranger").issue(&svid(&[ID]));
    let (server, roots) = listener();
    let client = client_builder(&rustls::version::TLS13, roots)
        .with_client_auth_cert(chain, pkcs8(&key))
        .unwrap();
    let (presented, _) = handshake(server, client).await.unwrap();
    let bundle = Ca::root("workloads").bundle();
    assert_eq!(
        outcome(any_domain(&presented.unwrap(), &bundle)),
        Err("identity_untrusted")
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_let_through() {
    for version in VERSIONS {
        let (server, roots) = listener();
        let client = client_builder(version, roots).with_no_client_auth();
        let (presented, _) = handshake(server, client).await.unwrap();
        assert_eq!(presented, None, "{version:?}");
    }
}

/// Presents a certificate with a key that is not its own.
#[derive(Debug)]
struct WrongKey(Arc<CertifiedKey>);

impl ResolvesClientCert for WrongKey {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_certificate_without_its_key_fails_the_handshake() {
    let (chain, _) = Ca::root("workloads").issue(&svid(&[ID]));
    let other_key = KeyPair::generate().unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&pkcs8(&other_key)).unwrap();
    let stolen = Arc::new(WrongKey(Arc::new(CertifiedKey::new(chain, signer))));
    for version in VERSIONS {
        let (server, roots) = listener();
        let client = client_builder(version, roots).with_client_cert_resolver(stolen.clone());
        assert!(handshake(server, client).await.is_err(), "{version:?}");
    }
}
