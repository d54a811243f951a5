//! Inputs for the micro benchmarks (and the decision figures in the load
//! report): a 1,000-route catalog, policy sets of any size shaped like real
//! ones (per-workload and per-namespace grants, tool- and risk-group
//! scopes, `when` conditions, forbids, the shipped guardrails), and
//! requests classified from that catalog.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Method};
use tollgate::catalog::Catalog;
use tollgate::decision::{DecisionRequest, PolicyEngine, RequestContext};
use tollgate::identity::{Attributes, IdentitySource};

use crate::repo_root;

pub const TOOLS: usize = 100;

/// Ten routes per tool, every risk class among them: 1,000 routes.
const ROUTES: &[(&str, &str, &str, &str, &str)] = &[
    ("GET", "/v1/items", "items.list", "read", "items"),
    ("GET", "/v1/items/{id}", "items.get", "read", "items/{id}"),
    ("POST", "/v1/items", "items.create", "write", "items"),
    (
        "PATCH",
        "/v1/items/{id}",
        "items.update",
        "write",
        "items/{id}",
    ),
    (
        "DELETE",
        "/v1/items/{id}",
        "items.delete",
        "prod_change",
        "items/{id}",
    ),
    (
        "GET",
        "/v1/items/{id}/history",
        "items.history",
        "read",
        "items/{id}",
    ),
    (
        "POST",
        "/v1/jobs/{id}/run",
        "jobs.run",
        "code_exec",
        "jobs/{id}",
    ),
    (
        "GET",
        "/v1/secrets/{name}",
        "secrets.get",
        "secrets_read",
        "secrets/{name}",
    ),
    (
        "GET",
        "/v1/export/{dataset}",
        "export.get",
        "data_export",
        "datasets/{dataset}",
    ),
    (
        "GET",
        "/v1/users/{user}/repos/{repo}/files/{*path}",
        "files.get",
        "read",
        "users/{user}/repos/{repo}",
    ),
];

fn tool(t: usize) -> String {
    format!("t{t:03}")
}

fn host(t: usize) -> String {
    format!("api-{}.bench.test", tool(t))
}

/// `(file name, YAML)` for [`TOOLS`] tools of ten routes each.
pub fn catalog_sources() -> Vec<(String, String)> {
    (0..TOOLS)
        .map(|t| {
            let mut y = format!(
                "tool: {}\ndescription: bench tool {t}\nendpoints:\n  - hosts: [{}]\n    routes:\n",
                tool(t),
                host(t)
            );
            for (method, path, action, risk, resource) in ROUTES {
                y.push_str(&format!(
                    "      - {{ method: {method}, path: \"{path}\", action: {action}, risk: {risk}, resource: \"{resource}\" }}\n"
                ));
            }
            (format!("{}.yaml", tool(t)), y)
        })
        .collect()
}

pub fn catalog() -> Catalog {
    Catalog::from_sources(&catalog_sources()).expect("bench catalog compiles")
}

fn workload(i: usize) -> String {
    format!("spiffe://cluster.local/ns/team{}/sa/agent{i}", i % 20)
}

/// `count` policies: the shipped guardrails, then generated ones in a
/// repeating mix of five shapes.
pub fn policy_sources(count: usize) -> Vec<(String, String)> {
    let guardrails = std::fs::read_to_string(repo_root().join("config/policies/guardrails.cedar"))
        .expect("config/policies/guardrails.cedar");
    // Every shipped guardrail carries an @id.
    let shipped = guardrails.matches("@id(").count();
    let mut text = String::new();
    for i in 0..count.saturating_sub(shipped) {
        let (w, t, ns) = (workload(i), tool(i % TOOLS), i % 20);
        text.push_str(&match i % 5 {
            0 => format!(
                "permit (principal == Workload::\"{w}\", action == Action::\"{t}:items.get\", resource in Target::\"{t}\")\n  when {{ context.method == \"GET\" }};\n"
            ),
            1 => format!(
                "permit (principal in Namespace::\"team{ns}\", action in Action::\"{t}\", resource in Target::\"{t}/items\")\n  when {{ context.path like \"/v1/*\" }};\n"
            ),
            2 => format!(
                "permit (principal == Workload::\"{w}\", action in Action::\"read\", resource in Target::\"{t}\");\n"
            ),
            3 => format!(
                "forbid (principal == Workload::\"{w}\", action == Action::\"{t}:items.delete\", resource)\n  unless {{ context.sensitivity == \"public\" }};\n"
            ),
            _ => format!(
                "permit (principal in Namespace::\"team{ns}\", action == Action::\"{t}:jobs.run\", resource in Target::\"{t}/jobs\")\n  when {{ context.risk == \"code_exec\" && context.port == 443 }};\n"
            ),
        });
    }
    vec![
        ("guardrails.cedar".into(), guardrails),
        ("generated.cedar".into(), text),
    ]
}

pub fn engine(catalog: &Catalog, policies: usize) -> PolicyEngine {
    let engine = PolicyEngine::from_sources(catalog.actions(), &[], &policy_sources(policies))
        .expect("bench policies validate");
    assert_eq!(engine.policy_count(), policies);
    engine
}

/// `count` distinct requests over every route, workload and namespace,
/// named by the catalog as the proxy would name them.
pub fn requests(catalog: &Catalog, count: usize) -> Vec<DecisionRequest> {
    (0..count)
        .map(|i| {
            let (method, template, ..) = ROUTES[i % ROUTES.len()];
            let t = (i / ROUTES.len()) % TOOLS;
            let path = template
                .replace("{*path}", "src/main.rs")
                .replace(['{', '}'], "")
                .replace("id", &i.to_string());
            let c = catalog
                .classify(
                    &host(t),
                    &method.parse::<Method>().unwrap(),
                    &path,
                    None,
                    &HeaderMap::new(),
                )
                .expect("bench host is covered");
            let principal = workload(i * 7 % 1000);
            DecisionRequest {
                attributes: Arc::new(Attributes::of_name(IdentitySource::Static, &principal)),
                principal,
                action: c.action.to_string(),
                resource: c.resource,
                context: RequestContext {
                    method: method.to_string(),
                    host: host(t),
                    port: 443,
                    path,
                    tool: c.tool.to_string(),
                    risk: c.risk,
                    sensitivity: c.sensitivity.to_string(),
                    arguments: None,
                    mcp_tool: None,
                },
                task: None,
                held: None,
            }
        })
        .collect()
}

/// Latency of single calls, in microseconds: timed one by one (criterion
/// reports means of batches, not percentiles).
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
}

pub fn percentiles(calls: usize, mut call: impl FnMut(usize)) -> Percentiles {
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls {
        let started = Instant::now();
        call(i);
        times.push(started.elapsed().as_nanos() as f64 / 1000.0);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Percentiles {
        mean,
        p50: at(0.50),
        p99: at(0.99),
    }
}
