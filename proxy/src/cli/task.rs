//! `tollgate task start|end|get|list`: task administration against a
//! decision plane (`tollgate decision`, or `tollgate run` with `tasks`
//! configured). Prints JSON, one object per call, for people and scripts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::decision::proto::pb;
use crate::decision::proto::pb::decision_service_client::DecisionServiceClient;
use crate::decision::tasks::from_unix_ms;

#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    #[command(subcommand)]
    command: TaskCommand,
    /// The decision plane's gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_DECISION_ENDPOINT",
        default_value = "http://127.0.0.1:9191"
    )]
    endpoint: String,
    /// File holding the admin token (default: $TOLLGATE_ADMIN_TOKEN).
    #[arg(long, global = true)]
    admin_token_file: Option<PathBuf>,
    /// CA certificate (PEM) for an https:// endpoint.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Client certificate and key (PEM) when the service requires mTLS.
    #[arg(long, global = true, requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, global = true, requires = "cert")]
    key: Option<PathBuf>,
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(call(args)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("tollgate task: {message}");
            ExitCode::FAILURE
        }
    }
}

fn admin_token(args: &TaskArgs) -> Result<zeroize::Zeroizing<String>, String> {
    let raw = match &args.admin_token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("admin token file {}: {}", path.display(), e.kind()))?,
        None => std::env::var("TOLLGATE_ADMIN_TOKEN").map_err(|_| {
            "no admin token: set TOLLGATE_ADMIN_TOKEN or pass --admin-token-file".to_string()
        })?,
    };
    Ok(zeroize::Zeroizing::new(raw.trim().to_string()))
}

async fn call(args: TaskArgs) -> Result<serde_json::Value, String> {
    let token = admin_token(&args)?;
    let mut endpoint = Endpoint::from_shared(args.endpoint.clone())
        .map_err(|e| format!("endpoint `{}`: {e}", args.endpoint))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    if let Some(ca) = &args.ca {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.endpoint))?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", token.as_str())
        .parse()
        .map_err(|_| "the admin token is not a valid header value".to_string())?;
    let mut client =
        DecisionServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        });
    let failed = |s: tonic::Status| format!("{}: {}", code_name(s.code()), s.message());
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

fn time(ms: i64) -> serde_json::Value {
    if ms == 0 {
        return serde_json::Value::Null;
    }
    json!(humantime::format_rfc3339_millis(from_unix_ms(ms)).to_string())
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

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::Unavailable => "unavailable",
        _ => "error",
    }
}
