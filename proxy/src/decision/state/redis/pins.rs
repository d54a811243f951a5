//! MCP tool pins in Redis, shared by every decision replica.
//!
//! Keys:
//! - `P:pins:<server>`: a hash, tool name → `pinned seen pinned_ms
//!   changed_ms` ([`ToolPin::encode`]).
//! - `P:pins`: the set of servers with pins, for listing.
//!
//! A listing is recorded by one script, so replicas seeing the same change
//! at once report it once.

use std::collections::HashMap;
use std::sync::Arc;

use redis::Script;

use super::RedisStore;
use crate::decision::pins::{ObservedTool, PinError, ToolChange, ToolPin};

/// ARGV: now, then name and fingerprint of each tool listed. A tool never
/// seen is pinned; one whose definition differs from the last one seen is
/// updated, and returned when that is not its pin. Returns the changes as
/// `{name, pinned, seen, …}`.
const OBSERVE: &str = r"
redis.call('SADD', KEYS[2], ARGV[2])
local changes = {}
for i = 3, #ARGV, 2 do
  local name, seen = ARGV[i], ARGV[i + 1]
  local pin = redis.call('HGET', KEYS[1], name)
  if not pin then
    redis.call('HSET', KEYS[1], name, seen .. ' ' .. seen .. ' ' .. ARGV[1] .. ' 0')
  else
    local pinned, last, pinned_ms = string.match(pin, '^(%x+) (%x+) (%d+) %d+$')
    if not pinned then
      return redis.error_reply('unreadable pin of ' .. name)
    end
    if last ~= seen then
      local changed_ms = '0'
      if pinned ~= seen then
        changed_ms = ARGV[1]
        table.insert(changes, name)
        table.insert(changes, pinned)
        table.insert(changes, seen)
      end
      redis.call('HSET', KEYS[1], name, pinned .. ' ' .. seen .. ' ' .. pinned_ms .. ' ' .. changed_ms)
    end
  end
end
return changes
";

/// ARGV: name, now, the fingerprint expected or ''. Returns the pin
/// after, `{'conflict', seen}`, or `{'missing'}`.
const ACCEPT: &str = r"
local pin = redis.call('HGET', KEYS[1], ARGV[1])
if not pin then
  return {'missing'}
end
local pinned, seen, pinned_ms, changed_ms = string.match(pin, '^(%x+) (%x+) (%d+) (%d+)$')
if not pinned then
  return redis.error_reply('unreadable pin of ' .. ARGV[1])
end
if ARGV[3] ~= '' and ARGV[3] ~= seen then
  return {'conflict', seen}
end
if pinned ~= seen then
  pin = seen .. ' ' .. seen .. ' ' .. ARGV[2] .. ' 0'
  redis.call('HSET', KEYS[1], ARGV[1], pin)
end
return {'pin', pin}
";

fn unavailable(_: ()) -> PinError {
    PinError::Unavailable("Redis cannot be reached".into())
}

fn unreadable(server: &str, name: &str) -> PinError {
    tracing::error!(%server, tool = %name, "state store: a tool pin that cannot be read");
    PinError::Unavailable("the tool's pin cannot be read".into())
}

pub struct RedisPins {
    redis: Arc<RedisStore>,
    observe: Script,
    accept: Script,
}

impl RedisPins {
    pub fn new(redis: Arc<RedisStore>) -> RedisPins {
        RedisPins {
            redis,
            observe: Script::new(OBSERVE),
            accept: Script::new(ACCEPT),
        }
    }

    fn key(&self, server: &str) -> String {
        format!("{}:pins:{server}", self.redis.keys.prefix)
    }

    fn servers(&self) -> String {
        format!("{}:pins", self.redis.keys.prefix)
    }

    pub async fn observe(
        &self,
        server: &str,
        tools: &[ObservedTool],
        now: i64,
    ) -> Result<Vec<ToolChange>, PinError> {
        let mut call = self.observe.prepare_invoke();
        call.key(self.key(server))
            .key(self.servers())
            .arg(now)
            .arg(server);
        for tool in tools {
            call.arg(&tool.name).arg(&tool.fingerprint);
        }
        let flat: Vec<String> = self
            .redis
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        Ok(flat
            .chunks_exact(3)
            .map(|c| ToolChange {
                name: c[0].clone(),
                pinned: c[1].clone(),
                seen: c[2].clone(),
            })
            .collect())
    }

    pub async fn get(&self, server: &str, name: &str) -> Result<Option<ToolPin>, PinError> {
        let key = self.key(server);
        let field = name.to_string();
        let text: Option<String> = self
            .redis
            .run(|mut c| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(field)
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(unavailable)?;
        text.map(|t| ToolPin::decode(server, name, &t).ok_or_else(|| unreadable(server, name)))
            .transpose()
    }

    pub async fn list(&self) -> Result<Vec<ToolPin>, PinError> {
        let index = self.servers();
        let servers: Vec<String> = self
            .redis
            .run(|mut c| async move { redis::cmd("SMEMBERS").arg(index).query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        // redis-rs refuses to send an empty pipeline.
        if servers.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for server in &servers {
            pipe.cmd("HGETALL").arg(self.key(server));
        }
        let all: Vec<HashMap<String, String>> = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        let mut pins = Vec::new();
        for (server, fields) in servers.iter().zip(&all) {
            for (name, text) in fields {
                pins.push(
                    ToolPin::decode(server, name, text).ok_or_else(|| unreadable(server, name))?,
                );
            }
        }
        Ok(pins)
    }

    pub async fn accept(
        &self,
        server: &str,
        name: &str,
        expected: Option<&str>,
        now: i64,
    ) -> Result<ToolPin, PinError> {
        let mut call = self.accept.prepare_invoke();
        call.key(self.key(server))
            .arg(name)
            .arg(now)
            .arg(expected.unwrap_or(""));
        let answer: Vec<String> = self
            .redis
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        match answer.as_slice() {
            [kind] if kind == "missing" => {
                Err(PinError::NotFound(server.to_string(), name.to_string()))
            }
            [kind, seen] if kind == "conflict" => Err(PinError::Conflict {
                name: name.to_string(),
                seen: seen.clone(),
                expected: expected.unwrap_or("").to_string(),
            }),
            [kind, text] if kind == "pin" => {
                ToolPin::decode(server, name, text).ok_or_else(|| unreadable(server, name))
            }
            _ => Err(unreadable(server, name)),
        }
    }
}
