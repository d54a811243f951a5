//! Approvals in Redis: every replica naming the same server sees the same
//! approvals, and a verdict given on one releases a request held behind
//! another.
//!
//! Keys:
//! - `P:approval:<id>`: a hash. What a script must read or change is a
//!   field of its own, named as in [`Approval`]'s JSON: `state`,
//!   `expires_ms`, `uses`, `reusable`, `task_expires_ms`, `binding`,
//!   `approver`, `reason`, `decided_ms`; `record` holds the rest as JSON.
//!   It expires 24 hours ([`RETENTION`]) after the approval does.
//! - `P:binding:<binding hex>` → the id of the latest approval for that
//!   call, expiring with it.
//! - `P:approvals:created`: ids by creation time, for listing.
//! - `P:approvals:expiring`: ids of pending approvals by expiry; one
//!   replica's sweep claims each and announces it expired.
//! - channel `P:approvals`: `<kind> <the hash as a JSON object>` for every
//!   change, published by the script that made it.
//!
//! The scripts carry the rules of [`Approval::state_at`], `usable`,
//! `current` and `decide` in Lua ([`RULES`]), so deciding, asking and using
//! are each one step however many replicas do them at once. Times are the
//! calling replica's clock (`now`, Unix ms, an argument), as for tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use redis::Script;
use serde_json::{Map, Value};

use crate::decision::approvals::{
    Approval, ApprovalError, ApprovalEvent, ApprovalEventKind, ApprovalRules, Verdict,
};
use crate::decision::tasks::{unix_ms, RETENTION};

use super::RedisStore;

/// The most approvals `ListApprovals` shows.
const LIST_MAX: isize = 10_000;
/// Expiries one sweep announces; the next sweep takes the rest.
const SWEEP_BATCH: usize = 256;

/// What every script starts with: an approval's hash read into a table,
/// announcing a change, and the rules of `Approval::state_at`, `usable`
/// and `current` (decision/approvals.rs) — change them together.
const RULES: &str = r"
local function read(key)
  local flat = redis.call('HGETALL', key)
  local a = {}
  for i = 1, #flat, 2 do a[flat[i]] = flat[i + 1] end
  return a, flat
end
local function announce(channel, kind, key)
  local a, flat = read(key)
  redis.call('PUBLISH', channel, kind .. ' ' .. cjson.encode(a))
  return flat
end
local function state_at(a, now)
  if (a.state == 'pending' or a.state == 'approved') and now >= tonumber(a.expires_ms) then
    return 'expired'
  end
  return a.state
end
local function usable(a, now)
  return state_at(a, now) == 'approved' and (a.reusable == '1' or tonumber(a.uses) == 0)
end
local function current(a, now)
  local state = state_at(a, now)
  if state == 'pending' then return true end
  if state == 'approved' then return usable(a, now) end
  if state == 'denied' then return now < tonumber(a.expires_ms) end
  return false
end
";

/// The approval answering the call (KEYS[1], its binding) now, or the
/// asked one (KEYS[2], fields from ARGV[8]) stored, indexed and announced.
/// Returns `{1 new / 0 found, fields}`.
const FIND_OR_ASK: &str = r"
local now = tonumber(ARGV[1])
local id = redis.call('GET', KEYS[1])
if id then
  local a, flat = read(ARGV[2] .. id)
  if #flat > 0 and current(a, now) then return {0, flat} end
end
redis.call('HSET', KEYS[2], unpack(ARGV, 8))
redis.call('PEXPIREAT', KEYS[2], ARGV[7])
redis.call('SET', KEYS[1], ARGV[4], 'PXAT', ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[4])
return {1, announce(ARGV[3], 'requested', KEYS[2])}
";

/// Count one use of a usable approval, and announce it. Returns 1, or 0
/// when it may not be used.
const USE_ONCE: &str = r"
local a, flat = read(KEYS[1])
if #flat == 0 or not usable(a, tonumber(ARGV[1])) then return 0 end
redis.call('HINCRBY', KEYS[1], 'uses', 1)
announce(ARGV[2], 'used', KEYS[1])
return 1
";

