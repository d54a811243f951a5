//! Cedar policy evaluation: load and validate policies against the schema
//! generated from the catalog, then decide, treating any evaluation error
//! as a deny.

use std::collections::HashMap;
use std::path::Path;

use cedar_policy::{
    AuthorizationError, Authorizer, Decision as CedarDecision, PolicyId, Schema, Validator,
};

use crate::catalog::ActionInfo;

use super::policies::{self, PolicyMeta};
use super::request::RequestBuilder;
use super::schema::{self, ActionModel};
use super::tasks::Task;
use super::{
    Decider, Decision, DecisionFuture, DecisionRequest, Outcome, TaskRevoked, CONNECT_ACTION,
};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// `location` is `file:line:column` when known.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
}

/// Compiled policies plus the schema generated from the catalog. Immutable;
/// a reload builds a new one.
pub struct PolicyEngine {
    policies: cedar_policy::PolicySet,
    meta: HashMap<PolicyId, PolicyMeta>,
    requests: RequestBuilder,
    authorizer: Authorizer,
}

impl PolicyEngine {
    /// Load every `*.cedar` file in `dir` (sorted), validate against the
    /// schema generated from the catalog's actions (`Catalog::actions()`).
    pub fn load_dir(actions: &[ActionInfo], dir: &Path) -> Result<PolicyEngine, PolicyError> {
        let io = |path: &Path, source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = entry.map_err(|e| io(dir, e))?.path();
            if path.extension().is_some_and(|ext| ext == "cedar") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            sources.push((path.display().to_string(), text));
        }
        PolicyEngine::from_sources(actions, &sources)
    }

    /// From in-memory sources: `(file name for errors, Cedar text)`.
    pub fn from_sources(
        actions: &[ActionInfo],
        sources: &[(String, String)],
    ) -> Result<PolicyEngine, PolicyError> {
        let catalog_error = |message: String| PolicyError::Invalid {
            location: "catalog".into(),
            message,
        };
        let model = ActionModel::new(actions).map_err(catalog_error)?;
        let (schema, _warnings) = Schema::from_cedarschema_str(&schema::render(&model))
            .map_err(|e| catalog_error(format!("generated schema does not parse: {e}")))?;
        let action_entities = schema
            .action_entities()
            .map_err(|e| catalog_error(format!("generated schema actions: {e}")))?
            .into_iter()
            .map(|entity| (entity.uid().id().unescaped().to_string(), entity))
            // Groups are entities too, but a request naming `read` as its
            // action would satisfy `action in Action::"read"`: only real
            // actions may be requested.
            .filter(|(name, _)| name == CONNECT_ACTION || model.actions.contains_key(name));
        let requests = RequestBuilder::new(action_entities).map_err(catalog_error)?;

        let loaded = policies::parse_sources(sources)?;
        policies::validate(&loaded, &Validator::new(schema))?;
        Ok(PolicyEngine {
            policies: loaded.set,
            meta: loaded.meta,
            requests,
            authorizer: Authorizer::new(),
        })
    }

    pub fn policy_count(&self) -> usize {
        self.policies.num_of_policies()
    }

    /// Decide. Never panics; any evaluation error is a deny.
    pub fn evaluate(&self, request: &DecisionRequest) -> Decision {
        self.evaluate_in_task(request, None)
    }

    /// `task`: the task the request's token was admitted to; policies see
    /// it as `context.task`.
    pub fn evaluate_in_task(&self, request: &DecisionRequest, task: Option<&Task>) -> Decision {
        let (cedar_request, entities) = match self.requests.build(request, task) {
            Ok(built) => built,
            Err(message) => return deny("invalid_request", message, Vec::new()),
        };
        let response = self
            .authorizer
            .is_authorized(&cedar_request, &self.policies, &entities);
        let diagnostics = response.diagnostics();

        // Cedar skips a policy whose evaluation fails, which could let a
        // permit through when a forbid meant to stop it errored. Any error
        // denies, and names the policies to fix.
        let errors: Vec<_> = diagnostics
            .errors()
            .map(|e| match e {
                AuthorizationError::PolicyEvaluationError(e) => (e.policy_id(), e),
            })
            .collect();
        if !errors.is_empty() {
            let ids = self.ordered(errors.iter().map(|(id, _)| *id));
            let first = errors.iter().find(|(id, _)| id.to_string() == ids[0]);
            let message = first.map_or_else(String::new, |(_, e)| e.to_string());
            return deny("policy_error", message, ids);
        }

        let determining = self.ordered(diagnostics.reason());
        match response.decision() {
            CedarDecision::Allow => {
                let credential = determining
                    .iter()
                    .find_map(|id| self.meta_of(id)?.credential.clone());
                Decision {
                    outcome: Outcome::Allow,
                    reason: "allowed".into(),
                    message: format!("allowed by {}", quoted_ids(&determining)),
                    policy_ids: determining,
                    credential,
                    task: None,
                }
            }
            CedarDecision::Deny if determining.is_empty() => deny(
                "no_permit",
                format!(
                    "no policy permits `{}` for `{}` on `{}`",
                    request.action, request.principal, request.resource
                ),
                determining,
            ),
            CedarDecision::Deny => {
                let message = self
                    .meta_of(&determining[0])
                    .and_then(|m| m.reason.clone())
                    .unwrap_or_else(|| {
                        format!(
                            "policy `{}` forbids `{}` for `{}` on `{}`",
                            determining[0], request.action, request.principal, request.resource
                        )
                    });
                deny("forbidden", message, determining)
            }
        }
    }

    /// Policy ids in load order (not Cedar's hash order), so equal requests
    /// produce equal decisions and audit lines.
    fn ordered<'a>(&self, ids: impl Iterator<Item = &'a PolicyId>) -> Vec<String> {
        let mut ids: Vec<&PolicyId> = ids.collect();
        ids.sort_by_key(|id| self.meta.get(*id).map_or(usize::MAX, |m| m.order));
        ids.dedup();
        ids.into_iter().map(|id| id.to_string()).collect()
    }

    fn meta_of(&self, id: &str) -> Option<&PolicyMeta> {
        self.meta.get(&PolicyId::new(id))
    }
}

impl Decider for PolicyEngine {
    fn decide<'a>(&'a self, request: &'a DecisionRequest) -> DecisionFuture<'a> {
        Box::pin(std::future::ready(self.evaluate(request)))
    }

    /// A bare engine has no tasks: the stream is closed from the start.
    fn revocations(&self) -> tokio::sync::broadcast::Receiver<TaskRevoked> {
        tokio::sync::broadcast::channel(1).1
    }
}

fn deny(reason: &str, message: String, policy_ids: Vec<String>) -> Decision {
    Decision {
        outcome: Outcome::Deny,
        reason: reason.into(),
        message,
        policy_ids,
        credential: None,
        task: None,
    }
}

fn quoted_ids(ids: &[String]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("`{id}`")).collect();
    quoted.join(", ")
}
