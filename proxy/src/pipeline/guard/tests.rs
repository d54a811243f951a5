use super::*;

/// Every address form, and what the refusal says about it (`None`: an
/// ordinary public address, dialled).
const TABLE: &[(&str, Option<&str>)] = &[
    // Public addresses, both families.
    ("140.82.112.6", None),
    ("8.8.8.8", None),
    ("100.128.0.1", None), // just past 100.64.0.0/10
    ("2606:4700::1111", None),
    ("2a00:1450:4001::200e", None),
    ("2001:200::1", None), // just past 2001::/23
    // IPv4 reserved ranges.
    ("0.0.0.0", Some("\"this network\", 0.0.0.0/8")),
    ("0.1.2.3", Some("\"this network\"")),
    ("10.1.2.3", Some("private, 10.0.0.0/8")),
    ("100.64.0.1", Some("shared address space")),
    ("127.0.0.1", Some("loopback, 127.0.0.0/8")),
    ("127.255.255.254", Some("loopback")),
    ("169.254.1.1", Some("link-local, 169.254.0.0/16")),
    ("172.16.0.1", Some("private, 172.16.0.0/12")),
    ("172.31.255.255", Some("private")),
    ("192.0.0.8", Some("IETF protocol assignments")),
    ("192.0.2.1", Some("documentation, 192.0.2.0/24")),
    ("192.88.99.1", Some("6to4 relay anycast")),
    ("192.168.1.1", Some("private, 192.168.0.0/16")),
    ("198.18.0.1", Some("benchmarking, 198.18.0.0/15")),
    ("198.19.255.255", Some("benchmarking")),
    ("198.51.100.7", Some("documentation")),
    ("203.0.113.7", Some("documentation")),
    ("224.0.0.1", Some("multicast")),
    ("240.0.0.1", Some("reserved, 240.0.0.0/4")),
    ("255.255.255.255", Some("reserved")),
    // Cloud metadata.
    ("169.254.169.254", Some("cloud metadata (AWS, Azure, GCP")),
    (
        "169.254.170.2",
        Some("cloud metadata (AWS ECS task credentials)"),
    ),
    (
        "169.254.170.23",
        Some("cloud metadata (AWS EKS Pod Identity)"),
    ),
    ("169.254.0.23", Some("cloud metadata (Tencent Cloud)")),
    ("100.100.100.200", Some("cloud metadata (Alibaba Cloud)")),
    ("192.0.0.192", Some("cloud metadata (Oracle Cloud Classic)")),
    ("168.63.129.16", Some("cloud metadata (Azure WireServer)")),
    ("fd00:ec2::254", Some("cloud metadata (AWS, IPv6)")),
    (
        "fd00:ec2::23",
        Some("cloud metadata (AWS EKS Pod Identity, IPv6)"),
    ),
    ("fd20:ce::254", Some("cloud metadata (GCP, IPv6)")),
    // IPv6 reserved ranges.
    ("::1", Some("loopback, ::1/128")),
    ("::", Some("unspecified, ::/128")),
    ("fd00::1", Some("unique local, fc00::/7")),
    ("fc00::1", Some("unique local")),
    ("fe80::1", Some("link-local, fe80::/10")),
    ("fec0::1", Some("site-local (deprecated)")),
    ("ff02::1", Some("multicast, ff00::/8")),
    ("100::1", Some("discard-only, 100::/64")),
    ("2001:db8::1", Some("documentation, 2001:db8::/32")),
    ("3fff::1", Some("documentation, 3fff::/20")),
    ("2001:2::1", Some("IETF protocol assignments, 2001::/23")),
    ("5f00::1", Some("SRv6")),
    ("4000::1", Some("not global unicast, 2000::/3")),
    ("1::1", Some("reserved by the IETF, ::/8")),
    // IPv4-mapped: judged as the IPv4 address inside.
    ("::ffff:127.0.0.1", Some("it carries 127.0.0.1: loopback")),
    ("::ffff:7f00:1", Some("it carries 127.0.0.1: loopback")),
    ("::ffff:10.0.0.1", Some("it carries 10.0.0.1: private")),
    (
        "::ffff:169.254.169.254",
        Some("it carries 169.254.169.254: cloud metadata"),
    ),
    ("::ffff:8.8.8.8", None),
    // IPv4-compatible: refused whatever it carries.
    ("::127.0.0.1", Some("IPv4-compatible (deprecated), ::/96")),
    ("::169.254.169.254", Some("IPv4-compatible")),
    ("::8.8.8.8", Some("IPv4-compatible")),
    // SIIT's IPv4-translated form is no exception.
    ("::ffff:0:127.0.0.1", Some("reserved by the IETF")),
    // NAT64, well-known prefix: judged as the IPv4 address inside.
    ("64:ff9b::7f00:1", Some("it carries 127.0.0.1: loopback")),
    ("64:ff9b::127.0.0.1", Some("it carries 127.0.0.1: loopback")),
    (
        "64:ff9b::a9fe:a9fe",
        Some("it carries 169.254.169.254: cloud metadata"),
    ),
    ("64:ff9b::c0a8:101", Some("it carries 192.168.1.1: private")),
    ("64:ff9b::808:808", None),
    // NAT64, local-use prefix: refused whatever it carries.
    (
        "64:ff9b:1::808:808",
        Some("local-use NAT64, 64:ff9b:1::/48"),
    ),
    ("64:ff9b:1:7f00:1::", Some("local-use NAT64")),
    // 6to4: refused whatever it carries.
    ("2002:7f00:1::1", Some("6to4, 2002::/16")),
    ("2002:a9fe:a9fe::1", Some("6to4")),
    ("2002:808:808::1", Some("6to4")),
    // Teredo: refused whatever it carries.
    (
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        Some("Teredo, 2001::/32"),
    ),
    ("2001::1", Some("Teredo")),
];

