//! Cedar policy evaluation: load and validate policies against the schema
//! generated from the catalog, then decide, treating any evaluation error
//! as a deny.
//!
//! Cedar's authorizer evaluates every policy it is given (about 0.5 µs
//! each), so a request is decided against only the policies whose scope
//! can match its principal and action: [`PolicyIndex`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, AuthorizationError, Authorizer, Decision as CedarDecision, Effect, Entities,
    Policy, PolicyId, PolicySet, PrincipalConstraint, Request, Response, Schema, Validator,
};

use crate::catalog::ActionInfo;

use super::cedar::RequestBuilder;
use super::outcome::{Decision, Outcome, Reason};
use super::policies::{self, PolicyError, PolicyMeta};
use super::request::{DecisionRequest, CONNECT_ACTION};
use super::schema::{self, ActionModel, NAMESPACE, WORKLOAD};
use super::tasks::Task;

/// Compiled policies plus the schema generated from the catalog. Immutable;
/// a reload builds a new one.
pub struct PolicyEngine {
    policies: PolicySet,
    index: PolicyIndex,
    /// The permits and approval gates alone: what report mode decides
    /// with once the plain forbids and default deny are set aside.
    relaxed: PolicyIndex,
    /// What decides whether some call of an action may be allowed: every
    /// permit with its resource scope and conditions dropped, and the
    /// forbids that have neither (approval gates aside). See
    /// [`PolicyEngine::may_permit`].
    visibility: PolicySet,
    meta: HashMap<PolicyId, PolicyMeta>,
    requests: RequestBuilder,
    authorizer: Authorizer,
}

impl PolicyEngine {
    /// Load every `*.cedar` file in `dir` (sorted), validate against the
    /// schema generated from the catalog's actions (`Catalog::actions()`)
    /// and the JWT claims configuration selects (`identity.claims`).
    pub fn load_dir(
        actions: &[ActionInfo],
        claims: &[String],
        dir: &Path,
    ) -> Result<PolicyEngine, PolicyError> {
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
        PolicyEngine::from_sources(actions, claims, &sources)
    }

    /// From in-memory sources: `(file name for errors, Cedar text)`.
    pub fn from_sources(
        actions: &[ActionInfo],
        claims: &[String],
        sources: &[(String, String)],
    ) -> Result<PolicyEngine, PolicyError> {
        let catalog_error = |message: String| PolicyError::Invalid {
            location: "catalog".into(),
            message,
        };
        let model = ActionModel::new(actions, claims).map_err(catalog_error)?;
        let (schema, _warnings) = Schema::from_cedarschema_str(&schema::render(&model))
            .map_err(|e| catalog_error(format!("generated schema does not parse: {e}")))?;
        let action_store = schema
            .action_entities()
            .map_err(|e| catalog_error(format!("generated schema actions: {e}")))?;
        // Each action with the groups it is in (risk class, tool).
        let action_groups: Vec<(String, Vec<String>)> = action_store
            .iter()
            .map(|entity| {
                let uid = entity.uid();
                let groups = action_store
                    .ancestors(&uid)
                    .map(|it| it.map(|g| g.id().unescaped().to_string()).collect())
                    .unwrap_or_default();
                (uid.id().unescaped().to_string(), groups)
            })
            .collect();
        let action_entities = action_store
            .into_iter()
            .map(|entity| (entity.uid().id().unescaped().to_string(), entity))
            // Groups are entities too, but a request naming `read` as its
            // action would satisfy `action in Action::"read"`: only real
            // actions may be requested.
            .filter(|(name, _)| name == CONNECT_ACTION || model.actions.contains_key(name));
        let requests = RequestBuilder::new(action_entities, &model.claims, model.arguments.clone())
            .map_err(catalog_error)?;

        let loaded = policies::parse_sources(sources)?;
        policies::validate(&loaded, &Validator::new(schema))?;
        let index = PolicyIndex::new(&loaded.set, &action_groups);
        let mut relaxed = PolicySet::new();
        for policy in loaded.set.policies() {
            let gate = loaded.meta.get(policy.id()).is_some_and(|m| m.gate);
            if policy.effect() == Effect::Permit || gate {
                // Ids are unique in the loaded set, so adding cannot fail.
                let _ = relaxed.add(policy.clone());
            }
        }
        let relaxed = PolicyIndex::new(&relaxed, &action_groups);
        let visibility = visibility_set(&loaded.set, &loaded.meta).map_err(catalog_error)?;
        Ok(PolicyEngine {
            index,
            relaxed,
            visibility,
            policies: loaded.set,
            meta: loaded.meta,
            requests,
            authorizer: Authorizer::new(),
        })
    }

