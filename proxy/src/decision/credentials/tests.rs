use std::path::Path;

use super::*;
use crate::config::BoundService;

fn credential(source: Source, injection: Injection, services: &[&str]) -> Credential {
    Credential {
        source,
        injection,
        services: services
            .iter()
            .map(|t| BoundService {
                tool: t.to_string(),
                at: "t.yaml:1:1".into(),
            })
            .collect(),
    }
}

fn store(name: &str, c: Credential) -> CredentialStore {
    CredentialStore::new([(name.to_string(), c)])
}

fn header_value(store: &CredentialStore, name: &str, tool: &str) -> (String, String) {
    let bound = store.bound(name, Some(tool)).unwrap();
    let value = bound.value().unwrap();
    match bound.placement() {
        Placement::Header(h) => (h.to_string(), value.expose().to_string()),
        Placement::Query(p) => (format!("?{p}"), value.expose().to_string()),
    }
}

/// Make `path` look untouched for longer than the racy window, the way a
/// Secret mounted long ago looks, so the cache is trusted.
fn age(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

#[test]
fn secrets_never_print() {
    let s = Secret::new("hunter2".into());
    assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
    assert_eq!(s.expose(), "hunter2");
}

#[test]
fn each_injection_style_renders_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cr3t\n").unwrap();
    std::fs::write(dir.path().join("username"), "robot").unwrap();
    std::fs::write(dir.path().join("password"), "pa:ss\n").unwrap();
    let src = || Source::File(file.clone());
    let cases = [
        (
            credential(src(), Injection::Bearer, &["github"]),
            ("authorization", "Bearer s3cr3t"),
        ),
        (
            credential(
                Source::Dir {
                    path: dir.path().into(),
                    key: "unused".into(),
                },
                Injection::Basic,
                &["github"],
            ),
            // base64("robot:pa:ss")
            ("authorization", "Basic cm9ib3Q6cGE6c3M="),
        ),
        (
            credential(
                src(),
                Injection::Header {
                    name: "x-api-key".into(),
                    template: "token {value}".into(),
                },
                &["github"],
            ),
            ("x-api-key", "token s3cr3t"),
        ),
        (
            credential(
                src(),
                Injection::Query {
                    param: "api_key".into(),
                },
                &["github"],
            ),
            ("?api_key", "s3cr3t"),
        ),
        (
            credential(
                Source::Dir {
                    path: dir.path().into(),
                    key: "token".into(),
                },
                Injection::Bearer,
                &["github"],
            ),
            ("authorization", "Bearer s3cr3t"),
        ),
    ];
    for (c, (want_place, want_value)) in cases {
        let debug = format!("{c:?}");
        let got = header_value(&store("c", c), "c", "github");
        assert_eq!(got, (want_place.into(), want_value.into()), "{debug}");
    }
}

#[test]
fn basic_from_env_or_file_takes_user_colon_password() {
    std::env::set_var("TOLLGATE_TEST_BASIC_PAIR", "u:p");
    let s = store(
        "b",
        credential(
            Source::Env("TOLLGATE_TEST_BASIC_PAIR".into()),
            Injection::Basic,
            &["github"],
        ),
    );
    assert_eq!(header_value(&s, "b", "github").1, "Basic dTpw");
}

#[test]
fn a_credential_goes_only_to_the_tools_it_is_bound_to() {
    std::env::set_var("TOLLGATE_TEST_BOUND", "v");
    let s = store(
        "gh",
        credential(
            Source::Env("TOLLGATE_TEST_BOUND".into()),
            Injection::Bearer,
            &["github", "demo"],
        ),
    );
    assert!(s.bound("gh", Some("github")).is_ok());
    assert!(s.bound("gh", Some("demo")).is_ok());
    let err = s.bound("gh", Some("slack")).unwrap_err();
    assert_eq!(
        err,
        CredentialError::NotBound {
            name: "gh".into(),
            tool: Some("slack".into())
        }
    );
    assert_eq!(
        err.to_string(),
        "credential `gh` is not bound to tool `slack`"
    );
    // Traffic outside the catalog has no tool: never bound.
    assert!(matches!(
        s.bound("gh", None),
        Err(CredentialError::NotBound { tool: None, .. })
    ));
    assert_eq!(
        s.bound("nope", Some("github")).unwrap_err(),
        CredentialError::Unknown("nope".into())
    );
}

