//! Envoy 1.40 participants: a bare route, or the same route behind the
//! ext_authz filter pointing at an authorization server; the bare route on
//! a listener that requires a client certificate; and a `CONNECT` tunnel
//! for the bulk rows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::pki::SvidFiles;
use crate::process::{command, free_port, Participant};
use crate::{repo_root, WORKLOAD};

pub fn binary() -> Option<PathBuf> {
    let venv = repo_root().join(".venv/bin/envoy");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("envoy"))
            .find(|p| p.exists())
    })
}

fn authz_filter(authz: Option<SocketAddr>) -> String {
    if authz.is_none() {
        return String::new();
    }
    r#"
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              grpc_service:
                envoy_grpc: { cluster_name: authz }
                timeout: 0.25s"#
        .to_string()
}

fn authz_cluster(authz: Option<SocketAddr>) -> String {
    let Some(a) = authz else {
        return String::new();
    };
    format!(
        r#"
  - name: authz
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: authz
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }} }}] }}]"#,
        a.ip(),
        a.port()
    )
}

/// Envoy with `--concurrency 1` routing to `upstream`; with `authz`, every
/// request is checked there first (the workload named by the route's
/// context extension, as `deploy/envoy` does).
pub fn start(
    bin: &Path,
    upstream: SocketAddr,
    authz: Option<SocketAddr>,
    cpu: Option<&str>,
) -> anyhow::Result<Participant> {
    let route = format!(
        r#"
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings: {{ context_extensions: {{ tollgate_workload: "{WORKLOAD}" }} }}"#
    );
    let listener = Listener {
        upgrade: "",
        route: &route,
        filters: &authz_filter(authz),
        clusters: &authz_cluster(authz),
        transport: "",
    };
    launch(bin, &listener, upstream, cpu)
}

/// The bare route behind TLS that requires a client certificate: the
/// listener's certificate and key from `files`, client certificates
/// chaining to their CA and holding a URI SAN in the bench's trust domain
/// (Envoy's nearest to tollgate's X.509-SVID check), HTTP/1.1 only, as
/// tollgate's mTLS listener.
pub fn start_mtls(
    bin: &Path,
    upstream: SocketAddr,
    files: &SvidFiles,
    cpu: Option<&str>,
) -> anyhow::Result<Participant> {
    let transport = format!(
        r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: ["http/1.1"]
            tls_certificates:
            - certificate_chain: {{ filename: "{}" }}
              private_key: {{ filename: "{}" }}
            validation_context:
              trusted_ca: {{ filename: "{}" }}
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {{ prefix: "spiffe://cluster.local/" }}"#,
        files.server_cert.display(),
        files.server_key.display(),
        files.ca.display()
    );
    let listener = Listener {
        upgrade: "",
        route: r#"
              - match: { prefix: "/" }
                route: { cluster: upstream }"#,
        filters: "",
        clusters: "",
        transport: &transport,
    };
    launch(bin, &listener, upstream, cpu)
}

/// Envoy with `--concurrency 1` terminating HTTP/1.1 `CONNECT` and
/// tunnelling every one to `target`: the peer of tollgate's blind tunnel.
pub fn start_connect(
    bin: &Path,
    target: SocketAddr,
    cpu: Option<&str>,
) -> anyhow::Result<Participant> {
    let listener = Listener {
        upgrade: "\n          upgrade_configs: [{ upgrade_type: CONNECT }]",
        route: r#"
              - match: { connect_matcher: {} }
                route:
                  cluster: upstream
                  upgrade_configs: [{ upgrade_type: CONNECT, connect_config: {} }]"#,
        filters: "",
        clusters: "",
        transport: "",
    };
    launch(bin, &listener, target, cpu)
}

/// What differs between the participants: YAML spliced into one listener
/// with one route to the `upstream` cluster.
struct Listener<'a> {
    upgrade: &'a str,
    route: &'a str,
    /// HTTP filters before the router.
    filters: &'a str,
    /// Clusters besides `upstream`.
    clusters: &'a str,
    /// The filter chain's `transport_socket`, if not plain TCP.
    transport: &'a str,
}

fn launch(
    bin: &Path,
    listener: &Listener,
    upstream: SocketAddr,
    cpu: Option<&str>,
) -> anyhow::Result<Participant> {
    let port = free_port()?;
    let Listener {
        upgrade,
        route,
        filters,
        clusters,
        transport,
    } = listener;
    let (ip, upstream_port) = (upstream.ip(), upstream.port());
    let config = format!(
        r#"static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench{upgrade}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:{route}
          http_filters:{filters}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}{transport}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {upstream_port} }} }} }} }}] }}]{clusters}
"#
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config)?;
    let mut cmd = command(bin, cpu);
    cmd.arg("-c")
        .arg(&path)
        .args(["--concurrency", "1", "-l", "error", "--base-id"])
        .arg(port.to_string());
    Participant::at(cmd, format!("127.0.0.1:{port}").parse()?, Some(dir))
}