/// `Approval::decide`: a pending approval becomes ARGV[2] (approved or
/// denied), standing until ARGV[5] or its task's expiry if sooner; its
/// data and binding are kept the retention after that. Returns `{1,
/// fields}`, `{0, fields}` (not pending) or `{-1, {}}` (not found).
const DECIDE: &str = r"
local a, flat = read(KEYS[1])
if #flat == 0 then return {-1, {}} end
local now = tonumber(ARGV[1])
if state_at(a, now) ~= 'pending' then return {0, flat} end
local expires = tonumber(ARGV[5])
local task = tonumber(a.task_expires_ms)
if task ~= 0 and task < expires then expires = task end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'approver', ARGV[3], 'reason', ARGV[4],
  'decided_ms', ARGV[1], 'expires_ms', expires)
local keep = expires + tonumber(ARGV[6])
redis.call('PEXPIREAT', KEYS[1], keep)
local binding = ARGV[8] .. a.binding
if redis.call('GET', binding) == ARGV[9] then redis.call('PEXPIREAT', binding, keep) end
redis.call('ZREM', KEYS[2], ARGV[9])
return {1, announce(ARGV[7], ARGV[2], KEYS[1])}
";

/// Claim the pending approvals whose expiry is due, mark each expired and
/// announce it; whichever replica runs it first does, exactly once. Also
/// drops index entries whose approval Redis has forgotten. Returns the
/// ids marked expired.
const SWEEP: &str = r"
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local expired = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[2] .. id
  local a, flat = read(key)
  if #flat > 0 and a.state == 'pending' and state_at(a, now) == 'expired' then
    redis.call('HSET', key, 'state', 'expired')
    announce(ARGV[3], 'expired', key)
    table.insert(expired, id)
  end
end
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[5]),
  'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(old) do
  if redis.call('EXISTS', ARGV[2] .. id) == 0 then redis.call('ZREM', KEYS[2], id) end
end
return expired
";

/// How a field kept apart from `record` reads back into the JSON.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Number,
    /// `1` or `0`, as Lua compares it.
    Flag,
}

/// The fields the scripts read or write, kept out of `record`.
const FIELDS: [(&str, Kind); 9] = [
    ("state", Kind::Text),
    ("expires_ms", Kind::Number),
    ("uses", Kind::Number),
    ("reusable", Kind::Flag),
    ("task_expires_ms", Kind::Number),
    ("binding", Kind::Text),
    ("approver", Kind::Text),
    ("reason", Kind::Text),
    ("decided_ms", Kind::Number),
];

/// `approval` as its hash's field–value pairs.
fn to_fields(approval: &Approval) -> Result<Vec<(&'static str, String)>, String> {
    let Value::Object(mut record) = serde_json::to_value(approval).map_err(|e| e.to_string())?
    else {
        return Err("an approval is not a JSON object".into());
    };
    let mut out = Vec::with_capacity(FIELDS.len() + 1);
    for (name, kind) in FIELDS {
        let value = record.remove(name).ok_or(format!("no `{name}`"))?;
        let text = match (kind, value) {
            (Kind::Text, Value::String(s)) => s,
            (Kind::Number, Value::Number(n)) => n.to_string(),
            (Kind::Flag, Value::Bool(b)) => if b { "1" } else { "0" }.to_string(),
            (_, other) => return Err(format!("`{name}` is {other}")),
        };
        out.push((name, text));
    }
    out.push(("record", Value::Object(record).to_string()));
    Ok(out)
}

/// An approval's hash read back.
fn from_fields(fields: &HashMap<String, String>) -> Result<Approval, String> {
    let json = fields.get("record").ok_or("the approval has no record")?;
    let mut record: Map<String, Value> =
        serde_json::from_str(json).map_err(|e| format!("the approval's record: {e}"))?;
    for (name, kind) in FIELDS {
        let text = fields.get(name).ok_or(format!("no field `{name}`"))?;
        let value = match kind {
            Kind::Text => Value::String(text.clone()),
            Kind::Number => Value::from(
                text.parse::<i64>()
                    .map_err(|_| format!("field `{name}`: {text}"))?,
            ),
            Kind::Flag => Value::Bool(text == "1"),
        };
        record.insert(name.to_string(), value);
    }
    serde_json::from_value(Value::Object(record)).map_err(|e| format!("the approval: {e}"))
}

