use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::tls::CertificateAuthority;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the interception CA: DIR/ca.crt (give this to agents) and
    /// DIR/ca.key (mode 0600, stays with tollgate).
    Init {
        /// Folder to write the CA into.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
}

pub fn ca(command: CaCommand) -> ExitCode {
    match command {
        CaCommand::Init { out, force } => match CertificateAuthority::create(&out, force) {
            Ok(cert) => {
                println!("created {}", cert.display());
                println!(
                    "agents trust it with SSL_CERT_FILE / REQUESTS_CA_BUNDLE / NODE_EXTRA_CA_CERTS={}",
                    cert.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tollgate ca init: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
