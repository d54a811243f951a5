//! config/catalog/demo.yaml (the README quickstart's local file server)

use super::super::RiskClass::*;
use super::{check_table, shipped, Row};

const H: &str = "localhost";

#[rustfmt::skip]
const ROWS: &[Row] = &[
    ("GET", H, "/", &[], "demo:files.list", Read, "demo/files", "internal"),
    ("GET", H, "/README.md", &[], "demo:files.read", Read, "demo/files/README.md", "internal"),
    ("GET", H, "/docs/a.md", &[], "demo:files.read", Read, "demo/files/docs/a.md", "internal"),
    ("DELETE", H, "/README.md", &[], "demo:files.delete", ProdChange, "demo/files/README.md", "internal"),
    ("PUT", H, "/x", &[], "demo:files.write", ProdChange, "demo/files/x", "internal"),
    ("POST", H, "/x", &[], "demo:unknown", Unknown, "demo", "internal"),
];

#[test]
fn demo_table() {
    check_table(shipped(), ROWS);
}