    /// Whether some call of `request`'s action by its principal may be
    /// allowed, whatever its resource, arguments or task: `false` only when
    /// no permit's principal and action scope matches, or a forbid with no
    /// condition and no resource scope does. Listings hide what is `false`
    /// (an MCP server's `tools/list`); anything unsure is shown, and every
    /// call is still decided on its own.
    pub fn may_permit(&self, request: &DecisionRequest) -> bool {
        match self.requests.probe(request) {
            Ok((probe, entities)) => {
                self.authorize(&probe, &self.visibility, &entities)
                    .decision()
                    == CedarDecision::Allow
            }
            Err(_) => false,
        }
    }

    pub fn policy_count(&self) -> usize {
        self.policies.num_of_policies()
    }

    /// Decide. Never panics; any evaluation error is a deny.
    pub fn evaluate(&self, request: &DecisionRequest) -> Decision {
        self.evaluate_with(request, None, true)
    }

    /// `task`: the task the request's token was admitted to; policies see
    /// it as `context.task`. A request only approval gates forbid is
    /// `approval_required`: see [`PolicyEngine::evaluate_approved`].
    pub fn evaluate_in_task(&self, request: &DecisionRequest, task: Option<&Task>) -> Decision {
        self.evaluate_with(request, task, true)
    }

    /// Decide a request a person approved: `context.approved` is true, so
    /// approval gates let it through and every other forbid still stops it.
    pub fn evaluate_approved(&self, request: &DecisionRequest, task: Option<&Task>) -> Decision {
        self.evaluate_once(request, task, true, Some(&self.index))
    }

    /// Decide in report mode: [`PolicyEngine::evaluate_in_task`], then
    /// [`PolicyEngine::report`].
    pub fn evaluate_reporting(&self, request: &DecisionRequest, task: Option<&Task>) -> Decision {
        let enforced = self.evaluate_in_task(request, task);
        self.report(enforced, request, task, false)
    }

    /// Report mode's answer to a request `enforced` decided. A policy
    /// denial ([`Reason::is_reportable`]) becomes an allow carrying it
    /// (`would_deny`), decided again with the plain forbids and default
    /// deny set aside: what a matching permit names is the only credential
    /// it may carry (none when no permit matches), and an approval gate
    /// still holds it (`approval_required`, `approved` once a person has
    /// approved). When that second look fails to evaluate, nobody can say
    /// what may go out: the denial stands. Anything else is returned as is.
    pub fn report(
        &self,
        enforced: Decision,
        request: &DecisionRequest,
        task: Option<&Task>,
        approved: bool,
    ) -> Decision {
        if enforced.outcome != Outcome::Deny || !enforced.reason.is_reportable() {
            return enforced;
        }
        let relaxed = self.evaluate_once(request, task, approved, Some(&self.relaxed));
        let credential = match relaxed.reason {
            Reason::Allowed => relaxed.credential,
            Reason::NoPermit => None,
            // Only gates forbid in the relaxed set.
            Reason::Forbidden if !approved => {
                return self.approval_required(request, relaxed.policy_ids)
            }
            _ => return enforced,
        };
        Decision {
            outcome: Outcome::Allow,
            credential,
            would_deny: true,
            ..enforced
        }
    }

