use std::process::ExitCode;

use super::{ConfigArg, EXIT_INVALID_CONFIG};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::decision::schema_text;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    #[command(flatten)]
    config: ConfigArg,
}

/// The schema comes from the catalog and the configuration's selected
/// claims alone, so it prints even while a policy file is broken — which is
/// when an author needs it.
pub fn schema(args: SchemaArgs) -> ExitCode {
    let loaded = Config::load(&args.config.config)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let catalog = Catalog::load_dir(&config.catalog_dir).map_err(|e| e.to_string())?;
            Ok((catalog, config.identity.claims))
        });
    match loaded {
        Ok((catalog, claims)) => {
            print!("{}", schema_text(catalog.actions(), &claims));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}