#[test]
fn every_address_form_is_judged_as_the_table_says() {
    let mut wrong = Vec::new();
    for (address, expected) in TABLE {
        let ip: IpAddr = address.parse().unwrap();
        let got = refusal(ip).map(|r| r.to_string());
        let right = match (expected, &got) {
            (None, None) => true,
            (Some(want), Some(got)) => got.contains(want),
            _ => false,
        };
        if !right {
            wrong.push(format!("{address}: want {expected:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn every_range_in_the_tables_is_a_network() {
    for (base, len, name) in RESERVED_V4 {
        let net = IpNet::new(IpAddr::V4(base), len).unwrap();
        assert_eq!(net.network(), IpAddr::V4(base), "{name}");
    }
    for (base, len, name) in RESERVED_V6 {
        let net = IpNet::new(IpAddr::V6(base), len).unwrap();
        assert_eq!(net.network(), IpAddr::V6(base), "{name}");
    }
    for (address, service) in METADATA {
        assert!(
            reserved(address).is_some() || service.contains("Azure"),
            "{address} ({service}) sits in no reserved range: say why it is listed"
        );
    }
}

fn guard(allow: &[&str]) -> Guard {
    Guard::new(allow.iter().map(|n| n.parse().unwrap()).collect())
}

fn at(address: &str) -> SocketAddr {
    address.parse().unwrap()
}

#[test]
fn allow_networks_exempts_reserved_ranges_in_either_spelling() {
    let g = guard(&["127.0.0.0/8", "fd13::/64", "64:ff9b:1::/48"]);
    for allowed in [
        "127.0.0.1:80",
        "[::ffff:127.0.0.1]:80",
        "[64:ff9b::7f00:1]:80",
        "[fd13::2]:443",
        "[64:ff9b:1::a00:1]:80",
    ] {
        assert_eq!(g.check(at(allowed)), Ok(()), "{allowed}");
    }
    for refused in [
        "10.0.0.1:80",
        "[::1]:80",
        "[fd14::1]:80",
        "[::127.0.0.1]:80",
    ] {
        assert!(g.check(at(refused)).is_err(), "{refused}");
    }
    // An IPv6 network does not exempt the IPv4 address a mapped one
    // carries: it is judged as that IPv4 address.
    let g = guard(&["::ffff:0:0/96"]);
    assert!(g.check(at("[::ffff:127.0.0.1]:80")).is_err());
}

#[test]
fn metadata_is_exempted_only_by_its_own_address() {
    for wide in [
        &["169.254.0.0/16"][..],
        &["0.0.0.0/0", "::/0"],
        &["169.254.169.0/24"],
        &["fd00::/8"],
    ] {
        let g = guard(wide);
        for address in [
            "169.254.169.254:80",
            "[::ffff:169.254.169.254]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "[fd00:ec2::254]:80",
            "100.100.100.200:80",
            "168.63.129.16:80",
        ] {
            let refused = g.check(at(address)).unwrap_err().to_string();
            assert!(
                refused.contains("cloud metadata"),
                "{wide:?} {address}: {refused}"
            );
        }
    }
    // Wide networks still exempt the rest of their range.
    assert_eq!(
        guard(&["169.254.0.0/16"]).check(at("169.254.1.1:80")),
        Ok(())
    );

    let g = guard(&["169.254.169.254/32", "fd00:ec2::254/128"]);
    for address in [
        "169.254.169.254:80",
        "[::ffff:169.254.169.254]:80",
        "[fd00:ec2::254]:80",
    ] {
        assert_eq!(g.check(at(address)), Ok(()), "{address}");
    }
    assert!(g.check(at("169.254.170.2:80")).is_err());
}

#[test]
fn own_listeners_are_never_dialled_even_where_allowed() {
    let g = guard(&["0.0.0.0/0", "::/0"]);
    g.own_listener(at("127.0.0.1:3128"));
    g.own_listener(at("[::1]:9901"));
    for own in [
        "127.0.0.1:3128",
        "[::ffff:127.0.0.1]:3128",
        "[64:ff9b::7f00:1]:3128",
        // Connecting to the unspecified address reaches this host.
        "0.0.0.0:3128",
        "[::]:3128",
        "[::1]:9901",
    ] {
        let refused = g.check(at(own)).unwrap_err().to_string();
        assert!(
            refused.contains("tollgate's own listener"),
            "{own}: {refused}"
        );
    }
    // Another port, or another loopback address, is not the listener.
    for other in ["127.0.0.1:3129", "127.0.0.2:3128", "[::1]:3128"] {
        assert_eq!(g.check(at(other)), Ok(()), "{other}");
    }
}

#[test]
fn a_wildcard_listener_covers_every_local_address_with_its_port() {
    let g = guard(&["0.0.0.0/0", "::/0"]);
    g.own_listener(at("0.0.0.0:15001"));
    g.own_listener(at("[::]:0")); // not bound yet: stands for nothing
    for local in ["127.0.0.1:15001", "127.3.2.1:15001"] {
        assert!(g.check(at(local)).is_err(), "{local}");
    }
    // A public address is not this host's: the port alone refuses nothing.
    assert_eq!(g.check(at("8.8.8.8:15001")), Ok(()));
    assert_eq!(g.check(at("127.0.0.1:15002")), Ok(()));
}