    /// `indexed: false` evaluates every policy: the reference the index is
    /// tested against.
    fn evaluate_with(
        &self,
        request: &DecisionRequest,
        task: Option<&Task>,
        indexed: bool,
    ) -> Decision {
        let index = indexed.then_some(&self.index);
        let decision = self.evaluate_once(request, task, false, index);
        let gated = decision.reason == Reason::Forbidden
            && decision.policy_ids.iter().any(|id| self.is_gate(id));
        if !gated {
            return decision;
        }
        // A gate forbade it. Were it approved, would anything else still
        // forbid it? Then it is denied by that, never offered for approval.
        let approved = self.evaluate_once(request, task, true, index);
        if !approved.is_allow() {
            return approved;
        }
        let gates: Vec<String> = decision
            .policy_ids
            .into_iter()
            .filter(|id| self.is_gate(id))
            .collect();
        self.approval_required(request, gates)
    }

    /// `approval_required` by `gates` (at least one): the first one's
    /// `@reason` is the message.
    fn approval_required(&self, request: &DecisionRequest, gates: Vec<String>) -> Decision {
        let message = self
            .meta_of(&gates[0])
            .and_then(|m| m.reason.clone())
            .unwrap_or_else(|| {
                format!(
                    "`{}` on `{}` needs a person's approval (policy `{}`)",
                    request.action, request.resource, gates[0]
                )
            });
        Decision {
            outcome: Outcome::ApprovalRequired,
            reason: Reason::ApprovalRequired,
            message,
            policy_ids: gates,
            credential: None,
            task: None,
            approval: None,
            would_deny: false,
        }
    }

    fn is_gate(&self, id: &str) -> bool {
        self.meta_of(id).is_some_and(|m| m.gate)
    }

