//! Raw files → the compiled catalog. Every rule that spans fields, routes,
//! endpoints or files is checked here, and each error points at the
//! `file:line:column` of the entry that broke it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use http::{HeaderName, Method};
use serde_saphyr::Spanned;

use super::file::{at, invalid, EndpointFile, McpFile, RouteFile, ToolFile};
use super::host::{HostMatcher, HostPattern};
use super::mcp::{self, McpServer};
use super::router::{normalize_path, Conditions, EndpointRouter, Route};
use super::template::{path_params, ResourceTemplate};
use super::{ActionInfo, Arguments, Catalog, CatalogError, Endpoint, RiskClass, Tool};

/// Names a tool may not take: Cedar action groups share the namespace with
/// actions, and `connect` is the built-in action for uncovered hosts.
const RESERVED_TOOLS: [&str; 8] = [
    "read",
    "write",
    "code_exec",
    "secrets_read",
    "data_export",
    "prod_change",
    "unknown",
    "connect",
];

const DEFAULT_SENSITIVITY: &str = "internal";

#[derive(Default)]
struct Builder {
    tools: Vec<Tool>,
    endpoints: Vec<Endpoint>,
    hosts: HostMatcher,
    /// Pattern → who claimed it first, for clash messages.
    host_owners: HashMap<Box<str>, String>,
    /// Tool name → file that defined it.
    tool_files: HashMap<Arc<str>, String>,
    /// Action → (risk, where first defined).
    actions: BTreeMap<Arc<str>, (Arc<str>, RiskClass, String)>,
    /// MCP tool actions → their declared arguments, if any.
    arguments: HashMap<Arc<str>, Option<Arguments>>,
    route_count: usize,
}

pub(super) fn compile(files: Vec<(String, ToolFile)>) -> Result<Catalog, CatalogError> {
    let mut b = Builder::default();
    for (file, raw) in files {
        b.tool(&file, raw)?;
    }
    b.tools.sort_by(|x, y| x.name.cmp(&y.name));
    // Endpoints point at tools by index; re-point after sorting.
    let index: HashMap<Arc<str>, usize> = b
        .tools
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    for endpoint in &mut b.endpoints {
        endpoint.tool = index[&endpoint.tool_name];
    }
    let actions = b
        .actions
        .into_iter()
        .map(|(name, (tool, risk, _))| ActionInfo {
            arguments: b.arguments.remove(&name).flatten(),
            name,
            tool,
            risk,
        })
        .collect();
    Ok(Catalog {
        mcp_paths: {
            let mut paths: Vec<Box<str>> = b
                .endpoints
                .iter()
                .filter_map(|e| Some(e.mcp.as_ref()?.path.clone()))
                .collect();
            paths.sort();
            paths.dedup();
            paths
        },
        tools: b.tools,
        endpoints: b.endpoints,
        hosts: b.hosts,
        actions,
        route_count: b.route_count,
    })
}

impl Builder {
    fn tool(&mut self, file: &str, raw: ToolFile) -> Result<(), CatalogError> {
        let name =
            check_tool_name(&raw.tool).map_err(|m| invalid(at(file, &raw.tool.referenced), m))?;
        if let Some(first) = self.tool_files.get(&name) {
            return Err(invalid(
                at(file, &raw.tool.referenced),
                format!("tool `{name}` is already defined in {first}"),
            ));
        }
        self.tool_files.insert(name.clone(), file.to_owned());
        if raw.endpoints.is_empty() {
            return Err(invalid(
                at(file, &raw.tool.referenced),
                format!("tool `{name}` has no endpoints"),
            ));
        }
        let mut credential_headers = Vec::new();
        for h in &raw.credential_headers {
            credential_headers
                .push(header_name(&h.value).map_err(|m| invalid(at(file, &h.referenced), m))?);
        }
        let mut credential_query = Vec::new();
        for param in &raw.credential_query {
            if param.value.is_empty() || param.value.contains(['&', '=', '#', '%', '+', ' ']) {
                return Err(invalid(
                    at(file, &param.referenced),
                    format!(
                        "credential_query `{}`: expected a query parameter name, unencoded",
                        param.value
                    ),
                ));
            }
            credential_query.push(param.value.clone());
        }
        let unknown: Arc<str> = format!("{name}:unknown").into();
        self.action(&name, unknown.clone(), RiskClass::Unknown, file.to_owned())
            .expect("a fresh tool has no actions yet");
        for endpoint in raw.endpoints {
            self.endpoint(file, &name, endpoint)?;
        }
        self.tools.push(Tool {
            name,
            description: raw.description,
            credential_headers,
            credential_query,
            agent_query_credentials: raw.agent_query_credentials,
            error_format: raw.error_format,
            unknown,
        });
        Ok(())
    }

