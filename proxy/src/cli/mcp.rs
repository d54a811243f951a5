//! `tollgate mcp tools list|accept`: the MCP tool pins a decision plane
//! keeps, and accepting a changed definition, with the admin token. Prints
//! JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::service::{bearer_token, failed, print_answer, time, ServiceArgs};
use crate::decision::proto::pb;

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    #[command(subcommand)]
    command: McpCommand,
    #[command(flatten)]
    service: ServiceArgs,
    /// File holding the admin token (default: $TOLLGATE_ADMIN_TOKEN).
    #[arg(long, global = true)]
    admin_token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum McpCommand {
    /// MCP tool pins.
    #[command(subcommand)]
    Tools(ToolsCommand),
}

#[derive(Debug, clap::Subcommand)]
enum ToolsCommand {
    /// Every tool seen, by server: its pinned and latest fingerprints, and
    /// whether they differ.
    List {
        /// Only the tools whose definition differs from their pin.
        #[arg(long)]
        changed: bool,
    },
    /// Pin what SERVER serves as TOOL now: its calls are allowed again
    /// where the catalog enforces pinning.
    Accept {
        /// The MCP server's catalog tool, e.g. github-mcp.
        server: String,
        /// The MCP tool's name.
        tool: String,
        /// The fingerprint looked at (from `list`): refused if the server
        /// serves another by now.
        #[arg(long)]
        fingerprint: Option<String>,
    },
}

pub fn mcp(args: McpArgs) -> ExitCode {
    print_answer("tollgate mcp", call(args))
}

async fn call(args: McpArgs) -> Result<serde_json::Value, String> {
    let token = bearer_token(
        args.admin_token_file.as_deref(),
        "TOLLGATE_ADMIN_TOKEN",
        "admin token",
        "--admin-token-file",
    )?;
    let mut client = args.service.client(&token).await?;
    let McpCommand::Tools(command) = args.command;
    Ok(match command {
        ToolsCommand::List { changed } => {
            let pins = client
                .list_tool_pins(pb::ListToolPinsRequest {})
                .await
                .map_err(failed)?
                .into_inner()
                .pins;
            let shown: Vec<_> = pins
                .iter()
                .filter(|p| !changed || p.changed)
                .map(pin_json)
                .collect();
            json!({ "tools": shown })
        }
        ToolsCommand::Accept {
            server,
            tool,
            fingerprint,
        } => pin_json(
            &client
                .accept_tool_pin(pb::AcceptToolPinRequest {
                    server,
                    name: tool,
                    fingerprint: fingerprint.unwrap_or_default(),
                })
                .await
                .map_err(failed)?
                .into_inner(),
        ),
    })
}

fn pin_json(p: &pb::ToolPin) -> serde_json::Value {
    json!({
        "server": p.server,
        "tool": p.name,
        "changed": p.changed,
        "pinned": p.pinned,
        "seen": p.seen,
        "pinned_at": time(p.pinned_unix_ms),
        "changed_at": time(p.changed_unix_ms),
    })
}