    /// `index`: the policies to look at by request; `None`, every policy.
    fn evaluate_once(
        &self,
        request: &DecisionRequest,
        task: Option<&Task>,
        approved: bool,
        index: Option<&PolicyIndex>,
    ) -> Decision {
        let (cedar_request, entities) = match self.requests.build(request, task, approved) {
            Ok(built) => built,
            Err(message) => return Decision::deny(Reason::InvalidRequest, message),
        };
        let verdict = if let Some(index) = index {
            let sets = index.candidates(request);
            Verdict::combine(sets.map(|set| self.authorize(&cedar_request, set, &entities)))
        } else {
            Verdict::combine([self.authorize(&cedar_request, &self.policies, &entities)])
        };

        // Cedar skips a policy whose evaluation fails, which could let a
        // permit through when a forbid meant to stop it errored. Any error
        // denies, and names the policies to fix.
        if !verdict.errors.is_empty() {
            let ids = self.ordered(verdict.errors.iter().map(|(id, _)| id));
            let first = verdict
                .errors
                .iter()
                .find(|(id, _)| id.to_string() == ids[0]);
            let message = first.map_or_else(String::new, |(_, e)| e.clone());
            return deny(Reason::PolicyError, message, ids);
        }

        let determining = self.ordered(verdict.reason.iter());
        match verdict.decision {
            CedarDecision::Allow => {
                let credential = determining
                    .iter()
                    .find_map(|id| self.meta_of(id)?.credential.clone());
                Decision {
                    outcome: Outcome::Allow,
                    reason: Reason::Allowed,
                    message: format!("allowed by {}", quoted_ids(&determining)),
                    policy_ids: determining,
                    credential,
                    task: None,
                    approval: None,
                    would_deny: false,
                }
            }
            CedarDecision::Deny if determining.is_empty() => deny(
                Reason::NoPermit,
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
                deny(Reason::Forbidden, message, determining)
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

    fn authorize(&self, request: &Request, set: &PolicySet, entities: &Entities) -> Response {
        self.authorizer.is_authorized(request, set, entities)
    }
}

/// What the evaluated policies said, over one or more disjoint policy sets.
struct Verdict {
    decision: CedarDecision,
    /// Satisfied forbids when denied by one, satisfied permits when allowed.
    reason: Vec<PolicyId>,
    errors: Vec<(PolicyId, String)>,
}

impl Verdict {
    /// Cedar's rule over the union of the sets: any satisfied forbid
    /// denies, naming every satisfied forbid; otherwise any satisfied
    /// permit allows, naming every satisfied permit; otherwise deny. A set
    /// that allowed had no satisfied forbid, one that denied with a reason
    /// had satisfied forbids, and its permits do not matter then.
    fn combine(responses: impl IntoIterator<Item = Response>) -> Verdict {
        let (mut forbids, mut permits, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for response in responses {
            let diagnostics = response.diagnostics();
            errors.extend(diagnostics.errors().map(|e| match e {
                AuthorizationError::PolicyEvaluationError(e) => {
                    (e.policy_id().clone(), e.to_string())
                }
            }));
            match response.decision() {
                CedarDecision::Allow => permits.extend(diagnostics.reason().cloned()),
                CedarDecision::Deny => forbids.extend(diagnostics.reason().cloned()),
            }
        }
        if forbids.is_empty() && !permits.is_empty() {
            Verdict {
                decision: CedarDecision::Allow,
                reason: permits,
                errors,
            }
        } else {
            Verdict {
                decision: CedarDecision::Deny,
                reason: forbids,
                errors,
            }
        }
    }
}

/// Policies by the scope they can match, so a request is evaluated against
/// only the policies that could apply to it. A policy left out can never
/// be satisfied and never errors: Cedar checks the scope first and
/// short-circuits, and scope checks (`==` / `in` on entities) cannot fail.
/// So the decision, its reasons and its errors are those of evaluating
/// every policy; including a policy that cannot match is harmless, which is
/// why anything unusual is put where every request sees it.
struct PolicyIndex {
    /// Requestable action → one group per action key that can match it:
    /// unscoped, the action itself, each group it is in. Groups are shared
    /// between actions, so a policy is stored once per key it names.
    by_action: HashMap<String, Vec<Arc<PrincipalGroups>>>,
}

/// One action key's policies, split by principal scope. A request's
/// principal is a Workload whose only ancestor is its SPIFFE namespace, so
/// `principal ==` / `in` can match only that workload or that namespace.
#[derive(Default)]
struct PrincipalGroups {
    any: PolicySet,
    workloads: HashMap<String, PolicySet>,
    namespaces: HashMap<String, PolicySet>,
}

enum PrincipalKey {
    Any,
    Workload(String),
    Namespace(String),
}

impl PrincipalKey {
    fn of(policy: &Policy) -> PrincipalKey {
        let uid = match policy.principal_constraint() {
            PrincipalConstraint::Eq(uid)
            | PrincipalConstraint::In(uid)
            | PrincipalConstraint::IsIn(_, uid) => uid,
            PrincipalConstraint::Any | PrincipalConstraint::Is(_) => return PrincipalKey::Any,
        };
        let id = uid.id().unescaped().to_string();
        match uid.type_name().to_string().as_str() {
            WORKLOAD => PrincipalKey::Workload(id),
            NAMESPACE => PrincipalKey::Namespace(id),
            _ => PrincipalKey::Any,
        }
    }
}

/// The action ids a policy's action scope names; `None`: it can match any.
fn action_keys(policy: &Policy) -> Option<Vec<String>> {
    let uids = match policy.action_constraint() {
        ActionConstraint::Any => return None,
        ActionConstraint::Eq(uid) => vec![uid],
        ActionConstraint::In(uids) => uids,
    };
    if uids.iter().any(|u| u.type_name().to_string() != "Action") {
        return None;
    }
    Some(
        uids.iter()
            .map(|u| u.id().unescaped().to_string())
            .collect(),
    )
}

impl PolicyIndex {
    /// `actions`: every requestable action with the groups it is in.
    fn new(policies: &PolicySet, actions: &[(String, Vec<String>)]) -> PolicyIndex {
        // Action key (`None`: unscoped) → its policies by principal.
        let mut groups: HashMap<Option<String>, PrincipalGroups> = HashMap::new();
        for policy in policies.policies() {
            let keys = match action_keys(policy) {
                None => vec![None],
                Some(ids) => ids.into_iter().map(Some).collect(),
            };
            let principal = PrincipalKey::of(policy);
            for key in keys {
                let g = groups.entry(key).or_default();
                let set = match &principal {
                    PrincipalKey::Any => &mut g.any,
                    PrincipalKey::Workload(id) => g.workloads.entry(id.clone()).or_default(),
                    PrincipalKey::Namespace(id) => g.namespaces.entry(id.clone()).or_default(),
                };
                // Ids are unique in the loaded set, so adding cannot fail;
                // a `policy in two action groups` is added once per group.
                let _ = set.add(policy.clone());
            }
        }
        let groups: HashMap<Option<String>, Arc<PrincipalGroups>> =
            groups.into_iter().map(|(k, g)| (k, Arc::new(g))).collect();
        let by_action = actions
            .iter()
            .map(|(action, parents)| {
                let keys = std::iter::once(None)
                    .chain(std::iter::once(Some(action.clone())))
                    .chain(parents.iter().cloned().map(Some));
                let matching = keys.filter_map(|k| groups.get(&k).cloned()).collect();
                (action.clone(), matching)
            })
            .collect();
        PolicyIndex { by_action }
    }

    /// The non-empty policy sets that can apply to `request`; disjoint
    /// except for a policy naming two of the action's keys (its reasons
    /// are deduplicated when ordered).
    fn candidates<'a>(
        &'a self,
        request: &'a DecisionRequest,
    ) -> impl Iterator<Item = &'a PolicySet> {
        let namespace = Some(request.attributes.namespace.as_str()).filter(|ns| !ns.is_empty());
        self.by_action
            .get(&request.action)
            .into_iter()
            .flatten()
            .flat_map(move |g| {
                [
                    Some(&g.any),
                    g.workloads.get(&request.principal),
                    namespace.and_then(|ns| g.namespaces.get(ns)),
                ]
            })
            .flatten()
            .filter(|set| !set.is_empty())
    }
}

/// [`PolicyEngine::visibility`]: conditions and resource scopes are what
/// depend on a call; principal and action scopes do not.
fn visibility_set(
    set: &PolicySet,
    meta: &HashMap<PolicyId, PolicyMeta>,
) -> Result<PolicySet, String> {
    let mut visibility = PolicySet::new();
    for policy in set.policies() {
        let mut json = policy
            .to_json()
            .map_err(|e| format!("policy `{}`: {e}", policy.id()))?;
        let unconditional = json["conditions"].as_array().is_some_and(Vec::is_empty)
            && json["resource"]["op"] == "All";
        let keep = match policy.effect() {
            Effect::Permit => {
                json["conditions"] = serde_json::json!([]);
                json["resource"] = serde_json::json!({"op": "All"});
                true
            }
            Effect::Forbid => unconditional && !meta.get(policy.id()).is_some_and(|m| m.gate),
        };
        if keep {
            let scoped = Policy::from_json(Some(policy.id().clone()), json)
                .map_err(|e| format!("policy `{}`: {e}", policy.id()))?;
            visibility
                .add(scoped)
                .map_err(|e| format!("policy `{}`: {e}", policy.id()))?;
        }
    }
    Ok(visibility)
}

fn deny(reason: Reason, message: String, policy_ids: Vec<String>) -> Decision {
    Decision {
        policy_ids,
        ..Decision::deny(reason, message)
    }
}

fn quoted_ids(ids: &[String]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("`{id}`")).collect();
    quoted.join(", ")
}

#[cfg(test)]
mod index_tests {
    //! The index must never change a decision: random policy sets (every
    //! principal and action scope shape, conditions, forbids, policies that
    //! error at run time) against random requests, indexed and unindexed.

