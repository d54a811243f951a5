//! Starting and ending tasks through a decision plane's API, as an operator
//! does, with the admin token every task-serving participant is given.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use tollgate::decision::proto::pb;
use tollgate::decision::proto::pb::decision_service_client::DecisionServiceClient;

/// The admin token of every participant that serves tasks, handed over as
/// `TOLLGATE_ADMIN_TOKEN`.
pub const ADMIN_TOKEN: &str = "bench-admin-token";

/// `tasks:` for a participant's configuration: administration with
/// [`ADMIN_TOKEN`] from the environment.
pub const TASKS_YAML: &str = "tasks: { admin_token: { env: TOLLGATE_ADMIN_TOKEN } }\n";

pub type Admin = DecisionServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
>;

fn admin_header(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let value = format!("Bearer {ADMIN_TOKEN}")
        .parse()
        .map_err(|_| tonic::Status::internal("header"))?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

/// An admin client of the decision API at `addr`.
pub async fn admin(addr: SocketAddr) -> anyhow::Result<Admin> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(DecisionServiceClient::with_interceptor(
        channel,
        admin_header as _,
    ))
}

/// Wait until the decision plane's task store answers: a store in Redis
/// connects in the background, and until it has, every task call fails.
/// Asked for a task that does not exist: `ListTasks` would do, but a
/// Redis store with no task at all fails it (an empty pipeline, which the
/// redis crate refuses).
pub async fn wait_ready(admin: &mut Admin) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let asked = admin
            .get_task(pb::GetTaskRequest {
                task_id: "task_readiness_probe".into(),
            })
            .await;
        match asked {
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(()),
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("the decision plane's task store never answered")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A started task: its id and the token the agent presents.
pub struct Started {
    pub id: String,
    pub token: String,
}

/// Start a task for `workload` with `budgets` (risk class → allowed
/// requests), lasting `ttl`.
pub async fn start(
    admin: &mut Admin,
    workload: &str,
    purpose: &str,
    ttl: Duration,
    budgets: &[(&str, u32)],
) -> anyhow::Result<Started> {
    let started = admin
        .start_task(pb::StartTaskRequest {
            workload: workload.into(),
            purpose: purpose.into(),
            ttl_seconds: ttl.as_secs() as _,
            budgets: budgets
                .iter()
                .map(|(class, n)| (class.to_string(), *n))
                .collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Started {
        id: started.task.context("StartTask answered no task")?.task_id,
        token: started.token,
    })
}

/// How much of each budget task `id` has used so far.
pub async fn used(admin: &mut Admin, id: &str) -> anyhow::Result<BTreeMap<String, u32>> {
    let task = admin
        .get_task(pb::GetTaskRequest {
            task_id: id.to_string(),
        })
        .await?
        .into_inner();
    Ok(task
        .budgets
        .into_iter()
        .map(|b| (b.class, b.used))
        .collect())
}
