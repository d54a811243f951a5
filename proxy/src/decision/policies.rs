//! Policy files → one Cedar `PolicySet`, with every policy's id and source
//! location kept so errors and decisions can point at `file:line:column`.
//!
//! Cedar's public API does not expose where a parsed policy starts, so each
//! file is split into statements here (Cedar ends every policy with `;`, and
//! `;` appears nowhere else outside strings and comments) and each statement
//! is parsed on its own, at a known offset.

use std::collections::HashMap;

use cedar_policy::{Policy, PolicyId, PolicySet, ValidationMode, Validator};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// `location` is `file:line:column` when known.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
}

/// What evaluation needs to know about one policy beyond Cedar's AST.
#[derive(Debug, Clone)]
pub(crate) struct PolicyMeta {
    /// Position in load order (files sorted, then source order): decisions
    /// list policy ids in this order so equal requests print equally.
    pub order: usize,
    pub location: String,
    pub reason: Option<String>,
    pub credential: Option<String>,
    /// An approval gate: `forbid (…) unless { context.approved };`.
    pub gate: bool,
}

pub(crate) struct Loaded {
    pub set: PolicySet,
    pub meta: HashMap<PolicyId, PolicyMeta>,
}

/// Parse every source (`(name, text)`, already in load order), give each
/// policy its id, and refuse duplicate ids.
pub(crate) fn parse_sources(sources: &[(String, String)]) -> Result<Loaded, PolicyError> {
    let mut set = PolicySet::new();
    let mut meta: HashMap<PolicyId, PolicyMeta> = HashMap::new();
    for (name, text) in sources {
        // Generated ids use the file name only, so they do not change when
        // the policy directory moves.
        let id_prefix = name.rsplit(['/', '\\']).next().unwrap_or(name);
        let mut previous_line = 0;
        for stmt in statements(text) {
            let (line, column) = line_column(text, stmt.offset);
            // Two policies on one line would share `<file>:<line>`.
            let generated = if line == previous_line {
                format!("{id_prefix}:{line}:{column}")
            } else {
                format!("{id_prefix}:{line}")
            };
            previous_line = line;
            let location = format!("{name}:{line}:{column}");
            let parsed = Policy::parse(None, stmt.text).map_err(|errs| {
                let messages: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
                invalid(&location, messages.join("; "))
            })?;
            let id = match parsed.annotation("id") {
                Some("") => return Err(invalid(&location, "@id must not be empty".into())),
                Some(id) => id.to_string(),
                None => generated,
            };
            let id = PolicyId::new(id);
            if let Some(first) = meta.get(&id) {
                return Err(invalid(
                    &location,
                    format!(
                        "duplicate policy id `{id}` (first used at {})",
                        first.location
                    ),
                ));
            }
            let policy = parsed.new_id(id.clone());
            let annotation = |key: &str| policy.annotation(key).map(str::to_string);
            let gate = approval_gate(&policy).map_err(|message| invalid(&location, message))?;
            if gate && annotation("credential").is_some() {
                return Err(invalid(
                    &location,
                    "an approval gate is a forbid and cannot name a @credential".into(),
                ));
            }
            let entry = PolicyMeta {
                order: meta.len(),
                location: location.clone(),
                reason: annotation("reason"),
                credential: annotation("credential"),
                gate,
            };
            set.add(policy)
                .map_err(|e| invalid(&location, e.to_string()))?;
            meta.insert(id, entry);
        }
    }
    Ok(Loaded { set, meta })
}

/// Whether `policy` is an approval gate. `context.approved` is true only
/// when a person approved the exact call, so it may appear in one form
/// alone: a forbid's `unless { context.approved }`. Anything else reading it
/// (a permit that approval would widen, `when { context.approved }`, a
/// gate mixed into a larger expression) is refused at load, because
/// approval would then mean something no one reviewing the policy expects.
fn approval_gate(policy: &Policy) -> Result<bool, String> {
    const FORM: &str = "`context.approved` may only be used as an approval gate: \
                        `forbid (…) unless { context.approved };` (see docs/approvals.md)";
    let Ok(est) = policy.to_json() else {
        return Ok(false);
    };
    let mentions = reads_approved(&est);
    if mentions == 0 {
        return Ok(false);
    }
    let forbid = est.get("effect").and_then(|e| e.as_str()) == Some("forbid");
    let gates = est
        .get("conditions")
        .and_then(|c| c.as_array())
        .map_or(0, |conditions| {
            conditions
                .iter()
                .filter(|c| {
                    c.get("kind").and_then(|k| k.as_str()) == Some("unless")
                        && c.get("body").is_some_and(is_approved_access)
                })
                .count()
        });
    if forbid && gates == 1 && mentions == 1 {
        Ok(true)
    } else {
        Err(FORM.into())
    }
}

