//! The private-address guard: the addresses an agent must not reach through
//! tollgate, whatever name it gives them. The forwarder asks it about every
//! address it is about to dial — after resolving, so a name is judged by
//! where it really leads, and right before dialling, so the address judged
//! is the address dialled.
//!
//! Three kinds of refusal, from weakest to strongest:
//!
//! - a reserved range (loopback, private, link-local, documentation, …):
//!   `forward.allow_networks` may exempt it;
//! - a cloud metadata endpoint: exempt only when `allow_networks` lists the
//!   address itself (a `/32` or `/128`), never by a wider network;
//! - tollgate's own listener: never — a request to it would come back in
//!   and loop.
//!
//! An IPv6 address that carries an IPv4 address the connection really goes
//! to (IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`) is judged as that
//! IPv4 address, exemptions included. The other IPv6 forms that embed one
//! (IPv4-compatible, 6to4, Teredo, local-use NAT64) are refused outright.
//! `docs/configuration.md` has the table and the reasons.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{PoisonError, RwLock};

use ipnet::IpNet;

/// Why an address is not dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    kind: Kind,
    /// The IPv4 address an IPv6 one was judged as, when it carried one.
    carried: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Reserved { name: &'static str, range: IpNet },
    Metadata { service: &'static str },
    OwnListener,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v4) = self.carried {
            write!(f, "it carries {v4}: ")?;
        }
        match &self.kind {
            Kind::Reserved { name, range } => write!(f, "{name}, {range}"),
            Kind::Metadata { service } => write!(f, "cloud metadata ({service})"),
            Kind::OwnListener => f.write_str("tollgate's own listener"),
        }
    }
}

/// What is refused, and what `forward.allow_networks` exempts.
#[derive(Debug, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
    /// Where this process listens (and where its decision service is
    /// configured to): filled in as the listeners are bound.
    own: RwLock<Vec<SocketAddr>>,
}

impl Guard {
    pub fn new(allow: Vec<IpNet>) -> Guard {
        Guard {
            allow,
            own: RwLock::default(),
        }
    }

    /// Never dial `addr`: tollgate listens there. An unspecified address
    /// (`0.0.0.0`, `[::]`) stands for every address of this host with
    /// that port; port 0 (not bound yet) stands for nothing.
    pub fn own_listener(&self, addr: SocketAddr) {
        if addr.port() == 0 {
            return;
        }
        let mut own = self.own.write().unwrap_or_else(PoisonError::into_inner);
        if !own.contains(&addr) {
            own.push(addr);
        }
    }

    /// Whether `dest` may be dialled.
    pub fn check(&self, dest: SocketAddr) -> Result<(), Refusal> {
        let ip = judged(dest.ip());
        let carried = match ip {
            IpAddr::V4(v4) if dest.ip().is_ipv6() => Some(v4),
            _ => None,
        };
        let refused = |kind| Err(Refusal { kind, carried });
        if self.is_own(dest) || self.is_own(SocketAddr::new(ip, dest.port())) {
            return refused(Kind::OwnListener);
        }
        if let Some(service) = metadata(ip) {
            // Only a deliberate, exact entry lets an agent reach a metadata
            // endpoint: `169.254.0.0/16` exempted for a link-local service
            // must not bring the instance's credentials along.
            if self.allow.contains(&IpNet::from(ip)) {
                return Ok(());
            }
            return refused(Kind::Metadata { service });
        }
        match reserved(ip) {
            Some(_) if self.allow.iter().any(|net| net.contains(&ip)) => Ok(()),
            Some((name, range)) => refused(Kind::Reserved { name, range }),
            None => Ok(()),
        }
    }

    fn is_own(&self, dest: SocketAddr) -> bool {
        let own = self.own.read().unwrap_or_else(PoisonError::into_inner);
        own.iter().any(|listener| {
            listener.port() == dest.port()
                && (listener.ip().to_canonical() == dest.ip().to_canonical()
                    // Connecting to 0.0.0.0 or [::] reaches this host.
                    || dest.ip().is_unspecified()
                    || (listener.ip().is_unspecified() && is_local(dest)))
        })
    }
}

/// Whether `dest` is one of this host's addresses: only those can be bound.
/// Asked when it happens (only for a destination on a wildcard listener's
/// port), so addresses that come and go are seen as they are. Any answer
/// but "not available here" counts as local: refusing is the safe error.
fn is_local(dest: SocketAddr) -> bool {
    let mut probe = dest;
    probe.set_port(0);
    match std::net::UdpSocket::bind(probe) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrNotAvailable,
    }
}

/// The address a connection to `ip` really reaches, as far as can be told
/// from the address: an IPv4-mapped address is its IPv4 address (the
/// kernel sends IPv4), a NAT64 address the IPv4 address the translator
/// sends to.
fn judged(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    if in_v6(v6, NAT64, 96) {
        let [.., a, b, c, d] = v6.octets();
        return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    }
    ip
}

/// Why `ip` is refused on its own (no exemptions, no listeners): the
/// metadata endpoints and reserved ranges, after seeing through IPv4-mapped
/// and NAT64 addresses. `None`: an ordinary public address.
pub fn refusal(ip: IpAddr) -> Option<Refusal> {
    Guard::default().check(SocketAddr::new(ip, 1)).err()
}

