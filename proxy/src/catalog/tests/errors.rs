//! Every invalid catalog is refused with `file:line:column` (or the file
//! when the parser has no position) and a message saying what is wrong.

use super::super::{Catalog, CatalogError};
use super::one;

/// One tool with `routes` (already indented) on an endpoint for t.example.com;
/// the first route line is line 5, its `{` at column 9.
fn with_routes(routes: &str) -> String {
    format!("tool: t\nendpoints:\n  - hosts: [t.example.com]\n    routes:\n{routes}")
}

fn route(fields: &str) -> String {
    with_routes(&format!("      - {{ {fields} }}\n"))
}

/// Asserts the error is `Invalid` at exactly `location` and mentions `needle`.
fn assert_invalid(result: Result<Catalog, CatalogError>, location: &str, needle: &str) {
    match result {
        Err(CatalogError::Invalid {
            location: got,
            message,
        }) => {
            assert_eq!(got, location, "message: {message}");
            assert!(
                message.contains(needle),
                "`{message}` should mention `{needle}`"
            );
        }
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("expected an error mentioning `{needle}`"),
    }
}

#[test]
fn yaml_syntax_errors_carry_line_and_column() {
    assert_invalid(one("tool: t\nendpoints: [\n"), "test.yaml:2:12", "unclosed");
    assert_invalid(
        one("tool: t\ntool: u\nendpoints: []\n"),
        "test.yaml:2:1",
        "duplicate mapping key",
    );
    assert_invalid(one(""), "test.yaml:1:1", "end of input");
}

#[test]
fn unknown_fields_are_refused_everywhere() {
    assert_invalid(
        one("tool: t\ncolour: red\nendpoints: []\n"),
        "test.yaml:2:1",
        "unknown field `colour`",
    );
    assert_invalid(
        one("tool: t\nendpoints:\n  - hosts: [t.example.com]\n    route: []\n"),
        "test.yaml:4:5",
        "unknown field `route`",
    );
    assert_invalid(
        one(&route(
            "method: GET, path: /, action: a, risk: read, bogus: 1",
        )),
        "test.yaml:5:56",
        "unknown field `bogus`",
    );
    assert_invalid(
        one(&route(
            "method: GET, path: /, action: a, risk: read, when: { querry: [x] }",
        )),
        "test.yaml:5:64",
        "unknown field `querry`",
    );
    assert_invalid(
        one("tool: t\nendpoints:\n  - hosts: [t.example.com]\n    defaults: { sensitive: x }\n    routes: []\n"),
        "test.yaml:4:17",
        "unknown field `sensitive`",
    );
}

#[test]
fn bad_values_point_at_the_value_or_its_key() {
    assert_invalid(
        one(&route("method: GET, path: /, action: a, risk: dangerous")),
        "test.yaml:5:50",
        "unknown variant `dangerous`",
    );
    assert_invalid(
        one(&route("method: 3, path: /, action: a, risk: read")),
        // The parser points at the key for a value of the wrong shape.
        "test.yaml:5:11",
        "HTTP method",
    );
    assert_invalid(
        one("tool: t\n"),
        "test.yaml:1:1",
        "missing field `endpoints`",
    );
}

