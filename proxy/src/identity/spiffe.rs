//! SPIFFE IDs as the SPIFFE ID specification defines them:
//! `spiffe://<trust domain><path>`, checked once when an identity is
//! verified so everything downstream can take the parts as given.

use std::fmt;
use std::sync::Arc;

/// The longest SPIFFE ID accepted: the specification's limit for URIs.
const MAX_LEN: usize = 2048;

/// A valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    id: Arc<str>,
    /// Where the path starts in `id` (after `spiffe://<trust domain>`).
    path_at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SPIFFE ID: {0}")]
pub struct SpiffeIdError(&'static str);

impl SpiffeId {
    pub fn parse(id: &str) -> Result<SpiffeId, SpiffeIdError> {
        if id.len() > MAX_LEN {
            return Err(SpiffeIdError("longer than 2048 bytes"));
        }
        let rest = id
            .strip_prefix("spiffe://")
            .ok_or(SpiffeIdError("the scheme must be `spiffe://`"))?;
        let domain_len = rest.find('/').unwrap_or(rest.len());
        let (domain, path) = rest.split_at(domain_len);
        check_trust_domain(domain)?;
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                check_segment(segment)?;
            }
        }
        Ok(SpiffeId {
            id: id.into(),
            path_at: "spiffe://".len() + domain_len,
        })
    }

    /// An ID built from its parts (a trust domain and path segments), each
    /// checked like a parsed one.
    pub fn from_parts(trust_domain: &str, segments: &[&str]) -> Result<SpiffeId, SpiffeIdError> {
        let mut id = format!("spiffe://{trust_domain}");
        for segment in segments {
            // Checked alone, so a `/` inside one cannot make two.
            check_segment(segment)?;
            id.push('/');
            id.push_str(segment);
        }
        SpiffeId::parse(&id)
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn as_arc(&self) -> &Arc<str> {
        &self.id
    }

    pub fn trust_domain(&self) -> &str {
        &self.id["spiffe://".len()..self.path_at]
    }

    /// `""` or `/seg/…`.
    pub fn path(&self) -> &str {
        &self.id[self.path_at..]
    }

    /// The namespace of a path that *starts* with `/ns/<namespace>`: the
    /// Kubernetes convention, also for longer paths.
    pub fn namespace(&self) -> Option<&str> {
        let mut segments = self.path().strip_prefix('/')?.split('/');
        match (segments.next(), segments.next()) {
            (Some("ns"), Some(ns)) => Some(ns),
            _ => None,
        }
    }

    /// The namespace and service account of the Kubernetes layout
    /// `/ns/<namespace>/sa/<service account>`; `None` for any other path,
    /// so an ID of another shape is never placed in a namespace by accident.
    pub fn kubernetes(&self) -> Option<(&str, &str)> {
        let mut segments = self.path().strip_prefix('/')?.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Lowercase letters, digits, `.`, `-` and `_`; not empty. (Uppercase,
/// a port or user info are refused, not folded.)
fn check_trust_domain(domain: &str) -> Result<(), SpiffeIdError> {
    if domain.is_empty() {
        return Err(SpiffeIdError("the trust domain is empty"));
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(SpiffeIdError(
            "the trust domain may hold only lowercase letters, digits, `.`, `-` and `_`",
        ));
    }
    Ok(())
}

fn check_segment(segment: &str) -> Result<(), SpiffeIdError> {
    match segment {
        "" => Err(SpiffeIdError(
            "the path has an empty segment or a trailing `/`",
        )),
        "." | ".." => Err(SpiffeIdError("the path has a `.` or `..` segment")),
        s if s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(SpiffeIdError(
            "a path segment may hold only letters, digits, `.`, `-` and `_`",
        )),
    }
}

/// A trust domain as configuration names it: checked like the one in an ID.
pub fn valid_trust_domain(domain: &str) -> Result<(), SpiffeIdError> {
    check_trust_domain(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_kubernetes_id() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/agents/sa/coder").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.path(), "/ns/agents/sa/coder");
        assert_eq!(id.kubernetes(), Some(("agents", "coder")));
        let other = SpiffeId::parse("spiffe://td/ns/agents/sa/coder/extra").unwrap();
        assert_eq!(other.kubernetes(), None);
        assert_eq!(other.namespace(), Some("agents"));
        let elsewhere = SpiffeId::parse("spiffe://td/sa/x/ns/y").unwrap();
        assert_eq!(
            (elsewhere.namespace(), elsewhere.kubernetes()),
            (None, None)
        );
        assert_eq!(SpiffeId::parse("spiffe://td").unwrap().path(), "");
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "http://td/x",
            "spiffe://",
            "spiffe:///x",
            "spiffe://TD/x",
            "spiffe://td:8080/x",
            "spiffe://user@td/x",
            "spiffe://td/",
            "spiffe://td//x",
            "spiffe://td/x/../y",
            "spiffe://td/x?q=1",
            "spiffe://td/x#f",
            "spiffe://td/a b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(SpiffeId::parse(&format!("spiffe://td/{}", "a".repeat(2100))).is_err());
    }

    #[test]
    fn built_from_parts() {
        let id = SpiffeId::from_parts("cluster.local", &["ns", "agents", "sa", "coder"]).unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/agents/sa/coder");
        assert!(SpiffeId::from_parts("cluster.local", &["ns", "a/b"]).is_err());
    }
}
