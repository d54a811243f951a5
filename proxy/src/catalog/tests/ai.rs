//! config/catalog/openai.yaml, config/catalog/anthropic.yaml and
//! config/catalog/gemini.yaml

use super::super::RiskClass::*;
use super::{check_table, shipped, Row};

const O: &str = "api.openai.com";
const A: &str = "api.anthropic.com";
const G: &str = "generativelanguage.googleapis.com";

#[rustfmt::skip]
const OPENAI: &[Row] = &[
    ("POST", O, "/v1/chat/completions", &[], "openai:chat.completions.create", DataExport, "openai", "internal"),
    ("GET", O, "/v1/chat/completions", &[], "openai:chat.completions.list", Read, "openai", "confidential"),
    ("GET", O, "/v1/chat/completions/chatcmpl-1", &[], "openai:chat.completions.get", Read, "openai/chat/completions/chatcmpl-1", "confidential"),
    ("POST", O, "/v1/responses", &[], "openai:responses.create", DataExport, "openai", "internal"),
    ("GET", O, "/v1/responses/resp_1", &[], "openai:responses.get", Read, "openai/responses/resp_1", "confidential"),
    ("POST", O, "/v1/responses/resp_1/cancel", &[], "openai:responses.cancel", Write, "openai/responses/resp_1", "internal"),
    ("POST", O, "/v1/embeddings", &[], "openai:embeddings.create", DataExport, "openai", "internal"),
    ("GET", O, "/v1/models", &[], "openai:models.list", Read, "openai", "internal"),
    ("GET", O, "/v1/models/gpt-4o", &[], "openai:models.get", Read, "openai/models/gpt-4o", "internal"),
    // Fine-tuned model ids contain `:`; still one segment.
    ("DELETE", O, "/v1/models/ft:gpt-4o:acme::abc", &[], "openai:models.delete", Write, "openai/models/ft:gpt-4o:acme::abc", "internal"),
    ("POST", O, "/v1/files", &[], "openai:files.create", DataExport, "openai", "internal"),
    ("GET", O, "/v1/files", &[], "openai:files.list", Read, "openai", "internal"),
    ("GET", O, "/v1/files/file-1/content", &[], "openai:files.content", Read, "openai/files/file-1", "confidential"),
    ("DELETE", O, "/v1/files/file-1", &[], "openai:files.delete", Write, "openai/files/file-1", "internal"),
    ("POST", O, "/v1/uploads/upload_1/parts", &[], "openai:uploads.parts.create", DataExport, "openai/uploads/upload_1", "internal"),
    ("POST", O, "/v1/batches", &[], "openai:batches.create", Write, "openai", "internal"),
    ("GET", O, "/v1/batches/batch_1", &[], "openai:batches.get", Read, "openai/batches/batch_1", "internal"),
    ("POST", O, "/v1/batches/batch_1/cancel", &[], "openai:batches.cancel", Write, "openai/batches/batch_1", "internal"),
    ("POST", O, "/v1/fine_tuning/jobs", &[], "openai:fine_tuning.jobs.create", Write, "openai", "internal"),
    ("GET", O, "/v1/fine_tuning/jobs/ftjob-1/events", &[], "openai:fine_tuning.jobs.events", Read, "openai/fine_tuning/jobs/ftjob-1", "internal"),
    ("POST", O, "/v1/moderations", &[], "openai:moderations.create", DataExport, "openai", "internal"),
    ("POST", O, "/v1/assistants", &[], "openai:unknown", Unknown, "openai", "internal"),
    ("GET", O, "/v1/chat/completions/chatcmpl-1/messages", &[], "openai:unknown", Unknown, "openai", "internal"),
];

