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

#[test]
fn credentials_take_every_source_and_injection() {
    let c = load_str(
        r#"
credentials:
  a: { env: A, services: [github] }
  b: { file: secrets/b, inject: basic, services: [github, slack] }
  c: { dir: /var/run/c, services: [github], inject: { header: { name: X-Api-Key, template: "token {value}" } } }
  d: { dir: d, key: api-key, inject: { query: { param: api_key } }, services: [openai] }
  e: { env: E, header: X-Old-Style, services: [github] }
  f: { dir: f, inject: basic, services: [github] }
"#,
    )
    .unwrap();
    let cr = &c.credentials;
    assert_eq!(cr["a"].source, CredentialSource::Env("A".into()));
    assert_eq!(cr["a"].injection, CredentialInjection::Bearer);
    assert_eq!(cr["a"].services[0].tool, "github");
    assert_eq!(cr["a"].services[0].at, "/etc/tollgate/t.yaml:3:27");
    assert_eq!(
        cr["b"].source,
        CredentialSource::File("/etc/tollgate/secrets/b".into())
    );
    assert_eq!(cr["b"].injection, CredentialInjection::Basic);
    assert_eq!(cr["b"].services.len(), 2);
    assert_eq!(
        cr["c"].injection,
        CredentialInjection::Header {
            name: "x-api-key".into(),
            template: "token {value}".into()
        }
    );
    assert_eq!(
        cr["c"].source,
        CredentialSource::Dir {
            path: "/var/run/c".into(),
            key: "token".into()
        }
    );
    assert_eq!(
        cr["d"].source,
        CredentialSource::Dir {
            path: "/etc/tollgate/d".into(),
            key: "api-key".into()
        }
    );
    assert_eq!(
        cr["d"].injection,
        CredentialInjection::Query {
            param: "api_key".into()
        }
    );
    assert_eq!(
        cr["e"].injection,
        CredentialInjection::Header {
            name: "x-old-style".into(),
            template: "{value}".into()
        }
    );
}

#[test]
fn credential_mistakes_are_refused_with_the_field() {
    for (text, needle) in [
        ("credentials: { a: { env: A } }", "services"),
        ("credentials: { a: { env: A, services: [] } }", "at least one"),
        (
            "credentials: { a: { env: A, file: f, services: [x] } }",
            "exactly one of",
        ),
        ("credentials: { a: { services: [x] } }", "exactly one of"),
        (
            "credentials: { a: { env: A, key: k, services: [x] } }",
            "only applies to a `dir`",
        ),
        (
            "credentials: { a: { dir: d, key: ../x, services: [x] } }",
            "not a file name",
        ),
        (
            "credentials: { a: { dir: d, key: k, inject: basic, services: [x] } }",
            "drop `key`",
        ),
        (
            "credentials: { a: { env: A, inject: { header: { name: 'bad name' } }, services: [x] } }",
            "not a header name",
        ),
        (
            "credentials: { a: { env: A, inject: { header: { name: x, template: 'no value' } }, services: [x] } }",
            "has no `{value}`",
        ),
        (
            "credentials: { a: { env: A, inject: { query: { param: 'a&b' } }, services: [x] } }",
            "not a query parameter name",
        ),
        (
            "credentials: { a: { env: A, header: x, inject: bearer, services: [x] } }",
            "not both",
        ),
        ("credentials: { a: { env: A, inject: digest, services: [x] } }", "t.yaml:1:"),
    ] {
        let err = load_str(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn a_binding_to_a_tool_the_catalog_lacks_points_at_its_line() {
    let c = load_str(
        "credentials:\n  gh:\n    env: A\n    services:\n      - github\n      - gihtub\n",
    )
    .unwrap();
    let err = c
        .check_credential_bindings(|tool| tool == "github")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "/etc/tollgate/t.yaml:6:9: credentials.gh.services: `gihtub` is not a tool in the catalog"
    );
    assert!(c.check_credential_bindings(|_| true).is_ok());
}

#[test]
fn a_reload_names_the_sections_that_wait_for_a_restart() {
    let running = load_str(
        "listeners: [{address: 127.0.0.1:3128}]\ncredentials:\n  gh: { env: A, services: [github] }\n",
    )
    .unwrap();
    // Credentials alone, even moved to other lines: nothing waits.
    let rebound = load_str(
        "\n\nlisteners: [{address: 127.0.0.1:3128}]\ncredentials:\n  gh: { file: /run/gh, services: [github, slack] }\n  new: { env: B, services: [slack] }\n",
    )
    .unwrap();
    assert!(running.changed_outside_credentials(&rebound).is_empty());
    let moved = load_str(
        "listeners: [{address: 127.0.0.1:3129}]\nforward: {via: true}\ndecision_service: {address: 127.0.0.1:1}\n",
    )
    .unwrap();
    assert_eq!(
        running.changed_outside_credentials(&moved),
        ["listeners", "forward", "decision_service"]
    );
}
