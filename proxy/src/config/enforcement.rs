//! The `enforcement:` section: whether policy denials are enforced or only
//! reported (`would_deny`, and the request forwarded), for every tool or
//! for some. For rolling out a new deny rule: watch what it would deny,
//! then enforce it (docs/report-mode.md).

use std::collections::BTreeMap;

use super::ctx::Ctx;
use super::{raw, ConfigError};

/// The key of `enforcement.tools` that names hosts the catalog does not
/// cover (the built-in `connect` action). No catalog tool may be called so.
pub const CONNECT_TOOL: &str = "connect";

/// What a policy denial does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EnforcementMode {
    /// Refused, as policy says.
    #[default]
    Enforce,
    /// Audited as `would_deny` and forwarded.
    Report,
}

impl EnforcementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementMode::Enforce => "enforce",
            EnforcementMode::Report => "report",
        }
    }
}

/// One tool's mode, with where the file sets it (`file:line:column`) for
/// load errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolEnforcement {
    pub mode: EnforcementMode,
    pub at: String,
}

/// `enforcement:`. Empty (the default): every denial is enforced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforcement {
    /// For every tool the file does not name.
    pub mode: EnforcementMode,
    /// Catalog tool (or [`CONNECT_TOOL`]) → its own mode, over `mode`.
    pub tools: BTreeMap<String, ToolEnforcement>,
}

impl Enforcement {
    /// The mode for requests to `tool`: its own, or the global one. `""`
    /// (a host the catalog does not cover) is [`CONNECT_TOOL`].
    pub fn mode_for(&self, tool: &str) -> EnforcementMode {
        let key = if tool.is_empty() { CONNECT_TOOL } else { tool };
        self.tools.get(key).map_or(self.mode, |t| t.mode)
    }

    /// The tools whose denials are only reported, `*` standing for every
    /// other tool when that is the global mode: for the log line that
    /// tells an operator enforcement is partly off.
    pub fn reported(&self) -> Vec<&str> {
        let mut tools: Vec<&str> = self
            .tools
            .iter()
            .filter(|(_, t)| t.mode == EnforcementMode::Report)
            .map(|(name, _)| name.as_str())
            .collect();
        if self.mode == EnforcementMode::Report {
            tools.push("*");
        }
        tools
    }

    /// Every tool named exists in the catalog (`is_tool` answers for the
    /// loaded one): a typo would otherwise leave the tool enforced, or in
    /// report mode, without anyone noticing.
    pub fn check_tools(&self, is_tool: impl Fn(&str) -> bool) -> Result<(), ConfigError> {
        for (name, tool) in &self.tools {
            if name != CONNECT_TOOL && !is_tool(name) {
                return Err(ConfigError::At {
                    location: tool.at.clone(),
                    message: format!(
                        "enforcement.tools: `{name}` is not a tool in the catalog \
                         (or `{CONNECT_TOOL}` for hosts it does not cover)"
                    ),
                });
            }
        }
        Ok(())
    }
}

fn mode(raw: raw::RawEnforcementMode) -> EnforcementMode {
    match raw {
        raw::RawEnforcementMode::Enforce => EnforcementMode::Enforce,
        raw::RawEnforcementMode::Report => EnforcementMode::Report,
    }
}

pub(super) fn section(raw: raw::RawEnforcement, ctx: &Ctx) -> Enforcement {
    let file = &ctx.file;
    Enforcement {
        mode: raw.mode.map_or(EnforcementMode::default(), mode),
        tools: raw
            .tools
            .into_iter()
            .map(|(name, m)| {
                let at = format!("{file}:{}:{}", m.referenced.line(), m.referenced.column());
                (
                    name,
                    ToolEnforcement {
                        mode: mode(m.value),
                        at,
                    },
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(mode: EnforcementMode) -> ToolEnforcement {
        ToolEnforcement {
            mode,
            at: "t.yaml:1:1".into(),
        }
    }

    #[test]
    fn a_tools_own_mode_wins_over_the_global_one() {
        use EnforcementMode::*;
        let mut e = Enforcement::default();
        assert_eq!(e.mode_for("github"), Enforce, "enforced unless told");
        e.tools.insert("slack".into(), tool(Report));
        assert_eq!(e.mode_for("slack"), Report);
        assert_eq!(e.mode_for("github"), Enforce);
        assert_eq!(e.reported(), ["slack"]);

        e.mode = Report;
        e.tools.insert("github".into(), tool(Enforce));
        assert_eq!(
            e.mode_for("github"),
            Enforce,
            "a tool enforced in report mode"
        );
        assert_eq!(e.mode_for("s3"), Report);
        assert_eq!(e.reported(), ["slack", "*"]);
    }

    #[test]
    fn uncovered_hosts_answer_to_the_connect_key() {
        let mut e = Enforcement::default();
        assert_eq!(e.mode_for(""), EnforcementMode::Enforce);
        e.tools
            .insert(CONNECT_TOOL.into(), tool(EnforcementMode::Report));
        assert_eq!(e.mode_for(""), EnforcementMode::Report);
        assert_eq!(e.mode_for("github"), EnforcementMode::Enforce);
    }

    #[test]
    fn the_section_reads_from_the_file_with_where_each_tool_is() {
        let text = "enforcement:\n  mode: report\n  tools:\n    github: enforce\n";
        let raw: super::super::RawConfig = super::super::yaml::parse("t.yaml", text).unwrap();
        let c = super::super::Config::from_raw(std::path::Path::new("t.yaml"), raw).unwrap();
        assert_eq!(c.enforcement.mode, EnforcementMode::Report);
        let github = &c.enforcement.tools["github"];
        assert_eq!(github.mode, EnforcementMode::Enforce);
        assert_eq!(github.at, "t.yaml:4:13");
        let empty = super::super::yaml::parse("t.yaml", "{}").unwrap();
        let c = super::super::Config::from_raw(std::path::Path::new("t.yaml"), empty).unwrap();
        assert_eq!(c.enforcement, Enforcement::default(), "enforced by default");
        for bad in [
            "enforcement: { mode: dry_run }",
            "enforcement: { tools: { github: off } }",
            "enforcement: { enforce: true }",
        ] {
            let parsed: Result<super::super::RawConfig, _> =
                super::super::yaml::parse("t.yaml", bad);
            assert!(parsed.is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_tools_are_refused_at_their_line() {
        let mut e = Enforcement::default();
        e.tools
            .insert(CONNECT_TOOL.into(), tool(EnforcementMode::Report));
        e.tools
            .insert("github".into(), tool(EnforcementMode::Report));
        assert!(e.check_tools(|t| t == "github").is_ok());
        e.tools.insert(
            "gihtub".into(),
            ToolEnforcement {
                mode: EnforcementMode::Report,
                at: "t.yaml:7:13".into(),
            },
        );
        let err = e.check_tools(|t| t == "github").unwrap_err().to_string();
        assert!(err.starts_with("t.yaml:7:13: "), "{err}");
        assert!(err.contains("`gihtub` is not a tool"), "{err}");
    }
}
