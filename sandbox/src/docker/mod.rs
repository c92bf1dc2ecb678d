//! The Docker runtime: the same sandbox (PostgreSQL, target app, upstreams, worker) as
//! containers, driven through the engine's API with bollard.
//!
//! Every container gets host networking (services listen on 127.0.0.1, exactly as on the
//! process runtime), the state dir bind-mounted at its own path (so the `.env`, the cache,
//! the logs and the PostgreSQL cluster are the same files at the same paths) and the
//! labels of its project (`io.aiops.project`, one per state dir): `aiops` finds and
//! controls only its own containers. Containers made by `docker compose` with the same
//! labels are adopted rather than replaced.
//!
//! What the engine says is the truth about a service: running/restarting/exited, exit
//! code, OOM kill, restart count (the container's restart policy restarts it, not us),
//! memory limit. Health is probed the way the process runtime probes it
//! ([`crate::health`]). Stats come from the stats API; console output from the logs API,
//! copied into the service's log file under `logs/` so the observation tools read it the
//! way they do on the process runtime.
//!
//! **Invariant:** nothing here acts on a container without this project's label.

pub mod images;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, InspectContainerOptions,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StartContainerOptions, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::events::EventLog;
use crate::health::Prober;
use crate::prepare::Prepared;
use crate::procinfo::{self, SANDBOX_MARKER};
use crate::runtime::{
    ExitInfo, Health, HealthStatus, KillSignal, Runtime, ServiceState, ServiceStats, ServiceStatus,
};
use crate::secrets::{self, names as secret};
use crate::supervisor::StateFile;
use crate::topology::{RestartMode, ServiceKind, ServiceSpec, Topology};

/// Label keys, written once.
pub mod labels {
    /// The project: one per state dir ([`super::project_id`]).
    pub const PROJECT: &str = "io.aiops.project";
    /// The sandbox service the container runs.
    pub const SERVICE: &str = "io.aiops.service";
    /// The state dir the container mounts.
    pub const STATE_DIR: &str = "io.aiops.state-dir";
    /// `aiops` (created by the runtime, removed by `aiops down`) or `compose`.
    pub const MANAGED_BY: &str = "io.aiops.managed-by";
    /// Set by `docker compose` on every container it creates.
    pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
}

/// How long a service gets to stop before the engine kills it.
const STOP_GRACE_S: i32 = 10;

/// The project id of a state dir: stable across runs and machines (FNV-1a of the path),
/// short enough for container names.
pub fn project_id(state_root: &std::path::Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state_root.display().to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

/// The container name of `service` in `project`.
pub fn container_name(project: &str, service: &str) -> String {
    format!("aiops-{project}-{service}")
}

/// Connect to the local engine (`DOCKER_HOST` or the default socket) and check it answers.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults().map_err(|e| {
        Error::Other(format!(
            "cannot reach a Docker engine ({e}); start dockerd, or use the process runtime \
             (`aiops up` without --runtime docker)"
        ))
    })?;
    docker.ping().await.map_err(|e| {
        Error::Other(format!(
            "the Docker engine does not answer ({e}); is dockerd running and may this user \
             use its socket?"
        ))
    })?;
    Ok(docker)
}

/// Every container of `project` (running or not), as (service, id, managed-by).
pub async fn project_containers(
    docker: &Docker,
    project: &str,
) -> Result<Vec<(String, String, String)>> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{}={project}", labels::PROJECT)],
    )]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(engine("list containers"))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            let service = labels.get(labels::SERVICE)?.clone();
            let managed = if labels.contains_key(labels::COMPOSE_PROJECT) {
                "compose".to_string()
            } else {
                labels
                    .get(labels::MANAGED_BY)
                    .cloned()
                    .unwrap_or_else(|| "aiops".into())
            };
            Some((service, c.id?, managed))
        })
        .collect())
}

/// Remove every container `aiops` created for `project` (compose's are left to
/// `docker compose down`, but stopped). Used by `aiops down` when the daemon is gone.
pub async fn remove_project(docker: &Docker, project: &str) -> Result<usize> {
    let mut removed = 0;
    for (_, id, managed) in project_containers(docker, project).await? {
        if managed == "compose" {
            let _ = docker
                .stop_container(
                    &id,
                    Some(StopContainerOptionsBuilder::new().t(STOP_GRACE_S).build()),
                )
                .await;
            continue;
        }
        docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
            .map_err(engine("remove container"))?;
        removed += 1;
    }
    Ok(removed)
}

fn engine(what: &'static str) -> impl Fn(bollard::errors::Error) -> Error {
    move |e| Error::Other(format!("Docker engine: {what}: {}", describe(&e)))
}

