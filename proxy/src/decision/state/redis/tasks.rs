//! Tasks in Redis, shared by every decision replica that names the same
//! server, and kept when all of them restart.
//!
//! Keys:
//! - `P:task:<token hash>`: a hash with `record` (JSON: what the task was
//!   started with), `limit:<class>`, `used:<class>` and, once ended,
//!   `ended` (`<unix ms> ended`). It expires with the task.
//! - `P:id:<task id>` → the token hash, expiring with the task.
//! - `P:expiring`: `<token hash> <id>` by expiry, for tasks whose expiry is
//!   yet to be announced; one replica's sweep claims each.
//! - `P:revoked`: the same members by the time they ended, for the
//!   retention: what a replica reconnecting, or a proxy subscribing, hears.
//! - `P:ended:<token hash>` → task id, for the retention, so a token whose
//!   record is gone is refused as `task_ended`, not `task_unknown`.
//! - `P:tasks`: members by start time, for listing.
//! - channel `P:revocations`: a member for each end and expiry.
//!
//! The token itself is never stored. Budgets are checked and counted by
//! one script, which Redis runs alone, so replicas counting the same task
//! at once never pass its limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use redis::Script;

use crate::catalog::RiskClass;
use crate::decision::credentials::Secret;
use crate::decision::tasks::{
    from_unix_ms, unix_ms, Admitted, Refused, Task, TaskError, TaskLimits, TaskRecord, TaskRefusal,
    TaskRevoked, TaskSpec, TaskState, TaskView, TokenHash, RETENTION,
};
use crate::decision::TaskRef;

use super::{hex, RedisStore};

/// The most tasks `ListTasks` shows.
const LIST_MAX: isize = 10_000;
/// Expiries one sweep announces; the next sweep takes the rest.
const SWEEP_BATCH: usize = 256;

/// Admit: the task's fields as they were, and for the request's risk class
/// (ARGV[1]) one unit of its budget taken at once if one is left, so a
/// budgeted request costs one round trip, and replicas counting the same
/// task at once never pass its limit. Returns `{taken, fields, ''}`: taken
/// 1, 0 (none left), -1 (no budget for the class, or the task has ended); a
/// gone task gives `{-1, {}, its tombstone or ''}`.
const ADMIT: &str = r"
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return {-1, {}, redis.call('GET', KEYS[2]) or ''}
end
local taken = -1
local limit = redis.call('HGET', KEYS[1], 'limit:' .. ARGV[1])
if limit and redis.call('HEXISTS', KEYS[1], 'ended') == 0 then
  local used = tonumber(redis.call('HGET', KEYS[1], 'used:' .. ARGV[1]) or '0')
  if used < tonumber(limit) then
    redis.call('HINCRBY', KEYS[1], 'used:' .. ARGV[1], 1)
    taken = 1
  else
    taken = 0
  end
end
return {taken, fields, ''}
";

/// Give back a unit taken for a request that was then refused.
const GIVE_BACK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'used:' .. ARGV[1], -1)
end
return 1
";

/// End a task once: mark it, stop its expiry being announced, remember it
/// as revoked, and announce it. Returns the task's fields (none: gone).
const END: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if redis.call('HEXISTS', KEYS[1], 'ended') == 0 then
  redis.call('HSET', KEYS[1], 'ended', ARGV[1] .. ' ended')
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[3]))
  redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[3])
  redis.call('PUBLISH', ARGV[4], ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
";

/// Claim the expiries that are due and announce each; whichever replica
/// runs it first does, exactly once.
const SWEEP: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[5]))
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], ARGV[1], m)
  redis.call('SET', ARGV[4] .. string.sub(m, 1, 64), string.sub(m, 66), 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[3], m)
end
if #due > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
end
return #due
";

/// What a task was started with, as `record` holds it.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRecord {
    id: String,
    workload: String,
    purpose: String,
    scopes: Vec<String>,
    created_ms: i64,
    expires_ms: i64,
}

/// A task as its hash reads.
struct Stored {
    record: TaskRecord,
    ended: Option<(SystemTime, TaskState)>,
    used: BTreeMap<RiskClass, u32>,
}