    use crate::identity::{Attributes, IdentitySource};
    use std::sync::Arc;

    use super::*;
    use crate::catalog::{ActionInfo, RiskClass};
    use crate::decision::RequestContext;

    use crate::testing::Rng;

    impl Rng {
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const ACTIONS: &[(&str, RiskClass)] = &[
        ("github:pulls.list", RiskClass::Read),
        ("github:pulls.create", RiskClass::Write),
        ("github:repos.delete", RiskClass::ProdChange),
        ("github:unknown", RiskClass::Unknown),
        ("slack:chat.postMessage", RiskClass::Write),
        ("slack:users.list", RiskClass::Read),
        ("s3:GetObject", RiskClass::DataExport),
        ("kubernetes:secrets.get", RiskClass::SecretsRead),
        ("kubernetes:pods.exec", RiskClass::CodeExec),
    ];
    const GROUPS: &[&str] = &[
        "read",
        "write",
        "prod_change",
        "secrets_read",
        "data_export",
        "code_exec",
        "unknown",
        "github",
        "slack",
        "s3",
        "kubernetes",
    ];
    const NAMESPACES: &[&str] = &["agents", "batch", "ci"];
    const ACCOUNTS: &[&str] = &["coder", "triage", "report"];
    const TARGETS: &[&str] = &[
        "github",
        "github/repos",
        "github/repos/acme",
        "github/repos/acme/api",
        "slack",
        "s3/buckets/logs",
        "kubernetes/ns/prod",
        "pypi.org:443",
    ];

