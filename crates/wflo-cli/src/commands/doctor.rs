//! `wflo doctor`: one line per service — ok, not configured, or what to do.

use crate::exit::{UNREACHABLE, USAGE, coded};
use std::time::Duration;
use wflo_core::Config;
use wflo_core::bus::{Bus, BusConfig};
use wflo_core::cache::RedisClient;
use wflo_core::db::{Db, DbConfig, redact};
use wflo_core::llm::{ProviderConfig, ReplayProvider, create_provider};
use wflo_core::sandbox::SandboxRuntime;

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// Works.
    Ok(String),
    /// Works, with something to do.
    Warn(String),
    /// Not configured: what Wflo does instead.
    Off(String),
    /// Configured and failing: what to do.
    Fail(String),
}

impl Check {
    fn line(&self, name: &str) -> String {
        let (tag, text) = match self {
            Check::Ok(t) => ("ok", t),
            Check::Warn(t) => ("warn", t),
            Check::Off(t) => ("--", t),
            Check::Fail(t) => ("FAIL", t),
        };
        format!("{name:<10} {tag:<5} {text}")
    }
}

const LIMIT: Duration = Duration::from_secs(10);

/// The error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        src = s.source();
    }
    text
}

async fn within<T, E: From<String>>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| Err(E::from(format!("{what} did not answer within {LIMIT:?}"))))
}

/// A connection failure in words ("connection refused"), not an OS error's debug form
/// (`Os { code: 111, .. }`); `None` when `text` names no known network failure.
pub(crate) fn network_words(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| t.contains(n));
    Some(
        if has(&[
            "connection refused",
            "connectionrefused",
            "code: 111",
            "os error 111",
        ]) {
            "connection refused"
        } else if has(&["no route to host", "code: 113", "os error 113"]) {
            "no route to host"
        } else if has(&["network is unreachable", "code: 101", "os error 101"]) {
            "network unreachable"
        } else if has(&["connection reset", "code: 104", "os error 104"]) {
            "connection reset"
        } else if has(&[
            "name or service not known",
            "failed to lookup address",
            "dns error",
            "nodename nor servname",
            "temporary failure in name resolution",
        ]) {
            "host name not found"
        } else if has(&["timed out", "timeout", "deadline"]) {
            "no answer in time"
        } else if has(&["permission denied", "code: 13,", "os error 13"]) {
            "permission denied"
        } else {
            return None;
        },
    )
}

/// `what went wrong at where`: the failure in words when it is a known network failure, else
/// the error's own text.
fn failure_at(text: &str, at: &str) -> String {
    match network_words(text) {
        Some(words) => format!("{words} at {at}"),
        None => text.to_string(),
    }
}

/// `host:port` of a URL such as `redis://user:pw@host:6379/0` or `postgres://u@host/db`.
pub(crate) fn url_host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if host.contains(':') && !host.ends_with(']') {
        host.to_string()
    } else {
        format!("{host}:{default_port}")
    }
}

/// The file of a SQLite URL (`sqlite://wflo.db?mode=rwc` -> `wflo.db`); `None` in memory.
pub(crate) fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    if rest.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty()).then(|| std::path::PathBuf::from(path))
}

