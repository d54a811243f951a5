//! What a redirected connection opens with: the transparent listener's
//! ClientHello / request-line peek, and the leaf certificate a catalog
//! host named by SNI is then given.

use std::net::IpAddr;
use std::sync::OnceLock;

use crate::core::classify::normalize_host;
use crate::pipeline::transparent::{read_opening, Opening};
use crate::tls::ca::CertificateAuthority;
use crate::tls::leaf::LeafCache;

use super::shipped_catalog;

/// The bytes as the first a redirected connection sends (the listener
/// peeks at most 32 KiB, libFuzzer's inputs are smaller).
pub fn client_hello(data: &[u8]) {
    let Some(opening) = read_opening(data) else {
        return;
    };
    match opening {
        Opening::Tls(Some(name)) => {
            // The name becomes the CONNECT-like target's host: already in
            // the form every later comparison uses, and never an address
            // (an address is decided as one, on the original destination).
            assert!(!name.is_empty());
            assert_eq!(normalize_host(&name), name);
            assert!(name.parse::<IpAddr>().is_err(), "{name}");
            // A catalog host is intercepted: a name rustls accepted must
            // get a certificate, or the agent's connection just fails.
            if shipped_catalog().covers(&name) {
                if let Err(e) = leaves().server_config(&name) {
                    panic!("no leaf certificate for `{name}`: {e}");
                }
            }
        }
        Opening::Tls(None) | Opening::Opaque | Opening::Closed => {}
        Opening::Http { h2 } => {
            let space = data.iter().position(|&b| b == b' ').expect("a method ends");
            assert!(space > 0);
            assert_eq!(h2, &data[..space] == b"PRI");
        }
    }
}

/// A CA made once per process in a temporary folder, deleted once loaded.
fn leaves() -> &'static LeafCache {
    static LEAVES: OnceLock<LeafCache> = OnceLock::new();
    LEAVES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tollgate-fuzz-ca-{}", std::process::id()));
        CertificateAuthority::create(&dir, true).expect("a CA is created");
        let ca = CertificateAuthority::load(&dir).expect("the CA loads");
        let _ = std::fs::remove_dir_all(&dir);
        LeafCache::new(ca, 64)
    })
}
