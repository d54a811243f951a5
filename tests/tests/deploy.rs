//! Everything under deploy/ is checked with the tools a user would run:
//! the Helm chart renders every values example (`helm lint`, `helm
//! template`) into manifests the Kubernetes schemas accept
//! (`kubernetes-validate --strict`, offline) and a security lint (checkov)
//! finds nothing docs/kubernetes.md does not explain; every tollgate
//! configuration the chart renders passes `tollgate validate`; the sidecar
//! runs what the transparent-interception tests run; the plain manifests
//! are what the chart renders today; the Dockerfile passes hadolint and
//! builds what CI builds. Nothing here talks to a network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tollgate_e2e::{repo_root, tollgate_bin, SIDECAR_PORT, SIDECAR_RULES, SIDECAR_UID};

// --- tools and rendering

fn tool(relative: &str) -> PathBuf {
    let path = repo_root().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-test-env",
        path.display()
    );
    path
}

fn helm() -> PathBuf {
    tool("deploy/.tools/helm")
}

fn chart() -> PathBuf {
    repo_root().join("deploy/helm/tollgate")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The documented values examples, by name, in order.
fn examples() -> Vec<(String, PathBuf)> {
    let mut examples: Vec<_> = std::fs::read_dir(chart().join("examples"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    examples.sort();
    let names: Vec<_> = examples.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in ["envoy", "gateway", "sidecar"] {
        assert!(names.contains(&wanted), "examples/{wanted}.yaml: {names:?}");
    }
    examples
}

/// `helm ARGS` on the chart with the example CA, as the README's commands
/// run it (`--set-file ca.certificate=…`).
fn helm_on_chart(verb: &[&str], values: &[&Path], set: &[&str]) -> Output {
    let mut command = Command::new(helm());
    command.args(verb).arg(chart());
    for v in values {
        command.arg("-f").arg(v);
    }
    command
        .arg("--set-file")
        .arg(format!(
            "ca.certificate={}",
            chart().join("examples/example-ca.crt").display()
        ))
        .args(set);
    command.output().unwrap()
}

fn template(values: &[&Path], set: &[&str]) -> Output {
    helm_on_chart(
        &["template", "tollgate", "--namespace", "tollgate"],
        values,
        set,
    )
}

fn render(example: &Path) -> String {
    let out = template(&[example], &[]);
    assert!(
        out.status.success(),
        "{}: {}",
        example.display(),
        text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The Kubernetes objects of a rendered manifest, read by PyYAML.
fn objects(manifest: &str) -> Vec<Value> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifest).unwrap();
    let out = Command::new(tool(".venv/bin/python"))
        .arg(repo_root().join("tests/py/manifests.py"))
        .arg(file.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(objects) => objects,
        other => panic!("{other}"),
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, namespace: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["namespace"] == namespace
                && o["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} rendered"))
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}

fn id(o: &Value) -> String {
    format!(
        "{} {}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

// --- the chart renders, and Kubernetes would take what it renders

#[test]
fn every_values_example_lints_renders_and_validates_against_the_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, example) in examples() {
        let lint = helm_on_chart(&["lint", "--strict"], &[&example], &[]);
        assert!(lint.status.success(), "helm lint {name}: {}", text(&lint));
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, render(&example)).unwrap();
        files.push(path);
    }
    // The chart's defaults alone render too (one decision replica, in memory).
    let defaults = Command::new(helm())
        .args(["template", "tollgate", "--namespace", "tollgate"])
        .arg(chart())
        .output()
        .unwrap();
    assert!(defaults.status.success(), "{}", text(&defaults));
    let path = dir.path().join("defaults.yaml");
    std::fs::write(&path, &defaults.stdout).unwrap();
    files.push(path);

    let out = Command::new(tool(".venv/bin/kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .args(&files)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    // The validator only warns about a kind it has no schema for: allow that
    // for the Prometheus Operator's ServiceMonitor alone.
    for line in all.lines().filter(|l| !l.starts_with("INFO")) {
        assert!(
            line.contains("Couldn't find schema for kind ServiceMonitor"),
            "{line}"
        );
    }
    for resource in [
        "deployment/tollgate-decision",
        "deployment/tollgate-gateway",
        "deployment/coder-agent",
        "deployment/tollgate-redis",
        "poddisruptionbudget/tollgate-decision",
        "networkpolicy/tollgate-egress",
        "service/tollgate-decision-console",
    ] {
        assert!(
            all.contains(&format!("passed for resource {resource}")),
            "{resource}: {all}"
        );
    }
}

#[test]
fn the_chart_refuses_what_cannot_work_and_says_why() {
    let sidecar = chart().join("examples/sidecar.yaml");
    for (set, message) in [
        (
            &["--set", "decision.replicas=2"][..],
            "decision.replicas > 1 needs decision.store=redis",
        ),
        (
            &["--set", "decision.store=redis"],
            "decision.store=redis needs decision.redis.url",
        ),
        (
            &["--set", "agentNamespaces[0].mode=gateway"],
            "agent namespace agents is in gateway mode but gateway.enabled is false",
        ),
        (
            &["--set", "agentNamespaces[0].name=elsewhere"],
            "sidecar workload agents/coder: list agents in agentNamespaces with mode sidecar",
        ),
    ] {
        let out = template(&[&sidecar], set);
        let all = text(&out);
        assert!(!out.status.success(), "{set:?} rendered");
        assert!(all.contains(message), "{set:?}: {all}");
    }
    // Without the CA certificate there is nothing to hand agents.
    let out = Command::new(helm())
        .args(["template", "tollgate"])
        .arg(chart())
        .arg("-f")
        .arg(&sidecar)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("ca.certificate is required"),
        "{}",
        text(&out)
    );
    // Two replicas are fine once they share Redis.
    let out = template(
        &[&sidecar],
        &[
            "--set",
            "decision.replicas=2,decision.store=redis,decision.redis.url=redis://r:6379/0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

// --- the configurations it renders are tollgate's

/// Lays out what a pod mounts under /etc/tollgate in a temporary folder,
/// from the rendered objects, and runs `tollgate validate` on `config`.
/// Returns validate's report.
fn validate_mounted(config: &str, objects: &[Value], namespace: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let config = config.replace("/etc/tollgate", root.to_str().unwrap());
    let write = |relative: &str, content: &str| {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    write("config/tollgate.yaml", &config);
    for (folder, map) in [
        ("catalog", "tollgate-catalog"),
        ("policies", "tollgate-policies"),
    ] {
        // The policies live in the release namespace only.
        let ns = if folder == "policies" {
            "tollgate"
        } else {
            namespace
        };
        let data = find(objects, "ConfigMap", ns, map)["data"]
            .as_object()
            .unwrap();
        for (file, content) in data {
            write(&format!("{folder}/{file}"), content.as_str().unwrap());
        }
    }
    std::fs::create_dir_all(root.join("no-policies")).unwrap();
    let ca = Command::new(tollgate_bin())
        .args(["ca", "init", "--out"])
        .arg(root.join("ca"))
        .output()
        .unwrap();
    assert!(ca.status.success(), "{}", text(&ca));
    let ca_pem = std::fs::read_to_string(root.join("ca/ca.crt")).unwrap();
    write("kube/ca.crt", &ca_pem);
    write("jwks/jwks.json", r#"{"keys":[]}"#);
    // The gateway listener's certificate and key, when it serves TLS
    // (`validate` does not open them today; `run` does).
    write("tls/tls.crt", &ca_pem);
    write(
        "tls/tls.key",
        &std::fs::read_to_string(root.join("ca/ca.key")).unwrap(),
    );
    let out = Command::new(tollgate_bin())
        .args(["validate", "--config"])
        .arg(root.join("config/tollgate.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{config}\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Every ConfigMap holding a tollgate.yaml: (namespace, name, config).
fn configurations(objects: &[Value]) -> Vec<(String, String, String)> {
    of_kind(objects, "ConfigMap")
        .filter_map(|o| {
            let config = o["data"]["tollgate.yaml"].as_str()?;
            Some((
                o["metadata"]["namespace"].as_str().unwrap().to_string(),
                o["metadata"]["name"].as_str().unwrap().to_string(),
                config.to_string(),
            ))
        })
        .collect()
}

#[test]
fn every_rendered_configuration_passes_tollgate_validate() {
    let mut seen = BTreeSet::new();
    for (example, path) in examples() {
        let objects = objects(&render(&path));
        let decision_service = find(&objects, "Service", "tollgate", "tollgate-decision");
        let grpc = decision_service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "grpc")
            .unwrap();
        assert_eq!(grpc["port"], 9191);
        for (namespace, name, config) in configurations(&objects) {
            let report = validate_mounted(&config, &objects, &namespace);
            if name == "tollgate-decision-config" {
                // The decision service holds the whole policy set.
                assert!(!report.contains(" 0 policies"), "{example}: {report}");
            } else {
                // Proxies load no policies and ask the decision Service
                // the chart renders, at its gRPC port.
                assert!(report.contains(" 0 policies"), "{example} {name}: {report}");
                assert!(
                    config.contains("endpoint: http://tollgate-decision.tollgate.svc:9191"),
                    "{example} {name}: {config}"
                );
            }
            seen.insert(name);
        }
    }
    let seen: Vec<_> = seen.into_iter().collect();
    assert_eq!(
        seen,
        [
            "tollgate-decision-config",
            "tollgate-gateway-config",
            "tollgate-sidecar-coder"
        ],
    );
}

#[test]
fn the_rendered_policies_validate_with_the_shipped_catalog() {
    let root = repo_root();
    for (example, path) in examples() {
        let objects = objects(&render(&path));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        let policies = find(&objects, "ConfigMap", "tollgate", "tollgate-policies");
        let data = policies["data"].as_object().unwrap();
        assert!(!data.is_empty(), "{example}: no policies");
        for (file, content) in data {
            std::fs::write(
                dir.path().join("policies").join(file),
                content.as_str().unwrap(),
            )
            .unwrap();
        }
        let config = dir.path().join("tollgate.yaml");
        std::fs::write(
            &config,
            format!(
                "catalog: {}\npolicies: policies\n",
                root.join("config/catalog").display()
            ),
        )
        .unwrap();
        let out = Command::new(tollgate_bin())
            .args(["validate", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{example}: {}", text(&out));
    }
}

#[test]
fn the_chart_carries_the_shipped_catalog_and_policies_unchanged() {
    let root = repo_root();
    for kind in ["catalog", "policies"] {
        let read = |dir: PathBuf| -> BTreeMap<String, Vec<u8>> {
            std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        };
        assert!(
            read(root.join("config").join(kind)) == read(chart().join("files").join(kind)),
            "deploy/helm/tollgate/files/{kind} differs from config/{kind}: run scripts/render-manifests"
        );
    }
}

#[test]
fn the_image_default_configuration_validates() {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    std::fs::copy(
        root.join("deploy/image/tollgate.yaml"),
        dir.path().join("tollgate.yaml"),
    )
    .unwrap();
    for kind in ["catalog", "policies"] {
        std::fs::create_dir(dir.path().join(kind)).unwrap();
        for e in std::fs::read_dir(root.join("config").join(kind)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(kind).join(e.file_name())).unwrap();
        }
    }
    let out = Command::new(tollgate_bin())
        .args(["validate", "--config"])
        .arg(dir.path().join("tollgate.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

// --- the sidecar is the shape the transparent-interception tests prove

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// Init containers, then the others, each as `(which, container)`.
fn containers(spec: &Value) -> Vec<(&'static str, Value)> {
    let list = |key: &str| spec[key].as_array().cloned().unwrap_or_default();
    let init = list("initContainers").into_iter().map(|c| ("init", c));
    init.chain(list("containers").into_iter().map(|c| ("main", c)))
        .collect()
}

#[test]
fn the_sidecar_runs_the_rules_the_transparent_tests_exercise() {
    let path = chart().join("examples/sidecar.yaml");
    let objects = objects(&render(&path));
    let agent = find(&objects, "Deployment", "agents", "coder-agent");
    let spec = pod_spec(agent);
    let init = spec["initContainers"].as_array().unwrap();
    assert_eq!(
        init[0]["name"], "tollgate-iptables",
        "the rules go in first"
    );
    let command = strings(&init[0]["command"]);
    assert_eq!(command.len(), 1);
    assert!(command[0].ends_with("/tollgate"), "{command:?}");
    assert_eq!(strings(&init[0]["args"]), SIDECAR_RULES);

    // tollgate itself: a native sidecar, started (and probed) before the
    // agent, as the uid the rules let out.
    let tollgate = &init[1];
    assert_eq!(tollgate["name"], "tollgate");
    assert_eq!(tollgate["restartPolicy"], "Always");
    assert!(tollgate["startupProbe"].is_object());
    assert_eq!(tollgate["securityContext"]["runAsUser"], SIDECAR_UID);
    for (_, c) in containers(spec)
        .iter()
        .filter(|(_, c)| c["name"] != "tollgate")
    {
        assert_ne!(
            c["securityContext"]["runAsUser"], SIDECAR_UID,
            "{}",
            c["name"]
        );
    }

    // Its configuration listens where the rules send TCP 80/443, on both
    // address families, and its agent listener is the pod's identity.
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tollgate-config")
        .unwrap();
    let config_map = volume["configMap"]["name"].as_str().unwrap();
    let config = find(&objects, "ConfigMap", "agents", config_map)["data"]["tollgate.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    for address in [
        format!("address: 127.0.0.1:{SIDECAR_PORT}"),
        format!("address: \"[::1]:{SIDECAR_PORT}\""),
    ] {
        assert!(config.contains(&address), "{address}: {config}");
    }
    assert_eq!(config.matches("kind: transparent").count(), 2, "{config}");
    assert!(
        config.contains("static: spiffe://cluster.local/ns/agents/sa/coder"),
        "{config}"
    );
    // The agent trusts the CA certificate and never mounts the key.
    let agent_container = &spec["containers"][0];
    let mounts: Vec<_> = agent_container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["tollgate-ca-cert"]);
}

#[test]
fn every_container_runs_unprivileged_and_only_the_rules_get_net_admin() {
    for (example, path) in examples() {
        let objects = objects(&render(&path));
        let mut pods = 0;
        for workload in of_kind(&objects, "Deployment") {
            pods += 1;
            let spec = pod_spec(workload);
            assert_eq!(
                spec["automountServiceAccountToken"],
                false,
                "{}",
                id(workload)
            );
            let pod_seccomp = &spec["securityContext"]["seccompProfile"]["type"];
            for (_, c) in &containers(spec) {
                let at = format!("{example}: {} {}", id(workload), c["name"]);
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
                assert_ne!(sc["privileged"], true, "{at}");
                assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{at}");
                let seccomp = if sc["seccompProfile"].is_null() {
                    pod_seccomp
                } else {
                    &sc["seccompProfile"]["type"]
                };
                assert_eq!(seccomp, "RuntimeDefault", "{at}");
                let added = strings(&sc["capabilities"]["add"]);
                if c["name"] == "tollgate-iptables" {
                    assert_eq!(added, ["NET_ADMIN"], "{at}");
                    assert_eq!(sc["runAsUser"], 0, "{at}: iptables needs root");
                } else {
                    assert!(added.is_empty(), "{at}: {added:?}");
                    let non_root = if sc["runAsNonRoot"].is_null() {
                        &spec["securityContext"]["runAsNonRoot"]
                    } else {
                        &sc["runAsNonRoot"]
                    };
                    assert_eq!(non_root, true, "{at}");
                    assert_ne!(sc["runAsUser"], 0, "{at}");
                }
                assert!(c["resources"]["requests"].is_object(), "{at}: no requests");
                assert!(
                    c["resources"]["limits"]["memory"].is_string(),
                    "{at}: no memory limit"
                );
            }
        }
        assert!(pods >= 1, "{example}");
    }
}

// --- agent namespaces: out through tollgate or not at all

#[test]
fn agent_namespaces_reach_only_tollgate_and_dns() {
    for (example, path) in examples() {
        let objects = objects(&render(&path));
        let values = std::fs::read_to_string(&path).unwrap();
        for policy in of_kind(&objects, "NetworkPolicy")
            .filter(|p| p["metadata"]["name"] == "tollgate-egress")
        {
            let at = format!("{example}: {}", id(policy));
            let spec = &policy["spec"];
            // Every pod of the namespace, egress only.
            assert_eq!(spec["podSelector"], serde_json::json!({}), "{at}");
            assert_eq!(strings(&spec["policyTypes"]), ["Egress"], "{at}");
            let rules = spec["egress"].as_array().unwrap();
            let dns = &rules[0];
            assert_eq!(
                dns["to"][0]["podSelector"]["matchLabels"]["k8s-app"], "kube-dns",
                "{at}"
            );
            let ports: BTreeSet<_> = dns["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_i64().unwrap())
                .collect();
            assert_eq!(ports, BTreeSet::from([53]), "{at}");
            let rest = &rules[1..];
            if example == "gateway" {
                // Nothing but the gateway's proxy port.
                assert_eq!(rest.len(), 1, "{at}");
                assert_eq!(
                    rest[0]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
                    "gateway",
                    "{at}"
                );
                assert_eq!(rest[0]["ports"][0]["port"], 3128, "{at}");
            } else {
                // The decision service, and TCP 80/443 that the rules send
                // to the sidecar; nothing on any other port, no UDP.
                assert_eq!(rest.len(), 2, "{at}");
                assert_eq!(rest[0]["ports"][0]["port"], 9191, "{at}");
                let web: Vec<_> = rest[1]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p["protocol"].as_str().unwrap(), p["port"].as_i64().unwrap()))
                    .collect();
                assert_eq!(web, [("TCP", 80), ("TCP", 443)], "{at}");
                let blocked = strings(&rest[1]["to"][0]["ipBlock"]["except"]);
                assert!(blocked.contains(&"169.254.0.0/16"), "{at}: {blocked:?}");
                assert!(blocked.contains(&"10.0.0.0/8"), "{at}: {blocked:?}");
            }
            // The CA certificate is handed to the same namespace.
            let ns = policy["metadata"]["namespace"].as_str().unwrap();
            let ca = find(&objects, "ConfigMap", ns, "tollgate-ca");
            assert!(
                ca["data"]["ca.crt"]
                    .as_str()
                    .unwrap()
                    .starts_with("-----BEGIN CERTIFICATE-----"),
                "{at}"
            );
            assert!(values.contains(&format!("name: {ns}")), "{at}");
        }
    }
}

// --- the security lint

/// checkov's failed checks as (check id, resource), e.g.
/// ("CKV_K8S_11", "Deployment.tollgate.tollgate-decision").
fn checkov(dir: &Path) -> BTreeSet<(String, String)> {
    let out = Command::new(tool(".venv-checkov/bin/checkov"))
        .args([
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "-o",
            "json",
        ])
        .arg("-d")
        .arg(dir)
        .output()
        .unwrap();
    // 0: nothing failed, 1: something did; anything else is checkov's own trouble.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let reports = match report {
        Value::Array(reports) => reports,
        one => vec![one],
    };
    let mut failed = BTreeSet::new();
    let mut resources = 0;
    for report in reports {
        // A framework with nothing to check reports only its summary.
        let summary = report.get("summary").unwrap_or(&report);
        resources += summary["resource_count"].as_u64().unwrap_or(0);
        assert_eq!(summary["parsing_errors"], 0, "{report}");
        for check in report["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            failed.insert((
                check["check_id"].as_str().unwrap().to_string(),
                check["resource"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(resources > 20, "checkov looked at {resources} resources");
    failed
}

#[test]
fn the_security_lint_finds_nothing_the_docs_do_not_explain() {
    let root = repo_root();
    let skips_file =
        std::fs::read_to_string(root.join("deploy/kubernetes/checkov-skips.txt")).unwrap();
    let skips: Vec<(String, String)> = skips_file
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let check = parts.next().unwrap().to_string();
            let resource = parts
                .next()
                .expect("check id, then a resource or *")
                .to_string();
            (check, resource)
        })
        .collect();
    let docs = std::fs::read_to_string(root.join("docs/kubernetes.md")).unwrap();
    let explained = docs
        .split("## The security lint")
        .nth(1)
        .expect("docs/kubernetes.md has a section \"## The security lint\"");
    let explained = explained.split("\n## ").next().unwrap();
    for (check, _) in &skips {
        assert!(
            explained.contains(check.as_str()),
            "{check} is skipped but docs/kubernetes.md does not explain it"
        );
    }

    // checkov skips folders whose names start with a dot, as tempfile's do.
    let dir = tempfile::Builder::new()
        .prefix("checkov-")
        .tempdir()
        .unwrap();
    for (name, path) in examples() {
        std::fs::write(dir.path().join(format!("{name}.yaml")), render(&path)).unwrap();
    }
    let failed = checkov(dir.path());
    let allowed = |(check, resource): &(String, String)| {
        skips
            .iter()
            .any(|(c, r)| c == check && (r == "*" || r == resource))
    };
    let unexplained: Vec<_> = failed.iter().filter(|f| !allowed(f)).collect();
    assert!(
        unexplained.is_empty(),
        "checkov findings no skip explains: {unexplained:#?}"
    );
    // A skip nothing needs any more is a stale excuse: remove it.
    for (check, resource) in &skips {
        assert!(
            failed
                .iter()
                .any(|(c, r)| c == check && (resource == "*" || r == resource)),
            "{check} {resource} is skipped but checkov no longer reports it"
        );
    }
}

// --- plain manifests for clusters without Helm

#[test]
fn the_plain_manifests_are_what_the_chart_renders() {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(root.join("scripts/render-manifests"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let committed = root.join("deploy/kubernetes/rendered");
    let names = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(dir.path()), names(&committed));
    for name in names(&committed) {
        let fresh = std::fs::read_to_string(dir.path().join(&name)).unwrap();
        let old = std::fs::read_to_string(committed.join(&name)).unwrap();
        assert!(
            fresh == old,
            "deploy/kubernetes/rendered/{name} is out of date: run scripts/render-manifests"
        );
    }
}

// --- the image

#[test]
fn the_dockerfile_passes_hadolint_and_builds_what_ci_builds() {
    let root = repo_root();
    let dockerfile = root.join("deploy/Dockerfile");
    let out = Command::new(tool(".venv/bin/hadolint"))
        .arg("--no-color")
        .arg(&dockerfile)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let build_line = |file: &str, text: &str| -> String {
        let lines: Vec<_> = text
            .lines()
            .map(|l| {
                l.trim()
                    .trim_start_matches("RUN ")
                    .trim_start_matches("&& ")
            })
            .map(|l| l.trim_end_matches('\\').trim())
            .filter(|l| l.starts_with("cargo build"))
            .collect();
        assert_eq!(lines.len(), 1, "{file}: {lines:?}");
        lines[0].to_string()
    };
    let docker = build_line(
        "deploy/Dockerfile",
        &std::fs::read_to_string(&dockerfile).unwrap(),
    );
    let ci = build_line(
        "scripts/test",
        &std::fs::read_to_string(root.join("scripts/test")).unwrap(),
    );
    assert_eq!(docker, ci);
    assert!(ci.contains("--release"), "{ci}");
}
