//! Loading: where errors point, ids, files, the generated schema.

use cedar_policy::Schema;

use super::*;
use crate::decision::cedar::target_ancestors;
use crate::decision::policies::{line_column, statements};

#[test]
fn load_errors_point_at_the_policy() {
    let good = "permit (principal, action in Action::\"read\", resource);\n";
    type Files = Vec<(&'static str, &'static str)>;
    let cases: Vec<(&str, Files, &str, &str)> = vec![
        (
            "parse error",
            vec![("a.cedar", good), ("b.cedar", "// x\npermit (principal, action in Action::\"read\", resource);\n\n  forbid (principal, action resource);\n")],
            "b.cedar:4:3",
            "",
        ),
        (
            "missing semicolon at end",
            vec![("a.cedar", "permit (principal, action, resource);\npermit (principal, action, resource)\n")],
            "a.cedar:2:1",
            "",
        ),
        (
            "template is not a policy",
            vec![("a.cedar", "permit (principal == ?principal, action, resource);")],
            "a.cedar:1:1",
            "",
        ),
        (
            "type error",
            vec![("a.cedar", good), ("b.cedar", "\n\n@id(\"p\")\npermit (principal, action in Action::\"read\", resource)\nwhen { context.port == \"443\" };\n")],
            "b.cedar:3:1",
            "`p`",
        ),
        (
            "unknown context field",
            vec![("a.cedar", "permit (principal, action, resource)\nwhen { context.tenant == \"x\" };")],
            "a.cedar:1:1",
            "tenant",
        ),
        (
            "action the catalog lacks",
            vec![("a.cedar", good), ("b.cedar", "permit (principal, action in Action::\"read\", resource);\npermit (principal, action == Action::\"github:pulls.merge\", resource);")],
            "b.cedar:2:1",
            "github:pulls.merge",
        ),
        (
            "several failing policies",
            vec![("a.cedar", "permit (principal, action, resource) when { context.a };\npermit (principal, action, resource) when { context.b };")],
            "a.cedar:1:1",
            "`a` in context for Action::\"connect\" not found (and errors in 1 more policy)",
        ),
        (
            "unknown entity type",
            vec![("a.cedar", "permit (principal == User::\"alice\", action, resource);")],
            "a.cedar:1:1",
            "User",
        ),
        (
            "duplicate id across files",
            vec![("a.cedar", "@id(\"x\") permit (principal, action, resource);"), ("b.cedar", "\n@id(\"x\") forbid (principal, action, resource);")],
            "b.cedar:2:1",
            "duplicate policy id `x` (first used at a.cedar:1:1)",
        ),
        (
            "empty id",
            vec![("a.cedar", "@id(\"\") permit (principal, action, resource);")],
            "a.cedar:1:1",
            "@id",
        ),
    ];
    for (name, files, location, message) in cases {
        let (got_location, got_message) = load_error(&files);
        assert_eq!(got_location, location, "case `{name}`: {got_message}");
        assert!(
            got_message.contains(message),
            "case `{name}`: {got_message}"
        );
    }
}

#[test]
fn generated_ids_stay_unique_on_one_line() {
    let e = engine(&[(
        "dir/one.cedar",
        "permit (principal, action in Action::\"read\", resource); permit (principal, action in Action::\"read\", resource);",
    )]);
    check(
        &e,
        vec![case(
            "both",
            req(CODER, "github:pulls.list", "github/x", ""),
            "allowed",
        )
        .ids(&["one.cedar:1", "one.cedar:1:57"])],
    );
}

