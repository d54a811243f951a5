//! The Cedar schema, generated from the catalog's actions.
//!
//! Policies are validated against it in strict mode, so a policy that names an
//! action the catalog cannot produce, or compares `context.port` with a string,
//! is refused at load time instead of silently never matching.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::catalog::{ActionInfo, Arguments, RiskClass};

use super::request::CONNECT_ACTION;

/// Cedar entity type names. No Cedar namespace: policies say `Workload::"…"`.
pub(super) const WORKLOAD: &str = "Workload";
pub(super) const NAMESPACE: &str = "Namespace";
pub(super) const TARGET: &str = "Target";

/// The catalog's actions, checked for names Cedar could confuse, in a stable
/// order (sorted) so the schema text is the same for the same catalog.
pub(super) struct ActionModel {
    /// Action name → its groups (risk class, tool).
    pub actions: BTreeMap<String, [String; 2]>,
    pub tools: BTreeSet<String>,
    /// MCP tool actions with declared arguments: each has a context type
    /// of its own, with `arguments`.
    pub arguments: BTreeMap<String, Arguments>,
    /// JWT claims selected for policy, sorted: `principal.claims.<name>`.
    pub claims: Vec<String>,
}

impl ActionModel {
    /// Every action and group becomes one `Action::"…"` entity; a tool called
    /// `read` or an action called `github` would merge two meanings into one
    /// entity, so those are refused rather than guessed at.
    pub fn new(infos: &[ActionInfo], claims: &[String]) -> Result<ActionModel, String> {
        let reserved = |n: &str| {
            n.is_empty() || n == CONNECT_ACTION || RiskClass::ALL.iter().any(|r| r.as_str() == n)
        };
        let model = ActionModel::collect(infos, claims);
        for info in infos {
            if reserved(&info.tool) {
                return Err(format!(
                    "tool name `{}` is reserved (risk classes and `{CONNECT_ACTION}` are action names)",
                    info.tool
                ));
            }
            if reserved(&info.name) || model.tools.contains(&*info.name) {
                return Err(format!(
                    "action name `{}` is reserved or the name of a tool",
                    info.name
                ));
            }
            if model.actions[&*info.name] != groups(info) {
                return Err(format!(
                    "action `{}` is declared twice with a different tool or risk",
                    info.name
                ));
            }
        }
        Ok(model)
    }

    fn collect(infos: &[ActionInfo], claims: &[String]) -> ActionModel {
        let claims: BTreeSet<&String> = claims.iter().collect();
        ActionModel {
            claims: claims.into_iter().cloned().collect(),
            actions: infos
                .iter()
                .map(|a| (a.name.to_string(), groups(a)))
                .collect(),
            tools: infos.iter().map(|a| a.tool.to_string()).collect(),
            arguments: infos
                .iter()
                .filter_map(|a| Some((a.name.to_string(), a.arguments.clone()?)))
                .collect(),
        }
    }
}

fn groups(info: &ActionInfo) -> [String; 2] {
    [info.risk.as_str().to_string(), info.tool.to_string()]
}

/// The schema in Cedar's human syntax, for policy authors (`tollgate` prints
/// it) and for the engine, which parses exactly this text.
pub fn schema_text(actions: &[ActionInfo], claims: &[String]) -> String {
    render(&ActionModel::collect(actions, claims))
}

