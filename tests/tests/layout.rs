//! Arrows run one way through `proxy/src`: the command line uses the
//! fronts, the fronts use the decision core, the core uses the leaves; the
//! two planes' fronts (`pipeline`, `server`) never use each other, and no
//! two files use each other, directly or around a longer circle.
//!
//! A file uses another when it names an item defined there (through `use`
//! or a path in its code, following `pub use` re-exports to where the item
//! is defined). A module file and its own submodules are one unit: a
//! facade `mod.rs` re-exporting what its private files define is not a
//! circle. Test code (`tests.rs`, `tests/`, `#[cfg(test)] mod`) is left
//! out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tollgate_e2e::repo_root;

/// Each top-level module's rank: a module may use modules of a lower rank
/// only (and itself).
const RANKS: [(&str, u8); 18] = [
    ("catalog", 0),
    ("authorization", 0),
    ("body", 0),
    ("telemetry", 0),
    ("config", 1),
    ("tls", 1),
    ("memory", 1),
    ("identity", 2),
    ("decision", 3),
    ("error", 4),
    ("core", 5),
    ("reload", 6),
    ("pipeline", 7),
    ("server", 7),
    ("admin", 7),
    ("cli", 8),
    ("testing", 8),
    ("fuzzing", 8),
];

struct Source {
    /// Module path: `["decision", "engine"]`; `[]` for lib.rs.
    module: Vec<String>,
    /// Without comments, string and char literals, and test modules.
    code: String,
}

