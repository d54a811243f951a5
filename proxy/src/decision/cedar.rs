//! A `DecisionRequest` → Cedar request and entities.
//!
//! This runs once per decision, so it builds only the three entities a
//! request touches (principal, action, resource) and skips schema checks:
//! every value here is built by tollgate itself with the types the schema
//! declares, so checking them again per request would only cost time. The
//! one exception, an MCP call's arguments, comes from the agent: it is read
//! against its declaration here, whoever projected it.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};

use super::request::{DecisionRequest, CONNECT_ACTION};
use super::schema::{NAMESPACE, TARGET, WORKLOAD};
use super::tasks::Task;
use crate::catalog::{ArgumentValue, Arguments, RiskClass};
use crate::identity::Attributes;

/// Per-engine constants for building requests.
pub(super) struct RequestBuilder {
    workload: EntityTypeName,
    namespace: EntityTypeName,
    target: EntityTypeName,
    /// The claims the schema declares in `principal.claims`.
    claims: Vec<String>,
    /// Action name → an entity store holding just that action with its
    /// groups (from the schema, so `action in Action::"write"` sees the
    /// hierarchy validation saw). Built once: adding the two per-request
    /// entities to it costs about a third of building all three each time.
    actions: HashMap<String, (EntityUid, Entities)>,
    /// MCP tool actions → their declared arguments.
    arguments: HashMap<String, Arguments>,
}

impl RequestBuilder {
    pub fn new(
        actions: impl IntoIterator<Item = (String, Entity)>,
        claims: &[String],
        arguments: impl IntoIterator<Item = (String, Arguments)>,
    ) -> Result<RequestBuilder, String> {
        let ty = |name: &str| {
            EntityTypeName::from_str(name).map_err(|e| format!("entity type `{name}`: {e}"))
        };
        let actions = actions
            .into_iter()
            .map(|(name, entity)| {
                let uid = entity.uid();
                let store = Entities::from_entities([entity], None)
                    .map_err(|e| format!("action `{name}`: {e}"))?;
                Ok((name, (uid, store)))
            })
            .collect::<Result<_, String>>()?;
        Ok(RequestBuilder {
            workload: ty(WORKLOAD)?,
            namespace: ty(NAMESPACE)?,
            target: ty(TARGET)?,
            claims: claims.to_vec(),
            actions,
            arguments: arguments.into_iter().collect(),
        })
    }

    /// The principal and action of `req` on its resource with an empty
    /// context: for policies whose conditions were dropped
    /// ([`super::engine::PolicyEngine::may_permit`]), which read nothing
    /// else.
    pub fn probe(&self, req: &DecisionRequest) -> Result<(Request, Entities), String> {
        let (principal, action, resource, entities) = self.entities(req)?;
        let request = Request::new(principal, action, resource, Context::empty(), None)
            .map_err(|e| format!("building request: {e}"))?;
        Ok((request, entities))
    }

    /// `Err` holds a message for an `invalid_request` deny.
    pub fn build(
        &self,
        req: &DecisionRequest,
        task: Option<&Task>,
        approved: bool,
    ) -> Result<(Request, Entities), String> {
        let (principal, action, resource, entities) = self.entities(req)?;
        let ctx = &req.context;
        let text = |s: &str| RestrictedExpression::new_string(s.to_string());
        let task_record = task
            .map(|t| {
                let used = RestrictedExpression::new_record(RiskClass::ALL.map(|class| {
                    (
                        class.as_str().to_string(),
                        RestrictedExpression::new_long(i64::from(t.used(class))),
                    )
                }))?;
                RestrictedExpression::new_record([
                    ("id".to_string(), text(&t.record.id)),
                    ("purpose".to_string(), text(&t.record.purpose)),
                    (
                        "scopes".to_string(),
                        RestrictedExpression::new_set(t.record.scopes.iter().map(|s| text(s))),
                    ),
                    ("used".to_string(), used),
                ])
                .map(|record| ("task".to_string(), record))
            })
            .transpose()
            .map_err(|e| format!("building task context: {e}"))?;
        let arguments = self
            .arguments
            .get(&req.action)
            .map(|declared| arguments_record(&req.action, declared, ctx.arguments.as_deref()))
            .transpose()?
            .map(|record| ("arguments".to_string(), record));
        let context = Context::from_pairs(
            [
                ("method".to_string(), text(&ctx.method)),
                ("host".to_string(), text(&ctx.host)),
                (
                    "port".to_string(),
                    RestrictedExpression::new_long(i64::from(ctx.port)),
                ),
                ("path".to_string(), text(&ctx.path)),
                ("tool".to_string(), text(&ctx.tool)),
                ("risk".to_string(), text(ctx.risk.as_str())),
                ("sensitivity".to_string(), text(&ctx.sensitivity)),
                (
                    "approved".to_string(),
                    RestrictedExpression::new_bool(approved),
                ),
            ]
            .into_iter()
            .chain(task_record)
            .chain(arguments),
        )
        .map_err(|e| format!("building context: {e}"))?;

        let request = Request::new(principal, action, resource, context, None)
            .map_err(|e| format!("building request: {e}"))?;
        Ok((request, entities))
    }

