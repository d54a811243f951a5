//! Tasks in this process's memory: the default for one machine. Nothing
//! outlives the process, and nothing is shared with another.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::catalog::RiskClass;
use crate::decision::credentials::Secret;
use crate::decision::tasks::{
    Admitted, Refused, Task, TaskError, TaskLimits, TaskRecord, TaskRefusal, TaskRevoked, TaskSpec,
    TaskState, TaskView, TokenHash, RETENTION,
};

struct Entry {
    record: Arc<TaskRecord>,
    used: BTreeMap<RiskClass, AtomicU32>,
    ended: RwLock<Option<(SystemTime, TaskState)>>,
}

impl Entry {
    fn ended(&self) -> Option<(SystemTime, TaskState)> {
        *self.ended.read().unwrap_or_else(|e| e.into_inner())
    }

    fn used(&self, class: RiskClass) -> u32 {
        self.used
            .get(&class)
            .map_or(0, |used| used.load(Ordering::SeqCst))
    }

    fn view(&self) -> TaskView {
        self.record.view(self.ended(), |class| self.used(class))
    }
}

pub struct MemoryTasks {
    by_id: RwLock<HashMap<String, Arc<Entry>>>,
    by_token: RwLock<HashMap<TokenHash, Arc<Entry>>>,
    revoked: broadcast::Sender<TaskRevoked>,
    limits: TaskLimits,
}

impl MemoryTasks {
    pub fn new(limits: TaskLimits, revoked: broadcast::Sender<TaskRevoked>) -> MemoryTasks {
        MemoryTasks {
            by_id: RwLock::default(),
            by_token: RwLock::default(),
            revoked,
            limits,
        }
    }

    pub fn start(&self, spec: TaskSpec) -> Result<(TaskView, Secret), TaskError> {
        let (record, token) = self.limits.issue(spec)?;
        let entry = Arc::new(Entry {
            used: record
                .limits
                .keys()
                .map(|c| (*c, AtomicU32::new(0)))
                .collect(),
            record: Arc::new(record),
            ended: RwLock::new(None),
        });
        write(&self.by_token).insert(entry.record.token, entry.clone());
        write(&self.by_id).insert(entry.record.id.clone(), entry.clone());
        Ok((entry.view(), token))
    }

    pub fn end(&self, id: &str) -> Result<TaskView, TaskError> {
        let entry = self.by_id_or_err(id)?;
        self.stop(&entry, TaskState::Ended);
        Ok(entry.view())
    }

    pub fn get(&self, id: &str) -> Result<TaskView, TaskError> {
        Ok(self.by_id_or_err(id)?.view())
    }

    pub fn list(&self) -> Vec<TaskView> {
        read(&self.by_id).values().map(|t| t.view()).collect()
    }

    pub fn ended_tokens(&self) -> Vec<(String, TokenHash)> {
        read(&self.by_id)
            .values()
            .filter(|t| t.ended().is_some())
            .map(|t| (t.record.id.clone(), t.record.token))
            .collect()
    }

    pub fn admit(&self, token: &TokenHash, workload: &str, action: &str) -> Result<Task, Refused> {
        let entry = read(&self.by_token)
            .get(token)
            .cloned()
            .ok_or((TaskRefusal::Unknown, None))?;
        entry
            .record
            .admits(entry.ended().map(|(_, s)| s), workload, action)
            .map_err(|refusal| (refusal, Some(entry.record.reference())))?;
        Ok(Task {
            budget: Admitted::NotTaken,
            used: entry
                .used
                .iter()
                .map(|(class, used)| (*class, used.load(Ordering::SeqCst)))
                .collect(),
            record: entry.record.clone(),
        })
    }

    /// `false`: none of `class`'s budget is left.
    pub fn consume(&self, task: &Task, class: RiskClass) -> bool {
        let Some(entry) = read(&self.by_token).get(&task.record.token).cloned() else {
            return false;
        };
        let (Some(limit), Some(used)) = (entry.record.limits.get(&class), entry.used.get(&class))
        else {
            return true;
        };
        used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
            (u < *limit).then_some(u + 1)
        })
        .is_ok()
    }

    /// End tasks whose TTL has passed (announcing each), and forget tasks
    /// that ended longer ago than the retention.
    pub fn sweep(&self) {
        let now = SystemTime::now();
        let expired: Vec<Arc<Entry>> = read(&self.by_id)
            .values()
            .filter(|t| t.ended().is_none() && now >= t.record.expires)
            .cloned()
            .collect();
        for entry in expired {
            self.stop(&entry, TaskState::Expired);
        }
        let old: Vec<Arc<Entry>> = read(&self.by_id)
            .values()
            .filter(|t| {
                t.ended()
                    .is_some_and(|(at, _)| now.duration_since(at).unwrap_or_default() > RETENTION)
            })
            .cloned()
            .collect();
        for entry in old {
            write(&self.by_id).remove(&entry.record.id);
            write(&self.by_token).remove(&entry.record.token);
        }
    }

    fn stop(&self, entry: &Entry, state: TaskState) {
        {
            let mut ended = entry.ended.write().unwrap_or_else(|e| e.into_inner());
            if ended.is_some() {
                return;
            }
            *ended = Some((SystemTime::now(), state));
        }
        tracing::info!(task = %entry.record.id, state = state.as_str(), "task stopped; revoking");
        // No subscriber is not an error: nobody holds anything to drop.
        let _ = self.revoked.send(TaskRevoked {
            task_id: entry.record.id.clone(),
            token: entry.record.token,
        });
    }

    fn by_id_or_err(&self, id: &str) -> Result<Arc<Entry>, TaskError> {
        read(&self.by_id)
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::NotFound(id.to_string()))
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
