//! Approvals the way a person gives them: the real `tollgate approvals`
//! command line with an approver's token, against a running decision plane.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::tasks::{admin_cli, TaskCli};

/// The approver processes started with [`approvals_yaml`] know.
pub const APPROVER: &str = "alice";
/// Her token (the test's; never a real one).
pub const APPROVER_TOKEN: &str = "approver-alice-51c0d2-test-only";

/// An `approvals:` section holding requests for `hold`, with
/// [`APPROVER`] reading her token from `TOLLGATE_TEST_APPROVER`, which
/// [`approver_env`] sets.
pub fn approvals_yaml(hold: &str, extra: &str) -> String {
    format!(
        "approvals:\n  hold: {hold}\n  approvers:\n    - name: {APPROVER}\n      token: {{ env: TOLLGATE_TEST_APPROVER }}\n{extra}"
    )
}

pub fn approver_env() -> (String, String) {
    ("TOLLGATE_TEST_APPROVER".into(), APPROVER_TOKEN.into())
}

/// Everything allowed, and merging a pull request gated: the policies most
/// approval tests run with.
pub fn gated_policies() -> Vec<(String, String)> {
    vec![(
        "gated.cedar".into(),
        "@id(\"allow-all\")\npermit (principal, action, resource);\n\n\
         @id(\"merge-needs-approval\")\n@reason(\"merging needs a person's approval\")\n\
         forbid (principal, action == Action::\"github:pulls.merge\", resource)\n\
         unless { context.approved };\n"
            .into(),
    )]
}

/// `tollgate approvals <args>` as [`APPROVER`].
pub fn approvals_cli(endpoint: &str, args: &[&str]) -> TaskCli {
    admin_cli(
        "approvals",
        "TOLLGATE_APPROVER_TOKEN",
        endpoint,
        Some(APPROVER_TOKEN),
        args,
    )
}

/// Approve or deny `id` with `reason`; panics on failure.
pub fn decide(endpoint: &str, verb: &str, id: &str, reason: &str) -> Value {
    let out = approvals_cli(endpoint, &[verb, id, "--reason", reason]);
    assert_eq!(out.code, 0, "approvals {verb} failed: {}", out.stderr);
    out.json
}

/// The pending approvals now.
pub fn pending(endpoint: &str) -> Vec<Value> {
    let out = approvals_cli(endpoint, &["list", "--state", "pending"]);
    assert_eq!(out.code, 0, "approvals list failed: {}", out.stderr);
    out.json["approvals"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Wait (up to 20 s) until `count` approvals are pending; they, newest
/// first.
pub fn wait_pending(endpoint: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = pending(endpoint);
        if now.len() >= count {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{count} pending approvals expected, saw {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
