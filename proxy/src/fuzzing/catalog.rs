//! Classification against the shipped catalog, and catalog files as a
//! user writes them.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::catalog::Catalog;
use crate::core::classify::{classify as core_classify, Named};
use crate::decision::CONNECT_ACTION;
use crate::pipeline::accept::absolute_target;

use super::{first_line, shipped_catalog};

/// `METHOD absolute-URI` on the first line, then `name: value` header
/// lines: an explicit-proxy request as hyper hands it to the pipeline.
/// It is named by the function every front uses, and compared with the
/// same request read inside a tunnel (origin form, the host from the
/// CONNECT) and with the spellings the upstream reads as the same.
pub fn classify(data: &[u8]) {
    let catalog = shipped_catalog();
    let (line, rest) = first_line(data);
    let mut words = line.splitn(2, |&b| b == b' ');
    let (Some(method), Some(uri)) = (words.next(), words.next()) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), Uri::try_from(uri)) else {
        return;
    };
    let Ok(target) = absolute_target(&uri) else {
        return;
    };
    let headers = headers(rest);
    let named = core_classify(catalog, &target, &method, &uri, &headers);

    let Ok(named) = named else {
        // Refused paths are refused whichever front reads them.
        if let Some(origin) = origin_form(&uri) {
            assert!(core_classify(catalog, &target, &method, &origin, &headers).is_err());
        }
        return;
    };
    assert!(
        !has_dot_segment(uri.path()),
        "a classified path has no dot segment: {uri}"
    );
    assert!(
        !has_encoded_separator(uri.path()),
        "a classified path has no encoded separator: {uri}"
    );
    check_named(catalog, &target.host_port(), &named);
    assert_eq!(named.tool.is_some(), catalog.covers(&target.host));

    // Inside an intercepted tunnel the same request arrives in origin form.
    if let Some(origin) = origin_form(&uri) {
        let inside = core_classify(catalog, &target, &method, &origin, &headers);
        assert_eq!(inside.ok().as_ref(), Some(&named), "origin form of {uri}");
    }
    // A catalog host's name is case-insensitive and a trailing dot names
    // the same host: neither may change what a request is.
    if named.tool.is_some() {
        let mut shouted = target.clone();
        shouted.host = format!("{}.", target.host.to_ascii_uppercase());
        let loud = core_classify(catalog, &shouted, &method, &uri, &headers);
        assert_eq!(
            loud.ok().as_ref(),
            Some(&named),
            "host spelled {}",
            shouted.host
        );
    }
    // One trailing `/` names the same resource (servers route both alike).
    let path = uri.path();
    if path.len() > 1 && !path.ends_with('/') {
        let slashed = match uri.query() {
            Some(q) => format!("{path}/?{q}"),
            None => format!("{path}/"),
        };
        if let Ok(slashed) = slashed.parse::<Uri>() {
            let same = core_classify(catalog, &target, &method, &slashed, &headers);
            assert_eq!(same.ok().as_ref(), Some(&named), "{slashed}");
        }
    }
}

/// A catalog file (`config/catalog/*.yaml`): parsed and compiled, and when
/// it compiles, every request it names is named with an action it
/// declares.
pub fn catalog_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = [("fuzz.yaml".to_string(), text.to_string())];
    let catalog = match Catalog::from_sources(&sources) {
        Ok(catalog) => catalog,
        Err(err) => {
            let shown = err.to_string();
            assert!(shown.starts_with("fuzz.yaml"), "{shown}");
            return;
        }
    };
    // Hosts and paths the file itself mentions are the likeliest to match.
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, '[' | ']' | ',' | '"' | '\''))
        .filter(|w| !w.is_empty() && w.len() < 200)
        .collect();
    let hosts = words
        .iter()
        .filter(|w| w.contains('.') && !w.starts_with('/'));
    for host in hosts.take(4) {
        let host = host.replace(['*', '{', '}'], "x");
        for path in words.iter().filter(|w| w.starts_with('/')).take(4) {
            let path = path.replace(['{', '}'], "");
            for method in [Method::GET, Method::POST, Method::DELETE] {
                if let Some(c) =
                    catalog.classify(&host, &method, &path, Some("a=b"), &HeaderMap::new())
                {
                    let named = Named::from(c);
                    check_named(&catalog, &host, &named);
                }
            }
        }
    }
}

/// What any name the catalog gives must satisfy: the action is one the
/// policy schema knows (else no policy could ever allow or forbid it) and
/// belongs to the named tool.
fn check_named(catalog: &Catalog, host_port: &str, named: &Named) {
    match &named.tool {
        None => {
            assert_eq!(&*named.action, CONNECT_ACTION);
            assert_eq!(named.resource, host_port);
        }
        Some(tool) => {
            let info = catalog
                .actions()
                .iter()
                .find(|a| a.name == named.action)
                .unwrap_or_else(|| panic!("`{}` is not in the catalog's actions", named.action));
            assert_eq!(&info.tool, tool);
            assert!(
                named.action.starts_with(&format!("{tool}:")),
                "{}",
                named.action
            );
            assert!(!named.resource.is_empty());
        }
    }
}

/// The request as read inside a tunnel: path and query only.
fn origin_form(uri: &Uri) -> Option<Uri> {
    uri.path_and_query()?.as_str().parse().ok()
}

fn headers(text: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// Written apart from `core::classify` on purpose: the same rule, read
/// from RFC 3986 §5.2.4 rather than from the code under test.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

fn has_encoded_separator(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2f") || lower.contains("%5c") || lower.contains('\\')
}