    fn endpoint(
        &mut self,
        file: &str,
        tool: &Arc<str>,
        raw: Spanned<EndpointFile>,
    ) -> Result<(), CatalogError> {
        let here = at(file, &raw.referenced);
        let raw = raw.value;
        if raw.hosts.is_empty() {
            return Err(invalid(here, "an endpoint needs at least one host"));
        }
        let id = self.endpoints.len();
        // A resource may use a host capture only if every host provides it.
        let mut captured_by_all: Option<HashSet<String>> = None;
        let mut captured_by_any = HashSet::new();
        for host in &raw.hosts {
            let loc = at(file, &host.referenced);
            let pattern = HostPattern::parse(&host.value).map_err(|m| invalid(loc.clone(), m))?;
            let names: HashSet<String> = pattern.captures().map(str::to_owned).collect();
            captured_by_any.extend(names.iter().cloned());
            captured_by_all = Some(match captured_by_all {
                None => names,
                Some(all) => all.intersection(&names).cloned().collect(),
            });
            if let Err(clash) = self.hosts.insert(&pattern, id) {
                let owner = &self.host_owners[&clash];
                let text = pattern.as_str();
                let written = if *clash == *text {
                    String::new()
                } else {
                    format!(" (as `{clash}`)")
                };
                return Err(invalid(
                    loc,
                    format!("host `{text}` is already claimed by {owner}{written}"),
                ));
            }
            self.host_owners.insert(
                pattern.as_str().into(),
                format!("tool `{tool}` at {}", at(file, &host.referenced)),
            );
        }
        let captured_by_all = captured_by_all.unwrap_or_default();
        let default_sensitivity: Arc<str> = match raw.defaults.sensitivity {
            Some(s) => check_sensitivity(&s).map_err(|m| invalid(here.clone(), m))?,
            None => DEFAULT_SENSITIVITY.into(),
        };
        let mut router = EndpointRouter::default();
        for route in raw.routes {
            let loc = at(file, &route.referenced);
            let hosts = HostCaptures {
                all: &captured_by_all,
                any: &captured_by_any,
            };
            let (methods, path, when, compiled) = self
                .route(tool, &default_sensitivity, &hosts, route.value, &loc)
                .map_err(|m| invalid(loc.clone(), m))?;
            router
                .add(&methods, &path, when, compiled)
                .map_err(|m| invalid(loc, m))?;
        }
        self.route_count += router.route_count();
        let mcp = match raw.mcp {
            Some(mcp) => Some(self.mcp_server(file, tool, &default_sensitivity, mcp)?),
            None => None,
        };
        self.endpoints.push(Endpoint {
            tool: usize::MAX,
            tool_name: tool.clone(),
            default_sensitivity,
            router,
            mcp,
        });
        Ok(())
    }