async fn database(config: &Config) -> Check {
    let url = redact(config.database_url());
    // Doctor looks and never creates: a SQLite file that is not there is not made here.
    if let Some(file) = sqlite_file(config.database_url())
        && !file.exists()
    {
        return Check::Off(format!(
            "{url}: {} does not exist yet; `wflo migrate` or the first `wflo run` creates it",
            file.display()
        ));
    }
    // The pool reports a refused connection as a timeout: ask the server's port first.
    if config.database_url().starts_with("postgres") {
        let at = url_host_port(config.database_url(), 5432);
        let reached = within("the database", async {
            tokio::net::TcpStream::connect(&at)
                .await
                .map_err(|e| failure_at(&format!("{e:?} {e}"), &at))
        })
        .await;
        if let Err(e) = reached {
            return Check::Fail(format!(
                "{e}; start PostgreSQL there (`cargo xtask services up postgres`) or fix DATABASE_URL"
            ));
        }
    }
    let db_config = match DbConfig::builder(config.database_url())
        .auto_migrate(false)
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Check::Fail(format!("{e}; fix DATABASE_URL")),
    };
    let db = match within("the database", async {
        Db::connect(&db_config).await.map_err(|e| match e {
            wflo_core::db::Error::SchemaOutdated { pending } => DbFailure::Pending(pending),
            wflo_core::db::Error::Connect { reason, .. } => DbFailure::Other(format!(
                "{}; start the database or fix DATABASE_URL",
                failure_at(&reason, &url_host_port(config.database_url(), 5432))
            )),
            other => DbFailure::Other(chain(&other)),
        })
    })
    .await
    {
        Ok(db) => db,
        Err(DbFailure::Pending(pending)) => {
            return Check::Warn(format!(
                "{url}: {pending} migration(s) not applied yet; run `wflo migrate` (other \
                 commands apply them too)"
            ));
        }
        Err(DbFailure::Other(e)) => return Check::Fail(e),
    };
    if let Err(e) = db.ping().await {
        return Check::Fail(format!("{url}: {}", chain(&e)));
    }
    match db.schema_status().await {
        Ok(s) if s.pending.is_empty() && s.unknown.is_empty() => Check::Ok(format!(
            "{url} ({:?}), schema current ({} migrations)",
            db.backend(),
            s.applied.len()
        )),
        Ok(s) if !s.unknown.is_empty() => Check::Fail(format!(
            "{url}: the schema is newer than this wflo ({}); upgrade wflo",
            s.unknown.join(", ")
        )),
        Ok(s) => Check::Warn(format!(
            "{url}: {} migration(s) not applied yet; run `wflo migrate` (other commands apply \
             them too)",
            s.pending.len()
        )),
        Err(e) => Check::Fail(format!("{url}: {}", chain(&e))),
    }
}

async fn redis(config: &Config) -> Check {
    let Some(url) = config.redis_url() else {
        return Check::Off(
            "REDIS_URL not set: in-process response cache and locks (one process)".into(),
        );
    };
    let shown = wflo_core::db::redact(url);
    let result = within("Redis", async {
        let c = config
            .redis_config()
            .map_err(|e| chain(&e))?
            .ok_or_else(|| "REDIS_URL is empty".to_string())?;
        let client = RedisClient::connect(&c).await.map_err(|e| chain(&e))?;
        client.health().await.map_err(|e| chain(&e))
    })
    .await;
    match result {
        Ok(h) => Check::Ok(format!("{shown}, PING in {:?}", h.latency)),
        Err(e) => match network_words(&e) {
            Some(words) => Check::Fail(format!(
                "{words} at {}; start redis-server there (`cargo xtask services up redis`), fix \
                 REDIS_URL, or unset it to use the in-process cache",
                url_host_port(url, 6379)
            )),
            None => Check::Fail(format!(
                "{e} (or unset REDIS_URL to use the in-process cache)"
            )),
        },
    }
}

async fn kafka(config: &Config) -> Check {
    let Some(servers) = config.kafka_bootstrap() else {
        return Check::Off(
            "KAFKA_BOOTSTRAP_SERVERS not set: events wait in the outbox until `wflo relay` runs"
                .into(),
        );
    };
    let result = within("Kafka", async {
        let c = BusConfig::builder(servers).build().map_err(|e| chain(&e))?;
        let bus = Bus::connect(c).await.map_err(|e| chain(&e))?;
        bus.list_topics().await.map_err(|e| chain(&e))
    })
    .await;
    match result {
        Ok(topics) => Check::Ok(format!("{servers}, {} topic(s)", topics.len())),
        Err(e) => match network_words(&e) {
            Some(words) => Check::Fail(format!(
                "{words} at {servers}; start a broker there (`cargo xtask services up kafka`), \
                 fix KAFKA_BOOTSTRAP_SERVERS, or unset it (events then wait in the outbox)"
            )),
            None => Check::Fail(format!(
                "{e} (or unset KAFKA_BOOTSTRAP_SERVERS: events then wait in the outbox)"
            )),
        },
    }
}