    fn actions() -> Vec<ActionInfo> {
        ACTIONS
            .iter()
            .map(|(name, risk)| ActionInfo {
                name: Arc::from(*name),
                tool: Arc::from(name.split(':').next().unwrap()),
                risk: *risk,
                arguments: None,
            })
            .collect()
    }

    fn workload(rng: &mut Rng) -> String {
        // Now and then an identity with no namespace in it.
        if rng.below(8) == 0 {
            return "spiffe://cluster.local/workload/odd".into();
        }
        let (ns, sa) = (rng.pick(NAMESPACES), rng.pick(ACCOUNTS));
        format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
    }

    fn action_name(rng: &mut Rng) -> &'static str {
        if rng.below(6) == 0 {
            CONNECT_ACTION
        } else {
            ACTIONS[rng.below(ACTIONS.len())].0
        }
    }

    fn policy(rng: &mut Rng, i: usize) -> String {
        let principal = match rng.below(6) {
            0 => "principal".to_string(),
            1 => format!("principal == Workload::\"{}\"", workload(rng)),
            2 => format!("principal in Namespace::\"{}\"", rng.pick(NAMESPACES)),
            3 => "principal is Workload".to_string(),
            4 => format!(
                "principal is Workload in Namespace::\"{}\"",
                rng.pick(NAMESPACES)
            ),
            _ => format!("principal in Workload::\"{}\"", workload(rng)),
        };
        let action = match rng.below(5) {
            0 => "action".to_string(),
            1 => format!("action == Action::\"{}\"", action_name(rng)),
            2 => format!("action in Action::\"{}\"", rng.pick(GROUPS)),
            3 => format!(
                "action in [Action::\"{}\", Action::\"{}\"]",
                rng.pick(GROUPS),
                action_name(rng)
            ),
            _ => format!(
                "action in [Action::\"{}\", Action::\"{}\"]",
                rng.pick(GROUPS),
                rng.pick(GROUPS)
            ),
        };
        let resource = match rng.below(3) {
            0 => "resource".to_string(),
            1 => format!("resource == Target::\"{}\"", rng.pick(TARGETS)),
            _ => format!("resource in Target::\"{}\"", rng.pick(TARGETS)),
        };
        let condition = match rng.below(6) {
            0 => " when { context.method == \"GET\" }",
            1 => " unless { context.port == 443 }",
            2 => " when { context.path like \"/repos/*\" }",
            // Overflows for any port above 1: a run-time error, which must
            // deny the same way whichever set the policy sits in.
            3 if rng.below(3) == 0 => " when { context.port * 4611686018427387904 > 0 }",
            _ => "",
        };
        let effect = if rng.below(4) == 0 {
            "forbid"
        } else {
            "permit"
        };
        let annotations = match rng.below(3) {
            0 => format!("@reason(\"r{i}\")\n"),
            1 => format!("@credential(\"c{i}\")\n"),
            _ => String::new(),
        };
        format!("{annotations}@id(\"p{i}\")\n{effect} ({principal}, {action}, {resource}){condition};\n")
    }

