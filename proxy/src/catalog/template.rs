//! Path and resource templates: `{name}` parameters, `{*name}` catch-alls.

/// `[A-Za-z_][A-Za-z0-9_]*` — what may appear between braces, in paths,
/// hosts and resources alike.
pub(super) fn is_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Pieces of a `{name}`-style template. `allow_catch_all` accepts `{*name}`
/// (its name is returned without the `*`).
fn pieces(text: &str, allow_catch_all: bool) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                out.push(Piece::Literal(rest.into()));
                break;
            }
            Some(i) if rest.as_bytes()[i] == b'}' => {
                return Err(format!("`{text}`: unmatched `}}`"));
            }
            Some(i) => {
                if i > 0 {
                    out.push(Piece::Literal(rest[..i].into()));
                }
                let after = &rest[i + 1..];
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("`{text}`: unclosed `{{`"))?;
                let inner = &after[..end];
                let name = match inner.strip_prefix('*') {
                    Some(name) if allow_catch_all => name,
                    _ => inner,
                };
                if !is_param_name(name) {
                    return Err(format!("`{text}`: bad parameter name `{{{inner}}}`"));
                }
                out.push(Piece::Param(name.into()));
                rest = &after[end + 1..];
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Box<str>),
    Param(Box<str>),
}

/// Check a route path and return its parameter names. The router (matchit)
/// enforces the finer rules — one parameter per segment, catch-all last —
/// when the route is inserted.
pub(super) fn path_params(path: &str) -> Result<Vec<Box<str>>, String> {
    if !path.starts_with('/') {
        return Err(format!("path `{path}` must start with `/`"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
    {
        return Err(format!(
            "path `{path}`: `{}` is not allowed (queries go in `when`)",
            c.escape_debug()
        ));
    }
    let names: Vec<Box<str>> = pieces(path, true)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Param(name) => Some(name),
            Piece::Literal(_) => None,
        })
        .collect();
    let mut sorted: Vec<&str> = names.iter().map(|n| &**n).collect();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("path `{path}`: parameter `{{{}}}` twice", w[0]));
    }
    Ok(names)
}

/// A compiled `resource:` template.
#[derive(Debug, Clone)]
pub(super) struct ResourceTemplate {
    /// `<tool>` or `<tool>/`, so expansion is one push per piece.
    prefix: Box<str>,
    pieces: Vec<Piece>,
}

impl ResourceTemplate {
    /// `known` says whether a parameter name can be filled at match time.
    pub fn parse(
        tool: &str,
        text: Option<&str>,
        known: impl Fn(&str) -> bool,
    ) -> Result<ResourceTemplate, String> {
        let Some(text) = text else {
            return Ok(ResourceTemplate {
                prefix: tool.into(),
                pieces: Vec::new(),
            });
        };
        if text.is_empty() || text.starts_with('/') || text.ends_with('/') {
            return Err(format!(
                "resource `{text}`: must be non-empty, without leading or trailing `/` (`{tool}/` is prepended)"
            ));
        }
        let pieces = pieces(text, true).map_err(|e| format!("resource {e}"))?;
        for piece in &pieces {
            if let Piece::Param(name) = piece {
                if !known(name) {
                    return Err(format!(
                        "resource `{text}`: unknown parameter `{{{name}}}` (not in the path, nor captured by every host of the endpoint)"
                    ));
                }
            }
        }
        Ok(ResourceTemplate {
            prefix: format!("{tool}/").into(),
            pieces,
        })
    }

    /// The parameters the template fills, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Param(name) => Some(&**name),
            Piece::Literal(_) => None,
        })
    }

    /// Values are used as they arrived (still percent-encoded): a resource
    /// names exactly what was on the wire, and decoding here would let
    /// `%2F` forge extra path segments in the resource.
    pub fn expand<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
        let mut out = String::with_capacity(self.prefix.len() + 32);
        out.push_str(&self.prefix);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                // Compile-time checks guarantee the value exists.
                Piece::Param(name) => out.push_str(lookup(name).unwrap_or_default()),
            }
        }
        out
    }
}