#[test]
fn load_dir_reads_only_cedar_files_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "b.cedar",
        "permit (principal, action in Action::\"read\", resource);",
    );
    write(
        "a.cedar",
        "permit (principal, action in Action::\"read\", resource);",
    );
    write("notes.txt", "not cedar at all");
    let e = PolicyEngine::load_dir(&actions(), &[], dir.path()).unwrap();
    assert_eq!(e.policy_count(), 2);
    let d = e.evaluate(&req(CODER, "github:pulls.list", "github/x", ""));
    assert_eq!(d.policy_ids, ["a.cedar:1", "b.cedar:1"]);

    write(
        "c.cedar",
        "\n\npermit (principal, action == Action::\"nope\", resource);",
    );
    match PolicyEngine::load_dir(&actions(), &[], dir.path()) {
        Err(PolicyError::Invalid { location, .. }) => {
            assert!(location.ends_with("c.cedar:3:1"), "{location}");
            assert!(location.starts_with(&dir.path().display().to_string()));
        }
        other => panic!("expected Invalid, got {:?}", other.err()),
    }

    let missing = PolicyEngine::load_dir(&actions(), &[], &dir.path().join("missing"));
    assert!(matches!(missing, Err(PolicyError::Io { .. })));
}

#[test]
fn no_policies_deny_everything() {
    let e = engine(&[]);
    assert_eq!(e.policy_count(), 0);
    check(
        &e,
        vec![case(
            "empty set",
            req(CODER, "github:pulls.list", "github/x", ""),
            "no_permit",
        )],
    );
}

#[test]
fn schema_text_parses() {
    let text = schema_text(&actions(), &[]);
    let _ = Schema::from_cedarschema_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(text.contains("action \"github:pulls.create\" in [\"write\", \"github\"]"));
    assert!(text.contains("port: Long"));

    // Catalog names are data: quotes and backslashes must not break the text.
    let odd = vec![info("we\"ird:a\\b", RiskClass::Read)];
    let text = schema_text(&odd, &[]);
    let _ = Schema::from_cedarschema_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    PolicyEngine::from_sources(&odd, &[], &[]).unwrap();
}

#[test]
fn reserved_catalog_names_are_refused() {
    for bad in [
        info("read:x", RiskClass::Read),
        info("connect:x", RiskClass::Read),
        info("prod_change", RiskClass::Read),
    ] {
        let result = PolicyEngine::from_sources(std::slice::from_ref(&bad), &[], &[]);
        assert!(
            matches!(&result, Err(PolicyError::Invalid { location, .. }) if location == "catalog"),
            "{bad:?}"
        );
    }
    let mut twice = actions();
    twice.push(info("github:pulls.create", RiskClass::Read));
    assert!(PolicyEngine::from_sources(&twice, &[], &[]).is_err());
}

#[test]
fn splitting_and_positions() {
    let src = "// a; b\n@id(\"x;y\") permit (principal, action, resource) when { context.path == \"//;\" };\n  forbid (principal, action, resource);\n// trailing";
    let got: Vec<(usize, usize)> = statements(src)
        .iter()
        .map(|s| line_column(src, s.offset))
        .collect();
    assert_eq!(got, [(2, 1), (3, 3)]);
    assert!(statements(src)[0].text.ends_with("\"//;\" };"));
    assert_eq!(line_column("é\n  ab", 5), (2, 3));
}

#[test]
fn entity_helpers() {
    let got: Vec<&str> = target_ancestors("github/repos/acme/api").collect();
    assert_eq!(got, ["github", "github/repos", "github/repos/acme"]);
    assert_eq!(target_ancestors("github").count(), 0);
    let got: Vec<&str> = target_ancestors("/a//b/").collect();
    assert_eq!(got, ["/a", "/a//b"]);
}

/// Every complete policy in the user guide (a ```cedar block starting with
/// `@id`) must load against the test catalog.
#[test]
fn guide_examples_validate() {
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policies.md"),
    )
    .unwrap();
    let blocks: Vec<(String, String)> = guide
        .split("```cedar\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| block.starts_with("@id("))
        .enumerate()
        .map(|(i, block)| (format!("example-{i}.cedar"), block.to_string()))
        .collect();
    assert!(blocks.len() >= 6, "found {} examples", blocks.len());
    let e = PolicyEngine::from_sources(&actions(), &[], &blocks).unwrap_or_else(|e| panic!("{e}"));
    assert!(e.policy_count() >= 7);
}
