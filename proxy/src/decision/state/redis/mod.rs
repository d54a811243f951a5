//! The state store in Redis: one connection per replica (commands, and a
//! subscription to the announcements), kept up by a supervisor that
//! reconnects with backoff, and shared by what is kept there: tasks
//! ([`tasks`]), approvals ([`approvals`]) and MCP tool pins ([`pins`]).
//!
//! Every key is `P:…`, `P` the configured prefix inside a hash tag
//! (`{tollgate}`), so a Redis Cluster keeps them in one slot and one
//! script may touch them; each part's keys are listed in its module. The
//! subscription hears two channels, `P:revocations` and `P:approvals`,
//! and relays each to this replica's own broadcast.

mod approvals;
mod pins;
mod tasks;

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisError};
use tokio::sync::{broadcast, watch, Notify};
use tokio_stream::StreamExt;

use crate::config::{RedisConfig, SecretSource};
use crate::decision::approvals::ApprovalEvent;
use crate::decision::tasks::{unix_ms, TaskRevoked, TokenHash};

pub use approvals::RedisApprovals;
pub use pins::RedisPins;
pub use tasks::RedisTasks;

const RECONNECT_START: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// How often a connected replica checks that Redis still answers: a server
/// that hangs rather than closes is noticed within this plus the timeout.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A replica reconnecting hears again every end from this long before it
/// lost the store, as the clocks of replicas may differ a little.
const RECONCILE_MARGIN: Duration = Duration::from_secs(5);

struct Keys {
    prefix: String,
}

impl Keys {
    fn task(&self, token: &TokenHash) -> String {
        format!("{}:task:{}", self.prefix, hex(token))
    }
    fn id(&self, id: &str) -> String {
        format!("{}:id:{id}", self.prefix)
    }
    fn ended(&self, token: &TokenHash) -> String {
        format!("{}{}", self.ended_prefix(), hex(token))
    }
    fn ended_prefix(&self) -> String {
        format!("{}:ended:", self.prefix)
    }
    fn expiring(&self) -> String {
        format!("{}:expiring", self.prefix)
    }
    fn revoked(&self) -> String {
        format!("{}:revoked", self.prefix)
    }
    fn tasks(&self) -> String {
        format!("{}:tasks", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}:revocations", self.prefix)
    }
    fn approval(&self, id: &str) -> String {
        format!("{}{id}", self.approval_prefix())
    }
    fn approval_prefix(&self) -> String {
        format!("{}:approval:", self.prefix)
    }
    fn binding(&self, binding: &str) -> String {
        format!("{}{binding}", self.binding_prefix())
    }
    fn binding_prefix(&self) -> String {
        format!("{}:binding:", self.prefix)
    }
    fn approvals_created(&self) -> String {
        format!("{}:approvals:created", self.prefix)
    }
    fn approvals_expiring(&self) -> String {
        format!("{}:approvals:expiring", self.prefix)
    }
    fn approvals_channel(&self) -> String {
        format!("{}:approvals", self.prefix)
    }
}

fn hex(token: &TokenHash) -> String {
    crate::decision::tasks::hex(&token.0)
}

/// How to reach the server. The password is read at every connection, so a
/// rotated file takes effect at the next reconnect.
struct Target {
    info: redis::ConnectionInfo,
    password: Option<SecretSource>,
    ca: Option<Vec<u8>>,
    /// The URL for logs (it never holds a password).
    shown: String,
}

impl Target {
    fn new(config: &RedisConfig) -> Result<Target, String> {
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("state.redis.url: {e}"))?;
        let info = match &config.username {
            Some(user) => {
                let settings = info.redis_settings().clone().set_username(user);
                info.set_redis_settings(settings)
            }
            None => info,
        };
        let ca = config
            .ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .map_err(|e| format!("state.redis.ca_file {}: {}", path.display(), e.kind()))
            })
            .transpose()?;
        Ok(Target {
            info,
            password: config.password.clone(),
            ca,
            shown: config.url.clone(),
        })
    }

    fn client(&self) -> Result<Client, String> {
        let mut info = self.info.clone();
        if let Some(source) = &self.password {
            let password = source.read()?;
            let settings = info.redis_settings().clone().set_password(password.trim());
            info = info.set_redis_settings(settings);
        }
        match &self.ca {
            Some(pem) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(info),
        }
        .map_err(|e| e.to_string())
    }
}

