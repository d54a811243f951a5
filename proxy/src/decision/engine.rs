//! Cedar policy evaluation.
//!
//! INTERFACE (owned by the decision helper).

use std::path::Path;

use crate::catalog::ActionInfo;

use super::{Decision, DecisionRequest};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// `location` is `file:line:column` when known.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
}

/// Compiled policies plus the schema generated from the catalog. Immutable;
/// a reload builds a new one.
pub struct PolicyEngine {}

impl PolicyEngine {
    /// Load every `*.cedar` file in `dir` (sorted), validate against the
    /// schema generated from the catalog's actions (`Catalog::actions()`).
    pub fn load_dir(actions: &[ActionInfo], dir: &Path) -> Result<PolicyEngine, PolicyError> {
        let _ = (actions, dir);
        todo!()
    }

    /// From in-memory sources: `(file name for errors, Cedar text)`.
    pub fn from_sources(
        actions: &[ActionInfo],
        sources: &[(String, String)],
    ) -> Result<PolicyEngine, PolicyError> {
        let _ = (actions, sources);
        todo!()
    }

    pub fn policy_count(&self) -> usize {
        todo!()
    }

    /// Decide. Never panics; any evaluation error is a deny.
    pub fn evaluate(&self, request: &DecisionRequest) -> Decision {
        let _ = request;
        todo!()
    }
}
