//! Host → endpoint, in one structure for the whole catalog.
//!
//! Exact hosts sit in a hash map. Patterns with `*` or `{name}` labels sit in
//! a trie keyed by labels from the right (`com` → `amazonaws` → `s3` → `*`),
//! so a lookup walks the host's labels once and never looks at patterns of
//! other domains: the cost depends on the host, not on how many tools exist.
//! At each label the exact child is tried before the wildcard child, and the
//! search backtracks into the wildcard when the exact branch dead-ends. Each
//! trie node is visited at most once, so a lookup touches at most
//! `2^depth` nodes, and `depth` is bounded by the longest pattern (five
//! labels in the shipped catalogs) — a constant of the catalog, not its size.

use std::collections::HashMap;
use std::sync::Arc;

/// One label of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Label {
    Exact(Box<str>),
    /// `*` (no name) or `{name}`.
    Wild(Option<Arc<str>>),
}

/// A validated host pattern.
#[derive(Debug, Clone)]
pub(super) struct HostPattern {
    /// Left to right, as written.
    labels: Vec<Label>,
    text: Box<str>,
}

impl HostPattern {
    /// Lower-cased on the way in; the matcher only ever compares lower case.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.to_ascii_lowercase();
        if text.is_empty() {
            return Err("empty host pattern".into());
        }
        let mut labels = Vec::new();
        for label in text.split('.') {
            labels.push(parse_label(label).map_err(|e| format!("host `{text}`: {e}"))?);
        }
        if labels.iter().all(|l| matches!(l, Label::Wild(_))) {
            return Err(format!(
                "host `{text}`: a pattern needs at least one literal label"
            ));
        }
        let mut names: Vec<&str> = labels.iter().filter_map(capture_name).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("host `{text}`: parameter `{{{}}}` twice", w[0]));
        }
        Ok(HostPattern {
            labels,
            text: text.into(),
        })
    }

    /// Names of the `{name}` labels.
    pub fn captures(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().filter_map(capture_name)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn capture_name(label: &Label) -> Option<&str> {
    match label {
        Label::Wild(Some(name)) => Some(name),
        _ => None,
    }
}

fn parse_label(label: &str) -> Result<Label, String> {
    if label == "*" {
        return Ok(Label::Wild(None));
    }
    if let Some(name) = label.strip_prefix('{').and_then(|l| l.strip_suffix('}')) {
        if !super::template::is_param_name(name) {
            return Err(format!("bad parameter name `{{{name}}}`"));
        }
        return Ok(Label::Wild(Some(name.into())));
    }
    if label.is_empty() {
        return Err("empty label".into());
    }
    if !label.bytes().all(is_host_byte) {
        return Err(format!(
            "label `{label}`: use letters, digits, `-`, `_`, or a whole-label `*` / `{{name}}`"
        ));
    }
    Ok(Label::Exact(label.into()))
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

/// What a pattern maps to.
#[derive(Debug)]
struct Leaf {
    endpoint: usize,
    /// `(label index from the left, parameter name)`.
    captures: Vec<(usize, Arc<str>)>,
    pattern: Box<str>,
}

#[derive(Debug, Default)]
struct Node {
    exact: HashMap<Box<str>, Node>,
    wild: Option<Box<Node>>,
    leaf: Option<Leaf>,
}

/// The compiled host matcher.
#[derive(Debug, Default)]
pub(super) struct HostMatcher {
    exact: HashMap<Box<str>, usize>,
    patterns: Node,
    depth: usize,
}

/// A host matched: which endpoint, and the values of its `{name}` labels.
#[derive(Debug)]
pub(super) struct HostMatch<'h> {
    pub endpoint: usize,
    pub captures: Vec<(Arc<str>, &'h str)>,
}

impl HostMatcher {
    /// Add a pattern. On a clash returns the pattern already there, as
    /// written: `*.x.com` and `{a}.x.com` are the same pattern.
    pub fn insert(&mut self, pattern: &HostPattern, endpoint: usize) -> Result<(), Box<str>> {
        if pattern.labels.iter().all(|l| matches!(l, Label::Exact(_))) {
            if self.exact.contains_key(&pattern.text) {
                return Err(pattern.text.clone());
            }
            self.exact.insert(pattern.text.clone(), endpoint);
            return Ok(());
        }
        let mut node = &mut self.patterns;
        for label in pattern.labels.iter().rev() {
            node = match label {
                Label::Exact(l) => node.exact.entry(l.clone()).or_default(),
                Label::Wild(_) => node.wild.get_or_insert_with(Default::default),
            };
        }
        if let Some(leaf) = &node.leaf {
            return Err(leaf.pattern.clone());
        }
        let captures = pattern
            .labels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| capture_name(l).map(|n| (i, Arc::from(n))))
            .collect();
        node.leaf = Some(Leaf {
            endpoint,
            captures,
            pattern: pattern.text.clone(),
        });
        self.depth = self.depth.max(pattern.labels.len());
        Ok(())
    }

    /// `host` must already be lower case without port or trailing dot.
    pub fn find<'h>(&self, host: &'h str) -> Option<HostMatch<'h>> {
        if let Some(&endpoint) = self.exact.get(host) {
            return Some(HostMatch {
                endpoint,
                captures: Vec::new(),
            });
        }
        // Labels right to left; a host longer than every pattern cannot match,
        // and a malformed one (empty label, odd bytes) is nobody's.
        let mut labels: Vec<&str> = Vec::with_capacity(self.depth);
        for label in host.rsplit('.') {
            if labels.len() == self.depth || label.is_empty() || !label.bytes().all(is_host_byte) {
                return None;
            }
            labels.push(label);
        }
        let leaf = walk(&self.patterns, &labels)?;
        let count = labels.len();
        let captures = leaf
            .captures
            .iter()
            .map(|(i, name)| (name.clone(), labels[count - 1 - i]))
            .collect();
        Some(HostMatch {
            endpoint: leaf.endpoint,
            captures,
        })
    }
}

/// Depth-first, exact child first; returning `None` from a branch is the
/// backtrack.
fn walk<'n>(node: &'n Node, labels: &[&str]) -> Option<&'n Leaf> {
    let Some((first, rest)) = labels.split_first() else {
        return node.leaf.as_ref();
    };
    if let Some(found) = node.exact.get(*first).and_then(|child| walk(child, rest)) {
        return Some(found);
    }
    node.wild.as_deref().and_then(|child| walk(child, rest))
}