    fn request(rng: &mut Rng) -> DecisionRequest {
        let action = action_name(rng);
        let resource = if action == CONNECT_ACTION {
            "pypi.org:443".to_string()
        } else {
            format!("{}/x", rng.pick(TARGETS))
        };
        let principal = workload(rng);
        DecisionRequest {
            attributes: Arc::new(Attributes::of_name(IdentitySource::Static, &principal)),
            principal,
            action: action.to_string(),
            resource,
            context: RequestContext {
                method: rng.pick(&["GET", "POST", "DELETE"]).into(),
                host: "api.example.com".into(),
                port: [1, 443, 8443][rng.below(3)],
                path: rng.pick(&["/repos/acme/api", "/chat", "/"]).into(),
                tool: "github".into(),
                risk: RiskClass::Read,
                sensitivity: rng.pick(&["public", "restricted"]).into(),
                arguments: None,
                mcp_tool: None,
            },
            task: None,
            held: None,
        }
    }

    #[test]
    fn indexed_evaluation_decides_exactly_as_evaluating_every_policy() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut reasons = std::collections::BTreeSet::new();
        for set in 0..40 {
            let count = [3, 20, 120][set % 3];
            let text: String = (0..count).map(|i| policy(&mut rng, i)).collect();
            let engine = PolicyEngine::from_sources(&actions(), &[], &[("p.cedar".into(), text)])
                .unwrap_or_else(|e| panic!("{e}"));
            for _ in 0..250 {
                let r = request(&mut rng);
                let indexed = engine.evaluate_with(&r, None, true);
                assert_eq!(indexed, engine.evaluate_with(&r, None, false), "{r:?}");
                reasons.insert(indexed.reason.as_str());
            }
        }
        // The sample reaches every kind of outcome, or it proves little.
        for reason in ["allowed", "forbidden", "no_permit", "policy_error"] {
            assert!(reasons.contains(reason), "no `{reason}` among {reasons:?}");
        }
    }

    #[test]
    fn a_request_sees_only_policies_that_can_apply() {
        let text = "@id(\"a\") permit (principal == Workload::\"spiffe://d/ns/x/sa/a\", action == Action::\"github:pulls.list\", resource);\n\
                    @id(\"b\") permit (principal == Workload::\"spiffe://d/ns/x/sa/b\", action == Action::\"github:pulls.list\", resource);\n\
                    @id(\"c\") permit (principal in Namespace::\"y\", action in Action::\"read\", resource);\n\
                    @id(\"d\") forbid (principal, action in Action::\"prod_change\", resource);\n";
        let engine =
            PolicyEngine::from_sources(&actions(), &[], &[("p.cedar".into(), text.into())])
                .unwrap();
        let r = DecisionRequest {
            attributes: Arc::new(Attributes::of_name(
                IdentitySource::Static,
                "spiffe://d/ns/x/sa/a",
            )),
            principal: "spiffe://d/ns/x/sa/a".into(),
            action: "github:pulls.list".into(),
            resource: "github/repos/acme/api".into(),
            context: RequestContext::default(),
            task: None,
            held: None,
        };
        let seen: usize = engine
            .index
            .candidates(&r)
            .map(|s| s.num_of_policies())
            .sum();
        assert_eq!(seen, 1, "only policy `a` can apply");
    }
}