fn describe(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[derive(Debug, Default)]
struct Slot {
    desired_up: bool,
    stopping: bool,
    /// Restarts someone asked for (the engine counts only its own).
    requested_restarts: u32,
    /// The engine's restart count resets when a container is started by hand: what it
    /// had counted before is kept here.
    auto_base: u32,
    last_restart_count: u32,
    /// A start we asked for is under way: the next `start` event is not an automatic one.
    expect_start: bool,
    health: Health,
    /// `StartedAt` of the run `health` belongs to.
    health_run: Option<String>,
    /// `StartedAt` of the run that has been healthy at least once.
    healthy_run: Option<String>,
    last_exit: Option<ExitInfo>,
    oom_pending: bool,
}

struct Shared {
    docker: Docker,
    prepared: Prepared,
    events: Arc<EventLog>,
    prober: Prober,
    project: String,
    slots: Mutex<BTreeMap<String, Slot>>,
    cpu: Mutex<HashMap<String, (u64, Instant)>>,
    /// Each service's container id, once found: compose's containers have compose's
    /// names, and the probes, log copies and stats ask many times a second.
    ids: Mutex<HashMap<String, String>>,
}

/// The Docker runtime. Cheap to clone.
#[derive(Clone)]
pub struct DockerRuntime {
    shared: Arc<Shared>,
}

impl DockerRuntime {
    /// Connect to the engine, build the local images when missing or stale, and start the
    /// background tasks (engine events, health probes, log copies, state file).
    pub async fn new(prepared: Prepared) -> Result<Self> {
        let docker = connect().await?;
        let owner = prepared.cluster.run_as.map(|r| (r.uid, r.gid)).or_else(|| {
            Some((
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ))
        });
        images::ensure(
            &docker,
            &prepared.target_app_bin,
            &prepared.cluster.bins,
            owner,
            false,
        )
        .await?;
        let slots = prepared
            .topology
            .services
            .iter()
            .map(|s| (s.name.clone(), Slot::default()))
            .collect();
        let rt = Self {
            shared: Arc::new(Shared {
                project: project_id(prepared.state.root()),
                events: Arc::new(EventLog::open(&prepared.state.events_file())),
                prober: Prober::new(prepared.clone()),
                prepared,
                docker,
                slots: Mutex::new(slots),
                cpu: Mutex::new(HashMap::new()),
                ids: Mutex::new(HashMap::new()),
            }),
        };
        tokio::spawn(rt.clone().engine_events());
        tokio::spawn(rt.clone().probe_loop());
        tokio::spawn(rt.clone().persist_loop());
        for spec in &rt.shared.prepared.topology.services {
            tokio::spawn(rt.clone().copy_logs(spec.name.clone()));
        }
        Ok(rt)
    }

    pub fn events(&self) -> &Arc<EventLog> {
        &self.shared.events
    }

    pub fn prepared(&self) -> &Prepared {
        &self.shared.prepared
    }

    pub fn project(&self) -> &str {
        &self.shared.project
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.shared.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spec(&self, name: &str) -> Result<&ServiceSpec> {
        self.shared.prepared.topology.service(name)
    }

    fn name_of(&self, service: &str) -> String {
        container_name(&self.shared.project, service)
    }

    /// The service's container as the engine sees it now: by its remembered id, else by
    /// the name aiops gives its own containers, else by label (compose's).
    async fn inspect(&self, service: &str) -> Result<Option<ContainerInspectResponse>> {
        let ids = || self.shared.ids.lock().unwrap_or_else(|p| p.into_inner());
        let known = ids().get(service).cloned();
        let mut candidates = Vec::new();
        candidates.extend(known);
        candidates.push(self.name_of(service));
        for key in candidates {
            match self
                .shared
                .docker
                .inspect_container(&key, None::<InspectContainerOptions>)
                .await
            {
                Ok(c) => {
                    if let Some(id) = &c.id {
                        ids().insert(service.to_string(), id.clone());
                    }
                    return Ok(Some(c));
                }
                Err(e) if is_not_found(&e) => {
                    ids().remove(service);
                }
                Err(e) => return Err(engine("inspect container")(e)),
            }
        }
        let found = project_containers(&self.shared.docker, &self.shared.project)
            .await?
            .into_iter()
            .find(|(s, _, _)| s == service);
        match found {
            Some((_, id, _)) => {
                let c = self
                    .shared
                    .docker
                    .inspect_container(&id, None::<InspectContainerOptions>)
                    .await
                    .map_err(engine("inspect container"))?;
                ids().insert(service.to_string(), id);
                Ok(Some(c))
            }
            None => Ok(None),
        }
    }

    async fn container_id(&self, service: &str) -> Result<Option<String>> {
        Ok(self.inspect(service).await?.and_then(|c| c.id))
    }

    /// Containers a previous daemon created for this project: removed, so this run starts
    /// from the images as they are now. Compose's containers are adopted instead.
    pub async fn reap_leftovers(&self) -> usize {
        let list = match project_containers(&self.shared.docker, &self.shared.project).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(message = "Cannot list leftover containers.", %error);
                return 0;
            }
        };
        let mut n = 0;
        for (service, id, managed) in list {
            if managed == "compose" {
                self.shared.events.record(
                    "container_adopted",
                    Some(&service),
                    format!("container {} made by docker compose", short(&id)),
                );
                continue;
            }
            if self
                .shared
                .docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await
                .is_ok()
            {
                n += 1;
            }
        }
        if n > 0 {
            self.shared.events.record(
                "reaper",
                None,
                format!("removed {n} leftover container(s) of this sandbox"),
            );
        }
        n
    }

    /// Stop every service, dependants first, and remove the containers `aiops` created.
    pub async fn shutdown_all(&self) {
        let order = self.shared.prepared.topology.stop_order();
        for name in &order {
            if let Err(error) = self.stop_service(name).await {
                tracing::warn!(message = "Stop failed.", service = %name, %error);
            }
        }
        match remove_project(&self.shared.docker, &self.shared.project).await {
            Ok(_) => {}
            Err(error) => tracing::warn!(message = "Removing containers failed.", %error),
        }
        crate::docker::release_cache_mount(&self.shared.prepared.state);
        self.shared
            .events
            .record("sandbox_down", None, "all services stopped");
        self.write_state_file().await;
    }

    /// The container definition of one service.
    fn definition(&self, spec: &ServiceSpec) -> Result<ContainerCreateBody> {
        let p = &self.shared.prepared;
        let root = p.state.root().display().to_string();
        let env_file = p.state.env_file().display().to_string();
        let (image, cmd, user): (&str, Vec<String>, String) = match spec.kind {
            ServiceKind::Postgres => {
                let (_, args) = p.cluster.server_command();
                let program = images::postgres_server(&p.cluster.bins);
                let user = match p.cluster.run_as {
                    Some(r) => format!("{}:{}", r.uid, r.gid),
                    None => current_user(),
                };
                let mut cmd = vec![program.display().to_string()];
                cmd.extend(args);
                (images::POSTGRES_IMAGE, cmd, user)
            }
            ServiceKind::TargetApp => (
                images::TARGET_APP_IMAGE,
                vec![
                    images::TARGET_APP_PATH.into(),
                    "serve".into(),
                    "--env-file".into(),
                    env_file,
                ],
                current_user(),
            ),
            ServiceKind::Worker => (
                images::TARGET_APP_IMAGE,
                vec![
                    images::TARGET_APP_PATH.into(),
                    "worker".into(),
                    "--env-file".into(),
                    env_file,
                ],
                current_user(),
            ),
            ServiceKind::Upstream => (
                images::TARGET_APP_IMAGE,
                vec![
                    images::TARGET_APP_PATH.into(),
                    "upstream".into(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", spec.port.unwrap_or(0)),
                    "--name".into(),
                    spec.name.trim_start_matches("upstream-").to_string(),
                ],
                current_user(),
            ),
        };
        let mut env = vec![format!("{SANDBOX_MARKER}={root}")];
        if spec.kind == ServiceKind::Upstream {
            env.push(format!(
                "UPSTREAM_ADMIN_TOKEN={}",
                secrets::get_or_create(&p.state, secret::UPSTREAM_ADMIN_TOKEN, 24)?
            ));
        }
        let mut binds = vec![format!("{root}:{root}:rw")];
        // The cache dir separately, receiving mounts made on the host later (the
        // disk_full fault mounts a small tmpfs over it): needs a shared mount, i.e. root.
        if spec.kind == ServiceKind::TargetApp && share_cache_mount(&p.state) {
            let cache = p.state.cache_dir().display().to_string();
            binds.push(format!("{cache}:{cache}:rw,rslave"));
        }
        let restart = &spec.restart;
        let restart_policy = DockerRestartPolicy {
            name: Some(match restart.mode {
                RestartMode::Never => RestartPolicyNameEnum::NO,
                RestartMode::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
                RestartMode::Always => RestartPolicyNameEnum::ALWAYS,
            }),
            maximum_retry_count: (restart.mode == RestartMode::OnFailure)
                .then_some(restart.max_restarts as i64),
        };
        let memory = spec.memory_limit_mb.map(|mb| (mb * 1024 * 1024) as i64);
        let labels = HashMap::from([
            (labels::PROJECT.to_string(), self.shared.project.clone()),
            (labels::SERVICE.to_string(), spec.name.clone()),
            (labels::STATE_DIR.to_string(), root.clone()),
            (labels::MANAGED_BY.to_string(), "aiops".to_string()),
        ]);
        Ok(ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(cmd),
            entrypoint: Some(Vec::new()),
            user: Some(user),
            env: Some(env),
            labels: Some(labels),
            stop_signal: (spec.kind == ServiceKind::Postgres).then(|| "SIGINT".to_string()),
            stop_timeout: Some(STOP_GRACE_S as i64),
            working_dir: Some("/".into()),
            host_config: Some(HostConfig {
                network_mode: Some("host".into()),
                binds: Some(binds),
                restart_policy: Some(restart_policy),
                memory,
                // No swap: a memory limit is a real limit, and crossing it is an OOM kill.
                memory_swap: memory,
                init: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn start_service(&self, name: &str) -> Result<ServiceStatus> {
        let spec = self.spec(name)?.clone();
        let existing = self.inspect(name).await?;
        {
            let mut slots = self.lock();
            let slot = slots.entry(name.to_string()).or_default();
            slot.desired_up = true;
            slot.stopping = false;
        }
        let running = existing
            .as_ref()
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| {
                matches!(
                    s.status,
                    Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING)
                )
            });
        if running {
            return self.status_of(name).await;
        }
        let id = match existing.and_then(|c| c.id) {
            Some(id) => id,
            None => {
                let body = self.definition(&spec)?;
                let created = self
                    .shared
                    .docker
                    .create_container(
                        Some(
                            CreateContainerOptionsBuilder::new()
                                .name(&self.name_of(name))
                                .build(),
                        ),
                        body,
                    )
                    .await
                    .map_err(engine("create container"))?;
                self.shared.events.record(
                    "container_created",
                    Some(name),
                    format!(
                        "container {} from {}{}",
                        short(&created.id),
                        image_of(spec.kind),
                        spec.memory_limit_mb
                            .map(|mb| format!(", memory limit {mb} MiB"))
                            .unwrap_or_default()
                    ),
                );
                created.id
            }
        };
        {
            let mut slots = self.lock();
            let slot = slots.entry(name.to_string()).or_default();
            slot.expect_start = true;
            slot.auto_base += slot.last_restart_count;
            slot.last_restart_count = 0;
        }
        self.shared
            .docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .map_err(engine("start container"))?;
        self.status_of(name).await
    }

    async fn stop_service(&self, name: &str) -> Result<ServiceStatus> {
        {
            let mut slots = self.lock();
            let slot = slots.entry(name.to_string()).or_default();
            slot.desired_up = false;
            slot.stopping = true;
        }
        let result = match self.container_id(name).await? {
            Some(id) => self
                .shared
                .docker
                .stop_container(
                    &id,
                    Some(StopContainerOptionsBuilder::new().t(STOP_GRACE_S).build()),
                )
                .await
                .or_else(|e| if is_not_modified(&e) { Ok(()) } else { Err(e) })
                .map_err(engine("stop container")),
            None => Ok(()),
        };
        self.lock().entry(name.to_string()).or_default().stopping = false;
        result?;
        self.shared
            .events
            .record("service_stopped", Some(name), "stopped on request");
        self.status_of(name).await
    }

    async fn status_of(&self, name: &str) -> Result<ServiceStatus> {
        let spec = self.spec(name)?.clone();
        let inspect = self.inspect(name).await?;
        Ok(self.status_from(&spec, inspect.as_ref()))
    }

    fn status_from(
        &self,
        spec: &ServiceSpec,
        c: Option<&ContainerInspectResponse>,
    ) -> ServiceStatus {
        let mut slots = self.lock();
        let slot = slots.entry(spec.name.clone()).or_default();
        let state = c.and_then(|c| c.state.clone()).unwrap_or_default();
        let restart_count = c.and_then(|c| c.restart_count).unwrap_or(0).max(0) as u32;
        if restart_count < slot.last_restart_count {
            slot.auto_base += slot.last_restart_count;
        }
        slot.last_restart_count = restart_count;
        let started = state.started_at.clone().filter(|s| !s.starts_with("0001-"));
        let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
        let exited_exit = || {
            let at = state
                .finished_at
                .as_deref()
                .filter(|s| !s.starts_with("0001-"))
                .and_then(parse_time)?;
            let code = state.exit_code.unwrap_or(0) as i32;
            Some(ExitInfo {
                code: Some(code),
                signal: signal_of(code),
                at,
                oom_killed: state.oom_killed.unwrap_or(false),
            })
        };
        use ContainerStateStatusEnum as S;
        let svc_state = match status {
            S::RUNNING | S::PAUSED if slot.stopping => ServiceState::Stopping,
            S::RUNNING | S::PAUSED => {
                if started.is_some() && slot.healthy_run == started {
                    ServiceState::Running
                } else {
                    ServiceState::Starting
                }
            }
            S::RESTARTING => ServiceState::Backoff,
            S::REMOVING => ServiceState::Stopping,
            S::CREATED if slot.desired_up => ServiceState::Starting,
            S::EXITED | S::DEAD if slot.desired_up => {
                let code = state.exit_code.unwrap_or(0);
                let exhausted = match spec.restart.mode {
                    RestartMode::OnFailure => {
                        code != 0 && restart_count >= spec.restart.max_restarts
                    }
                    RestartMode::Always => false,
                    RestartMode::Never => false,
                };
                if exhausted {
                    ServiceState::Failed
                } else {
                    ServiceState::Exited
                }
            }
            _ => ServiceState::Stopped,
        };
        // An exited container's own record is authoritative; a running one has cleared
        // it, so the exit seen on the engine's event stream is kept.
        if matches!(status, S::EXITED | S::DEAD | S::RESTARTING)
            && let Some(exit) = exited_exit()
        {
            slot.last_exit = Some(exit);
        }
        let alive = svc_state.is_alive();
        let started_at = started.as_deref().and_then(parse_time);
        let health = if alive && slot.health_run == started {
            slot.health.clone()
        } else {
            Health::default()
        };
        ServiceStatus {
            name: spec.name.clone(),
            kind: spec.kind.as_str().to_string(),
            state: svc_state,
            pid: state.pid.filter(|p| *p > 0 && alive).map(|p| p as u32),
            started_at: started_at.filter(|_| alive),
            uptime_s: started_at
                .filter(|_| alive)
                .map(|t| (Utc::now() - t).num_seconds().max(0) as u64),
            restarts: slot.requested_restarts + slot.auto_base + restart_count,
            last_exit: slot.last_exit.clone(),
            health,
            port: spec.port,
            log_path: spec.log_path.display().to_string(),
        }
    }

    async fn all_statuses(&self) -> Result<Vec<ServiceStatus>> {
        let specs = self.shared.prepared.topology.services.clone();
        let inspects = futures::future::join_all(specs.iter().map(|s| self.inspect(&s.name))).await;
        let mut out = Vec::new();
        for (spec, inspect) in specs.iter().zip(inspects) {
            out.push(self.status_from(spec, inspect?.as_ref()));
        }
        Ok(out)
    }

    async fn write_state_file(&self) {
        if let Ok(services) = self.all_statuses().await {
            StateFile::write(&self.shared.prepared.state, services);
        }
    }

    async fn persist_loop(self) {
        loop {
            self.write_state_file().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Probe every running service: each second when healthy, ten times a second when not.
    async fn probe_loop(self) {
        let mut next: HashMap<String, Instant> = HashMap::new();
        loop {
            let specs = self.shared.prepared.topology.services.clone();
            for spec in specs {
                if next.get(&spec.name).is_some_and(|t| Instant::now() < *t) {
                    continue;
                }
                let Ok(Some(c)) = self.inspect(&spec.name).await else {
                    continue;
                };
                let state = c.state.unwrap_or_default();
                if state.status != Some(ContainerStateStatusEnum::RUNNING) {
                    continue;
                }
                let run = state.started_at.clone();
                let up_for = run
                    .as_deref()
                    .and_then(parse_time)
                    .map(|t| (Utc::now() - t).to_std().unwrap_or_default())
                    .unwrap_or_default();
                let health = self.shared.prober.probe(&spec, up_for).await;
                let healthy = health.status == HealthStatus::Healthy;
                next.insert(
                    spec.name.clone(),
                    Instant::now()
                        + if healthy {
                            Duration::from_secs(1)
                        } else {
                            Duration::from_millis(100)
                        },
                );
                self.apply_health(&spec.name, run, health);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn apply_health(&self, name: &str, run: Option<String>, health: Health) {
        let transition = {
            let mut slots = self.lock();
            let slot = slots.entry(name.to_string()).or_default();
            let before = if slot.health_run == run {
                slot.health.status
            } else {
                HealthStatus::Unknown
            };
            let after = health.status;
            if after == HealthStatus::Healthy {
                slot.healthy_run = run.clone();
            }
            slot.health = health.clone();
            slot.health_run = run;
            (before != after).then_some((before, after))
        };
        if let Some((before, after)) = transition {
            crate::health::on_transition(
                &self.shared.prepared.state,
                &self.shared.events,
                name,
                (before, after),
                &health.detail,
            );
        }
    }

    /// The engine's events for this project, on the sandbox timeline: starts, exits (with
    /// the exit code), OOM kills, the restart policy at work, crash loops given up on.
    async fn engine_events(self) {
        loop {
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "label".to_string(),
                    vec![format!("{}={}", labels::PROJECT, self.shared.project)],
                ),
            ]);
            let mut stream = self
                .shared
                .docker
                .events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) => self.on_engine_event(ev).await,
                    Err(error) => {
                        tracing::warn!(message = "Docker event stream failed.", error = %describe(&error));
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn on_engine_event(&self, ev: bollard::models::EventMessage) {
        let action = ev.action.unwrap_or_default();
        let attrs = ev.actor.and_then(|a| a.attributes).unwrap_or_default();
        let Some(service) = attrs.get(labels::SERVICE).cloned() else {
            return;
        };
        let Ok(spec) = self.spec(&service).cloned() else {
            return;
        };
        match action.as_str() {
            "oom" => {
                self.lock().entry(service.clone()).or_default().oom_pending = true;
                self.shared.events.record(
                    "service_oom",
                    Some(&service),
                    format!(
                        "the kernel's OOM killer ended a process of the container{}",
                        spec.memory_limit_mb
                            .map(|mb| format!(" (memory limit {mb} MiB)"))
                            .unwrap_or_default()
                    ),
                );
            }
            "die" => {
                let code: i32 = attrs
                    .get("exitCode")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let inspect = self.inspect(&service).await.ok().flatten();
                let oom_engine = inspect
                    .as_ref()
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.oom_killed)
                    .unwrap_or(false);
                {
                    let mut slots = self.lock();
                    let slot = slots.entry(service.clone()).or_default();
                    let oom = std::mem::take(&mut slot.oom_pending) || oom_engine;
                    slot.last_exit = Some(ExitInfo {
                        code: Some(code),
                        signal: signal_of(code),
                        at: Utc::now(),
                        oom_killed: oom,
                    });
                }
                // Give the engine a moment to decide whether it restarts it.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let status = self.status_of(&service).await.ok();
                let exit = status.as_ref().and_then(|s| s.last_exit.clone());
                let state = status.as_ref().map(|s| s.state);
                self.shared.events.record(
                    "service_exited",
                    Some(&service),
                    format!(
                        "{}{}; now {}",
                        exit.as_ref().map(|e| e.describe()).unwrap_or_default(),
                        if exit.as_ref().is_some_and(|e| e.oom_killed) {
                            " (OOM-killed)"
                        } else {
                            ""
                        },
                        state.map(|s| s.as_str()).unwrap_or("?")
                    ),
                );
                if state == Some(ServiceState::Failed) {
                    self.shared.events.record(
                        "service_failed",
                        Some(&service),
                        "restarted too often (the container's restart policy gave up: crash loop); giving up until started again",
                    );
                }
            }
            "start" => {
                let expected = std::mem::take(
                    &mut self.lock().entry(service.clone()).or_default().expect_start,
                );
                if !expected {
                    self.shared.events.record(
                        "service_restarting",
                        Some(&service),
                        "automatic restart by the engine (restart policy)",
                    );
                }
                let pid = self
                    .inspect(&service)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|c| c.state.and_then(|s| s.pid))
                    .unwrap_or(0);
                self.shared
                    .events
                    .record("service_started", Some(&service), format!("pid {pid}"));
            }
            _ => {}
        }
    }

    /// Copy the container's console output (the logs API) into the service's console
    /// log, following it across restarts, so log readers see what they see on the
    /// process runtime.
    async fn copy_logs(self, service: String) {
        use std::io::Write;
        let Ok(path) = self.spec(&service).map(|s| s.console_log_path.clone()) else {
            return;
        };
        let mut last: Option<DateTime<Utc>> = None;
        loop {
            let id = match self.container_id(&service).await {
                Ok(Some(id)) => id,
                _ => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let since = last.map(|t| t.timestamp() as i32).unwrap_or(0);
            let mut stream = self.shared.docker.logs(
                &id,
                Some(
                    LogsOptionsBuilder::new()
                        .follow(true)
                        .stdout(true)
                        .stderr(true)
                        .timestamps(true)
                        .since(since)
                        .build(),
                ),
            );
            let mut file = match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(error) => {
                    tracing::warn!(message = "Cannot open a log file.", path = %path.display(), %error);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut pending = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                while let Some(nl) = pending.find('\n') {
                    let line: String = pending.drain(..=nl).collect();
                    let line = line.trim_end_matches('\n');
                    let (ts, text) = line.split_once(' ').unwrap_or(("", line));
                    let t = parse_time(ts);
                    if let (Some(t), Some(l)) = (t, last)
                        && t <= l
                    {
                        continue; // already copied (since= has one-second granularity)
                    }
                    if t.is_some() {
                        last = t;
                    }
                    let _ = writeln!(file, "{text}");
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn is_not_modified(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

fn current_user() -> String {
    format!(
        "{}:{}",
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw()
    )
}

fn image_of(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Postgres => images::POSTGRES_IMAGE,
        _ => images::TARGET_APP_IMAGE,
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The engine reports a process ended by signal N as exit code 128 + N.
fn signal_of(code: i32) -> Option<String> {
    if !(129..=159).contains(&code) {
        return None;
    }
    nix::sys::signal::Signal::try_from(code - 128)
        .ok()
        .map(|s| s.as_str().to_string())
}

/// Make the cache dir a shared mount point (a bind mount of itself), so a mount made
/// over it later on the host reaches the target's container. Needs root; without it the
/// cache is mounted with the rest of the state dir and `disk_full` is refused anyway.
fn share_cache_mount(state: &crate::StateDir) -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    let cache = state.cache_dir();
    let _ = std::fs::create_dir_all(&cache);
    if !crate::procinfo::mount_points().contains(&cache) {
        let ok = std::process::Command::new("mount")
            .arg("--bind")
            .arg(&cache)
            .arg(&cache)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return false;
        }
    }
    std::process::Command::new("mount")
        .arg("--make-shared")
        .arg(&cache)
        .status()
        .is_ok_and(|s| s.success())
}

/// Undo [`share_cache_mount`]: unmount whatever is stacked on the cache dir.
pub fn release_cache_mount(state: &crate::StateDir) {
    let cache = state.cache_dir();
    for _ in 0..4 {
        if !crate::procinfo::mount_points().contains(&cache) {
            return;
        }
        let _ = std::process::Command::new("umount").arg(&cache).status();
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn topology(&self) -> Result<Topology> {
        Ok(self.shared.prepared.topology.clone())
    }

    async fn services(&self) -> Result<Vec<ServiceStatus>> {
        self.all_statuses().await
    }

    /// One container's inspect, not all five.
    async fn service(&self, name: &str) -> Result<ServiceStatus> {
        self.status_of(name).await
    }

    async fn start(&self, name: &str) -> Result<ServiceStatus> {
        self.start_service(name).await
    }

    async fn stop(&self, name: &str) -> Result<ServiceStatus> {
        self.stop_service(name).await
    }

    async fn restart(&self, name: &str) -> Result<ServiceStatus> {
        self.stop_service(name).await?;
        self.lock()
            .entry(name.to_string())
            .or_default()
            .requested_restarts += 1;
        self.shared
            .events
            .record("service_restarting", Some(name), "restart requested");
        self.start_service(name).await
    }

    /// The signal goes to the container's main process from the host, as a signal from
    /// outside would: the restart policy then applies (the engine treats its own `kill`
    /// as a stop and would not restart). When the host may not signal it (not root), the
    /// engine's kill is used.
    async fn kill(&self, name: &str, signal: KillSignal) -> Result<ServiceStatus> {
        let before = self.status_of(name).await?;
        let pid = before
            .pid
            .ok_or_else(|| Error::Other(format!("{name} has no running process to signal")))?;
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal.to_nix()).is_err()
        {
            let id = self
                .container_id(name)
                .await?
                .ok_or_else(|| Error::Other(format!("{name} has no container")))?;
            self.shared
                .docker
                .kill_container(
                    &id,
                    Some(
                        KillContainerOptionsBuilder::new()
                            .signal(signal.as_str())
                            .build(),
                    ),
                )
                .await
                .map_err(engine("kill container"))?;
        }
        self.shared.events.record(
            "service_signalled",
            Some(name),
            format!("{} sent to pid {pid}", signal.as_str()),
        );
        if signal == KillSignal::Kill {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && procinfo::is_alive(pid) {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            // Let the engine record the exit before answering.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.status_of(name).await
    }

    async fn stats(&self, name: &str) -> Result<ServiceStats> {
        let spec = self.spec(name)?.clone();
        let status = self.status_of(name).await?;
        let limit_from_spec = spec.memory_limit_mb.map(|mb| mb * 1024 * 1024);
        let (Some(pid), Some(id)) = (status.pid, self.container_id(name).await?) else {
            return Ok(ServiceStats {
                name: name.to_string(),
                memory_limit_bytes: limit_from_spec,
                ..Default::default()
            });
        };
        let sample = |docker: Docker, id: String| async move {
            docker
                .stats(
                    &id,
                    Some(
                        StatsOptionsBuilder::new()
                            .stream(false)
                            .one_shot(true)
                            .build(),
                    ),
                )
                .next()
                .await
                .transpose()
                .map_err(engine("container stats"))
        };
        let previous = self
            .shared
            .cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
            .filter(|(_, at)| at.elapsed() < Duration::from_secs(5));
        let previous = match previous {
            Some(p) => Some(p),
            None => {
                let first = sample(self.shared.docker.clone(), id.clone()).await?;
                let at = Instant::now();
                tokio::time::sleep(Duration::from_millis(200)).await;
                first.and_then(|s| cpu_total(&s)).map(|t| (t, at))
            }
        };
        let Some(s) = sample(self.shared.docker.clone(), id).await? else {
            return Err(Error::Other(format!("the engine has no stats for {name}")));
        };
        let now = Instant::now();
        let total = cpu_total(&s).unwrap_or(0);
        let cpu_percent = match previous {
            Some((t0, at)) if total >= t0 => {
                let wall = now.duration_since(at).as_nanos().max(1) as f64;
                (total - t0) as f64 / wall * 100.0
            }
            _ => 0.0,
        };
        self.shared
            .cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (total, now));
        let mem = s.memory_stats.clone().unwrap_or_default();
        let inner = mem.stats.clone().unwrap_or_default();
        let usage = mem.usage.unwrap_or(0);
        let inactive = inner
            .get("total_inactive_file")
            .or_else(|| inner.get("inactive_file"))
            .copied()
            .unwrap_or(0);
        let usage = usage.saturating_sub(inactive);
        // Threads, descriptors and children from /proc: the container's processes are
        // this machine's processes.
        let (tree, _) = procinfo::tree_stats(name, pid, None);
        Ok(ServiceStats {
            name: name.to_string(),
            pid: Some(pid),
            cpu_percent,
            cpu_seconds_total: total as f64 / 1e9,
            // Resident memory from /proc, as on the process runtime, so figures and
            // thresholds mean the same on both; what the limit counts is beside it.
            rss_bytes: tree.rss_bytes,
            memory_usage_bytes: Some(usage),
            threads: s
                .pids_stats
                .as_ref()
                .and_then(|p| p.current)
                .unwrap_or(tree.threads),
            open_fds: tree.open_fds,
            children: tree.children,
            // The engine reports the host's memory as the "limit" of an unlimited
            // container: a limit only when one was set.
            memory_limit_bytes: limit_from_spec.and(mem.limit.or(limit_from_spec)),
        })
    }

    async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>> {
        let spec = self.spec(name)?;
        // The target and the worker write their own JSON log into the state dir; for the
        // others the main log is the console, straight from the engine.
        if spec.log_path != spec.console_log_path {
            return crate::supervisor::tail_lines(&spec.log_path, tail);
        }
        let Some(id) = self.container_id(name).await? else {
            return Ok(Vec::new());
        };
        let mut stream = self.shared.docker.logs(
            &id,
            Some(
                LogsOptionsBuilder::new()
                    .stdout(true)
                    .stderr(true)
                    .tail(&tail.to_string())
                    .build(),
            ),
        );
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(engine("container logs"))?;
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        Ok(text.lines().map(str::to_string).collect())
    }
}

fn cpu_total(s: &bollard::models::ContainerStatsResponse) -> Option<u64> {
    s.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_are_stable_and_distinct() {
        let a = project_id(std::path::Path::new("/tmp/a/.aiops"));
        assert_eq!(a, project_id(std::path::Path::new("/tmp/a/.aiops")));
        assert_ne!(a, project_id(std::path::Path::new("/tmp/b/.aiops")));
        assert_eq!(a.len(), 10);
        assert_eq!(
            container_name(&a, "postgres"),
            format!("aiops-{a}-postgres")
        );
    }

    #[test]
    fn exit_codes_above_128_name_the_signal() {
        assert_eq!(signal_of(137).as_deref(), Some("SIGKILL"));
        assert_eq!(signal_of(143).as_deref(), Some("SIGTERM"));
        assert_eq!(signal_of(1), None);
        assert_eq!(signal_of(0), None);
    }
}
