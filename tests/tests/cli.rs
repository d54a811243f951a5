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
    let (_, _, stderr) = validate(dir.path());
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
    for verb in ["run", "check", "validate", "schema", "ca"] {
        assert!(stdout.contains(verb), "{stdout}");
        let out = tollgate(&[verb, "--help"]);
        assert!(out.status.success(), "{verb} --help");
    }
}

#[test]
fn schema_lists_catalog_actions_in_their_groups() {
    let config = repo_root().join("config/tollgate.yaml");
    let out = tollgate(&["schema", "--config", config.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("entity Workload"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("\"github:repos.delete\""))
        .unwrap_or_else(|| panic!("no github:repos.delete in {stdout}"));
    assert!(
        line.contains("prod_change") || stdout.contains("prod_change"),
        "{line}"
    );
}
