//! Everything that talks to the Docker Engine API (bollard stays inside this module).

use crate::config::SandboxConfig;
use crate::frame::StreamScan;
use crate::{Error, Limits, NetworkPolicy, Result};
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, HostConfigLogConfig,
    ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub(crate) const LABEL_MANAGED: &str = "wflo.managed";
pub(crate) const LABEL_SCOPE: &str = "wflo.scope";
pub(crate) const LABEL_SANDBOX_ID: &str = "wflo.sandbox-id";
pub(crate) const LABEL_CREATED: &str = "wflo.created";
pub(crate) const LABEL_POOLED: &str = "wflo.pooled";

/// The container-level limits: containers with equal profiles are interchangeable, so the warm
/// pool is keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Profile {
    pub(crate) memory: u64,
    pub(crate) nano_cpus: i64,
    pub(crate) pids: u32,
    pub(crate) tmp: u64,
    pub(crate) workspace: u64,
    pub(crate) nofile: u32,
    pub(crate) fsize: u64,
    pub(crate) network: NetworkPolicy,
}

impl Profile {
    pub(crate) fn new(limits: &Limits, network: NetworkPolicy) -> Self {
        Profile {
            memory: limits.memory_bytes,
            nano_cpus: (limits.cpus * 1e9).round() as i64,
            pids: limits.pids,
            tmp: limits.tmp_bytes,
            workspace: limits.workspace_bytes,
            nofile: limits.open_files,
            fsize: limits.file_size_bytes,
            network,
        }
    }
}

/// Containers this process owns right now (the sweep never touches them).
pub(crate) type LiveSet = Arc<Mutex<HashSet<String>>>;

#[derive(Clone)]
pub(crate) struct Engine {
    docker: Docker,
    image: String,
    scope: String,
    pub(crate) tracker: TaskTracker,
    pub(crate) live: LiveSet,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("image", &self.image)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A started container whose stdin/stdout/stderr are attached. Removed (in the background)
/// when dropped while still armed: on error, on timeout and when the caller's future is dropped.
pub(crate) struct Launched {
    pub(crate) id: String,
    pub(crate) sandbox_id: Uuid,
    pub(crate) created: Instant,
    io: Option<AttachContainerResults>,
    engine: Engine,
    armed: bool,
}

impl std::fmt::Debug for Launched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launched")
            .field("id", &self.id)
            .field("sandbox_id", &self.sandbox_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.io = None;
        let engine = self.engine.clone();
        let id = std::mem::take(&mut self.id);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let tracker = engine.tracker.clone();
                tracker.spawn_on(async move { engine.remove(&id).await }, &handle);
            }
            Err(_) => tracing::warn!(
                container = %id,
                "sandbox container dropped outside a tokio runtime; the orphan sweep will remove it"
            ),
        }
    }
}

impl Launched {
    /// Removes the container now (returns when it is gone).
    pub(crate) async fn remove(mut self) {
        self.io = None;
        self.engine.remove(&self.id).await;
        self.armed = false;
    }

    /// Removes the container in the background; [`Engine::tracker`] knows when it is done.
    pub(crate) fn remove_in_background(self) {
        // Dropping while armed spawns the removal on the tracker.
        drop(self);
    }
}

/// What a run produced, before it becomes an [`crate::ExecutionResult`].
#[derive(Debug)]
pub(crate) struct Raw {
    pub(crate) exit_code: i64,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) stdout_truncated: bool,
    pub(crate) stderr_truncated: bool,
    pub(crate) timed_out: bool,
    pub(crate) oom_killed: bool,
    pub(crate) duration: Duration,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) finished_at: DateTime<Utc>,
    /// The program could not even be handed over (a dead warm container).
    pub(crate) not_delivered: bool,
}

struct Collected {
    cap: usize,
    marker: Vec<u8>,
    stdout: StreamScan,
    stderr: StreamScan,
}

impl Collected {
    fn take(&mut self, item: LogOutput) {
        match item {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                self.stdout.feed(&message, self.cap, &self.marker)
            }
            LogOutput::StdErr { message } => self.stderr.feed(&message, self.cap, &self.marker),
            LogOutput::StdIn { .. } => {}
        }
    }

    fn ended(&self) -> bool {
        self.stdout.end.is_some() && self.stderr.end.is_some()
    }
}

