//! The offline verbs: `validate`, `check`, `ca init`, and `--help`.

use std::path::Path;
use std::process::{Command, Output};

use tollgate_e2e::{repo_root, tollgate_bin, CODER};

fn tollgate(args: &[&str]) -> Output {
    Command::new(tollgate_bin()).args(args).output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of the example configuration to break in one place.
fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root().join("config");
    for sub in ["catalog", "policies"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    std::fs::copy(root.join("tollgate.yaml"), dir.path().join("tollgate.yaml")).unwrap();
    dir
}

fn validate(dir: &Path) -> (i32, String, String) {
    let out = tollgate(&[
        "validate",
        "--config",
        dir.join("tollgate.yaml").to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap(), stdout, stderr)
}

#[test]
fn the_example_configuration_validates() {
    let (code, stdout, stderr) = validate(&repo_root().join("config"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("route(s)"), "{stdout}");
}

#[test]
fn validate_points_at_the_broken_line() {
    let cases: [(&str, &str, &str); 4] = [
        // (file to write, content, expected location prefix in stderr)
        ("tollgate.yaml", "listeners:\n  - address: 127.0.0.1:0\n    identty: {}\n", "tollgate.yaml:3:5"),
        ("catalog/zz.yaml", "tool: zz\nendpoints:\n  - hosts: [zz.test]\n    routes:\n      - { method: GET, path: /a, action: a, risk: dangerous }\n", "zz.yaml:5:"),
        ("policies/zz.cedar", "\n\npermit(principal, action, resource) when { context.method == };\n", "zz.cedar:3:"),
        ("policies/zz.cedar", "permit(principal,\n  action == Action::\"github:repos.nuke\",\n  resource);\n", "zz.cedar:"),
    ];
    for (file, content, expected) in cases {
        let dir = example_copy();
        std::fs::write(dir.path().join(file), content).unwrap();
        let (code, _, stderr) = validate(dir.path());
        assert_eq!(code, 64, "{file}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{file}: want {expected} in {stderr}"
        );
    }
}

#[test]
fn validate_names_an_unknown_action() {
    let dir = example_copy();
    std::fs::write(
        dir.path().join("policies/zz.cedar"),
        "permit(principal,\n  action == Action::\"github:repos.nuke\",\n  resource);\n",
    )
    .unwrap();
    let (code, stdout, stderr) = validate(dir.path());
    assert_eq!(code, 64, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    // Where, and what: the file and line of the policy, and the action.
    assert!(stderr.contains("zz.cedar:1:"), "{stderr}");
    assert!(stderr.contains("github:repos.nuke"), "{stderr}");
}

/// `tollgate check` on the example configuration: (exit code, JSON).
fn check(identity: &str, method: &str, url: &str) -> (i32, serde_json::Value) {
    let config = repo_root().join("config/tollgate.yaml");
    let out = tollgate(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--identity",
        identity,
        method,
        url,
    ]);
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    let code = out.status.code().unwrap();
    assert!(code != 0 || !json.is_null(), "{stderr}");
    (code, json)
}

#[test]
fn check_prints_one_decision_object() {
    const OTHER: &str = "spiffe://cluster.local/ns/other/sa/bot";
    const PULLS: &str = "https://api.github.com/repos/acme/api/pulls";
    // (identity, method, url, action, resource, risk, decision, reason)
    #[rustfmt::skip]
    let cases = [
        (CODER, "GET", PULLS, "github:pulls.list", "github/repos/acme/api", "read", "allow", "allowed"),
        // A write outside a task: the shipped guardrail refuses it.
        (CODER, "POST", PULLS, "github:pulls.create", "github/repos/acme/api", "write", "deny", "forbidden"),
        (CODER, "DELETE", "https://api.github.com/repos/acme/api", "github:repos.delete", "github/repos/acme/api", "prod_change", "deny", "forbidden"),
        // Another workload is not the coder: default deny.
        (OTHER, "GET", PULLS, "github:pulls.list", "github/repos/acme/api", "read", "deny", "no_permit"),
        // Uncovered host: the built-in connect action on host:port.
        (CODER, "GET", "https://example.org/", "connect", "example.org:443", "unknown", "deny", "no_permit"),
    ];
    for (identity, method, url, action, resource, risk, decision, reason) in cases {
        let (code, v) = check(identity, method, url);
        let case = format!("{method} {url} as {identity}: {v}");
        assert_eq!(code, 0, "{case}");
        assert_eq!(v["action"], action, "{case}");
        assert_eq!(v["resource"], resource, "{case}");
        assert_eq!(v["risk"], risk, "{case}");
        assert_eq!(v["decision"], decision, "{case}");
        assert_eq!(v["reason"], reason, "{case}");
        assert_eq!(v["workload"], identity, "{case}");
        assert_eq!(
            v["status"],
            if decision == "allow" { 200 } else { 403 },
            "{case}"
        );
        if reason == "forbidden" {
            let id = if risk == "write" {
                "writes-need-a-task"
            } else {
                "forbid-prod-change"
            };
            assert_eq!(v["policy_ids"][0], id, "{case}");
        }
    }
    assert_eq!(check(CODER, "GET", "not a url").0, 2);

    // An allowed request prints its credential plan by name; the example's
    // credentials come from variables this process does not set, and
    // naming them reads nothing.
    let (_, v) = check(CODER, "GET", PULLS);
    assert_eq!(v["credential"], "github-readonly", "{v}");
    assert_eq!(
        v["credentials"]["inject"],
        serde_json::json!({"credential": "github-readonly", "header": "authorization"}),
        "{v}"
    );
    let stripped: Vec<&str> = v["credentials"]["strip"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    for header in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
    ] {
        assert!(stripped.contains(&header), "{v}");
    }
    // A path the upstream could read otherwise is refused, as the proxy
    // refuses it.
    let (code, v) = check(
        CODER,
        "GET",
        "https://api.github.com/repos/acme%2Fapi/pulls",
    );
    assert_eq!(code, 0);
    assert_eq!(
        (v["status"].as_u64(), v["reason"].as_str()),
        (Some(400), Some("malformed_request")),
        "{v}"
    );
}

#[test]
fn ca_init_writes_a_private_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("ca");
    let out = tollgate(&["ca", "init", "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    let cert = std::fs::read_to_string(out_dir.join("ca.crt")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(out_dir.join("ca.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let again = tollgate(&["ca", "init", "--out", out_dir.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(text(&again).1.contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(out_dir.join("ca.crt")).unwrap(),
        cert
    );
}

#[test]
fn every_verb_has_help() {
    let out = tollgate(&["--help"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    // The verbs `--help` lists: the first word of each line under
    // `Commands:`, up to the next blank line.
    let listed: Vec<&str> = stdout
        .split_once("Commands:\n")
        .map_or("", |(_, rest)| rest)
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        listed,
        [
            "run",
            "decision",
            "check",
            "validate",
            "schema",
            "ca",
            "task",
            "approvals",
            "mcp",
            "iptables",
            "help"
        ],
        "{stdout}"
    );
    for verb in &listed[..listed.len() - 1] {
        let out = tollgate(&[verb, "--help"]);
        let (help, stderr) = text(&out);
        assert!(out.status.success(), "{verb} --help: {stderr}");
        assert!(
            help.contains(&format!("Usage: tollgate {verb}")),
            "{verb} --help:\n{help}"
        );
    }
}

#[test]
fn schema_lists_catalog_actions_in_their_groups() {
    let config = repo_root().join("config/tollgate.yaml");
    let out = tollgate(&["schema", "--config", config.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("entity Workload"), "{stdout}");
    let declaration = |action: &str| {
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("action \"{action}\"")))
            .collect();
        assert_eq!(lines.len(), 1, "{action} declared {} times", lines.len());
        lines[0].to_string()
    };
    // Each action sits in its risk class and its tool, and only those.
    for (action, risk, tool) in [
        ("github:repos.delete", "prod_change", "github"),
        ("github:pulls.list", "read", "github"),
        ("github:pulls.create", "write", "github"),
        ("github:unknown", "unknown", "github"),
        ("demo:files.read", "read", "demo"),
    ] {
        let line = declaration(action);
        assert!(
            line.contains(&format!(" in [\"{risk}\", \"{tool}\"] appliesTo")),
            "{line}"
        );
    }
    // `connect` is in no group: a rule on a risk class never covers it.
    assert!(!declaration("connect").contains(" in ["), "{stdout}");
}
