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
    assert!(c.listeners[0].identity.is_empty());
    assert_eq!(c.admin_address.to_string(), DEFAULT_ADMIN_ADDRESS);
    assert_eq!(c.catalog_dir, Path::new("/etc/tollgate/catalog"));
    assert_eq!(c.policy_dir, Path::new("/etc/tollgate/policies"));
    assert_eq!(c.audit, AuditOutput::Stdout);
    assert_eq!(c.audit_on_failure, AuditOnFailure::Refuse);
}

#[test]
fn audit_may_forward_while_its_output_fails() {
    let c = load_str("audit: {output: audit.log, on_failure: forward}").unwrap();
    assert_eq!(
        c.audit,
        AuditOutput::File(PathBuf::from("/etc/tollgate/audit.log"))
    );
    assert_eq!(c.audit_on_failure, AuditOnFailure::Forward);
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
        ("audit: {on_failure: drop}", "audit.on_failure"),
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
    let issuer = &c.identity.issuers[0];
    assert_eq!(
        (issuer.leeway, issuer.refresh),
        (DEFAULT_JWT_LEEWAY, DEFAULT_JWKS_REFRESH)
    );
    assert_eq!(c.envoy_identity, EnvoyIdentity::default());
    assert_eq!(c.listeners[0].identity.jwt, ["kubernetes"]);
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

#[test]
fn identity_sources_parse_with_their_defaults() {
    let c = load_str(
        "identity:\n  claims: [team]\n  trust_domains: [cluster.local]\n  issuers:\n  \
         - {name: k8s, issuer: 'https://kubernetes.default.svc', audiences: [tollgate], \
            jwks: {discovery: true}, kind: kubernetes, trust_domain: cluster.local}\n  \
         - {name: spire, issuer: 'https://spire.example', audiences: [tollgate], \
            jwks: {file: keys.json}, kind: svid, algorithms: [ES256], leeway: 5s, refresh: 1m}\n\
         listeners:\n- name: gateway\n  tls: {cert: c.pem, key: k.pem}\n  identity:\n    \
           mtls: {trust_bundle: bundle.pem}\n    jwt: [k8s, spire]\n    \
           source_addresses: {10.0.0.0/8: 'spiffe://cluster.local/ns/a/sa/wide', 10.1.0.0/16: 'spiffe://cluster.local/ns/a/sa/narrow', 10.2.3.4: node}\n    \
           static: spiffe://cluster.local/ns/a/sa/sidecar\n\
         decision_service:\n  identity: {jwt: [k8s], jwt_header: X-Workload-Token, jwt_authn_payload: ''}\n",
    )
    .unwrap();
    let [k8s, spire] = &c.identity.issuers[..] else {
        panic!("two issuers")
    };
    assert_eq!(k8s.jwks, JwksSource::Discovery);
    assert_eq!(k8s.leeway, DEFAULT_JWT_LEEWAY);
    assert_eq!(k8s.refresh, DEFAULT_JWKS_REFRESH);
    assert_eq!(
        k8s.kind,
        TokenKind::Kubernetes {
            trust_domain: "cluster.local".into()
        }
    );
    assert_eq!(
        spire.jwks,
        JwksSource::File("/etc/tollgate/keys.json".into())
    );
    assert_eq!((spire.leeway.as_secs(), spire.refresh.as_secs()), (5, 60));
    let l = &c.listeners[0].identity;
    assert_eq!(
        l.mtls_trust_bundle.as_deref(),
        Some(Path::new("/etc/tollgate/bundle.pem"))
    );
    assert_eq!(l.describe(), "mtls,jwt,source_address,static");
    // Longest prefix first, a bare address as a /32.
    let nets: Vec<String> = l
        .source_addresses
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(nets, ["10.2.3.4/32", "10.1.0.0/16", "10.0.0.0/8"]);
    assert_eq!(c.envoy_identity.jwt_header.as_str(), "x-workload-token");
    assert_eq!(c.envoy_identity.jwt_authn_payload, None);
    let defaults = load_str("{}").unwrap().envoy_identity;
    assert_eq!(defaults.jwt_header.as_str(), DEFAULT_ENVOY_JWT_HEADER);
    assert_eq!(
        defaults.jwt_authn_payload.as_deref(),
        Some(DEFAULT_JWT_AUTHN_PAYLOAD)
    );
}

#[test]
fn identity_mistakes_are_refused_with_the_field() {
    let issuer = |extra: &str| {
        format!(
            "identity:\n  issuers:\n  - {{name: k, issuer: 'https://i', audiences: [t], jwks: {{discovery: true}}, kind: svid{extra}}}\n"
        )
    };
    for (text, needle) in [
        (
            issuer(", audiences: []").replace("audiences: [t], ", ""),
            "audiences",
        ),
        (
            issuer("").replace("{discovery: true}", "{discovery: true, file: k.json}"),
            "jwks",
        ),
        (
            issuer("").replace("{discovery: true}", "{url: 'ftp://x'}"),
            "jwks",
        ),
        (
            issuer("").replace("kind: svid", "kind: saml"),
            "issuers[0].kind",
        ),
        (
            issuer("").replace("kind: svid", "kind: kubernetes"),
            "trust_domain",
        ),
        (issuer(", trust_domain: td"), "trust_domain"),
        (issuer(", leeway: soon"), "leeway"),
        (
            "identity: {claims: ['team-name']}".into(),
            "identity.claims[0]",
        ),
        ("identity: {claims: [exp]}".into(), "identity.claims[0]"),
        (
            "listeners: [{identity: {jwt: [nobody]}}]".into(),
            "listeners[0].identity.jwt",
        ),
        (
            "listeners: [{identity: {mtls: {trust_bundle: b.pem}}}]".into(),
            "listeners[0].identity.mtls",
        ),
        (
            "listeners: [{tls: {cert: c, key: k, ca: a}}]".into(),
            "listeners[0].tls.ca",
        ),
        ("listeners: [{tls: {cert: c}}]".into(), "listeners[0].tls"),
        (
            "listeners: [{identity: {source_addresses: {'10.0.0.0/33': x}}}]".into(),
            "source_addresses",
        ),
        (
            "decision_service: {identity: {jwt: [nobody]}}".into(),
            "decision_service.identity.jwt",
        ),
    ] {
        let err = load_str(&text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn a_transparent_listener_has_its_own_defaults_and_only_the_sources_it_can_use() {
    let c = load_str(
        "listeners:\n  - {name: agents}\n  - {name: redirected, kind: transparent, identity: {static: 'spiffe://td/x'}}\n",
    )
    .unwrap();
    assert_eq!(c.listeners[0].kind, ListenerKind::Proxy);
    let redirected = &c.listeners[1];
    assert_eq!(redirected.address.to_string(), DEFAULT_TRANSPARENT_ADDRESS);
    assert_eq!(
        redirected.kind,
        ListenerKind::Transparent {
            require_original_destination: true
        }
    );
    let c =
        load_str("listeners: [{kind: transparent, require_original_destination: false}]").unwrap();
    assert_eq!(
        c.listeners[0].kind,
        ListenerKind::Transparent {
            require_original_destination: false
        }
    );

    for (text, needle) in [
        (
            "listeners: [{kind: transparent, tls: {cert: c.pem, key: k.pem}}]",
            "listeners[0].tls",
        ),
        (
            "identity: {issuers: [{name: k8s, issuer: 'https://i', audiences: [a], jwks: {file: j.json}, kind: svid}]}\nlisteners: [{kind: transparent, identity: {jwt: [k8s]}}]",
            "listeners[0].identity",
        ),
        (
            "listeners: [{require_original_destination: false}]",
            "listeners[0].require_original_destination",
        ),
        ("listeners: [{kind: sideways}]", "sideways"),
    ] {
        let err = load_str(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn the_state_store_is_memory_unless_a_redis_is_named() {
    assert_eq!(load_str("{}").unwrap().state, StateConfig::Memory);
    let c = load_str(
        "state:\n  redis:\n    url: rediss://tollgate@redis.internal:6380/2\n    password: { file: redis-password }\n    ca_file: redis-ca.pem\n",
    )
    .unwrap();
    let StateConfig::Redis(redis) = c.state else {
        panic!("{:?}", c.state)
    };
    // The user moves out of the URL, so the URL can be logged as it is.
    assert_eq!(redis.url, "rediss://redis.internal:6380/2");
    assert_eq!(redis.username.as_deref(), Some("tollgate"));
    assert_eq!(
        redis.password,
        Some(SecretSource::File("/etc/tollgate/redis-password".into()))
    );
    assert_eq!(
        redis.ca_file.as_deref(),
        Some(Path::new("/etc/tollgate/redis-ca.pem"))
    );
    assert_eq!(redis.key_prefix, DEFAULT_REDIS_KEY_PREFIX);
    assert_eq!(redis.timeout, DEFAULT_REDIS_TIMEOUT);
}

#[test]
fn redis_mistakes_are_refused_and_never_echo_a_password() {
    for (text, needle) in [
        ("state: {redis: {url: 'http://r:6379'}}", "scheme `http`"),
        ("state: {redis: {url: 'not a url'}}", "state.redis.url"),
        (
            "state: {redis: {url: 'redis://u:hunter2-secret@r:6379'}}",
            "holds a password",
        ),
        (
            "state: {redis: {url: 'redis://r:6379', ca_file: ca.pem}}",
            "state.redis.ca_file",
        ),
        (
            "state: {redis: {url: 'redis://u@r:6379', username: v}}",
            "state.redis.username",
        ),
        (
            "state: {redis: {url: 'redis://r:6379', key_prefix: 'a{b}'}}",
            "state.redis.key_prefix",
        ),
        (
            "state: {redis: {url: 'redis://r:6379', timeout: 0s}}",
            "state.redis.timeout",
        ),
        (
            "state: {redis: {url: 'redis://r:6379', password: {env: A, file: b}}}",
            "state.redis.password",
        ),
        ("state: {memcached: {}}", "memcached"),
    ] {
        let err = load_str(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
        assert!(!err.contains("hunter2-secret"), "{err}");
    }
}
