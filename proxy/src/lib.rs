//! tollgate: an egress proxy that names each outbound API call as a tool
//! action, decides it against policy at request time, and forwards it or
//! refuses it with a reason. See `docs/architecture.md` for the pipeline.
//!
//! Arrows run one way: `cli` → the fronts (`pipeline`, `server`, `admin`)
//! → the core (`core`, `decision`, `error`, `reload`) → the leaves
//! (`catalog`, `tls`, `config`, `authorization`, `body`, `telemetry`).

pub mod admin;
pub mod authorization;
pub mod body;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod core;
pub mod decision;
pub mod error;
/// Fuzz harnesses (`fuzz/`, `docs/fuzzing.md`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod memory;
pub mod pipeline;
pub mod reload;
pub mod server;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod tls;