    fn mcp_server(
        &mut self,
        file: &str,
        tool: &Arc<str>,
        default_sensitivity: &Arc<str>,
        raw: Spanned<McpFile>,
    ) -> Result<McpServer, CatalogError> {
        let here = at(file, &raw.referenced);
        let raw = raw.value;
        let path = match raw.path.as_str() {
            p if p.len() > 1 => p.strip_suffix('/').unwrap_or(p),
            p => p,
        };
        if !path.starts_with('/')
            || path.contains(['{', '}', '?', '#'])
            || normalize_path(path).is_none()
        {
            return Err(invalid(
                here,
                format!("mcp.path `{}`: a literal path starting with `/`", raw.path),
            ));
        }
        let named = |b: &mut Builder, action: &str, risk: RiskClass| {
            let action: Arc<str> = format!("{tool}:{action}").into();
            b.action(tool, action, risk, here.clone())
                .map(|action| mcp::Named { action, risk })
                .map_err(|m| invalid(here.clone(), m))
        };
        let protocol = named(self, mcp::PROTOCOL_ACTION, RiskClass::Read)?;
        let resources_read = named(self, mcp::RESOURCES_READ_ACTION, RiskClass::Read)?;
        let prompts_get = named(self, mcp::PROMPTS_GET_ACTION, RiskClass::Read)?;
        let unknown = mcp::Named {
            action: format!("{tool}:unknown").into(),
            risk: RiskClass::Unknown,
        };
        let unlisted = match raw.unlisted {
            None | Some(RiskClass::Unknown) => mcp::Named {
                action: unknown.action.clone(),
                risk: RiskClass::Unknown,
            },
            Some(risk) => named(self, mcp::UNLISTED_ACTION, risk)?,
        };
        let mut tools = HashMap::new();
        for entry in raw.tools {
            let loc = at(file, &entry.referenced);
            let entry = entry.value;
            let bad = |m: String| invalid(loc.clone(), m);
            mcp::check_tool_name(&entry.name).map_err(bad)?;
            let resource = ResourceTemplate::parse(tool, entry.resource.as_deref(), |name| {
                super::template::is_param_name(name)
            })
            .map_err(bad)?;
            let sensitivity = match entry.sensitivity {
                Some(s) => check_sensitivity(&s).map_err(bad)?,
                None => default_sensitivity.clone(),
            };
            let action: Arc<str> = format!("{tool}:{}", entry.name).into();
            let action = self
                .action(tool, action, entry.risk, loc.clone())
                .map_err(bad)?;
            let arguments = entry
                .arguments
                .as_ref()
                .map(Arguments::parse)
                .transpose()
                .map_err(bad)?;
            self.declare_arguments(&action, &arguments).map_err(bad)?;
            let listed = mcp::McpTool {
                action,
                risk: entry.risk,
                sensitivity,
                resource,
                arguments,
            };
            if tools
                .insert(entry.name.clone().into_boxed_str(), listed)
                .is_some()
            {
                return Err(bad(format!("MCP tool `{}` is listed twice", entry.name)));
            }
        }
        Ok(McpServer {
            path: path.into(),
            tool: tool.clone(),
            tools,
            unlisted,
            unknown,
            protocol,
            resources_read,
            prompts_get,
            sensitivity: default_sensitivity.clone(),
            pinning: raw.pinning,
        })
    }

    fn route(
        &mut self,
        tool: &Arc<str>,
        default_sensitivity: &Arc<str>,
        hosts: &HostCaptures,
        raw: RouteFile,
        loc: &str,
    ) -> Result<(Vec<Method>, String, Conditions, Route), String> {
        let methods = raw
            .method
            .0
            .iter()
            .map(|m| method(m))
            .collect::<Result<Vec<_>, _>>()?;
        let path = match raw.path.as_str() {
            p if p.len() > 1 => p.strip_suffix('/').unwrap_or(p),
            p => p,
        };
        if normalize_path(path).is_none() {
            return Err(format!("path `{path}` has a `.` or `..` segment"));
        }
        let params = path_params(path)?;
        if let Some(p) = params.iter().find(|p| hosts.any.contains(&***p)) {
            return Err(format!(
                "parameter `{{{p}}}` is both a path parameter and a host capture"
            ));
        }
        let resource = ResourceTemplate::parse(tool, raw.resource.as_deref(), |name| {
            params.iter().any(|p| &**p == name) || hosts.all.contains(name)
        })?;
        check_action_name(&raw.action)?;
        let action: Arc<str> = format!("{tool}:{}", raw.action).into();
        let action = self.action(tool, action, raw.risk, loc.to_owned())?;
        let sensitivity = match raw.sensitivity {
            Some(s) => check_sensitivity(&s)?,
            None => default_sensitivity.clone(),
        };
        let when = conditions(raw.when.query, raw.when.headers)?;
        let route = Route {
            action,
            risk: raw.risk,
            resource,
            sensitivity,
        };
        Ok((methods, path.to_owned(), when, route))
    }

