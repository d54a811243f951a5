//! Audit: one JSON line per decision, written by a dedicated thread so a slow
//! disk never stalls the event loop; lines go out in batches at most about a
//! millisecond old. The channel is bounded and `emit` blocks when it is
//! full: lines are delayed under pressure, never dropped.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use serde::Serialize;

use crate::config::AuditOutput;
use crate::decision::Decision;
use crate::error::ProxyError;

use super::classify::Named;

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord {
    pub time: String,
    pub decision_id: String,
    pub listener: Arc<str>,
    /// `http` (absolute-form), `intercept` (inside CONNECT + TLS), `tunnel`.
    pub mode: &'static str,
    pub workload: Option<Arc<str>>,
    pub tool: Option<Arc<str>>,
    pub action: Option<Arc<str>>,
    pub resource: Option<String>,
    pub risk: Option<&'static str>,
    pub sensitivity: Option<Arc<str>>,
    pub method: String,
    pub host: String,
    pub port: u16,
    /// Path with every query value replaced, so tokens in URLs stay out.
    pub path: String,
    pub decision: &'static str,
    pub reason: String,
    /// The task the request ran under, when it carried a known task token.
    pub task: Option<String>,
    pub policy_ids: Vec<String>,
    /// Set when something other than policy ended the request.
    pub error: Option<String>,
    pub status: u16,
    pub decision_us: u64,
    pub latency_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl AuditRecord {
    pub fn new(
        decision_id: &str,
        listener: Arc<str>,
        mode: &'static str,
        method: &str,
        host: &str,
        port: u16,
        path_and_query: &str,
    ) -> AuditRecord {
        AuditRecord {
            time: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            decision_id: decision_id.to_string(),
            listener,
            mode,
            workload: None,
            tool: None,
            action: None,
            resource: None,
            risk: None,
            sensitivity: None,
            method: method.to_string(),
            host: host.to_string(),
            port,
            path: redact_query(path_and_query),
            decision: "deny",
            reason: String::new(),
            task: None,
            policy_ids: Vec::new(),
            error: None,
            status: 0,
            decision_us: 0,
            latency_us: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    pub fn named(&mut self, named: &Named) {
        self.tool = named.tool.clone();
        self.action = Some(named.action.clone());
        self.resource = Some(named.resource.clone());
        self.risk = Some(named.risk);
        self.sensitivity = Some(named.sensitivity.clone());
    }

    pub fn decided(&mut self, decision: &Decision) {
        self.decision = decision.outcome.as_str();
        self.reason = decision.reason.clone();
        self.policy_ids = decision.policy_ids.clone();
        self.task = decision.task.as_ref().map(|t| t.id.clone());
    }

    /// Record an error that ended the request. A refusal before any
    /// decision (no identity, malformed input) is logged as a deny.
    pub fn failed(&mut self, err: &ProxyError) {
        self.status = err.status().as_u16();
        match err {
            ProxyError::Denied(_) => {}
            ProxyError::DestinationBlocked { .. } | ProxyError::CredentialNotBound(_) => {
                self.decision = "deny";
                self.reason = err.reason().to_string();
                self.error = Some(err.to_string());
            }
            _ => {
                if self.reason.is_empty() {
                    self.reason = err.reason().to_string();
                }
                self.error = Some(err.to_string());
            }
        }
    }
}

/// `/p?token=abc&x=1` → `/p?token=[redacted]&x=[redacted]`.
pub fn redact_query(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) => format!("{k}=[redacted]"),
            None => kv.to_string(),
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

const LINE_CAPACITY: usize = 768;

#[derive(Clone)]
pub struct AuditSink {
    lines: SyncSender<Vec<u8>>,
}

impl AuditSink {
    pub fn start(output: &AuditOutput) -> std::io::Result<AuditSink> {
        let writer: Box<dyn Write + Send> = match output {
            AuditOutput::Stdout => Box::new(std::io::stdout()),
            AuditOutput::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (lines, rx) = sync_channel(16 * 1024);
        std::thread::Builder::new()
            .name("tollgate-audit".into())
            .spawn(move || write_lines(rx, writer))?;
        Ok(AuditSink { lines })
    }

    pub fn emit(&self, record: &AuditRecord) {
        // Shared, not copied: label values are the catalog's own strings.
        let label = |v: &Option<Arc<str>>| {
            v.clone().map_or(
                metrics::SharedString::const_str(""),
                metrics::SharedString::from,
            )
        };
        metrics::counter!(
            "tollgate_requests_total",
            "tool" => label(&record.tool),
            "action" => label(&record.action),
            "decision" => record.decision,
        )
        .increment(1);
        // A typical line is about 520 bytes: sized once instead of grown
        // (and copied) from serde_json's 128 three times.
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        if let Err(e) = serde_json::to_writer(&mut line, record) {
            tracing::error!(error = %e, "audit record did not serialize");
            return;
        }
        line.push(b'\n');
        if self.lines.send(line).is_err() {
            tracing::error!("audit writer has stopped; audit line lost");
        }
    }
}

/// How long the writer lets lines gather while lines keep coming. Under
/// load it sleeps and drains instead of waiting on the channel, so senders
/// find nobody parked and wake no one: no context switch per request, one
/// write per batch. Idle, it waits on the channel and the first line wakes
/// it.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

fn write_lines(rx: Receiver<Vec<u8>>, writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    while let Ok(line) = rx.recv() {
        let mut batch = Some(line);
        while let Some(first) = batch.take() {
            let mut ok = out.write_all(&first).is_ok();
            while let Ok(more) = rx.try_recv() {
                ok &= out.write_all(&more).is_ok();
            }
            ok &= out.flush().is_ok();
            if !ok {
                tracing::error!("audit output failed to write");
            }
            std::thread::sleep(BATCH_WINDOW);
            batch = rx.try_recv().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_redacted() {
        assert_eq!(redact_query("/a"), "/a");
        assert_eq!(
            redact_query("/a?token=s3cr3t&flag&x=1"),
            "/a?token=[redacted]&flag&x=[redacted]"
        );
    }
}