pub(super) fn render(model: &ActionModel) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "// tollgate policy schema, generated from the catalog: {} actions, {} tools.\n\
         // Policies are validated against it in strict mode.\n",
        model.actions.len(),
        model.tools.len()
    );
    // Every attribute is always there (`""` when the identity lacks it), so
    // policies compare without `has`; a claim nobody selected is unknown to
    // the schema and a policy naming it fails validation.
    let claims: Vec<String> = model
        .claims
        .iter()
        .map(|c| format!("{c}: String"))
        .collect();
    let _ = write!(
        out,
        "// The caller. A SPIFFE ID `spiffe://<domain>/ns/<ns>/…` is in Namespace::\"<ns>\".\n\
         entity Namespace;\n\
         entity Workload in [Namespace] = {{\n  identity_source: String,\n  trust_domain: String,\n  \
         namespace: String,\n  service_account: String,\n  pod: String,\n  claims: {{ {} }},\n}};\n\n",
        claims.join(", ")
    );
    out.push_str(
        "// What an action touches: Target::\"github/repos/acme/api\" is in \"github/repos/acme\",\n\
         // \"github/repos\" and \"github\". For `connect` it is \"host:port\", in nothing.\n\
         entity Target in [Target];\n\n",
    );
    // A named type so the actions share one definition. `task` is there
    // only when the request carried a valid task token: policies test it
    // with `context has task`.
    let used: Vec<String> = RiskClass::ALL
        .iter()
        .map(|class| format!("{}: Long", class.as_str()))
        .collect();
    let fields = format!(
        "  method: String,\n  host: String,\n  port: Long,\n  path: String,\n  tool: String,\n  \
         risk: String,\n  sensitivity: String,\n  approved: Bool,\n  \
         task?: {{ id: String, purpose: String, scopes: Set<String>, used: {{ {} }} }},\n",
        used.join(", ")
    );
    let _ = writeln!(out, "type RequestContext = {{\n{fields}}};\n");
    // An MCP tool with declared arguments: the same, with `arguments`.
    // Cedar has no type extension, so each set of arguments gets a type of
    // its own, shared by the tools that declare the same set.
    let mut context_types: BTreeMap<&str, String> = BTreeMap::new();
    let mut declared_sets: Vec<&Arguments> = Vec::new();
    for (action, arguments) in &model.arguments {
        let index = match declared_sets.iter().position(|d| *d == arguments) {
            Some(index) => index,
            None => {
                let declared: Vec<String> = arguments
                    .iter()
                    .map(|a| {
                        let optional = if a.optional { "?" } else { "" };
                        format!("{}{optional}: {}", quote(&a.name), a.ty.cedar())
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "// The context of MCP tool calls with these arguments (first: {}).\n\
                     type ArgumentsContext{} = {{\n{fields}  arguments: {{ {} }},\n}};\n",
                    quote(action),
                    declared_sets.len(),
                    declared.join(", ")
                );
                declared_sets.push(arguments);
                declared_sets.len() - 1
            }
        };
        context_types.insert(action.as_str(), format!("ArgumentsContext{index}"));
    }

    out.push_str("// Risk classes: `action in Action::\"prod_change\"`.\n");
    let risks: Vec<&str> = RiskClass::ALL.iter().map(|r| r.as_str()).collect();
    let _ = writeln!(out, "action {};", quoted_list(risks.iter().copied()));
    if !model.tools.is_empty() {
        out.push_str("// Tools: `action in Action::\"github\"`.\n");
        let _ = writeln!(
            out,
            "action {};",
            quoted_list(model.tools.iter().map(String::as_str))
        );
    }

    out.push_str("\n// Hosts the catalog does not cover, decided on host:port alone.\n");
    let _ = writeln!(out, "action {}{APPLIES};", quote(CONNECT_ACTION));
    // Grouped by tool so a reader finds one tool's actions together.
    let mut by_tool: Vec<_> = model.actions.iter().collect();
    by_tool.sort_by(|a, b| (&a.1[1], a.0).cmp(&(&b.1[1], b.0)));
    let mut tool = "";
    for (name, [risk, t]) in by_tool {
        if t != tool {
            let _ = writeln!(out, "\n// {}", t.escape_debug());
            tool = t;
        }
        let applies = match context_types.get(name.as_str()) {
            Some(context) => format!(
                " appliesTo {{ principal: Workload, resource: Target, context: {context} }}"
            ),
            None => APPLIES.to_string(),
        };
        let _ = writeln!(
            out,
            "action {} in [{}, {}]{applies};",
            quote(name),
            quote(risk),
            quote(t)
        );
    }
    out
}

const APPLIES: &str =
    " appliesTo { principal: Workload, resource: Target, context: RequestContext }";

fn quoted_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(quote).collect::<Vec<_>>().join(", ")
}

/// A Cedar string literal; catalog names are data and may hold anything.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