type Output = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// How long a timed-out run may take beyond its timeout to kill the container and read what is
/// still in flight. Past it the attach streams are closed, which releases the engine whatever
/// the program printed.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(3);

/// How long a timed-out run then waits for the killed container's exit code.
pub(crate) const STATE_GRACE: Duration = Duration::from_secs(2);

/// Reads output until the stream ends, and until both end trailers are in when `trailers` is
/// set. What is over the cap is read and dropped: the engine cannot finish with a container
/// (not even kill it) while its output waits for a reader.
async fn drain(output: &mut Output, collected: &mut Collected, trailers: bool) {
    while !(trailers && collected.ended()) {
        match output.next().await {
            Some(Ok(item)) => collected.take(item),
            Some(Err(err)) => {
                tracing::debug!(error = %err, "sandbox attach stream ended with an error");
                break;
            }
            None => break,
        }
    }
}

fn spec(
    image: &str,
    scope: &str,
    profile: &Profile,
    sandbox_id: Uuid,
    pooled: bool,
) -> ContainerCreateBody {
    let network = match profile.network {
        NetworkPolicy::None => "none",
        NetworkPolicy::Bridge => "bridge",
    };
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_SCOPE.to_string(), scope.to_string()),
        (LABEL_SANDBOX_ID.to_string(), sandbox_id.to_string()),
        (
            LABEL_CREATED.to_string(),
            Utc::now().timestamp().to_string(),
        ),
        (LABEL_POOLED.to_string(), pooled.to_string()),
    ]);
    let ulimit = |name: &str, value: i64| ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(value),
        hard: Some(value),
    };
    let host = HostConfig {
        network_mode: Some(network.into()),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([
            (
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,noexec,size={},mode=1777", profile.tmp),
            ),
            (
                "/workspace".to_string(),
                format!(
                    "rw,exec,nosuid,nodev,size={},uid=1000,gid=1000,mode=0755",
                    profile.workspace
                ),
            ),
        ])),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        memory: Some(profile.memory as i64),
        memory_swap: Some(profile.memory as i64),
        nano_cpus: Some(profile.nano_cpus),
        pids_limit: Some(i64::from(profile.pids)),
        ulimits: Some(vec![
            ulimit("nofile", i64::from(profile.nofile)),
            ulimit("fsize", profile.fsize as i64),
        ]),
        // Output travels over the attach stream only: nothing is written to the host's disk.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        // A real init as PID 1: signals and zombies behave, exit codes pass through.
        init: Some(true),
        ipc_mode: Some("private".into()),
        privileged: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec![
            "python3".into(),
            "-u".into(),
            "-B".into(),
            "-c".into(),
            crate::frame::BOOTSTRAP.into(),
        ]),
        user: Some("1000:1000".into()),
        working_dir: Some("/workspace".into()),
        env: Some(vec![]),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        network_disabled: Some(profile.network == NetworkPolicy::None),
        labels: Some(labels),
        host_config: Some(host),
        ..Default::default()
    }
}

fn socket_path(socket: &str) -> &str {
    socket.strip_prefix("unix://").unwrap_or(socket)
}