#[test]
fn bad_routes_point_at_the_route() {
    let cases = [
        (
            "method: GET, path: \"/a/{x\", action: a, risk: read",
            "unclosed `{`",
        ),
        (
            "method: GET, path: \"/a/{x-y}\", action: a, risk: read",
            "bad parameter name",
        ),
        (
            "method: GET, path: a/b, action: a, risk: read",
            "must start with `/`",
        ),
        (
            "method: GET, path: /a?b, action: a, risk: read",
            "queries go in `when`",
        ),
        (
            "method: GET, path: \"/a/{*rest}/b\", action: a, risk: read",
            "Catch-all",
        ),
        (
            "method: GET, path: /a/../b, action: a, risk: read",
            "`..` segment",
        ),
        (
            "method: GET, path: \"/a/{x}\", action: a, risk: read, resource: \"a/{y}\"",
            "unknown parameter `{y}`",
        ),
        (
            "method: GET, path: \"/a/{x}\", action: a, risk: read, resource: \"/a/{x}\"",
            "leading or trailing",
        ),
        (
            "method: GET, path: \"/a/{x}\", action: a, risk: read, resource: \"a/{x\"",
            "unclosed",
        ),
        ("method: get, path: /, action: a, risk: read", "write `GET`"),
        (
            "method: \"G T\", path: /, action: a, risk: read",
            "not a valid token",
        ),
        (
            "method: GET, path: /, action: \"a b\", risk: read",
            "[A-Za-z0-9_.-]+",
        ),
        (
            "method: GET, path: /, action: unknown, risk: read",
            "reserved",
        ),
        (
            "method: GET, path: /, action: a, risk: read, sensitivity: \"top secret\"",
            "sensitivity",
        ),
        (
            "method: GET, path: /, action: a, risk: read, when: { headers: [\"bad header\"] }",
            "header",
        ),
        (
            "method: GET, path: /, action: a, risk: read, when: { query: [\"=x\"] }",
            "`key` or `key=value`",
        ),
    ];
    for (fields, needle) in cases {
        assert_invalid(one(&route(fields)), "test.yaml:5:9", needle);
    }
}

#[test]
fn duplicates_and_conflicts_point_at_the_second_route() {
    let dup = |a: &str, b: &str| with_routes(&format!("      - {{ {a} }}\n      - {{ {b} }}\n"));
    // Same method, path and `when` (conditions compare as sets).
    assert_invalid(
        one(&dup(
            "method: GET, path: /a, action: a, risk: read, when: { query: [x, y] }",
            "method: GET, path: /a, action: b, risk: read, when: { query: [y, x] }",
        )),
        "test.yaml:6:9",
        "already defined with the same `when`",
    );
    // A method list overlapping a single method.
    assert_invalid(
        one(&dup(
            "method: [GET, POST], path: /a, action: a, risk: read",
            "method: POST, path: /a, action: b, risk: read",
        )),
        "test.yaml:6:9",
        "POST /a is already defined",
    );
    // Trailing slash is normalized away, so these are one path.
    assert_invalid(
        one(&dup(
            "method: GET, path: /a/, action: a, risk: read",
            "method: GET, path: /a, action: b, risk: read",
        )),
        "test.yaml:6:9",
        "already defined",
    );
    // matchit cannot hold two parameter names in one position.
    assert_invalid(
        one(&dup(
            "method: GET, path: \"/a/{x}\", action: a, risk: read",
            "method: GET, path: \"/a/{y}\", action: b, risk: read",
        )),
        "test.yaml:6:9",
        "conflict",
    );
    // One action name, two risks.
    assert_invalid(
        one(&dup(
            "method: GET, path: /a, action: same, risk: read",
            "method: GET, path: /b, action: same, risk: write",
        )),
        "test.yaml:6:9",
        "`t:same` is `write` here but `read` at test.yaml:5:9",
    );
}

#[test]
fn bad_tool_names() {
    for (name, needle) in [
        ("GitHub", "[a-z0-9_-]+"),
        ("git hub", "[a-z0-9_-]+"),
        ("\"\"", "[a-z0-9_-]+"),
        ("read", "reserved"),
        ("prod_change", "reserved"),
        ("unknown", "reserved"),
        ("connect", "reserved"),
    ] {
        let yaml =
            format!("tool: {name}\nendpoints:\n  - hosts: [t.example.com]\n    routes: []\n");
        assert_invalid(one(&yaml), "test.yaml:1:7", needle);
    }
    assert_invalid(
        one("tool: t\nendpoints: []\n"),
        "test.yaml:1:7",
        "no endpoints",
    );
    assert_invalid(
        one("tool: t\nendpoints:\n  - hosts: []\n    routes: []\n"),
        "test.yaml:3:5",
        "at least one host",
    );
    assert_invalid(
        one("tool: t\ncredential_headers: [\"x y\"]\nendpoints:\n  - hosts: [t.example.com]\n    routes: []\n"),
        "test.yaml:2:22",
        "not a valid name",
    );
    assert_invalid(
        one("tool: t\ncredential_query: [ok, \"a=b\"]\nendpoints:\n  - hosts: [t.example.com]\n    routes: []\n"),
        "test.yaml:2:24",
        "expected a query parameter name",
    );
    let rule = one("tool: t\nagent_query_credentials: strip\nendpoints: []\n").unwrap_err();
    let rule = rule.to_string();
    assert!(rule.starts_with("test.yaml:2:26: "), "{rule}");
    assert!(rule.contains("expected one of refuse, forward"), "{rule}");
}

