//! tollgate: an egress proxy that names each outbound API call as a tool
//! action, decides it against policy at request time, and forwards it or
//! refuses it with a reason. See `docs/architecture.md` for the pipeline.

pub mod admin;
pub mod body;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod decision;
pub mod error;
pub mod memory;
pub mod pipeline;
pub mod reload;
pub mod server;
pub mod snapshot;
#[cfg(test)]
mod testing;
pub mod tls;
