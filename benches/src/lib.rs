//! Shared pieces of tollgate's load benchmarks: a fixed upstream, wrk runs
//! and their parsing. The harness itself is `src/bin/loadbench.rs`.

pub mod upstream;
pub mod wrk;
