//! `tollgate check`: one request through the decision core, offline, the
//! verdict printed as one JSON object: the fields of the audit line the
//! proxy would write, the policy's message, and the credential plan (names,
//! never values). No task is known offline: a task token in a header is
//! decided as the running proxy decides an unknown one.

use std::process::ExitCode;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde_json::{json, Value};

use super::{load, ConfigArg, EXIT_INVALID_CONFIG};
use crate::core::{Caller, Core, Inbound, Mode, Verdict};
use crate::decision::state::TaskStore;
use crate::decision::tasks::TaskLimits;
use crate::decision::EmbeddedDecider;
use crate::error::ProxyError;
use crate::identity::{CallerIdentity, Identity, IdentitySource};
use crate::pipeline::accept;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Workload identity to decide for, e.g. spiffe://cluster.local/ns/agents/sa/coder
    #[arg(long)]
    identity: String,
    /// The pod the identity runs in (`principal.pod`).
    #[arg(long, default_value = "")]
    pod: String,
    /// A selected JWT claim, `name=value` (`principal.claims.<name>`; repeatable).
    #[arg(long = "claim")]
    claims: Vec<String>,
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
    let mut identity = Identity::named(IdentitySource::Static, args.identity.as_str().into());
    let attributes = Arc::make_mut(&mut identity.attributes);
    attributes.pod = args.pod.clone();
    for claim in &args.claims {
        match claim.split_once('=') {
            Some((name, value)) => {
                attributes
                    .claims
                    .insert(name.to_string(), value.to_string());
            }
            None => return usage(format!("`{claim}` is not a `name=value` claim")),
        }
    }
    let caller = Caller {
        listener: "check".into(),
        mode: Mode::Check,
        identity: CallerIdentity::known(Arc::new(identity)),
        connect_task: None,
        original_destination: None,
    };
    let core = Core::new(Arc::new(EmbeddedDecider::new(Arc::new(
        TaskStore::in_memory(TaskLimits::default()),
    ))));
    let inbound = Inbound {
        target: &target,
        method: &method,
        uri: &uri,
        headers: &headers,
        held: None,
        body: None,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tollgate check: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Verdict { record, outcome } = runtime.block_on(core.http(&snapshot, &caller, inbound));
    let (message, credential, plan) = match &outcome {
        Ok(allowed) => (
            allowed.decision.message.clone(),
            allowed.decision.credential.clone(),
            allowed.credentials.describe(),
        ),
        Err(ProxyError::Denied(denied)) => (denied.decision.message.clone(), None, Value::Null),
        Err(err) => (err.to_string(), None, Value::Null),
    };
    let mut out = serde_json::to_value(&record).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut out {
        for key in ["time", "latency_us", "bytes_in", "bytes_out"] {
            fields.remove(key);
        }
        fields.insert("message".into(), json!(message));
        fields.insert("credential".into(), json!(credential));
        fields.insert("credentials".into(), plan);
    }
    println!("{out}");
    ExitCode::SUCCESS
}
