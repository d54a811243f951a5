//! What the administration commands (`task`, `approvals`) share: reaching
//! the decision plane's gRPC API with a bearer token, and printing one JSON
//! answer or one error line.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::decision::proto::pb::decision_service_client::DecisionServiceClient;
use crate::decision::tasks::from_unix_ms;

#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// The decision plane's gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_DECISION_ENDPOINT",
        default_value = "http://127.0.0.1:9191"
    )]
    endpoint: String,
    /// CA certificate (PEM) for an https:// endpoint.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Client certificate and key (PEM) when the service requires mTLS.
    #[arg(long, global = true, requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, global = true, requires = "cert")]
    key: Option<PathBuf>,
}

type Bearer =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
pub type Client = DecisionServiceClient<InterceptedService<Channel, Bearer>>;

impl ServiceArgs {
    /// A client whose every call carries `Bearer <token>`.
    pub async fn client(&self, token: &str) -> Result<Client, String> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| format!("endpoint `{}`: {e}", self.endpoint))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        let read =
            |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
        if let Some(ca) = &self.ca {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.endpoint))?;
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token is not a valid header value".to_string())?;
        let interceptor: Bearer = Box::new(move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        });
        Ok(DecisionServiceClient::with_interceptor(
            channel,
            interceptor,
        ))
    }
}

/// A token from `file`, or else from the environment variable `var`.
pub fn bearer_token(
    file: Option<&Path>,
    var: &str,
    what: &str,
    flag: &str,
) -> Result<zeroize::Zeroizing<String>, String> {
    let raw = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("{what} file {}: {}", path.display(), e.kind()))?,
        None => std::env::var(var).map_err(|_| format!("no {what}: set {var} or pass {flag}"))?,
    };
    Ok(zeroize::Zeroizing::new(raw.trim().to_string()))
}

/// Run `call` on a one-thread runtime; print its JSON, or its error after
/// `command:`.
pub fn print_answer(
    command: &str,
    call: impl Future<Output = Result<serde_json::Value, String>>,
) -> ExitCode {
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
    match runtime.block_on(call) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{command}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A failed call, as one line.
pub fn failed(status: tonic::Status) -> String {
    let code = match status.code() {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::Unavailable => "unavailable",
        _ => "error",
    };
    format!("{code}: {}", status.message())
}

/// Unix milliseconds as RFC 3339; `null` for 0 (never).
pub fn time(ms: i64) -> serde_json::Value {
    if ms == 0 {
        return serde_json::Value::Null;
    }
    serde_json::json!(humantime::format_rfc3339_millis(from_unix_ms(ms)).to_string())
}