/// The well-known metadata and credential endpoints of cloud platforms:
/// an agent that reaches one holds the machine's (or the pod's) cloud
/// identity. Most sit in ranges refused anyway; listing them keeps them
/// refused when a range is exempted, and catches the ones outside.
const METADATA: [(IpAddr, &str); 13] = [
    (
        v4(169, 254, 169, 254),
        "AWS, Azure, GCP, Oracle, OpenStack, DigitalOcean, Hetzner",
    ),
    (v4(169, 254, 170, 2), "AWS ECS task credentials"),
    (v4(169, 254, 170, 23), "AWS EKS Pod Identity"),
    (v4(169, 254, 0, 23), "Tencent Cloud"),
    (v4(169, 254, 42, 42), "Scaleway"),
    (v4(100, 100, 100, 200), "Alibaba Cloud"),
    (v4(192, 0, 0, 192), "Oracle Cloud Classic"),
    // A public address Azure answers inside every virtual network: the
    // WireServer, which hands out extension settings and certificates.
    (v4(168, 63, 129, 16), "Azure WireServer"),
    (v6(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254), "AWS, IPv6"),
    (
        v6(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23),
        "AWS EKS Pod Identity, IPv6",
    ),
    (v6(0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x254), "GCP, IPv6"),
    (v6(0xfd00, 0x0042, 0, 0, 0, 0, 0, 0x42), "Scaleway, IPv6"),
    // The same endpoint on IPv6-only ECS tasks.
    (
        v6(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x2),
        "AWS ECS task credentials, IPv6",
    ),
];

fn metadata(ip: IpAddr) -> Option<&'static str> {
    METADATA
        .iter()
        .find(|(address, _)| *address == ip)
        .map(|(_, service)| *service)
}

/// IPv4 ranges that are not globally reachable (IANA's special-purpose
/// registry), plus the deprecated 6to4 relay anycast. Nothing an agent
/// calls on the Internet lives in them; several are used inside networks
/// (198.18.0.0/15 by fake-IP DNS, 240.0.0.0/4 by some clouds).
const RESERVED_V4: [(Ipv4Addr, u8, &str); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// The well-known NAT64 prefix, `64:ff9b::/96` (RFC 6052).
const NAT64: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);

/// IPv6 ranges refused, first match naming it. Everything outside
/// `2000::/3` (the only space allocated for global unicast) is refused
/// too; the ranges listed outside it only give the refusal a better name.
const RESERVED_V6: [(Ipv6Addr, u8, &str); 16] = [
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    // Deprecated (RFC 4291); on a host with a `sit` tunnel it still sends
    // to the IPv4 address inside.
    (Ipv6Addr::UNSPECIFIED, 96, "IPv4-compatible (deprecated)"),
    // RFC 8215: the operator picks the prefix length, so where the IPv4
    // address sits cannot be known from the address.
    (v6a(0x64, 0xff9b, 1), 48, "local-use NAT64"),
    (v6a(0x100, 0, 0), 64, "discard-only"),
    // Teredo hides the client's IPv4 address (inverted) and a server's:
    // obsolete, and nothing to reach through it.
    (v6a(0x2001, 0, 0), 32, "Teredo"),
    (v6a(0x2001, 0, 0), 23, "IETF protocol assignments"),
    (v6a(0x2001, 0xdb8, 0), 32, "documentation"),
    // 6to4 (deprecated, RFC 7526) routes through a relay to the IPv4
    // address in bits 16–47, which a relay might still honour.
    (v6a(0x2002, 0, 0), 16, "6to4"),
    (v6a(0x3fff, 0, 0), 20, "documentation"),
    (v6a(0x5f00, 0, 0), 16, "SRv6 segment identifiers"),
    (v6a(0xfc00, 0, 0), 7, "unique local"),
    (v6a(0xfe80, 0, 0), 10, "link-local"),
    (v6a(0xfec0, 0, 0), 10, "site-local (deprecated)"),
    (v6a(0xff00, 0, 0), 8, "multicast"),
    (v6a(0, 0, 0), 8, "reserved by the IETF"),
];

/// Global unicast: `2000::/3`.
const GLOBAL_UNICAST: (Ipv6Addr, u8) = (v6a(0x2000, 0, 0), 3);

/// The reserved range `ip` falls in, by name.
fn reserved(ip: IpAddr) -> Option<(&'static str, IpNet)> {
    match ip {
        IpAddr::V4(v4) => RESERVED_V4
            .iter()
            .find(|(base, len, _)| in_v4(v4, *base, *len))
            .map(|(base, len, name)| (*name, net(IpAddr::V4(*base), *len))),
        IpAddr::V6(v6) => RESERVED_V6
            .iter()
            .find(|(base, len, _)| in_v6(v6, *base, *len))
            .map(|(base, len, name)| (*name, net(IpAddr::V6(*base), *len)))
            .or_else(|| {
                let (base, len) = GLOBAL_UNICAST;
                (!in_v6(v6, base, len)).then(|| ("not global unicast", net(IpAddr::V6(base), len)))
            }),
    }
}

fn in_v4(ip: Ipv4Addr, base: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(base) & mask
}

fn in_v6(ip: Ipv6Addr, base: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(base) & mask
}

fn net(base: IpAddr, len: u8) -> IpNet {
    // The tables hold valid prefix lengths (a test checks every row).
    IpNet::new(base, len).unwrap_or_else(|_| IpNet::from(base))
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
}

/// A range's base address from its first three groups.
const fn v6a(a: u16, b: u16, c: u16) -> Ipv6Addr {
    Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0)
}

#[cfg(test)]
mod tests;
