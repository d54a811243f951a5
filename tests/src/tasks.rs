//! Task administration the way an operator does it: the real
//! `tollgate task` command line against a running decision plane.

use std::process::Command;

use serde_json::Value;

use crate::tollgate_bin;

/// The admin token processes started with `Setup { tasks: true, .. }` accept.
pub const ADMIN_TOKEN: &str = "admin-7d1e0c-test-only";

/// What `tollgate task …` printed and how it exited.
pub struct TaskCli {
    pub code: i32,
    pub json: Value,
    pub stderr: String,
}

/// `tollgate task <args> --endpoint <endpoint>`, with `admin_token` in
/// `TOLLGATE_ADMIN_TOKEN` (`None`: unset).
pub fn task_cli(endpoint: &str, admin_token: Option<&str>, args: &[&str]) -> TaskCli {
    admin_cli("task", "TOLLGATE_ADMIN_TOKEN", endpoint, admin_token, args)
}

/// `tollgate <verb> <args> --endpoint <endpoint>`, with `token` in the
/// environment variable `token_var` (`None`: unset).
pub fn admin_cli(
    verb: &str,
    token_var: &str,
    endpoint: &str,
    token: Option<&str>,
    args: &[&str],
) -> TaskCli {
    let mut cmd = Command::new(tollgate_bin());
    cmd.arg(verb)
        .args(args)
        .args(["--endpoint", endpoint])
        .env_remove(token_var);
    if let Some(token) = token {
        cmd.env(token_var, token);
    }
    let out = cmd.output().expect("run tollgate task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    TaskCli {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A started task: its id and the token the agent presents.
pub struct StartedTask {
    pub id: String,
    pub token: String,
}

/// `tollgate task start --workload <workload> <extra…>`; panics on failure.
pub fn start_task(endpoint: &str, workload: &str, extra: &[&str]) -> StartedTask {
    let mut args = vec!["start", "--workload", workload, "--purpose", "e2e test"];
    args.extend_from_slice(extra);
    let out = task_cli(endpoint, Some(ADMIN_TOKEN), &args);
    assert_eq!(out.code, 0, "task start failed: {}", out.stderr);
    StartedTask {
        id: out.json["id"].as_str().expect("task id").to_string(),
        token: out.json["token"].as_str().expect("task token").to_string(),
    }
}

/// `tollgate task end <id>`; panics on failure; returns the task as printed.
pub fn end_task(endpoint: &str, id: &str) -> Value {
    let out = task_cli(endpoint, Some(ADMIN_TOKEN), &["end", id]);
    assert_eq!(out.code, 0, "task end failed: {}", out.stderr);
    out.json
}