#[rustfmt::skip]
const ANTHROPIC: &[Row] = &[
    ("POST", A, "/v1/messages", &[], "anthropic:messages.create", DataExport, "anthropic", "internal"),
    ("POST", A, "/v1/messages?beta=true", &[], "anthropic:messages.create", DataExport, "anthropic", "internal"),
    ("POST", A, "/v1/messages/count_tokens", &[], "anthropic:messages.count_tokens", DataExport, "anthropic", "internal"),
    ("GET", A, "/v1/models", &[], "anthropic:models.list", Read, "anthropic", "internal"),
    ("GET", A, "/v1/models/claude-sonnet-4-5", &[], "anthropic:models.get", Read, "anthropic/models/claude-sonnet-4-5", "internal"),
    ("POST", A, "/v1/messages/batches", &[], "anthropic:messages.batches.create", DataExport, "anthropic", "internal"),
    ("GET", A, "/v1/messages/batches", &[], "anthropic:messages.batches.list", Read, "anthropic", "internal"),
    ("GET", A, "/v1/messages/batches/msgbatch_1", &[], "anthropic:messages.batches.get", Read, "anthropic/messages/batches/msgbatch_1", "internal"),
    ("GET", A, "/v1/messages/batches/msgbatch_1/results", &[], "anthropic:messages.batches.results", Read, "anthropic/messages/batches/msgbatch_1", "confidential"),
    ("POST", A, "/v1/messages/batches/msgbatch_1/cancel", &[], "anthropic:messages.batches.cancel", Write, "anthropic/messages/batches/msgbatch_1", "internal"),
    ("DELETE", A, "/v1/messages/batches/msgbatch_1", &[], "anthropic:messages.batches.delete", Write, "anthropic/messages/batches/msgbatch_1", "internal"),
    ("POST", A, "/v1/files", &[], "anthropic:files.create", DataExport, "anthropic", "internal"),
    ("GET", A, "/v1/files/file_1/content", &[], "anthropic:files.content", Read, "anthropic/files/file_1", "confidential"),
    ("POST", A, "/v1/complete", &[], "anthropic:unknown", Unknown, "anthropic", "internal"),
    ("GET", A, "/v1/messages", &[], "anthropic:unknown", Unknown, "anthropic", "internal"),
];

#[rustfmt::skip]
const GEMINI: &[Row] = &[
    ("GET", G, "/v1beta/models", &[], "gemini:models.list", Read, "gemini", "internal"),
    ("GET", G, "/v1beta/models/gemini-2.5-flash", &[], "gemini:models.get", Read, "gemini/models/gemini-2.5-flash", "internal"),
    ("POST", G, "/v1beta/models/gemini-2.5-flash:generateContent", &[], "gemini:models.generateContent", DataExport, "gemini/models/gemini-2.5-flash", "internal"),
    ("POST", G, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", &[], "gemini:models.streamGenerateContent", DataExport, "gemini/models/gemini-2.5-flash", "internal"),
    ("POST", G, "/v1/models/gemini-2.5-pro:countTokens", &[], "gemini:models.countTokens", DataExport, "gemini/models/gemini-2.5-pro", "internal"),
    ("POST", G, "/v1/models/text-embedding-004:embedContent", &[], "gemini:models.embedContent", DataExport, "gemini/models/text-embedding-004", "internal"),
    ("POST", G, "/v1beta/models/text-embedding-004:batchEmbedContents", &[], "gemini:models.batchEmbedContents", DataExport, "gemini/models/text-embedding-004", "internal"),
    ("POST", G, "/upload/v1beta/files", &[], "gemini:files.create", DataExport, "gemini", "internal"),
    ("GET", G, "/v1beta/files/abc-123", &[], "gemini:files.get", Read, "gemini/files/abc-123", "internal"),
    ("DELETE", G, "/v1beta/files/abc-123", &[], "gemini:files.delete", Write, "gemini/files/abc-123", "internal"),
    // A method the catalog does not list, and one on a version it does not.
    ("POST", G, "/v1beta/models/gemini-2.5-flash:predict", &[], "gemini:unknown", Unknown, "gemini", "internal"),
    ("POST", G, "/v2/models/gemini-2.5-flash:generateContent", &[], "gemini:unknown", Unknown, "gemini", "internal"),
];

#[test]
fn gemini_table() {
    check_table(shipped(), GEMINI);
}

#[test]
fn openai_table() {
    check_table(shipped(), OPENAI);
}

#[test]
fn anthropic_table() {
    check_table(shipped(), ANTHROPIC);
}