/// `host:port` of a Temporal address (`http://host:port` or `host:port`).
pub(crate) fn host_port(address: &str) -> String {
    let a = address
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let a = a.split('/').next().unwrap_or(a);
    if a.contains(':') {
        a.to_string()
    } else {
        format!("{a}:7233")
    }
}

async fn temporal(config: &Config) -> Check {
    let Some(address) = config.temporal_address() else {
        return Check::Off("TEMPORAL_ADDRESS not set: the in-process engine runs workflows".into());
    };
    let target = host_port(address);
    let result = within("Temporal", async {
        tokio::net::TcpStream::connect(&target)
            .await
            .map_err(|e| failure_at(&format!("{e:?} {e}"), &target))
    })
    .await;
    match result {
        Ok(_) => workers(config, &target).await,
        Err(e) => Check::Fail(format!(
            "{e}; start it (`cargo xtask services up temporal`), fix TEMPORAL_ADDRESS, or unset \
             it to run on the in-process engine"
        )),
    }
}

/// Whether any worker polls the configured task queue (a decision needs none, a run's steps
/// do).
async fn workers(config: &Config, target: &str) -> Check {
    let queue = config.temporal_task_queue();
    let reached = format!(
        "{target} reachable (namespace {}, task queue {queue})",
        config.temporal_namespace()
    );
    let pollers = within("Temporal", async {
        let temporal = config
            .temporal_config()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "TEMPORAL_ADDRESS is not set".to_string())?;
        let client = wflo_core::temporal::TemporalClient::connect(temporal)
            .await
            .map_err(|e| e.to_string())?;
        client.pollers().await.map_err(|e| e.to_string())
    })
    .await;
    match pollers {
        Ok(pollers) => {
            let live: Vec<String> = super::live_pollers(&pollers)
                .into_iter()
                .map(|(p, age)| match age {
                    Some(a) => format!("{} (polled {}s ago)", p.identity, a.as_secs()),
                    None => p.identity.clone(),
                })
                .collect();
            if live.is_empty() {
                Check::Warn(format!(
                    "{reached}; no worker is polling task queue {queue}: runs on temporal wait \
                     until one starts (`wflo worker` with the same TEMPORAL_* settings and \
                     database)"
                ))
            } else {
                Check::Ok(format!(
                    "{reached}; {} worker(s) polling: {}",
                    live.len(),
                    live.join(", ")
                ))
            }
        }
        Err(e) => Check::Warn(format!(
            "{reached}; cannot tell whether a worker polls task queue {queue}: {e}"
        )),
    }
}

async fn docker(config: &Config) -> Check {
    let sandbox = match super::sandbox_config(config) {
        Ok(s) => s,
        Err(e) => return Check::Fail(chain(e.as_ref())),
    };
    let image = sandbox.image().to_string();
    let socket = sandbox.docker_socket().to_string();
    let result = within("the Docker engine", async {
        SandboxRuntime::new(sandbox)
            .await
            .map_err(DockerFailure::from)
    })
    .await;
    match result {
        Ok(rt) => {
            rt.shutdown().await;
            Check::Ok(format!("{socket}, sandbox image {image} present"))
        }
        // The library's own hints speak to Rust callers; here the fix is the CLI's, said once.
        Err(DockerFailure::Unreachable { socket, reason }) => Check::Fail(format!(
            "{}; code steps need a Docker engine: start one (`cargo xtask services up docker \
             --install`) or set DOCKER_HOST to a running engine's socket",
            match network_words(&reason) {
                Some(words) => format!("{words} at {socket}"),
                None => format!("cannot reach the Docker engine at {socket}: {reason}"),
            }
        )),
        Err(DockerFailure::ImageMissing { image }) => Check::Fail(format!(
            "the engine at {socket} answers, but the sandbox image {image} is missing; build it \
             with `cargo xtask sandbox-image` or set WFLO_SANDBOX_IMAGE to one that is present"
        )),
        Err(DockerFailure::Other(e)) => Check::Fail(format!(
            "{e} (code steps need the Docker engine; DOCKER_HOST names its socket)"
        )),
    }
}

