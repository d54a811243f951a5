//! The `credentials:` section: named secrets tollgate injects, where each
//! comes from, how it travels and which catalog tools it may be sent to.

use std::collections::BTreeMap;

use super::ctx::Ctx;
use super::{
    raw, BoundService, ConfigError, CredentialConfig, CredentialInjection, CredentialSource,
    DEFAULT_CREDENTIAL_KEY, DEFAULT_HEADER_TEMPLATE,
};

pub(super) fn credentials(
    raw: BTreeMap<String, raw::RawCredential>,
    ctx: &Ctx,
) -> Result<BTreeMap<String, CredentialConfig>, ConfigError> {
    let mut credentials = BTreeMap::new();
    for (name, c) in raw {
        let credential = credential(&name, c, ctx)
            .map_err(|message| ctx.invalid(&format!("credentials.{name}"), message))?;
        credentials.insert(name, credential);
    }
    Ok(credentials)
}

/// Validate one `credentials:` entry; the error is a message for its field.
fn credential(name: &str, c: raw::RawCredential, ctx: &Ctx) -> Result<CredentialConfig, String> {
    if name.is_empty() {
        return Err("a credential needs a name".into());
    }
    let raw::RawCredential {
        env,
        file: from_file,
        dir,
        key,
        inject,
        header,
        services,
    } = c;
    let key_given = key.is_some();
    let source = match (env, from_file, dir) {
        (Some(var), None, None) if !var.is_empty() => CredentialSource::Env(var),
        (None, Some(f), None) => CredentialSource::File(ctx.resolve_path(&f)),
        (None, None, Some(d)) => {
            let key = key.unwrap_or_else(|| DEFAULT_CREDENTIAL_KEY.into());
            // A key is one file name inside the mounted folder, never a path out of it.
            if key.is_empty() || key.contains('/') || key == "." || key == ".." {
                return Err(format!("`key: {key}` is not a file name"));
            }
            CredentialSource::Dir {
                path: ctx.resolve_path(&d),
                key,
            }
        }
        _ => return Err("give exactly one of `env`, `file` or `dir`".into()),
    };
    if key_given && !matches!(source, CredentialSource::Dir { .. }) {
        return Err("`key` only applies to a `dir` source".into());
    }
    let injection = match (inject, header) {
        (Some(_), Some(_)) => return Err("give `inject` or `header`, not both".into()),
        (None, Some(name)) => raw::RawInjection::Header {
            name,
            template: None,
        },
        (Some(inject), None) => inject,
        (None, None) => raw::RawInjection::Bearer,
    };
    let injection = match injection {
        raw::RawInjection::Bearer => CredentialInjection::Bearer,
        raw::RawInjection::Basic => CredentialInjection::Basic,
        raw::RawInjection::Header { name, template } => {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("`{name}` is not a header name"));
            }
            let template = template.unwrap_or_else(|| DEFAULT_HEADER_TEMPLATE.into());
            if !template.contains("{value}") {
                return Err(format!("template `{template}` has no `{{value}}`"));
            }
            CredentialInjection::Header {
                name: name.to_ascii_lowercase(),
                template,
            }
        }
        raw::RawInjection::Query { param } => {
            if param.is_empty()
                || param
                    .bytes()
                    .any(|b| b.is_ascii_control() || b" &=#%+".contains(&b))
            {
                return Err(format!("`{param}` is not a query parameter name"));
            }
            CredentialInjection::Query { param }
        }
    };
    if key_given && injection == CredentialInjection::Basic {
        return Err("`basic` reads `username` and `password` from `dir`; drop `key`".into());
    }
    if services.is_empty() {
        return Err("`services` must name at least one catalog tool".into());
    }
    let file = &ctx.file;
    let services = services
        .into_iter()
        .map(|s| BoundService {
            at: format!("{file}:{}:{}", s.referenced.line(), s.referenced.column()),
            tool: s.value,
        })
        .collect();
    Ok(CredentialConfig {
        source,
        injection,
        services,
    })
}