/// An announcement as published: `<kind> <fields as a JSON object>`.
pub(super) fn event_of(payload: &str) -> Option<ApprovalEvent> {
    let (kind, json) = payload.split_once(' ')?;
    let kind = ApprovalEventKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)?;
    let fields: HashMap<String, String> = serde_json::from_str(json).ok()?;
    Some(ApprovalEvent {
        kind,
        approval: from_fields(&fields).ok()?,
    })
}

fn unavailable(_: ()) -> ApprovalError {
    ApprovalError::Unavailable("Redis cannot be reached".into())
}

fn unreadable(id: &str, error: String) -> ApprovalError {
    tracing::error!(approval = %id, %error, "state store: an approval that cannot be read");
    ApprovalError::Unavailable("the approval's record cannot be read".into())
}

pub struct RedisApprovals {
    redis: Arc<RedisStore>,
    find_or_ask: Script,
    use_once: Script,
    decide: Script,
    sweep: Script,
}

impl RedisApprovals {
    pub fn new(redis: Arc<RedisStore>) -> RedisApprovals {
        let script = |body: &str| Script::new(&format!("{RULES}{body}"));
        RedisApprovals {
            redis,
            find_or_ask: script(FIND_OR_ASK),
            use_once: script(USE_ONCE),
            decide: script(DECIDE),
            sweep: script(SWEEP),
        }
    }

    fn parsed(
        &self,
        id: &str,
        fields: &HashMap<String, String>,
    ) -> Result<Approval, ApprovalError> {
        if fields.is_empty() {
            return Err(ApprovalError::NotFound(id.to_string()));
        }
        from_fields(fields).map_err(|e| unreadable(id, e))
    }

    /// The approval answering `asked`'s call, and whether it is `asked`,
    /// stored now.
    pub async fn find_or_ask(
        &self,
        asked: Approval,
        now: SystemTime,
    ) -> Result<(Approval, bool), ApprovalError> {
        let keys = &self.redis.keys;
        let fields = to_fields(&asked).map_err(|e| {
            ApprovalError::Unavailable(format!("the approval cannot be stored: {e}"))
        })?;
        let keep = asked.expires_ms + RETENTION.as_millis() as i64;
        let mut call = self.find_or_ask.prepare_invoke();
        call.key(keys.binding(&asked.binding))
            .key(keys.approval(&asked.id))
            .key(keys.approvals_created())
            .key(keys.approvals_expiring())
            .arg(unix_ms(now))
            .arg(keys.approval_prefix())
            .arg(keys.approvals_channel())
            .arg(&asked.id)
            .arg(asked.created_ms)
            .arg(asked.expires_ms)
            .arg(keep);
        for (name, value) in &fields {
            call.arg(*name).arg(value);
        }
        let (new, fields): (i64, HashMap<String, String>) = self
            .redis
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        Ok((self.parsed(&asked.id, &fields)?, new == 1))
    }

    pub async fn use_once(&self, id: &str, now: SystemTime) -> Result<bool, ApprovalError> {
        let keys = &self.redis.keys;
        let mut call = self.use_once.prepare_invoke();
        call.key(keys.approval(id))
            .arg(unix_ms(now))
            .arg(keys.approvals_channel());
        let used: i64 = self
            .redis
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        Ok(used == 1)
    }

