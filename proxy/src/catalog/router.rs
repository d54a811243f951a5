//! Method + path (+ `when`) → route, for one endpoint.
//!
//! One matchit router per method. matchit stores one value per path, so the
//! value is a *group*: every route sharing that method and path, ordered
//! most specific `when` first, with a route without `when` last as the
//! fallback.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, Method};

use super::template::ResourceTemplate;
use super::RiskClass;

/// What a matched route says.
#[derive(Debug)]
pub(super) struct Route {
    pub action: std::sync::Arc<str>,
    pub risk: RiskClass,
    pub resource: ResourceTemplate,
    pub sensitivity: std::sync::Arc<str>,
}

/// Compiled `when`. All listed conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Conditions {
    /// Sorted, so equal sets compare equal.
    query: Vec<(Box<str>, Option<Box<str>>)>,
    headers: Vec<HeaderName>,
}

impl Conditions {
    pub fn new(
        mut query: Vec<(Box<str>, Option<Box<str>>)>,
        mut headers: Vec<HeaderName>,
    ) -> Conditions {
        query.sort();
        query.dedup();
        headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        headers.dedup();
        Conditions { query, headers }
    }

    fn specificity(&self) -> usize {
        self.query.len() + self.headers.len()
    }

    fn holds(&self, query: Option<&str>, headers: &HeaderMap) -> bool {
        self.headers.iter().all(|h| headers.contains_key(h))
            && self.query.iter().all(|(key, value)| {
                // Raw comparison: keys like `list-type` or `uploadId` never
                // need decoding, and decoding would make `a%3Db` equal `a=b`.
                query_pairs(query).any(|(k, v)| {
                    k == &**key && value.as_deref().is_none_or(|want| v == Some(want))
                })
            })
    }
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, Option<&str>)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
}

#[derive(Debug)]
struct Variant {
    when: Conditions,
    route: usize,
}

/// The route table of one endpoint.
#[derive(Debug, Default)]
pub(super) struct EndpointRouter {
    methods: HashMap<Method, matchit::Router<usize>>,
    groups: Vec<Vec<Variant>>,
    routes: Vec<Route>,
    /// `(method, path)` → group, to find the group a new variant joins.
    paths: HashMap<(Method, String), usize>,
}

impl EndpointRouter {
    /// Add one route under each of `methods`. `path` is already normalized.
    pub fn add(
        &mut self,
        methods: &[Method],
        path: &str,
        when: Conditions,
        route: Route,
    ) -> Result<(), String> {
        let index = self.routes.len();
        self.routes.push(route);
        for method in methods {
            let key = (method.clone(), path.to_owned());
            let group = match self.paths.get(&key) {
                Some(&group) => group,
                None => {
                    let group = self.groups.len();
                    self.methods
                        .entry(method.clone())
                        .or_default()
                        .insert(path, group)
                        .map_err(|e| format!("{method} {path}: {e}"))?;
                    self.groups.push(Vec::new());
                    self.paths.insert(key, group);
                    group
                }
            };
            let variants = &mut self.groups[group];
            if variants.iter().any(|v| v.when == when) {
                return Err(format!(
                    "{method} {path} is already defined with the same `when`"
                ));
            }
            // After every variant at least as specific: ties keep file order.
            let at = variants
                .iter()
                .position(|v| v.when.specificity() < when.specificity())
                .unwrap_or(variants.len());
            variants.insert(
                at,
                Variant {
                    when: when.clone(),
                    route: index,
                },
            );
        }
        Ok(())
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// `path` must be normalized (see [`normalize_path`]). `HEAD` falls back
    /// to the `GET` table when no `HEAD` route matches, as servers do.
    pub fn find<'r, 'p>(
        &'r self,
        method: &Method,
        path: &'p str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<(&'r Route, matchit::Params<'r, 'p>)> {
        self.find_in(method, path, query, headers).or_else(|| {
            (method == Method::HEAD)
                .then(|| self.find_in(&Method::GET, path, query, headers))
                .flatten()
        })
    }

    fn find_in<'r, 'p>(
        &'r self,
        method: &Method,
        path: &'p str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<(&'r Route, matchit::Params<'r, 'p>)> {
        let matched = self.methods.get(method)?.at(path).ok()?;
        let variant = self.groups[*matched.value]
            .iter()
            .find(|v| v.when.holds(query, headers))?;
        Some((&self.routes[variant.route], matched.params))
    }
}

/// The path as matched: `""` is `/`; one trailing `/` is dropped (except
/// for the root) so `/repos/a/b/` names the same action as `/repos/a/b`.
/// `None` for paths with dot segments (`.`, `..`, also percent-encoded):
/// upstreams may resolve them to a different resource than the one we would
/// name, so such a request is classified as unknown rather than guessed.
pub(super) fn normalize_path(path: &str) -> Option<&str> {
    let path = match path {
        "" => "/",
        p if p.len() > 1 => p.strip_suffix('/').unwrap_or(p),
        p => p,
    };
    if path.split('/').any(is_dot_segment) {
        return None;
    }
    Some(path)
}

fn is_dot_segment(segment: &str) -> bool {
    // Cheap filter first: almost every segment has some other byte.
    let candidate = !segment.is_empty()
        && segment.len() <= 6
        && segment
            .bytes()
            .all(|b| matches!(b, b'.' | b'%' | b'2' | b'e' | b'E'));
    if !candidate {
        return false;
    }
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}