/// What the connection's users share; its fields are this module's.
pub struct Shared {
    keys: Keys,
    target: Target,
    timeout: Duration,
    /// `None` while the store is lost.
    conn: RwLock<Option<MultiplexedConnection>>,
    up: watch::Sender<bool>,
    /// A command failed as if the connection were gone: check it now.
    lost: Notify,
    /// The server answers but is no longer the primary (after a failover
    /// behind a stable address): connect again, to whatever is primary now.
    demoted: Notify,
    revoked: broadcast::Sender<TaskRevoked>,
    approvals: broadcast::Sender<ApprovalEvent>,
}

/// The most a listing returns, newest first.
const LIST_MAX: isize = 10_000;

impl Shared {
    /// The newest members of the sorted set `index` (its scores are
    /// times), at most [`LIST_MAX`].
    async fn newest(&self, index: String) -> Result<Vec<String>, ()> {
        self.run(|mut c| async move {
            redis::cmd("ZREVRANGE")
                .arg(index)
                .arg(0)
                .arg(LIST_MAX - 1)
                .query_async(&mut c)
                .await
        })
        .await
    }

    /// Run one command (or pipeline, or script) on the shared connection,
    /// within the timeout. `Err` is logged here and means "unavailable".
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, ()>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let conn = self
            .conn
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(())?;
        match tokio::time::timeout(self.timeout, op(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly) {
                    self.demoted.notify_one();
                } else if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
                {
                    self.lost.notify_one();
                }
                tracing::warn!(error = %e, "state store command failed");
                Err(())
            }
            Err(_) => {
                self.lost.notify_one();
                tracing::warn!(timeout = ?self.timeout, "state store command timed out");
                Err(())
            }
        }
    }

    /// A command connection, and a subscription to the announcements.
    async fn open(&self) -> Result<(MultiplexedConnection, PubSubStream), String> {
        let client = self.target.client()?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        let subscribe = async {
            let mut pubsub = client.get_async_pubsub().await?;
            let channels = [self.keys.channel(), self.keys.approvals_channel()];
            pubsub.subscribe(&channels).await?;
            Ok::<_, RedisError>(pubsub.into_on_message())
        };
        let stream = tokio::time::timeout(self.timeout, subscribe)
            .await
            .map_err(|_| "subscribing timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Ok((conn, stream))
    }

    async fn answers(&self, conn: &MultiplexedConnection) -> bool {
        let mut conn = conn.clone();
        let ping = redis::cmd("PING");
        let answer = ping.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(self.timeout, answer).await, Ok(Ok(_)))
    }

    /// Tell this replica's subscribers about every task that ended since
    /// `since`: they may hold tunnels of tasks that ended while it could
    /// not hear.
    async fn reconcile(&self, conn: &MultiplexedConnection, since: SystemTime) -> bool {
        let mut conn = conn.clone();
        let mut query = redis::cmd("ZRANGEBYSCORE");
        query
            .arg(self.keys.revoked())
            .arg(unix_ms(since))
            .arg("+inf");
        let answer = query.query_async::<Vec<String>>(&mut conn);
        let Ok(Ok(members)) = tokio::time::timeout(self.timeout, answer).await else {
            return false;
        };
        let revoked: Vec<TaskRevoked> = members
            .iter()
            .filter_map(|m| tasks::revoked_of(m))
            .collect();
        if !revoked.is_empty() {
            tracing::info!(
                tasks = revoked.len(),
                "state store back: telling subscribers of tasks that ended meanwhile"
            );
        }
        for r in revoked {
            let _ = self.revoked.send(r);
        }
        true
    }

    /// Relay announcements until the store is lost.
    async fn follow(&self, conn: &MultiplexedConnection, mut stream: PubSubStream) {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.relay(&message),
                    None => return,
                },
                _ = ping.tick() => if !self.answers(conn).await { return },
                _ = self.lost.notified() => if !self.answers(conn).await { return },
                _ = self.demoted.notified() => return,
            }
        }
    }

    /// Pass one announcement on to this replica's subscribers.
    fn relay(&self, message: &redis::Msg) {
        let payload: String = message.get_payload().unwrap_or_default();
        if message.get_channel_name() == self.keys.approvals_channel() {
            match approvals::event_of(&payload) {
                Some(event) => {
                    tracing::debug!(approval = %event.approval.id, kind = event.kind.as_str(), "approval change heard");
                    let _ = self.approvals.send(event);
                }
                None => tracing::warn!("state store: an approval announcement that cannot be read"),
            }
            return;
        }
        match tasks::revoked_of(&payload) {
            Some(revoked) => {
                tracing::debug!(task = %revoked.task_id, "task end heard");
                let _ = self.revoked.send(revoked);
            }
            None => tracing::warn!("state store: an announcement that names no task"),
        }
    }

    fn set_conn(&self, conn: Option<MultiplexedConnection>) {
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    /// Connect, follow, and reconnect when lost, for as long as the store
    /// lives.
    async fn supervise(self: Arc<Self>) {
        let mut backoff = RECONNECT_START;
        let mut lost_at: Option<SystemTime> = None;
        let mut said_unreachable = false;
        loop {
            let opened = self.open().await;
            let (conn, stream) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    if !said_unreachable {
                        tracing::warn!(url = %self.target.shown, %error, "state store unreachable; requests under tasks are refused until it is back");
                        said_unreachable = true;
                    } else {
                        tracing::debug!(%error, "state store still unreachable");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                    continue;
                }
            };
            // Subscribed first, then caught up: an end in between is heard
            // twice rather than never.
            if let Some(at) = lost_at {
                if !self.reconcile(&conn, at - RECONCILE_MARGIN).await {
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
            backoff = RECONNECT_START;
            self.set_conn(Some(conn.clone()));
            self.up.send_replace(true);
            tracing::info!(url = %self.target.shown, "state store connected");
            self.follow(&conn, stream).await;
            self.set_conn(None);
            self.up.send_replace(false);
            lost_at = Some(SystemTime::now());
            said_unreachable = true;
            tracing::warn!(url = %self.target.shown, "state store unreachable; requests under tasks are refused until it is back");
        }
    }
}

/// This replica's link to Redis, shared by the tasks and approvals kept
/// there: one connection and one supervisor for both, so they are lost and
/// back together, and `/readyz` follows one thing.
pub struct RedisStore {
    shared: Arc<Shared>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl std::ops::Deref for RedisStore {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl RedisStore {
    /// Connect (and reconnect) in the background, relaying task ends to
    /// `revoked` and approval changes to `approvals`. Until connected the
    /// store is unhealthy. Needs a runtime.
    pub fn connect(
        config: &RedisConfig,
        revoked: broadcast::Sender<TaskRevoked>,
        approvals: broadcast::Sender<ApprovalEvent>,
    ) -> Result<Arc<RedisStore>, String> {
        let (up, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            keys: Keys {
                prefix: format!("{{{}}}", config.key_prefix),
            },
            target: Target::new(config)?,
            timeout: config.timeout,
            conn: RwLock::new(None),
            up,
            lost: Notify::new(),
            demoted: Notify::new(),
            revoked,
            approvals,
        });
        let supervisor = tokio::spawn(shared.clone().supervise());
        Ok(Arc::new(RedisStore { shared, supervisor }))
    }

    /// `true` while Redis can be reached.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.shared.up.subscribe()
    }
}