    /// The request's principal, action and resource, and the entities that
    /// hold them with their ancestors.
    fn entities(
        &self,
        req: &DecisionRequest,
    ) -> Result<(EntityUid, EntityUid, EntityUid, Entities), String> {
        if req.principal.is_empty() {
            return Err("request has no principal".into());
        }
        let Some((action, action_store)) = self.actions.get(&req.action) else {
            return Err(format!(
                "action `{}` is not in the catalog's schema",
                req.action
            ));
        };

        let principal = self.uid(&self.workload, &req.principal);
        // `principal in Namespace::"agents"` and `principal.namespace`
        // say the same thing.
        let namespaces = Some(req.attributes.namespace.as_str())
            .filter(|ns| !ns.is_empty())
            .map(|ns| self.uid(&self.namespace, ns))
            .into_iter()
            .collect();
        let workload = Entity::new(
            principal.clone(),
            self.workload_attributes(&req.attributes)?,
            namespaces,
        )
        .map_err(|e| format!("building the principal: {e}"))?;

        let resource = self.uid(&self.target, &req.resource);
        // Every ancestor is listed directly, so Cedar's transitive closure
        // has nothing to add and `in Target::"github"` needs no extra entity.
        let ancestors: HashSet<EntityUid> = if req.action == CONNECT_ACTION {
            HashSet::new()
        } else {
            target_ancestors(&req.resource)
                .map(|t| self.uid(&self.target, t))
                .collect()
        };

        let entities = action_store
            .clone()
            .add_entities(
                [workload, Entity::new_no_attrs(resource.clone(), ancestors)],
                None,
            )
            .map_err(|e| format!("building entities: {e}"))?;
        Ok((principal, action.clone(), resource, entities))
    }

    /// Every attribute the schema declares, `""` where the identity has
    /// nothing: the selected claims the token lacked included.
    fn workload_attributes(
        &self,
        attributes: &Attributes,
    ) -> Result<HashMap<String, RestrictedExpression>, String> {
        let text = |s: &str| RestrictedExpression::new_string(s.to_string());
        let claims = self.claims.iter().map(|name| {
            let value = attributes.claims.get(name).map_or("", String::as_str);
            (name.clone(), text(value))
        });
        // Names are unique: a sorted set from configuration.
        let claims =
            RestrictedExpression::new_record(claims).map_err(|e| format!("claims: {e}"))?;
        Ok(HashMap::from([
            (
                "identity_source".to_string(),
                text(attributes.source.as_str()),
            ),
            ("trust_domain".to_string(), text(&attributes.trust_domain)),
            ("namespace".to_string(), text(&attributes.namespace)),
            (
                "service_account".to_string(),
                text(&attributes.service_account),
            ),
            ("pod".to_string(), text(&attributes.pod)),
            ("claims".to_string(), claims),
        ]))
    }

    fn uid(&self, ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }
}

/// `context.arguments` of an MCP tool call: the declared arguments the
/// request carries, read against their declaration.
fn arguments_record(
    action: &str,
    declared: &Arguments,
    json: Option<&str>,
) -> Result<RestrictedExpression, String> {
    let json = json.ok_or_else(|| format!("a call of `{action}` carries no arguments"))?;
    let values = declared
        .read(json)
        .map_err(|e| format!("the arguments of `{action}`: {e}"))?;
    let text = |s: String| RestrictedExpression::new_string(s);
    let fields = values.into_iter().map(|(argument, value)| {
        let value = match value {
            ArgumentValue::String(s) => text(s),
            ArgumentValue::Long(n) => RestrictedExpression::new_long(n),
            ArgumentValue::Bool(b) => RestrictedExpression::new_bool(b),
            ArgumentValue::StringSet(items) => {
                RestrictedExpression::new_set(items.into_iter().map(text))
            }
            ArgumentValue::LongSet(items) => {
                RestrictedExpression::new_set(items.into_iter().map(RestrictedExpression::new_long))
            }
        };
        (argument.name.to_string(), value)
    });
    // Names are unique: keys of one map in the catalog.
    RestrictedExpression::new_record(fields).map_err(|e| format!("arguments: {e}"))
}

/// The `/`-prefixes of a target, nearest last: `github/repos/acme/api` →
/// `github`, `github/repos`, `github/repos/acme`.
pub(super) fn target_ancestors(resource: &str) -> impl Iterator<Item = &str> {
    resource
        .match_indices('/')
        .map(|(i, _)| &resource[..i])
        .filter(|prefix| !prefix.is_empty() && !prefix.ends_with('/'))
}