#[test]
fn the_binding_is_checked_before_the_secret_is_read() {
    let s = store(
        "gh",
        credential(
            Source::File("/nonexistent/token".into()),
            Injection::Bearer,
            &["github"],
        ),
    );
    assert!(matches!(
        s.bound("gh", Some("slack")),
        Err(CredentialError::NotBound { .. })
    ));
    // Bound, but only reading it says the file is not there.
    let bound = s.bound("gh", Some("github")).unwrap();
    assert!(matches!(
        bound.value(),
        Err(CredentialError::Unreadable { .. })
    ));
}

#[test]
fn a_rewritten_file_is_seen_by_the_next_use_even_within_one_tick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "first\n").unwrap();
    let s = store(
        "gh",
        credential(Source::File(path.clone()), Injection::Bearer, &["github"]),
    );
    assert_eq!(header_value(&s, "gh", "github").1, "Bearer first");
    // Same length, same inode, written right away: only the racy-window
    // rule can tell.
    std::fs::write(&path, "fresh\n").unwrap();
    assert_eq!(header_value(&s, "gh", "github").1, "Bearer fresh");
    std::fs::remove_file(&path).unwrap();
    let err = s
        .bound("gh", Some("github"))
        .unwrap()
        .value()
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be read from file"), "{err}");
}

#[test]
fn an_unchanged_old_file_is_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "cached").unwrap();
    age(&path);
    let s = store(
        "gh",
        credential(Source::File(path.clone()), Injection::Bearer, &["github"]),
    );
    let first = s.bound("gh", Some("github")).unwrap().value().unwrap();
    let second = s.bound("gh", Some("github")).unwrap().value().unwrap();
    assert!(Arc::ptr_eq(&first, &second), "read twice");
    // A change of size or mtime is seen.
    std::fs::write(&path, "changed!").unwrap();
    age(&path);
    assert_eq!(header_value(&s, "gh", "github").1, "Bearer changed!");
}

#[test]
fn a_kubernetes_style_symlink_swap_is_seen() {
    // dir/token -> ..data/token, ..data -> ..v1; rotation points ..data at ..v2.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (version, value) in [("..v1", "one"), ("..v2", "two")] {
        std::fs::create_dir(root.join(version)).unwrap();
        std::fs::write(root.join(version).join("token"), value).unwrap();
        age(&root.join(version).join("token"));
    }
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/token", root.join("token")).unwrap();
    let s = store(
        "gh",
        credential(
            Source::Dir {
                path: root.into(),
                key: "token".into(),
            },
            Injection::Bearer,
            &["github"],
        ),
    );
    assert_eq!(header_value(&s, "gh", "github").1, "Bearer one");
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    assert_eq!(header_value(&s, "gh", "github").1, "Bearer two");
}

#[test]
fn bad_values_are_refused_without_showing_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "line1\nline2-secret").unwrap();
    let s = store(
        "gh",
        credential(Source::File(path.clone()), Injection::Bearer, &["github"]),
    );
    let err = s
        .bound("gh", Some("github"))
        .unwrap()
        .value()
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid in an HTTP header"), "{err}");
    assert!(!err.contains("secret"), "{err}");
    std::fs::write(&path, "  \n").unwrap();
    let err = s
        .bound("gh", Some("github"))
        .unwrap()
        .value()
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("is empty"), "{err}");
    let unset = store(
        "e",
        credential(
            Source::Env("TOLLGATE_TEST_UNSET_VARIABLE".into()),
            Injection::Bearer,
            &["github"],
        ),
    );
    let err = unset
        .bound("e", Some("github"))
        .unwrap()
        .value()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("environment variable TOLLGATE_TEST_UNSET_VARIABLE"),
        "{err}"
    );
}

#[test]
fn the_store_debug_lists_names_only() {
    std::env::set_var("TOLLGATE_TEST_DEBUG", "dbg-secret");
    let s = store(
        "gh",
        credential(
            Source::Env("TOLLGATE_TEST_DEBUG".into()),
            Injection::Bearer,
            &["github"],
        ),
    );
    let bound = s.bound("gh", Some("github")).unwrap();
    let shown = format!("{s:?} {bound:?} {:?}", bound.value().unwrap());
    assert!(!shown.contains("dbg-secret"), "{shown}");
    assert!(shown.contains("gh"), "{shown}");
}