#[test]
fn bad_host_patterns_point_at_the_host() {
    for (host, needle) in [
        ("\"*\"", "at least one literal label"),
        ("\"*.{a}\"", "at least one literal label"),
        ("\"api.*foo.com\"", "label `*foo`"),
        ("\"a..com\"", "empty label"),
        ("\"a.{b-c}.com\"", "bad parameter name"),
        ("\"{a}.{a}.com\"", "`{a}` twice"),
        ("\"a.example.com:443\"", "label `com:443`"),
        ("\"\"", "empty host pattern"),
    ] {
        let yaml =
            format!("tool: t\nendpoints:\n  - hosts: [ok.example.com, {host}]\n    routes: []\n");
        assert_invalid(one(&yaml), "test.yaml:3:29", needle);
    }
}

#[test]
fn host_claims_must_be_unique() {
    // Within one tool: `*` and `{name}` are the same pattern.
    let yaml = "tool: t\nendpoints:\n  - hosts: [\"*.example.com\"]\n    routes: []\n  - hosts: [\"{x}.example.com\"]\n    routes: []\n";
    assert_invalid(
        one(yaml),
        "test.yaml:5:13",
        "already claimed by tool `t` at test.yaml:3:13 (as `*.example.com`)",
    );

    // Across files; case does not make a different host.
    let a = (
        "a.yaml".to_owned(),
        "tool: a\nendpoints:\n  - hosts: [api.example.com]\n    routes: []\n".to_owned(),
    );
    let b = (
        "b.yaml".to_owned(),
        "tool: b\nendpoints:\n  - hosts: [API.Example.com]\n    routes: []\n".to_owned(),
    );
    assert_invalid(
        Catalog::from_sources(&[a.clone(), b]),
        "b.yaml:3:13",
        "already claimed by tool `a` at a.yaml:3:13",
    );

    // The same tool name twice.
    let c = (
        "c.yaml".to_owned(),
        "tool: a\nendpoints:\n  - hosts: [other.example.com]\n    routes: []\n".to_owned(),
    );
    assert_invalid(
        Catalog::from_sources(&[a, c]),
        "c.yaml:1:7",
        "already defined in a.yaml",
    );
}

#[test]
fn parameters_from_hosts() {
    let yaml = |hosts: &str, route: &str| {
        format!("tool: t\nendpoints:\n  - hosts: [{hosts}]\n    routes:\n      - {{ {route} }}\n")
    };
    // A name may not be both a host capture and a path parameter.
    assert_invalid(
        one(&yaml(
            "\"{b}.example.com\"",
            "method: GET, path: \"/{b}\", action: a, risk: read",
        )),
        "test.yaml:5:9",
        "both a path parameter and a host capture",
    );
    // A resource may only use captures every host of the endpoint provides.
    assert_invalid(
        one(&yaml(
            "\"{b}.example.com\", example.com",
            "method: GET, path: /, action: a, risk: read, resource: \"b/{b}\"",
        )),
        "test.yaml:5:9",
        "unknown parameter `{b}`",
    );
    assert!(one(&yaml(
        "\"{b}.example.com\", \"{b}.eu.example.com\"",
        "method: GET, path: /, action: a, risk: read, resource: \"b/{b}\"",
    ))
    .is_ok());
}

#[test]
fn errors_display_as_location_colon_message() {
    let err = one(&route("method: GET, path: /, action: a, risk: nope")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("test.yaml:5:50: unknown variant `nope`"),
        "{text}"
    );
    assert!(
        !text.contains("at line"),
        "location is not repeated: {text}"
    );
}
