//! Who may approve: the approvers configuration names, each known by a
//! token. One check for every front that takes an approver's token (the
//! gRPC API's bearer metadata, the console's login form), so none of them
//! can disagree about what a token proves.

use crate::config::ApproverConfig;

use super::tasks::{TokenHash, TOKEN_PREFIX};

/// Why a token could not be checked at all, as opposed to matching nobody.
#[derive(Debug, thiserror::Error)]
pub enum ApproverError {
    /// A workload's task token: refused before any comparison, so an agent
    /// can never approve, whatever the configuration says.
    #[error("a task token cannot approve: approvals need an approver's token")]
    TaskToken,
    #[error("an approver token cannot be read")]
    Unreadable,
}

/// The approver whose token `presented` is, if any. Compared as SHA-256
/// digests, so timing says nothing about the tokens; every approver is
/// compared, so timing does not say which one matched either.
pub fn approver_of(
    approvers: &[ApproverConfig],
    presented: &str,
) -> Result<Option<String>, ApproverError> {
    if presented.starts_with(TOKEN_PREFIX) {
        return Err(ApproverError::TaskToken);
    }
    let presented = TokenHash::of(presented);
    let mut found = None;
    for approver in approvers {
        let expected = approver.token.read().map_err(|e| {
            tracing::error!(approver = %approver.name, error = %e, "approver token unreadable");
            ApproverError::Unreadable
        })?;
        if TokenHash::of(expected.trim()) == presented && found.is_none() {
            found = Some(approver.name.clone());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;

    fn approvers(dir: &std::path::Path) -> Vec<ApproverConfig> {
        ["alice", "bob"]
            .iter()
            .map(|name| {
                let file = dir.join(name);
                std::fs::write(&file, format!("{name}-token-0123456789\n")).unwrap();
                ApproverConfig {
                    name: (*name).to_string(),
                    token: SecretSource::File(file),
                }
            })
            .collect()
    }

    #[test]
    fn a_token_names_its_approver_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let all = approvers(dir.path());
        let named = |token: &str| approver_of(&all, token);
        assert_eq!(
            named("bob-token-0123456789").unwrap().as_deref(),
            Some("bob")
        );
        assert_eq!(named("bob-token-012345678").unwrap(), None);
        assert_eq!(named("").unwrap(), None);
        assert!(matches!(
            named("tgt_bob-token-0123456789"),
            Err(ApproverError::TaskToken)
        ));
    }
}