/// `context.approved` (or `context["approved"]`) itself.
fn is_approved_access(expr: &serde_json::Value) -> bool {
    expr.get(".").is_some_and(|access| {
        access.get("attr").and_then(|a| a.as_str()) == Some("approved")
            && access.get("left") == Some(&serde_json::json!({"Var": "context"}))
    })
}

/// How many times a policy (as Cedar's JSON form) reads or tests
/// `context.approved`.
fn reads_approved(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => {
            let here = [".", "has"].iter().any(|op| {
                map.get(*op).is_some_and(|access| {
                    access.get("attr").and_then(|a| a.as_str()) == Some("approved")
                        && access.get("left") == Some(&serde_json::json!({"Var": "context"}))
                })
            });
            usize::from(here) + map.values().map(reads_approved).sum::<usize>()
        }
        serde_json::Value::Array(items) => items.iter().map(reads_approved).sum(),
        _ => 0,
    }
}

/// Strict validation; the first error in load order is reported at its
/// policy. Cedar repeats one mistake once per action a policy could apply to,
/// so the rest are summarised as the number of other policies that fail.
pub(crate) fn validate(loaded: &Loaded, validator: &Validator) -> Result<(), PolicyError> {
    let result = validator.validate(&loaded.set, ValidationMode::Strict);
    let mut errors: Vec<_> = result
        .validation_errors()
        .map(|e| (e.policy_id(), e.to_string()))
        .collect();
    let order = |id: &PolicyId| loaded.meta.get(id).map_or(usize::MAX, |m| m.order);
    // Cedar's order within a policy is not stable; sorting keeps the
    // reported error the same from one run to the next.
    errors.sort_by(|a, b| (order(a.0), &a.1).cmp(&(order(b.0), &b.1)));
    let Some((id, message)) = errors.first() else {
        return Ok(());
    };
    let location = loaded
        .meta
        .get(*id)
        .map_or_else(|| "policies".to_string(), |m| m.location.clone());
    let detail = message
        .strip_prefix(&format!("for policy `{id}`, "))
        .unwrap_or(message);
    let mut message = format!("policy `{id}`: {detail}");
    let mut failing: Vec<&PolicyId> = errors.iter().map(|(id, _)| *id).collect();
    failing.dedup();
    if failing.len() > 1 {
        let more = failing.len() - 1;
        let noun = if more == 1 { "policy" } else { "policies" };
        message.push_str(&format!(" (and errors in {more} more {noun})"));
    }
    Err(PolicyError::Invalid { location, message })
}

fn invalid(location: &str, message: String) -> PolicyError {
    PolicyError::Invalid {
        location: location.to_string(),
        message,
    }
}

/// One policy's text and the byte offset where it starts (its first
/// annotation or `permit`/`forbid`, after whitespace and comments).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Statement<'a> {
    pub offset: usize,
    pub text: &'a str,
}

/// Split Cedar policy text at the `;` that ends each policy. Text after the
/// last `;` that is not blank is returned too, so Cedar reports what is wrong
/// with it instead of it being silently dropped.
pub(super) fn statements(src: &str) -> Vec<Statement<'_>> {
    #[derive(PartialEq)]
    enum State {
        Code,
        Str,
        Comment,
    }
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut state = State::Code;
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match state {
            State::Str => match b {
                b'\\' => i += 1,
                b'"' => state = State::Code,
                _ => {}
            },
            State::Comment => {
                if b == b'\n' {
                    state = State::Code;
                }
            }
            State::Code => match b {
                b'/' if bytes.get(i + 1) == Some(&b'/') => state = State::Comment,
                b if b.is_ascii_whitespace() => {}
                _ => {
                    let s = *start.get_or_insert(i);
                    match b {
                        b'"' => state = State::Str,
                        b';' => {
                            out.push(Statement {
                                offset: s,
                                text: &src[s..=i],
                            });
                            start = None;
                        }
                        _ => {}
                    }
                }
            },
        }
        i += 1;
    }
    if let Some(s) = start {
        out.push(Statement {
            offset: s,
            text: &src[s..],
        });
    }
    out
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    (line, before[line_start..].chars().count() + 1)
}
