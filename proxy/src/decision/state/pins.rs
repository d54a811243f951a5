//! MCP tool pins: the first definition seen of each tool of each MCP
//! server (its fingerprint: name, description, input schema), and the
//! latest one seen when that differs. A changed tool is reported once per
//! new definition; where the catalog enforces pinning its calls are refused
//! until an operator accepts what is served now.
//!
//! Kept in the state store beside tasks and approvals, so every replica
//! sees the same pins and they outlive restarts (in Redis).

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::SystemTime;

use super::redis::RedisPins;
use crate::decision::pins::{ObservedTool, PinError, ToolChange, ToolPin};
use crate::decision::tasks::unix_ms;

pub enum PinStore {
    Memory(RwLock<BTreeMap<(String, String), ToolPin>>),
    Redis(RedisPins),
}

impl PinStore {
    pub fn in_memory() -> PinStore {
        PinStore::Memory(RwLock::default())
    }

    /// Record the definitions `server` listed: a tool never seen is pinned
    /// as it is; the changes returned are the tools whose definition now
    /// differs from their pin and differed otherwise (or not) the last
    /// time, so each new definition is reported once.
    pub async fn observe(
        &self,
        server: &str,
        tools: &[ObservedTool],
    ) -> Result<Vec<ToolChange>, PinError> {
        let now = unix_ms(SystemTime::now());
        match self {
            PinStore::Memory(pins) => {
                let mut pins = pins.write().unwrap_or_else(|e| e.into_inner());
                let mut changes = Vec::new();
                for tool in tools {
                    let key = (server.to_string(), tool.name.clone());
                    let pin = pins.entry(key).or_insert_with(|| ToolPin {
                        server: server.to_string(),
                        name: tool.name.clone(),
                        pinned: tool.fingerprint.clone(),
                        seen: tool.fingerprint.clone(),
                        pinned_ms: now,
                        changed_ms: 0,
                    });
                    if let Some(change) = see(pin, &tool.fingerprint, now) {
                        changes.push(change);
                    }
                }
                Ok(changes)
            }
            PinStore::Redis(r) => r.observe(server, tools, now).await,
        }
    }

    /// The pin of `server`'s tool `name`, if a definition was ever seen.
    pub async fn get(&self, server: &str, name: &str) -> Result<Option<ToolPin>, PinError> {
        match self {
            PinStore::Memory(pins) => Ok(pins
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(server.to_string(), name.to_string()))
                .cloned()),
            PinStore::Redis(r) => r.get(server, name).await,
        }
    }

    /// Every pin, by server and name.
    pub async fn list(&self) -> Result<Vec<ToolPin>, PinError> {
        let mut all = match self {
            PinStore::Memory(pins) => pins
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect(),
            PinStore::Redis(r) => r.list().await?,
        };
        all.sort_by(|a, b| (&a.server, &a.name).cmp(&(&b.server, &b.name)));
        Ok(all)
    }

    /// Pin what `server` serves as `name` now. With `expected`, only if
    /// that is what it serves: an operator accepts the definition they
    /// looked at, not one that changed again meanwhile.
    pub async fn accept(
        &self,
        server: &str,
        name: &str,
        expected: Option<&str>,
    ) -> Result<ToolPin, PinError> {
        let now = unix_ms(SystemTime::now());
        match self {
            PinStore::Memory(pins) => {
                let mut pins = pins.write().unwrap_or_else(|e| e.into_inner());
                let pin = pins
                    .get_mut(&(server.to_string(), name.to_string()))
                    .ok_or_else(|| PinError::NotFound(server.to_string(), name.to_string()))?;
                accept(pin, expected, now)?;
                Ok(pin.clone())
            }
            PinStore::Redis(r) => r.accept(server, name, expected, now).await,
        }
    }
}

/// `pin` after `fingerprint` was seen at `now`; the change to report, if
/// this definition is new and not the pinned one.
fn see(pin: &mut ToolPin, fingerprint: &str, now: i64) -> Option<ToolChange> {
    if pin.seen == fingerprint {
        return None;
    }
    pin.seen = fingerprint.to_string();
    if pin.pinned == fingerprint {
        pin.changed_ms = 0;
        return None;
    }
    pin.changed_ms = now;
    Some(ToolChange {
        name: pin.name.clone(),
        pinned: pin.pinned.clone(),
        seen: pin.seen.clone(),
    })
}

fn accept(pin: &mut ToolPin, expected: Option<&str>, now: i64) -> Result<(), PinError> {
    if let Some(expected) = expected.filter(|e| *e != pin.seen) {
        return Err(PinError::Conflict {
            name: pin.name.clone(),
            seen: pin.seen.clone(),
            expected: expected.to_string(),
        });
    }
    if pin.changed() {
        pin.pinned = pin.seen.clone();
        pin.pinned_ms = now;
        pin.changed_ms = 0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, fingerprint: &str) -> ObservedTool {
        ObservedTool {
            name: name.into(),
            fingerprint: fingerprint.into(),
        }
    }

    #[tokio::test]
    async fn a_changed_definition_is_reported_once_and_refused_until_accepted() {
        let pins = PinStore::in_memory();
        assert!(pins
            .observe("s", &[tool("a", "1")])
            .await
            .unwrap()
            .is_empty());
        assert!(!pins.get("s", "a").await.unwrap().unwrap().changed());
        // Changed: reported once, however often it is listed.
        let changes = pins.observe("s", &[tool("a", "2")]).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].pinned.as_str(), changes[0].seen.as_str()),
            ("1", "2")
        );
        assert!(pins
            .observe("s", &[tool("a", "2")])
            .await
            .unwrap()
            .is_empty());
        assert!(pins.get("s", "a").await.unwrap().unwrap().changed());
        // Another server's tool of the same name is its own.
        assert!(pins
            .observe("t", &[tool("a", "9")])
            .await
            .unwrap()
            .is_empty());
        // Accepting what was looked at, not what is served now, fails.
        assert!(matches!(
            pins.accept("s", "a", Some("3")).await,
            Err(PinError::Conflict { .. })
        ));
        let accepted = pins.accept("s", "a", Some("2")).await.unwrap();
        assert!(!accepted.changed() && accepted.pinned == "2");
        // Back to the old definition: that is a change from the new pin.
        assert_eq!(pins.observe("s", &[tool("a", "1")]).await.unwrap().len(), 1);
        assert!(matches!(
            pins.accept("s", "b", None).await,
            Err(PinError::NotFound(..))
        ));
        assert_eq!(pins.list().await.unwrap().len(), 2);
    }

    #[test]
    fn a_pin_reads_back_as_written_and_garbage_does_not_read() {
        let pin = ToolPin {
            server: "s".into(),
            name: "a".into(),
            pinned: "ab".into(),
            seen: "cd".into(),
            pinned_ms: 5,
            changed_ms: 7,
        };
        assert_eq!(ToolPin::decode("s", "a", &pin.encode()), Some(pin));
        assert_eq!(ToolPin::decode("s", "a", "ab cd 5"), None);
        assert_eq!(ToolPin::decode("s", "a", "ab cd 5 x"), None);
    }
}