/// Why the database check failed.
enum DbFailure {
    Pending(usize),
    Other(String),
}

impl From<String> for DbFailure {
    fn from(e: String) -> Self {
        DbFailure::Other(e)
    }
}

/// Why the Docker check failed, with the parts the CLI words itself.
enum DockerFailure {
    Unreachable { socket: String, reason: String },
    ImageMissing { image: String },
    Other(String),
}

impl From<String> for DockerFailure {
    fn from(e: String) -> Self {
        DockerFailure::Other(e)
    }
}

impl From<wflo_core::sandbox::Error> for DockerFailure {
    fn from(e: wflo_core::sandbox::Error) -> Self {
        match e {
            wflo_core::sandbox::Error::DaemonUnreachable { socket, reason } => {
                DockerFailure::Unreachable { socket, reason }
            }
            wflo_core::sandbox::Error::ImageMissing { image } => {
                DockerFailure::ImageMissing { image }
            }
            other => DockerFailure::Other(chain(&other)),
        }
    }
}

fn llm(config: &Config) -> Check {
    let s = config.llm();
    let name = match (
        &s.provider,
        &s.cassette,
        &s.openai_api_key,
        &s.anthropic_api_key,
    ) {
        (Some(p), _, _, _) => p.clone(),
        (None, Some(_), _, _) => "replay".into(),
        (None, None, Some(_), _) => "openai".into(),
        (None, None, None, Some(_)) => "anthropic".into(),
        _ => {
            return Check::Off(
                "no provider: workflows with llm steps are refused; set OPENAI_API_KEY or \
                 ANTHROPIC_API_KEY, or WFLO_LLM_CASSETTE for offline replay"
                    .into(),
            );
        }
    };
    match name.as_str() {
        "replay" => match &s.cassette {
            None => Check::Fail(
                "WFLO_LLM_PROVIDER=replay needs WFLO_LLM_CASSETTE (a cassette file)".into(),
            ),
            Some(path) => match ReplayProvider::replay(path) {
                Ok(r) => Check::Ok(format!(
                    "replay cassette {} ({} recorded answer(s)), offline",
                    path.display(),
                    r.len()
                )),
                Err(e) => Check::Fail(chain(&e)),
            },
        },
        "openai" | "anthropic" => {
            let (key, base, var) = if name == "openai" {
                (&s.openai_api_key, &s.openai_base_url, "OPENAI_API_KEY")
            } else {
                (
                    &s.anthropic_api_key,
                    &s.anthropic_base_url,
                    "ANTHROPIC_API_KEY",
                )
            };
            let mut b = ProviderConfig::builder().maybe_api_key(key.clone());
            if let Some(u) = base {
                b = match b.base_url(u) {
                    Ok(b) => b,
                    Err(e) => return Check::Fail(chain(&e)),
                };
            }
            match b.build().and_then(|c| create_provider(&name, &c)) {
                Ok(_) => Check::Ok(format!(
                    "{name} ({var} set{}); not called by doctor",
                    base.as_ref()
                        .map(|u| format!(", base URL {u}"))
                        .unwrap_or_default()
                )),
                Err(e) => Check::Fail(chain(&e)),
            }
        }
        other => Check::Fail(format!(
            "unknown provider `{other}`; use openai, anthropic or replay"
        )),
    }
}