impl Engine {
    /// Connects, negotiates the API version, and checks that the image is there.
    pub(crate) async fn connect(config: &SandboxConfig) -> Result<Engine> {
        let socket = config.docker_socket.clone();
        let unreachable = |reason: String| Error::DaemonUnreachable {
            socket: if socket.starts_with("unix://") {
                socket.clone()
            } else {
                format!("unix://{socket}")
            },
            reason,
        };
        let docker = Docker::connect_with_unix(
            socket_path(&socket),
            config.api_timeout.as_secs().max(1),
            API_DEFAULT_VERSION,
        )
        .map_err(|e| match e {
            bollard::errors::Error::SocketNotFoundError(_) => {
                unreachable("the socket does not exist".into())
            }
            other => unreachable(other.to_string()),
        })?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        match docker.inspect_image(&config.image).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                return Err(Error::ImageMissing {
                    image: config.image.clone(),
                });
            }
            Err(e) => return Err(Error::docker("inspect image", e)),
        }
        tracing::debug!(
            api = %docker.client_version(),
            image = %config.image,
            "connected to the docker engine"
        );
        Ok(Engine {
            docker,
            image: config.image.clone(),
            scope: config.scope.clone(),
            tracker: TaskTracker::new(),
            live: Arc::default(),
        })
    }

    fn spec(&self, profile: &Profile, sandbox_id: Uuid, pooled: bool) -> ContainerCreateBody {
        spec(&self.image, &self.scope, profile, sandbox_id, pooled)
    }

    /// Creates, attaches to (before start, so no output is missed) and starts a container whose
    /// interpreter then waits for its program on stdin.
    pub(crate) async fn launch(&self, profile: &Profile, pooled: bool) -> Result<Launched> {
        let sandbox_id = Uuid::now_v7();
        let name = format!("wflo-sbx-{sandbox_id}");
        let created = Instant::now();
        let resp = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                self.spec(profile, sandbox_id, pooled),
            )
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => Error::ImageMissing {
                    image: self.image.clone(),
                },
                e => Error::docker("create container", e),
            })?;
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(resp.id.clone());
        // From here on the guard removes the container if anything fails or is dropped.
        let mut launched = Launched {
            id: resp.id,
            sandbox_id,
            created,
            io: None,
            engine: self.clone(),
            armed: true,
        };
        let io = self
            .docker
            .attach_container(
                &launched.id,
                Some(
                    AttachContainerOptionsBuilder::new()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .logs(false)
                        .build(),
                ),
            )
            .await
            .map_err(|e| Error::docker("attach container", e))?;
        launched.io = Some(io);
        self.docker
            .start_container(&launched.id, None)
            .await
            .map_err(|e| Error::docker("start container", e))?;
        Ok(launched)
    }

    /// Hands `frame` to the waiting interpreter and collects the outcome: from the end
    /// trailers when the program exited by itself (the container may still be stopping),
    /// else from the container's state once it has stopped. Removing it is the caller's
    /// business.
    pub(crate) async fn run(
        &self,
        launched: &mut Launched,
        frame: &[u8],
        nonce: &str,
        timeout: Duration,
        cap: usize,
    ) -> Result<Raw> {
        let Some(io) = launched.io.as_mut() else {
            return Err(Error::Docker {
                operation: "attach container",
                message: "the container's streams are gone".into(),
            });
        };
        let mut collected = Collected {
            cap,
            marker: crate::frame::marker(nonce),
            stdout: StreamScan::default(),
            stderr: StreamScan::default(),
        };
        let started = Instant::now();
        let started_at = Utc::now();
        let AttachContainerResults { output, input } = io;
        let mut write_ok = true;
        let work = async {
            let write = async {
                let r = async {
                    input.write_all(frame).await?;
                    input.flush().await
                }
                .await;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "writing the program to the sandbox failed");
                    write_ok = false;
                }
            };
            tokio::join!(write, drain(output, &mut collected, true));
        };
        let timed_out = tokio::time::timeout(timeout, work).await.is_err();
        let mut killed = false;
        if timed_out {
            // Kill while reading: the engine completes a kill only once the container's
            // output has been handed over, so a program flooding stdout or stderr would hold
            // an unread kill until the API timeout. Reading to the end of the streams also
            // collects whatever the program printed before the kill.
            let kill = async {
                match self
                    .docker
                    .kill_container(
                        &launched.id,
                        Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
                    )
                    .await
                {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(error = %e, "killing a timed-out sandbox failed");
                        false
                    }
                }
            };
            let both = async { tokio::join!(kill, drain(output, &mut collected, false)).0 };
            match tokio::time::timeout(KILL_GRACE, both).await {
                Ok(k) => killed = k,
                Err(_) => tracing::warn!(
                    container = %launched.id,
                    grace = ?KILL_GRACE,
                    "a timed-out sandbox was not confirmed killed within the grace; closing its streams"
                ),
            }
        }
        if timed_out {
            // Nothing more is read from a killed container; closing the attach connection
            // also frees an engine still writing to it.
            launched.io = None;
        }
        let duration = started.elapsed();
        let finished_at = Utc::now();
        collected.stdout.finish(cap);
        collected.stderr.finish(cap);
        let end = match (collected.stdout.end, collected.stderr.end) {
            (Some(a), Some(_)) if !timed_out => Some(a),
            _ => None,
        };
        let nothing_out = collected.stdout.kept.is_empty() && collected.stderr.kept.is_empty();
        let mut raw = Raw {
            exit_code: -1,
            stdout: std::mem::take(&mut collected.stdout.kept),
            stderr: std::mem::take(&mut collected.stderr.kept),
            stdout_truncated: collected.stdout.truncated,
            stderr_truncated: collected.stderr.truncated,
            timed_out,
            oom_killed: false,
            duration,
            started_at,
            finished_at,
            not_delivered: !write_ok && !timed_out && nothing_out && end.is_none(),
        };
        match end {
            // The program exited by itself and no OOM kill happened: done, no need to wait
            // for Docker to tear the container down.
            Some(end) if end.oom_kills == 0 && end.exit_code != 137 => {
                raw.exit_code = end.exit_code;
            }
            _ if timed_out => {
                // Bounded: a timed-out run ends within its timeout plus the two graces.
                let state = tokio::time::timeout(
                    STATE_GRACE,
                    self.stopped_state(&launched.id, STATE_GRACE),
                )
                .await;
                match state {
                    Ok(Ok(Some((code, oom)))) => {
                        raw.exit_code = code;
                        raw.oom_killed = oom;
                    }
                    other => {
                        if let Ok(Err(e)) = other {
                            tracing::debug!(error = %e, "reading a timed-out sandbox's state failed");
                        }
                        // Still stopping: SIGKILL was delivered (137) or the state is unknown.
                        raw.exit_code = if killed { 137 } else { -1 };
                    }
                }
            }
            _ => {
                let state = self
                    .stopped_state(&launched.id, Duration::from_secs(30))
                    .await?;
                let (code, oom) = state.unwrap_or((-1, false));
                raw.exit_code = end.map_or(code, |e| e.exit_code);
                raw.oom_killed = oom || end.is_some_and(|e| e.oom_kills > 0);
            }
        }
        Ok(raw)
    }

    /// Waits up to `wait` for the container to stop; its exit code and whether the OOM killer
    /// struck, or `None` when it is still running.
    async fn stopped_state(&self, id: &str, wait: Duration) -> Result<Option<(i64, bool)>> {
        let mut waiting = self.docker.wait_container(
            id,
            Some(
                WaitContainerOptionsBuilder::new()
                    .condition("not-running")
                    .build(),
            ),
        );
        let waited = tokio::time::timeout(wait, waiting.next()).await;
        let wait_code = match waited {
            Ok(Some(Ok(r))) => Some(r.status_code),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
                Some(code)
            }
            Ok(Some(Err(e))) => return Err(Error::docker("wait for container", e)),
            Ok(None) | Err(_) => None,
        };
        let state = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| Error::docker("inspect container", e))?
            .state
            .unwrap_or_default();
        if state.running == Some(true) && wait_code.is_none() {
            return Ok(None);
        }
        Ok(Some((
            state.exit_code.or(wait_code).unwrap_or(-1),
            state.oom_killed.unwrap_or(false),
        )))
    }

    /// Force-removes a container (running or not); a missing one is fine.
    pub(crate) async fn remove(&self, id: &str) {
        let r = self
            .docker
            .remove_container(
                id,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await;
        match r {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "removing a sandbox container failed")
            }
        }
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Containers of this scope: `(id, sandbox id, created, running, pooled)`.
    pub(crate) async fn list(&self) -> Result<Vec<crate::ManagedContainer>> {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_SCOPE}={}", self.scope),
            ],
        )]);
        let list = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| Error::docker("list containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                Some(crate::ManagedContainer {
                    id: c.id?,
                    sandbox_id: labels.get(LABEL_SANDBOX_ID).and_then(|s| s.parse().ok()),
                    created_at: DateTime::from_timestamp(c.created.unwrap_or(0), 0)
                        .unwrap_or_default(),
                    running: matches!(c.state, Some(ContainerSummaryStateEnum::RUNNING)),
                    pooled: labels.get(LABEL_POOLED).map(String::as_str) == Some("true"),
                })
            })
            .collect())
    }

    /// Removes containers of this scope created at least `older_than` ago that this process
    /// does not own.
    pub(crate) async fn sweep(&self, older_than: Duration) -> Result<usize> {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let doomed: Vec<String> = self
            .list()
            .await?
            .into_iter()
            .filter(|c| c.created_at <= cutoff && !live.contains(&c.id))
            .map(|c| c.id)
            .collect();
        for id in &doomed {
            tracing::info!(container = %id, "removing an orphaned sandbox container");
            self.remove(id).await;
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_keys_on_limits_and_network() {
        let l = Limits::default();
        let a = Profile::new(&l, NetworkPolicy::None);
        assert_eq!(a, Profile::new(&l, NetworkPolicy::None));
        assert_ne!(a, Profile::new(&l, NetworkPolicy::Bridge));
        let mut half = l.clone();
        half.cpus = 0.5;
        assert_eq!(
            Profile::new(&half, NetworkPolicy::None).nano_cpus,
            500_000_000
        );
    }

    #[test]
    fn container_spec_is_locked_down() {
        let l = Limits {
            cpus: 0.5,
            ..Limits::default()
        };
        let id = Uuid::now_v7();
        let spec = spec(
            "img:1",
            "sc",
            &Profile::new(&l, NetworkPolicy::None),
            id,
            false,
        );
        let h = spec.host_config.clone().unwrap();
        assert_eq!(spec.user.as_deref(), Some("1000:1000"));
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(spec.network_disabled, Some(true));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            h.security_opt,
            Some(vec!["no-new-privileges:true".to_string()])
        );
        assert_eq!(h.memory, Some(l.memory_bytes as i64));
        assert_eq!(h.memory_swap, h.memory);
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(h.pids_limit, Some(64));
        let tmpfs = h.tmpfs.unwrap();
        assert!(tmpfs["/tmp"].contains(&format!("size={}", l.tmp_bytes)));
        assert!(tmpfs["/workspace"].contains(&format!("size={}", l.workspace_bytes)));
        let ulimits: Vec<_> = h
            .ulimits
            .unwrap()
            .into_iter()
            .filter_map(|u| u.name)
            .collect();
        assert_eq!(ulimits, ["nofile", "fsize"]);
        assert_eq!(spec.env, Some(vec![]));
        let labels = spec.labels.unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_SCOPE], "sc");
        assert_eq!(labels[LABEL_SANDBOX_ID], id.to_string());
        assert!(labels[LABEL_CREATED].parse::<i64>().is_ok());
        // The command is the fixed bootstrap: nothing of a request is in it.
        assert_eq!(spec.cmd.unwrap().last().unwrap(), crate::frame::BOOTSTRAP);
        let bridged = spec_network(NetworkPolicy::Bridge);
        assert_eq!(bridged, ("bridge".to_string(), false));
    }

    fn spec_network(n: NetworkPolicy) -> (String, bool) {
        let s = spec(
            "i",
            "s",
            &Profile::new(&Limits::default(), n),
            Uuid::nil(),
            true,
        );
        (
            s.host_config.unwrap().network_mode.unwrap(),
            s.network_disabled.unwrap(),
        )
    }

    #[tokio::test]
    async fn no_daemon_names_the_socket_and_the_fix() {
        let config = SandboxConfig::builder()
            .docker_socket("unix:///nonexistent/wflo-test/docker.sock")
            .build()
            .unwrap();
        let err = Engine::connect(&config).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::DaemonUnreachable { .. }), "{text}");
        assert!(
            text.contains("unix:///nonexistent/wflo-test/docker.sock"),
            "{text}"
        );
        assert!(text.contains("cargo xtask services up docker"), "{text}");
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_unreachable() {
        // A path that exists but is no docker engine: connecting fails, not hangs.
        let dir = std::env::temp_dir().join(format!("wflo-sbx-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(listener);
        let config = SandboxConfig::builder()
            .docker_socket(path.display().to_string())
            .api_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let err = Engine::connect(&config).await.unwrap_err();
        std::fs::remove_dir_all(&dir).ok();
        let text = err.to_string();
        assert!(matches!(err, Error::DaemonUnreachable { .. }), "{text}");
        assert!(
            text.contains(&format!("unix://{}", path.display())),
            "{text}"
        );
    }
}