    /// Record an action; the same name must always carry the same risk.
    /// Returns the shared name so every route holds one allocation.
    fn action(
        &mut self,
        tool: &Arc<str>,
        name: Arc<str>,
        risk: RiskClass,
        loc: String,
    ) -> Result<Arc<str>, String> {
        if let Some((existing, (_, first_risk, first_loc))) = self.actions.get_key_value(&name) {
            if *first_risk != risk {
                return Err(format!(
                    "action `{name}` is `{risk}` here but `{first_risk}` at {first_loc}"
                ));
            }
            return Ok(existing.clone());
        }
        self.actions.insert(name.clone(), (tool.clone(), risk, loc));
        Ok(name)
    }
}

impl Builder {
    /// One action has one context type: the same MCP tool declared on two
    /// servers must declare the same arguments.
    fn declare_arguments(
        &mut self,
        action: &Arc<str>,
        arguments: &Option<Arguments>,
    ) -> Result<(), String> {
        match self.arguments.get(action) {
            Some(first) if first != arguments => Err(format!(
                "MCP tool action `{action}` is declared elsewhere with other arguments"
            )),
            Some(_) => Ok(()),
            None => {
                self.arguments.insert(action.clone(), arguments.clone());
                Ok(())
            }
        }
    }
}

struct HostCaptures<'a> {
    all: &'a HashSet<String>,
    any: &'a HashSet<String>,
}

fn check_tool_name(name: &Spanned<String>) -> Result<Arc<str>, String> {
    let name = name.value.as_str();
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(format!("tool name `{name}`: use `[a-z0-9_-]+`"));
    }
    if RESERVED_TOOLS.contains(&name) {
        return Err(format!(
            "tool name `{name}` is reserved (risk class names and `connect`)"
        ));
    }
    Ok(name.into())
}

fn check_action_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(format!("action name `{name}`: use `[A-Za-z0-9_.-]+`"));
    }
    if name == "unknown" {
        return Err("action name `unknown` is reserved for unmatched requests".into());
    }
    Ok(())
}

fn check_sensitivity(label: &str) -> Result<Arc<str>, String> {
    if label.is_empty() || label.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "sensitivity `{label}`: use a non-empty label without spaces"
        ));
    }
    Ok(label.into())
}

/// Methods are case-sensitive tokens; a lower-case `get` is almost
/// certainly a typo for `GET`, so it is refused rather than never matched.
fn method(text: &str) -> Result<Method, String> {
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "method `{text}`: methods are case-sensitive, write `{}`",
            text.to_ascii_uppercase()
        ));
    }
    Method::from_bytes(text.as_bytes()).map_err(|_| format!("method `{text}` is not a valid token"))
}

fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("header `{text}` is not a valid name"))
}

fn conditions(query: Vec<String>, headers: Vec<String>) -> Result<Conditions, String> {
    let mut q = Vec::new();
    for item in query {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v.into())),
            None => (item.as_str(), None),
        };
        if key.is_empty() || key.contains(['&', '#', ' ']) {
            return Err(format!(
                "when.query `{item}`: expected `key` or `key=value`"
            ));
        }
        q.push((key.into(), value));
    }
    let h = headers
        .iter()
        .map(|h| header_name(h))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Conditions::new(q, h))
}
