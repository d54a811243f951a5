//! config/catalog/github.yaml

use super::super::RiskClass::*;
use super::{check_table, shipped, Row};

const H: &str = "api.github.com";
const R: &str = "github/repos/acme/api";

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // repositories
    ("GET", H, "/repos/acme/api", &[], "github:repos.get", Read, R, "internal"),
    ("PATCH", H, "/repos/acme/api", &[], "github:repos.update", ProdChange, R, "internal"),
    ("DELETE", H, "/repos/acme/api", &[], "github:repos.delete", ProdChange, R, "internal"),
    // HEAD falls back to the GET route.
    ("HEAD", H, "/repos/acme/api", &[], "github:repos.get", Read, R, "internal"),
    // contents, including the root listing and nested paths
    ("GET", H, "/repos/acme/api/contents", &[], "github:contents.get", Read, R, "internal"),
    ("GET", H, "/repos/acme/api/contents/", &[], "github:contents.get", Read, R, "internal"),
    ("GET", H, "/repos/acme/api/contents/src/main.rs?ref=dev", &[], "github:contents.get", Read, R, "internal"),
    ("PUT", H, "/repos/acme/api/contents/.github/workflows/ci.yml", &[], "github:contents.put", Write, R, "internal"),
    ("DELETE", H, "/repos/acme/api/contents/README.md", &[], "github:contents.delete", Write, R, "internal"),
    // pull requests
    ("GET", H, "/repos/acme/api/pulls?state=open", &[], "github:pulls.list", Read, R, "internal"),
    ("POST", H, "/repos/acme/api/pulls", &[], "github:pulls.create", Write, R, "internal"),
    ("GET", H, "/repos/acme/api/pulls/42", &[], "github:pulls.get", Read, R, "internal"),
    ("PATCH", H, "/repos/acme/api/pulls/42", &[], "github:pulls.update", Write, R, "internal"),
    ("PUT", H, "/repos/acme/api/pulls/42/merge", &[], "github:pulls.merge", Write, R, "internal"),
    ("GET", H, "/repos/acme/api/pulls/42/merge", &[], "github:pulls.check_merged", Read, R, "internal"),
    ("GET", H, "/repos/acme/api/pulls/42/files", &[], "github:pulls.list_files", Read, R, "internal"),
    ("POST", H, "/repos/acme/api/pulls/42/reviews", &[], "github:pulls.reviews.create", Write, R, "internal"),
    // issues and comments: `issues/comments` (static) next to `issues/{n}`
    ("GET", H, "/repos/acme/api/issues", &[], "github:issues.list", Read, R, "internal"),
    ("POST", H, "/repos/acme/api/issues", &[], "github:issues.create", Write, R, "internal"),
    ("GET", H, "/repos/acme/api/issues/7", &[], "github:issues.get", Read, R, "internal"),
    ("PATCH", H, "/repos/acme/api/issues/7", &[], "github:issues.update", Write, R, "internal"),
    ("GET", H, "/repos/acme/api/issues/7/comments", &[], "github:issues.comments.list", Read, R, "internal"),
    ("POST", H, "/repos/acme/api/issues/7/comments", &[], "github:issues.comments.create", Write, R, "internal"),
    ("GET", H, "/repos/acme/api/issues/comments", &[], "github:issues.comments.list", Read, R, "internal"),
    ("GET", H, "/repos/acme/api/issues/comments/99", &[], "github:issues.comments.get", Read, R, "internal"),
    ("PATCH", H, "/repos/acme/api/issues/comments/99", &[], "github:issues.comments.update", Write, R, "internal"),
    ("DELETE", H, "/repos/acme/api/issues/comments/99", &[], "github:issues.comments.delete", Write, R, "internal"),
    // branches and refs
    ("GET", H, "/repos/acme/api/branches", &[], "github:branches.list", Read, R, "internal"),
    ("GET", H, "/repos/acme/api/branches/main", &[], "github:branches.get", Read, R, "internal"),
    ("GET", H, "/repos/acme/api/branches/feature%2Fx", &[], "github:branches.get", Read, R, "internal"),
    ("PUT", H, "/repos/acme/api/branches/main/protection", &[], "github:branches.protection.update", ProdChange, R, "internal"),
    ("DELETE", H, "/repos/acme/api/branches/main/protection", &[], "github:branches.protection.delete", ProdChange, R, "internal"),
    ("POST", H, "/repos/acme/api/merges", &[], "github:branches.merge", Write, R, "internal"),
    ("POST", H, "/repos/acme/api/git/refs", &[], "github:git.refs.create", Write, R, "internal"),
    ("PATCH", H, "/repos/acme/api/git/refs/heads/feature/x", &[], "github:git.refs.update", Write, R, "internal"),
    ("DELETE", H, "/repos/acme/api/git/refs/tags/v1.0", &[], "github:git.refs.delete", Write, R, "internal"),
    ("GET", H, "/repos/acme/api/git/ref/heads/main", &[], "github:git.refs.get", Read, R, "internal"),
    ("GET", H, "/repos/acme/api/git/matching-refs/heads/feat", &[], "github:git.refs.list_matching", Read, R, "internal"),
    // Actions
    ("POST", H, "/repos/acme/api/actions/workflows/deploy.yml/dispatches", &[], "github:actions.workflows.dispatch", CodeExec, R, "internal"),
    ("POST", H, "/repos/acme/api/actions/workflows/1234/dispatches", &[], "github:actions.workflows.dispatch", CodeExec, R, "internal"),
    ("POST", H, "/repos/acme/api/actions/runs/5/rerun", &[], "github:actions.runs.rerun", CodeExec, R, "internal"),
    ("GET", H, "/repos/acme/api/actions/runs/5/logs", &[], "github:actions.runs.logs", Read, R, "confidential"),
    ("GET", H, "/repos/acme/api/actions/secrets", &[], "github:actions.secrets.list", SecretsRead, R, "restricted"),
    ("GET", H, "/repos/acme/api/actions/secrets/public-key", &[], "github:actions.secrets.get_public_key", SecretsRead, R, "restricted"),
    ("GET", H, "/repos/acme/api/actions/secrets/NPM_TOKEN", &[], "github:actions.secrets.get", SecretsRead, R, "restricted"),
    ("PUT", H, "/repos/acme/api/actions/secrets/NPM_TOKEN", &[], "github:actions.secrets.put", ProdChange, R, "restricted"),
    ("DELETE", H, "/repos/acme/api/actions/secrets/NPM_TOKEN", &[], "github:actions.secrets.delete", ProdChange, R, "restricted"),
    // users and search
    ("GET", H, "/user", &[], "github:users.get_authenticated", Read, "github/user", "internal"),
    ("GET", H, "/users/octocat", &[], "github:users.get", Read, "github/users/octocat", "internal"),
    ("GET", H, "/search/code?q=token", &[], "github:search.code", Read, "github", "internal"),
    // host case, trailing slash, trailing dot
    ("GET", "API.GitHub.com", "/repos/acme/api/pulls/", &[], "github:pulls.list", Read, R, "internal"),
    ("GET", "api.github.com.", "/repos/acme/api", &[], "github:repos.get", Read, R, "internal"),
    // unknown: path, method, encoded slash in a segment, dot segments
    ("GET", H, "/orgs/acme/members", &[], "github:unknown", Unknown, "github", "internal"),
    ("POST", H, "/repos/acme/api", &[], "github:unknown", Unknown, "github", "internal"),
    ("GET", H, "/repos/acme/api/branches/feature/x", &[], "github:unknown", Unknown, "github", "internal"),
    ("PUT", H, "/repos/acme/api/contents/../../other/repo/contents/x", &[], "github:unknown", Unknown, "github", "internal"),
    ("DELETE", H, "/repos/acme/%2e%2e", &[], "github:unknown", Unknown, "github", "internal"),
    ("GET", H, "/repos/acme//pulls", &[], "github:unknown", Unknown, "github", "internal"),
    ("OPTIONS", H, "/repos/acme/api", &[], "github:unknown", Unknown, "github", "internal"),
];

#[test]
fn github_table() {
    check_table(shipped(), ROWS);
}
