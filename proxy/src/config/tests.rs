use super::*;

fn load_str(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = yaml::parse("t.yaml", text)?;
    Config::from_raw(Path::new("/etc/tollgate/t.yaml"), raw)
}

#[test]
fn empty_config_gets_the_documented_defaults() {
    let c = load_str("{}").unwrap();
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].address.to_string(), DEFAULT_PROXY_ADDRESS);
    assert!(c.listeners[0].static_identity.is_none());
    assert_eq!(c.admin_address.to_string(), DEFAULT_ADMIN_ADDRESS);
    assert_eq!(c.catalog_dir, Path::new("/etc/tollgate/catalog"));
    assert_eq!(c.policy_dir, Path::new("/etc/tollgate/policies"));
    assert_eq!(c.audit, AuditOutput::Stdout);
}

#[test]
fn resolve_overrides_and_networks_parse() {
    let c = load_str(
        "forward:\n  resolve:\n    'API.github.com:443': 127.0.0.1:8443\n  allow_networks: [127.0.0.0/8]\n",
    )
    .unwrap();
    assert_eq!(
        c.forward.resolve[&("api.github.com".to_string(), 443)].to_string(),
        "127.0.0.1:8443"
    );
    assert_eq!(c.forward.allow_networks.len(), 1);
}

#[test]
fn mistakes_are_refused_with_the_field() {
    for (text, needle) in [
        ("listeners: [{address: nope}]", "listeners[0].address"),
        (
            "forward: {connect_timeout: soon}",
            "forward.connect_timeout",
        ),
        (
            "forward: {allow_networks: [10.0.0.0/99]}",
            "forward.allow_networks",
        ),
        (
            "forward: {resolve: {'noport': 127.0.0.1:1}}",
            "forward.resolve",
        ),
        ("reload: {interval: 0s}", "reload.interval"),
        (
            "listeners: [{name: a, address: 127.0.0.1:1}, {name: a, address: 127.0.0.1:2}]",
            "duplicate listener",
        ),
    ] {
        let err = load_str(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn unknown_field_is_an_error_with_position() {
    let err = load_str("admin:\n  adress: 127.0.0.1:1\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("t.yaml:2:3"), "{err}");
}

#[test]
fn host_port_split_handles_v6_and_case() {
    assert_eq!(
        split_host_port("Example.COM:80"),
        Some(("example.com".into(), 80))
    );
    assert_eq!(split_host_port("[::1]:443"), Some(("::1".into(), 443)));
    assert_eq!(split_host_port("example.com"), None);
    assert_eq!(split_host_port(":80"), None);
}
