//! config/catalog/slack.yaml

use super::super::RiskClass::*;
use super::{check_table, shipped, Row};

const H: &str = "slack.com";

#[rustfmt::skip]
const ROWS: &[Row] = &[
    ("POST", H, "/api/chat.postMessage", &[], "slack:chat.postMessage", Write, "slack", "internal"),
    // Slack dispatches on the method name; GET with query arguments is the same call.
    ("GET", H, "/api/chat.postMessage?channel=C1&text=hi", &[], "slack:chat.postMessage", Write, "slack", "internal"),
    ("POST", H, "/api/chat.update", &[], "slack:chat.update", Write, "slack", "internal"),
    ("POST", H, "/api/chat.delete", &[], "slack:chat.delete", Write, "slack", "internal"),
    ("GET", H, "/api/conversations.history?channel=C1", &[], "slack:conversations.history", Read, "slack", "confidential"),
    ("POST", H, "/api/conversations.history", &[], "slack:conversations.history", Read, "slack", "confidential"),
    ("GET", H, "/api/conversations.replies", &[], "slack:conversations.replies", Read, "slack", "confidential"),
    ("GET", H, "/api/conversations.list", &[], "slack:conversations.list", Read, "slack", "internal"),
    ("POST", H, "/api/conversations.list", &[], "slack:conversations.list", Read, "slack", "internal"),
    ("GET", H, "/api/conversations.info", &[], "slack:conversations.info", Read, "slack", "internal"),
    ("POST", H, "/api/conversations.create", &[], "slack:conversations.create", Write, "slack", "internal"),
    ("POST", H, "/api/conversations.archive", &[], "slack:conversations.archive", Write, "slack", "internal"),
    ("GET", H, "/api/users.list", &[], "slack:users.list", Read, "slack", "internal"),
    ("POST", H, "/api/users.list", &[], "slack:users.list", Read, "slack", "internal"),
    ("GET", H, "/api/users.lookupByEmail?email=a%40b.c", &[], "slack:users.lookupByEmail", Read, "slack", "internal"),
    ("GET", H, "/api/search.messages?query=password", &[], "slack:search.messages", Read, "slack", "confidential"),
    ("POST", H, "/api/files.upload", &[], "slack:files.upload", Write, "slack", "internal"),
    ("POST", H, "/api/files.getUploadURLExternal", &[], "slack:files.getUploadURLExternal", Write, "slack", "internal"),
    ("GET", H, "/api/files.getUploadURLExternal?filename=a.txt&length=3", &[], "slack:files.getUploadURLExternal", Write, "slack", "internal"),
    ("POST", H, "/api/files.completeUploadExternal", &[], "slack:files.completeUploadExternal", Write, "slack", "internal"),
    ("POST", H, "/api/files.sharedPublicURL", &[], "slack:files.sharedPublicURL", DataExport, "slack", "internal"),
    ("GET", H, "/api/files.info", &[], "slack:files.info", Read, "slack", "confidential"),
    ("POST", H, "/api/auth.test", &[], "slack:auth.test", Read, "slack", "internal"),
    // admin: listed methods by name, the rest of admin.* as admin.other
    ("POST", H, "/api/admin.users.remove", &[], "slack:admin.users.remove", ProdChange, "slack", "internal"),
    ("POST", H, "/api/admin.conversations.delete", &[], "slack:admin.conversations.delete", ProdChange, "slack", "internal"),
    ("POST", H, "/api/admin.users.session.reset", &[], "slack:admin.users.session.reset", ProdChange, "slack", "internal"),
    ("POST", H, "/api/admin.teams.settings.setName", &[], "slack:admin.other", ProdChange, "slack", "internal"),
    ("GET", H, "/api/admin.emoji.list", &[], "slack:admin.other", ProdChange, "slack", "internal"),
    // file hosts
    ("POST", "files.slack.com", "/upload/v1/ABC123xyz", &[], "slack:files.uploadContent", Write, "slack", "internal"),
    ("GET", "files.slack.com", "/files-pri/T1-F1/report.pdf", &[], "slack:files.download", Read, "slack", "confidential"),
    ("GET", "files.slack.com", "/upload/v1/ABC", &[], "slack:unknown", Unknown, "slack", "internal"),
    // unknown
    ("POST", H, "/api/apps.uninstall", &[], "slack:unknown", Unknown, "slack", "internal"),
    ("POST", H, "/api/admin.", &[], "slack:unknown", Unknown, "slack", "internal"),
    ("GET", H, "/", &[], "slack:unknown", Unknown, "slack", "internal"),
    ("DELETE", H, "/api/chat.postMessage", &[], "slack:unknown", Unknown, "slack", "internal"),
    ("POST", H, "/api/chat.postMessage/extra", &[], "slack:unknown", Unknown, "slack", "internal"),
];

#[test]
fn slack_table() {
    check_table(shipped(), ROWS);
}