impl Stored {
    fn parse(token: TokenHash, fields: &HashMap<String, String>) -> Result<Stored, String> {
        let json = fields.get("record").ok_or("the task has no record")?;
        let r: StoredRecord =
            serde_json::from_str(json).map_err(|e| format!("the task's record: {e}"))?;
        let counts = |prefix: &str| -> Result<BTreeMap<RiskClass, u32>, String> {
            let mut out = BTreeMap::new();
            for (field, value) in fields {
                let Some(class) = field.strip_prefix(prefix) else {
                    continue;
                };
                let class = RiskClass::from_name(class).ok_or(format!("field `{field}`"))?;
                let n = value.parse().map_err(|_| format!("field `{field}`"))?;
                out.insert(class, n);
            }
            Ok(out)
        };
        let ended = match fields.get("ended") {
            None => None,
            Some(value) => {
                let (ms, state) = value.split_once(' ').ok_or("field `ended`")?;
                let state = TaskState::from_name(state).ok_or("field `ended`")?;
                Some((
                    from_unix_ms(ms.parse().map_err(|_| "field `ended`")?),
                    state,
                ))
            }
        };
        Ok(Stored {
            record: TaskRecord {
                id: r.id,
                workload: r.workload,
                purpose: r.purpose,
                scopes: r.scopes,
                limits: counts("limit:")?,
                token,
                created: from_unix_ms(r.created_ms),
                expires: from_unix_ms(r.expires_ms),
            },
            ended,
            used: counts("used:")?,
        })
    }

    fn view(&self) -> TaskView {
        self.record.view(self.ended, |class| {
            self.used.get(&class).copied().unwrap_or(0)
        })
    }
}

fn token_of_hex(text: &str) -> Option<TokenHash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(TokenHash(out))
}

/// `<token hash> <task id>`: how sets and announcements name a task.
fn member(token: &TokenHash, id: &str) -> String {
    format!("{} {id}", hex(token))
}

pub(super) fn revoked_of(member: &str) -> Option<TaskRevoked> {
    let (token, id) = member.split_once(' ')?;
    Some(TaskRevoked {
        task_id: id.to_string(),
        token: token_of_hex(token)?,
    })
}

pub struct RedisTasks {
    redis: Arc<RedisStore>,
    limits: TaskLimits,
    admit: Script,
    give_back: Script,
    end: Script,
    sweep: Script,
}

fn unavailable(_: ()) -> TaskError {
    TaskError::Unavailable("Redis cannot be reached".into())
}

impl RedisTasks {
    pub fn new(redis: Arc<RedisStore>, limits: TaskLimits) -> RedisTasks {
        RedisTasks {
            redis,
            limits,
            admit: Script::new(ADMIT),
            give_back: Script::new(GIVE_BACK),
            end: Script::new(END),
            sweep: Script::new(SWEEP),
        }
    }

