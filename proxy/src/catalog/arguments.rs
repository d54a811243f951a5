//! The arguments of an MCP tool the catalog declares (`arguments:`), which
//! policies see as `context.arguments` with Cedar types.
//!
//! Policies are validated against a strict schema, so only declared
//! arguments can be named, each with one type. A call whose declared
//! arguments do not have those types is refused rather than decided on a
//! guess: Cedar skips a policy whose condition fails to evaluate, and a
//! `forbid` skipped that way would let the call through.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Where a call's arguments are looked up by name: a whole parsed object,
/// or only the few members naming read (`core::mcp`'s list, which builds
/// no map for two or three lookups).
pub trait Given {
    fn argument(&self, name: &str) -> Option<&Value>;
}

impl Given for Map<String, Value> {
    fn argument(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

/// The Cedar type of one declared argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgumentType {
    String,
    Long,
    Bool,
    StringSet,
    LongSet,
}

impl ArgumentType {
    /// The catalog's spelling (`string`, `long`, `bool`, `set<string>`,
    /// `set<long>`).
    fn parse(text: &str) -> Option<ArgumentType> {
        Some(match text {
            "string" => ArgumentType::String,
            "long" => ArgumentType::Long,
            "bool" => ArgumentType::Bool,
            "set<string>" => ArgumentType::StringSet,
            "set<long>" => ArgumentType::LongSet,
            _ => return None,
        })
    }

    /// The type in Cedar's schema syntax.
    pub fn cedar(self) -> &'static str {
        match self {
            ArgumentType::String => "String",
            ArgumentType::Long => "Long",
            ArgumentType::Bool => "Bool",
            ArgumentType::StringSet => "Set<String>",
            ArgumentType::LongSet => "Set<Long>",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            ArgumentType::String => "a string",
            ArgumentType::Long => "an integer",
            ArgumentType::Bool => "true or false",
            ArgumentType::StringSet => "an array of strings",
            ArgumentType::LongSet => "an array of integers",
        }
    }

    fn read(self, value: &Value) -> Option<ArgumentValue> {
        let long = |v: &Value| v.as_i64();
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let all = |f: &dyn Fn(&Value) -> bool| {
            value
                .as_array()
                .filter(|items| items.iter().all(f))
                .map(Vec::as_slice)
        };
        Some(match self {
            ArgumentType::String => ArgumentValue::String(text(value)?),
            ArgumentType::Long => ArgumentValue::Long(long(value)?),
            ArgumentType::Bool => ArgumentValue::Bool(value.as_bool()?),
            ArgumentType::StringSet => {
                ArgumentValue::StringSet(all(&|v| v.is_string())?.iter().filter_map(text).collect())
            }
            ArgumentType::LongSet => {
                ArgumentValue::LongSet(all(&|v| v.is_i64())?.iter().filter_map(long).collect())
            }
        })
    }
}

/// One declared argument's value in a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgumentValue {
    String(String),
    Long(i64),
    Bool(bool),
    StringSet(Vec<String>),
    LongSet(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Argument {
    pub name: Box<str>,
    pub ty: ArgumentType,
    /// Declared with a trailing `?`: the call may leave it out, and a
    /// policy tests it with `context.arguments has <name>`.
    pub optional: bool,
}

/// A tool's declared arguments, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Arguments(Arc<[Argument]>);

/// Why a call's arguments do not match their declaration. It names the
/// argument, never its value (which may be a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    #[error("the arguments must be a JSON object")]
    NotAnObject,
    #[error("argument `{0}` is required by the catalog and missing")]
    Missing(Box<str>),
    #[error("argument `{name}` must be {expected}")]
    WrongType {
        name: Box<str>,
        expected: &'static str,
    },
}

impl Arguments {
    /// From the catalog's `arguments:` map: name → type, `?` after the type
    /// for an optional one.
    pub(super) fn parse(declared: &BTreeMap<String, String>) -> Result<Arguments, String> {
        let mut arguments = Vec::with_capacity(declared.len());
        for (name, spelled) in declared {
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err(format!(
                    "argument name `{}`: use 1 to 128 characters, none of them control characters",
                    name.escape_debug()
                ));
            }
            let (text, optional) = match spelled.trim().strip_suffix('?') {
                Some(text) => (text.trim_end(), true),
                None => (spelled.trim(), false),
            };
            let ty = ArgumentType::parse(text).ok_or_else(|| {
                format!(
                    "argument `{name}`: type `{spelled}` is not one of string, long, bool, \
                     set<string>, set<long> (with `?` after it when optional)"
                )
            })?;
            arguments.push(Argument {
                name: name.as_str().into(),
                ty,
                optional,
            });
        }
        Ok(Arguments(arguments.into()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Argument> {
        self.0.iter()
    }

    /// The declared arguments of a call, checked against their types.
    /// Arguments the catalog does not declare are left out: no policy can
    /// name them.
    pub fn values<'a>(
        &'a self,
        given: &dyn Given,
    ) -> Result<Vec<(&'a Argument, ArgumentValue)>, ArgumentError> {
        let mut values = Vec::with_capacity(self.0.len());
        for argument in self.iter() {
            match given.argument(&argument.name) {
                None if argument.optional => {}
                None => return Err(ArgumentError::Missing(argument.name.clone())),
                Some(value) => {
                    let read = argument.ty.read(value).ok_or(ArgumentError::WrongType {
                        name: argument.name.clone(),
                        expected: argument.ty.expected(),
                    })?;
                    values.push((argument, read));
                }
            }
        }
        Ok(values)
    }

    /// The declared arguments of a call as one JSON object, keys sorted, for
    /// the decision request: what a remote decision service reads back with
    /// [`Arguments::read`], and a stable key for the decision cache.
    pub fn project(&self, given: &dyn Given) -> Result<String, ArgumentError> {
        self.values(given)?;
        // Written straight out, no map built: declared arguments are kept
        // sorted by name (`parse` reads them from a sorted map).
        let mut json = Vec::with_capacity(64);
        json.push(b'{');
        for argument in self.iter() {
            let Some(value) = given.argument(&argument.name) else {
                continue;
            };
            if json.len() > 1 {
                json.push(b',');
            }
            serde_json::to_writer(&mut json, &*argument.name)
                .and_then(|()| {
                    json.push(b':');
                    serde_json::to_writer(&mut json, value)
                })
                .map_err(|_| ArgumentError::NotAnObject)?;
        }
        json.push(b'}');
        String::from_utf8(json).map_err(|_| ArgumentError::NotAnObject)
    }

    /// The arguments a decision request carries, as [`Arguments::project`]
    /// wrote them (or a peer did: checked again, against this catalog).
    pub fn read(&self, json: &str) -> Result<Vec<(&Argument, ArgumentValue)>, ArgumentError> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(given)) => self.values(&given),
            _ => Err(ArgumentError::NotAnObject),
        }
    }
}
