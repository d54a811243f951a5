//! Command line: one file per verb. `main.rs` only calls [`main`].

mod approvals;
mod ca;
mod check;
mod decision;
mod iptables;
mod mcp;
mod run;
mod schema;
mod serve;
mod service;
mod task;
mod tls_files;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::decision::snapshot::Snapshot;

/// Exit code for a configuration, catalog or policy that does not validate.
pub const EXIT_INVALID_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Egress proxy with runtime authorization for AI agent workloads"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the data plane: the explicit proxy and the admin listener.
    Run(run::RunArgs),
    /// Run the decision plane: tollgate's gRPC API and Envoy ext_authz.
    Decision(decision::DecisionArgs),
    /// Classify and decide one request offline; print the decision as JSON.
    Check(check::CheckArgs),
    /// Validate the configuration, catalog and policies; exit non-zero with
    /// file:line:column on the first error.
    Validate(validate::ValidateArgs),
    /// Print the Cedar schema generated from the catalog (for policy authors
    /// and Cedar tooling).
    Schema(schema::SchemaArgs),
    /// Manage the interception CA.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Start, end and list tasks (needs the admin token).
    Task(task::TaskArgs),
    /// Decide requests held for approval: list, show, approve, deny.
    Approvals(approvals::ApprovalsArgs),
    /// MCP tool pins: list them, accept a changed definition (needs the
    /// admin token).
    Mcp(mcp::McpArgs),
    /// Print, install or remove the iptables rules that send a pod's
    /// outbound TCP to the transparent listener (for an init container).
    Iptables(iptables::IptablesArgs),
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(
        long,
        short,
        env = "TOLLGATE_CONFIG",
        default_value = "config/tollgate.yaml"
    )]
    config: PathBuf,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Decision(args) => decision::decision(args),
        Command::Check(args) => check::check(args),
        Command::Validate(args) => validate::validate(args),
        Command::Schema(args) => schema::schema(args),
        Command::Ca(command) => ca::ca(command),
        Command::Task(args) => task::task(args),
        Command::Approvals(args) => approvals::approvals(args),
        Command::Mcp(args) => mcp::mcp(args),
        Command::Iptables(args) => iptables::iptables(args),
    }
}

/// Load the configuration and the snapshot it names, or say why not.
fn load(path: &Path) -> Result<(Config, Snapshot), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let snapshot = Snapshot::load(&config, 1, 0).map_err(|e| e.to_string())?;
    Ok((config, snapshot))
}
