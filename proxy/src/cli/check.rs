use std::process::ExitCode;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde_json::json;

use super::{load, ConfigArg, EXIT_INVALID_CONFIG};
use crate::pipeline::{accept, authorize, classify};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Workload identity to decide for, e.g. spiffe://cluster.local/ns/agents/sa/coder
    #[arg(long)]
    identity: String,
    /// Request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// HTTP method, e.g. GET.
    method: String,
    /// Absolute URL, e.g. https://api.github.com/repos/acme/api/pulls
    url: String,
}

pub fn check(args: CheckArgs) -> ExitCode {
    let (_, snapshot) = match load(&args.config.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let usage = |message: String| {
        eprintln!("tollgate check: {message}");
        ExitCode::from(2)
    };
    let Ok(method) = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()) else {
        return usage(format!("`{}` is not an HTTP method", args.method));
    };
    let Ok(uri) = args.url.parse::<Uri>() else {
        return usage(format!("`{}` is not a URL", args.url));
    };
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let parsed = h.split_once(':').and_then(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                HeaderValue::from_str(v.trim()).ok()?,
            ))
        });
        match parsed {
            Some((k, v)) => {
                headers.append(k, v);
            }
            None => return usage(format!("`{h}` is not a `Name: value` header")),
        }
    }
    let target = match accept::absolute_target(&uri) {
        Ok(t) => t,
        Err(e) => return usage(e.to_string()),
    };
    let named = match classify::classify(&snapshot.catalog, &target, &method, &uri, &headers) {
        Ok(named) => named,
        Err(e) => return usage(e.to_string()),
    };
    let request =
        authorize::decision_request(&args.identity, &named, &target, &method, uri.path(), None);
    let decision = snapshot.engine.evaluate(&request);
    let out = json!({
        "workload": args.identity,
        "tool": named.tool.as_deref(),
        "action": named.action.as_ref(),
        "resource": named.resource,
        "risk": named.risk,
        "sensitivity": named.sensitivity.as_ref(),
        "decision": decision.outcome.as_str(),
        "reason": decision.reason,
        "message": decision.message,
        "policy_ids": decision.policy_ids,
        "credential": decision.credential,
    });
    println!("{out}");
    ExitCode::SUCCESS
}
