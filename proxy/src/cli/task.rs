//! `tollgate task start|end|get|list`: task administration against a
//! decision plane (`tollgate decision`, or `tollgate run` with `tasks`
//! configured). Prints JSON, one object per call, for people and scripts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use super::service::{bearer_token, failed, print_answer, time, ServiceArgs};
use crate::decision::proto::pb;

#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    #[command(subcommand)]
    command: TaskCommand,
    #[command(flatten)]
    service: ServiceArgs,
    /// File holding the admin token (default: $TOLLGATE_ADMIN_TOKEN).
    #[arg(long, global = true)]
    admin_token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum TaskCommand {
    /// Start a task; prints its id and its token (shown only this once).
    Start {
        /// The workload that may use the token, e.g. spiffe://cluster.local/ns/agents/sa/coder
        #[arg(long)]
        workload: String,
        /// What the task is for (policies see it as `context.task.purpose`).
        #[arg(long, default_value = "")]
        purpose: String,
        /// Lifetime, e.g. 15m (default: the service's `tasks.default_ttl`).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        /// Action pattern the task may use (repeatable): github:pulls.create,
        /// github:pulls.*, github:*. None: any action policy allows.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Budget per risk class (repeatable), e.g. write=20.
        #[arg(long = "budget", value_parser = parse_budget)]
        budgets: Vec<(String, u32)>,
    },
    /// End a task now: its token is refused everywhere from now on.
    End { task_id: String },
    /// Show one task.
    Get { task_id: String },
    /// List tasks, newest first.
    List,
}

fn parse_budget(s: &str) -> Result<(String, u32), String> {
    let (class, n) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected CLASS=N, e.g. write=20"))?;
    let n = n
        .parse()
        .map_err(|_| format!("`{s}`: `{n}` is not a number"))?;
    Ok((class.trim().to_string(), n))
}

pub fn task(args: TaskArgs) -> ExitCode {
    print_answer("tollgate task", call(args))
}

async fn call(args: TaskArgs) -> Result<serde_json::Value, String> {
    let token = bearer_token(
        args.admin_token_file.as_deref(),
        "TOLLGATE_ADMIN_TOKEN",
        "admin token",
        "--admin-token-file",
    )?;
    let mut client = args.service.client(&token).await?;
    Ok(match args.command {
        TaskCommand::Start {
            workload,
            purpose,
            ttl,
            scopes,
            budgets,
        } => {
            let started = client
                .start_task(pb::StartTaskRequest {
                    workload,
                    purpose,
                    ttl_seconds: ttl.map_or(0, |t| Duration::from(t).as_secs().max(1)),
                    scopes,
                    budgets: budgets.into_iter().collect::<HashMap<_, _>>(),
                })
                .await
                .map_err(failed)?
                .into_inner();
            let mut out = task_json(&started.task.unwrap_or_default());
            out["token"] = json!(started.token);
            out
        }
        TaskCommand::End { task_id } => task_json(
            &client
                .end_task(pb::EndTaskRequest { task_id })
                .await
                .map_err(failed)?
                .into_inner(),
        ),
        TaskCommand::Get { task_id } => task_json(
            &client
                .get_task(pb::GetTaskRequest { task_id })
                .await
                .map_err(failed)?
                .into_inner(),
        ),
        TaskCommand::List => {
            let tasks = client
                .list_tasks(pb::ListTasksRequest {})
                .await
                .map_err(failed)?
                .into_inner()
                .tasks;
            json!({ "tasks": tasks.iter().map(task_json).collect::<Vec<_>>() })
        }
    })
}

fn task_json(t: &pb::Task) -> serde_json::Value {
    json!({
        "id": t.task_id,
        "workload": t.workload,
        "purpose": t.purpose,
        "scopes": t.scopes,
        "budgets": t.budgets.iter().map(|b| (b.class.clone(), json!({"limit": b.limit, "used": b.used}))).collect::<serde_json::Map<_, _>>(),
        "state": t.state,
        "created": time(t.created_unix_ms),
        "expires": time(t.expires_unix_ms),
        "ended": time(t.ended_unix_ms),
    })
}
