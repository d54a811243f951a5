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

#[test]
fn every_omitted_field_gets_its_named_default() {
    let c = load_str("{}").unwrap();
    assert_eq!(&*c.listeners[0].name, DEFAULT_LISTENER_NAME);
    assert_eq!(c.decision_address.to_string(), DEFAULT_DECISION_ADDRESS);
    assert_eq!(
        c.decision_admin_address.to_string(),
        DEFAULT_DECISION_ADMIN_ADDRESS
    );
    let base = Path::new("/etc/tollgate");
    assert_eq!(c.catalog_dir, base.join(DEFAULT_CATALOG_DIR));
    assert_eq!(c.policy_dir, base.join(DEFAULT_POLICY_DIR));
    assert_eq!(
        c.tls,
        TlsConfig {
            ca_dir: base.join(DEFAULT_CA_DIR),
            create_ca_if_missing: false,
            upstream_ca_files: Vec::new(),
            system_roots: DEFAULT_SYSTEM_ROOTS,
            leaf_cache_size: DEFAULT_LEAF_CACHE_SIZE,
        }
    );
    assert_eq!(c.forward, ForwardConfig::default());
    assert_eq!(c.forward.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(c.forward.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
    assert_eq!(c.forward.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(c.forward.max_idle_per_host, DEFAULT_MAX_IDLE_PER_HOST);
    assert_eq!(
        c.forward.tunnel_half_close_timeout,
        DEFAULT_TUNNEL_HALF_CLOSE_TIMEOUT
    );
    assert!(c.forward.resolve.is_empty() && c.forward.allow_networks.is_empty());
    assert!(!c.forward.via);
    assert_eq!(c.decision_cache_size, DEFAULT_DECISION_CACHE_SIZE);
    assert_eq!(c.remote_decision, None);
    assert_eq!(c.decision_tls, None);
    assert!(c.credentials.is_empty());
    assert_eq!(
        c.reload,
        ReloadConfig {
            watch: DEFAULT_RELOAD_WATCH,
            interval: DEFAULT_RELOAD_INTERVAL,
        }
    );
    assert_eq!(c.tasks, None);

    // Sections whose defaults apply once the section is there.
    let c = load_str(
        "decision: {endpoint: 'http://127.0.0.1:9191'}\ntasks: {}\ncredentials:\n  a: { dir: a, inject: { header: { name: X-Key } }, services: [x] }\n",
    )
    .unwrap();
    assert_eq!(
        c.remote_decision,
        Some(RemoteDecision {
            endpoint: "http://127.0.0.1:9191".into(),
            timeout: DEFAULT_DECISION_TIMEOUT,
            cache_ttl: DEFAULT_DECISION_CACHE_TTL,
            tls: None,
        })
    );
    assert_eq!(
        c.tasks,
        Some(TasksConfig {
            admin_token: None,
            default_ttl: DEFAULT_TASK_TTL,
            max_ttl: DEFAULT_MAX_TASK_TTL,
        })
    );
    assert_eq!(
        c.credentials["a"].source,
        CredentialSource::Dir {
            path: base.join("a"),
            key: DEFAULT_CREDENTIAL_KEY.into()
        }
    );
    assert_eq!(
        c.credentials["a"].injection,
        CredentialInjection::Header {
            name: "x-key".into(),
            template: DEFAULT_HEADER_TEMPLATE.into()
        }
    );
}

/// The reference's example shows each default as its value; it must load,
/// and those values must be the named defaults.
#[test]
fn the_reference_example_shows_the_named_defaults() {
    let doc = include_str!("../../../docs/configuration.md");
    let example = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/configuration.md has a yaml example");
    let c = load_str(example).unwrap();
    let base = Path::new("/etc/tollgate");
    assert_eq!(c.listeners[0].address.to_string(), DEFAULT_PROXY_ADDRESS);
    assert_eq!(c.admin_address.to_string(), DEFAULT_ADMIN_ADDRESS);
    assert_eq!(c.catalog_dir, base.join(DEFAULT_CATALOG_DIR));
    assert_eq!(c.policy_dir, base.join(DEFAULT_POLICY_DIR));
    assert_eq!(c.tls.ca_dir, base.join(DEFAULT_CA_DIR));
    assert_eq!(c.tls.system_roots, DEFAULT_SYSTEM_ROOTS);
    assert_eq!(c.tls.leaf_cache_size, DEFAULT_LEAF_CACHE_SIZE);
    assert_eq!(
        c.forward,
        ForwardConfig {
            resolve: c.forward.resolve.clone(),
            ..ForwardConfig::default()
        }
    );
    assert_eq!(c.decision_cache_size, DEFAULT_DECISION_CACHE_SIZE);
    let remote = c.remote_decision.as_ref().unwrap();
    assert_eq!(remote.timeout, DEFAULT_DECISION_TIMEOUT);
    assert_eq!(remote.cache_ttl, DEFAULT_DECISION_CACHE_TTL);
    assert_eq!(c.decision_address.to_string(), DEFAULT_DECISION_ADDRESS);
    assert_eq!(
        c.decision_admin_address.to_string(),
        DEFAULT_DECISION_ADMIN_ADDRESS
    );
    let tasks = c.tasks.as_ref().unwrap();
    assert_eq!(tasks.default_ttl, DEFAULT_TASK_TTL);
    assert_eq!(tasks.max_ttl, DEFAULT_MAX_TASK_TTL);
    assert_eq!(c.audit, AuditOutput::Stdout);
    assert_eq!(
        c.reload,
        ReloadConfig {
            watch: DEFAULT_RELOAD_WATCH,
            interval: DEFAULT_RELOAD_INTERVAL,
        }
    );
}