    pub async fn start(&self, spec: TaskSpec) -> Result<(TaskView, Secret), TaskError> {
        let (record, token) = self.limits.issue(spec)?;
        let keys = &self.redis.keys;
        let task = keys.task(&record.token);
        let member = member(&record.token, &record.id);
        let (created, expires) = (unix_ms(record.created), unix_ms(record.expires));
        let json = serde_json::to_string(&StoredRecord {
            id: record.id.clone(),
            workload: record.workload.clone(),
            purpose: record.purpose.clone(),
            scopes: record.scopes.clone(),
            created_ms: created,
            expires_ms: expires,
        })
        .map_err(|e| TaskError::Invalid(e.to_string()))?;
        let mut fields = redis::cmd("HSET");
        fields.arg(&task).arg("record").arg(json);
        for (class, limit) in &record.limits {
            fields.arg(format!("limit:{}", class.as_str())).arg(*limit);
        }
        let oldest = created - self.limits.max_ttl.as_millis() as i64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .add_command(fields)
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&task)
            .arg(expires)
            .ignore()
            .cmd("SET")
            .arg(keys.id(&record.id))
            .arg(hex(&record.token))
            .arg("PXAT")
            .arg(expires)
            .ignore()
            .cmd("ZADD")
            .arg(keys.expiring())
            .arg(expires)
            .arg(&member)
            .ignore()
            .cmd("ZADD")
            .arg(keys.tasks())
            .arg(created)
            .arg(&member)
            .ignore()
            // Entries older than the longest TTL are of tasks gone already.
            .cmd("ZREMRANGEBYSCORE")
            .arg(keys.tasks())
            .arg("-inf")
            .arg(oldest)
            .ignore();
        self.redis
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
            .map_err(unavailable)?;
        Ok((record.view(None, |_| 0), token))
    }

    /// The token hash of task `id`, while its record lasts.
    async fn token_of(&self, id: &str) -> Result<TokenHash, TaskError> {
        let key = self.redis.keys.id(id);
        let hex: Option<String> = self
            .redis
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        hex.as_deref()
            .and_then(token_of_hex)
            .ok_or_else(|| TaskError::NotFound(id.to_string()))
    }

    fn parsed(
        &self,
        id: &str,
        token: TokenHash,
        fields: &HashMap<String, String>,
    ) -> Result<Stored, TaskError> {
        if fields.is_empty() {
            return Err(TaskError::NotFound(id.to_string()));
        }
        Stored::parse(token, fields).map_err(|e| {
            tracing::error!(task = %id, error = %e, "state store: a task that cannot be read");
            TaskError::Unavailable("the task's record cannot be read".into())
        })
    }

    pub async fn end(&self, id: &str) -> Result<TaskView, TaskError> {
        let token = self.token_of(id).await?;
        let keys = &self.redis.keys;
        let mut call = self.end.prepare_invoke();
        call.key(keys.task(&token))
            .key(keys.expiring())
            .key(keys.revoked())
            .key(keys.ended(&token))
            .arg(unix_ms(SystemTime::now()))
            .arg(member(&token, id))
            .arg(RETENTION.as_millis() as u64)
            .arg(keys.channel())
            .arg(id);
        let fields: HashMap<String, String> = self
            .redis
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        let stored = self.parsed(id, token, &fields)?;
        tracing::info!(task = %id, state = "ended", "task stopped; revoking");
        Ok(stored.view())
    }

    pub async fn get(&self, id: &str) -> Result<TaskView, TaskError> {
        let token = self.token_of(id).await?;
        let key = self.redis.keys.task(&token);
        let fields: HashMap<String, String> = self
            .redis
            .run(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        Ok(self.parsed(id, token, &fields)?.view())
    }

    pub async fn list(&self) -> Result<Vec<TaskView>, TaskError> {
        let keys = &self.redis.keys;
        let index = keys.tasks();
        let members: Vec<String> = self
            .redis
            .run(|mut c| async move {
                redis::cmd("ZREVRANGE")
                    .arg(index)
                    .arg(0)
                    .arg(LIST_MAX - 1)
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(unavailable)?;
        let named: Vec<TaskRevoked> = members.iter().filter_map(|m| revoked_of(m)).collect();
        // redis-rs refuses to send an empty pipeline.
        if named.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for task in &named {
            pipe.cmd("HGETALL").arg(keys.task(&task.token));
        }
        let all: Vec<HashMap<String, String>> = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        let mut views = Vec::with_capacity(named.len());
        for (task, fields) in named.iter().zip(&all) {
            // Gone with its TTL: the index forgets it at its next trim.
            if fields.is_empty() {
                continue;
            }
            views.push(self.parsed(&task.task_id, task.token, fields)?.view());
        }
        Ok(views)
    }

    pub async fn ended_tokens(&self) -> Result<Vec<(String, TokenHash)>, TaskError> {
        let key = self.redis.keys.revoked();
        let since = unix_ms(SystemTime::now()) - RETENTION.as_millis() as i64;
        let members: Vec<String> = self
            .redis
            .run(|mut c| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(key)
                    .arg(since)
                    .arg("+inf")
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(unavailable)?;
        Ok(members
            .iter()
            .filter_map(|m| revoked_of(m))
            .map(|r| (r.task_id, r.token))
            .collect())
    }

    pub async fn admit(
        &self,
        token: &TokenHash,
        workload: &str,
        action: &str,
        class: RiskClass,
    ) -> Result<Task, Refused> {
        let keys = &self.redis.keys;
        let task_key = keys.task(token);
        let mut call = self.admit.prepare_invoke();
        call.key(&task_key)
            .key(keys.ended(token))
            .arg(class.as_str());
        let (taken, fields, ended): (i64, HashMap<String, String>, String) = self
            .redis
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await
            .map_err(|()| (TaskRefusal::Unavailable, None))?;
        if fields.is_empty() {
            return Err(match ended.is_empty() {
                false => (
                    TaskRefusal::Ended,
                    Some(TaskRef {
                        id: ended,
                        expires: SystemTime::now(),
                        no_cache: true,
                    }),
                ),
                true => (TaskRefusal::Unknown, None),
            });
        }
        let budget = match taken {
            1 => Admitted::Taken,
            0 => Admitted::Exhausted,
            _ => Admitted::NotTaken,
        };
        let refused = match Stored::parse(*token, &fields) {
            Ok(stored) => match stored
                .record
                .admits(stored.ended.map(|(_, s)| s), workload, action)
            {
                Ok(()) => {
                    return Ok(Task {
                        record: Arc::new(stored.record),
                        used: stored.used,
                        budget,
                    })
                }
                Err(refusal) => (refusal, Some(stored.record.reference())),
            },
            Err(e) => {
                tracing::error!(error = %e, "state store: a task that cannot be read");
                (TaskRefusal::Unavailable, None)
            }
        };
        if budget == Admitted::Taken {
            self.give_back_to(task_key, class).await;
        }
        Err(refused)
    }

    /// Return the unit admission took for a request that was then refused.
    pub async fn give_back(&self, task: &Task, class: RiskClass) {
        self.give_back_to(self.redis.keys.task(&task.record.token), class)
            .await;
    }

    async fn give_back_to(&self, task_key: String, class: RiskClass) {
        let mut call = self.give_back.prepare_invoke();
        call.key(task_key).arg(class.as_str());
        // Failing, the unit stays used: the budget errs towards less.
        let _ = self
            .redis
            .run(|mut c| async move { call.invoke_async::<i64>(&mut c).await })
            .await;
    }

    /// Claim and announce due expiries; a replica that cannot reach the
    /// store leaves them to the others, or to itself when it is back.
    pub async fn sweep(&self) {
        if !*self.redis.up.borrow() {
            return;
        }
        let keys = &self.redis.keys;
        let mut call = self.sweep.prepare_invoke();
        call.key(keys.expiring())
            .key(keys.revoked())
            .arg(unix_ms(SystemTime::now()))
            .arg(RETENTION.as_millis() as u64)
            .arg(keys.channel())
            .arg(keys.ended_prefix())
            .arg(SWEEP_BATCH);
        if let Ok(count) = self
            .redis
            .run(|mut c| async move { call.invoke_async::<i64>(&mut c).await })
            .await
        {
            if count > 0 {
                tracing::info!(tasks = count, "tasks expired; revoking");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_the_token_hash_and_the_task_and_nothing_else_parses() {
        let token = TokenHash::of("tgt_example");
        let m = member(&token, "task_0123");
        assert_eq!(m.len(), 64 + 1 + "task_0123".len());
        assert_eq!(
            revoked_of(&m),
            Some(TaskRevoked {
                task_id: "task_0123".into(),
                token
            })
        );
        for bad in ["", "abc task", &m[1..], &m.replace(' ', "")] {
            assert_eq!(revoked_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_stored_task_reads_back_as_started_and_a_damaged_one_is_refused() {
        let token = TokenHash::of("tgt_example");
        let record = StoredRecord {
            id: "task_1".into(),
            workload: "spiffe://d/ns/a/sa/b".into(),
            purpose: "p".into(),
            scopes: vec!["github:*".into()],
            created_ms: 1_000,
            expires_ms: 61_000,
        };
        let mut fields = HashMap::from([
            (
                "record".to_string(),
                serde_json::to_string(&record).unwrap(),
            ),
            ("limit:write".to_string(), "3".to_string()),
            ("used:write".to_string(), "2".to_string()),
            ("ended".to_string(), "5000 ended".to_string()),
        ]);
        let stored = Stored::parse(token, &fields).unwrap();
        assert_eq!(
            stored.record.limits,
            BTreeMap::from([(RiskClass::Write, 3)])
        );
        assert_eq!(stored.used, BTreeMap::from([(RiskClass::Write, 2)]));
        assert_eq!(stored.ended, Some((from_unix_ms(5_000), TaskState::Ended)));
        assert_eq!(stored.record.expires, from_unix_ms(61_000));
        assert_eq!(stored.view().state, TaskState::Ended);

        fields.insert("limit:writes".into(), "1".into());
        assert!(Stored::parse(token, &fields).is_err());
        fields.remove("limit:writes");
        fields.insert("ended".into(), "soon".into());
        assert!(Stored::parse(token, &fields).is_err());
        fields.remove("record");
        assert!(Stored::parse(token, &fields).is_err());
    }
}
