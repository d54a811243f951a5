use std::process::ExitCode;

use super::{load, ConfigArg, EXIT_INVALID_CONFIG};
use crate::identity::Registry;
use crate::tls;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn validate(args: ValidateArgs) -> ExitCode {
    let path = &args.config.config;
    let (config, snapshot) = match load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    if let Err(e) = tls::upstream::client_config(false, &config.tls.upstream_ca_files) {
        eprintln!("{e}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    // Trust bundles read, algorithm names and trust domains checked; keys
    // are not fetched (that needs the network, and is retried at run time).
    if let Err(e) =
        Registry::new(&config.identity).and_then(|r| r.listeners(&config.listeners).map(drop))
    {
        eprintln!("{e}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    if tls::CertificateAuthority::exists(&config.tls.ca_dir) {
        if let Err(e) = tls::CertificateAuthority::load(&config.tls.ca_dir) {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    }
    println!(
        "ok: {}: {} listener(s), {} tool(s), {} route(s), {} polic{}",
        path.display(),
        config.listeners.len(),
        snapshot.catalog.tools().len(),
        snapshot.catalog.route_count(),
        snapshot.engine.policy_count(),
        if snapshot.engine.policy_count() == 1 {
            "y"
        } else {
            "ies"
        },
    );
    ExitCode::SUCCESS
}