    pub async fn decide(
        &self,
        id: &str,
        verdict: &Verdict,
        rules: &ApprovalRules,
        now: SystemTime,
    ) -> Result<Approval, ApprovalError> {
        let keys = &self.redis.keys;
        let state = if verdict.approve {
            "approved"
        } else {
            "denied"
        };
        let mut call = self.decide.prepare_invoke();
        call.key(keys.approval(id))
            .key(keys.approvals_expiring())
            .arg(unix_ms(now))
            .arg(state)
            .arg(&verdict.approver)
            .arg(&verdict.reason)
            .arg(unix_ms(now + rules.ttl))
            .arg(RETENTION.as_millis() as u64)
            .arg(keys.approvals_channel())
            .arg(keys.binding_prefix())
            .arg(id);
        let (done, fields): (i64, HashMap<String, String>) = self
            .redis
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        let approval = self.parsed(id, &fields)?;
        match done {
            1 => Ok(approval),
            _ => Err(ApprovalError::AlreadyDecided {
                id: id.to_string(),
                state: approval.state_at(now).as_str(),
            }),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Approval, ApprovalError> {
        let key = self.redis.keys.approval(id);
        let fields: HashMap<String, String> = self
            .redis
            .run(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        self.parsed(id, &fields)
    }

    pub async fn list(&self) -> Result<Vec<Approval>, ApprovalError> {
        let keys = &self.redis.keys;
        let index = keys.approvals_created();
        let ids: Vec<String> = self
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
        // redis-rs refuses to send an empty pipeline.
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(keys.approval(id));
        }
        let all: Vec<HashMap<String, String>> = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        ids.iter()
            .zip(&all)
            // Forgotten after its retention: the sweep drops its entry.
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(id, fields)| self.parsed(id, fields))
            .collect()
    }

    /// Claim, mark and announce the pending approvals past their expiry;
    /// the ids this replica marked. One that cannot reach the store
    /// leaves them to the others, or to itself when it is back.
    pub async fn sweep(&self, now: SystemTime) -> Vec<String> {
        if !*self.redis.up.borrow() {
            return Vec::new();
        }
        let keys = &self.redis.keys;
        let mut call = self.sweep.prepare_invoke();
        call.key(keys.approvals_expiring())
            .key(keys.approvals_created())
            .arg(unix_ms(now))
            .arg(keys.approval_prefix())
            .arg(keys.approvals_channel())
            .arg(SWEEP_BATCH)
            .arg(RETENTION.as_millis() as u64);
        self.redis
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::approvals::ApprovalState;

    fn approval() -> Approval {
        Approval {
            id: "apr_1".into(),
            binding: "ab".repeat(32),
            workload: "spiffe://d/ns/a/sa/b".into(),
            task_id: "task_1".into(),
            task_purpose: "deploy \"api\"\n".into(),
            task_expires_ms: 90_000,
            action: "demo:deploy".into(),
            resource: "demo/api".into(),
            method: "POST".into(),
            host: "demo.test".into(),
            port: 443,
            path: "/deploy".into(),
            query: "a=1&b=/x".into(),
            body_sha256: "cd".repeat(32),
            policy_ids: vec!["gate".into()],
            message: "a person says yes".into(),
            state: ApprovalState::Approved,
            created_ms: 1_000,
            expires_ms: 61_000,
            approver: "ana".into(),
            reason: "ok".into(),
            decided_ms: 2_000,
            uses: 1,
            reusable: true,
        }
    }

    #[test]
    fn an_approval_reads_back_as_stored_and_a_damaged_one_is_refused() {
        let stored: HashMap<String, String> = to_fields(&approval())
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(stored["reusable"], "1");
        assert_eq!(stored["expires_ms"], "61000");
        assert_eq!(stored["state"], "approved");
        assert!(
            !stored["record"].contains("expires_ms"),
            "{}",
            stored["record"]
        );
        assert_eq!(from_fields(&stored).unwrap(), approval());

        for (field, bad) in [("uses", "one"), ("state", "maybe"), ("record", "{")] {
            let mut damaged = stored.clone();
            damaged.insert(field.into(), bad.into());
            assert!(from_fields(&damaged).is_err(), "{field}");
        }
        let mut partial = stored.clone();
        partial.remove("expires_ms");
        assert!(from_fields(&partial).is_err());
    }

    #[test]
    fn an_announcement_names_its_kind_and_carries_the_approval() {
        let fields: HashMap<String, String> = to_fields(&approval())
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // What Lua's cjson writes: `/` escaped.
        let json = serde_json::to_string(&fields).unwrap().replace('/', "\\/");
        let event = event_of(&format!("used {json}")).unwrap();
        assert_eq!(event.kind, ApprovalEventKind::Used);
        assert_eq!(event.approval, approval());
        for bad in ["", "used", "used {}", &format!("reused {json}")] {
            assert!(event_of(bad).is_none(), "{bad}");
        }
    }
}