/// Comments, strings and chars blanked, so a `::` or `;` in them is not
/// read as code.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let word_before = |i: usize| i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            i = text[i..].find('\n').map_or(b.len(), |n| i + n);
        } else if b[i..].starts_with(b"/*") {
            i = text[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
        } else if (b[i] == b'r' || b[i..].starts_with(b"br")) && !word_before(i) && {
            let start = if b[i] == b'b' { i + 2 } else { i + 1 };
            let hashes = b[start..].iter().take_while(|c| **c == b'#').count();
            b.get(start + hashes) == Some(&b'"')
        } {
            let start = if b[i] == b'b' { i + 2 } else { i + 1 };
            let hashes = b[start..].iter().take_while(|c| **c == b'#').count();
            let end = format!("\"{}", "#".repeat(hashes));
            let from = start + hashes + 1;
            i = text[from..]
                .find(&end)
                .map_or(b.len(), |n| from + n + end.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime.
            let close = if b.get(i + 1) == Some(&b'\\') {
                text[i + 2..].find('\'').map(|n| i + 2 + n)
            } else {
                text[i + 1..]
                    .char_indices()
                    .nth(1)
                    .filter(|(_, c)| *c == '\'')
                    .map(|(n, _)| i + 1 + n)
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    without_test_modules(&out)
}

fn without_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let item = after.trim_start();
        let is_mod = item.starts_with("mod ") || item.starts_with("pub mod ");
        match (is_mod, item.find(['{', ';'])) {
            (true, Some(n)) if item.as_bytes()[n] == b'{' => {
                let mut depth = 0;
                let mut end = item.len();
                for (j, c) in item.char_indices().skip(n) {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                rest = &item[end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

fn sources() -> BTreeMap<String, Source> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Source>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" {
                    walk(&path, root, out);
                }
                continue;
            }
            if !name.ends_with(".rs") || name == "tests.rs" || name == "testing.rs" {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mut module: Vec<String> = rel
                .trim_end_matches(".rs")
                .split('/')
                .map(String::from)
                .collect();
            if ["mod", "lib", "main"].contains(&module.last().unwrap().as_str()) {
                module.pop();
            }
            if name == "main.rs" {
                continue;
            }
            let code = code_only(&std::fs::read_to_string(&path).unwrap());
            out.insert(rel, Source { module, code });
        }
    }
    let root = repo_root().join("proxy/src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The paths a `use` tree names, each as segments.
fn expand(tree: &str) -> Vec<Vec<String>> {
    fn split_top(s: &str) -> Vec<&str> {
        let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        parts
    }
    fn rec(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
        for item in split_top(s).into_iter().filter(|i| !i.is_empty()) {
            if let Some(open) = item.find('{') {
                let mut p = prefix.to_vec();
                p.extend(
                    item[..open]
                        .split("::")
                        .filter(|x| !x.is_empty())
                        .map(String::from),
                );
                rec(&p, &item[open + 1..item.len() - 1], out);
            } else {
                let item = item.split(" as ").next().unwrap();
                let mut p = prefix.to_vec();
                p.extend(item.split("::").filter(|x| !x.is_empty()).map(String::from));
                if p.last().is_some_and(|l| l == "self") {
                    p.pop();
                }
                out.push(p);
            }
        }
    }
    let compact: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let compact = compact
        .replace(" ::", "::")
        .replace(":: ", "::")
        .replace("{ ", "{")
        .replace(" }", "}")
        .replace(", ", ",");
    let mut out = Vec::new();
    rec(&[], &compact, &mut out);
    out
}

/// `use …;` statements: (is `pub`, tree).
fn uses(code: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        let word_start = at == 0 || !before.ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if word_start {
            let line_start = before.rfind(['\n', ';', '}', '{']).map_or(0, |n| n + 1);
            let public = before[line_start..].trim().starts_with("pub");
            out.push((public, after[..end].to_string()));
        }
        rest = &after[end.min(after.len())..];
    }
    out
}

struct Graph {
    files: BTreeMap<String, Source>,
    by_module: BTreeMap<Vec<String>, String>,
    reexported: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Graph {
    fn new() -> Graph {
        let files = sources();
        let by_module = files
            .iter()
            .map(|(f, s)| (s.module.clone(), f.clone()))
            .collect();
        let mut reexported = BTreeMap::new();
        for (file, s) in &files {
            let mut re = BTreeMap::new();
            for (public, tree) in uses(&s.code) {
                if public {
                    for path in expand(&tree) {
                        re.insert(path.last().unwrap().clone(), path);
                    }
                }
            }
            reexported.insert(file.clone(), re);
        }
        Graph {
            files,
            by_module,
            reexported,
        }
    }

    /// `path` as written in `file`, made absolute (`None`: not ours).
    fn absolute(&self, file: &str, path: &[String]) -> Option<Vec<String>> {
        let base = &self.files[file].module;
        let (head, tail) = path.split_first()?;
        match head.as_str() {
            "crate" => Some(tail.to_vec()),
            "self" => Some([base.as_slice(), tail].concat()),
            "super" => {
                let mut b = base.clone();
                let mut p = path;
                while p.first().is_some_and(|s| s == "super") {
                    b.pop();
                    p = &p[1..];
                }
                Some([b.as_slice(), p].concat())
            }
            _ => {
                let mut child = base.clone();
                child.push(head.clone());
                self.by_module
                    .contains_key(&child)
                    .then(|| [base.as_slice(), path].concat())
            }
        }
    }

    /// The file defining what `path` (absolute) names: a module's file, or
    /// the file of the module the item is in, following re-exports.
    fn defining(&self, path: &[String], depth: usize) -> Option<String> {
        if depth > 10 {
            return None;
        }
        if let Some(file) = self.by_module.get(path) {
            return Some(file.clone());
        }
        let (name, parent) = path.split_last()?;
        let Some(file) = self.by_module.get(parent) else {
            // `Enum::Variant` and the like: the enum's file.
            return self.defining(parent, depth + 1);
        };
        if let Some(target) = self.reexported[file].get(name) {
            if let Some(target) = self.absolute(file, target) {
                return self.defining(&target, depth + 1).or(Some(file.clone()));
            }
        }
        Some(file.clone())
    }

    fn is_parent(&self, parent: &str, child: &str) -> bool {
        let (p, c) = (&self.files[parent].module, &self.files[child].module);
        (parent.ends_with("mod.rs") || parent == "lib.rs")
            && c.len() == p.len() + 1
            && c.starts_with(p)
    }

    /// File → the files it uses, parent and child modules left out.
    fn edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut edges = BTreeMap::new();
        for (file, s) in &self.files {
            let mut paths: Vec<Vec<String>> = uses(&s.code)
                .into_iter()
                .flat_map(|(_, t)| expand(&t))
                .collect();
            let code = &s.code;
            for (i, _) in code.match_indices("::") {
                // The whole path this `::` is in, from its first segment.
                let start = code[..i]
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .map_or(0, |n| n + 1);
                if code[start..i].contains("::") {
                    continue;
                }
                let end = code[i..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .map_or(code.len(), |n| i + n);
                let path: Vec<String> = code[start..end]
                    .split("::")
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect();
                paths.push(path);
            }
            let mut used = BTreeSet::new();
            for path in paths {
                let Some(abs) = self.absolute(file, &path) else {
                    continue;
                };
                let abs: Vec<String> = abs.into_iter().filter(|s| s != "*").collect();
                if let Some(target) = self.defining(&abs, 0) {
                    if target != *file
                        && !self.is_parent(&target, file)
                        && !self.is_parent(file, &target)
                    {
                        used.insert(target);
                    }
                }
            }
            edges.insert(file.clone(), used);
        }
        edges
    }
}

fn rank(file: &str) -> Option<u8> {
    let top = file.split('/').next().unwrap().trim_end_matches(".rs");
    RANKS.iter().find(|(m, _)| *m == top).map(|(_, r)| *r)
}

#[test]
fn modules_use_only_lower_layers() {
    let graph = Graph::new();
    let edges = graph.edges();
    let mut wrong = Vec::new();
    for (file, used) in &edges {
        if file == "lib.rs" {
            continue;
        }
        let from = rank(file).unwrap_or_else(|| panic!("{file}: its module has no rank in RANKS"));
        let top = file.split('/').next().unwrap();
        for target in used {
            let same_module = target.split('/').next().unwrap() == top;
            if !same_module && rank(target).is_none_or(|to| to >= from) {
                wrong.push(format!("{file} → {target}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows that run the wrong way:\n{}",
        wrong.join("\n")
    );
    // The check sees what it must: the proxy front does use the core.
    assert!(
        edges["pipeline/mod.rs"].contains("core/mod.rs"),
        "{:?}",
        edges["pipeline/mod.rs"]
    );
    assert!(edges["server/ext_authz/mod.rs"].contains("core/plan.rs"));
}

/// The files that can reach themselves through what they use.
fn on_circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut circles = Vec::new();
    for (file, used) in edges {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = used.iter().collect();
        while let Some(next) = stack.pop() {
            if next == file {
                circles.push(file.clone());
                break;
            }
            if seen.insert(next) {
                stack.extend(edges.get(next).into_iter().flatten());
            }
        }
    }
    circles
}

#[test]
fn no_two_files_use_each_other() {
    let edges = Graph::new().edges();
    let circles = on_circles(&edges);
    assert!(circles.is_empty(), "files on an import circle: {circles:?}");
    // The search finds a circle where there is one: the engine already
    // uses the tasks; the tasks using the engine would close one.
    assert!(edges["decision/engine.rs"].contains("decision/tasks.rs"));
    let mut looped = edges.clone();
    looped
        .get_mut("decision/tasks.rs")
        .unwrap()
        .insert("decision/engine.rs".into());
    let found = on_circles(&looped);
    for file in ["decision/engine.rs", "decision/tasks.rs"] {
        assert!(found.iter().any(|f| f == file), "{found:?}");
    }
}
