//! Every example under deploy/ is checked: Kubernetes manifests against the
//! Kubernetes schemas (offline, strict), and the tollgate configuration the
//! manifests mount by `tollgate validate`.

use std::process::Command;

use tollgate_e2e::{repo_root, tollgate_bin};

#[test]
fn kubernetes_manifests_are_valid() {
    let dir = repo_root().join("deploy/kubernetes");
    let manifests: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(!manifests.is_empty());
    let validator = repo_root().join(".venv/bin/kubernetes-validate");
    assert!(validator.exists(), "run scripts/setup-test-env");
    let out = Command::new(validator)
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .args(&manifests)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("deployment/coding-agent"), "{all}");
}

#[test]
fn the_sidecar_configuration_validates() {
    // The config names /etc/tollgate/...: lay out the same tree in a
    // temporary folder, the way the manifests mount it.
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    let config = std::fs::read_to_string(root.join("deploy/kubernetes/config/tollgate.yaml"))
        .unwrap()
        .replace("/etc/tollgate", dir.path().to_str().unwrap());
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/tollgate.yaml"), config).unwrap();
    for sub in ["catalog", "policies"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(root.join("config").join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    let ca = Command::new(tollgate_bin())
        .args(["ca", "init", "--out"])
        .arg(dir.path().join("ca"))
        .output()
        .unwrap();
    assert!(ca.status.success());
    let out = Command::new(tollgate_bin())
        .args(["validate", "--config"])
        .arg(dir.path().join("config/tollgate.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
