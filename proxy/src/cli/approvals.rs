//! `tollgate approvals list|show|approve|deny`: a person deciding held
//! requests from a terminal, with an approver token. Prints JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::service::{bearer_token, failed, print_answer, time, ServiceArgs};
use crate::decision::proto::pb;

#[derive(Debug, clap::Args)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    command: ApprovalsCommand,
    #[command(flatten)]
    service: ServiceArgs,
    /// File holding the approver token (default: $TOLLGATE_APPROVER_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum ApprovalsCommand {
    /// List approvals, newest first.
    List {
        /// Only these: pending, approved, denied, expired.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one approval with everything it records.
    Show { approval_id: String },
    /// Approve: the held request (or the agent's next identical one) goes
    /// out, decided again with the approval.
    Approve {
        approval_id: String,
        /// Why; recorded in the audit line.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny: the agent gets 403 `approval_denied` with this reason.
    Deny {
        approval_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub fn approvals(args: ApprovalsArgs) -> ExitCode {
    print_answer("tollgate approvals", call(args))
}

async fn call(args: ApprovalsArgs) -> Result<serde_json::Value, String> {
    let token = bearer_token(
        args.token_file.as_deref(),
        "TOLLGATE_APPROVER_TOKEN",
        "approver token",
        "--token-file",
    )?;
    let mut client = args.service.client(&token).await?;
    Ok(match args.command {
        ApprovalsCommand::List { state } => {
            let approvals = client
                .list_approvals(pb::ListApprovalsRequest {
                    state: state.unwrap_or_default(),
                })
                .await
                .map_err(failed)?
                .into_inner()
                .approvals;
            json!({ "approvals": approvals.iter().map(approval_json).collect::<Vec<_>>() })
        }
        ApprovalsCommand::Show { approval_id } => approval_json(
            &client
                .get_approval(pb::GetApprovalRequest { approval_id })
                .await
                .map_err(failed)?
                .into_inner(),
        ),
        ApprovalsCommand::Approve {
            approval_id,
            reason,
        } => approval_json(
            &client
                .approve(pb::DecideApprovalRequest {
                    approval_id,
                    reason,
                })
                .await
                .map_err(failed)?
                .into_inner(),
        ),
        ApprovalsCommand::Deny {
            approval_id,
            reason,
        } => approval_json(
            &client
                .deny(pb::DecideApprovalRequest {
                    approval_id,
                    reason,
                })
                .await
                .map_err(failed)?
                .into_inner(),
        ),
    })
}

fn approval_json(a: &pb::Approval) -> serde_json::Value {
    json!({
        "id": a.approval_id,
        "state": a.state,
        "workload": a.workload,
        "task_id": a.task_id,
        "task_purpose": a.task_purpose,
        "action": a.action,
        "resource": a.resource,
        "method": a.method,
        "host": a.host,
        "port": a.port,
        "path": a.path,
        "query": a.query,
        "body_sha256": a.body_sha256,
        "policy_ids": a.policy_ids,
        "message": a.message,
        "created": time(a.created_unix_ms),
        "expires": time(a.expires_unix_ms),
        "approver": a.approver,
        "reason": a.reason,
        "decided": time(a.decided_unix_ms),
        "uses": a.uses,
        "reusable": a.reusable,
    })
}