pub(crate) async fn doctor() -> anyhow::Result<u8> {
    let config = match super::config() {
        Ok(c) => c,
        Err(e) => {
            println!("{}", Check::Fail(chain(e.as_ref())).line("config"));
            return Err(coded(USAGE, "fix the configuration above"));
        }
    };
    let (db, redis, kafka, temporal, docker) = tokio::join!(
        database(&config),
        redis(&config),
        kafka(&config),
        temporal(&config),
        docker(&config)
    );
    let checks = [
        ("database", db),
        ("redis", redis),
        ("kafka", kafka),
        ("temporal", temporal),
        ("docker", docker),
        ("llm", llm(&config)),
    ];
    let mut failed = Vec::new();
    for (name, check) in &checks {
        println!("{}", check.line(name));
        if matches!(check, Check::Fail(_)) {
            failed.push(*name);
        }
    }
    if failed.is_empty() {
        println!("all configured services answer");
        Ok(0)
    } else {
        Err(coded(
            UNREACHABLE,
            format!("{} check(s) failed: {}", failed.len(), failed.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_addresses_become_host_port() {
        assert_eq!(host_port("127.0.0.1:7233"), "127.0.0.1:7233");
        assert_eq!(host_port("http://localhost:7233/"), "localhost:7233");
        assert_eq!(host_port("temporal"), "temporal:7233");
    }

    #[test]
    fn connection_errors_are_words() {
        let os = r#"IO: Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }"#;
        assert_eq!(network_words(os), Some("connection refused"));
        assert_eq!(
            failure_at("Connection refused (os error 111)", "127.0.0.1:6390"),
            "connection refused at 127.0.0.1:6390"
        );
        assert_eq!(
            network_words("error connecting to broker: io error: no route to host (os error 113)"),
            Some("no route to host")
        );
        assert_eq!(
            network_words("failed to lookup address information: Name or service not known"),
            Some("host name not found")
        );
        assert_eq!(network_words("the socket does not exist"), None);
        assert_eq!(failure_at("odd failure", "h:1"), "odd failure");
    }

    #[test]
    fn urls_give_their_host_and_port_and_sqlite_its_file() {
        assert_eq!(
            url_host_port("redis://user:pw@127.0.0.1:6390/0", 6379),
            "127.0.0.1:6390"
        );
        assert_eq!(
            url_host_port("rediss://cache.internal", 6379),
            "cache.internal:6379"
        );
        assert_eq!(
            url_host_port("postgres://u:p@db:5433/wflo?sslmode=disable", 5432),
            "db:5433"
        );
        assert_eq!(
            sqlite_file("sqlite://wflo.db?mode=rwc"),
            Some("wflo.db".into())
        );
        assert_eq!(
            sqlite_file("sqlite:///var/lib/wflo.db"),
            Some("/var/lib/wflo.db".into())
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }

    #[test]
    fn lines_say_ok_off_or_fail() {
        assert_eq!(Check::Fail("x".into()).line("redis"), "redis      FAIL  x");
        assert!(Check::Off("y".into()).line("kafka").contains("--"));
    }

    #[test]
    fn no_provider_is_not_a_failure_but_says_what_to_set() {
        let c = Config::builder().build().unwrap();
        match llm(&c) {
            Check::Off(t) => assert!(t.contains("OPENAI_API_KEY"), "{t}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_cassette_fails_naming_it() {
        let c = Config::builder()
            .llm(wflo_core::LlmSettings {
                cassette: Some("/nonexistent/x.jsonl".into()),
                ..Default::default()
            })
            .build()
            .unwrap();
        match llm(&c) {
            Check::Fail(t) => assert!(t.contains("/nonexistent/x.jsonl"), "{t}"),
            other => panic!("{other:?}"),
        }
    }
}
